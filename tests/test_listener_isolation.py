"""One ``serve_tls`` server, 200 concurrent connections, most of them abusive.

A failed handshake is reported and never disturbs other
connections or the accept loop.  Here good clients share one listener with
clients whose certificates are refused, plaintext HTTP, garbage, clients that
stall in the middle of their ClientHello or of the handshake, and clients that
reset the connection.  Every client knows its local address (each has a
loopback address of its own, because a port freed by a reset is soon reused),
so each :class:`~trio_verify.HandshakeReport` is matched to the connection it
is about by the peer address and port.

Checked: every good client gets its reply byte for byte; every bad one ends
with the right typed report (and observes what a TLS peer should); there is
exactly one report per connection; the accept loop still serves a client after
all of that; cancelling the server, with handshakes still in progress, finishes
within a bound, closes those connections and leaves no task; and the process
has as many open file descriptors afterwards as before.

Linux only: it counts descriptors in ``/proc``, gives each client an address
of its own in 127.0.0.0/8, and asks the kernel (``sock_diag``) when the
server has read what a client sent.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import random
import socket
import ssl
import struct
import sys
import termios
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
import trio.testing
from certs import CertKit, ClientKind

import trio_verify as tv

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="uses /proc, 127.0.0.0/8 and sock_diag"
)

HANDSHAKE_TIMEOUT = 1.0
# How late, beyond the timeout, a HandshakeTimeout may be reported on a busy
# two-core machine; a correctness bound (the timeout fires), not a speed one.
TIMEOUT_SLACK = 3.0
# TLS clients (good or refused) doing their handshakes at the same time: keeps
# every handshake far inside HANDSHAKE_TIMEOUT even on a loaded machine, while
# the abusive clients all run at once.
TLS_CONCURRENCY = 16
SEED = 20240611

HELLOS = Path(__file__).parent / "hellos"
# Real first flights that end where their ClientHello does.
HELLO_FILES = sorted(p for p in HELLOS.glob("*.bin") if p.stem != "s_client_early_data")

HTTP_REQUEST = b"GET / HTTP/1.1\r\n\r\n"
# Not a TLS record header: refused with no alert at all, as OpenSSL does.
GARBAGE_NOT_TLS = (
    b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n",
    b"\x00\x00\x00\x00\x00\x00\x00\x00" * 8,
    b"\x17\x99\x42" + bytes(range(61)),
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
)
# TLS records that cannot begin a ClientHello: refused with an alert.
GARBAGE_VIOLATION = (
    # A handshake record carrying a ServerHello header.
    b"\x16\x03\x01\x00\x04\x02\x00\x00\x00",
    # Application data before any handshake.
    b"\x17\x03\x03\x00\x05hello",
    # A record longer than TLS allows (judged on the header).
    b"\x16\x03\x01\xff\xff" + b"\x01" * 32,
)

# How many clients of each kind; 200 in all, plus one good client at the end.
COUNTS = {
    "good": 80,
    "expired": 15,
    "other_ca": 15,
    "http": 15,
    "garbage_not_tls": 8,
    "garbage_violation": 7,
    "stall_hello": 15,
    "stall_handshake": 15,
    "reset_connect": 15,
    "reset_half_hello": 15,
}
assert sum(COUNTS.values()) == 200
# Connections whose handshakes are still in progress when the server stops.
IN_FLIGHT = 4


# --------------------------------------------------------------- helpers


def open_fds() -> dict[int, str]:
    """This process's open file descriptors and what they point at."""
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the descriptor listdir itself used, gone already
            continue
    return fds


def all_tasks() -> Iterator[trio.lowlevel.Task]:
    """Every task of this trio run."""
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        assert task is not None
        yield task
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)


def request_for(index: int) -> bytes:
    """A request line of up to ~40 KB, so that some span several records."""
    size = (index * 7919) % 40000
    body = hashlib.shake_256(index.to_bytes(4, "big")).hexdigest(size // 2 + 1)
    return f"{index}:".encode() + body[:size].encode() + b"\n"


def reply_for(request: bytes) -> bytes:
    return b"reply " + hashlib.sha256(request).hexdigest().encode() + request[::-1]


async def handler(stream: tv.TLSStream[trio.SocketStream]) -> None:
    """Read one request line, answer it; serve_tls closes the stream."""
    request = bytearray()
    while not request.endswith(b"\n"):
        data = await stream.receive_some()
        if not data:
            return
        request += data
    await stream.send_all(reply_for(bytes(request)))


async def read_to_eof(stream: trio.abc.ReceiveStream) -> bytes:
    received = bytearray()
    while data := await stream.receive_some(65536):
        received += data
    return bytes(received)


def local_address(sock: trio.socket.SocketType) -> tuple[str, int]:
    host, port = sock.getsockname()[:2]
    return str(host), int(port)


class Reports:
    """Collects HandshakeReports from ``on_handshake``; lets a task wait for n."""

    def __init__(self) -> None:
        self.reports: list[tv.HandshakeReport] = []
        self._changed = trio.Event()

    def __call__(self, report: tv.HandshakeReport) -> None:
        self.reports.append(report)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, n: int) -> None:
        while len(self.reports) < n:
            await self._changed.wait()


class Countdown:
    """An event that happens once ``count_down`` has been called n times."""

    def __init__(self, n: int) -> None:
        self._left = n
        self._event = trio.Event()

    def count_down(self) -> None:
        self._left -= 1
        if self._left == 0:
            self._event.set()

    async def wait(self) -> None:
        await self._event.wait()


@dataclass
class Client:
    """One connection: its kind, its local address, and what it observed."""

    kind: str
    index: int
    address: tuple[str, int] | None = None
    error: BaseException | None = None
    received: bytes | None = None
    expected: bytes | None = None
    # trio.current_time() when the client connected and when it saw the end.
    connected_at: float | None = None
    ended_at: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def source(self) -> str:
        """The loopback address this client connects from, its own."""
        return f"127.77.{self.index // 250}.{self.index % 250 + 1}"

    def __str__(self) -> str:
        host, port = self.address or (self.source, 0)
        return f"{self.kind} #{self.index} ({host}:{port})"


# --------------------------------------------------------------- clients


@dataclass
class World:
    port: int
    certs: CertKit
    good_policy: tv.ClientPolicy
    expired_policy: tv.ClientPolicy
    other_ca_policy: tv.ClientPolicy
    limiter: trio.CapacityLimiter
    hellos: list[bytes]


async def run_tls_client(world: World, client: Client, policy: tv.ClientPolicy) -> None:
    request = request_for(client.index)
    async with world.limiter:
        tcp = await trio.open_tcp_stream(
            "127.0.0.1", world.port, local_address=client.source
        )
        client.address = local_address(tcp.socket)
        client.connected_at = trio.current_time()
        stream = tv.TLSStream(tcp, policy, server_hostname="localhost")
        try:
            await stream.do_handshake()
            await stream.send_all(request)
            client.received = await read_to_eof(stream)
            client.expected = reply_for(request)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            client.error = exc
        finally:
            client.ended_at = trio.current_time()
            await trio.aclose_forcefully(stream)


async def run_raw_client(world: World, client: Client, payload: bytes) -> None:
    """Send ``payload`` over plain TCP, then read until the server closes."""
    tcp = await trio.open_tcp_stream(
        "127.0.0.1", world.port, local_address=client.source
    )
    client.address = local_address(tcp.socket)
    client.connected_at = trio.current_time()
    try:
        if payload:
            await tcp.send_all(payload)
        client.received = await read_to_eof(tcp)
    except trio.BrokenResourceError as exc:
        client.error = exc
    finally:
        client.ended_at = trio.current_time()
        await tcp.aclose()


async def run_stalled_handshake(world: World, client: Client) -> None:
    """A plain ``ssl`` client that sends its ClientHello and never answers."""
    ctx = world.certs.client_context(trust="ca", identity="valid")
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    await run_raw_client(world, client, outgoing.read())


_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 1
_NLMSG_HEADER = struct.Struct("=IHHII")
_TCP_ESTABLISHED = 1
_TCP_CLOSE_WAIT = 8


def unread_by_server(server_port: int, client: tuple[str, int]) -> int | None:
    """Bytes the server's end of a loopback connection has not read yet.

    Asks the kernel for that one socket (Linux ``sock_diag``, the interface
    ``ss`` uses): its receive queue is empty once the server has read what
    the client sent.  ``None`` when the kernel has no such connection.
    """
    client_host, client_port = client
    request = (
        struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF)
        + struct.pack("!HH", server_port, client_port)
        + socket.inet_aton("127.0.0.1")
        + bytes(12)
        + socket.inet_aton(client_host)
        + bytes(12)
        + struct.pack("=III", 0, 0xFFFFFFFF, 0xFFFFFFFF)  # any interface, no cookie
    )
    header = _NLMSG_HEADER.pack(
        _NLMSG_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0
    )
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
        nl.send(header + request)
        answer = nl.recv(65536)
    _, kind, _, _, _ = _NLMSG_HEADER.unpack_from(answer)
    if kind != _SOCK_DIAG_BY_FAMILY:  # an error: no such socket
        return None
    # struct inet_diag_msg: family, state, timer, retrans; the socket id
    # (ports, addresses, interface, cookie: 48 bytes); expires, rqueue, ...
    offset = _NLMSG_HEADER.size
    state = answer[offset + 1]
    (remote_port,) = struct.unpack_from("!H", answer, offset + 6)
    remote_host = answer[offset + 24 : offset + 28]
    (rqueue,) = struct.unpack_from("=I", answer, offset + 4 + 48 + 4)
    # An exact lookup falls back on the listening socket; that is not it.
    if (remote_host, remote_port) != (
        socket.inet_aton(client_host),
        client_port,
    ) or state not in (_TCP_ESTABLISHED, _TCP_CLOSE_WAIT):
        return None
    return int(rqueue)


def unsent_or_unacked(sock: trio.socket.SocketType) -> int:
    """Bytes sent on ``sock`` that the peer's kernel has not acknowledged yet."""
    queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
    return int(struct.unpack("i", queued)[0])


async def server_has_read(world: World, sock: trio.socket.SocketType) -> bool:
    """Wait until the server has read everything sent on ``sock`` so far.

    True once the server's kernel has acknowledged every byte and the server's
    receive queue is empty; False if that does not happen within a bound.
    The server reads first thing in a handshake, long before its own timeout;
    the bound only catches a server that never reads.
    """
    address = local_address(sock)

    def done() -> bool:
        return (
            unsent_or_unacked(sock) == 0 and unread_by_server(world.port, address) == 0
        )

    with trio.move_on_after(HANDSHAKE_TIMEOUT + TIMEOUT_SLACK):
        while not done():  # noqa: ASYNC110 - kernel state: no event announces it
            await trio.sleep(0.005)
        return True
    return False


async def run_reset(world: World, client: Client, payload: bytes) -> None:
    """Connect, optionally send ``payload``, then close with a TCP reset.

    Without a payload the reset follows the connect at once, typically before
    the server has even accepted the connection.  With one, the reset comes
    once the server has read the payload and is waiting for the rest of its
    ClientHello, so that it hits a handshake in progress.
    """
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        await sock.bind((client.source, 0))
        await sock.connect(("127.0.0.1", world.port))
        client.address = local_address(sock)
        client.connected_at = trio.current_time()
        if payload:
            sent = await sock.send(payload)
            assert sent == len(payload)
            if not await server_has_read(world, sock):
                client.notes.append("the server never read the half hello")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.ended_at = trio.current_time()


async def run_in_flight(
    world: World, client: Client, reading: Countdown, closed: Countdown
) -> None:
    """Send half a hello, wait for the server to read it, then read to EOF.

    The server is cancelled while this handshake is in progress: the client
    must see the connection closed.
    """
    hello = world.hellos[client.index % len(world.hellos)]
    tcp = await trio.open_tcp_stream(
        "127.0.0.1", world.port, local_address=client.source
    )
    client.address = local_address(tcp.socket)
    client.connected_at = trio.current_time()
    try:
        await tcp.send_all(hello[: len(hello) // 2])
        if not await server_has_read(world, tcp.socket):
            client.notes.append("the server never read the half hello")
        reading.count_down()
        client.received = await read_to_eof(tcp)
    except trio.BrokenResourceError as exc:
        client.error = exc
    finally:
        client.ended_at = trio.current_time()
        await tcp.aclose()
        closed.count_down()


def client_runner(world: World, client: Client) -> Callable[[], Awaitable[None]]:
    hello = world.hellos[client.index % len(world.hellos)]
    half = hello[: len(hello) // 2]
    match client.kind:
        case "good":
            return lambda: run_tls_client(world, client, world.good_policy)
        case "expired":
            return lambda: run_tls_client(world, client, world.expired_policy)
        case "other_ca":
            return lambda: run_tls_client(world, client, world.other_ca_policy)
        case "http":
            return lambda: run_raw_client(world, client, HTTP_REQUEST)
        case "garbage_not_tls":
            garbage = GARBAGE_NOT_TLS[client.index % len(GARBAGE_NOT_TLS)]
            return lambda: run_raw_client(world, client, garbage)
        case "garbage_violation":
            garbage = GARBAGE_VIOLATION[client.index % len(GARBAGE_VIOLATION)]
            return lambda: run_raw_client(world, client, garbage)
        case "stall_hello":
            return lambda: run_raw_client(world, client, half)
        case "stall_handshake":
            return lambda: run_stalled_handshake(world, client)
        case "reset_connect":
            return lambda: run_reset(world, client, b"")
        case "reset_half_hello":
            return lambda: run_reset(world, client, half)
    raise AssertionError(client.kind)


# --------------------------------------------------------------- checks


def is_transport_failure(error: BaseException | None) -> bool:
    """A reset seen by the server: a transport error, or a truncated hello."""
    if isinstance(error, tv.TruncatedStream):
        return True
    return (
        isinstance(error, trio.BrokenResourceError)
        and not isinstance(error, tv.TLSError)
        and isinstance(error.__cause__, OSError)
    )


def check_client(
    client: Client, report: tv.HandshakeReport, certs: CertKit
) -> list[str]:
    """What is wrong with this client's report and observations, if anything."""
    problems: list[str] = []

    def expect(condition: bool, what: str) -> None:
        if not condition:
            problems.append(
                f"{client}: {what}; "
                f"report: {report.summary()}; client error: {client.error!r}; "
                f"client received: {client.received!r:.120}"
            )

    error = report.error
    match client.kind:
        case "good":
            expect(report.ok, "the handshake should succeed")
            expect(report.tls_version == "TLSv1.3", "TLS 1.3 expected")
            expect(
                report.client_certificate == certs.client("valid").info,
                "the report should carry the client's certificate",
            )
            expect(client.error is None, "the client should be served")
            expect(
                client.received == client.expected,
                "the reply should arrive byte for byte",
            )
        case "expired" | "other_ca":
            cls, alert = {
                "expired": (tv.CertificateExpired, tv.Alert.CERTIFICATE_EXPIRED),
                "other_ca": (tv.UnknownIssuer, tv.Alert.UNKNOWN_CA),
            }[client.kind]
            expect(type(error) is cls, f"report error should be {cls.__name__}")
            expect(report.phase is tv.Phase.CLIENT_CERTIFICATE, "CLIENT_CERTIFICATE")
            expect(report.alert_sent is alert, f"alert_sent should be {alert!r}")
            expect(
                report.client_certificate == certs.client(client.kind).info,
                "the report should carry the refused certificate",
            )
            expect(
                isinstance(client.error, tv.PeerRejectedCertificate)
                and client.error.alert_received is alert,
                f"the client should see PeerRejectedCertificate({alert!r})",
            )
        case "http" | "garbage_not_tls":
            expect(type(error) is tv.NotTLS, "report error should be NotTLS")
            expect(report.phase is tv.Phase.CLIENT_HELLO, "phase CLIENT_HELLO")
            expect(report.alert_sent is None, "no alert for non-TLS bytes")
            expect(
                client.error is None and client.received == b"",
                "the client should see a clean close and no bytes at all",
            )
        case "garbage_violation":
            expect(
                type(error) is tv.ProtocolViolation,
                "report error should be ProtocolViolation",
            )
            expect(report.phase is tv.Phase.CLIENT_HELLO, "phase CLIENT_HELLO")
            sent = report.alert_sent
            expect(sent is not None, "an alert should be sent")
            received = client.received or b""
            expect(
                client.error is None
                and len(received) == 7
                and received[:1] == b"\x15"
                and received[5:] == bytes((2, sent or 0)),
                "the client should receive exactly the fatal alert record, then EOF",
            )
        case "stall_hello" | "stall_handshake":
            expect(
                isinstance(error, tv.HandshakeTimeout),
                "report error should be HandshakeTimeout",
            )
            expect(
                HANDSHAKE_TIMEOUT
                <= report.duration
                <= HANDSHAKE_TIMEOUT + TIMEOUT_SLACK,
                f"the timeout should fire after {HANDSHAKE_TIMEOUT}s "
                f"(took {report.duration:.3f}s)",
            )
            expect(client.error is None, "the server should close, not reset")
            assert client.ended_at is not None
            assert client.connected_at is not None
            waited = client.ended_at - client.connected_at
            expect(
                waited <= HANDSHAKE_TIMEOUT + TIMEOUT_SLACK,
                f"the server should close the connection after the timeout "
                f"(the client waited {waited:.3f}s)",
            )
            if client.kind == "stall_hello":
                expect(report.phase is tv.Phase.CLIENT_HELLO, "phase CLIENT_HELLO")
                expect(client.received == b"", "nothing to say to half a hello")
            else:
                expect(
                    report.phase is tv.Phase.CLIENT_CERTIFICATE,
                    "phase CLIENT_CERTIFICATE (waiting for the client's flight)",
                )
                expect(report.tls_version == "TLSv1.3", "TLS 1.3 expected")
                expect(
                    (client.received or b"")[:3] == b"\x16\x03\x03",
                    "the client should have received the server's flight",
                )
        case "reset_connect" | "reset_half_hello":
            expect(not client.notes, "; ".join(client.notes))
            expect(
                is_transport_failure(error),
                "report error should be a transport error or TruncatedStream",
            )
        case _:
            raise AssertionError(client.kind)
    return problems


# --------------------------------------------------------------- the test


async def test_two_hundred_mixed_connections(certs: CertKit) -> None:
    server_identity = certs.server("valid")
    server_policy = tv.ServerPolicy(
        identity=tv.Identity.from_pem(
            server_identity.cert_chain_pem, server_identity.key_pem
        ),
        client_auth=tv.ClientAuth.REQUIRED,
        client_trust=certs.ca_pem,
        minimum_version=ssl.TLSVersion.TLSv1_3,
        name="isolation",
    )

    def client_policy(kind: ClientKind) -> tv.ClientPolicy:
        ident = certs.client(kind)
        return tv.ClientPolicy(
            trust=certs.ca_pem,
            identity=tv.Identity.from_pem(ident.cert_chain_pem, ident.key_pem),
        )

    good_policy = client_policy("valid")
    expired_policy = client_policy("expired")
    other_ca_policy = client_policy("other_ca")
    # Build every context now, so that the baselines below see them.
    for policy in (server_policy, good_policy, expired_policy, other_ca_policy):
        assert policy.context is not None
    certs.client_context(trust="ca", identity="valid")

    fds_before = open_fds()
    tasks_before = sum(1 for _ in all_tasks())
    reports = Reports()

    rng = random.Random(SEED)
    clients = [
        Client(kind, index)
        for index, kind in enumerate(
            kind for kind, n in COUNTS.items() for _ in range(n)
        )
    ]
    rng.shuffle(clients)
    final = Client("good", len(clients))

    in_flight = [Client("in_flight", len(clients) + 1 + i) for i in range(IN_FLIGHT)]
    in_flight_reading = Countdown(IN_FLIGHT)
    in_flight_closed = Countdown(IN_FLIGHT)

    with trio.fail_after(15):
        async with trio.open_nursery() as client_nursery:
            async with trio.open_nursery() as server_nursery:
                listeners = await server_nursery.start(
                    lambda task_status: tv.serve_tls(
                        handler,
                        0,
                        server_policy,
                        host="127.0.0.1",
                        handshake_timeout=HANDSHAKE_TIMEOUT,
                        on_handshake=reports,
                        task_status=task_status,
                    )
                )
                port = listeners[0].transport_listener.socket.getsockname()[1]
                world = World(
                    port=port,
                    certs=certs,
                    good_policy=good_policy,
                    expired_policy=expired_policy,
                    other_ca_policy=other_ca_policy,
                    limiter=trio.CapacityLimiter(TLS_CONCURRENCY),
                    hellos=[p.read_bytes() for p in HELLO_FILES],
                )

                # Every client bounds itself: the slowest (a stall) is closed
                # by the server after HANDSHAKE_TIMEOUT.
                with trio.fail_after(HANDSHAKE_TIMEOUT + 8):
                    async with trio.open_nursery() as nursery:
                        for client in clients:
                            nursery.start_soon(client_runner(world, client))

                # The accept loop survived all of it.
                with trio.fail_after(5):
                    await client_runner(world, final)()
                    await reports.wait_for(len(clients) + 1)

                # Handshakes in progress when the server stops.
                for client in in_flight:
                    client_nursery.start_soon(
                        run_in_flight,
                        world,
                        client,
                        in_flight_reading,
                        in_flight_closed,
                    )
                with trio.fail_after(5):
                    await in_flight_reading.wait()

                # A report that would arrive late (a second one for a
                # connection) gets its chance before the server stops.
                await trio.testing.wait_all_tasks_blocked(0.05)

                cancelled_at = trio.current_time()
                server_nursery.cancel_scope.cancel()
            cancel_took = trio.current_time() - cancelled_at
            # The in-flight clients see their connections closed.
            with trio.fail_after(5):
                await in_flight_closed.wait()

    # ------------------------------------------------------------ verdicts
    everyone = [*clients, final]
    problems: list[str] = []

    assert cancel_took < 2.0, f"the server took {cancel_took:.3f}s to stop"
    for client in in_flight:
        assert not client.notes, client.notes
        assert client.error is None, f"the server reset a handshake: {client.error!r}"
        assert client.received == b"", client.received
    leftover = sum(1 for _ in all_tasks()) - tasks_before
    assert leftover == 0, f"{leftover} tasks left after the server stopped"

    # Everything is closed by now; give the kernel-facing side a bounded
    # chance to settle rather than a fixed sleep.
    with trio.move_on_after(2):
        while open_fds().keys() != fds_before.keys():  # noqa: ASYNC110 - no event
            await trio.sleep(0.01)
    fds_after = open_fds()
    gained = {fd: fds_after[fd] for fd in fds_after.keys() - fds_before.keys()}
    lost = {fd: fds_before[fd] for fd in fds_before.keys() - fds_after.keys()}
    assert not gained, f"descriptors leaked: {gained}"
    assert not lost, f"descriptors closed that the test did not open: {lost}"

    addresses = Counter(c.address for c in [*everyone, *in_flight])
    assert None not in addresses, "every client should have learned its address"
    assert max(addresses.values()) == 1, "two clients with one address"

    by_peer: dict[tuple[str, int] | None, list[tv.HandshakeReport]] = {}
    for report in reports.reports:
        peer = report.peer_address
        key = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        by_peer.setdefault(key, []).append(report)
    anonymous = by_peer.pop(None, [])
    # Stopping the server is no verdict on the handshakes it cancels; whether
    # they are reported is not this test's business, but never twice.
    for client in in_flight:
        assert len(by_peer.pop(client.address, [])) <= 1
    reported = sum(len(r) for r in by_peer.values()) + len(anonymous)

    # A connection reset before the server accepted it has no address the
    # server can still learn (getpeername fails once the reset is in, and
    # trio drops the address accept() returned): its report may say
    # ``peer_address=None``.  Every other report must name its client.
    unmatched_resets = []
    for client in everyone:
        matched = by_peer.pop(client.address, [])
        if not matched and client.kind == "reset_connect":
            unmatched_resets.append(client)
            continue
        if len(matched) != 1:
            problems.append(
                f"{client}: {len(matched)} reports instead of one: "
                f"{[r.summary() for r in matched]}"
            )
            continue
        problems += check_client(client, matched[0], certs)
    for key, stray in by_peer.items():
        problems.append(
            f"{len(stray)} reports for no client (peer {key}): "
            + "; ".join(r.summary() for r in stray)
        )
    if len(anonymous) != len(unmatched_resets) or not all(
        is_transport_failure(r.error) for r in anonymous
    ):
        kinds = Counter(f"{r.error_type}" for r in anonymous)
        problems.append(
            f"{len(anonymous)} reports without a peer address ({dict(kinds)}), "
            f"for {len(unmatched_resets)} connections reset before they were "
            "accepted; the first: " + "; ".join(r.summary() for r in anonymous[:3])
        )
    assert reported == len(everyone), (
        f"{reported} reports for {len(everyone)} connections"
    )
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)
