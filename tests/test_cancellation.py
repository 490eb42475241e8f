"""Cancellation at every checkpoint, and the close and truncation rules (§7).

The sweeps cancel an operation after its k-th scheduler yield, for k = 1, 2,
... until the operation finishes before the cancellation reaches it.  A trio
instrument counts the yields of the task running the operation (whatever it
waits for: the transport, a lock, a timer) and cancels its scope right there,
so every point where the operation can give up control is hit once.  After
each cancellation:

* ``do_handshake`` and ``send_all``: the stream is broken (every later call
  raises :class:`trio.BrokenResourceError`), as in Trio;
* ``receive_some`` (which only ever waits for transport bytes here): the stream
  is still usable, and the next reads return the exact bytes;
* ``aclose``: the transport is closed, exactly once;
* in every case ``aclose`` afterwards returns at once, the transport is closed
  exactly once, the peer ends with a typed error or a clean end, and the
  nursery exits: no task is left behind.

The same sweep runs over a server stream accepted by a TLSListener (policy
selector, ClientHello reader) and over client pool checkouts (connecting,
handshaking, in use): no slot is leaked, ``stats()`` returns to what it was,
and every descriptor is closed.  Two tests use two tasks on one stream, where
an operation can wait for the other task's use of the transport, and the
last section checks close_notify, truncation and unwrap.

Memory transports run on trio's autojump clock, so "at once" is measured
exactly (no timer may expire); real-socket tests (listener, pool) count the
process's open file descriptors.
"""

from __future__ import annotations

import itertools
import os
import random
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, TypeAlias, TypeVar

import pytest
import trio
import trio.testing
from certs import CertKit
from faulty import CLIENT_TO_SERVER, SERVER_TO_CLIENT, Fault, FaultPlan, FaultyStream
from trio.testing import wait_all_tasks_blocked

import trio_verify as tv

TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
BOUND: Final = 10.0
"""No single case may take longer (virtual seconds on memory transports)."""
PROMPT: Final = 0.05
"""``aclose`` after a cancellation must not wait for any timer."""
WALL_PROMPT: Final = 2.0
"""... nor take long in real time."""
HANDSHAKE_CHUNK: Final = 131
"""Transport writes are cut into pieces this size in the handshake sweep, so
a record often arrives in several reads."""
SEND_CHUNK: Final = 4096
RECEIVE_CHUNK: Final = 23
PAYLOAD: Final = random.Random(11).randbytes(40_000)
MESSAGE: Final = b"a message that spans more than one transport read" * 3

T = TypeVar("T")
AnyTLS: TypeAlias = tv.TLSStream[Any]

# ------------------------------------------------------------------ policies


@dataclass(frozen=True)
class Config:
    version: ssl.TLSVersion
    mtls: bool
    client: tv.ClientPolicy
    server: tv.ServerPolicy


_configs: dict[tuple[int, ssl.TLSVersion, bool], Config] = {}


def make_config(certs: CertKit, version: ssl.TLSVersion, mtls: bool) -> Config:
    key = (id(certs), version, mtls)
    if key not in _configs:
        server_id = certs.server("valid")
        client_id = certs.client("valid")
        _configs[key] = Config(
            version,
            mtls,
            tv.ClientPolicy(
                trust=certs.ca_pem,
                identity=tv.Identity.from_pem(
                    client_id.cert_chain_pem, client_id.key_pem
                )
                if mtls
                else None,
                minimum_version=version,
                maximum_version=version,
                handshake_timeout=2.0,
                confirm_timeout=2.0,
            ),
            tv.ServerPolicy(
                identity=tv.Identity.from_pem(
                    server_id.cert_chain_pem, server_id.key_pem
                ),
                client_auth=tv.ClientAuth.REQUIRED if mtls else tv.ClientAuth.NONE,
                client_trust=certs.ca_pem if mtls else None,
                minimum_version=version,
                maximum_version=version,
                handshake_timeout=2.0,
            ),
        )
    return _configs[key]


VERSIONS = pytest.mark.parametrize(
    "version", [TLS12, TLS13], ids=["TLSv1.2", "TLSv1.3"]
)
VICTIMS = pytest.mark.parametrize("victim", ["client", "server"])

# ------------------------------------------------------------------- helpers


class CancelAfterSteps(trio.abc.Instrument):
    """Cancels :attr:`scope` right after ``task`` has yielded ``steps`` times.

    :attr:`where` records the functions the task was suspended in then.
    """

    def __init__(self, task: trio.lowlevel.Task, steps: int) -> None:
        self.task = task
        self.steps = steps
        self.seen = 0
        self.scope = trio.CancelScope()
        self.where: frozenset[str] = frozenset()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.seen += 1
            if self.seen == self.steps:
                self.where = frozenset(
                    frame.f_code.co_name for frame, _ in task.iter_await_frames()
                )
                self.scope.cancel()


CANCELLED_IN: list[frozenset[str]] = []
"""Where each cancellation of the current sweep struck."""


@contextmanager
def instrumented(instrument: trio.abc.Instrument) -> Iterator[None]:
    trio.lowlevel.add_instrument(instrument)
    try:
        yield
    finally:
        trio.lowlevel.remove_instrument(instrument)


async def cancelled_after(
    steps: int, operation: Callable[[], Awaitable[T]]
) -> tuple[bool, T | None]:
    """Run ``operation`` in this task, cancelling it after its ``steps``-th yield.

    Returns whether the cancellation took effect, and the result if not.
    """
    cancel = CancelAfterSteps(trio.lowlevel.current_task(), steps)
    result: T | None = None
    with instrumented(cancel), cancel.scope:
        result = await operation()
    if cancel.scope.cancelled_caught:
        CANCELLED_IN.append(cancel.where)
    return cancel.scope.cancelled_caught, result


async def sweep(case: Callable[[int], Awaitable[bool]], *, at_least: int) -> int:
    """Run ``case(k)`` for k = 1, 2, ... until it reports no cancellation."""
    CANCELLED_IN.clear()
    for steps in itertools.count(1):
        if not await case(steps):
            assert steps > at_least, f"only {steps - 1} cancellation points"
            return steps - 1
        assert steps < 3000, "the operation never finishes"
    raise AssertionError("unreachable")


def memory_pair(
    config: Config, plan: FaultPlan, *, https_compatible: bool = False
) -> tuple[tv.TLSStream[FaultyStream], tv.TLSStream[FaultyStream]]:
    client_transport, server_transport = plan.memory_pair()
    return (
        tv.TLSStream(
            client_transport,
            config.client,
            server_hostname="localhost",
            https_compatible=https_compatible,
        ),
        tv.TLSStream(
            server_transport,
            config.server,
            server_side=True,
            https_compatible=https_compatible,
        ),
    )


def unwrapped(stream: AnyTLS) -> bool:
    """Whether ``stream`` has handed its transport back (unwrap)."""
    left: object = stream.transport_stream
    return left is None


def transport(stream: AnyTLS) -> FaultyStream:
    result = stream.transport_stream
    assert isinstance(result, FaultyStream)
    return result


async def handshake_both(client: AnyTLS, server: AnyTLS) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.do_handshake)
        nursery.start_soon(server.do_handshake)


async def receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    got = bytearray()
    while len(got) < size:
        chunk = await stream.receive_some(size - len(got))
        assert chunk, f"EOF after {len(got)} of {size} bytes"
        got += chunk
    return bytes(got)


async def receive_until_eof(
    stream: trio.abc.ReceiveStream, max_bytes: int | None = None
) -> bytes:
    got = bytearray()
    while chunk := await stream.receive_some(max_bytes):
        got += chunk
    return bytes(got)


@dataclass
class PeerResult:
    error: BaseException | None = None
    data: bytes = b""


def typed_or_passed_through(error: BaseException | None, stream: AnyTLS) -> bool:
    """A TLSError, or exactly an error the transport raised to this end."""
    if isinstance(error, tv.TLSError):
        return True
    faulty = transport(stream)
    end = faulty.end
    return any(error is raised for raised in faulty.plan.raised[end])


async def expect_broken(stream: AnyTLS) -> None:
    calls: list[Callable[[], Awaitable[object]]] = [
        stream.do_handshake,
        partial(stream.send_all, b"x"),
        stream.receive_some,
    ]
    for call in calls:
        with pytest.raises(trio.BrokenResourceError):
            await call()


async def close_promptly(stream: AnyTLS) -> None:
    """``aclose`` returns at once and leaves the stream closed."""
    faulty = stream.transport_stream
    virtual, wall = trio.current_time(), time.monotonic()
    await stream.aclose()
    assert trio.current_time() - virtual < PROMPT
    assert time.monotonic() - wall < WALL_PROMPT
    with pytest.raises(trio.ClosedResourceError):
        await stream.send_all(b"x")
    await stream.aclose()
    if isinstance(faulty, FaultyStream):
        assert faulty.closes == 1


# ------------------------------------------------------------- do_handshake


async def handshake_case(config: Config, victim_end: str, steps: int) -> bool:
    plan = FaultPlan(chunk=HANDSHAKE_CHUNK)
    client, server = memory_pair(config, plan)
    victim, peer = (client, server) if victim_end == "client" else (server, client)
    seen = PeerResult()
    cancelled = False

    async def peer_side() -> None:
        try:
            await peer.do_handshake()
            seen.data = await receive_exactly(peer, 4)
            await peer.send_all(b"pong")
            assert await peer.receive_some() == b""
        except Exception as exc:
            seen.error = exc
        finally:
            await peer.aclose()

    async def victim_side() -> None:
        nonlocal cancelled
        cancelled, _ = await cancelled_after(steps, victim.do_handshake)
        if cancelled:
            await expect_broken(victim)
        else:
            await victim.send_all(b"ping")
            assert await receive_exactly(victim, 4) == b"pong"
        await close_promptly(victim)

    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer_side)
            nursery.start_soon(victim_side)
    assert (transport(client).closes, transport(server).closes) == (1, 1)
    if cancelled:
        assert seen.error is not None, "the peer must notice"
        assert typed_or_passed_through(seen.error, peer), repr(seen.error)
    else:
        assert seen.error is None, repr(seen.error)
        assert seen.data == b"ping"
    return cancelled


@VICTIMS
@pytest.mark.parametrize(
    ("version", "mtls"),
    [(TLS12, False), (TLS12, True), (TLS13, False), (TLS13, True)],
    ids=["TLSv1.2", "TLSv1.2-mtls", "TLSv1.3", "TLSv1.3-mtls"],
)
async def test_handshake_cancelled_at_every_checkpoint(
    victim: str,
    version: ssl.TLSVersion,
    mtls: bool,
    certs: CertKit,
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = make_config(certs, version, mtls)
    await sweep(partial(handshake_case, config, victim), at_least=3)
    # Cancelled both while sending and while receiving.
    assert any("_flush" in where for where in CANCELLED_IN)
    assert any(
        "_receive" in where or "_read_client_hello" in where for where in CANCELLED_IN
    )


# ------------------------------------------------------------------ send_all


async def send_case(config: Config, victim_end: str, steps: int) -> bool:
    plan = FaultPlan(chunk=SEND_CHUNK)
    client, server = memory_pair(config, plan)
    victim, peer = (client, server) if victim_end == "client" else (server, client)
    seen = PeerResult()
    cancelled = False
    with trio.fail_after(BOUND):
        await handshake_both(client, server)

        async def peer_side() -> None:
            got = bytearray()
            try:
                while chunk := await peer.receive_some():
                    got += chunk
            except Exception as exc:
                seen.error = exc
            finally:
                seen.data = bytes(got)
                await peer.aclose()

        async def victim_side() -> None:
            nonlocal cancelled
            cancelled, _ = await cancelled_after(
                steps, partial(victim.send_all, PAYLOAD)
            )
            if cancelled:
                await expect_broken(victim)
            await close_promptly(victim)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer_side)
            nursery.start_soon(victim_side)
    assert (transport(client).closes, transport(server).closes) == (1, 1)
    if cancelled:
        # Part of the payload, then EOF without close_notify: never a
        # silently short stream.
        assert isinstance(seen.error, tv.TruncatedStream), repr(seen.error)
        assert len(seen.data) < len(PAYLOAD)
        assert PAYLOAD.startswith(seen.data)
    else:
        assert seen.error is None, repr(seen.error)
        assert seen.data == PAYLOAD
    return cancelled


@VICTIMS
@VERSIONS
async def test_send_all_cancelled_at_every_checkpoint(
    victim: str,
    version: ssl.TLSVersion,
    certs: CertKit,
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = make_config(certs, version, False)
    await sweep(partial(send_case, config, victim), at_least=len(PAYLOAD) // SEND_CHUNK)


# -------------------------------------------------------------- receive_some


async def receive_case(config: Config, victim_end: str, steps: int) -> bool:
    plan = FaultPlan(chunk=RECEIVE_CHUNK)
    client, server = memory_pair(config, plan)
    victim, peer = (client, server) if victim_end == "client" else (server, client)
    cancelled = False
    with trio.fail_after(BOUND):
        await handshake_both(client, server)

        async def peer_side() -> None:
            # Let the victim start waiting first.
            await trio.sleep(0.01)
            await peer.send_all(MESSAGE)
            assert await receive_exactly(peer, 3) == b"ack"
            await peer.aclose()

        async def victim_side() -> None:
            nonlocal cancelled
            cancelled, first = await cancelled_after(steps, victim.receive_some)
            got = first or b""
            if cancelled:
                assert got == b""
            else:
                assert got, "b'' before the peer closed"
            # Usable either way: the rest of the message, exactly.
            got += await receive_exactly(victim, len(MESSAGE) - len(got))
            assert got == MESSAGE
            await victim.send_all(b"ack")
            assert await victim.receive_some() == b""
            await close_promptly(victim)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer_side)
            nursery.start_soon(victim_side)
    assert (transport(client).closes, transport(server).closes) == (1, 1)
    return cancelled


@VICTIMS
@VERSIONS
async def test_receive_some_cancelled_at_every_checkpoint_stays_usable(
    victim: str,
    version: ssl.TLSVersion,
    certs: CertKit,
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = make_config(certs, version, False)
    await sweep(partial(receive_case, config, victim), at_least=3)


async def test_receive_some_cancelled_many_times_loses_nothing(
    certs: CertKit, autojump_clock: trio.testing.MockClock
) -> None:
    """Many waits cancelled in a row on one connection, with data trickling
    in a byte at a time meanwhile: every byte arrives, in order."""
    config = make_config(certs, TLS13, False)
    plan = FaultPlan(chunk=1)
    client, server = memory_pair(config, plan)
    data = random.Random(3).randbytes(3000)
    with trio.fail_after(BOUND):
        await handshake_both(client, server)
        got = bytearray()

        async def trickle() -> None:
            for start in range(0, len(data), 100):
                await server.send_all(data[start : start + 100])
                await trio.sleep(0.003)

        cancelled = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle)
            while len(got) < len(data):
                with trio.move_on_after(0.001) as scope:
                    got += await client.receive_some()
                cancelled += scope.cancelled_caught
        assert bytes(got) == data
        assert cancelled > 10
        await server.aclose()
        assert await client.receive_some() == b""
        await client.aclose()


# -------------------------------------------------------------------- aclose


async def aclose_case(
    config: Config, victim_end: str, handshaken: bool, steps: int
) -> bool:
    plan = FaultPlan(chunk=HANDSHAKE_CHUNK)
    client, server = memory_pair(config, plan)
    victim, peer = (client, server) if victim_end == "client" else (server, client)
    seen = PeerResult()
    cancelled = False
    with trio.fail_after(BOUND):
        if handshaken:
            await handshake_both(client, server)

        async def peer_side() -> None:
            try:
                await peer.do_handshake()
                seen.data = await receive_until_eof(peer)
            except Exception as exc:
                seen.error = exc
            finally:
                await peer.aclose()

        async def victim_side() -> None:
            nonlocal cancelled
            cancelled, _ = await cancelled_after(steps, victim.aclose)
            # Closed, whatever happened, and it stays closed.
            assert transport(victim).closes == 1
            with pytest.raises(trio.ClosedResourceError):
                await victim.receive_some()
            await close_promptly(victim)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer_side)
            nursery.start_soon(victim_side)
    assert (transport(client).closes, transport(server).closes) == (1, 1)
    if seen.error is not None:
        assert cancelled, f"an uncancelled aclose left the peer with {seen.error!r}"
        assert typed_or_passed_through(seen.error, peer), repr(seen.error)
    else:
        assert seen.data == b""
    return cancelled


@VICTIMS
@VERSIONS
@pytest.mark.parametrize("handshaken", [True, False], ids=["handshaken", "fresh"])
async def test_aclose_cancelled_at_every_checkpoint_closes_once(
    victim: str,
    version: ssl.TLSVersion,
    handshaken: bool,
    certs: CertKit,
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = make_config(certs, version, False)
    await sweep(partial(aclose_case, config, victim, handshaken), at_least=1)


# ------------------------------------------------------------------ listener


class MemoryListener(trio.abc.Listener[FaultyStream]):
    """Hands out the server ends of connections a test makes."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[FaultyStream](16)

    async def connect(self, plan: FaultPlan) -> FaultyStream:
        client, server = plan.memory_pair()
        await self._send.send(server)
        return client

    async def accept(self) -> FaultyStream:
        return await self._receive.receive()

    async def aclose(self) -> None:
        await self._send.aclose()
        await self._receive.aclose()


async def listener_handshake_case(config: Config, steps: int) -> bool:
    """The server end of a TLSListener (selector, ClientHello reader) is
    cancelled during its handshake."""
    reports: list[tv.HandshakeReport] = []

    async def selector(hello: tv.ClientHello) -> tv.ServerPolicy:
        await trio.lowlevel.checkpoint()
        return config.server

    memory = MemoryListener()
    listener = tv.TLSListener(memory, selector, on_handshake=reports.append)
    plan = FaultPlan(chunk=2 * HANDSHAKE_CHUNK + 17)
    client = tv.TLSStream(
        await memory.connect(plan), config.client, server_hostname="localhost"
    )
    server = await listener.accept()
    seen = PeerResult()
    cancelled = False

    async def client_side() -> None:
        try:
            await client.do_handshake()
            seen.data = await receive_until_eof(client)
        except Exception as exc:
            seen.error = exc
        finally:
            await client.aclose()

    async def server_side() -> None:
        nonlocal cancelled
        cancelled, _ = await cancelled_after(steps, server.do_handshake)
        if cancelled:
            await expect_broken(server)
        else:
            await server.send_all(b"welcome")
        await close_promptly(server)

    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client_side)
            nursery.start_soon(server_side)
    await listener.aclose()
    assert (transport(client).closes, transport(server).closes) == (1, 1)
    if cancelled:
        assert typed_or_passed_through(seen.error, client), repr(seen.error)
        # A cancelled handshake is the caller's doing, not the client's
        # failure: nothing is reported for it.
        assert reports == []
    else:
        assert seen.error is None, repr(seen.error)
        assert seen.data == b"welcome"
        assert len(reports) == 1
    return cancelled


@VERSIONS
async def test_listener_handshake_cancelled_at_every_checkpoint(
    version: ssl.TLSVersion, certs: CertKit, autojump_clock: trio.testing.MockClock
) -> None:
    config = make_config(certs, version, True)
    await sweep(partial(listener_handshake_case, config), at_least=3)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def settle_fds(expected: int, *, within: float = 5.0) -> None:
    """Wait (real time) until the process has ``expected`` descriptors open."""
    for _ in range(int(within / 0.005)):
        if open_fds() == expected:
            break
        await trio.sleep(0.005)
    assert open_fds() == expected


needs_proc = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd"
)


@needs_proc
async def test_listener_accept_cancelled_leaks_nothing(certs: CertKit) -> None:
    config = make_config(certs, TLS13, False)
    (socket_listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = tv.TLSListener(socket_listener, config.server)
    port = socket_listener.socket.getsockname()[1]
    before = open_fds()
    with trio.fail_after(BOUND):
        # Nobody connecting: accept waits, and its cancellation costs nothing.
        with trio.move_on_after(0.01) as scope:
            await listener.accept()
        assert scope.cancelled_caught
        assert open_fds() == before
        # A client is waiting in the backlog: accept is cancelled at every
        # yield, and the connection is never lost: the next accept has it.
        for steps in itertools.count(1):
            tcp = await trio.open_tcp_stream("127.0.0.1", port)
            client = tv.TLSStream(tcp, config.client, server_hostname="localhost")
            cancelled, accepted = await cancelled_after(steps, listener.accept)
            if cancelled:
                assert accepted is None
                accepted = await listener.accept()
            assert accepted is not None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.do_handshake)
                nursery.start_soon(accepted.do_handshake)
            await accepted.send_all(b"served")
            assert await receive_exactly(client, 6) == b"served"
            await accepted.aclose()
            assert await client.receive_some() == b""
            await client.aclose()
            if not cancelled:
                break
        # The handshake of an accepted connection, cancelled while it waits
        # for the ClientHello: the stream is broken and closes its socket.
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        accepted = await listener.accept()
        with trio.move_on_after(0.01) as scope:
            await accepted.do_handshake()
        assert scope.cancelled_caught
        await expect_broken(accepted)
        await accepted.aclose()
        assert await tcp.receive_some() == b""
        await tcp.aclose()
    await settle_fds(before)
    await listener.aclose()


# ---------------------------------------------------------------------- pool


@asynccontextmanager
async def tls_server(config: Config) -> AsyncIterator[int]:
    """An echo server on loopback; yields its port."""

    async def echo(stream: tv.TLSStream[trio.SocketStream]) -> None:
        while data := await stream.receive_some():
            await stream.send_all(data)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(
                tv.serve_tls,
                echo,
                0,
                config.server,
                host="127.0.0.1",
                handshake_timeout=BOUND,
            )
        )
        yield listeners[0].transport_listener.socket.getsockname()[1]
        nursery.cancel_scope.cancel()


def pool_stats_idle_or_empty(stats: tv.PoolStats) -> None:
    assert stats.in_use == 0
    assert stats.waiting == 0
    assert stats.open == stats.idle


async def test_pool_checkout_cancelled_while_waiting_for_a_slot(
    certs: CertKit,
) -> None:
    config = make_config(certs, TLS13, False)
    done = trio.Event()
    async with (
        tls_server(config) as port,
        tv.open_client_pool(policy=config.client, max_per_host=1) as pool,
    ):

        async def holder() -> None:
            await use_pool(pool, port, b"hold", until=done)

        async def waiter(scope: trio.CancelScope) -> None:
            with scope:
                await use_pool(pool, port, b"never")
                raise AssertionError("got a slot that was taken")

        with trio.fail_after(BOUND):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(holder)
                await wait_all_tasks_blocked(0.01)
                assert pool.stats().in_use == 1
                for _ in range(3):
                    scope = trio.CancelScope()
                    nursery.start_soon(waiter, scope)
                    await wait_all_tasks_blocked(0.01)
                    assert pool.stats().waiting == 1
                    scope.cancel()
                    await wait_all_tasks_blocked(0.01)
                    assert scope.cancelled_caught
                    stats = pool.stats()
                    assert (stats.open, stats.waiting, stats.in_use) == (1, 0, 1)
                done.set()
            # The one slot was never leaked: it is reused.
            await use_pool(pool, port, b"again")
        stats = pool.stats()
        assert stats.open == 1
        assert stats.reused == 1
        pool_stats_idle_or_empty(stats)


async def pool_case(port: int, config: Config, before: int, steps: int) -> bool:
    async with tv.open_client_pool(policy=config.client, max_per_host=1) as pool:
        cancelled, _ = await cancelled_after(
            steps, partial(use_pool, pool, port, b"echo me")
        )
        stats = pool.stats()
        pool_stats_idle_or_empty(stats)
        assert stats.open == (0 if cancelled else 1), stats
        # No slot leaked, even with a limit of one per host.
        with trio.fail_after(BOUND):
            await use_pool(pool, port, b"after")
        assert pool.stats().open == 1
    assert pool.stats().open == 0
    await settle_fds(before)
    return cancelled


async def use_pool(
    pool: tv.ClientPool, port: int, message: bytes, until: trio.Event | None = None
) -> None:
    """Check out a connection, echo ``message``, optionally hold on to it."""
    async with pool.connection("127.0.0.1", port, server_hostname="localhost") as s:
        await s.send_all(message)
        assert await receive_exactly(s, len(message)) == message
        if until is not None:
            await until.wait()


@needs_proc
@VERSIONS
async def test_pool_checkout_cancelled_at_every_checkpoint(
    version: ssl.TLSVersion, certs: CertKit
) -> None:
    """While connecting, while handshaking, while in use: the slot comes
    back, the connection is closed, and the pool's tasks all end."""
    config = make_config(certs, version, False)
    async with tls_server(config) as port:
        before = open_fds()
        await sweep(partial(pool_case, port, config, before), at_least=3)
    connecting = [w for w in CANCELLED_IN if "open_tcp_stream" in w]
    handshaking = [w for w in CANCELLED_IN if "do_handshake" in w]
    in_use = [w for w in CANCELLED_IN if "_checkout" not in w]
    assert connecting, CANCELLED_IN
    assert handshaking, CANCELLED_IN
    assert in_use, CANCELLED_IN


# ------------------------------------- the send lock, with two tasks at work


def deferred_auth_config(certs: CertKit) -> Config:
    """TLS 1.3 with post-handshake client authentication: reading the
    server's CertificateRequest makes ``receive_some`` send an answer."""
    server_id = certs.server("valid")
    client_id = certs.client("valid")
    return Config(
        TLS13,
        True,
        tv.ClientPolicy(
            trust=certs.ca_pem,
            identity=tv.Identity.from_pem(client_id.cert_chain_pem, client_id.key_pem),
            post_handshake_auth=True,
        ),
        tv.ServerPolicy(
            identity=tv.Identity.from_pem(server_id.cert_chain_pem, server_id.key_pem),
            client_auth=tv.ClientAuth.DEFERRED,
            client_trust=certs.ca_pem,
        ),
    )


def block_client_sends(plan: FaultPlan) -> None:
    """From now on the client's bytes stop: its next write blocks."""
    link = plan.links[CLIENT_TO_SERVER]
    link.fault = Fault("block", link.delivered)


async def test_receive_cancelled_waiting_to_answer_the_server_loses_no_data(
    certs: CertKit, autojump_clock: trio.testing.MockClock
) -> None:
    """The client's receive_some reads the server's CertificateRequest and
    application data together, then must send its answer, but another task
    is sending (blocked on a slow transport).  Cancelled while it waits for
    its turn, the receive has the data in hand: it must not vanish."""
    config = deferred_auth_config(certs)
    plan = FaultPlan()
    client, server = memory_pair(config, plan)
    with trio.fail_after(BOUND):
        await handshake_both(client, server)
        block_client_sends(plan)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, b"upload")
            nursery.start_soon(
                partial(server.request_client_certificate, timeout=BOUND / 2)
            )
            await wait_all_tasks_blocked()
            await server.send_all(b"data")
            await wait_all_tasks_blocked()
            got: bytes | None = None
            with trio.move_on_after(1):
                got = await client.receive_some()
            await plan.release()
            if got is None:
                # Cancelled.  Either the stream is usable and the data is
                # still there, or it is broken; never usable with it gone.
                with trio.move_on_after(2) as lost:
                    try:
                        got = await client.receive_some()
                    except trio.BrokenResourceError:
                        got = b"data"
                assert not lost.cancelled_caught, (
                    "b'data' was read and decrypted, then lost: the stream is "
                    "still usable but receive_some never returns it"
                )
            assert got == b"data"
            nursery.cancel_scope.cancel()
    await trio.aclose_forcefully(client)
    await trio.aclose_forcefully(server)


async def test_send_all_cancelled_waiting_for_its_turn_breaks_the_stream(
    certs: CertKit, autojump_clock: trio.testing.MockClock
) -> None:
    """send_all has encrypted its bytes but another task holds the transport
    (answering a CertificateRequest over a blocked transport).  A cancelled
    send breaks the stream (as in Trio): the caller must not be
    told "cancelled" while its bytes still go out later."""
    config = deferred_auth_config(certs)
    plan = FaultPlan()
    client, server = memory_pair(config, plan)
    with trio.fail_after(BOUND):
        await handshake_both(client, server)
        block_client_sends(plan)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                partial(server.request_client_certificate, timeout=BOUND / 2)
            )
            nursery.start_soon(client.receive_some)
            await wait_all_tasks_blocked()
            with trio.move_on_after(1) as scope:
                await client.send_all(b"cancelled")
            await plan.release()
            await wait_all_tasks_blocked()
            if scope.cancelled_caught:
                with pytest.raises(trio.BrokenResourceError):
                    await client.send_all(b"x")
            else:
                # Not cancelled after all: then the bytes arrive.
                assert await receive_exactly(server, 9) == b"cancelled"
            nursery.cancel_scope.cancel()
    await trio.aclose_forcefully(client)
    await trio.aclose_forcefully(server)


# ------------------------------------------------------- close and truncation


async def close_transport_after(stream: AnyTLS, data: bytes) -> None:
    await stream.send_all(data)
    await stream.transport_stream.aclose()


@VERSIONS
@VICTIMS
async def test_eof_without_close_notify_is_truncation(
    version: ssl.TLSVersion, victim: str, certs: CertKit
) -> None:
    config = make_config(certs, version, False)
    client, server = memory_pair(config, FaultPlan())
    reader, writer = (client, server) if victim == "client" else (server, client)
    with trio.fail_after(BOUND):
        await handshake_both(client, server)
        await close_transport_after(writer, b"last words")
        assert await receive_exactly(reader, 10) == b"last words"
        with pytest.raises(tv.TruncatedStream) as caught:
            await reader.receive_some()
        error = caught.value
        assert error.side == victim
        assert error.phase is tv.Phase.APPLICATION_DATA
        assert error.surfaced_in == "receive"
        assert isinstance(error.__cause__, ssl.SSLError)
        with pytest.raises(trio.BrokenResourceError):
            await reader.receive_some()
        await reader.aclose()


@VERSIONS
@VICTIMS
async def test_eof_without_close_notify_is_the_end_when_https_compatible(
    version: ssl.TLSVersion, victim: str, certs: CertKit
) -> None:
    config = make_config(certs, version, False)
    client, server = memory_pair(config, FaultPlan(), https_compatible=True)
    reader, writer = (client, server) if victim == "client" else (server, client)
    with trio.fail_after(BOUND):
        await handshake_both(client, server)
        await close_transport_after(writer, b"last words")
        assert await receive_until_eof(reader) == b"last words"
        assert await reader.receive_some() == b""
        await reader.aclose()


async def server_hangs_up_after_the_client_hello(server: AnyTLS) -> None:
    raw = transport(server)
    assert await raw.receive_some()
    await raw.aclose()


@VERSIONS
async def test_eof_during_the_handshake_is_truncation(
    version: ssl.TLSVersion, certs: CertKit
) -> None:
    config = make_config(certs, version, False)
    for https_compatible in (False, True):
        for operation in ("do_handshake", "receive_some"):
            client, server = memory_pair(
                config, FaultPlan(), https_compatible=https_compatible
            )
            error: BaseException | None = None
            result: bytes | None = None
            with trio.fail_after(BOUND):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(server_hangs_up_after_the_client_hello, server)
                    try:
                        if operation == "do_handshake":
                            await client.do_handshake()
                        else:
                            result = await client.receive_some()
                    except trio.BrokenResourceError as exc:
                        error = exc
            if https_compatible and operation == "receive_some":
                # As trio: an HTTPS peer may hang up before the handshake.
                assert error is None
                assert result == b""
            else:
                assert isinstance(error, tv.TruncatedStream), repr(error)
                assert error.side == "client"
                assert error.surfaced_in == "handshake"
                assert error.phase is tv.Phase.CLIENT_HELLO
            await close_promptly(client)
            await trio.aclose_forcefully(server)


@VERSIONS
@VICTIMS
async def test_aclose_sends_close_notify(
    version: ssl.TLSVersion, victim: str, certs: CertKit
) -> None:
    config = make_config(certs, version, False)
    client, server = memory_pair(config, FaultPlan())
    closer, peer = (client, server) if victim == "client" else (server, client)
    with trio.fail_after(BOUND):
        await handshake_both(client, server)
        await closer.aclose()
        assert transport(closer).closes == 1
        for _ in range(3):
            assert await peer.receive_some() == b""
        await peer.aclose()


@VERSIONS
@pytest.mark.parametrize(
    ("delivery", "max_bytes"),
    [("coalesced", None), ("coalesced", 1), ("coalesced", 1000), ("bytewise", None)],
    ids=["coalesced", "coalesced-max1", "coalesced-max1000", "byte-at-a-time"],
)
async def test_data_before_close_notify_is_never_lost(
    version: ssl.TLSVersion,
    delivery: str,
    max_bytes: int | None,
    certs: CertKit,
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = make_config(certs, version, False)
    plan = FaultPlan(max_read=1) if delivery == "bytewise" else FaultPlan()
    client, server = memory_pair(config, plan)
    rng = random.Random(f"{version}-{delivery}-{max_bytes}")
    sizes = [1, 2, 100, 16384, 16385, 3, 40_000]
    if max_bytes == 1 or delivery == "bytewise":
        sizes = [1, 2, 100, 1000, 3]
    messages = [rng.randbytes(size) for size in sizes]
    expected = b"".join(messages)
    with trio.fail_after(BOUND):
        await handshake_both(client, server)
        # Everything, close_notify included, is sent before the client reads
        # a single byte, so it arrives together in the coalesced case.
        for message in messages:
            await server.send_all(message)
        await server.aclose()
        assert await receive_until_eof(client, max_bytes) == expected
        assert await client.receive_some() == b""
        await client.aclose()


async def unwrap_with_trailing_bytes(
    config: Config, plan: FaultPlan, trailing: bytes
) -> tuple[bytes, FaultyStream]:
    """The client sends close_notify and ``trailing`` in one transport write;
    returns what the server's unwrap() hands back, and its raw transport."""
    client, server = memory_pair(config, plan)
    await handshake_both(client, server)
    await client.send_all(b"before")
    assert await receive_exactly(server, 6) == b"before"
    plan.stall_now(CLIENT_TO_SERVER)
    result: list[tuple[FaultyStream, bytes]] = []

    async def server_unwrap() -> None:
        result.append(await server.unwrap())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server_unwrap)
        raw, leftover = await client.unwrap()
        assert leftover == b""
        assert isinstance(raw, FaultyStream)
        await raw.send_all(trailing)
        # close_notify and the raw bytes leave in a single write.
        await plan.release()
    ((server_raw, got),) = result
    assert unwrapped(server)
    await raw.aclose()
    return got, server_raw


@VERSIONS
async def test_unwrap_returns_the_exact_trailing_bytes(
    version: ssl.TLSVersion, certs: CertKit, autojump_clock: trio.testing.MockClock
) -> None:
    config = make_config(certs, version, False)
    trailing = b"STARTTLS is over\r\n\x00\x15\x03\x03\xff" + bytes(range(256))
    with trio.fail_after(BOUND):
        got, raw = await unwrap_with_trailing_bytes(config, FaultPlan(), trailing)
        assert got == trailing
        assert await raw.receive_some() == b""
        await raw.aclose()
        # Arriving a byte at a time, what unwrap() did not read is still on
        # the transport, in order.
        got, raw = await unwrap_with_trailing_bytes(
            config, FaultPlan(max_read=1), trailing
        )
        assert trailing.startswith(got)
        assert got + await receive_until_eof(raw) == trailing
        await raw.aclose()


async def unwrap_initiator_gets_trailing_bytes(
    config: Config, plan: FaultPlan, trailing: bytes
) -> tuple[bytes, FaultyStream]:
    """The client starts the close; the server answers with its close_notify
    and then ``trailing``, which reach the client in one transport write;
    returns what the client's unwrap() hands back, and its raw transport."""
    client, server = memory_pair(config, plan)
    await handshake_both(client, server)
    await server.send_all(b"before")
    assert await receive_exactly(client, 6) == b"before"
    result: list[tuple[FaultyStream, bytes]] = []

    async def client_unwrap() -> None:
        result.append(await client.unwrap())

    sent = transport(client).out.accepted
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client_unwrap)
        # The client's close_notify is on its way, and it waits for ours.
        await wait_all_tasks_blocked()
        assert transport(client).out.accepted > sent
        plan.stall_now(SERVER_TO_CLIENT)
        raw, leftover = await server.unwrap()
        assert leftover == b""
        assert isinstance(raw, FaultyStream)
        await raw.send_all(trailing)
        await plan.release()
    ((client_raw, got),) = result
    assert unwrapped(client)
    await raw.aclose()
    return got, client_raw


# Raw bytes after TLS that look like TLS: a close_notify, an application
# data record, then bytes of every value.
TRAILING = (
    bytes((21, 3, 3, 0, 2, 1, 0))
    + bytes((23, 3, 3, 0, 5))
    + b"hello"
    + bytes(range(256))
)


@VERSIONS
@pytest.mark.parametrize("receiver", ["responder", "initiator"])
async def test_unwrap_trailing_bytes_are_exact_whatever_the_chunking(
    version: ssl.TLSVersion,
    receiver: str,
    certs: CertKit,
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Whichever end receives them (the one answering the close or the one
    that started it), however the transport cuts them, and however many:
    what unwrap() returns and what is left on the transport are, together,
    exactly the bytes sent after the close_notify, in order.  Arriving in
    one write with the close_notify and fitting one read, they are all in
    what unwrap() returns."""
    config = make_config(certs, version, False)
    exchange = (
        unwrap_with_trailing_bytes
        if receiver == "responder"
        else unwrap_initiator_gets_trailing_bytes
    )
    big = random.Random(5).randbytes(150_000)
    cases: list[tuple[int | None, bytes]] = [
        (None, TRAILING),
        (None, TRAILING[:1]),
        (None, big),
        (7, TRAILING),
        (1000, TRAILING + big[:5000]),
        (1, TRAILING[:40]),
    ]
    with trio.fail_after(BOUND):
        for max_read, trailing in cases:
            got, raw = await exchange(config, FaultPlan(max_read=max_read), trailing)
            assert trailing.startswith(got), (max_read, len(got))
            rest = await receive_until_eof(raw)
            assert got + rest == trailing, (max_read, len(got), len(rest))
            if max_read is None and len(trailing) < 60_000:
                assert got == trailing
            await raw.aclose()
