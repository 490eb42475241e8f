"""The certificate kit makes what it promises: each kind fails (or passes)
verification with exactly the verify code OpenSSL 3 gives for its defect,
under the checks trio_verify uses (``VERIFY_X509_STRICT``, no common-name
fallback), and is otherwise sound."""

from __future__ import annotations

import ssl
from datetime import timedelta

import pytest
from certs import (
    CLIENT_KINDS,
    SERVER_KINDS,
    CertKit,
    ClientKind,
    ServerKind,
    memory_handshake,
)

TLS_VERSIONS = [
    pytest.param(ssl.TLSVersion.TLSv1_2, id="TLSv1.2"),
    pytest.param(ssl.TLSVersion.TLSv1_3, id="TLSv1.3"),
]

# X509_V_FLAG_NO_CHECK_TIME, which the ssl module does not name.
NO_CHECK_TIME = 0x200000

SERVER_VERIFY_CODES: dict[ServerKind, int] = {
    "valid": 0,
    "expired": 10,  # CERT_HAS_EXPIRED
    "not_yet_valid": 9,  # CERT_NOT_YET_VALID
    "other_ca": 20,  # UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    "wrong_name": 62,  # HOSTNAME_MISMATCH
    "client_eku": 26,  # INVALID_PURPOSE
    "self_signed": 18,  # DEPTH_ZERO_SELF_SIGNED_CERT
    "intermediate": 0,
    "leaf_without_intermediate": 20,
    "cn_only": 62,
    "ip_only": 0,
}

CLIENT_VERIFY_CODES: dict[ClientKind, int] = {
    "valid": 0,
    "expired": 10,
    "not_yet_valid": 9,
    "other_ca": 20,
    "server_eku": 26,
    "self_signed": 18,
    "intermediate": 0,
}


def test_every_kind_has_an_expected_code() -> None:
    assert set(SERVER_VERIFY_CODES) == set(SERVER_KINDS)
    assert set(CLIENT_VERIFY_CODES) == set(CLIENT_KINDS)


@pytest.mark.parametrize("version", TLS_VERSIONS)
@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_client_verifies_server_kind_as_openssl_reports(
    certs: CertKit, kind: ServerKind, version: ssl.TLSVersion
) -> None:
    hostname = "127.0.0.1" if kind == "ip_only" else "localhost"
    result = memory_handshake(
        certs.client_context(versions=version), certs.server_context(kind), hostname
    )
    assert result.client_verify_code == SERVER_VERIFY_CODES[kind]
    if SERVER_VERIFY_CODES[kind] == 0:
        assert result.server_error is None
        assert result.client.version() == version.name.replace("_", ".")


@pytest.mark.parametrize("version", TLS_VERSIONS)
@pytest.mark.parametrize("kind", CLIENT_KINDS)
def test_server_verifies_client_kind_as_openssl_reports(
    certs: CertKit, kind: ClientKind, version: ssl.TLSVersion
) -> None:
    result = memory_handshake(
        certs.client_context(identity=kind, versions=version),
        certs.server_context(client_auth=ssl.CERT_REQUIRED),
    )
    assert result.server_verify_code == CLIENT_VERIFY_CODES[kind]
    if CLIENT_VERIFY_CODES[kind] == 0:
        assert result.client_error is None
        assert (
            result.server.getpeercert(binary_form=True) == certs.client(kind).info.der
        )
    else:
        # The client hears of it by alert: in its handshake in TLS 1.2,
        # in its first read after the handshake in TLS 1.3.
        assert result.client_error is not None
        assert result.client_error.reason is not None
        assert "ALERT" in result.client_error.reason


# Each defective kind is otherwise sound: lifting its one defect makes it
# verify under VERIFY_X509_STRICT, so the codes above come from the defect.


def test_expired_and_not_yet_valid_are_sound_apart_from_time(certs: CertKit) -> None:
    for kind in ("expired", "not_yet_valid"):
        ctx = certs.client_context()
        ctx.verify_flags |= NO_CHECK_TIME
        result = memory_handshake(ctx, certs.server_context(kind))
        assert result.client_verify_code == 0, kind


def test_other_ca_server_verifies_against_its_own_root(certs: CertKit) -> None:
    ctx = certs.client_context(trust="other_ca")
    assert memory_handshake(ctx, certs.server_context("other_ca")).client_error is None


def test_wrong_name_server_is_valid_for_its_own_name(certs: CertKit) -> None:
    result = memory_handshake(
        certs.client_context(), certs.server_context("wrong_name"), "example.org"
    )
    assert result.client_error is None


def test_self_signed_server_verifies_when_pinned(certs: CertKit) -> None:
    ctx = certs.client_context(trust=certs.server("self_signed"))
    assert (
        memory_handshake(ctx, certs.server_context("self_signed")).client_error is None
    )


def test_leaf_without_intermediate_verifies_when_intermediate_is_trusted(
    certs: CertKit,
) -> None:
    ctx = certs.client_context(trust="intermediate")
    result = memory_handshake(ctx, certs.server_context("leaf_without_intermediate"))
    assert result.client_error is None


def test_cn_only_server_passes_with_common_name_fallback(certs: CertKit) -> None:
    ctx = certs.client_context()
    ctx.hostname_checks_common_name = True
    assert memory_handshake(ctx, certs.server_context("cn_only")).client_error is None


def test_ip_only_server_is_not_valid_for_localhost(certs: CertKit) -> None:
    result = memory_handshake(certs.client_context(), certs.server_context("ip_only"))
    assert result.client_verify_code == 62


def test_ip_only_server_is_not_valid_for_another_address(certs: CertKit) -> None:
    result = memory_handshake(
        certs.client_context(), certs.server_context("ip_only"), "127.0.0.2"
    )
    assert result.client_verify_code == 64  # IP_ADDRESS_MISMATCH


def test_valid_server_is_valid_for_ipv6_loopback(certs: CertKit) -> None:
    result = memory_handshake(certs.client_context(), certs.server_context(), "::1")
    assert result.client_error is None


def test_self_signed_client_verifies_when_pinned(certs: CertKit) -> None:
    result = memory_handshake(
        certs.client_context(identity="self_signed"),
        certs.server_context(
            client_auth=ssl.CERT_REQUIRED, client_trust=certs.client("self_signed")
        ),
    )
    assert result.server_error is None


def test_other_ca_client_verifies_against_its_own_root(certs: CertKit) -> None:
    result = memory_handshake(
        certs.client_context(identity="other_ca"),
        certs.server_context(client_auth=ssl.CERT_REQUIRED, client_trust="other_ca"),
    )
    assert result.server_error is None


# The identities themselves.


def test_identities_are_made_once(certs: CertKit) -> None:
    assert certs.server("expired") is certs.server("expired")
    assert certs.client("valid") is certs.client("valid")
    assert certs.server("valid") is not certs.client("valid")


def test_identity_files_hold_the_identity(certs: CertKit) -> None:
    for identity in [certs.server(k) for k in SERVER_KINDS] + [
        certs.client(k) for k in CLIENT_KINDS
    ]:
        assert identity.chain_file.read_bytes() == identity.cert_chain_pem
        assert identity.key_file.read_bytes() == identity.key_pem
        assert identity.cert_chain_pem.startswith(identity.cert_pem)
        assert identity.info == identity.chain[0]
        assert identity.cert_file.name == f"{identity.name}.crt"


def test_chains_carry_intermediates_but_never_the_root(certs: CertKit) -> None:
    root = certs.ca_pem
    assert len(certs.server("intermediate").chain) == 2
    assert certs.server("intermediate").cert_chain_pem.endswith(certs.intermediate_pem)
    assert len(certs.client("intermediate").chain) == 2
    assert len(certs.server("leaf_without_intermediate").chain) == 1
    for kind in SERVER_KINDS:
        assert root not in certs.server(kind).cert_chain_pem
        assert (len(certs.server(kind).chain) == 2) == (kind == "intermediate")


def test_leaf_without_intermediate_is_the_intermediate_leaf(certs: CertKit) -> None:
    full, bare = certs.server("intermediate"), certs.server("leaf_without_intermediate")
    assert bare.info == full.info
    assert bare.key_pem == full.key_pem


def test_validity_periods_are_set_around_now(certs: CertKit) -> None:
    expired = certs.server("expired").info
    assert expired.not_after == (certs.now - timedelta(days=30)).replace(microsecond=0)
    early = certs.client("not_yet_valid").info
    assert early.not_before == (certs.now + timedelta(days=30)).replace(microsecond=0)


def test_issuers(certs: CertKit) -> None:
    ca = "OU=Test Root CA,O=trio_verify tests"
    assert certs.server("valid").info.issuer == ca
    assert certs.client("valid").info.issuer == ca
    assert (
        certs.server("other_ca").info.issuer
        == "OU=Untrusted Root CA,O=trio_verify tests"
    )
    assert (
        certs.server("intermediate").info.issuer
        == "OU=Test Intermediate CA,O=trio_verify tests"
    )
    self_signed = certs.client("self_signed").info
    assert self_signed.issuer == self_signed.subject
    assert self_signed.is_self_signed
    assert not self_signed.is_ca
