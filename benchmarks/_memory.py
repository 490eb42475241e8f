"""Memory per idle established connection pair, in a process of its own.

Run as ``python -m benchmarks._memory IMPL PAIRS``; prints one JSON object.
The parent starts a fresh interpreter for every implementation (and every
repeat), so that one implementation's allocations, freed or not, never show
up in another's numbers.

Two measurements, one after the other:

1. Resident set size: open and handshake ``PAIRS`` client/server pairs over
   loopback, leave them idle, and read ``VmRSS`` before and after.  This
   includes OpenSSL's C allocations and the allocator's own overhead.
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

from ._impls import BY_KEY, Impl, Pair
from ._material import Side, make_material

_BATCH = 50


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


async def measure(impl: Impl, count: int) -> dict[str, float]:
    side = make_material("ecdsa").plain
    # Warm up: imports, caches, the contexts, the allocator's first arenas.
    await _close(await _open(impl, side, _BATCH))
    gc.collect()

    before = rss_bytes()
    pairs = await _open(impl, side, count)
    gc.collect()
    rss = (rss_bytes() - before) / count
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
    return {"rss_per_pair": rss, "heap_per_pair": heap, "pairs": count}


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
