"""The examples of the "mTLS servers" page, run as the page shows them.

Every module under ``docs/examples/`` is included verbatim in
``docs/mtls.rst``; these tests import each one by path, run its ``main()``
and check what it observed against what the page says, so that neither the
code nor the prose around it can drift from what the library does.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import runpy
import ssl
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import trio_verify as tv

DOCS = Path(__file__).resolve().parent.parent / "docs"
EXAMPLES = DOCS / "examples"
PAGE = DOCS / "mtls.rst"

TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3

# Every example, in the order the page shows them.
NAMES = (
    "mtls_required",
    "sni_policy",
    "pinned_devices",
    "authorize_spiffe",
    "deferred_auth",
    "handshake_reports",
)

_loaded: dict[str, ModuleType] = {}


def example(name: str) -> Any:
    """Import ``docs/examples/<name>.py`` (once) and return the module."""
    module = _loaded.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(
            f"_docs_example_{name}", EXAMPLES / f"{name}.py"
        )
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _loaded[name] = module
    return module


def error(outcome: object, cls: type[tv.TLSError]) -> tv.TLSError:
    assert isinstance(outcome, cls), f"expected {cls.__name__}, got {outcome!r}"
    return outcome


# ------------------------------------------------------------- bookkeeping


def test_every_example_is_on_the_page_and_tested() -> None:
    # client_pool.py belongs to the "Client pools" page and its own test.
    on_disk = {path.stem for path in EXAMPLES.glob("*.py")} - {"client_pool"}
    assert on_disk == set(NAMES)
    included = re.findall(
        r"^\.\. literalinclude:: examples/(\w+)\.py$", PAGE.read_text(), re.M
    )
    assert included == list(NAMES)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo what an example's ``__main__`` block does to logging."""
    root = logging.getLogger()
    ours = logging.getLogger("trio_verify")
    handlers, level = root.handlers[:], ours.level
    yield
    root.handlers[:] = handlers
    ours.setLevel(level)


@pytest.mark.parametrize("name", NAMES)
def test_example_runs_as_a_script(
    name: str, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="__main__")
    assert capsys.readouterr().out.strip()


# ------------------------------------------------------------ mutual TLS


@pytest.mark.parametrize(
    ("version", "confirm", "surfaced_in", "alert"),
    [
        (TLS12, "auto", "handshake", tv.Alert.HANDSHAKE_FAILURE),
        (TLS13, "auto", "receive", tv.Alert.CERTIFICATE_REQUIRED),
        (TLS13, "always", "confirm", tv.Alert.CERTIFICATE_REQUIRED),
    ],
)
async def test_mtls_required(
    version: ssl.TLSVersion, confirm: str, surfaced_in: str, alert: tv.Alert
) -> None:
    seen = await example("mtls_required").main(version, confirm)
    assert seen["alice"] == b"hello alice.example"

    client = error(seen["anonymous"], tv.PeerRequiresCertificate)
    assert client.side == "client"
    assert client.phase is tv.Phase.CLIENT_CERTIFICATE
    assert client.surfaced_in == surfaced_in
    assert client.alert_received is alert
    assert client.alert_sent is None

    server = error(seen["server"], tv.MissingClientCertificate)
    assert server.side == "server"
    assert server.phase is tv.Phase.CLIENT_CERTIFICATE
    assert server.surfaced_in == "handshake"
    assert server.alert_sent is alert


# ---------------------------------------------------------- per-SNI policy


async def test_sni_policy() -> None:
    seen = await example("sni_policy").main()
    assert seen["secure.example (with certificate)"] == b"welcome to secure"
    assert seen["public.example (no certificate)"] == b"welcome to public"

    missing = error(seen["secure.example (no certificate)"], tv.PeerRequiresCertificate)
    assert missing.phase is tv.Phase.CLIENT_CERTIFICATE
    assert missing.alert_received is tv.Alert.CERTIFICATE_REQUIRED

    unknown = error(seen["other.example (no certificate)"], tv.PeerUnrecognizedName)
    assert unknown.phase is tv.Phase.CLIENT_HELLO
    assert unknown.surfaced_in == "handshake"
    assert unknown.alert_received is tv.Alert.UNRECOGNIZED_NAME


# ------------------------------------------------------- pinned devices


async def test_pinned_devices() -> None:
    seen = await example("pinned_devices").main()
    assert seen["sensor-1"] == b"welcome"

    expired = error(seen["sensor-2"], tv.PeerRejectedCertificate)
    assert expired.alert_received is tv.Alert.CERTIFICATE_EXPIRED
    judged = error(seen["server, CertificateExpired"], tv.CertificateExpired)
    assert judged.phase is tv.Phase.CLIENT_CERTIFICATE
    assert judged.alert_sent is tv.Alert.CERTIFICATE_EXPIRED

    stranger = error(seen["intruder"], tv.PeerRejectedCertificate)
    assert stranger.alert_received is tv.Alert.UNKNOWN_CA
    judged = error(seen["server, UnknownIssuer"], tv.UnknownIssuer)
    assert judged.phase is tv.Phase.CLIENT_CERTIFICATE
    assert judged.alert_sent is tv.Alert.UNKNOWN_CA


# ------------------------------------------------------------- authorize


@pytest.mark.parametrize(
    ("version", "surfaced_in"), [(TLS12, "handshake"), (TLS13, "confirm")]
)
async def test_authorize_spiffe(version: ssl.TLSVersion, surfaced_in: str) -> None:
    seen = await example("authorize_spiffe").main(version)
    assert seen["spiffe://example/client"] == b"authorized"

    refused = error(seen["spiffe://example/intruder"], tv.TruncatedStream)
    assert refused.surfaced_in == surfaced_in
    assert refused.alert_received is None

    server = error(seen["server"], tv.PolicyRejected)
    assert server.phase is tv.Phase.CONNECTION_POLICY
    assert server.surfaced_in == "handshake"
    assert server.alert_sent is None


def test_authorize_looks_at_uri_names() -> None:
    module = example("authorize_spiffe")
    assert not module.authorize(tv.PeerInfo())


# ------------------------------------------------- deferred authentication


async def test_deferred_auth() -> None:
    seen = await example("deferred_auth").main()
    assert seen["alice"] == [b"public page", b"admin page for alice.example"]
    assert seen["legacy"] == [b"public page", b"403 log in with a certificate"]

    client = error(seen["anonymous"], tv.PeerRequiresCertificate)
    assert client.phase is tv.Phase.POST_HANDSHAKE_AUTH
    assert client.surfaced_in == "receive"
    assert client.alert_received is tv.Alert.CERTIFICATE_REQUIRED

    server = error(seen["server"], tv.MissingClientCertificate)
    assert server.phase is tv.Phase.POST_HANDSHAKE_AUTH
    assert server.alert_sent is tv.Alert.CERTIFICATE_REQUIRED


# ---------------------------------------------------- handshake reports

# The parts of a log line that differ from run to run.
_VARYING = [
    (re.compile(r"peer=127\.0\.0\.1:\d+"), "peer=127.0.0.1:PORT"),
    (re.compile(r"serial=[0-9a-f]+"), "serial=SERIAL"),
    (re.compile(r"cipher=\S+"), "cipher=CIPHER"),
    (re.compile(r"time=[0-9.]+ms"), "time=MS"),
]


def _normalized(line: str) -> str:
    for pattern, replacement in _VARYING:
        line = pattern.sub(replacement, line)
    return line


async def test_handshake_reports(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trio_verify")
    reports = await example("handshake_reports").main()

    ok, failed = reports
    assert ok.ok
    assert ok.policy_name == "api"
    assert ok.server_name == "localhost"
    assert ok.tls_version == "TLSv1.3"
    assert ok.client_certificate is not None
    assert ok.client_certificate.common_name == "alice.example"
    assert failed.error_type == "UnknownIssuer"
    assert failed.phase is tv.Phase.CLIENT_CERTIFICATE
    assert failed.alert_sent is tv.Alert.UNKNOWN_CA
    assert failed.client_certificate is not None
    assert failed.client_certificate.common_name == "mallory.example"

    # The lines the page shows are the lines the library logs.
    logged = [
        f"{r.levelname} {r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.name == "trio_verify"
    ]
    shown = [
        line.strip()
        for line in PAGE.read_text().splitlines()
        if line.strip().startswith(("INFO trio_verify:", "WARNING trio_verify:"))
    ]
    assert [_normalized(line) for line in logged] == [
        _normalized(line) for line in shown
    ]
