#!/usr/bin/env python3
"""Run the atheris fuzz targets for a bounded time each.

    python fuzz/run.py                             # every target, 60 s each
    python fuzz/run.py --time 600 server_engine    # one target, ten minutes
    python fuzz/run.py client_hello -jobs=2        # libFuzzer flags as they are

Each target keeps a working corpus in fuzz/corpus/<target>/, seeded before
every run from tests/hellos/*.bin (seeds already there are kept, missing ones
written again, so a hello added to tests/hellos reaches an old corpus too),
and writes crashing inputs to fuzz/crashes/<target>-crash-<sha1>.  The exit
status is non-zero when a target found a crash.  Needs atheris
(``pip install atheris``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
HELLOS = HERE.parent / "tests" / "hellos"

TARGETS = {
    "client_hello": HERE / "fuzz_client_hello.py",
    "server_engine": HERE / "fuzz_server_engine.py",
    "client_engine": HERE / "fuzz_client_engine.py",
}

# The engine targets' input header: configuration, stage, mode, flags.
ENGINE_SEEDS = {
    # A raw ClientHello in place of what the engine gets first (for the
    # server its ClientHello, for the client the server's first flight), for
    # each configuration.
    **{f"hello-config{config}": bytes((config, 0, 0, 0)) for config in range(4)},
    # Bit flips in each stage's real flight, and garbage after it.
    **{
        f"stage{stage}-mode{mode}": bytes((stage, stage, mode, 0)) + b"\x00\x05\x01"
        for stage in range(5)
        for mode in (1, 2)
    },
}


def seeds(target: str) -> dict[str, bytes]:
    """The seed inputs of ``target``: the real first flights of tests/hellos
    (behind the engine header for the engine targets), and for the engine
    targets one input per stage and mode."""
    hellos = sorted(HELLOS.glob("*.bin"))
    if target == "client_hello":
        return {path.name: path.read_bytes() for path in hellos}
    found: dict[str, bytes] = {}
    for name, header in ENGINE_SEEDS.items():
        if name.startswith("hello-"):
            for path in hellos:
                found[f"{name}-{path.stem}"] = header + path.read_bytes()
        else:
            found[name] = header
    return found


def seed(target: str, corpus: Path) -> None:
    """Write the seeds that ``corpus`` is missing."""
    corpus.mkdir(parents=True, exist_ok=True)
    for name, data in seeds(target).items():
        path = corpus / name
        if not path.exists():
            path.write_bytes(data)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help=f"some of {', '.join(TARGETS)}")
    parser.add_argument("--time", type=int, default=60, help="seconds per target")
    args, flags = parser.parse_known_args()
    unknown = [target for target in args.targets if target not in TARGETS]
    if unknown:
        parser.error(f"unknown targets {unknown}; choose from {list(TARGETS)}")
    crashes = HERE / "crashes"
    crashes.mkdir(exist_ok=True)
    failed = []
    for target in args.targets or list(TARGETS):
        corpus = HERE / "corpus" / target
        seed(target, corpus)
        command = [
            sys.executable,
            os.fspath(TARGETS[target]),
            os.fspath(corpus),
            f"-max_total_time={args.time}",
            "-timeout=10",
            "-rss_limit_mb=2048",
            "-max_len=16384",
            "-print_final_stats=1",
            f"-artifact_prefix={crashes}{os.sep}{target}-",
            *flags,
        ]
        print(f"== {target}: {' '.join(command)}", flush=True)
        if subprocess.run(command, check=False).returncode != 0:
            failed.append(target)
    if failed:
        print(f"crashes found by: {', '.join(failed)}; see {crashes}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
