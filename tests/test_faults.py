"""Transport faults at every interesting byte offset.

A real handshake and a short exchange run over :class:`faulty.FaultyStream`
while the transport closes, resets, stalls, blocks, delays or splits into
single bytes at a byte offset of one direction.  Whatever the offset, both
ends must end within bounds, each either having done everything it set out
to do with the exact bytes, or with the documented error:

* EOF (``close``): a :class:`~trio_verify.TLSError` (mostly
  :class:`~trio_verify.TruncatedStream`), at once, not after a timeout;
* reset: the transport's own :class:`trio.BrokenResourceError`, passed through;
* stall or block during a handshake: :class:`~trio_verify.HandshakeTimeout`
  after the policy's ``handshake_timeout`` (or the confirmation timeout, or
  the peer's EOF when the peer gave up first);
* stall or block after both handshakes: ``receive_some`` just waits; the test
  cancels the wait, releases the held bytes, and the exchange completes;
* delay: as a stall that ends by itself: shorter than the handshake timeout
  it changes nothing, longer it is a stall;
* single bytes: nothing changes.

An error that is not a :class:`~trio_verify.TLSError` is accepted only when it
is the very exception object the transport raised to that end.  Each
transport is closed exactly once, and every run's nursery exits (no task is
left behind).

Offsets: around every record boundary of both directions (first byte, inside
the header, first body byte, one inside, last byte) plus a few seeded random
ones, for TLS 1.2 and 1.3, with and without a required client certificate;
every byte of the ClientHello (EOF and stall); every byte of the request,
response and close_notify records (TLS 1.3, EOF, reset and stall); every
byte of both directions of the whole session (TLS 1.2 and 1.3, EOF, the
cheapest fault, so that it fits in every test run); the record boundaries
again for single bytes and delays.  Last, 1000 runs with faults of every
kind must not grow the interpreter's memory or leave tasks behind.  The
server and client keys are Ed25519, whose signatures have a fixed length, so
offsets found in a reference run hold in every run.  The memory transports run on trio's
autojump clock, so a 0.2 s handshake timeout costs no wall time and every
duration measured is exact; the socket variant uses the real clock and
counts the process's file descriptors.
"""

from __future__ import annotations

import gc
import os
import random
import ssl
import sys
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, Literal, TypeAlias

import pytest
import trio
import trio.testing
from certs import CertKit
from faulty import (
    CLIENT_TO_SERVER,
    SERVER_TO_CLIENT,
    End,
    Fault,
    FaultKind,
    FaultPlan,
    FaultyStream,
)
from loopback import socket_pair

import trio_verify as tv

TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
HANDSHAKE_TIMEOUT: Final = 0.2
CONFIRM_TIMEOUT: Final = 0.2
PATIENCE: Final = 1.0
"""How long a receive after the handshake waits before the test gives up on
it, releases whatever the transport holds back, and waits again."""
BOUND: Final = 10.0
"""No run may take longer than this (virtual seconds on the memory transport)."""
PROMPT: Final = HANDSHAKE_TIMEOUT / 2
"""An EOF or a reset must be noticed well before any timeout could fire."""
SOCKET_PROMPT: Final = 1.0
"""The same, in real time over sockets, with room for a busy machine."""
EPSILON: Final = 1e-6
REQUEST: Final = b"GET /faults HTTP/1.1\r\nHost: localhost\r\n\r\n"
RESPONSE: Final = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" * 2

# ------------------------------------------------------------------ configs


@dataclass(frozen=True)
class Config:
    """A pair of policies: one TLS version, client certificate or not."""

    version: ssl.TLSVersion
    mtls: bool
    client: tv.ClientPolicy
    server: tv.ServerPolicy

    @property
    def label(self) -> str:
        return f"{self.version.name}{'-mtls' if self.mtls else ''}"


CONFIG_IDS = ["TLSv1.2", "TLSv1.2-mtls", "TLSv1.3", "TLSv1.3-mtls"]
CONFIG_KEYS = [(TLS12, False), (TLS12, True), (TLS13, False), (TLS13, True)]


_identities: dict[int, tuple[tv.Identity, tv.Identity]] = {}


def identities(certs: CertKit) -> tuple[tv.Identity, tv.Identity]:
    """(server, client) identities with Ed25519 keys.

    Ed25519 signatures have a fixed length, so every run of a configuration
    puts the same records at the same offsets as the reference run (ECDSA
    signatures vary by a byte or two).
    """
    if id(certs) not in _identities:
        server = certs.issue("faults-server", names=["localhost"], key="ed25519")
        client = certs.issue(
            "faults-client",
            names=["client.example"],
            common_name="client.example",
            key="ed25519",
        )
        _identities[id(certs)] = (
            tv.Identity.from_pem(server.cert_chain_pem, server.key_pem),
            tv.Identity.from_pem(client.cert_chain_pem, client.key_pem),
        )
    return _identities[id(certs)]


def make_config(
    certs: CertKit,
    version: ssl.TLSVersion,
    mtls: bool,
    *,
    handshake_timeout: float | None = HANDSHAKE_TIMEOUT,
    confirm_timeout: float = CONFIRM_TIMEOUT,
) -> Config:
    server_id, client_id = identities(certs)
    client = tv.ClientPolicy(
        trust=certs.ca_pem,
        identity=client_id if mtls else None,
        minimum_version=version,
        maximum_version=version,
        handshake_timeout=handshake_timeout,
        confirm_timeout=confirm_timeout,
    )
    server = tv.ServerPolicy(
        identity=server_id,
        client_auth=tv.ClientAuth.REQUIRED if mtls else tv.ClientAuth.NONE,
        client_trust=certs.ca_pem if mtls else None,
        minimum_version=version,
        maximum_version=version,
        handshake_timeout=handshake_timeout,
    )
    return Config(version, mtls, client, server)


_configs: dict[tuple[ssl.TLSVersion, bool], Config] = {}


@pytest.fixture(params=CONFIG_KEYS, ids=CONFIG_IDS)
def config(request: pytest.FixtureRequest, certs: CertKit) -> Config:
    key: tuple[ssl.TLSVersion, bool] = request.param
    if key not in _configs:
        _configs[key] = make_config(certs, *key)
    return _configs[key]


# ------------------------------------------------------------- one exchange


class PrematureEOF(AssertionError):
    """A receive returned b"" (a clean close) where the peer never closed."""


class UnexpectedData(AssertionError):
    """Bytes arrived where only the peer's close_notify was expected."""


@dataclass
class Side:
    """What one end did and saw."""

    name: str
    error: BaseException | None = None
    failed_at: float | None = None
    handshake_done: bool = False
    data: bytes = b""
    clean_eof: bool = False
    cancelled_waits: int = 0
    close_error: BaseException | None = None
    close_took: float = 0.0


@dataclass
class Run:
    """One exchange over one :class:`FaultPlan`."""

    plan: FaultPlan
    client: Side
    server: Side
    started: float
    ended: float
    closes: tuple[int, int]
    sides: tuple[Side, Side] = field(init=False)

    def __post_init__(self) -> None:
        self.sides = (self.client, self.server)

    def describe(self) -> str:
        lines = [
            f"{side.name}: error={side.error!r} at={side.failed_at} "
            f"handshake_done={side.handshake_done} data={side.data!r} "
            f"eof={side.clean_eof} waits={side.cancelled_waits} "
            f"close_error={side.close_error!r}"
            for side in self.sides
        ]
        return "\n".join([*lines, self.plan.describe()])


async def receive_patiently(
    stream: tv.TLSStream[Any], size: int, side: Side, plan: FaultPlan, patience: float
) -> bytes:
    """Read exactly ``size`` bytes (``0``: read the peer's close_notify).

    A read that waits longer than ``patience`` is cancelled, which must leave
    the stream usable; the held-back bytes are released and it reads on.
    """
    got = bytearray()
    while True:
        with trio.move_on_after(patience) as scope:
            chunk = await stream.receive_some()
        if scope.cancelled_caught:
            side.cancelled_waits += 1
            await plan.release()
            continue
        if size == 0:
            if chunk:
                raise UnexpectedData(f"{chunk!r} instead of close_notify")
            side.clean_eof = True
            return b""
        if not chunk:
            raise PrematureEOF(f"b'' after {len(got)} of {size} bytes")
        got += chunk
        if len(got) >= size:
            return bytes(got)


async def run_exchange(
    config: Config,
    plan: FaultPlan,
    transports: tuple[FaultyStream, FaultyStream] | None = None,
    *,
    patience: float = PATIENCE,
    bound: float = BOUND,
) -> Run:
    """Handshake, one request and response, close; both ends fully observed."""
    client_transport, server_transport = transports or plan.memory_pair()
    client = tv.TLSStream(client_transport, config.client, server_hostname="localhost")
    server = tv.TLSStream(server_transport, config.server, server_side=True)
    c, s = Side("client"), Side("server")

    async def client_script() -> None:
        await client.do_handshake()
        c.handshake_done = True
        await client.send_all(REQUEST)
        c.data = await receive_patiently(client, len(RESPONSE), c, plan, patience)

    async def server_script() -> None:
        await server.do_handshake()
        s.handshake_done = True
        s.data = await receive_patiently(server, len(REQUEST), s, plan, patience)
        await server.send_all(RESPONSE)
        await receive_patiently(server, 0, s, plan, patience)

    async def run_side(
        stream: tv.TLSStream[Any], script: Callable[[], Awaitable[None]], side: Side
    ) -> None:
        try:
            await script()
        except Exception as exc:
            side.error = exc
            side.failed_at = trio.current_time() - started
        began = trio.current_time()
        try:
            await stream.aclose()
        except Exception as exc:
            side.close_error = exc
        side.close_took = trio.current_time() - began

    started = trio.current_time()
    with trio.fail_after(bound):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_side, client, client_script, c)
            nursery.start_soon(run_side, server, server_script, s)
        await plan.aclose()
    return Run(
        plan,
        c,
        s,
        started,
        trio.current_time(),
        (client_transport.closes, server_transport.closes),
    )


# --------------------------------------------------------------- judging runs


def passed_through(run: Run, side: Side) -> bool:
    """Whether ``side.error`` is exactly an exception the transport raised."""
    error = side.error
    end: End = "client" if side is run.client else "server"
    return any(error is raised for raised in run.plan.raised[end])


def check_common(run: Run, prompt: float = PROMPT) -> None:
    why = run.describe()
    assert run.closes == (1, 1), f"transports closed {run.closes} times\n{why}"
    for side in run.sides:
        if side.error is None:
            expected = RESPONSE if side is run.client else REQUEST
            assert side.data == expected, f"{side.name} got wrong data\n{why}"
            if side is run.server:
                assert side.clean_eof, why
            continue
        error = side.error
        assert not isinstance(error, AssertionError), f"{side.name}: {error}\n{why}"
        assert isinstance(error, trio.BrokenResourceError), (
            f"{side.name}: untyped {error!r}\n{why}"
        )
        if not isinstance(error, tv.TLSError):
            assert passed_through(run, side), (
                f"{side.name}: {error!r} is neither a TLSError nor the "
                f"transport's own error\n{why}"
            )
        # Whatever went wrong, closing a failed stream takes no time.
        assert side.close_took < prompt, why


def assert_clean(run: Run) -> None:
    """Both ends did everything, with the exact bytes."""
    check_common(run)
    assert run.client.error is None, run.describe()
    assert run.server.error is None, run.describe()


def check_run(run: Run, kind: FaultKind, prompt: float = PROMPT) -> None:
    check_common(run, prompt)
    why = run.describe()
    fired = bool(run.plan.fired)
    if not fired:
        assert all(side.error is None for side in run.sides), why
    for side in run.sides:
        error = side.error
        if error is None:
            continue
        if kind == "close":
            assert isinstance(error, tv.TLSError) or passed_through(run, side), why
            assert not isinstance(error, (tv.HandshakeTimeout, trio.TooSlowError)), why
            assert side.failed_at is not None
            assert side.failed_at < prompt, f"EOF noticed late\n{why}"
        elif kind == "reset":
            assert passed_through(run, side), (
                f"{side.name}: a reset must reach the caller as the transport's "
                f"own BrokenResourceError, got {error!r}\n{why}"
            )
            assert side.failed_at is not None
            assert side.failed_at < prompt, f"reset noticed late\n{why}"
        else:
            assert isinstance(error, tv.TLSError) or passed_through(run, side), why
            assert side.failed_at is not None
            if isinstance(error, tv.HandshakeTimeout):
                assert not side.handshake_done, why
                assert (
                    HANDSHAKE_TIMEOUT - EPSILON
                    <= side.failed_at
                    < HANDSHAKE_TIMEOUT + 0.01
                ), f"handshake timeout fired at {side.failed_at}\n{why}"
            elif isinstance(error, tv.ClientAuthNotConfirmed):
                assert side is run.client, why
                assert side.failed_at < HANDSHAKE_TIMEOUT + CONFIRM_TIMEOUT + 0.01
            else:
                # The peer gave up on its own timeout and closed; its EOF may
                # have waited behind held bytes until the test released them.
                assert (
                    side.failed_at < PATIENCE + HANDSHAKE_TIMEOUT + CONFIRM_TIMEOUT
                ), why
    if kind == "split":
        # Bytes one at a time are still the same bytes.
        assert run.client.error is None, why
        assert run.server.error is None, why
    if kind in ("stall", "block", "delay"):
        if run.client.handshake_done and run.server.handshake_done:
            # Held or late bytes after the handshake only delay the exchange:
            # the cancelled waits left both streams usable.
            assert run.client.error is None, why
            assert run.server.error is None, why
            if fired and run.plan.happened("release"):
                waits = run.client.cancelled_waits + run.server.cancelled_waits
                assert waits >= 1, why
        elif fired:
            assert any(
                isinstance(side.error, tv.HandshakeTimeout | tv.ClientAuthNotConfirmed)
                for side in run.sides
            ), f"a stalled handshake must time out\n{why}"


# ---------------------------------------------------------------- offsets


def records(stream: bytes) -> Iterator[tuple[int, int]]:
    """(offset, body length) of every TLS record in ``stream``."""
    pos = 0
    while pos + 5 <= len(stream):
        length = int.from_bytes(stream[pos + 3 : pos + 5], "big")
        yield pos, length
        pos += 5 + length


def sampled_offsets(
    stream: bytes, rng: random.Random, *, extra: int, dense: bool = True
) -> list[int]:
    """Offsets around every record boundary, plus ``extra`` random ones."""
    offsets: set[int] = set()
    for pos, length in records(stream):
        end = pos + 5 + length
        offsets.update({pos, pos + 5})
        if dense:
            offsets.update({pos + 1, pos + 4, end - 1})
            if length > 2:
                offsets.add(rng.randrange(pos + 6, end - 1))
    offsets.update(rng.randrange(len(stream)) for _ in range(extra))
    return sorted(offset for offset in offsets if offset < len(stream))


async def reference(config: Config) -> FaultPlan:
    """A clean run, recording both byte streams."""
    plan = FaultPlan(record=True)
    assert_clean(await run_exchange(config, plan))
    return plan


def plan_for(direction: str, fault: Fault) -> FaultPlan:
    if direction == CLIENT_TO_SERVER:
        return FaultPlan(to_server=fault)
    return FaultPlan(to_client=fault)


# -------------------------------------------------------------------- tests


@pytest.mark.parametrize("kind", ["close", "reset", "stall", "block"])
async def test_fault_at_every_record_boundary(
    kind: FaultKind, config: Config, autojump_clock: trio.testing.MockClock
) -> None:
    ref = await reference(config)
    assert ref.recording is not None
    rng = random.Random(f"{config.label}-{kind}")
    runs = 0
    for direction, stream in ref.recording.items():
        offsets = sampled_offsets(bytes(stream), rng, extra=2, dense=kind != "block")
        for offset in offsets:
            run = await run_exchange(config, plan_for(direction, Fault(kind, offset)))
            check_run(run, kind)
            runs += 1
    assert runs > 20


@pytest.mark.parametrize("version", [TLS12, TLS13], ids=["TLSv1.2", "TLSv1.3"])
@pytest.mark.parametrize("kind", ["close", "stall"])
async def test_fault_at_every_byte_of_the_client_hello(
    kind: FaultKind,
    version: ssl.TLSVersion,
    certs: CertKit,
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = make_config(certs, version, False)
    ref = await reference(config)
    assert ref.recording is not None
    stream = bytes(ref.recording[CLIENT_TO_SERVER])
    hello_end = 5 + int.from_bytes(stream[3:5], "big")
    for offset in range(hello_end):
        run = await run_exchange(config, FaultPlan(to_server=Fault(kind, offset)))
        check_run(run, kind)
        assert run.plan.fired, run.describe()
        assert run.server.error is not None, run.describe()
        assert not run.server.handshake_done
        if kind == "close":
            # The server was still reading the ClientHello.
            assert isinstance(run.server.error, tv.TruncatedStream), run.describe()
            assert run.server.error.phase is tv.Phase.CLIENT_HELLO
            assert run.server.error.side == "server"


@pytest.mark.parametrize("kind", ["close", "reset", "stall"])
async def test_fault_inside_the_exchange_at_every_byte(
    kind: FaultKind, certs: CertKit, autojump_clock: trio.testing.MockClock
) -> None:
    """Every offset of the request, the response and the close_notify."""
    config = make_config(certs, TLS13, False)
    ref = await reference(config)
    assert ref.recording is not None
    for direction, stream in ref.recording.items():
        # The records after both handshakes: the client's request and
        # close_notify, the server's response (its two tickets before it are
        # covered by the record boundary test).
        found = list(records(bytes(stream)))
        after = found[-2:] if direction == CLIENT_TO_SERVER else found[-1:]
        for start, length in after:
            end = start + 5 + length
            for offset in range(start, end):
                run = await run_exchange(
                    config, plan_for(direction, Fault(kind, offset))
                )
                check_run(run, kind)
                assert run.client.handshake_done, run.describe()
                assert run.server.handshake_done, run.describe()
                if kind == "stall":
                    assert all(side.error is None for side in run.sides)
                elif direction == SERVER_TO_CLIENT:
                    # The response was cut: the client cannot have it all.
                    assert run.client.error is not None, run.describe()


@pytest.mark.parametrize("version", [TLS12, TLS13], ids=["TLSv1.2", "TLSv1.3"])
async def test_close_at_every_byte_of_both_directions(
    version: ssl.TLSVersion, certs: CertKit, autojump_clock: trio.testing.MockClock
) -> None:
    """EOF after every byte of the whole session, in both directions: the
    handshake, the request, the response and the close_notify records.  The
    end whose incoming bytes were cut either had all it needed (and did
    everything with the exact bytes) or raises TruncatedStream, at once; its
    peer ends done or with a TLSError.  (The bytes of the ClientHello are
    test_fault_at_every_byte_of_the_client_hello's, which asserts the same.)"""
    config = make_config(certs, version, False)
    ref = await reference(config)
    assert ref.recording is not None
    runs = skipped = 0
    for direction, stream in ref.recording.items():
        cut_end = "server" if direction == CLIENT_TO_SERVER else "client"
        start = 0
        if direction == CLIENT_TO_SERVER:
            start = skipped = 5 + int.from_bytes(stream[3:5], "big")
        for offset in range(start, len(stream)):
            run = await run_exchange(
                config, plan_for(direction, Fault("close", offset))
            )
            check_run(run, "close")
            assert run.plan.fired, run.describe()
            cut = run.server if cut_end == "server" else run.client
            assert cut.error is None or isinstance(cut.error, tv.TruncatedStream), (
                f"{cut_end}: EOF at byte {offset} of {direction} gave "
                f"{cut.error!r}\n{run.describe()}"
            )
            if cut_end == "server":
                # The server reads the client's close_notify last: every cut
                # in the client's bytes reaches it.
                assert isinstance(cut.error, tv.TruncatedStream), run.describe()
            runs += 1
    assert runs + skipped == sum(len(stream) for stream in ref.recording.values())
    assert runs > 1000


FaultChoice: TypeAlias = Literal["split", "delay-short", "delay-long"]
DELAYS: Final[dict[FaultChoice, float]] = {
    "delay-short": HANDSHAKE_TIMEOUT / 4,
    "delay-long": 3 * HANDSHAKE_TIMEOUT,
}
SPLIT_LENGTH: Final = 32


@pytest.mark.parametrize("choice", ["split", "delay-short", "delay-long"])
async def test_split_or_delay_at_every_record_boundary(
    choice: FaultChoice, config: Config, autojump_clock: trio.testing.MockClock
) -> None:
    """From a byte offset on, the bytes arrive one at a time (the next 32:
    past a record header and into the body; a whole session one byte at a
    time is test_one_byte_at_a_time_both_ways), or late.

    Single bytes and a delay shorter than the handshake timeout change
    nothing: both ends finish with the exact bytes.  A delay longer than the
    timeout ends a handshake it interrupts in HandshakeTimeout (or
    ClientAuthNotConfirmed) on time, and only slows an exchange after it."""
    ref = await reference(config)
    assert ref.recording is not None
    rng = random.Random(f"{config.label}-{choice}")
    runs = 0
    for direction, stream in ref.recording.items():
        for offset in sampled_offsets(bytes(stream), rng, extra=2, dense=False):
            fault = (
                Fault("split", offset, length=SPLIT_LENGTH)
                if choice == "split"
                else Fault("delay", offset, DELAYS[choice])
            )
            plan = plan_for(direction, fault)
            run = await run_exchange(config, plan)
            check_run(run, fault.kind)
            assert plan.fired, run.describe()
            if choice != "delay-long":
                assert_clean(run)
            if choice == "split":
                link = plan.links[direction]
                # Every byte of the split was a read of its own.
                split = min(SPLIT_LENGTH, link.received - offset)
                assert link.reads > split, run.describe()
            runs += 1
    assert runs > 20


async def receive_all(stream: trio.abc.ReceiveStream) -> bytes:
    got = bytearray()
    while chunk := await stream.receive_some():
        got += chunk
    return bytes(got)


async def test_split_and_delay_faults_do_what_they_say(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The test transport itself: bytes before the offset pass as usual;
    after it, one byte per read ("split") or nothing before the delay is
    over, EOF included ("delay"), and a read cancelled while it waits for
    late bytes loses none of them."""
    data = bytes(range(100))
    for length, rest in ((None, 100), (20, 60)):
        plan = FaultPlan(to_server=Fault("split", 40, length=length))
        client, server = plan.memory_pair()
        await client.send_all(data)
        await client.send_eof()
        assert await server.receive_some() == data[:40]
        for i in range(40, rest):
            assert await server.receive_some() == data[i : i + 1]
        assert await receive_all(server) == data[rest:]

    plan = FaultPlan(to_server=Fault("delay", 40, 5.0))
    client, server = plan.memory_pair()
    started = trio.current_time()
    await client.send_all(data)
    await client.send_eof()
    assert trio.current_time() - started < EPSILON, "the sender noticed the delay"
    assert await server.receive_some() == data[:40]
    with trio.move_on_after(1.0) as scope:
        await server.receive_some()
    assert scope.cancelled_caught
    got = await server.receive_some()
    assert trio.current_time() - started == pytest.approx(5.0)
    assert got == data[40:]
    assert await server.receive_some() == b""
    # Released early, the rest comes at once.
    plan = FaultPlan(to_client=Fault("delay", 0, 5.0))
    client, server = plan.memory_pair()
    await server.send_all(b"late")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(plan.release)
        with trio.fail_after(EPSILON + 0.001):
            assert await client.receive_some() == b"late"


async def test_eof_is_typed_on_both_ends(
    config: Config, autojump_clock: trio.testing.MockClock
) -> None:
    """EOF at the first byte of each server record: the client sees
    TruncatedStream (naming where it was), the server a typed error."""
    ref = await reference(config)
    assert ref.recording is not None
    stream = bytes(ref.recording[SERVER_TO_CLIENT])
    for pos, _ in records(stream):
        run = await run_exchange(config, FaultPlan(to_client=Fault("close", pos)))
        check_run(run, "close")
        error = run.client.error
        assert isinstance(error, tv.TruncatedStream), run.describe()
        assert error.side == "client"
        if not run.client.handshake_done and error.surfaced_in == "handshake":
            assert error.phase is not tv.Phase.APPLICATION_DATA
        elif error.surfaced_in == "confirm":
            # The handshake itself was over; the verdict never came.
            assert config.mtls
            assert config.version is TLS13
            assert error.phase is tv.Phase.APPLICATION_DATA
        else:
            assert error.surfaced_in == "receive"
            assert error.phase is tv.Phase.APPLICATION_DATA
        assert isinstance(error.__cause__, ssl.SSLError)


@pytest.mark.parametrize("version", [TLS12, TLS13], ids=["TLSv1.2", "TLSv1.3"])
@pytest.mark.parametrize("mtls", [False, True], ids=["anonymous", "mtls"])
async def test_one_byte_at_a_time_both_ways(
    version: ssl.TLSVersion, mtls: bool, certs: CertKit
) -> None:
    config = make_config(
        certs, version, mtls, handshake_timeout=10.0, confirm_timeout=10.0
    )
    plan = FaultPlan(chunk=1, max_read=1)
    run = await run_exchange(config, plan)
    assert_clean(run)
    for link in plan.links.values():
        assert link.delivered > 300
        # Every byte travelled alone: one read per byte, plus the final EOF.
        assert link.received in (link.reads, link.reads - 1), plan.describe()


async def test_slow_transport_within_the_timeout_completes(
    config: Config, autojump_clock: trio.testing.MockClock
) -> None:
    run = await run_exchange(config, FaultPlan(delay=0.01, chunk=64))
    assert_clean(run)
    assert run.ended - run.started > 0.05


async def test_transport_slower_than_the_timeout_times_out(
    config: Config, autojump_clock: trio.testing.MockClock
) -> None:
    run = await run_exchange(config, FaultPlan(delay=HANDSHAKE_TIMEOUT / 2))
    check_common(run)
    assert any(isinstance(side.error, tv.HandshakeTimeout) for side in run.sides), (
        run.describe()
    )
    for side in run.sides:
        assert isinstance(side.error, tv.TLSError) or passed_through(run, side), (
            run.describe()
        )
        assert side.failed_at is not None
        assert side.failed_at <= HANDSHAKE_TIMEOUT + CONFIRM_TIMEOUT + 0.01


async def test_confirmation_wait_is_bounded_by_its_own_timeout(
    certs: CertKit, autojump_clock: trio.testing.MockClock
) -> None:
    """TLS 1.3 with a client certificate: the server's verdict (its tickets)
    never arrives.  The client's do_handshake gives up after the handshake
    and the confirmation timeouts together, with ClientAuthNotConfirmed."""
    config = make_config(certs, TLS13, True, confirm_timeout=1.5)
    ref = await reference(config)
    assert ref.recording is not None
    stream = bytes(ref.recording[SERVER_TO_CLIENT])
    # Server records: ServerHello, CCS, EncryptedExtensions, CertificateRequest,
    # Certificate, CertificateVerify, Finished, then the two tickets.
    ticket_at = list(records(stream))[7][0]
    run = await run_exchange(
        config, FaultPlan(to_client=Fault("stall", ticket_at)), patience=5.0
    )
    check_common(run)
    error = run.client.error
    assert isinstance(error, tv.ClientAuthNotConfirmed), run.describe()
    assert error.surfaced_in == "confirm"
    assert run.client.failed_at is not None
    assert 1.5 - EPSILON <= run.client.failed_at <= 1.5 + HANDSHAKE_TIMEOUT
    assert run.server.handshake_done
    assert isinstance(run.server.error, tv.TruncatedStream), run.describe()


async def test_handshake_timeout_sending_the_last_flight_is_not_application_data(
    certs: CertKit, autojump_clock: trio.testing.MockClock
) -> None:
    """TLS 1.3: the client's Finished is stuck in a blocked transport.  Its
    do_handshake times out with a HandshakeTimeout surfaced in the
    handshake; the handshake is not over (the server never got the
    Finished), so the phase is FINISHED, not APPLICATION_DATA."""
    config = make_config(certs, TLS13, False)
    ref = await reference(config)
    assert ref.recording is not None
    # Client records: ClientHello, ChangeCipherSpec, Finished, ...
    finished_at = list(records(bytes(ref.recording[CLIENT_TO_SERVER])))[2][0]
    run = await run_exchange(
        config, FaultPlan(to_server=Fault("block", finished_at)), patience=5.0
    )
    check_common(run)
    error = run.client.error
    assert isinstance(error, tv.HandshakeTimeout), run.describe()
    assert error.surfaced_in == "handshake"
    assert isinstance(run.server.error, tv.HandshakeTimeout), run.describe()
    assert run.server.error.phase is tv.Phase.FINISHED
    assert error.phase is not tv.Phase.APPLICATION_DATA, (
        "a handshake that timed out while its Finished could not be sent is "
        f"reported as phase={error.phase}; expected Phase.FINISHED"
    )


# ----------------------------------------------------------- real sockets


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def socket_run(config: Config, plan: FaultPlan, patience: float) -> Run:
    client_sock, server_sock = await socket_pair()
    return await run_exchange(
        config, plan, plan.wrap(client_sock, server_sock), patience=patience
    )


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
async def test_faults_on_real_sockets_leak_no_descriptors(certs: CertKit) -> None:
    config = make_config(certs, TLS13, True)
    ref = await socket_run(config, FaultPlan(record=True), PATIENCE)
    assert_clean(ref)
    assert ref.plan.recording is not None
    rng = random.Random(7)
    before = open_fds()
    runs = 0
    for direction, stream in ref.plan.recording.items():
        starts = [pos for pos, _ in records(bytes(stream))]
        for kind in ("close", "reset"):
            for offset in sorted(rng.sample(starts, min(4, len(starts)))):
                run = await socket_run(
                    config, plan_for(direction, Fault(kind, offset)), 0.3
                )
                # Real time: a loose bound; that no handshake timed out is
                # what shows the EOF or reset was noticed at once.
                check_run(run, kind, prompt=SOCKET_PROMPT)
                runs += 1
    # One stall inside the handshake (a real 0.2 s timeout) and one after it.
    for offset in (0, len(ref.plan.recording[CLIENT_TO_SERVER]) - 24):
        run = await socket_run(config, FaultPlan(to_server=Fault("stall", offset)), 0.3)
        check_common(run, SOCKET_PROMPT)
        for side in run.sides:
            assert isinstance(side.error, tv.TLSError | None) or passed_through(
                run, side
            ), run.describe()
        runs += 1
    assert runs >= 10
    assert open_fds() == before


# ------------------------------------------------------------------ memory


async def failed_pair(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    """Both ends of a handshake that fails, over plain memory streams."""
    client_end, server_end = trio.testing.memory_stream_pair()
    client = tv.TLSStream(client_end, client_policy, server_hostname="localhost")
    server = tv.TLSStream(server_end, server_policy, server_side=True)
    failures = 0

    async def one(stream: tv.TLSStream[Any]) -> None:
        nonlocal failures
        try:
            await stream.do_handshake()
        except tv.TLSError:
            failures += 1
        finally:
            await stream.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, client)
        nursery.start_soon(one, server)
    assert failures == 2


async def failed_alone(
    stream: tv.TLSStream[Any], peer: trio.abc.Stream, say: bytes
) -> None:
    """One end of a handshake that fails: the peer reads, says ``say``, hangs up."""

    async def hang_up() -> None:
        await peer.receive_some()
        await peer.send_all(say)
        await peer.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hang_up)
        with pytest.raises(tv.TLSError):
            await stream.do_handshake()
        await stream.aclose()


async def test_failed_handshakes_do_not_grow_memory(
    certs: CertKit, autojump_clock: trio.testing.MockClock
) -> None:
    config = make_config(certs, TLS13, False)
    untrusting = tv.ClientPolicy(
        trust=certs.other_ca_pem, handshake_timeout=HANDSHAKE_TIMEOUT
    )
    old_server = make_config(certs, TLS12, False).server
    ref = await reference(config)
    assert ref.recording is not None
    hello = bytes(ref.recording[CLIENT_TO_SERVER])[:100]

    async def client_meets_http() -> None:
        ours, theirs = trio.testing.memory_stream_pair()
        client = tv.TLSStream(ours, config.client, server_hostname="localhost")
        await failed_alone(client, theirs, b"HTTP/1.1 400 Bad Request\r\n\r\n")

    async def server_gets_half_a_hello() -> None:
        ours, theirs = trio.testing.memory_stream_pair()
        server = tv.TLSStream(ours, config.server, server_side=True)
        await theirs.send_all(hello)
        await failed_alone(server, theirs, b"")

    # Ways to fail: the server's certificate refused, no shared version
    # (both with alerts both ways), a client answered in plaintext, a server
    # whose client hangs up in the middle of its ClientHello (the last two
    # are cheap, so they run twice as often).
    variants: list[Callable[[], Awaitable[None]]] = [
        partial(failed_pair, untrusting, config.server),
        client_meets_http,
        server_gets_half_a_hello,
        partial(failed_pair, config.client, old_server),
        client_meets_http,
        server_gets_half_a_hello,
    ]

    async def rounds(count: int) -> None:
        with trio.fail_after(BOUND * 10):
            for i in range(count):
                await variants[i % len(variants)]()

    await rounds(40)
    gc.collect()
    tracemalloc.start()
    try:
        await rounds(20)
        gc.collect()
        start, _ = tracemalloc.get_traced_memory()
        await rounds(1000)
        gc.collect()
        end, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert end - start < 1 << 20, f"grew {end - start} bytes over 1000 failures"


async def test_faulted_exchanges_do_not_grow_memory_or_leave_tasks(
    certs: CertKit, autojump_clock: trio.testing.MockClock
) -> None:
    """1000 exchanges, each with one fault of every kind in turn (close,
    reset, stall, block, split, delay) at offsets spread over both
    directions of a TLS 1.3 session: each run ends as check_run demands, no
    task outlives them, and the interpreter holds no more memory blocks
    afterwards than one per run at the very most.

    Blocks rather than tracemalloc, which more than doubles the cost of a
    run: a run whose objects were kept alive holds some 300 blocks, so even
    one leaked run in ten would be 30 times over the bound."""
    config = make_config(certs, TLS13, False)
    ref = await reference(config)
    assert ref.recording is not None
    faults: list[tuple[str, Fault]] = []
    rng = random.Random("memory")
    kinds: list[FaultKind] = ["close", "reset", "stall", "block", "split", "delay"]
    for direction, stream in ref.recording.items():
        for offset in rng.sample(range(len(stream)), 40):
            for kind in kinds:
                if kind == "split":
                    fault = Fault(kind, offset, length=SPLIT_LENGTH)
                elif kind == "delay":
                    fault = Fault(kind, offset, DELAYS["delay-long"])
                else:
                    fault = Fault(kind, offset)
                faults.append((direction, fault))
    rng.shuffle(faults)

    async def rounds(start: int, count: int) -> None:
        for i in range(start, start + count):
            direction, fault = faults[i % len(faults)]
            run = await run_exchange(config, plan_for(direction, fault))
            check_run(run, fault.kind)

    tasks = trio.lowlevel.current_statistics().tasks_living
    await rounds(0, 50)
    gc.collect()
    before = sys.getallocatedblocks()
    await rounds(50, 1000)
    gc.collect()
    grown = sys.getallocatedblocks() - before
    assert grown < 1000, f"{grown} more memory blocks after 1000 faulted runs"
    assert trio.lowlevel.current_statistics().tasks_living == tasks
