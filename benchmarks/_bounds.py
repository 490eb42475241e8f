"""Additive bounds: what TLS work plus transport work alone would allow.

A stream benchmark does two kinds of work in one thread: the TLS work
(encryption, decryption, handshakes) and the transport and event-loop work
(sockets, the scheduler, the benchmark loop).  Two references measure them
apart, in the same interleaved rounds as the streams: the same TLS work
through memory BIOs with no event loop (``TLS alone``), and plain
``trio.SocketStream`` with no TLS (``plain TCP``).  If the two simply added
up, with no other cost, a stream would reach

    1 / (1 / TLS alone + 1 / plain TCP)

which is the *additive bound*.  Its ratio to ``trio.SSLStream`` says how far
a TLS stream could get on that benchmark without doing less transport work
than plain ``trio.SocketStream`` or less TLS work than the ``ssl`` module
does through memory BIOs.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from ._ceilings import TLS_ALONE_KEY
from ._impls import PLAIN_TCP
from ._stats import Result
from ._workloads import REFERENCE_BULK_FACTOR

PLAIN_KEY = PLAIN_TCP.key


def additive(*rates: float) -> float:
    """The rate of work whose parts run one after another at these rates."""
    return 1.0 / sum(1.0 / rate for rate in rates)


@dataclass(frozen=True)
class Bound:
    """The additive bound of one stream benchmark (raw values, per second)."""

    key: str
    """The benchmark's result key."""
    title: str
    unit: str
    scale: float
    tls_rate: float
    """TLS alone: the memory-BIO reference's median."""
    plain_rate: float
    """Transport and event loop alone: the plain TCP reference's median."""
    rate: float
    """Median over rounds of ``additive(TLS alone, plain TCP)`` in the round."""
    baseline_rate: float
    """The baseline's median."""
    ratio: float
    """Median over rounds of the round's bound over the round's baseline."""
    ratio_low: float
    ratio_high: float
    """Range over rounds of the same."""


def additive_bound(result: Result) -> Bound | None:
    """The bound of a benchmark with both references, else ``None``."""
    values = result.values
    if not {TLS_ALONE_KEY, PLAIN_KEY, result.baseline} <= values.keys():
        return None
    tls, plain, base = values[TLS_ALONE_KEY], values[PLAIN_KEY], values[result.baseline]
    rounds = [
        (additive(t, p), b) for t, p, b in zip(tls, plain, base, strict=False) if b
    ]
    if not rounds:
        return None
    ratios = [bound / b for bound, b in rounds]
    return Bound(
        key=result.key,
        title=result.title,
        unit=result.unit,
        scale=result.scale,
        tls_rate=statistics.median(tls),
        plain_rate=statistics.median(plain),
        rate=statistics.median(bound for bound, _ in rounds),
        baseline_rate=statistics.median(base),
        ratio=statistics.median(ratios),
        ratio_low=min(ratios),
        ratio_high=max(ratios),
    )


def additive_bounds(results: dict[str, Result]) -> list[Bound]:
    """The bound of every benchmark that ran both references."""
    return [b for b in map(additive_bound, results.values()) if b is not None]


def notes(results: dict[str, Result], bounds: Sequence[Bound]) -> list[str]:
    """What the reference rows and the additive bounds mean."""
    lines = []
    references = {key for result in results.values() for key in result.references}
    if PLAIN_KEY in references:
        lines.append(
            f"{PLAIN_TCP.label}: trio.SocketStream with no TLS over the same "
            "loopback TCP; in the handshake benchmarks each of its connections is "
            "a TCP connect, the same one-byte echo and a close. It measures the "
            "transport and event-loop work alone."
        )
    if TLS_ALONE_KEY in references:
        lines.append(
            "TLS alone: the same TLS work with no sockets and no event loop, "
            "through a client and a server ssl.SSLObject joined by memory BIOs."
        )
    if references:
        lines.append(
            "Both references run in the same interleaved rounds as the TLS "
            "streams (in the bulk benchmarks they move "
            f"{REFERENCE_BULK_FACTOR} times the bytes per sample, so that their "
            "samples last about as long as the streams'). They are not "
            "competitors: they have a ratio to trio.SSLStream but no verdict, "
            "and no target covers them."
        )
    if bounds:
        lines.append(
            "Additive bound = 1 / (1 / TLS alone + 1 / plain TCP): the rate if "
            "the TLS work and the transport and event-loop work simply added up, "
            "with nothing else. It is computed per round, from the two "
            "references' values in that round; the table gives the median over "
            "rounds, and the median and range (in brackets) of the per-round "
            "ratio: that round's bound divided by trio.SSLStream's value in the "
            "same round."
        )
        lines.append(
            "Both ends of every stream connection run in this one process, and "
            "TLS alone likewise runs the client and the server SSLObject in one "
            "thread: both count the TLS work of both ends (per bulk byte, one "
            "encryption and one decryption; per echo round trip, two of each; "
            "per handshake, the client's and the server's side)."
        )
        if any(bound.key.startswith("handshake") for bound in bounds):
            lines.append(
                "For handshakes, TLS alone is a full handshake and the delivery "
                "of the session tickets, without the one-byte echo and the "
                "close (little TLS work), and plain TCP has none of the "
                "handshake's extra round trips through the event loop: the "
                "handshake bounds are generous."
            )
        lines.append(
            "The transport term is trio.SocketStream's own send_all and "
            "receive_some. A stream that drives the socket more directly spends "
            "less per operation on the transport and can exceed the bound: "
            "trio_verify.TLSStream does, over a trio.SocketStream, with one "
            "checkpoint per call. So a target above its additive bound cannot be "
            "met by a leaner stream alone: it needs less transport or "
            "event-loop work per operation than trio.SocketStream, or less TLS "
            "work than the ssl module through memory BIOs."
        )
    return lines
