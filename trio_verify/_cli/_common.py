"""What every command shares: usage errors, consoles, and JSON views of results."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

from rich.console import Console

from .. import Alert, CertificateInfo, TLSError

__all__ = [
    "UsageError",
    "alert_json",
    "alert_text",
    "cert_json",
    "cert_names",
    "dump_json",
    "error_json",
    "iso",
    "make_console",
]


class UsageError(Exception):
    """The command line cannot be carried out as given (exit status 2)."""


def make_console(file: IO[str] | None = None, *, stderr: bool = False) -> Console:
    """A console that writes to ``file`` (by default the current stdout/stderr).

    Colours only on a terminal (rich's own detection, which honours
    ``NO_COLOR`` and ``FORCE_COLOR``); no syntax highlighting of plain text,
    whose numbers and paths would otherwise be coloured at random.
    """
    if file is None:
        file = sys.stderr if stderr else sys.stdout
    return Console(file=file, highlight=False, emoji=False)


def dump_json(document: Mapping[str, Any], file: IO[str] | None = None) -> None:
    """Write one JSON document, and a newline."""
    out = sys.stdout if file is None else file
    out.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    out.flush()


def iso(moment: datetime) -> str:
    """An RFC 3339 UTC timestamp, to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def alert_json(alert: Alert | None) -> dict[str, Any] | None:
    """``{"code": 45, "name": "certificate_expired"}``, or ``None``."""
    if alert is None:
        return None
    return {"code": int(alert), "name": alert.name.lower()}


def alert_text(alert: Alert | None) -> str:
    """``certificate_expired (45)``, or ``-``."""
    return "-" if alert is None else str(alert)


def cert_names(cert: CertificateInfo) -> list[str]:
    """The subject alternative names, as ``DNS:...``, ``IP:...``, ``URI:...``."""
    return [
        *(f"DNS:{name}" for name in cert.dns_names),
        *(f"IP:{ip}" for ip in cert.ip_addresses),
        *(f"URI:{uri}" for uri in cert.uris),
        *(f"email:{email}" for email in cert.emails),
    ]


def cert_json(cert: CertificateInfo) -> dict[str, Any]:
    """The facts of one certificate that explain a verification result."""
    return {
        "subject": cert.subject,
        "issuer": cert.issuer,
        "serial_number": f"{cert.serial_number:x}",
        "not_before": iso(cert.not_before),
        "not_after": iso(cert.not_after),
        "subject_alt_names": cert_names(cert),
        "key": cert.key_description,
        "sha256_fingerprint": cert.sha256_fingerprint,
        "spki_pin": f"sha256//{cert.spki_pin}",
        "self_signed": cert.is_self_signed,
        "ca": cert.is_ca,
        "extended_key_usages": list(cert.extended_key_usages),
    }


def error_json(error: BaseException) -> dict[str, Any]:
    """The typed facts of a failure; ``phase`` etc. are ``None`` for non-TLS errors."""
    if isinstance(error, TLSError):
        return {
            "type": type(error).__name__,
            "phase": error.phase.name,
            "surfaced_in": error.surfaced_in,
            "alert_sent": alert_json(error.alert_sent),
            "alert_received": alert_json(error.alert_received),
            "verify_code": error.verify_code,
            "message": str(error),
        }
    message = str(error) or repr(error)
    return {
        "type": type(error).__name__,
        "phase": None,
        "surfaced_in": None,
        "alert_sent": None,
        "alert_received": None,
        "verify_code": None,
        "message": message,
    }
