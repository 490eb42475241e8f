"""The benchmark runner: what is measured, in which order, and how often.

Method: for every benchmark, each implementation gets its connections set
up first (outside the clock), then the implementations run one short slice
each, in a rotating order (A B C, B C A, C A B, ...), for ``rounds`` rounds.
A round's ratio is an implementation's value divided by ``trio.SSLStream``'s
value in the same round; the tables give the median and the min–max of the
values, the ratio of the medians, and the range of the per-round ratios.

The bulk, echo and handshake benchmarks also run two references in the same
rotation: plain ``trio.SocketStream`` with no TLS (the transport and event
loop alone), and the same TLS work through memory BIOs with no event loop
(TLS alone).  Together they give each benchmark's additive bound (see
``_bounds``); the TLS-alone samples are also the memory-BIO ceilings.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Protocol, TypeVar

import trio

from . import _bounds, _ceilings, _impls, _pooled, _report, _workloads
from ._impls import Impl, Pair
from ._material import KeyKind, Material, Side, make_material
from ._report import Ceiling
from ._stats import Result

MiB = 1024 * 1024
KiB = 1024
ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ("bulk", "echo", "handshake", "pooled", "memory", "ceiling")
#: The certificate keys of the handshake benchmarks and their ceilings.
_KEY_TITLES: tuple[tuple[KeyKind, str], ...] = (
    ("ecdsa", "ECDSA P-256"),
    ("rsa", "RSA 2048"),
)


@dataclass(frozen=True)
class Config:
    mode: str
    rounds: int
    bulk_bytes: int
    echo_seconds: float
    echo_connections: int
    handshake_seconds: float
    handshake_concurrency: int
    memory_pairs: int
    memory_rounds: int
    ceiling_seconds: float
    openssl_seconds: int
    pooled_seconds: float
    pooled_concurrency: int


FULL = Config(
    mode="full",
    rounds=7,
    bulk_bytes=64 * MiB,
    echo_seconds=1.0,
    echo_connections=50,
    handshake_seconds=1.0,
    handshake_concurrency=16,
    memory_pairs=1000,
    memory_rounds=3,
    ceiling_seconds=1.0,
    openssl_seconds=3,
    pooled_seconds=1.0,
    pooled_concurrency=16,
)

QUICK = Config(
    mode="quick",
    rounds=3,
    bulk_bytes=16 * MiB,
    echo_seconds=0.3,
    echo_connections=50,
    handshake_seconds=0.25,
    handshake_concurrency=16,
    memory_pairs=1000,
    memory_rounds=1,
    ceiling_seconds=0.3,
    openssl_seconds=1,
    pooled_seconds=0.3,
    pooled_concurrency=16,
)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _Named(Protocol):
    @property
    def key(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def reference(self) -> bool: ...


N = TypeVar("N", bound=_Named)


T = TypeVar("T")


def _rotated(items: Sequence[T], round_index: int) -> list[T]:
    shift = round_index % len(items)
    return [*items[shift:], *items[:shift]]


@dataclass(frozen=True)
class TLSAlone:
    """The TLS work of a benchmark with no event loop, as a rotation entry.

    It runs synchronously, blocking the Trio run while it measures: nothing
    else runs during a sample anyway.
    """

    measure: Callable[[], float]
    warmup: Callable[[], object]
    key: str = _ceilings.TLS_ALONE_KEY
    label: str = _ceilings.TLS_ALONE_LABEL
    reference: bool = True


async def _interleave(
    result: Result,
    impls: Sequence[N],
    rounds: int,
    sample: Callable[[N], Awaitable[float]],
    warmup: Callable[[N], Awaitable[float]] | None = None,
    tls_alone: TLSAlone | None = None,
) -> Result:
    """Run ``sample`` for every implementation, interleaved, ``rounds`` times.

    ``warmup`` (a shorter sample) runs once per implementation first, and is
    not recorded.  ``tls_alone``, if given, takes its turn in every round
    like an implementation.
    """
    if warmup is not None:
        for impl in impls:
            gc.collect()
            await warmup(impl)
    entries: list[N | TLSAlone] = [*impls]
    if tls_alone is not None:
        gc.collect()
        tls_alone.warmup()
        entries.append(tls_alone)
    for round_index in range(rounds):
        for entry in _rotated(entries, round_index):
            gc.collect()
            if isinstance(entry, TLSAlone):
                value = entry.measure()
            else:
                value = await sample(entry)
            result.add(entry.key, entry.label, value, reference=entry.reference)
    _log(f"  {result.title}: done")
    return result


# -- stream benchmarks ------------------------------------------------------------


async def _open_pairs(
    stack: contextlib.AsyncExitStack, impl: Impl, material: Material, count: int
) -> list[Pair]:
    make = await stack.enter_async_context(impl.pairs(material.plain))
    pairs = [await make() for _ in range(count)]
    for client, server in pairs:
        stack.push_async_callback(client.close)
        stack.push_async_callback(server.close)
    return pairs


async def run_bulk(
    config: Config, material: Material, results: dict[str, Result]
) -> None:
    impls = [*_impls.STREAM_IMPLS, _impls.PLAIN_TCP]
    async with contextlib.AsyncExitStack() as stack:
        pairs = {
            impl.key: (await _open_pairs(stack, impl, material, 1))[0] for impl in impls
        }
        for key, title, direction in (
            ("bulk-c2s", "Bulk client→server", 0),
            ("bulk-s2c", "Bulk server→client", 1),
        ):

            async def sample(
                impl: Impl, direction: int = direction, size: int = config.bulk_bytes
            ) -> float:
                client, server = pairs[impl.key]
                sender, receiver = (
                    (client, server) if direction == 0 else (server, client)
                )
                if impl.reference:
                    size *= _workloads.REFERENCE_BULK_FACTOR
                return await _workloads.bulk(sender, receiver, size)

            bio = partial(
                _ceilings.bio_bulk,
                material.plain,
                server_to_client=direction == 1,
            )
            results[key] = await _interleave(
                Result(key, title, "MiB/s", scale=MiB),
                impls,
                config.rounds,
                sample,
                partial(sample, direction=direction, size=config.bulk_bytes // 8),
                TLSAlone(
                    partial(bio, config.bulk_bytes * _workloads.REFERENCE_BULK_FACTOR),
                    partial(bio, config.bulk_bytes // 8),
                ),
            )


async def run_echo(
    config: Config, material: Material, results: dict[str, Result]
) -> None:
    impls = [*_impls.STREAM_IMPLS, _impls.PLAIN_TCP]
    n = config.echo_connections
    async with contextlib.AsyncExitStack() as stack:
        pairs = {
            impl.key: await _open_pairs(stack, impl, material, n) for impl in impls
        }
        for key, title, count in (
            ("echo-1", "Echo 64 B, 1 connection", 1),
            ("echo-50", f"Echo 64 B, {n} connections", n),
        ):

            async def sample(
                impl: Impl, count: int = count, seconds: float = config.echo_seconds
            ) -> float:
                return await _workloads.echo(pairs[impl.key][:count], seconds)

            bio = partial(_ceilings.bio_echo, material.plain)
            results[key] = await _interleave(
                Result(key, title, "round trips/s"),
                impls,
                config.rounds,
                sample,
                partial(sample, count=count, seconds=config.echo_seconds / 4),
                TLSAlone(
                    partial(bio, config.echo_seconds),
                    partial(bio, config.echo_seconds / 4),
                ),
            )


async def _handshake_sample(
    side: Side, concurrency: int, seconds: float, impl: Impl
) -> float:
    return await _workloads.handshakes(impl, side, concurrency, seconds)


async def run_handshakes(
    config: Config, materials: dict[KeyKind, Material], results: dict[str, Result]
) -> None:
    impls = [*_impls.HANDSHAKE_IMPLS, _impls.PLAIN_TCP]
    c = config.handshake_concurrency
    for key_kind, key_title in _KEY_TITLES:
        material = materials[key_kind]
        for mutual in (False, True):
            side = material.side(mutual)
            for concurrency in (1, c):
                key = (
                    f"handshake-{key_kind}-{'mutual' if mutual else 'server'}-"
                    f"{'seq' if concurrency == 1 else f'c{c}'}"
                )
                title = (
                    f"Handshakes, {key_title}, "
                    f"{'client cert' if mutual else 'no client cert'}, "
                    f"{'sequential' if concurrency == 1 else f'{concurrency} concurrent'}"
                )

                sample = partial(
                    _handshake_sample, side, concurrency, config.handshake_seconds
                )
                results[key] = await _interleave(
                    Result(key, title, "handshakes/s"),
                    impls,
                    config.rounds,
                    sample,
                    tls_alone=TLSAlone(
                        partial(
                            _ceilings.bio_handshakes, side, config.handshake_seconds
                        ),
                        partial(_ceilings.MemoryPair.open, side),
                    ),
                )


async def run_pooled(
    config: Config, material: Material, results: dict[str, Result]
) -> None:
    """Requests/s over a pool of connections vs a new connection per request."""
    c = config.pooled_concurrency
    async with _pooled.open_variants(material.plain, c) as variants:
        for concurrency in (1, c):
            mode = "seq" if concurrency == 1 else f"c{c}"
            key = f"pooled-ecdsa-{mode}"
            title = (
                "Requests (64 B echo), ECDSA P-256, "
                f"{'sequential' if concurrency == 1 else f'{concurrency} concurrent'}"
            )

            async def sample(
                variant: _pooled.Variant,
                concurrency: int = concurrency,
                seconds: float = config.pooled_seconds,
            ) -> float:
                return await _pooled.requests(variant.request, concurrency, seconds)

            results[key] = await _interleave(
                Result(
                    key,
                    title,
                    "requests/s",
                    baseline="new",
                    baseline_label="a new connection",
                ),
                variants,
                config.rounds,
                sample,
                partial(
                    sample, concurrency=concurrency, seconds=config.pooled_seconds / 4
                ),
            )


async def run_async(
    config: Config, selected: set[str], results: dict[str, Result]
) -> None:
    ecdsa = make_material("ecdsa")
    if "bulk" in selected:
        _log("bulk throughput ...")
        await run_bulk(config, ecdsa, results)
    if "echo" in selected:
        _log("echo ...")
        await run_echo(config, ecdsa, results)
    if "handshake" in selected:
        _log("handshakes ...")
        await run_handshakes(
            config, {"ecdsa": ecdsa, "rsa": make_material("rsa")}, results
        )
    if "pooled" in selected:
        _log("pooled requests ...")
        await run_pooled(config, ecdsa, results)


# -- memory, in subprocesses -------------------------------------------------------


def _memory_child(impl: Impl, pairs: int) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), env.get("PYTHONPATH")) if p
    )
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks._memory", impl.key, str(pairs)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def run_memory(config: Config, results: dict[str, Result]) -> None:
    """One fresh interpreter per implementation and round.

    Memory does not depend on CPU time, so a round's children run side by
    side; the numbers are per process and unaffected.
    """
    _log("memory ...")
    impls = _impls.STREAM_IMPLS
    rss = Result(
        "memory-rss",
        f"RSS per idle connection pair ({config.memory_pairs} pairs)",
        "KiB",
        higher_is_better=False,
        scale=KiB,
    )
    heap = Result(
        "memory-heap",
        "Python heap per idle connection pair (tracemalloc)",
        "KiB",
        higher_is_better=False,
        scale=KiB,
    )
    after_bulk = Result(
        "memory-rss-after-bulk",
        "RSS each pair keeps after moving 1 MiB each way",
        "KiB",
        higher_is_better=False,
        scale=KiB,
    )
    for round_index in range(config.memory_rounds):
        order = _rotated(impls, round_index)
        children = [(impl, _memory_child(impl, config.memory_pairs)) for impl in order]
        for impl, child in children:
            out, _ = child.communicate()
            if child.returncode:
                raise SystemExit(f"memory measurement of {impl.label} failed")
            data = json.loads(out)
            rss.add(impl.key, impl.label, data["rss_per_pair"])
            heap.add(impl.key, impl.label, data["heap_per_pair"])
            after_bulk.add(impl.key, impl.label, data["rss_after_bulk_per_pair"])
    results[rss.key] = rss
    results[heap.key] = heap
    results[after_bulk.key] = after_bulk
    _log("  memory: done")


# -- ceilings ------------------------------------------------------------------------


def _bio_ceiling(
    config: Config,
    results: dict[str, Result],
    title: str,
    unit: str,
    scale: float,
    compare_to: str,
    measure: Callable[[], float],
    warmup: Callable[[], object],
) -> Ceiling:
    """A memory-BIO ceiling: the TLS-alone samples of the benchmark
    ``compare_to`` when it ran, else ``config.rounds`` samples of its own."""
    result = results.get(compare_to)
    if result is not None and _ceilings.TLS_ALONE_KEY in result.values:
        values = list(result.values[_ceilings.TLS_ALONE_KEY])
    else:
        gc.collect()
        warmup()
        values = []
        for _ in range(config.rounds):
            gc.collect()
            values.append(measure())
    return Ceiling(title, unit, values, scale, compare_to)


def run_ceilings(
    config: Config, results: dict[str, Result], notes: list[str]
) -> list[Ceiling]:
    _log("ceilings ...")
    materials = {key: make_material(key) for key, _ in _KEY_TITLES}
    side = materials["ecdsa"].plain
    ceiling = partial(_bio_ceiling, config, results)
    ceilings = []
    for direction, arrow in (("c2s", "client→server"), ("s2c", "server→client")):
        bio = partial(_ceilings.bio_bulk, side, server_to_client=direction == "s2c")
        ceilings.append(
            ceiling(
                f"Memory BIOs, no event loop: bulk {arrow}",
                "MiB/s",
                MiB,
                f"bulk-{direction}",
                partial(bio, config.bulk_bytes),
                partial(bio, config.bulk_bytes // 8),
            )
        )
    echo = partial(_ceilings.bio_echo, side)
    ceilings.append(
        ceiling(
            "Memory BIOs, no event loop: echo 64 B",
            "round trips/s",
            1.0,
            "echo-1",
            partial(echo, config.ceiling_seconds),
            partial(echo, config.ceiling_seconds / 4),
        )
    )
    for key, key_title in _KEY_TITLES:
        for mutual in (False, True):
            hs_side = materials[key].side(mutual)
            ceilings.append(
                ceiling(
                    f"Memory BIOs, no event loop: handshakes, {key_title}, "
                    f"{'client cert' if mutual else 'no client cert'}",
                    "handshakes/s",
                    1.0,
                    f"handshake-{key}-{'mutual' if mutual else 'server'}-seq",
                    partial(_ceilings.bio_handshakes, hs_side, config.ceiling_seconds),
                    partial(_ceilings.MemoryPair.open, hs_side),
                )
            )
    suite = _ceilings.cipher_name(side)
    speed = _ceilings.openssl_speed(suite, config.openssl_seconds)
    if speed is None:
        notes.append(f"openssl speed: not available for {suite}; skipped.")
    else:
        name, rate = speed
        ceilings.append(
            Ceiling(
                f"openssl speed -evp {name}, 16 KiB blocks (encryption only)",
                "MiB/s",
                [rate],
                MiB,
                "bulk-c2s",
            )
        )
    notes.append(
        "The memory-BIO ceilings run a client and a server SSLObject in one "
        "thread, as the stream benchmarks run both ends of a connection in one "
        "process: they count the TLS work of both ends. Each is the TLS-alone "
        "samples of its benchmark's rotation (the sequential one, for "
        "handshakes), or is measured on its own when that benchmark did not run."
    )
    notes.append(f"Negotiated cipher suite: {suite} (TLS 1.3).")
    _log("  ceilings: done")
    return ceilings


# -- command line ------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Benchmark trio_verify.TLSStream against trio.SSLStream "
        "(the baseline) and anyio's TLSStream, over loopback TCP.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a short run (about a minute)"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=BENCHMARKS,
        help="run only these benchmarks (repeatable)",
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds per benchmark")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write raw results")
    parser.add_argument("--markdown", action="store_true", help="also print Markdown")
    parser.add_argument(
        "--rst", action="store_true", help="also print reStructuredText"
    )
    parser.add_argument(
        "--update-docs",
        type=Path,
        metavar="RST_FILE",
        help="replace the generated results block of this page",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = QUICK if args.quick else FULL
    if args.rounds:
        config = replace(config, rounds=args.rounds, memory_rounds=args.rounds)
    selected = set(args.only or BENCHMARKS)
    started = time.perf_counter()
    facts = _report.run_facts(config.mode)
    facts["rounds"] = config.rounds
    notes: list[str] = []
    if _impls.ANYIO is None:
        notes.append("anyio is not installed: its TLSStream was skipped.")
    results: dict[str, Result] = {}
    if selected & {"bulk", "echo", "handshake", "pooled"}:
        trio.run(run_async, config, selected, results)
    ceilings = run_ceilings(config, results, notes) if "ceiling" in selected else []
    if "memory" in selected:
        run_memory(config, results)
    facts["runtime"] = f"{time.perf_counter() - started:.0f} s"
    facts["load_end"] = _report.load_average()

    print(_report.render_text(facts, results, ceilings, notes))
    if args.markdown:
        print()
        print(_report.render_markdown(facts, results, ceilings, notes))
    rst = _report.render_rst(facts, results, ceilings, notes)
    if args.rst:
        print()
        print(rst)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "facts": facts,
                    "config": config.__dict__,
                    "results": [r.to_json() for r in results.values()],
                    "ceilings": [c.__dict__ for c in ceilings],
                    "additive_bounds": [
                        b.__dict__ for b in _bounds.additive_bounds(results)
                    ],
                    "notes": notes,
                },
                indent=2,
            ),
            encoding="utf-8",
        )
    if args.update_docs:
        # The pooled case has a block of its own, so that either part can be
        # rerun alone without erasing the other's recorded numbers.
        main_results = {k: r for k, r in results.items() if not k.startswith("pooled")}
        pooled_results = {k: r for k, r in results.items() if k.startswith("pooled")}
        if selected - {"pooled"}:
            _report.update_docs(
                args.update_docs,
                _report.render_rst(facts, main_results, ceilings, notes),
            )
        if pooled_results:
            _report.update_docs(
                args.update_docs,
                _report.render_rst(facts, pooled_results, [], []),
                begin_marker=_report.POOLED_BEGIN_MARKER,
                end_marker=_report.POOLED_END_MARKER,
            )
        _log(f"updated {args.update_docs}")
    return 0
