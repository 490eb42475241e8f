"""Certificates made in memory for ``matrix`` and ``serve``.

An :class:`Authority` is the embedded CA (made with ``trustme``) or one the
user brings (``--ca-file``/``--ca-key``).  It issues end-entity certificates
with ``cryptography`` in the shape OpenSSL's ``VERIFY_X509_STRICT`` profile
asks for (basic constraints ``CA:FALSE``, key identifiers, key usage, subject
alternative names), so every certificate meant to be valid is valid under
trio_verify's default checks, and each broken one is broken in exactly one
way.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, get_args

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .. import CertificateInfo, Identity
from ._common import UsageError

__all__ = [
    "CLIENT_NAME",
    "KINDS",
    "SERVER_NAMES",
    "Authority",
    "CertFactory",
    "Issued",
    "Kind",
]

Kind = Literal[
    "none",
    "valid",
    "other-ca",
    "expired",
    "not-yet-valid",
    "wrong-name",
    "wrong-eku",
    "self-signed",
]
"""What a peer presents.

* ``none``: no certificate (a client only: a server always presents one).
* ``valid``: issued by the trusted CA for the expected names, valid now.
* ``other-ca``: as ``valid``, issued by a CA nobody trusts.
* ``expired``: as ``valid``, its validity ended 30 days ago.
* ``not-yet-valid``: as ``valid``, its validity starts in 30 days.
* ``wrong-name``: issued by the trusted CA for another name
  (``example.org`` for a server, ``someone-else.example`` for a client).
* ``wrong-eku``: as ``valid``, for the other purpose (extended key usage
  ``clientAuth`` on a server, ``serverAuth`` on a client).
* ``self-signed``: a self-signed end-entity certificate with the valid names.
"""

KINDS: tuple[Kind, ...] = get_args(Kind)

ORGANIZATION = "trio-verify"
SERVER_NAMES = ("localhost", "127.0.0.1", "::1")
CLIENT_NAME = "client.example"
WRONG_SERVER_NAME = "example.org"
WRONG_CLIENT_NAME = "someone-else.example"

_LeafKey = ec.EllipticCurvePrivateKey
_SigningKey = (
    ec.EllipticCurvePrivateKey
    | rsa.RSAPrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)


@dataclass(frozen=True)
class Issued:
    """A certificate chain (leaf first, no root) and its private key, in PEM."""

    name: str
    chain_pem: bytes
    key_pem: bytes
    info: CertificateInfo = field(compare=False)

    @property
    def cert_pem(self) -> bytes:
        """The leaf certificate alone."""
        return self.info.certificate.public_bytes(serialization.Encoding.PEM)

    def identity(self) -> Identity:
        """The trio_verify identity presenting this chain."""
        return Identity.from_pem(self.chain_pem, self.key_pem)


class Authority:
    """A CA certificate and its key, able to issue end-entity certificates."""

    def __init__(self, cert: x509.Certificate, key: _SigningKey) -> None:
        self.cert = cert
        self.key = key
        self.pem = cert.public_bytes(serialization.Encoding.PEM)
        self.info = CertificateInfo.from_cryptography(cert)

    @classmethod
    def embedded(cls, unit: str) -> Authority:
        """A new root CA made in memory by ``trustme``."""
        ca = trustme.CA(organization_name=ORGANIZATION, organization_unit_name=unit)
        cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
        key = serialization.load_pem_private_key(
            ca.private_key_pem.bytes(), password=None
        )
        assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
        return cls(cert, key)

    @classmethod
    def from_files(
        cls, cert_file: str | os.PathLike[str], key_file: str | os.PathLike[str]
    ) -> Authority:
        """The user's CA: a PEM certificate (the first one in the file) and key.

        Raises:
            UsageError: a file cannot be read, holds no certificate or key,
                the key is encrypted or is not the certificate's, or the
                certificate is not a CA.
        """
        try:
            cert_data = Path(cert_file).read_bytes()
            key_data = Path(key_file).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read the CA: {exc}") from None
        try:
            cert = x509.load_pem_x509_certificates(cert_data)[0]
        except ValueError:
            raise UsageError(f"{cert_file} holds no PEM certificate") from None
        try:
            key = serialization.load_pem_private_key(key_data, password=None)
        except TypeError:
            raise UsageError(
                f"{key_file} is encrypted; give an unencrypted copy "
                "(openssl pkey -in KEY -out PLAIN.key)"
            ) from None
        except ValueError:
            raise UsageError(f"{key_file} holds no PEM private key") from None
        if not isinstance(
            key,
            ec.EllipticCurvePrivateKey
            | rsa.RSAPrivateKey
            | ed25519.Ed25519PrivateKey
            | ed448.Ed448PrivateKey,
        ):
            raise UsageError(f"{key_file}: a {type(key).__name__} cannot sign")
        spki = (
            serialization.Encoding.DER,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(
            *spki
        ):
            raise UsageError(f"{key_file} is not the key of {cert_file}")
        authority = cls(cert, key)
        if not authority.info.is_ca:
            raise UsageError(
                f"{cert_file} is not a CA certificate (basic constraints CA:TRUE)"
            )
        return authority

    def problems(self, now: datetime | None = None) -> list[str]:
        """What in this CA certificate makes certificates it issues fail."""
        now = now or datetime.now(UTC)
        found = []
        if not (self.info.not_before <= now <= self.info.not_after):
            found.append("the CA certificate is not valid now")
        try:
            usage = self.cert.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            found.append(
                "the CA certificate has no key usage extension, which OpenSSL's "
                "strict checks (on in trio_verify) refuse"
            )
        else:
            if not usage.key_cert_sign:
                found.append("the CA certificate's key usage lacks keyCertSign")
        return found

    def issue(
        self,
        name: str,
        *,
        names: Sequence[str],
        common_name: str | None,
        eku: x509.ObjectIdentifier,
        not_before: datetime,
        not_after: datetime,
    ) -> Issued:
        """Issue an end-entity certificate signed by this CA."""
        return _issue(
            name,
            signer=self,
            names=names,
            common_name=common_name,
            eku=eku,
            not_before=not_before,
            not_after=not_after,
        )


def _issue(
    name: str,
    *,
    signer: Authority | None,
    names: Sequence[str],
    common_name: str | None,
    eku: x509.ObjectIdentifier,
    not_before: datetime,
    not_after: datetime,
) -> Issued:
    """Issue a leaf; ``signer=None`` makes it self-signed."""
    key: _LeafKey = ec.generate_private_key(ec.SECP256R1())
    public_key = key.public_key()
    attributes = [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, name),
    ]
    if common_name is not None:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    subject = x509.Name(attributes)
    signing_key: _SigningKey
    if signer is None:
        issuer_name = subject
        signing_key = key
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key)
    else:
        issuer_name = signer.cert.subject
        signing_key = signer.key
        try:
            ski = signer.cert.extensions.get_extension_for_class(
                x509.SubjectKeyIdentifier
            ).value
            aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        except x509.ExtensionNotFound:
            aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(
                signer.key.public_key()
            )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False
        )
        .add_extension(aki, critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in names]),
            critical=False,
        )
    algorithm = (
        None
        if isinstance(signing_key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
        else hashes.SHA256()
    )
    cert = builder.sign(signing_key, algorithm)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return Issued(
        name=name,
        chain_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key_pem,
        info=CertificateInfo.from_cryptography(cert),
    )


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


class CertFactory:
    """The trusted CA, an untrusted one, and certificates of every kind.

    Each certificate is made once, on first use (key generation is the slow
    part).

    Args:
        ca: The CA that issues the trusted certificates; by default one is
            made in memory.
        now: The moment validity periods are set around.
        server_names: The names a valid server certificate is for.
    """

    def __init__(
        self,
        ca: Authority | None = None,
        *,
        now: datetime | None = None,
        server_names: Sequence[str] = SERVER_NAMES,
    ) -> None:
        self.embedded = ca is None
        self.ca = ca or Authority.embedded("trio-verify CA")
        self.now = now or datetime.now(UTC)
        self.server_names = tuple(server_names)
        self._untrusted: Authority | None = None
        self._made: dict[str, Issued] = {}

    @property
    def untrusted(self) -> Authority:
        """A CA that no policy trusts."""
        if self._untrusted is None:
            self._untrusted = Authority.embedded("untrusted CA")
        return self._untrusted

    def server(self, kind: Kind) -> Issued:
        """The server certificate of ``kind`` (``none`` is not one)."""
        if kind == "none":
            raise ValueError("a server always presents a certificate")
        return self._get("server", kind)

    def client(self, kind: Kind) -> Issued | None:
        """The client certificate of ``kind``, ``None`` for ``none``."""
        if kind == "none":
            return None
        return self._get("client", kind)

    def _get(self, side: Literal["server", "client"], kind: Kind) -> Issued:
        name = f"{side}-{kind}"
        issued = self._made.get(name)
        if issued is None:
            issued = self._made[name] = self._make(name, side, kind)
        return issued

    def _make(self, name: str, side: Literal["server", "client"], kind: Kind) -> Issued:
        if side == "server":
            names: Sequence[str] = self.server_names
            common_name = self.server_names[0]
            eku = ExtendedKeyUsageOID.SERVER_AUTH
            wrong_name, wrong_eku = WRONG_SERVER_NAME, ExtendedKeyUsageOID.CLIENT_AUTH
        else:
            names = (CLIENT_NAME,)
            common_name = CLIENT_NAME
            eku = ExtendedKeyUsageOID.CLIENT_AUTH
            wrong_name, wrong_eku = WRONG_CLIENT_NAME, ExtendedKeyUsageOID.SERVER_AUTH
        signer: Authority | None = self.ca
        not_before = self.now - timedelta(days=1)
        not_after = self.now + timedelta(days=365)
        match kind:
            case "other-ca":
                signer = self.untrusted
            case "expired":
                not_before = self.now - timedelta(days=395)
                not_after = self.now - timedelta(days=30)
            case "not-yet-valid":
                not_before = self.now + timedelta(days=30)
                not_after = self.now + timedelta(days=395)
            case "wrong-name":
                names, common_name = (wrong_name,), wrong_name
            case "wrong-eku":
                eku = wrong_eku
            case "self-signed":
                signer = None
        return _issue(
            name,
            signer=signer,
            names=names,
            common_name=common_name,
            eku=eku,
            not_before=not_before,
            not_after=not_after,
        )
