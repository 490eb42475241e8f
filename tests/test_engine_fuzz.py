"""The engine fed hostile bytes: progress or a typed TLSError, nothing else.

A real client :class:`TLSEngine` and a real server engine run a whole session
in memory: handshake (TLS 1.2 or 1.3, with or without a client certificate),
application data both ways, close_notify both ways.  Every batch of bytes one
engine hands the other is a *delivery*; hypothesis picks one delivery to one
side, at any point of the session (before the ClientHello or ServerHello,
mid-handshake, after it, after close_notify, or after the session is over,
as a replay), and replaces it with a mutation of itself: bit flips,
truncation, duplication, records dropped, repeated, reordered or retyped,
arbitrary records or bytes, with or without an end of file after it.  Then
both engines run on, as the stream would drive them.

The engine is synchronous, so "never hangs" is a bounded loop: the session
must settle within a fixed number of rounds, and an engine told of the end
of its input must not wait for more.  Memory is bounded too: what an engine
sends is proportionate to what it was fed, and what it keeps in Python does
not grow with a flood.  Honest bytes cut differently (several records in one
read, half a record) must give the same session.

Besides the random choice, a deterministic grid mutates every record of
every delivery to either side, so that every state of both engines is hit
by every kind of mutation.  The real first flights of ``tests/hellos`` seed
the properties too: they arrive at either engine at any point of a session,
and, as captured or cut into many records, at fresh servers, which must
answer with a ServerHello or a typed refusal.  Last, certificates that
OpenSSL reads but ``cryptography`` refuses (found by the fuzz targets in
fuzz/) must still end in a typed error.
"""

from __future__ import annotations

import dataclasses
import itertools
import ssl
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, get_args

import pytest
from certs import CertKit
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trio_verify as tv
from trio_verify._engine import TLSEngine
from trio_verify._hello import ClientHelloReader

TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
Side = Literal["client", "server"]

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Rounds (each engine runs once, then deliveries move) a session may take.
# A clean session settles in under 10; a hostile one must settle too.
MAX_ROUNDS = 40
# What an engine sends in a session must stay under this, plus four bytes for
# every byte it was fed: a handshake flight, alerts, tickets and our data.
SEND_BOUND = 64 * 1024

HELLOS = Path(__file__).parent / "hellos"
CORPUS: dict[str, bytes] = {
    path.stem: path.read_bytes() for path in sorted(HELLOS.glob("*.bin"))
}
"""Real first flights (see tests/hellos/capture.py)."""

CLIENT_DATA = b"client says hello\n"
SERVER_DATA = b"server says hello\n"


# ------------------------------------------------------------ configurations


@dataclasses.dataclass(frozen=True)
class Config:
    """Two contexts that complete a handshake with each other."""

    name: str
    client: ssl.SSLContext
    server: ssl.SSLContext
    spki_pins: frozenset[bytes]


@pytest.fixture(scope="module")
def configs(certs: CertKit) -> dict[str, Config]:
    server_identity = certs.server("valid")
    identity = tv.Identity.from_pem(
        server_identity.cert_chain_pem, server_identity.key_pem
    )
    client_identity = certs.client("valid")
    found: dict[str, Config] = {}
    for version in (TLS12, TLS13):
        for mutual in (False, True):
            server = tv.ServerPolicy(
                identity=identity,
                client_auth=tv.ClientAuth.REQUIRED if mutual else tv.ClientAuth.NONE,
                client_trust=certs.ca_pem if mutual else None,
                authorize=(lambda peer: peer.certificate is not None)
                if mutual
                else None,
            )
            client = tv.ClientPolicy(
                trust=certs.ca_pem,
                identity=tv.Identity.from_pem(
                    client_identity.cert_chain_pem, client_identity.key_pem
                )
                if mutual
                else None,
                spki_pins={server_identity.info.spki_pin},
                minimum_version=version,
                maximum_version=version,
            )
            name = f"{'TLSv1.3' if version is TLS13 else 'TLSv1.2'}" + (
                "+mtls" if mutual else ""
            )
            found[name] = Config(name, client.context, server.context, client.spki_pins)
    return found


CONFIG_NAMES = ["TLSv1.2", "TLSv1.2+mtls", "TLSv1.3", "TLSv1.3+mtls"]


# ------------------------------------------------------------------ session


@dataclasses.dataclass
class End:
    """One engine and what it did in the session."""

    engine: TLSEngine
    sends: bytes
    eager_close: bool = False
    """Send, close at once and read no more: a peer whose last words and
    close_notify leave in one delivery.  (OpenSSL discards what arrives
    after our own close_notify, as the stream's ``aclose`` expects.)"""
    error: tv.TLSError | None = None
    sent_data: bool = False
    received: bytearray = dataclasses.field(default_factory=bytearray)
    closing: bool = False
    peer_closed: bool = False
    eof: bool = False
    fed: int = 0
    sent: int = 0

    def fail(self, error: tv.TLSError) -> None:
        engine = self.engine
        assert error.side == engine.side
        assert isinstance(error.phase, tv.Phase)
        assert str(error)
        assert engine.error is error
        assert error.alert_sent is None or isinstance(error.alert_sent, tv.Alert)
        if self.error is None:
            self.error = error

    def call(self, method: Callable[[], object]) -> object:
        """Run one engine method: it returns, or raises a TLSError."""
        try:
            return method()
        except tv.TLSError as error:
            self.fail(error)
            return None

    def step(self) -> None:
        """What the stream would do next with this engine."""
        engine = self.engine
        if self.eager_close and self.closing:
            return
        if self.error is not None:
            # A failed engine is only ever closed; that must stay quiet too.
            self.call(engine.start_close)
            return
        if not engine.handshake_complete:
            self.call(engine.do_handshake)
            if not engine.handshake_complete:
                return
        if not self.sent_data:
            self.sent_data = True
            self.call(lambda: engine.write(self.sends))
            if self.eager_close and self.error is None:
                self.closing = True
                self.call(engine.start_close)
            # Otherwise the close goes in a later delivery than the data.
            return
        while True:
            got = self.call(lambda: engine.read(65536))
            if self.error is not None or got is None:
                break
            assert isinstance(got, bytes)
            if got == b"":
                if not self.peer_closed:
                    self.peer_closed = True
                    self.call(engine.unwrap)
                break
            self.received += got
        if (
            engine.server_side is False
            and self.received
            and not self.closing
            and self.error is None
        ):
            self.closing = True
            self.call(engine.start_close)

    def take(self) -> bytes:
        data = self.engine.data_to_send()
        assert isinstance(data, bytes)
        self.sent += len(data)
        return data

    def deliver(self, data: bytes, *, eof: bool = False) -> None:
        if self.eof:
            return
        if data:
            self.fed += len(data)
            self.engine.receive_data(data)
        if eof:
            self.eof = True
            self.engine.receive_eof()


State = Literal[
    "before any input",
    "mid-handshake",
    "after the handshake",
    "at the close_notify",
    "after the close_notify",
]
STATES: tuple[State, ...] = get_args(State)


def state_of(receiver: End, sender: End) -> State:
    """Where ``receiver`` is when ``sender``'s next delivery reaches it."""
    engine = receiver.engine
    if not engine.received_anything:
        return "before any input"
    if not engine.handshake_complete:
        return "mid-handshake"
    if receiver.peer_closed or receiver.closing:
        return "after the close_notify"
    if sender.closing:
        return "at the close_notify"
    return "after the handshake"


Mutation = Callable[[bytes], bytes]


@dataclasses.dataclass
class Attack:
    """Which delivery to whom gets replaced, by what."""

    target: Side
    delivery: int
    mutate: Mutation
    chunks: list[int]
    eof: bool


def run_session(
    config: Config,
    attack: Attack | None = None,
    network: list[int] | None = None,
    *,
    eager_close: bool = False,
    trace: dict[Side, list[State]] | None = None,
    sent: dict[Side, list[bytes]] | None = None,
) -> dict[Side, End]:
    """Run a session, with ``attack`` replacing one delivery.

    ``trace`` collects, for each side, the state it was in at each delivery
    it was sent (see :func:`state_of`), and ``sent`` the deliveries.

    ``network`` makes the wire coalesce and split what the engines send: each
    round a direction delivers the next size in the list (cycled) of what is
    queued, 0 holding everything back; without it each engine's batch is one
    delivery.  Whatever is still queued when the engines fall silent goes in
    one delivery.
    """
    client = End(
        TLSEngine(
            config.client,
            server_side=False,
            server_hostname="localhost",
            spki_pins=config.spki_pins,
        ),
        CLIENT_DATA,
        eager_close=eager_close,
    )
    server = End(TLSEngine(config.server, server_side=True), SERVER_DATA)
    ends: dict[Side, End] = {"client": client, "server": server}
    queued: dict[Side, bytes] = {"client": b"", "server": b""}
    history: list[bytes] = []  # what the target was sent, for replays
    counted = 0
    done = attack is None
    sizes = iter(itertools.cycle(network)) if network else None

    def hand_over(sender: End, receiver_side: Side) -> bool:
        nonlocal counted, done
        data = sender.take()
        if data and trace is not None:
            trace[receiver_side].append(state_of(ends[receiver_side], sender))
        if data and sent is not None:
            sent[receiver_side].append(data)
        if data and attack is not None and receiver_side == attack.target:
            history.append(data)
            if not done and counted == attack.delivery:
                done = True
                feed(ends[receiver_side], attack.mutate(data), attack)
                return True
            counted += 1
        queued[receiver_side] += data
        return release(receiver_side, everything=sizes is None)

    def release(side: Side, *, everything: bool) -> bool:
        data = queued[side]
        if not data:
            return False
        size = len(data) if everything or sizes is None else next(sizes)
        if size == 0:
            return False
        queued[side] = data[size:]
        ends[side].deliver(data[:size])
        return True

    # One round per chunk the wire lets through: a few hundred for a session
    # cut into one-byte pieces.
    smallest = min((size for size in network or () if size), default=0)
    rounds = MAX_ROUNDS + (16384 // smallest if smallest else 0)
    for _ in range(rounds):
        client.step()
        server.step()
        moved = hand_over(client, "server") | hand_over(server, "client")
        if moved:
            continue
        if release("client", everything=True) | release("server", everything=True):
            continue
        if done or not history:
            break
        # The session is over (or stuck) before the chosen delivery: the
        # target gets a mutated replay of something it was sent before.
        assert attack is not None
        done = True
        target = ends[attack.target]
        feed(target, attack.mutate(history[attack.delivery % len(history)]), attack)
    else:
        pytest.fail(f"the session did not settle within {rounds} rounds")
    for end in ends.values():
        assert end.sent <= SEND_BOUND + 4 * end.fed, "unbounded output"
    if attack is not None and attack.eof:
        # An engine told of the end of its input cannot wait for more.
        target = ends[attack.target]
        assert target.error is not None or target.peer_closed, (
            "the engine stalled after the end of its input"
        )
    return ends


def feed(end: End, data: bytes, attack: Attack) -> None:
    """Deliver ``data`` in the attack's chunks, then maybe an end of file."""
    pos = 0
    for size in attack.chunks:
        if pos >= len(data):
            break
        end.deliver(data[pos : pos + size])
        pos += size
    end.deliver(data[pos:], eof=attack.eof)


# ---------------------------------------------------------------- mutations


def records(data: bytes) -> list[bytes]:
    """Split ``data`` into TLS records (the last one may be partial)."""
    out = []
    pos = 0
    while pos < len(data):
        end = pos + 5 + int.from_bytes(data[pos + 3 : pos + 5], "big")
        out.append(data[pos:end])
        pos = end
    return out


def record(content_type: int, version: int, body: bytes, length: int | None) -> bytes:
    size = len(body) if length is None else length
    return (
        bytes((content_type,))
        + version.to_bytes(2, "big")
        + size.to_bytes(2, "big")
        + body
    )


CONTENT_TYPES = st.sampled_from([20, 21, 22, 23, 24, 0, 255])
VERSIONS = st.sampled_from([0x0303, 0x0301, 0x0304, 0x0300, 0x0203, 0xFEFD])


def arbitrary_record() -> st.SearchStrategy[bytes]:
    return st.builds(
        record,
        CONTENT_TYPES,
        VERSIONS,
        st.binary(max_size=300),
        st.one_of(st.none(), st.integers(0, 0xFFFF)),
    )


@st.composite
def mutations(draw: st.DrawFn) -> Mutation:
    kind = draw(
        st.sampled_from(
            [
                "flip",
                "truncate",
                "duplicate",
                "drop-record",
                "repeat-record",
                "swap-records",
                "retype-record",
                "relength-record",
                "insert-record",
                "replace",
                "append",
                "empty",
            ]
        )
    )
    if kind == "flip":
        flips = draw(st.lists(st.tuples(st.integers(0), st.integers(0, 7)), min_size=1))

        def flip(data: bytes) -> bytes:
            out = bytearray(data)
            for pos, bit in flips:
                if out:
                    out[pos % len(out)] ^= 1 << bit
            return bytes(out)

        return flip
    if kind == "truncate":
        keep = draw(st.integers(0, 4000))
        return lambda data: data[: keep % (len(data) + 1)]
    if kind == "duplicate":
        return lambda data: data + data
    if kind == "empty":
        return lambda data: b""
    if kind == "replace":
        junk = draw(st.one_of(st.binary(max_size=2000), arbitrary_record()))
        return lambda data: junk
    if kind == "append":
        junk = draw(st.one_of(st.binary(max_size=200), arbitrary_record()))
        return lambda data: data + junk
    if kind == "insert-record":
        extra = draw(arbitrary_record())
        where = draw(st.integers(0))

        def insert(data: bytes) -> bytes:
            parts = records(data)
            parts.insert(where % (len(parts) + 1), extra)
            return b"".join(parts)

        return insert
    index = draw(st.integers(0))
    other = draw(st.integers(0))
    new_type = draw(CONTENT_TYPES)
    new_length = draw(st.integers(0, 0xFFFF))

    def per_record(data: bytes) -> bytes:
        parts = records(data)
        if not parts:
            return data
        i = index % len(parts)
        if kind == "drop-record":
            del parts[i]
        elif kind == "repeat-record":
            parts.insert(i, parts[i])
        elif kind == "swap-records":
            j = other % len(parts)
            parts[i], parts[j] = parts[j], parts[i]
        elif kind == "retype-record":
            parts[i] = bytes((new_type,)) + parts[i][1:]
        else:  # relength-record
            parts[i] = parts[i][:3] + new_length.to_bytes(2, "big") + parts[i][5:]
        return b"".join(parts)

    return per_record


@st.composite
def attacks(draw: st.DrawFn) -> Attack:
    return Attack(
        target=draw(st.sampled_from(["client", "server"])),
        # Mostly a delivery of the live session; sometimes one past its end,
        # which replays an earlier one after the close.
        delivery=draw(st.one_of(st.integers(0, 4), st.integers(5, 12))),
        mutate=draw(mutations()),
        chunks=draw(st.lists(st.integers(1, 600), max_size=4)),
        eof=draw(st.booleans()),
    )


# -------------------------------------------------------------------- tests


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_clean_session_completes(configs: dict[str, Config], name: str) -> None:
    # The harness itself: without an attack both ends finish, having
    # exchanged data and close_notify.
    assert_clean(run_session(configs[name]))


def assert_clean(ends: dict[Side, End]) -> None:
    for side, end in ends.items():
        assert end.error is None, f"{side}: {end.error!r}"
        assert end.engine.handshake_complete, side
        assert end.peer_closed, f"{side} never saw the close_notify its peer sent"
    assert bytes(ends["server"].received) == CLIENT_DATA
    assert bytes(ends["client"].received) == SERVER_DATA


@FUZZ
@given(
    name=st.sampled_from(CONFIG_NAMES),
    network=st.lists(
        st.one_of(st.just(0), st.integers(1, 64), st.integers(64, 3000)),
        min_size=1,
        max_size=8,
    ),
    eager_close=st.booleans(),
)
def test_records_coalesced_in_one_delivery_lose_nothing(
    configs: dict[str, Config], name: str, network: list[int], eager_close: bool
) -> None:
    # TCP may hand over several records in one read, or half of one: how
    # the bytes are cut must not change what the session delivers.
    ends = run_session(configs[name], network=network, eager_close=eager_close)
    if not eager_close:
        assert_clean(ends)
        return
    client, server = ends["client"], ends["server"]
    assert client.error is None, repr(client.error)
    assert server.error is None, repr(server.error)
    assert bytes(server.received) == CLIENT_DATA
    assert server.peer_closed, "the server never saw the client's close_notify"


def _handshaken(config: Config) -> tuple[TLSEngine, TLSEngine]:
    client = TLSEngine(config.client, server_side=False, server_hostname="localhost")
    server = TLSEngine(config.server, server_side=True)
    for _ in range(10):
        client.do_handshake()
        server.do_handshake()
        server.receive_data(client.data_to_send())
        client.receive_data(server.data_to_send())
    assert client.handshake_complete
    assert server.handshake_complete
    assert client.read(65536) is None  # takes in TLS 1.3 tickets, if any
    return client, server


@pytest.mark.parametrize("name", ["TLSv1.2", "TLSv1.3"])
def test_close_notify_right_after_data_is_not_lost(
    configs: dict[str, Config], name: str
) -> None:
    # What a peer that sends its last words and then unwraps puts on the wire;
    # one transport read may well return both records.
    client, server = _handshaken(configs[name])
    client.write(b"last words")
    client.start_close()
    server.receive_data(client.data_to_send())
    assert server.read(65536) == b"last words"
    assert server.read(65536) == b"", "the close_notify was swallowed"


@pytest.mark.parametrize("name", ["TLSv1.2", "TLSv1.3"])
def test_bad_record_right_after_data_is_not_lost(
    configs: dict[str, Config], name: str
) -> None:
    client, server = _handshaken(configs[name])
    client.write(b"good")
    good = client.data_to_send()
    client.write(b"bad!")
    bad = bytearray(client.data_to_send())
    bad[-1] ^= 1  # the record's authentication tag no longer matches
    server.receive_data(good + bytes(bad))
    assert server.read(65536) == b"good"
    with pytest.raises(tv.TLSError):
        server.read(65536)


@FUZZ
@given(name=st.sampled_from(CONFIG_NAMES), attack=attacks())
def test_hostile_delivery_gives_progress_or_a_typed_error(
    configs: dict[str, Config], name: str, attack: Attack
) -> None:
    run_session(configs[name], attack)


@FUZZ
@given(
    name=st.sampled_from(CONFIG_NAMES),
    side=st.sampled_from(["client", "server"]),
    chunks=st.lists(
        st.one_of(st.binary(min_size=1, max_size=300), arbitrary_record()),
        min_size=1,
        max_size=12,
    ),
    eof=st.booleans(),
)
def test_arbitrary_input_before_any_hello_gives_a_typed_error(
    configs: dict[str, Config], name: str, side: Side, chunks: list[bytes], eof: bool
) -> None:
    # The first bytes an engine ever sees, in any chunks, with no real peer.
    config = configs[name]
    engine = (
        TLSEngine(config.server, server_side=True)
        if side == "server"
        else TLSEngine(config.client, server_side=False, server_hostname="localhost")
    )
    end = End(engine, b"")
    end.call(engine.do_handshake)
    end.take()
    for chunk in chunks:
        end.deliver(chunk)
        end.call(engine.do_handshake)
        end.take()
        if end.error is not None:
            break
    if eof and end.error is None:
        end.deliver(b"", eof=True)
        end.call(engine.do_handshake)
    assert not engine.handshake_complete
    if end.error is not None:
        # What the stream does next with a failed engine: close it.
        end.call(engine.start_close)
        end.take()


@pytest.mark.parametrize("side", ["client", "server"])
def test_flooding_a_handshake_keeps_python_memory_bounded(
    configs: dict[str, Config], side: Side
) -> None:
    # 4 MiB of well-framed handshake records continuing one 16 MiB message,
    # fed in 64 KiB pieces before the engine is asked to do anything: what the
    # engine keeps in Python (its view of the wire) must not grow with it.
    # The bytes themselves wait in the memory BIO, as the caller fed them.
    config = configs["TLSv1.3"]
    message_type = 1 if side == "server" else 2
    first = record(
        22, 0x0303, bytes((message_type,)) + b"\xff\xff\xff" + bytes(16380), None
    )
    more = record(22, 0x0303, bytes(16384), None)
    chunk = first + more * 3
    engine = (
        TLSEngine(config.server, server_side=True)
        if side == "server"
        else TLSEngine(config.client, server_side=False, server_hostname="localhost")
    )
    end = End(engine, b"")
    end.call(engine.do_handshake)
    end.take()
    tracemalloc.start()
    try:
        end.deliver(chunk)
        for _ in range(63):
            end.deliver(more * 4)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert end.fed > 4_000_000
    assert peak < 1024 * 1024, f"{peak} bytes of Python memory for {end.fed} fed"
    end.call(engine.do_handshake)
    assert end.error is not None


# ------------------------------------- every record of every delivery, both ways


RecordMutation = Literal[
    "flip-header",
    "flip-body",
    "truncate",
    "truncate-eof",
    "duplicate",
    "insert-arbitrary",
]
RECORD_MUTATIONS: tuple[RecordMutation, ...] = get_args(RecordMutation)
ARBITRARY_RECORD = record(22, 0x0303, b"\x01\x00\x00\x28" + bytes(range(40)), None)


def at_record(kind: RecordMutation, index: int) -> Mutation:
    """A mutation of the ``index``-th record of a delivery (its last record
    when there are fewer); whatever follows that record stays as it was."""

    def mutate(data: bytes) -> bytes:
        parts = records(data)
        if not parts:
            return data
        i = min(index, len(parts) - 1)
        part = parts[i]
        if kind == "flip-header":
            # The low bit of the length: the record no longer frames right.
            parts[i] = part[:4] + bytes((part[4] ^ 1,)) + part[5:]
        elif kind == "flip-body":
            middle = 5 + (len(part) - 5) // 2
            if middle < len(part):
                parts[i] = (
                    part[:middle] + bytes((part[middle] ^ 0x10,)) + part[middle + 1 :]
                )
        elif kind in ("truncate", "truncate-eof"):
            del parts[i + 1 :]
            parts[i] = part[: 5 + (len(part) - 5) // 2]
        elif kind == "duplicate":
            parts.insert(i, part)
        else:
            parts.insert(i, ARBITRARY_RECORD)
        return b"".join(parts)

    return mutate


def recorded(mutation: Mutation, applied: list[bytes]) -> Mutation:
    """``mutation``, noting in ``applied`` what it made."""

    def mutate(data: bytes) -> bytes:
        out = mutation(data)
        applied.append(out)
        return out

    return mutate


@pytest.mark.parametrize("name", CONFIG_NAMES)
@pytest.mark.parametrize("target", ["client", "server"])
def test_every_record_of_every_delivery_mutated_on_either_side(
    configs: dict[str, Config], name: str, target: Side
) -> None:
    """Each record a side is sent in a whole session, before its first input,
    mid-handshake, after it, at and after the close_notify, and once more
    replayed after the session, is in turn bit-flipped in its header and in
    its body, truncated (with and without an end of file), duplicated, or
    preceded by an arbitrary record: the side makes progress or raises a
    typed TLSError, and the session settles.  (Real ClientHellos at any
    point of a session are test_real_first_flights_at_any_state_of_either_engine's.)"""
    config = configs[name]
    trace: dict[Side, list[State]] = {"client": [], "server": []}
    sent: dict[Side, list[bytes]] = {"client": [], "server": []}
    assert_clean(run_session(config, trace=trace, sent=sent))
    deliveries = sent[target]
    assert len(deliveries) == len(trace[target]) >= 3
    runs = 0
    # One more delivery than the session has: a replay once it is over.
    for delivery in range(len(deliveries) + 1):
        count = len(records(deliveries[delivery % len(deliveries)]))
        for index in range(count):
            for kind in RECORD_MUTATIONS:
                applied: list[bytes] = []
                attack = Attack(
                    target,
                    delivery,
                    recorded(at_record(kind, index), applied),
                    [],
                    eof=kind == "truncate-eof",
                )
                ends = run_session(config, attack)
                assert len(applied) == 1, "the mutation never reached the engine"
                assert applied[0] != deliveries[delivery % len(deliveries)]
                error = ends[target].error
                assert error is None or isinstance(error, tv.TLSError)
                runs += 1
    assert runs >= 3 * len(RECORD_MUTATIONS)


def test_every_state_of_both_sides_is_reached(configs: dict[str, Config]) -> None:
    """The deliveries mutated above reach each engine before its first input,
    mid-handshake, after the handshake and with a close_notify (at it, or
    after its own), over the four configurations; between them, every state.
    The replay after the session adds the one after everything."""
    seen: dict[Side, set[State]] = {"client": set(), "server": set()}
    for name in CONFIG_NAMES:
        trace: dict[Side, list[State]] = {"client": [], "server": []}
        run_session(configs[name], trace=trace)
        for side, states in trace.items():
            seen[side].update(states)
    for side, states in seen.items():
        assert {"before any input", "mid-handshake", "after the handshake"} <= states, (
            side
        )
        assert states & {"at the close_notify", "after the close_notify"}, side
    assert seen["client"] | seen["server"] == set(STATES)


# ------------------------------------------------- real first flights (tests/hellos)


def reframed(flight: bytes, size: int | None) -> bytes:
    """``flight`` with its leading handshake records cut again into records
    of ``size`` bytes of body (``None``: as captured); what follows them
    (early data) stays as it was."""
    if size is None:
        return flight
    parts = records(flight)
    payload = b""
    while parts and parts[0][0] == 22:
        payload += parts.pop(0)[5:]
    version = int.from_bytes(flight[1:3], "big")
    cut = [
        record(22, version, payload[i : i + size], None)
        for i in range(0, len(payload), size)
    ]
    return b"".join(cut + parts)


def offered_versions(flight: bytes) -> tuple[int, ...]:
    hello = ClientHelloReader().feed(flight)
    assert hello is not None
    return hello.supported_versions or (hello.legacy_version,)


P256 = 0x0017
SERVERS = ["TLSv1.2 only", "TLSv1.3 only", "TLSv1.2 or 1.3", "TLSv1.2 or 1.3+mtls"]


@pytest.fixture(scope="module")
def servers(certs: CertKit) -> dict[str, tuple[ssl.SSLContext, tuple[int, ...]]]:
    """Server contexts, and the versions (wire codes) each one speaks."""
    kit = certs.server("valid")
    identity = tv.Identity.from_pem(kit.cert_chain_pem, kit.key_pem)
    found = {}
    for name, versions, mutual in [
        ("TLSv1.2 only", (TLS12, TLS12), False),
        ("TLSv1.3 only", (TLS13, TLS13), False),
        ("TLSv1.2 or 1.3", (TLS12, TLS13), False),
        ("TLSv1.2 or 1.3+mtls", (TLS12, TLS13), True),
    ]:
        policy = tv.ServerPolicy(
            identity=identity,
            client_auth=tv.ClientAuth.REQUIRED if mutual else tv.ClientAuth.NONE,
            client_trust=certs.ca_pem if mutual else None,
            minimum_version=versions[0],
            maximum_version=versions[1],
        )
        codes = tuple({TLS12: 0x0303, TLS13: 0x0304}[v] for v in set(versions))
        found[name] = (policy.context, codes)
    return found


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("hello", sorted(CORPUS))
def test_real_first_flights_get_a_server_hello_or_a_typed_refusal(
    servers: dict[str, tuple[ssl.SSLContext, tuple[int, ...]]], server: str, hello: str
) -> None:
    """Every first flight of the corpus (our client, Python's ssl, s_client
    with TLS 1.2 or 1.3 only, ALPN, many groups, a 512-byte key share,
    chosen signature algorithms, early data, hellos in two and in three
    records), as
    captured and cut into many records (1 and 50 bytes each), goes to a
    fresh server engine.  A hello that offers a version the server speaks
    gets a ServerHello; one that does not gets a typed NegotiationFailed
    with a protocol_version alert; in TLS 1.2, one whose groups leave out
    P-256 cannot use the server's ECDSA P-256 key: NegotiationFailed with
    handshake_failure.  Nothing else."""
    context, speaks = servers[server]
    offers = offered_versions(CORPUS[hello])
    parsed = ClientHelloReader().feed(CORPUS[hello])
    assert parsed is not None
    refusal: tv.Alert | None = None
    if not set(speaks) & set(offers):
        refusal = tv.Alert.PROTOCOL_VERSION
    elif 0x0304 not in set(speaks) & set(offers) and P256 not in (
        parsed.supported_groups or (P256,)
    ):
        refusal = tv.Alert.HANDSHAKE_FAILURE
    for size in (None, 1, 50):
        engine = TLSEngine(context, server_side=True)
        end = End(engine, b"")
        end.deliver(reframed(CORPUS[hello], size))
        end.call(engine.do_handshake)
        out = end.take()
        if refusal is None:
            # A ServerHello (or a HelloRetryRequest, which is one too).
            assert out[:1] == b"\x16", (size, out[:16], end.error)
            assert out[5:6] == b"\x02", (size, out[:16], end.error)
            assert not engine.handshake_complete
        else:
            assert isinstance(end.error, tv.NegotiationFailed), (size, end.error)
            assert end.error.alert_sent is refusal, end.error
            assert out == bytes((21, 3, 3, 0, 2, 2, refusal)), out
        # The stream closes a connection it is done with: that stays quiet.
        end.call(engine.start_close)
        end.take()


@st.composite
def corpus_attacks(draw: st.DrawFn) -> Attack:
    """A real first flight, cut into records of any size and maybe mutated,
    in place of, before or after any delivery to either side."""
    flight = reframed(
        CORPUS[draw(st.sampled_from(sorted(CORPUS)))],
        draw(st.one_of(st.none(), st.integers(1, 600))),
    )
    change = draw(st.sampled_from(["as is", "flip", "truncate", "duplicate"]))
    if change == "flip":
        for pos, bit in draw(
            st.lists(st.tuples(st.integers(0), st.integers(0, 7)), min_size=1)
        ):
            i = pos % len(flight)
            flight = flight[:i] + bytes((flight[i] ^ (1 << bit),)) + flight[i + 1 :]
    elif change == "truncate":
        flight = flight[: draw(st.integers(0, len(flight) - 1))]
    elif change == "duplicate":
        flight += flight
    where = draw(st.sampled_from(["replace", "before", "after"]))

    def mutate(data: bytes) -> bytes:
        if where == "replace":
            return flight
        return flight + data if where == "before" else data + flight

    return Attack(
        target=draw(st.sampled_from(["client", "server"])),
        delivery=draw(st.one_of(st.integers(0, 4), st.integers(5, 12))),
        mutate=mutate,
        chunks=draw(st.lists(st.integers(1, 600), max_size=4)),
        eof=draw(st.booleans()),
    )


@settings(FUZZ, max_examples=75)
@given(name=st.sampled_from(CONFIG_NAMES), attack=corpus_attacks())
def test_real_first_flights_at_any_state_of_either_engine(
    configs: dict[str, Config], name: str, attack: Attack
) -> None:
    """The corpus seeds the engine properties too: a real ClientHello (maybe
    cut up, bit-flipped, truncated or doubled) arrives at either engine at
    any point of a session: progress or a typed TLSError, and it settles."""
    ends = run_session(configs[name], attack)
    error = ends[attack.target].error
    assert error is None or isinstance(error, tv.TLSError)


def test_corpus_has_the_first_flights_it_should() -> None:
    """What the corpus tests above rely on: TLS 1.2-only and TLS 1.3-only
    hellos, a large key share, hellos split over two and three records,
    early data."""
    versions = {name: offered_versions(flight) for name, flight in CORPUS.items()}
    assert versions["s_client_tls12"] == (0x0303,)
    assert versions["s_client_tls13"] == (0x0304,)
    assert len(CORPUS["s_client_ffdhe"]) > 700
    assert len(records(CORPUS["s_client_split"])) == 2
    assert len(records(CORPUS["s_client_many_records"])) >= 3
    assert [part[0] for part in records(CORPUS["s_client_early_data"])][1:] == [20, 23]


# ----------------------- certificates OpenSSL reads and cryptography refuses


# Each defect as (DER before, DER after): a BER boolean TRUE (01, not ff) in
# an extension's ``critical`` flag, and X.509 version 26 (encoded 25).
DEFECTS = {
    "ber-boolean": (bytes.fromhex("0101ff"), bytes.fromhex("010101")),
    "x509-version-26": (bytes.fromhex("a003020102"), bytes.fromhex("a003020119")),
}


def _defective_certificate(defect: str) -> tuple[bytes, bytes]:
    """A self-signed certificate that OpenSSL reads and cryptography refuses.

    Both defects were found by fuzz/fuzz_server_engine.py (fuzz/reproducers/).
    """
    key = ed25519.Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2049, 1, 1, tzinfo=UTC))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        )
        .sign(key, None)
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    before, after = DEFECTS[defect]
    assert der.count(before) == 1
    broken = der.replace(before, after)
    with pytest.raises((ValueError, x509.InvalidVersion)):
        x509.load_der_x509_certificate(broken)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return ssl.DER_cert_to_PEM_cert(broken).encode("ascii"), key_pem


@pytest.mark.parametrize("version", [TLS12, TLS13], ids=["TLSv1.2", "TLSv1.3"])
@pytest.mark.parametrize("judge", ["client", "server"])
@pytest.mark.parametrize("defect", DEFECTS)
def test_certificate_only_openssl_can_parse_gives_a_typed_error(
    certs: CertKit,
    tmp_path: Path,
    version: ssl.TLSVersion,
    judge: Side,
    defect: str,
) -> None:
    # The peer presents it, untrusted; OpenSSL refuses it, and explaining
    # that refusal must not trip over cryptography's stricter parser.
    cert_pem, key_pem = _defective_certificate(defect)
    (tmp_path / "ber.pem").write_bytes(cert_pem + key_pem)
    server_identity = certs.server("valid")
    if judge == "client":
        server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_context.load_cert_chain(tmp_path / "ber.pem")
        client_context = tv.ClientPolicy(
            trust=certs.ca_pem, minimum_version=version, maximum_version=version
        ).context
    else:
        server_context = tv.ServerPolicy(
            identity=tv.Identity.from_pem(
                server_identity.cert_chain_pem, server_identity.key_pem
            ),
            client_auth=tv.ClientAuth.REQUIRED,
            client_trust=certs.ca_pem,
        ).context
        client_context = certs.client_context(versions=version)
        client_context.load_cert_chain(tmp_path / "ber.pem")
    ends = run_session(Config("ber", client_context, server_context, frozenset()))
    error = ends[judge].error
    assert isinstance(error, tv.CertificateVerificationError), repr(error)
