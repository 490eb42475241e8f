"""The examples of the "Quickstart" and "Porting" pages, and the live matrix.

Every module under ``docs/examples/guides/`` is included verbatim in
``docs/quickstart.rst`` or ``docs/porting.rst``.  These tests import each one
by path, run its ``main()`` and check what it observed against what the page
says; where a page shows what an example prints, the printed lines are
compared with the page's.  The last test plays ``trio-verify matrix`` and
checks every cell of the table that ``docs/matrix.rst`` shows against it, so
that page cannot drift from the code either.
"""

from __future__ import annotations

import importlib.util
import json
import re
import runpy
import ssl
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio

import trio_verify as tv

DOCS = Path(__file__).resolve().parent.parent / "docs"
GUIDES = DOCS / "examples" / "guides"

TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3

# Every example, by page, in the order the page shows them.
PAGES = {
    "quickstart.rst": ["quickstart_client", "quickstart_mtls", "quickstart_failure"],
    "porting.rst": [
        "porting_refused",
        "porting_lint",
        "porting_policies",
        "porting_waiters",
        "porting_confirm",
    ],
}
NAMES = [name for names in PAGES.values() for name in names]

_loaded: dict[str, ModuleType] = {}


def example(name: str) -> Any:
    """Import ``docs/examples/guides/<name>.py`` (once) and return the module."""
    module = _loaded.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(
            f"_docs_guide_{name}", GUIDES / f"{name}.py"
        )
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
        _loaded[name] = module
    return module


def error(outcome: object, cls: type[BaseException]) -> Any:
    assert isinstance(outcome, cls), f"expected {cls.__name__}, got {outcome!r}"
    return outcome


def literal_block(page: str, name: str) -> list[str]:
    """The lines of the ``code-block`` whose ``:name:`` is ``name``."""
    lines = (DOCS / page).read_text().splitlines()
    start = lines.index(f"   :name: {name}") + 1
    while not lines[start].strip():
        start += 1
    block: list[str] = []
    for line in lines[start:]:
        if line and not line.startswith("   "):
            break
        block.append(line[3:])
    while block and not block[-1]:
        block.pop()
    return block


# trustme names its certificates "OU=Testing cert #<random>,O=trustme v<version>".
_TRUSTME = re.compile(r"#[\w-]+,O=trustme v[\d.]+")


def normalized(lines: list[str]) -> list[str]:
    return [_TRUSTME.sub("#RANDOM,O=trustme", line.rstrip()) for line in lines]


def printed(name: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """Run the example as a script; return the lines it printed."""
    runpy.run_path(str(GUIDES / f"{name}.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert out.strip()
    return out.splitlines()


def assert_shown(actual: list[str], shown: list[str]) -> None:
    """The printed lines are those the page shows, where ``...`` on the page
    stands for text it leaves out."""
    actual, shown = normalized(actual), normalized(shown)
    assert len(actual) == len(shown), (actual, shown)
    for got, want in zip(actual, shown, strict=True):
        pattern = ".*".join(re.escape(part) for part in want.split("..."))
        assert re.fullmatch(pattern, got), f"printed {got!r}, the page shows {want!r}"


def shown_after(page: str, marker: str) -> list[str]:
    """The literal block that follows the first line containing ``marker``."""
    lines = (DOCS / page).read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if marker in line)
    # A literal block ("::") or a code-block directive, and its options.
    while not lines[index].rstrip().endswith("::") and not lines[
        index
    ].lstrip().startswith(".. code-block::"):
        index += 1
    index += 1
    while not lines[index].strip() or lines[index].lstrip().startswith(":"):
        index += 1
    indent = len(lines[index]) - len(lines[index].lstrip())
    block = []
    for line in lines[index:]:
        if line.strip() and len(line) - len(line.lstrip()) < indent:
            break
        block.append(line[indent:])
    while block and not block[-1]:
        block.pop()
    return block


# ------------------------------------------------------------- bookkeeping


def test_every_guide_example_is_on_its_page_and_tested() -> None:
    on_disk = {path.stem for path in GUIDES.glob("*.py")}
    assert on_disk == set(NAMES)
    for page, names in PAGES.items():
        included = re.findall(
            r"^\s*\.\. literalinclude:: examples/guides/(\w+)\.py$",
            (DOCS / page).read_text(),
            re.M,
        )
        assert included == names, page


def test_the_guides_are_in_the_table_of_contents() -> None:
    toctree = (DOCS / "index.rst").read_text().split(".. toctree::")[1]
    entries = [line.strip() for line in toctree.splitlines()[1:] if line.strip()]
    entries = [entry for entry in entries if not entry.startswith(":")]
    assert entries[0] == "quickstart"
    assert entries.index("porting") > max(entries.index("mtls"), entries.index("pools"))


# The examples whose printed output the tests below compare with the page's.
COMPARED = {
    "quickstart_client",
    "quickstart_mtls",
    "quickstart_failure",
    "porting_lint",
    "porting_confirm",
}


@pytest.mark.parametrize("name", [name for name in NAMES if name not in COMPARED])
def test_example_runs_as_a_script(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    printed(name, capsys)


# --------------------------------------------------------------- quickstart


async def test_quickstart_client() -> None:
    seen = await example("quickstart_client").main()
    assert seen["reply"] == b"hello world"
    peer = seen["peer"]
    assert isinstance(peer, tv.PeerInfo)
    assert peer.tls_version == "TLSv1.3"
    assert peer.certificate is not None
    assert list(peer.certificate.dns_names) == ["localhost"]


def test_quickstart_client_prints_what_the_page_shows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    shown = literal_block("quickstart.rst", "output-quickstart_client")
    assert_shown(printed("quickstart_client", capsys), shown)


async def test_quickstart_mtls() -> None:
    seen = await example("quickstart_mtls").main()
    assert seen["alice"] == b"hello alice.example"
    refused = error(seen["anonymous"], tv.PeerRequiresCertificate)
    assert refused.phase is tv.Phase.CLIENT_CERTIFICATE
    assert refused.surfaced_in == "receive"  # TLS 1.3: at the first read
    assert refused.alert_received is tv.Alert.CERTIFICATE_REQUIRED


def test_quickstart_mtls_prints_what_the_page_shows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    shown = shown_after("quickstart.rst", "It prints (the refusal shortened)")
    assert_shown(printed("quickstart_mtls", capsys), shown)


async def test_quickstart_failure() -> None:
    seen = await example("quickstart_failure").main()
    assert isinstance(seen["client"], trio.BrokenResourceError)  # as in Trio
    client = error(seen["client"], tv.UnknownIssuer)
    assert client.side == "client"
    assert client.phase is tv.Phase.SERVER_CERTIFICATE
    assert client.surfaced_in == "handshake"
    assert client.alert_sent is tv.Alert.UNKNOWN_CA
    assert client.alert_received is None

    server = error(seen["server"], tv.PeerRejectedCertificate)
    assert server.side == "server"
    assert server.phase is tv.Phase.SERVER_CERTIFICATE
    assert server.alert_received is tv.Alert.UNKNOWN_CA
    assert server.alert_sent is None


def test_quickstart_failure_prints_what_the_page_shows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    shown = literal_block("quickstart.rst", "output-quickstart_failure")
    assert_shown(printed("quickstart_failure", capsys), shown)


# ------------------------------------------------------------------ porting


@pytest.mark.parametrize(
    ("version", "surfaced_in", "alert"),
    [
        (TLS13, "receive", tv.Alert.CERTIFICATE_REQUIRED),
        (TLS12, "handshake", tv.Alert.HANDSHAKE_FAILURE),
    ],
)
async def test_porting_refused(
    version: ssl.TLSVersion, surfaced_in: str, alert: tv.Alert
) -> None:
    seen = await example("porting_refused").main(version)

    def plain(outcome: object) -> trio.BrokenResourceError:
        """A bare BrokenResourceError: no type, no phase, no alert."""
        assert isinstance(outcome, trio.BrokenResourceError), outcome
        assert not isinstance(outcome, tv.TLSError), outcome
        return outcome

    # A trio server never sends its alert: the client, of either class,
    # sees only the connection end.
    both_trio = seen["SSLStream server, SSLStream client"]
    assert isinstance(plain(both_trio["client"]).__cause__, ssl.SSLEOFError | OSError)
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in str(
        plain(both_trio["server"]).__cause__
    )
    ours = seen["SSLStream server, TLSStream client"]["client"]
    assert isinstance(ours, trio.BrokenResourceError)
    if isinstance(ours, tv.TLSError):
        assert isinstance(ours, tv.TruncatedStream)
        assert ours.alert_received is None
    else:
        assert isinstance(ours.__cause__, OSError)  # a reset

    # A trio_verify server sends it: a trio client learns it in OpenSSL's
    # words, a trio_verify client as a typed error.
    for client_class in ("SSLStream", "TLSStream"):
        pairing = seen[f"TLSStream server, {client_class} client"]
        server = error(pairing["server"], tv.MissingClientCertificate)
        assert server.phase is tv.Phase.CLIENT_CERTIFICATE
        assert server.alert_sent is alert
    trio_client = plain(seen["TLSStream server, SSLStream client"]["client"])
    expected_reason = (
        "TLSV13_ALERT_CERTIFICATE_REQUIRED"
        if version is TLS13
        else "SSLV3_ALERT_HANDSHAKE_FAILURE"
    )
    assert expected_reason in str(trio_client.__cause__)
    typed = error(
        seen["TLSStream server, TLSStream client"]["client"], tv.PeerRequiresCertificate
    )
    assert typed.phase is tv.Phase.CLIENT_CERTIFICATE
    assert typed.surfaced_in == surfaced_in
    assert typed.alert_received is alert
    assert isinstance(typed.__cause__, ssl.SSLError)


async def test_porting_lint() -> None:
    seen = await example("porting_lint").main()
    assert set(seen) == {
        "CERT_REQUIRED",
        "CERT_OPTIONAL",
        "check_hostname=False",
        "CERT_NONE",
        "check_hostname=False, pinned",
        "CERT_NONE, allowed",
    }
    for case in ("CERT_REQUIRED", "check_hostname=False, pinned"):
        assert (seen[case].verified, seen[case].warnings) == (True, []), case

    optional = seen["CERT_OPTIONAL"]
    assert optional.verified is True
    (warning,) = optional.warnings
    assert "CERT_OPTIONAL on a client is CERT_REQUIRED" in warning

    for case in ("check_hostname=False", "CERT_NONE"):
        assert isinstance(seen[case].refused, tv.PolicyError), case
        assert seen[case].verified is None, case
        assert "allow_unauthenticated=True" in str(seen[case].refused)
    assert "check_hostname is False" in str(seen["check_hostname=False"].refused)
    assert "pass spki_pins=" in str(seen["check_hostname=False"].refused)

    allowed = seen["CERT_NONE, allowed"]
    assert allowed.refused is None
    assert allowed.verified is False
    (warning,) = allowed.warnings
    assert "does not verify the server" in warning


def test_porting_lint_prints_what_the_page_shows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    shown = shown_after("porting.rst", "It prints (the messages shortened):")
    assert_shown(printed("porting_lint", capsys), shown)


async def test_porting_policies() -> None:
    seen = await example("porting_policies").main()
    assert seen["contexts"] == seen["policies"] == b"hello alice.example"
    adopted, native = str(seen["client context"]), str(seen["client policy"])
    assert adopted.startswith("Uses an adopted ssl.SSLContext as it is.")
    assert "(or a common name matching it, when there is no such name)" in adopted
    assert "(common names are ignored)" in native
    assert "We present the client certificate" in native


async def test_porting_waiters() -> None:
    seen = await example("porting_waiters").main(patience=0.5)

    # trio.SSLStream: the task that ran the handshake gets the error, the
    # other one is left waiting.
    trio_tasks = seen["SSLStream"]
    waiting = [task for task, outcome in trio_tasks.items() if isinstance(outcome, str)]
    failed = [
        outcome
        for outcome in trio_tasks.values()
        if isinstance(outcome, trio.BrokenResourceError)
    ]
    assert waiting in (["sender"], ["receiver"]), trio_tasks
    assert trio_tasks[waiting[0]] == "still waiting after 0.5 s"
    assert len(failed) == 1
    assert not isinstance(failed[0], tv.TLSError)

    # TLSStream: both tasks get the typed error.
    ours = seen["TLSStream"]
    for task in ("sender", "receiver"):
        refused = error(ours[task], tv.UnknownIssuer)
        assert refused.phase is tv.Phase.SERVER_CERTIFICATE
        assert refused.alert_sent is tv.Alert.UNKNOWN_CA


def test_porting_waiters_shows_the_tasks_in_a_fixed_order() -> None:
    shown = shown_after("porting.rst", "examples/guides/porting_waiters.py")
    assert [line.split(":")[0].strip() for line in shown] == [
        "SSLStream",
        "sender",
        "receiver",
        "TLSStream",
        "sender",
        "receiver",
    ]


async def test_porting_confirm() -> None:
    with trio.fail_after(10):
        seen = await example("porting_confirm").main(confirm_timeout=0.5)
    waited = error(seen["auto"], tv.ClientAuthNotConfirmed)
    assert waited.phase is tv.Phase.CLIENT_CERTIFICATE
    assert waited.surfaced_in == "confirm"
    assert waited.alert_sent is waited.alert_received is None
    assert seen["never"] == b"re: GET /"


def test_porting_confirm_prints_what_the_page_shows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    shown = shown_after("porting.rst", "examples/guides/porting_confirm.py")
    assert_shown(printed("porting_confirm", capsys), shown)


# --------------------------------------------------------- the live matrix


def _matrix_cells_on_the_page() -> tuple[dict[tuple[str, str, str], list[str]], str]:
    """Parse the table of docs/matrix.rst: (row, presented, version) ->
    [client observed, server observed, mark], and the summary line."""
    from trio_verify._cli import _matrix

    titles = {" ".join(row.title.split()): row.name for row in _matrix.ROWS}
    lines = literal_block("matrix.rst", "matrix-live-output")
    cells: dict[tuple[str, str, str], list[str]] = {}
    text: list[str] = []  # the lines before a table: its title
    row: str | None = None
    group: list[list[str]] = []

    def flush() -> None:
        if not group:
            return
        columns = [
            " ".join(" ".join(part[i] for part in group).split()) for i in range(5)
        ]
        kind, versions = columns[0], columns[1].split()
        assert row is not None
        for version in versions:
            key = (row, kind, f"TLSv{version}")
            assert key not in cells, f"{key} is shown twice"
            cells[key] = columns[2:]
        group.clear()

    for line in lines:
        mark = line[:1]
        if mark == "┏":
            title = " ".join(" ".join(text).split())
            found = [name for t, name in titles.items() if t in title]
            assert len(found) == 1, f"no single row for the title {title!r}"
            row = found[0]
            text = []
        elif mark == "│":
            group.append([part.strip() for part in line.split("│")[1:-1]])
        elif mark in "├└":
            flush()
        elif mark not in "┃┡":
            text.append(line)
    summary = " ".join(text)
    return cells, summary


def _describe(observed: dict[str, Any], side: str) -> str:
    """What the command prints for one side of one cell, from its JSON."""
    other = "server" if side == "client" else "client"
    if observed["outcome"] == "not_connected":
        return "not contacted"
    words: list[str] = []
    if observed["error"] is None:
        words.append(
            {
                "none": f"ok · no {other} cert",
                "verified": f"ok · {other} cert verified",
                "unverified": f"ok · {other} cert NOT verified",
            }[observed["peer"]]
        )
    elif observed["error"] == "PolicyError":
        words.append("PolicyError before connecting")
    elif observed["phase"] is not None:
        words += [observed["error"], observed["phase"], f"in {observed['surfaced_in']}"]
        for arrow, key in (("→", "alert_sent"), ("←", "alert_received")):
            alert = observed[key]
            if alert is not None:
                words.append(f"{arrow} {alert['name']} ({alert['code']})")
    else:
        words.append(f"{observed['error']}: {observed['message']}")
    if observed["warnings"]:
        words.append("⚠ PolicyWarning")
    return " ".join(" ".join(words).split())


def test_the_matrix_page_shows_what_trio_verify_matrix_observes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip(
        "rich", reason="the CLI needs the 'cli' extra (pip install -e '.[cli]')"
    )
    from trio_verify._cli import main

    shown, summary = _matrix_cells_on_the_page()
    status = main(["matrix", "--json"])
    document = json.loads(capsys.readouterr().out)
    assert status == 0
    played = {
        (cell["row"], cell["presented"], cell["tls_version"]): cell
        for cell in document["cells"]
    }
    # The page shows every cell the command plays, and nothing else.
    assert set(shown) == set(played)
    assert re.fullmatch(
        rf"{len(played)} cells in [\d.]+ s: every cell matches the documented "
        "behaviour",
        summary,
    ), summary
    for key, (client, server, mark) in shown.items():
        cell = played[key]
        assert client == _describe(cell["client"]["observed"], "client"), key
        assert server == _describe(cell["server"]["observed"], "server"), key
        assert mark == ("✓" if cell["matches"] else "✗"), key
