"""The ClientHello reader, against real hellos and a real OpenSSL server.

The corpus in ``tests/hellos/`` holds first flights captured from real
clients (``capture.py`` regenerates it).  Every hello must parse to what its
client was told to offer, in any chunking, and replaying the bytes must
satisfy OpenSSL.

The reader must also be invisible: for any bytes, a client must get the same
answer as from a plain OpenSSL server, after the same byte.  The *oracle*
below feeds the bytes one at a time to a real ``ssl.SSLObject`` server and
notes where it gave up and what it wrote; the reader is fed the same way and
must refuse at the same byte with the same bytes to send, or else hand over a
ClientHello at the byte at which OpenSSL gets to judge one.  Every malformed class
is checked that way, and so are thousands of mutated real hellos.
"""

from __future__ import annotations

import contextlib
import itertools
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import trio
from certs import CertKit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openssl_peer import TLSFlag, run_openssl, s_client_args

import trio_verify as tv
from trio_verify._hello import (
    MAX_CLIENT_HELLO_SIZE,
    ClientHello,
    ClientHelloReader,
    parse_client_hello,
)

HELLOS = Path(__file__).parent / "hellos"
CORPUS: dict[str, bytes] = {
    p.stem: p.read_bytes() for p in sorted(HELLOS.glob("*.bin"))
}
# The hellos whose bytes end where the ClientHello does (all but early data).
EXACT = sorted(name for name in CORPUS if name != "s_client_early_data")
# Cheap to mutate: no 4096-bit Diffie-Hellman when OpenSSL accepts one.
SMALL = sorted(name for name in CORPUS if len(CORPUS[name]) < 600)

TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
HYPOTHESIS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def server_ctx(certs: CertKit) -> ssl.SSLContext:
    """A plain OpenSSL server: the peer the reader must be indistinguishable from."""
    return certs.server_context()


# -- building records ----------------------------------------------------------


def record(body: bytes, content_type: int = 22, version: int = 0x0301) -> bytes:
    return bytes((content_type, version >> 8, version & 0xFF)) + (
        len(body).to_bytes(2, "big") + body
    )


def records(payload: bytes, size: int, version: int = 0x0301) -> bytes:
    """``payload`` as handshake records of at most ``size`` bytes each."""
    return b"".join(
        record(payload[i : i + size], version=version)
        for i in range(0, len(payload), size)
    )


def message_of(flight: bytes) -> bytes:
    """The ClientHello handshake message (with its header) in a first flight."""
    payload = b""
    pos = 0
    while pos < len(flight):
        length = int.from_bytes(flight[pos + 3 : pos + 5], "big")
        if flight[pos] == 22:
            payload += flight[pos + 5 : pos + 5 + length]
        pos += 5 + length
        if len(payload) >= 4:
            end = 4 + int.from_bytes(payload[1:4], "big")
            if len(payload) >= end:
                return payload[:end]
    raise AssertionError("no complete ClientHello in the flight")


def hello_message(body: bytes) -> bytes:
    return b"\x01" + len(body).to_bytes(3, "big") + body


def split_extensions(message: bytes) -> tuple[bytes, bytes]:
    """A ClientHello message body cut before its extensions block."""
    body = message[4:]
    pos = 34
    pos += 1 + body[pos]
    pos += 2 + int.from_bytes(body[pos : pos + 2], "big")
    pos += 1 + body[pos]
    return body[:pos], body[pos + 2 :]


def with_extensions(message: bytes, extensions: bytes) -> bytes:
    """The message with its extensions block replaced, wrapped in one record."""
    head, _ = split_extensions(message)
    body = head + len(extensions).to_bytes(2, "big") + extensions
    return record(hello_message(body))


def extension(ext_type: int, data: bytes = b"") -> bytes:
    return ext_type.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data


def sni(name: bytes) -> bytes:
    entry = b"\x00" + len(name).to_bytes(2, "big") + name
    return extension(0, len(entry).to_bytes(2, "big") + entry)


def sslv2_hello(
    version: int = 0x0303,
    specs: bytes = b"\x00\xc0\x2b\x00\xc0\x2f\x00\x00\xff",
    session_id: bytes = b"",
    challenge: bytes = bytes(range(32)),
    extra: bytes = b"",
) -> bytes:
    body = (
        b"\x01"
        + version.to_bytes(2, "big")
        + len(specs).to_bytes(2, "big")
        + len(session_id).to_bytes(2, "big")
        + len(challenge).to_bytes(2, "big")
        + specs
        + session_id
        + challenge
        + extra
    )
    return bytes((0x80 | len(body) >> 8, len(body) & 0xFF)) + body


# -- the oracle and the reader, fed byte by byte -------------------------------


@dataclass(frozen=True)
class Verdict:
    """What one server did with a byte string fed to it one byte at a time.

    ``at`` is the index of the byte after which it acted (refused, or answered
    a ClientHello), or ``None`` if it was still waiting at the end.
    """

    at: int | None
    refused: bool
    sent: bytes


def openssl_verdict(ctx: ssl.SSLContext, data: bytes, eof: bool = False) -> Verdict:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = ctx.wrap_bio(incoming, outgoing, server_side=True)
    for i in range(len(data) + eof):
        if i < len(data):
            incoming.write(data[i : i + 1])
        else:
            incoming.write_eof()
        try:
            server.do_handshake()
        except ssl.SSLWantReadError:
            if outgoing.pending:
                return Verdict(i, False, outgoing.read())
            continue
        except ssl.SSLError:
            return Verdict(i, True, outgoing.read())
        raise AssertionError("a handshake cannot complete on one flight")
    return Verdict(None, False, b"")


def reader_verdict(
    data: bytes, eof: bool = False, reader: ClientHelloReader | None = None
) -> tuple[Verdict, ClientHello | tv.TLSError | None]:
    reader = reader or ClientHelloReader()
    for i in range(len(data) + eof):
        try:
            if i < len(data):
                hello = reader.feed(data[i : i + 1])
            else:
                reader.feed_eof()
                hello = None
        except tv.TLSError as exc:
            return Verdict(i, True, reader.data_to_send()), exc
        if hello is not None:
            return Verdict(i, False, b""), hello
    return Verdict(None, False, b""), None


def assert_invisible(
    ctx: ssl.SSLContext, data: bytes, eof: bool = False
) -> ClientHello | tv.TLSError | None:
    """The client cannot tell the reader from OpenSSL; return what it gave."""
    theirs = openssl_verdict(ctx, data, eof)
    ours, outcome = reader_verdict(data, eof)
    if ours.refused:
        assert ours == theirs, f"reader {ours} but OpenSSL {theirs}: {outcome}"
    elif ours.at is None:
        assert theirs.at is None, f"OpenSSL acted {theirs}; the reader waits"
    else:
        # The reader hands over a ClientHello; OpenSSL, given the same bytes
        # under the policy chosen for it, answers after this same byte.
        assert theirs.at == ours.at, f"reader {ours} but OpenSSL {theirs}"
    return outcome


# -- the corpus ----------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    server_name: str | None
    alpn: tuple[str, ...] = ()
    max_version: ssl.TLSVersion = TLS13
    versions: tuple[int, ...] = (0x0304, 0x0303, 0x0302, 0x0301)
    groups: tuple[int, ...] = ()
    sigalgs: tuple[int, ...] = ()
    records: int = 1


X25519, P256, P384, P521, FFDHE2048, FFDHE4096 = 0x1D, 0x17, 0x18, 0x19, 0x100, 0x102
MANY_PROTOCOLS = (
    "h2",
    "http/1.1",
    *(f"x-proto-{i:02d}.example/1.0" for i in range(40)),
)

EXPECTED = {
    "trio_verify_client": Expected(
        "api.example.com", ("h2", "http/1.1"), versions=(0x0304, 0x0303)
    ),
    "python_ssl_tls12": Expected(
        "Legacy.Example.ORG.", ("http/1.1",), max_version=TLS12, versions=()
    ),
    "s_client_tls12": Expected("tls12.example", max_version=TLS12, versions=()),
    "s_client_tls13": Expected("tls13.example", versions=(0x0304,)),
    "s_client_alpn": Expected("alpn.example", ("h2", "http/1.1")),
    "s_client_no_sni": Expected(None),
    "s_client_groups": Expected(
        "groups.example", groups=(X25519, P256, P384, P521, FFDHE2048)
    ),
    "s_client_ffdhe": Expected("ffdhe.example", groups=(FFDHE4096, X25519)),
    # ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, ed25519
    "s_client_sigalgs": Expected("sigalgs.example", sigalgs=(0x0403, 0x0804, 0x0807)),
    "s_client_split": Expected("split.example", groups=(FFDHE4096, X25519), records=2),
    "s_client_many_records": Expected("many.example", MANY_PROTOCOLS, records=3),
    "s_client_early_data": Expected("early.example"),
}


def test_corpus_is_complete() -> None:
    assert sorted(CORPUS) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_hello_has_what_the_client_offered(name: str) -> None:
    flight = CORPUS[name]
    expected = EXPECTED[name]
    hello = ClientHelloReader(peer_address=("127.0.0.1", 4433)).feed(flight)
    assert hello is not None
    assert hello.server_name == expected.server_name
    assert hello.alpn_protocols == expected.alpn
    assert hello.max_version is expected.max_version
    assert hello.offers_tls13 is (expected.max_version is TLS13)
    assert hello.supported_versions == expected.versions
    assert hello.legacy_version == 0x0303
    assert set(expected.groups) <= set(hello.supported_groups)
    if expected.groups:
        assert hello.supported_groups == expected.groups
    if expected.sigalgs:
        assert hello.signature_algorithms == expected.sigalgs
    else:
        assert len(hello.signature_algorithms) >= 10
    assert 0x1301 in hello.cipher_suites or expected.max_version is TLS12
    assert hello.peer_address == ("127.0.0.1", 4433)
    assert not hello.sslv2_format
    assert hello.raw == flight
    assert flight.count(b"\x16\x03\x01") >= expected.records


def test_early_data_flight_keeps_what_followed_the_hello() -> None:
    flight = CORPUS["s_client_early_data"]
    hello = ClientHelloReader().feed(flight)
    assert hello is not None
    # pre_shared_key is last, after early_data; the ChangeCipherSpec and the
    # encrypted early data that followed in the same read stay in raw.
    assert hello.extension_types[-2:] == (42, 41)
    tail = flight[len(record(message_of(flight))) :]
    assert tail[:6] == record(b"\x01", 20, 0x0303)
    assert tail[6] == 23
    assert hello.raw == flight


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_openssl_answers_the_replayed_bytes(
    server_ctx: ssl.SSLContext, name: str
) -> None:
    flight = CORPUS[name]
    hello = ClientHelloReader().feed(flight)
    assert hello is not None
    assert_answers(server_ctx, hello.raw)


def assert_answers(ctx: ssl.SSLContext, raw: bytes) -> None:
    """OpenSSL takes ``raw`` as its first input and answers with a ServerHello."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = ctx.wrap_bio(incoming, outgoing, server_side=True)
    incoming.write(raw)
    with pytest.raises(ssl.SSLWantReadError):
        server.do_handshake()
    answer = outgoing.read()
    assert answer[:1] == b"\x16"
    assert answer[5] == 2  # ServerHello


def reader_then_openssl(
    ctx: ssl.SSLContext, first_flight: Iterator[bytes]
) -> tuple[ClientHello, ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    """Read a ClientHello from the chunks, then hand the bytes to OpenSSL."""
    reader = ClientHelloReader()
    hello = None
    while hello is None:
        hello = reader.feed(next(first_flight))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = ctx.wrap_bio(incoming, outgoing, server_side=True)
    incoming.write(hello.raw)
    return hello, server, incoming, outgoing


@pytest.mark.parametrize("versions", [TLS12, TLS13], ids=["tls12", "tls13"])
@pytest.mark.parametrize("record_size", [None, 1, 7], ids=["as_sent", "1", "7"])
def test_handshake_completes_after_the_reader(
    certs: CertKit, versions: ssl.TLSVersion, record_size: int | None
) -> None:
    # The whole point: OpenSSL, given the bytes the reader consumed, carries
    # on as if it had read them itself.  In transit the client's first flight
    # may also be re-cut into tiny records.
    client_ctx = certs.client_context(versions=versions)
    client_ctx.set_alpn_protocols(["h2", "http/1.1"])
    server_ctx = certs.server_context(versions=versions)
    server_ctx.set_alpn_protocols(["http/1.1"])
    c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    flight = c_out.read()
    if record_size is not None:
        flight = records(message_of(flight), record_size)

    hello, server, s_in, s_out = reader_then_openssl(
        server_ctx, iter([flight[i : i + 3] for i in range(0, len(flight), 3)])
    )
    assert hello.server_name == "localhost"
    assert hello.alpn_protocols == ("h2", "http/1.1")
    for _ in range(10):
        for side in (server, client):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        c_in.write(s_out.read())
        s_in.write(c_out.read())
    client.write(b"ping")
    s_in.write(c_out.read())
    assert server.read() == b"ping"
    assert server.selected_alpn_protocol() == "http/1.1"
    assert client.version() == server.version() == versions.name.replace("_", ".")


@pytest.mark.openssl_cli
@pytest.mark.parametrize("flag", ["-tls1_2", "-tls1_3"])
async def test_s_client_completes_a_handshake_after_the_reader(
    certs: CertKit, openssl: Path, flag: TLSFlag
) -> None:
    server_ctx = certs.server_context()
    server_ctx.set_alpn_protocols(["h2"])
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    args = s_client_args(certs, port, flag, extra=["-alpn", "h2,http/1.1"])
    with trio.fail_after(10):
        async with listener, run_openssl(openssl, *args) as peer:
            stream = await listener.accept()
            async with stream:
                reader = ClientHelloReader()
                hello = None
                while hello is None:
                    hello = reader.feed(await stream.receive_some())
                assert hello.server_name == "localhost"
                s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
                server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
                s_in.write(hello.raw)
                received = b""
                pinged = False
                while not received.endswith(b"\n"):
                    try:
                        server.do_handshake()
                        if not pinged:
                            await peer.send(b"ping\n")
                            pinged = True
                        received += server.read()
                    except ssl.SSLWantReadError:
                        await stream.send_all(s_out.read())
                        s_in.write(await stream.receive_some())
                assert received == b"ping\n"
                server.write(b"pong\n")
                await stream.send_all(s_out.read())
                await peer.wait_for(b"pong\n")
    assert "ALPN protocol: h2" in peer.text
    assert "Verify return code: 0 (ok)" in peer.text


@pytest.mark.parametrize("name", EXACT)
def test_one_byte_records_parse_alike_and_openssl_accepts_them(
    server_ctx: ssl.SSLContext, name: str
) -> None:
    # RFC 8446 §5.1: a handshake message may be split across any number of
    # records.  One byte per record is the extreme.
    flight = CORPUS[name]
    fragmented = records(message_of(flight), 1)
    hello = ClientHelloReader().feed(fragmented)
    original = ClientHelloReader().feed(flight)
    assert hello is not None
    assert original is not None
    assert replace(hello, raw=b"") == replace(original, raw=b"")
    assert hello.raw == fragmented
    assert_answers(server_ctx, hello.raw)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_is_invisible_byte_by_byte(
    server_ctx: ssl.SSLContext, name: str
) -> None:
    outcome = assert_invisible(server_ctx, CORPUS[name])
    assert isinstance(outcome, ClientHello)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_parse_client_hello_agrees_with_the_reader(name: str) -> None:
    message = message_of(CORPUS[name])
    hello = ClientHelloReader().feed(CORPUS[name])
    parsed = parse_client_hello(message + b"trailing")
    assert hello is not None
    assert parsed is not None
    assert parsed.raw == message
    assert replace(parsed, raw=b"") == replace(hello, raw=b"")


def test_parse_client_hello_never_raises() -> None:
    message = message_of(CORPUS["s_client_alpn"])
    assert parse_client_hello(b"") is None
    assert parse_client_hello(message[:-1]) is None
    assert parse_client_hello(b"\x02" + message[1:]) is None
    assert parse_client_hello(message[:4] + b"\x00" * (len(message) - 4)) is None


@st.composite
def chunkings(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.sets(st.integers(1, len(data) - 1), max_size=40)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@HYPOTHESIS
@given(st.data())
def test_any_chunking_gives_the_same_hello(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(CORPUS)))
    flight = CORPUS[name]
    whole = ClientHelloReader().feed(flight)
    reader = ClientHelloReader()
    hello = None
    fed = 0
    for chunk in data.draw(chunkings(flight)):
        hello = reader.feed(chunk)
        fed += len(chunk)
        if hello is not None:
            break
    assert whole is not None
    assert hello is not None
    assert replace(hello, raw=b"") == replace(whole, raw=b"")
    assert hello.raw == flight[:fed]
    assert len(hello.raw) >= len(record(message_of(flight)))


# -- what must be refused, and how --------------------------------------------

ALPN = message_of(CORPUS["s_client_alpn"])
HEAD, EXTENSIONS = split_extensions(ALPN)
FLIGHT = record(ALPN)
A, B = ALPN[:100], ALPN[100:]


@dataclass(frozen=True)
class Refusal:
    data: bytes
    error: type[tv.TLSError]
    alert: tv.Alert | None
    eof: bool = False


REFUSALS: dict[str, Refusal] = {
    # Not TLS at all: OpenSSL sends nothing.
    "http_get": Refusal(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", tv.NotTLS, None),
    "http_post": Refusal(b"POST /x HTTP/1.1\r\n\r\n", tv.NotTLS, None),
    "http_connect": Refusal(b"CONNECT a:443 HTTP/1.1\r\n\r\n", tv.NotTLS, None),
    "http2_preface": Refusal(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", tv.NotTLS, None),
    "ssh_banner": Refusal(b"SSH-2.0-OpenSSH_9.6\r\n", tv.NotTLS, None),
    "tls_type_wrong_major": Refusal(b"\x16\x02\x00\x00\x05hello", tv.NotTLS, None),
    "sslv2": Refusal(sslv2_hello(version=0x0002), tv.NotTLS, tv.Alert.PROTOCOL_VERSION),
    # Records.
    "application_data_first": Refusal(
        record(b"GET /", 23, 0x0303) + FLIGHT,
        tv.ProtocolViolation,
        tv.Alert.UNEXPECTED_MESSAGE,
    ),
    "fatal_alert_first": Refusal(
        record(b"\x02\x28", 21) + FLIGHT,
        tv.ProtocolViolation,
        tv.Alert.UNEXPECTED_MESSAGE,
    ),
    "warning_alert_first": Refusal(
        record(b"\x01\x5a", 21, 0x0302) + FLIGHT,
        tv.ProtocolViolation,
        tv.Alert.UNEXPECTED_MESSAGE,
    ),
    "change_cipher_spec_first": Refusal(
        record(b"\x01", 20) + FLIGHT,
        tv.ProtocolViolation,
        tv.Alert.UNEXPECTED_MESSAGE,
    ),
    "change_cipher_spec_in_header": Refusal(
        record(ALPN[:2]) + record(b"\x01", 20) + record(ALPN[2:]),
        tv.ProtocolViolation,
        tv.Alert.UNEXPECTED_MESSAGE,
    ),
    "change_cipher_spec_mid_hello": Refusal(
        record(A) + record(b"\x01", 20, 0x0303) + record(B),
        tv.ProtocolViolation,
        tv.Alert.UNEXPECTED_MESSAGE,
    ),
    "empty_change_cipher_spec_mid_hello": Refusal(
        record(A) + record(b"", 20, 0x0302) + record(B),
        tv.ProtocolViolation,
        tv.Alert.UNEXPECTED_MESSAGE,
    ),
    "unknown_record_type_mid_hello": Refusal(
        record(A) + record(b"??", 24, 0x0307) + record(B),
        tv.ProtocolViolation,
        tv.Alert.UNEXPECTED_MESSAGE,
    ),
    "record_overflow_on_header": Refusal(
        record(b"\x01" + bytes(16704)), tv.ProtocolViolation, tv.Alert.RECORD_OVERFLOW
    ),
    "record_overflow_on_body": Refusal(
        record(b"\x01" + bytes(16384)), tv.ProtocolViolation, tv.Alert.RECORD_OVERFLOW
    ),
    "sslv2_record_overflow": Refusal(
        b"\xc1\x45\x01\x03\x03", tv.ProtocolViolation, tv.Alert.RECORD_OVERFLOW
    ),
    "later_record_not_tls": Refusal(
        record(A) + record(B, version=0x0200),
        tv.ProtocolViolation,
        tv.Alert.PROTOCOL_VERSION,
    ),
    "empty_record_then_http": Refusal(
        record(b"") + b"GET / HTTP/1.1\r\n\r\n",
        tv.ProtocolViolation,
        tv.Alert.PROTOCOL_VERSION,
    ),
    "too_many_empty_records": Refusal(
        record(b"") * 33 + FLIGHT, tv.ProtocolViolation, tv.Alert.UNEXPECTED_MESSAGE
    ),
    # The handshake message.
    "server_hello_instead": Refusal(
        record(b"\x02" + ALPN[1:]), tv.ProtocolViolation, tv.Alert.UNEXPECTED_MESSAGE
    ),
    "hello_request_instead": Refusal(
        record(b"\x00\x00\x00\x00") + FLIGHT,
        tv.ProtocolViolation,
        tv.Alert.UNEXPECTED_MESSAGE,
    ),
    "oversize": Refusal(
        record(b"\x01" + (MAX_CLIENT_HELLO_SIZE + 1).to_bytes(3, "big")),
        tv.ProtocolViolation,
        tv.Alert.ILLEGAL_PARAMETER,
    ),
    "empty_client_hello": Refusal(
        record(hello_message(b"")), tv.ProtocolViolation, tv.Alert.DECODE_ERROR
    ),
    # The ClientHello body.
    "truncated_random": Refusal(
        record(hello_message(HEAD[:20])), tv.ProtocolViolation, tv.Alert.DECODE_ERROR
    ),
    "session_id_too_long": Refusal(
        record(hello_message(HEAD[:34] + b"\x21" + bytes(33) + HEAD[35:])),
        tv.ProtocolViolation,
        tv.Alert.DECODE_ERROR,
    ),
    "session_id_overrun": Refusal(
        record(hello_message(HEAD[:34] + b"\x20" + bytes(10))),
        tv.ProtocolViolation,
        tv.Alert.DECODE_ERROR,
    ),
    "cipher_suites_overrun": Refusal(
        record(hello_message(HEAD[:67] + b"\xff\xff" + HEAD[69:])),
        tv.ProtocolViolation,
        tv.Alert.DECODE_ERROR,
    ),
    "no_compression_methods": Refusal(
        record(hello_message(HEAD[:-2])), tv.ProtocolViolation, tv.Alert.DECODE_ERROR
    ),
    "extensions_length_mismatch": Refusal(
        record(hello_message(HEAD + b"\x00\x05" + EXTENSIONS)),
        tv.ProtocolViolation,
        tv.Alert.DECODE_ERROR,
    ),
    "one_trailing_byte": Refusal(
        record(hello_message(HEAD + b"\x00")),
        tv.ProtocolViolation,
        tv.Alert.DECODE_ERROR,
    ),
    "extension_overrun": Refusal(
        with_extensions(ALPN, EXTENSIONS + b"\xfa\xfa\x00\x09"),
        tv.ProtocolViolation,
        tv.Alert.DECODE_ERROR,
    ),
    "extension_header_cut": Refusal(
        with_extensions(ALPN, EXTENSIONS + b"\xfa"),
        tv.ProtocolViolation,
        tv.Alert.DECODE_ERROR,
    ),
    "duplicate_server_name": Refusal(
        with_extensions(ALPN, EXTENSIONS + sni(b"other.example")),
        tv.ProtocolViolation,
        tv.Alert.ILLEGAL_PARAMETER,
    ),
    # A repeated extension OpenSSL knows is refused before a later framing
    # error is seen: the order matters, as in OpenSSL.
    "duplicate_then_overrun": Refusal(
        with_extensions(ALPN, extension(23) * 2 + b"\xfa\xfa\x00\x09"),
        tv.ProtocolViolation,
        tv.Alert.ILLEGAL_PARAMETER,
    ),
    "overrun_then_duplicate": Refusal(
        with_extensions(ALPN, extension(23) + b"\x00\x17\x00\x09"),
        tv.ProtocolViolation,
        tv.Alert.DECODE_ERROR,
    ),
    "pre_shared_key_not_last": Refusal(
        with_extensions(ALPN, extension(41) + EXTENSIONS),
        tv.ProtocolViolation,
        tv.Alert.ILLEGAL_PARAMETER,
    ),
    "use_srtp_in_tls": Refusal(
        with_extensions(ALPN, EXTENSIONS + extension(14, b"\x00\x02\x00\x01\x00")),
        tv.ProtocolViolation,
        tv.Alert.ILLEGAL_PARAMETER,
    ),
    "sslv2_lengths_mismatch": Refusal(
        sslv2_hello(extra=b"\x00"), tv.ProtocolViolation, tv.Alert.DECODE_ERROR
    ),
    "sslv2_session_id_too_long": Refusal(
        sslv2_hello(session_id=bytes(33)),
        tv.ProtocolViolation,
        tv.Alert.ILLEGAL_PARAMETER,
    ),
    "sslv2_record_too_short": Refusal(
        b"\x80\x05\x01\x03\x03\x00\x00", tv.ProtocolViolation, tv.Alert.DECODE_ERROR
    ),
    # The client gave up: OpenSSL answers an early EOF with decode_error.
    "eof_mid_hello": Refusal(
        FLIGHT[:100], tv.TruncatedStream, tv.Alert.DECODE_ERROR, eof=True
    ),
    "eof_before_anything": Refusal(
        b"", tv.TruncatedStream, tv.Alert.DECODE_ERROR, eof=True
    ),
    "eof_after_http": Refusal(
        b"GE", tv.TruncatedStream, tv.Alert.DECODE_ERROR, eof=True
    ),
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_refusal_is_what_openssl_sends(server_ctx: ssl.SSLContext, name: str) -> None:
    case = REFUSALS[name]
    error = assert_invisible(server_ctx, case.data, case.eof)
    assert isinstance(error, tv.TLSError)
    assert type(error) is case.error
    assert error.alert_sent is case.alert
    assert error.phase is tv.Phase.CLIENT_HELLO
    assert error.side == "server"
    assert error.surfaced_in == "handshake"


@pytest.mark.parametrize("name", sorted(REFUSALS))
@pytest.mark.parametrize("versions", [TLS12, TLS13], ids=["tls12_only", "tls13_only"])
def test_refusal_does_not_depend_on_the_context(
    certs: CertKit, name: str, versions: ssl.TLSVersion
) -> None:
    # The reader refuses only what OpenSSL refuses whatever it is configured
    # for; the policy chosen later must not matter.
    case = REFUSALS[name]
    ctx = certs.server_context(versions=versions)
    theirs = openssl_verdict(ctx, case.data, case.eof)
    ours, _ = reader_verdict(case.data, case.eof)
    assert ours == theirs


def one_shot(ctx: ssl.SSLContext, data: bytes) -> tuple[bytes, bytes]:
    """What OpenSSL and the reader send for ``data`` given all at once."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = ctx.wrap_bio(incoming, outgoing, server_side=True)
    incoming.write(data)
    with contextlib.suppress(ssl.SSLError):
        server.do_handshake()
    reader = ClientHelloReader()
    with contextlib.suppress(tv.TLSError):
        reader.feed(data)
    return outgoing.read(), reader.data_to_send()


# Every type up to 4095, and the registered or common ones above it (NPN,
# ALPS, Token Binding, ECH, renegotiation_info, ...) and GREASE.
EXTENSION_TYPES = sorted(
    {*range(4096), 13172, 17513, 17613, 30031, 30032, 64768, 65000, 65037, 65281}
    | {0x0A0A + 0x1010 * i for i in range(16)}
)


def test_extension_table_matches_the_linked_openssl(
    server_ctx: ssl.SSLContext,
) -> None:
    # Which repeated extensions OpenSSL refuses depends on which it
    # implements, and so on its version.  A repeat followed by a framing
    # error tells: illegal_parameter if OpenSSL knows the type, decode_error
    # if it reaches the framing error.  Alone, only use_srtp and a
    # pre_shared_key that is not last are refused.
    overrun = b"\xfa\xfa\x00\x09"
    differences = []
    for ext_type in EXTENSION_TYPES:
        for extensions in (extension(ext_type) * 2, extension(ext_type)):
            flight = with_extensions(ALPN, extensions + overrun)
            theirs, ours = one_shot(server_ctx, flight)
            if theirs != ours:
                differences.append((ext_type, len(extensions), theirs, ours))
    assert differences == []


def test_alert_record_echoes_the_refused_record_version() -> None:
    reader = ClientHelloReader()
    with pytest.raises(tv.ProtocolViolation):
        reader.feed(record(b"x", 23, 0x03AB))
    assert reader.data_to_send() == b"\x15\x03\xab\x00\x02\x02\x0a"
    assert reader.data_to_send() == b""


def test_http_is_named_in_the_message() -> None:
    with pytest.raises(tv.NotTLS, match="plaintext HTTP GET request"):
        ClientHelloReader().feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(tv.NotTLS, match="CONNECT"):
        ClientHelloReader().feed(b"CONNECT example.com:443 HTTP/1.1\r\n")
    with pytest.raises(tv.NotTLS, match="HTTP/2"):
        ClientHelloReader().feed(b"PRI * HTTP/2.0\r\n")
    with pytest.raises(tv.NotTLS, match="first bytes 53 53 48 2d 32"):
        ClientHelloReader().feed(b"SSH-2.0\r\n")


def test_not_tls_is_judged_on_a_whole_record_header() -> None:
    # OpenSSL decides after five bytes; so does the reader, or a client could
    # tell them apart by sending fewer.
    reader = ClientHelloReader()
    assert reader.feed(b"GET ") is None
    with pytest.raises(tv.NotTLS):
        reader.feed(b"/")


# -- what must be accepted ----------------------------------------------------


ACCEPTED: dict[str, bytes] = {
    "record_version_0x03ff": record(ALPN, version=0x03FF),
    "record_version_0x0300": record(ALPN, version=0x0300),
    "mixed_record_versions": record(A, version=0x0301) + record(B, version=0x0303),
    "header_split_across_records": record(ALPN[:2]) + record(ALPN[2:]),
    "thirty_two_empty_records": record(b"") * 32 + FLIGHT,
    "empty_records_between_fragments": record(b"") * 32
    + record(A)
    + record(b"") * 32
    + record(B),
    "empty_change_cipher_spec_first": record(b"", 20) + FLIGHT,
    "empty_change_cipher_spec_in_header": record(ALPN[:3])
    + record(b"", 20)
    + record(ALPN[3:]),
    "largest_record": record(ALPN + bytes(16384 - len(ALPN))),
    "repeated_unknown_extension": with_extensions(
        ALPN, EXTENSIONS + extension(0xFAFA) * 2
    ),
    "pre_shared_key_last_but_empty": with_extensions(ALPN, EXTENSIONS + extension(41)),
    "no_extensions": record(hello_message(HEAD)),
    "sslv2_compatible": sslv2_hello(),
    "sslv2_compatible_tls10": sslv2_hello(version=0x0301),
    "pipelined_after_hello": FLIGHT + record(b"\x01", 20, 0x0303) + b"\x17junk",
}


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_accepted_as_openssl_accepts(server_ctx: ssl.SSLContext, name: str) -> None:
    hello = assert_invisible(server_ctx, ACCEPTED[name])
    assert isinstance(hello, ClientHello)


def test_largest_client_hello_waits_like_openssl(server_ctx: ssl.SSLContext) -> None:
    header = record(b"\x01" + MAX_CLIENT_HELLO_SIZE.to_bytes(3, "big"))
    outcome = assert_invisible(server_ctx, header + record(bytes(1000)))
    assert outcome is None


def test_sslv2_compatible_hello_is_read() -> None:
    hello = ClientHelloReader().feed(
        sslv2_hello(specs=b"\x00\xc0\x2b\x07\x00\xc0\x00\x00\x9c")
    )
    assert hello is not None
    assert hello.sslv2_format
    assert hello.legacy_version == 0x0303
    # SSL 2.0 cipher specs (first byte not zero) are not TLS suites.
    assert hello.cipher_suites == (0xC02B, 0x009C)
    assert hello.extension_types == ()
    assert hello.server_name is None
    assert hello.max_version is TLS12
    assert not hello.offers_tls13


# -- the server name ------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\x00\x00", "empty list"),
        (b"\x00\x10\x00\x00\x0dalpn.example", "list length too long"),
        (b"\x00\x10\x00\x00\x0dalpn.example\x00\x00", "list length too short"),
        (b"\x00\x0f\x01\x00\x0calpn.example", "not host_name"),
        (b"\x00\x0f\x00\x00\x0dalpn.example", "name length too long"),
        (b"\x00\x1e\x00\x00\x0calpn.example\x00\x00\x0cevil.example", "two names"),
    ],
)
def test_malformed_server_name_is_absent_and_openssl_refuses_it(
    server_ctx: ssl.SSLContext, data: bytes, reason: str
) -> None:
    # The reader and OpenSSL decode the server name alike: when the reader
    # sees none in a server_name extension, OpenSSL refuses the hello, so no
    # policy can be chosen for one name while OpenSSL serves another.
    flight = with_extensions(ALPN, extension(0, data) + strip_sni(EXTENSIONS))
    hello = assert_invisible(server_ctx, flight)
    assert isinstance(hello, ClientHello), reason
    assert hello.server_name is None
    verdict = openssl_verdict(server_ctx, hello.raw)
    assert verdict.refused
    assert verdict.sent == b"\x15\x03\x03\x00\x02\x02\x32"  # decode_error


def strip_sni(extensions: bytes) -> bytes:
    """The extensions block without its server_name extension."""
    assert extensions[:2] == b"\x00\x00"
    return extensions[4 + int.from_bytes(extensions[2:4], "big") :]


def replace_extension(extensions: bytes, ext_type: int, data: bytes) -> bytes:
    """The extensions block with the data of one extension replaced."""
    out = b""
    pos = 0
    while pos < len(extensions):
        end = pos + 4 + int.from_bytes(extensions[pos + 2 : pos + 4], "big")
        if int.from_bytes(extensions[pos : pos + 2], "big") == ext_type:
            out += extension(ext_type, data)
        else:
            out += extensions[pos:end]
        pos = end
    return out


@pytest.mark.parametrize(
    ("ext_type", "data"),
    [
        (16, b""),
        (16, b"\x00\x00"),
        (16, b"\x00\x04\x02h2"),
        (16, b"\x00\x03\x00\x01h"),
        (16, b"\x00\x03\x05h2"),
        (43, b""),
        (43, b"\x03\x03\x04\x03"),
        (43, b"\x04\x03\x04"),
    ],
    ids=[
        "alpn_empty",
        "alpn_empty_list",
        "alpn_list_length",
        "alpn_empty_name",
        "alpn_name_overrun",
        "versions_empty",
        "versions_odd",
        "versions_list_length",
    ],
)
def test_undecodable_alpn_or_versions_are_absent_and_openssl_refuses_them(
    server_ctx: ssl.SSLContext, ext_type: int, data: bytes
) -> None:
    flight = with_extensions(ALPN, replace_extension(EXTENSIONS, ext_type, data))
    hello = assert_invisible(server_ctx, flight)
    assert isinstance(hello, ClientHello)
    assert ext_type in hello.extension_types
    if ext_type == 16:
        assert hello.alpn_protocols == ()
    else:
        assert hello.supported_versions == ()
        assert hello.max_version is None
    assert openssl_verdict(server_ctx, hello.raw).refused


def test_server_name_is_reported_as_sent() -> None:
    flight = with_extensions(ALPN, sni(b"WWW.Example.COM.") + strip_sni(EXTENSIONS))
    hello = ClientHelloReader().feed(flight)
    assert hello is not None
    assert hello.server_name == "WWW.Example.COM."
    assert hello.normalized_server_name == "www.example.com"


def test_server_name_that_openssl_refuses_is_still_reported(
    server_ctx: ssl.SSLContext,
) -> None:
    # A NUL byte: OpenSSL refuses the name with unrecognized_name once the
    # bytes are replayed; the reader does not judge names.
    flight = with_extensions(ALPN, sni(b"a\x00b.example") + strip_sni(EXTENSIONS))
    hello = ClientHelloReader().feed(flight)
    assert hello is not None
    assert hello.server_name == "a\x00b.example"
    assert (
        openssl_verdict(server_ctx, hello.raw).sent == b"\x15\x03\x03\x00\x02\x02\x70"
    )


def test_non_ascii_server_name_cannot_match_an_ascii_one(
    server_ctx: ssl.SSLContext,
) -> None:
    name = "\N{KELVIN SIGN}.example".encode()
    flight = with_extensions(ALPN, sni(name) + strip_sni(EXTENSIONS))
    hello = assert_invisible(server_ctx, flight)
    assert isinstance(hello, ClientHello)
    assert hello.server_name is not None
    assert hello.server_name.encode("ascii", "surrogateescape") == name
    assert hello.normalized_server_name == hello.server_name
    assert not hello.server_name.isascii()


@pytest.mark.parametrize(
    ("sent", "normalized"),
    [
        ("example.com", "example.com"),
        ("EXAMPLE.com", "example.com"),
        ("example.com.", "example.com"),
        ("Example.COM.", "example.com"),
        ("example.com..", "example.com."),
        ("", ""),
        ("\N{KELVIN SIGN}.example", "\N{KELVIN SIGN}.example"),
        ("\udcc3\udc89.example", "\udcc3\udc89.example"),
    ],
)
def test_normalized_server_name_folds_only_ascii_case_and_one_dot(
    sent: str, normalized: str
) -> None:
    hello = ClientHello(0x0303, (), (0,), server_name=sent)
    assert hello.normalized_server_name == normalized


def test_no_server_name_normalizes_to_none() -> None:
    assert ClientHello(0x0303, (), ()).normalized_server_name is None


# -- versions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("legacy", "versions", "expected"),
    [
        (0x0303, None, TLS12),
        (0x0304, None, TLS12),  # no supported_versions: TLS 1.3 impossible
        (0x0301, None, ssl.TLSVersion.TLSv1),
        (0x0300, None, ssl.TLSVersion.SSLv3),
        (0x0200, None, None),
        (0x0303, (0x0304, 0x0303), TLS13),
        (0x0303, (0x0A0A, 0x0303), TLS12),  # GREASE is skipped
        (0x0303, (0x7F1C,), None),
        (0x0303, (), None),
    ],
)
def test_max_version(
    legacy: int, versions: tuple[int, ...] | None, expected: ssl.TLSVersion | None
) -> None:
    types = () if versions is None else (43,)
    hello = ClientHello(legacy, (), types, supported_versions=versions or ())
    assert hello.max_version is expected
    assert hello.offers_tls13 is (0x0304 in (versions or ()))


# -- limits and misuse ----------------------------------------------------------


def test_max_size_below_openssls_refuses_like_openssls_limit() -> None:
    reader = ClientHelloReader(max_size=len(ALPN) - 5)
    with pytest.raises(tv.ProtocolViolation) as caught:
        reader.feed(record(ALPN[:4]))
    assert caught.value.alert_sent is tv.Alert.ILLEGAL_PARAMETER
    assert reader.data_to_send() == b"\x15\x03\x03\x00\x02\x02\x2f"
    assert ClientHelloReader(max_size=len(ALPN) - 4).feed(FLIGHT) is not None


def test_max_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_size"):
        ClientHelloReader(max_size=0)


def test_buffered_bytes_are_bounded() -> None:
    # Empty records cost nothing in OpenSSL, but the reader keeps every byte
    # for replay: it stops at twice max_size plus one largest record.
    reader = ClientHelloReader(max_size=1000)
    limit = 2 * 1000 + 5 + 16704
    header = hello_message(bytes(996))[:4]
    fed = 0
    with pytest.raises(tv.ProtocolViolation) as caught:
        for i in range(1000):
            chunk = record(b"") * 32 + record(header[i : i + 1] or b"\x00")
            reader.feed(chunk)
            fed += len(chunk)
            assert len(reader.raw) <= limit
    assert fed <= limit < fed + len(record(b"")) * 32 + 6
    assert caught.value.alert_sent is tv.Alert.ILLEGAL_PARAMETER


@HYPOTHESIS
@given(st.data())
def test_memory_stays_within_the_bound_for_any_fragmentation(
    data: st.DataObject,
) -> None:
    max_size = data.draw(st.integers(300, 2000))
    reader = ClientHelloReader(max_size=max_size)
    limit = 2 * max_size + 5 + 16704
    # All zeros: the body is malformed, so the reader refuses it when it is
    # complete (decode_error), if its own bound did not stop it first.
    message = hello_message(bytes(max_size))
    pos = 0
    with pytest.raises(tv.ProtocolViolation) as caught:
        while pos < len(message):
            size = data.draw(st.integers(1, 64))
            empties = data.draw(st.integers(0, 32))
            chunk = record(b"") * empties + record(message[pos : pos + size])
            assert reader.feed(chunk) is None
            pos += size
            assert len(reader.raw) <= limit
    assert caught.value.alert_sent in (
        tv.Alert.ILLEGAL_PARAMETER,
        tv.Alert.DECODE_ERROR,
    )


def test_feeding_a_finished_reader_is_a_programming_error() -> None:
    reader = ClientHelloReader()
    assert reader.feed(FLIGHT) is not None
    assert reader.hello is not None
    reader.feed_eof()  # the hello is complete: EOF is OpenSSL's business
    with pytest.raises(RuntimeError, match="already complete"):
        reader.feed(b"more")
    failed = ClientHelloReader()
    with pytest.raises(tv.NotTLS):
        failed.feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(RuntimeError, match="already failed"):
        failed.feed(b"x")
    with pytest.raises(RuntimeError, match="already failed"):
        failed.feed_eof()


def test_errors_carry_the_peer_address() -> None:
    reader = ClientHelloReader(peer_address=("192.0.2.1", 50000))
    with pytest.raises(tv.NotTLS) as caught:
        reader.feed(b"GET / HTTP/1.1\r\n")
    assert caught.value.peer_address == ("192.0.2.1", 50000)


# -- any bytes at all ----------------------------------------------------------


def feed_all(chunks: list[bytes]) -> Iterator[ClientHello | tv.TLSError | None]:
    reader = ClientHelloReader()
    try:
        for chunk in chunks:
            hello = reader.feed(chunk)
            yield hello
            if hello is not None:
                return
        reader.feed_eof()
    except (tv.NotTLS, tv.ProtocolViolation, tv.TruncatedStream) as exc:
        yield exc


@HYPOTHESIS
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=64),
            st.builds(
                lambda t, v, body: record(body, t, v),
                st.sampled_from([20, 21, 22, 23, 22, 22]),
                st.integers(0x0200, 0x0400),
                st.binary(max_size=40),
            ),
            st.builds(lambda body: b"\x16\x03\x01" + body, st.binary(max_size=8)),
        ),
        max_size=12,
    )
)
def test_arbitrary_bytes_give_none_a_hello_or_a_typed_error(
    chunks: list[bytes],
) -> None:
    outcomes = list(feed_all(chunks))
    for outcome in outcomes:
        assert outcome is None or isinstance(outcome, ClientHello | tv.TLSError)


# -- mutated real hellos ----------------------------------------------------------


def length_fields(message: bytes) -> list[tuple[int, int]]:
    """(offset, width) of every length field found in a ClientHello message."""
    fields = [(1, 3)]
    pos = 4 + 34
    for width in (1, 2, 1, 2):
        if pos + width > len(message):
            return fields
        fields.append((pos, width))
        pos += width
        if len(fields) < 5:
            pos += int.from_bytes(message[pos - width : pos], "big")
    while pos + 4 <= len(message):
        fields.append((pos + 2, 2))
        ext_type = int.from_bytes(message[pos : pos + 2], "big")
        length = int.from_bytes(message[pos + 2 : pos + 4], "big")
        if ext_type in (0, 10, 13, 16, 51):  # lists with a 2-byte length
            fields.append((pos + 4, 2))
        if ext_type == 43:
            fields.append((pos + 4, 1))
        pos += 4 + length
    return fields


Mutation = Callable[[st.DrawFn, bytes], bytes]


def change_length(draw: st.DrawFn, message: bytes) -> bytes:
    offset, width = draw(st.sampled_from(length_fields(message)))
    value = int.from_bytes(message[offset : offset + width], "big")
    value = draw(
        st.one_of(
            st.integers(max(0, value - 3), value + 3),
            st.integers(0, (1 << (8 * width)) - 1),
        )
    ) % (1 << (8 * width))
    return message[:offset] + value.to_bytes(width, "big") + message[offset + width :]


def flip_bit(draw: st.DrawFn, data: bytes) -> bytes:
    i = draw(st.integers(0, len(data) - 1))
    return data[:i] + bytes((data[i] ^ (1 << draw(st.integers(0, 7))),)) + data[i + 1 :]


def set_byte(draw: st.DrawFn, data: bytes) -> bytes:
    i = draw(st.integers(0, len(data) - 1))
    return data[:i] + bytes((draw(st.integers(0, 255)),)) + data[i + 1 :]


def truncate(draw: st.DrawFn, data: bytes) -> bytes:
    return data[: draw(st.integers(0, len(data) - 1))]


def insert_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    i = draw(st.integers(0, len(data)))
    return data[:i] + draw(st.binary(min_size=1, max_size=6)) + data[i:]


def delete_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    i = draw(st.integers(0, len(data) - 1))
    return data[:i] + data[i + draw(st.integers(1, 6)) :]


def duplicate_extension(draw: st.DrawFn, message: bytes) -> bytes:
    head, extensions = split_extensions(message)
    blocks = []
    pos = 0
    while pos + 4 <= len(extensions):
        end = pos + 4 + int.from_bytes(extensions[pos + 2 : pos + 4], "big")
        blocks.append(extensions[pos:end])
        pos = end
    if not blocks:
        return message
    blocks.insert(draw(st.integers(0, len(blocks))), draw(st.sampled_from(blocks)))
    joined = b"".join(blocks)
    return hello_message(head + len(joined).to_bytes(2, "big") + joined)


MESSAGE_MUTATIONS: list[Mutation] = [
    change_length,
    change_length,
    flip_bit,
    set_byte,
    truncate,
    insert_bytes,
    delete_bytes,
    duplicate_extension,
]
FLIGHT_MUTATIONS: list[Mutation] = [flip_bit, set_byte, truncate, insert_bytes]


@st.composite
def reframed(draw: st.DrawFn, message: bytes) -> bytes:
    """The message in records of random sizes and versions, with extras."""
    out = b""
    pos = 0
    while pos < len(message):
        if draw(st.integers(0, 9)) == 0:
            out += record(
                draw(st.sampled_from([b"", b"", b"\x01", b"\x02\x28"])),
                draw(st.sampled_from([20, 21, 22, 23])),
                draw(st.sampled_from([0x0301, 0x0303, 0x03FF])),
            )
        size = draw(st.integers(1, 300))
        version = draw(
            st.sampled_from([0x0301, 0x0301, 0x0303, 0x0300, 0x03FF, 0x0203])
        )
        out += record(message[pos : pos + size], version=version)
        pos += size
    return out


@st.composite
def mutated_flights(draw: st.DrawFn) -> bytes:
    message = message_of(CORPUS[draw(st.sampled_from(SMALL))])
    for _ in range(draw(st.integers(1, 2))):
        mutation = draw(st.sampled_from(MESSAGE_MUTATIONS))
        # The walkers above assume a well-formed start; a second mutation may
        # find none, and then the message stays as the first one left it.
        with contextlib.suppress(IndexError):
            message = mutation(draw, message) or message
    flight = draw(st.one_of(st.just(record(message)), reframed(message)))
    if draw(st.booleans()):
        flight = draw(st.sampled_from(FLIGHT_MUTATIONS))(draw, flight) or flight
    return flight


@HYPOTHESIS
@given(mutated_flights())
def test_mutated_hellos_are_answered_as_openssl_answers(
    server_ctx: ssl.SSLContext, flight: bytes
) -> None:
    assert_invisible(server_ctx, flight)


@HYPOTHESIS
@given(
    st.one_of(
        st.binary(min_size=5, max_size=80),
        st.builds(lambda tail: b"\x16\x03\x01" + tail, st.binary(max_size=80)),
        st.builds(lambda tail: b"\x16\x03\x01\x00" + tail, st.binary(max_size=80)),
        st.builds(lambda tail: b"\x80" + tail, st.binary(max_size=80)),
    )
)
def test_random_bytes_are_answered_as_openssl_answers(
    server_ctx: ssl.SSLContext, data: bytes
) -> None:
    assert_invisible(server_ctx, data, eof=True)
