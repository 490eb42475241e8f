"""TLSStream as a drop-in for trio.SSLStream.

Everything here runs real TLS (the ``ssl`` module, OpenSSL) with certificates
from the :class:`~certs.CertKit`.  Transports are real loopback sockets, or
trio's in-memory and lockstep streams where a test is about stream mechanics:
who may send when, one byte at a time, a transport that refuses to move.
"""

from __future__ import annotations

import hashlib
import random
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, TypeAlias, TypeVar

import pytest
import trio
import trio.testing
from certs import CertKit
from loopback import socket_pair
from trio.testing import (
    MemoryReceiveStream,
    MemorySendStream,
    assert_checkpoints,
    check_two_way_stream,
    lockstep_stream_pair,
    memory_stream_pair,
    wait_all_tasks_blocked,
)

import trio_verify as tv
from trio_verify._hello import ClientHelloReader

TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
TIMEOUT = 10.0
RECORD = 16384

T = TypeVar("T", bound=trio.abc.Stream)
U = TypeVar("U", bound=trio.abc.Stream)
MemoryStream: TypeAlias = trio.StapledStream[MemorySendStream, MemoryReceiveStream]
LockstepStream: TypeAlias = trio.StapledStream[
    trio.abc.SendStream, trio.abc.ReceiveStream
]
AnyTLS: TypeAlias = tv.TLSStream[Any]

# ----------------------------------------------------------------- policies


@pytest.fixture(scope="session")
def server_identity(certs: CertKit) -> tv.Identity:
    ident = certs.server("valid")
    return tv.Identity.from_pem(ident.cert_chain_pem, ident.key_pem)


@pytest.fixture(scope="session")
def server_policy(server_identity: tv.Identity) -> tv.ServerPolicy:
    return tv.ServerPolicy(identity=server_identity)


@pytest.fixture(scope="session")
def client_policy(certs: CertKit) -> tv.ClientPolicy:
    return tv.ClientPolicy(trust=certs.ca_pem)


@pytest.fixture(params=[TLS12, TLS13], ids=["TLSv1.2", "TLSv1.3"])
def version(request: pytest.FixtureRequest) -> ssl.TLSVersion:
    result: ssl.TLSVersion = request.param
    return result


def pinned_to(
    version: ssl.TLSVersion, certs: CertKit, server_identity: tv.Identity
) -> tuple[tv.ClientPolicy, tv.ServerPolicy]:
    """A client and server policy that speak only ``version``."""
    return (
        tv.ClientPolicy(
            trust=certs.ca_pem, minimum_version=version, maximum_version=version
        ),
        tv.ServerPolicy(
            identity=server_identity, minimum_version=version, maximum_version=version
        ),
    )


# ------------------------------------------------------------------ helpers


def tls_pair(
    client_transport: T,
    server_transport: U,
    client_policy: tv.ClientPolicy | ssl.SSLContext,
    server_policy: tv.ServerPolicy | ssl.SSLContext,
    *,
    https_compatible: bool = False,
) -> tuple[tv.TLSStream[T], tv.TLSStream[U]]:
    client = tv.TLSStream(
        client_transport,
        client_policy,
        server_hostname="localhost",
        https_compatible=https_compatible,
    )
    server = tv.TLSStream(
        server_transport,
        server_policy,
        server_side=True,
        https_compatible=https_compatible,
    )
    return client, server


def memory_tls_pair(
    client_policy: tv.ClientPolicy | ssl.SSLContext,
    server_policy: tv.ServerPolicy | ssl.SSLContext,
    *,
    https_compatible: bool = False,
) -> tuple[tv.TLSStream[MemoryStream], tv.TLSStream[MemoryStream]]:
    client_transport, server_transport = memory_stream_pair()
    return tls_pair(
        client_transport,
        server_transport,
        client_policy,
        server_policy,
        https_compatible=https_compatible,
    )


def lockstep_tls_pair(
    client_policy: tv.ClientPolicy | ssl.SSLContext,
    server_policy: tv.ServerPolicy | ssl.SSLContext,
) -> tuple[tv.TLSStream[LockstepStream], tv.TLSStream[LockstepStream]]:
    client_transport, server_transport = lockstep_stream_pair()
    return tls_pair(client_transport, server_transport, client_policy, server_policy)


async def socket_tls_pair(
    client_policy: tv.ClientPolicy | ssl.SSLContext,
    server_policy: tv.ServerPolicy | ssl.SSLContext,
    *,
    https_compatible: bool = False,
) -> tuple[tv.TLSStream[trio.SocketStream], tv.TLSStream[trio.SocketStream]]:
    client_transport, server_transport = await socket_pair()
    return tls_pair(
        client_transport,
        server_transport,
        client_policy,
        server_policy,
        https_compatible=https_compatible,
    )


async def handshake_both(client: AnyTLS, server: AnyTLS) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.do_handshake)
        nursery.start_soon(server.do_handshake)


async def close_both(*streams: AnyTLS) -> None:
    with trio.CancelScope(shield=True):
        for stream in streams:
            await trio.aclose_forcefully(stream)


async def receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    got = bytearray()
    while len(got) < size:
        chunk = await stream.receive_some(size - len(got))
        assert chunk, f"EOF after {len(got)} of {size} bytes"
        got += chunk
    return bytes(got)


async def receive_until_eof(stream: trio.abc.ReceiveStream) -> bytes:
    got = bytearray()
    while chunk := await stream.receive_some():
        got += chunk
    return bytes(got)


def transport_of(stream: AnyTLS) -> object:
    """``stream.transport_stream``, which is ``None`` after unwrap()."""
    return stream.transport_stream


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class OneByteAtATime(trio.abc.Stream):
    """A transport that hands over at most one byte per receive_some."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(1)

    async def aclose(self) -> None:
        await self.inner.aclose()


class CountingCloses(trio.abc.Stream):
    """A transport that counts its aclose() calls (and can make them fail)."""

    def __init__(self, inner: trio.abc.Stream, *, fail: bool = False) -> None:
        self.inner = inner
        self.closes = 0
        self.fail = fail

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        self.closes += 1
        await self.inner.aclose()
        if self.fail:
            raise KeyError("transport close failed")


class Untouchable(trio.abc.Stream):
    """A transport that fails the test if anything at all is done with it."""

    def __init__(self) -> None:
        self.waited = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> NoReturn:
        raise AssertionError("send_all must not be called")

    async def wait_send_all_might_not_block(self) -> None:
        self.waited += 1
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> NoReturn:
        raise AssertionError("receive_some must not be called")

    async def aclose(self) -> NoReturn:
        raise AssertionError("aclose must not be called")


# -------------------------------------------------------- type and constructor


def test_is_a_trio_stream_and_subscriptable_at_runtime() -> None:
    assert issubclass(tv.TLSStream, trio.abc.Stream)
    alias = tv.TLSStream[trio.SocketStream]
    assert alias.__origin__ is tv.TLSStream  # type: ignore[attr-defined]
    assert alias.__args__ == (trio.SocketStream,)  # type: ignore[attr-defined]


def test_constructor_does_no_io_outside_trio_run(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    with pytest.raises(RuntimeError):
        trio.lowlevel.current_trio_token()
    client = tv.TLSStream(Untouchable(), client_policy, server_hostname="localhost")
    server = tv.TLSStream(Untouchable(), server_policy, server_side=True)
    assert isinstance(client, trio.abc.Stream)
    assert isinstance(server, trio.abc.Stream)


def test_constructor_accepts_plain_ssl_contexts(certs: CertKit) -> None:
    client_ctx = certs.client_context()
    server_ctx = certs.server_context()
    client = tv.TLSStream(Untouchable(), client_ctx, server_hostname="localhost")
    server = tv.TLSStream(Untouchable(), server_ctx, server_side=True)
    assert client.context is client_ctx
    assert server.context is server_ctx


async def test_handshake_is_lazy(client_policy: tv.ClientPolicy) -> None:
    client_send, client_receive = MemorySendStream(), MemoryReceiveStream()
    client = tv.TLSStream(
        trio.StapledStream(client_send, client_receive),
        client_policy,
        server_hostname="localhost",
    )
    await wait_all_tasks_blocked()
    with pytest.raises(trio.WouldBlock):
        client_send.get_data_nowait()
    with pytest.raises(trio.NeedHandshakeError):
        client.version()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, b"first use")
        await wait_all_tasks_blocked()
        hello = client_send.get_data_nowait()
        nursery.cancel_scope.cancel()
    assert hello[:1] == b"\x16", "the first use of the stream sends a ClientHello"


# ---------------------------------------------------------------- attributes


def test_transport_stream_is_the_wrapped_stream(client_policy: tv.ClientPolicy) -> None:
    transport = Untouchable()
    stream = tv.TLSStream(transport, client_policy, server_hostname="localhost")
    assert stream.transport_stream is transport


def test_server_side_and_server_hostname_are_read_only(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client = tv.TLSStream(Untouchable(), client_policy, server_hostname="localhost")
    server = tv.TLSStream(Untouchable(), server_policy, server_side=True)
    assert client.server_side is False
    assert server.server_side is True
    assert client.server_hostname == "localhost"
    assert server.server_hostname is None
    with pytest.raises(AttributeError):
        client.server_side = True  # type: ignore[misc]
    with pytest.raises(AttributeError):
        client.server_hostname = "elsewhere.example"  # type: ignore[misc]
    assert client.server_side is False
    assert client.server_hostname == "localhost"


def test_server_hostname_is_idna_2008(client_policy: tv.ClientPolicy) -> None:
    stream = tv.TLSStream(
        Untouchable(), client_policy, server_hostname="straße.example"
    )
    assert stream.server_hostname == "xn--strae-oqa.example"
    # Python's own codec is IDNA 2003, which maps ß to ss instead.
    assert "straße.example".encode("idna") == b"strasse.example"


def test_server_hostname_bytes_are_accepted(client_policy: tv.ClientPolicy) -> None:
    stream = tv.TLSStream(Untouchable(), client_policy, server_hostname=b"localhost")
    assert stream.server_hostname == "localhost"


NEED_HANDSHAKE = [
    "getpeercert",
    "selected_alpn_protocol",
    "selected_npn_protocol",
    "get_channel_binding",
    "version",
    "cipher",
    "shared_ciphers",
    "compression",
    "session_reused",
]


@pytest.mark.parametrize("name", NEED_HANDSHAKE)
@pytest.mark.parametrize("side", ["client", "server"])
def test_forwarded_attribute_needs_handshake(
    name: str,
    side: str,
    client_policy: tv.ClientPolicy,
    server_policy: tv.ServerPolicy,
) -> None:
    if side == "client":
        stream = tv.TLSStream(Untouchable(), client_policy, server_hostname="localhost")
    else:
        stream = tv.TLSStream(Untouchable(), server_policy, server_side=True)
    with pytest.raises(trio.NeedHandshakeError):
        getattr(stream, name)


def test_pending_and_session_are_forwarded_before_handshake(
    client_policy: tv.ClientPolicy,
) -> None:
    stream = tv.TLSStream(Untouchable(), client_policy, server_hostname="localhost")
    assert stream.pending() == 0
    assert stream.session is None


def test_peer_needs_handshake(client_policy: tv.ClientPolicy) -> None:
    stream = tv.TLSStream(Untouchable(), client_policy, server_hostname="localhost")
    with pytest.raises(trio.NeedHandshakeError):
        _ = stream.peer


def test_unknown_attribute_raises_attribute_error(
    client_policy: tv.ClientPolicy,
) -> None:
    stream = tv.TLSStream(Untouchable(), client_policy, server_hostname="localhost")
    with pytest.raises(AttributeError):
        _ = stream.no_such_attribute
    with pytest.raises(AttributeError):
        _ = stream.read  # an SSLObject method that is not forwarded
    assert not hasattr(stream, "do_handshake_on_connect")


def test_dir_lists_forwarded_attributes(client_policy: tv.ClientPolicy) -> None:
    stream = tv.TLSStream(Untouchable(), client_policy, server_hostname="localhost")
    names = dir(stream)
    for name in ["transport_stream", "context", "getpeercert", "version", "pending"]:
        assert name in names


async def test_context_is_settable_and_used_by_the_handshake(
    certs: CertKit, server_policy: tv.ServerPolicy, client_policy: tv.ClientPolicy
) -> None:
    client, server = await socket_tls_pair(client_policy, server_policy)
    assert client.context is client_policy.context
    distrustful = certs.client_context(trust="other_ca")
    client.context = distrustful
    assert client.context is distrustful

    async def server_side() -> None:
        with pytest.raises(tv.TLSError):
            await server.do_handshake()
        # Closing lets the client's linger after its alert end at once.
        await server.aclose()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server_side)
            with pytest.raises(tv.UnknownIssuer) as excinfo:
                await client.do_handshake()
    assert isinstance(excinfo.value.__cause__, ssl.SSLCertVerificationError)
    await close_both(client, server)


async def test_forwarded_attributes_after_handshake(
    version: ssl.TLSVersion, certs: CertKit, server_identity: tv.Identity
) -> None:
    client, server = memory_tls_pair(*pinned_to(version, certs, server_identity))
    with trio.fail_after(TIMEOUT):
        await handshake_both(client, server)
    name = "TLSv1.3" if version is TLS13 else "TLSv1.2"
    assert client.version() == server.version() == name
    assert client.cipher() == server.cipher()
    assert client.cipher() is not None
    assert client.compression() is None
    assert client.pending() == 0
    assert client.session is not None
    assert client.session_reused is False
    assert server.shared_ciphers()
    assert server.getpeercert() is None
    cert = client.getpeercert()
    assert ("DNS", "localhost") in cert["subjectAltName"]
    assert client.getpeercert(binary_form=True) == certs.server().info.der
    await close_both(client, server)


async def test_get_channel_binding_matches_on_both_sides(
    certs: CertKit, server_identity: tv.Identity
) -> None:
    # "tls-unique", the one binding ssl offers, is defined for TLS 1.2.
    client, server = memory_tls_pair(*pinned_to(TLS12, certs, server_identity))
    with trio.fail_after(TIMEOUT):
        await handshake_both(client, server)
    binding = client.get_channel_binding()
    assert binding is not None
    assert binding == server.get_channel_binding()
    await close_both(client, server)


async def test_selected_alpn_protocol(
    certs: CertKit, server_identity: tv.Identity
) -> None:
    client, server = memory_tls_pair(
        tv.ClientPolicy(trust=certs.ca_pem, alpn=["h2", "http/1.1"]),
        tv.ServerPolicy(identity=server_identity, alpn=["http/1.1"]),
    )
    with trio.fail_after(TIMEOUT):
        await handshake_both(client, server)
    assert client.selected_alpn_protocol() == "http/1.1"
    assert server.selected_alpn_protocol() == "http/1.1"
    assert client.peer.alpn_protocol == "http/1.1"
    await close_both(client, server)


async def test_selected_alpn_protocol_is_none_when_not_negotiated(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, server = memory_tls_pair(client_policy, server_policy)
    with trio.fail_after(TIMEOUT):
        await handshake_both(client, server)
    assert client.selected_alpn_protocol() is None
    assert server.selected_alpn_protocol() is None
    await close_both(client, server)


@pytest.mark.filterwarnings("ignore:ssl NPN is deprecated:DeprecationWarning")
async def test_selected_npn_protocol_is_none_after_handshake(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, server = memory_tls_pair(client_policy, server_policy)
    with trio.fail_after(TIMEOUT):
        await handshake_both(client, server)
    assert client.selected_npn_protocol() is None
    assert server.selected_npn_protocol() is None
    await close_both(client, server)


async def test_peer_after_handshake(
    certs: CertKit, client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, server = memory_tls_pair(client_policy, server_policy)
    with trio.fail_after(TIMEOUT):
        await handshake_both(client, server)
    peer = client.peer
    assert isinstance(peer, tv.PeerInfo)
    assert peer.certificate is not None
    assert peer.certificate.der == certs.server().info.der
    assert peer.server_name == "localhost"
    assert peer.tls_version == client.version()
    assert peer.cipher == client.cipher()
    assert peer.session_reused is False
    assert server.peer.certificate is None
    assert server.peer.server_name == "localhost"
    await close_both(client, server)


# ----------------------------------------------------------------- handshake


async def test_do_handshake_is_idempotent(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, server = memory_tls_pair(client_policy, server_policy)
    with trio.fail_after(TIMEOUT):
        await handshake_both(client, server)
        await handshake_both(client, server)
        await client.do_handshake()
        await client.send_all(b"still fine")
        assert await receive_exactly(server, 10) == b"still fine"
    await close_both(client, server)


async def test_do_handshake_from_several_tasks_at_once(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, server = await socket_tls_pair(client_policy, server_policy)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(client.do_handshake)
                nursery.start_soon(server.do_handshake)
        assert client.version() is not None
        await client.send_all(b"x")
        assert await server.receive_some(1) == b"x"
    await close_both(client, server)


async def test_failed_shared_handshake_reaches_every_waiting_task(
    certs: CertKit, server_policy: tv.ServerPolicy
) -> None:
    distrustful = tv.ClientPolicy(trust=certs.other_ca_pem)
    client, server = await socket_tls_pair(distrustful, server_policy)
    errors: list[BaseException] = []

    async def record(call: Callable[[], Awaitable[object]]) -> None:
        try:
            await call()
        except Exception as exc:
            errors.append(exc)

    async def server_side() -> None:
        with pytest.raises(tv.TLSError):
            await server.do_handshake()
        # Closing lets the client's linger after its alert end at once.
        await server.aclose()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server_side)
            for _ in range(3):
                nursery.start_soon(record, client.do_handshake)
            nursery.start_soon(record, client.receive_some)
            nursery.start_soon(record, lambda: client.send_all(b"x"))
    assert len(errors) == 5
    for error in errors:
        assert isinstance(error, tv.UnknownIssuer), repr(error)
        assert isinstance(error.__cause__, ssl.SSLCertVerificationError)
    await close_both(client, server)


async def test_cancelled_handshake_waiter_does_not_disturb_the_handshake(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, server = memory_tls_pair(client_policy, server_policy)
    waiter_scope = trio.CancelScope()

    async def waiter() -> None:
        with waiter_scope:
            await client.do_handshake()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            # The first task runs the handshake, the second waits for it.
            nursery.start_soon(client.do_handshake)
            await wait_all_tasks_blocked()
            nursery.start_soon(waiter)
            await wait_all_tasks_blocked()
            waiter_scope.cancel()
            await wait_all_tasks_blocked()
            nursery.start_soon(server.do_handshake)
        assert waiter_scope.cancelled_caught
        await client.send_all(b"fine")
        assert await receive_exactly(server, 4) == b"fine"
    await close_both(client, server)


# --------------------------------------------------------------- checkpoints


async def test_every_call_is_a_checkpoint(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, server = await socket_tls_pair(client_policy, server_policy)
    raw_transports: list[trio.abc.Stream] = []

    async def echo() -> None:
        while data := await server.receive_some():
            await server.send_all(data)
        raw, _ = await server.unwrap()
        raw_transports.append(raw)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo)
            with assert_checkpoints():
                await client.do_handshake()
            with assert_checkpoints():
                await client.do_handshake()
            with assert_checkpoints():
                await client.wait_send_all_might_not_block()
            with assert_checkpoints():
                await client.send_all(b"xxx")
            with assert_checkpoints():
                await client.send_all(b"")
            with assert_checkpoints():
                assert await client.receive_some(1) == b"x"
            # The rest of the record is already decrypted and buffered.
            with assert_checkpoints():
                assert await client.receive_some(1) == b"x"
            with assert_checkpoints():
                assert await client.receive_some(1) == b"x"
            with assert_checkpoints():
                client_raw, _ = await client.unwrap()
            raw_transports.append(client_raw)
    for raw in raw_transports:
        await raw.aclose()


async def test_aclose_is_a_checkpoint_every_time(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, server = memory_tls_pair(client_policy, server_policy)
    with trio.fail_after(TIMEOUT):
        await handshake_both(client, server)
    with assert_checkpoints():
        await client.aclose()
    with assert_checkpoints():
        await client.aclose()
    with assert_checkpoints():
        await server.aclose()


# ------------------------------------------------------- the Stream interface


async def test_passes_trio_generic_two_way_stream_checks(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    async def stream_maker() -> tuple[AnyTLS, AnyTLS]:
        return memory_tls_pair(client_policy, server_policy)

    async def clogged_stream_maker() -> tuple[AnyTLS, AnyTLS]:
        client, server = lockstep_tls_pair(client_policy, server_policy)
        await handshake_both(client, server)
        return client, server

    with trio.fail_after(4 * TIMEOUT):
        await check_two_way_stream(stream_maker, clogged_stream_maker)


async def test_passes_trio_generic_checks_when_https_compatible(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    async def stream_maker() -> tuple[AnyTLS, AnyTLS]:
        return memory_tls_pair(client_policy, server_policy, https_compatible=True)

    with trio.fail_after(4 * TIMEOUT):
        await check_two_way_stream(stream_maker, None)


async def test_send_all_empty_bytes_sends_nothing(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, server = memory_tls_pair(client_policy, server_policy)
    send_stream = client.transport_stream.send_stream
    pump = send_stream.send_all_hook
    assert pump is not None
    transport_sends = 0

    async def counting_pump() -> None:
        nonlocal transport_sends
        transport_sends += 1
        await pump()

    with trio.fail_after(TIMEOUT):
        await handshake_both(client, server)
        send_stream.send_all_hook = counting_pump
        await client.send_all(b"")
        await client.send_all(bytearray())
        await client.send_all(memoryview(b""))
        assert transport_sends == 0
        await client.send_all(b"x")
        assert await server.receive_some() == b"x"
        await client.aclose()
        assert await server.receive_some() == b""
    await close_both(server)


async def test_send_all_accepts_bytearray_and_memoryview(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, server = memory_tls_pair(client_policy, server_policy)
    with trio.fail_after(TIMEOUT):
        await handshake_both(client, server)
        await client.send_all(bytearray(b"ab"))
        await client.send_all(memoryview(b"xcdx")[1:3])
        assert await receive_exactly(server, 4) == b"abcd"
    await close_both(client, server)


async def test_receive_some_without_max_bytes(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, server = memory_tls_pair(client_policy, server_policy)
    with trio.fail_after(TIMEOUT):
        await handshake_both(client, server)
        await client.send_all(b"hello")
        assert await server.receive_some() == b"hello"
        await client.send_all(b"again")
        assert await server.receive_some(None) == b"again"
    await close_both(client, server)


@pytest.mark.parametrize("max_bytes", [0, -1])
async def test_receive_some_rejects_max_bytes_below_one(
    max_bytes: int, client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, server = memory_tls_pair(client_policy, server_policy)
    with trio.fail_after(TIMEOUT):
        await handshake_both(client, server)
        with pytest.raises(ValueError, match="max_bytes"):
            await client.receive_some(max_bytes)
        # The stream is still fine.
        await server.send_all(b"ok")
        assert await client.receive_some(2) == b"ok"
    await close_both(client, server)


@pytest.mark.parametrize("max_bytes", [1.5, "10", b"10"])
async def test_receive_some_rejects_non_integer_max_bytes(
    max_bytes: object, client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, server = memory_tls_pair(client_policy, server_policy)
    with trio.fail_after(TIMEOUT):
        await handshake_both(client, server)
        with pytest.raises(TypeError):
            await client.receive_some(max_bytes)  # type: ignore[arg-type]
    await close_both(client, server)


async def test_wait_send_all_might_not_block_does_no_handshake(
    client_policy: tv.ClientPolicy,
) -> None:
    transport = Untouchable()
    stream = tv.TLSStream(transport, client_policy, server_hostname="localhost")
    with trio.fail_after(TIMEOUT), assert_checkpoints():
        await stream.wait_send_all_might_not_block()
    assert transport.waited == 1
    with pytest.raises(trio.NeedHandshakeError):
        stream.version()


async def test_receive_some_returns_more_than_one_record(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, server = await socket_tls_pair(client_policy, server_policy)
    payload = random.Random(1).randbytes(65536)
    sent = trio.Event()

    async def sender() -> None:
        await server.send_all(payload)
        sent.set()

    sizes: list[int] = []
    with trio.fail_after(TIMEOUT):
        await handshake_both(client, server)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            await sent.wait()
            got = bytearray()
            while len(got) < len(payload) and max(sizes, default=0) <= RECORD:
                chunk = await client.receive_some(65536)
                sizes.append(len(chunk))
                got += chunk
            got += await receive_exactly(client, len(payload) - len(got))
    assert bytes(got) == payload
    assert max(sizes) > RECORD, f"receive_some returned {sizes}"
    await close_both(client, server)


# ---------------------------------------------------------------- misuse


async def test_two_tasks_sending_at_once_raise_busy(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, _server = lockstep_tls_pair(client_policy, server_policy)
    with (
        trio.fail_after(TIMEOUT),
        pytest.RaisesGroup(
            pytest.RaisesExc(trio.BusyResourceError, match="another task")
        ),
    ):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, b"x")
            nursery.start_soon(client.send_all, b"y")
    await close_both(client)


async def test_two_tasks_receiving_at_once_raise_busy(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, _server = lockstep_tls_pair(client_policy, server_policy)
    with (
        trio.fail_after(TIMEOUT),
        pytest.RaisesGroup(
            pytest.RaisesExc(trio.BusyResourceError, match="another task")
        ),
    ):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.receive_some, 1)
            nursery.start_soon(client.receive_some, 1)
    await close_both(client)


async def test_send_all_and_wait_send_all_might_not_block_conflict(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, _server = lockstep_tls_pair(client_policy, server_policy)
    with (
        trio.fail_after(TIMEOUT),
        pytest.RaisesGroup(
            pytest.RaisesExc(trio.BusyResourceError, match="another task")
        ),
    ):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, b"x")
            nursery.start_soon(client.wait_send_all_might_not_block)
    await close_both(client)


# ------------------------------------------------------------------ errors


async def test_handshake_failure_is_typed_and_breaks_the_stream(
    certs: CertKit, server_policy: tv.ServerPolicy
) -> None:
    distrustful = tv.ClientPolicy(trust=certs.other_ca_pem)
    client, server = await socket_tls_pair(distrustful, server_policy)

    async def server_side() -> None:
        with pytest.raises(tv.PeerRejectedCertificate):
            await server.do_handshake()
        # Closing lets the client's linger after its alert end at once.
        await server.aclose()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server_side)
            with pytest.raises(tv.UnknownIssuer) as excinfo:
                await client.do_handshake()
        error = excinfo.value
        assert isinstance(error, tv.TLSError)
        assert isinstance(error, trio.BrokenResourceError)
        assert isinstance(error.__cause__, ssl.SSLCertVerificationError)
        assert error.ssl_error is error.__cause__
        for call in (
            client.do_handshake,
            lambda: client.send_all(b"x"),
            client.receive_some,
            client.wait_send_all_might_not_block,
            client.unwrap,
        ):
            with pytest.raises(trio.BrokenResourceError):
                await call()
    await close_both(client, server)


async def test_transport_send_error_passes_through_unchanged(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, _server = memory_tls_pair(client_policy, server_policy)

    async def broken_hook() -> NoReturn:
        raise KeyError("transport send failed")

    client.transport_stream.send_stream.send_all_hook = broken_hook
    with trio.fail_after(TIMEOUT):
        with pytest.raises(KeyError), assert_checkpoints():
            await client.do_handshake()
        with pytest.raises(trio.BrokenResourceError), assert_checkpoints():
            await client.do_handshake()
        with pytest.raises(trio.BrokenResourceError):
            await client.send_all(b"x")
    await close_both(client)


async def test_transport_receive_error_passes_through_unchanged(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, server = memory_tls_pair(client_policy, server_policy)

    async def broken_hook() -> NoReturn:
        raise KeyError("transport receive failed")

    client.transport_stream.receive_stream.receive_some_hook = broken_hook

    async def client_side(cancel_scope: trio.CancelScope) -> None:
        with pytest.raises(KeyError), assert_checkpoints():
            await client.do_handshake()
        cancel_scope.cancel()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client_side, nursery.cancel_scope)
            nursery.start_soon(server.do_handshake)
        with pytest.raises(trio.BrokenResourceError), assert_checkpoints():
            await client.do_handshake()
        with pytest.raises(trio.BrokenResourceError):
            await client.receive_some()
    await close_both(client, server)


async def test_send_failing_after_handshake_breaks_the_stream(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, server = memory_tls_pair(client_policy, server_policy)
    with trio.fail_after(TIMEOUT):
        await handshake_both(client, server)

    async def broken_hook() -> NoReturn:
        raise KeyError("transport send failed")

    client.transport_stream.send_stream.send_all_hook = broken_hook
    with trio.fail_after(TIMEOUT):
        with pytest.raises(KeyError):
            await client.send_all(b"x")
        with pytest.raises(trio.BrokenResourceError):
            await client.wait_send_all_might_not_block()
        with pytest.raises(trio.BrokenResourceError):
            await client.send_all(b"x")
        with pytest.raises(trio.BrokenResourceError):
            await client.receive_some()
    await close_both(client, server)


async def test_peer_closing_transport_without_close_notify_breaks_the_stream(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, server = memory_tls_pair(client_policy, server_policy)
    with trio.fail_after(TIMEOUT):
        await handshake_both(client, server)
        await trio.aclose_forcefully(client.transport_stream)
        with pytest.raises(trio.BrokenResourceError):
            await server.receive_some()
        with pytest.raises(trio.BrokenResourceError):
            await server.send_all(b"x")
    await close_both(client, server)


# ------------------------------------------------------------------ closing


async def test_aclose_sends_close_notify_without_waiting_for_reply(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, server = await socket_tls_pair(client_policy, server_policy)
    with trio.fail_after(TIMEOUT):
        await handshake_both(client, server)
        # The server reads nothing while the client closes.
        await client.aclose()
        assert await server.receive_some() == b""
    await close_both(server)


async def test_peer_close_notify_gives_eof_every_time(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, server = await socket_tls_pair(client_policy, server_policy)
    with trio.fail_after(TIMEOUT):
        await handshake_both(client, server)
        await server.send_all(b"last words")
        await server.aclose()
        assert await receive_exactly(client, 10) == b"last words"
        for _ in range(3):
            with assert_checkpoints():
                assert await client.receive_some() == b""
        await client.aclose()


async def test_close_notify_both_ways(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, server = memory_tls_pair(client_policy, server_policy)

    async def closer(stream: AnyTLS) -> None:
        await stream.aclose()

    async def reader(stream: AnyTLS) -> None:
        assert await stream.receive_some(10) == b""
        assert await stream.receive_some(10) == b""
        await stream.aclose()

    with trio.fail_after(TIMEOUT):
        await handshake_both(client, server)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(closer, client)
            nursery.start_soon(reader, server)
    with pytest.raises(trio.ClosedResourceError):
        await client.transport_stream.send_all(b"123")


async def test_aclose_while_another_task_receives(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, server = await socket_tls_pair(client_policy, server_policy)

    async def blocked_receiver() -> None:
        with pytest.raises(trio.ClosedResourceError):
            await client.receive_some()

    with trio.fail_after(TIMEOUT):
        await handshake_both(client, server)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocked_receiver)
            await wait_all_tasks_blocked()
            await client.aclose()
        assert await server.receive_some() == b""
    await close_both(server)


async def test_aclose_closes_transport_exactly_once(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client_transport, server_transport = memory_stream_pair()
    counted = CountingCloses(client_transport)
    client, server = tls_pair(counted, server_transport, client_policy, server_policy)
    with trio.fail_after(TIMEOUT):
        await handshake_both(client, server)
        await client.aclose()
        await client.aclose()
        await client.aclose()
    assert counted.closes == 1
    await close_both(server)


async def test_aclose_closes_transport_once_when_its_close_fails(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client_transport, server_transport = memory_stream_pair()
    counted = CountingCloses(client_transport, fail=True)
    client, server = tls_pair(counted, server_transport, client_policy, server_policy)
    with trio.fail_after(TIMEOUT):
        await handshake_both(client, server)
        with pytest.raises(KeyError):
            await client.aclose()
        await client.aclose()
    assert counted.closes == 1
    await close_both(server)


async def test_aclose_of_a_broken_stream_closes_transport(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client_transport, server_transport = memory_stream_pair()
    counted = CountingCloses(client_transport)
    client, server = tls_pair(counted, server_transport, client_policy, server_policy)

    async def broken_hook() -> NoReturn:
        raise KeyError("transport send failed")

    client_transport.send_stream.send_all_hook = broken_hook
    with trio.fail_after(TIMEOUT):
        with pytest.raises(KeyError):
            await client.do_handshake()
        await client.aclose()
    assert counted.closes == 1
    await close_both(server)


@pytest.mark.parametrize("handshaken", [False, True], ids=["fresh", "handshaken"])
async def test_aclose_when_cancelled_still_closes_transport(
    handshaken: bool, client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client_transport, server_transport = memory_stream_pair()
    counted = CountingCloses(client_transport)
    client, server = tls_pair(counted, server_transport, client_policy, server_policy)
    if handshaken:
        with trio.fail_after(TIMEOUT):
            await handshake_both(client, server)
    with trio.CancelScope() as scope:
        scope.cancel()
        await client.aclose()
    assert counted.closes == 1
    with pytest.raises(trio.ClosedResourceError):
        await client_transport.send_all(b"x")
    with pytest.raises(trio.ClosedResourceError):
        await client.send_all(b"x")
    await close_both(server)


async def test_aclose_forcefully_closes_transport(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, server = await socket_tls_pair(client_policy, server_policy)
    with trio.fail_after(TIMEOUT):
        await handshake_both(client, server)
        transport = client.transport_stream
        await trio.aclose_forcefully(client)
    assert transport.socket.fileno() == -1
    await close_both(server)


CLOSED_CALLS: list[tuple[str, Callable[[AnyTLS], Awaitable[object]]]] = [
    ("do_handshake", lambda s: s.do_handshake()),
    ("send_all", lambda s: s.send_all(b"x")),
    ("send_all_empty", lambda s: s.send_all(b"")),
    ("receive_some", lambda s: s.receive_some(10)),
    ("wait_send_all_might_not_block", lambda s: s.wait_send_all_might_not_block()),
    ("unwrap", lambda s: s.unwrap()),
]


@pytest.mark.parametrize(
    "call", [c for _, c in CLOSED_CALLS], ids=[n for n, _ in CLOSED_CALLS]
)
async def test_calls_after_aclose_raise_closed_resource_error(
    call: Callable[[AnyTLS], Awaitable[object]],
    client_policy: tv.ClientPolicy,
    server_policy: tv.ServerPolicy,
) -> None:
    client, server = memory_tls_pair(client_policy, server_policy)
    with trio.fail_after(TIMEOUT):
        await handshake_both(client, server)
        await client.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await call(client)
    await close_both(server)


# ------------------------------------------------------------------- unwrap


async def test_unwrap_returns_transport_and_bytes_after_close_notify(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, server = memory_tls_pair(client_policy, server_policy)
    client_transport = client.transport_stream
    server_transport = server.transport_stream
    held = trio.Event()

    async def client_side() -> None:
        await client.send_all(b"x")
        assert await client.receive_some(1) == b"y"
        # Hold back what the client sends from here on, so that its
        # close_notify and the raw bytes after it reach the server together.
        hook = client_transport.send_stream.send_all_hook
        client_transport.send_stream.send_all_hook = None
        held.set()
        assert await client.receive_some(1) == b""
        raw, trailing = await client.unwrap()
        assert raw is client_transport
        assert trailing == b""
        assert transport_of(client) is None
        await raw.send_all(b"plaintext after TLS\x00\xff")
        client_transport.send_stream.send_all_hook = hook
        assert hook is not None
        await hook()

    async def server_side() -> None:
        assert await server.receive_some(1) == b"x"
        await server.send_all(b"y")
        await held.wait()
        raw, trailing = await server.unwrap()
        assert raw is server_transport
        assert trailing == b"plaintext after TLS\x00\xff"
        assert transport_of(server) is None

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client_side)
            nursery.start_soon(server_side)
        with pytest.raises(trio.ClosedResourceError):
            await client.send_all(b"x")
        with pytest.raises(trio.ClosedResourceError):
            await server.receive_some()
    await client_transport.aclose()
    await server_transport.aclose()


async def test_unwrap_on_sockets_hands_over_the_plaintext_connection(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, server = await socket_tls_pair(client_policy, server_policy)
    plaintext = b"in the clear after TLS"

    async def client_side() -> None:
        raw, trailing = await client.unwrap()
        assert trailing == b""
        await raw.send_all(plaintext)
        await raw.aclose()

    with trio.fail_after(TIMEOUT):
        await handshake_both(client, server)
        await client.send_all(b"secret")
        assert await receive_exactly(server, 6) == b"secret"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client_side)
            raw, trailing = await server.unwrap()
            assert isinstance(raw, trio.SocketStream)
            assert trailing + await receive_until_eof(raw) == plaintext
    assert transport_of(client) is None
    assert transport_of(server) is None
    await raw.aclose()


# --------------------------------------------------------- https_compatible


async def test_https_compatible_eof_without_close_notify_is_clean_eof(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, server = await socket_tls_pair(
        client_policy, server_policy, https_compatible=True
    )
    with trio.fail_after(TIMEOUT):
        await handshake_both(client, server)
        await server.send_all(b"body")
        await server.transport_stream.aclose()
        assert await receive_exactly(client, 4) == b"body"
        assert await client.receive_some() == b""
    await close_both(client, server)


async def test_eof_without_close_notify_raises_truncated_stream(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, server = await socket_tls_pair(client_policy, server_policy)
    with trio.fail_after(TIMEOUT):
        await handshake_both(client, server)
        await server.send_all(b"body")
        await server.transport_stream.aclose()
        assert await receive_exactly(client, 4) == b"body"
        with pytest.raises(tv.TruncatedStream) as excinfo:
            await client.receive_some()
        assert excinfo.value.phase is tv.Phase.APPLICATION_DATA
        assert excinfo.value.surfaced_in == "receive"
        assert excinfo.value.side == "client"
        assert isinstance(excinfo.value.__cause__, ssl.SSLError)
        with pytest.raises(trio.BrokenResourceError):
            await client.receive_some()
    await close_both(client, server)


async def test_https_compatible_eof_before_handshake_is_clean_eof(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, server = memory_tls_pair(
        client_policy, server_policy, https_compatible=True
    )
    with trio.fail_after(TIMEOUT):
        await client.transport_stream.aclose()
        assert await server.receive_some(10) == b""
    await close_both(client, server)


async def test_aclose_before_handshake_gives_peer_clean_eof(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, server = memory_tls_pair(client_policy, server_policy)

    async def expect_eof() -> None:
        assert await server.receive_some(10) == b""
        await server.aclose()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.aclose)
            nursery.start_soon(expect_eof)


# ----------------------------------------------------------- cancellation


async def test_cancelled_handshake_leaves_stream_broken(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, server = memory_tls_pair(client_policy, server_policy)
    scope = trio.CancelScope()

    async def handshake() -> None:
        with scope:
            await client.do_handshake()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handshake)
            await wait_all_tasks_blocked()
            scope.cancel()
        assert scope.cancelled_caught
        for call in (
            client.do_handshake,
            lambda: client.send_all(b"x"),
            client.receive_some,
        ):
            with pytest.raises(trio.BrokenResourceError):
                await call()
    await close_both(client, server)


async def test_cancelled_send_leaves_stream_broken(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, server = lockstep_tls_pair(client_policy, server_policy)
    scope = trio.CancelScope()

    async def send() -> None:
        with scope:
            await client.send_all(b"x" * 100_000)

    with trio.fail_after(TIMEOUT):
        await handshake_both(client, server)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            await wait_all_tasks_blocked()
            scope.cancel()
        assert scope.cancelled_caught
        with pytest.raises(trio.BrokenResourceError):
            await client.send_all(b"x")
        with pytest.raises(trio.BrokenResourceError):
            await client.receive_some()
    await close_both(client, server)


async def test_cancelled_receive_while_waiting_leaves_stream_usable(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, server = await socket_tls_pair(client_policy, server_policy)
    with trio.fail_after(TIMEOUT):
        await handshake_both(client, server)
        for round_ in range(3):
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(server.receive_some)
                    await wait_all_tasks_blocked()
                    scope.cancel()
            assert scope.cancelled_caught
            message = f"after cancel {round_}".encode()
            await client.send_all(message)
            assert await receive_exactly(server, len(message)) == message
        await server.send_all(b"both ways")
        assert await receive_exactly(client, 9) == b"both ways"
    await close_both(client, server)


# -------------------------------------------------------------- data transfer


async def test_full_duplex_four_mib_each_way(
    version: ssl.TLSVersion, certs: CertKit, server_identity: tv.Identity
) -> None:
    client, server = await socket_tls_pair(*pinned_to(version, certs, server_identity))
    size = 4 * 1024 * 1024
    rng = random.Random(4)
    to_server = rng.randbytes(size)
    to_client = rng.randbytes(size)
    received: dict[str, bytes] = {}

    async def send(stream: AnyTLS, data: bytes) -> None:
        view = memoryview(data)
        for start in range(0, len(data), 256 * 1024):
            await stream.send_all(view[start : start + 256 * 1024])

    async def receive(stream: AnyTLS, key: str) -> None:
        received[key] = await receive_exactly(stream, size)

    with trio.fail_after(6 * TIMEOUT):
        async with trio.open_nursery() as nursery:
            # No handshake first: the four data tasks and two explicit
            # handshakes all race for it.
            nursery.start_soon(send, client, to_server)
            nursery.start_soon(receive, client, "client")
            nursery.start_soon(send, server, to_client)
            nursery.start_soon(receive, server, "server")
            nursery.start_soon(client.do_handshake)
            nursery.start_soon(server.do_handshake)
    # Compare digests: a failed comparison of 4 MiB would print it all.
    assert digest(received["server"]) == digest(to_server)
    assert digest(received["client"]) == digest(to_client)
    await close_both(client, server)


@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_random_chunking_is_byte_exact(
    seed: int, client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    rng = random.Random(seed)
    client, server = await socket_tls_pair(client_policy, server_policy)
    payload = rng.randbytes(1024 * 1024 + rng.randrange(1000))
    send_rng = random.Random(rng.random())
    receive_rng = random.Random(rng.random())

    async def sender() -> None:
        pos = 0
        while pos < len(payload):
            size = send_rng.choice([1, 2, 100, 1000, RECORD - 1, RECORD + 1, 70000])
            await client.send_all(payload[pos : pos + size])
            pos += size
        await client.aclose()

    async def receiver() -> bytes:
        got = bytearray()
        while True:
            max_bytes = receive_rng.choice([1, 7, 512, RECORD, 50000, None])
            chunk = await server.receive_some(max_bytes)
            if not chunk:
                return bytes(got)
            assert max_bytes is None or len(chunk) <= max_bytes
            got += chunk

    with trio.fail_after(6 * TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            got = await receiver()
    assert got == payload
    await close_both(server)


async def test_one_byte_at_a_time_transport(
    version: ssl.TLSVersion, certs: CertKit, server_identity: tv.Identity
) -> None:
    client_transport, server_transport = memory_stream_pair()
    client, server = tls_pair(
        OneByteAtATime(client_transport),
        OneByteAtATime(server_transport),
        *pinned_to(version, certs, server_identity),
    )
    request = random.Random(5).randbytes(3000)
    response = random.Random(6).randbytes(20000)

    async def client_side() -> None:
        await client.do_handshake()
        await client.send_all(request)
        assert await receive_exactly(client, len(response)) == response
        assert await client.receive_some() == b""
        await client.aclose()

    async def server_side() -> None:
        await server.do_handshake()
        assert await receive_exactly(server, len(request)) == request
        await server.send_all(response)
        await server.aclose()

    with trio.fail_after(6 * TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client_side)
            nursery.start_soon(server_side)


async def test_session_tickets_wait_for_the_servers_first_write(
    certs: CertKit, server_identity: tv.Identity
) -> None:
    client, server = lockstep_tls_pair(*pinned_to(TLS13, certs, server_identity))
    server_done = trio.Event()

    async def client_side() -> None:
        await client.do_handshake()
        # Read nothing until the server has finished its handshake: a server
        # that sent its tickets now would block on a transport nobody reads.
        await server_done.wait()
        assert await client.receive_some() == b"first write"
        assert client.session is not None
        assert client.session.has_ticket

    async def server_side() -> None:
        await server.do_handshake()
        server_done.set()
        await server.send_all(b"first write")

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client_side)
            nursery.start_soon(server_side)
    await close_both(client, server)


async def test_tls_over_tls(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client_outer, server_outer = await socket_tls_pair(client_policy, server_policy)
    client = tv.TLSStream(client_outer, client_policy, server_hostname="localhost")
    server = tv.TLSStream(server_outer, server_policy, server_side=True)

    async def client_side() -> None:
        await client.send_all(b"hi")
        assert await receive_exactly(client, 3) == b"bye"
        await client.aclose()

    async def server_side() -> None:
        assert await receive_exactly(server, 2) == b"hi"
        await server.send_all(b"bye")
        assert await server.receive_some() == b""
        await server.aclose()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client_side)
            nursery.start_soon(server_side)
    assert client_outer.version() is not None
    assert client.peer.certificate is not None
    with pytest.raises(trio.ClosedResourceError):
        await client_outer.send_all(b"x")


# ------------------------------------------------------------ open_tls_stream


def open_fds() -> set[str]:
    """This process's open file descriptors (Linux)."""
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        pytest.skip("needs /proc/self/fd to count open sockets")
    return {fd.name for fd in fd_dir.iterdir()}


async def serve_one(
    listener: trio.SocketListener,
    policy: tv.ServerPolicy,
    outcome: dict[str, object],
) -> None:
    transport = await listener.accept()
    stream = tv.TLSStream(transport, policy, server_side=True)
    try:
        await stream.do_handshake()
        request = await stream.receive_some()
        await stream.send_all(b"echo " + request)
        outcome["server"] = "ok"
    except tv.TLSError as exc:
        outcome["server"] = exc
        # After its failure, the client must have closed its socket.
        outcome["after"] = await transport.receive_some()
    finally:
        await stream.aclose()


async def test_open_tls_stream_connects_and_handshakes(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    outcome: dict[str, object] = {}
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_one, listener, server_policy, outcome)
            stream = await tv.open_tls_stream(
                "127.0.0.1", port, policy=client_policy, server_hostname="localhost"
            )
            async with stream:
                assert isinstance(stream, tv.TLSStream)
                assert isinstance(stream.transport_stream, trio.SocketStream)
                assert stream.server_hostname == "localhost"
                assert stream.peer.certificate is not None
                await stream.send_all(b"ping")
                assert await receive_exactly(stream, 9) == b"echo ping"
    assert outcome["server"] == "ok"
    await listener.aclose()


async def test_open_tls_stream_failure_is_typed_and_closes_the_socket(
    certs: CertKit, client_policy: tv.ClientPolicy
) -> None:
    ident = certs.server("wrong_name")
    wrong_name = tv.ServerPolicy(
        identity=tv.Identity.from_pem(ident.cert_chain_pem, ident.key_pem)
    )
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    outcome: dict[str, object] = {}
    fds_before = open_fds()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_one, listener, wrong_name, outcome)
            with pytest.raises(tv.NameMismatch) as excinfo:
                await tv.open_tls_stream(
                    "127.0.0.1",
                    port,
                    policy=client_policy,
                    server_hostname="localhost",
                )
    assert isinstance(excinfo.value.__cause__, ssl.SSLCertVerificationError)
    assert excinfo.value.side == "client"
    assert isinstance(outcome["server"], tv.PeerRejectedCertificate)
    assert outcome["after"] == b""
    # The server has closed its end; the client's socket must be closed too
    # (the exception's traceback still holds the failed stream, so it has
    # not merely been garbage collected).
    assert not open_fds() - fds_before
    await listener.aclose()


async def test_server_keeps_the_client_hello_after_the_handshake(
    client_policy: tv.ClientPolicy, server_policy: tv.ServerPolicy
) -> None:
    client, server = await socket_tls_pair(client_policy, server_policy)
    assert server.client_hello is None
    await handshake_both(client, server)
    hello = server.client_hello
    assert hello is not None
    assert hello.server_name == "localhost"
    assert hello.offers_tls13
    assert hello.raw[0] == 0x16  # the records as they arrived
    assert hello.peer_address == client.transport_stream.socket.getsockname()
    # The same object on every access, equal to a fresh parse of its bytes.
    assert server.client_hello is hello
    reader = ClientHelloReader(peer_address=hello.peer_address)
    assert reader.feed(hello.raw) == hello
    assert client.client_hello is None
    await close_both(client, server)
