"""Certificate views: CertificateInfo, the describe_* sentences, pins, chains."""

from __future__ import annotations

import base64
import contextlib
import copy
import dataclasses
import hashlib
import ipaddress
import pickle
import ssl
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from certs import CertKit, Identity, memory_handshake
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import given
from hypothesis import strategies as st

from trio_verify._certs import (
    CertificateInfo,
    PeerInfo,
    chain_from_sslobject,
    describe_names,
    describe_validity,
    load_pem_chain,
    spki_sha256_from_pem,
)

TLS_VERSIONS = [
    pytest.param(ssl.TLSVersion.TLSv1_2, id="TLSv1.2"),
    pytest.param(ssl.TLSVersion.TLSv1_3, id="TLSv1.3"),
]


def reencoded_spki_sha256(info: CertificateInfo) -> bytes:
    spki = info.certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()


# ------------------------------------------------------------ CertificateInfo


def test_server_certificate_facts(certs: CertKit) -> None:
    info = certs.server("valid").info
    assert info.subject == "CN=localhost,OU=server-valid,O=trio_verify tests"
    assert info.issuer == "OU=Test Root CA,O=trio_verify tests"
    assert info.common_name == "localhost"
    assert info.dns_names == ("localhost",)
    assert info.ip_addresses == (
        ipaddress.IPv4Address("127.0.0.1"),
        ipaddress.IPv6Address("::1"),
    )
    assert info.uris == ()
    assert info.emails == ()
    assert info.has_subject_alt_names
    assert info.key_description == "ECDSA P-256"
    assert info.signature_hash == "sha256"
    assert info.extended_key_usages == ("clientAuth", "serverAuth", "codeSigning")
    assert not info.is_ca
    assert not info.is_self_signed
    assert info.serial_number == info.certificate.serial_number
    # trustme's default validity period.
    assert info.not_before == datetime(2000, 1, 1, tzinfo=UTC)
    assert info.not_after == datetime(3000, 1, 1, tzinfo=UTC)


def test_client_certificate_facts(certs: CertKit) -> None:
    info = certs.client("valid").info
    assert info.subject == "CN=client.example,OU=client-valid,O=trio_verify tests"
    assert info.dns_names == ("client.example",)
    assert info.ip_addresses == ()
    assert info.uris == ("spiffe://example/client",)
    assert info.emails == ("client@example.org",)
    assert info.extended_key_usages == ("clientAuth",)
    assert certs.client("server_eku").info.extended_key_usages == ("serverAuth",)


def test_unnamed_purposes_are_dotted_oids(certs: CertKit) -> None:
    smartcard = ExtendedKeyUsageOID.SMARTCARD_LOGON
    info = certs.issue("eku-oid", names=("x.example",), eku=[smartcard]).info
    assert info.extended_key_usages == (smartcard.dotted_string,)


def test_no_extended_key_usage_extension_is_empty(certs: CertKit) -> None:
    info = certs.issue("no-eku", names=("x.example",), eku=None).info
    assert info.extended_key_usages == ()


def test_certificate_without_names(certs: CertKit) -> None:
    info = certs.server("cn_only").info
    assert not info.has_subject_alt_names
    assert (info.dns_names, info.ip_addresses, info.uris, info.emails) == (
        (),
        (),
        (),
        (),
    )
    assert info.common_name == "localhost"
    assert certs.server("ip_only").info.common_name is None


def test_ca_certificates(certs: CertKit) -> None:
    (root,) = load_pem_chain(certs.ca_pem)
    assert root.is_ca
    assert root.is_self_signed
    (intermediate,) = load_pem_chain(certs.intermediate_pem)
    assert intermediate.is_ca
    assert not intermediate.is_self_signed
    assert intermediate.issuer == root.subject
    assert root.extended_key_usages == ()


def test_self_signed_end_entity(certs: CertKit) -> None:
    info = certs.server("self_signed").info
    assert info.is_self_signed
    assert not info.is_ca


def test_subject_equal_to_issuer_is_not_enough_to_be_self_signed(
    certs: CertKit,
) -> None:
    # Sign a certificate with the root's subject as its own but another key.
    root = certs.ca
    imposter = certs.issue("imposter", issuer="other_ca", names=("x.example",))
    forged = (
        x509.CertificateBuilder()
        .subject_name(imposter.info.certificate.issuer)
        .issuer_name(imposter.info.certificate.issuer)
        .public_key(imposter.info.certificate.public_key())
        .serial_number(1)
        .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2030, 1, 1, tzinfo=UTC))
        .sign(
            serialization.load_pem_private_key(
                root.private_key_pem.bytes(), password=None
            ),  # type: ignore[arg-type]
            hashes.SHA256(),
        )
    )
    info = CertificateInfo.from_cryptography(forged)
    assert info.subject == info.issuer
    assert not info.is_self_signed


@pytest.mark.parametrize(
    ("key", "description", "signature_hash"),
    [
        ("ecdsa", "ECDSA P-256", "sha256"),
        ("rsa", "RSA 2048", "sha256"),
        ("ed25519", "Ed25519", None),
    ],
)
def test_key_types(
    certs: CertKit, key: str, description: str, signature_hash: str | None
) -> None:
    # Self-signed, so an Ed25519 key also signs (hence no separate hash).
    info = certs.issue(
        f"key-{key}",
        issuer=None,
        names=("x.example",),
        key=key,  # type: ignore[arg-type]
    ).info
    assert info.key_description == description
    assert info.signature_hash == signature_hash
    assert info.is_self_signed
    assert info.spki_sha256 == reencoded_spki_sha256(info)


def test_fingerprint(certs: CertKit) -> None:
    info = certs.server("valid").info
    expected = info.certificate.fingerprint(hashes.SHA256()).hex()
    assert info.sha256_fingerprint == expected
    assert len(expected) == 64


def test_spki_pin_matches_the_reencoded_key(certs: CertKit) -> None:
    for identity in (certs.server("valid"), certs.client("intermediate")):
        info = identity.info
        assert info.spki_sha256 == reencoded_spki_sha256(info)
        assert base64.b64decode(info.spki_pin) == info.spki_sha256


def test_spki_pin_is_the_same_for_every_certificate_of_a_key(certs: CertKit) -> None:
    bare = certs.server("leaf_without_intermediate").info
    assert bare.spki_pin == certs.server("intermediate").info.spki_pin
    assert bare.spki_pin != certs.server("valid").info.spki_pin


@pytest.mark.openssl_cli
def test_spki_pin_matches_openssl(certs: CertKit, openssl: Path) -> None:
    # The recipe curl documents for --pinnedpubkey sha256// values.
    identity = certs.server("valid")
    pubkey = subprocess.run(
        [openssl, "x509", "-in", identity.cert_file, "-pubkey", "-noout"],
        check=True,
        capture_output=True,
    ).stdout
    der = subprocess.run(
        [openssl, "pkey", "-pubin", "-outform", "der"],
        input=pubkey,
        check=True,
        capture_output=True,
    ).stdout
    digest = subprocess.run(
        [openssl, "dgst", "-sha256", "-binary"],
        input=der,
        check=True,
        capture_output=True,
    ).stdout
    assert identity.info.spki_pin == base64.b64encode(digest).decode()


def test_spki_sha256_from_pem(certs: CertKit) -> None:
    identity = certs.server("intermediate")
    public_key_pem = identity.info.certificate.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert spki_sha256_from_pem(identity.cert_chain_pem) == identity.info.spki_sha256
    assert spki_sha256_from_pem(public_key_pem) == identity.info.spki_sha256
    with pytest.raises(ValueError):  # noqa: PT011 - cryptography's message varies
        spki_sha256_from_pem(b"not pem")


def test_from_der_and_from_cryptography_are_equal(certs: CertKit) -> None:
    info = certs.server("valid").info
    from_der = CertificateInfo.from_der(info.der)
    from_cryptography = CertificateInfo.from_cryptography(info.certificate)
    assert from_der == from_cryptography == info
    assert hash(from_der) == hash(from_cryptography)
    assert len({from_der, from_cryptography, certs.client("valid").info}) == 2


def test_from_cryptography_keeps_the_parsed_certificate(certs: CertKit) -> None:
    cert = certs.server("valid").info.certificate
    assert CertificateInfo.from_cryptography(cert).certificate is cert


def test_properties_are_computed_once(certs: CertKit) -> None:
    info = CertificateInfo.from_der(certs.server("valid").info.der)
    assert info.certificate is info.certificate
    assert info.dns_names is info.dns_names
    assert info.subject is info.subject


def test_parsing_is_lazy() -> None:
    info = CertificateInfo.from_der(b"\x30\x03\x02\x01\x00")
    with pytest.raises(ValueError):  # noqa: PT011 - cryptography's message varies
        _ = info.subject
    with pytest.raises(ValueError, match="DER"):
        _ = info.spki_sha256
    assert info.sha256_fingerprint == hashlib.sha256(info.der).hexdigest()


def test_certificate_info_is_immutable(certs: CertKit) -> None:
    info = certs.server("valid").info
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.der = b""  # type: ignore[misc]
    assert not hasattr(info, "__dict__")


def test_certificate_info_pickles_as_its_der(certs: CertKit) -> None:
    info = CertificateInfo.from_der(certs.server("valid").info.der)
    _ = info.key_description  # fill the cache
    copied = pickle.loads(pickle.dumps(info))
    assert copied == info
    assert copied.key_description == "ECDSA P-256"
    assert copy.copy(info) == info


def test_repr_names_the_certificate(certs: CertKit) -> None:
    info = certs.server("valid").info
    assert repr(info) == (
        "<CertificateInfo 'CN=localhost,OU=server-valid,O=trio_verify tests' "
        f"sha256={info.sha256_fingerprint}>"
    )


def test_load_pem_chain_keeps_order(certs: CertKit) -> None:
    chain = load_pem_chain(certs.server("intermediate").cert_chain_pem)
    assert [c.subject for c in chain] == [
        "CN=localhost,OU=server-intermediate,O=trio_verify tests",
        "OU=Test Intermediate CA,O=trio_verify tests",
    ]
    with pytest.raises(ValueError):  # noqa: PT011 - cryptography's message varies
        load_pem_chain(b"")


# ------------------------------------------------------------------ describe


@pytest.fixture(scope="module")
def dated(certs: CertKit) -> CertificateInfo:
    """Valid from 2025-01-01 00:00 to 2026-01-03 12:00 UTC."""
    return certs.issue(
        "dated",
        names=("a.example",),
        not_before=datetime(2025, 1, 1, tzinfo=UTC),
        not_after=datetime(2026, 1, 3, 12, tzinfo=UTC),
    ).info


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2025, 6, 1, tzinfo=UTC), None),
        (datetime(2025, 1, 1, tzinfo=UTC), None),
        (datetime(2026, 1, 3, 12, tzinfo=UTC), None),
        (
            datetime(2026, 11, 27, 10, tzinfo=UTC),
            "certificate expired 2026-01-03, 328 days ago",
        ),
        (
            datetime(2026, 1, 4, 1, tzinfo=UTC),
            "certificate expired 2026-01-03, 1 day ago",
        ),
        (
            datetime(2026, 1, 3, 12, 0, 1, tzinfo=UTC),
            "certificate expired 2026-01-03 12:00:00 UTC, earlier today",
        ),
        (
            datetime(2024, 10, 27, tzinfo=UTC),
            "certificate is not valid until 2025-01-01, in 66 days",
        ),
        (
            datetime(2024, 12, 31, 23, tzinfo=UTC),
            "certificate is not valid until 2025-01-01, in 1 day",
        ),
        (
            datetime(2024, 12, 31, 23, 59, 59),  # naive: taken as UTC
            "certificate is not valid until 2025-01-01, in 1 day",
        ),
    ],
)
def test_describe_validity(
    dated: CertificateInfo, now: datetime, expected: str | None
) -> None:
    assert describe_validity(dated, now) == expected


def test_describe_validity_not_valid_until_later_today(certs: CertKit) -> None:
    info = certs.issue(
        "starts-at-noon",
        names=("a.example",),
        not_before=datetime(2027, 2, 1, 12, tzinfo=UTC),
        not_after=datetime(2028, 2, 1, tzinfo=UTC),
    ).info
    assert (
        describe_validity(info, datetime(2027, 2, 1, 8, tzinfo=UTC))
        == "certificate is not valid until 2027-02-01 12:00:00 UTC, later today"
    )


def test_describe_validity_converts_other_timezones(dated: CertificateInfo) -> None:
    from datetime import timedelta, timezone

    # 2026-01-03 13:00 in UTC+2 is 11:00 UTC: still valid.
    plus_two = timezone(timedelta(hours=2))
    assert describe_validity(dated, datetime(2026, 1, 3, 13, tzinfo=plus_two)) is None


def test_describe_validity_defaults_to_now(certs: CertKit) -> None:
    assert describe_validity(certs.server("valid").info) is None
    expired = describe_validity(certs.server("expired").info)
    assert expired is not None
    assert expired.endswith(", 30 days ago")
    early = describe_validity(certs.server("not_yet_valid").info)
    assert early is not None
    assert early.endswith(", in 30 days")


def test_describe_names_lists_dns_and_ip_names(certs: CertKit) -> None:
    assert (
        describe_names(certs.server("valid").info, "example.com")
        == "certificate is valid for localhost, 127.0.0.1, ::1, not example.com"
    )
    assert (
        describe_names(certs.server("wrong_name").info, "localhost")
        == "certificate is valid for example.org, not localhost"
    )


def test_describe_names_without_alternative_names(certs: CertKit) -> None:
    assert describe_names(certs.server("cn_only").info, "localhost") == (
        "certificate has no subject alternative names (common name 'localhost' "
        "is not used for name checks), not valid for localhost"
    )
    bare = certs.issue("bare", names=()).info
    assert describe_names(bare, "localhost") == (
        "certificate has no subject alternative names, not valid for localhost"
    )


def test_describe_names_with_only_uri_names(certs: CertKit) -> None:
    info = certs.issue("uri-only", uris=("spiffe://example/x",)).info
    assert describe_names(info, "x.example") == (
        "certificate has no DNS or IP subject alternative names, not valid for x.example"
    )


def test_describe_names_shortens_long_lists(certs: CertKit) -> None:
    names = [f"n{i}.example" for i in range(12)]
    info = certs.issue("many-names", names=names).info
    assert describe_names(info, "x.example") == (
        "certificate is valid for "
        + ", ".join(names[:8])
        + " (and 4 more), not x.example"
    )


# -------------------------------------------------------------------- PeerInfo


def test_peer_info_defaults_to_knowing_nothing() -> None:
    peer = PeerInfo()
    assert peer.certificate is None
    assert peer.chain == ()
    assert not peer.chain_verified
    assert peer.server_name is None
    assert peer.alpn_protocol is None
    assert peer.tls_version is None
    assert peer.cipher is None
    assert not peer.session_reused
    with pytest.raises(dataclasses.FrozenInstanceError):
        peer.server_name = "x"  # type: ignore[misc]


# ------------------------------------------------------- chain_from_sslobject


def subjects(chain: tuple[CertificateInfo, ...]) -> list[str]:
    return [c.subject for c in chain]


def chain_subjects(identity: Identity) -> list[str]:
    return subjects(identity.chain)


@pytest.mark.parametrize("version", TLS_VERSIONS)
def test_client_sees_verified_and_sent_chains(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    server = certs.server("intermediate")
    result = memory_handshake(
        certs.client_context(versions=version), certs.server_context(server)
    )
    assert result.client_error is None
    sent = chain_from_sslobject(result.client, verified=False)
    assert sent == server.chain
    verified = chain_from_sslobject(result.client, verified=True)
    assert subjects(verified) == [
        *chain_subjects(server),
        "OU=Test Root CA,O=trio_verify tests",
    ]


@pytest.mark.parametrize("version", TLS_VERSIONS)
def test_server_sees_verified_and_sent_client_chains(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    client = certs.client("intermediate")
    result = memory_handshake(
        certs.client_context(identity=client, versions=version),
        certs.server_context(client_auth=ssl.CERT_REQUIRED),
    )
    assert result.server_error is None
    assert chain_from_sslobject(result.server, verified=False) == client.chain
    verified = chain_from_sslobject(result.server, verified=True)
    assert verified[:2] == client.chain
    assert subjects(verified[2:]) == ["OU=Test Root CA,O=trio_verify tests"]


@pytest.mark.parametrize("version", TLS_VERSIONS)
def test_client_keeps_the_sent_chain_after_refusing_it(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    result = memory_handshake(
        certs.client_context(versions=version), certs.server_context("expired")
    )
    assert result.client_verify_code == 10
    assert chain_from_sslobject(result.client, verified=False) == (
        certs.server("expired").info,
    )
    # OpenSSL records the chain it built even though verification failed.
    assert chain_from_sslobject(result.client, verified=True) == ()


@pytest.mark.parametrize("version", TLS_VERSIONS)
def test_server_that_refused_a_client_still_names_its_certificate(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    result = memory_handshake(
        certs.client_context(identity="other_ca", versions=version),
        certs.server_context(client_auth=ssl.CERT_REQUIRED),
    )
    assert result.server_verify_code == 20
    # OpenSSL keeps no copy of what the client sent; the chain it built
    # while verifying starts with the client's certificate.
    sent = chain_from_sslobject(result.server, verified=False)
    assert sent == (certs.client("other_ca").info,)
    assert chain_from_sslobject(result.server, verified=True) == ()


def test_refused_client_chain_may_end_in_a_local_anchor(certs: CertKit) -> None:
    result = memory_handshake(
        certs.client_context(identity="expired"),
        certs.server_context(client_auth=ssl.CERT_REQUIRED),
    )
    assert result.server_verify_code == 10
    chain = chain_from_sslobject(result.server, verified=False)
    assert chain[0] == certs.client("expired").info
    assert subjects(chain[1:]) == ["OU=Test Root CA,O=trio_verify tests"]


def test_no_verified_chain_without_verification(certs: CertKit) -> None:
    ctx = certs.client_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    result = memory_handshake(ctx, certs.server_context("expired"))
    assert result.client_error is None
    assert chain_from_sslobject(result.client, verified=True) == ()
    assert chain_from_sslobject(result.client, verified=False) == (
        certs.server("expired").info,
    )


def test_no_chain_from_a_client_without_certificate(certs: CertKit) -> None:
    result = memory_handshake(
        certs.client_context(), certs.server_context(client_auth=ssl.CERT_OPTIONAL)
    )
    assert result.server_error is None
    assert chain_from_sslobject(result.server, verified=False) == ()
    assert chain_from_sslobject(result.server, verified=True) == ()


def test_no_chain_before_the_handshake(certs: CertKit) -> None:
    obj = certs.client_context().wrap_bio(
        ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="localhost"
    )
    assert chain_from_sslobject(obj, verified=False) == ()
    assert chain_from_sslobject(obj, verified=True) == ()


@pytest.mark.parametrize("version", TLS_VERSIONS)
def test_no_chain_on_a_resumed_session(certs: CertKit, version: ssl.TLSVersion) -> None:
    client_ctx = certs.client_context(versions=version)
    server_ctx = certs.server_context()
    first = memory_handshake(client_ctx, server_ctx)
    assert first.client.session is not None

    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(
        c_in, c_out, server_hostname="localhost", session=first.client.session
    )
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for obj in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                obj.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    assert client.session_reused
    # The leaf is still known from the session, but OpenSSL keeps no chain.
    assert client.getpeercert(binary_form=True) == certs.server("valid").info.der
    assert chain_from_sslobject(client, verified=False) == ()
    assert chain_from_sslobject(client, verified=True) == ()


class _NoChains:
    """Stands in for an SSLObject of a Python without any chain accessor."""

    def version(self) -> str:
        return "TLSv1.3"


class _BrokenChains(_NoChains):
    def get_verified_chain(self) -> list[bytes]:
        raise ValueError("no chain")

    def get_unverified_chain(self) -> list[bytes]:
        raise ssl.SSLError("no chain")


def test_missing_or_failing_accessors_give_no_chain() -> None:
    for fake in (_NoChains(), _BrokenChains()):
        obj: ssl.SSLObject = fake  # type: ignore[assignment]
        assert chain_from_sslobject(obj, verified=False) == ()


class _PrivateAccessorsOnly:
    """Exposes an SSLObject the way Python 3.11 and 3.12 do: chains only on
    the private ``_sslobj``."""

    def __init__(self, obj: ssl.SSLObject) -> None:
        self._sslobj = obj._sslobj  # type: ignore[attr-defined]
        self.context = obj.context
        self.version = obj.version


def test_private_accessors_give_the_same_chains(certs: CertKit) -> None:
    result = memory_handshake(
        certs.client_context(), certs.server_context("intermediate")
    )
    proxy: ssl.SSLObject = _PrivateAccessorsOnly(result.client)  # type: ignore[assignment]
    for verified in (False, True):
        assert chain_from_sslobject(proxy, verified=verified) == chain_from_sslobject(
            result.client, verified=verified
        )
    assert len(chain_from_sslobject(proxy, verified=True)) == 3


@given(st.binary(max_size=64))
def test_malformed_der_raises_only_value_error(data: bytes) -> None:
    info = CertificateInfo.from_der(data)
    with contextlib.suppress(ValueError):
        _ = info.spki_sha256
    with contextlib.suppress(ValueError):
        _ = info.subject
    assert info.sha256_fingerprint == hashlib.sha256(data).hexdigest()


@given(cut=st.integers(min_value=0, max_value=10_000))
def test_truncated_certificates_have_no_spki(certs: CertKit, cut: int) -> None:
    # Every strict prefix of a real certificate is refused, never misread.
    der = certs.server("valid").info.der
    with pytest.raises(ValueError):  # noqa: PT011 - the DER walker's own messages
        _ = CertificateInfo.from_der(der[: cut % len(der)]).spki_sha256
