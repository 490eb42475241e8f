"""Trio-native TLS with explicit, per-connection verification policy.

trio_verify wraps any :class:`trio.abc.Stream` in TLS the way
:class:`trio.SSLStream` does, but makes the verification policy explicit
(:class:`ClientPolicy`, :class:`ServerPolicy`) and turns every failure into a
typed :class:`TLSError` that says in which phase, on which side, and why the
connection failed, after the alert has reached the peer.
"""

from ._certs import CertificateInfo, PeerInfo
from ._errors import (
    Alert,
    BadCertificateSignature,
    CertificateExpired,
    CertificateNotYetValid,
    CertificateRevoked,
    CertificateVerificationError,
    ClientAuthNotConfirmed,
    HandshakeTimeout,
    InvalidChain,
    InvalidPurpose,
    MissingClientCertificate,
    NameMismatch,
    NegotiationFailed,
    NonConformingCertificate,
    NotTLS,
    OtherCertificateError,
    PeerAlert,
    PeerDeniedAccess,
    PeerHandshakeFailure,
    PeerNoApplicationProtocol,
    PeerProtocolError,
    PeerProtocolVersion,
    PeerRejectedCertificate,
    PeerRequiresCertificate,
    PeerUnrecognizedName,
    Phase,
    PinMismatch,
    PolicyError,
    PolicyRejected,
    PolicyWarning,
    ProtocolViolation,
    RevocationStatusUnknown,
    TLSError,
    TruncatedStream,
    UnknownIssuer,
    WeakCertificate,
)
from ._hello import ClientHello
from ._listener import PolicySelector, TLSListener, serve_tls
from ._policy import ClientAuth, ClientPolicy, Identity, Reject, ServerPolicy
from ._pool import ClientPool, PoolStats, open_client_pool
from ._report import HandshakeReport
from ._stream import TLSStream, open_tls_stream

__version__ = "0.1.0"

__all__ = [
    "Alert",
    "BadCertificateSignature",
    "CertificateExpired",
    "CertificateInfo",
    "CertificateNotYetValid",
    "CertificateRevoked",
    "CertificateVerificationError",
    "ClientAuth",
    "ClientAuthNotConfirmed",
    "ClientHello",
    "ClientPolicy",
    "ClientPool",
    "HandshakeReport",
    "HandshakeTimeout",
    "Identity",
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
    "PeerInfo",
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
    "PolicySelector",
    "PolicyWarning",
    "PoolStats",
    "ProtocolViolation",
    "Reject",
    "RevocationStatusUnknown",
    "ServerPolicy",
    "TLSError",
    "TLSListener",
    "TLSStream",
    "TruncatedStream",
    "UnknownIssuer",
    "WeakCertificate",
    "open_client_pool",
    "open_tls_stream",
    "serve_tls",
]
