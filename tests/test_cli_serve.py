"""``trio-verify serve``: a diagnostic TLS server, met by real clients.

The server runs as a subprocess (``python -m trio_verify serve``); the tests
wait for its "listening on" line, connect with ``openssl s_client`` and
``curl`` (with and without a client certificate, and with one it must
refuse), and check both what reaches the client (the plain-text report) and
the HandshakeReport lines the server logs.  One test runs it in-process.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "rich", reason="the CLI needs the 'cli' extra (pip install -e '.[cli]')"
)
jsonschema = pytest.importorskip("jsonschema")

import trio  # noqa: E402
from certs import CertKit  # noqa: E402
from rich.console import Console  # noqa: E402

from trio_verify._cli import _serve, main, main_async, schema  # noqa: E402

TIMEOUT = 20.0
LISTENING = re.compile(r"^listening on 127\.0\.0\.1:(\d+)$")


class ServeProcess:
    """``python -m trio_verify serve ...``, with its output collected.

    Threads read stdout and stderr line by line; :meth:`wait_for` waits (with
    a bound) until a line matches.
    """

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "trio_verify", "serve", "--port", "0", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(pipe, lines), daemon=True)
            for pipe, lines in (
                (self.process.stdout, self.stdout),
                (self.process.stderr, self.stderr),
            )
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, pipe: Any, lines: list[str]) -> None:
        for line in pipe:
            with self._changed:
                lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            lines.append("")  # end of file marker for waiters
            self._changed.notify_all()

    def wait_for(
        self, lines: list[str], match: Callable[[str], Any], timeout: float = TIMEOUT
    ) -> Any:
        """The first truthy ``match(line)`` among ``lines``, waiting for more."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in lines:
                    found = match(line)
                    if found:
                        return found
                if self.process.poll() is not None and lines and lines[-1] == "":
                    raise AssertionError(
                        f"serve exited ({self.process.returncode}) first:\n"
                        + "\n".join(self.stdout + self.stderr)
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        "serve did not print it in time:\n"
                        + "\n".join(self.stdout + self.stderr)
                    )
                self._changed.wait(left)

    def port(self) -> int:
        found = self.wait_for(self.stdout, LISTENING.match)
        return int(found.group(1))

    def log_line(self, *needles: str) -> str:
        """The first stderr line containing every needle."""
        return str(
            self.wait_for(
                self.stderr,
                lambda line: line if all(n in line for n in needles) else None,
            )
        )

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=TIMEOUT)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(timeout=TIMEOUT)
            for reader in self._readers:
                reader.join(timeout=TIMEOUT)
            for pipe in (self.process.stdout, self.process.stderr):
                if pipe is not None:
                    pipe.close()


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServeProcess, int, Path]]:
    """One text-mode server: optional client auth, required for strict.localhost."""
    directory = tmp_path_factory.mktemp("serve")
    server = ServeProcess(
        "--write-dir", str(directory), "--sni", "strict.localhost=required"
    )
    try:
        yield server, server.port(), directory
    finally:
        server.stop()


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"the {name} command line tool is not on PATH")
    return path


def s_client(port: int, *args: str, servername: str = "localhost") -> str:
    """``openssl s_client`` against the server; everything it printed."""
    done = subprocess.run(
        [
            tool("openssl"),
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-servername",
            servername,
            "-ign_eof",
            *args,
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    return done.stdout + done.stderr


def curl(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("curl"), "-sS", "--max-time", "10", *args, f"https://localhost:{port}/"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_writes_the_files_a_client_needs(
    served: tuple[ServeProcess, int, Path],
) -> None:
    server, port, directory = served
    for name in ("ca.pem", "client.pem", "client.crt", "client.key"):
        assert (directory / name).is_file(), name
    assert b"PRIVATE KEY" in (directory / "client.pem").read_bytes()
    out = "\n".join(server.stdout)
    assert f"files in {directory}" in out
    assert f"curl --cacert {directory / 'ca.pem'}" in out
    assert f"listening on 127.0.0.1:{port}" in out


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_s_client_with_a_certificate_reads_the_report(
    served: tuple[ServeProcess, int, Path], version: str
) -> None:
    server, port, directory = served
    out = s_client(
        port,
        version,
        *("-CAfile", str(directory / "ca.pem"), "-verify_return_error"),
        *(
            "-cert",
            str(directory / "client.crt"),
            "-key",
            str(directory / "client.key"),
        ),
    )
    tls = "TLSv1.2" if version == "-tls1_2" else "TLSv1.3"
    assert "trio-verify serve: what this server saw of your connection" in out
    assert f"TLS version  {tls}" in out
    assert "SNI          localhost" in out
    assert "client certificate: verified" in out
    assert "subject      CN=client.example" in out
    assert "names        DNS:client.example" in out
    line = server.log_line(
        "handshake ok", f"version={tls}", "client=[CN=client.example"
    )
    assert "sni=localhost" in line
    assert "policy=optional" in line


def test_s_client_with_a_refused_certificate_is_logged(
    served: tuple[ServeProcess, int, Path], certs: CertKit
) -> None:
    server, port, directory = served
    other = certs.client("other_ca")
    out = s_client(
        port,
        "-tls1_3",
        *("-CAfile", str(directory / "ca.pem")),
        *("-cert", str(other.cert_file), "-key", str(other.key_file)),
    )
    assert "alert unknown ca" in out
    assert "what this server saw" not in out
    line = server.log_line("handshake failed: UnknownIssuer", "OU=client-other_ca")
    assert "phase=CLIENT_CERTIFICATE" in line
    assert "alert_sent=unknown_ca" in line
    assert "which is not a trusted CA" in line


def test_a_server_name_can_require_a_certificate(
    served: tuple[ServeProcess, int, Path],
) -> None:
    server, port, directory = served
    out = s_client(
        port,
        "-tls1_3",
        *("-CAfile", str(directory / "ca.pem")),
        servername="strict.localhost",
    )
    assert "alert certificate required" in out
    line = server.log_line("handshake failed: MissingClientCertificate")
    assert "sni=strict.localhost" in line
    assert "policy=required" in line
    assert "alert_sent=certificate_required" in line


def test_curl_with_a_client_certificate(served: tuple[ServeProcess, int, Path]) -> None:
    server, port, directory = served
    done = curl(
        port,
        *(
            "--cacert",
            str(directory / "ca.pem"),
            "--cert",
            str(directory / "client.pem"),
        ),
        "--user-agent",
        "with-cert",
    )
    assert done.returncode == 0, done.stderr
    assert "client certificate: verified" in done.stdout
    assert "subject      CN=client.example" in done.stdout
    assert "ALPN         none (you offered h2, http/1.1)" in done.stdout
    server.log_line("handshake ok", "client=[CN=client.example", "sni=localhost")


def test_curl_without_a_client_certificate(
    served: tuple[ServeProcess, int, Path],
) -> None:
    server, port, directory = served
    done = curl(port, "--cacert", str(directory / "ca.pem"))
    assert done.returncode == 0, done.stderr
    assert "client certificate: none (asked for; not required)" in done.stdout
    assert "policy       optional: client certificate optional" in done.stdout
    server.log_line("handshake ok", "policy=optional", "time=")


def test_json_mode_and_a_clean_stop(tmp_path: Path) -> None:
    server = ServeProcess("--json", "--client-auth", "required", "--alpn", "http/1.1")
    try:
        ready = json.loads(server.wait_for(server.stdout, lambda line: line or None))
        jsonschema.validate(ready, schema("serve"))
        port = ready["listening"][0]["port"]
        directory = Path(ready["directory"])
        assert Path(ready["files"]["ca"]) == directory / "ca.pem"

        done = curl(
            port,
            "--cacert",
            ready["files"]["ca"],
            "--cert",
            ready["files"]["client_bundle"],
        )
        assert done.returncode == 0, done.stderr
        assert "ALPN         http/1.1" in done.stdout
        refused = curl(port, "--cacert", ready["files"]["ca"])
        assert refused.returncode != 0
        assert "alert certificate required" in refused.stderr

        def event(kind: str, ok: bool) -> Any:
            def match(line: str) -> Any:
                if not line.startswith("{"):
                    return None
                data = json.loads(line)
                return data if data["event"] == kind and data.get("ok") is ok else None

            return match

        accepted = server.wait_for(server.stderr, event("handshake", True))
        failed = server.wait_for(server.stderr, event("handshake", False))
        for data in (accepted, failed):
            jsonschema.validate(data, schema("serve"))
        assert accepted["alpn"] == "http/1.1"
        assert accepted["policy"] == "required"
        assert accepted["client_certificate"]["subject_alt_names"] == [
            "DNS:client.example"
        ]
        assert failed["error"]["type"] == "MissingClientCertificate"
        assert failed["error"]["phase"] == "CLIENT_CERTIFICATE"
        assert failed["error"]["alert_sent"] == {
            "code": 116,
            "name": "certificate_required",
        }
    finally:
        status = server.stop()
    assert status == 0
    stopped = json.loads(
        server.wait_for(server.stderr, lambda line: '"stopped"' in line and line)
    )
    jsonschema.validate(stopped, schema("serve"))
    assert stopped["signal"] == "SIGTERM"
    assert not directory.exists()  # the temporary directory is removed


def test_usage_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["serve", "--sni", "nonsense"]) == 2
    assert "NAME=POLICY" in capsys.readouterr().err
    assert main(["serve", "--cert", str(tmp_path / "missing.pem")]) == 2
    assert "missing.pem" in capsys.readouterr().err
    assert main(["serve", "--port", "70000"]) == 2
    assert main(["serve", "--help"]) == 0
    assert "curl --cacert DIR/ca.pem" in capsys.readouterr().out


def test_with_given_certificate_asking_needs_client_cas(
    capsys: pytest.CaptureFixture[str], certs: CertKit
) -> None:
    ident = certs.server("valid")
    args = ["serve", "--cert", str(ident.chain_file), "--key", str(ident.key_file)]
    assert main(args) == 2
    assert "needs --client-ca" in capsys.readouterr().err


async def test_in_process_with_probe(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """serve and probe in one process: the probe reads the report."""
    opts = _serve.Options(port=0, write_dir=str(tmp_path), client_auth="required")
    out, err = io.StringIO(), io.StringIO()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            ready = await nursery.start(
                partial(
                    _serve.serve,
                    opts,
                    Console(file=out),
                    Console(file=err, width=300),
                    handle_signals=False,
                )
            )
            port = ready.addresses[0][1]
            status = await main_async(
                [
                    *("probe", f"localhost:{port}", "--json", "--read", "2"),
                    *("--cafile", str(tmp_path / "ca.pem")),
                    *("--cert", str(tmp_path / "client.crt")),
                    *("--key", str(tmp_path / "client.key")),
                ]
            )
            nursery.cancel_scope.cancel()
    assert status == 0
    document = json.loads(capsys.readouterr().out)
    jsonschema.validate(document, schema("probe"))
    assert document["client_certificate"]["outcome"] == "accepted"
    assert "client certificate: verified" in document["received"]["text"]
    assert "policy       required" in document["received"]["text"]
    assert f"listening on 127.0.0.1:{port}" in out.getvalue()
    assert "handshake ok" in err.getvalue()
    assert "client=[CN=client.example" in err.getvalue()
