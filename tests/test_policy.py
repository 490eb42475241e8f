"""Specification of the policy layer: the verify-mode matrix (docs/matrix.rst).

Lint cases check the exact category (error or warning) and that the message
names the fix. Handshakes run over memory BIOs between the contexts the
policies build, so what is checked is what OpenSSL really does with them.
"""

from __future__ import annotations

import dataclasses
import os
import ssl
import stat
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from certs import CertKit, MemoryHandshake, memory_handshake
from cryptography.hazmat.primitives import serialization

from trio_verify import PolicyError, PolicyWarning
from trio_verify._certs import PeerInfo
from trio_verify._policy import (
    ClientAuth,
    ClientPolicy,
    Identity,
    ServerPolicy,
    coerce_policy,
)

CERT_HAS_EXPIRED = 10
UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
HOSTNAME_MISMATCH = 62

TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3


@pytest.fixture(params=[TLS12, TLS13], ids=["TLSv1.2", "TLSv1.3"])
def version(request: pytest.FixtureRequest) -> ssl.TLSVersion:
    """Handshake tests run once per TLS version."""
    result: ssl.TLSVersion = request.param
    return result


@contextmanager
def no_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def server_identity(certs: CertKit, kind: Any = "valid") -> Identity:
    ident = certs.server(kind)
    return Identity.from_pem(ident.cert_chain_pem, ident.key_pem)


def client_identity(certs: CertKit, kind: Any = "valid") -> Identity:
    ident = certs.client(kind)
    return Identity.from_pem(ident.cert_chain_pem, ident.key_pem)


def make_server(certs: CertKit, kind: Any = "valid", **kwargs: Any) -> ServerPolicy:
    return ServerPolicy(identity=server_identity(certs, kind), **kwargs)


def only(version: ssl.TLSVersion) -> dict[str, Any]:
    """Keyword arguments that fix a policy to one TLS version."""
    return {"minimum_version": version, "maximum_version": version}


def handshake(
    client: ClientPolicy | ssl.SSLContext,
    server: ServerPolicy | ssl.SSLContext,
    server_hostname: str = "localhost",
) -> MemoryHandshake:
    client_ctx = client if isinstance(client, ssl.SSLContext) else client.context
    server_ctx = server if isinstance(server, ssl.SSLContext) else server.context
    return memory_handshake(client_ctx, server_ctx, server_hostname)


def reason(error: ssl.SSLError | None) -> str | None:
    return None if error is None else error.reason


# ------------------------------------------------------- verify-mode matrix
# client rows


def test_default_client_policy_authenticates_the_server() -> None:
    with no_warnings():
        policy = ClientPolicy()
    assert policy.context.verify_mode == ssl.CERT_REQUIRED
    assert policy.context.check_hostname
    assert policy.trust == ("system",)


def test_adopted_client_cert_none_is_refused() -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with pytest.raises(PolicyError, match="CERT_REQUIRED") as info:
        ClientPolicy.from_ssl_context(ctx)
    assert "allow_unauthenticated=True" in str(info.value)


def test_adopted_client_cert_none_allowed_explicitly_warns() -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with pytest.warns(PolicyWarning, match="does not verify the server"):
        policy = ClientPolicy.from_ssl_context(ctx, allow_unauthenticated=True)
    assert policy.insecure
    assert policy.context is ctx


def test_adopted_client_cert_optional_warns_that_it_means_required() -> None:
    ctx = ssl.create_default_context()
    ctx.verify_mode = ssl.CERT_OPTIONAL
    with pytest.warns(PolicyWarning, match="CERT_OPTIONAL on a client is") as info:
        policy = ClientPolicy.from_ssl_context(ctx)
    assert "verify_mode = ssl.CERT_REQUIRED" in str(info[0].message)
    assert not policy.insecure


def test_adopted_client_cert_optional_really_verifies(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    ctx = certs.client_context(trust="ca", versions=version)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    with pytest.warns(PolicyWarning):
        policy = ClientPolicy.from_ssl_context(ctx)
    result = handshake(policy, make_server(certs, "other_ca"))
    assert result.client_verify_code == UNABLE_TO_GET_ISSUER_CERT_LOCALLY


def test_adopted_client_without_hostname_check_is_refused() -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    with pytest.raises(PolicyError, match="check_hostname is False") as info:
        ClientPolicy.from_ssl_context(ctx)
    assert "set check_hostname = True" in str(info.value)
    assert "spki_pins=" in str(info.value)


def test_adopted_client_without_hostname_check_is_accepted_with_spki_pins(
    certs: CertKit,
) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    with no_warnings():
        policy = ClientPolicy.from_ssl_context(
            ctx, spki_pins={certs.server().info.spki_pin}
        )
    assert policy.spki_pins == {certs.server().info.spki_sha256}


def test_adopted_client_without_hostname_check_allowed_explicitly_warns() -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    with pytest.warns(PolicyWarning, match="not its name"):
        policy = ClientPolicy.from_ssl_context(ctx, allow_unauthenticated=True)
    assert not policy.check_hostname


def test_adopted_default_client_context_is_accepted_silently() -> None:
    ctx = ssl.create_default_context()
    with no_warnings():
        policy = ClientPolicy.from_ssl_context(ctx)
    assert policy.context is ctx
    assert policy.check_hostname
    assert not policy.insecure


def test_insecure_client_policy_warns_and_verifies_nothing(certs: CertKit) -> None:
    with pytest.warns(PolicyWarning, match="anyone on the network path") as info:
        policy = ClientPolicy(insecure=True)
    assert info[0].filename == __file__
    assert policy.context.verify_mode == ssl.CERT_NONE
    assert not policy.context.check_hostname
    result = handshake(policy, make_server(certs, "other_ca"))
    assert result.client_error is None


def test_insecure_client_policy_with_spki_pins_warns_that_only_pins_count(
    certs: CertKit,
) -> None:
    with pytest.warns(PolicyWarning, match="only the SPKI pins identify"):
        ClientPolicy(insecure=True, spki_pins={certs.server().info.spki_sha256})


def test_check_hostname_false_without_pins_is_refused(certs: CertKit) -> None:
    with pytest.raises(PolicyError, match="accept_any_trusted_server=True"):
        ClientPolicy(trust=certs.ca_pem, check_hostname=False)


def test_check_hostname_false_with_spki_pins_is_silent(certs: CertKit) -> None:
    with no_warnings():
        policy = ClientPolicy(
            trust=certs.ca_pem,
            check_hostname=False,
            spki_pins={certs.server().info.spki_pin},
        )
    assert not policy.context.check_hostname
    assert policy.context.verify_mode == ssl.CERT_REQUIRED


def test_check_hostname_false_with_only_pinned_certificates_is_silent(
    certs: CertKit,
) -> None:
    with no_warnings():
        policy = ClientPolicy(pinned=certs.server().cert_pem, check_hostname=False)
    assert not policy.context.check_hostname


def test_accept_any_trusted_server_warns(certs: CertKit) -> None:
    with pytest.warns(PolicyWarning, match="name is not checked"):
        policy = ClientPolicy(
            trust=certs.ca_pem, check_hostname=False, accept_any_trusted_server=True
        )
    result = handshake(policy, make_server(certs, "wrong_name"))
    assert result.client_error is None


# server rows


@pytest.mark.parametrize(
    ("mode", "client_auth"),
    [
        (ssl.CERT_NONE, ClientAuth.NONE),
        (ssl.CERT_OPTIONAL, ClientAuth.OPTIONAL),
        (ssl.CERT_REQUIRED, ClientAuth.REQUIRED),
    ],
)
def test_adopted_server_verify_mode_becomes_client_auth(
    certs: CertKit, mode: ssl.VerifyMode, client_auth: ClientAuth
) -> None:
    ctx = certs.server_context(client_auth=mode)
    with no_warnings():
        policy = ServerPolicy.from_ssl_context(ctx)
    assert policy.client_auth is client_auth
    assert policy.context is ctx


@pytest.mark.parametrize(
    ("client_auth", "mode"),
    [
        (ClientAuth.NONE, ssl.CERT_NONE),
        (ClientAuth.OPTIONAL, ssl.CERT_OPTIONAL),
        (ClientAuth.REQUIRED, ssl.CERT_REQUIRED),
    ],
)
def test_client_auth_sets_the_server_verify_mode(
    certs: CertKit, client_auth: ClientAuth, mode: ssl.VerifyMode
) -> None:
    trust = None if client_auth is ClientAuth.NONE else certs.ca_pem
    policy = make_server(certs, client_auth=client_auth, client_trust=trust)
    assert policy.context.verify_mode == mode


def test_server_none_never_requests_a_certificate(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    client = ClientPolicy(
        trust=certs.ca_pem, identity=client_identity(certs), **only(version)
    )
    result = handshake(client, make_server(certs))
    assert result.client_error is None
    assert result.server_error is None
    assert result.server.getpeercert() is None


def test_server_optional_lets_a_client_without_certificate_in(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    server = make_server(
        certs, client_auth=ClientAuth.OPTIONAL, client_trust=certs.ca_pem
    )
    result = handshake(ClientPolicy(trust=certs.ca_pem, **only(version)), server)
    assert result.client_error is None
    assert result.server_error is None
    assert result.server.getpeercert() is None


def test_server_optional_refuses_a_bad_certificate(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    server = make_server(
        certs, client_auth=ClientAuth.OPTIONAL, client_trust=certs.ca_pem
    )
    client = ClientPolicy(
        trust=certs.ca_pem,
        identity=client_identity(certs, "expired"),
        **only(version),
    )
    result = handshake(client, server)
    assert result.server_verify_code == CERT_HAS_EXPIRED
    assert reason(result.client_error) == "SSLV3_ALERT_CERTIFICATE_EXPIRED"


def test_server_required_refuses_a_client_without_certificate(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    server = make_server(
        certs, client_auth=ClientAuth.REQUIRED, client_trust=certs.ca_pem
    )
    result = handshake(ClientPolicy(trust=certs.ca_pem, **only(version)), server)
    assert reason(result.server_error) == "PEER_DID_NOT_RETURN_A_CERTIFICATE"
    expected = {
        TLS12: "SSLV3_ALERT_HANDSHAKE_FAILURE",
        TLS13: "TLSV13_ALERT_CERTIFICATE_REQUIRED",
    }[version]
    assert reason(result.client_error) == expected


def test_server_required_accepts_a_valid_client_certificate(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    server = make_server(
        certs, client_auth=ClientAuth.REQUIRED, client_trust=certs.ca_file
    )
    client = ClientPolicy(
        trust=certs.ca_pem, identity=client_identity(certs), **only(version)
    )
    result = handshake(client, server)
    assert result.client_error is None
    assert result.server_error is None
    assert result.server.getpeercert(binary_form=True) == certs.client().info.der


# ------------------------------------------------------------ other lints


def test_server_context_adopted_as_client_is_refused() -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with pytest.raises(PolicyError, match="PROTOCOL_TLS_CLIENT"):
        ClientPolicy.from_ssl_context(ctx)


def test_client_context_adopted_as_server_is_refused() -> None:
    ctx = ssl.create_default_context()
    with pytest.raises(PolicyError, match="PROTOCOL_TLS_SERVER"):
        ServerPolicy.from_ssl_context(ctx)


def generic_context() -> ssl.SSLContext:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return ssl.SSLContext(ssl.PROTOCOL_TLS)


def test_generic_protocol_context_is_judged_by_its_settings_as_a_client() -> None:
    with pytest.raises(PolicyError, match="CERT_NONE"):
        ClientPolicy.from_ssl_context(generic_context())


def test_generic_protocol_context_is_accepted_as_a_server() -> None:
    with no_warnings():
        policy = ServerPolicy.from_ssl_context(generic_context())
    assert policy.client_auth is ClientAuth.NONE


def test_adopted_client_allowing_old_versions_warns() -> None:
    ctx = ssl.create_default_context()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    with pytest.warns(PolicyWarning, match="older than 1.2") as info:
        ClientPolicy.from_ssl_context(ctx)
    assert "minimum_version = ssl.TLSVersion.TLSv1_2" in str(info[0].message)
    assert info[0].filename == __file__


def test_adopted_server_allowing_old_versions_warns(certs: CertKit) -> None:
    ctx = certs.server_context()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_1
    with pytest.warns(PolicyWarning, match="TLS 1.1"):
        ServerPolicy.from_ssl_context(ctx)


def test_adopted_server_with_sni_callback_warns(certs: CertKit) -> None:
    ctx = certs.server_context()
    ctx.sni_callback = lambda obj, name, ctx: None
    with pytest.warns(PolicyWarning, match="selector") as info:
        ServerPolicy.from_ssl_context(ctx)
    assert "sni_callback" in str(info[0].message)
    assert info[0].filename == __file__


def test_adopted_server_authorize_needs_client_certificates(certs: CertKit) -> None:
    with pytest.raises(PolicyError, match=r"ClientAuth\.REQUIRED"):
        ServerPolicy.from_ssl_context(
            certs.server_context(), authorize=lambda peer: True
        )


# ----------------------------------------------------- impossible configs


@pytest.mark.parametrize(
    ("kwargs", "fix"),
    [
        ({"minimum_version": ssl.TLSVersion.TLSv1_1}, "TLSv1_2"),
        ({"minimum_version": ssl.TLSVersion.MINIMUM_SUPPORTED}, "TLSv1_2"),
        ({"maximum_version": ssl.TLSVersion.TLSv1_1}, "TLSv1_2"),
        ({"minimum_version": TLS13, "maximum_version": TLS12}, "raise the maximum"),
        ({"trust": ()}, 'trust="system"'),
        ({"insecure": True, "trust": "system"}, "drop trust="),
        ({"accept_any_trusted_server": True}, "check_hostname=False"),
        ({"alpn": "h2"}, r"alpn=\('h2',\)"),
        ({"alpn": ("",)}, "1 to 255 ASCII"),
        ({"spki_pins": b"x" * 32}, "spki_pins={pin}"),
        ({"spki_pins": {"not base64!"}}, "32-byte SHA-256"),
        ({"spki_pins": {b"short"}}, "32-byte SHA-256"),
        ({"confirm_client_auth": "sometimes"}, '"auto"'),
        ({"confirm_timeout": 0}, "positive number"),
        ({"confirm_timeout": float("inf")}, "positive number"),
        ({"handshake_timeout": -1.0}, "or None"),
        ({"pinned": "system"}, "belongs in trust="),
        ({"trust": b"not a certificate"}, "PEM"),
    ],
)
def test_impossible_client_policy_is_refused(kwargs: dict[str, Any], fix: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PolicyWarning)
        with pytest.raises(PolicyError, match=fix):
            ClientPolicy(**kwargs)


def test_accept_any_trusted_server_with_pins_is_refused(certs: CertKit) -> None:
    with pytest.raises(PolicyError, match="drop the flag"):
        ClientPolicy(
            pinned=certs.server().cert_pem,
            check_hostname=False,
            accept_any_trusted_server=True,
        )


def test_trust_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="certificate files in it"):
        ClientPolicy(trust=tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "fix"),
    [
        ({"client_auth": ClientAuth.REQUIRED}, "pinned_clients="),
        ({"client_auth": ClientAuth.OPTIONAL}, "gh-75425"),
        ({"client_trust": "system"}, r"client_auth=ClientAuth\.REQUIRED"),
        ({"authorize": lambda peer: True}, r"client_auth=ClientAuth\.REQUIRED"),
        ({"alpn_required": True}, "as alpn="),
        ({"client_auth": ssl.CERT_REQUIRED}, r"client_auth=ClientAuth\.REQUIRED"),
        ({"minimum_version": ssl.TLSVersion.TLSv1}, "TLSv1_2"),
    ],
)
def test_impossible_server_policy_is_refused(
    certs: CertKit, kwargs: dict[str, Any], fix: str
) -> None:
    with pytest.raises(PolicyError, match=fix):
        make_server(certs, **kwargs)


def test_pinned_clients_with_client_auth_none_is_refused(certs: CertKit) -> None:
    with pytest.raises(PolicyError, match="never asks"):
        make_server(certs, pinned_clients=certs.client("self_signed").cert_pem)


# ------------------------------------------------------- secure defaults


def assert_secure_common(ctx: ssl.SSLContext) -> None:
    assert ctx.verify_flags & ssl.VERIFY_X509_STRICT
    assert ctx.verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN
    assert not ctx.hostname_checks_common_name
    assert ctx.minimum_version == TLS12
    assert ctx.options & ssl.OP_NO_RENEGOTIATION
    assert ctx.options & ssl.OP_NO_COMPRESSION


def test_client_context_has_secure_defaults(certs: CertKit) -> None:
    ctx = ClientPolicy(trust=certs.ca_pem).context
    assert_secure_common(ctx)
    assert ctx.protocol == ssl.PROTOCOL_TLS_CLIENT
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname
    assert not ctx.post_handshake_auth


def test_server_context_has_secure_defaults(certs: CertKit) -> None:
    ctx = make_server(certs).context
    assert_secure_common(ctx)
    assert ctx.protocol == ssl.PROTOCOL_TLS_SERVER
    assert ctx.verify_mode == ssl.CERT_NONE
    assert ctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert ctx.num_tickets == ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).num_tickets


def test_server_never_uses_a_common_name_fallback(certs: CertKit) -> None:
    result = handshake(ClientPolicy(trust=certs.ca_pem), make_server(certs, "cn_only"))
    assert result.client_verify_code == HOSTNAME_MISMATCH


def test_version_bounds_reach_the_context(certs: CertKit) -> None:
    ctx = ClientPolicy(trust=certs.ca_pem, **only(TLS13)).context
    assert (ctx.minimum_version, ctx.maximum_version) == (TLS13, TLS13)


def test_maximum_supported_means_no_maximum() -> None:
    policy = ClientPolicy(maximum_version=ssl.TLSVersion.MAXIMUM_SUPPORTED)
    assert policy.maximum_version is None
    assert policy == ClientPolicy()


def test_alpn_is_negotiated_in_server_order(certs: CertKit) -> None:
    client = ClientPolicy(trust=certs.ca_pem, alpn=("h2", "http/1.1"))
    server = make_server(certs, alpn=("http/1.1", "h2"))
    result = handshake(client, server)
    assert result.client.selected_alpn_protocol() == "http/1.1"


# --------------------------------------------------------------- caching


def test_client_context_is_built_once(certs: CertKit) -> None:
    policy = ClientPolicy(trust=certs.ca_pem)
    assert policy.context is policy.context


def test_server_context_is_built_once(certs: CertKit) -> None:
    policy = make_server(certs)
    assert policy.context is policy.context


def test_context_is_built_once_when_threads_race(certs: CertKit) -> None:
    policy = make_server(certs)
    barrier = threading.Barrier(8)
    seen: list[ssl.SSLContext] = []

    def build() -> None:
        barrier.wait()
        seen.append(policy.context)

    threads = [threading.Thread(target=build) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 8
    assert all(ctx is seen[0] for ctx in seen)


# -------------------------------------------------------------- equality


def test_client_policies_are_equal_by_value(certs: CertKit) -> None:
    from_bytes = ClientPolicy(trust=certs.ca_pem, alpn=["h2"], spki_pins=[b"a" * 32])
    from_path = ClientPolicy(
        trust=[certs.ca_file],
        alpn=("h2",),
        spki_pins={"YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE="},
    )
    assert from_bytes == from_path
    assert hash(from_bytes) == hash(from_path)
    assert len({from_bytes, from_path}) == 1


def test_client_policies_differ_when_a_field_differs(certs: CertKit) -> None:
    assert ClientPolicy(trust=certs.ca_pem) != ClientPolicy(
        trust=certs.ca_pem, name="api"
    )
    assert ClientPolicy(trust=certs.ca_pem) != ClientPolicy(trust=certs.other_ca_pem)


def test_default_trust_equals_explicit_system_trust() -> None:
    assert ClientPolicy() == ClientPolicy(trust="system")


def test_server_policies_are_equal_by_value(certs: CertKit) -> None:
    ident = certs.server()
    a = ServerPolicy(
        identity=Identity.from_pem(ident.cert_chain_pem, ident.key_pem),
        client_auth=ClientAuth.REQUIRED,
        client_trust=certs.ca_pem,
    )
    b = ServerPolicy(
        identity=Identity.from_files(ident.chain_file, ident.key_file),
        client_auth=ClientAuth.REQUIRED,
        client_trust=str(certs.ca_file),
    )
    assert a == b
    assert hash(a) == hash(b)


def test_policy_equality_ignores_the_cached_context(certs: CertKit) -> None:
    a, b = ClientPolicy(trust=certs.ca_pem), ClientPolicy(trust=certs.ca_pem)
    assert a.context is not b.context
    assert a == b
    assert hash(a) == hash(b)


def test_adopted_policies_are_equal_by_context_identity() -> None:
    ctx, twin = ssl.create_default_context(), ssl.create_default_context()
    assert ClientPolicy.from_ssl_context(ctx) == ClientPolicy.from_ssl_context(ctx)
    assert ClientPolicy.from_ssl_context(ctx) != ClientPolicy.from_ssl_context(twin)
    assert ClientPolicy.from_ssl_context(ctx) != ClientPolicy()
    assert len({ClientPolicy.from_ssl_context(ctx) for _ in range(3)}) == 1


def test_replace_makes_a_changed_copy(certs: CertKit) -> None:
    policy = ClientPolicy(pinned=certs.server("self_signed").cert_pem)
    changed = dataclasses.replace(policy, alpn=("h2",))
    assert changed.alpn == ("h2",)
    assert changed.pinned == policy.pinned
    assert changed.trust == ()
    assert dataclasses.replace(changed, alpn=()) == policy


def test_policies_are_immutable(certs: CertKit) -> None:
    policy = ClientPolicy(trust=certs.ca_pem)
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.insecure = True  # type: ignore[misc]


# -------------------------------------------------------------- identity


def test_identity_certificate_is_the_leaf(certs: CertKit) -> None:
    ident = certs.server("intermediate")
    identity = Identity.from_pem(ident.cert_chain_pem, ident.key_pem)
    assert identity.certificate == ident.info
    assert len(identity.chain) == 2


def test_identity_from_files_finds_the_key_in_the_chain_file(
    certs: CertKit, tmp_path: Path
) -> None:
    ident = certs.client()
    combined = tmp_path / "combined.pem"
    combined.write_bytes(ident.key_pem + ident.cert_chain_pem)
    assert Identity.from_files(combined) == Identity.from_files(
        ident.chain_file, ident.key_file
    )


def test_identity_from_pem_keeps_only_the_key_block(certs: CertKit) -> None:
    ident = certs.client()
    identity = Identity.from_pem(
        ident.cert_chain_pem, ident.cert_chain_pem + ident.key_pem
    )
    assert identity.key == ident.key_pem


def test_identity_from_files_without_a_key_is_refused(certs: CertKit) -> None:
    with pytest.raises(PolicyError, match="key_path="):
        Identity.from_files(certs.client().chain_file)


def test_identity_with_someone_elses_key_is_refused(certs: CertKit) -> None:
    with pytest.raises(PolicyError, match="does not belong"):
        Identity.from_pem(certs.server().cert_chain_pem, certs.client().key_pem)


def test_identity_without_certificate_is_refused(certs: CertKit) -> None:
    with pytest.raises(PolicyError, match="BEGIN CERTIFICATE"):
        Identity.from_pem(certs.client().key_pem, certs.client().key_pem)


def encrypted_key(certs: CertKit, password: bytes) -> bytes:
    key = serialization.load_pem_private_key(certs.client().key_pem, None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )


def test_identity_with_encrypted_key_needs_the_password(certs: CertKit) -> None:
    with pytest.raises(PolicyError, match="password"):
        Identity.from_pem(certs.client().cert_chain_pem, encrypted_key(certs, b"pw"))


def test_identity_with_encrypted_key_loads_with_the_password(
    certs: CertKit,
) -> None:
    identity = Identity.from_pem(
        certs.client().cert_chain_pem, encrypted_key(certs, b"pw"), b"pw"
    )
    server = make_server(
        certs, client_auth=ClientAuth.REQUIRED, client_trust=certs.ca_pem
    )
    result = handshake(ClientPolicy(trust=certs.ca_pem, identity=identity), server)
    assert result.server_error is None
    assert result.client_error is None


def test_identity_repr_shows_no_key(certs: CertKit) -> None:
    identity = client_identity(certs)
    assert b"PRIVATE" not in repr(identity).encode()
    assert "key=" not in repr(identity)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(
    not hasattr(os, "memfd_create"), reason="no anonymous memory files here"
)
def test_identity_in_memory_file_leaves_nothing_behind(
    certs: CertKit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    paths: list[str] = []
    original = ssl.SSLContext.load_cert_chain

    def spy(self: ssl.SSLContext, certfile: Any, *args: Any, **kwargs: Any) -> None:
        paths.append(str(certfile))
        original(self, certfile, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", spy)
    before = open_fds()
    make_server(certs).context  # noqa: B018
    assert open_fds() <= before
    assert len(paths) == 1
    assert paths[0].startswith("/proc/self/fd/")
    assert list(tmp_path.iterdir()) == []


def test_identity_temp_file_is_private_and_deleted(
    certs: CertKit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(os, "memfd_create", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    modes: list[int] = []
    original = ssl.SSLContext.load_cert_chain

    def spy(self: ssl.SSLContext, certfile: Any, *args: Any, **kwargs: Any) -> None:
        assert Path(certfile).parent == tmp_path
        modes.append(stat.S_IMODE(os.stat(certfile).st_mode))
        original(self, certfile, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", spy)
    make_server(certs).context  # noqa: B018
    assert modes == [0o600]
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------- pinned anchors


def test_client_trusting_only_a_pinned_unknown_ca_leaf_connects(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    client = ClientPolicy(pinned=certs.server("other_ca").cert_pem, **only(version))
    result = handshake(client, make_server(certs, "other_ca"))
    assert result.client_error is None
    assert result.server_error is None


def test_client_pinned_to_another_leaf_is_refused(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    client = ClientPolicy(pinned=certs.server().cert_pem, **only(version))
    result = handshake(client, make_server(certs, "other_ca"))
    assert result.client_verify_code == UNABLE_TO_GET_ISSUER_CERT_LOCALLY


def test_pinned_self_signed_server_connects(certs: CertKit) -> None:
    client = ClientPolicy(pinned=certs.server("self_signed").cert_file)
    result = handshake(client, make_server(certs, "self_signed"))
    assert result.client_error is None


def test_pinning_does_not_skip_the_name_check(certs: CertKit) -> None:
    client = ClientPolicy(pinned=certs.server("wrong_name").cert_pem)
    result = handshake(client, make_server(certs, "wrong_name"))
    assert result.client_verify_code == HOSTNAME_MISMATCH


def test_pinning_does_not_skip_the_expiry_check(certs: CertKit) -> None:
    client = ClientPolicy(pinned=certs.server("expired").cert_pem)
    result = handshake(client, make_server(certs, "expired"))
    assert result.client_verify_code == CERT_HAS_EXPIRED


def test_pinned_self_signed_client_is_accepted(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    server = make_server(
        certs,
        client_auth=ClientAuth.REQUIRED,
        pinned_clients=certs.client("self_signed").cert_pem,
    )
    client = ClientPolicy(
        trust=certs.ca_pem,
        identity=client_identity(certs, "self_signed"),
        **only(version),
    )
    result = handshake(client, server)
    assert result.client_error is None
    assert result.server_error is None


def test_pinned_clients_refuse_another_client(
    certs: CertKit, version: ssl.TLSVersion
) -> None:
    server = make_server(
        certs,
        client_auth=ClientAuth.REQUIRED,
        pinned_clients=certs.client("self_signed").cert_pem,
    )
    client = ClientPolicy(
        trust=certs.ca_pem, identity=client_identity(certs, "other_ca"), **only(version)
    )
    result = handshake(client, server)
    assert result.server_verify_code == UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    assert reason(result.client_error) == "TLSV1_ALERT_UNKNOWN_CA"


def test_pinned_and_trusted_ca_combine(certs: CertKit) -> None:
    client = ClientPolicy(trust=certs.ca_pem, pinned=certs.server("other_ca").cert_pem)
    assert handshake(client, make_server(certs)).client_error is None
    assert handshake(client, make_server(certs, "other_ca")).client_error is None


# ---------------------------------------------------------------- explain


def test_default_client_explain_names_what_the_server_proves() -> None:
    text = ClientPolicy().explain()
    assert "system trust store" in text
    assert "valid now" in text
    assert "subject alternative name matching the name we dialled" in text
    assert "common names are ignored" in text
    assert "We present no client certificate." in text
    assert "TLS 1.2 or newer." in text


def test_client_explain_names_the_anchors_identity_and_pins(certs: CertKit) -> None:
    text = ClientPolicy(
        trust=certs.ca_pem,
        pinned=certs.server("other_ca").cert_pem,
        identity=client_identity(certs),
        spki_pins={certs.server().info.spki_sha256},
        alpn=("h2",),
        name="api",
        **only(TLS13),
    ).explain()
    assert text.startswith("Policy 'api':")
    assert certs.server("other_ca").info.subject in text
    assert "CN=client.example" in text
    assert "the SPKI pin" in text
    assert "TLS 1.3 only." in text
    assert "we offer h2" in text


def test_insecure_explain_says_the_server_proves_nothing() -> None:
    with pytest.warns(PolicyWarning):
        text = ClientPolicy(insecure=True).explain()
    assert "The server proves nothing" in text


def test_adopted_client_explain_mentions_common_name_fallback() -> None:
    ctx = ssl.create_default_context()
    text = ClientPolicy.from_ssl_context(ctx).explain()
    assert "adopted ssl.SSLContext" in text
    assert "common name" in text


def test_server_explain_for_mutual_tls(certs: CertKit) -> None:
    text = make_server(
        certs,
        client_auth=ClientAuth.REQUIRED,
        client_trust=certs.ca_pem,
        authorize=lambda peer: True,
        alpn=("h2",),
        alpn_required=True,
    ).explain()
    assert "CN=localhost" in text
    assert "Every client must present a certificate chain to the CA" in text
    assert "ClientAuth.REQUIRED" in text
    assert "authorize(peer)" in text
    assert "alert 120" in text


def test_server_explain_without_client_auth(certs: CertKit) -> None:
    text = make_server(certs).explain()
    assert "not asked for a certificate" in text
    assert "prove nothing" in text


def test_server_explain_for_optional_client_auth(certs: CertKit) -> None:
    text = make_server(
        certs, client_auth=ClientAuth.OPTIONAL, client_trust=certs.ca_pem
    ).explain()
    assert "may send none" in text
    assert "names are not checked (pass authorize=" in text


# ---------------------------------------------------------- coerce_policy


def test_coerce_policy_returns_a_policy_as_it_is(certs: CertKit) -> None:
    client, server = ClientPolicy(), make_server(certs)
    assert coerce_policy(client, server_side=False) is client
    assert coerce_policy(server, server_side=True) is server


def test_coerce_policy_refuses_a_client_policy_for_a_server() -> None:
    with pytest.raises(PolicyError, match="pass a ServerPolicy"):
        coerce_policy(ClientPolicy(), server_side=True)


def test_coerce_policy_refuses_a_server_policy_for_a_client(certs: CertKit) -> None:
    with pytest.raises(PolicyError, match="pass a ClientPolicy"):
        coerce_policy(make_server(certs), server_side=False)


def test_coerce_policy_adopts_a_raw_context(certs: CertKit) -> None:
    client_ctx, server_ctx = ssl.create_default_context(), certs.server_context()
    client = coerce_policy(client_ctx, server_side=False)
    server = coerce_policy(server_ctx, server_side=True)
    assert isinstance(client, ClientPolicy)
    assert client.context is client_ctx
    assert isinstance(server, ServerPolicy)
    assert server.context is server_ctx


def test_coerce_policy_lints_a_raw_context() -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    with pytest.raises(PolicyError):
        coerce_policy(ctx, server_side=False)


def test_coerce_policy_refuses_other_objects() -> None:
    with pytest.raises(TypeError):
        coerce_policy("localhost", server_side=False)  # type: ignore[call-overload]


# --------------------------------------------------------------- attributes


def test_policy_sides_and_identity_flags(certs: CertKit) -> None:
    assert ClientPolicy.server_side is False
    assert ServerPolicy.server_side is True
    assert not ClientPolicy().has_identity
    assert ClientPolicy(identity=client_identity(certs)).has_identity
    adopted = ClientPolicy.from_ssl_context(
        certs.client_context(identity="valid"), has_identity=True
    )
    assert adopted.has_identity
    assert make_server(certs).has_identity


def test_authorize_is_kept_for_the_engine(certs: CertKit) -> None:
    def authorize(peer: PeerInfo) -> bool:
        return peer.certificate is not None

    server = make_server(
        certs,
        client_auth=ClientAuth.REQUIRED,
        client_trust=certs.ca_pem,
        authorize=authorize,
    )
    assert server.authorize is authorize


def test_spki_pins_are_normalised_to_bytes(certs: CertKit) -> None:
    info = certs.server().info
    policy = ClientPolicy(spki_pins=[info.spki_pin, f"sha256//{info.spki_pin}"])
    assert policy.spki_pins == frozenset({info.spki_sha256})


def test_adopted_client_context_does_not_wait_for_a_verdict_by_default() -> None:
    """Code ported from trio.SSLStream keeps trio's handshake: no confirmation."""
    context = ssl.create_default_context()
    assert ClientPolicy.from_ssl_context(context).confirm_client_auth == "never"
    assert ClientPolicy().confirm_client_auth == "auto"
