"""Exception types, handshake phases, TLS alerts, and the failure classifier.

Everything a failed connection raises is a :class:`TLSError` subclass that says
*where* in the protocol verification aborted (:class:`Phase`), *which end* we
are (``side``), *why* (the subclass and the message), and *which alert* went
over the wire in each direction.  :class:`TLSError` subclasses
:class:`trio.BrokenResourceError`, so code written against Trio's errors keeps
working.

The classifier at the bottom turns an :class:`ssl.SSLError` plus a snapshot of
what the connection had seen into one of these exceptions.  It never trusts
``SSLError.reason`` alone: OpenSSL reports ``None`` or "unknown error" for some
received alerts, so the reason table is backed by a message table and by the
plaintext alert records the engine read off the wire itself.
"""

from __future__ import annotations

import enum
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal, TypeVar

import trio

if TYPE_CHECKING:
    from ._certs import CertificateInfo

__all__ = [
    "Alert",
    "BadCertificateSignature",
    "CertificateExpired",
    "CertificateNotYetValid",
    "CertificateRevoked",
    "CertificateVerificationError",
    "ClientAuthNotConfirmed",
    "HandshakeTimeout",
    "InvalidChain",
    "InvalidPurpose",
    "MissingClientCertificate",
    "NameMismatch",
    "NegotiationFailed",
    "NonConformingCertificate",
    "NotTLS",
    "OtherCertificateError",
    "PeerAlert",
    "PeerDeniedAccess",
    "PeerHandshakeFailure",
    "PeerNoApplicationProtocol",
    "PeerProtocolError",
    "PeerProtocolVersion",
    "PeerRejectedCertificate",
    "PeerRequiresCertificate",
    "PeerUnrecognizedName",
    "Phase",
    "PinMismatch",
    "PolicyError",
    "PolicyRejected",
    "PolicyWarning",
    "ProtocolViolation",
    "RevocationStatusUnknown",
    "Side",
    "SurfacedIn",
    "TLSError",
    "TruncatedStream",
    "UnknownIssuer",
    "WeakCertificate",
]

Side = Literal["client", "server"]
"""Which end of the connection raised the error: the end that *we* are."""

SurfacedIn = Literal["handshake", "confirm", "receive", "send", "close"]
"""The operation during which the failure reached the caller.

It differs from :class:`Phase` when the protocol delivers a verdict late: a
TLS 1.3 client whose certificate the server refused finishes its own handshake
first and learns of the refusal at its next read, so the error has
``phase=Phase.CLIENT_CERTIFICATE`` and ``surfaced_in="receive"`` (or
``"confirm"`` when the client waited for the verdict inside
:meth:`TLSStream.do_handshake <trio_verify.TLSStream.do_handshake>`).
"""


class Alert(enum.IntEnum):
    """Every TLS alert description (RFC 8446 §6 and the TLS 1.2 registry).

    Reserved codes that TLS 1.3 forbids are kept so that an old peer's alert
    can still be named.
    """

    CLOSE_NOTIFY = 0
    UNEXPECTED_MESSAGE = 10
    BAD_RECORD_MAC = 20
    DECRYPTION_FAILED = 21
    RECORD_OVERFLOW = 22
    DECOMPRESSION_FAILURE = 30
    HANDSHAKE_FAILURE = 40
    NO_CERTIFICATE = 41
    BAD_CERTIFICATE = 42
    UNSUPPORTED_CERTIFICATE = 43
    CERTIFICATE_REVOKED = 44
    CERTIFICATE_EXPIRED = 45
    CERTIFICATE_UNKNOWN = 46
    ILLEGAL_PARAMETER = 47
    UNKNOWN_CA = 48
    ACCESS_DENIED = 49
    DECODE_ERROR = 50
    DECRYPT_ERROR = 51
    EXPORT_RESTRICTION = 60
    PROTOCOL_VERSION = 70
    INSUFFICIENT_SECURITY = 71
    INTERNAL_ERROR = 80
    INAPPROPRIATE_FALLBACK = 86
    USER_CANCELED = 90
    NO_RENEGOTIATION = 100
    MISSING_EXTENSION = 109
    UNSUPPORTED_EXTENSION = 110
    CERTIFICATE_UNOBTAINABLE = 111
    UNRECOGNIZED_NAME = 112
    BAD_CERTIFICATE_STATUS_RESPONSE = 113
    BAD_CERTIFICATE_HASH_VALUE = 114
    UNKNOWN_PSK_IDENTITY = 115
    CERTIFICATE_REQUIRED = 116
    GENERAL_ERROR = 117
    NO_APPLICATION_PROTOCOL = 120
    ECH_REQUIRED = 121

    def __str__(self) -> str:
        return f"{self.name.lower()} ({self.value})"


class Phase(enum.Enum):
    """Where in the protocol a connection failed."""

    CLIENT_HELLO = "client_hello"
    """The server was reading or judging the ClientHello; a client was refused
    before any ServerHello (unrecognized name, access denied, ...)."""
    SERVER_HELLO = "server_hello"
    """Negotiation: protocol version, cipher suite, key-exchange group."""
    SERVER_CERTIFICATE = "server_certificate"
    """The server's certificate chain and identity were being judged."""
    CLIENT_CERTIFICATE = "client_certificate"
    """The client's certificate chain, or its absence, was being judged."""
    FINISHED = "finished"
    """Key confirmation at the end of the handshake."""
    POST_HANDSHAKE_AUTH = "post_handshake_auth"
    """TLS 1.3 post-handshake client authentication."""
    CONNECTION_POLICY = "connection_policy"
    """Checks made by trio_verify after the handshake (SPKI pins, authorize)."""
    APPLICATION_DATA = "application_data"
    """After the handshake: record errors, truncation."""
    CLOSE = "close"
    """Closing: close_notify and unwrap."""


class PolicyError(ValueError):
    """A configuration that cannot mean what it says.

    Raised when a policy is built or a :class:`ssl.SSLContext` is adopted, never
    during a connection.  The message names the problem and the fix.
    """


class PolicyWarning(UserWarning):
    """A configuration that is legal but weaker than it looks."""


class TLSError(trio.BrokenResourceError):
    """A TLS connection failed.  Base class of every connection error.

    Attributes:
        phase: where in the protocol the connection failed.
        surfaced_in: the operation that reported it (``"handshake"``,
            ``"confirm"``, ``"receive"``, ``"send"``, ``"close"``).
        side: which end we are, ``"client"`` or ``"server"``.
        tls_version: the negotiated protocol version (``"TLSv1.3"``), when known.
        alert_sent: the alert we sent to the peer, if any.
        alert_received: the alert the peer sent us, if any.
        ssl_error: the underlying :class:`ssl.SSLError` (also ``__cause__``).
        server_name: the server name in use (SNI), when known.
        peer_address: the peer's transport address, when known.
        peer_chain: the peer's certificates as sent (leaf first), when known.
        verify_code: OpenSSL's ``X509_V_ERR_*`` code for certificate failures.
    """

    def __init__(
        self,
        message: str,
        *,
        phase: Phase,
        side: Side,
        surfaced_in: SurfacedIn = "handshake",
        tls_version: str | None = None,
        alert_sent: Alert | None = None,
        alert_received: Alert | None = None,
        ssl_error: ssl.SSLError | None = None,
        server_name: str | None = None,
        peer_address: object = None,
        peer_chain: Sequence[CertificateInfo] = (),
        verify_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.phase = phase
        self.surfaced_in: SurfacedIn = surfaced_in
        self.side: Side = side
        self.tls_version = tls_version
        self.alert_sent = alert_sent
        self.alert_received = alert_received
        self.ssl_error = ssl_error
        self.server_name = server_name
        self.peer_address = peer_address
        self.peer_chain: tuple[CertificateInfo, ...] = tuple(peer_chain)
        self.verify_code = verify_code

    def __reduce__(self) -> tuple[object, ...]:
        # The keyword-only constructor defeats the default reduction; copies
        # (one per task waiting on a shared handshake) and pickles need this.
        return (_rebuild, (type(self), self.message), dict(self.__dict__))

    def __str__(self) -> str:
        where = [self.side, self.phase.name]
        if self.surfaced_in != "handshake":
            where.append(f"surfaced in {self.surfaced_in}")
        if self.tls_version:
            where.append(self.tls_version)
        if self.alert_sent is not None:
            where.append(f"sent alert {self.alert_sent}")
        if self.alert_received is not None:
            where.append(f"received alert {self.alert_received}")
        return f"{self.message} [{', '.join(where)}]"


def _rebuild(cls: type[TLSError], message: str) -> TLSError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    return error


# -- certificates we judged ---------------------------------------------------


class CertificateVerificationError(TLSError):
    """We judged the peer's certificate and refused it."""


class CertificateExpired(CertificateVerificationError):
    """A certificate in the peer's chain has expired (verify code 10)."""


class CertificateNotYetValid(CertificateVerificationError):
    """A certificate in the peer's chain is not valid yet (verify code 9)."""


class UnknownIssuer(CertificateVerificationError):
    """The chain does not lead to a trusted anchor (codes 2, 18, 19, 20, 21)."""


class InvalidChain(CertificateVerificationError):
    """The chain is malformed: too long, path length, non-CA issuer, ..."""


class BadCertificateSignature(CertificateVerificationError):
    """A signature in the chain does not verify (codes 4, 6, 7)."""


class CertificateRevoked(CertificateVerificationError):
    """A certificate in the chain is revoked (code 23)."""


class RevocationStatusUnknown(CertificateVerificationError):
    """Revocation checking was asked for but could not be done (3, 11, 12, 33)."""


class InvalidPurpose(CertificateVerificationError):
    """The certificate is not for this use: extended key usage (code 26)."""


class NameMismatch(CertificateVerificationError):
    """The server certificate is not valid for the name we dialled (62-64)."""


class WeakCertificate(CertificateVerificationError):
    """A key or signature algorithm is too weak (codes 66, 67, 68, 94)."""


class NonConformingCertificate(CertificateVerificationError):
    """The certificate breaks the RFC 5280 profile (strict checks, 83-93)."""


class PinMismatch(CertificateVerificationError):
    """The peer's public key matches none of the policy's SPKI pins."""


class OtherCertificateError(CertificateVerificationError):
    """A certificate failure with no more specific class."""


class MissingClientCertificate(TLSError):
    """The server required a client certificate and none came.

    The server sends ``certificate_required`` (116) in TLS 1.3 and
    ``handshake_failure`` (40) in TLS 1.2.
    """


# -- the peer told us ---------------------------------------------------------


class PeerAlert(TLSError):
    """The peer aborted the connection with a fatal alert."""

    @property
    def alert(self) -> Alert | None:
        """The alert the peer sent (``None`` when OpenSSL could not name it)."""
        return self.alert_received


class PeerRejectedCertificate(PeerAlert):
    """The peer refused *our* certificate (alerts 42-46, 48, 51, 113)."""


class PeerRequiresCertificate(PeerAlert):
    """The peer wanted a client certificate and we sent none (116; 40 in 1.2)."""


class PeerDeniedAccess(PeerAlert):
    """The peer denied access (alert 49)."""


class PeerUnrecognizedName(PeerAlert):
    """The peer does not serve the name we asked for (alert 112)."""


class PeerNoApplicationProtocol(PeerAlert):
    """The peer shares none of our ALPN protocols (alert 120)."""


class PeerProtocolVersion(PeerAlert):
    """The peer refused the protocol version (alerts 70, 71, 86)."""


class PeerHandshakeFailure(PeerAlert):
    """The peer reported a generic handshake failure (alert 40)."""


class PeerProtocolError(PeerAlert):
    """Any other fatal alert from the peer."""


# -- everything else ----------------------------------------------------------


class NegotiationFailed(TLSError):
    """No shared protocol version, cipher suite, group, or required ALPN."""


class PolicyRejected(TLSError):
    """Our policy refused the connection (a selector's reject, ``authorize``)."""


class ClientAuthNotConfirmed(TLSError):
    """The server's verdict on our certificate did not arrive in time.

    Raised by a client with ``confirm_client_auth`` when neither a session
    ticket, application data, nor an alert arrived within the timeout (a
    server with session tickets turned off sends nothing).
    """


class ProtocolViolation(TLSError):
    """Malformed records or handshake messages."""


class NotTLS(ProtocolViolation):
    """The peer does not speak TLS (plaintext HTTP, for instance)."""


class HandshakeTimeout(TLSError, trio.TooSlowError):
    """The handshake did not finish within the policy's ``handshake_timeout``."""


class TruncatedStream(TLSError):
    """The peer closed the connection without a close_notify alert."""


# -- classification -----------------------------------------------------------

# OpenSSL's ssl_x509err2alert (statem_lib.c): the alert OpenSSL sends for a
# local verification failure.  Codes not listed map to certificate_unknown.
_VERIFY_CODE_ALERT: dict[int, Alert] = {
    10: Alert.CERTIFICATE_EXPIRED,
    12: Alert.CERTIFICATE_EXPIRED,
    9: Alert.BAD_CERTIFICATE,
    11: Alert.BAD_CERTIFICATE,
    13: Alert.BAD_CERTIFICATE,
    14: Alert.BAD_CERTIFICATE,
    15: Alert.BAD_CERTIFICATE,
    16: Alert.BAD_CERTIFICATE,
    23: Alert.CERTIFICATE_REVOKED,
    7: Alert.DECRYPT_ERROR,
    8: Alert.DECRYPT_ERROR,
    26: Alert.UNSUPPORTED_CERTIFICATE,
    62: Alert.BAD_CERTIFICATE,
    63: Alert.BAD_CERTIFICATE,
    64: Alert.BAD_CERTIFICATE,
    18: Alert.UNKNOWN_CA,
    19: Alert.UNKNOWN_CA,
    2: Alert.UNKNOWN_CA,
    20: Alert.UNKNOWN_CA,
    21: Alert.UNKNOWN_CA,
    79: Alert.UNKNOWN_CA,
    25: Alert.UNKNOWN_CA,
    22: Alert.UNKNOWN_CA,
    3: Alert.UNKNOWN_CA,
    33: Alert.UNKNOWN_CA,
    66: Alert.BAD_CERTIFICATE,
    67: Alert.BAD_CERTIFICATE,
    68: Alert.BAD_CERTIFICATE,
    94: Alert.BAD_CERTIFICATE,
    27: Alert.BAD_CERTIFICATE,
    28: Alert.BAD_CERTIFICATE,
    65: Alert.BAD_CERTIFICATE,
    50: Alert.HANDSHAKE_FAILURE,
    17: Alert.INTERNAL_ERROR,
    69: Alert.INTERNAL_ERROR,
    1: Alert.INTERNAL_ERROR,
}

_VERIFY_CODE_CLASS: dict[int, type[CertificateVerificationError]] = {
    10: CertificateExpired,
    9: CertificateNotYetValid,
    2: UnknownIssuer,
    18: UnknownIssuer,
    19: UnknownIssuer,
    20: UnknownIssuer,
    21: UnknownIssuer,
    22: InvalidChain,
    24: InvalidChain,
    25: InvalidChain,
    32: InvalidChain,
    47: InvalidChain,
    48: InvalidChain,
    79: InvalidChain,
    4: BadCertificateSignature,
    6: BadCertificateSignature,
    7: BadCertificateSignature,
    23: CertificateRevoked,
    3: RevocationStatusUnknown,
    11: RevocationStatusUnknown,
    12: RevocationStatusUnknown,
    33: RevocationStatusUnknown,
    26: InvalidPurpose,
    62: NameMismatch,
    63: NameMismatch,
    64: NameMismatch,
    66: WeakCertificate,
    67: WeakCertificate,
    68: WeakCertificate,
    94: WeakCertificate,
    **dict.fromkeys(range(83, 94), NonConformingCertificate),
}


def verify_code_alert(code: int) -> Alert:
    """The alert OpenSSL sends when local verification fails with ``code``."""
    return _VERIFY_CODE_ALERT.get(code, Alert.CERTIFICATE_UNKNOWN)


# OpenSSL spells a received alert as a reason of 1000 + code.  These are the
# names Python reports (measured on OpenSSL 3.0); a few alerts have no reason.
_ALERT_REASONS: dict[str, Alert] = {
    "SSLV3_ALERT_UNEXPECTED_MESSAGE": Alert.UNEXPECTED_MESSAGE,
    "SSLV3_ALERT_BAD_RECORD_MAC": Alert.BAD_RECORD_MAC,
    "TLSV1_ALERT_DECRYPTION_FAILED": Alert.DECRYPTION_FAILED,
    "TLSV1_ALERT_RECORD_OVERFLOW": Alert.RECORD_OVERFLOW,
    "SSLV3_ALERT_DECOMPRESSION_FAILURE": Alert.DECOMPRESSION_FAILURE,
    "SSLV3_ALERT_HANDSHAKE_FAILURE": Alert.HANDSHAKE_FAILURE,
    "SSLV3_ALERT_NO_CERTIFICATE": Alert.NO_CERTIFICATE,
    "SSLV3_ALERT_BAD_CERTIFICATE": Alert.BAD_CERTIFICATE,
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": Alert.UNSUPPORTED_CERTIFICATE,
    "SSLV3_ALERT_CERTIFICATE_REVOKED": Alert.CERTIFICATE_REVOKED,
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": Alert.CERTIFICATE_EXPIRED,
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": Alert.CERTIFICATE_UNKNOWN,
    "SSLV3_ALERT_ILLEGAL_PARAMETER": Alert.ILLEGAL_PARAMETER,
    "TLSV1_ALERT_UNKNOWN_CA": Alert.UNKNOWN_CA,
    "TLSV1_ALERT_ACCESS_DENIED": Alert.ACCESS_DENIED,
    "TLSV1_ALERT_DECODE_ERROR": Alert.DECODE_ERROR,
    "TLSV1_ALERT_DECRYPT_ERROR": Alert.DECRYPT_ERROR,
    "TLSV1_ALERT_EXPORT_RESTRICTION": Alert.EXPORT_RESTRICTION,
    "TLSV1_ALERT_PROTOCOL_VERSION": Alert.PROTOCOL_VERSION,
    "TLSV1_ALERT_INSUFFICIENT_SECURITY": Alert.INSUFFICIENT_SECURITY,
    "TLSV1_ALERT_INTERNAL_ERROR": Alert.INTERNAL_ERROR,
    "TLSV1_ALERT_INAPPROPRIATE_FALLBACK": Alert.INAPPROPRIATE_FALLBACK,
    "TLSV1_ALERT_USER_CANCELLED": Alert.USER_CANCELED,
    "TLSV1_ALERT_NO_RENEGOTIATION": Alert.NO_RENEGOTIATION,
    "TLSV13_ALERT_MISSING_EXTENSION": Alert.MISSING_EXTENSION,
    "TLSV1_UNSUPPORTED_EXTENSION": Alert.UNSUPPORTED_EXTENSION,
    "TLSV1_CERTIFICATE_UNOBTAINABLE": Alert.CERTIFICATE_UNOBTAINABLE,
    "TLSV1_UNRECOGNIZED_NAME": Alert.UNRECOGNIZED_NAME,
    "TLSV1_BAD_CERTIFICATE_STATUS_RESPONSE": Alert.BAD_CERTIFICATE_STATUS_RESPONSE,
    "TLSV1_BAD_CERTIFICATE_HASH_VALUE": Alert.BAD_CERTIFICATE_HASH_VALUE,
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": Alert.CERTIFICATE_REQUIRED,
}

# Alerts whose reason is None on OpenSSL 3.0 but whose message names them.
_ALERT_MESSAGES: tuple[tuple[str, Alert], ...] = (
    ("alert unknown psk identity", Alert.UNKNOWN_PSK_IDENTITY),
    ("alert no application protocol", Alert.NO_APPLICATION_PROTOCOL),
)

_PEER_CERTIFICATE_ALERTS = frozenset(
    {
        Alert.NO_CERTIFICATE,
        Alert.BAD_CERTIFICATE,
        Alert.UNSUPPORTED_CERTIFICATE,
        Alert.CERTIFICATE_REVOKED,
        Alert.CERTIFICATE_EXPIRED,
        Alert.CERTIFICATE_UNKNOWN,
        Alert.UNKNOWN_CA,
        Alert.DECRYPT_ERROR,
        Alert.CERTIFICATE_UNOBTAINABLE,
        Alert.BAD_CERTIFICATE_STATUS_RESPONSE,
        Alert.BAD_CERTIFICATE_HASH_VALUE,
    }
)

_NEGOTIATION_REASONS = frozenset(
    {
        "NO_SHARED_CIPHER",
        "UNSUPPORTED_PROTOCOL",
        "NO_PROTOCOLS_AVAILABLE",
        "VERSION_TOO_LOW",
        "VERSION_TOO_HIGH",
        "NO_SHARED_GROUPS",
        "NO_SUITABLE_KEY_SHARE",
        "NO_SHARED_SIGNATURE_ALGORITHMS",
        "NO_SUITABLE_SIGNATURE_ALGORITHM",
        "NO_CIPHERS_AVAILABLE",
        "WRONG_CIPHER_RETURNED",
    }
)

# The alert OpenSSL sends for local failures other than certificate checks
# (measured with SSLContext._msg_callback on OpenSSL 3.0).
_REASON_ALERT_SENT: dict[str, Alert] = {
    "NO_SHARED_CIPHER": Alert.HANDSHAKE_FAILURE,
    "NO_SHARED_GROUPS": Alert.HANDSHAKE_FAILURE,
    "NO_SUITABLE_KEY_SHARE": Alert.HANDSHAKE_FAILURE,
    "NO_SHARED_SIGNATURE_ALGORITHMS": Alert.HANDSHAKE_FAILURE,
    "UNSUPPORTED_PROTOCOL": Alert.PROTOCOL_VERSION,
    "VERSION_TOO_LOW": Alert.PROTOCOL_VERSION,
    "UNEXPECTED_MESSAGE": Alert.UNEXPECTED_MESSAGE,
    "DECRYPTION_FAILED_OR_BAD_RECORD_MAC": Alert.BAD_RECORD_MAC,
    "BAD_RECORD_MAC": Alert.BAD_RECORD_MAC,
    "RECORD_LENGTH_MISMATCH": Alert.DECODE_ERROR,
    "LENGTH_MISMATCH": Alert.DECODE_ERROR,
    "BAD_PACKET_LENGTH": Alert.DECODE_ERROR,
    "PACKET_LENGTH_TOO_LONG": Alert.RECORD_OVERFLOW,
    "ENCRYPTED_LENGTH_TOO_LONG": Alert.RECORD_OVERFLOW,
    "DATA_LENGTH_TOO_LONG": Alert.RECORD_OVERFLOW,
}


def alert_from_ssl_error(exc: ssl.SSLError) -> Alert | None:
    """The alert a peer sent, as named by an :class:`ssl.SSLError`, or ``None``.

    Uses the reason first and the message text second, since OpenSSL 3.0 has no
    reason for some alerts (115, 120) and calls others "unknown error".
    """
    reason = exc.reason
    if reason is not None:
        alert = _ALERT_REASONS.get(reason)
        if alert is not None:
            return alert
    text = str(exc)
    for needle, alert in _ALERT_MESSAGES:
        if needle in text:
            return alert
    return None


@dataclass(frozen=True)
class FailureContext:
    """What the engine knew about a connection when an ``ssl`` call failed."""

    side: Side
    surfaced_in: SurfacedIn
    handshake_complete: bool
    server_hello_seen: bool
    received_anything: bool
    tls_version: str | None = None
    certificate_requested: bool | None = None
    certificate_sent: bool | None = None
    wire_alert_received: Alert | None = None
    wire_alert_sent: Alert | None = None
    wrote_on_failure: bool = False
    received_prefix: bytes = b""
    server_name: str | None = None
    peer_chain: tuple[CertificateInfo, ...] = field(default=())
    verify_details: str | None = None


def phase_in_progress(ctx: FailureContext) -> Phase:
    """The phase a connection is in, judged from what it has seen so far."""
    if ctx.surfaced_in == "close":
        return Phase.CLOSE
    if ctx.handshake_complete:
        return Phase.APPLICATION_DATA
    if not ctx.server_hello_seen:
        if ctx.side == "client" and ctx.received_anything:
            return Phase.SERVER_HELLO
        return Phase.CLIENT_HELLO
    if ctx.side == "client":
        return Phase.SERVER_CERTIFICATE
    if ctx.certificate_requested is False:
        return Phase.FINISHED
    return Phase.CLIENT_CERTIFICATE


# What plaintext HTTP looks like in its first bytes (a request line).
# OpenSSL itself recognises only GET, POST, HEAD, PUT and CONNECT.
HTTP_METHODS: Final = (
    b"GET ",
    b"POST ",
    b"HEAD ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"TRACE ",
)


def _looks_like_http(prefix: bytes) -> bool:
    head = prefix[:8].upper()
    return head.startswith((b"HTTP/", b"CONNECT ", *HTTP_METHODS))


def _peer_alert_class(
    alert: Alert | None, ctx: FailureContext
) -> tuple[type[PeerAlert], Phase]:
    """Which :class:`PeerAlert` subclass, and which phase, a received alert means."""
    before_hello = not ctx.server_hello_seen and not ctx.handshake_complete
    if before_hello and ctx.side == "server":
        hello_phase = Phase.CLIENT_HELLO
    else:
        hello_phase = Phase.SERVER_HELLO
    if alert is Alert.CERTIFICATE_REQUIRED:
        return PeerRequiresCertificate, (
            hello_phase if before_hello else Phase.CLIENT_CERTIFICATE
        )
    if alert is Alert.UNRECOGNIZED_NAME:
        return PeerUnrecognizedName, Phase.CLIENT_HELLO
    if alert is Alert.NO_APPLICATION_PROTOCOL:
        return PeerNoApplicationProtocol, Phase.CLIENT_HELLO
    if alert is Alert.ACCESS_DENIED:
        return PeerDeniedAccess, (
            Phase.CLIENT_HELLO if before_hello else Phase.CONNECTION_POLICY
        )
    if alert in (
        Alert.PROTOCOL_VERSION,
        Alert.INSUFFICIENT_SECURITY,
        Alert.INAPPROPRIATE_FALLBACK,
    ):
        return PeerProtocolVersion, hello_phase
    if alert is Alert.HANDSHAKE_FAILURE:
        if before_hello:
            return PeerHandshakeFailure, hello_phase
        if (
            ctx.side == "client"
            and ctx.certificate_requested
            and ctx.certificate_sent is False
        ):
            # TLS 1.2 has no certificate_required: a server that insists on a
            # certificate answers an empty Certificate with handshake_failure.
            return PeerRequiresCertificate, Phase.CLIENT_CERTIFICATE
        return PeerHandshakeFailure, phase_in_progress(ctx)
    if alert in _PEER_CERTIFICATE_ALERTS and not before_hello:
        if ctx.side == "server":
            return PeerRejectedCertificate, Phase.SERVER_CERTIFICATE
        if alert is Alert.DECRYPT_ERROR and ctx.certificate_sent is False:
            return PeerProtocolError, Phase.FINISHED
        # A server never judges its own certificate: a certificate alert from
        # it is always about ours, even when TLS 1.3 delivers it after our
        # handshake finished.
        return PeerRejectedCertificate, Phase.CLIENT_CERTIFICATE
    return PeerProtocolError, phase_in_progress(ctx)


def classify(exc: ssl.SSLError, ctx: FailureContext) -> TLSError:
    """Turn an :class:`ssl.SSLError` into the :class:`TLSError` that explains it.

    ``ctx`` is what the connection had seen when the error happened.  The
    result's ``__cause__`` is left for the caller to set with ``raise ... from``.
    """
    sent = ctx.wire_alert_sent

    # 1. We judged the peer's certificate.
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        cls = _VERIFY_CODE_CLASS.get(code, OtherCertificateError)
        who = "server" if ctx.side == "client" else "client"
        if ctx.side == "client":
            phase = Phase.SERVER_CERTIFICATE
        elif ctx.handshake_complete:
            phase = Phase.POST_HANDSHAKE_AUTH
        else:
            phase = Phase.CLIENT_CERTIFICATE
        text = f"{who} certificate refused: {exc.verify_message}"
        if ctx.verify_details:
            text = f"{text}: {ctx.verify_details}"
        return _build(
            cls,
            exc,
            ctx,
            text,
            phase=phase,
            alert_sent=sent if sent is not None else verify_code_alert(code),
            verify_code=code,
        )

    reason = exc.reason or ""

    # 2. The peer told us, with an alert.
    received = (
        ctx.wire_alert_received
        if ctx.wire_alert_received is not None
        else alert_from_ssl_error(exc)
    )
    if isinstance(exc, ssl.SSLZeroReturnError):
        received = None  # a close_notify: handled below, not a refusal
    if received is not None or " alert " in str(exc):
        peer_cls, phase = _peer_alert_class(received, ctx)
        if (
            phase is Phase.CLIENT_CERTIFICATE
            and ctx.handshake_complete
            and (ctx.side == "server" or ctx.certificate_requested is False)
        ):
            # A verdict on a certificate that the handshake never asked for
            # is one on a certificate asked for afterwards (TLS 1.3 PHA).
            phase = Phase.POST_HANDSHAKE_AUTH
        named = str(received) if received is not None else "an unnamed alert"
        return _build(
            peer_cls,
            exc,
            ctx,
            f"peer sent {named}: {_reason_text(exc)}",
            phase=phase,
            alert_sent=sent,
            alert_received=received,
        )

    # 3. Our own refusals that are not certificate checks.
    if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
        v13 = ctx.tls_version == "TLSv1.3"
        return _build(
            MissingClientCertificate,
            exc,
            ctx,
            "client sent no certificate, and the policy requires one",
            phase=(
                Phase.POST_HANDSHAKE_AUTH
                if ctx.handshake_complete
                else Phase.CLIENT_CERTIFICATE
            ),
            alert_sent=sent
            if sent is not None
            else (Alert.CERTIFICATE_REQUIRED if v13 else Alert.HANDSHAKE_FAILURE),
        )
    if reason in _NEGOTIATION_REASONS:
        return _build(
            NegotiationFailed,
            exc,
            ctx,
            f"negotiation failed: {_reason_text(exc)}",
            phase=Phase.SERVER_HELLO,
            alert_sent=sent if sent is not None else _sent_if_written(reason, ctx),
        )
    if reason in ("HTTP_REQUEST", "HTTPS_PROXY_REQUEST") or (
        reason == "WRONG_VERSION_NUMBER" and _looks_like_http(ctx.received_prefix)
    ):
        return _build(
            NotTLS,
            exc,
            ctx,
            "peer speaks plaintext HTTP, not TLS",
            phase=Phase.CLIENT_HELLO if ctx.side == "server" else Phase.SERVER_HELLO,
            alert_sent=sent,
        )
    if (
        reason in ("WRONG_VERSION_NUMBER", "PACKET_LENGTH_TOO_LONG", "UNKNOWN_PROTOCOL")
        and not ctx.server_hello_seen
        and ctx.received_prefix[:1] not in (b"\x14", b"\x15", b"\x16", b"\x17")
    ):
        return _build(
            NotTLS,
            exc,
            ctx,
            f"peer does not speak TLS (first bytes {ctx.received_prefix[:8]!r})",
            phase=Phase.CLIENT_HELLO if ctx.side == "server" else Phase.SERVER_HELLO,
            alert_sent=sent,
        )
    if isinstance(exc, ssl.SSLEOFError) or reason == "UNEXPECTED_EOF_WHILE_READING":
        return _build(
            TruncatedStream,
            exc,
            ctx,
            "peer closed the connection without a close_notify alert",
            phase=phase_in_progress(ctx),
            alert_sent=sent,
        )
    if isinstance(exc, ssl.SSLZeroReturnError):
        return _build(
            TruncatedStream,
            exc,
            ctx,
            "peer closed the TLS session before the handshake finished",
            phase=phase_in_progress(ctx),
            alert_received=Alert.CLOSE_NOTIFY,
        )
    return _build(
        ProtocolViolation,
        exc,
        ctx,
        f"protocol error: {_reason_text(exc)}",
        phase=phase_in_progress(ctx),
        alert_sent=sent if sent is not None else _sent_if_written(reason, ctx),
    )


_E = TypeVar("_E", bound=TLSError)


def _build(
    cls: type[_E],
    exc: ssl.SSLError,
    ctx: FailureContext,
    message: str,
    *,
    phase: Phase,
    alert_sent: Alert | None = None,
    alert_received: Alert | None = None,
    verify_code: int | None = None,
) -> _E:
    return cls(
        message,
        phase=phase,
        side=ctx.side,
        surfaced_in=ctx.surfaced_in,
        tls_version=ctx.tls_version,
        alert_sent=alert_sent,
        alert_received=alert_received,
        ssl_error=exc,
        server_name=ctx.server_name,
        peer_chain=ctx.peer_chain,
        verify_code=verify_code,
    )


def _sent_if_written(reason: str, ctx: FailureContext) -> Alert | None:
    if not ctx.wrote_on_failure:
        return None
    return _REASON_ALERT_SENT.get(reason)


def _reason_text(exc: ssl.SSLError) -> str:
    """The OpenSSL message without Python's ``(_ssl.c:NNNN)`` suffix."""
    text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
    cut = text.rfind(" (_ssl.c:")
    return text[:cut] if cut != -1 else text
