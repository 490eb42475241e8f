"""Profile the 64-byte echo benchmark of one implementation with cProfile.

``python -m benchmarks.profile_echo [--impl trio_verify] [--seconds 3]``
prints the functions with the most time of their own, and the share of the
run each takes.  Both ends of the connection run in the profiled process, so
the profile shows the client and the server together.  cProfile adds a
fixed cost to every call, which inflates code made of many small calls: use
it to see where time goes, not to compare implementations.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

if __name__ == "__main__" and not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _impls, _workloads
from benchmarks._material import make_material


async def _run(impl: _impls.Impl, connections: int, seconds: float) -> float:
    side = make_material("ecdsa").plain
    async with impl.pairs(side) as make:
        pairs = [await make() for _ in range(connections)]
        try:
            await _workloads.echo(pairs, seconds / 10)  # warm-up
            profiler = cProfile.Profile()
            profiler.enable()
            rate = await _workloads.echo(pairs, seconds)
            profiler.disable()
        finally:
            for client, server in pairs:
                await client.close()
                await server.close()
    _report(profiler, rate)
    return rate


_AREAS = (
    ("trio_verify", "trio_verify (Python)"),
    ("anyio", "anyio (Python)"),
    ("trio/_core", "trio scheduler and I/O loop"),
    ("trio", "trio streams, sockets, locks"),
    ("benchmarks", "benchmark loop"),
)


def _area(filename: str, name: str) -> str:
    if filename == "~":
        if "_ssl." in name or "SSL" in name:
            return "OpenSSL via the ssl module (C)"
        if "socket" in name or "epoll" in name:
            return "socket and epoll system calls (C)"
        return "other built-ins (C)"
    path = filename.replace("\\", "/")
    for fragment, area in _AREAS:
        if f"/{fragment}/" in path:
            return area
    return "other Python (stdlib: ssl, contextlib, ...)"


def _report(profiler: cProfile.Profile, rate: float, top: int = 25) -> None:
    stats = pstats.Stats(profiler)
    raw = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values())
    rows = sorted(raw.items(), key=lambda item: item[1][2], reverse=True)[:top]
    print(f"{rate:,.0f} round trips/s under the profiler; {total:.2f} s profiled\n")
    areas: dict[str, float] = {}
    for (filename, _, name), entry in raw.items():
        area = _area(filename, name)
        areas[area] = areas.get(area, 0.0) + entry[2]
    print("own time by area:")
    for area, own in sorted(areas.items(), key=lambda item: -item[1]):
        print(f"{own / total:6.1%}  {area}")
    print(f"\n{'own %':>6} {'cum %':>6} {'calls':>9}  function")
    for (filename, line, name), (_, calls, own, cumulative, _) in rows:
        where = f"{Path(filename).name}:{line}" if line else filename
        print(
            f"{own / total:6.1%} {cumulative / total:6.1%} {calls:>9}  {name} ({where})"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=sorted(_impls.BY_KEY), default="trio_verify")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    trio.run(_run, _impls.BY_KEY[args.impl], args.connections, args.seconds)


if __name__ == "__main__":
    main()
