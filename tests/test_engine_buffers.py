"""The engine keeps OpenSSL's memory BIOs small, and loses nothing doing so.

A memory BIO keeps the largest size it ever reached for as long as the
connection lives, so the engine never lets more than one record go into the
outgoing BIO, nor much more than 32 KiB into the incoming one, once the
handshake is done.  These tests watch the BIOs' contents around every step, and check
that data, ends of stream and trailing bytes come out exactly as before.
"""

from __future__ import annotations

import ssl

import pytest
from certs import CertKit
from hypothesis import given, settings
from hypothesis import strategies as st

import trio_verify as tv
from trio_verify._engine import TLSEngine

TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
RECORD = 16384
# The incoming BIO holds at most a 32 KiB delivery, or one whole record (of
# up to 16,645 bytes) plus the 16 KiB piece that completed it.
FEED = 16645 + 16384
# The most a record adds on the wire in these configurations (TLS 1.2
# AES-GCM: header 5, explicit nonce 8, tag 16).
OVERHEAD = 29


@pytest.fixture(scope="module", params=[TLS12, TLS13], ids=["TLSv1.2", "TLSv1.3"])
def contexts(
    request: pytest.FixtureRequest, certs: CertKit
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ident = certs.server("valid")
    version: ssl.TLSVersion = request.param
    client = tv.ClientPolicy(
        trust=certs.ca_pem, minimum_version=version, maximum_version=version
    )
    server = tv.ServerPolicy(
        identity=tv.Identity.from_pem(ident.cert_chain_pem, ident.key_pem),
        minimum_version=version,
        maximum_version=version,
    )
    return client.context, server.context_for(offers_tls13=version is TLS13)


def handshaken(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> tuple[TLSEngine, TLSEngine]:
    client = TLSEngine(contexts[0], server_side=False, server_hostname="localhost")
    server = TLSEngine(contexts[1], server_side=True)
    for _ in range(10):
        client.do_handshake()
        server.do_handshake()
        if client.has_data_to_send:
            server.receive_data(client.data_to_send())
        if server.has_data_to_send:
            client.receive_data(server.data_to_send())
    assert client.handshake_complete
    assert server.handshake_complete
    assert client.read(65536) is None  # takes in TLS 1.3 tickets, if any
    return client, server


def payload(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


def test_a_large_write_never_fills_the_outgoing_bio_past_one_record(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    client, server = handshaken(contexts)
    data = payload(200_000)
    assert client.write(data) == len(data)
    # Encrypted a record at a time and moved out at once: nothing waits in
    # the BIO, and the wire holds one full record per 16 KiB.
    assert client._outgoing.pending == 0
    wire = client.data_to_send()
    records = -(-len(data) // RECORD)
    assert len(data) < len(wire) <= len(data) + records * OVERHEAD
    server.receive_data(wire)
    got = bytearray()
    while len(got) < len(data):
        chunk = server.read(65536)
        assert chunk
        got += chunk
    assert got == data


def test_a_large_delivery_reaches_openssl_in_bounded_pieces(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    client, server = handshaken(contexts)
    data = payload(300_000)
    client.write(data)
    wire = client.data_to_send()
    server.receive_data(wire)
    assert server._incoming.pending <= FEED
    got = bytearray()
    while len(got) < len(data):
        chunk = server.read(1000)  # small reads show every step
        assert chunk
        assert server._incoming.pending <= FEED
        got += chunk
    assert got == data
    assert server.read(1000) is None
    assert not server.has_buffered_input


def test_small_deliveries_go_straight_to_openssl(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    client, server = handshaken(contexts)
    client.write(b"hello")
    wire = client.data_to_send()
    server.receive_data(wire)
    assert server._incoming.pending == len(wire)
    assert server.read(100) == b"hello"


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 70_000), min_size=1, max_size=6),
    cuts=st.lists(st.integers(1, 90_000), min_size=1, max_size=8),
    reads=st.integers(1, 70_000),
)
def test_any_writes_cut_anyhow_arrive_exactly(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
    sizes: list[int],
    cuts: list[int],
    reads: int,
) -> None:
    client, server = handshaken(contexts)
    data = payload(sum(sizes))
    pos = 0
    for size in sizes:
        assert client.write(data[pos : pos + size]) == size
        pos += size
    client.start_close()
    wire = client.data_to_send()
    got = bytearray()
    ended = False
    pos = 0
    index = 0
    while not ended:
        if pos < len(wire):
            step = cuts[index % len(cuts)]
            index += 1
            server.receive_data(wire[pos : pos + step])
            pos += step
        while True:
            chunk = server.read(reads)
            if chunk is None:
                assert pos < len(wire), "everything arrived, yet no end of stream"
                break
            if chunk == b"":
                ended = True
                break
            got += chunk
        assert server._incoming.pending <= FEED
    assert got == data


def test_an_end_of_file_behind_a_large_delivery_comes_after_its_data(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    client, server = handshaken(contexts)
    data = payload(100_000)
    client.write(data)
    server.receive_data(client.data_to_send())
    server.receive_eof()  # no close_notify: a truncation, after the data
    got = bytearray()
    while len(got) < len(data):
        chunk = server.read(65536)
        assert chunk
        got += chunk
    assert got == data
    with pytest.raises(tv.TruncatedStream):
        server.read(65536)


def test_unwrap_after_a_large_delivery_hands_back_the_exact_trailing_bytes(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    client, server = handshaken(contexts)
    data = payload(100_000)
    trailing = b"\x16\x03\x03 not TLS any more " * 3000  # 69 KB, looks like a record
    client.write(data)
    client.start_close()
    server.receive_data(client.data_to_send() + trailing)
    got = bytearray()
    while True:
        chunk = server.read(65536)
        assert chunk is not None
        if not chunk:
            break
        got += chunk
    assert got == data
    assert server.unwrap()
    assert server.unused_data() == trailing


@settings(max_examples=30, deadline=None)
@given(
    good=st.integers(0, 120_000),
    junk=st.binary(min_size=1, max_size=200),
    junk_repeat=st.integers(1, 600),
    flip=st.integers(0, 200_000),
    eof=st.booleans(),
)
def test_hostile_large_deliveries_give_data_then_a_typed_error(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
    good: int,
    junk: bytes,
    junk_repeat: int,
    flip: int,
    eof: bool,
) -> None:
    # Valid records, perhaps with one bit flipped, then garbage: a delivery
    # large enough to be handed over in pieces.  Reading must give a prefix
    # of the data and then end, with a TLSError or an end of stream, and
    # never loop or raise anything else.
    client, server = handshaken(contexts)
    data = payload(good)
    if good:
        client.write(data)
    wire = bytearray(client.data_to_send() + junk * junk_repeat)
    wire[flip % len(wire)] ^= 0x40
    server.receive_data(bytes(wire))
    if eof:
        server.receive_eof()
    got = bytearray()
    for _ in range(len(wire) // 1000 + 100):
        try:
            chunk = server.read(65536)
        except tv.TLSError:
            break
        if not chunk:  # None (more needed) or b"" (the end)
            break
        got += chunk
    else:
        pytest.fail("reading never came to an end")
    assert data.startswith(bytes(got))
    assert server._incoming.pending <= FEED
