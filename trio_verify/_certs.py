"""Read-only views of X.509 certificates and of what is known about a TLS peer.

This is the ``certs`` layer: it turns DER bytes into the facts that explain
a verification failure (validity period, names, issuer, key) and into SPKI
pins. It imports neither trio nor sockets.

Parsing a certificate with :mod:`cryptography` costs about 12–15 µs and
checking a signature about 100 µs, so :class:`CertificateInfo` parses
lazily, on the first property that needs it, and computes every property at
most once. The SPKI pin is cut straight out of the DER bytes, without
parsing the certificate at all, so checking pins stays cheap.
"""

from __future__ import annotations

import _ssl
import base64
import hashlib
import ipaddress
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, Protocol, TypeVar, cast, overload

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import (
    dsa,
    ec,
    ed448,
    ed25519,
    rsa,
    x448,
    x25519,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CertificateInfo",
    "IPAddressValue",
    "PeerInfo",
    "chain_from_sslobject",
    "describe_names",
    "describe_validity",
    "load_pem_chain",
    "spki_sha256_from_pem",
]

IPAddressValue = (
    ipaddress.IPv4Address
    | ipaddress.IPv6Address
    | ipaddress.IPv4Network
    | ipaddress.IPv6Network
)
"""An IP address subject alternative name (a network only in odd certificates)."""

_T = TypeVar("_T")

# OpenSSL's short names, which is how `openssl x509 -text` prints them.
_EKU_NAMES: dict[str, str] = {
    ExtendedKeyUsageOID.SERVER_AUTH.dotted_string: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH.dotted_string: "clientAuth",
    ExtendedKeyUsageOID.CODE_SIGNING.dotted_string: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION.dotted_string: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING.dotted_string: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING.dotted_string: "OCSPSigning",
    ExtendedKeyUsageOID.IPSEC_IKE.dotted_string: "ipsecIKE",
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE.dotted_string: "anyExtendedKeyUsage",
}

_NIST_CURVES: dict[str, str] = {
    "secp256r1": "P-256",
    "secp384r1": "P-384",
    "secp521r1": "P-521",
}

# How many names describe_names() lists before summarising the rest: some
# certificates carry hundreds of names.
_MAX_LISTED_NAMES = 8


class _cached(Generic[_T]):
    """A property of :class:`CertificateInfo` computed once, on first use.

    :func:`functools.cached_property` needs an instance ``__dict__``, which a
    slotted class does not have, so the value is kept in the instance's
    private cache instead.
    """

    def __init__(self, func: Callable[[CertificateInfo], _T]) -> None:
        self._func = func
        self._name = func.__name__
        self.__doc__ = func.__doc__

    @overload
    def __get__(self, obj: None, owner: type[object]) -> _cached[_T]: ...

    @overload
    def __get__(self, obj: CertificateInfo, owner: type[object]) -> _T: ...

    def __get__(
        self, obj: CertificateInfo | None, owner: type[object]
    ) -> _T | _cached[_T]:
        if obj is None:
            return self
        cache = obj._cache
        try:
            return cast(_T, cache[self._name])
        except KeyError:
            pass
        # Two threads may both compute a value; both get equal results, so
        # no lock is needed.
        value = self._func(obj)
        cache[self._name] = value
        return value


@dataclass(frozen=True, slots=True, repr=False)
class CertificateInfo:
    """One X.509 certificate, with its facts computed lazily and cached.

    Build it with :meth:`from_der` or :meth:`from_cryptography`. Equality and
    hashing use the DER bytes only. Nothing is parsed until a property needs
    it, so a malformed certificate raises :exc:`ValueError` from the first
    property that parses it, not from the constructor.

    Attributes:
        der: The certificate in DER form, exactly as received.
    """

    der: bytes
    _cache: dict[str, object] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    @classmethod
    def from_der(cls, der: bytes) -> CertificateInfo:
        """Wrap a DER-encoded certificate without parsing it yet."""
        return cls(bytes(der))

    @classmethod
    def from_cryptography(cls, cert: x509.Certificate) -> CertificateInfo:
        """Wrap an already parsed :class:`cryptography.x509.Certificate`."""
        info = cls(cert.public_bytes(serialization.Encoding.DER))
        info._cache["certificate"] = cert
        return info

    def __reduce__(self) -> tuple[Callable[[bytes], CertificateInfo], tuple[bytes]]:
        # Pickle and copy the DER bytes alone: the cache may hold objects
        # that do not pickle, and is cheap to rebuild.
        return (CertificateInfo.from_der, (self.der,))

    def __repr__(self) -> str:
        return f"<CertificateInfo {self.label!r} sha256={self.sha256_fingerprint}>"

    @_cached
    def certificate(self) -> x509.Certificate:
        """The parsed :class:`cryptography.x509.Certificate`."""
        return x509.load_der_x509_certificate(self.der)

    @_cached
    def subject(self) -> str:
        """The subject as an RFC 4514 string, e.g. ``"CN=localhost,O=Example"``."""
        return self.certificate.subject.rfc4514_string()

    @_cached
    def issuer(self) -> str:
        """The issuer as an RFC 4514 string."""
        return self.certificate.issuer.rfc4514_string()

    @property
    def label(self) -> str:
        """A name for people: the subject, else the first subject alternative
        name, else the SHA-256 fingerprint (a SPIFFE certificate often has an
        empty subject).  Never raises: a certificate that OpenSSL accepted
        but ``cryptography`` cannot parse is named by its fingerprint."""
        try:
            subject = self.subject
            if subject:
                return subject
            for names in (self.uris, self.dns_names, self.emails):
                if names:
                    return names[0]
            if self.ip_addresses:
                return str(self.ip_addresses[0])
        except Exception:
            pass
        return f"sha256:{self.sha256_fingerprint}"

    @_cached
    def serial_number(self) -> int:
        """The serial number."""
        return self.certificate.serial_number

    @_cached
    def not_before(self) -> datetime:
        """Start of the validity period, a timezone-aware UTC datetime."""
        return self.certificate.not_valid_before_utc

    @_cached
    def not_after(self) -> datetime:
        """End of the validity period (inclusive), a timezone-aware UTC datetime."""
        return self.certificate.not_valid_after_utc

    @_cached
    def _san(self) -> x509.SubjectAlternativeName | None:
        try:
            ext = self.certificate.extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            )
        except x509.ExtensionNotFound:
            return None
        return ext.value

    @_cached
    def has_subject_alt_names(self) -> bool:
        """Whether the certificate has a subject alternative name extension."""
        return self._san is not None

    @_cached
    def dns_names(self) -> tuple[str, ...]:
        """DNS names from the subject alternative names (IDNs in A-label form)."""
        san = self._san
        return () if san is None else tuple(san.get_values_for_type(x509.DNSName))

    @_cached
    def ip_addresses(self) -> tuple[IPAddressValue, ...]:
        """IP addresses from the subject alternative names."""
        san = self._san
        return () if san is None else tuple(san.get_values_for_type(x509.IPAddress))

    @_cached
    def uris(self) -> tuple[str, ...]:
        """URIs from the subject alternative names (e.g. SPIFFE ids)."""
        san = self._san
        return (
            ()
            if san is None
            else tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
        )

    @_cached
    def emails(self) -> tuple[str, ...]:
        """Email addresses (``rfc822Name``) from the subject alternative names."""
        san = self._san
        return () if san is None else tuple(san.get_values_for_type(x509.RFC822Name))

    @_cached
    def common_name(self) -> str | None:
        """The subject's common name, or ``None``.

        Shown for diagnosis only: trio_verify never uses it to check a host
        name. When a subject has several, the last (most specific) is taken.
        """
        attrs = self.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not attrs:
            return None
        value = attrs[-1].value
        return value if isinstance(value, str) else value.decode("utf-8", "replace")

    @_cached
    def key_description(self) -> str:
        """The public key's algorithm and size, e.g. ``"ECDSA P-256"``, ``"RSA 2048"``."""
        try:
            key = self.certificate.public_key()
        except UnsupportedAlgorithm:
            oid = self.certificate.public_key_algorithm_oid.dotted_string
            return f"unknown key type {oid}"
        if isinstance(key, rsa.RSAPublicKey):
            return f"RSA {key.key_size}"
        if isinstance(key, ec.EllipticCurvePublicKey):
            return f"ECDSA {_NIST_CURVES.get(key.curve.name, key.curve.name)}"
        if isinstance(key, ed25519.Ed25519PublicKey):
            return "Ed25519"
        if isinstance(key, ed448.Ed448PublicKey):
            return "Ed448"
        if isinstance(key, dsa.DSAPublicKey):
            return f"DSA {key.key_size}"
        if isinstance(key, x25519.X25519PublicKey):
            return "X25519"
        if isinstance(key, x448.X448PublicKey):
            return "X448"
        return type(key).__name__

    @_cached
    def sha256_fingerprint(self) -> str:
        """SHA-256 of the whole certificate, as lowercase hex without colons."""
        return hashlib.sha256(self.der).hexdigest()

    @_cached
    def spki_sha256(self) -> bytes:
        """SHA-256 of the DER SubjectPublicKeyInfo: the value an SPKI pin holds.

        Hashed from the bytes exactly as they appear in the certificate (the
        way curl and browsers compute pins), not from a re-encoding of the key.
        """
        return hashlib.sha256(_spki_from_certificate_der(self.der)).digest()

    @_cached
    def spki_pin(self) -> str:
        """:attr:`spki_sha256` in base64, as in curl's ``sha256//`` pins (no prefix)."""
        return base64.b64encode(self.spki_sha256).decode("ascii")

    @_cached
    def is_self_signed(self) -> bool:
        """Whether subject equals issuer and the certificate's own key signed it."""
        cert = self.certificate
        if cert.subject != cert.issuer:
            return False
        try:
            cert.verify_directly_issued_by(cert)
        except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
            return False
        return True

    @_cached
    def is_ca(self) -> bool:
        """Whether basic constraints say ``CA:TRUE``."""
        try:
            ext = self.certificate.extensions.get_extension_for_class(
                x509.BasicConstraints
            )
        except x509.ExtensionNotFound:
            return False
        return ext.value.ca

    @_cached
    def extended_key_usages(self) -> tuple[str, ...]:
        """The extended key usages, by OpenSSL short name or dotted OID.

        Known purposes are named as OpenSSL names them (``"serverAuth"``,
        ``"clientAuth"``, ``"codeSigning"``, ``"emailProtection"``, ...);
        others are dotted OID strings. An empty tuple means the certificate
        has no extended key usage extension, i.e. its use is not restricted
        by one.
        """
        try:
            ext = self.certificate.extensions.get_extension_for_class(
                x509.ExtendedKeyUsage
            )
        except x509.ExtensionNotFound:
            return ()
        return tuple(
            _EKU_NAMES.get(oid.dotted_string, oid.dotted_string) for oid in ext.value
        )

    @_cached
    def signature_hash(self) -> str | None:
        """The hash of the issuer's signature, e.g. ``"sha256"``.

        ``None`` for algorithms without a separate hash (Ed25519, Ed448) and
        for algorithms :mod:`cryptography` does not know.
        """
        try:
            algorithm = self.certificate.signature_hash_algorithm
        except UnsupportedAlgorithm:
            return None
        return None if algorithm is None else algorithm.name


def _der_element(data: bytes, pos: int) -> tuple[int, int, int]:
    """Return ``(tag, content_start, end)`` of the DER element at *pos*."""
    try:
        tag = data[pos]
        length = data[pos + 1]
    except IndexError:
        raise ValueError("truncated DER") from None
    start = pos + 2
    if length & 0x80:
        count = length & 0x7F
        # DER lengths are minimal; a certificate never needs more than 4 bytes.
        if not 1 <= count <= 4 or start + count > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    end = start + length
    if end > len(data):
        raise ValueError("truncated DER")
    return tag, start, end


def _spki_from_certificate_der(der: bytes) -> bytes:
    """Cut the SubjectPublicKeyInfo element out of a DER certificate.

    Certificate ::= SEQUENCE { tbsCertificate, ... } and TBSCertificate ::=
    SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer,
    validity, subject, subjectPublicKeyInfo, ... } (RFC 5280 §4.1).
    """
    _, cert_start, _ = _der_element(der, 0)
    _, pos, _ = _der_element(der, cert_start)
    tag, _, end = _der_element(der, pos)
    if tag == 0xA0:  # the explicit version tag
        pos = end
    for _field in range(5):  # serialNumber, signature, issuer, validity, subject
        _, _, pos = _der_element(der, pos)
    tag, _, end = _der_element(der, pos)
    if tag != 0x30:
        raise ValueError("no SubjectPublicKeyInfo where RFC 5280 puts it")
    return der[pos:end]


def spki_sha256_from_pem(pem: bytes) -> bytes:
    """Return the SPKI SHA-256 pin of a PEM certificate or public key.

    Args:
        pem: A PEM ``CERTIFICATE`` (the first one is used when there are
            several) or a PEM ``PUBLIC KEY``.

    Returns:
        The 32-byte SHA-256 of the DER SubjectPublicKeyInfo, the value that
        :attr:`CertificateInfo.spki_sha256` gives for the same key.

    Raises:
        ValueError: if *pem* holds neither.
    """
    if b"-----BEGIN CERTIFICATE-----" in pem:
        return load_pem_chain(pem)[0].spki_sha256
    key = serialization.load_pem_public_key(pem)
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()


def load_pem_chain(pem: bytes) -> tuple[CertificateInfo, ...]:
    """Parse every PEM certificate in *pem*, in order.

    Raises:
        ValueError: if *pem* holds no certificate or a malformed one.
    """
    return tuple(
        CertificateInfo.from_cryptography(cert)
        for cert in x509.load_pem_x509_certificates(pem)
    )


def _describe_days(days: int, *, past: bool) -> str:
    unit = "1 day" if days == 1 else f"{days} days"
    return f"{unit} ago" if past else f"in {unit}"


def describe_validity(cert: CertificateInfo, now: datetime | None = None) -> str | None:
    """Explain why *cert* is outside its validity period, or return ``None``.

    The bounds are inclusive, as in OpenSSL. Days are counted between UTC
    calendar dates, so the count always agrees with the date shown; when the
    bound falls on today's date the time of day is given too.

    Args:
        cert: The certificate.
        now: The moment to judge at; defaults to the current time. A naive
            datetime is taken to be UTC.

    Returns:
        ``None`` when *cert* is valid at *now*, else a sentence such as
        ``"certificate expired 2026-01-03, 328 days ago"`` or
        ``"certificate is not valid until 2027-02-01, in 66 days"``.
    """
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    else:
        now = now.astimezone(UTC)
    if now > cert.not_after:
        bound = cert.not_after
        days = (now.date() - bound.date()).days
        if days == 0:
            return f"certificate expired {bound:%Y-%m-%d %H:%M:%S} UTC, earlier today"
        return (
            f"certificate expired {bound:%Y-%m-%d}, {_describe_days(days, past=True)}"
        )
    if now < cert.not_before:
        bound = cert.not_before
        days = (bound.date() - now.date()).days
        if days == 0:
            return (
                f"certificate is not valid until {bound:%Y-%m-%d %H:%M:%S} UTC, "
                "later today"
            )
        return (
            f"certificate is not valid until {bound:%Y-%m-%d}, "
            f"{_describe_days(days, past=False)}"
        )
    return None


def describe_names(cert: CertificateInfo, wanted: str) -> str:
    """Say which names *cert* is valid for, and that *wanted* is not one.

    Lists the DNS and IP subject alternative names, the only names a host
    name check uses. A certificate without them gets an explanation instead;
    its common name, if any, is quoted with a note that it does not count.

    Args:
        cert: The certificate that failed the name check.
        wanted: The host name or IP address that was checked.

    Returns:
        A sentence such as ``"certificate is valid for a.example, b.example,
        not c.example"``.
    """
    names = [*cert.dns_names, *(str(ip) for ip in cert.ip_addresses)]
    if names:
        listed = ", ".join(names[:_MAX_LISTED_NAMES])
        if len(names) > _MAX_LISTED_NAMES:
            listed += f" (and {len(names) - _MAX_LISTED_NAMES} more)"
        return f"certificate is valid for {listed}, not {wanted}"
    if cert.has_subject_alt_names:
        reason = "certificate has no DNS or IP subject alternative names"
    else:
        reason = "certificate has no subject alternative names"
    if cert.common_name is not None:
        reason += f" (common name {cert.common_name!r} is not used for name checks)"
    return f"{reason}, not valid for {wanted}"


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """What is known about the other end of a TLS connection."""

    certificate: CertificateInfo | None = None
    """The peer's own (leaf) certificate, or ``None`` if it sent none."""

    chain: tuple[CertificateInfo, ...] = ()
    """The peer's certificate chain, leaf first; empty when unknown.

    OpenSSL keeps no chain for a resumed session, so it is empty then even
    though :attr:`certificate` is known.
    """

    chain_verified: bool = False
    """``True`` when :attr:`chain` is the chain OpenSSL verified, up to and
    including the trust anchor; ``False`` when it is what the peer sent, not
    verified."""

    server_name: str | None = None
    """The server name: the one the client asked for (SNI), on either side."""

    alpn_protocol: str | None = None
    """The application protocol agreed by ALPN, or ``None``."""

    tls_version: str | None = None
    """The protocol version, as :meth:`ssl.SSLObject.version` gives it
    (``"TLSv1.3"``), or ``None`` before the handshake completes."""

    cipher: tuple[str, str, int] | None = None
    """The cipher suite as :meth:`ssl.SSLObject.cipher` gives it: name,
    protocol, secret bits."""

    session_reused: bool = False
    """Whether the connection resumed an earlier TLS session."""


class _RawCertificate(Protocol):
    """What ``_ssl.Certificate`` offers (private to CPython before 3.13)."""

    def public_bytes(self, format: int, /) -> bytes | str: ...


_ChainGetter = Callable[[], Sequence[bytes | _RawCertificate] | None]


def _raw_chain(obj: ssl.SSLObject, verified: bool) -> list[bytes]:
    name = "get_verified_chain" if verified else "get_unverified_chain"
    # Python 3.13 made these public, returning DER bytes. Since 3.10 the
    # _ssl object underneath has had them, returning _ssl.Certificate
    # objects, or None where OpenSSL has no chain.
    getter: _ChainGetter | None = getattr(obj, name, None)
    if getter is None:
        getter = getattr(getattr(obj, "_sslobj", None), name, None)
    if getter is None:
        return []
    try:
        items = getter()
        if not items:
            return []
        ders: list[bytes] = []
        for item in items:
            der = (
                item
                if isinstance(item, bytes)
                else item.public_bytes(_ssl.ENCODING_DER)
            )
            if not isinstance(der, bytes):
                return []
            ders.append(der)
    except (AttributeError, TypeError, ValueError, OSError):
        return []
    return ders


def chain_from_sslobject(
    obj: ssl.SSLObject, *, verified: bool
) -> tuple[CertificateInfo, ...]:
    """Return the peer's certificate chain, leaf first, or ``()``.

    Never raises: where the Python version or OpenSSL's state offers no chain,
    the result is empty.

    Args:
        obj: The TLS connection.
        verified: ``True`` for the chain OpenSSL verified, which runs from the
            peer's certificate to the trust anchor. It is returned only once
            the handshake has completed with verification enabled: OpenSSL
            also records the chain it was building when verification
            *failed*, and with ``CERT_NONE`` it records one whatever the
            outcome, and neither is verified. ``False`` for what the peer
            sent, unverified, in the peer's order. That is available even
            after this side refused the peer's certificate, which is when it
            explains most. A server that refused a client certificate keeps
            no copy of what the client sent; the chain OpenSSL built while
            verifying it is returned instead, which starts with the client's
            certificate and may end with a local trust anchor.

    After a failed TLS 1.3 post-handshake authentication the handshake has
    long completed, yet OpenSSL's "verified" chain is again the one that
    failed: do not ask for the verified chain of a connection that has
    refused its peer's certificate.
    """
    if verified:
        if obj.version() is None or obj.context.verify_mode == ssl.CERT_NONE:
            return ()
        ders = _raw_chain(obj, verified=True)
    else:
        ders = _raw_chain(obj, verified=False) or _raw_chain(obj, verified=True)
    return tuple(CertificateInfo.from_der(der) for der in ders)
