"""``trio-verify matrix``: the verify-mode matrix played live by the CLI.

The command's table of expected behaviour must be the one the test suite
asserts (tests/test_matrix.py), every cell it plays must match it, and its
exit status must say so honestly.  The full matrix runs once, in-process;
restricted runs cover the options, the human output and a subprocess.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "rich", reason="the CLI needs the 'cli' extra (pip install -e '.[cli]')"
)
jsonschema = pytest.importorskip("jsonschema")

import test_matrix as suite  # noqa: E402  (the suite's own expectations)
import trustme  # noqa: E402

import trio_verify as tv  # noqa: E402
from trio_verify._cli import _matrix, main, schema  # noqa: E402

TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3

# The suite's certificate kinds, by the CLI's names.
SERVER_KIND_NAMES = {
    "valid": "valid",
    "expired": "expired",
    "not_yet_valid": "not-yet-valid",
    "other_ca": "other-ca",
    "wrong_name": "wrong-name",
    "client_eku": "wrong-eku",
    "self_signed": "self-signed",
}
CLIENT_KIND_NAMES = {
    "expired": "expired",
    "not_yet_valid": "not-yet-valid",
    "other_ca": "other-ca",
    "server_eku": "wrong-eku",
    "self_signed": "self-signed",
}


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    """``main(["matrix", *args, "--json"])``: the exit status and the document."""
    status = main(["matrix", *args, "--json"])
    out = capsys.readouterr().out
    document = json.loads(out)
    jsonschema.validate(document, schema("matrix"))
    return status, document


def same_refusal(cli: _matrix.Refusal | None, ours: suite.Refusal | None) -> bool:
    if cli is None or ours is None:
        return cli is ours
    return (cli.error, cli.verify_code, cli.alert, cli.peer_error) == (
        ours.error,
        ours.verify_code,
        ours.alert,
        ours.peer_error,
    )


def test_the_cli_expects_what_the_test_suite_asserts() -> None:
    server_rows = {
        param.values[0]: param.values[2]
        for param in suite.SERVER_CERT_ROWS
        if param.values[1] == "localhost" and param.values[0] in SERVER_KIND_NAMES
    }
    assert set(server_rows) == set(SERVER_KIND_NAMES)
    for kind, refusal in server_rows.items():
        cli = _matrix.EXPECTED_SERVER_CERTIFICATE[SERVER_KIND_NAMES[kind]]
        assert same_refusal(cli, refusal), kind

    for kind, refusal in suite.CLIENT_CERT_REFUSALS.items():
        cli = _matrix.EXPECTED_CLIENT_CERTIFICATE[CLIENT_KIND_NAMES[kind]]
        assert same_refusal(cli, refusal), kind
    # The suite accepts a valid client certificate when one is asked for.
    assert _matrix.EXPECTED_CLIENT_CERTIFICATE["valid"] is None

    for version in (TLS12, TLS13):
        assert same_refusal(
            _matrix.EXPECTED_MISSING_CERTIFICATE[version],
            suite.missing_certificate(version),
        )


@pytest.mark.parametrize(
    ("row", "kind", "version", "client_surfaced_in"),
    [
        ("client-auth-optional", "expired", TLS12, "handshake"),
        ("client-auth-optional", "expired", TLS13, "confirm"),
        ("client-auth-required", "none", TLS12, "handshake"),
        ("client-auth-required", "none", TLS13, "receive"),
    ],
)
def test_where_a_refused_client_learns_of_it(
    row: str, kind: _matrix.Kind, version: ssl.TLSVersion, client_surfaced_in: str
) -> None:
    """As in the suite: in TLS 1.3 a client that sent a certificate waits for
    the verdict ("confirm"); one that sent none learns at its first read."""
    (cell,) = [
        c
        for c in _matrix.select_cells("server", "both", [kind])
        if c.row.name == row and c.version is version
    ]
    client, server = _matrix.expected(cell)
    assert client.surfaced_in == client_surfaced_in
    assert server.surfaced_in == "handshake"
    assert client.phase is server.phase is tv.Phase.CLIENT_CERTIFICATE


def test_full_matrix_every_cell_matches(capsys: pytest.CaptureFixture[str]) -> None:
    status, document = run_json(capsys)
    assert status == 0
    assert document["ok"] is True
    cells = document["cells"]
    # 4 client rows x 7 server certificates + 3 server rows x 8 client
    # certificates (including none), on two TLS versions.
    assert len(cells) == (4 * 7 + 3 * 8) * 2 == document["summary"]["cells"]
    assert document["summary"]["matched"] == len(cells)
    assert [c["id"] for c in cells if not c["matches"]] == []
    assert {c["row"] for c in cells} == {row.name for row in _matrix.ROWS}
    assert document["ca"]["source"] == "embedded"

    by_id = {c["id"]: c for c in cells}
    expired = by_id["client/verified/expired/TLSv1.3"]
    client, server = expired["client"]["observed"], expired["server"]["observed"]
    assert client["error"] == "CertificateExpired"
    assert client["phase"] == server["phase"] == "SERVER_CERTIFICATE"
    assert client["alert_sent"] == {"code": 45, "name": "certificate_expired"}
    assert server["error"] == "PeerRejectedCertificate"
    assert server["alert_received"] == client["alert_sent"]

    missing = by_id["server/client-auth-required/none/TLSv1.3"]
    client, server = missing["client"]["observed"], missing["server"]["observed"]
    assert (client["error"], client["surfaced_in"]) == (
        "PeerRequiresCertificate",
        "receive",
    )
    assert server["alert_sent"] == {"code": 116, "name": "certificate_required"}

    adopted = by_id["client/cert-optional/valid/TLSv1.2"]["client"]["observed"]
    assert adopted["outcome"] == "ok"
    assert adopted["peer"] == "verified"
    assert "CERT_OPTIONAL on a client is CERT_REQUIRED" in adopted["warnings"][0]

    refused = by_id["client/no-hostname-check/valid/TLSv1.3"]
    assert refused["client"]["observed"]["error"] == "PolicyError"
    assert refused["server"]["observed"]["outcome"] == "not_connected"

    insecure = by_id["client/insecure/self-signed/TLSv1.2"]["client"]["observed"]
    assert (insecure["outcome"], insecure["peer"]) == ("ok", "unverified")

    not_asked = by_id["server/client-auth-none/valid/TLSv1.3"]["server"]["observed"]
    assert (not_asked["outcome"], not_asked["peer"]) == ("ok", "none")


def test_restricted_run_prints_a_table(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "160")  # no wrapping inside the table
    status = main(
        [
            *("matrix", "--rows", "server", "--tls", "1.3"),
            *("--cert-kind", "none", "--cert-kind", "expired"),
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    for text in (
        "ClientAuth.NONE (CERT_NONE)",
        "ClientAuth.OPTIONAL (CERT_OPTIONAL)",
        "ClientAuth.REQUIRED (CERT_REQUIRED)",
        "MissingClientCertificate",
        "PeerRequiresCertificate",
        "certificate_required (116)",
        "CertificateExpired",
        "6 cells in",
        "every cell matches the documented behaviour",
    ):
        assert text in out, text
    assert "TLSv1.2" not in out
    assert "✗" not in out


def test_a_cell_that_differs_fails_the_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exit status is honest: document a wrong alert, and the run fails."""
    wrong = _matrix.Refusal(
        tv.CertificateExpired, 10, tv.Alert.BAD_CERTIFICATE, "certificate expired"
    )
    monkeypatch.setitem(_matrix.EXPECTED_SERVER_CERTIFICATE, "expired", wrong)
    status, document = run_json(
        capsys, "--rows", "client", "--tls", "1.2", "--cert-kind", "expired"
    )
    assert status == 1
    assert document["ok"] is False
    differing = {
        c["id"]: c["mismatches"] for c in document["cells"] if not c["matches"]
    }
    assert set(differing) == {
        "client/verified/expired/TLSv1.2",
        "client/cert-optional/expired/TLSv1.2",
    }
    assert (
        "client alert sent: expected bad_certificate (42), observed "
        "certificate_expired (45)" in differing["client/verified/expired/TLSv1.2"]
    )
    assert document["summary"]["mismatched"] == 2

    status = main(
        ["matrix", "--rows", "client", "--tls", "1.2", "--cert-kind", "expired"]
    )
    out = capsys.readouterr().out
    assert status == 1
    assert "✗ client/verified/expired/TLSv1.2" in out
    assert "2 differ from the documented behaviour" in out


def test_certificates_from_the_users_ca(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ca = trustme.CA(organization_name="Users Own CA")
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    ca.private_key_pem.write_to_path(tmp_path / "ca.key")
    status, document = run_json(
        capsys,
        "--ca-file",
        str(tmp_path / "ca.pem"),
        "--ca-key",
        str(tmp_path / "ca.key"),
        "--tls",
        "1.3",
        "--cert-kind",
        "valid",
        "--cert-kind",
        "other-ca",
    )
    assert status == 0, [c["mismatches"] for c in document["cells"]]
    assert document["ca"]["source"] == "file"
    assert "O=Users Own CA" in document["ca"]["subject"]
    assert document["ca"]["problems"] == []
    valid = next(
        c for c in document["cells"] if c["id"] == "client/verified/valid/TLSv1.3"
    )
    assert valid["client"]["observed"]["peer"] == "verified"


def test_a_leaf_is_not_a_ca(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    leaf = trustme.CA().issue_cert("localhost")
    leaf.cert_chain_pems[0].write_to_path(tmp_path / "leaf.pem")
    leaf.private_key_pem.write_to_path(tmp_path / "leaf.key")
    status = main(
        [
            *("matrix", "--ca-file", str(tmp_path / "leaf.pem")),
            *("--ca-key", str(tmp_path / "leaf.key")),
        ]
    )
    assert status == 2
    assert "is not a CA certificate" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        ["--ca-file", "ca.pem"],
        ["--tls", "1.4"],
        ["--rows", "client", "--cert-kind", "none"],
        ["--cert-kind", "revoked"],
    ],
    ids=["ca-file-alone", "bad-version", "no-cell", "bad-kind"],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    assert main(["matrix", *args]) == 2
    assert capsys.readouterr().err


def test_help_shows_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["matrix", "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    assert "trio-verify matrix --rows server --tls 1.3" in out


def test_runs_as_a_module() -> None:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "trio_verify", "matrix", "--rows", "client"),
            *("--tls", "1.2", "--cert-kind", "wrong-name", "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    jsonschema.validate(document, schema("matrix"))
    assert [c["id"] for c in document["cells"]] == [
        "client/verified/wrong-name/TLSv1.2",
        "client/insecure/wrong-name/TLSv1.2",
        "client/cert-optional/wrong-name/TLSv1.2",
        "client/no-hostname-check/wrong-name/TLSv1.2",
    ]
    assert done.stderr == ""  # no progress display when stderr is not a terminal
