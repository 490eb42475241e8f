"""How fast can any TLS stream on Trio handshake?  A bare driver measured.

``python -m benchmarks.minimal_driver [--mutual] [--rounds 7]``

The driver here is the least code that completes the handshake benchmark's
connections: an :class:`ssl.SSLObject` with two memory BIOs, reading and
writing the socket under a ``trio.SocketStream`` directly.  It has no
handshake timeout, no locks, no checkpoint discipline, no error mapping, no
policy, and no ClientHello reading: it is not a usable stream, only a
yardstick.  It runs interleaved with ``trio.SSLStream``, trio_verify and
anyio's stream (when installed) on the same connections (TCP connect,
handshake, one byte echoed, close) and prints handshakes per second and the
ratio to ``trio.SSLStream``.  Whatever it reaches is near what a stream
could reach on this event loop, with these contexts, on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import ssl
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import trio
from trio.lowlevel import cancel_shielded_checkpoint, wait_readable, wait_writable

if __name__ == "__main__" and not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _impls
from benchmarks._material import SERVER_NAME, Side, make_material

_ERRORS = (ssl.SSLError, OSError, trio.BrokenResourceError, trio.ClosedResourceError)


class BareTLS:
    """An SSLObject over the raw socket of a trio.SocketStream; nothing more."""

    def __init__(
        self,
        stream: trio.SocketStream,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> None:
        self.stream = stream
        raw = stream.socket._sock  # type: ignore[attr-defined]
        assert isinstance(raw, socket.socket)
        self.sock = raw
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = context.wrap_bio(
            self.incoming,
            self.outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
        )

    async def _send(self) -> None:
        data = memoryview(self.outgoing.read())
        sent = 0
        while sent < len(data):
            try:
                sent += self.sock.send(data[sent:])
            except BlockingIOError:
                await wait_writable(self.sock)

    async def _receive(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                await wait_readable(self.sock)
                continue
            break
        if data:
            self.incoming.write(data)
        else:
            self.incoming.write_eof()

    async def handshake(self) -> None:
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                if self.outgoing.pending:
                    await self._send()
                await self._receive()
        # A TLS 1.3 server's session tickets wait for its first write.
        if self.outgoing.pending and not (
            self.obj.server_side and self.obj.version() == "TLSv1.3"
        ):
            await self._send()

    async def send_all(self, data: bytes) -> None:
        self.obj.write(data)
        await self._send()
        await cancel_shielded_checkpoint()

    async def receive_some(self, max_bytes: int) -> bytes:
        while True:
            try:
                return self.obj.read(max_bytes)
            except ssl.SSLWantReadError:
                if self.outgoing.pending:
                    await self._send()
                await self._receive()

    async def aclose(self) -> None:
        with contextlib.suppress(ssl.SSLError):
            self.obj.unwrap()
        with contextlib.suppress(OSError):
            if self.outgoing.pending:
                await self._send()
        await self.stream.aclose()


class BareImpl(_impls.Impl):
    """The bare driver in the benchmark's handshake harness."""

    key = "bare"
    label = "bare driver (yardstick)"

    def pairs(self, side: Side) -> object:  # type: ignore[override]
        raise NotImplementedError("the bare driver only does handshakes")

    async def serve(
        self,
        side: Side,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        context = side.server_policy.context_for(offers_tls13=True)

        async def handler(sock: trio.SocketStream) -> None:
            stream = BareTLS(sock, context, server_side=True)
            try:
                await stream.handshake()
                data = await stream.receive_some(1)
                if data:
                    await stream.send_all(data)
            except _ERRORS:
                pass
            finally:
                await stream.aclose()

        async with _impls._trio_listener() as listener:
            task_status.started(_impls._port(listener))
            await trio.serve_listeners(handler, [listener])

    async def connect(self, port: int, side: Side) -> None:
        sock = await trio.open_tcp_stream(_impls.HOST, port)
        stream = BareTLS(
            sock,
            side.client_policy.context,
            server_side=False,
            server_hostname=SERVER_NAME,
        )
        try:
            await stream.handshake()
            await stream.send_all(b"x")
            await stream.receive_some(1)
        finally:
            await stream.aclose()


async def _run(mutual: bool, rounds: int, seconds: float) -> None:
    side = make_material("ecdsa").side(mutual)
    impls: list[_impls.Impl] = [
        _impls.BASELINE,
        _impls.TRIO_VERIFY,
        *([_impls.ANYIO] if _impls.ANYIO else []),
        BareImpl(),
    ]
    rates: dict[str, list[float]] = {impl.key: [] for impl in impls}
    async with trio.open_nursery() as nursery:
        ports = {
            impl.key: await nursery.start(partial(impl.serve, side)) for impl in impls
        }
        for round_index in range(rounds):
            order = (
                impls[round_index % len(impls) :] + impls[: round_index % len(impls)]
            )
            for impl in order:
                count = 0
                start = time.perf_counter()
                while time.perf_counter() - start < seconds:
                    await impl.connect(ports[impl.key], side)
                    count += 1
                rates[impl.key].append(count / (time.perf_counter() - start))
        nursery.cancel_scope.cancel()
    base = rates[_impls.BASELINE.key]
    what = "with" if mutual else "without"
    print(f"ECDSA P-256 handshakes {what} a client certificate, sequential:")
    for impl in impls:
        values = rates[impl.key]
        ratios = [value / b for value, b in zip(values, base, strict=True)]
        print(
            f"  {impl.label:32} {statistics.median(values):7.0f}/s"
            f"  {statistics.median(ratios):.2f}x"
            f" ({min(ratios):.2f}-{max(ratios):.2f})"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutual", action="store_true", help="with a client cert")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.5, help="per slice")
    args = parser.parse_args(argv)
    trio.run(_run, args.mutual, args.rounds, args.seconds)


if __name__ == "__main__":
    main()
