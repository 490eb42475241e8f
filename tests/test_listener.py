"""TLSListener and serve_tls: a policy per connection, chosen from the ClientHello.

The listener reads the ClientHello before OpenSSL sees it and asks a selector
for the connection's policy, so everything in the chosen policy
applies, client authentication included.  That is what an ``sni_callback``
swapping contexts cannot do (shown here with plain ``ssl``):
these tests prove that per-name, per-protocol and per-address mutual TLS is
really enforced, on TLS 1.2 and 1.3, by checking both ends of real loopback
connections.  They also cover refusals with an alert (``Reject``,
``alpn_required``), a selector that fails, ``serve_tls`` (start-up, shutdown,
reports and logging), the laziness and timeout of ``accept()``, and
``ClientAuth.DEFERRED`` (TLS 1.3 post-handshake authentication).
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from certs import CertKit, ClientKind, memory_handshake
from certs import Identity as KitIdentity
from loopback import Outcome
from openssl_peer import TLSFlag, open_helper_nursery, run_openssl, s_client_args

import trio_verify as tv

TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
VERSION_NAMES = {TLS12: "TLSv1.2", TLS13: "TLSv1.3"}
NO_CERTIFICATE_ALERT = {
    TLS12: tv.Alert.HANDSHAKE_FAILURE,
    TLS13: tv.Alert.CERTIFICATE_REQUIRED,
}

TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 0.5
# A handshake timeout must fire within this many seconds; the default (30 s)
# would not.
TIMEOUT_BOUND = 5.0

SECURE = "secure.test"
OPEN = "open.test"
ADMIN_PROTOCOL = "x-admin/1"
PUBLIC_PROTOCOL = "http/1.1"
WELCOME = b"welcome\n"

Stream = tv.TLSStream[trio.SocketStream]
Action = Callable[[Stream], Awaitable[Any]]


@pytest.fixture(params=[TLS12, TLS13], ids=["TLSv1.2", "TLSv1.3"])
def version(request: pytest.FixtureRequest) -> ssl.TLSVersion:
    """The TLS version a client pins (the server allows both)."""
    result: ssl.TLSVersion = request.param
    return result


@pytest.fixture(scope="module")
def named_server(certs: CertKit) -> KitIdentity:
    """A server certificate for every name the selectors here route on."""
    return certs.issue(
        "server-listener-names",
        names=(SECURE, f"{SECURE}.", OPEN, "localhost", "127.0.0.1"),
        common_name=SECURE,
    )


# ------------------------------------------------------------------ policies


def identity(kit_identity: KitIdentity) -> tv.Identity:
    return tv.Identity.from_pem(kit_identity.cert_chain_pem, kit_identity.key_pem)


def open_policy(server: KitIdentity, **options: Any) -> tv.ServerPolicy:
    """No client certificate asked for."""
    return tv.ServerPolicy(identity=identity(server), name="open", **options)


def mtls_policy(certs: CertKit, server: KitIdentity, **options: Any) -> tv.ServerPolicy:
    """Mutual TLS: a certificate from the kit's root is required."""
    return tv.ServerPolicy(
        identity=identity(server),
        client_auth=tv.ClientAuth.REQUIRED,
        client_trust=certs.ca_pem,
        name="mtls",
        **options,
    )


def deferred_policy(certs: CertKit, **options: Any) -> tv.ServerPolicy:
    """Client certificates asked for after the handshake, when the server wants."""
    return tv.ServerPolicy(
        identity=identity(certs.server("valid")),
        client_auth=tv.ClientAuth.DEFERRED,
        client_trust=certs.ca_pem,
        name="deferred",
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
    return tv.ClientPolicy(
        trust=certs.ca_pem,
        identity=None if kind is None else identity(certs.client(kind)),
        **options,
    )


class SniSelector:
    """``secure.test`` needs mutual TLS, ``open.test`` does not; others are refused.

    Looks names up by :attr:`~trio_verify.ClientHello.normalized_server_name`
    and keeps every ClientHello it judged.
    """

    def __init__(self, certs: CertKit, server: KitIdentity) -> None:
        self.policies = {SECURE: mtls_policy(certs, server), OPEN: open_policy(server)}
        self.hellos: list[tv.ClientHello] = []

    def __call__(self, hello: tv.ClientHello) -> tv.ServerPolicy | tv.Reject:
        self.hellos.append(hello)
        policy = self.policies.get(hello.normalized_server_name or "")
        return policy or tv.Reject(tv.Alert.UNRECOGNIZED_NAME, "unknown name")


class AlpnSelector:
    """Mutual TLS for the admin protocol, none for the public one."""

    def __init__(self, certs: CertKit, server: KitIdentity) -> None:
        self.admin = mtls_policy(certs, server, alpn=(ADMIN_PROTOCOL,))
        self.public = open_policy(server, alpn=(PUBLIC_PROTOCOL,))

    def __call__(self, hello: tv.ClientHello) -> tv.ServerPolicy:
        return self.admin if ADMIN_PROTOCOL in hello.alpn_protocols else self.public


class AddressSelector:
    """Mutual TLS for every client except 127.0.0.1."""

    def __init__(self, certs: CertKit, server: KitIdentity) -> None:
        self.trusted = open_policy(server)
        self.others = mtls_policy(certs, server)
        self.addresses: list[object] = []

    def __call__(self, hello: tv.ClientHello) -> tv.ServerPolicy:
        self.addresses.append(hello.peer_address)
        host = hello.peer_address[0] if isinstance(hello.peer_address, tuple) else None
        return self.trusted if host == "127.0.0.1" else self.others


# ------------------------------------------------------------------ actions


async def server_welcomes(stream: Stream) -> tv.PeerInfo:
    """Handshake, greet the client, report what the handshake established."""
    await stream.do_handshake()
    await stream.send_all(WELCOME)
    return stream.peer


async def client_reads(stream: Stream) -> bytes:
    """Handshake, then read: where a TLS 1.3 client hears a late verdict."""
    await stream.do_handshake()
    return await stream.receive_some()


async def server_handshakes(stream: Stream) -> tv.PeerInfo:
    await stream.do_handshake()
    return stream.peer


async def receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    got = bytearray()
    while len(got) < size:
        chunk = await stream.receive_some(size - len(got))
        assert chunk, f"end of stream after {bytes(got)!r}"
        got += chunk
    return bytes(got)


# ------------------------------------------------------------------ plumbing


async def connect_tcp(port: int, local_host: str | None = None) -> trio.SocketStream:
    """A TCP connection to 127.0.0.1, from ``local_host`` if given.

    Linux routes all of 127.0.0.0/8 to the loopback interface, so a client
    bound to 127.0.0.2 reaches the server from a second address.
    """
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    try:
        if local_host is not None:
            await sock.bind((local_host, 0))
        await sock.connect(("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


class Reports:
    """An ``on_handshake`` hook that keeps the reports and can be waited on."""

    def __init__(self) -> None:
        self.reports: list[tv.HandshakeReport] = []
        self._changed = trio.Event()

    def __call__(self, report: tv.HandshakeReport) -> None:
        self.reports.append(report)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, count: int) -> list[tv.HandshakeReport]:
        """Wait until ``count`` reports have arrived; return them all."""
        while len(self.reports) < count:
            await self._changed.wait()
        return self.reports


@dataclass
class Served(Outcome):
    """What the server's action on one accepted connection saw."""

    finished: trio.Event = field(default_factory=trio.Event)


class Server:
    """A :class:`~trio_verify.TLSListener` on a free loopback port.

    Every accepted stream is handed to the server action in its own task;
    each outcome is kept in accept order.
    """

    def __init__(self, listener: tv.TLSListener[trio.SocketStream], port: int) -> None:
        self.listener = listener
        self.port = port
        self.served: list[Served] = []
        self._accepted = trio.Event()

    async def accept_loop(self, action: Action, nursery: trio.Nursery) -> None:
        while True:
            stream = await self.listener.accept()
            served = Served()
            self.served.append(served)
            self._accepted.set()
            self._accepted = trio.Event()
            nursery.start_soon(self._serve, stream, action, served)

    async def _serve(self, stream: Stream, action: Action, served: Served) -> None:
        try:
            served.value = await action(stream)
        except Exception as exc:
            served.error = exc
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()
            served.finished.set()

    async def result(self, index: int = 0) -> Served:
        """The server's outcome for the ``index``-th connection, once it is over."""
        while len(self.served) <= index:
            await self._accepted.wait()
        served = self.served[index]
        await served.finished.wait()
        return served

    async def connect(
        self,
        policy: tv.ClientPolicy,
        *,
        server_hostname: str | None = "localhost",
        local_host: str | None = None,
        action: Action = client_reads,
    ) -> Outcome:
        """Run one client: ``action`` on a fresh connection, then close it."""
        outcome = Outcome()
        transport = await connect_tcp(self.port, local_host)
        stream = tv.TLSStream(transport, policy, server_hostname=server_hostname)
        try:
            outcome.value = await action(stream)
        except Exception as exc:
            outcome.error = exc
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()
        return outcome


@asynccontextmanager
async def listening(
    policy: tv.ServerPolicy | tv.PolicySelector,
    *,
    action: Action = server_welcomes,
    **options: Any,
) -> AsyncIterator[Server]:
    """Serve ``policy`` (a policy or a selector) with ``action`` until the block ends."""
    transport = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    listener = tv.TLSListener(transport, policy, **options)
    server = Server(listener, transport.socket.getsockname()[1])
    async with listener, open_helper_nursery() as nursery:
        nursery.start_soon(server.accept_loop, action, nursery)
        yield server
        nursery.cancel_scope.cancel()


async def one_connection(
    policy: tv.ServerPolicy | tv.PolicySelector,
    client: tv.ClientPolicy,
    *,
    server_action: Action = server_welcomes,
    client_action: Action = client_reads,
    server_hostname: str | None = "localhost",
    local_host: str | None = None,
    **options: Any,
) -> tuple[Outcome, Served]:
    """One connection through a fresh listener: (client outcome, server outcome)."""
    with trio.fail_after(TIMEOUT):
        async with listening(policy, action=server_action, **options) as server:
            client_outcome = await server.connect(
                client,
                server_hostname=server_hostname,
                local_host=local_host,
                action=client_action,
            )
            return client_outcome, await server.result()


def assert_admitted(client: Outcome, server: Served) -> tv.PeerInfo:
    """Both ends succeeded and the greeting arrived; the server's PeerInfo."""
    assert server.ok, f"server: {server.error!r}: {server.error}"
    assert client.ok, f"client: {client.error!r}: {client.error}"
    assert client.value == WELCOME
    peer: tv.PeerInfo = server.value
    return peer


def assert_refused_without_certificate(
    client: Outcome, server: Served, version: ssl.TLSVersion
) -> None:
    """The server required a certificate, got none, and told the client so."""
    alert = NO_CERTIFICATE_ALERT[version]
    server_error = server.expect(tv.MissingClientCertificate)
    assert (
        server_error.side,
        server_error.phase,
        server_error.alert_sent,
        server_error.tls_version,
    ) == ("server", tv.Phase.CLIENT_CERTIFICATE, alert, VERSION_NAMES[version]), (
        f"{server_error!r}: {server_error}"
    )
    client_error = client.expect(tv.PeerRequiresCertificate)
    assert (client_error.side, client_error.phase, client_error.alert_received) == (
        "client",
        tv.Phase.CLIENT_CERTIFICATE,
        alert,
    ), f"{client_error!r}: {client_error}"


def same_certificate(seen: tv.CertificateInfo | None, expected: KitIdentity) -> bool:
    return seen is not None and seen.der == expected.info.der


# ------------------------------------------------ per-name mutual TLS (§1.4)


async def test_sni_selector_refuses_client_without_certificate_on_mtls_name(
    certs: CertKit, named_server: KitIdentity, version: ssl.TLSVersion
) -> None:
    selector = SniSelector(certs, named_server)
    client, server = await one_connection(
        selector, client_policy(certs, version=version), server_hostname=SECURE
    )
    assert_refused_without_certificate(client, server, version)
    assert [hello.server_name for hello in selector.hellos] == [SECURE]


async def test_sni_selector_admits_client_without_certificate_on_open_name(
    certs: CertKit, named_server: KitIdentity, version: ssl.TLSVersion
) -> None:
    client, server = await one_connection(
        SniSelector(certs, named_server),
        client_policy(certs, version=version),
        server_hostname=OPEN,
    )
    peer = assert_admitted(client, server)
    assert peer.certificate is None
    assert peer.server_name == OPEN
    assert peer.tls_version == VERSION_NAMES[version]


async def test_sni_selector_admits_client_with_certificate_on_mtls_name(
    certs: CertKit, named_server: KitIdentity, version: ssl.TLSVersion
) -> None:
    client, server = await one_connection(
        SniSelector(certs, named_server),
        client_policy(certs, "valid", version=version),
        server_hostname=SECURE,
    )
    peer = assert_admitted(client, server)
    assert same_certificate(peer.certificate, certs.client("valid"))
    assert peer.chain_verified


@pytest.mark.parametrize("spelling", ["SECURE.test", "secure.test."])
async def test_sni_spelling_does_not_bypass_mutual_tls(
    certs: CertKit,
    named_server: KitIdentity,
    version: ssl.TLSVersion,
    spelling: str,
) -> None:
    selector = SniSelector(certs, named_server)
    client, server = await one_connection(
        selector, client_policy(certs, version=version), server_hostname=spelling
    )
    assert_refused_without_certificate(client, server, version)
    [hello] = selector.hellos
    assert (hello.server_name, hello.normalized_server_name) == (spelling, SECURE)


async def test_missing_sni_falls_to_selector_default(
    certs: CertKit, named_server: KitIdentity, version: ssl.TLSVersion
) -> None:
    # Dialling an IP address sends no server name.
    selector = SniSelector(certs, named_server)
    client, server = await one_connection(
        selector, client_policy(certs, version=version), server_hostname="127.0.0.1"
    )
    [hello] = selector.hellos
    assert hello.server_name is None
    server_error = server.expect(tv.PolicyRejected)
    assert (server_error.phase, server_error.alert_sent) == (
        tv.Phase.CLIENT_HELLO,
        tv.Alert.UNRECOGNIZED_NAME,
    )
    client_error = client.expect(tv.PeerUnrecognizedName)
    assert client_error.alert_received is tv.Alert.UNRECOGNIZED_NAME


async def test_alpn_selector_refuses_client_without_certificate_for_admin_protocol(
    certs: CertKit, named_server: KitIdentity, version: ssl.TLSVersion
) -> None:
    client, server = await one_connection(
        AlpnSelector(certs, named_server),
        client_policy(certs, version=version, alpn=(ADMIN_PROTOCOL,)),
    )
    assert_refused_without_certificate(client, server, version)


async def test_alpn_selector_admits_client_without_certificate_for_public_protocol(
    certs: CertKit, named_server: KitIdentity, version: ssl.TLSVersion
) -> None:
    client, server = await one_connection(
        AlpnSelector(certs, named_server),
        client_policy(certs, version=version, alpn=(PUBLIC_PROTOCOL,)),
    )
    peer = assert_admitted(client, server)
    assert peer.certificate is None
    assert peer.alpn_protocol == PUBLIC_PROTOCOL


async def test_alpn_selector_admits_client_with_certificate_for_admin_protocol(
    certs: CertKit, named_server: KitIdentity, version: ssl.TLSVersion
) -> None:
    client, server = await one_connection(
        AlpnSelector(certs, named_server),
        client_policy(certs, "valid", version=version, alpn=(ADMIN_PROTOCOL,)),
    )
    peer = assert_admitted(client, server)
    assert same_certificate(peer.certificate, certs.client("valid"))
    assert peer.alpn_protocol == ADMIN_PROTOCOL


async def test_address_selector_admits_trusted_address_without_certificate(
    certs: CertKit, named_server: KitIdentity, version: ssl.TLSVersion
) -> None:
    selector = AddressSelector(certs, named_server)
    client, server = await one_connection(
        selector, client_policy(certs, version=version), local_host="127.0.0.1"
    )
    peer = assert_admitted(client, server)
    assert peer.certificate is None
    [address] = selector.addresses
    assert isinstance(address, tuple)
    assert address[0] == "127.0.0.1"


async def test_address_selector_refuses_other_address_without_certificate(
    certs: CertKit, named_server: KitIdentity, version: ssl.TLSVersion
) -> None:
    selector = AddressSelector(certs, named_server)
    client, server = await one_connection(
        selector, client_policy(certs, version=version), local_host="127.0.0.2"
    )
    assert_refused_without_certificate(client, server, version)
    [address] = selector.addresses
    assert isinstance(address, tuple)
    assert address[0] == "127.0.0.2"


async def test_address_selector_admits_other_address_with_certificate(
    certs: CertKit, named_server: KitIdentity, version: ssl.TLSVersion
) -> None:
    client, server = await one_connection(
        AddressSelector(certs, named_server),
        client_policy(certs, "valid", version=version),
        local_host="127.0.0.2",
    )
    peer = assert_admitted(client, server)
    assert same_certificate(peer.certificate, certs.client("valid"))


@pytest.mark.parametrize("tls_version", [TLS12, TLS13], ids=["TLSv1.2", "TLSv1.3"])
def test_stdlib_sni_callback_context_swap_lets_client_without_certificate_in(
    certs: CertKit, named_server: KitIdentity, tls_version: ssl.TLSVersion
) -> None:
    """The trap the selector exists for, with plain ``ssl`` and no trio_verify.

    Swapping in a CERT_REQUIRED context from ``sni_callback`` does not make
    OpenSSL ask for a client certificate (``SSL_set_SSL_CTX`` keeps the
    verify mode), so a client without one completes the handshake.
    """
    required = certs.server_context(named_server, client_auth=ssl.CERT_REQUIRED)
    lenient = certs.server_context(named_server, client_auth=ssl.CERT_NONE)
    swapped: list[str | None] = []

    def swap(
        obj: ssl.SSLSocket | ssl.SSLObject, name: str | None, ctx: ssl.SSLContext
    ) -> None:
        if name == SECURE:
            obj.context = required
            swapped.append(name)

    lenient.sni_callback = swap
    client_ctx = certs.client_context(versions=tls_version)
    result = memory_handshake(client_ctx, lenient, server_hostname=SECURE)
    assert swapped == [SECURE]
    assert result.server.context is required
    assert result.client_error is None
    assert result.server_error is None
    assert result.server.getpeercert() is None
    assert result.server.version() == VERSION_NAMES[tls_version]


# ------------------------------------------------------------- selectors


async def test_async_selector_policy_is_enforced(
    certs: CertKit, named_server: KitIdentity, version: ssl.TLSVersion
) -> None:
    policy = mtls_policy(certs, named_server)
    hellos: list[tv.ClientHello] = []

    async def select(hello: tv.ClientHello) -> tv.ServerPolicy:
        await trio.lowlevel.checkpoint()
        hellos.append(hello)
        return policy

    client, server = await one_connection(
        select, client_policy(certs, version=version), server_hostname=SECURE
    )
    assert_refused_without_certificate(client, server, version)
    assert len(hellos) == 1


async def test_async_selector_policy_admits_client_with_certificate(
    certs: CertKit, named_server: KitIdentity, version: ssl.TLSVersion
) -> None:
    policy = mtls_policy(certs, named_server)

    async def select(hello: tv.ClientHello) -> tv.ServerPolicy:
        await trio.lowlevel.checkpoint()
        return policy

    client, server = await one_connection(
        select, client_policy(certs, "valid", version=version), server_hostname=SECURE
    )
    peer = assert_admitted(client, server)
    assert same_certificate(peer.certificate, certs.client("valid"))


class SelectorBug(Exception):
    pass


async def test_selector_that_raises_refuses_with_internal_error(
    certs: CertKit, named_server: KitIdentity, version: ssl.TLSVersion
) -> None:
    bug = SelectorBug("no policy table")

    def select(hello: tv.ClientHello) -> tv.ServerPolicy:
        raise bug

    reports = Reports()
    client, server = await one_connection(
        select, client_policy(certs, version=version), on_handshake=reports
    )
    client_error = client.expect(tv.PeerProtocolError)
    assert client_error.alert_received is tv.Alert.INTERNAL_ERROR
    server_error = server.expect(tv.PolicyRejected)
    assert server_error.__cause__ is bug
    assert (server_error.phase, server_error.alert_sent) == (
        tv.Phase.CLIENT_HELLO,
        tv.Alert.INTERNAL_ERROR,
    )
    [report] = reports.reports
    assert isinstance(report.error, tv.PolicyRejected)
    assert report.error.__cause__ is bug
    assert report.phase is tv.Phase.CLIENT_HELLO
    assert report.alert_sent is tv.Alert.INTERNAL_ERROR


async def test_listener_keeps_serving_after_selector_raises(
    certs: CertKit, named_server: KitIdentity
) -> None:
    policy = open_policy(named_server)
    calls = 0

    def select(hello: tv.ClientHello) -> tv.ServerPolicy:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise SelectorBug("first call fails")
        return policy

    with trio.fail_after(TIMEOUT):
        async with listening(select) as server:
            first = await server.connect(client_policy(certs))
            second = await server.connect(client_policy(certs))
            first_served, second_served = await server.result(0), await server.result(1)
    first.expect(tv.PeerProtocolError)
    first_served.expect(tv.PolicyRejected)
    assert_admitted(second, second_served)


# ----------------------------------------------------- refusals with an alert

REJECT_ALERTS = [
    pytest.param(tv.Alert.UNRECOGNIZED_NAME, tv.PeerUnrecognizedName, id="112"),
    pytest.param(tv.Alert.ACCESS_DENIED, tv.PeerDeniedAccess, id="49"),
    pytest.param(
        tv.Alert.NO_APPLICATION_PROTOCOL, tv.PeerNoApplicationProtocol, id="120"
    ),
]


@pytest.mark.parametrize(("alert", "error_class"), REJECT_ALERTS)
async def test_reject_reaches_client_as_typed_alert(
    certs: CertKit,
    named_server: KitIdentity,
    version: ssl.TLSVersion,
    alert: tv.Alert,
    error_class: type[tv.PeerAlert],
) -> None:
    def select(hello: tv.ClientHello) -> tv.Reject:
        return tv.Reject(alert, "not for you")

    client, server = await one_connection(select, client_policy(certs, version=version))
    client_error = client.expect(error_class)
    assert (
        client_error.side,
        client_error.phase,
        client_error.alert_received,
        client_error.alert_sent,
    ) == ("client", tv.Phase.CLIENT_HELLO, alert, None), (
        f"{client_error!r}: {client_error}"
    )
    server_error = server.expect(tv.PolicyRejected)
    assert (server_error.side, server_error.phase, server_error.alert_sent) == (
        "server",
        tv.Phase.CLIENT_HELLO,
        alert,
    )
    assert "not for you" in str(server_error)


# What OpenSSL 3 calls each alert in the error line it prints on receipt.
OPENSSL_ALERT_NAMES = {
    tv.Alert.UNRECOGNIZED_NAME: "unrecognized name",
    tv.Alert.ACCESS_DENIED: "access denied",
    tv.Alert.NO_APPLICATION_PROTOCOL: "no application protocol",
}


@pytest.mark.openssl_cli
@pytest.mark.parametrize("flag", ["-tls1_2", "-tls1_3"])
@pytest.mark.parametrize("alert", [param.values[0] for param in REJECT_ALERTS])
async def test_reject_reaches_s_client_as_named_alert(
    certs: CertKit,
    named_server: KitIdentity,
    openssl: Path,
    flag: TLSFlag,
    alert: tv.Alert,
) -> None:
    def select(hello: tv.ClientHello) -> tv.Reject:
        return tv.Reject(alert)

    line = re.compile(
        rb":tlsv1 (?:alert )?"
        + re.escape(OPENSSL_ALERT_NAMES[alert].encode())
        + rb":[^\r\n]*:SSL alert number "
        + str(int(alert)).encode()
        + rb"\r?$",
        re.MULTILINE,
    )
    with trio.fail_after(TIMEOUT):
        async with (
            listening(select, action=server_handshakes) as server,
            run_openssl(openssl, *s_client_args(certs, server.port, flag)) as client,
        ):
            await client.wait_for(line)
            await client.wait()
            served = await server.result()
    error = served.expect(tv.PolicyRejected)
    assert (error.phase, error.alert_sent) == (tv.Phase.CLIENT_HELLO, alert)


async def test_alpn_required_refuses_client_without_shared_protocol(
    certs: CertKit, named_server: KitIdentity, version: ssl.TLSVersion
) -> None:
    policy = open_policy(named_server, alpn=("h2",), alpn_required=True)
    client, server = await one_connection(
        policy, client_policy(certs, version=version, alpn=("http/1.1",))
    )
    client_error = client.expect(tv.PeerNoApplicationProtocol)
    assert (client_error.phase, client_error.alert_received) == (
        tv.Phase.CLIENT_HELLO,
        tv.Alert.NO_APPLICATION_PROTOCOL,
    )
    server_error = server.expect(tv.NegotiationFailed)
    assert server_error.alert_sent is tv.Alert.NO_APPLICATION_PROTOCOL


async def test_alpn_required_admits_client_with_shared_protocol(
    certs: CertKit, named_server: KitIdentity, version: ssl.TLSVersion
) -> None:
    policy = open_policy(named_server, alpn=("h2",), alpn_required=True)

    async def client_action(stream: Stream) -> tuple[bytes, str | None]:
        data = await client_reads(stream)
        return data, stream.selected_alpn_protocol()

    client, server = await one_connection(
        policy,
        client_policy(certs, version=version, alpn=("http/1.1", "h2")),
        client_action=client_action,
    )
    assert server.ok, server.error
    assert client.ok, client.error
    assert client.value == (WELCOME, "h2")
    assert server.value.alpn_protocol == "h2"


async def test_alpn_required_admits_client_offering_no_alpn(
    certs: CertKit, named_server: KitIdentity
) -> None:
    # ServerPolicy documents alpn_required as refusing "a client that offers
    # ALPN but none of alpn", as Go and rustls do: a client that offers no
    # ALPN at all is not refused.
    policy = open_policy(named_server, alpn=("h2",), alpn_required=True)
    client, server = await one_connection(policy, client_policy(certs))
    peer = assert_admitted(client, server)
    assert peer.alpn_protocol is None


# ------------------------------------------------------------------ serve_tls


@asynccontextmanager
async def serving_tls(
    handler: Callable[[Stream], Awaitable[object]],
    policy: tv.ServerPolicy | tv.PolicySelector,
    **options: Any,
) -> AsyncIterator[tuple[int, list[tv.TLSListener[trio.SocketStream]]]]:
    """Run serve_tls on a free loopback port until the block ends (then cancel it)."""
    async with open_helper_nursery() as nursery:
        listeners = await nursery.start(
            partial(serve_tls_on_loopback, handler, policy, **options)
        )
        port = listeners[0].transport_listener.socket.getsockname()[1]
        yield port, listeners
        nursery.cancel_scope.cancel()


async def serve_tls_on_loopback(
    handler: Callable[[Stream], Awaitable[object]],
    policy: tv.ServerPolicy | tv.PolicySelector,
    *,
    task_status: trio.TaskStatus[list[tv.TLSListener[trio.SocketStream]]],
    **options: Any,
) -> None:
    await tv.serve_tls(
        handler, 0, policy, host="127.0.0.1", task_status=task_status, **options
    )


async def connect_client(port: int, policy: tv.ClientPolicy) -> Stream:
    transport = await connect_tcp(port)
    return tv.TLSStream(transport, policy, server_hostname="localhost")


async def run_client(port: int, policy: tv.ClientPolicy) -> Outcome:
    """Handshake, read the greeting, close; the outcome of it."""
    stream = await connect_client(port, policy)
    outcome = Outcome()
    try:
        outcome.value = await client_reads(stream)
    except Exception as exc:
        outcome.error = exc
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()
    return outcome


class Greeter:
    """A serve_tls handler: counts calls, greets, waits for the client to leave."""

    def __init__(self) -> None:
        self.calls = 0
        self.peers: list[tv.PeerInfo] = []

    async def __call__(self, stream: Stream) -> None:
        self.calls += 1
        # Only handshaken streams arrive: peer is readable without I/O.
        self.peers.append(stream.peer)
        await stream.send_all(WELCOME)
        while await stream.receive_some():
            pass


async def test_serve_tls_starts_on_a_free_port_and_serves(certs: CertKit) -> None:
    greeter = Greeter()
    with trio.fail_after(TIMEOUT):
        async with serving_tls(greeter, open_policy(certs.server("valid"))) as (
            port,
            listeners,
        ):
            assert listeners
            assert all(isinstance(listener, tv.TLSListener) for listener in listeners)
            assert port != 0
            outcome = await run_client(port, client_policy(certs))
    assert outcome.ok, outcome.error
    assert outcome.value == WELCOME
    assert greeter.calls == 1


async def test_serve_tls_handler_receives_only_handshaken_streams(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    greeter = Greeter()
    reports = Reports()
    policy = mtls_policy(certs, certs.server("valid"))
    with trio.fail_after(TIMEOUT):
        async with serving_tls(greeter, policy, on_handshake=reports) as (port, _):
            outcomes = [
                await run_client(port, client_policy(certs, kind, version=version))
                for kind in ("valid", None, "other_ca", "valid", None)
            ]
            await reports.wait_for(len(outcomes))
    assert [outcome.ok for outcome in outcomes] == [True, False, False, True, False]
    assert greeter.calls == 2
    assert all(
        same_certificate(peer.certificate, certs.client("valid"))
        for peer in greeter.peers
    )
    assert [report.ok for report in reports.reports].count(False) == 3


async def test_serve_tls_cancellation_closes_open_connections(certs: CertKit) -> None:
    greeter = Greeter()
    clients: list[Stream] = []
    endings: list[bytes | BaseException] = []
    with trio.fail_after(TIMEOUT):
        try:
            async with serving_tls(greeter, open_policy(certs.server("valid"))) as (
                port,
                _,
            ):
                for _ in range(3):
                    client = await connect_client(port, client_policy(certs))
                    clients.append(client)
                    assert await client_reads(client) == WELCOME
                assert greeter.calls == 3
            # Leaving the block cancelled serve_tls and its connections.
            with trio.fail_after(TIMEOUT_BOUND):
                for client in clients:
                    try:
                        endings.append(await client.receive_some())
                    except trio.BrokenResourceError as exc:
                        endings.append(exc)
        finally:
            with trio.CancelScope(shield=True):
                for client in clients:
                    await trio.aclose_forcefully(client)
    # A connection closed with close_notify reads as b""; one dropped
    # without it as TruncatedStream.  Either way the client knows it is over.
    assert len(endings) == 3
    for ending in endings:
        assert ending == b"" or isinstance(ending, tv.TruncatedStream), repr(ending)


async def test_on_handshake_reports_success(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    reports = Reports()
    policy = mtls_policy(certs, certs.server("valid"), alpn=("h2",))
    with trio.fail_after(TIMEOUT):
        async with serving_tls(Greeter(), policy, on_handshake=reports) as (port, _):
            stream = await connect_client(
                port, client_policy(certs, "valid", version=version, alpn=("h2",))
            )
            async with stream:
                assert await client_reads(stream) == WELCOME
                local = stream.transport_stream.socket.getsockname()
                cipher = stream.cipher()
            [report] = await reports.wait_for(1)
    assert report.ok
    assert report.error is None
    assert report.error_type is None
    assert report.phase is None
    assert report.peer_address == local
    assert report.server_name == "localhost"
    assert report.alpn_protocol == "h2"
    assert report.tls_version == VERSION_NAMES[version]
    assert cipher is not None
    assert report.cipher == cipher[0]
    assert report.policy_name == "mtls"
    assert same_certificate(report.client_certificate, certs.client("valid"))
    assert report.duration >= 0


@dataclass(frozen=True)
class Failure:
    """A handshake failure as the server's report must describe it."""

    client_kind: ClientKind | None
    client_trust: str
    error: type[tv.TLSError]
    phase: tv.Phase
    alert_sent: tv.Alert | None
    alert_received: tv.Alert | None
    certificate: ClientKind | None


FAILURES = [
    pytest.param(
        Failure(
            None,
            "ca",
            tv.MissingClientCertificate,
            tv.Phase.CLIENT_CERTIFICATE,
            tv.Alert.HANDSHAKE_FAILURE,
            None,
            None,
        ),
        id="no_client_certificate",
    ),
    pytest.param(
        Failure(
            "other_ca",
            "ca",
            tv.UnknownIssuer,
            tv.Phase.CLIENT_CERTIFICATE,
            tv.Alert.UNKNOWN_CA,
            None,
            "other_ca",
        ),
        id="client_certificate_refused",
    ),
    pytest.param(
        Failure(
            "valid",
            "other_ca",
            tv.PeerRejectedCertificate,
            tv.Phase.SERVER_CERTIFICATE,
            None,
            tv.Alert.UNKNOWN_CA,
            None,
        ),
        id="server_certificate_refused",
    ),
]


@pytest.mark.parametrize("failure", FAILURES)
async def test_on_handshake_reports_failure(certs: CertKit, failure: Failure) -> None:
    # TLS 1.2, where every one of these fails inside both handshakes.
    reports = Reports()
    greeter = Greeter()
    policy = mtls_policy(certs, certs.server("valid"))
    client = tv.ClientPolicy(
        trust=certs.ca_pem if failure.client_trust == "ca" else certs.other_ca_pem,
        identity=None
        if failure.client_kind is None
        else identity(certs.client(failure.client_kind)),
        maximum_version=TLS12,
    )
    with trio.fail_after(TIMEOUT):
        async with serving_tls(greeter, policy, on_handshake=reports) as (port, _):
            stream = await connect_client(port, client)
            async with stream:
                with pytest.raises(tv.TLSError):
                    await stream.do_handshake()
                local = stream.transport_stream.socket.getsockname()
            [report] = await reports.wait_for(1)
    assert greeter.calls == 0
    assert not report.ok
    assert isinstance(report.error, failure.error)
    assert report.error_type == failure.error.__name__
    assert (report.phase, report.alert_sent, report.alert_received) == (
        failure.phase,
        failure.alert_sent,
        failure.alert_received,
    ), report.summary()
    assert report.peer_address == local
    assert report.server_name == "localhost"
    assert report.tls_version == "TLSv1.2"
    assert report.policy_name == "mtls"
    if failure.certificate is None:
        assert report.client_certificate is None
    else:
        assert same_certificate(
            report.client_certificate, certs.client(failure.certificate)
        )


def listener_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "trio_verify"]


async def test_logger_writes_one_line_per_connection(
    certs: CertKit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_verify")
    reports = Reports()
    policy = mtls_policy(certs, certs.server("valid"))
    with trio.fail_after(TIMEOUT):
        async with serving_tls(Greeter(), policy, on_handshake=reports) as (port, _):
            for kind in ("valid", None, "other_ca"):
                await run_client(port, client_policy(certs, kind))
            await reports.wait_for(3)
    records = listener_records(caplog)
    assert [record.levelno for record in records] == [
        logging.INFO,
        logging.WARNING,
        logging.WARNING,
    ], [record.getMessage() for record in records]
    assert [record.getMessage() for record in records] == [
        report.summary() for report in reports.reports
    ]
    for record in records:
        assert "\n" not in record.getMessage()
        assert record.exc_info is None
    assert "MissingClientCertificate" in records[1].getMessage()
    assert "UnknownIssuer" in records[2].getMessage()


async def test_on_handshake_hook_that_raises_is_logged_and_ignored(
    certs: CertKit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_verify")
    greeter = Greeter()
    calls = 0

    def broken_hook(report: tv.HandshakeReport) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("hook bug")

    with trio.fail_after(TIMEOUT):
        async with serving_tls(
            greeter, open_policy(certs.server("valid")), on_handshake=broken_hook
        ) as (port, _):
            outcomes = [await run_client(port, client_policy(certs)) for _ in range(2)]
    assert [outcome.value for outcome in outcomes] == [WELCOME, WELCOME]
    assert greeter.calls == 2
    assert calls == 2
    failures = [
        record for record in listener_records(caplog) if record.exc_info is not None
    ]
    assert len(failures) == 2
    for record in failures:
        assert record.levelno == logging.ERROR
        assert "on_handshake" in record.getMessage()
        assert record.exc_info is not None
        assert isinstance(record.exc_info[1], RuntimeError)


# --------------------------------------------- lazy accept, handshake timeout


def client_hello(version: ssl.TLSVersion = TLS13) -> bytes:
    """A real ClientHello, as an ``ssl`` client speaking only ``version`` sends it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = context.maximum_version = version
    outgoing = ssl.MemoryBIO()
    obj = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


@asynccontextmanager
async def tls_listener(
    policy: tv.ServerPolicy, **options: Any
) -> AsyncIterator[tuple[tv.TLSListener[trio.SocketStream], int]]:
    transport = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    listener = tv.TLSListener(transport, policy, **options)
    async with listener:
        yield listener, transport.socket.getsockname()[1]


async def test_accept_does_not_wait_for_a_silent_client(certs: CertKit) -> None:
    policy = open_policy(certs.server("valid"))
    with trio.fail_after(TIMEOUT):
        async with tls_listener(policy) as (listener, port):
            silent = await connect_tcp(port)
            async with silent:
                silent_stream = await listener.accept()
                assert silent_stream.client_hello is None
                client = await connect_client(port, client_policy(certs))
                server = await listener.accept()
                async with client, server, open_helper_nursery() as nursery:
                    nursery.start_soon(server_welcomes, server)
                    assert await client_reads(client) == WELCOME
                await trio.aclose_forcefully(silent_stream)


async def stall_server_handshake(
    policy: tv.ServerPolicy, first_bytes: bytes
) -> tuple[tv.HandshakeTimeout, list[tv.HandshakeReport]]:
    """A client sends ``first_bytes`` and then nothing; what the server raises."""
    reports = Reports()
    async with tls_listener(
        policy, handshake_timeout=HANDSHAKE_TIMEOUT, on_handshake=reports
    ) as (listener, port):
        client = await connect_tcp(port)
        async with client:
            await client.send_all(first_bytes)
            stream = await listener.accept()
            async with stream:
                with trio.fail_after(TIMEOUT_BOUND):
                    with pytest.raises(tv.HandshakeTimeout) as caught:
                        await stream.do_handshake()
    return caught.value, reports.reports


async def test_handshake_timeout_ends_client_stalled_mid_client_hello(
    certs: CertKit,
) -> None:
    hello = client_hello()
    with trio.fail_after(TIMEOUT):
        error, reports = await stall_server_handshake(
            open_policy(certs.server("valid")), hello[: len(hello) // 2]
        )
    assert isinstance(error, trio.TooSlowError)
    assert (error.side, error.phase) == ("server", tv.Phase.CLIENT_HELLO)
    [report] = reports
    assert report.error is error
    assert report.phase is tv.Phase.CLIENT_HELLO


@pytest.mark.parametrize(
    ("client_auth", "phase"),
    [
        # The server sent its whole flight and waits for the client's Finished.
        pytest.param(tv.ClientAuth.NONE, tv.Phase.FINISHED, id="none"),
        # It waits for the client's Certificate.
        pytest.param(
            tv.ClientAuth.REQUIRED, tv.Phase.CLIENT_CERTIFICATE, id="required"
        ),
    ],
)
async def test_handshake_timeout_ends_client_stalled_after_client_hello(
    certs: CertKit,
    version: ssl.TLSVersion,
    client_auth: tv.ClientAuth,
    phase: tv.Phase,
) -> None:
    policy = tv.ServerPolicy(
        identity=identity(certs.server("valid")),
        client_auth=client_auth,
        client_trust=None if client_auth is tv.ClientAuth.NONE else certs.ca_pem,
    )
    with trio.fail_after(TIMEOUT):
        error, reports = await stall_server_handshake(policy, client_hello(version))
    assert (error.side, error.phase, error.tls_version) == (
        "server",
        phase,
        VERSION_NAMES[version],
    ), f"{error!r}: {error}"
    [report] = reports
    assert report.phase is phase


# ------------------------------------------------ ClientAuth.DEFERRED (PHA)


def pha_client(
    certs: CertKit, kind: ClientKind | None = "valid", **options: Any
) -> tv.ClientPolicy:
    options.setdefault("post_handshake_auth", True)
    return client_policy(certs, kind, **options)


async def test_deferred_handshake_requests_no_certificate(certs: CertKit) -> None:
    client, server = await one_connection(deferred_policy(certs), pha_client(certs))
    peer = assert_admitted(client, server)
    assert peer.certificate is None
    assert peer.tls_version == "TLSv1.3"


async def server_asks_then_greets(stream: Stream) -> tuple[tv.PeerInfo, bytes]:
    """Ask for the client's certificate, greet, then read the client's reply."""
    await stream.do_handshake()
    assert stream.peer.certificate is None
    info = await stream.request_client_certificate(timeout=TIMEOUT)
    await stream.send_all(WELCOME)
    return info, await receive_exactly(stream, len(b"thanks"))


async def client_reads_then_replies(stream: Stream) -> bytes:
    data = await client_reads(stream)
    await stream.send_all(b"thanks")
    return data


async def test_deferred_request_returns_client_certificate(certs: CertKit) -> None:
    client, server = await one_connection(
        deferred_policy(certs),
        pha_client(certs),
        server_action=server_asks_then_greets,
        client_action=client_reads_then_replies,
    )
    assert server.ok, f"{server.error!r}: {server.error}"
    assert client.ok, f"{client.error!r}: {client.error}"
    info, reply = server.value
    assert same_certificate(info.certificate, certs.client("valid"))
    assert reply == b"thanks"
    assert client.value == WELCOME


async def server_asks(stream: Stream) -> tv.PeerInfo:
    await stream.do_handshake()
    return await stream.request_client_certificate(timeout=TIMEOUT)


async def test_deferred_request_without_client_certificate(certs: CertKit) -> None:
    client, server = await one_connection(
        deferred_policy(certs), pha_client(certs, None), server_action=server_asks
    )
    server_error = server.expect(tv.MissingClientCertificate)
    assert (server_error.phase, server_error.alert_sent) == (
        tv.Phase.POST_HANDSHAKE_AUTH,
        tv.Alert.CERTIFICATE_REQUIRED,
    ), f"{server_error!r}: {server_error}"
    client_error = client.expect(tv.PeerRequiresCertificate)
    assert (client_error.phase, client_error.alert_received) == (
        tv.Phase.POST_HANDSHAKE_AUTH,
        tv.Alert.CERTIFICATE_REQUIRED,
    ), f"{client_error!r}: {client_error}"


async def test_deferred_request_refuses_certificate_from_other_ca(
    certs: CertKit,
) -> None:
    client, server = await one_connection(
        deferred_policy(certs), pha_client(certs, "other_ca"), server_action=server_asks
    )
    server_error = server.expect(tv.UnknownIssuer)
    assert (server_error.phase, server_error.alert_sent) == (
        tv.Phase.POST_HANDSHAKE_AUTH,
        tv.Alert.UNKNOWN_CA,
    ), f"{server_error!r}: {server_error}"
    client_error = client.expect(tv.PeerRejectedCertificate)
    assert (client_error.phase, client_error.alert_received) == (
        tv.Phase.POST_HANDSHAKE_AUTH,
        tv.Alert.UNKNOWN_CA,
    ), f"{client_error!r}: {client_error}"


async def server_asks_then_carries_on(
    stream: Stream,
) -> tuple[tv.NegotiationFailed, bytes]:
    """Ask (and fail), then show the stream still works both ways."""
    await stream.do_handshake()
    with pytest.raises(tv.NegotiationFailed) as caught:
        await stream.request_client_certificate(timeout=TIMEOUT)
    await stream.send_all(WELCOME)
    return caught.value, await receive_exactly(stream, len(b"thanks"))


async def test_deferred_request_to_client_not_opted_in_keeps_stream_usable(
    certs: CertKit,
) -> None:
    client, server = await one_connection(
        deferred_policy(certs),
        pha_client(certs, post_handshake_auth=False),
        server_action=server_asks_then_carries_on,
        client_action=client_reads_then_replies,
    )
    assert server.ok, f"{server.error!r}: {server.error}"
    assert client.ok, f"{client.error!r}: {client.error}"
    error, reply = server.value
    assert error.phase is tv.Phase.POST_HANDSHAKE_AUTH
    assert reply == b"thanks"
    assert client.value == WELCOME


async def test_deferred_handshake_on_tls12_requests_no_certificate(
    certs: CertKit,
) -> None:
    client, server = await one_connection(
        deferred_policy(certs), pha_client(certs, None, version=TLS12)
    )
    peer = assert_admitted(client, server)
    assert peer.certificate is None
    assert peer.tls_version == "TLSv1.2"


async def test_deferred_request_on_tls12_raises_negotiation_failed(
    certs: CertKit,
) -> None:
    client, server = await one_connection(
        deferred_policy(certs),
        pha_client(certs, version=TLS12),
        server_action=server_asks_then_carries_on,
        client_action=client_reads_then_replies,
    )
    assert server.ok, f"{server.error!r}: {server.error}"
    assert client.ok, f"{client.error!r}: {client.error}"
    error, reply = server.value
    assert error.tls_version == "TLSv1.2"
    assert reply == b"thanks"


async def test_deferred_authorize_runs_after_the_request_not_at_handshake(
    certs: CertKit,
) -> None:
    judged: list[tv.PeerInfo] = []
    handshake_done = trio.Event()

    def authorize(peer: tv.PeerInfo) -> bool:
        judged.append(peer)
        return False

    async def server_action(stream: Stream) -> tv.PeerInfo:
        await stream.do_handshake()
        handshake_done.set()
        assert judged == []
        return await stream.request_client_certificate(timeout=TIMEOUT)

    client, server = await one_connection(
        deferred_policy(certs, authorize=authorize),
        pha_client(certs),
        server_action=server_action,
    )
    assert handshake_done.is_set()
    error = server.expect(tv.PolicyRejected)
    assert error.phase is tv.Phase.CONNECTION_POLICY, f"{error!r}: {error}"
    [peer] = judged
    assert same_certificate(peer.certificate, certs.client("valid"))
    # No alert exists for a verdict after the handshake: the connection closes.
    client.expect(tv.TruncatedStream)


async def test_deferred_request_keeps_data_sent_before_the_certificate(
    certs: CertKit,
) -> None:
    request = b"GET /private HTTP/1.1\r\n\r\n"
    sent = trio.Event()

    async def client_action(stream: Stream) -> bytes:
        await stream.do_handshake()
        await stream.send_all(request)
        sent.set()
        return await stream.receive_some()

    async def server_action(stream: Stream) -> tuple[tv.PeerInfo, bytes]:
        await stream.do_handshake()
        await sent.wait()
        info = await stream.request_client_certificate(timeout=TIMEOUT)
        data = await receive_exactly(stream, len(request))
        await stream.send_all(WELCOME)
        return info, data

    client, server = await one_connection(
        deferred_policy(certs),
        pha_client(certs),
        server_action=server_action,
        client_action=client_action,
    )
    assert server.ok, f"{server.error!r}: {server.error}"
    assert client.ok, f"{client.error!r}: {client.error}"
    info, data = server.value
    assert data == request
    assert same_certificate(info.certificate, certs.client("valid"))
    assert client.value == WELCOME
