"""Requests over pooled connections against a new connection per request.

A *request* is 64 bytes from the client, echoed by a :func:`serve_tls`
server.  Two ways of making one, both with trio_verify on both ends:

* ``new``: :func:`trio_verify.open_tls_stream` (TCP connect and a full TLS
  handshake), the request, and a close, every time;
* ``pooled``: ``pool.connection(...)`` from :func:`open_client_pool`, which
  hands back an idle, already handshaken connection when there is one.

The ratio is pooled / new connection: how much a pool saves on this machine
for the smallest possible request.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import trio

import trio_verify

from ._impls import HOST
from ._material import SERVER_NAME, Side

MESSAGE = bytes(range(64))
_CLOSED = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)

Request = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Variant:
    """One way of making requests; ``key`` and ``label`` as for an Impl."""

    key: str
    label: str
    request: Request
    reference: bool = False


async def _read_exactly(
    stream: trio_verify.TLSStream[trio.SocketStream], n: int
) -> None:
    got = 0
    while got < n:
        data = await stream.receive_some(n - got)
        if not data:
            raise RuntimeError("the server closed in the middle of a reply")
        got += len(data)


async def _exchange(stream: trio_verify.TLSStream[trio.SocketStream]) -> None:
    await stream.send_all(MESSAGE)
    await _read_exactly(stream, len(MESSAGE))


async def _echo_handler(stream: trio_verify.TLSStream[trio.SocketStream]) -> None:
    """Echo until the client closes; ``serve_tls`` closes the stream after."""
    with contextlib.suppress(*_CLOSED):
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            await stream.send_all(data)


@contextlib.asynccontextmanager
async def open_variants(side: Side, concurrency: int) -> AsyncIterator[list[Variant]]:
    """Start the echo server and a pool; yield the two variants."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(
                trio_verify.serve_tls,
                _echo_handler,
                0,
                side.server_policy,
                host=HOST,
            )
        )
        port = int(listeners[0].transport_listener.socket.getsockname()[1])
        policy = side.client_policy

        async def new_connection() -> None:
            stream = await trio_verify.open_tls_stream(
                HOST, port, policy=policy, server_hostname=SERVER_NAME
            )
            async with stream:
                await _exchange(stream)

        async with trio_verify.open_client_pool(
            policy=policy, max_per_host=concurrency, max_total=concurrency
        ) as pool:

            async def pooled() -> None:
                async with pool.connection(
                    HOST, port, server_hostname=SERVER_NAME
                ) as stream:
                    await _exchange(stream)

            yield [
                Variant("new", "open_tls_stream per request", new_connection),
                Variant("pooled", "open_client_pool", pooled),
            ]
        nursery.cancel_scope.cancel()


async def requests(request: Request, concurrency: int, seconds: float) -> float:
    """Requests per second: ``concurrency`` tasks loop until the deadline."""
    clock = time.perf_counter
    count = 0

    async def worker(deadline: float) -> None:
        nonlocal count
        while clock() < deadline:
            await request()
            count += 1

    start = clock()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker, start + seconds)
    return count / (clock() - start)
