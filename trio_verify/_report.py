"""HandshakeReport: one immutable record per server-side connection."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ._certs import CertificateInfo
from ._errors import Alert, Phase, TLSError

__all__ = ["HandshakeReport", "logger"]

logger = logging.getLogger("trio_verify")
"""The ``trio_verify`` logger: one line per server-side handshake."""
# A library never prints by itself: without a configured handler, Python's
# last-resort handler would put every refused handshake on stderr.
logger.addHandler(logging.NullHandler())


@dataclass(frozen=True, slots=True)
class HandshakeReport:
    """What happened in one handshake accepted by a listener, success or not.

    Delivered to a listener's ``on_handshake`` hook and logged on the
    ``trio_verify`` logger (INFO for success, WARNING for failure, without a
    stack trace for ordinary verification failures).
    """

    peer_address: object
    """The client's transport address, when known."""
    server_name: str | None
    """The server name (SNI) the client asked for."""
    alpn_protocol: str | None
    """The negotiated application protocol."""
    tls_version: str | None
    """The negotiated protocol version, e.g. ``"TLSv1.3"``."""
    cipher: str | None
    """The negotiated cipher suite."""
    policy_name: str | None
    """The ``name`` of the policy the connection was judged by."""
    client_certificate: CertificateInfo | None
    """The client's leaf certificate (verified on success, as presented on a
    failure), or ``None``."""
    duration: float
    """Seconds from the first byte read to the verdict."""
    error: BaseException | None = None
    """The exception the handshake ended with, or ``None`` on success."""

    @property
    def ok(self) -> bool:
        """Whether the handshake succeeded."""
        return self.error is None

    @property
    def error_type(self) -> str | None:
        """The class name of the error, e.g. ``"UnknownIssuer"``."""
        return None if self.error is None else type(self.error).__name__

    @property
    def phase(self) -> Phase | None:
        """The phase a TLS failure happened in."""
        return self.error.phase if isinstance(self.error, TLSError) else None

    @property
    def alert_sent(self) -> Alert | None:
        """The alert we sent, on a TLS failure."""
        return self.error.alert_sent if isinstance(self.error, TLSError) else None

    @property
    def alert_received(self) -> Alert | None:
        """The alert the client sent, on a TLS failure."""
        return self.error.alert_received if isinstance(self.error, TLSError) else None

    def summary(self) -> str:
        """One line of ``key=value`` facts, as logged."""
        parts = [
            "handshake ok" if self.ok else f"handshake failed: {self.error_type}",
            f"peer={_address(self.peer_address)}",
            f"sni={self.server_name or '-'}",
        ]
        if self.tls_version:
            parts.append(f"version={self.tls_version}")
        if self.cipher:
            parts.append(f"cipher={self.cipher}")
        if self.alpn_protocol:
            parts.append(f"alpn={self.alpn_protocol}")
        if self.policy_name:
            parts.append(f"policy={self.policy_name}")
        cert = self.client_certificate
        if cert is not None:
            parts.append(f"client=[{cert.label}]")
            try:
                parts.append(f"issuer=[{cert.issuer}]")
                parts.append(f"serial={cert.serial_number:x}")
                parts.append(f"not_after={cert.not_after:%Y-%m-%d}")
            except Exception:
                parts.append("(certificate not parseable)")
        if self.phase is not None:
            parts.append(f"phase={self.phase.name}")
        if self.alert_sent is not None:
            parts.append(f"alert_sent={self.alert_sent.name.lower()}")
        if self.alert_received is not None:
            parts.append(f"alert_received={self.alert_received.name.lower()}")
        parts.append(f"time={self.duration * 1000:.1f}ms")
        if self.error is not None:
            message = (
                self.error.message if isinstance(self.error, TLSError) else self.error
            )
            parts.append(f"- {message}")
        return " ".join(parts)


def _address(address: object) -> str:
    """``host:port`` for logs."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return "-" if address is None else str(address)
