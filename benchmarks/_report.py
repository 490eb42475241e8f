"""Tables (plain text, Markdown, reStructuredText), run facts, and the docs page."""

from __future__ import annotations

import datetime
import os
import platform
import re
import shlex
import shutil
import ssl
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from ._bounds import Bound, additive_bounds
from ._bounds import notes as bound_notes
from ._stats import BASELINE_KEY, Result, Target

BEGIN_MARKER = ".. BEGIN GENERATED BENCHMARK RESULTS"
END_MARKER = ".. END GENERATED BENCHMARK RESULTS"
POOLED_BEGIN_MARKER = ".. BEGIN GENERATED POOLED RESULTS"
POOLED_END_MARKER = ".. END GENERATED POOLED RESULTS"

TARGETS = (
    Target(
        "bulk throughput ≥ 1.8x",
        ("bulk-c2s", "bulk-s2c"),
        ("trio_verify",),
        1.8,
        at_least=True,
    ),
    Target(
        "echo round trips ≥ 2.0x",
        ("echo-1", "echo-50"),
        ("trio_verify",),
        2.0,
        at_least=True,
    ),
    Target(
        "handshakes ≥ 1.2x",
        tuple(
            f"handshake-{key}-{auth}-{mode}"
            for key in ("ecdsa", "rsa")
            for auth in ("server", "mutual")
            for mode in ("seq", "c16")
        ),
        ("trio_verify", "trio_verify_listener"),
        1.2,
        at_least=True,
    ),
    Target(
        "RSS per idle connection ≤ 0.95x",
        ("memory-rss",),
        ("trio_verify",),
        0.95,
        at_least=False,
    ),
)


@dataclass(frozen=True)
class Ceiling:
    """An upper bound, and how close each implementation comes to it."""

    title: str
    unit: str
    values: list[float]
    scale: float
    compare_to: str
    """The key of the benchmark that does the same work through a stream."""
    note: str = ""


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _openssl_cli() -> str:
    openssl = shutil.which("openssl")
    if openssl is None:
        return "not found"
    try:
        return subprocess.run(
            [openssl, "version"], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_facts(mode: str) -> dict[str, Any]:
    """Where and how this run happened."""
    command = shlex.join(getattr(sys, "orig_argv", sys.argv))
    session = os.environ.get("NOX_CURRENT_SESSION")
    if session:
        command += f"  (in nox session {session!r})"
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": mode,
        "machine": f"{platform.system()} {platform.release()} {platform.machine()}",
        "cpu": _cpu_model(),
        "nproc": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "openssl": ssl.OPENSSL_VERSION,
        "openssl_cli": _openssl_cli(),
        "trio": _package_version("trio"),
        "trio_verify": _package_version("trio-verify"),
        "anyio": _package_version("anyio"),
        "command": command,
        "load": load_average(),
    }


def load_average() -> str:
    """The system load average, 1 and 5 minutes."""
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} (1 min), {five:.2f} (5 min)"


# -- formatting -----------------------------------------------------------------


def _number(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def result_rows(results: Iterable[Result]) -> list[list[str]]:
    rows = []
    for result in results:
        first = True
        for impl in result.values:
            s = result.summary(impl)
            scale = result.scale
            if impl == result.baseline:
                ratio = "1 (baseline)"
            elif s.ratio is not None and s.ratio_low is not None:
                ratio = f"{s.ratio:.2f} ({s.ratio_low:.2f}–{s.ratio_high:.2f})"
            else:
                ratio = "–"
            rows.append(
                [
                    f"{result.title} [{result.unit}]" if first else "",
                    result.labels[impl],
                    _number(s.median / scale),
                    f"{_number(s.low / scale)}–{_number(s.high / scale)}",
                    ratio,
                    result.verdict(impl),
                ]
            )
            first = False
    return rows


def result_header(baseline_label: str = "trio") -> list[str]:
    return [
        "Benchmark [unit]",
        "Implementation",
        "Median",
        "Spread (min–max)",
        f"Ratio to {baseline_label} (per-round range)",
        "Verdict",
    ]


RESULT_HEADER = result_header()


def result_groups(
    results: Iterable[Result],
) -> list[tuple[str, list[str], list[list[str]]]]:
    """(table title, header, rows) per baseline, trio.SSLStream's first."""
    groups: dict[str, list[Result]] = {}
    for result in results:
        groups.setdefault(result.baseline, []).append(result)
    tables = []
    for baseline in sorted(groups, key=lambda b: b != BASELINE_KEY):
        members = groups[baseline]
        title = "Results" if baseline == BASELINE_KEY else "Pooled requests"
        tables.append(
            (title, result_header(members[0].baseline_label), result_rows(members))
        )
    return tables


def ceiling_rows(
    ceilings: Sequence[Ceiling], results: dict[str, Result]
) -> tuple[list[str], list[list[str]]]:
    impls: dict[str, str] = {}
    for ceiling in ceilings:
        result = results.get(ceiling.compare_to)
        if result is not None:
            impls.update(
                (key, label)
                for key, label in result.labels.items()
                if key not in result.references
            )
    header = ["Ceiling [unit]", "Median", "Spread (min–max)"] + [
        f"{label} reaches" for label in impls.values()
    ]
    rows = []
    for ceiling in ceilings:
        values = sorted(ceiling.values)
        median = statistics.median(values)
        row = [
            f"{ceiling.title} [{ceiling.unit}]",
            _number(median / ceiling.scale),
            f"{_number(values[0] / ceiling.scale)}–{_number(values[-1] / ceiling.scale)}",
        ]
        result = results.get(ceiling.compare_to)
        for impl in impls:
            if result is None or impl not in result.values or not median:
                row.append("–")
            else:
                row.append(f"{result.summary(impl).median / median:.0%}")
        rows.append(row)
    return header, rows


def _ratio_range(ratio: float, low: float, high: float) -> str:
    return f"{ratio:.2f}x ({low:.2f}–{high:.2f})"


def target_rows(
    results: dict[str, Result], bounds: Sequence[Bound] = ()
) -> list[list[str]]:
    by_key = {bound.key: bound for bound in bounds}
    rows = []
    for target in TARGETS:
        for key, title, measured, status in target.status(results):
            bound = by_key.get(key)
            rows.append(
                [
                    target.description,
                    title,
                    measured,
                    "–"
                    if bound is None
                    else _ratio_range(bound.ratio, bound.ratio_low, bound.ratio_high),
                    status,
                ]
            )
    return rows


TARGET_HEADER = [
    "Target (trio_verify / trio)",
    "Benchmark",
    "Measured",
    "Additive bound / trio",
    "Status",
]


def _target_text(key: str) -> str:
    """The targets that cover the benchmark ``key``, e.g. ``≥ 1.8x``."""
    return ", ".join(
        f"{'≥' if target.at_least else '≤'} {target.bound:g}x"
        for target in TARGETS
        if key in target.result_keys
    )


BOUND_HEADER = [
    "Benchmark [unit]",
    "TLS alone (memory BIOs, both ends)",
    "Plain TCP, no TLS (reference)",
    "Additive bound",
    "trio.SSLStream",
    "Bound / trio (per-round range)",
    "Target",
]


def bound_rows(bounds: Sequence[Bound]) -> list[list[str]]:
    return [
        [
            f"{bound.title} [{bound.unit}]",
            _number(bound.tls_rate / bound.scale),
            _number(bound.plain_rate / bound.scale),
            _number(bound.rate / bound.scale),
            _number(bound.baseline_rate / bound.scale),
            _ratio_range(bound.ratio, bound.ratio_low, bound.ratio_high),
            _target_text(bound.key) or "–",
        ]
        for bound in bounds
    ]


def text_table(
    header: list[str], rows: list[list[str]], *, grouped: bool = False
) -> str:
    """A plain-text table; ``grouped`` puts a blank line before each group."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(header, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    for index, row in enumerate(rows):
        if grouped and index and row[0]:
            lines.append("")
        lines.append(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        )
    return "\n".join(line.rstrip() for line in lines)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join(
        [line(header), "|" + "|".join("---" for _ in header) + "|"]
        + [line(r) for r in rows]
    )


def rst_table(title: str, header: list[str], rows: list[list[str]]) -> str:
    lines = [f".. list-table:: {title}", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        lines.append(f"   * - {rst_escape(row[0])}".rstrip())
        lines.extend(f"     - {rst_escape(cell)}".rstrip() for cell in row[1:])
    return "\n".join(lines)


def rst_escape(text: str) -> str:
    """``text`` as literal reStructuredText prose."""
    return re.sub(r"([\\*`|_])", r"\\\1", text)


_FACT_LABELS = (
    ("date", "Date"),
    ("mode", "Mode"),
    ("machine", "System"),
    ("cpu", "CPU"),
    ("nproc", "CPUs available"),
    ("python", "Python"),
    ("openssl", "OpenSSL (ssl module)"),
    ("openssl_cli", "OpenSSL (command line)"),
    ("trio", "trio"),
    ("trio_verify", "trio_verify"),
    ("anyio", "anyio"),
    ("load", "Load average at start"),
    ("load_end", "Load average at end"),
    ("runtime", "Run time"),
    ("command", "Command"),
)


def facts_lines(facts: dict[str, Any]) -> list[tuple[str, str]]:
    return [(label, str(facts[key])) for key, label in _FACT_LABELS if key in facts]


def target_summary(results: dict[str, Result]) -> str:
    """One sentence: how many target comparisons are met, missed, undecided."""
    rows = target_rows(results)
    if not rows:
        return ""
    met = sum(row[-1] == "met" for row in rows)
    missed = sum(row[-1] == "not met" for row in rows)
    undecided = len(rows) - met - missed
    return (
        f"Targets in this run: {met} of {len(rows)} comparisons met, "
        f"{missed} not met, {undecided} undecided (a target counts as met only "
        "when every round's ratio meets it, and as not met only when none does)."
    )


def render_text(
    facts: dict[str, Any],
    results: dict[str, Result],
    ceilings: Sequence[Ceiling],
    notes: Sequence[str],
) -> str:
    bounds = additive_bounds(results)
    parts = ["\n".join(f"{label}: {value}" for label, value in facts_lines(facts))]
    for _, header, rows in result_groups(results.values()):
        parts.append(text_table(header, rows, grouped=True))
    if ceilings:
        header, rows = ceiling_rows(ceilings, results)
        parts.append(text_table(header, rows))
    if bounds:
        parts.append(text_table(BOUND_HEADER, bound_rows(bounds)))
    targets = target_rows(results, bounds)
    if targets:
        parts.append(text_table(TARGET_HEADER, targets))
        parts.append(target_summary(results))
    parts.extend([*bound_notes(results, bounds), *notes])
    return "\n\n".join(parts)


def render_markdown(
    facts: dict[str, Any],
    results: dict[str, Result],
    ceilings: Sequence[Ceiling],
    notes: Sequence[str],
) -> str:
    parts = [
        "\n".join(f"- **{label}:** `{value}`" for label, value in facts_lines(facts))
    ]
    bounds = additive_bounds(results)
    for _, header, rows in result_groups(results.values()):
        parts.append(markdown_table(header, rows))
    if ceilings:
        parts.append(markdown_table(*ceiling_rows(ceilings, results)))
    if bounds:
        parts.append(markdown_table(BOUND_HEADER, bound_rows(bounds)))
    targets = target_rows(results, bounds)
    if targets:
        parts.append(markdown_table(TARGET_HEADER, targets))
        parts.append(target_summary(results))
    parts.extend([*bound_notes(results, bounds), *notes])
    return "\n\n".join(parts)


def render_rst(
    facts: dict[str, Any],
    results: dict[str, Result],
    ceilings: Sequence[Ceiling],
    notes: Sequence[str],
) -> str:
    fields = [f":{label}: ``{value}``" for label, value in facts_lines(facts)]
    parts = ["\n".join(fields)]
    bounds = additive_bounds(results)
    for title, header, rows in result_groups(results.values()):
        parts.append(rst_table(title, header, rows))
    if ceilings:
        header, rows = ceiling_rows(ceilings, results)
        parts.append(rst_table("Ceilings", header, rows))
    if bounds:
        parts.append(rst_table("Additive bounds", BOUND_HEADER, bound_rows(bounds)))
    targets = target_rows(results, bounds)
    if targets:
        parts.append(rst_table("Targets", TARGET_HEADER, targets))
        parts.append(rst_escape(target_summary(results)))
    parts.extend(rst_escape(note) for note in [*bound_notes(results, bounds), *notes])
    return "\n\n".join(parts)


def update_docs(
    path: Path,
    rst: str,
    *,
    begin_marker: str = BEGIN_MARKER,
    end_marker: str = END_MARKER,
) -> None:
    """Replace the generated block of ``path`` (between the markers) with ``rst``."""
    text = path.read_text(encoding="utf-8")
    start = text.find(begin_marker)
    end = text.find(end_marker)
    if start < 0 or end < start:
        raise SystemExit(
            f"{path}: no {begin_marker!r} ... {end_marker!r} block to replace"
        )
    start = text.index("\n", start) + 1
    path.write_text(text[:start] + "\n" + rst + "\n\n" + text[end:], encoding="utf-8")
