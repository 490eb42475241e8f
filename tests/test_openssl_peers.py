"""trio_verify against independent TLS peers: ``openssl s_client`` and ``s_server``.

Every rejection is checked from both ends.  On our side: the typed error, its
phase, where it surfaced, and the alert sent or received.  On OpenSSL's side:
the error line the tool prints when it *receives* the alert, with the alert's
name and number ("...:tlsv1 alert unknown ca:...:SSL alert number 48"), which
proves the alert crossed the wire rather than being queued.

How to make s_client read a verdict that comes after its own handshake: in
TLS 1.3 the server judges the client's certificate after the client has
finished, and s_client, now in its interactive loop, quits ("DONE") at end of
file on stdin without reading the socket again.  Measured on OpenSSL 3.0.19:
given a line and then end of file on stdin, s_client prints "DONE", exits 0
and never prints the alert.  So these tests keep s_client's stdin open while
they wait: its select loop then wakes for the socket, reads the alert, prints
it and exits.  (``-ign_eof``, which ``-quiet`` implies, works too, but it
turns off s_client's commands such as ``R``.)
"""

from __future__ import annotations

import contextlib
import errno
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from certs import CertKit, ClientKind, Identity, ServerKind
from loopback import Outcome
from openssl_peer import (
    OpenSSLProcess,
    TLSFlag,
    identity_args,
    open_helper_nursery,
    received_alert,
    require_client_certificate_args,
    run_openssl,
    s_client_args,
    s_server,
)

import trio_verify as tv

pytestmark = pytest.mark.openssl_cli

TIMEOUT = 10.0

TLS_VERSIONS = [
    pytest.param("-tls1_2", id="TLSv1.2"),
    pytest.param("-tls1_3", id="TLSv1.3"),
]
VERSIONS: dict[TLSFlag, ssl.TLSVersion] = {
    "-tls1_2": ssl.TLSVersion.TLSv1_2,
    "-tls1_3": ssl.TLSVersion.TLSv1_3,
}
VERSION_NAMES: dict[TLSFlag, str] = {"-tls1_2": "TLSv1.2", "-tls1_3": "TLSv1.3"}

Handler = Callable[[tv.TLSStream[trio.SocketStream]], Awaitable[Any]]


# ------------------------------------------------------------------ helpers


def as_identity(identity: Identity) -> tv.Identity:
    return tv.Identity.from_files(identity.chain_file, identity.key_file)


def server_policy(
    certs: CertKit,
    flag: TLSFlag,
    client_auth: tv.ClientAuth = tv.ClientAuth.REQUIRED,
) -> tv.ServerPolicy:
    """Our server: the kit's valid server identity, only the version ``flag``."""
    version = VERSIONS[flag]
    return tv.ServerPolicy(
        identity=as_identity(certs.server("valid")),
        client_auth=client_auth,
        client_trust=None if client_auth is tv.ClientAuth.NONE else certs.ca_file,
        minimum_version=version,
        maximum_version=version,
    )


def client_policy(
    certs: CertKit, identity: ClientKind | None = None
) -> tv.ClientPolicy:
    """Our client: trusts the kit's root, presents ``identity`` when asked."""
    return tv.ClientPolicy(
        trust=certs.ca_file,
        identity=None if identity is None else as_identity(certs.client(identity)),
    )


async def connect(
    port: int, policy: tv.ClientPolicy
) -> tv.TLSStream[trio.SocketStream]:
    return await tv.open_tls_stream(
        "127.0.0.1", port, policy=policy, server_hostname="localhost"
    )


async def connect_and_receive(port: int, policy: tv.ClientPolicy) -> bytes:
    """Handshake, then read: where a TLS 1.3 client hears a late verdict."""
    stream = await connect(port, policy)
    async with stream:
        return await stream.receive_some()


async def handshake(stream: tv.TLSStream[trio.SocketStream]) -> None:
    await stream.do_handshake()


async def echo(stream: tv.TLSStream[trio.SocketStream]) -> list[bytes]:
    """Answer every chunk with ``b"echo:" + chunk`` until the peer closes."""
    received = []
    await stream.do_handshake()
    while data := await stream.receive_some():
        received.append(data)
        await stream.send_all(b"echo:" + data)
    return received


async def receive_exactly(stream: tv.TLSStream[trio.SocketStream], size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        assert chunk, f"stream ended after {data!r}"
        data += chunk
    return data


@dataclass
class ServerOutcome(Outcome):
    """What our server saw; ``finished`` is set once its stream is closed."""

    finished: trio.Event = field(default_factory=trio.Event)


@asynccontextmanager
async def trio_verify_server(
    policy: tv.ServerPolicy, handler: Handler, *, alert_linger: float = 1.0
) -> AsyncIterator[tuple[int, ServerOutcome]]:
    """Serve one connection with ``handler`` on a free loopback port.

    Yields the port and the server's outcome, which is complete once the
    block has ended (the block waits for the connection to finish).
    """
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port: int = listener.socket.getsockname()[1]
    outcome = ServerOutcome()

    async def serve() -> None:
        transport = await listener.accept()
        stream = tv.TLSStream(
            transport, policy, server_side=True, alert_linger=alert_linger
        )
        try:
            outcome.value = await handler(stream)
        except Exception as exc:
            outcome.error = exc
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()
            outcome.finished.set()

    async with listener, open_helper_nursery() as nursery:
        nursery.start_soon(serve)
        yield port, outcome


def check_error(
    error: tv.TLSError,
    *,
    side: str,
    phase: tv.Phase,
    surfaced_in: str,
    flag: TLSFlag,
    alert_sent: tv.Alert | None = None,
    alert_received: tv.Alert | None = None,
) -> None:
    seen = (
        error.side,
        error.phase,
        error.surfaced_in,
        error.tls_version,
        error.alert_sent,
        error.alert_received,
    )
    expected = (
        side,
        phase,
        surfaced_in,
        VERSION_NAMES[flag],
        alert_sent,
        alert_received,
    )
    assert seen == expected, f"{error!r}: {error}"


async def exchange_lines(
    stream: tv.TLSStream[trio.SocketStream], peer: OpenSSLProcess
) -> None:
    """One line each way between our stream and s_server's stdin and stdout."""
    await stream.send_all(b"ping from trio_verify\n")
    await peer.wait_for(b"ping from trio_verify\n")
    pong = b"pong from openssl\n"
    await peer.send(pong)
    assert await receive_exactly(stream, len(pong)) == pong


# ------------------------------------------- our server vs openssl s_client


@pytest.mark.parametrize(
    ("flag", "alert"),
    [
        pytest.param("-tls1_2", tv.Alert.HANDSHAKE_FAILURE, id="TLSv1.2"),
        pytest.param("-tls1_3", tv.Alert.CERTIFICATE_REQUIRED, id="TLSv1.3"),
    ],
)
async def test_s_client_without_certificate_receives_the_refusal(
    certs: CertKit, openssl: Path, flag: TLSFlag, alert: tv.Alert
) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            trio_verify_server(server_policy(certs, flag), handshake) as (port, server),
            run_openssl(openssl, *s_client_args(certs, port, flag)) as client,
        ):
            await client.wait_for(received_alert(alert))
            await client.wait()
    check_error(
        server.expect(tv.MissingClientCertificate),
        side="server",
        phase=tv.Phase.CLIENT_CERTIFICATE,
        surfaced_in="handshake",
        flag=flag,
        alert_sent=alert,
    )


CLIENT_CERTIFICATE_REFUSALS = [
    pytest.param("other_ca", tv.UnknownIssuer, tv.Alert.UNKNOWN_CA, 20, id="other_ca"),
    pytest.param(
        "expired", tv.CertificateExpired, tv.Alert.CERTIFICATE_EXPIRED, 10, id="expired"
    ),
    pytest.param(
        "server_eku",
        tv.InvalidPurpose,
        tv.Alert.UNSUPPORTED_CERTIFICATE,
        26,
        id="server_eku",
    ),
]


@pytest.mark.parametrize("flag", TLS_VERSIONS)
@pytest.mark.parametrize(
    ("kind", "error_class", "alert", "verify_code"), CLIENT_CERTIFICATE_REFUSALS
)
async def test_s_client_with_refused_certificate_receives_the_alert(
    certs: CertKit,
    openssl: Path,
    flag: TLSFlag,
    kind: ClientKind,
    error_class: type[tv.CertificateVerificationError],
    alert: tv.Alert,
    verify_code: int,
) -> None:
    identity = certs.client(kind)
    with trio.fail_after(TIMEOUT):
        async with (
            trio_verify_server(server_policy(certs, flag), handshake) as (port, server),
            run_openssl(
                openssl, *s_client_args(certs, port, flag, identity=identity)
            ) as client,
        ):
            await client.wait_for(received_alert(alert))
            await client.wait()
    error = server.expect(error_class)
    check_error(
        error,
        side="server",
        phase=tv.Phase.CLIENT_CERTIFICATE,
        surfaced_in="handshake",
        flag=flag,
        alert_sent=alert,
    )
    assert error.verify_code == verify_code


@pytest.mark.parametrize("flag", TLS_VERSIONS)
async def test_s_client_with_valid_certificate_exchanges_data(
    certs: CertKit, openssl: Path, flag: TLSFlag
) -> None:
    identity = certs.client("valid")
    with trio.fail_after(TIMEOUT):
        async with (
            trio_verify_server(server_policy(certs, flag), echo) as (port, server),
            run_openssl(
                openssl, *s_client_args(certs, port, flag, identity=identity)
            ) as client,
        ):
            await client.send(b"ping from openssl\n")
            await client.wait_for(b"echo:ping from openssl\n")
            # At end of file s_client says "DONE", sends close_notify and
            # quits; our echo loop must then see the end of the stream.
            await client.close_stdin()
            assert await client.wait() == 0
            with trio.move_on_after(TIMEOUT / 2):
                await server.finished.wait()
            assert server.finished.is_set(), (
                "our server's receive_some() did not return b'' after s_client's "
                "close_notify and end of file"
            )
    assert server.ok, server.error
    assert b"".join(server.value) == b"ping from openssl\n"


# ------------------------------------------- our client vs openssl s_server


SERVER_CERTIFICATE_REFUSALS = [
    pytest.param(
        "expired", tv.CertificateExpired, tv.Alert.CERTIFICATE_EXPIRED, 10, id="expired"
    ),
    pytest.param("other_ca", tv.UnknownIssuer, tv.Alert.UNKNOWN_CA, 20, id="other_ca"),
    pytest.param(
        "wrong_name", tv.NameMismatch, tv.Alert.BAD_CERTIFICATE, 62, id="wrong_name"
    ),
    pytest.param(
        "client_eku",
        tv.InvalidPurpose,
        tv.Alert.UNSUPPORTED_CERTIFICATE,
        26,
        id="client_eku",
    ),
]


@pytest.mark.parametrize("flag", TLS_VERSIONS)
@pytest.mark.parametrize(
    ("kind", "error_class", "alert", "verify_code"), SERVER_CERTIFICATE_REFUSALS
)
async def test_s_server_with_refused_certificate_receives_the_alert(
    certs: CertKit,
    openssl: Path,
    flag: TLSFlag,
    kind: ServerKind,
    error_class: type[tv.CertificateVerificationError],
    alert: tv.Alert,
    verify_code: int,
) -> None:
    args = [flag, "-naccept", "1", *identity_args(certs.server(kind))]
    with trio.fail_after(TIMEOUT):
        async with s_server(openssl, *args) as (server, port):
            with pytest.raises(error_class) as caught:
                await connect(port, client_policy(certs))
            await server.wait_for(received_alert(alert))
            await server.wait()
    check_error(
        caught.value,
        side="client",
        phase=tv.Phase.SERVER_CERTIFICATE,
        surfaced_in="handshake",
        flag=flag,
        alert_sent=alert,
    )
    assert caught.value.verify_code == verify_code


@pytest.mark.parametrize(
    ("flag", "alert", "surfaced_in"),
    [
        pytest.param("-tls1_2", tv.Alert.HANDSHAKE_FAILURE, "handshake", id="TLSv1.2"),
        # The TLS 1.3 verdict comes after our handshake, and the default
        # confirm_client_auth="auto" waits for it only when we sent a
        # certificate: here the first read reports it.
        pytest.param("-tls1_3", tv.Alert.CERTIFICATE_REQUIRED, "receive", id="TLSv1.3"),
    ],
)
async def test_s_server_requiring_certificate_refuses_client_without_one(
    certs: CertKit, openssl: Path, flag: TLSFlag, alert: tv.Alert, surfaced_in: str
) -> None:
    args = [
        flag,
        "-naccept",
        "1",
        *identity_args(certs.server("valid")),
        *require_client_certificate_args(certs),
    ]
    with trio.fail_after(TIMEOUT):
        async with s_server(openssl, *args) as (server, port):
            with pytest.raises(tv.PeerRequiresCertificate) as caught:
                await connect_and_receive(port, client_policy(certs))
            await server.wait_for(b"peer did not return a certificate")
            await server.wait()
    check_error(
        caught.value,
        side="client",
        phase=tv.Phase.CLIENT_CERTIFICATE,
        surfaced_in=surfaced_in,
        flag=flag,
        alert_received=alert,
    )


@pytest.mark.parametrize("flag", TLS_VERSIONS)
async def test_s_server_requiring_certificate_exchanges_data_with_valid_client(
    certs: CertKit, openssl: Path, flag: TLSFlag
) -> None:
    args = [
        flag,
        "-naccept",
        "1",
        *identity_args(certs.server("valid")),
        *require_client_certificate_args(certs),
    ]
    with trio.fail_after(TIMEOUT):
        async with s_server(openssl, *args) as (server, port):
            stream = await connect(port, client_policy(certs, "valid"))
            async with stream:
                assert stream.version() == VERSION_NAMES[flag]
                await exchange_lines(stream, server)
            assert await server.wait() == 0
    assert "subject=O = trio_verify tests, OU = client-valid" in server.text


CLIENT_CERTIFICATE_REFUSALS_BY_S_SERVER = [
    pytest.param("other_ca", tv.Alert.UNKNOWN_CA, 20, id="other_ca"),
    pytest.param("expired", tv.Alert.CERTIFICATE_EXPIRED, 10, id="expired"),
    pytest.param("server_eku", tv.Alert.UNSUPPORTED_CERTIFICATE, 26, id="server_eku"),
]


@pytest.mark.parametrize(
    ("flag", "surfaced_in"),
    [
        pytest.param("-tls1_2", "handshake", id="TLSv1.2"),
        # s_server sends its session tickets right after a successful TLS 1.3
        # handshake, and its alert instead of them after a failed one: the
        # default confirm_client_auth="auto" waits for that inside the
        # handshake.
        pytest.param("-tls1_3", "confirm", id="TLSv1.3"),
    ],
)
@pytest.mark.parametrize(
    ("kind", "alert", "verify_code"), CLIENT_CERTIFICATE_REFUSALS_BY_S_SERVER
)
async def test_s_server_refusing_client_certificate_sends_the_alert(
    certs: CertKit,
    openssl: Path,
    flag: TLSFlag,
    surfaced_in: str,
    kind: ClientKind,
    alert: tv.Alert,
    verify_code: int,
) -> None:
    args = [
        flag,
        "-naccept",
        "1",
        *identity_args(certs.server("valid")),
        *require_client_certificate_args(certs),
    ]
    with trio.fail_after(TIMEOUT):
        async with s_server(openssl, *args) as (server, port):
            with pytest.raises(tv.PeerRejectedCertificate) as caught:
                await connect(port, client_policy(certs, kind))
            await server.wait_for(f"verify error:num={verify_code}:".encode())
            await server.wait()
    check_error(
        caught.value,
        side="client",
        phase=tv.Phase.CLIENT_CERTIFICATE,
        surfaced_in=surfaced_in,
        flag=flag,
        alert_received=alert,
    )
    assert caught.value.alert is alert


# ------------------------------- the alert reaches a peer that is still sending

# Far more than the socket buffers between the two ends hold while nobody
# reads: the peer cannot finish writing this unless the server keeps reading.
STILL_SENDING = 4 << 20

# What the peer writes in TLS 1.2, where it cannot send application data
# before the server's Finished: the application-data records a False Start
# client sends right after its own Finished.  A server that has already
# refused the certificate never decrypts them.
FALSE_START_RECORD = b"\x17\x03\x03\x40\x00" + bytes(0x4000)


@dataclass
class StillSendingPeer:
    """What the still-sending peer saw.

    Attributes:
        sent: bytes written after the flight that carried its certificate.
        write_error: what stopped the writing early, if anything.
        verdict: what reading afterwards gave: the ``ssl.SSLError`` naming
            the server's alert, or a transport error.
    """

    sent: int = 0
    write_error: trio.BrokenResourceError | None = None
    verdict: BaseException | None = None


async def run_still_sending_peer(
    port: int, context: ssl.SSLContext, amount: int
) -> StillSendingPeer:
    """A TLS client that goes on writing after its certificate, as an upload does.

    A plain :class:`ssl.SSLObject` over a real socket: it sends its
    certificate flight, then writes ``amount`` bytes without reading (in
    TLS 1.3 as application data, its handshake being complete by then; in
    TLS 1.2 as False Start records), and only then reads what the server
    said.  A write that fails (a TCP reset) is recorded, as an uploading
    client would see it.
    """
    report = StillSendingPeer()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    transport = await trio.open_tcp_stream("127.0.0.1", port)
    async with transport:
        finished = await _send_certificate_flight(conn, incoming, outgoing, transport)
        try:
            while report.sent < amount:
                if finished:
                    conn.write(bytes(0x4000))
                    data = outgoing.read()
                else:
                    data = FALSE_START_RECORD
                await transport.send_all(data)
                report.sent += len(data)
        except trio.BrokenResourceError as exc:
            report.write_error = exc
        report.verdict = await _read_verdict(conn, incoming, transport, finished)
    return report


async def _send_certificate_flight(
    conn: ssl.SSLObject,
    incoming: ssl.MemoryBIO,
    outgoing: ssl.MemoryBIO,
    transport: trio.SocketStream,
) -> bool:
    """Handshake up to our second flight (the certificate); ``True`` if finished.

    OpenSSL writes a whole flight in one ``do_handshake`` call: the
    ClientHello, then Certificate ... Finished.
    """
    flights = 0
    finished = False
    while flights < 2:
        try:
            conn.do_handshake()
            finished = True
        except ssl.SSLWantReadError:
            pass
        if data := outgoing.read():
            await transport.send_all(data)
            flights += 1
            continue
        assert not finished, "handshake finished without a certificate flight"
        chunk = await transport.receive_some(65536)
        assert chunk, "server closed before our certificate was sent"
        incoming.write(chunk)
    return finished


async def _read_verdict(
    conn: ssl.SSLObject,
    incoming: ssl.MemoryBIO,
    transport: trio.SocketStream,
    finished: bool,
) -> BaseException:
    try:
        while True:
            chunk = await transport.receive_some(65536)
            if chunk:
                incoming.write(chunk)
            else:
                incoming.write_eof()
            with contextlib.suppress(ssl.SSLWantReadError):
                if finished:
                    conn.read(65536)
                else:
                    conn.do_handshake()
            if not chunk:
                # OpenSSL took the end of the stream without an error: the
                # server closed cleanly, which no refusal does.
                return EOFError("the server closed without an alert")
    except (ssl.SSLError, trio.BrokenResourceError) as exc:
        return exc


@pytest.mark.parametrize("flag", TLS_VERSIONS)
async def test_alert_reaches_peer_that_is_still_sending(
    certs: CertKit, flag: TLSFlag
) -> None:
    context = certs.client_context(identity="other_ca", versions=VERSIONS[flag])
    policy = server_policy(certs, flag)
    with trio.fail_after(TIMEOUT):
        async with trio_verify_server(policy, handshake) as (port, server):
            peer = await run_still_sending_peer(port, context, STILL_SENDING)
    assert peer.write_error is None, f"the peer was reset: {peer.write_error!r}"
    assert peer.sent >= STILL_SENDING
    assert isinstance(peer.verdict, ssl.SSLError), repr(peer.verdict)
    assert peer.verdict.reason == "TLSV1_ALERT_UNKNOWN_CA", repr(peer.verdict)
    check_error(
        server.expect(tv.UnknownIssuer),
        side="server",
        phase=tv.Phase.CLIENT_CERTIFICATE,
        surfaced_in="handshake",
        flag=flag,
        alert_sent=tv.Alert.UNKNOWN_CA,
    )


@pytest.mark.parametrize("flag", TLS_VERSIONS)
async def test_control_without_linger_a_still_sending_peer_is_reset(
    certs: CertKit, flag: TLSFlag
) -> None:
    """Why the linger exists: a server that closes at once, with the peer's
    bytes unread, makes its kernel answer with a TCP reset, and the peer's
    next write fails, so a peer that gives up on a failed write (as s_client
    and trio.SSLStream users do) never reads the alert.  Only the reset is
    asserted: what the peer could still read after it is not deterministic
    across platforms."""
    context = certs.client_context(identity="other_ca", versions=VERSIONS[flag])
    policy = server_policy(certs, flag)
    with trio.fail_after(TIMEOUT):
        async with trio_verify_server(policy, handshake, alert_linger=0) as (
            port,
            server,
        ):
            peer = await run_still_sending_peer(port, context, STILL_SENDING)
    assert peer.write_error is not None, peer
    cause = peer.write_error.__cause__
    assert isinstance(cause, OSError), repr(cause)
    assert cause.errno in (errno.ECONNRESET, errno.EPIPE), repr(cause)
    assert peer.sent < STILL_SENDING
    server.expect(tv.UnknownIssuer)


async def test_alert_reaches_s_client_that_is_still_sending(
    certs: CertKit, openssl: Path
) -> None:
    # TLS 1.3 only: that is where s_client starts sending its stdin before
    # the server has judged its certificate.
    flag: TLSFlag = "-tls1_3"
    line = b"y" * 65535 + b"\n"

    async def feed(client: OpenSSLProcess) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            for _ in range(2 * STILL_SENDING // len(line)):
                await client.send(line)

    identity = certs.client("other_ca")
    with trio.fail_after(TIMEOUT):
        async with (
            trio_verify_server(server_policy(certs, flag), handshake) as (port, server),
            run_openssl(
                openssl,
                *s_client_args(certs, port, flag, identity=identity, extra=["-quiet"]),
            ) as client,
            open_helper_nursery() as nursery,
        ):
            nursery.start_soon(feed, client)
            await client.wait_for(received_alert(tv.Alert.UNKNOWN_CA))
            await client.wait()
            nursery.cancel_scope.cancel()
    assert "errno=" not in client.text, client.text
    server.expect(tv.UnknownIssuer)


@pytest.mark.parametrize("flag", TLS_VERSIONS)
async def test_alert_is_sent_with_zero_alert_linger(
    certs: CertKit, openssl: Path, flag: TLSFlag
) -> None:
    """alert_linger bounds the reading after a failure, not the alert itself."""
    policy = server_policy(certs, flag)
    identity = certs.client("other_ca")
    with trio.fail_after(TIMEOUT):
        async with (
            trio_verify_server(policy, handshake, alert_linger=0) as (port, server),
            run_openssl(
                openssl, *s_client_args(certs, port, flag, identity=identity)
            ) as client,
        ):
            await client.wait()
    assert received_alert(tv.Alert.UNKNOWN_CA).search(client.output), (
        f"s_client did not receive the alert; it printed:\n{client.text}"
    )
    error = server.expect(tv.UnknownIssuer)
    assert error.alert_sent is tv.Alert.UNKNOWN_CA


# --------------------------------------------------------------- renegotiation


async def test_s_client_renegotiation_is_refused_with_typed_error(
    certs: CertKit, openssl: Path
) -> None:
    flag: TLSFlag = "-tls1_2"
    policy = server_policy(certs, flag, client_auth=tv.ClientAuth.NONE)
    with trio.fail_after(TIMEOUT):
        async with (
            trio_verify_server(policy, echo) as (port, server),
            run_openssl(openssl, *s_client_args(certs, port, flag)) as client,
        ):
            await client.send(b"before\n")
            await client.wait_for(b"echo:before\n")
            # Alone on a line, R is s_client's command to renegotiate.
            await client.send(b"R\n")
            await client.wait_for(b"RENEGOTIATING")
            # Our no_renegotiation warning (100) arrived: s_client gives up
            # on the connection with a fatal handshake_failure (40).
            await client.wait_for(b":no renegotiation:")
            await client.wait()
    check_error(
        server.expect(tv.PeerHandshakeFailure),
        side="server",
        phase=tv.Phase.APPLICATION_DATA,
        surfaced_in="receive",
        flag=flag,
        alert_received=tv.Alert.HANDSHAKE_FAILURE,
    )


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(b"r\n", id="renegotiate"),
        pytest.param(b"R\n", id="renegotiate_asking_for_certificate"),
    ],
)
async def test_s_server_renegotiation_is_refused_with_typed_error(
    certs: CertKit, openssl: Path, command: bytes
) -> None:
    flag: TLSFlag = "-tls1_2"
    args = [flag, "-naccept", "1", *identity_args(certs.server("valid"))]
    with trio.fail_after(TIMEOUT):
        async with s_server(openssl, *args) as (server, port):
            stream = await connect(port, client_policy(certs))
            async with stream:
                await exchange_lines(stream, server)
                await server.send(command)
                with pytest.raises(tv.PeerHandshakeFailure) as caught:
                    await stream.receive_some()
            # s_server sent its HelloRequest, then took our no_renegotiation
            # warning (100) as a refusal and aborted with handshake_failure.
            await server.wait_for(b"SSL_do_handshake -> 1")
            await server.wait_for(b":no renegotiation:")
            await server.wait()
    check_error(
        caught.value,
        side="client",
        phase=tv.Phase.APPLICATION_DATA,
        surfaced_in="receive",
        flag=flag,
        alert_received=tv.Alert.HANDSHAKE_FAILURE,
    )
