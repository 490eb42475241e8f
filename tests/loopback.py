"""Real loopback connections for tests: socket pairs and two-sided runs."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio
import trio.testing

import trio_verify as tv


async def socket_pair(
    host: str = "127.0.0.1",
) -> tuple[trio.SocketStream, trio.SocketStream]:
    """A connected (client, server) pair of real TCP sockets on loopback."""
    listener = (await trio.open_tcp_listeners(0, host=host))[0]
    try:
        client = await trio.testing.open_stream_to_socket_listener(listener)
        server = await listener.accept()
    finally:
        await listener.aclose()
    return client, server


@dataclass
class Outcome:
    """What one side of a connection saw: a value, or the exception it raised."""

    value: Any = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def expect(self, cls: type[BaseException]) -> Any:
        """The error, asserted to be an instance of ``cls``."""
        assert isinstance(self.error, cls), (
            f"expected {cls.__name__}, got {self.error!r}"
        )
        return self.error


Action = Callable[[tv.TLSStream[trio.SocketStream]], Awaitable[Any]]


async def _handshake_then_receive(stream: tv.TLSStream[trio.SocketStream]) -> bytes:
    await stream.do_handshake()
    return await stream.receive_some()


async def _handshake_then_send(stream: tv.TLSStream[trio.SocketStream]) -> None:
    await stream.do_handshake()
    await stream.send_all(b"ping")


async def run_pair(
    server_policy: tv.ServerPolicy | ssl.SSLContext,
    client_policy: tv.ClientPolicy | ssl.SSLContext,
    *,
    server_hostname: str | None = "localhost",
    server_action: Action | None = None,
    client_action: Action | None = None,
    timeout: float = 10.0,
) -> tuple[Outcome, Outcome]:
    """Run a client and a server over real loopback sockets; return (client, server).

    By default the client handshakes and then reads (so that a TLS 1.3 verdict
    on its certificate reaches it), and the server handshakes and sends
    ``b"ping"``.  Each side's exception, if any, is captured, not raised.
    Both streams are closed afterwards.
    """
    client_sock, server_sock = await socket_pair()
    client = tv.TLSStream(client_sock, client_policy, server_hostname=server_hostname)
    server = tv.TLSStream(server_sock, server_policy, server_side=True)
    outcomes = (Outcome(), Outcome())

    async def side(
        stream: tv.TLSStream[trio.SocketStream], action: Action, outcome: Outcome
    ) -> None:
        try:
            outcome.value = await action(stream)
        except Exception as exc:
            outcome.error = exc
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    with trio.fail_after(timeout):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                side, client, client_action or _handshake_then_receive, outcomes[0]
            )
            nursery.start_soon(
                side, server, server_action or _handshake_then_send, outcomes[1]
            )
    return outcomes
