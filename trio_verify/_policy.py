"""Verification policies: what each end of a connection must prove.

This is the ``policy`` layer. A :class:`ClientPolicy` or :class:`ServerPolicy`
is an immutable value that names a verification choice by what it *means*
and builds the :class:`ssl.SSLContext` that enforces it. It imports neither
trio nor sockets.

Theory of operation
-------------------

The ``ssl`` module's three verify modes mean different things on each side
(see the verify-mode matrix in the documentation): on a client
``CERT_OPTIONAL`` is ``CERT_REQUIRED``, and ``CERT_REQUIRED`` without
``check_hostname`` verifies a chain without checking whose it is. So the
client policy does not expose verify modes at all, and the server policy
exposes them as :class:`ClientAuth`, named after what the server asks of
clients.

Every configuration is checked when the policy is built, never during a
connection. One that cannot do what it says (a hostname check switched off
with nothing else identifying the server, client certificates requested with
nothing to verify them against) raises :exc:`PolicyError`; one that is legal
but weaker than it looks (``insecure=True``) warns with :exc:`PolicyWarning`.

Certificate files are read when the policy is built, so a policy is a value:
two policies made from the same certificates are equal and hash alike (the
connection pool uses policies as keys), and a file changed later does not
change a policy that already exists. The :class:`ssl.SSLContext` is built on
first use of :attr:`ClientPolicy.context` and kept, because building one
(loading the system store, decoding a key) costs far more than a handshake's
worth of Python.

Pinned certificates are trust anchors loaded next to the CAs, and every
context sets ``VERIFY_X509_PARTIAL_CHAIN`` so that OpenSSL accepts a chain
that ends in one. Pinning therefore does not weaken anything else: the
pinned certificate's validity dates and the host name are still checked
(measured on OpenSSL 3.0).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import enum
import math
import os
import re
import ssl
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import ClassVar, Final, Literal, TypeAlias, overload

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from ._certs import CertificateInfo, PeerInfo, load_pem_chain
from ._errors import Alert, PolicyError, PolicyWarning

__all__ = [
    "ClientAuth",
    "ClientPolicy",
    "Identity",
    "Reject",
    "ServerPolicy",
    "coerce_policy",
]

CertificateSource: TypeAlias = "bytes | str | os.PathLike[str] | CertificateInfo"
"""One or more certificates: PEM or DER bytes, PEM text, a file path, or a
:class:`~trio_verify.CertificateInfo`. A ``str`` is PEM text when it contains
``-----BEGIN``, else a path."""

CertificateSources: TypeAlias = "CertificateSource | Iterable[CertificateSource]"
"""A :data:`CertificateSource` or any collection of them."""

TrustAnchor: TypeAlias = "Literal['system'] | CertificateInfo"
"""One trust anchor as a policy keeps it: ``"system"`` (the system trust
store) or one certificate."""

ConfirmClientAuth: TypeAlias = "Literal['never', 'auto', 'always']"
"""When a TLS 1.3 client waits for the server's verdict on its certificate."""

_SYSTEM: Final = "system"

# Building contexts is rare and cheap to serialise; one lock keeps a policy
# from building (and loading its key into) two contexts when threads race.
_BUILD_LOCK: Final = threading.Lock()

_PRIVATE_KEY_BLOCK: Final = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY)-----.+?-----END \1-----\r?\n?", re.DOTALL
)

_CONFIRM_CHOICES: Final = ("never", "auto", "always")

_VERSION_NAMES: Final = {
    ssl.TLSVersion.MINIMUM_SUPPORTED: "the oldest version OpenSSL allows",
    ssl.TLSVersion.SSLv3: "SSL 3.0",
    ssl.TLSVersion.TLSv1: "TLS 1.0",
    ssl.TLSVersion.TLSv1_1: "TLS 1.1",
    ssl.TLSVersion.TLSv1_2: "TLS 1.2",
    ssl.TLSVersion.TLSv1_3: "TLS 1.3",
}


class ClientAuth(enum.Enum):
    """What a server asks of clients: whether it requests a certificate.

    Named after what each choice means, as Go's ``tls.ClientAuthType`` is,
    rather than after the ``ssl`` verify mode that implements it. A
    certificate that a client does send is always verified: the ``ssl``
    module cannot request one and accept anything (it has no verify
    callback), so that choice does not exist here; pin the expected client
    certificates instead (``pinned_clients=``).
    """

    NONE = "none"
    """No certificate is requested, so clients never send one and prove
    nothing at the TLS layer (``ssl.CERT_NONE``, Go ``NoClientCert``)."""

    OPTIONAL = "optional"
    """A certificate is requested but a client may send none. One that is
    sent is verified, and a bad one fails the handshake
    (``ssl.CERT_OPTIONAL``, Go ``VerifyClientCertIfGiven``)."""

    REQUIRED = "required"
    """Every client must send a certificate, which is verified: mutual TLS
    (``ssl.CERT_REQUIRED``, Go ``RequireAndVerifyClientCert``)."""

    DEFERRED = "deferred"
    """No certificate is requested in the handshake; the server asks later,
    per connection, with :meth:`TLSStream.request_client_certificate
    <trio_verify.TLSStream.request_client_certificate>` (TLS 1.3
    post-handshake authentication; the client's policy must opt in with
    ``post_handshake_auth=True``).  A certificate the client then sends is
    verified, and none at all is refused."""


_VERIFY_MODES: Final = {
    ClientAuth.NONE: ssl.CERT_NONE,
    ClientAuth.OPTIONAL: ssl.CERT_OPTIONAL,
    ClientAuth.REQUIRED: ssl.CERT_REQUIRED,
    # With post_handshake_auth on a server context, OpenSSL asks for nothing
    # in the handshake and verifies what comes when asked later.
    ClientAuth.DEFERRED: ssl.CERT_REQUIRED,
}
_CLIENT_AUTH_BY_MODE: Final = {
    ssl.CERT_NONE: ClientAuth.NONE,
    ssl.CERT_OPTIONAL: ClientAuth.OPTIONAL,
    ssl.CERT_REQUIRED: ClientAuth.REQUIRED,
}


@dataclasses.dataclass(frozen=True)
class Identity:
    """A certificate chain and the private key that goes with it.

    This is what a server presents, or a client when asked. Build one with
    :meth:`from_pem` or :meth:`from_files`; the key is checked against the
    leaf certificate at once, so a mismatch or a wrong password fails here
    rather than in the first handshake. Equal chains and keys make equal
    identities.

    The key is kept in memory as given (encrypted if it was). The ``ssl``
    module loads keys only from files, so when a context is built the key
    goes to an anonymous in-memory file where the platform has one
    (``memfd_create``), else to a private temporary file (mode 0600) that is
    deleted as soon as it has been read.

    Attributes:
        chain: The certificates, leaf first, then the intermediates.
        key: The private key in PEM form.
        password: The password of an encrypted key, else ``None``.
    """

    chain: tuple[CertificateInfo, ...]
    key: bytes = dataclasses.field(repr=False)
    password: bytes | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        chain = tuple(self.chain)
        if not chain or not all(isinstance(c, CertificateInfo) for c in chain):
            raise PolicyError(
                "An Identity needs at least one certificate, leaf first: build it "
                "with Identity.from_pem() or Identity.from_files()."
            )
        object.__setattr__(self, "chain", chain)
        _check_key_matches(chain[0], self.key, self.password)

    @classmethod
    def from_pem(
        cls, cert_chain: bytes, key: bytes, password: bytes | None = None
    ) -> Identity:
        """Build an identity from PEM data.

        Args:
            cert_chain: PEM certificates, leaf first, then the intermediates.
            key: The PEM private key of the leaf certificate. Only its
                ``PRIVATE KEY`` block is kept, so a file holding the
                certificates too may be passed as it is.
            password: The key's password, if it is encrypted.

        Raises:
            PolicyError: if there is no certificate, the key cannot be read
                (or needs a password that was not given), or the key does not
                belong to the leaf certificate.
        """
        try:
            chain = load_pem_chain(cert_chain)
        except ValueError:
            raise PolicyError(
                "The certificate chain holds no PEM certificate: pass the "
                "-----BEGIN CERTIFICATE----- blocks, leaf first."
            ) from None
        block = _PRIVATE_KEY_BLOCK.search(key)
        return cls(
            chain=chain,
            key=bytes(key) if block is None else block.group(0),
            password=password,
        )

    @classmethod
    def from_files(
        cls,
        cert_chain_path: str | os.PathLike[str],
        key_path: str | os.PathLike[str] | None = None,
        password: bytes | None = None,
    ) -> Identity:
        """Build an identity from PEM files, read now.

        Args:
            cert_chain_path: A PEM file of certificates, leaf first. It may
                hold the private key too.
            key_path: The PEM private key file; ``None`` when the key is in
                *cert_chain_path*.
            password: The key's password, if it is encrypted.

        Raises:
            PolicyError: as for :meth:`from_pem`, and when *key_path* is
                ``None`` and the certificate file holds no private key.
            OSError: if a file cannot be read.
        """
        cert_chain = _read_file(cert_chain_path)
        if key_path is not None:
            key = _read_file(key_path)
        elif _PRIVATE_KEY_BLOCK.search(cert_chain) is not None:
            key = cert_chain
        else:
            raise PolicyError(
                f"{os.fspath(cert_chain_path)!r} holds no private key: pass the "
                "key file as key_path=."
            )
        return cls.from_pem(cert_chain, key, password)

    @property
    def certificate(self) -> CertificateInfo:
        """The leaf certificate: the one that names this identity."""
        return self.chain[0]

    def _pem_bundle(self) -> bytes:
        certs = "".join(ssl.DER_cert_to_PEM_cert(c.der) for c in self.chain)
        return certs.encode("ascii") + self.key


def _check_key_matches(
    leaf: CertificateInfo, key: bytes, password: bytes | None
) -> None:
    try:
        # Only the public half is compared; OpenSSL checks the key itself
        # again when it loads it, so cryptography's slow RSA check is skipped.
        private_key = serialization.load_pem_private_key(
            key, password, unsafe_skip_rsa_key_validation=True
        )
    except TypeError:
        # cryptography's way of saying "password missing" or "password given
        # for an unencrypted key".
        if password is None:
            message = "The private key is encrypted: pass its password as password=."
        else:
            message = "The private key is not encrypted: pass password=None."
        raise PolicyError(message) from None
    except (ValueError, UnsupportedAlgorithm):
        raise PolicyError(
            "The private key cannot be read: it is not a PEM private key or the "
            "password is wrong."
        ) from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if private_key.public_key().public_bytes(
        *spki
    ) != leaf.certificate.public_key().public_bytes(*spki):
        raise PolicyError(
            f"The private key does not belong to the certificate {_label(leaf)}: "
            "pass the key that was issued with it, and the leaf certificate first."
        )


def _load_identity(context: ssl.SSLContext, identity: Identity) -> None:
    with _private_file(identity._pem_bundle()) as path:
        try:
            context.load_cert_chain(path, password=identity.password)
        except ssl.SSLError as exc:
            raise PolicyError(
                f"OpenSSL refuses the identity {_label(identity.certificate)} "
                f"({exc.reason or exc}): at its default security level keys "
                "must be RSA of 2048 bits or more, or ECDSA of 224 bits or "
                "more, and signatures SHA-256 or stronger; issue a new "
                "certificate."
            ) from exc


@contextlib.contextmanager
def _private_file(data: bytes) -> Iterator[str]:
    """Yield a path that reads back *data*, and remove it afterwards."""
    fd = _anonymous_file()
    if fd is not None:
        # An anonymous memory file has no name in any directory, so the key
        # never reaches a file system; OpenSSL opens it through /proc.
        try:
            _write_all(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    fd, path = tempfile.mkstemp(prefix="trio_verify-", suffix=".pem")  # mode 0600
    try:
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        yield path
    finally:
        os.unlink(path)


def _anonymous_file() -> int | None:
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is None or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        fd: int = memfd_create("trio_verify-identity", os.MFD_CLOEXEC)
    except OSError:  # e.g. forbidden by a seccomp filter
        return None
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_file(path: str | os.PathLike[str]) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _label(cert: CertificateInfo) -> str:
    """Name a certificate for people: its subject, else its fingerprint."""
    try:
        subject = cert.subject
    except ValueError:
        subject = ""
    return subject or f"with SHA-256 fingerprint {cert.sha256_fingerprint}"


def _parse_certificates(data: bytes, origin: str) -> tuple[CertificateInfo, ...]:
    if b"-----BEGIN" in data:
        try:
            return load_pem_chain(data)
        except ValueError:
            pass
    else:
        try:
            return (
                CertificateInfo.from_cryptography(x509.load_der_x509_certificate(data)),
            )
        except ValueError:
            pass
    raise PolicyError(
        f"{origin} holds no certificate: pass PEM (-----BEGIN CERTIFICATE-----) "
        "or DER certificates."
    )


def _certificates(
    value: object, *, param: str, allow_system: bool
) -> tuple[TrustAnchor, ...]:
    """Normalise a ``trust``-style argument: read files, split bundles."""
    items: Iterable[object]
    if isinstance(value, (bytes, str, os.PathLike, CertificateInfo)):
        items = (value,)
    elif isinstance(value, Iterable):
        items = value
    else:
        raise TypeError(
            f"{param}= takes certificates (PEM or DER bytes, file paths, "
            f"CertificateInfo) or a collection of them, not {type(value).__name__}"
        )
    anchors: list[TrustAnchor] = []
    for item in items:
        if isinstance(item, CertificateInfo):
            found: tuple[TrustAnchor, ...] = (item,)
        elif isinstance(item, bytes):
            found = _parse_certificates(item, f"The data passed as {param}=")
        elif isinstance(item, str) and item == _SYSTEM:
            if not allow_system:
                raise PolicyError(
                    f'{param}= takes certificates; "system" (the system trust '
                    "store) belongs in trust=."
                )
            found = (_SYSTEM,)
        elif isinstance(item, str) and "-----BEGIN" in item:
            found = _parse_certificates(
                item.encode("ascii"), f"The text passed as {param}="
            )
        elif isinstance(item, (str, os.PathLike)):
            try:
                data = _read_file(item)
            except IsADirectoryError:
                raise PolicyError(
                    f"{param}= was given the directory {os.fspath(item)!r}: pass "
                    "the certificate files in it instead."
                ) from None
            found = _parse_certificates(data, f"{os.fspath(item)!r}")
        else:
            raise TypeError(
                f"{param}= takes certificates (PEM or DER bytes, file paths, "
                f"CertificateInfo), not {type(item).__name__}"
            )
        anchors.extend(a for a in found if a not in anchors)
    return tuple(anchors)


def _pinned_certificates(value: object, *, param: str) -> tuple[CertificateInfo, ...]:
    found = _certificates(value, param=param, allow_system=False)
    return tuple(c for c in found if isinstance(c, CertificateInfo))


def _spki_pins(value: Iterable[bytes | str]) -> frozenset[bytes]:
    if isinstance(value, (bytes, str)):
        raise PolicyError(
            "spki_pins= takes a collection of pins: write spki_pins={pin}, not "
            "spki_pins=pin."
        )
    pins: set[bytes] = set()
    for pin in value:
        raw: bytes | None = None
        if isinstance(pin, bytes) and len(pin) == 32:
            raw = pin
        elif isinstance(pin, str):
            # curl writes pins as "sha256//<base64>"; accept that spelling too.
            text = pin.removeprefix("sha256//")
            with contextlib.suppress(ValueError):
                raw = _b64decode(text)
        if raw is None or len(raw) != 32:
            raise PolicyError(
                f"{pin!r} is not an SPKI pin: pass the 32-byte SHA-256 of the "
                "SubjectPublicKeyInfo, or its base64 (CertificateInfo.spki_pin)."
            )
        pins.add(raw)
    return frozenset(pins)


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _alpn(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise PolicyError(
            f"alpn= takes a sequence of protocol names: write alpn=({value!r},)."
        )
    protocols = tuple(value)
    for protocol in protocols:
        if (
            not isinstance(protocol, str)
            or not protocol.isascii()
            or not 1 <= len(protocol) <= 255
        ):
            raise PolicyError(
                f"{protocol!r} is not an ALPN protocol name: use 1 to 255 ASCII "
                'characters, such as "h2" or "http/1.1".'
            )
    return protocols


def _below_tls12(version: ssl.TLSVersion) -> bool:
    return version in (
        ssl.TLSVersion.MINIMUM_SUPPORTED,
        ssl.TLSVersion.SSLv3,
        ssl.TLSVersion.TLSv1,
        ssl.TLSVersion.TLSv1_1,
    )


def _versions(
    minimum: ssl.TLSVersion, maximum: ssl.TLSVersion | None
) -> tuple[ssl.TLSVersion, ssl.TLSVersion | None]:
    known = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)
    if not isinstance(minimum, ssl.TLSVersion) or minimum not in known:
        raise PolicyError(
            f"minimum_version={minimum!r} allows versions older than TLS 1.2, "
            "which are broken: use ssl.TLSVersion.TLSv1_2 or TLSv1_3."
        )
    if maximum == ssl.TLSVersion.MAXIMUM_SUPPORTED:
        maximum = None
    if maximum is not None and (
        not isinstance(maximum, ssl.TLSVersion) or maximum not in known
    ):
        raise PolicyError(
            f"maximum_version={maximum!r} allows no version from TLS 1.2 on: use "
            "ssl.TLSVersion.TLSv1_2, TLSv1_3 or None."
        )
    if maximum is not None and maximum < minimum:
        raise PolicyError(
            f"maximum_version {_VERSION_NAMES[maximum]} is below minimum_version "
            f"{_VERSION_NAMES[minimum]}, so no version is left: raise the maximum."
        )
    if ssl.TLSVersion.TLSv1_3 in (minimum, maximum) and not ssl.HAS_TLSv1_3:
        raise PolicyError(
            "This OpenSSL cannot do TLS 1.3: lower the version bounds to TLS 1.2."
        )
    return minimum, maximum


def _timeout(value: float | None, *, param: str, optional: bool) -> float | None:
    if value is None and optional:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        fix = "a positive number of seconds" + (" or None" if optional else "")
        raise PolicyError(f"{param}={value!r} is not a timeout: pass {fix}.")
    return float(value)


def _flag(value: object, param: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{param}= takes True or False, not {value!r}")
    return value


def _name(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"name= takes a string or None, not {value!r}")
    return value


def _describe_versions(minimum: ssl.TLSVersion, maximum: ssl.TLSVersion | None) -> str:
    low = _VERSION_NAMES.get(minimum, str(minimum))
    if maximum is None or maximum == ssl.TLSVersion.MAXIMUM_SUPPORTED:
        return f"{low} or newer."
    high = _VERSION_NAMES.get(maximum, str(maximum))
    if maximum == minimum:
        return f"{low} only."
    return f"{low} to {high.removeprefix('TLS ')}."


def _describe_certificates(certs: tuple[CertificateInfo, ...], noun: str) -> str:
    if len(certs) == 1:
        return f"the {noun} {_label(certs[0])}"
    # Subjects contain commas, so a list of them goes in parentheses.
    listed = "; ".join(_label(c) for c in certs[:3])
    more = f"; and {len(certs) - 3} more" if len(certs) > 3 else ""
    return f"one of {len(certs)} {noun}s ({listed}{more})"


def _describe_anchors(
    trust: tuple[TrustAnchor, ...], pinned: tuple[CertificateInfo, ...]
) -> str:
    targets = []
    if _SYSTEM in trust:
        targets.append("a CA in the system trust store")
    cas = tuple(c for c in trust if isinstance(c, CertificateInfo))
    if cas:
        targets.append(_describe_certificates(cas, "CA"))
    parts = [f"a certificate chain to {' or '.join(targets)}"] if targets else []
    if pinned:
        parts.append(_describe_certificates(pinned, "pinned certificate"))
    return " or ".join(parts)


def _new_context(
    protocol: ssl._SSLMethod,
    minimum: ssl.TLSVersion,
    maximum: ssl.TLSVersion | None,
    alpn: tuple[str, ...],
) -> ssl.SSLContext:
    """The secure defaults both sides share, on every Python version."""
    context = ssl.SSLContext(protocol)
    # What 3.13's create_default_context() sets, on every Python: reject
    # certificates that break RFC 5280, and let a trust anchor end a chain
    # even when it is not self-signed (that is what makes pinning work).
    context.verify_flags |= ssl.VERIFY_X509_STRICT | ssl.VERIFY_X509_PARTIAL_CHAIN
    context.hostname_checks_common_name = False
    context.minimum_version = minimum
    if maximum is not None:
        context.maximum_version = maximum
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def _load_anchors(
    context: ssl.SSLContext,
    anchors: Iterable[TrustAnchor],
    purpose: ssl.Purpose,
) -> None:
    ders = b"".join(a.der for a in anchors if isinstance(a, CertificateInfo))
    if ders:
        context.load_verify_locations(cadata=ders)
    if _SYSTEM in anchors:
        context.load_default_certs(purpose)


def _warn(message: str, stacklevel: int) -> None:
    warnings.warn(message, PolicyWarning, stacklevel=stacklevel + 1)


class _Policy:
    """What both policies share: the context cache and the adopted context."""

    _adopted: ssl.SSLContext | None
    _context: ssl.SSLContext | None

    def _get_context(self) -> ssl.SSLContext:
        if self._adopted is not None:
            return self._adopted
        context = self._context
        if context is None:
            with _BUILD_LOCK:
                context = self._context
                if context is None:
                    context = self._build_context()
                    object.__setattr__(self, "_context", context)
        return context

    def _build_context(self) -> ssl.SSLContext:
        raise NotImplementedError

    def _set(self, **values: object) -> None:
        for key, value in values.items():
            object.__setattr__(self, key, value)


@dataclasses.dataclass(frozen=True, init=False)
class ClientPolicy(_Policy):
    """How a client authenticates servers, and what it proves about itself.

    The default, ``ClientPolicy()``, authenticates the server as browsers
    do: its certificate chain must lead to a CA in the system trust store,
    be valid now, and carry a subject alternative name matching the name
    dialled (common names are never used, as in Go and rustls). TLS 1.2 is
    the oldest version allowed.

    All arguments are keyword-only and the policy is immutable; equal
    arguments make equal policies, which hash alike.
    :func:`dataclasses.replace` makes a changed copy.

    Args:
        trust: The CAs that may vouch for a server: ``"system"`` (the system
            trust store), certificates (PEM or DER bytes, PEM text, file
            paths, :class:`~trio_verify.CertificateInfo`), or a collection of
            those, such as ``("system", "corp-ca.pem")``. Files are read now.
            The default is the system store, unless *pinned* is given, in
            which case only the pinned certificates are trusted.
        pinned: Server certificates accepted as they are: each one is a trust
            anchor by itself, so a self-signed certificate or one from an
            unknown CA is accepted when it is exactly this certificate. Its
            validity dates and the host name are still checked.
        spki_pins: SHA-256 hashes of SubjectPublicKeyInfos (32 bytes, or
            base64 as :attr:`~trio_verify.CertificateInfo.spki_pin` gives,
            optionally prefixed ``sha256//`` as curl writes them). After the
            handshake the server's key must match one of them, in addition
            to everything else.
        identity: The certificate and key presented when a server asks for
            one.
        check_hostname: Whether the server's certificate must name the host
            dialled. Turning it off is allowed when the server is pinned
            (*spki_pins*, or *pinned* without *trust*), because the pin
            identifies it; otherwise it also needs
            *accept_any_trusted_server*.
        accept_any_trusted_server: With ``check_hostname=False`` and no pins,
            say that any server with a certificate from a trusted CA is
            acceptable, whatever its name. Warns with
            :exc:`~trio_verify.PolicyWarning`: that is not authentication.
        insecure: Accept any server certificate without verifying it at all
            (``ssl.CERT_NONE``). The only way to turn verification off, and
            never a default; warns with :exc:`~trio_verify.PolicyWarning`.
            *spki_pins* are still checked.
        alpn: Application protocols to offer, most preferred first.
        minimum_version: The oldest TLS version allowed: TLS 1.2 or 1.3.
        maximum_version: The newest TLS version allowed, or ``None`` for the
            newest OpenSSL supports.
        confirm_client_auth: In TLS 1.3 a server judges the client's
            certificate after the client's handshake has finished, so a
            rejected client learns of it only on its first read. ``"auto"``
            makes the handshake wait for the server's verdict whenever a
            client certificate was sent; ``"always"`` on every TLS 1.3
            connection; ``"never"`` does not wait.
        confirm_timeout: Seconds to wait for that verdict.
        handshake_timeout: Seconds allowed for the handshake, or ``None``.
        name: A name for this policy in reports and logs.

    Raises:
        PolicyError: when the arguments cannot mean what they say: no trust
            anchor at all, a hostname check turned off with nothing to
            identify the server, *trust* or *pinned* given with
            ``insecure=True``, versions older than TLS 1.2, ...
    """

    server_side: ClassVar[Literal[False]] = False
    """Always ``False``: this policy is for the client end."""

    trust: tuple[TrustAnchor, ...]
    """The CAs trusted to vouch for servers: ``"system"`` and certificates."""
    pinned: tuple[CertificateInfo, ...]
    """Server certificates trusted as they are."""
    spki_pins: frozenset[bytes]
    """SPKI SHA-256 pins the server's key must match, checked after the
    handshake; empty for none."""
    identity: Identity | None
    """The client certificate and key, or ``None``."""
    check_hostname: bool
    """Whether the server's certificate must name the host dialled."""
    accept_any_trusted_server: bool
    """Whether an unnamed, unpinned server was explicitly accepted."""
    insecure: bool
    """Whether the server's certificate is not verified at all."""
    alpn: tuple[str, ...]
    """Application protocols offered, most preferred first."""
    minimum_version: ssl.TLSVersion
    """The oldest TLS version allowed."""
    maximum_version: ssl.TLSVersion | None
    """The newest TLS version allowed, or ``None`` for no limit."""
    confirm_client_auth: ConfirmClientAuth
    """When the handshake waits for a TLS 1.3 server's verdict on our
    certificate."""
    post_handshake_auth: bool
    """Whether we let a TLS 1.3 server ask for our certificate after the
    handshake (for servers with ``ClientAuth.DEFERRED``)."""
    confirm_timeout: float
    """Seconds to wait for that verdict."""
    handshake_timeout: float | None
    """Seconds allowed for the handshake, or ``None``."""
    name: str | None
    """The policy's name in reports, or ``None``."""
    _adopted: ssl.SSLContext | None = dataclasses.field(
        default=None, init=False, repr=False
    )
    _adopted_identity: bool = dataclasses.field(default=False, init=False, repr=False)
    _context: ssl.SSLContext | None = dataclasses.field(
        default=None, init=False, repr=False, compare=False
    )

    def __init__(
        self,
        *,
        trust: CertificateSources | None = None,
        pinned: CertificateSources = (),
        spki_pins: Iterable[bytes | str] = (),
        identity: Identity | None = None,
        check_hostname: bool = True,
        accept_any_trusted_server: bool = False,
        insecure: bool = False,
        alpn: Iterable[str] = (),
        minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
        maximum_version: ssl.TLSVersion | None = None,
        confirm_client_auth: ConfirmClientAuth = "auto",
        confirm_timeout: float = 5.0,
        post_handshake_auth: bool = False,
        handshake_timeout: float | None = 30.0,
        name: str | None = None,
    ) -> None:
        check_hostname = _flag(check_hostname, "check_hostname")
        accept_any = _flag(accept_any_trusted_server, "accept_any_trusted_server")
        insecure = _flag(insecure, "insecure")
        if identity is not None and not isinstance(identity, Identity):
            raise TypeError(f"identity= takes an Identity, not {identity!r}")
        anchors = (
            ()
            if trust is None
            else _certificates(trust, param="trust", allow_system=True)
        )
        pinned_certs = _pinned_certificates(pinned, param="pinned")
        pins = _spki_pins(spki_pins)
        if insecure:
            for given, param in (
                (anchors, "trust="),
                (pinned_certs, "pinned="),
                (accept_any, "accept_any_trusted_server=True"),
            ):
                if given:
                    raise PolicyError(
                        f"{param} has no effect with insecure=True, which verifies "
                        f"nothing: drop {param} or drop insecure=True."
                    )
            check_hostname = False
            if pins:
                _warn(
                    "insecure=True: only the SPKI pins identify the server; its "
                    "certificate's issuer, validity dates and name are not "
                    "checked.",
                    2,
                )
            else:
                _warn(
                    "insecure=True: the server's certificate is not verified, so "
                    "anyone on the network path can impersonate the server.",
                    2,
                )
        else:
            if trust is None and not pinned_certs:
                anchors = (_SYSTEM,)
            if not anchors and not pinned_certs:
                raise PolicyError(
                    "This policy trusts no certificate, so every server would be "
                    'refused: pass trust="system", CA certificates or pinned=.'
                )
            if accept_any and check_hostname:
                raise PolicyError(
                    "accept_any_trusted_server=True has no effect while the "
                    "hostname is checked: also pass check_hostname=False, or drop "
                    "the flag."
                )
            identified_by_pins = bool(pins) or (bool(pinned_certs) and not anchors)
            if not check_hostname and not identified_by_pins:
                if not accept_any:
                    raise PolicyError(
                        "check_hostname=False without pins accepts any server with "
                        "a certificate from a trusted CA, whatever its name: pin the "
                        "server with spki_pins= or pinned=, or also pass "
                        "accept_any_trusted_server=True to accept that."
                    )
                _warn(
                    "accept_any_trusted_server=True: the server's name is not "
                    "checked, so any server with a certificate from a trusted CA "
                    "is accepted.",
                    2,
                )
            elif accept_any:
                raise PolicyError(
                    "accept_any_trusted_server=True has no effect on a server the "
                    "pins already identify: drop the flag."
                )
        minimum, maximum = _versions(minimum_version, maximum_version)
        if confirm_client_auth not in _CONFIRM_CHOICES:
            raise PolicyError(
                f"confirm_client_auth={confirm_client_auth!r} is not one of "
                '"never", "auto", "always".'
            )
        self._set(
            trust=anchors,
            pinned=pinned_certs,
            spki_pins=pins,
            identity=identity,
            check_hostname=check_hostname,
            accept_any_trusted_server=accept_any,
            insecure=insecure,
            alpn=_alpn(alpn),
            minimum_version=minimum,
            maximum_version=maximum,
            confirm_client_auth=confirm_client_auth,
            confirm_timeout=_timeout(
                confirm_timeout, param="confirm_timeout", optional=False
            ),
            post_handshake_auth=_flag(post_handshake_auth, "post_handshake_auth"),
            handshake_timeout=_timeout(
                handshake_timeout, param="handshake_timeout", optional=True
            ),
            name=_name(name),
            _adopted=None,
            _adopted_identity=False,
            _context=None,
        )
        if identity is not None:
            # Load it now: a key or certificate OpenSSL refuses is a
            # configuration error, not something for the first connection.
            self._get_context()

    @classmethod
    def from_ssl_context(
        cls,
        context: ssl.SSLContext,
        *,
        allow_unauthenticated: bool = False,
        spki_pins: Iterable[bytes | str] = (),
        has_identity: bool = False,
        confirm_client_auth: ConfirmClientAuth = "never",
        confirm_timeout: float = 5.0,
        handshake_timeout: float | None = 30.0,
        name: str | None = None,
    ) -> ClientPolicy:
        """Adopt an existing client context, as it is, after linting it.

        This is what happens to a raw :class:`ssl.SSLContext` passed where a
        policy is expected, so code written for :class:`trio.SSLStream`
        works unchanged. The context is used as it is (:attr:`context`
        returns it); policies adopting the same context object are equal.
        Its settings are judged against the verify-mode matrix
        (:doc:`matrix`):

        * ``CERT_NONE``: the server is not authenticated.
          :exc:`~trio_verify.PolicyError` unless *allow_unauthenticated*,
          which turns it into a :exc:`~trio_verify.PolicyWarning`.
        * ``CERT_OPTIONAL``: on a client it is ``CERT_REQUIRED``; it is
          treated as such, with a :exc:`~trio_verify.PolicyWarning`.
        * ``check_hostname=False`` with verification on: the chain is
          verified but not whose it is. Accepted silently with *spki_pins*;
          otherwise as for ``CERT_NONE``.
        * ``minimum_version`` below TLS 1.2: a
          :exc:`~trio_verify.PolicyWarning`.
        * A server context (``PROTOCOL_TLS_SERVER``):
          :exc:`~trio_verify.PolicyError`. The generic, deprecated
          ``PROTOCOL_TLS`` is accepted on either side and judged by its
          settings.

        Args:
            context: The context to adopt.
            allow_unauthenticated: Accept, with a warning, a context that
                does not authenticate the server.
            spki_pins: As for :class:`ClientPolicy`.
            has_identity: Whether a client certificate was loaded into the
                context. ``ssl`` cannot tell; it matters only for
                ``confirm_client_auth="auto"``.
            confirm_client_auth: As for :class:`ClientPolicy`, but
                ``"never"`` by default: code written for
                :class:`trio.SSLStream` may talk to servers that hold their
                TLS 1.3 session tickets until they first write (as
                trio.SSLStream itself does), which would leave a confirming
                client waiting.
            confirm_timeout: As for :class:`ClientPolicy`.
            handshake_timeout: As for :class:`ClientPolicy`.
            name: As for :class:`ClientPolicy`.
        """
        if not isinstance(context, ssl.SSLContext):
            raise TypeError(f"expected an ssl.SSLContext, not {context!r}")
        if context.protocol == ssl.PROTOCOL_TLS_SERVER:
            raise PolicyError(
                "This SSLContext was made for servers (PROTOCOL_TLS_SERVER) and "
                "cannot make client connections: create it with "
                "ssl.create_default_context() or ssl.PROTOCOL_TLS_CLIENT."
            )
        allow = _flag(allow_unauthenticated, "allow_unauthenticated")
        pins = _spki_pins(spki_pins)
        if context.verify_mode == ssl.CERT_NONE:
            problem = (
                "This SSLContext does not verify the server (verify_mode is "
                "CERT_NONE), so anyone on the network path can impersonate it"
            )
            if not allow:
                raise PolicyError(
                    f"{problem}: set verify_mode = ssl.CERT_REQUIRED and "
                    "check_hostname = True, or pass allow_unauthenticated=True to "
                    "accept that."
                )
            _warn(f"{problem}; use ClientPolicy() to authenticate servers.", 2)
        else:
            if context.verify_mode == ssl.CERT_OPTIONAL:
                _warn(
                    "verify_mode CERT_OPTIONAL on a client is CERT_REQUIRED (the "
                    "server's certificate is verified and a bad one fails the "
                    "handshake): set verify_mode = ssl.CERT_REQUIRED to say so.",
                    2,
                )
            if not context.check_hostname and not pins:
                problem = (
                    "This SSLContext verifies the server's chain but not its name "
                    "(check_hostname is False), so any server with a certificate "
                    "from a trusted CA is accepted"
                )
                if not allow:
                    raise PolicyError(
                        f"{problem}: set check_hostname = True, pass spki_pins=, "
                        "or pass allow_unauthenticated=True to accept that."
                    )
                _warn(f"{problem}; set check_hostname = True to authenticate it.", 2)
        _lint_minimum_version(context)
        if confirm_client_auth not in _CONFIRM_CHOICES:
            raise PolicyError(
                f"confirm_client_auth={confirm_client_auth!r} is not one of "
                '"never", "auto", "always".'
            )
        maximum: ssl.TLSVersion | None = context.maximum_version
        if maximum == ssl.TLSVersion.MAXIMUM_SUPPORTED:
            maximum = None
        policy = cls.__new__(cls)
        policy._set(
            trust=(),
            pinned=(),
            spki_pins=pins,
            identity=None,
            check_hostname=context.check_hostname,
            accept_any_trusted_server=False,
            insecure=context.verify_mode == ssl.CERT_NONE,
            alpn=(),
            minimum_version=context.minimum_version,
            maximum_version=maximum,
            confirm_client_auth=confirm_client_auth,
            confirm_timeout=_timeout(
                confirm_timeout, param="confirm_timeout", optional=False
            ),
            post_handshake_auth=context.post_handshake_auth,
            handshake_timeout=_timeout(
                handshake_timeout, param="handshake_timeout", optional=True
            ),
            name=_name(name),
            _adopted=context,
            _adopted_identity=_flag(has_identity, "has_identity"),
            _context=None,
        )
        return policy

    @property
    def context(self) -> ssl.SSLContext:
        """The :class:`ssl.SSLContext` that enforces this policy.

        Built on first use and kept: every connection made with the policy
        shares it (and so shares OpenSSL's session cache). For a policy made
        by :meth:`from_ssl_context` it is the adopted context itself.
        Changing the context's settings changes what the policy enforces
        behind its back; make a new policy instead.
        """
        return self._get_context()

    @property
    def has_identity(self) -> bool:
        """Whether this client presents a certificate when asked."""
        return self.identity is not None or self._adopted_identity

    def _build_context(self) -> ssl.SSLContext:
        context = _new_context(
            ssl.PROTOCOL_TLS_CLIENT,
            self.minimum_version,
            self.maximum_version,
            self.alpn,
        )
        # Offered only on request: it lets the server ask for our certificate
        # at any time after the handshake.
        context.post_handshake_auth = self.post_handshake_auth
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            context.verify_mode = ssl.CERT_REQUIRED
            context.check_hostname = self.check_hostname
            _load_anchors(context, (*self.trust, *self.pinned), ssl.Purpose.SERVER_AUTH)
        if self.identity is not None:
            _load_identity(context, self.identity)
        return context

    def explain(self) -> str:
        """Say in plain words what this policy makes each side prove.

        For example: "The server must present a certificate chain to a CA in
        the system trust store, valid now and meant for servers, with a
        subject alternative name matching the name we dialled (common names
        are ignored). We present no client certificate. TLS 1.2 or newer."
        """
        sentences = []
        if self.name is not None:
            sentences.append(f"Policy {self.name!r}:")
        if self._adopted is not None:
            sentences.append("Uses an adopted ssl.SSLContext as it is.")
        if self.insecure:
            if self.spki_pins:
                sentences.append(
                    "The server's certificate is not verified (insecure): its "
                    f"public key must match {_describe_pins(self.spki_pins)}, "
                    "but its issuer, validity dates and name are not checked."
                )
            else:
                sentences.append(
                    "The server proves nothing: its certificate is not verified "
                    "(insecure), so anyone on the network path can impersonate it."
                )
        else:
            if self._adopted is not None:
                anchors = "a certificate chain to a CA that context trusts"
            else:
                anchors = _describe_anchors(self.trust, self.pinned)
            sentence = (
                f"The server must present {anchors}, valid now and meant for servers"
            )
            if self.check_hostname:
                cn_counts = self._adopted is not None and (
                    self._adopted.hostname_checks_common_name
                )
                sentence += (
                    ", with a subject alternative name matching the name we dialled"
                    + (
                        " (or a common name matching it, when there is no such name)."
                        if cn_counts
                        else " (common names are ignored)."
                    )
                )
            elif self.spki_pins or (self.pinned and not self.trust):
                sentence += "; its name is not checked: the pins identify it."
            else:
                sentence += "; its name is not checked, so any such server is accepted."
            sentences.append(sentence)
            if self.spki_pins:
                sentences.append(
                    f"Its public key must also match {_describe_pins(self.spki_pins)}."
                )
        if self.identity is not None:
            sentences.append(
                "We present the client certificate "
                f"{_label(self.identity.certificate)} when asked."
            )
        elif self._adopted_identity:
            sentences.append(
                "We present the client certificate loaded into the context when asked."
            )
        else:
            sentences.append("We present no client certificate.")
        sentences.append(_describe_versions(self.minimum_version, self.maximum_version))
        if self.alpn:
            sentences.append(f"ALPN: we offer {', '.join(self.alpn)}.")
        return " ".join(sentences)


def _describe_pins(pins: frozenset[bytes]) -> str:
    return "the SPKI pin" if len(pins) == 1 else f"one of {len(pins)} SPKI pins"


def _lint_minimum_version(context: ssl.SSLContext) -> None:
    if _below_tls12(context.minimum_version):
        version = _VERSION_NAMES.get(context.minimum_version, "an old version")
        _warn(
            "This SSLContext allows TLS versions older than 1.2 (minimum_version "
            f"is {version}), which are broken: set minimum_version = "
            "ssl.TLSVersion.TLSv1_2.",
            3,
        )


@dataclasses.dataclass(frozen=True, init=False)
class ServerPolicy(_Policy):
    """What a server presents, and what it makes clients prove.

    All arguments are keyword-only and the policy is immutable; equal
    arguments make equal policies, which hash alike.
    :func:`dataclasses.replace` makes a changed copy.

    Args:
        identity: The certificate chain and key the server presents.
        client_auth: Whether clients are asked for a certificate; see
            :class:`ClientAuth`.
        client_trust: The CAs that may vouch for client certificates:
            certificates (PEM or DER bytes, PEM text, file paths,
            :class:`~trio_verify.CertificateInfo`), ``"system"``, or a
            collection of those. Files are read now.
        pinned_clients: Client certificates accepted as they are, each a
            trust anchor by itself; this is how self-signed client
            certificates are accepted. Their validity dates are still
            checked.
        authorize: Called with the client's
            :class:`~trio_verify.PeerInfo` after a successful handshake, to
            judge the verified identity (allowed names, URI/SPIFFE ids);
            returning ``False`` refuses the connection. With
            ``ClientAuth.OPTIONAL`` it is also called for a client that sent
            no certificate (``peer.certificate`` is ``None``).
        alpn: Application protocols the server accepts, most preferred
            first.
        alpn_required: Refuse a client that offers ALPN but none of *alpn*,
            with alert 120 (``no_application_protocol``), as Go and rustls
            do; the ``ssl`` module alone lets it in without a protocol.
        minimum_version: The oldest TLS version allowed: TLS 1.2 or 1.3.
        maximum_version: The newest TLS version allowed, or ``None``.
        handshake_timeout: Seconds allowed for the handshake, or ``None``.
        name: A name for this policy in reports and logs.

    Raises:
        PolicyError: when the arguments cannot mean what they say: client
            certificates requested with nothing to verify them against,
            *client_trust* or *authorize* with ``ClientAuth.NONE``,
            *alpn_required* without *alpn*, versions older than TLS 1.2, ...
    """

    server_side: ClassVar[Literal[True]] = True
    """Always ``True``: this policy is for the server end."""

    identity: Identity | None
    """The certificate chain and key presented; ``None`` only for an
    adopted context, which holds its own."""
    client_auth: ClientAuth
    """Whether clients are asked for a certificate."""
    client_trust: tuple[TrustAnchor, ...]
    """The CAs trusted to vouch for clients."""
    pinned_clients: tuple[CertificateInfo, ...]
    """Client certificates trusted as they are."""
    authorize: Callable[[PeerInfo], bool] | None
    """The judge of a verified client identity, or ``None``."""
    alpn: tuple[str, ...]
    """Application protocols accepted, most preferred first."""
    alpn_required: bool
    """Whether a client offering none of :attr:`alpn` is refused."""
    minimum_version: ssl.TLSVersion
    """The oldest TLS version allowed."""
    maximum_version: ssl.TLSVersion | None
    """The newest TLS version allowed, or ``None`` for no limit."""
    handshake_timeout: float | None
    """Seconds allowed for the handshake, or ``None``."""
    name: str | None
    """The policy's name in reports, or ``None``."""
    _adopted: ssl.SSLContext | None = dataclasses.field(
        default=None, init=False, repr=False
    )
    _context: ssl.SSLContext | None = dataclasses.field(
        default=None, init=False, repr=False, compare=False
    )
    _no_client_auth_context: ssl.SSLContext | None = dataclasses.field(
        default=None, init=False, repr=False, compare=False
    )

    def __init__(
        self,
        *,
        identity: Identity,
        client_auth: ClientAuth = ClientAuth.NONE,
        client_trust: CertificateSources | None = None,
        pinned_clients: CertificateSources = (),
        authorize: Callable[[PeerInfo], bool] | None = None,
        alpn: Iterable[str] = (),
        alpn_required: bool = False,
        minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
        maximum_version: ssl.TLSVersion | None = None,
        handshake_timeout: float | None = 30.0,
        name: str | None = None,
    ) -> None:
        if not isinstance(identity, Identity):
            raise TypeError(
                f"identity= takes an Identity (see Identity.from_files), not "
                f"{identity!r}"
            )
        _check_client_auth(client_auth)
        anchors = (
            ()
            if client_trust is None
            else _certificates(client_trust, param="client_trust", allow_system=True)
        )
        pinned = _pinned_certificates(pinned_clients, param="pinned_clients")
        if client_auth is ClientAuth.NONE:
            if anchors or pinned:
                raise PolicyError(
                    "client_trust= and pinned_clients= have no effect with "
                    "ClientAuth.NONE, which never asks for a client certificate: "
                    "pass client_auth=ClientAuth.REQUIRED (or OPTIONAL), or drop "
                    "them."
                )
        elif not anchors and not pinned:
            raise PolicyError(
                f"{client_auth} needs client_trust= (CA certificates) or "
                "pinned_clients= (the client certificates to accept); the ssl "
                "module cannot request a certificate and accept any (it has no "
                "verify callback, CPython gh-75425), so pin the expected client "
                "certificates with pinned_clients= instead."
            )
        _check_authorize(authorize, client_auth)
        alpn_protocols = _alpn(alpn)
        if _flag(alpn_required, "alpn_required") and not alpn_protocols:
            raise PolicyError(
                "alpn_required=True with no alpn= would refuse every client that "
                "offers ALPN: pass the protocols the server speaks as alpn=."
            )
        minimum, maximum = _versions(minimum_version, maximum_version)
        if client_auth is ClientAuth.DEFERRED and maximum not in (
            None,
            ssl.TLSVersion.TLSv1_3,
        ):
            raise PolicyError(
                "ClientAuth.DEFERRED is TLS 1.3 post-handshake authentication, "
                f"but maximum_version={maximum!r} rules TLS 1.3 out: allow TLS "
                "1.3, or use ClientAuth.REQUIRED."
            )
        self._set(
            identity=identity,
            client_auth=client_auth,
            client_trust=anchors,
            pinned_clients=pinned,
            authorize=authorize,
            alpn=alpn_protocols,
            alpn_required=alpn_required,
            minimum_version=minimum,
            maximum_version=maximum,
            handshake_timeout=_timeout(
                handshake_timeout, param="handshake_timeout", optional=True
            ),
            name=_name(name),
            _adopted=None,
            _context=None,
            _no_client_auth_context=None,
        )
        # Load the identity now: a key or certificate OpenSSL refuses is a
        # configuration error, not something for the first client to find.
        self._get_context()

    @classmethod
    def from_ssl_context(
        cls,
        context: ssl.SSLContext,
        *,
        authorize: Callable[[PeerInfo], bool] | None = None,
        handshake_timeout: float | None = 30.0,
        name: str | None = None,
    ) -> ServerPolicy:
        """Adopt an existing server context, as it is, after linting it.

        This is what happens to a raw :class:`ssl.SSLContext` passed where a
        policy is expected. The context is used as it is (:attr:`context`
        returns it); policies adopting the same context object are equal.
        Its ``verify_mode`` becomes :attr:`client_auth`. It is judged
        against the verify-mode matrix (:doc:`matrix`):

        * A client context (``PROTOCOL_TLS_CLIENT``):
          :exc:`~trio_verify.PolicyError`. The generic, deprecated
          ``PROTOCOL_TLS`` is accepted on either side.
        * An ``sni_callback``: a :exc:`~trio_verify.PolicyWarning`, because
          a context swapped in there does not change whether a client
          certificate is requested (OpenSSL keeps the first context's
          verify mode), so an SNI-based client-certificate policy silently
          lets clients in. Choose the policy per connection with
          ``TLSListener``'s selector instead.
        * ``minimum_version`` below TLS 1.2: a
          :exc:`~trio_verify.PolicyWarning`.

        Args:
            context: The context to adopt. Its certificate and key must
                already be loaded.
            authorize: As for :class:`ServerPolicy`.
            handshake_timeout: As for :class:`ServerPolicy`.
            name: As for :class:`ServerPolicy`.
        """
        if not isinstance(context, ssl.SSLContext):
            raise TypeError(f"expected an ssl.SSLContext, not {context!r}")
        if context.protocol == ssl.PROTOCOL_TLS_CLIENT:
            raise PolicyError(
                "This SSLContext was made for clients (PROTOCOL_TLS_CLIENT) and "
                "cannot accept connections: create it with ssl.PROTOCOL_TLS_SERVER "
                "or ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)."
            )
        client_auth = _CLIENT_AUTH_BY_MODE[context.verify_mode]
        if context.post_handshake_auth and client_auth is not ClientAuth.NONE:
            client_auth = ClientAuth.DEFERRED
        _check_authorize(authorize, client_auth)
        if context.sni_callback is not None:
            _warn(
                "This SSLContext has an sni_callback; a context swapped in there "
                "does not change whether a client certificate is requested "
                "(OpenSSL keeps the first context's verify mode): choose the "
                "policy per connection with TLSListener's selector instead.",
                2,
            )
        _lint_minimum_version(context)
        maximum: ssl.TLSVersion | None = context.maximum_version
        if maximum == ssl.TLSVersion.MAXIMUM_SUPPORTED:
            maximum = None
        policy = cls.__new__(cls)
        policy._set(
            identity=None,
            client_auth=client_auth,
            client_trust=(),
            pinned_clients=(),
            authorize=authorize,
            alpn=(),
            alpn_required=False,
            minimum_version=context.minimum_version,
            maximum_version=maximum,
            handshake_timeout=_timeout(
                handshake_timeout, param="handshake_timeout", optional=True
            ),
            name=_name(name),
            _adopted=context,
            _context=None,
            _no_client_auth_context=None,
        )
        return policy

    @property
    def context(self) -> ssl.SSLContext:
        """The :class:`ssl.SSLContext` that enforces this policy.

        Built on first use and kept, as for :attr:`ClientPolicy.context`; for
        a policy made by :meth:`from_ssl_context` it is the adopted context
        itself.
        """
        return self._get_context()

    @property
    def has_identity(self) -> bool:
        """Always ``True``: a server always presents a certificate."""
        return True

    def context_for(self, *, offers_tls13: bool) -> ssl.SSLContext:
        """The context for one connection, given what its ClientHello offers.

        The same as :attr:`context`, except with ``ClientAuth.DEFERRED`` for a
        client that cannot speak TLS 1.3: OpenSSL defers the certificate
        request only in TLS 1.3 and would otherwise demand a certificate in a
        TLS 1.2 handshake.  Such a client gets a context that asks for
        nothing; asking it later fails with
        :class:`~trio_verify.NegotiationFailed`.
        """
        if (
            offers_tls13
            or self.client_auth is not ClientAuth.DEFERRED
            or self._adopted is not None
        ):
            return self.context
        context = self._no_client_auth_context
        if context is None:
            with _BUILD_LOCK:
                context = self._no_client_auth_context
                if context is None:
                    context = self._build_context(client_auth=ClientAuth.NONE)
                    object.__setattr__(self, "_no_client_auth_context", context)
        return context

    def _build_context(self, client_auth: ClientAuth | None = None) -> ssl.SSLContext:
        client_auth = client_auth or self.client_auth
        context = _new_context(
            ssl.PROTOCOL_TLS_SERVER,
            self.minimum_version,
            self.maximum_version,
            self.alpn,
        )
        # Choosing the cipher is the server's job: it knows its own key and
        # hardware. TLS 1.3 session tickets keep OpenSSL's default count;
        # the stream decides when they are sent.
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
        context.verify_mode = _VERIFY_MODES[client_auth]
        context.post_handshake_auth = client_auth is ClientAuth.DEFERRED
        _load_anchors(
            context,
            (*self.client_trust, *self.pinned_clients),
            ssl.Purpose.CLIENT_AUTH,
        )
        assert self.identity is not None  # only adopted policies lack one
        _load_identity(context, self.identity)
        return context

    def explain(self) -> str:
        """Say in plain words what this policy makes each side prove.

        For example: "We present the certificate CN=api.example. Every
        client must present a certificate chain to the CA CN=Corp CA, valid
        now and meant for clients (ClientAuth.REQUIRED); its names are not
        checked (pass authorize= to check them). TLS 1.2 or newer."
        """
        sentences = []
        if self.name is not None:
            sentences.append(f"Policy {self.name!r}:")
        if self.identity is None:
            sentences.append(
                "Uses an adopted ssl.SSLContext as it is. We present the "
                "certificate loaded into it."
            )
            anchors = "a certificate chain to a CA that context trusts"
        else:
            sentences.append(
                f"We present the certificate {_label(self.identity.certificate)}."
            )
            anchors = _describe_anchors(self.client_trust, self.pinned_clients)
        if self.client_auth is ClientAuth.NONE:
            sentences.append(
                "Clients are not asked for a certificate (ClientAuth.NONE), so "
                "they prove nothing at the TLS layer."
            )
        else:
            if self.client_auth is ClientAuth.REQUIRED:
                sentence = f"Every client must present {anchors}"
            elif self.client_auth is ClientAuth.DEFERRED:
                sentence = (
                    "Clients are not asked for a certificate in the handshake; "
                    "when the server asks later (ClientAuth.DEFERRED, TLS 1.3 "
                    f"only), the client must present {anchors}"
                )
            else:
                sentence = (
                    "Clients are asked for a certificate but may send none "
                    f"(ClientAuth.OPTIONAL); one that is sent must be {anchors}"
                )
            sentence += ", valid now and meant for clients"
            if self.client_auth is ClientAuth.REQUIRED:
                sentence += " (ClientAuth.REQUIRED)"
            if self.authorize is None:
                sentence += (
                    "; its names are not checked (pass authorize= to check them)."
                )
            else:
                sentence += "; then authorize(peer) must accept its identity."
            sentences.append(sentence)
        sentences.append(_describe_versions(self.minimum_version, self.maximum_version))
        if self.alpn:
            refusal = (
                "a client that offers none of them is refused (alert 120)"
                if self.alpn_required
                else "a client that offers none of them still connects, with no "
                "application protocol"
            )
            sentences.append(f"ALPN: we select from {', '.join(self.alpn)}; {refusal}.")
        return " ".join(sentences)


def _check_client_auth(client_auth: object) -> None:
    if isinstance(client_auth, ClientAuth):
        return
    if isinstance(client_auth, ssl.VerifyMode):
        meaning = _CLIENT_AUTH_BY_MODE[client_auth]
        raise PolicyError(
            f"client_auth= takes a ClientAuth, not ssl.{client_auth.name}: write "
            f"client_auth=ClientAuth.{meaning.name}."
        )
    raise TypeError(f"client_auth= takes a ClientAuth, not {client_auth!r}")


def _check_authorize(authorize: object, client_auth: ClientAuth) -> None:
    if authorize is None:
        return
    if not callable(authorize):
        raise TypeError(f"authorize= takes a callable or None, not {authorize!r}")
    if client_auth is ClientAuth.NONE:
        raise PolicyError(
            "authorize= judges a client's certificate, but ClientAuth.NONE never "
            "asks for one: pass client_auth=ClientAuth.REQUIRED (or OPTIONAL)."
        )


@overload
def coerce_policy(
    obj: ClientPolicy | ServerPolicy | ssl.SSLContext, *, server_side: Literal[False]
) -> ClientPolicy: ...


@overload
def coerce_policy(
    obj: ClientPolicy | ServerPolicy | ssl.SSLContext, *, server_side: Literal[True]
) -> ServerPolicy: ...


@overload
def coerce_policy(
    obj: ClientPolicy | ServerPolicy | ssl.SSLContext, *, server_side: bool
) -> ClientPolicy | ServerPolicy: ...


def coerce_policy(
    obj: ClientPolicy | ServerPolicy | ssl.SSLContext, *, server_side: bool
) -> ClientPolicy | ServerPolicy:
    """Return the policy for one end of a connection.

    A policy is returned as it is; a raw :class:`ssl.SSLContext` is adopted
    with ``from_ssl_context()`` of the matching class, and linted (so an
    unsafe client context raises :exc:`~trio_verify.PolicyError`).

    Args:
        obj: A :class:`ClientPolicy`, a :class:`ServerPolicy`, or an
            :class:`ssl.SSLContext`.
        server_side: Whether the policy is for the server end.

    Raises:
        PolicyError: if *obj* is a policy for the other end, or a context
            that fails the lint.
        TypeError: if *obj* is none of these.
    """
    if isinstance(obj, ssl.SSLContext):
        if server_side:
            return ServerPolicy.from_ssl_context(obj)
        return ClientPolicy.from_ssl_context(obj)
    if isinstance(obj, ClientPolicy):
        if server_side:
            raise PolicyError(
                "A ClientPolicy was given for the server end of a connection: "
                "pass a ServerPolicy."
            )
        return obj
    if isinstance(obj, ServerPolicy):
        if not server_side:
            raise PolicyError(
                "A ServerPolicy was given for the client end of a connection: "
                "pass a ClientPolicy."
            )
        return obj
    raise TypeError(
        f"expected a ClientPolicy, ServerPolicy or ssl.SSLContext, not {obj!r}"
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Reject:
    """A selector's answer that refuses a connection before the handshake.

    The listener sends ``alert`` as a plaintext TLS alert record, so the
    client learns why (:class:`~trio_verify.PeerUnrecognizedName`,
    :class:`~trio_verify.PeerDeniedAccess`, ...), and closes the connection.
    On the server the refusal is reported as a
    :class:`~trio_verify.PolicyRejected` error in phase ``CLIENT_HELLO``.

    Args:
        alert: the alert to send; ``unrecognized_name``, ``access_denied``
            and ``no_application_protocol`` are the usual ones.
        reason: words for the server's own report and log (never sent).
    """

    alert: Alert = Alert.ACCESS_DENIED
    reason: str = ""
