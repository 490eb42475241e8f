"""trio_verify's own checks once OpenSSL's handshake has finished.

``CONNECTION_POLICY`` covers what the ``ssl`` module has no hook for inside
the handshake: a client's SPKI pins and a server's ``authorize(peer)``.  By
then OpenSSL has finished its handshake and cannot send a chosen alert, so
the refused peer sees the connection end without one.

Pinned *certificates* are different: they are trust anchors, so a mismatch
is an ordinary verification failure inside the handshake.  They are here
because they are the other half of pinning.

Every connection is real: loopback sockets, OpenSSL, CertKit certificates,
on TLS 1.2 and TLS 1.3.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

import pytest
import trio
from certs import CLIENT_URI, CertKit, ClientKind, ServerKind
from certs import Identity as KitIdentity
from loopback import Outcome, run_pair

import trio_verify as tv
from trio_verify._certs import CertificateInfo, load_pem_chain
from trio_verify._policy import ConfirmClientAuth

TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3

Stream = tv.TLSStream[trio.SocketStream]


@pytest.fixture(params=[TLS12, TLS13], ids=["TLSv1.2", "TLSv1.3"])
def version(request: pytest.FixtureRequest) -> ssl.TLSVersion:
    result: ssl.TLSVersion = request.param
    return result


def identity(ident: KitIdentity) -> tv.Identity:
    return tv.Identity.from_pem(ident.cert_chain_pem, ident.key_pem)


def ca_certificate(pem: bytes) -> CertificateInfo:
    return load_pem_chain(pem)[0]


def plain_server(
    certs: CertKit, version: ssl.TLSVersion, kind: ServerKind = "valid"
) -> tv.ServerPolicy:
    """A server presenting ``server(kind)`` and asking for no client certificate."""
    return tv.ServerPolicy(
        identity=identity(certs.server(kind)),
        minimum_version=version,
        maximum_version=version,
    )


def mtls_server(
    certs: CertKit,
    version: ssl.TLSVersion,
    *,
    authorize: Callable[[tv.PeerInfo], bool] | None = None,
) -> tv.ServerPolicy:
    """A server requiring a client certificate from the kit's CA."""
    return tv.ServerPolicy(
        identity=identity(certs.server("valid")),
        client_auth=tv.ClientAuth.REQUIRED,
        client_trust=certs.ca_pem,
        authorize=authorize,
        minimum_version=version,
        maximum_version=version,
    )


def mtls_client(
    certs: CertKit,
    kind: ClientKind = "valid",
    *,
    confirm_client_auth: ConfirmClientAuth = "auto",
) -> tv.ClientPolicy:
    """A client trusting the kit's CA and presenting ``client(kind)``."""
    return tv.ClientPolicy(
        trust=certs.ca_pem,
        identity=identity(certs.client(kind)),
        confirm_client_auth=confirm_client_auth,
    )


async def handshake(stream: Stream) -> None:
    await stream.do_handshake()


async def handshake_then_receive(stream: Stream) -> bytes:
    await stream.do_handshake()
    with trio.fail_after(5):
        return await stream.receive_some()


def assert_connected(client_seen: Outcome, server_seen: Outcome) -> None:
    """Both handshakes succeeded and the server's b"ping" arrived."""
    assert client_seen.ok, f"client failed: {client_seen.error!r}"
    assert server_seen.ok, f"server failed: {server_seen.error!r}"
    assert client_seen.value == b"ping"


def error_of(outcome: Outcome, cls: type[tv.TLSError]) -> tv.TLSError:
    err = outcome.expect(cls)
    assert isinstance(err, tv.TLSError)
    return err


# ------------------------------------------------------------ SPKI pins


async def test_spki_pin_of_the_server_leaf_is_accepted(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    pin = certs.server("valid").info.spki_pin
    client_seen, server_seen = await run_pair(
        plain_server(certs, version),
        tv.ClientPolicy(trust=certs.ca_pem, spki_pins={pin}),
    )
    assert_connected(client_seen, server_seen)


async def test_spki_pin_of_the_servers_ca_is_accepted(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    pin = ca_certificate(certs.ca_pem).spki_pin
    client_seen, server_seen = await run_pair(
        plain_server(certs, version),
        tv.ClientPolicy(trust=certs.ca_pem, spki_pins={pin}),
    )
    assert_connected(client_seen, server_seen)


async def test_spki_pin_in_curl_spelling_is_accepted(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    pin = "sha256//" + certs.server("valid").info.spki_pin
    client_seen, server_seen = await run_pair(
        plain_server(certs, version),
        tv.ClientPolicy(trust=certs.ca_pem, spki_pins={pin}),
    )
    assert_connected(client_seen, server_seen)


async def test_spki_pin_mismatch_is_a_connection_policy_error(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    unrelated = ca_certificate(certs.other_ca_pem).spki_pin
    client_seen, _ = await run_pair(
        plain_server(certs, version),
        tv.ClientPolicy(trust=certs.ca_pem, spki_pins={unrelated}),
        client_action=handshake,
        server_action=handshake_then_receive,
    )
    err = error_of(client_seen, tv.PinMismatch)
    assert err.phase is tv.Phase.CONNECTION_POLICY
    assert err.side == "client"
    assert err.surfaced_in == "handshake"
    assert err.verify_code is None
    # OpenSSL's handshake is over: no alert can say why.
    assert err.alert_sent is None
    assert certs.server("valid").info.spki_pin in str(err)


async def test_spki_pin_mismatch_error_carries_the_servers_chain(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    unrelated = ca_certificate(certs.other_ca_pem).spki_pin
    client_seen, _ = await run_pair(
        plain_server(certs, version),
        tv.ClientPolicy(trust=certs.ca_pem, spki_pins={unrelated}),
        client_action=handshake,
        server_action=handshake_then_receive,
    )
    err = error_of(client_seen, tv.PinMismatch)
    assert err.peer_chain
    assert err.peer_chain[0] == certs.server("valid").info


async def test_spki_pin_mismatch_leaves_the_server_a_truncated_stream(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    """The server's handshake succeeded; then the client went away, no alert."""
    unrelated = ca_certificate(certs.other_ca_pem).spki_pin
    _, server_seen = await run_pair(
        plain_server(certs, version),
        tv.ClientPolicy(trust=certs.ca_pem, spki_pins={unrelated}),
        client_action=handshake,
        server_action=handshake_then_receive,
    )
    err = error_of(server_seen, tv.TruncatedStream)
    assert err.side == "server"
    assert err.alert_received is None


# -------------------------------------------------- pinned certificates


async def test_pinned_leaf_is_a_trust_anchor(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    """A leaf from an untrusted CA is accepted when it is itself pinned."""
    client_seen, server_seen = await run_pair(
        plain_server(certs, version, "other_ca"),
        tv.ClientPolicy(pinned=[certs.server("other_ca").info]),
    )
    assert_connected(client_seen, server_seen)


async def test_pinned_self_signed_leaf_is_a_trust_anchor(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    client_seen, server_seen = await run_pair(
        plain_server(certs, version, "self_signed"),
        tv.ClientPolicy(pinned=[certs.server("self_signed").info]),
    )
    assert_connected(client_seen, server_seen)


async def test_server_with_another_leaf_than_the_pinned_one_is_unknown_issuer(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    client_seen, _ = await run_pair(
        plain_server(certs, version, "other_ca"),
        tv.ClientPolicy(pinned=[certs.server("valid").info]),
        client_action=handshake,
        server_action=handshake,
    )
    err = error_of(client_seen, tv.UnknownIssuer)
    assert err.verify_code == 20
    assert err.phase is tv.Phase.SERVER_CERTIFICATE
    assert err.alert_sent is tv.Alert.UNKNOWN_CA


async def test_pinned_leaf_does_not_bypass_the_name_check(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    client_seen, _ = await run_pair(
        plain_server(certs, version, "wrong_name"),
        tv.ClientPolicy(pinned=[certs.server("wrong_name").info]),
        client_action=handshake,
        server_action=handshake,
    )
    err = error_of(client_seen, tv.NameMismatch)
    assert err.verify_code == 62
    assert err.phase is tv.Phase.SERVER_CERTIFICATE
    assert err.alert_sent is tv.Alert.BAD_CERTIFICATE


# ------------------------------------------------------------- authorize


async def test_authorize_returning_true_lets_the_client_in(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    client_seen, server_seen = await run_pair(
        mtls_server(certs, version, authorize=lambda peer: True),
        mtls_client(certs),
    )
    assert_connected(client_seen, server_seen)


async def test_authorize_returning_false_is_policy_rejected(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    _, server_seen = await run_pair(
        mtls_server(certs, version, authorize=lambda peer: False),
        mtls_client(certs, confirm_client_auth="never"),
    )
    err = error_of(server_seen, tv.PolicyRejected)
    assert err.phase is tv.Phase.CONNECTION_POLICY
    assert err.side == "server"
    assert err.surfaced_in == "handshake"
    assert err.alert_sent is None
    assert err.tls_version == ("TLSv1.2" if version is TLS12 else "TLSv1.3")


async def test_authorize_refusal_leaves_the_client_a_truncated_stream(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    client_seen, _ = await run_pair(
        mtls_server(certs, version, authorize=lambda peer: False),
        mtls_client(certs, confirm_client_auth="never"),
    )
    err = error_of(client_seen, tv.TruncatedStream)
    assert err.alert_received is None


async def test_authorize_refusal_is_not_confirmed_to_a_waiting_client(
    certs: CertKit,
) -> None:
    """TLS 1.3: a confirming client must not take a refusal for acceptance.

    ``confirm_client_auth`` treats a session ticket as the server's "yes".
    A server whose ``authorize`` said no has not accepted the client, so the
    client's ``do_handshake()`` must fail, in the confirmation step.
    """
    client_seen, server_seen = await run_pair(
        mtls_server(certs, TLS13, authorize=lambda peer: False),
        mtls_client(certs, confirm_client_auth="auto"),
        client_action=handshake,
    )
    server_seen.expect(tv.PolicyRejected)
    err = error_of(client_seen, tv.TLSError)
    assert err.surfaced_in == "confirm"


async def test_authorize_receives_the_client_certificate_facts(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    seen: list[tv.PeerInfo] = []

    def authorize(peer: tv.PeerInfo) -> bool:
        seen.append(peer)
        return True

    client_seen, server_seen = await run_pair(
        mtls_server(certs, version, authorize=authorize), mtls_client(certs)
    )
    assert_connected(client_seen, server_seen)
    [peer] = seen
    assert peer.certificate == certs.client("valid").info
    assert CLIENT_URI in peer.certificate.uris
    assert peer.chain_verified
    assert peer.server_name == "localhost"
    assert peer.tls_version == ("TLSv1.2" if version is TLS12 else "TLSv1.3")


async def test_authorize_can_allow_by_spiffe_id(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    def spiffe_only(peer: tv.PeerInfo) -> bool:
        return peer.certificate is not None and CLIENT_URI in peer.certificate.uris

    client_seen, server_seen = await run_pair(
        mtls_server(certs, version, authorize=spiffe_only), mtls_client(certs)
    )
    assert_connected(client_seen, server_seen)


async def test_authorize_raising_is_policy_rejected_with_the_cause(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    problem = LookupError("no such tenant")

    def authorize(peer: tv.PeerInfo) -> bool:
        raise problem

    _, server_seen = await run_pair(
        mtls_server(certs, version, authorize=authorize),
        mtls_client(certs, confirm_client_auth="never"),
    )
    err = error_of(server_seen, tv.PolicyRejected)
    assert err.phase is tv.Phase.CONNECTION_POLICY
    assert err.__cause__ is problem
    assert "no such tenant" in str(err)


async def test_authorize_is_not_called_when_verification_fails(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    calls: list[tv.PeerInfo] = []

    def authorize(peer: tv.PeerInfo) -> bool:
        calls.append(peer)
        return True

    _, server_seen = await run_pair(
        mtls_server(certs, version, authorize=authorize),
        mtls_client(certs, "other_ca"),
    )
    server_seen.expect(tv.UnknownIssuer)
    assert calls == []


# -------------------------------------------------------- pinned clients


def pinned_clients_server(
    certs: CertKit, version: ssl.TLSVersion, pinned: KitIdentity
) -> tv.ServerPolicy:
    return tv.ServerPolicy(
        identity=identity(certs.server("valid")),
        client_auth=tv.ClientAuth.REQUIRED,
        pinned_clients=[pinned.info],
        minimum_version=version,
        maximum_version=version,
    )


async def test_pinned_clients_accept_a_self_signed_client(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    client_seen, server_seen = await run_pair(
        pinned_clients_server(certs, version, certs.client("self_signed")),
        mtls_client(certs, "self_signed"),
    )
    assert_connected(client_seen, server_seen)


async def test_pinned_clients_refuse_a_client_that_is_not_pinned(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    _, server_seen = await run_pair(
        pinned_clients_server(certs, version, certs.client("self_signed")),
        mtls_client(certs, "valid"),
    )
    err = error_of(server_seen, tv.UnknownIssuer)
    assert err.phase is tv.Phase.CLIENT_CERTIFICATE
    assert err.alert_sent is tv.Alert.UNKNOWN_CA


# ------------------------------------------- a pinned CA vouches for itself only


async def test_pinned_ca_certificate_does_not_vouch_for_the_servers_it_issued(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    """Pinning a certificate that is a CA pins that certificate, not its issue."""
    client_seen, _ = await run_pair(
        plain_server(certs, version, "valid"),
        tv.ClientPolicy(pinned=[ca_certificate(certs.ca_pem)]),
        client_action=handshake,
        server_action=handshake,
    )
    err = error_of(client_seen, tv.PinMismatch)
    assert err.phase is tv.Phase.CONNECTION_POLICY
    assert err.side == "client"
    assert "vouches only for itself" in str(err)


async def test_pinned_ca_certificate_does_not_vouch_for_the_clients_it_issued(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    server = tv.ServerPolicy(
        identity=identity(certs.server("valid")),
        client_auth=tv.ClientAuth.REQUIRED,
        pinned_clients=[ca_certificate(certs.ca_pem)],
        minimum_version=version,
        maximum_version=version,
    )
    _, server_seen = await run_pair(
        server, mtls_client(certs, "valid"), server_action=handshake
    )
    err = error_of(server_seen, tv.PinMismatch)
    assert err.phase is tv.Phase.CONNECTION_POLICY
    assert err.side == "server"
