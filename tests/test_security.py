"""Security regressions: each test pins one way a TLS setup is talked out of
verifying, and proves on real loopback connections that it does not happen.

* No policy and no default path gives an unauthenticated client connection
  without the explicit ``insecure=True`` / ``allow_unauthenticated=True``.
* The server's name is always checked: no silent ``check_hostname=False``, IP
  literals are matched against IP addresses, common names never count.
* Per-name mutual TLS (a selector reading the ClientHello) cannot be
  sidestepped by spelling the name differently, leaving it out, asking for a
  name the certificate does not carry, or changing it in the second
  ClientHello after a HelloRetryRequest.  The last one needs a client that
  misbehaves, so a minimal TLS 1.3 client (RFC 8446, X25519 and
  AES-128-GCM-SHA256 only) is written here.
* ``authorize()`` runs on every handshake, resumed ones included, and a session
  made under one policy never resumes under another.
* TLS older than 1.2, renegotiation, compression, small keys and SHA-1
  signatures are refused, with the documented error on both ends.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import hmac
import math
import os
import ssl
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Literal

import pytest
import trio
import trio.testing
from certs import CLIENT_DNS, CertKit, ClientKind
from certs import Identity as KitIdentity
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from loopback import Outcome, run_pair, socket_pair
from openssl_peer import (
    identity_args,
    open_helper_nursery,
    run_openssl,
    s_client_args,
    s_server,
)

import trio_verify as tv
from trio_verify._certs import load_pem_chain
from trio_verify._policy import coerce_policy

TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
NO_CERTIFICATE_ALERT = {
    TLS12: tv.Alert.HANDSHAKE_FAILURE,
    TLS13: tv.Alert.CERTIFICATE_REQUIRED,
}
TIMEOUT = 10.0
SECURE = "secure.test"
OPEN = "open.test"
WELCOME = b"welcome\n"

Stream = tv.TLSStream[trio.SocketStream]
Resumption = Literal["tls12-ticket", "tls12-session-id", "tls13-ticket"]
RESUMPTIONS: tuple[Resumption, ...] = (
    "tls12-ticket",
    "tls12-session-id",
    "tls13-ticket",
)


@pytest.fixture(params=[TLS12, TLS13], ids=["TLSv1.2", "TLSv1.3"])
def version(request: pytest.FixtureRequest) -> ssl.TLSVersion:
    """The TLS version the client pins (servers allow both)."""
    result: ssl.TLSVersion = request.param
    return result


@pytest.fixture(scope="module")
def named_server(certs: CertKit) -> KitIdentity:
    """A server certificate for every name the selectors here route on."""
    return certs.issue(
        "security-server-names",
        names=(SECURE, f"{SECURE}.", OPEN, "localhost", "127.0.0.1"),
        common_name=SECURE,
    )


@pytest.fixture(scope="module")
def open_only_server(certs: CertKit) -> KitIdentity:
    """A server certificate that names only ``open.test``."""
    return certs.issue("security-server-open-only", names=(OPEN,), common_name=OPEN)


# ------------------------------------------------------------------ helpers


def identity(kit_identity: KitIdentity) -> tv.Identity:
    return tv.Identity.from_pem(kit_identity.cert_chain_pem, kit_identity.key_pem)


def open_policy(server: KitIdentity, **options: Any) -> tv.ServerPolicy:
    """Clients are not asked for a certificate."""
    options.setdefault("name", "open")
    return tv.ServerPolicy(identity=identity(server), **options)


def mtls_policy(certs: CertKit, server: KitIdentity, **options: Any) -> tv.ServerPolicy:
    """Mutual TLS: a client certificate from the kit's root is required."""
    options.setdefault("name", "mtls")
    return tv.ServerPolicy(
        identity=identity(server),
        client_auth=tv.ClientAuth.REQUIRED,
        client_trust=certs.ca_pem,
        **options,
    )


def client_policy(
    certs: CertKit,
    kind: ClientKind | None = None,
    *,
    version: ssl.TLSVersion | None = None,
    **options: Any,
) -> tv.ClientPolicy:
    """Trusts the kit's root; presents the client identity ``kind`` when asked."""
    if version is not None:
        options.update(minimum_version=version, maximum_version=version)
    options.setdefault("trust", certs.ca_pem)
    return tv.ClientPolicy(
        identity=None if kind is None else identity(certs.client(kind)), **options
    )


def unverified_client_context() -> ssl.SSLContext:
    """What ``ssl._create_unverified_context()`` makes: verification off."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@contextmanager
def old_versions_allowed() -> Iterator[None]:
    """Silence the ``ssl`` module's deprecation of TLS 1.0 and 1.1 settings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


# ------------------------------------------------------- custom certificates
#
# CertKit issues what a valid certificate looks like; these are the ones it
# will not make: a DNS name spelled like an IP address, an RSA-1024 key, and a
# SHA-1 signature (which cryptography refuses to produce, so the leaf is
# signed again by hand).

WeakKind = Literal["rsa-1024", "sha-1"]
WEAK_VERIFY_CODE: dict[WeakKind, int] = {"rsa-1024": 66, "sha-1": 68}
_ECDSA_WITH_SHA1 = bytes.fromhex("300906072a8648ce3d0401")  # AlgorithmIdentifier


def _der(tag: int, body: bytes) -> bytes:
    if len(body) < 0x80:
        return bytes((tag, len(body))) + body
    size = len(body).to_bytes((len(body).bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + body


def _der_items(data: bytes) -> list[bytes]:
    """The encoded elements inside the DER SEQUENCE ``data``."""

    def element_end(pos: int) -> tuple[int, int]:
        length = data[pos + 1]
        start = pos + 2
        if length & 0x80:
            count = length & 0x7F
            length = int.from_bytes(data[start : start + count], "big")
            start += count
        return start, start + length

    start, end = element_end(0)
    items = []
    while start < end:
        _, item_end = element_end(start)
        items.append(data[start:item_end])
        start = item_end
    return items


def _signed_with_sha1(
    cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    """``cert`` signed again by ``ca_key`` with ECDSA and SHA-1."""
    tbs = _der_items(cert.tbs_certificate_bytes)
    tbs[2] = _ECDSA_WITH_SHA1  # after the version and the serial number
    tbs_der = _der(0x30, b"".join(tbs))
    signature = ca_key.sign(tbs_der, ec.ECDSA(hashes.SHA1()))
    der = _der(0x30, tbs_der + _ECDSA_WITH_SHA1 + _der(0x03, b"\x00" + signature))
    return x509.load_der_x509_certificate(der)


def custom_identity(
    certs: CertKit,
    directory: Path,
    name: str,
    *,
    names: list[x509.GeneralName],
    eku: x509.ObjectIdentifier,
    weakness: WeakKind | None = None,
) -> KitIdentity:
    """A leaf issued by the kit's root, in the shape VERIFY_X509_STRICT wants."""
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if weakness == "rsa-1024":
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = x509.load_pem_x509_certificate(certs.ca.cert_pem.bytes())
    ca_key = serialization.load_pem_private_key(
        certs.ca.private_key_pem.bytes(), password=None
    )
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, name)])
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(certs.now - timedelta(days=1))
        .not_valid_after(certs.now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca_ski.value
            ),
            critical=False,
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    if weakness == "sha-1":
        cert = _signed_with_sha1(cert, ca_key)
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_file = directory / f"{name}.crt"
    key_file = directory / f"{name}.key"
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(key_pem)
    chain = load_pem_chain(cert_pem)
    return KitIdentity(
        name=name,
        cert_chain_pem=cert_pem,
        key_pem=key_pem,
        cert_file=cert_file,
        key_file=key_file,
        chain_file=cert_file,
        info=chain[0],
        chain=chain,
    )


@pytest.fixture(scope="module")
def custom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("security-certs")


@pytest.fixture(scope="module")
def dns_ip_server(certs: CertKit, custom_dir: Path) -> KitIdentity:
    """A server certificate whose only name is the *DNS name* ``127.0.0.1``."""
    return custom_identity(
        certs,
        custom_dir,
        "security-server-dns-ip",
        names=[x509.DNSName("127.0.0.1")],
        eku=ExtendedKeyUsageOID.SERVER_AUTH,
    )


@pytest.fixture(scope="module", params=["rsa-1024", "sha-1"])
def weakness(request: pytest.FixtureRequest) -> WeakKind:
    result: WeakKind = request.param
    return result


@pytest.fixture(scope="module")
def weak_server(certs: CertKit, custom_dir: Path, weakness: WeakKind) -> KitIdentity:
    """A server certificate for ``localhost`` with a small key or a SHA-1 signature."""
    return custom_identity(
        certs,
        custom_dir,
        f"security-server-{weakness}",
        names=[x509.DNSName("localhost")],
        eku=ExtendedKeyUsageOID.SERVER_AUTH,
        weakness=weakness,
    )


@pytest.fixture(scope="module")
def weak_client(certs: CertKit, custom_dir: Path, weakness: WeakKind) -> KitIdentity:
    """A client certificate with a small key or a SHA-1 signature."""
    return custom_identity(
        certs,
        custom_dir,
        f"security-client-{weakness}",
        names=[x509.DNSName(CLIENT_DNS)],
        eku=ExtendedKeyUsageOID.CLIENT_AUTH,
        weakness=weakness,
    )


def weak_server_context(server: KitIdentity) -> ssl.SSLContext:
    """A plain server context that presents ``server`` at security level 0."""
    context = seclevel_zero(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    server.configure_cert(context)
    return context


def seclevel_zero(context: ssl.SSLContext) -> ssl.SSLContext:
    """Let ``context`` load and send what OpenSSL's default level refuses."""
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


class SniSelector:
    """``secure.test`` needs mutual TLS and ``open.test`` does not; any other
    name, and no name at all, gets the strict policy (it fails closed).

    Looks names up by :attr:`~trio_verify.ClientHello.normalized_server_name`
    and keeps every ClientHello it judged.
    """

    def __init__(self, strict: tv.ServerPolicy, relaxed: tv.ServerPolicy) -> None:
        self.strict = strict
        self.policies = {SECURE: strict, OPEN: relaxed}
        self.hellos: list[tv.ClientHello] = []

    def __call__(self, hello: tv.ClientHello) -> tv.ServerPolicy:
        self.hellos.append(hello)
        return self.policies.get(hello.normalized_server_name or "", self.strict)


@dataclasses.dataclass
class Served:
    """What a server saw of one connection that it accepted."""

    policy_name: str | None
    peer: tv.PeerInfo
    hello: tv.ClientHello | None


async def server_welcomes(stream: Stream) -> Served:
    await stream.do_handshake()
    await stream.send_all(WELCOME)
    return Served(stream.policy.name, stream.peer, stream.client_hello)


async def server_waits_for_eof(stream: Stream) -> Served:
    """Handshake, then read until the client leaves (it sends nothing)."""
    await stream.do_handshake()
    while await stream.receive_some():
        pass
    return Served(stream.policy.name, stream.peer, stream.client_hello)


async def client_reads(stream: Stream) -> bytes:
    await stream.do_handshake()
    return await stream.receive_some()


class Server:
    """A listener on loopback, and the outcome of each connection it accepted."""

    def __init__(self, port: int, results: trio.MemoryReceiveChannel[Outcome]) -> None:
        self.port = port
        self._results = results

    async def result(self) -> Outcome:
        """The outcome of the next connection to finish on the server."""
        return await self._results.receive()


@asynccontextmanager
async def serving(
    policy: tv.ServerPolicy | ssl.SSLContext | tv.PolicySelector,
    *,
    action: Callable[[Stream], Awaitable[Any]] = server_welcomes,
) -> AsyncIterator[Server]:
    """Serve ``policy`` (or a selector) on loopback until the block ends."""
    transport = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    listener = tv.TLSListener(transport, policy)
    send, receive = trio.open_memory_channel[Outcome](math.inf)

    async def handle(stream: Stream) -> None:
        outcome = Outcome()
        try:
            outcome.value = await action(stream)
        except Exception as exc:
            outcome.error = exc
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()
        send.send_nowait(outcome)

    async def accept_loop(nursery: trio.Nursery) -> None:
        while True:
            nursery.start_soon(handle, await listener.accept())

    async with listener, open_helper_nursery() as nursery:
        nursery.start_soon(accept_loop, nursery)
        yield Server(transport.socket.getsockname()[1], receive)
        nursery.cancel_scope.cancel()


async def connect(
    port: int,
    policy: tv.ClientPolicy | ssl.SSLContext,
    *,
    server_hostname: str | None = "localhost",
    session: ssl.SSLSession | None = None,
    action: Callable[[Stream], Awaitable[Any]] = client_reads,
) -> Outcome:
    """One client connection to ``port``; its outcome, the stream closed."""
    sock = await trio.open_tcp_stream("127.0.0.1", port)
    stream = tv.TLSStream(sock, policy, server_hostname=server_hostname)
    if session is not None:
        stream.session = session
    outcome = Outcome()
    try:
        outcome.value = await action(stream)
    except Exception as exc:
        outcome.error = exc
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()
    return outcome


async def one_connection(
    policy: tv.ServerPolicy | ssl.SSLContext | tv.PolicySelector,
    client: tv.ClientPolicy | ssl.SSLContext,
    *,
    server_hostname: str | None = "localhost",
) -> tuple[Outcome, Outcome]:
    """One connection through a fresh listener: (client, server) outcomes."""
    with trio.fail_after(TIMEOUT):
        async with serving(policy) as server:
            outcome = await connect(
                server.port, client, server_hostname=server_hostname
            )
            return outcome, await server.result()


def assert_refused_without_certificate(
    client: Outcome, server: Outcome, version: ssl.TLSVersion
) -> None:
    """The server required a certificate, got none, and told the client so."""
    alert = NO_CERTIFICATE_ALERT[version]
    server_error = server.expect(tv.MissingClientCertificate)
    assert (server_error.phase, server_error.alert_sent) == (
        tv.Phase.CLIENT_CERTIFICATE,
        alert,
    ), f"{server_error!r}: {server_error}"
    client_error = client.expect(tv.PeerRequiresCertificate)
    assert client_error.alert_received is alert, f"{client_error!r}: {client_error}"


def assert_server_refused(
    client: Outcome,
    server: Outcome,
    cls: type[tv.CertificateVerificationError],
    verify_code: int,
    alert: tv.Alert,
) -> None:
    """The client refused the server's certificate, and the server heard why."""
    error = client.expect(cls)
    assert (error.side, error.phase, error.verify_code, error.alert_sent) == (
        "client",
        tv.Phase.SERVER_CERTIFICATE,
        verify_code,
        alert,
    ), f"{error!r}: {error}"
    server_error = server.expect(tv.PeerRejectedCertificate)
    assert server_error.alert_received is alert, f"{server_error!r}: {server_error}"


# ------------------------------------------- no unauthenticated client by default


@pytest.mark.parametrize("trust", ["system (default)", "another CA"])
async def test_client_policy_refuses_a_server_from_an_unknown_ca(
    certs: CertKit, version: ssl.TLSVersion, trust: str
) -> None:
    options: dict[str, Any] = {"minimum_version": version, "maximum_version": version}
    if trust == "another CA":
        options["trust"] = certs.other_ca_pem
    client, server = await run_pair(
        certs.server_context("valid"), tv.ClientPolicy(**options)
    )
    assert_server_refused(client, server, tv.UnknownIssuer, 20, tv.Alert.UNKNOWN_CA)


async def test_open_tls_stream_verifies_by_default(
    certs: CertKit, named_server: KitIdentity
) -> None:
    # The kit's root is in no system store, so the default policy must refuse.
    with trio.fail_after(TIMEOUT):
        async with serving(open_policy(named_server)) as server:
            with pytest.raises(tv.UnknownIssuer) as caught:
                await tv.open_tls_stream("127.0.0.1", server.port)
            assert caught.value.verify_code == 20
            with pytest.raises(tv.UnknownIssuer):
                await tv.open_tls_stream(
                    "127.0.0.1", server.port, server_hostname="localhost"
                )
            for _ in range(2):
                refused = (await server.result()).expect(tv.PeerRejectedCertificate)
                assert refused.alert_received is tv.Alert.UNKNOWN_CA


async def test_client_pool_verifies_by_default(
    certs: CertKit, named_server: KitIdentity
) -> None:
    # A pool made without a policy uses ClientPolicy(): the system store,
    # which does not hold the kit's root.  A policy chosen per host by a
    # function is judged like any other: an unverifying context is refused.
    with trio.fail_after(TIMEOUT):
        async with serving(open_policy(named_server)) as server:
            async with tv.open_client_pool() as pool:
                for name in ("localhost", None):
                    with pytest.raises(tv.UnknownIssuer) as caught:
                        async with pool.connection(
                            "127.0.0.1", server.port, server_hostname=name
                        ):
                            pass  # pragma: no cover
                    assert caught.value.verify_code == 20
                    refused = (await server.result()).expect(tv.PeerRejectedCertificate)
                    assert refused.alert_received is tv.Alert.UNKNOWN_CA
                assert pool.stats().open == 0
            async with tv.open_client_pool(
                policy=lambda host, port: unverified_client_context()
            ) as pool:
                with pytest.raises(tv.PolicyError, match="allow_unauthenticated"):
                    async with pool.connection("127.0.0.1", server.port):
                        pass  # pragma: no cover


def _generic_protocol_context() -> ssl.SSLContext:
    # PROTOCOL_TLS (deprecated) defaults to CERT_NONE without a hostname check.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return ssl.SSLContext(ssl.PROTOCOL_TLS)


def _default_context_turned_off() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


UNVERIFYING_CONTEXTS: dict[str, Callable[[], ssl.SSLContext]] = {
    "PROTOCOL_TLS_CLIENT turned off": unverified_client_context,
    "create_default_context turned off": _default_context_turned_off,
    "PROTOCOL_TLS default": _generic_protocol_context,
}


@pytest.mark.parametrize(
    "make", UNVERIFYING_CONTEXTS.values(), ids=UNVERIFYING_CONTEXTS
)
async def test_unverifying_raw_context_is_refused_without_the_explicit_flag(
    make: Callable[[], ssl.SSLContext],
) -> None:
    context = make()
    assert context.verify_mode == ssl.CERT_NONE
    transport, _ = trio.testing.memory_stream_pair()
    with pytest.raises(tv.PolicyError, match="allow_unauthenticated"):
        coerce_policy(context, server_side=False)
    with pytest.raises(tv.PolicyError, match="allow_unauthenticated"):
        tv.TLSStream(transport, context, server_hostname="localhost")
    with pytest.raises(tv.PolicyError, match="allow_unauthenticated"):
        tv.ClientPolicy.from_ssl_context(context)
    async with tv.open_client_pool(policy=context) as pool:
        with pytest.raises(tv.PolicyError, match="allow_unauthenticated"):
            async with pool.connection("127.0.0.1", 9):
                pass  # pragma: no cover
    # Only the explicit flag lets it through, loudly, and says what it is.
    with pytest.warns(tv.PolicyWarning, match="impersonate"):
        policy = tv.ClientPolicy.from_ssl_context(context, allow_unauthenticated=True)
    assert policy.insecure


async def test_open_tls_stream_judges_its_policy_before_connecting() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    connected: trio.SocketStream | None = None
    # Whatever the call leaves open is reported here, not in a later test.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        error: BaseException | None = None
        try:
            await tv.open_tls_stream(
                "127.0.0.1", port, policy=unverified_client_context()
            )
        except Exception as exc:
            error = exc
        refused = isinstance(error, tv.PolicyError)
        del error  # its traceback holds whatever the call left open
        # A connection made is already in the accept queue: accept() returns
        # at once.
        with trio.move_on_after(0.2):
            connected = await listener.accept()
        if connected is not None:
            await connected.aclose()
        await listener.aclose()
        gc.collect()
    unclosed = [str(w.message) for w in caught if w.category is ResourceWarning]
    assert refused, "open_tls_stream accepted a context that verifies nothing"
    assert connected is None, (
        f"open_tls_stream connected before judging its policy; unclosed: {unclosed}"
    )
    assert not unclosed


async def test_assigning_an_unverifying_context_to_a_client_stream_keeps_verifying(
    certs: CertKit,
) -> None:
    # ``stream.context = ...`` is forwarded to the SSLObject, as in trio.  The
    # verify mode stays the one the stream was made with, so swapping in a
    # context that verifies nothing only swaps in an empty trust store.
    client_sock, server_sock = await socket_pair()
    client = tv.TLSStream(
        client_sock, client_policy(certs), server_hostname="localhost"
    )
    client.context = unverified_client_context()
    server = tv.TLSStream(
        server_sock, certs.server_context("other_ca"), server_side=True
    )
    try:
        async with open_helper_nursery() as nursery:
            nursery.start_soon(_swallow, server.do_handshake)
            with pytest.raises(tv.UnknownIssuer):
                await client.do_handshake()
    finally:
        await trio.aclose_forcefully(client)
        await trio.aclose_forcefully(server)


async def _swallow(fn: Callable[[], Awaitable[object]]) -> None:
    with suppress(trio.BrokenResourceError):
        await fn()


def test_replace_cannot_turn_verification_off_silently(certs: CertKit) -> None:
    policy = client_policy(certs)
    with pytest.raises(tv.PolicyError):
        dataclasses.replace(policy, check_hostname=False)
    with pytest.raises(tv.PolicyError):
        dataclasses.replace(policy, trust=())
    with pytest.raises(tv.PolicyError, match="insecure"):
        dataclasses.replace(policy, insecure=True)  # trust= says otherwise


# --------------------------------------------------- the hostname is always checked


def test_raw_context_without_hostname_check_is_refused() -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    assert context.verify_mode == ssl.CERT_REQUIRED
    transport, _ = trio.testing.memory_stream_pair()
    with pytest.raises(tv.PolicyError, match="check_hostname"):
        tv.TLSStream(transport, context, server_hostname="localhost")
    with pytest.raises(tv.PolicyError, match="check_hostname"):
        coerce_policy(context, server_side=False)


@pytest.mark.parametrize(
    "trust", ["system", "ca"], ids=["system trust", "a CA as trust"]
)
def test_client_policy_without_hostname_check_or_pins_is_refused(
    certs: CertKit, trust: str
) -> None:
    with pytest.raises(tv.PolicyError, match="check_hostname=False"):
        tv.ClientPolicy(
            trust="system" if trust == "system" else certs.ca_pem,
            check_hostname=False,
        )


@pytest.mark.parametrize("kind", ["policy", "raw context"])
async def test_client_stream_without_a_server_name_is_refused(
    certs: CertKit, kind: str
) -> None:
    # A hostname check with no name to check is no check: the chain is
    # verified, and then any server holding a certificate from a trusted CA
    # passes (measured: ssl's wrap_bio, unlike wrap_socket, accepts this).
    # Refuse it, as ssl.SSLContext.wrap_socket does.
    policy: tv.ClientPolicy | ssl.SSLContext = (
        client_policy(certs) if kind == "policy" else certs.client_context()
    )
    transport, _ = trio.testing.memory_stream_pair()
    with pytest.raises(ValueError, match="server_hostname"):
        tv.TLSStream(transport, policy)
    with pytest.raises(ValueError, match="server_hostname"):
        tv.TLSStream(transport, policy, server_hostname="")


async def test_client_without_a_server_name_does_not_accept_a_wrong_name(
    certs: CertKit,
) -> None:
    # The same regression seen from the wire: whatever the stream does with
    # a missing name, it must not end in a connection to a server whose
    # certificate names someone else.
    client_sock, server_sock = await socket_pair()
    server = tv.TLSStream(
        server_sock, certs.server_context("wrong_name"), server_side=True
    )
    try:
        try:
            client = tv.TLSStream(client_sock, client_policy(certs))
        except ValueError:
            return
        try:
            async with open_helper_nursery() as nursery:
                nursery.start_soon(_swallow, server.do_handshake)
                with pytest.raises(tv.TLSError):
                    await client.do_handshake()
        finally:
            await trio.aclose_forcefully(client)
    finally:
        await trio.aclose_forcefully(server)
        await trio.aclose_forcefully(client_sock)


async def test_ip_literal_matches_an_ip_address_name(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    client, _ = await run_pair(
        certs.server_context("ip_only"),
        client_policy(certs, version=version),
        server_hostname="127.0.0.1",
    )
    assert client.ok, f"{client.error!r}: {client.error}"
    assert client.value == b"ping"


@pytest.mark.parametrize(
    ("kind", "dialled"),
    [
        ("ip_only", "127.0.0.2"),
        ("ip_only", "::1"),
        ("wrong_name", "127.0.0.1"),
        ("dns_ip", "127.0.0.1"),
    ],
    ids=["other-ipv4", "ipv6-vs-ipv4", "dns-name-only", "ip-spelled-as-dns-name"],
)
async def test_ip_literal_is_checked_against_ip_addresses_only(
    certs: CertKit,
    version: ssl.TLSVersion,
    dns_ip_server: KitIdentity,
    kind: str,
    dialled: str,
) -> None:
    server_identity = {
        "ip_only": certs.server("ip_only"),
        "wrong_name": certs.server("wrong_name"),
        "dns_ip": dns_ip_server,
    }[kind]
    client, server = await run_pair(
        certs.server_context(server_identity),
        client_policy(certs, version=version),
        server_hostname=dialled,
    )
    assert_server_refused(client, server, tv.NameMismatch, 64, tv.Alert.BAD_CERTIFICATE)


async def test_common_name_only_certificate_is_refused(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    client, server = await run_pair(
        certs.server_context("cn_only"), client_policy(certs, version=version)
    )
    assert_server_refused(client, server, tv.NameMismatch, 62, tv.Alert.BAD_CERTIFICATE)


# ------------------------------------------------ per-name mutual TLS


def sni_selector(certs: CertKit, server: KitIdentity) -> SniSelector:
    return SniSelector(mtls_policy(certs, server), open_policy(server))


@pytest.mark.parametrize("spelling", ["SECURE.TEST", "Secure.Test.", "secure.test."])
async def test_sni_spelling_does_not_bypass_mutual_tls(
    certs: CertKit, named_server: KitIdentity, version: ssl.TLSVersion, spelling: str
) -> None:
    selector = sni_selector(certs, named_server)
    client, server = await one_connection(
        selector, client_policy(certs, version=version), server_hostname=spelling
    )
    assert_refused_without_certificate(client, server, version)
    [hello] = selector.hellos
    assert (hello.server_name, hello.normalized_server_name) == (spelling, SECURE)


async def test_missing_sni_gets_the_strict_policy(
    certs: CertKit, named_server: KitIdentity, version: ssl.TLSVersion
) -> None:
    # Dialling an IP address sends no server name at all.
    selector = sni_selector(certs, named_server)
    client, server = await one_connection(
        selector, client_policy(certs, version=version), server_hostname="127.0.0.1"
    )
    assert_refused_without_certificate(client, server, version)
    [hello] = selector.hellos
    assert hello.server_name is None


async def test_policy_chosen_for_the_name_governs_whatever_certificate_it_presents(
    certs: CertKit, open_only_server: KitIdentity, version: ssl.TLSVersion
) -> None:
    # The mutual-TLS name is served with a certificate that does not carry it;
    # the client accepts that certificate by its pin.  What the client must
    # prove still follows from the name it asked for.
    selector = SniSelector(
        mtls_policy(certs, open_only_server), open_policy(open_only_server)
    )
    pinned = {open_only_server.info.spki_pin}
    without = client_policy(
        certs, version=version, check_hostname=False, spki_pins=pinned
    )
    client, server = await one_connection(selector, without, server_hostname=SECURE)
    assert_refused_without_certificate(client, server, version)

    with_certificate = client_policy(
        certs, "valid", version=version, check_hostname=False, spki_pins=pinned
    )
    client, server = await one_connection(
        selector, with_certificate, server_hostname=SECURE
    )
    assert client.ok, f"{client.error!r}: {client.error}"
    served: Served = server.value
    assert served.policy_name == "mtls"
    assert served.peer.server_name == SECURE
    assert served.peer.certificate is not None
    assert served.peer.certificate.der == certs.client("valid").info.der


# ----------------------------------- a second ClientHello cannot switch policy
#
# After a HelloRetryRequest the client sends a second ClientHello, which
# RFC 8446 §4.1.2 says must repeat the first one.  OpenSSL 3.0 does not check
# that the server name is repeated (measured: a server's sni_callback sees the
# new name), so a client can name one server in the hello that the selector
# judges and another in the hello that OpenSSL completes.  The policy must be
# the one chosen from the first hello, and the server must keep reporting the
# first name.

_HRR_RANDOM = hashlib.sha256(b"HelloRetryRequest").digest()
_X25519 = 0x001D
_HS_CERTIFICATE_REQUEST = 13
_HS_FINISHED = 20


def _vector(data: bytes, length_size: int) -> bytes:
    return len(data).to_bytes(length_size, "big") + data


def _extension(ext_type: int, body: bytes) -> bytes:
    return ext_type.to_bytes(2, "big") + _vector(body, 2)


def _handshake(msg_type: int, body: bytes) -> bytes:
    return bytes((msg_type,)) + _vector(body, 3)


def _expand_label(secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
    """HKDF-Expand-Label with SHA-256 (RFC 8446 §7.1)."""
    info = length.to_bytes(2, "big") + _vector(b"tls13 " + label, 1)
    info += _vector(context, 1)
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.digest(secret, block + info + bytes((counter,)), "sha256")
        out += block
        counter += 1
    return out[:length]


def _derive_secret(secret: bytes, label: bytes, transcript: bytes) -> bytes:
    return _expand_label(secret, label, hashlib.sha256(transcript).digest(), 32)


def _finished(base_key: bytes, transcript: bytes) -> bytes:
    finished_key = _expand_label(base_key, b"finished", b"", 32)
    return hmac.digest(finished_key, hashlib.sha256(transcript).digest(), "sha256")


def _client_hello(server_name: str, random: bytes, key_share: bytes | None) -> bytes:
    host = server_name.encode("ascii")
    shares = (
        b"" if key_share is None else _X25519.to_bytes(2, "big") + _vector(key_share, 2)
    )
    extensions = b"".join(
        (
            _extension(0, _vector(b"\x00" + _vector(host, 2), 2)),
            _extension(10, _vector(_X25519.to_bytes(2, "big"), 2)),
            _extension(13, _vector(bytes.fromhex("040308040805"), 2)),
            _extension(43, _vector(b"\x03\x04", 1)),
            _extension(51, _vector(shares, 2)),
        )
    )
    body = b"\x03\x03" + random + _vector(b"", 1) + _vector(b"\x13\x01", 2)
    return _handshake(1, body + _vector(b"\x00", 1) + _vector(extensions, 2))


def _server_hello_extensions(message: bytes) -> dict[int, bytes]:
    body = message[4:]
    pos = 2 + 32
    pos += 1 + body[pos] + 2 + 1  # session id, cipher suite, compression
    end = pos + 2 + int.from_bytes(body[pos : pos + 2], "big")
    pos += 2
    found: dict[int, bytes] = {}
    while pos < end:
        ext_type = int.from_bytes(body[pos : pos + 2], "big")
        length = int.from_bytes(body[pos + 2 : pos + 4], "big")
        found[ext_type] = body[pos + 4 : pos + 4 + length]
        pos += 4 + length
    return found


class _RecordKeys:
    """AES-128-GCM record protection for one direction (RFC 8446 §5.2)."""

    def __init__(self, secret: bytes) -> None:
        self._aead = AESGCM(_expand_label(secret, b"key", b"", 16))
        self._iv = _expand_label(secret, b"iv", b"", 12)
        self._sequence = 0

    def _nonce(self) -> bytes:
        sequence = self._sequence.to_bytes(12, "big")
        self._sequence += 1
        return bytes(a ^ b for a, b in zip(self._iv, sequence, strict=True))

    def seal(self, content_type: int, data: bytes) -> bytes:
        inner = data + bytes((content_type,))
        header = b"\x17\x03\x03" + (len(inner) + 16).to_bytes(2, "big")
        return header + self._aead.encrypt(self._nonce(), inner, header)

    def open(self, header: bytes, body: bytes) -> tuple[int, bytes]:
        inner = self._aead.decrypt(self._nonce(), body, header).rstrip(b"\x00")
        return inner[-1], inner[:-1]


class _ServerAlert(Exception):
    def __init__(self, alert: int) -> None:
        super().__init__(alert)
        self.alert = alert


@dataclasses.dataclass
class RetryOutcome:
    """What the misbehaving client saw of the server."""

    server_messages: list[int] = dataclasses.field(default_factory=list)
    """The types of the handshake messages in the server's encrypted flight."""
    alert: int | None = None
    """The alert the server sent, if any."""
    data: bytes = b""
    """The first application data the server sent."""

    @property
    def certificate_requested(self) -> bool:
        return _HS_CERTIFICATE_REQUEST in self.server_messages


class RenamingClient:
    """A TLS 1.3 client that names one server in its first ClientHello and
    another in the second one, after forcing a HelloRetryRequest (its first
    hello carries no key share).  It presents no certificate and does not
    verify the server's: it only reports what the server asked of it.
    """

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._handshake = bytearray()

    async def _record(self) -> tuple[bytes, bytes] | None:
        while True:
            if len(self._buffer) >= 5:
                end = 5 + int.from_bytes(self._buffer[3:5], "big")
                if len(self._buffer) >= end:
                    header, body = bytes(self._buffer[:5]), bytes(self._buffer[5:end])
                    del self._buffer[:end]
                    return header, body
            data = await self._stream.receive_some(65536)
            if not data:
                return None
            self._buffer += data

    def _take_message(self) -> bytes | None:
        buffer = self._handshake
        if len(buffer) < 4:
            return None
        end = 4 + int.from_bytes(buffer[1:4], "big")
        if len(buffer) < end:
            return None
        message = bytes(buffer[:end])
        del buffer[:end]
        return message

    async def _plaintext_message(self) -> bytes:
        while (message := self._take_message()) is None:
            record = await self._record()
            if record is None:
                raise EOFError("the server closed the connection")
            header, body = record
            if header[0] == 21:
                raise _ServerAlert(body[1])
            if header[0] == 22:
                self._handshake += body
            # A ChangeCipherSpec (middlebox compatibility) means nothing.
        return message

    async def _encrypted_message(self, keys: _RecordKeys) -> bytes:
        while (message := self._take_message()) is None:
            record = await self._record()
            if record is None:
                raise EOFError("the server closed the connection")
            header, body = record
            if header[0] == 21:
                raise _ServerAlert(body[1])
            if header[0] != 23:
                continue
            content_type, data = keys.open(header, body)
            if content_type == 21:
                raise _ServerAlert(data[1])
            self._handshake += data
        return message

    async def run(self, first_name: str, second_name: str) -> RetryOutcome:
        outcome = RetryOutcome()
        try:
            await self._run(first_name, second_name, outcome)
        except _ServerAlert as alert:
            outcome.alert = alert.alert
        return outcome

    async def _run(
        self, first_name: str, second_name: str, outcome: RetryOutcome
    ) -> None:
        random = os.urandom(32)
        first = _client_hello(first_name, random, key_share=None)
        await self._stream.send_all(b"\x16\x03\x01" + _vector(first, 2))
        retry = await self._plaintext_message()
        assert retry[0] == 2, "no ServerHello"
        assert retry[6:38] == _HRR_RANDOM, "no HelloRetryRequest"
        assert _server_hello_extensions(retry)[51] == _X25519.to_bytes(2, "big")

        key = x25519.X25519PrivateKey.generate()
        second = _client_hello(second_name, random, key.public_key().public_bytes_raw())
        await self._stream.send_all(b"\x16\x03\x03" + _vector(second, 2))
        # RFC 8446 §4.4.1: the first hello enters the transcript as its hash.
        transcript = b"\xfe\x00\x00\x20" + hashlib.sha256(first).digest()
        transcript += retry + second
        server_hello = await self._plaintext_message()
        transcript += server_hello
        share = _server_hello_extensions(server_hello)[51]
        shared = key.exchange(x25519.X25519PublicKey.from_public_bytes(share[4:]))

        zeros = bytes(32)
        early = hmac.digest(zeros, zeros, "sha256")
        handshake_secret = hmac.digest(
            _derive_secret(early, b"derived", b""), shared, "sha256"
        )
        client_hs = _derive_secret(handshake_secret, b"c hs traffic", transcript)
        server_hs = _derive_secret(handshake_secret, b"s hs traffic", transcript)
        server_keys = _RecordKeys(server_hs)
        request_context = b""
        while True:
            message = await self._encrypted_message(server_keys)
            outcome.server_messages.append(message[0])
            if message[0] == _HS_FINISHED:
                assert message[4:] == _finished(server_hs, transcript), (
                    "server Finished does not verify: the key schedule is wrong"
                )
                transcript += message
                break
            if message[0] == _HS_CERTIFICATE_REQUEST:
                request_context = message[5 : 5 + message[4]]
            transcript += message

        master = hmac.digest(
            _derive_secret(handshake_secret, b"derived", b""), zeros, "sha256"
        )
        server_app = _RecordKeys(_derive_secret(master, b"s ap traffic", transcript))
        client_keys = _RecordKeys(client_hs)
        flight = b""
        if outcome.certificate_requested:
            certificate = _handshake(11, _vector(request_context, 1) + _vector(b"", 3))
            transcript += certificate
            flight += client_keys.seal(22, certificate)
        flight += client_keys.seal(22, _handshake(20, _finished(client_hs, transcript)))
        await self._stream.send_all(flight)

        while (record := await self._record()) is not None:
            header, body = record
            if header[0] != 23:
                continue
            content_type, data = server_app.open(header, body)
            if content_type == 21:
                raise _ServerAlert(data[1])
            if content_type == 23:
                outcome.data = data
                return


@pytest.mark.parametrize(
    ("first", "second"),
    [(SECURE, OPEN), (OPEN, SECURE), (SECURE, SECURE), (OPEN, OPEN)],
    ids=["secure-then-open", "open-then-secure", "secure-twice", "open-twice"],
)
async def test_second_client_hello_cannot_switch_the_policy(
    certs: CertKit, named_server: KitIdentity, first: str, second: str
) -> None:
    selector = sni_selector(certs, named_server)
    with trio.fail_after(TIMEOUT):
        async with serving(selector) as server:
            async with await trio.open_tcp_stream("127.0.0.1", server.port) as sock:
                seen = await RenamingClient(sock).run(first, second)
            served = await server.result()
    # The selector judged the first hello only, and that judgement stands.
    assert [hello.server_name for hello in selector.hellos] == [first]
    if first == SECURE:
        assert seen.certificate_requested, seen
        assert seen.alert == tv.Alert.CERTIFICATE_REQUIRED, seen
        error = served.expect(tv.MissingClientCertificate)
        assert error.phase is tv.Phase.CLIENT_CERTIFICATE
    else:
        assert not seen.certificate_requested, seen
        assert seen.data == WELCOME, seen
        assert served.ok, f"{served.error!r}: {served.error}"
        view: Served = served.value
        assert view.policy_name == "open"
        assert view.peer.server_name == OPEN
        assert view.hello is not None
        assert view.hello.server_name == OPEN


# ------------------------------------- a certificate only OpenSSL can read


def ber_encoded_identity(directory: Path) -> Path:
    """A self-signed client certificate and key in one PEM file, the
    certificate's ``critical`` flag encoded as BER TRUE (01) rather than DER
    (ff): OpenSSL reads it, ``cryptography`` refuses to (found by
    fuzz/fuzz_server_engine.py)."""
    key = ed25519.Ed25519PrivateKey.from_private_bytes(b"\x05" * 32)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CLIENT_DNS)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(5)
        .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2049, 1, 1, tzinfo=UTC))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, None)
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    der = der.replace(bytes.fromhex("0101ff"), bytes.fromhex("010101"))
    path = directory / "ber-client.pem"
    path.write_bytes(
        ssl.DER_cert_to_PEM_cert(der).encode("ascii")
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


async def test_unreadable_client_certificate_does_not_stop_serve_tls(
    certs: CertKit,
    named_server: KitIdentity,
    version: ssl.TLSVersion,
    tmp_path: Path,
) -> None:
    # Any client can present such a certificate.  It is refused like any
    # untrusted one, and the server goes on serving everyone else.
    async def handler(stream: Stream) -> None:
        await stream.send_all(WELCOME)

    attacker = certs.client_context(versions=version)
    attacker.load_cert_chain(ber_encoded_identity(tmp_path))
    with trio.fail_after(TIMEOUT):
        async with open_helper_nursery() as nursery:
            listeners = await nursery.start(
                partial(
                    tv.serve_tls,
                    handler,
                    0,
                    mtls_policy(certs, named_server),
                    host="127.0.0.1",
                )
            )
            port = listeners[0].transport_listener.socket.getsockname()[1]
            refused = await connect(port, attacker)
            served = await connect(port, client_policy(certs, "valid", version=version))
            nursery.cancel_scope.cancel()
    error = refused.expect(tv.PeerRejectedCertificate)
    assert error.alert_received is tv.Alert.UNKNOWN_CA
    assert served.value == WELCOME, f"{served.error!r}"


# ------------------------------------------------ authorize() and resumption


def resuming_client(
    certs: CertKit, resumption: Resumption, kind: ClientKind | None = "valid"
) -> tv.ClientPolicy | ssl.SSLContext:
    """A client whose sessions resume by the given mechanism."""
    if resumption == "tls12-session-id":
        # Without the session_ticket extension a TLS 1.2 server can only
        # resume from its session cache, by session id.
        context = certs.client_context(identity=kind, versions=TLS12)
        context.options |= ssl.OP_NO_TICKET
        return context
    version = TLS12 if resumption == "tls12-ticket" else TLS13
    return client_policy(certs, kind, version=version)


async def client_keeps_session(stream: Stream) -> tuple[ssl.SSLSession | None, bool]:
    """Handshake and read the welcome (TLS 1.3 tickets come before it)."""
    await stream.do_handshake()
    assert await stream.receive_some() == WELCOME
    return stream.session, stream.session_reused


def check_mechanism(session: ssl.SSLSession | None, resumption: Resumption) -> None:
    assert session is not None
    if resumption == "tls12-session-id":
        assert session.id
        assert not session.has_ticket
    else:
        assert session.has_ticket


class Authorizer:
    """An ``authorize`` callback that records what it judged."""

    def __init__(self, answers: Callable[[int], bool] = lambda n: True) -> None:
        self.seen: list[tv.PeerInfo] = []
        self._answers = answers

    def __call__(self, peer: tv.PeerInfo) -> bool:
        self.seen.append(peer)
        return self._answers(len(self.seen))


@pytest.mark.parametrize("resumption", RESUMPTIONS)
async def test_authorize_runs_on_resumed_handshakes(
    certs: CertKit, named_server: KitIdentity, resumption: Resumption
) -> None:
    authorize = Authorizer()
    client = resuming_client(certs, resumption)
    with trio.fail_after(TIMEOUT):
        async with serving(
            mtls_policy(certs, named_server, authorize=authorize)
        ) as srv:
            first = await connect(srv.port, client, action=client_keeps_session)
            assert first.ok, f"{first.error!r}: {first.error}"
            session, reused = first.value
            check_mechanism(session, resumption)
            assert not reused
            second = await connect(
                srv.port, client, session=session, action=client_keeps_session
            )
            assert second.ok, f"{second.error!r}: {second.error}"
            assert second.value[1], "the session was not resumed"
            for _ in range(2):
                assert (await srv.result()).ok
    assert [peer.session_reused for peer in authorize.seen] == [False, True]
    for peer in authorize.seen:
        assert peer.certificate is not None
        assert peer.certificate.der == certs.client("valid").info.der


@pytest.mark.parametrize("resumption", RESUMPTIONS)
async def test_authorize_can_refuse_a_resumed_session(
    certs: CertKit, named_server: KitIdentity, resumption: Resumption
) -> None:
    # Access revoked after the first connection: resuming must not keep it.
    authorize = Authorizer(lambda n: n == 1)
    client = resuming_client(certs, resumption)
    with trio.fail_after(TIMEOUT):
        async with serving(
            mtls_policy(certs, named_server, authorize=authorize)
        ) as srv:
            first = await connect(srv.port, client, action=client_keeps_session)
            assert first.ok, f"{first.error!r}: {first.error}"
            assert (await srv.result()).ok
            second = await connect(srv.port, client, session=first.value[0])
            refused = (await srv.result()).expect(tv.PolicyRejected)
    assert refused.phase is tv.Phase.CONNECTION_POLICY
    assert [peer.session_reused for peer in authorize.seen] == [False, True]
    second.expect(tv.TLSError)


@pytest.mark.parametrize("resumption", RESUMPTIONS)
async def test_session_does_not_resume_under_another_policy(
    certs: CertKit, named_server: KitIdentity, resumption: Resumption
) -> None:
    # Two policies alike in everything but identity: each has its own
    # context, session cache and ticket keys.
    policy_a = open_policy(named_server, name="A")
    policy_b = open_policy(named_server, name="B")
    client = resuming_client(certs, resumption, kind=None)
    with trio.fail_after(TIMEOUT):
        async with serving(policy_a) as a, serving(policy_b) as b:
            first = await connect(a.port, client, action=client_keeps_session)
            assert first.ok, f"{first.error!r}: {first.error}"
            session = first.value[0]
            check_mechanism(session, resumption)
            other = await connect(
                b.port, client, session=session, action=client_keeps_session
            )
            again = await connect(
                a.port, client, session=session, action=client_keeps_session
            )
    assert other.ok, f"{other.error!r}: {other.error}"
    assert other.value[1] is False, "a session from policy A resumed under policy B"
    assert again.ok, f"{again.error!r}: {again.error}"
    assert again.value[1] is True, "control: the session does resume under policy A"


@pytest.mark.parametrize("resumption", RESUMPTIONS)
async def test_session_from_an_open_name_does_not_skip_mutual_tls(
    certs: CertKit, named_server: KitIdentity, resumption: Resumption
) -> None:
    selector = sni_selector(certs, named_server)
    version = TLS13 if resumption == "tls13-ticket" else TLS12
    with trio.fail_after(TIMEOUT):
        async with serving(selector) as server:
            client = resuming_client(certs, resumption, kind=None)
            first = await connect(
                server.port, client, server_hostname=OPEN, action=client_keeps_session
            )
            assert first.ok, f"{first.error!r}: {first.error}"
            assert (await server.result()).ok
            session = first.value[0]
            check_mechanism(session, resumption)
            second = await connect(
                server.port, client, server_hostname=SECURE, session=session
            )
            refused = await server.result()
    assert_refused_without_certificate(second, refused, version)
    assert [hello.server_name for hello in selector.hellos] == [OPEN, SECURE]


class Rotating:
    """A selector that answers every ClientHello with :attr:`current`: a
    server whose policy for a name is replaced while it runs."""

    def __init__(self, current: tv.ServerPolicy) -> None:
        self.current = current

    def __call__(self, hello: tv.ClientHello) -> tv.ServerPolicy:
        return self.current


@pytest.mark.parametrize("resumption", RESUMPTIONS)
async def test_session_from_a_replaced_policy_does_not_resume_under_its_successor(
    certs: CertKit, named_server: KitIdentity, resumption: Resumption
) -> None:
    # Policy A admits clients of both CAs; B, which replaces it for the same
    # name on the same listener, trusts only the kit's root.  A client whose
    # certificate only A trusts keeps a session from A.  Offered to B, it
    # must not resume: B verifies the certificate in a full handshake and
    # refuses it.  Offered to A again, it resumes (the session was good).
    def policy(
        name: str, trust: tuple[bytes, ...], authorize: Authorizer
    ) -> tv.ServerPolicy:
        return tv.ServerPolicy(
            identity=identity(named_server),
            client_auth=tv.ClientAuth.REQUIRED,
            client_trust=trust,
            authorize=authorize,
            name=name,
        )

    seen_a, seen_b = Authorizer(), Authorizer()
    policy_a = policy("A", (certs.ca_pem, certs.other_ca_pem), seen_a)
    policy_b = policy("B", (certs.ca_pem,), seen_b)
    selector = Rotating(policy_a)
    client = resuming_client(certs, resumption, kind="other_ca")
    with trio.fail_after(TIMEOUT):
        async with serving(selector) as server:
            first = await connect(server.port, client, action=client_keeps_session)
            assert first.ok, f"{first.error!r}: {first.error}"
            assert (await server.result()).ok
            session = first.value[0]
            check_mechanism(session, resumption)
            selector.current = policy_b
            refused = await connect(server.port, client, session=session)
            refused_on_server = await server.result()
            selector.current = policy_a
            again = await connect(
                server.port, client, session=session, action=client_keeps_session
            )
            assert (await server.result()).ok
    error = refused_on_server.expect(tv.UnknownIssuer)
    assert (error.phase, error.alert_sent) == (
        tv.Phase.CLIENT_CERTIFICATE,
        tv.Alert.UNKNOWN_CA,
    ), f"{error!r}: {error}"
    peer_error = refused.expect(tv.PeerRejectedCertificate)
    assert peer_error.alert_received is tv.Alert.UNKNOWN_CA
    assert seen_b.seen == [], "B authorized a client whose chain it never verified"
    assert again.ok, f"{again.error!r}: {again.error}"
    assert again.value[1] is True, "control: the session does resume under A"
    assert [peer.session_reused for peer in seen_a.seen] == [False, True]


async def test_pool_resumption_runs_authorize_for_every_handshake(
    certs: CertKit, named_server: KitIdentity, version: ssl.TLSVersion
) -> None:
    authorize = Authorizer()
    policy = mtls_policy(certs, named_server, authorize=authorize)
    with trio.fail_after(TIMEOUT):
        async with (
            serving(policy, action=server_waits_for_eof) as server,
            tv.open_client_pool(
                policy=client_policy(certs, "valid", version=version)
            ) as pool,
        ):
            where = ("127.0.0.1", server.port)
            async with pool.connection(*where, server_hostname="localhost") as first:
                assert not first.session_reused
            # The first connection is idle again; holding it makes the pool
            # open a second one, which offers the first one's session.
            async with (
                pool.connection(*where, server_hostname="localhost") as again,
                pool.connection(*where, server_hostname="localhost") as second,
            ):
                assert again is first
                assert second.session_reused
            stats = pool.stats()
    assert (stats.handshakes, stats.resumed_handshakes) == (2, 1)
    assert [peer.session_reused for peer in authorize.seen] == [False, True]


# ------------------------------ old versions, renegotiation and compression


@pytest.mark.parametrize(
    "versions",
    [
        (ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_1),
        (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1),
    ],
    ids=["TLSv1.1", "TLSv1-TLSv1.1"],
)
@pytest.mark.parametrize(
    "level", ["default", "0"], ids=["seclevel-default", "seclevel-0"]
)
async def test_client_offering_only_old_versions_is_refused_on_both_ends(
    certs: CertKit,
    named_server: KitIdentity,
    versions: tuple[ssl.TLSVersion, ssl.TLSVersion],
    level: str,
) -> None:
    context = certs.client_context()
    if level == "0":
        # Only at level 0 does OpenSSL 3.0 let TLS < 1.2 offer any cipher.
        seclevel_zero(context)
    with old_versions_allowed():
        context.minimum_version, context.maximum_version = versions
    with pytest.warns(tv.PolicyWarning, match="older than 1.2"):
        policy = tv.ClientPolicy.from_ssl_context(context)
    client, server = await run_pair(open_policy(named_server), policy)
    if level == "0":
        client_error = client.expect(tv.PeerProtocolVersion)
        assert client_error.alert_received is tv.Alert.PROTOCOL_VERSION
        server_error = server.expect(tv.NegotiationFailed)
        assert server_error.alert_sent is tv.Alert.PROTOCOL_VERSION
    else:
        # The client cannot even build a hello for those versions.
        client.expect(tv.NegotiationFailed)
        server.expect(tv.TLSError)


async def test_client_policy_refuses_a_server_limited_to_old_versions(
    certs: CertKit,
) -> None:
    context = seclevel_zero(certs.server_context("valid"))
    with old_versions_allowed():
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.warns(tv.PolicyWarning, match="older than 1.2"):
        policy = tv.ServerPolicy.from_ssl_context(context)
    client, server = await run_pair(policy, client_policy(certs))
    client_error = client.expect(tv.PeerProtocolVersion)
    assert client_error.alert_received is tv.Alert.PROTOCOL_VERSION
    server.expect(tv.NegotiationFailed)


OLD_VERSIONS = [
    ssl.TLSVersion.MINIMUM_SUPPORTED,
    ssl.TLSVersion.SSLv3,
    ssl.TLSVersion.TLSv1,
    ssl.TLSVersion.TLSv1_1,
]


@pytest.mark.parametrize("old", OLD_VERSIONS, ids=[v.name for v in OLD_VERSIONS])
def test_policies_refuse_versions_older_than_tls12(
    certs: CertKit, named_server: KitIdentity, old: ssl.TLSVersion
) -> None:
    with pytest.raises(tv.PolicyError, match=r"older than TLS 1\.2"):
        tv.ServerPolicy(identity=identity(named_server), minimum_version=old)
    with pytest.raises(tv.PolicyError, match=r"older than TLS 1\.2"):
        client_policy(certs, minimum_version=old)
    if old != ssl.TLSVersion.MINIMUM_SUPPORTED:
        with pytest.raises(tv.PolicyError, match=r"no version from TLS 1\.2"):
            tv.ServerPolicy(identity=identity(named_server), maximum_version=old)
        with pytest.raises(tv.PolicyError, match=r"no version from TLS 1\.2"):
            client_policy(certs, maximum_version=old)


def test_every_policy_context_refuses_renegotiation_and_compression(
    certs: CertKit, named_server: KitIdentity
) -> None:
    deferred = tv.ServerPolicy(
        identity=identity(named_server),
        client_auth=tv.ClientAuth.DEFERRED,
        client_trust=certs.ca_pem,
    )
    contexts = {
        "default client": tv.ClientPolicy().context,
        "client with identity": client_policy(certs, "valid").context,
        "insecure client": _insecure_client().context,
        "open server": open_policy(named_server).context,
        "mutual TLS server": mtls_policy(certs, named_server).context,
        "deferred server": deferred.context,
        "deferred server, TLS 1.2 client": deferred.context_for(offers_tls13=False),
    }
    for name, context in contexts.items():
        assert context.options & ssl.OP_NO_RENEGOTIATION, name
        assert context.options & ssl.OP_NO_COMPRESSION, name


def _insecure_client() -> tv.ClientPolicy:
    with pytest.warns(tv.PolicyWarning):
        return tv.ClientPolicy(insecure=True)


async def test_no_compression_is_negotiated(
    certs: CertKit, named_server: KitIdentity, version: ssl.TLSVersion
) -> None:
    async def compression(stream: Stream) -> str | None:
        await stream.do_handshake()
        result: str | None = stream.compression()
        return result

    client, server = await run_pair(
        open_policy(named_server),
        client_policy(certs, version=version),
        client_action=compression,
        server_action=compression,
    )
    assert (client.error, server.error) == (None, None)
    assert (client.value, server.value) == (None, None)


@pytest.mark.openssl_cli
async def test_server_refuses_renegotiation_from_s_client(
    certs: CertKit, named_server: KitIdentity, openssl: Path
) -> None:
    received = bytearray()

    async def server_echoes(stream: Stream) -> None:
        await stream.do_handshake()
        await stream.send_all(WELCOME)
        while data := await stream.receive_some():
            received.extend(data)

    with trio.fail_after(TIMEOUT):
        async with serving(open_policy(named_server), action=server_echoes) as server:
            args = s_client_args(certs, server.port, "-tls1_2")
            async with run_openssl(openssl, *args) as s_client:
                await s_client.wait_for(WELCOME)
                # s_client renegotiates when a line starts with "R".
                await s_client.send(b"R\n")
                await s_client.wait_for(b"no renegotiation")
            outcome = await server.result()
    outcome.expect(tv.TLSError)
    assert not received


@pytest.mark.openssl_cli
async def test_client_refuses_renegotiation_from_s_server(
    certs: CertKit, openssl: Path
) -> None:
    with trio.fail_after(TIMEOUT):
        async with s_server(
            openssl, "-tls1_2", *identity_args(certs.server("valid"))
        ) as (server, port):
            stream = await tv.open_tls_stream(
                "127.0.0.1",
                port,
                policy=client_policy(certs, version=TLS12),
                server_hostname="localhost",
            )
            async with stream:
                await server.wait_for(b"CIPHER is")
                # s_server sends a HelloRequest for a line that starts with "r".
                await server.send(b"r\n")
                with pytest.raises(tv.TLSError):
                    await stream.receive_some()
                await server.wait_for(b"no renegotiation")


# ------------------------------------------------- weak keys and SHA-1


async def test_client_refuses_a_weak_server_certificate(
    certs: CertKit,
    weak_server: KitIdentity,
    weakness: WeakKind,
    version: ssl.TLSVersion,
) -> None:
    # Python's contexts run at security level 2: 112-bit keys and digests.
    # The server has to go down to level 0 even to present the certificate.
    client, server = await run_pair(
        weak_server_context(weak_server),
        client_policy(certs, version=version),
    )
    assert_server_refused(
        client,
        server,
        tv.WeakCertificate,
        WEAK_VERIFY_CODE[weakness],
        tv.Alert.BAD_CERTIFICATE,
    )


async def test_server_refuses_a_weak_client_certificate(
    certs: CertKit,
    named_server: KitIdentity,
    weak_client: KitIdentity,
    weakness: WeakKind,
    version: ssl.TLSVersion,
) -> None:
    context = seclevel_zero(certs.client_context(versions=version))
    weak_client.configure_cert(context)
    client, server = await run_pair(mtls_policy(certs, named_server), context)
    error = server.expect(tv.WeakCertificate)
    assert (error.side, error.phase, error.verify_code, error.alert_sent) == (
        "server",
        tv.Phase.CLIENT_CERTIFICATE,
        WEAK_VERIFY_CODE[weakness],
        tv.Alert.BAD_CERTIFICATE,
    ), f"{error!r}: {error}"
    client_error = client.expect(tv.PeerRejectedCertificate)
    assert client_error.alert_received is tv.Alert.BAD_CERTIFICATE


def test_weak_server_identity_is_a_policy_error(
    weak_server: KitIdentity, weakness: WeakKind
) -> None:
    # OpenSSL refuses to load the certificate at the context's security level.
    # That is a configuration that cannot work, found before any connection.
    with pytest.raises(tv.PolicyError):
        tv.ServerPolicy(identity=identity(weak_server)).context  # noqa: B018


def test_weak_client_identity_is_a_policy_error(
    certs: CertKit, weak_client: KitIdentity, weakness: WeakKind
) -> None:
    with pytest.raises(tv.PolicyError):
        tv.ClientPolicy(trust=certs.ca_pem, identity=identity(weak_client)).context  # noqa: B018
