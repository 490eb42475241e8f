"""``trio-verify probe``: diagnosing real servers.

Against ``openssl s_server`` presenting valid, expired, wrong-name and
unknown-CA certificates, and requiring a client certificate (``-Verify 1``),
the probe's ``--json`` must name the right error class, phase and alert,
and its human output must carry the hint in plain words.  Against
``trio-verify serve`` (a subprocess) it reads the server's report.  The
probe runs in-process (inside Trio), and once as ``python -m trio_verify``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "rich", reason="the CLI needs the 'cli' extra (pip install -e '.[cli]')"
)
jsonschema = pytest.importorskip("jsonschema")

import trio  # noqa: E402
from certs import CertKit, ServerKind  # noqa: E402
from openssl_peer import identity_args, require_client_certificate_args, s_server  # noqa: E402
from test_cli_serve import ServeProcess  # noqa: E402

from trio_verify._cli import _probe, main, main_async, schema  # noqa: E402

TIMEOUT = 20.0


async def probe(
    capsys: pytest.CaptureFixture[str], port: int, *args: str
) -> tuple[int, dict[str, Any], int, str]:
    """Probe ``localhost:port`` twice: (json status, document, text status, text)."""
    target = ["probe", f"localhost:{port}", *args]
    with trio.fail_after(TIMEOUT):
        status = await main_async([*target, "--json"])
        document = json.loads(capsys.readouterr().out)
        jsonschema.validate(document, schema("probe"))
        text_status = await main_async(target)
    return status, document, text_status, capsys.readouterr().out


def alert(code: int, name: str) -> dict[str, Any]:
    return {"code": code, "name": name}


def phase_status(document: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p["status"] for p in document["phases"]}


@pytest.fixture(autouse=True)
def wide_output(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # hints on one line


async def test_valid_server(
    capsys: pytest.CaptureFixture[str], certs: CertKit, openssl: Path
) -> None:
    args = ["-tls1_3", *identity_args(certs.server("valid"))]
    async with s_server(openssl, *args) as (_, port):
        status, doc, text_status, text = await probe(
            capsys, port, "--cafile", str(certs.ca_file)
        )
    assert status == text_status == 0
    assert doc["ok"] is True
    assert doc["error"] is None
    assert doc["connection"]["tls_version"] == "TLSv1.3"
    assert doc["connection"]["address"].startswith("127.0.0.1:") or doc["connection"][
        "address"
    ].startswith("[::1]:")
    assert set(phase_status(doc).values()) == {"ok"}
    assert doc["verification"]["status"] == "verified"
    chain = doc["server_chain"]
    assert chain["source"] == "handshake"
    assert chain["verified"] is True
    leaf = chain["certificates"][0]
    assert leaf["sha256_fingerprint"] == certs.server("valid").info.sha256_fingerprint
    assert leaf["spki_pin"] == "sha256//" + certs.server("valid").info.spki_pin
    assert "DNS:localhost" in leaf["subject_alt_names"]
    assert doc["client_certificate"]["outcome"] == "not_requested"
    assert "connected; the server is authenticated" in text
    assert "ServerHello received" in text


@pytest.mark.parametrize(
    ("kind", "error", "verify_code", "sent", "hint"),
    [
        (
            "expired",
            "CertificateExpired",
            10,
            alert(45, "certificate_expired"),
            (
                r"the certificate CN=localhost,OU=server-expired,O=trio_verify tests "
                r"expired on \d{4}-\d{2}-\d{2} \d\d:\d\d UTC \(30 days ago\)"
            ),
        ),
        (
            "wrong_name",
            "NameMismatch",
            62,
            alert(42, "bad_certificate"),
            r"the certificate is valid for example\.org, not localhost",
        ),
        (
            "other_ca",
            "UnknownIssuer",
            20,
            alert(48, "unknown_ca"),
            (
                r"issued by OU=Untrusted Root CA,O=trio_verify tests, which your trust "
                r"store \(.*ca\.pem\) does not contain"
            ),
        ),
        (
            "self_signed",
            "UnknownIssuer",
            18,
            alert(48, "unknown_ca"),
            r"is self-signed, and your trust store \(.*\) does not contain it",
        ),
    ],
)
async def test_refused_server_certificate(
    capsys: pytest.CaptureFixture[str],
    certs: CertKit,
    openssl: Path,
    kind: ServerKind,
    error: str,
    verify_code: int,
    sent: dict[str, Any],
    hint: str,
) -> None:
    args = ["-tls1_2", *identity_args(certs.server(kind))]
    async with s_server(openssl, *args) as (_, port):
        status, doc, text_status, text = await probe(
            capsys, port, "--cafile", str(certs.ca_file)
        )
    assert status == text_status == 1
    err = doc["error"]
    assert err["type"] == error
    assert err["phase"] == "SERVER_CERTIFICATE"
    assert err["surfaced_in"] == "handshake"
    assert err["verify_code"] == verify_code
    assert err["alert_sent"] == sent
    assert err["alert_received"] is None
    assert doc["verification"]["status"] == "failed"
    assert phase_status(doc)["server_certificate"] == "failed"
    chain = doc["server_chain"]
    assert chain["verified"] is False
    assert chain["certificates"][0]["sha256_fingerprint"] == (
        certs.server(kind).info.sha256_fingerprint
    )

    assert re.search(hint, err["hint"]), err["hint"]
    assert re.search(hint, text), text
    assert f"✗ {error} in SERVER_CERTIFICATE sent alert" in text


@pytest.mark.parametrize(
    ("flag", "received", "surfaced_in"),
    [
        ("-tls1_2", alert(40, "handshake_failure"), "handshake"),
        ("-tls1_3", alert(116, "certificate_required"), "receive"),
    ],
)
async def test_server_requires_a_client_certificate(
    capsys: pytest.CaptureFixture[str],
    certs: CertKit,
    openssl: Path,
    flag: str,
    received: dict[str, Any],
    surfaced_in: str,
) -> None:
    args = [
        flag,
        *identity_args(certs.server("valid")),
        *require_client_certificate_args(certs),
    ]
    async with s_server(openssl, *args) as (_, port):
        status, doc, text_status, text = await probe(
            capsys, port, "--cafile", str(certs.ca_file)
        )
    assert status == text_status == 1
    err = doc["error"]
    assert err["type"] == "PeerRequiresCertificate"
    assert err["phase"] == "CLIENT_CERTIFICATE"
    assert err["surfaced_in"] == surfaced_in
    assert err["alert_received"] == received
    assert err["alert_sent"] is None
    assert err["hint"].startswith(
        "the server wants a client certificate; you sent none"
    )
    assert "Hint: the server wants a client certificate; you sent none" in text
    cc = doc["client_certificate"]
    assert (cc["requested"], cc["sent"], cc["outcome"]) == (
        True,
        False,
        "refused_without",
    )
    # The server's own certificate passed before it refused us.
    assert doc["verification"]["status"] == "verified"
    chain = doc["server_chain"]
    assert chain["verified"] is True
    # TLS 1.2: carried by the error (the handshake failed after the server's
    # certificate was verified); TLS 1.3: our handshake had completed.
    assert chain["source"] == ("error" if flag == "-tls1_2" else "handshake")


@pytest.mark.parametrize("flag", ["-tls1_2", "-tls1_3"])
async def test_server_accepts_or_refuses_our_certificate(
    capsys: pytest.CaptureFixture[str], certs: CertKit, openssl: Path, flag: str
) -> None:
    args = [
        flag,
        *identity_args(certs.server("valid")),
        *require_client_certificate_args(certs),
    ]
    valid, other = certs.client("valid"), certs.client("other_ca")
    async with s_server(openssl, *args) as (_, port):
        status, doc, _, _ = await probe(
            capsys,
            port,
            *("--cafile", str(certs.ca_file)),
            *("--cert", str(valid.chain_file), "--key", str(valid.key_file)),
        )
        assert status == 0
        cc = doc["client_certificate"]
        assert (cc["requested"], cc["sent"], cc["outcome"]) == (True, True, "accepted")

        status, doc, _, text = await probe(
            capsys,
            port,
            *("--cafile", str(certs.ca_file)),
            *("--cert", str(other.chain_file), "--key", str(other.key_file)),
        )
    assert status == 1
    err = doc["error"]
    assert err["type"] == "PeerRejectedCertificate"
    assert err["phase"] == "CLIENT_CERTIFICATE"
    assert err["surfaced_in"] == ("handshake" if flag == "-tls1_2" else "confirm")
    assert err["alert_received"] == alert(48, "unknown_ca")
    assert doc["client_certificate"]["outcome"] == "refused"
    assert (
        "the server refused your client certificate: it does not trust the CA "
        "that issued it (unknown_ca); yours was issued by OU=Untrusted Root CA" in text
    )


async def test_insecure_is_never_reported_as_secure(
    capsys: pytest.CaptureFixture[str], certs: CertKit, openssl: Path
) -> None:
    args = [*identity_args(certs.server("self_signed"))]
    async with s_server(openssl, *args) as (_, port):
        status, doc, _, text = await probe(capsys, port, "--insecure")
    assert status == 0
    assert doc["verification"]["status"] == "skipped"
    assert doc["server_chain"]["verified"] is False
    assert phase_status(doc)["server_certificate"] == "warning"
    assert "NOT verified (--insecure)" in text
    assert "the server was NOT authenticated (--insecure)" in text
    assert "the server is authenticated" not in text.replace("NOT authenticated", "")


async def test_second_unverified_connection_fetches_the_chain(
    certs: CertKit, openssl: Path
) -> None:
    """The fallback used when a failure left no chain behind verifies nothing."""
    args = ["-tls1_2", *identity_args(certs.server("other_ca"))]
    async with s_server(openssl, *args) as (_, port):
        with trio.fail_after(TIMEOUT):
            chain = await _probe.fetch_unverified_chain(
                "127.0.0.1", port, server_hostname="localhost", tls=None, timeout=5
            )
    assert chain[0] == certs.server("other_ca").info
    report = _probe.Report(_probe.Options("localhost", port))
    report.chain = _probe.Chain("second_unverified_connection", False, chain)
    document = report.to_json()
    assert document["server_chain"]["verified"] is False
    assert "second, unverified connection" in report.chain.description


async def test_against_trio_verify_serve(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    server = ServeProcess("--write-dir", str(tmp_path), "--client-auth", "optional")
    try:
        port = await trio.to_thread.run_sync(server.port)
        common = ["--cafile", str(tmp_path / "ca.pem"), "--read", "2"]
        status, doc, _, text = await probe(
            capsys,
            port,
            *common,
            *(
                "--cert",
                str(tmp_path / "client.crt"),
                "--key",
                str(tmp_path / "client.key"),
            ),
        )
        assert status == 0
        assert doc["client_certificate"]["outcome"] == "accepted"
        assert "client certificate: verified" in doc["received"]["text"]
        assert "The server sent" in text

        status, doc, _, _ = await probe(capsys, port, *common, "--tls1.3")
        assert status == 0
        cc = doc["client_certificate"]
        assert (cc["requested"], cc["sent"], cc["outcome"]) == (
            True,
            False,
            "let_in_without",
        )
        assert (
            "client certificate: none (asked for; not required)"
            in doc["received"]["text"]
        )
    finally:
        await trio.to_thread.run_sync(server.stop)


def test_connection_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here
    status = main(["probe", f"127.0.0.1:{port}", "--json", "--timeout", "5"])
    document = json.loads(capsys.readouterr().out)
    jsonschema.validate(document, schema("probe"))
    assert status == 1
    assert document["error"]["type"] == "ConnectionRefusedError"
    assert document["error"]["phase"] is None
    assert document["phases"][0] == {
        "name": "tcp_connect",
        "status": "failed",
        "detail": document["phases"][0]["detail"],
        "ms": document["phases"][0]["ms"],
    }
    assert document["error"]["hint"] == f"nothing listens on 127.0.0.1 port {port}"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("example.org", ("example.org", 443)),
        ("example.org:8443", ("example.org", 8443)),
        ("[::1]:8443", ("::1", 8443)),
        ("::1", ("::1", 443)),
        ("[::1]", ("::1", 443)),
    ],
)
def test_targets(target: str, expected: tuple[str, int]) -> None:
    assert _probe.parse_target(target) == expected


@pytest.mark.parametrize(
    "args",
    [
        ["localhost:99999"],
        ["localhost", "--tls1.2", "--tls1.3"],
        ["localhost", "--cafile", "/nonexistent/ca.pem"],
        ["localhost", "--insecure", "--cafile", __file__],
        ["localhost", "--key", __file__],
        ["localhost", "--timeout", "0"],
    ],
    ids=[
        "bad-port",
        "two-versions",
        "missing-file",
        "insecure-with-ca",
        "key-alone",
        "no-time",
    ],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], args: Sequence[str]
) -> None:
    assert main(["probe", *args]) == 2
    assert capsys.readouterr().err


def test_help_shows_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    assert "trio-verify probe localhost:8443 --cafile ca.pem" in out


def test_runs_as_a_module(certs: CertKit, openssl: Path) -> None:
    ident = certs.server("wrong_name")
    with subprocess.Popen(
        [str(openssl), "s_server", "-accept", "127.0.0.1:0", *identity_args(ident)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as server:
        try:
            assert server.stdout is not None
            line = ""
            while not line.startswith("ACCEPT"):  # "ACCEPT 127.0.0.1:PORT"
                line = server.stdout.readline()
                assert line, "s_server exited"
            port = int(line.rsplit(":", 1)[1])
            done = subprocess.run(
                [
                    *(sys.executable, "-m", "trio_verify", "probe"),
                    *(f"127.0.0.1:{port}", "--servername", "localhost"),
                    *("--cafile", str(certs.ca_file)),
                ],
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
                env={**os.environ, "COLUMNS": "300"},
                check=False,
            )
        finally:
            server.kill()
    assert done.returncode == 1
    assert (
        "NameMismatch in SERVER_CERTIFICATE sent alert bad_certificate (42)"
        in done.stdout
    )
    assert (
        "Hint: the certificate is valid for example.org, not localhost" in done.stdout
    )
