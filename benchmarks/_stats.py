"""Results, summaries and ratios against the baseline."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

BASELINE_KEY = "trio"


@dataclass
class Result:
    """One benchmark: a value per round for every implementation.

    Round ``i`` of every implementation ran in the same interleaved pass, so
    ``values[impl][i] / values[baseline][i]`` is that round's ratio.
    """

    key: str
    title: str
    unit: str
    higher_is_better: bool = True
    scale: float = 1.0
    """Divide raw values by this to display them in ``unit``."""
    values: dict[str, list[float]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    note: str = ""
    baseline: str = BASELINE_KEY
    """The implementation the ratios are taken against."""
    baseline_label: str = "trio"
    """How the baseline is named in table headers."""
    references: list[str] = field(default_factory=list)
    """Measurements shown for reference only (no TLS, or no event loop): they
    get a ratio to the baseline but no verdict, and no target covers them."""

    def add(
        self, impl_key: str, label: str, value: float, *, reference: bool = False
    ) -> None:
        self.values.setdefault(impl_key, []).append(value)
        self.labels[impl_key] = label
        if reference and impl_key not in self.references:
            self.references.append(impl_key)

    def summary(self, impl_key: str) -> Summary:
        values = self.values[impl_key]
        base = self.values.get(self.baseline)
        ratios: list[float] = []
        ratio = None
        if base and impl_key != self.baseline:
            ratios = [v / b for v, b in zip(values, base, strict=False) if b]
            if statistics.median(base):
                ratio = statistics.median(values) / statistics.median(base)
        elif impl_key == self.baseline:
            ratio = 1.0
        return Summary(
            median=statistics.median(values),
            low=min(values),
            high=max(values),
            rounds=len(values),
            ratio=ratio,
            ratio_low=min(ratios) if ratios else None,
            ratio_high=max(ratios) if ratios else None,
        )

    def verdict(self, impl_key: str) -> str:
        """In words: is there a difference from the baseline, and which way?"""
        if impl_key == self.baseline:
            return "baseline"
        if impl_key in self.references:
            return "reference, not compared"
        s = self.summary(impl_key)
        if s.ratio_low is None or s.ratio_high is None:
            return ""
        if s.ratio_low <= 1.0 <= s.ratio_high:
            return "no measurable difference"
        better = (s.ratio_low > 1.0) == self.higher_is_better
        if self.higher_is_better:
            return "faster" if better else "slower"
        return "smaller" if better else "larger"

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "unit": self.unit,
            "scale": self.scale,
            "higher_is_better": self.higher_is_better,
            "note": self.note,
            "baseline": self.baseline,
            "references": self.references,
            "values": self.values,
            "labels": self.labels,
            "summary": {
                impl: {
                    **self.summary(impl).__dict__,
                    "verdict": self.verdict(impl),
                }
                for impl in self.values
            },
        }


@dataclass(frozen=True)
class Summary:
    median: float
    low: float
    high: float
    rounds: int
    ratio: float | None
    """Ratio of the medians to the baseline's median."""
    ratio_low: float | None
    """Smallest per-round ratio to the baseline."""
    ratio_high: float | None
    """Largest per-round ratio to the baseline."""


@dataclass(frozen=True)
class Target:
    """A performance goal: a bound on trio_verify's ratio to trio.SSLStream."""

    description: str
    result_keys: tuple[str, ...]
    impl_keys: tuple[str, ...]
    bound: float
    at_least: bool

    def status(self, results: dict[str, Result]) -> list[tuple[str, str, str, str]]:
        """(result key, benchmark title, measured ratio, status) per benchmark."""
        rows = []
        for key in self.result_keys:
            result = results.get(key)
            if result is None:
                continue
            for impl in self.impl_keys:
                if impl not in result.values:
                    continue
                s = result.summary(impl)
                if s.ratio is None or s.ratio_low is None or s.ratio_high is None:
                    continue
                if self.at_least:
                    met, missed = s.ratio_low >= self.bound, s.ratio_high < self.bound
                else:
                    met, missed = s.ratio_high <= self.bound, s.ratio_low > self.bound
                status = (
                    "met"
                    if met
                    else "not met"
                    if missed
                    else "undecided (the rounds straddle the target)"
                )
                title = result.title.removeprefix("Handshakes, ")
                if len(self.impl_keys) > 1:
                    title = f"{title} ({result.labels[impl]})"
                measured = f"{s.ratio:.2f}x ({s.ratio_low:.2f}–{s.ratio_high:.2f})"
                rows.append((key, title, measured, status))
        return rows
