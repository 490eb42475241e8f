"""The failure classifier, fed real OpenSSL output.

Most tests drive a real :class:`TLSEngine` (an ``ssl.SSLObject`` between two
memory BIOs) with real bytes: a client engine that has sent its ClientHello
receives a fatal plaintext alert record built per RFC 8446 §6, exactly as a
server refusing it would send one, and OpenSSL parses it.  The alert codes
are every TLS alert in the registry, including the four whose
``SSLError.reason`` is ``None`` on OpenSSL 3.0 (115, 117, 120, 121); for 117
and 121 even the message says only "unknown error", and just the engine's own
reading of the wire can name the alert.

Negotiation failures run over real loopback sockets, so that what each side
reports is what the other side really sent.
"""

from __future__ import annotations

import copy
import pickle
import ssl
from collections.abc import Callable

import pytest
import trio
from certs import CertKit
from loopback import run_pair, socket_pair

import trio_verify as tv
from trio_verify._engine import TLSEngine
from trio_verify._errors import alert_from_ssl_error

TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3

Stream = tv.TLSStream[trio.SocketStream]

# Every TLS alert description in the registry (RFC 8446 §6 and TLS 1.2's).
ALERT_CODES = [
    0, 10, 20, 21, 22, 30, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 60,
    70, 71, 80, 86, 90, 100, 109, 110, 111, 112, 113, 114, 115, 116, 117, 120,
    121,
]  # fmt: skip

# OpenSSL 3.0 reports these with reason None and, for 117 and 121, the
# message "unknown error" (measured; see docs/errors.rst, "Alerts").
UNNAMED_BY_OPENSSL = {0, 117, 121}

# docs/errors.rst: the PeerAlert subclass for an alert received before any
# ServerHello, when no certificate can have been judged yet.
PEER_CLASS_BEFORE_HELLO: dict[int, type[tv.PeerAlert]] = {
    40: tv.PeerHandshakeFailure,
    49: tv.PeerDeniedAccess,
    70: tv.PeerProtocolVersion,
    71: tv.PeerProtocolVersion,
    86: tv.PeerProtocolVersion,
    112: tv.PeerUnrecognizedName,
    116: tv.PeerRequiresCertificate,
    120: tv.PeerNoApplicationProtocol,
}

# Refusals of the ClientHello itself (what a listener's selector rejects with).
REFUSALS_OF_THE_HELLO = {49, 112, 120}

FATAL = 2


def alert_record(code: int, level: int = FATAL) -> bytes:
    """A plaintext TLS alert record (RFC 8446 §6)."""
    return bytes([0x15, 0x03, 0x03, 0x00, 0x02, level, code])


def alert_in(record: bytes) -> tv.Alert:
    """The alert a single plaintext alert record carries."""
    assert len(record) == 7, record
    assert record[0] == 0x15, record
    assert record[5] == FATAL, record
    return tv.Alert(record[6])


def client_awaiting_server_hello(certs: CertKit) -> TLSEngine:
    """A client engine that has sent its ClientHello and waits for the reply."""
    engine = TLSEngine(
        certs.client_context(), server_side=False, server_hostname="localhost"
    )
    assert engine.do_handshake() is False
    hello = engine.data_to_send()
    assert hello[:1] == b"\x16"
    return engine


def server_awaiting_client_hello(certs: CertKit) -> TLSEngine:
    return TLSEngine(certs.server_context("valid"), server_side=True)


def handshake_error(
    engine: TLSEngine, data: bytes = b"", *, eof: bool = False
) -> tv.TLSError:
    """Feed ``data`` (and EOF) to ``engine``; return what its handshake raises."""
    if data:
        engine.receive_data(data)
    if eof:
        engine.receive_eof()
    with pytest.raises(tv.TLSError) as info:
        engine.do_handshake()
    return info.value


def pump(client: TLSEngine, server: TLSEngine) -> list[tv.TLSError | None]:
    """Run a handshake between two engines in memory; return each one's error."""
    engines = [client, server]
    errors: list[tv.TLSError | None] = [None, None]
    done = [False, False]
    for _ in range(20):
        moved = False
        for i, engine in enumerate(engines):
            if not done[i]:
                try:
                    done[i] = engine.do_handshake()
                except tv.TLSError as exc:
                    errors[i], done[i] = exc, True
            data = engine.data_to_send()
            if data:
                engines[1 - i].receive_data(data)
                moved = True
        if all(done) and not moved:
            return errors
    raise AssertionError("the handshake did not settle")


# ------------------------------------------- (a) alerts before ServerHello


@pytest.mark.parametrize("code", ALERT_CODES)
def test_openssl_names_alerts_except_the_unnamed_ones(code: int) -> None:
    """What ``SSLError`` alone tells, on a bare ``SSLObject`` without the engine."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    incoming.write(alert_record(code))
    with pytest.raises(ssl.SSLError) as info:
        obj.do_handshake()
    expected = None if code in UNNAMED_BY_OPENSSL else tv.Alert(code)
    assert alert_from_ssl_error(info.value) == expected


@pytest.mark.parametrize("code", ALERT_CODES)
def test_client_names_every_alert_received_before_server_hello(
    certs: CertKit, code: int
) -> None:
    err = handshake_error(client_awaiting_server_hello(certs), alert_record(code))
    assert err.alert_received is not None, f"alert {code} not named: {err!r}"
    assert err.alert_received == code


@pytest.mark.parametrize("code", ALERT_CODES)
def test_client_classifies_every_alert_received_before_server_hello(
    certs: CertKit, code: int
) -> None:
    err = handshake_error(client_awaiting_server_hello(certs), alert_record(code))
    expected = PEER_CLASS_BEFORE_HELLO.get(code, tv.PeerProtocolError)
    assert type(err) is expected, f"alert {code}: {type(err).__name__}: {err}"


@pytest.mark.parametrize("code", ALERT_CODES)
def test_client_places_every_alert_before_server_hello_in_a_hello_phase(
    certs: CertKit, code: int
) -> None:
    err = handshake_error(client_awaiting_server_hello(certs), alert_record(code))
    assert err.side == "client"
    assert err.surfaced_in == "handshake"
    if code in REFUSALS_OF_THE_HELLO:
        assert err.phase is tv.Phase.CLIENT_HELLO
    elif code == tv.Alert.CERTIFICATE_REQUIRED:
        # No certificate can have been asked for yet; either hello phase fits.
        assert err.phase in (tv.Phase.CLIENT_HELLO, tv.Phase.SERVER_HELLO)
    else:
        assert err.phase is tv.Phase.SERVER_HELLO


@pytest.mark.parametrize("code", ALERT_CODES)
def test_client_sends_nothing_back_for_an_alert_received(
    certs: CertKit, code: int
) -> None:
    engine = client_awaiting_server_hello(certs)
    err = handshake_error(engine, alert_record(code))
    assert err.alert_sent is None
    assert engine.data_to_send() == b""


# The alerts whose SSLError.reason is None on OpenSSL 3.0.
@pytest.mark.parametrize("code", [115, 117, 120, 121])
def test_alert_named_only_by_the_wire_keeps_the_ssl_error(
    certs: CertKit, code: int
) -> None:
    err = handshake_error(client_awaiting_server_hello(certs), alert_record(code))
    assert isinstance(err.ssl_error, ssl.SSLError)
    # typeshed calls it str, but OpenSSL 3.0 has no reason for these alerts.
    reason: str | None = err.ssl_error.reason
    assert reason is None
    assert err.__cause__ is err.ssl_error


def test_warning_close_notify_before_server_hello_is_a_truncated_handshake(
    certs: CertKit,
) -> None:
    engine = client_awaiting_server_hello(certs)
    err = handshake_error(engine, alert_record(0, level=1))
    assert type(err) is tv.TruncatedStream
    assert err.alert_received is tv.Alert.CLOSE_NOTIFY


# --------------------------------------- (b) alerts before ClientHello


@pytest.mark.parametrize("code", ALERT_CODES)
def test_server_names_an_alert_received_instead_of_a_client_hello(
    certs: CertKit, code: int
) -> None:
    err = handshake_error(server_awaiting_client_hello(certs), alert_record(code))
    assert isinstance(err, tv.PeerAlert), f"alert {code}: {type(err).__name__}: {err}"
    assert err.alert_received == code


@pytest.mark.parametrize("code", ALERT_CODES)
def test_server_answers_an_alert_instead_of_a_client_hello_with_unexpected_message(
    certs: CertKit, code: int
) -> None:
    """OpenSSL does not read an alert as a server's first record: it refuses it."""
    engine = server_awaiting_client_hello(certs)
    handshake_error(engine, alert_record(code))
    assert alert_in(engine.data_to_send()) is tv.Alert.UNEXPECTED_MESSAGE


@pytest.mark.parametrize("code", ALERT_CODES)
def test_server_reports_the_alert_it_sends_back(certs: CertKit, code: int) -> None:
    engine = server_awaiting_client_hello(certs)
    err = handshake_error(engine, alert_record(code))
    assert err.alert_sent == alert_in(engine.data_to_send())


@pytest.mark.parametrize("code", ALERT_CODES)
def test_server_places_an_alert_instead_of_a_client_hello_in_client_hello(
    certs: CertKit, code: int
) -> None:
    err = handshake_error(server_awaiting_client_hello(certs), alert_record(code))
    assert err.side == "server"
    assert err.phase is tv.Phase.CLIENT_HELLO


# ------------------------------------------------------------- (c) NotTLS


HTTP_METHODS = [
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "PATCH",
]


@pytest.mark.parametrize("method", HTTP_METHODS)
def test_http_request_to_a_server_is_not_tls(certs: CertKit, method: str) -> None:
    request = f"{method} / HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
    err = handshake_error(server_awaiting_client_hello(certs), request)
    assert type(err) is tv.NotTLS
    assert "plaintext HTTP" in str(err)
    assert err.phase is tv.Phase.CLIENT_HELLO
    assert err.side == "server"


def test_http_request_to_a_server_is_named_by_openssl(certs: CertKit) -> None:
    err = handshake_error(
        server_awaiting_client_hello(certs), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert isinstance(err.ssl_error, ssl.SSLError)
    assert err.ssl_error.reason == "HTTP_REQUEST"


def test_http_request_to_a_server_gets_no_alert(certs: CertKit) -> None:
    engine = server_awaiting_client_hello(certs)
    err = handshake_error(engine, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert err.alert_sent is None
    assert engine.data_to_send() == b""


def test_http_response_to_a_client_is_not_tls(certs: CertKit) -> None:
    engine = client_awaiting_server_hello(certs)
    response = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
    err = handshake_error(engine, response)
    assert type(err) is tv.NotTLS
    assert isinstance(err.ssl_error, ssl.SSLError)
    assert err.ssl_error.reason == "WRONG_VERSION_NUMBER"
    assert "plaintext HTTP" in str(err)
    assert err.phase is tv.Phase.SERVER_HELLO
    assert err.alert_sent is None
    assert engine.data_to_send() == b""


NON_TLS_BYTES = [
    pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n", id="ssh-banner"),
    pytest.param(b"220 mail.example ESMTP ready\r\n", id="smtp-banner"),
    pytest.param(bytes(64), id="zeros"),
    pytest.param(bytes(range(0xC0, 0x100)), id="binary"),
]


@pytest.mark.parametrize("side", ["client", "server"])
@pytest.mark.parametrize("payload", NON_TLS_BYTES)
def test_non_tls_bytes_are_not_tls(certs: CertKit, side: str, payload: bytes) -> None:
    engine = (
        client_awaiting_server_hello(certs)
        if side == "client"
        else server_awaiting_client_hello(certs)
    )
    err = handshake_error(engine, payload)
    assert type(err) is tv.NotTLS
    assert isinstance(err, tv.ProtocolViolation)
    assert repr(payload[:8]) in str(err)
    assert engine.data_to_send() == b""


MALFORMED_HELLOS = [
    # A handshake record holding message type 99, which does not exist.
    pytest.param(b"\x16\x03\x01\x00\x04\x63\x00\x00\x00", id="unknown-message"),
    # A ClientHello whose body is one byte long.
    pytest.param(b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00", id="short-hello"),
]


@pytest.mark.parametrize("record", MALFORMED_HELLOS)
def test_malformed_handshake_record_is_a_protocol_violation(
    certs: CertKit, record: bytes
) -> None:
    engine = server_awaiting_client_hello(certs)
    err = handshake_error(engine, record)
    assert type(err) is tv.ProtocolViolation
    assert err.phase is tv.Phase.CLIENT_HELLO
    assert err.alert_sent == alert_in(engine.data_to_send())


# ------------------------------------------------------------------ (d) EOF


def test_eof_before_server_hello_is_a_truncated_stream(certs: CertKit) -> None:
    err = handshake_error(client_awaiting_server_hello(certs), eof=True)
    assert type(err) is tv.TruncatedStream
    assert err.side == "client"
    assert err.phase is tv.Phase.CLIENT_HELLO
    assert isinstance(err.ssl_error, ssl.SSLEOFError)


def test_eof_inside_a_client_hello_is_a_truncated_stream(certs: CertKit) -> None:
    client = TLSEngine(
        certs.client_context(), server_side=False, server_hostname="localhost"
    )
    client.do_handshake()
    hello = client.data_to_send()
    engine = server_awaiting_client_hello(certs)
    err = handshake_error(engine, hello[: len(hello) // 2], eof=True)
    assert type(err) is tv.TruncatedStream
    assert err.side == "server"
    assert err.phase is tv.Phase.CLIENT_HELLO


@pytest.mark.parametrize("version", [TLS12, TLS13], ids=["TLSv1.2", "TLSv1.3"])
def test_eof_after_server_hello_is_a_truncated_stream(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    client = TLSEngine(
        certs.client_context(versions=version),
        server_side=False,
        server_hostname="localhost",
    )
    server = TLSEngine(certs.server_context(versions=version), server_side=True)
    client.do_handshake()
    server.receive_data(client.data_to_send())
    server.do_handshake()
    flight = server.data_to_send()
    server_hello = flight[: 5 + int.from_bytes(flight[3:5], "big")]
    err = handshake_error(client, server_hello, eof=True)
    assert type(err) is tv.TruncatedStream
    assert err.tls_version == ("TLSv1.2" if version is TLS12 else "TLSv1.3")


@pytest.mark.parametrize("version", [TLS12, TLS13], ids=["TLSv1.2", "TLSv1.3"])
def test_eof_after_server_hello_is_in_the_phase_a_timeout_would_report(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    """The client waits for the server's certificate, not for key confirmation.

    ``TLSEngine.current_phase()``, which a handshake timeout reports, says
    SERVER_CERTIFICATE at this point; a truncation at the same point is in
    the same phase.
    """
    client = TLSEngine(
        certs.client_context(versions=version),
        server_side=False,
        server_hostname="localhost",
    )
    server = TLSEngine(certs.server_context(versions=version), server_side=True)
    client.do_handshake()
    server.receive_data(client.data_to_send())
    server.do_handshake()
    flight = server.data_to_send()
    client.receive_data(flight[: 5 + int.from_bytes(flight[3:5], "big")])
    assert client.do_handshake() is False
    waiting_in = client.current_phase()
    assert waiting_in is tv.Phase.SERVER_CERTIFICATE
    err = handshake_error(client, eof=True)
    assert err.phase is waiting_in


async def test_transport_closed_during_handshake_is_a_truncated_stream(
    certs: CertKit,
) -> None:
    client_sock, server_sock = await socket_pair()
    await server_sock.aclose()
    stream = tv.TLSStream(
        client_sock, tv.ClientPolicy(trust=certs.ca_pem), server_hostname="localhost"
    )
    with trio.fail_after(5), pytest.raises(tv.TruncatedStream) as info:
        await stream.do_handshake()
    assert info.value.surfaced_in == "handshake"
    assert info.value.side == "client"
    await stream.aclose()


# ---------------------------------------------------------- (e) negotiation


async def handshake(stream: Stream) -> None:
    await stream.do_handshake()


async def version_mismatch(certs: CertKit) -> tuple[BaseException | None, ...]:
    """A client requiring TLS 1.3 against a server offering at most TLS 1.2."""
    ident = certs.server("valid")
    server = tv.ServerPolicy(
        identity=tv.Identity.from_pem(ident.cert_chain_pem, ident.key_pem),
        maximum_version=TLS12,
    )
    client = tv.ClientPolicy(trust=certs.ca_pem, minimum_version=TLS13)
    client_seen, server_seen = await run_pair(
        server, client, client_action=handshake, server_action=handshake
    )
    return client_seen.error, server_seen.error


async def no_shared_cipher(certs: CertKit) -> tuple[BaseException | None, ...]:
    """TLS 1.2 with disjoint cipher suites on the two sides."""
    server = certs.server_context("valid", versions=TLS12)
    server.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    client = certs.client_context(versions=TLS12)
    client.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384")
    client_seen, server_seen = await run_pair(
        server, client, client_action=handshake, server_action=handshake
    )
    return client_seen.error, server_seen.error


async def test_client_refused_for_its_version_gets_peer_protocol_version(
    certs: CertKit,
) -> None:
    err, _ = await version_mismatch(certs)
    assert type(err) is tv.PeerProtocolVersion
    assert err.alert_received is tv.Alert.PROTOCOL_VERSION
    assert err.phase is tv.Phase.SERVER_HELLO
    assert err.side == "client"


async def test_server_without_a_shared_version_is_negotiation_failed(
    certs: CertKit,
) -> None:
    _, err = await version_mismatch(certs)
    assert type(err) is tv.NegotiationFailed
    assert err.alert_sent is tv.Alert.PROTOCOL_VERSION
    assert err.phase is tv.Phase.SERVER_HELLO
    assert err.side == "server"


async def test_server_without_a_shared_cipher_is_negotiation_failed(
    certs: CertKit,
) -> None:
    _, err = await no_shared_cipher(certs)
    assert type(err) is tv.NegotiationFailed
    assert err.alert_sent is tv.Alert.HANDSHAKE_FAILURE
    assert err.phase is tv.Phase.SERVER_HELLO


async def test_client_without_a_shared_cipher_gets_peer_handshake_failure(
    certs: CertKit,
) -> None:
    err, _ = await no_shared_cipher(certs)
    assert type(err) is tv.PeerHandshakeFailure
    assert err.alert_received is tv.Alert.HANDSHAKE_FAILURE
    assert err.phase is tv.Phase.SERVER_HELLO


# --------------------------------------------------- (f) errors as values


ATTRIBUTES = (
    "message",
    "phase",
    "surfaced_in",
    "side",
    "tls_version",
    "alert_sent",
    "alert_received",
    "server_name",
    "peer_address",
    "peer_chain",
    "verify_code",
)


def unknown_issuer(certs: CertKit) -> tv.TLSError:
    """A client refusing a server certificate from an untrusted CA."""
    client = TLSEngine(
        certs.client_context(), server_side=False, server_hostname="localhost"
    )
    server = TLSEngine(certs.server_context("other_ca"), server_side=True)
    client_error, _ = pump(client, server)
    assert isinstance(client_error, tv.UnknownIssuer)
    return client_error


def peer_alert(certs: CertKit) -> tv.TLSError:
    engine = client_awaiting_server_hello(certs)
    return handshake_error(engine, alert_record(tv.Alert.UNKNOWN_CA))


def test_tls_error_pickles(certs: CertKit) -> None:
    err = peer_alert(certs)
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is type(err)
    for name in ATTRIBUTES:
        assert getattr(clone, name) == getattr(err, name), name
    assert str(clone) == str(err)


def test_tls_error_pickles_with_its_ssl_error(certs: CertKit) -> None:
    err = peer_alert(certs)
    assert isinstance(err.ssl_error, ssl.SSLError)
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone.ssl_error) is type(err.ssl_error)
    assert clone.ssl_error.reason == err.ssl_error.reason == "TLSV1_ALERT_UNKNOWN_CA"


def test_certificate_error_pickles_with_verify_code_and_peer_chain(
    certs: CertKit,
) -> None:
    err = unknown_issuer(certs)
    assert err.peer_chain
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is tv.UnknownIssuer
    assert clone.verify_code == err.verify_code == 20
    assert clone.peer_chain == err.peer_chain
    assert clone.peer_chain[0] == certs.server("other_ca").info
    assert str(clone) == str(err)


@pytest.mark.parametrize("make", [peer_alert, unknown_issuer], ids=["peer", "verify"])
def test_tls_error_copy_keeps_class_and_attributes(
    certs: CertKit, make: Callable[[CertKit], tv.TLSError]
) -> None:
    err = make(certs)
    clone = copy.copy(err)
    assert type(clone) is type(err)
    assert clone is not err
    for name in (*ATTRIBUTES, "ssl_error"):
        assert getattr(clone, name) == getattr(err, name), name
    assert str(clone) == str(err)


def test_tls_error_is_still_a_trio_broken_resource_error(certs: CertKit) -> None:
    err = pickle.loads(pickle.dumps(peer_alert(certs)))
    assert isinstance(err, trio.BrokenResourceError)


def test_str_names_side_phase_and_received_alert(certs: CertKit) -> None:
    text = str(peer_alert(certs))
    assert "client" in text
    assert "SERVER_HELLO" in text
    assert "received alert unknown_ca (48)" in text


def test_str_names_the_alert_sent(certs: CertKit) -> None:
    text = str(unknown_issuer(certs))
    assert "client" in text
    assert "SERVER_CERTIFICATE" in text
    assert "sent alert unknown_ca (48)" in text


def test_str_names_where_a_late_failure_surfaced() -> None:
    err = tv.PeerRejectedCertificate(
        "peer sent unknown_ca (48)",
        phase=tv.Phase.CLIENT_CERTIFICATE,
        side="client",
        surfaced_in="receive",
        tls_version="TLSv1.3",
        alert_received=tv.Alert.UNKNOWN_CA,
    )
    text = str(err)
    assert "CLIENT_CERTIFICATE" in text
    assert "surfaced in receive" in text
    assert "TLSv1.3" in text
