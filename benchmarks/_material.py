"""Certificates and contexts for the benchmarks, made in memory with trustme.

Every implementation runs the very same TLS: the baselines are given the
:class:`ssl.SSLContext` objects that the trio_verify policies build, so the
cipher suite, key exchange, certificate checks and session tickets are
identical and only the code that drives OpenSSL differs.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Literal

import trustme

from trio_verify import ClientAuth, ClientPolicy, Identity, ServerPolicy

KeyKind = Literal["ecdsa", "rsa"]
"""ECDSA P-256 or RSA 2048 keys, for the CA and every certificate it issues."""

SERVER_NAME = "localhost"

_KEY_TYPES = {"ecdsa": trustme.KeyType.ECDSA, "rsa": trustme.KeyType.RSA}


@dataclass(frozen=True)
class Side:
    """One configuration of both ends: policies and their contexts."""

    client_policy: ClientPolicy
    server_policy: ServerPolicy

    @property
    def client_context(self) -> ssl.SSLContext:
        return self.client_policy.context

    @property
    def server_context(self) -> ssl.SSLContext:
        return self.server_policy.context


@dataclass(frozen=True)
class Material:
    """A CA, a server and a client identity, and both ends' configurations.

    Attributes:
        plain: the server asks for no client certificate.
        mutual: the server requires a client certificate (mutual TLS).
    """

    key: KeyKind
    plain: Side
    mutual: Side

    def side(self, mutual: bool) -> Side:
        return self.mutual if mutual else self.plain


def _identity(leaf: trustme.LeafCert) -> Identity:
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    return Identity.from_pem(chain, leaf.private_key_pem.bytes())


def make_material(key: KeyKind = "ecdsa") -> Material:
    """Issue fresh certificates; TLS 1.3 only on both ends."""
    key_type = _KEY_TYPES[key]
    ca = trustme.CA(key_type=key_type)
    ca_pem = ca.cert_pem.bytes()
    server = _identity(ca.issue_cert(SERVER_NAME, "127.0.0.1", key_type=key_type))
    client = _identity(ca.issue_cert("client.example", key_type=key_type))
    tls13 = ssl.TLSVersion.TLSv1_3
    plain = Side(
        ClientPolicy(trust=ca_pem, minimum_version=tls13),
        ServerPolicy(identity=server, minimum_version=tls13),
    )
    mutual = Side(
        ClientPolicy(trust=ca_pem, identity=client, minimum_version=tls13),
        ServerPolicy(
            identity=server,
            client_auth=ClientAuth.REQUIRED,
            client_trust=ca_pem,
            minimum_version=tls13,
        ),
    )
    return Material(key=key, plain=plain, mutual=mutual)
