"""TLSStream over a plain trio.SocketStream reads and writes its socket directly.

That shortcut must be invisible: every test here runs the same scenario over
a real ``trio.SocketStream`` (the direct path) and over the same socket
behind a forwarding wrapper (the generic path through ``send_all`` and
``receive_some``), and expects the same outcome from both.
"""

from __future__ import annotations

import socket
import ssl
import struct
from typing import Any

import pytest
import trio
import trio.testing
from certs import CertKit
from loopback import socket_pair
from trio.testing import assert_checkpoints, check_two_way_stream

import trio_verify as tv

TIMEOUT = 10.0


class Forwarding(trio.abc.HalfCloseableStream):
    """A SocketStream behind a wrapper, so TLSStream takes its generic path."""

    def __init__(self, inner: trio.SocketStream) -> None:
        self.inner = inner
        self.socket = inner.socket

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture(params=["socket", "forwarding"])
def path(request: pytest.FixtureRequest) -> str:
    result: str = request.param
    return result


@pytest.fixture(scope="module")
def policies(certs: CertKit) -> tuple[tv.ClientPolicy, tv.ServerPolicy]:
    ident = certs.server("valid")
    return (
        tv.ClientPolicy(trust=certs.ca_pem),
        tv.ServerPolicy(
            identity=tv.Identity.from_pem(ident.cert_chain_pem, ident.key_pem)
        ),
    )


async def tls_pair(
    path: str,
    policies: tuple[tv.ClientPolicy, tv.ServerPolicy],
    *,
    handshake: bool = True,
) -> tuple[tv.TLSStream[Any], tv.TLSStream[Any], trio.SocketStream, trio.SocketStream]:
    """(client, server, client socket stream, server socket stream)."""
    client_sock, server_sock = await socket_pair()
    wrap: Any = (lambda s: s) if path == "socket" else Forwarding
    client_policy, server_policy = policies
    client = tv.TLSStream(wrap(client_sock), client_policy, server_hostname="localhost")
    server = tv.TLSStream(wrap(server_sock), server_policy, server_side=True)
    if handshake:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.do_handshake)
            nursery.start_soon(server.do_handshake)
    return client, server, client_sock, server_sock


def reset(sock: trio.SocketStream) -> None:
    """Close ``sock`` so that the peer gets a TCP reset."""
    sock.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.socket.close()


async def test_passes_trio_generic_two_way_stream_checks_over_sockets(
    path: str, policies: tuple[tv.ClientPolicy, tv.ServerPolicy]
) -> None:
    async def stream_maker() -> tuple[tv.TLSStream[Any], tv.TLSStream[Any]]:
        client, server, _, _ = await tls_pair(path, policies, handshake=False)
        return client, server

    with trio.fail_after(4 * TIMEOUT):
        await check_two_way_stream(stream_maker, None)


async def test_bulk_both_ways_arrives_exactly(
    path: str, policies: tuple[tv.ClientPolicy, tv.ServerPolicy]
) -> None:
    # Several MiB each way at once: sends that the kernel takes only in part,
    # waits for writability, reads of whole and partial records.
    client, server, _, _ = await tls_pair(path, policies)
    payload = bytes(range(256)) * (4 * 4096 + 7)

    async def send(stream: tv.TLSStream[Any]) -> None:
        await stream.send_all(payload)

    async def receive(stream: tv.TLSStream[Any], into: bytearray) -> None:
        while len(into) < len(payload):
            chunk = await stream.receive_some(65536)
            assert chunk
            into += chunk

    got_by_server, got_by_client = bytearray(), bytearray()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send, client)
            nursery.start_soon(send, server)
            nursery.start_soon(receive, server, got_by_server)
            nursery.start_soon(receive, client, got_by_client)
    assert got_by_server == payload
    assert got_by_client == payload
    await client.aclose()
    await server.aclose()


async def test_receive_and_send_are_one_checkpoint_each(
    path: str, policies: tuple[tv.ClientPolicy, tv.ServerPolicy]
) -> None:
    client, server, _, _ = await tls_pair(path, policies)
    with assert_checkpoints():
        await client.send_all(b"x")
    await trio.testing.wait_all_tasks_blocked()
    with assert_checkpoints():
        assert await server.receive_some(10) == b"x"
    await client.aclose()
    await server.aclose()


async def test_cancelled_receive_loses_nothing(
    path: str, policies: tuple[tv.ClientPolicy, tv.ServerPolicy]
) -> None:
    client, server, _, _ = await tls_pair(path, policies)
    with trio.move_on_after(0.05) as scope:
        await server.receive_some(10)
    assert scope.cancelled_caught
    await client.send_all(b"after")
    with trio.fail_after(TIMEOUT):
        assert await server.receive_some(10) == b"after"
    await client.aclose()
    await server.aclose()


async def test_cancelled_blocked_send_breaks_the_stream(
    path: str, policies: tuple[tv.ClientPolicy, tv.ServerPolicy]
) -> None:
    client, server, _, _ = await tls_pair(path, policies)
    with trio.move_on_after(0.2) as scope:
        await client.send_all(b"x" * (64 << 20))  # nobody reads
    assert scope.cancelled_caught
    with pytest.raises(trio.BrokenResourceError):
        await client.send_all(b"more")
    await client.aclose()
    await server.aclose()


async def test_peer_reset_while_receiving_is_broken_resource(
    path: str, policies: tuple[tv.ClientPolicy, tv.ServerPolicy]
) -> None:
    client, _, _, server_sock = await tls_pair(path, policies)

    async def reset_soon() -> None:
        await trio.testing.wait_all_tasks_blocked()
        reset(server_sock)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reset_soon)
            with pytest.raises(trio.BrokenResourceError) as info:
                await client.receive_some(10)
    assert isinstance(info.value.__cause__, ConnectionResetError)
    assert not isinstance(info.value, tv.TLSError)
    await client.aclose()


async def test_send_to_a_reset_peer_is_broken_resource(
    path: str, policies: tuple[tv.ClientPolicy, tv.ServerPolicy]
) -> None:
    client, _, _, server_sock = await tls_pair(path, policies)
    reset(server_sock)
    await trio.sleep(0.05)
    with trio.fail_after(TIMEOUT), pytest.raises(trio.BrokenResourceError) as info:
        for _ in range(100):
            await client.send_all(b"x" * 1000)
    assert isinstance(info.value.__cause__, OSError)
    await client.aclose()


async def test_transport_closed_by_another_task_while_receiving(
    path: str, policies: tuple[tv.ClientPolicy, tv.ServerPolicy]
) -> None:
    client, server, client_sock, _ = await tls_pair(path, policies)

    async def close_soon() -> None:
        await trio.testing.wait_all_tasks_blocked()
        await client_sock.aclose()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(close_soon)
            with pytest.raises(trio.ClosedResourceError):
                await client.receive_some(10)
    with pytest.raises(trio.BrokenResourceError):
        await client.send_all(b"x")
    await client.aclose()
    await server.aclose()


async def test_transport_closed_before_a_send(
    path: str, policies: tuple[tv.ClientPolicy, tv.ServerPolicy]
) -> None:
    client, server, client_sock, _ = await tls_pair(path, policies)
    await client_sock.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await client.send_all(b"x")
    await client.aclose()
    await server.aclose()


async def test_send_after_the_transport_sent_eof_is_closed_resource(
    path: str, policies: tuple[tv.ClientPolicy, tv.ServerPolicy]
) -> None:
    client, server, client_sock, _ = await tls_pair(path, policies)
    await client_sock.send_eof()
    with pytest.raises(trio.ClosedResourceError, match="EOF"):
        await client.send_all(b"x")
    await client.aclose()
    await server.aclose()


async def test_peer_eof_without_close_notify_is_truncation(
    path: str, policies: tuple[tv.ClientPolicy, tv.ServerPolicy]
) -> None:
    client, _, _, server_sock = await tls_pair(path, policies)
    await server_sock.aclose()
    with trio.fail_after(TIMEOUT), pytest.raises(tv.TruncatedStream):
        await client.receive_some(10)
    await client.aclose()


async def test_unwrap_hands_back_the_socket_with_the_bytes_after_tls(
    path: str, policies: tuple[tv.ClientPolicy, tv.ServerPolicy]
) -> None:
    client, server, client_sock, server_sock = await tls_pair(path, policies)

    async def server_side() -> None:
        transport, trailing = await server.unwrap()
        received = bytearray(trailing)
        while len(received) < 5:
            received += await transport.receive_some(10)
        assert received == b"plain"
        await transport.send_all(b"reply")

    async def client_side() -> None:
        transport, trailing = await client.unwrap()
        assert trailing == b""
        await transport.send_all(b"plain")
        got = bytearray()
        while len(got) < 5:
            got += await transport.receive_some(10)
        assert got == b"reply"

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server_side)
            nursery.start_soon(client_side)
    await client_sock.aclose()
    await server_sock.aclose()


def test_only_an_exact_trio_socket_stream_takes_the_direct_path(
    policies: tuple[tv.ClientPolicy, tv.ServerPolicy],
) -> None:
    # The shortcut must not apply to anything whose send/receive might mean
    # something else; this checks the choice itself, the tests above that
    # the two paths behave alike.
    a, b = socket.socketpair()
    try:
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(a))
        direct = tv.TLSStream(stream, policies[0], server_hostname="localhost")
        wrapped = tv.TLSStream(Forwarding(stream), policies[0], server_hostname="x")
        memory = tv.TLSStream(
            trio.testing.memory_stream_pair()[0], policies[0], server_hostname="x"
        )
        assert direct._socket is a
        assert wrapped._socket is None
        assert memory._socket is None
    finally:
        a.close()
        b.close()


async def test_plain_ssl_context_peer_interoperates(
    path: str, certs: CertKit, policies: tuple[tv.ClientPolicy, tv.ServerPolicy]
) -> None:
    # trio.SSLStream on the other end: the direct path speaks ordinary TLS.
    client_sock, server_sock = await socket_pair()
    wrap: Any = (lambda s: s) if path == "socket" else Forwarding
    client = tv.TLSStream(wrap(client_sock), policies[0], server_hostname="localhost")
    server = trio.SSLStream(
        server_sock,
        certs.server_context("valid", versions=(ssl.TLSVersion.TLSv1_3,) * 2),
        server_side=True,
    )

    async def echo() -> None:
        data = await server.receive_some(100)
        await server.send_all(data[::-1])

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo)
            await client.send_all(b"hello")
            assert await client.receive_some(100) == b"olleh"
    await client.aclose()
    await server.aclose()


class Capturing(Forwarding):
    """Forwards until ``capture`` is set, then keeps what would be sent."""

    def __init__(self, inner: trio.SocketStream) -> None:
        super().__init__(inner)
        self.capture = False
        self.captured = bytearray()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.capture:
            self.captured += data
            await trio.lowlevel.checkpoint()
        else:
            await self.inner.send_all(data)


@pytest.mark.parametrize("ending", ["eof", "reset"])
async def test_whole_records_before_a_cut_record_are_delivered_first(
    path: str, policies: tuple[tv.ClientPolicy, tv.ServerPolicy], ending: str
) -> None:
    # The peer's last write is cut inside its final record and the
    # connection ends there.  Whatever the reader's path, the complete
    # records come out first and the end is reported by the next call: a
    # truncation for an EOF, the transport's error for a reset.
    client_sock, server_sock = await socket_pair()
    wrap: Any = (lambda s: s) if path == "socket" else Forwarding
    client = tv.TLSStream(wrap(client_sock), policies[0], server_hostname="localhost")
    capturing = Capturing(server_sock)
    server = tv.TLSStream(capturing, policies[1], server_side=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.do_handshake)
        nursery.start_soon(server.do_handshake)
    # Four records whose bytes on the wire, cut 10 bytes short, are exactly
    # one full 64 KiB socket read: the reader decrypts three, and meets the
    # end while it looks for the rest of the fourth.
    payload = bytes(range(256)) * 255 + bytes(range(178))
    await server.send_all(b"hi")  # the server's session tickets go with it
    assert await client.receive_some(10) == b"hi"
    capturing.capture = True
    await server.send_all(payload)
    wire = bytes(capturing.captured)
    assert len(wire) == 65536 + 10  # 4 records of 22 bytes' overhead each
    await server_sock.send_all(wire[:-10])
    if ending == "reset":
        reset(server_sock)
    else:
        await server_sock.aclose()
    await trio.sleep(0.05)  # everything, the end included, has arrived

    received = bytearray()
    with trio.fail_after(TIMEOUT):
        while len(received) < 3 * 16384:
            chunk = await client.receive_some(65536)
            assert chunk
            received += chunk
        assert received == payload[: 3 * 16384]
        if ending == "reset":
            with pytest.raises(trio.BrokenResourceError) as info:
                await client.receive_some(65536)
            assert isinstance(info.value.__cause__, ConnectionResetError)
        else:
            with pytest.raises(tv.TruncatedStream):
                await client.receive_some(65536)
    await client.aclose()


# Written while the reader waits, into small socket buffers, so that the
# kernel takes a write only in part: one send_all of many records (handed to
# the kernel as a list), or many record-sized writes (one at a time).
WRITES = {
    "one write of 40 kB": [bytes(range(256)) * 156 + b"end"],
    "one write of 200 kB": [bytes(range(256)) * 781 + b"end"],
    "40 writes of 10 kB": [bytes([i]) * 10_000 for i in range(40)],
}


@pytest.mark.parametrize("writes", list(WRITES))
async def test_writes_the_kernel_takes_in_part_arrive_exactly(
    path: str, policies: tuple[tv.ClientPolicy, tv.ServerPolicy], writes: str
) -> None:
    client, server, client_sock, server_sock = await tls_pair(path, policies)
    client_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    pieces = WRITES[writes]
    data = b"".join(pieces)
    got = bytearray()

    async def read_all() -> None:
        await trio.sleep(0.05)  # let the writer fill the socket first
        while len(got) < len(data):
            chunk = await server.receive_some(65536)
            assert chunk
            got.extend(chunk)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            for piece in pieces:
                await client.send_all(piece)
    assert got == data
    await client.aclose()
    await server.aclose()
