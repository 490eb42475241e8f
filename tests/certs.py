"""Real certificates for the tests, one of each kind a test may need.

A :class:`CertKit` holds three certificate authorities, all made with
``trustme``:

* ``ca``, the root every test trusts;
* ``intermediate_ca``, issued by ``ca``, for chains of more than one link;
* ``other_ca``, a root nobody trusts.

From these it issues server and client identities by *kind*, each made once
per kit (key generation is the slow part) and written to disk once, so the
same identity can be given to ``ssl``, to trio_verify and to ``openssl``.
``trustme`` issues what it can express; the rest (an extended key usage
other than trustme's fixed one, a URI name, no subject alternative names, a
self-signed end-entity certificate) is built with ``cryptography`` in the
same shape, so that every certificate meant to be valid passes OpenSSL's
``VERIFY_X509_STRICT`` profile.

:func:`memory_handshake` runs a handshake between two ``ssl`` contexts
over memory BIOs, without sockets or an event loop.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, get_args

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trio_verify._certs import CertificateInfo, load_pem_chain

ServerKind = Literal[
    "valid",
    "expired",
    "not_yet_valid",
    "other_ca",
    "wrong_name",
    "client_eku",
    "self_signed",
    "intermediate",
    "leaf_without_intermediate",
    "cn_only",
    "ip_only",
]
"""The server identities a :class:`CertKit` makes.

* ``valid``: issued by ``ca`` for ``localhost``, ``127.0.0.1`` and ``::1``
  (common name ``localhost``).
* ``expired``: as ``valid``, but its validity ended 30 days ago.
* ``not_yet_valid``: as ``valid``, but its validity starts in 30 days.
* ``other_ca``: as ``valid``, but issued by the untrusted ``other_ca``.
* ``wrong_name``: issued by ``ca`` for ``example.org`` only.
* ``client_eku``: as ``valid``, with extended key usage ``clientAuth`` only.
* ``self_signed``: a self-signed end-entity certificate (``CA:FALSE``) with
  the names of ``valid``.
* ``intermediate``: issued by ``intermediate_ca``, sent with it.
* ``leaf_without_intermediate``: the same certificate and key as
  ``intermediate``, sent without the intermediate.
* ``cn_only``: no subject alternative names, common name ``localhost``.
* ``ip_only``: issued by ``ca`` for ``127.0.0.1`` only.
"""

ClientKind = Literal[
    "valid",
    "expired",
    "not_yet_valid",
    "other_ca",
    "server_eku",
    "self_signed",
    "intermediate",
]
"""The client identities a :class:`CertKit` makes.

* ``valid``: issued by ``ca`` for DNS name ``client.example``, URI
  ``spiffe://example/client`` and email ``client@example.org`` (common name
  ``client.example``), extended key usage ``clientAuth``.
* ``expired``, ``not_yet_valid``, ``other_ca``, ``self_signed``,
  ``intermediate``: as ``valid``, changed as for the server kinds.
* ``server_eku``: as ``valid``, with extended key usage ``serverAuth`` only.
"""

Trust = Literal["ca", "other_ca", "intermediate", "none"]
"""Which authority a context trusts: a :class:`CertKit` root or intermediate,
or nothing at all."""

Issuer = Literal["ca", "other_ca", "intermediate"]
"""Which :class:`CertKit` authority signs a certificate."""

KeyKind = Literal["ecdsa", "rsa", "ed25519"]
"""The key of an issued certificate: ECDSA P-256, RSA 2048 or Ed25519."""

Versions = ssl.TLSVersion | tuple[ssl.TLSVersion, ssl.TLSVersion] | None
"""A TLS version to pin, a ``(minimum, maximum)`` pair, or ``None``."""

SERVER_KINDS: tuple[ServerKind, ...] = get_args(ServerKind)
CLIENT_KINDS: tuple[ClientKind, ...] = get_args(ClientKind)

ORGANIZATION = "trio_verify tests"
SERVER_NAMES = ("localhost", "127.0.0.1", "::1")
CLIENT_DNS = "client.example"
CLIENT_URI = "spiffe://example/client"
CLIENT_EMAIL = "client@example.org"

_PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class Identity:
    """A certificate chain and its private key, in memory and on disk.

    Attributes:
        name: A short unique name, e.g. ``"server-expired"``; also the stem
            of the file names.
        cert_chain_pem: The leaf certificate, then any intermediates (never
            the root), in PEM.
        key_pem: The unencrypted private key in PEM.
        cert_file: The leaf certificate alone.
        key_file: The private key.
        chain_file: The same bytes as :attr:`cert_chain_pem`.
        info: The leaf certificate.
        chain: Every certificate of :attr:`cert_chain_pem`, leaf first.
    """

    name: str
    cert_chain_pem: bytes
    key_pem: bytes
    cert_file: Path
    key_file: Path
    chain_file: Path
    info: CertificateInfo
    chain: tuple[CertificateInfo, ...]

    @property
    def cert_pem(self) -> bytes:
        """The leaf certificate alone, in PEM."""
        return self.cert_file.read_bytes()

    def configure_cert(self, ctx: ssl.SSLContext) -> None:
        """Make *ctx* present this identity (the whole chain)."""
        ctx.load_cert_chain(self.chain_file, self.key_file)


class CertKit:
    """Authorities and identities for one test run.

    Args:
        directory: Where the PEM files are written; it must exist.
        now: The moment validity periods are set around; defaults to the
            current time.
    """

    def __init__(self, directory: Path, now: datetime | None = None) -> None:
        self.directory = directory
        self.now = datetime.now(UTC) if now is None else now
        self.ca = trustme.CA(
            organization_name=ORGANIZATION, organization_unit_name="Test Root CA"
        )
        self.intermediate_ca = trustme.CA(
            parent_cert=self.ca,
            path_length=8,
            organization_name=ORGANIZATION,
            organization_unit_name="Test Intermediate CA",
        )
        self.other_ca = trustme.CA(
            organization_name=ORGANIZATION, organization_unit_name="Untrusted Root CA"
        )
        self.ca_pem = self.ca.cert_pem.bytes()
        self.intermediate_pem = self.intermediate_ca.cert_pem.bytes()
        self.other_ca_pem = self.other_ca.cert_pem.bytes()
        self.ca_file = self._write("ca.pem", self.ca_pem)
        self.intermediate_file = self._write(
            "intermediate-ca.pem", self.intermediate_pem
        )
        self.other_ca_file = self._write("other-ca.pem", self.other_ca_pem)
        self._identities: dict[str, Identity] = {}

    # ------------------------------------------------------------ identities

    def server(self, kind: ServerKind = "valid") -> Identity:
        """Return the server identity of *kind* (see :data:`ServerKind`)."""
        name = f"server-{kind}"
        if name not in self._identities:
            self._identities[name] = self._make_server(name, kind)
        return self._identities[name]

    def client(self, kind: ClientKind = "valid") -> Identity:
        """Return the client identity of *kind* (see :data:`ClientKind`)."""
        name = f"client-{kind}"
        if name not in self._identities:
            self._identities[name] = self._make_client(name, kind)
        return self._identities[name]

    def _make_server(self, name: str, kind: ServerKind) -> Identity:
        past, future = self._past_period(), self._future_period()
        match kind:
            case "valid":
                return self._trustme(name, self.ca, SERVER_NAMES, "localhost")
            case "expired":
                return self._trustme(name, self.ca, SERVER_NAMES, "localhost", past)
            case "not_yet_valid":
                return self._trustme(name, self.ca, SERVER_NAMES, "localhost", future)
            case "other_ca":
                return self._trustme(name, self.other_ca, SERVER_NAMES, "localhost")
            case "wrong_name":
                return self._trustme(name, self.ca, ("example.org",), "example.org")
            case "client_eku":
                return self.issue(
                    name,
                    names=SERVER_NAMES,
                    common_name="localhost",
                    eku=(ExtendedKeyUsageOID.CLIENT_AUTH,),
                )
            case "self_signed":
                return self.issue(
                    name, issuer=None, names=SERVER_NAMES, common_name="localhost"
                )
            case "intermediate":
                return self._trustme(
                    name, self.intermediate_ca, SERVER_NAMES, "localhost"
                )
            case "leaf_without_intermediate":
                full = self.server("intermediate")
                return self._identity(name, full.key_pem, [full.cert_pem])
            case "cn_only":
                return self.issue(name, names=(), common_name="localhost")
            case "ip_only":
                return self._trustme(name, self.ca, ("127.0.0.1",), None)
        raise ValueError(f"unknown server kind {kind!r}")

    def _make_client(self, name: str, kind: ClientKind) -> Identity:
        issuer: Issuer | None = "ca"
        eku = (ExtendedKeyUsageOID.CLIENT_AUTH,)
        period: tuple[datetime, datetime] | None = None
        match kind:
            case "valid":
                pass
            case "expired":
                period = self._past_period()
            case "not_yet_valid":
                period = self._future_period()
            case "other_ca":
                issuer = "other_ca"
            case "server_eku":
                eku = (ExtendedKeyUsageOID.SERVER_AUTH,)
            case "self_signed":
                issuer = None
            case "intermediate":
                issuer = "intermediate"
            case _:
                raise ValueError(f"unknown client kind {kind!r}")
        not_before, not_after = period or (None, None)
        return self.issue(
            name,
            issuer=issuer,
            names=(CLIENT_DNS,),
            uris=(CLIENT_URI,),
            emails=(CLIENT_EMAIL,),
            common_name=CLIENT_DNS,
            eku=eku,
            not_before=not_before,
            not_after=not_after,
        )

    def _past_period(self) -> tuple[datetime, datetime]:
        return self.now - timedelta(days=395), self.now - timedelta(days=30)

    def _future_period(self) -> tuple[datetime, datetime]:
        return self.now + timedelta(days=30), self.now + timedelta(days=395)

    def _trustme(
        self,
        name: str,
        ca: trustme.CA,
        names: Sequence[str],
        common_name: str | None,
        period: tuple[datetime, datetime] | None = None,
    ) -> Identity:
        not_before, not_after = period or (None, None)
        leaf = ca.issue_cert(
            *names,
            common_name=common_name,
            organization_name=ORGANIZATION,
            organization_unit_name=name,
            not_before=not_before,
            not_after=not_after,
        )
        pems = [blob.bytes() for blob in leaf.cert_chain_pems]
        return self._identity(name, leaf.private_key_pem.bytes(), pems)

    def issue(
        self,
        name: str,
        *,
        issuer: Issuer | None = "ca",
        names: Sequence[str] = (),
        uris: Sequence[str] = (),
        emails: Sequence[str] = (),
        common_name: str | None = None,
        eku: Sequence[x509.ObjectIdentifier] | None = (
            ExtendedKeyUsageOID.SERVER_AUTH,
            ExtendedKeyUsageOID.CLIENT_AUTH,
        ),
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        key: KeyKind = "ecdsa",
    ) -> Identity:
        """Issue a certificate that ``trustme`` cannot express.

        The result has the extensions ``VERIFY_X509_STRICT`` asks for: basic
        constraints ``CA:FALSE`` (critical), subject and authority key
        identifiers, key usage (critical), and subject alternative names
        when there are any (none at all rather than an empty extension).
        Not memoised: call it once per name.

        Args:
            name: The identity's name, file stem and organizational unit.
            issuer: The signing authority, or ``None`` for a self-signed
                end-entity certificate.
            names: DNS names and IP addresses for the subject alternative names.
            uris: URIs for the subject alternative names.
            emails: Email addresses for the subject alternative names.
            common_name: The subject's common name, if any.
            eku: The extended key usages; ``None`` leaves the extension out.
            not_before: Start of validity; defaults to a day before
                :attr:`now`.
            not_after: End of validity; defaults to a year after :attr:`now`.
            key: The key type.
        """
        private_key = _generate_key(key)
        public_key = private_key.public_key()
        subject = _subject(name, common_name)
        alt_names = [*(_general_name(n) for n in names)]
        alt_names += [x509.UniformResourceIdentifier(u) for u in uris]
        alt_names += [x509.RFC822Name(e) for e in emails]

        if issuer is None:
            signer: _PrivateKey = private_key
            issuer_name = subject
            aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key)
            chain_pems: list[bytes] = []
        else:
            ca = self._authority(issuer)
            ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
            loaded = serialization.load_pem_private_key(
                ca.private_key_pem.bytes(), password=None
            )
            assert isinstance(loaded, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
            signer = loaded
            issuer_name = ca_cert.subject
            ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ski.value
            )
            chain_pems = [self.intermediate_pem] if issuer == "intermediate" else []

        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or self.now - timedelta(days=1))
            .not_valid_after(not_after or self.now + timedelta(days=365))
            .add_extension(
                x509.BasicConstraints(ca=False, path_length=None), critical=True
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False
            )
            .add_extension(aki, critical=False)
            .add_extension(
                _leaf_key_usage(key_encipherment=key == "rsa"), critical=True
            )
        )
        if alt_names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(alt_names), critical=False
            )
        if eku is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        algorithm = (
            None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256()
        )
        cert = builder.sign(signer, algorithm)

        key_pem = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        leaf_pem = cert.public_bytes(serialization.Encoding.PEM)
        return self._identity(name, key_pem, [leaf_pem, *chain_pems])

    def _authority(self, issuer: Issuer) -> trustme.CA:
        return {
            "ca": self.ca,
            "other_ca": self.other_ca,
            "intermediate": self.intermediate_ca,
        }[issuer]

    def _identity(self, name: str, key_pem: bytes, pems: Sequence[bytes]) -> Identity:
        chain_pem = b"".join(pems)
        chain = load_pem_chain(chain_pem)
        return Identity(
            name=name,
            cert_chain_pem=chain_pem,
            key_pem=key_pem,
            cert_file=self._write(f"{name}.crt", pems[0]),
            key_file=self._write(f"{name}.key", key_pem),
            chain_file=self._write(f"{name}-chain.pem", chain_pem),
            info=chain[0],
            chain=chain,
        )

    def _write(self, filename: str, data: bytes) -> Path:
        path = self.directory / filename
        path.write_bytes(data)
        return path

    # -------------------------------------------------------------- contexts

    def trust_file(self, trust: Trust) -> Path | None:
        """The PEM file of the authority *trust* names, or ``None`` for ``"none"``."""
        return {
            "ca": self.ca_file,
            "other_ca": self.other_ca_file,
            "intermediate": self.intermediate_file,
            "none": None,
        }[trust]

    def server_context(
        self,
        kind: ServerKind | Identity = "valid",
        *,
        client_auth: ssl.VerifyMode = ssl.CERT_NONE,
        client_trust: Trust | Identity = "ca",
        versions: Versions = None,
    ) -> ssl.SSLContext:
        """A plain ``ssl`` server context presenting the identity *kind*.

        When *client_auth* asks for client certificates they are verified
        against *client_trust* (an :class:`Identity` is trusted as a pinned
        anchor), with ``VERIFY_X509_STRICT`` and ``VERIFY_X509_PARTIAL_CHAIN``
        as trio_verify uses them.

        Note that OpenSSL completes a server's chain from the context's trust
        store when the identity brings no intermediates, so trusting the
        intermediate here would make ``leaf_without_intermediate`` send it.
        """
        identity = kind if isinstance(kind, Identity) else self.server(kind)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        identity.configure_cert(ctx)
        ctx.verify_mode = client_auth
        if client_auth != ssl.CERT_NONE:
            self._trust(ctx, client_trust)
        _set_versions(ctx, versions)
        return ctx

    def client_context(
        self,
        *,
        trust: Trust | Identity = "ca",
        identity: ClientKind | Identity | None = None,
        versions: Versions = None,
    ) -> ssl.SSLContext:
        """A plain ``ssl`` client context with trio_verify's default checks.

        ``PROTOCOL_TLS_CLIENT`` (so ``CERT_REQUIRED`` and ``check_hostname``),
        ``hostname_checks_common_name=False``, ``VERIFY_X509_STRICT`` and
        ``VERIFY_X509_PARTIAL_CHAIN``, trusting *trust* (an :class:`Identity`
        is trusted as a pinned anchor) and presenting *identity*, if given.
        """
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.hostname_checks_common_name = False
        self._trust(ctx, trust)
        if identity is not None:
            if not isinstance(identity, Identity):
                identity = self.client(identity)
            identity.configure_cert(ctx)
        _set_versions(ctx, versions)
        return ctx

    def _trust(self, ctx: ssl.SSLContext, trust: Trust | Identity) -> None:
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT | ssl.VERIFY_X509_PARTIAL_CHAIN
        if isinstance(trust, Identity):
            ctx.load_verify_locations(cadata=trust.cert_pem.decode("ascii"))
            return
        path = self.trust_file(trust)
        if path is not None:
            ctx.load_verify_locations(cafile=path)


def _set_versions(ctx: ssl.SSLContext, versions: Versions) -> None:
    if versions is None:
        return
    if isinstance(versions, ssl.TLSVersion):
        versions = (versions, versions)
    ctx.minimum_version, ctx.maximum_version = versions


def _generate_key(key: KeyKind) -> _PrivateKey:
    if key == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def _subject(unit: str, common_name: str | None) -> x509.Name:
    attributes = [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
    ]
    if common_name is not None:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _leaf_key_usage(*, key_encipherment: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


# ---------------------------------------------------------------- handshakes


@dataclass
class MemoryHandshake:
    """The outcome of :func:`memory_handshake`.

    Attributes:
        client: The client's connection.
        server: The server's connection.
        client_error: What the client raised, in its handshake or (TLS 1.3,
            where the server judges the client certificate after the client
            has finished) in its first read; ``None`` if nothing.
        server_error: What the server raised in its handshake, or ``None``.
    """

    client: ssl.SSLObject
    server: ssl.SSLObject
    client_error: ssl.SSLError | None
    server_error: ssl.SSLError | None

    @property
    def client_verify_code(self) -> int | None:
        """The client's X509 verify code, 0 when it raised nothing."""
        return _verify_code(self.client_error)

    @property
    def server_verify_code(self) -> int | None:
        """The server's X509 verify code, 0 when it raised nothing."""
        return _verify_code(self.server_error)


def _verify_code(error: ssl.SSLError | None) -> int | None:
    """0 for success, the code of a verification error, else ``None``."""
    if error is None:
        return 0
    if isinstance(error, ssl.SSLCertVerificationError):
        return error.verify_code
    return None


def memory_handshake(
    client_ctx: ssl.SSLContext,
    server_ctx: ssl.SSLContext,
    server_hostname: str | None = "localhost",
) -> MemoryHandshake:
    """Run a TLS handshake between two contexts over memory BIOs.

    Bytes are shuttled until neither side has anything more to say. After
    its handshake the client tries one read, which is where a TLS 1.3
    client learns that the server refused its certificate, and where it
    takes in the server's session tickets.
    """
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client_error: ssl.SSLError | None = None
    server_error: ssl.SSLError | None = None
    client_done = server_done = False
    for _ in range(50):
        if not client_done:
            try:
                client.do_handshake()
                client_done = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                client_error, client_done = exc, True
        if client_done and client_error is None:
            try:
                client.read(1)
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                client_error = exc
        if not server_done:
            try:
                server.do_handshake()
                server_done = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                server_error, server_done = exc, True
        moved = False
        if data := c_out.read():
            s_in.write(data)
            moved = True
        if data := s_out.read():
            c_in.write(data)
            moved = True
        if not moved and client_done and server_done:
            break
    else:
        raise AssertionError("handshake did not settle")
    return MemoryHandshake(client, server, client_error, server_error)
