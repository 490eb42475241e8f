"""The atheris fuzz targets in fuzz/, run on their seeds without libFuzzer.

``fuzz/run.py`` seeds every target's corpus from the real first flights in
``tests/hellos`` (behind a header for the engine targets) plus, for the two
engine targets, one input per stage and mode.  Here every seed goes through
its target's ``TestOneInput`` in the ordinary test run, so that a target that
no longer runs, a seed that crashes it, or a hello that does not reach every
target fails at once rather than in the next fuzzing session; the crash
inputs kept in ``fuzz/reproducers`` are replayed the same way.  The stages
the engine targets claim to reach (before the first flight, mid-handshake,
after it, at the close_notify, after the close, on the client and on the
server) are checked on the bytes the targets hand over.

Without atheris installed, a stand-in provides what the targets use at
import time (``instrument_imports``, without instrumentation; ``Setup`` and
``Fuzz`` are not called here).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
HELLOS = Path(__file__).resolve().parent / "hellos"
ENGINE_TARGETS = ["server_engine", "client_engine"]


def _stand_in_atheris() -> types.ModuleType:
    module = types.ModuleType("atheris")

    def instrument_imports(**_: object) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()

    def not_here(*_: object) -> None:
        raise RuntimeError("libFuzzer is not run by the tests")

    module.instrument_imports = instrument_imports  # type: ignore[attr-defined]
    module.Setup = not_here  # type: ignore[attr-defined]
    module.Fuzz = not_here  # type: ignore[attr-defined]
    return module


@pytest.fixture(scope="module")
def fuzz() -> Iterator[dict[str, Any]]:
    """fuzz/run.py and every target module, by name."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(FUZZ))
        try:
            importlib.import_module("atheris")
        except ImportError:
            patch.setitem(sys.modules, "atheris", _stand_in_atheris())
        run = importlib.import_module("run")
        modules = {"run": run}
        for target, path in run.TARGETS.items():
            modules[target] = importlib.import_module(path.stem)
        yield modules


def test_every_target_file_is_run_and_seeded(fuzz: dict[str, Any]) -> None:
    run = fuzz["run"]
    on_disk = {path.name for path in FUZZ.glob("fuzz_*.py")}
    assert {path.name for path in run.TARGETS.values()} == on_disk
    assert run.HELLOS.resolve() == HELLOS


@pytest.mark.parametrize("target", ["client_hello", *ENGINE_TARGETS])
def test_every_real_first_flight_seeds_the_target(
    fuzz: dict[str, Any], target: str
) -> None:
    seeds: dict[str, bytes] = fuzz["run"].seeds(target)
    hellos = sorted(HELLOS.glob("*.bin"))
    assert len(hellos) >= 10
    for path in hellos:
        flight = path.read_bytes()
        if target == "client_hello":
            assert seeds[path.name] == flight
            continue
        # Each engine target gets each flight in every configuration, as
        # the first bytes its engine is handed.
        for config in range(4):
            assert seeds[f"hello-config{config}-{path.stem}"] == (
                bytes((config, 0, 0, 0)) + flight
            )
    if target != "client_hello":
        stages = {data[1] for data in seeds.values()}
        modes = {data[2] for data in seeds.values()}
        assert stages == set(range(5))
        assert modes == {0, 1, 2}


def test_seeding_keeps_a_corpus_and_adds_what_it_lacks(
    fuzz: dict[str, Any], tmp_path: Path
) -> None:
    run = fuzz["run"]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "found-by-the-fuzzer").write_bytes(b"\x16\x03\x01")
    (corpus / "s_client_tls13.bin").write_bytes(b"minimised")
    run.seed("client_hello", corpus)
    assert (corpus / "found-by-the-fuzzer").read_bytes() == b"\x16\x03\x01"
    assert (corpus / "s_client_tls13.bin").read_bytes() == b"minimised"
    for path in HELLOS.glob("*.bin"):
        if path.name != "s_client_tls13.bin":
            assert (corpus / path.name).read_bytes() == path.read_bytes()


@pytest.mark.parametrize("target", ["client_hello", *ENGINE_TARGETS])
def test_every_seed_runs_through_its_target(fuzz: dict[str, Any], target: str) -> None:
    test_one_input = fuzz[target].TestOneInput
    seeds = fuzz["run"].seeds(target)
    for data in seeds.values():
        test_one_input(data)
    # Inputs shorter than the header are skipped, not crashes.
    test_one_input(b"")
    test_one_input(b"\x00\x00")


def test_reproducers_no_longer_crash(fuzz: dict[str, Any]) -> None:
    found = sorted((FUZZ / "reproducers").glob("*.bin"))
    assert found
    for path in found:
        target = path.name.split("-", 1)[0]
        fuzz[target].TestOneInput(path.read_bytes())


def _records(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    pos = 0
    while pos + 5 <= len(data):
        end = pos + 5 + int.from_bytes(data[pos + 3 : pos + 5], "big")
        out.append((data[pos], data[pos + 5 : end]))
        pos = end
    assert pos == len(data), "not whole records"
    return out


@pytest.mark.parametrize("target", ENGINE_TARGETS)
@pytest.mark.parametrize("config", range(4))
def test_engine_targets_reach_every_stage(
    fuzz: dict[str, Any], target: str, config: int
) -> None:
    """What each stage hands the engine under test is what the target's
    documentation says it is."""
    module = fuzz[target]
    session = importlib.import_module("engine_session")
    tls13 = config >= 2
    for stage in range(5):
        client, server = session.pair(config)
        victim = server if target == "server_engine" else client
        real = _records(module._advance(client, server, stage))
        types_ = [content_type for content_type, _ in real]
        if stage == 0:
            # The first flight: a ClientHello, or a ServerHello.
            assert not victim.received_anything
            assert types_[0] == 22
            assert real[0][1][0] == (1 if target == "server_engine" else 2)
        elif stage == 1:
            assert victim.received_anything
            assert not victim.handshake_complete
            assert real
        else:
            assert victim.handshake_complete
            # Application data, or a close_notify: an alert record in TLS
            # 1.2, application data in TLS 1.3.
            close = stage == 3 and not tls13
            assert types_[-1] == (21 if close else 23), (stage, types_)
            # Before the close_notify, the engine can still read; after the
            # close (stage 4, a replay), it is at the end of its stream.
            assert (victim.read(1) == b"") is (stage == 4)
