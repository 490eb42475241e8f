"""The timed workloads, run over real loopback TCP inside one Trio run."""

from __future__ import annotations

import time
from functools import partial

import trio

from ._impls import End, Impl, Pair
from ._material import Side

CHUNK = 64 * 1024
"""Bytes per ``send_all`` in the bulk benchmarks, and per ``receive_some``."""

REFERENCE_BULK_FACTOR = 4
"""The bulk references (no TLS, or no event loop) run several times as fast as
the TLS streams: they move this many times the bytes per sample, so that
their samples last about as long as the streams' and see the same machine."""

MESSAGE_SIZE = 64
_MESSAGE = bytes(range(MESSAGE_SIZE))
_STOP = b"\xff" * MESSAGE_SIZE


async def bulk(sender: End, receiver: End, total: int) -> float:
    """Send ``total`` bytes in 64 KiB writes; return bytes per second.

    The clock runs from the first write until the receiver has every byte.
    """
    chunk = bytes(CHUNK)
    writes = total // CHUNK
    total = writes * CHUNK

    async def send() -> None:
        send_all = sender.send
        for _ in range(writes):
            await send_all(chunk)

    async def receive() -> None:
        receive_some = receiver.receive
        got = 0
        while got < total:
            data = await receive_some(CHUNK)
            if not data:
                raise RuntimeError("the sender closed before the end of the sample")
            got += len(data)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        nursery.start_soon(send)
    return total / (time.perf_counter() - start)


async def _receive_exactly(end: End, size: int) -> bytes | bytearray:
    data = await end.receive(CHUNK)
    while len(data) < size:
        more = await end.receive(CHUNK)
        if not more:
            raise RuntimeError("the peer closed in the middle of a message")
        data += more
    return data


async def _echo_server(end: End) -> None:
    """Echo 64-byte messages until the stop message (echoed too)."""
    receive, send = end.receive, end.send
    while True:
        data = await receive(CHUNK)
        if len(data) < MESSAGE_SIZE:
            data += await _receive_exactly(end, MESSAGE_SIZE - len(data))
        await send(bytes(data))
        if data == _STOP:
            return


async def echo(pairs: list[Pair], seconds: float) -> float:
    """Round trips of 64 bytes per second, summed over ``pairs``.

    Each client sends a message and waits for its echo, until the deadline;
    then it sends a stop message, so that no stream is ever cancelled
    mid-call (``trio.SSLStream`` would be broken by that).
    """
    counts = [0] * len(pairs)
    finished = [0.0] * len(pairs)
    clock = time.perf_counter

    async def client(index: int, end: End, deadline: float) -> None:
        receive, send = end.receive, end.send
        done = 0
        while clock() < deadline:
            await send(_MESSAGE)
            data = await receive(CHUNK)
            if len(data) < MESSAGE_SIZE:
                await _receive_exactly(end, MESSAGE_SIZE - len(data))
            done += 1
        finished[index] = clock()
        counts[index] = done
        await send(_STOP)
        await _receive_exactly(end, MESSAGE_SIZE)

    start = clock()
    deadline = start + seconds
    async with trio.open_nursery() as nursery:
        for index, (client_end, server_end) in enumerate(pairs):
            nursery.start_soon(_echo_server, server_end)
            nursery.start_soon(client, index, client_end, deadline)
    return sum(counts) / (max(finished) - start)


async def handshakes(impl: Impl, side: Side, concurrency: int, seconds: float) -> float:
    """New connections per second, each with a full handshake.

    Every connection is: TCP connect, TLS handshake, one byte from the
    client echoed by the server (so that both ends have finished their
    handshake, including the server's check of a client certificate, which
    in TLS 1.3 ends after the client's), and close.  ``concurrency`` clients
    connect in a loop until the deadline.
    """
    clock = time.perf_counter
    count = 0
    async with trio.open_nursery() as nursery:
        port: int = await nursery.start(partial(impl.serve, side))
        await impl.connect(port, side)  # warm-up, untimed

        async def worker(deadline: float) -> None:
            nonlocal count
            while clock() < deadline:
                await impl.connect(port, side)
                count += 1

        start = clock()
        async with trio.open_nursery() as workers:
            for _ in range(concurrency):
                workers.start_soon(worker, start + seconds)
        elapsed = clock() - start
        nursery.cancel_scope.cancel()
    return count / elapsed
