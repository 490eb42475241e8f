"""The verify-mode matrix (docs/matrix.rst), asserted on both ends of connections.

Every row of the matrix, with every kind of certificate a peer may present,
runs over loopback TCP on TLS 1.2 and on TLS 1.3.  Each failure is checked on
*both* sides: the side that judged the certificate raises the specific
:class:`~trio_verify.CertificateVerificationError` with the verify code and
the alert it sent (OpenSSL's ``ssl_x509err2alert``), and the other side
raises a :class:`~trio_verify.PeerAlert` naming the same alert, in the same
phase.  Each success is checked by data flowing both ways and by what each
side learned about the other.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import pytest
import trio
import trio.testing
from certs import CLIENT_KINDS, SERVER_KINDS, CertKit, ClientKind, ServerKind
from certs import Identity as KitIdentity
from loopback import Outcome, run_pair

import trio_verify as tv

TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
VERSION_NAMES = {TLS12: "TLSv1.2", TLS13: "TLSv1.3"}

NONE, OPTIONAL, REQUIRED = (
    tv.ClientAuth.NONE,
    tv.ClientAuth.OPTIONAL,
    tv.ClientAuth.REQUIRED,
)

DATE = r"\d{4}-\d{2}-\d{2}"


@pytest.fixture(params=[TLS12, TLS13], ids=["TLSv1.2", "TLSv1.3"])
def version(request: pytest.FixtureRequest) -> ssl.TLSVersion:
    """Every connection runs once per TLS version (pinned on the server)."""
    result: ssl.TLSVersion = request.param
    return result


@dataclass(frozen=True)
class Refusal:
    """How the side that judges the peer's certificate refuses it.

    Attributes:
        error: The class the judging side raises.
        verify_code: OpenSSL's ``X509_V_ERR_*`` code, ``None`` when no
            certificate was judged.
        alert: The alert it sends, which the other side must receive.
        message: A regular expression ``str(error)`` must match: the facts
            that explain the refusal.
        peer_error: The class the other side raises.
    """

    error: type[tv.TLSError]
    verify_code: int | None
    alert: tv.Alert
    message: str
    peer_error: type[tv.PeerAlert] = tv.PeerRejectedCertificate


# --------------------------------------------------------------- helpers


def identity(ident: KitIdentity) -> tv.Identity:
    """A trio_verify identity from a CertKit identity (the whole chain)."""
    return tv.Identity.from_pem(ident.cert_chain_pem, ident.key_pem)


def server_policy(
    certs: CertKit,
    version: ssl.TLSVersion,
    *,
    kind: ServerKind = "valid",
    client_auth: tv.ClientAuth = NONE,
) -> tv.ServerPolicy:
    """A server presenting *kind*, speaking only *version*."""
    return tv.ServerPolicy(
        identity=identity(certs.server(kind)),
        client_auth=client_auth,
        client_trust=None if client_auth is NONE else certs.ca_pem,
        minimum_version=version,
        maximum_version=version,
    )


def client_policy(
    certs: CertKit, kind: ClientKind | None = None, **kwargs: Any
) -> tv.ClientPolicy:
    """The default client policy trusting the kit's CA, presenting *kind*."""
    return tv.ClientPolicy(
        trust=certs.ca_pem,
        identity=None if kind is None else identity(certs.client(kind)),
        **kwargs,
    )


@dataclass(frozen=True)
class Talk:
    """What one side of a successful connection saw."""

    peer: tv.PeerInfo
    received: bytes


async def server_talks(stream: tv.TLSStream[trio.SocketStream]) -> Talk:
    await stream.do_handshake()
    await stream.send_all(b"ping")
    return Talk(stream.peer, await stream.receive_some())


async def client_talks(stream: tv.TLSStream[trio.SocketStream]) -> Talk:
    await stream.do_handshake()
    received = await stream.receive_some()
    await stream.send_all(b"pong")
    return Talk(stream.peer, received)


async def converse(
    server: tv.ServerPolicy | ssl.SSLContext,
    client: tv.ClientPolicy | ssl.SSLContext,
    *,
    server_hostname: str = "localhost",
    client_action: Callable[[tv.TLSStream[trio.SocketStream]], Awaitable[Any]]
    | None = None,
) -> tuple[Outcome, Outcome]:
    """One connection in which, if all goes well, each side says something."""
    return await run_pair(
        server,
        client,
        server_hostname=server_hostname,
        server_action=server_talks,
        client_action=client_action or client_talks,
    )


def assert_conversation(
    client: Outcome, server: Outcome, version: ssl.TLSVersion
) -> tuple[tv.PeerInfo, tv.PeerInfo]:
    """Both sides succeeded and heard each other; return (client's, server's) peer."""
    assert client.ok, f"client failed: {client.error!r}"
    assert server.ok, f"server failed: {server.error!r}"
    assert client.value.received == b"ping"
    assert server.value.received == b"pong"
    client_peer: tv.PeerInfo = client.value.peer
    server_peer: tv.PeerInfo = server.value.peer
    assert client_peer.tls_version == server_peer.tls_version == VERSION_NAMES[version]
    return client_peer, server_peer


def assert_refused(
    judge: Outcome,
    peer: Outcome,
    refusal: Refusal,
    *,
    phase: tv.Phase,
    version: ssl.TLSVersion,
    peer_surfaced_in: str,
    presented: tv.CertificateInfo | None,
) -> None:
    """The judging side refused with *refusal*; the peer heard the same alert."""
    err = judge.expect(refusal.error)
    assert err.phase is phase
    assert err.surfaced_in == "handshake"
    assert err.verify_code == refusal.verify_code
    assert err.alert_sent is refusal.alert
    assert err.alert_received is None
    assert err.tls_version == VERSION_NAMES[version]
    assert re.search(refusal.message, str(err)), str(err)
    if presented is not None:
        assert err.peer_chain[:1] == (presented,)

    told = peer.expect(refusal.peer_error)
    assert told.phase is phase
    assert told.surfaced_in == peer_surfaced_in
    assert told.alert_received is refusal.alert
    assert told.alert is refusal.alert
    assert told.alert_sent is None
    assert told.tls_version == VERSION_NAMES[version]


# ======================================================= client verifies server

UNTRUSTED = "not a trusted CA"

SERVER_CERT_ROWS = [
    pytest.param("valid", "localhost", None, id="valid"),
    pytest.param("valid", "127.0.0.1", None, id="valid-dialled-by-ip"),
    pytest.param("intermediate", "localhost", None, id="intermediate"),
    pytest.param("ip_only", "127.0.0.1", None, id="ip_only"),
    pytest.param(
        "expired",
        "localhost",
        Refusal(
            tv.CertificateExpired,
            10,
            tv.Alert.CERTIFICATE_EXPIRED,
            rf"certificate expired {DATE}, 30 days ago",
        ),
        id="expired",
    ),
    pytest.param(
        "not_yet_valid",
        "localhost",
        Refusal(
            tv.CertificateNotYetValid,
            9,
            tv.Alert.BAD_CERTIFICATE,
            rf"certificate is not valid until {DATE}, in 30 days",
        ),
        id="not_yet_valid",
    ),
    pytest.param(
        "other_ca",
        "localhost",
        Refusal(
            tv.UnknownIssuer,
            20,
            tv.Alert.UNKNOWN_CA,
            rf"Untrusted Root CA.*, which is {UNTRUSTED}",
        ),
        id="other_ca",
    ),
    pytest.param(
        "wrong_name",
        "localhost",
        Refusal(
            tv.NameMismatch,
            62,
            tv.Alert.BAD_CERTIFICATE,
            r"certificate is valid for example\.org, not localhost",
        ),
        id="wrong_name",
    ),
    pytest.param(
        "client_eku",
        "localhost",
        Refusal(
            tv.InvalidPurpose,
            26,
            tv.Alert.UNSUPPORTED_CERTIFICATE,
            r"extended key usages are: clientAuth\b",
        ),
        id="client_eku",
    ),
    pytest.param(
        "self_signed",
        "localhost",
        Refusal(
            tv.UnknownIssuer,
            18,
            tv.Alert.UNKNOWN_CA,
            r"OU=server-self_signed.* is self-signed and not trusted",
        ),
        id="self_signed",
    ),
    pytest.param(
        "leaf_without_intermediate",
        "localhost",
        Refusal(
            tv.UnknownIssuer,
            20,
            tv.Alert.UNKNOWN_CA,
            rf"Test Intermediate CA.*, which is {UNTRUSTED}",
        ),
        id="leaf_without_intermediate",
    ),
    pytest.param(
        "cn_only",
        "localhost",
        Refusal(
            tv.NameMismatch,
            62,
            tv.Alert.BAD_CERTIFICATE,
            r"no subject alternative names \(common name 'localhost' is not used"
            r" for name checks\), not valid for localhost",
        ),
        id="cn_only",
    ),
    pytest.param(
        "ip_only",
        "localhost",
        Refusal(
            tv.NameMismatch,
            62,
            tv.Alert.BAD_CERTIFICATE,
            r"certificate is valid for 127\.0\.0\.1, not localhost",
        ),
        id="ip_only-dialled-by-name",
    ),
    pytest.param(
        "valid",
        "127.0.0.2",
        Refusal(
            tv.NameMismatch,
            64,
            tv.Alert.BAD_CERTIFICATE,
            r"certificate is valid for localhost, 127\.0\.0\.1, ::1, not 127\.0\.0\.2",
        ),
        id="valid-dialled-by-other-ip",
    ),
]


@contextmanager
def adopted_cert_optional_warning() -> Iterator[None]:
    with pytest.warns(tv.PolicyWarning, match="CERT_OPTIONAL on a client is"):
        yield


@pytest.fixture(params=["ClientPolicy", "adopted-CERT_OPTIONAL"])
def verifying_client(
    request: pytest.FixtureRequest, certs: CertKit
) -> tuple[tv.ClientPolicy | ssl.SSLContext, AbstractContextManager[None]]:
    """A client that verifies the server, and what connecting with it warns.

    The default policy, or a plain ``ssl`` client context with
    ``CERT_OPTIONAL``, which on a client means ``CERT_REQUIRED``: adopted with
    a :exc:`~trio_verify.PolicyWarning`, it must behave exactly the same.
    """
    if request.param == "ClientPolicy":
        return client_policy(certs), nullcontext()
    context = certs.client_context(trust="ca")
    context.verify_mode = ssl.CERT_OPTIONAL
    return context, adopted_cert_optional_warning()


@pytest.mark.parametrize(("kind", "server_hostname", "refusal"), SERVER_CERT_ROWS)
async def test_client_verifies_server_certificate(
    certs: CertKit,
    version: ssl.TLSVersion,
    verifying_client: tuple[
        tv.ClientPolicy | ssl.SSLContext, AbstractContextManager[None]
    ],
    kind: ServerKind,
    server_hostname: str,
    refusal: Refusal | None,
) -> None:
    client, warns = verifying_client
    with warns:
        client_seen, server_seen = await converse(
            server_policy(certs, version, kind=kind),
            client,
            server_hostname=server_hostname,
        )
    if refusal is None:
        client_peer, server_peer = assert_conversation(
            client_seen, server_seen, version
        )
        presented = certs.server(kind)
        assert client_peer.certificate == presented.info
        assert client_peer.chain_verified
        assert client_peer.chain[: len(presented.chain)] == presented.chain
        assert server_peer.certificate is None
        return
    assert_refused(
        client_seen,
        server_seen,
        refusal,
        phase=tv.Phase.SERVER_CERTIFICATE,
        version=version,
        peer_surfaced_in="handshake",
        presented=certs.server(kind).info,
    )


@pytest.mark.parametrize("kind", SERVER_KINDS)
async def test_insecure_client_accepts_every_server_certificate(
    certs: CertKit, version: ssl.TLSVersion, kind: ServerKind
) -> None:
    with pytest.warns(tv.PolicyWarning, match="not verified"):
        client = tv.ClientPolicy(insecure=True)
    client_seen, server_seen = await converse(
        server_policy(certs, version, kind=kind), client
    )
    client_peer, _ = assert_conversation(client_seen, server_seen, version)
    assert client_peer.certificate == certs.server(kind).info
    assert not client_peer.chain_verified


async def test_adopted_client_context_without_hostname_check_is_refused(
    certs: CertKit,
) -> None:
    context = certs.client_context(trust="ca")
    context.check_hostname = False
    assert context.verify_mode == ssl.CERT_REQUIRED
    transport, _ = trio.testing.memory_stream_pair()
    with pytest.raises(tv.PolicyError, match="check_hostname is False"):
        tv.TLSStream(transport, context, server_hostname="localhost")


# ======================================================= server verifies client

CLIENT_KINDS_OR_NONE: list[ClientKind | None] = [None, *CLIENT_KINDS]

CLIENT_CERT_REFUSALS: dict[ClientKind, Refusal] = {
    "expired": Refusal(
        tv.CertificateExpired,
        10,
        tv.Alert.CERTIFICATE_EXPIRED,
        rf"client certificate refused: .*certificate expired {DATE}, 30 days ago",
    ),
    "not_yet_valid": Refusal(
        tv.CertificateNotYetValid,
        9,
        tv.Alert.BAD_CERTIFICATE,
        rf"client certificate refused: .*not valid until {DATE}, in 30 days",
    ),
    "other_ca": Refusal(
        tv.UnknownIssuer,
        20,
        tv.Alert.UNKNOWN_CA,
        rf"client certificate refused: .*Untrusted Root CA.*, which is {UNTRUSTED}",
    ),
    "self_signed": Refusal(
        tv.UnknownIssuer,
        18,
        tv.Alert.UNKNOWN_CA,
        r"client certificate refused: .*OU=client-self_signed.* is self-signed and"
        r" not trusted",
    ),
    "server_eku": Refusal(
        tv.InvalidPurpose,
        26,
        tv.Alert.UNSUPPORTED_CERTIFICATE,
        r"client certificate refused: .*extended key usages are: serverAuth\b",
    ),
}


def missing_certificate(version: ssl.TLSVersion) -> Refusal:
    """A REQUIRED server refusing a client that sent no certificate."""
    return Refusal(
        tv.MissingClientCertificate,
        None,
        tv.Alert.CERTIFICATE_REQUIRED
        if version is TLS13
        else tv.Alert.HANDSHAKE_FAILURE,
        "client sent no certificate",
        peer_error=tv.PeerRequiresCertificate,
    )


ASKING = pytest.mark.parametrize("client_auth", [OPTIONAL, REQUIRED], ids=str)
REFUSED_KINDS = pytest.mark.parametrize("kind", list(CLIENT_CERT_REFUSALS))


@pytest.mark.parametrize("kind", CLIENT_KINDS_OR_NONE, ids=str)
async def test_server_with_client_auth_none_never_asks_for_a_certificate(
    certs: CertKit, version: ssl.TLSVersion, kind: ClientKind | None
) -> None:
    client_seen, server_seen = await converse(
        server_policy(certs, version, client_auth=NONE), client_policy(certs, kind)
    )
    client_peer, server_peer = assert_conversation(client_seen, server_seen, version)
    assert server_peer.certificate is None
    assert server_peer.chain == ()
    assert client_peer.certificate == certs.server().info


@ASKING
@pytest.mark.parametrize("kind", ["valid", "intermediate"])
async def test_server_asking_for_a_certificate_accepts_a_valid_one(
    certs: CertKit,
    version: ssl.TLSVersion,
    client_auth: tv.ClientAuth,
    kind: ClientKind,
) -> None:
    client_seen, server_seen = await converse(
        server_policy(certs, version, client_auth=client_auth),
        client_policy(certs, kind),
    )
    client_peer, server_peer = assert_conversation(client_seen, server_seen, version)
    presented = certs.client(kind)
    assert server_peer.certificate == presented.info
    assert server_peer.chain_verified
    assert server_peer.chain[: len(presented.chain)] == presented.chain
    assert client_peer.certificate == certs.server().info


async def test_server_with_optional_client_auth_accepts_a_client_without_one(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    client_seen, server_seen = await converse(
        server_policy(certs, version, client_auth=OPTIONAL), client_policy(certs)
    )
    client_peer, server_peer = assert_conversation(client_seen, server_seen, version)
    assert server_peer.certificate is None
    assert client_peer.certificate == certs.server().info


@ASKING
@REFUSED_KINDS
async def test_server_refuses_a_bad_client_certificate(
    certs: CertKit,
    version: ssl.TLSVersion,
    client_auth: tv.ClientAuth,
    kind: ClientKind,
) -> None:
    """TLS 1.3 delivers the verdict after the client's handshake; the client
    waits for it (``confirm_client_auth="auto"``), so it surfaces in "confirm".
    """
    client_seen, server_seen = await converse(
        server_policy(certs, version, client_auth=client_auth),
        client_policy(certs, kind),
    )
    assert_refused(
        server_seen,
        client_seen,
        CLIENT_CERT_REFUSALS[kind],
        phase=tv.Phase.CLIENT_CERTIFICATE,
        version=version,
        peer_surfaced_in="handshake" if version is TLS12 else "confirm",
        presented=certs.client(kind).info,
    )


async def test_server_with_required_client_auth_refuses_a_client_without_one(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    """With no certificate sent, "auto" does not wait for a verdict, so in
    TLS 1.3 the refusal surfaces at the client's first read.
    """
    client_seen, server_seen = await converse(
        server_policy(certs, version, client_auth=REQUIRED), client_policy(certs)
    )
    assert_refused(
        server_seen,
        client_seen,
        missing_certificate(version),
        phase=tv.Phase.CLIENT_CERTIFICATE,
        version=version,
        peer_surfaced_in="handshake" if version is TLS12 else "receive",
        presented=None,
    )


TLS13_REFUSALS = [
    *(
        pytest.param(auth, kind, CLIENT_CERT_REFUSALS[kind], id=f"{auth}-{kind}")
        for auth in (OPTIONAL, REQUIRED)
        for kind in CLIENT_CERT_REFUSALS
    ),
    pytest.param(REQUIRED, None, missing_certificate(TLS13), id=f"{REQUIRED}-None"),
]


@pytest.mark.parametrize(("client_auth", "kind", "refusal"), TLS13_REFUSALS)
async def test_tls13_client_not_confirming_learns_of_refusal_at_first_receive(
    certs: CertKit,
    client_auth: tv.ClientAuth,
    kind: ClientKind | None,
    refusal: Refusal,
) -> None:
    steps: list[str] = []

    async def handshake_then_receive(stream: tv.TLSStream[trio.SocketStream]) -> bytes:
        await stream.do_handshake()
        steps.append("handshake done")
        return await stream.receive_some()

    client_seen, server_seen = await converse(
        server_policy(certs, TLS13, client_auth=client_auth),
        client_policy(certs, kind, confirm_client_auth="never"),
        client_action=handshake_then_receive,
    )
    assert steps == ["handshake done"]
    assert_refused(
        server_seen,
        client_seen,
        refusal,
        phase=tv.Phase.CLIENT_CERTIFICATE,
        version=TLS13,
        peer_surfaced_in="receive",
        presented=None if kind is None else certs.client(kind).info,
    )


async def test_tls13_client_without_a_certificate_does_not_wait_for_a_verdict(
    certs: CertKit,
) -> None:
    """``confirm_client_auth="auto"`` waits only when a certificate was sent.

    This server asks for a certificate but may go without one, and sends no
    session tickets, so a verdict on a missing certificate never comes: a
    client that waited for one would stall a protocol in which it speaks
    first.
    """
    server = certs.server_context(
        "valid", client_auth=ssl.CERT_OPTIONAL, versions=TLS13
    )
    server.num_tickets = 0

    async def request_then_response(stream: tv.TLSStream[trio.SocketStream]) -> bytes:
        await stream.do_handshake()
        await stream.send_all(b"request")
        return await stream.receive_some()

    async def response_to_request(stream: tv.TLSStream[trio.SocketStream]) -> bytes:
        await stream.do_handshake()
        request = await stream.receive_some()
        await stream.send_all(b"response")
        return request

    client_seen, server_seen = await run_pair(
        server,
        client_policy(certs, confirm_timeout=0.5),
        server_action=response_to_request,
        client_action=request_then_response,
    )
    assert client_seen.ok, f"client failed: {client_seen.error!r}"
    assert server_seen.ok, f"server failed: {server_seen.error!r}"
    assert client_seen.value == b"response"
    assert server_seen.value == b"request"
