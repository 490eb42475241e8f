"""A nursery-owned pool of client TLS connections.

Theory of operation
-------------------

The pool lives inside an ``async with open_client_pool(...)`` block that owns
a nursery, so no connection or background task outlives it.  Connections are
keyed by (host, port, server name, policy): a connection, and a TLS session,
is only ever reused for exactly the destination and the verification policy
it was made for.

*Capacity.*  Every connection counts against its host and against the total
from the moment a slot is reserved for it (before the TCP connect) until it
is closed.  A caller that finds no idle connection and no free slot queues;
the queue is strictly first-come, first-served per resource: when a
connection comes back it is handed directly to the first waiter for its key,
and when a slot frees up it is reserved for the first waiter whose host has
room, so a task arriving later cannot barge in.  When the total limit is the
only obstacle, the least recently used idle connection of another key is
closed to make room.

*Idle connections.*  Each idle connection has a watcher task that waits in
``receive_some``.  A peer that closes (close_notify, EOF, reset) or sends
anything while the connection is idle ends it: the connection is closed and
never handed out; data that arrives unasked is discarded with the connection
rather than delivered to the next, unrelated, user.  TLS 1.3 session tickets
are processed by the same read, so a ticket that arrives late is still kept
for resumption.  The watcher also enforces ``idle_timeout``.  Checking out
cancels the watcher; a ``receive_some`` cancelled while it waited leaves the
stream usable (a TLSStream guarantee), so nothing is lost.

*Sessions.*  The newest :class:`ssl.SSLSession` per key is offered when a new
connection to that key is made (TLS 1.2 session ids and TLS 1.3 tickets), and
``stream.session_reused`` tells whether the server accepted it.

*Failures.*  A verification failure (any :class:`TLSError` from the handshake)
is never retried and reaches the caller as it is.  A TCP connect that fails,
or a connection reset before the server said anything, is retried once on a
fresh connection.
"""

from __future__ import annotations

import collections
import contextlib
import select
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeAlias

import trio

from ._errors import Phase, TLSError, TruncatedStream
from ._policy import ClientPolicy, coerce_policy
from ._stream import TLSStream

__all__ = ["ClientPool", "PoolStats", "open_client_pool"]

PolicySource: TypeAlias = (
    ClientPolicy | ssl.SSLContext | Callable[[str, int], ClientPolicy | ssl.SSLContext]
)
_Key: TypeAlias = tuple[str, int, str, ClientPolicy]


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of a pool's state and counters."""

    open: int
    """Connections open now (idle, in use, or being made)."""
    idle: int
    """Connections waiting to be reused."""
    in_use: int
    """Connections checked out."""
    waiting: int
    """Callers queued for a connection."""
    handshakes: int
    """Handshakes completed since the pool opened."""
    resumed_handshakes: int
    """Of those, handshakes that resumed a TLS session."""
    reused: int
    """Checkouts served by an idle connection."""
    failures: dict[str, int] = field(default_factory=dict)
    """Failed connection attempts by error class name."""


class _Connection:
    __slots__ = (
        "cancel_watch",
        "consumed",
        "key",
        "last_used",
        "session_kept",
        "stream",
        "watch_done",
    )

    def __init__(self, key: _Key, stream: TLSStream[trio.SocketStream]) -> None:
        self.key = key
        self.stream = stream
        self.last_used = trio.current_time()
        self.cancel_watch: trio.CancelScope | None = None
        self.watch_done: trio.Event | None = None
        self.consumed = False
        self.session_kept = False


class _Waiter:
    __slots__ = ("connection", "event", "key", "slot")

    def __init__(self, key: _Key) -> None:
        self.key = key
        self.event = trio.Event()
        self.connection: _Connection | None = None
        self.slot = False


class ClientPool:
    """Reusable client TLS connections; made by :func:`open_client_pool`."""

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        policy: PolicySource | None,
        max_per_host: int,
        max_total: int,
        idle_timeout: float,
        connect_timeout: float | None,
        happy_eyeballs_delay: float | None,
    ) -> None:
        if max_per_host < 1 or max_total < 1:
            raise ValueError("max_per_host and max_total must be at least 1")
        self._nursery = nursery
        self._policy_source = policy
        self._max_per_host = max_per_host
        self._max_total = max_total
        self._idle_timeout = idle_timeout
        self._connect_timeout = connect_timeout
        self._happy_eyeballs_delay = happy_eyeballs_delay
        self._adopted: dict[int, tuple[ssl.SSLContext, ClientPolicy]] = {}
        self._interned: dict[ClientPolicy, ClientPolicy] = {}
        self._idle: dict[_Key, list[_Connection]] = {}
        self._sessions: dict[_Key, ssl.SSLSession] = {}
        self._per_host: collections.Counter[tuple[str, int]] = collections.Counter()
        self._total = 0
        self._in_use = 0
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._handshakes = 0
        self._resumed = 0
        self._reused = 0
        self._failures: collections.Counter[str] = collections.Counter()
        self._closed = False

    # -- public ------------------------------------------------------------------

    @asynccontextmanager
    async def connection(
        self, host: str, port: int, *, server_hostname: str | None = None
    ) -> AsyncIterator[TLSStream[trio.SocketStream]]:
        """Check out a handshaken connection to ``host``:``port``.

        On a clean exit from the block the connection returns to the pool;
        after any exception, or if the stream is no longer reusable (closed,
        broken, the peer closed its side, unread data), it is closed.

        Raises:
            TLSError: the handshake of a new connection failed (never
                retried).
            OSError: the TCP connection failed twice.
            trio.ClosedResourceError: the pool is closed.
        """
        key = self._key(host, port, server_hostname)
        conn = await self._checkout(key)
        try:
            yield conn.stream
        except BaseException:
            await self._discard(conn)
            raise
        if self._closed or not conn.stream._reusable():
            await self._discard(conn)
        else:
            self._checkin(conn)

    def stats(self) -> PoolStats:
        """Counters and the current state of the pool."""
        idle = sum(len(conns) for conns in self._idle.values())
        return PoolStats(
            open=self._total,
            idle=idle,
            in_use=self._in_use,
            waiting=len(self._waiters),
            handshakes=self._handshakes,
            resumed_handshakes=self._resumed,
            reused=self._reused,
            failures=dict(self._failures),
        )

    async def aclose(self) -> None:
        """Close every idle connection and refuse new checkouts."""
        self._closed = True
        for waiter in self._waiters:
            waiter.event.set()
        self._waiters.clear()
        idle = [conn for conns in self._idle.values() for conn in conns]
        self._idle.clear()
        for conn in idle:
            if conn.cancel_watch is not None:
                conn.cancel_watch.cancel()
                conn.cancel_watch = None
            await self._close(conn)

    # -- keys and policies ----------------------------------------------------

    def _key(self, host: str, port: int, server_hostname: str | None) -> _Key:
        source = self._policy_source
        if source is None:
            policy: ClientPolicy | ssl.SSLContext = ClientPolicy()
            self._policy_source = source = policy
        if callable(source) and not isinstance(source, (ClientPolicy, ssl.SSLContext)):
            chosen = source(host, port)
        else:
            chosen = source
        policy_key = self._coerce(chosen)
        # Equal policies are one key: use the first one's context throughout.
        policy_key = self._interned.setdefault(policy_key, policy_key)
        return (host, port, server_hostname or host, policy_key)

    def _coerce(self, policy: ClientPolicy | ssl.SSLContext) -> ClientPolicy:
        if isinstance(policy, ClientPolicy):
            return policy
        # Adopt each context once, so that equal keys stay equal.
        cached = self._adopted.get(id(policy))
        if cached is None or cached[0] is not policy:
            cached = (policy, coerce_policy(policy, server_side=False))
            self._adopted[id(policy)] = cached
        return cached[1]

    # -- checkout -----------------------------------------------------------

    async def _checkout(self, key: _Key) -> _Connection:
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._closed:
            raise trio.ClosedResourceError("the client pool is closed")
        waiter = _Waiter(key)
        self._waiters.append(waiter)
        self._wake()
        if waiter.event.is_set():
            # Served at once; this checkpoint cannot raise, so nothing that
            # was handed over can be lost.
            await trio.lowlevel.cancel_shielded_checkpoint()
        else:
            try:
                await waiter.event.wait()
            except BaseException:
                self._abandon(waiter)
                raise
        if waiter.connection is not None:
            conn = waiter.connection
            self._reused += 1
            self._in_use += 1
            done = conn.watch_done
            if done is not None:
                # The idle watcher has been cancelled; let it leave the
                # stream before we use it.  It does so at once.
                with trio.CancelScope(shield=True):
                    await done.wait()
            if conn.consumed or not conn.stream._reusable() or _readable(conn.stream):
                # Dead or stirred while idle: make a new connection in its slot.
                self._reused -= 1
                self._in_use -= 1
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(conn.stream)
                return await self._connect(key)
            return conn
        if waiter.slot:
            return await self._connect(key)
        raise trio.ClosedResourceError("the client pool was closed while waiting")

    def _abandon(self, waiter: _Waiter) -> None:
        """A cancelled waiter gives back what it was handed meanwhile."""
        if waiter in self._waiters:
            self._waiters.remove(waiter)
        if waiter.connection is not None:
            conn, waiter.connection = waiter.connection, None
            self._checkin(conn)
        elif waiter.slot:
            waiter.slot = False
            self._release(waiter.key)

    def _take_idle(self, key: _Key) -> _Connection | None:
        conns = self._idle.get(key)
        if not conns:
            return None
        conn = conns.pop()  # the most recently used: the least likely stale
        if not conns:
            del self._idle[key]
        if conn.cancel_watch is not None:
            conn.cancel_watch.cancel()
            conn.cancel_watch = None
        return conn

    def _reserve(self, key: _Key) -> bool:
        host = (key[0], key[1])
        if self._per_host[host] >= self._max_per_host:
            return False
        if self._total >= self._max_total and not self._evict_one_idle(key):
            return False
        self._per_host[host] += 1
        self._total += 1
        return True

    def _release(self, key: _Key) -> None:
        host = (key[0], key[1])
        self._per_host[host] -= 1
        if self._per_host[host] <= 0:
            del self._per_host[host]
        self._total -= 1
        self._wake()

    def _evict_one_idle(self, wanted: _Key) -> bool:
        """Close the least recently used idle connection of another key."""
        oldest: _Connection | None = None
        for key, conns in self._idle.items():
            if (
                key != wanted
                and conns
                and (oldest is None or conns[0].last_used < oldest.last_used)
            ):
                oldest = conns[0]
        if oldest is None:
            return False
        self._idle[oldest.key].remove(oldest)
        if not self._idle[oldest.key]:
            del self._idle[oldest.key]
        if oldest.cancel_watch is not None:
            oldest.cancel_watch.cancel()
            oldest.cancel_watch = None
        self._nursery.start_soon(trio.aclose_forcefully, oldest.stream)
        self._total -= 1
        host = (oldest.key[0], oldest.key[1])
        self._per_host[host] -= 1
        if self._per_host[host] <= 0:
            del self._per_host[host]
        return True

    def _wake(self) -> None:
        """Hand idle connections and free slots to waiters, in order."""
        for waiter in list(self._waiters):
            conn = self._take_idle(waiter.key)
            if conn is not None:
                waiter.connection = conn
            elif self._reserve(waiter.key):
                waiter.slot = True
            else:
                continue
            self._waiters.remove(waiter)
            waiter.event.set()

    async def _connect(self, key: _Key) -> _Connection:
        """Open and handshake a connection in an already reserved slot."""
        host, port, server_name, policy = key
        try:
            for attempt in (1, 2):
                try:
                    stream = await self._open(host, port, server_name, policy, key)
                    break
                except TLSError as exc:
                    self._failures[type(exc).__name__] += 1
                    if attempt == 2 or not _before_server_spoke(exc):
                        raise
                except (OSError, trio.BrokenResourceError) as exc:
                    # A refused or reset connection: one fresh try.
                    self._failures[type(exc).__name__] += 1
                    if attempt == 2:
                        raise
        except BaseException:
            self._release(key)
            raise
        self._handshakes += 1
        if stream.session_reused:
            self._resumed += 1
        self._in_use += 1
        return _Connection(key, stream)

    async def _open(
        self, host: str, port: int, server_name: str, policy: ClientPolicy, key: _Key
    ) -> TLSStream[trio.SocketStream]:
        with (
            trio.fail_after(self._connect_timeout)
            if self._connect_timeout
            else (trio.CancelScope())
        ):
            tcp = await trio.open_tcp_stream(
                host, port, happy_eyeballs_delay=self._happy_eyeballs_delay
            )
            stream = TLSStream(tcp, policy, server_hostname=server_name)
            session = self._sessions.get(key)
            try:
                if session is not None:
                    stream.session = session
                await stream.do_handshake()
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
        return stream

    # -- checkin and idling ----------------------------------------------------

    def _checkin(self, conn: _Connection) -> None:
        self._in_use -= 1
        self._remember_session(conn)
        conn.last_used = trio.current_time()
        for waiter in self._waiters:
            if waiter.key == conn.key:
                self._waiters.remove(waiter)
                waiter.connection = conn
                waiter.event.set()
                return
        self._idle.setdefault(conn.key, []).append(conn)
        # Made here, not in the task, so that a checkout before the task
        # first runs still cancels it and waits for it.
        conn.cancel_watch = trio.CancelScope(
            deadline=conn.last_used + self._idle_timeout
        )
        conn.watch_done = trio.Event()
        self._nursery.start_soon(self._watch, conn, conn.cancel_watch, conn.watch_done)
        # A waiter blocked by the total limit may now evict it.
        self._wake()

    def _remember_session(self, conn: _Connection) -> None:
        # Once per connection: reading SSLObject.session copies the whole
        # session (about 0.13 ms), and a connection's first resumable session
        # is as good as any later one.
        if conn.session_kept:
            return
        try:
            session = conn.stream.session
        except (ValueError, AttributeError):  # pragma: no cover - defensive
            return
        if session is not None and (session.has_ticket or session.id):
            self._sessions[conn.key] = session
            conn.session_kept = True

    async def _watch(
        self, conn: _Connection, scope: trio.CancelScope, done: trio.Event
    ) -> None:
        """Wait while ``conn`` is idle; end it if the peer stirs or time runs out."""
        try:
            with (
                scope,
                contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
            ):
                await conn.stream.receive_some()
        finally:
            if conn.watch_done is done:
                conn.watch_done = None
            done.set()
        if conn.cancel_watch is not scope:
            # Taken (checked out or evicted) meanwhile, which cancelled us.
            if not scope.cancelled_caught:
                # ... but only after the read returned: whatever it consumed
                # is gone, so its new holder must not use the stream.
                conn.consumed = True
                await trio.aclose_forcefully(conn.stream)
            else:
                self._remember_session(conn)
            return
        # Still idle: the peer closed or sent something, or time ran out.
        self._forget_idle(conn)
        await trio.aclose_forcefully(conn.stream)
        self._release(conn.key)

    def _forget_idle(self, conn: _Connection) -> None:
        conns = self._idle.get(conn.key)
        if conns and conn in conns:
            conns.remove(conn)
            if not conns:
                del self._idle[conn.key]
        conn.cancel_watch = None

    async def _discard(self, conn: _Connection) -> None:
        self._in_use -= 1
        await self._close(conn)

    async def _close(self, conn: _Connection) -> None:
        try:
            with trio.move_on_after(1.0) as scope:
                scope.shield = True
                await conn.stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError, TLSError):
            pass
        finally:
            self._release(conn.key)


def _readable(stream: TLSStream[trio.SocketStream]) -> bool:
    """Whether bytes or an end of stream wait on an idle connection's socket.

    The check urllib3 and httpcore make before reusing a connection: the
    watcher may not have run since the peer's close_notify, FIN or RST came.
    """
    try:
        fd = stream.transport_stream.socket.fileno()
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def _before_server_spoke(exc: TLSError) -> bool:
    """An EOF before any byte from the server: safe to retry."""
    return isinstance(exc, TruncatedStream) and exc.phase is Phase.CLIENT_HELLO


@asynccontextmanager
async def open_client_pool(
    *,
    policy: PolicySource | None = None,
    max_per_host: int = 10,
    max_total: int = 100,
    idle_timeout: float = 60.0,
    connect_timeout: float | None = 30.0,
    happy_eyeballs_delay: float | None = 0.25,
) -> AsyncIterator[ClientPool]:
    """A pool of reusable client TLS connections, owned by a nursery.

    Args:
        policy: the :class:`ClientPolicy` (or :class:`ssl.SSLContext`) for
            every connection, or a function ``(host, port) -> policy``; by
            default ``ClientPolicy()``.
        max_per_host: connections open to one (host, port) at most.
        max_total: connections open at most.
        idle_timeout: seconds an idle connection is kept.
        connect_timeout: seconds allowed to connect and handshake.
        happy_eyeballs_delay: passed to :func:`trio.open_tcp_stream`.

    Leaving the block closes every connection (with close_notify) and cancels
    the pool's background tasks; connections still checked out by tasks of
    *other* nurseries are closed when those tasks return them.
    """
    async with trio.open_nursery() as nursery:
        pool = ClientPool(
            nursery,
            policy=policy,
            max_per_host=max_per_host,
            max_total=max_total,
            idle_timeout=idle_timeout,
            connect_timeout=connect_timeout,
            happy_eyeballs_delay=happy_eyeballs_delay,
        )
        try:
            yield pool
        finally:
            with trio.CancelScope(shield=True):
                await pool.aclose()
            nursery.cancel_scope.cancel()
