#!/usr/bin/env python3
"""Run the atheris fuzz targets for a bounded time each.

    python fuzz/run.py                             # every target, 60 s each
    python fuzz/run.py --time 600 server_engine    # one target, ten minutes
    python fuzz/run.py client_hello -jobs=2        # libFuzzer flags as they are

Each target keeps a working corpus in fuzz/corpus/<target>/ (seeded from
tests/hellos/*.bin on first use) and writes crashing inputs to
fuzz/crashes/<target>-crash-<sha1>.  The exit status is non-zero when a target
found a crash.  Needs atheris (``pip install atheris``).
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
}

# fuzz_server_engine.py's input header: configuration, stage, mode, flags.
ENGINE_SEEDS = {
    # A raw ClientHello in place of the real one, for each configuration.
    **{f"hello-config{config}": bytes((config, 0, 0, 0)) for config in range(4)},
    # Bit flips in each stage's real flight, and garbage after it.
    **{
        f"stage{stage}-mode{mode}": bytes((stage, stage, mode, 0)) + b"\x00\x05\x01"
        for stage in range(5)
        for mode in (1, 2)
    },
}


def seed(target: str, corpus: Path) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    if any(corpus.iterdir()):
        return
    hellos = sorted(HELLOS.glob("*.bin"))
    if target == "client_hello":
        for path in hellos:
            (corpus / path.name).write_bytes(path.read_bytes())
        return
    for name, header in ENGINE_SEEDS.items():
        if name.startswith("hello-"):
            for path in hellos:
                data = header + path.read_bytes()
                (corpus / f"{name}-{path.stem}").write_bytes(data)
        else:
            (corpus / name).write_bytes(header)


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
