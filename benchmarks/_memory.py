"""Memory per idle established connection pair, in a process of its own.

Run as ``python -m benchmarks._memory IMPL PAIRS``; prints one JSON object.
The parent starts a fresh interpreter for every implementation (and every
repeat), so that one implementation's allocations, freed or not, never show
up in another's numbers.

Two measurements, one after the other:

1. Resident set size: open and handshake ``PAIRS`` client/server pairs over
   loopback, leave them idle, and read ``VmRSS`` before and after.  This
   includes OpenSSL's C allocations and the allocator's own overhead.  Then
   ``BULK_PAIRS`` of them move 1 MiB each way, one pair after the other, and
   go idle again: the RSS that stays, per pair, is what such traffic leaves
   behind in every connection (memory BIOs keep their largest size).
2. Python heap: the same again (after closing the first set) under
   :mod:`tracemalloc`, which sees only memory allocated through Python.

``tracemalloc`` makes allocation slower and costs memory itself, which is
why it is off during the first measurement.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tracemalloc

import trio

from ._impls import BY_KEY, End, Impl, Pair
from ._material import Side, make_material
from ._workloads import CHUNK

_BATCH = 50
BULK_PAIRS = 200
"""How many of the idle pairs then move ``BULK_BYTES`` each way."""
BULK_BYTES = 1 << 20


def rss_bytes() -> int:
    """The resident set size of this process."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def _open(impl: Impl, side: Side, count: int) -> list[Pair]:
    pairs: list[Pair] = []
    async with impl.pairs(side) as make:

        async def one() -> None:
            pairs.append(await make())

        for first in range(0, count, _BATCH):
            async with trio.open_nursery() as nursery:
                for _ in range(min(_BATCH, count - first)):
                    nursery.start_soon(one)
    return pairs


async def _close(pairs: list[Pair]) -> None:
    async with trio.open_nursery() as nursery:
        for client, server in pairs:
            nursery.start_soon(client.close)
            nursery.start_soon(server.close)
    pairs.clear()


async def _transfer(sender: End, receiver: End) -> None:
    """Move ``BULK_BYTES`` in 64 KiB writes and reads, as the bulk benchmark."""
    chunk = bytes(CHUNK)

    async def send() -> None:
        for _ in range(BULK_BYTES // CHUNK):
            await sender.send(chunk)

    async def receive() -> None:
        got = 0
        while got < BULK_BYTES:
            data = await receiver.receive(CHUNK)
            if not data:
                raise RuntimeError("the sender closed in the middle of a transfer")
            got += len(data)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        nursery.start_soon(send)


async def measure(impl: Impl, count: int) -> dict[str, float]:
    side = make_material("ecdsa").plain
    # Warm up: imports, caches, the contexts, the allocator's first arenas.
    await _close(await _open(impl, side, _BATCH))
    gc.collect()

    before = rss_bytes()
    pairs = await _open(impl, side, count)
    gc.collect()
    idle = rss_bytes()
    rss = (idle - before) / count
    # Then some of them move 1 MiB each way and go idle again: what stays.
    moved = pairs[:BULK_PAIRS]
    for client, server in moved:
        await _transfer(client, server)
        await _transfer(server, client)
    gc.collect()
    after_bulk = (rss_bytes() - idle) / len(moved)
    await _close(pairs)
    gc.collect()

    tracemalloc.start()
    start, _ = tracemalloc.get_traced_memory()
    pairs = await _open(impl, side, count)
    gc.collect()
    now, _ = tracemalloc.get_traced_memory()
    heap = (now - start) / count
    tracemalloc.stop()
    await _close(pairs)
    return {
        "rss_per_pair": rss,
        "heap_per_pair": heap,
        "rss_after_bulk_per_pair": after_bulk,
        "pairs": count,
        "bulk_pairs": len(moved),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("impl", choices=sorted(BY_KEY))
    parser.add_argument("pairs", type=int)
    args = parser.parse_args(argv)
    result = trio.run(measure, BY_KEY[args.impl], args.pairs)
    result["pid"] = os.getpid()
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
