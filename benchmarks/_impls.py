"""The implementations under test, behind one small interface.

Each implementation can

* open *pairs*: a client and a server end over a real loopback TCP
  connection, both handshaken (for the bulk, echo and memory benchmarks);
* *serve* handshakes: a server on a loopback port that, for every
  connection, completes the handshake, echoes one byte and closes;
* *connect* once to such a server: connect, handshake, send one byte, read
  it back, close.

:class:`PlainTCP` is not a TLS implementation: it is ``trio.SocketStream``
with no TLS over the same loopback TCP, measured as a reference for the cost
of the transport and the event loop alone.

The hot loops call each library's own bound methods (``send_all`` /
``receive_some`` for Trio's streams, ``send`` / ``receive`` for anyio's), so
no adapter code runs per call.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import trio

import trio_verify

from ._material import SERVER_NAME, Side

Send = Callable[[bytes], Awaitable[None]]
Receive = Callable[[int], Awaitable[bytes | bytearray]]

HOST = "127.0.0.1"
# Failures a benchmark connection may end with when the other end closes at
# the same moment; never expected, but they must not hide the measurement.
_CLOSED = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


@dataclass(frozen=True)
class End:
    """One end of an established TLS connection."""

    send: Send
    receive: Receive
    stream: Any

    async def close(self) -> None:
        """Close at once, without waiting for the peer."""
        with contextlib.suppress(Exception):
            await trio.aclose_forcefully(self.stream)


Pair = tuple[End, End]


def _anyio_available() -> bool:
    try:
        import anyio  # noqa: F401
    except ImportError:
        return False
    return True


class Impl(abc.ABC):
    """A TLS stream implementation for Trio."""

    #: Short name used in JSON and on the command line.
    key: str
    #: Name used in tables.
    label: str
    #: A reference measurement (no TLS), not an implementation under test.
    reference: bool = False

    @abc.abstractmethod
    def pairs(self, side: Side) -> contextlib.AbstractAsyncContextManager[PairMaker]:
        """A context in which ``await maker()`` opens one handshaken pair."""

    @abc.abstractmethod
    async def serve(
        self,
        side: Side,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve handshakes on a loopback port until cancelled."""

    @abc.abstractmethod
    async def connect(self, port: int, side: Side) -> None:
        """One client connection: handshake, one byte each way, close."""


PairMaker = Callable[[], Awaitable[Pair]]


async def _handshake_both(client: Any, server: Any) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.do_handshake)
        nursery.start_soon(server.do_handshake)


@contextlib.asynccontextmanager
async def _trio_listener() -> AsyncIterator[trio.SocketListener]:
    listener = (await trio.open_tcp_listeners(0, host=HOST))[0]
    try:
        yield listener
    finally:
        await listener.aclose()


def _port(listener: trio.SocketListener) -> int:
    return int(listener.socket.getsockname()[1])


@contextlib.asynccontextmanager
async def _tcp_pairs(
    wrap: Callable[[trio.SocketStream, trio.SocketStream], Awaitable[tuple[Any, Any]]],
) -> AsyncIterator[PairMaker]:
    """Pairs of loopback TCP connections, each wrapped into (client, server)."""
    async with _trio_listener() as listener:
        port = _port(listener)
        lock = trio.Lock()

        async def make() -> Pair:
            async with lock:  # so that the accepted socket is the peer
                client_sock = await trio.open_tcp_stream(HOST, port)
                server_sock = await listener.accept()
            client, server = await wrap(client_sock, server_sock)
            return (
                End(client.send_all, client.receive_some, client),
                End(server.send_all, server.receive_some, server),
            )

        yield make


async def _echo_one_byte_trio(stream: Any) -> None:
    """Server side of a handshake sample, for Trio-style streams."""
    try:
        data = await stream.receive_some(1)
        if data:
            await stream.send_all(data)
    except _CLOSED:
        pass
    finally:
        await stream.aclose()


async def _client_trio(stream: Any) -> None:
    try:
        await stream.do_handshake()
        await stream.send_all(b"x")
        await stream.receive_some(1)
    finally:
        await stream.aclose()


async def _client_plain(stream: trio.SocketStream) -> None:
    try:
        await stream.send_all(b"x")
        await stream.receive_some(1)
    finally:
        await stream.aclose()


class PlainTCP(Impl):
    """``trio.SocketStream`` with no TLS: the transport and event loop alone.

    The same loopback TCP connections as the TLS implementations, made the
    same way; in the handshake benchmarks a connection is a TCP connect, the
    same one-byte echo, and a close.
    """

    key = "plain_tcp"
    label = "plain TCP, no TLS (reference)"
    reference = True

    def pairs(self, side: Side) -> contextlib.AbstractAsyncContextManager[PairMaker]:
        async def wrap(
            client: trio.SocketStream, server: trio.SocketStream
        ) -> tuple[Any, Any]:
            return client, server

        return _tcp_pairs(wrap)

    async def serve(
        self,
        side: Side,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with _trio_listener() as listener:
            task_status.started(_port(listener))
            await trio.serve_listeners(_echo_one_byte_trio, [listener])

    async def connect(self, port: int, side: Side) -> None:
        await _client_plain(await trio.open_tcp_stream(HOST, port))


class TrioSSL(Impl):
    """``trio.SSLStream``: the baseline."""

    key = "trio"
    label = "trio.SSLStream"

    def pairs(self, side: Side) -> contextlib.AbstractAsyncContextManager[PairMaker]:
        async def wrap(
            client_sock: trio.SocketStream, server_sock: trio.SocketStream
        ) -> tuple[Any, Any]:
            client = trio.SSLStream(
                client_sock, side.client_context, server_hostname=SERVER_NAME
            )
            server = trio.SSLStream(server_sock, side.server_context, server_side=True)
            await _handshake_both(client, server)
            return client, server

        return _tcp_pairs(wrap)

    async def serve(
        self,
        side: Side,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        context = side.server_context

        async def handler(sock: trio.SocketStream) -> None:
            await _echo_one_byte_trio(trio.SSLStream(sock, context, server_side=True))

        async with _trio_listener() as listener:
            task_status.started(_port(listener))
            await trio.serve_listeners(handler, [listener])

    async def connect(self, port: int, side: Side) -> None:
        sock = await trio.open_tcp_stream(HOST, port)
        await _client_trio(
            trio.SSLStream(sock, side.client_context, server_hostname=SERVER_NAME)
        )


class TrioVerify(Impl):
    """``trio_verify.TLSStream`` with a plain server-side stream."""

    key = "trio_verify"
    label = "trio_verify.TLSStream"

    def pairs(self, side: Side) -> contextlib.AbstractAsyncContextManager[PairMaker]:
        async def wrap(
            client_sock: trio.SocketStream, server_sock: trio.SocketStream
        ) -> tuple[Any, Any]:
            client = trio_verify.TLSStream(
                client_sock, side.client_policy, server_hostname=SERVER_NAME
            )
            server = trio_verify.TLSStream(
                server_sock, side.server_policy, server_side=True
            )
            await _handshake_both(client, server)
            return client, server

        return _tcp_pairs(wrap)

    async def serve(
        self,
        side: Side,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        policy = side.server_policy

        async def handler(sock: trio.SocketStream) -> None:
            stream = trio_verify.TLSStream(sock, policy, server_side=True)
            await _echo_one_byte_trio(stream)

        async with _trio_listener() as listener:
            task_status.started(_port(listener))
            await trio.serve_listeners(handler, [listener])

    async def connect(self, port: int, side: Side) -> None:
        sock = await trio.open_tcp_stream(HOST, port)
        await _client_trio(
            trio_verify.TLSStream(sock, side.client_policy, server_hostname=SERVER_NAME)
        )


class TrioVerifyListener(TrioVerify):
    """trio_verify through ``serve_tls``: the ClientHello is read first.

    The policy comes from a selector, so every connection pays for reading
    and parsing its ClientHello before OpenSSL sees it, and for the handshake
    report.  Only the server side differs from :class:`TrioVerify`.
    """

    key = "trio_verify_listener"
    label = "trio_verify serve_tls"

    async def serve(
        self,
        side: Side,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        policy = side.server_policy

        def select(hello: trio_verify.ClientHello) -> trio_verify.ServerPolicy:
            return policy

        async def handler(stream: trio_verify.TLSStream[trio.SocketStream]) -> None:
            # serve_tls has done the handshake and closes the stream afterwards.
            with contextlib.suppress(*_CLOSED):
                data = await stream.receive_some(1)
                if data:
                    await stream.send_all(data)

        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                partial(trio_verify.serve_tls, handler, 0, select, host=HOST)
            )
            task_status.started(_port(listeners[0].transport_listener))


class AnyioTLS(Impl):
    """``anyio.streams.tls.TLSStream`` over anyio's own sockets, on Trio."""

    key = "anyio"
    label = "anyio TLSStream"

    @contextlib.asynccontextmanager
    async def pairs(self, side: Side) -> AsyncIterator[PairMaker]:
        import anyio
        from anyio.abc import SocketAttribute, SocketListener
        from anyio.streams.tls import TLSStream

        multi = await anyio.create_tcp_listener(local_host=HOST)
        listener = cast(SocketListener, multi.listeners[0])
        port = int(listener.extra(SocketAttribute.local_port))
        lock = trio.Lock()
        try:

            async def make() -> Pair:
                async with lock:  # so that the accepted socket is the peer
                    client_sock = await anyio.connect_tcp(HOST, port)
                    server_sock = await listener.accept()
                ends: dict[str, TLSStream] = {}

                async def wrap(name: str, sock: Any, **kwargs: Any) -> None:
                    ends[name] = await TLSStream.wrap(sock, **kwargs)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        partial(
                            wrap,
                            "client",
                            client_sock,
                            hostname=SERVER_NAME,
                            ssl_context=side.client_context,
                        )
                    )
                    nursery.start_soon(
                        partial(
                            wrap,
                            "server",
                            server_sock,
                            server_side=True,
                            ssl_context=side.server_context,
                        )
                    )
                client, server = ends["client"], ends["server"]
                return (
                    End(client.send, client.receive, client),
                    End(server.send, server.receive, server),
                )

            yield make
        finally:
            await multi.aclose()

    async def serve(
        self,
        side: Side,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        import anyio
        from anyio.abc import SocketAttribute, SocketStream
        from anyio.streams.tls import TLSStream

        context = side.server_context

        async def handler(sock: SocketStream) -> None:
            try:
                stream = await TLSStream.wrap(
                    sock, server_side=True, ssl_context=context
                )
            except Exception:
                await sock.aclose()
                return
            try:
                data = await stream.receive(1)
                await stream.send(data)
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    await stream.aclose()

        multi = await anyio.create_tcp_listener(local_host=HOST)
        async with multi:
            task_status.started(int(multi.extra(SocketAttribute.local_port)))
            await multi.serve(handler)

    async def connect(self, port: int, side: Side) -> None:
        import anyio
        from anyio.streams.tls import TLSStream

        sock = await anyio.connect_tcp(HOST, port)
        try:
            stream = await TLSStream.wrap(
                sock, hostname=SERVER_NAME, ssl_context=side.client_context
            )
        except BaseException:
            await sock.aclose()
            raise
        try:
            await stream.send(b"x")
            await stream.receive(1)
        finally:
            await stream.aclose()


BASELINE = TrioSSL()
TRIO_VERIFY = TrioVerify()
TRIO_VERIFY_LISTENER = TrioVerifyListener()
ANYIO: Impl | None = AnyioTLS() if _anyio_available() else None
#: The no-TLS reference, run alongside the implementations in the bulk, echo
#: and handshake benchmarks.
PLAIN_TCP = PlainTCP()

#: Implementations for the stream benchmarks (bulk, echo, memory).
STREAM_IMPLS: list[Impl] = [BASELINE, TRIO_VERIFY, *([ANYIO] if ANYIO else [])]
#: Implementations for the handshake benchmarks.
HANDSHAKE_IMPLS: list[Impl] = [
    BASELINE,
    TRIO_VERIFY,
    TRIO_VERIFY_LISTENER,
    *([ANYIO] if ANYIO else []),
]
BY_KEY: dict[str, Impl] = {impl.key: impl for impl in [*HANDSHAKE_IMPLS, PLAIN_TCP]}


def anyio_version() -> str | None:
    """anyio's version, or ``None`` when it is not installed."""
    if ANYIO is None:
        return None
    from importlib.metadata import version

    return version("anyio")
