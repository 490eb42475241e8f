"""The example of the "Client pools" page, run as the page shows it.

``docs/examples/client_pool.py`` is included verbatim in ``docs/pools.rst``;
this test imports it by path, runs its ``main()`` and checks what it
observed against what the page says about it.
"""

from __future__ import annotations

import importlib.util
import re
import runpy
from pathlib import Path
from types import ModuleType

import pytest
import trio

import trio_verify as tv

DOCS = Path(__file__).resolve().parent.parent / "docs"
EXAMPLE = DOCS / "examples" / "client_pool.py"
PAGE = DOCS / "pools.rst"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_docs_example_client_pool", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_is_on_the_page() -> None:
    included = re.findall(
        r"^\.\. literalinclude:: examples/(\w+)\.py$", PAGE.read_text(), re.M
    )
    assert included == ["client_pool"]


def test_the_example_runs_as_a_script(capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    out = capsys.readouterr().out
    assert "alice: b'hello alice'" in out
    assert "resumed: [False, True]" in out


async def test_the_example_observes_what_the_page_says() -> None:
    with trio.fail_after(10):
        seen = await load_example().main()

    assert seen["alice"] == b"hello alice"
    assert seen["bob"] == b"hello bob"

    # Six checkouts, two connections: the second resumed the first's session.
    stats = seen["stats"]
    assert isinstance(stats, tv.PoolStats)
    assert (stats.open, stats.idle, stats.in_use, stats.waiting) == (2, 2, 0, 0)
    assert (stats.handshakes, stats.resumed_handshakes, stats.reused) == (2, 1, 4)
    assert stats.failures == {}
    assert seen["resumed"] == [False, True]

    # The stranger's failure: typed, and made exactly once.
    refused = seen["stranger"]
    assert isinstance(refused, tv.UnknownIssuer)
    assert refused.phase is tv.Phase.SERVER_CERTIFICATE
    assert refused.alert_sent is tv.Alert.UNKNOWN_CA
    stranger_stats = seen["stranger stats"]
    assert isinstance(stranger_stats, tv.PoolStats)
    assert stranger_stats.failures == {"UnknownIssuer": 1}
    assert (stranger_stats.open, stranger_stats.handshakes) == (0, 0)
