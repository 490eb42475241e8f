"""``openssl s_client`` and ``s_server`` as independent peers in tests.

:func:`run_openssl` starts the ``openssl`` tool with a pipe on its stdin and
its stdout and stderr merged into one pipe, collects everything it prints, and
kills it when the ``async with`` block ends, whatever happens.  Tests wait
for a line with :meth:`OpenSSLProcess.wait_for` (a readiness signal such as
s_server's ``ACCEPT`` line, or a received alert), never with a fixed sleep.

s_client quits at end of file on stdin (it prints ``DONE``) unless
``-ign_eof`` or ``-quiet`` is given, so stdin stays open until the test
closes it: a peer that must *read* something (an alert that arrives after
its handshake finished, say) cannot quit before it does.

Helpers that build the command lines for the certificate kit's identities
live here too.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

import trio
from certs import CertKit, Identity

import trio_verify as tv

TLSFlag = Literal["-tls1_2", "-tls1_3"]

DEFAULT_TIMEOUT = 10.0

_ACCEPT_LINE = re.compile(rb"^ACCEPT 127\.0\.0\.1:(\d+)\r?$", re.MULTILINE)


# How OpenSSL 3 names a fatal alert it received, in the error line it prints:
# "...:ssl3_read_bytes:tlsv1 alert unknown ca:<file>:<line>:SSL alert number 48".
ALERT_TEXT: dict[tv.Alert, str] = {
    tv.Alert.HANDSHAKE_FAILURE: "sslv3 alert handshake failure",
    tv.Alert.BAD_CERTIFICATE: "sslv3 alert bad certificate",
    tv.Alert.UNSUPPORTED_CERTIFICATE: "sslv3 alert unsupported certificate",
    tv.Alert.CERTIFICATE_EXPIRED: "sslv3 alert certificate expired",
    tv.Alert.UNKNOWN_CA: "tlsv1 alert unknown ca",
    tv.Alert.CERTIFICATE_REQUIRED: "tlsv13 alert certificate required",
}


def received_alert(alert: tv.Alert) -> re.Pattern[bytes]:
    """The error line an ``openssl`` tool prints on receiving the fatal ``alert``.

    Both the alert's name and its number must be on the line.
    """
    name = re.escape(ALERT_TEXT[alert].encode("ascii"))
    number = str(int(alert)).encode("ascii")
    return re.compile(
        rb":" + name + rb":[^\r\n]*:SSL alert number " + number + rb"\r?$",
        re.MULTILINE,
    )


class OpenSSLExited(AssertionError):
    """The process ended without printing what a test waited for."""


class OpenSSLProcess:
    """A running ``openssl`` command: what it printed so far, and its stdin.

    Attributes:
        process: the :class:`trio.Process`.
        args: the command line.
        output: everything printed on stdout and stderr, in arrival order.
    """

    def __init__(self, process: trio.Process, args: Sequence[str]) -> None:
        self.process = process
        self.args = tuple(args)
        self.output = bytearray()
        self._output_closed = False
        self._changed = trio.Event()

    @property
    def text(self) -> str:
        """The output so far, as text."""
        return self.output.decode("utf-8", "replace")

    @property
    def returncode(self) -> int | None:
        """The exit status, or ``None`` while it runs."""
        return self.process.returncode

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _collect(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        try:
            while chunk := await stdout.receive_some(65536):
                self.output += chunk
                self._wake()
        finally:
            self._output_closed = True
            self._wake()

    async def wait_for(
        self, pattern: bytes | re.Pattern[bytes], timeout: float = DEFAULT_TIMEOUT
    ) -> re.Match[bytes]:
        """Wait until the output matches ``pattern`` (a literal or a regex).

        Raises:
            OpenSSLExited: the process closed its output first.
            trio.TooSlowError: nothing matched within ``timeout`` seconds.
        """
        regex = (
            re.compile(re.escape(pattern)) if isinstance(pattern, bytes) else pattern
        )
        with trio.fail_after(timeout):
            while True:
                found = regex.search(self.output)
                if found is not None:
                    return found
                if self._output_closed:
                    raise OpenSSLExited(
                        f"{self.args[1]} ended without printing {regex.pattern!r}; "
                        f"it printed:\n{self.text}"
                    )
                await self._changed.wait()

    async def wait(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Wait for the process to exit and its output to be complete."""
        with trio.fail_after(timeout):
            code = await self.process.wait()
            while not self._output_closed:
                await self._changed.wait()
        return code

    async def send(self, data: bytes) -> None:
        """Write ``data`` to the process's stdin."""
        stdin = self.process.stdin
        assert stdin is not None
        await stdin.send_all(data)

    async def close_stdin(self) -> None:
        """Close stdin: end of file for the process."""
        stdin = self.process.stdin
        assert stdin is not None
        await stdin.aclose()


@asynccontextmanager
async def open_helper_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery for helper tasks that never fail on their own.

    Trio wraps whatever the body of a nursery raises in an exception group.
    With helpers that cannot fail, such a group holds the body's exception
    alone, and it is handed on as it is, so that a failed assertion reads
    naturally and ``pytest.raises`` works around the block.
    """
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


@asynccontextmanager
async def run_openssl(openssl: Path, *args: str) -> AsyncIterator[OpenSSLProcess]:
    """Run ``openssl *args``; the process is killed when the block ends."""
    command = [os.fspath(openssl), *args]
    process = await trio.lowlevel.open_process(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    peer = OpenSSLProcess(process, command)
    try:
        async with open_helper_nursery() as nursery:
            nursery.start_soon(peer._collect)
            try:
                yield peer
            finally:
                # Ends the collector too: the pipe closes when the process dies.
                if process.returncode is None:
                    process.kill()
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    await pipe.aclose()


@asynccontextmanager
async def s_server(
    openssl: Path, *args: str
) -> AsyncIterator[tuple[OpenSSLProcess, int]]:
    """Run ``openssl s_server`` on a free loopback port; yield it and the port.

    ``-accept 127.0.0.1:0`` lets the kernel choose the port, and s_server
    prints the one it got (``ACCEPT 127.0.0.1:PORT``) once it is listening.
    """
    async with run_openssl(
        openssl, "s_server", "-accept", "127.0.0.1:0", *args
    ) as server:
        found = await server.wait_for(_ACCEPT_LINE)
        yield server, int(found.group(1))


def identity_args(identity: Identity | None) -> list[str]:
    """s_server or s_client options presenting ``identity`` (none for ``None``).

    The leaf goes to ``-cert``; intermediates, if any, to ``-cert_chain``.
    """
    if identity is None:
        return []
    args = [
        "-cert",
        os.fspath(identity.cert_file),
        "-key",
        os.fspath(identity.key_file),
    ]
    if len(identity.chain) > 1:
        args += ["-cert_chain", os.fspath(identity.chain_file)]
    return args


def require_client_certificate_args(certs: CertKit) -> list[str]:
    """s_server options that make a client certificate mandatory.

    ``-Verify`` asks for a certificate and refuses a client that sends none;
    ``-verify_return_error`` makes a certificate that fails verification
    abort the handshake (by default s_server only logs the error and goes
    on); the certificate must lead to the kit's root.
    """
    return ["-Verify", "1", "-verify_return_error", "-CAfile", os.fspath(certs.ca_file)]


def s_client_args(
    certs: CertKit,
    port: int,
    version: TLSFlag,
    *,
    identity: Identity | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """An ``s_client`` command line for a trio_verify server on ``port``.

    The client verifies the server against the kit's root for ``localhost``
    and fails on any verification error, so a test failure can never hide
    behind an ignored server certificate problem.
    """
    return [
        "s_client",
        "-connect",
        f"127.0.0.1:{port}",
        "-servername",
        "localhost",
        "-verify_hostname",
        "localhost",
        "-CAfile",
        os.fspath(certs.ca_file),
        "-verify_return_error",
        version,
        *identity_args(identity),
        *extra,
    ]
