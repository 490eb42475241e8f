"""A fault-injecting test transport.

:class:`FaultyStream` wraps one end of any :class:`trio.abc.HalfCloseableStream`
connection (trio's memory streams, or real sockets) and, per direction, can

* delay every write,
* split writes into small pieces (down to single bytes) and hand the receiver
  at most a few bytes per ``receive_some``,
* inject one fault at a byte offset of the direction's byte stream:

  - ``"close"``: the receiver gets the first ``offset`` bytes, then EOF; the
    sender does not notice, and what it writes afterwards is dropped;
  - ``"reset"``: the receiver gets the first ``offset`` bytes; from then on
    every operation on *both* ends (except ``aclose``) raises
    :class:`trio.BrokenResourceError`, the write that crossed the offset
    included;
  - ``"stall"``: the receiver gets the first ``offset`` bytes and nothing more;
    the sender does not notice (its bytes are held, as by a network that
    stopped delivering) until :meth:`FaultPlan.release` delivers them; the
    sender's EOF or close waits behind them, as a FIN would;
  - ``"block"``: as ``"stall"``, but the write that crosses the offset, and
    every later one, blocks until :meth:`FaultPlan.release`;
  - ``"delay"``: the receiver gets the first ``offset`` bytes as usual and
    the rest, EOF included, no earlier than ``Fault.duration`` seconds after
    the write that crossed the offset (or :meth:`FaultPlan.release`); the
    sender does not notice, and a receive cancelled while it waits loses
    nothing;
  - ``"split"``: from the offset on (for ``Fault.length`` bytes, or to the
    end), every byte is written alone and every ``receive_some`` hands over
    at most one byte (a read before the offset stops at it).

A :class:`FaultPlan` describes both directions, builds the connected pair
(:meth:`FaultPlan.memory_pair`, :meth:`FaultPlan.wrap`), counts the bytes of
each direction, and records what happened (:attr:`FaultPlan.log`) and every
exception the transport raised to each end (:attr:`FaultPlan.raised`), so a
test can tell an error the transport produced and the code under test passed
through from one the code under test made up.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Final, Literal, TypeAlias

import trio
import trio.testing
from trio.lowlevel import checkpoint, checkpoint_if_cancelled

__all__ = [
    "CLIENT_TO_SERVER",
    "FAULT_KINDS",
    "SERVER_TO_CLIENT",
    "End",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "FaultyStream",
    "Happening",
    "Link",
]

FaultKind: TypeAlias = Literal["close", "reset", "stall", "block", "delay", "split"]
FAULT_KINDS: Final[tuple[FaultKind, ...]] = (
    "close",
    "reset",
    "stall",
    "block",
    "delay",
    "split",
)

End: TypeAlias = Literal["client", "server"]
"""Which end of the connection a :class:`FaultyStream` is."""
CLIENT_TO_SERVER: Final = "client->server"
SERVER_TO_CLIENT: Final = "server->client"


@dataclass(frozen=True)
class Fault:
    """A fault that strikes once ``offset`` bytes of a direction have passed.

    ``duration`` is how late a ``"delay"`` delivers the rest (seconds);
    ``length`` how many bytes a ``"split"`` cuts up (``None``: all the rest).
    """

    kind: FaultKind
    offset: int
    duration: float = 0.0
    length: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}")
        if self.offset < 0:
            raise ValueError("offset must be >= 0")
        if self.duration < 0 or (self.kind == "delay") != (self.duration > 0):
            raise ValueError("a delay, and only a delay, needs a duration > 0")
        if self.length is not None and (self.kind != "split" or self.length < 1):
            raise ValueError("only a split has a length, and it is >= 1")

    def __str__(self) -> str:
        if self.kind == "delay":
            return f"delay({self.duration}s)@{self.offset}"
        if self.length is not None:
            return f"split({self.length})@{self.offset}"
        return f"{self.kind}@{self.offset}"


@dataclass(frozen=True)
class Happening:
    """One thing the transport did: ``what`` on ``link`` at byte ``offset``."""

    what: str
    link: str
    offset: int
    at: float

    def __str__(self) -> str:
        return f"{self.at:.3f} {self.link} {self.what} at byte {self.offset}"


@dataclass
class Link:
    """One direction of a connection: its settings, counters and fault state.

    Attributes:
        accepted: bytes the sender handed to ``send_all``.
        delivered: bytes written to the underlying transport.
        received: bytes the receiver was handed by ``receive_some``.
        dropped: bytes thrown away after a ``"close"`` fault.
        held: bytes withheld by a ``"stall"`` or ``"block"`` fault.
    """

    name: str
    fault: Fault | None = None
    delay: float = 0.0
    chunk: int | None = None
    max_read: int | None = None
    accepted: int = 0
    delivered: int = 0
    received: int = 0
    dropped: int = 0
    held: bytearray = field(default_factory=bytearray)
    held_eof: bool = False
    fired: bool = False
    released: bool = False
    eof_sent: bool = False
    writes: int = 0
    reads: int = 0
    late_until: float | None = None
    """When a fired ``"delay"`` lets the receiver have the rest."""
    late: bytes | None = None
    """What a delayed receive took from the transport and holds back."""

    @property
    def stuck(self) -> bool:
        """Whether the link withholds bytes now (a fired, unreleased stall)."""
        return (
            self.fired
            and not self.released
            and self.fault is not None
            and self.fault.kind in ("stall", "block")
        )

    def read_limit(self, max_bytes: int | None) -> int | None:
        """What one ``receive_some`` may hand over on this link now."""
        if self.max_read is not None:
            max_bytes = min(max_bytes or self.max_read, self.max_read)
        fault = self.fault
        if fault is None or fault.kind not in ("split", "delay"):
            return max_bytes
        if self.received < fault.offset:
            # A read before the offset stops at it.
            limit = fault.offset - self.received
        elif fault.kind == "split" and (
            fault.length is None or self.received < fault.offset + fault.length
        ):
            limit = 1
        else:
            return max_bytes
        return min(max_bytes or limit, limit)


class _Conflict:
    __slots__ = ("_busy", "_what")

    def __init__(self, what: str) -> None:
        self._what = what
        self._busy = False

    def __enter__(self) -> None:
        if self._busy:
            raise trio.BusyResourceError(f"another task is already {self._what}")
        self._busy = True

    def __exit__(self, *exc_info: object) -> None:
        self._busy = False


class FaultPlan:
    """Faults and settings for both directions of one connection.

    Args:
        to_server: the fault for bytes the client sends.
        to_client: the fault for bytes the server sends.
        delay: seconds every write waits before it is delivered.
        chunk: split every write into pieces of at most this many bytes
            (``1``: single bytes), each delivered separately.
        max_read: hand the receiver at most this many bytes per
            ``receive_some``.
        record: keep every delivered byte (for finding record boundaries).
    """

    def __init__(
        self,
        *,
        to_server: Fault | None = None,
        to_client: Fault | None = None,
        delay: float = 0.0,
        chunk: int | None = None,
        max_read: int | None = None,
        record: bool = False,
    ) -> None:
        self.links: dict[str, Link] = {
            CLIENT_TO_SERVER: Link(
                CLIENT_TO_SERVER,
                fault=to_server,
                delay=delay,
                chunk=chunk,
                max_read=max_read,
            ),
            SERVER_TO_CLIENT: Link(
                SERVER_TO_CLIENT,
                fault=to_client,
                delay=delay,
                chunk=chunk,
                max_read=max_read,
            ),
        }
        self.reset = False
        self.log: list[Happening] = []
        self.raised: dict[End, list[BaseException]] = {"client": [], "server": []}
        self.recording: dict[str, bytearray] | None = (
            {CLIENT_TO_SERVER: bytearray(), SERVER_TO_CLIENT: bytearray()}
            if record
            else None
        )
        self.ends: dict[End, FaultyStream] = {}

    # -- building -------------------------------------------------------------

    def memory_pair(self) -> tuple[FaultyStream, FaultyStream]:
        """A (client, server) pair over :func:`trio.testing.memory_stream_pair`."""
        client, server = trio.testing.memory_stream_pair()
        return self.wrap(client, server)

    def wrap(
        self,
        client: trio.abc.HalfCloseableStream,
        server: trio.abc.HalfCloseableStream,
    ) -> tuple[FaultyStream, FaultyStream]:
        """Wrap two connected ends (a real socket pair, say)."""
        if self.ends:
            raise RuntimeError("this plan already has its pair")
        pair = (
            FaultyStream(client, self, "client", CLIENT_TO_SERVER, SERVER_TO_CLIENT),
            FaultyStream(server, self, "server", SERVER_TO_CLIENT, CLIENT_TO_SERVER),
        )
        self.ends = {"client": pair[0], "server": pair[1]}
        return pair

    # -- observing ------------------------------------------------------------

    @property
    def to_server(self) -> Link:
        return self.links[CLIENT_TO_SERVER]

    @property
    def to_client(self) -> Link:
        return self.links[SERVER_TO_CLIENT]

    @property
    def fired(self) -> list[Link]:
        """The links whose fault has struck."""
        return [link for link in self.links.values() if link.fired]

    def note(self, what: str, link: Link, offset: int | None = None) -> None:
        at = trio.current_time() if trio.lowlevel.in_trio_run() else 0.0
        self.log.append(
            Happening(what, link.name, link.delivered if offset is None else offset, at)
        )

    def happened(self, what: str) -> list[Happening]:
        return [h for h in self.log if h.what == what]

    def describe(self) -> str:
        """Counters and log, for assertion messages."""
        lines = [
            f"{link.name}: fault={link.fault} accepted={link.accepted} "
            f"delivered={link.delivered} received={link.received} "
            f"dropped={link.dropped} held={len(link.held)} fired={link.fired}"
            for link in self.links.values()
        ]
        lines += [f"  {happening}" for happening in self.log]
        return "\n".join(lines)

    # -- acting ---------------------------------------------------------------

    def stall_now(self, name: str) -> None:
        """Start withholding a direction's bytes from its next byte on."""
        link = self.links[name]
        link.fault = Fault("stall", link.delivered)
        link.fired = link.released = False

    async def release(self) -> None:
        """Deliver what stalled, blocked or delayed links withhold; lift those
        faults.

        Held bytes go out in one write on the underlying transport.
        """
        for end in self.ends.values():
            await end._release()

    async def aclose(self) -> None:
        """Close the underlying ends whose close a stall still holds back.

        Bytes still held are never delivered.
        """
        for end in self.ends.values():
            await end._finish()

    def _reset(self, link: Link) -> None:
        if self.reset:
            return
        self.reset = True
        self.note("reset", link)
        for end in self.ends.values():
            end._wake_for_reset()


class FaultyStream(trio.abc.HalfCloseableStream):
    """One end of a :class:`FaultPlan` connection; see the module docstring.

    Attributes:
        inner: the wrapped transport end.
        end: ``"client"`` or ``"server"``.
        closes: how many times :meth:`aclose` was called.
    """

    def __init__(
        self,
        inner: trio.abc.HalfCloseableStream,
        plan: FaultPlan,
        end: End,
        out_link: str,
        in_link: str,
    ) -> None:
        self.inner = inner
        self.plan = plan
        self.end: End = end
        self.out = plan.links[out_link]
        self.incoming = plan.links[in_link]
        self.closes = 0
        self._closed = False
        self._send_conflict = _Conflict("sending on this stream")
        self._recv_conflict = _Conflict("receiving on this stream")
        self._inner_send = trio.Lock()
        self._released = trio.Event()
        self._receive_scope: trio.CancelScope | None = None
        self._delay_over = trio.Event()
        self._close_deferred = False
        self._eof_called = False

    def __repr__(self) -> str:
        return f"<FaultyStream {self.end} of {self.inner!r}>"

    # -- errors ---------------------------------------------------------------

    def _raise(self, exc: BaseException) -> BaseException:
        self.plan.raised[self.end].append(exc)
        return exc

    def _check(self) -> None:
        if self._closed:
            raise self._raise(trio.ClosedResourceError("this FaultyStream is closed"))
        if self.plan.reset:
            raise self._raise(trio.BrokenResourceError("connection reset (injected)"))

    # -- sending --------------------------------------------------------------

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        with self._send_conflict:
            await checkpoint_if_cancelled()
            self._check()
            link = self.out
            if self._eof_called:
                raise self._raise(trio.ClosedResourceError("send_eof() was called"))
            data = bytes(data)
            link.accepted += len(data)
            link.writes += 1
            if link.delay:
                await trio.sleep(link.delay)
                self._check()
            else:
                await checkpoint()
            fault = link.fault
            if link.fired:
                assert fault is not None
                await self._after_fault(fault, data)
                return
            if fault is not None and link.delivered + len(data) > fault.offset:
                head = data[: fault.offset - link.delivered]
                await self._deliver(head)
                link.fired = True
                self.plan.note(fault.kind, link)
                await self._after_fault(fault, data[len(head) :])
                return
            await self._deliver(data)

    async def _after_fault(self, fault: Fault, data: bytes) -> None:
        link = self.out
        if fault.kind == "close":
            if not link.eof_sent:
                link.eof_sent = True
                async with self._inner_send:
                    await self._inner(self.inner.send_eof())
            link.dropped += len(data)
        elif fault.kind == "reset":
            self.plan._reset(link)
            raise self._raise(trio.BrokenResourceError("connection reset (injected)"))
        elif fault.kind == "split":
            end = len(data)
            if fault.length is not None:
                end = max(0, min(end, fault.offset + fault.length - link.delivered))
            async with self._inner_send:
                for i in range(end):
                    await self._inner(self.inner.send_all(data[i : i + 1]))
                    link.delivered += 1
                    if self.plan.recording is not None:
                        self.plan.recording[link.name] += data[i : i + 1]
            await self._deliver(data[end:])
        elif fault.kind == "delay":
            if link.late_until is None:
                link.late_until = trio.current_time() + fault.duration
            await self._deliver(data)
        elif link.released:
            await self._deliver(data)
        else:
            link.held += data
            if fault.kind == "block":
                await self._released.wait()
                self._check()

    async def _deliver(self, data: bytes) -> None:
        if not data:
            return
        link = self.out
        step = link.chunk or len(data)
        async with self._inner_send:
            for start in range(0, len(data), step):
                piece = data[start : start + step]
                await self._inner(self.inner.send_all(piece))
                link.delivered += len(piece)
                if self.plan.recording is not None:
                    self.plan.recording[link.name] += piece

    async def _inner(self, call: Awaitable[object]) -> None:
        # Records what the wrapped transport raised before passing it on.
        try:
            await call
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.plan.raised[self.end].append(exc)
            raise

    async def _release(self) -> None:
        link = self.out
        if link.late_until is not None and not link.released:
            # The delayed bytes wait at the receiver: wake it.
            link.released = True
            self.plan.note("release", link)
            self.plan.ends["server" if self.end == "client" else "client"]._wake()
            return
        if not link.stuck:
            return
        link.released = True
        held, link.held = bytes(link.held), bytearray()
        self.plan.note("release", link)
        if held:
            async with self._inner_send:
                await self._inner(self.inner.send_all(held))
                link.delivered += len(held)
                if self.plan.recording is not None:
                    self.plan.recording[link.name] += held
        if self._close_deferred:
            self._close_deferred = False
            await self.inner.aclose()
        elif link.held_eof:
            async with self._inner_send:
                await self._inner(self.inner.send_eof())
        self._released.set()

    async def _finish(self) -> None:
        if self._close_deferred:
            self._close_deferred = False
            self.plan.note("deferred close", self.out)
            await trio.aclose_forcefully(self.inner)

    async def wait_send_all_might_not_block(self) -> None:
        with self._send_conflict:
            self._check()
            if self.out.stuck and self.out.fault and self.out.fault.kind == "block":
                await self._released.wait()
                return
            await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        with self._send_conflict:
            await checkpoint_if_cancelled()
            self._check()
            link = self.out
            self._eof_called = True
            if link.eof_sent:
                await checkpoint()
                return
            link.eof_sent = True
            self.plan.note("send_eof", link)
            if link.stuck:
                link.held_eof = True
                await checkpoint()
                return
            async with self._inner_send:
                await self._inner(self.inner.send_eof())

    # -- receiving -------------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        with self._recv_conflict:
            await checkpoint_if_cancelled()
            self._check_receive()
            link = self.incoming
            max_bytes = link.read_limit(max_bytes)
            with trio.CancelScope() as scope:
                self._receive_scope = scope
                try:
                    if link.late is not None:
                        data = link.late
                    else:
                        data = await self._receive(max_bytes)
                    await self._wait_if_late(link, data)
                finally:
                    self._receive_scope = None
            if scope.cancelled_caught:
                raise self._raise(
                    trio.BrokenResourceError("connection reset (injected)")
                )
            link.received += len(data)
            link.reads += 1
            if not data:
                self.plan.note("eof seen", link, link.received)
            return data

    async def _receive(self, max_bytes: int | None) -> bytes:
        try:
            return bytes(await self.inner.receive_some(max_bytes))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.plan.raised[self.end].append(exc)
            raise

    async def _wait_if_late(self, link: Link, data: bytes) -> None:
        """Hold ``data`` back until a fired ``"delay"`` is over."""
        fault = link.fault
        if (
            fault is None
            or fault.kind != "delay"
            or link.late_until is None
            or link.released
            or link.received < fault.offset
        ):
            return
        link.late = data
        with trio.move_on_at(link.late_until):
            await self._delay_over.wait()
        link.late = None
        if not link.released:
            link.released = True
            self.plan.note("delay over", link, link.received)

    def _wake(self) -> None:
        self._delay_over.set()

    def _check_receive(self) -> None:
        if self._closed:
            raise self._raise(trio.ClosedResourceError("this FaultyStream is closed"))
        # After a reset, bytes sent before it are still handed over.
        if self.plan.reset and self.incoming.received >= self.incoming.delivered:
            raise self._raise(trio.BrokenResourceError("connection reset (injected)"))

    def _wake_for_reset(self) -> None:
        scope = self._receive_scope
        if scope is not None and self.incoming.received >= self.incoming.delivered:
            scope.cancel()
        self._released.set()

    # -- closing -----------------------------------------------------------------

    async def aclose(self) -> None:
        self.closes += 1
        if not self._closed:
            self._closed = True
            self.plan.note(f"{self.end} aclose", self.out)
            # A task blocked in a "block" fault must not outlive the stream.
            self._released.set()
            if self.out.stuck:
                # The network holds our bytes: the close (FIN) waits behind
                # them, until release() or FaultPlan.aclose().
                self.out.held_eof = True
                self._close_deferred = True
                await checkpoint()
                return
        elif self._close_deferred:
            await checkpoint()
            return
        await self.inner.aclose()
