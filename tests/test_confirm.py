"""Confirming client authentication in TLS 1.3 (``confirm_client_auth``).

A TLS 1.3 server judges the client's certificate after the client's own
handshake has finished.  A client whose policy asks for it reads on inside
``do_handshake()`` until the server's verdict arrives: a session ticket,
application data (kept for the next ``receive_some()``), or an alert (raised
with ``surfaced_in="confirm"``), bounded by ``confirm_timeout``.  TLS 1.2 has
none of this: the verdict is part of the handshake.

Every connection here is real: loopback sockets, OpenSSL, CertKit
certificates.  A "silent" server finishes its handshake and then neither
writes nor closes until the client is done, so whatever the client sees came
from the handshake alone.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable

import pytest
import trio
from certs import CertKit, ClientKind
from loopback import Action, Outcome, run_pair

import trio_verify as tv
from trio_verify._policy import ConfirmClientAuth

TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3

Stream = tv.TLSStream[trio.SocketStream]

# Long enough that waiting for it would be obvious, short enough to keep a
# failing run quick: tests that must not wait bound the handshake far below it.
LONG_CONFIRM = 30.0
NO_WAIT = 2.0
SHORT_CONFIRM = 0.3


def server_policy(
    certs: CertKit,
    client_auth: tv.ClientAuth = tv.ClientAuth.REQUIRED,
    *,
    version: ssl.TLSVersion = TLS13,
    tickets: bool = True,
) -> tv.ServerPolicy:
    """A server presenting ``server("valid")``, trusting the kit's CA for clients."""
    ident = certs.server("valid")
    policy = tv.ServerPolicy(
        identity=tv.Identity.from_pem(ident.cert_chain_pem, ident.key_pem),
        client_auth=client_auth,
        client_trust=None if client_auth is tv.ClientAuth.NONE else certs.ca_pem,
        minimum_version=version,
        maximum_version=version,
    )
    if not tickets:
        # A fresh policy builds its own context, so this touches no other test.
        policy.context.num_tickets = 0
    return policy


def client_policy(
    certs: CertKit,
    kind: ClientKind | None = "valid",
    *,
    confirm: ConfirmClientAuth = "auto",
    confirm_timeout: float = LONG_CONFIRM,
) -> tv.ClientPolicy:
    """A client trusting the kit's CA and presenting ``client(kind)``, if any."""
    identity = None
    if kind is not None:
        ident = certs.client(kind)
        identity = tv.Identity.from_pem(ident.cert_chain_pem, ident.key_pem)
    return tv.ClientPolicy(
        trust=certs.ca_pem,
        identity=identity,
        confirm_client_auth=confirm,
        confirm_timeout=confirm_timeout,
    )


async def handshake(stream: Stream) -> float:
    """Run the client's handshake; return how long it took."""
    start = trio.current_time()
    await stream.do_handshake()
    return trio.current_time() - start


async def handshake_within(stream: Stream, seconds: float) -> float:
    with trio.fail_after(seconds):
        return await handshake(stream)


async def run_held(
    server: tv.ServerPolicy,
    client: tv.ClientPolicy,
    client_action: Callable[[Stream], Awaitable[object]],
    *,
    server_first: bytes = b"",
) -> tuple[Outcome, Outcome]:
    """Connect; the server handshakes, sends ``server_first`` and then holds.

    The server neither writes again nor closes until the client's action has
    finished, so the client sees nothing but the handshake and that data.
    """
    client_done = trio.Event()

    async def serve(stream: Stream) -> None:
        await stream.do_handshake()
        if server_first:
            await stream.send_all(server_first)
        await client_done.wait()

    async def act(stream: Stream) -> object:
        try:
            return await client_action(stream)
        finally:
            client_done.set()

    server_action: Action = serve
    return await run_pair(
        server, client, server_action=server_action, client_action=act
    )


def client_error(outcome: Outcome, cls: type[tv.TLSError]) -> tv.TLSError:
    err = outcome.expect(cls)
    assert isinstance(err, tv.TLSError)
    return err


# ---------------------------------------------------------------- rejections


async def test_rejected_certificate_is_raised_from_do_handshake(certs: CertKit) -> None:
    client_seen, _ = await run_held(
        server_policy(certs),
        client_policy(certs, "other_ca"),
        handshake,
    )
    err = client_error(client_seen, tv.PeerRejectedCertificate)
    assert err.surfaced_in == "confirm"
    assert err.phase is tv.Phase.CLIENT_CERTIFICATE
    assert err.alert_received is tv.Alert.UNKNOWN_CA
    assert err.side == "client"
    assert err.tls_version == "TLSv1.3"


async def test_missing_certificate_is_raised_from_do_handshake(certs: CertKit) -> None:
    client_seen, _ = await run_held(
        server_policy(certs),
        client_policy(certs, None, confirm="always"),
        handshake,
    )
    err = client_error(client_seen, tv.PeerRequiresCertificate)
    assert err.surfaced_in == "confirm"
    assert err.phase is tv.Phase.CLIENT_CERTIFICATE
    assert err.alert_received is tv.Alert.CERTIFICATE_REQUIRED


async def test_never_leaves_the_rejection_to_the_first_receive(certs: CertKit) -> None:
    steps: list[str] = []

    async def handshake_then_receive(stream: Stream) -> bytes:
        await stream.do_handshake()
        steps.append("handshake returned")
        return await stream.receive_some()

    client_seen, _ = await run_held(
        server_policy(certs),
        client_policy(certs, "other_ca", confirm="never"),
        handshake_then_receive,
    )
    assert steps == ["handshake returned"]
    err = client_error(client_seen, tv.PeerRejectedCertificate)
    assert err.surfaced_in == "receive"
    assert err.phase is tv.Phase.CLIENT_CERTIFICATE
    assert err.alert_received is tv.Alert.UNKNOWN_CA


# ---------------------------------------------------------------- acceptance


async def test_auto_is_confirmed_by_the_servers_session_ticket(certs: CertKit) -> None:
    async def confirmed(stream: Stream) -> bool:
        await handshake_within(stream, NO_WAIT)
        return bool(stream.session.has_ticket)

    client_seen, server_seen = await run_held(
        server_policy(certs), client_policy(certs, "valid"), confirmed
    )
    assert client_seen.ok, client_seen.error
    assert server_seen.ok, server_seen.error
    assert client_seen.value is True


async def test_always_is_confirmed_by_the_servers_session_ticket(
    certs: CertKit,
) -> None:
    async def confirmed(stream: Stream) -> bool:
        await handshake_within(stream, NO_WAIT)
        return bool(stream.session.has_ticket)

    client_seen, _ = await run_held(
        server_policy(certs, tv.ClientAuth.OPTIONAL),
        client_policy(certs, None, confirm="always"),
        confirmed,
    )
    assert client_seen.ok, client_seen.error
    assert client_seen.value is True


# ------------------------------------------------------- data during confirm


async def test_data_sent_right_after_the_handshake_is_not_lost(certs: CertKit) -> None:
    async def handshake_then_receive(stream: Stream) -> tuple[bool, bytes]:
        await handshake_within(stream, NO_WAIT)
        # Tickets are off: only the data can have confirmed the handshake.
        had_ticket = bool(stream.session.has_ticket)
        return had_ticket, await stream.receive_some()

    client_seen, _ = await run_held(
        server_policy(certs, tickets=False),
        client_policy(certs, "valid"),
        handshake_then_receive,
        server_first=b"first",
    )
    assert client_seen.ok, client_seen.error
    assert client_seen.value == (False, b"first")


async def test_data_read_while_confirming_respects_max_bytes(certs: CertKit) -> None:
    async def receive_in_pieces(stream: Stream) -> list[bytes]:
        await handshake_within(stream, NO_WAIT)
        return [await stream.receive_some(2), await stream.receive_some(2)]

    client_seen, _ = await run_held(
        server_policy(certs, tickets=False),
        client_policy(certs, "valid"),
        receive_in_pieces,
        server_first=b"first",
    )
    assert client_seen.ok, client_seen.error
    assert client_seen.value == [b"fi", b"rs"]


async def test_message_spanning_many_records_is_not_lost(certs: CertKit) -> None:
    # Six full 16 KiB records and a partial one: more than one read's worth.
    message = bytes(range(256)) * 400

    async def receive_all(stream: Stream) -> bytes:
        await handshake_within(stream, NO_WAIT)
        received = bytearray()
        with trio.fail_after(5):
            while len(received) < len(message):
                chunk = await stream.receive_some()
                assert chunk, "stream ended early"
                received += chunk
        return bytes(received)

    client_seen, _ = await run_held(
        server_policy(certs, tickets=False),
        client_policy(certs, "valid"),
        receive_all,
        server_first=message,
    )
    assert client_seen.ok, client_seen.error
    assert client_seen.value == message


async def test_clean_close_during_confirmation_ends_it_promptly(
    certs: CertKit,
) -> None:
    """A server that closes cleanly (close_notify) right after its handshake.

    Its close is no refusal, and no verdict can follow it: the confirmation
    ends at once, and the next receive reports the end of the stream.
    """

    async def close_at_once(stream: Stream) -> None:
        await stream.do_handshake()
        await stream.aclose()

    async def handshake_then_receive(stream: Stream) -> bytes:
        await handshake_within(stream, NO_WAIT)
        with trio.fail_after(NO_WAIT):
            return await stream.receive_some()

    client_seen, _ = await run_pair(
        server_policy(certs, tickets=False),
        client_policy(certs, "valid"),
        server_action=close_at_once,
        client_action=handshake_then_receive,
    )
    assert client_seen.ok, client_seen.error
    assert client_seen.value == b""


# ------------------------------------------------------------------ timeouts


async def test_server_without_tickets_ends_in_client_auth_not_confirmed(
    certs: CertKit,
) -> None:
    elapsed: list[float] = []

    async def timed_handshake(stream: Stream) -> None:
        start = trio.current_time()
        try:
            with trio.fail_after(5):
                await stream.do_handshake()
        finally:
            elapsed.append(trio.current_time() - start)

    client_seen, server_seen = await run_held(
        server_policy(certs, tickets=False),
        client_policy(certs, "valid", confirm_timeout=SHORT_CONFIRM),
        timed_handshake,
    )
    err = client_error(client_seen, tv.ClientAuthNotConfirmed)
    assert err.surfaced_in == "confirm"
    assert err.phase is tv.Phase.CLIENT_CERTIFICATE
    assert err.side == "client"
    assert err.alert_sent is None
    assert err.alert_received is None
    assert SHORT_CONFIRM <= elapsed[0] < 5
    # The server accepted the certificate; it just never said so.
    assert server_seen.ok, server_seen.error


async def test_client_auth_not_confirmed_is_a_broken_resource_error(
    certs: CertKit,
) -> None:
    client_seen, _ = await run_held(
        server_policy(certs, tickets=False),
        client_policy(certs, "valid", confirm_timeout=SHORT_CONFIRM),
        handshake,
    )
    err = client_seen.expect(tv.ClientAuthNotConfirmed)
    assert isinstance(err, trio.BrokenResourceError)


async def test_stream_is_broken_after_client_auth_not_confirmed(
    certs: CertKit,
) -> None:
    async def handshake_then_send(stream: Stream) -> None:
        with pytest.raises(tv.ClientAuthNotConfirmed):
            await stream.do_handshake()
        await stream.send_all(b"anyway")

    client_seen, _ = await run_held(
        server_policy(certs, tickets=False),
        client_policy(certs, "valid", confirm_timeout=SHORT_CONFIRM),
        handshake_then_send,
    )
    client_seen.expect(trio.BrokenResourceError)


# ------------------------------------------------------- when not to wait


async def test_auto_does_not_wait_when_no_certificate_was_asked_for(
    certs: CertKit,
) -> None:
    """A ClientAuth.NONE server holds its tickets until it first writes.

    The client has a certificate, but was never asked for it: there is no
    verdict to wait for.
    """
    client_seen, server_seen = await run_held(
        server_policy(certs, tv.ClientAuth.NONE),
        client_policy(certs, "valid"),
        lambda stream: handshake_within(stream, NO_WAIT),
    )
    assert client_seen.ok, client_seen.error
    assert server_seen.ok, server_seen.error


async def test_always_waits_even_when_no_certificate_was_asked_for(
    certs: CertKit,
) -> None:
    """``"always"`` waits on every TLS 1.3 connection.

    A ClientAuth.NONE server holds its session tickets until its first write,
    so against a silent one the wait can only time out.
    """
    client_seen, _ = await run_held(
        server_policy(certs, tv.ClientAuth.NONE),
        client_policy(certs, "valid", confirm="always", confirm_timeout=SHORT_CONFIRM),
        lambda stream: handshake_within(stream, 5),
    )
    err = client_error(client_seen, tv.ClientAuthNotConfirmed)
    assert err.surfaced_in == "confirm"


async def test_always_is_confirmed_by_the_first_write_of_a_server_holding_tickets(
    certs: CertKit,
) -> None:
    async def handshake_then_receive(stream: Stream) -> bytes:
        await handshake_within(stream, NO_WAIT)
        return await stream.receive_some()

    client_seen, _ = await run_held(
        server_policy(certs, tv.ClientAuth.NONE),
        client_policy(certs, None, confirm="always"),
        handshake_then_receive,
        server_first=b"hello",
    )
    assert client_seen.ok, client_seen.error
    assert client_seen.value == b"hello"


# ------------------------------------------------------------------- TLS 1.2


async def test_tls12_rejection_surfaces_in_the_handshake(certs: CertKit) -> None:
    client_seen, _ = await run_held(
        server_policy(certs, version=TLS12),
        client_policy(certs, "other_ca"),
        handshake,
    )
    err = client_error(client_seen, tv.PeerRejectedCertificate)
    assert err.surfaced_in == "handshake"
    assert err.phase is tv.Phase.CLIENT_CERTIFICATE
    assert err.alert_received is tv.Alert.UNKNOWN_CA


@pytest.mark.parametrize("confirm", ["auto", "always"])
async def test_tls12_never_waits_for_a_verdict(
    certs: CertKit, confirm: ConfirmClientAuth
) -> None:
    """TLS 1.2 delivers the verdict inside the handshake: nothing to wait for.

    The server sends no session tickets and nothing after its handshake.
    """
    client_seen, server_seen = await run_held(
        server_policy(certs, version=TLS12, tickets=False),
        client_policy(certs, "valid", confirm=confirm),
        lambda stream: handshake_within(stream, NO_WAIT),
    )
    assert client_seen.ok, client_seen.error
    assert server_seen.ok, server_seen.error
