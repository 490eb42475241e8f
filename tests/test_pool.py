"""The client pool, against real servers on loopback.

Every server here is a :func:`~trio_verify.serve_tls` server (or, for the
failures that happen before TLS, a raw Trio listener) in the test's own
process, so each test can count what the *server* saw: how many connections
were made and how many were open at once, whether a handshake resumed a
session, how each connection ended.  The pool's own :meth:`ClientPool.stats`
is checked against those facts, never used in their place.

Covered: reuse and the limits (per host, in total, under 200 concurrent
tasks) with first-come, first-served waiting; TLS session resumption on TLS
1.2 and 1.3 and its boundaries (policy, server name); servers that hang up
idle connections, restart or reset, and ``idle_timeout``; failures that are
never retried (verification, refusals, mutual TLS with
``confirm_client_auth``) and those retried once (a refused connect, a reset
before the server said anything); cancellation of a waiter, of a connect in
progress and of the whole pool; file descriptors; connections that must not
go back to the pool (an exception in the block, unread data).
"""

from __future__ import annotations

import gc
import os
import socket
import ssl
import struct
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import trio
import trio.testing
from certs import CertKit
from certs import Identity as KitIdentity
from openssl_peer import open_helper_nursery

import trio_verify as tv

TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
VERSION_NAMES = {TLS12: "TLSv1.2", TLS13: "TLSv1.3"}

HOST = "127.0.0.1"
NAME = "localhost"
# Every test finishes far within this; it only bounds a hang.
TIMEOUT = 10.0

# A request that the server answers, and later follows with bytes nobody
# asked for (when the test pokes it).
LATER = b"later"
UNASKED = b"unasked"

Stream = tv.TLSStream[trio.SocketStream]
Hangup = Literal["close_notify", "eof", "reset"]


@pytest.fixture(params=[TLS12, TLS13], ids=["TLSv1.2", "TLSv1.3"])
def version(request: pytest.FixtureRequest) -> ssl.TLSVersion:
    """The newest TLS version the server allows."""
    result: ssl.TLSVersion = request.param
    return result


# ------------------------------------------------------------------ policies


def identity(kit_identity: KitIdentity) -> tv.Identity:
    return tv.Identity.from_pem(kit_identity.cert_chain_pem, kit_identity.key_pem)


def server_policy(
    certs: CertKit,
    kind: Literal["valid", "expired"] = "valid",
    **options: Any,
) -> tv.ServerPolicy:
    return tv.ServerPolicy(identity=identity(certs.server(kind)), **options)


def client_policy(certs: CertKit, **options: Any) -> tv.ClientPolicy:
    """Trusts the kit's root, whose ``valid`` server has every loopback name."""
    return tv.ClientPolicy(trust=certs.ca_pem, **options)


def open_pool(
    certs: CertKit, **options: Any
) -> AbstractAsyncContextManager[tv.ClientPool]:
    options.setdefault("policy", client_policy(certs))
    return tv.open_client_pool(**options)


def reply_to(message: bytes) -> bytes:
    return b"re:" + message


async def request(stream: Stream, message: bytes = b"ping") -> bytes:
    """One request and its reply (small enough to be one record each way)."""
    await stream.send_all(message)
    return await stream.receive_some()


async def fetch(
    pool: tv.ClientPool,
    port: int,
    message: bytes = b"ping",
    *,
    server_hostname: str = NAME,
) -> bytes:
    """Check a connection out, make one request on it, give it back."""
    async with pool.connection(HOST, port, server_hostname=server_hostname) as stream:
        return await request(stream, message)


def reset_on_close(transport: trio.SocketStream) -> None:
    """Make closing ``transport`` send a TCP reset (SO_LINGER with timeout 0)."""
    transport.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def hang_up(stream: Stream, how: Hangup) -> None:
    """End a server connection: with close_notify, a bare FIN, or a reset."""
    if how == "close_notify":
        await stream.aclose()
        return
    if how == "reset":
        reset_on_close(stream.transport_stream)
    await trio.aclose_forcefully(stream)


def count_tasks() -> int:
    """Every task in this run, found from the root task."""

    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(
            walk(child)
            for nursery in task.child_nurseries
            for child in nursery.child_tasks
        )

    return walk(trio.lowlevel.current_root_task())


async def eventually(check: Callable[[], bool], what: str) -> None:
    """Wait (bounded) until ``check()`` holds; fail saying ``what`` did not.

    For facts no task signals, such as the kernel's count of open files.
    """
    with trio.move_on_after(TIMEOUT / 2):
        while not check():  # noqa: ASYNC110 - nothing to wait on but time
            await trio.sleep(0.01)
    if not check():
        pytest.fail(f"never happened: {what}")


# ------------------------------------------------------------------ servers


class Gauge:
    """Connections open now, and the most ever open at once."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    def up(self) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)

    def down(self) -> None:
        self.now -= 1


@dataclass
class Served:
    """One handshaken connection, as the server saw it."""

    resumed: bool
    version: str
    server_name: str | None
    requests: int = 0
    ending: object = None
    """``b""`` after the client's close_notify, the exception for an end
    without one, or how the server hung up itself."""
    ended: trio.Event = field(default_factory=trio.Event)


class Server:
    """A ``serve_tls`` handler and ``on_handshake`` hook that keep count.

    Each request is answered with ``b"re:" + request`` (plus ``extra`` in the
    same record).  With ``hangup`` the server ends each connection that way
    right after its first reply.  A request of :data:`LATER` is answered,
    then followed by :data:`UNASKED` once the test sets :attr:`poke`.
    """

    def __init__(
        self,
        *,
        hangup: Hangup | None = None,
        extra: bytes = b"",
        gauges: Sequence[Gauge] = (),
    ) -> None:
        self.hangup = hangup
        self.extra = extra
        self.gauge = Gauge()
        self._gauges = (self.gauge, *gauges)
        self.served: list[Served] = []
        self.reports: list[tv.HandshakeReport] = []
        self.poke = trio.Event()
        self.port = 0
        self._changed = trio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def report(self, report: tv.HandshakeReport) -> None:
        self.reports.append(report)
        self._notify()

    @property
    def attempts(self) -> int:
        """Handshakes the server took part in, successful or not."""
        return len(self.reports)

    async def wait_for_reports(self, count: int) -> None:
        while len(self.reports) < count:
            await self._changed.wait()

    async def wait_for_served(self, count: int) -> None:
        while len(self.served) < count:
            await self._changed.wait()

    async def handle(self, stream: Stream) -> None:
        hello = stream.client_hello
        served = Served(
            resumed=stream.session_reused,
            version=stream.version(),
            server_name=hello.server_name if hello is not None else None,
        )
        self.served.append(served)
        for gauge in self._gauges:
            gauge.up()
        self._notify()
        try:
            while True:
                message = await stream.receive_some()
                if not message:
                    served.ending = b""
                    return
                served.requests += 1
                await stream.send_all(reply_to(message) + self.extra)
                if message == LATER:
                    await self.poke.wait()
                    await stream.send_all(UNASKED)
                if self.hangup is not None:
                    await hang_up(stream, self.hangup)
                    served.ending = self.hangup
                    return
        except trio.BrokenResourceError as exc:
            served.ending = exc
        finally:
            for gauge in self._gauges:
                gauge.down()
            served.ended.set()

    async def all_ended(self) -> list[object]:
        """Wait until every connection so far has ended; how each did."""
        for served in self.served:
            await served.ended.wait()
        return [served.ending for served in self.served]


async def _serve(
    server: Server,
    policy: tv.ServerPolicy | tv.PolicySelector,
    port: int,
    *,
    task_status: trio.TaskStatus[list[tv.TLSListener[trio.SocketStream]]],
) -> None:
    await tv.serve_tls(
        server.handle,
        port,
        policy,
        host=HOST,
        on_handshake=server.report,
        task_status=task_status,
    )


@asynccontextmanager
async def serving(
    policy: tv.ServerPolicy | tv.PolicySelector,
    *,
    port: int = 0,
    **options: Any,
) -> AsyncIterator[Server]:
    """Run ``serve_tls`` with a :class:`Server` until the block ends."""
    server = Server(**options)
    async with open_helper_nursery() as nursery:
        listeners = await nursery.start(_serve, server, policy, port)
        server.port = listeners[0].transport_listener.socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()


@dataclass
class RawServer:
    """A plain TCP listener; counts the connections it accepted."""

    port: int
    accepted: int = 0
    ended: list[trio.Event] = field(default_factory=list)


RawAction = Callable[[trio.SocketStream, int], Awaitable[None]]


@asynccontextmanager
async def raw_listening(action: RawAction) -> AsyncIterator[RawServer]:
    """Run ``action(stream, index)`` for each accepted TCP connection."""
    listener = (await trio.open_tcp_listeners(0, host=HOST))[0]
    server = RawServer(listener.socket.getsockname()[1])

    async def run(stream: trio.SocketStream, index: int, ended: trio.Event) -> None:
        try:
            await action(stream, index)
        finally:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
            ended.set()

    async def accept_loop(nursery: trio.Nursery) -> None:
        while True:
            stream = await listener.accept()
            ended = trio.Event()
            server.ended.append(ended)
            server.accepted += 1
            nursery.start_soon(run, stream, server.accepted - 1, ended)

    async with listener, open_helper_nursery() as nursery:
        nursery.start_soon(accept_loop, nursery)
        yield server
        nursery.cancel_scope.cancel()


async def reset_at_once(stream: trio.SocketStream, index: int) -> None:
    reset_on_close(stream)


async def reset_after_client_hello(stream: trio.SocketStream, index: int) -> None:
    await stream.receive_some()
    reset_on_close(stream)


async def never_answer(stream: trio.SocketStream, index: int) -> None:
    """Read the ClientHello and whatever follows; say nothing, until EOF."""
    while await stream.receive_some():
        pass


# ------------------------------------------------------------------ reuse


async def test_sequential_requests_share_one_connection(certs: CertKit) -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(server_policy(certs)) as server, open_pool(certs) as pool:
            for i in range(10):
                message = b"request %d" % i
                assert await fetch(pool, server.port, message) == reply_to(message)
            stats = pool.stats()
    assert len(server.served) == 1
    assert server.served[0].requests == 10
    assert server.attempts == 1
    assert (stats.open, stats.idle, stats.in_use, stats.waiting) == (1, 1, 0, 0)
    assert (stats.handshakes, stats.reused) == (1, 9)


async def test_per_host_limit_holds_under_200_concurrent_tasks(certs: CertKit) -> None:
    replies: list[bool] = []
    with trio.fail_after(TIMEOUT):
        async with (
            serving(server_policy(certs)) as server,
            open_pool(certs, max_per_host=4) as pool,
        ):

            async def one(i: int) -> None:
                message = b"task %d" % i
                replies.append(
                    await fetch(pool, server.port, message) == reply_to(message)
                )

            async with trio.open_nursery() as nursery:
                for i in range(200):
                    nursery.start_soon(one, i)
            stats = pool.stats()
    assert replies == [True] * 200
    # Connections are only ever reused here, never closed, so every
    # connection the server saw was open at the same time as the others.
    assert server.gauge.peak == 4
    assert len(server.served) == 4
    assert sum(served.requests for served in server.served) == 200
    assert (stats.handshakes, stats.reused) == (4, 196)
    assert (stats.open, stats.in_use, stats.waiting) == (4, 0, 0)


async def test_total_limit_holds_across_two_hosts(certs: CertKit) -> None:
    total = Gauge()
    replies: list[bool] = []
    seen_open: list[int] = []
    policy = server_policy(certs)
    with trio.fail_after(TIMEOUT):
        async with (
            serving(policy, gauges=[total]) as first,
            serving(policy, gauges=[total]) as second,
            open_pool(certs, max_per_host=3, max_total=4) as pool,
        ):

            async def one(i: int) -> None:
                port = (first, second)[i % 2].port
                async with pool.connection(HOST, port, server_hostname=NAME) as stream:
                    seen_open.append(pool.stats().open)
                    message = b"task %d" % i
                    replies.append(await request(stream, message) == reply_to(message))

            async with trio.open_nursery() as nursery:
                for i in range(200):
                    nursery.start_soon(one, i)
    assert replies == [True] * 200
    assert max(seen_open) <= 4
    assert total.peak <= 4, f"{total.peak} connections open at once, max_total=4"
    assert first.gauge.peak <= 3
    assert second.gauge.peak <= 3
    assert sum(s.requests for s in first.served + second.served) == 200


async def test_waiters_are_served_in_arrival_order(certs: CertKit) -> None:
    order: list[int] = []
    release = trio.Event()
    with trio.fail_after(TIMEOUT):
        async with (
            serving(server_policy(certs)) as server,
            open_pool(certs, max_per_host=1) as pool,
        ):

            async def holder(*, task_status: trio.TaskStatus[None]) -> None:
                async with pool.connection(HOST, server.port, server_hostname=NAME):
                    task_status.started()
                    await release.wait()

            async def waiter(i: int) -> None:
                async with pool.connection(
                    HOST, server.port, server_hostname=NAME
                ) as stream:
                    order.append(i)
                    assert await request(stream, b"%d" % i) == reply_to(b"%d" % i)

            async with trio.open_nursery() as nursery:
                await nursery.start(holder)
                for i in range(1, 11):
                    nursery.start_soon(waiter, i)
                    await trio.testing.wait_all_tasks_blocked()
                assert pool.stats().waiting == 10
                release.set()
            assert pool.stats().waiting == 0
    assert order == list(range(1, 11))
    assert len(server.served) == 1


# ------------------------------------------------------------ resumption


async def test_sessions_are_resumed(certs: CertKit, version: ssl.TLSVersion) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            serving(server_policy(certs, maximum_version=version)) as server,
            open_pool(certs) as pool,
        ):
            async with pool.connection(
                HOST, server.port, server_hostname=NAME
            ) as first:
                # The reply also carries a TLS 1.3 server's session tickets.
                assert await request(first) == reply_to(b"ping")
                assert not first.session_reused
            # Hold the idle connection, so that the next checkout needs a new one.
            async with (
                pool.connection(HOST, server.port, server_hostname=NAME) as again,
                pool.connection(HOST, server.port, server_hostname=NAME) as second,
            ):
                assert again is first
                assert second is not first
                assert await request(second) == reply_to(b"ping")
                assert second.session_reused
            stats = pool.stats()
    assert [served.resumed for served in server.served] == [False, True]
    assert {served.version for served in server.served} == {VERSION_NAMES[version]}
    assert (stats.handshakes, stats.resumed_handshakes, stats.reused) == (2, 1, 1)


async def test_sessions_are_not_offered_across_policies(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    first_policy = client_policy(certs, name="first")
    second_policy = client_policy(certs, name="second")
    current = [first_policy]
    with trio.fail_after(TIMEOUT):
        async with (
            serving(server_policy(certs, maximum_version=version)) as server,
            open_pool(certs, policy=lambda host, port: current[0]) as pool,
        ):

            async def two_connections() -> None:
                """A connection, then a second one while the first is held."""
                assert await fetch(pool, server.port) == reply_to(b"ping")
                async with (
                    pool.connection(HOST, server.port, server_hostname=NAME),
                    pool.connection(HOST, server.port, server_hostname=NAME) as b,
                ):
                    assert await request(b) == reply_to(b"ping")

            await two_connections()
            current[0] = second_policy
            await two_connections()
    # The first policy's idle connections were not handed to the second, and
    # its session was not offered: the second policy started afresh.
    assert [served.resumed for served in server.served] == [False, True, False, True]


async def test_sessions_are_not_offered_across_server_names(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    # certs.server("valid") is valid for both names.
    with trio.fail_after(TIMEOUT):
        async with (
            serving(server_policy(certs, maximum_version=version)) as server,
            open_pool(certs) as pool,
        ):
            for name in ("localhost", "127.0.0.1"):
                assert await fetch(pool, server.port, server_hostname=name)
                async with (
                    pool.connection(HOST, server.port, server_hostname=name),
                    pool.connection(HOST, server.port, server_hostname=name) as b,
                ):
                    assert await request(b) == reply_to(b"ping")
            stats = pool.stats()
    # Each name's first connection started afresh, and its second resumed
    # the session of that first one: sessions stay with their name.
    names = [served.server_name for served in server.served]
    assert names == ["localhost", "localhost", None, None]  # no SNI for an IP
    assert [served.resumed for served in server.served] == [False, True, False, True]
    assert (stats.handshakes, stats.resumed_handshakes) == (4, 2)


async def test_equal_policies_share_connections_and_sessions(certs: CertKit) -> None:
    """A policy function may return a new, equal, policy for every call.

    Equal policies make the same key, so they share idle connections and
    sessions, although each builds its own :class:`ssl.SSLContext`.
    """
    errors: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        # Keep a socket left unclosed from surfacing in some later test.
        warnings.simplefilter("always", ResourceWarning)
        with trio.fail_after(TIMEOUT):
            async with (
                serving(server_policy(certs)) as server,
                open_pool(
                    certs, policy=lambda host, port: client_policy(certs)
                ) as pool,
            ):
                assert await fetch(pool, server.port) == reply_to(b"ping")
                assert await fetch(pool, server.port) == reply_to(b"ping")
                assert len(server.served) == 1  # the same key
                try:
                    async with (
                        pool.connection(HOST, server.port, server_hostname=NAME) as a,
                        pool.connection(HOST, server.port, server_hostname=NAME) as b,
                    ):
                        assert await request(a) == reply_to(b"ping")
                        assert await request(b) == reply_to(b"ping")
                except Exception as exc:
                    errors.append(repr(exc))
                stats = pool.stats()
        gc.collect()
    unclosed = [str(w.message) for w in caught if w.category is ResourceWarning]
    assert errors == []
    assert unclosed == []
    assert len(server.served) == 2
    assert stats.failures == {}


# --------------------------------------------------- dead idle connections


@pytest.mark.parametrize("how", ["close_notify", "eof", "reset"])
@pytest.mark.parametrize(
    "when",
    [
        # The pool's tasks ran after the server hung up.
        "noticed",
        # The checkout comes right after the server hung up: everything the
        # server sent is in our socket, but no pool task has run since.
        "at_once",
    ],
)
async def test_server_hanging_up_idle_connections(
    certs: CertKit, how: Hangup, when: str
) -> None:
    outcomes: list[object] = []
    with trio.fail_after(TIMEOUT):
        async with (
            serving(server_policy(certs), hangup=how) as server,
            open_pool(certs) as pool,
        ):
            for i in range(3):
                message = b"request %d" % i
                try:
                    async with pool.connection(
                        HOST, server.port, server_hostname=NAME
                    ) as stream:
                        reply = await request(stream, message)
                        outcomes.append(reply)
                        if reply == reply_to(message):
                            # The server hangs up before we give the stream back.
                            await server.served[-1].ended.wait()
                except trio.BrokenResourceError as exc:
                    outcomes.append(exc)
                if when == "noticed":
                    await trio.testing.wait_all_tasks_blocked()
                    stats = pool.stats()
                    assert (stats.open, stats.idle) == (0, 0), stats
            stats = pool.stats()
    assert outcomes == [reply_to(b"request %d" % i) for i in range(3)]
    assert len(server.served) == 3
    assert [served.requests for served in server.served] == [1, 1, 1]
    assert (stats.handshakes, stats.reused) == (3, 0)


async def test_server_restart_on_the_same_port(certs: CertKit) -> None:
    policy = server_policy(certs)
    with trio.fail_after(TIMEOUT):
        async with open_pool(certs) as pool:
            async with serving(policy) as before:
                assert await fetch(pool, before.port) == reply_to(b"ping")
                assert pool.stats().idle == 1
            # The old server closed its listener and its connections.
            await trio.testing.wait_all_tasks_blocked()
            assert (pool.stats().open, pool.stats().idle) == (0, 0)
            async with serving(policy, port=before.port) as after:
                assert after.port == before.port
                assert await fetch(pool, after.port) == reply_to(b"ping")
                assert await fetch(pool, after.port) == reply_to(b"ping")
            stats = pool.stats()
    assert len(after.served) == 1
    assert after.served[0].requests == 2
    assert stats.handshakes == 2


async def test_idle_timeout_closes_idle_connections(certs: CertKit) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            serving(server_policy(certs)) as server,
            open_pool(certs, idle_timeout=0.2) as pool,
        ):
            async with (
                pool.connection(HOST, server.port, server_hostname=NAME) as a,
                pool.connection(HOST, server.port, server_hostname=NAME) as b,
            ):
                assert await request(a) == reply_to(b"ping")
                assert await request(b) == reply_to(b"ping")
            assert pool.stats().idle == 2
            endings = await server.all_ended()
            await trio.testing.wait_all_tasks_blocked()
            stats = pool.stats()
            assert (stats.open, stats.idle) == (0, 0), stats
            # And the pool carries on with a new connection.
            assert await fetch(pool, server.port) == reply_to(b"ping")
            assert pool.stats().handshakes == 3
    # An end of stream, with or without close_notify.
    assert len(endings) == 2
    for ending in endings:
        assert ending == b"" or isinstance(ending, tv.TruncatedStream), ending


async def test_data_arriving_on_an_idle_connection_ends_it(certs: CertKit) -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(server_policy(certs)) as server, open_pool(certs) as pool:
            assert await fetch(pool, server.port, LATER) == reply_to(LATER)
            assert pool.stats().idle == 1
            server.poke.set()  # now idle, the connection receives UNASKED
            await server.all_ended()
            await trio.testing.wait_all_tasks_blocked()
            assert (pool.stats().open, pool.stats().idle) == (0, 0)
            # Nobody is ever handed those bytes.
            assert await fetch(pool, server.port) == reply_to(b"ping")
    assert len(server.served) == 2


# ------------------------------------------------------------- failures


async def test_verification_failure_is_typed_and_never_retried(
    certs: CertKit,
) -> None:
    outcomes: list[BaseException | None] = []

    async def caller(pool: tv.ClientPool, port: int) -> None:
        try:
            async with pool.connection(HOST, port, server_hostname=NAME):
                outcomes.append(None)
        except Exception as exc:
            outcomes.append(exc)

    with trio.fail_after(TIMEOUT):
        async with (
            serving(server_policy(certs, "expired")) as server,
            open_pool(certs) as pool,
        ):
            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(caller, pool, server.port)
            for _ in range(2):
                await caller(pool, server.port)
            await server.wait_for_reports(7)
            await trio.testing.wait_all_tasks_blocked()
            stats = pool.stats()
    assert len(outcomes) == 7
    for outcome in outcomes:
        assert isinstance(outcome, tv.CertificateExpired), repr(outcome)
        assert outcome.side == "client"
        assert outcome.phase is tv.Phase.SERVER_CERTIFICATE
        assert outcome.alert_sent is tv.Alert.CERTIFICATE_EXPIRED
    # Exactly one attempt per caller, each refused by the client.
    assert server.attempts == 7
    assert all(isinstance(r.error, tv.PeerRejectedCertificate) for r in server.reports)
    assert server.served == []
    assert stats.failures == {"CertificateExpired": 7}
    assert (stats.open, stats.in_use, stats.waiting, stats.handshakes) == (0, 0, 0, 0)


async def test_refusal_by_the_server_is_not_retried(certs: CertKit) -> None:
    def refuse(hello: tv.ClientHello) -> tv.Reject:
        return tv.Reject(tv.Alert.UNRECOGNIZED_NAME, "no such name here")

    with trio.fail_after(TIMEOUT):
        async with serving(refuse) as server, open_pool(certs) as pool:
            with pytest.raises(tv.PeerUnrecognizedName) as info:
                await fetch(pool, server.port)
            await server.wait_for_reports(1)
            await trio.testing.wait_all_tasks_blocked()
            stats = pool.stats()
    assert info.value.alert_received is tv.Alert.UNRECOGNIZED_NAME
    assert server.attempts == 1
    assert stats.failures == {"PeerUnrecognizedName": 1}
    assert stats.open == 0


async def test_mtls_rejection_surfaces_from_the_checkout(certs: CertKit) -> None:
    policy = server_policy(
        certs,
        client_auth=tv.ClientAuth.REQUIRED,
        client_trust=certs.ca_pem,
        maximum_version=TLS13,
    )
    stranger = client_policy(
        certs, identity=identity(certs.client("other_ca")), confirm_client_auth="auto"
    )
    member = client_policy(
        certs, identity=identity(certs.client("valid")), confirm_client_auth="auto"
    )
    entered = False
    with trio.fail_after(TIMEOUT):
        async with serving(policy) as server:
            async with open_pool(certs, policy=stranger) as pool:
                with pytest.raises(tv.PeerRejectedCertificate) as info:
                    async with pool.connection(HOST, server.port, server_hostname=NAME):
                        entered = True
                await server.wait_for_reports(1)
                await trio.testing.wait_all_tasks_blocked()
                refused = pool.stats()
            async with open_pool(certs, policy=member) as pool:
                assert await fetch(pool, server.port) == reply_to(b"ping")
                assert await fetch(pool, server.port) == reply_to(b"ping")
                accepted = pool.stats()
    error = info.value
    assert not entered
    assert error.surfaced_in == "confirm"
    assert error.side == "client"
    assert error.phase is tv.Phase.CLIENT_CERTIFICATE
    assert error.alert_received is tv.Alert.UNKNOWN_CA
    assert isinstance(server.reports[0].error, tv.UnknownIssuer)
    assert refused.failures == {"PeerRejectedCertificate": 1}
    assert (refused.open, refused.handshakes) == (0, 0)
    assert server.attempts == 2  # the stranger once, the member once
    assert len(server.served) == 1
    assert (accepted.handshakes, accepted.reused) == (1, 1)


async def test_refused_connect_is_retried_once(
    certs: CertKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    connects: list[int] = []
    open_tcp_stream = trio.open_tcp_stream

    async def counting(host: str, port: int, **kwargs: Any) -> trio.SocketStream:
        connects.append(port)
        return await open_tcp_stream(host, port, **kwargs)

    monkeypatch.setattr(trio, "open_tcp_stream", counting)
    # Bound but not listening: the port is ours, and every connect is refused.
    with socket.socket() as placeholder:
        placeholder.bind((HOST, 0))
        port = placeholder.getsockname()[1]
        with trio.fail_after(TIMEOUT):
            async with open_pool(certs) as pool:
                for checkout in (1, 2):
                    with pytest.raises(OSError):  # noqa: PT011 - any refusal
                        await fetch(pool, port)
                    assert len(connects) == 2 * checkout
                stats = pool.stats()
    assert connects == [port] * 4
    assert sum(stats.failures.values()) == 4
    assert (stats.open, stats.in_use, stats.waiting) == (0, 0, 0)


@pytest.mark.parametrize(
    "action", [reset_at_once, reset_after_client_hello], ids=["on_accept", "on_hello"]
)
async def test_reset_before_the_server_spoke_is_retried_once(
    certs: CertKit, action: RawAction
) -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_listening(action) as server, open_pool(certs) as pool:
            for checkout in (1, 2):
                with pytest.raises(trio.BrokenResourceError):
                    await fetch(pool, server.port)
                await trio.testing.wait_all_tasks_blocked()
                assert server.accepted == 2 * checkout
            stats = pool.stats()
    assert sum(stats.failures.values()) == 4
    assert (stats.open, stats.in_use, stats.handshakes) == (0, 0, 0)


async def test_retry_after_a_reset_reaches_the_server(certs: CertKit) -> None:
    policy = server_policy(certs)
    handshakes: list[str] = []

    async def reset_first_then_serve(transport: trio.SocketStream, index: int) -> None:
        if index == 0:
            await transport.receive_some()  # the ClientHello, unanswered
            reset_on_close(transport)
            return
        stream = tv.TLSStream(transport, policy, server_side=True)
        await stream.do_handshake()
        handshakes.append(stream.version())
        while message := await stream.receive_some():
            await stream.send_all(reply_to(message))

    with trio.fail_after(TIMEOUT):
        async with (
            raw_listening(reset_first_then_serve) as server,
            open_pool(certs) as pool,
        ):
            assert await fetch(pool, server.port) == reply_to(b"ping")
            assert await fetch(pool, server.port) == reply_to(b"ping")
            stats = pool.stats()
    assert server.accepted == 2
    assert len(handshakes) == 1
    assert stats.handshakes == 1
    assert sum(stats.failures.values()) == 1


# ---------------------------------------------------------- cancellation


async def test_cancelled_waiter_leaves_the_queue(certs: CertKit) -> None:
    release = trio.Event()
    served_waiters: list[str] = []
    with trio.fail_after(TIMEOUT):
        async with (
            serving(server_policy(certs)) as server,
            open_pool(certs, max_per_host=1) as pool,
        ):

            async def holder(*, task_status: trio.TaskStatus[None]) -> None:
                async with pool.connection(HOST, server.port, server_hostname=NAME):
                    task_status.started()
                    await release.wait()

            async def waiter(who: str, scope: trio.CancelScope) -> None:
                with scope:
                    async with pool.connection(
                        HOST, server.port, server_hostname=NAME
                    ) as stream:
                        served_waiters.append(who)
                        assert await request(stream) == reply_to(b"ping")

            first_scope, second_scope = trio.CancelScope(), trio.CancelScope()
            async with trio.open_nursery() as nursery:
                await nursery.start(holder)
                nursery.start_soon(waiter, "first", first_scope)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(waiter, "second", second_scope)
                await trio.testing.wait_all_tasks_blocked()
                assert pool.stats().waiting == 2
                first_scope.cancel()
                await trio.testing.wait_all_tasks_blocked()
                assert pool.stats().waiting == 1
                release.set()
            stats = pool.stats()
    assert first_scope.cancelled_caught
    assert not second_scope.cancelled_caught
    assert served_waiters == ["second"]
    assert (stats.waiting, stats.in_use, stats.open, stats.idle) == (0, 0, 1, 1)
    assert len(server.served) == 1


async def test_cancelled_connect_releases_its_slot(certs: CertKit) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            raw_listening(never_answer) as server,
            open_pool(certs, max_per_host=1) as pool,
        ):
            for attempt in (1, 2):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(fetch, pool, server.port)
                    # The ClientHello is out; the handshake waits for an answer.
                    await trio.testing.wait_all_tasks_blocked()
                    assert server.accepted == attempt
                    assert pool.stats().open == 1
                    nursery.cancel_scope.cancel()
                stats = pool.stats()
                assert (stats.open, stats.in_use, stats.waiting) == (0, 0, 0), stats
            # The server saw each abandoned connection closed.
            for ended in server.ended:
                await ended.wait()
            stats = pool.stats()
    assert server.accepted == 2  # the second checkout was not blocked
    assert stats.failures == {}
    assert stats.handshakes == 0


async def test_cancelling_the_pool_closes_everything(certs: CertKit) -> None:
    pools: list[tv.ClientPool] = []
    exited = trio.Event()

    async def hold(
        pool: tv.ClientPool, port: int, *, task_status: trio.TaskStatus[None]
    ) -> None:
        async with pool.connection(HOST, port, server_hostname=NAME) as stream:
            assert await request(stream) == reply_to(b"ping")
            task_status.started()
            await trio.sleep_forever()

    async def run_pool(port: int, *, task_status: trio.TaskStatus[None]) -> None:
        try:
            async with open_pool(certs) as pool:
                pools.append(pool)
                async with (
                    pool.connection(HOST, port, server_hostname=NAME) as a,
                    pool.connection(HOST, port, server_hostname=NAME) as b,
                    pool.connection(HOST, port, server_hostname=NAME) as c,
                    pool.connection(HOST, port, server_hostname=NAME) as d,
                ):
                    for stream in (a, b, c, d):
                        assert await request(stream) == reply_to(b"ping")
                # Four idle connections; two tasks take two of them.
                async with trio.open_nursery() as users:
                    for _ in range(2):
                        await users.start(hold, pool, port)
                    task_status.started()
                    await trio.sleep_forever()
        finally:
            exited.set()

    with trio.fail_after(TIMEOUT):
        async with serving(server_policy(certs)) as server:
            await trio.testing.wait_all_tasks_blocked()
            tasks_before = count_tasks()
            async with trio.open_nursery() as nursery:
                await nursery.start(run_pool, server.port)
                stats = pools[0].stats()
                assert (stats.open, stats.idle, stats.in_use) == (4, 2, 2)
                nursery.cancel_scope.cancel()
            assert exited.is_set()
            endings = await server.all_ended()
            await trio.testing.wait_all_tasks_blocked()
            tasks_after = count_tasks()
            pool_stats = pools[0].stats()
    assert len(endings) == 4
    # Every connection, idle or checked out, was closed with close_notify.
    assert endings == [b""] * 4
    assert tasks_after == tasks_before
    assert (pool_stats.open, pool_stats.idle, pool_stats.in_use) == (0, 0, 0)


async def test_aclose_closes_idle_connections(certs: CertKit) -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(server_policy(certs)) as server, open_pool(certs) as pool:
            async with (
                pool.connection(HOST, server.port, server_hostname=NAME) as a,
                pool.connection(HOST, server.port, server_hostname=NAME) as b,
            ):
                assert await request(a) == reply_to(b"ping")
                assert await request(b) == reply_to(b"ping")
            assert pool.stats().idle == 2
            await pool.aclose()
            endings = await server.all_ended()
            await trio.testing.wait_all_tasks_blocked()
            stats = pool.stats()
            with pytest.raises(trio.ClosedResourceError):
                await fetch(pool, server.port)
    assert endings == [b"", b""]
    assert (stats.open, stats.idle, stats.in_use) == (0, 0, 0)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
async def test_no_file_descriptor_outlives_the_pool(certs: CertKit) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            serving(server_policy(certs)) as good,
            serving(server_policy(certs, "expired")) as expired,
        ):
            with socket.socket() as placeholder:
                placeholder.bind((HOST, 0))
                refused_port = placeholder.getsockname()[1]
                await trio.testing.wait_all_tasks_blocked()
                before = open_fds()
                async with open_pool(certs, idle_timeout=0.2) as pool:
                    async with trio.open_nursery() as nursery:
                        for _ in range(5):
                            nursery.start_soon(fetch, pool, good.port)
                    with pytest.raises(ValueError, match="in the block"):
                        async with pool.connection(
                            HOST, good.port, server_hostname=NAME
                        ):
                            raise ValueError("in the block")
                    with pytest.raises(tv.CertificateExpired):
                        await fetch(pool, expired.port)
                    with pytest.raises(OSError):  # noqa: PT011 - any refusal
                        await fetch(pool, refused_port)
                    # Let some connections time out while idle, keep one.
                    await good.all_ended()
                    assert await fetch(pool, good.port) == reply_to(b"ping")
                await good.all_ended()
                await expired.wait_for_reports(1)
                await trio.testing.wait_all_tasks_blocked()
                await eventually(
                    lambda: open_fds() == before,
                    f"the file descriptors back to {before} (now {open_fds()})",
                )


# ------------------------------------------- connections not given back


async def test_exception_in_the_block_closes_the_connection(certs: CertKit) -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(server_policy(certs)) as server, open_pool(certs) as pool:
            with pytest.raises(KeyError):
                async with pool.connection(
                    HOST, server.port, server_hostname=NAME
                ) as stream:
                    assert await request(stream) == reply_to(b"ping")
                    raise KeyError("the caller failed")
            assert (pool.stats().open, pool.stats().idle) == (0, 0)
            assert await fetch(pool, server.port) == reply_to(b"ping")
            stats = pool.stats()
            await server.served[0].ended.wait()
    assert len(server.served) == 2
    assert server.served[0].ending == b""  # closed politely
    assert (stats.handshakes, stats.reused) == (2, 0)


async def test_unread_data_makes_a_connection_not_reusable(certs: CertKit) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            serving(server_policy(certs), extra=b" and more") as server,
            open_pool(certs) as pool,
        ):
            async with pool.connection(
                HOST, server.port, server_hostname=NAME
            ) as stream:
                await stream.send_all(b"ping")
                # The reply and the extra bytes arrive in one record; read
                # only the reply.
                assert await stream.receive_some(len(reply_to(b"ping"))) == reply_to(
                    b"ping"
                )
            assert (pool.stats().open, pool.stats().idle) == (0, 0)
            async with pool.connection(
                HOST, server.port, server_hostname=NAME
            ) as stream:
                assert await request(stream) == reply_to(b"ping") + b" and more"
            stats = pool.stats()
    assert len(server.served) == 2
    assert (stats.handshakes, stats.reused) == (2, 0)


async def test_checked_out_connections_count_until_given_back(
    certs: CertKit,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(server_policy(certs)) as server, open_pool(certs) as pool:
            assert pool.stats().open == 0
            async with pool.connection(HOST, server.port, server_hostname=NAME):
                stats = pool.stats()
                assert (stats.open, stats.in_use, stats.idle) == (1, 1, 0)
            stats = pool.stats()
            assert (stats.open, stats.in_use, stats.idle) == (1, 0, 1)
