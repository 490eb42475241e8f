"""``trio-verify probe``: connect to a TLS server and explain what happens.

The probe makes one connection with a trio_verify :class:`ClientPolicy` over
its own TCP stream, wrapped in a :class:`~._wire.WireTap` so that it can say
when each flight crossed the wire, and reports phase by phase.  A failure is
explained with the typed error (class, phase, alert) and a hint in plain
words, from the facts of the certificates involved.  Only when the failed
connection left no trace of the server's chain does it fetch the chain again
over a second connection that verifies nothing, says so, and never counts as
secure.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import ssl
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import trio
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .. import (
    Alert,
    CertificateExpired,
    CertificateInfo,
    CertificateNotYetValid,
    CertificateVerificationError,
    ClientAuthNotConfirmed,
    ClientPolicy,
    HandshakeTimeout,
    Identity,
    InvalidPurpose,
    NameMismatch,
    NegotiationFailed,
    NotTLS,
    PeerAlert,
    PeerDeniedAccess,
    PeerHandshakeFailure,
    PeerInfo,
    PeerNoApplicationProtocol,
    PeerProtocolVersion,
    PeerRejectedCertificate,
    PeerRequiresCertificate,
    PeerUnrecognizedName,
    Phase,
    PolicyError,
    PolicyWarning,
    TLSError,
    TLSStream,
    TruncatedStream,
    UnknownIssuer,
)
from ._common import UsageError, cert_json, cert_names, dump_json, error_json
from ._wire import WireTap, cipher_name

__all__ = [
    "Options",
    "Report",
    "fetch_unverified_chain",
    "main",
    "parse_target",
    "probe",
]

DEFAULT_PORT = 443

Status = Literal["ok", "failed", "skipped", "not_reached", "warning"]

# Phases at or after the one in which the server's certificate is judged:
# a failure there means the server did send one.
_AFTER_SERVER_CERTIFICATE = (
    Phase.CLIENT_CERTIFICATE,
    Phase.FINISHED,
    Phase.POST_HANDSHAKE_AUTH,
    Phase.CONNECTION_POLICY,
    Phase.APPLICATION_DATA,
    Phase.CLOSE,
)


@dataclass(frozen=True)
class Options:
    host: str
    port: int
    servername: str | None = None
    cafiles: tuple[str, ...] = ()
    cert: str | None = None
    key: str | None = None
    tls: str | None = None
    alpn: tuple[str, ...] = ()
    confirm_client_auth: Literal["never", "auto", "always"] = "auto"
    insecure: bool = False
    timeout: float = 10.0
    read: float = 0.0
    json: bool = False

    @property
    def server_hostname(self) -> str:
        return self.servername or self.host

    @property
    def trust_label(self) -> str:
        if self.cafiles:
            return ", ".join(self.cafiles)
        return "the system trust store"


def parse_target(text: str) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``[V6]:PORT`` or a bare IPv6 address."""
    host, port = text, DEFAULT_PORT
    if text.startswith("["):
        end = text.find("]")
        if end == -1:
            raise UsageError(f"{text!r}: missing ']' after the IPv6 address")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise UsageError(f"{text!r}: expected ':PORT' after ']'")
            port = _port(rest[1:], text)
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _port(port_text, text)
    if not host:
        raise UsageError(f"{text!r}: no host")
    return host, port


def _port(text: str, target: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UsageError(f"{target!r}: {text!r} is not a port number")
    return int(text)


# ---------------------------------------------------------------------------
# What the probe found.


@dataclass
class PhaseReport:
    name: str
    title: str
    status: Status
    detail: str
    ms: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "detail": self.detail,
            "ms": None if self.ms is None else round(self.ms, 3),
        }


@dataclass
class Chain:
    source: Literal["handshake", "error", "wire", "second_unverified_connection"]
    verified: bool
    certificates: tuple[CertificateInfo, ...]

    @property
    def description(self) -> str:
        return {
            "handshake": "as the handshake established it",
            "error": "as the server sent it",
            "wire": "as the server sent it, read off the wire (TLS 1.2 sends "
            "certificates in the clear)",
            "second_unverified_connection": "fetched over a second, unverified "
            "connection, only to explain the failure",
        }[self.source]


@dataclass
class ClientCertificate:
    offered: bool
    requested: bool | None = None
    sent: bool | None = None
    outcome: Literal[
        "not_requested",
        "accepted",
        "refused",
        "let_in_without",
        "refused_without",
        "unknown",
        "not_reached",
    ] = "not_reached"
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "offered": self.offered,
            "requested": self.requested,
            "sent": self.sent,
            "outcome": self.outcome,
            "detail": self.detail,
        }


@dataclass
class Report:
    options: Options
    phases: list[PhaseReport] = field(default_factory=list)
    address: str | None = None
    tls_version: str | None = None
    cipher: str | None = None
    alpn: str | None = None
    chain: Chain | None = None
    verification: tuple[Status | Literal["verified"], str] = ("not_reached", "")
    client_certificate: ClientCertificate | None = None
    error: BaseException | None = None
    hint: str | None = None
    received: bytes | None = None
    verdict: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    def add(
        self,
        name: str,
        title: str,
        status: Status,
        detail: str,
        ms: float | None = None,
    ) -> None:
        self.phases.append(PhaseReport(name, title, status, detail, ms))

    def to_json(self) -> dict[str, Any]:
        opts = self.options
        error = None
        if self.error is not None:
            error = {**error_json(self.error), "hint": self.hint}
        chain = self.chain
        return {
            "command": "probe",
            "target": {
                "host": opts.host,
                "port": opts.port,
                "server_name": opts.server_hostname,
            },
            "ok": self.ok,
            "phases": [p.to_json() for p in self.phases],
            "connection": {
                "address": self.address,
                "tls_version": self.tls_version,
                "cipher": self.cipher,
                "alpn": self.alpn,
            },
            "server_chain": None
            if chain is None
            else {
                "source": chain.source,
                "verified": chain.verified,
                "certificates": [cert_json(c) for c in chain.certificates],
            },
            "verification": {
                "status": self.verification[0],
                "detail": self.verification[1],
            },
            "client_certificate": None
            if self.client_certificate is None
            else self.client_certificate.to_json(),
            "error": error,
            "received": None
            if self.received is None
            else {
                "bytes": len(self.received),
                "text": self.received.decode("utf-8", "replace"),
            },
            "notes": list(self.notes),
        }


# ---------------------------------------------------------------------------
# The probe.


def make_policy(opts: Options, notes: list[str]) -> ClientPolicy:
    """The client policy the command line asks for.

    Raises:
        UsageError: the files cannot be read or the options contradict
            each other.
    """
    version = {
        None: (ssl.TLSVersion.TLSv1_2, None),
        "1.2": (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2),
        "1.3": (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3),
    }[opts.tls]
    try:
        identity = None
        if opts.cert is not None:
            identity = Identity.from_files(opts.cert, opts.key)
        elif opts.key is not None:
            raise UsageError("--key needs --cert")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", PolicyWarning)
            policy = ClientPolicy(
                trust=list(opts.cafiles) or None,
                identity=identity,
                insecure=opts.insecure,
                alpn=opts.alpn,
                minimum_version=version[0],
                maximum_version=version[1],
                confirm_client_auth=opts.confirm_client_auth,
                confirm_timeout=opts.timeout,
                handshake_timeout=opts.timeout,
            )
        notes.extend(
            str(w.message) for w in caught if issubclass(w.category, PolicyWarning)
        )
    except (PolicyError, OSError) as exc:
        raise UsageError(str(exc)) from None
    return policy


def _ms(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start) * 1000


def _address(sock: trio.socket.SocketType) -> str:
    host, port = sock.getpeername()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def probe(opts: Options) -> Report:
    """Connect, handshake, and collect what a report needs."""
    report = Report(opts)
    policy = make_policy(opts, report.notes)
    report.client_certificate = ClientCertificate(offered=policy.identity is not None)
    started = trio.current_time()
    try:
        with trio.fail_after(opts.timeout):
            tcp = await trio.open_tcp_stream(opts.host, opts.port)
    except (OSError, trio.TooSlowError) as exc:
        _connect_failed(report, exc, started)
        report.hint = hint(report)
        return report
    connected = trio.current_time()
    report.address = _address(tcp.socket)
    report.add(
        "tcp_connect",
        "TCP connect",
        "ok",
        f"connected to {report.address}",
        _ms(started, connected),
    )
    tap = WireTap(tcp)
    stream = TLSStream(tap, policy, server_hostname=opts.server_hostname)
    try:
        await _handshake(report, stream, tap)
    finally:
        with trio.move_on_after(1) as scope:
            scope.shield = True
            await stream.aclose()
    if report.chain is None and _server_certificate_was_sent(report.error):
        await _fetch_chain_again(report)
    report.hint = hint(report) if report.error is not None else None
    return report


async def _handshake(
    report: Report,
    stream: TLSStream[WireTap],
    tap: WireTap,
) -> None:
    begun = trio.current_time()
    peer: PeerInfo | None = None
    try:
        await stream.do_handshake()
        peer = stream.peer
    except trio.BrokenResourceError as exc:  # every TLSError is one
        report.error = exc
    done = trio.current_time()
    flight = tap.outgoing.encrypted_records
    _client_hello(report, tap, begun)
    _server_hello(report, tap, peer)
    if peer is not None:
        report.tls_version = peer.tls_version
        report.cipher = peer.cipher[0] if peer.cipher else None
        report.alpn = peer.alpn_protocol
        report.chain = Chain("handshake", peer.chain_verified, peer.chain)
        await _after_handshake(report, stream, tap, flight)
    _server_certificate(report, tap)
    _client_certificate(report, tap, flight)
    if report.error is None:
        report.add("handshake", "handshake", "ok", "complete", _ms(begun, done))
    else:
        report.add("handshake", "handshake", "failed", _error_line(report.error))


def _client_hello(report: Report, tap: WireTap, begun: float) -> None:
    opts = report.options
    out = tap.outgoing
    if out.first_at is None:
        report.add("client_hello", "ClientHello", "not_reached", "nothing was sent")
        return
    versions = {None: "TLS 1.2 and 1.3", "1.2": "TLS 1.2 only", "1.3": "TLS 1.3 only"}
    sni = opts.server_hostname
    try:
        ipaddress.ip_address(sni)
    except ValueError:
        sni_text = f"SNI {sni}"
    else:
        sni_text = "no SNI (an IP address)"
    alpn = f"ALPN {', '.join(opts.alpn)}" if opts.alpn else "no ALPN"
    report.add(
        "client_hello",
        "ClientHello sent",
        "ok",
        f"{versions[opts.tls]}, {sni_text}, {alpn}",
        _ms(begun, out.first_at),
    )


def _server_hello(report: Report, tap: WireTap, peer: PeerInfo | None) -> None:
    hello = tap.incoming.server_hello
    error = report.error
    if hello is None:
        if isinstance(error, TLSError):
            what = f"no ServerHello: {_error_line(error)}"
        elif error is not None:
            what = f"no ServerHello: {error}"
        else:
            what = "no ServerHello"
        report.add("server_hello", "ServerHello", "failed", what)
        return
    version = peer.tls_version if peer is not None else hello.version
    cipher = (
        peer.cipher[0]
        if peer is not None and peer.cipher
        else cipher_name(hello.cipher)
    )
    alpn = peer.alpn_protocol if peer is not None else hello.alpn
    if report.tls_version is None:
        report.tls_version, report.cipher, report.alpn = version, cipher, alpn
    detail = f"{version}, {cipher}, ALPN {alpn or 'none'}"
    if hello.hello_retry:
        detail += " (after a HelloRetryRequest)"
    report.add(
        "server_hello",
        "ServerHello received",
        "ok",
        detail,
        _ms(tap.outgoing.first_at, tap.incoming.server_hello_at),
    )


def _server_certificate(report: Report, tap: WireTap) -> None:
    opts = report.options
    error = report.error
    if report.chain is None and isinstance(error, TLSError) and error.peer_chain:
        after = error.phase in _AFTER_SERVER_CERTIFICATE
        report.chain = Chain("error", after and not opts.insecure, error.peer_chain)
    if report.chain is None and tap.incoming.certificates:
        after = isinstance(error, TLSError) and error.phase in _AFTER_SERVER_CERTIFICATE
        report.chain = Chain(
            "wire", after and not opts.insecure, tap.incoming.certificates
        )
    if opts.insecure and (error is None or _server_certificate_was_sent(error)):
        text = (
            "NOT verified (--insecure): anyone on the network path could "
            "impersonate this server"
        )
        report.verification = ("skipped", text)
        report.add("server_certificate", "server certificate", "warning", text)
        return
    if isinstance(error, CertificateVerificationError):
        text = f"{type(error).__name__}: {error.message}"
        report.verification = ("failed", text)
        report.add("server_certificate", "server certificate", "failed", text)
        return
    if error is None or _server_certificate_was_sent(error):
        chain = report.chain.certificates if report.chain else ()
        parts = []
        if chain:
            anchor = chain[-1]
            parts.append(f"chain to {anchor.label} ({opts.trust_label})")
            parts.append(f"valid until {chain[0].not_after:%Y-%m-%d}")
        parts.append(f"name {opts.server_hostname} matches")
        text = "verified: " + ", ".join(parts)
        if error is not None:
            text += " (before the connection failed)"
        report.verification = ("verified", text)
        report.add("server_certificate", "server certificate", "ok", text)
        return
    report.add(
        "server_certificate", "server certificate", "not_reached", "not received"
    )


def _server_certificate_was_sent(error: BaseException | None) -> bool:
    if isinstance(error, CertificateVerificationError):
        return True
    return isinstance(error, TLSError) and error.phase in _AFTER_SERVER_CERTIFICATE


def _client_certificate(report: Report, tap: WireTap, flight: int) -> None:
    """Whether the server asked for a certificate, and took ours.

    trio_verify has no public accessor for "the server asked for a client
    certificate", so this is read from the wire: in TLS 1.2 the
    CertificateRequest travels in the clear; in TLS 1.3 OpenSSL writes each
    handshake message of the client's encrypted flight in its own record,
    which is Finished alone, or Certificate [+ CertificateVerify] + Finished
    when a certificate was asked for.
    """
    cc = report.client_certificate
    assert cc is not None
    error = report.error
    version = tap.version
    incoming, outgoing = tap.incoming, tap.outgoing
    how = ""
    if version == "TLSv1.2":
        if incoming.certificate_request:
            cc.requested = True
            how = "a CertificateRequest came in the clear"
        elif incoming.server_hello_done or report.tls_version:
            cc.requested = False
        if outgoing.certificate_count is not None:
            cc.sent = outgoing.certificate_count > 0
        elif cc.requested is False:
            cc.sent = False
    elif version == "TLSv1.3" and flight:
        cc.requested = flight >= 2
        cc.sent = flight >= 3
        how = (
            f"inferred: our encrypted flight was {flight} records (TLS 1.3 "
            "sends the request encrypted)"
        )
    if isinstance(error, PeerRequiresCertificate):
        cc.requested, cc.sent = True, False
        cc.outcome = "refused_without"
        cc.detail = "the server requires one, and we sent none"
    elif isinstance(error, PeerRejectedCertificate):
        cc.requested, cc.sent = True, True
        cc.outcome = "refused"
        cc.detail = f"the server refused ours with alert {error.alert}"
    elif isinstance(error, ClientAuthNotConfirmed):
        cc.outcome = "unknown"
        cc.detail = "the server sent no verdict on ours"
    elif cc.requested is None:
        if error is not None:
            cc.outcome, cc.detail = (
                "not_reached",
                "not reached: the connection failed first",
            )
        else:
            cc.outcome, cc.detail = "unknown", "unknown"
    elif not cc.requested:
        cc.outcome = "not_requested"
        cc.detail = "the server did not ask for one"
    elif cc.sent:
        if error is not None:
            cc.outcome, cc.detail = (
                "unknown",
                "we sent ours; no verdict before the failure",
            )
        elif report.verdict is None:
            cc.outcome = "unknown"
            cc.detail = "we sent ours; the server's verdict is not known yet"
        else:
            cc.outcome, cc.detail = "accepted", f"we sent ours; {report.verdict}"
    elif error is None:
        if report.verdict is None:
            cc.outcome = "unknown"
            cc.detail = "asked, we sent none; the server's verdict is not known yet"
        else:
            cc.outcome = "let_in_without"
            cc.detail = f"asked, we sent none, and it let us in ({report.verdict})"
    else:
        cc.outcome, cc.detail = "unknown", "asked; we sent none"
    if how:
        cc.detail += f" [{how}]"
    statuses: dict[str, Status] = {
        "not_requested": "ok",
        "accepted": "ok",
        "let_in_without": "ok",
        "refused": "failed",
        "refused_without": "failed",
        "unknown": "warning",
        "not_reached": "not_reached",
    }
    report.add(
        "client_certificate", "client certificate", statuses[cc.outcome], cc.detail
    )


async def _after_handshake(
    report: Report, stream: TLSStream[WireTap], tap: WireTap, flight: int
) -> None:
    """Wait for a verdict still pending on our certificate, and read ``--read``.

    In TLS 1.3 the server judges the client's certificate (or its absence)
    after the client's handshake; the policy waits for that verdict only
    when it sent a certificate (``confirm_client_auth="auto"``).  When a
    certificate was asked for and the verdict is still open, read until an
    alert, data or a session ticket (the server accepted us) arrives.
    """
    opts = report.options
    tls13 = tap.version == "TLSv1.3"
    asked = tls13 and flight >= 2
    sent = flight >= 3
    if not tls13:
        report.verdict = "TLS 1.2 gives the verdict inside the handshake"
    confirmed = sent and opts.confirm_client_auth != "never"
    if tls13 and opts.confirm_client_auth == "always":
        confirmed = True
    if confirmed:
        report.verdict = "the server's verdict came during the handshake"
    pending = asked and not confirmed
    wait = max(opts.timeout if pending else 0.0, opts.read)
    if wait <= 0:
        return
    received = bytearray()
    deadline = trio.current_time() + wait
    try:
        while trio.current_time() < deadline:
            with trio.move_on_after(min(0.05, deadline - trio.current_time())):
                data = await stream.receive_some()
                if not data:
                    report.verdict = report.verdict or "the server closed cleanly"
                    break
                received += data
                report.verdict = report.verdict or "the server sent data"
                if not opts.read:
                    break
            if pending and report.verdict is None and _has_ticket(stream):
                report.verdict = "a session ticket arrived"
                if not opts.read:
                    break
    except trio.BrokenResourceError as exc:
        report.error = exc
    if received or opts.read:
        report.received = bytes(received)


def _has_ticket(stream: TLSStream[WireTap]) -> bool:
    session = stream.session
    return session is not None and bool(session.has_ticket)


def _connect_failed(report: Report, exc: BaseException, started: float) -> None:
    opts = report.options
    # trio.open_tcp_stream reports every failed attempt in an exception group
    # under a generic OSError; the first attempt's error says more.
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        leaves = [e for e in _leaves(cause) if isinstance(e, OSError)]
        if leaves:
            exc = leaves[0]
    if isinstance(exc, trio.TooSlowError):
        text = f"no connection within {opts.timeout:g} s"
        exc = TimeoutError(text)
    elif isinstance(exc, socket.gaierror):
        text = f"cannot resolve {opts.host}: {exc.strerror or exc}"
    else:
        text = f"{exc.strerror or exc}" if isinstance(exc, OSError) else str(exc)
    report.error = exc
    report.add(
        "tcp_connect",
        "TCP connect",
        "failed",
        text,
        _ms(started, trio.current_time()),
    )
    for name, title in (
        ("client_hello", "ClientHello"),
        ("server_hello", "ServerHello"),
        ("server_certificate", "server certificate"),
        ("client_certificate", "client certificate"),
        ("handshake", "handshake"),
    ):
        report.add(name, title, "not_reached", "")


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found.extend(_leaves(exc))
        else:
            found.append(exc)
    return found


async def _fetch_chain_again(report: Report) -> None:
    """Fetch the server's chain without verifying it, to explain a failure."""
    opts = report.options
    with trio.move_on_after(opts.timeout):
        chain = await fetch_unverified_chain(
            opts.host,
            opts.port,
            server_hostname=opts.server_hostname,
            tls=report.tls_version or opts.tls,
            timeout=opts.timeout,
        )
        if chain:
            report.chain = Chain("second_unverified_connection", False, chain)
            report.notes.append(
                "The server's chain was fetched over a second, unverified "
                "connection, only to explain the failure; that connection "
                "proves nothing about the server."
            )


async def fetch_unverified_chain(
    host: str,
    port: int,
    *,
    server_hostname: str,
    tls: str | None,
    timeout: float,
) -> tuple[CertificateInfo, ...]:
    """The chain a server sends, over a connection that verifies nothing.

    Only for explaining a failure: the result is never verified.  TLS 1.3 is
    preferred (the client's handshake completes before any verdict on a
    client certificate); in TLS 1.2 the certificates are read off the wire.
    """
    version = {"1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.2": ssl.TLSVersion.TLSv1_2}.get(
        tls or ""
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PolicyWarning)
        policy = ClientPolicy(
            insecure=True,
            confirm_client_auth="never",
            maximum_version=version,
            handshake_timeout=timeout,
        )
    try:
        tcp = await trio.open_tcp_stream(host, port)
    except OSError:
        return ()
    tap = WireTap(tcp)
    stream = TLSStream(tap, policy, server_hostname=server_hostname)
    try:
        await stream.do_handshake()
        chain = stream.peer.chain
    except TLSError as exc:
        chain = exc.peer_chain or tap.incoming.certificates
    except trio.BrokenResourceError:
        chain = tap.incoming.certificates
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await stream.aclose()
    return tuple(chain)


# ---------------------------------------------------------------------------
# Hints: the failure in plain words.


def _days(moment: datetime) -> str:
    days = (datetime.now(UTC).date() - moment.date()).days
    if days == 0:
        return "today"
    if days > 0:
        return f"{days} day{'s' if days != 1 else ''} ago"
    return f"in {-days} day{'s' if days != -1 else ''}"


def _names(cert: CertificateInfo) -> str:
    names = [*cert.dns_names, *(str(ip) for ip in cert.ip_addresses)]
    if names:
        return ", ".join(names[:8]) + (" and more" if len(names) > 8 else "")
    return "no name (it has no DNS or IP subject alternative names)"


def _own_certificate(opts: Options) -> CertificateInfo | None:
    if opts.cert is None:
        return None
    try:
        return Identity.from_files(opts.cert, opts.key).certificate
    except (PolicyError, OSError):  # pragma: no cover - checked before connecting
        return None


def hint(report: Report) -> str:
    """One or two sentences a person can act on."""
    opts = report.options
    error = report.error
    chain = report.chain.certificates if report.chain else ()
    leaf = chain[0] if chain else None
    now = datetime.now(UTC)
    if isinstance(error, CertificateExpired):
        for cert in chain:
            if cert.not_after < now:
                return (
                    f"the certificate {cert.label} expired on "
                    f"{cert.not_after:%Y-%m-%d %H:%M} UTC ({_days(cert.not_after)}); "
                    "the server must be given a renewed one"
                )
        return "a certificate in the server's chain has expired"
    if isinstance(error, CertificateNotYetValid):
        for cert in chain:
            if cert.not_before > now:
                return (
                    f"the certificate {cert.label} is not valid until "
                    f"{cert.not_before:%Y-%m-%d %H:%M} UTC ({_days(cert.not_before)}); "
                    "check the clocks of the server, the CA and this machine"
                )
        return "a certificate in the server's chain is not valid yet"
    if isinstance(error, NameMismatch):
        names = _names(leaf) if leaf else "other names"
        return (
            f"the certificate is valid for {names}, not {opts.server_hostname}; "
            "connect with a name it has (--servername NAME), or have it reissued"
        )
    if isinstance(error, UnknownIssuer):
        if leaf is not None and leaf.is_self_signed:
            return (
                f"the certificate {leaf.label} is self-signed, and your trust "
                f"store ({opts.trust_label}) does not contain it; trust it with "
                "--cafile if you expect it"
            )
        issuer = chain[-1].issuer if chain else "its issuer"
        return (
            f"issued by {issuer}, which your trust store ({opts.trust_label}) "
            "does not contain; pass that CA with --cafile, or the server must "
            "send its intermediate certificates"
        )
    if isinstance(error, InvalidPurpose):
        usages = ", ".join(leaf.extended_key_usages) if leaf else "other purposes"
        return (
            f"the certificate is meant for {usages}, not for a TLS server "
            "(extended key usage serverAuth)"
        )
    if isinstance(error, CertificateVerificationError):
        return f"the server's certificate was refused: {error.message}"
    if isinstance(error, PeerRequiresCertificate):
        return (
            "the server wants a client certificate; you sent none (pass --cert "
            "and --key)"
        )
    if isinstance(error, PeerRejectedCertificate):
        return _rejected_hint(error.alert, _own_certificate(opts))
    if isinstance(error, ClientAuthNotConfirmed):
        return (
            f"the server sent no verdict on your certificate within "
            f"{opts.timeout:g} s; it may have TLS 1.3 session tickets turned "
            "off (try --confirm-client-auth never)"
        )
    if isinstance(error, PeerUnrecognizedName):
        return (
            f"the server does not serve the name {opts.server_hostname}; try "
            "another --servername"
        )
    if isinstance(error, PeerNoApplicationProtocol):
        offered = ", ".join(opts.alpn) or "nothing"
        return f"the server speaks none of the application protocols you offered ({offered})"
    if isinstance(error, PeerDeniedAccess):
        return "the server's policy refused this connection (access_denied)"
    if isinstance(error, PeerProtocolVersion | NegotiationFailed):
        wanted = {None: "TLS 1.2 or 1.3", "1.2": "TLS 1.2", "1.3": "TLS 1.3"}[opts.tls]
        return (
            f"the server and this client share no protocol version or cipher "
            f"suite (we offered {wanted}); try --tls1.2 or --tls1.3"
        )
    if isinstance(error, PeerHandshakeFailure):
        return (
            "the server aborted the handshake (handshake_failure): no cipher "
            "suite or parameters in common, or it wanted something we did not send"
        )
    if isinstance(error, PeerAlert):
        return (
            f"the server aborted the connection with alert {error.alert or 'unknown'}"
        )
    if isinstance(error, NotTLS):
        return f"whatever listens on port {opts.port} does not speak TLS"
    if isinstance(error, HandshakeTimeout):
        return (
            f"the handshake did not finish within {opts.timeout:g} s (it was "
            f"in {error.phase.name}); the server may be overloaded or not speak TLS"
        )
    if isinstance(error, TruncatedStream):
        return (
            "the server closed the connection without a TLS alert; it may have "
            "refused us without saying why, or it does not speak TLS here"
        )
    if isinstance(error, TLSError):
        return error.message
    if isinstance(error, socket.gaierror):
        return f"the name {opts.host} does not resolve; check its spelling and DNS"
    if isinstance(error, ConnectionRefusedError):
        return f"nothing listens on {opts.host} port {opts.port}"
    if isinstance(error, TimeoutError):
        return f"{opts.host} port {opts.port} did not answer within {opts.timeout:g} s"
    return str(error)


_REJECTION_REASONS: dict[Alert, str] = {
    Alert.UNKNOWN_CA: "it does not trust the CA that issued it",
    Alert.CERTIFICATE_EXPIRED: "it says it has expired",
    Alert.BAD_CERTIFICATE: "it is bad (for example not valid yet)",
    Alert.UNSUPPORTED_CERTIFICATE: (
        "it is not meant for client authentication (extended key usage clientAuth)"
    ),
    Alert.CERTIFICATE_REVOKED: "it has been revoked",
    Alert.DECRYPT_ERROR: "a signature does not verify",
}


def _rejected_hint(alert: Alert | None, ours: CertificateInfo | None) -> str:
    reason = _REJECTION_REASONS.get(alert) if alert is not None else None
    text = "the server refused your client certificate"
    if reason:
        text += f": {reason} ({alert.name.lower() if alert else ''})"
    if ours is not None:
        now = datetime.now(UTC)
        if ours.not_after < now:
            text += f"; yours expired on {ours.not_after:%Y-%m-%d}"
        elif ours.not_before > now:
            text += f"; yours is not valid until {ours.not_before:%Y-%m-%d}"
        if alert is Alert.UNKNOWN_CA:
            text += f"; yours was issued by {ours.issuer}"
    return text


# ---------------------------------------------------------------------------
# Output.


def _error_line(error: BaseException) -> str:
    if isinstance(error, TLSError):
        parts = [type(error).__name__, f"in {error.phase.name}"]
        if error.surfaced_in != "handshake":
            parts.append(f"(surfaced in {error.surfaced_in})")
        if error.alert_sent is not None:
            parts.append(f"sent alert {error.alert_sent}")
        if error.alert_received is not None:
            parts.append(f"received alert {error.alert_received}")
        return " ".join(parts)
    return f"{type(error).__name__}: {error}"


_MARKS: dict[Status, tuple[str, str]] = {
    "ok": ("✓", "green"),
    "failed": ("✗", "bold red"),
    "warning": ("!", "yellow"),
    "skipped": ("-", "dim"),
    "not_reached": ("·", "dim"),
}


def render(report: Report, console: Console) -> None:
    opts = report.options
    title = Text.assemble(
        ("trio-verify probe ", "bold"),
        f"{opts.host}:{opts.port}",
        f" (server name {opts.server_hostname})",
    )
    console.print(title)
    phases = Table.grid(padding=(0, 1))
    phases.add_column(no_wrap=True)
    phases.add_column(no_wrap=True)
    phases.add_column()
    phases.add_column(justify="right", no_wrap=True, style="dim")
    for phase in report.phases:
        mark, style = _MARKS[phase.status]
        phases.add_row(
            Text(mark, style=style),
            Text(phase.title, style="bold" if phase.status == "failed" else ""),
            Text(phase.detail),
            "" if phase.ms is None else f"{phase.ms:.1f} ms",
        )
    console.print(phases)
    chain = report.chain
    if chain is not None and chain.certificates:
        if chain.verified:
            verdict: Text = Text("verified", style="green")
        else:
            verdict = Text("NOT verified", style="bold yellow")
        console.print(
            Text.assemble("\nServer chain (", verdict, f", {chain.description}):")
        )
        for index, cert in enumerate(chain.certificates):
            console.print(_certificate(index, cert), soft_wrap=True)
    if report.received is not None:
        console.print(
            Text(f"\nThe server sent {len(report.received)} bytes:", style="bold")
        )
        console.print(
            Text(report.received.decode("utf-8", "replace").rstrip("\n")),
            soft_wrap=True,
        )
    for note in report.notes:
        console.print(Text(f"\nnote: {note}", style="yellow"), soft_wrap=True)
    error = report.error
    if error is not None:
        console.print()
        console.print(Text(f"✗ {_error_line(error)}", style="bold red"), soft_wrap=True)
        message = error.message if isinstance(error, TLSError) else str(error)
        console.print(Text(f"  {message}"), soft_wrap=True)
        console.print(
            Text.assemble(("Hint: ", "bold"), report.hint or ""), soft_wrap=True
        )
    else:
        state = (
            "connected, but the server was NOT authenticated (--insecure)"
            if opts.insecure
            else "connected; the server is authenticated"
        )
        console.print(Text(f"\n{state}", style="yellow" if opts.insecure else "green"))


def _certificate(index: int, cert: CertificateInfo) -> Text:
    now = datetime.now(UTC)
    validity = f"{cert.not_before:%Y-%m-%d} to {cert.not_after:%Y-%m-%d}"
    if cert.not_after < now:
        validity += " (EXPIRED)"
    elif cert.not_before > now:
        validity += " (NOT YET VALID)"
    lines = [
        f"  [{index}] subject  {cert.subject or '(empty)'}",
        f"      issuer   {cert.issuer}",
        f"      valid    {validity}",
    ]
    names = cert_names(cert)
    if names:
        lines.append(f"      names    {', '.join(names)}")
    usages = cert.extended_key_usages
    kind = "CA" if cert.is_ca else "end entity"
    if cert.is_self_signed:
        kind += ", self-signed"
    lines.append(
        f"      key      {cert.key_description} ({kind})"
        + (f", for {', '.join(usages)}" if usages else "")
    )
    lines.append(f"      sha256   {cert.sha256_fingerprint}")
    lines.append(f"      pin      sha256//{cert.spki_pin}")
    return Text("\n".join(lines))


def _options(args: argparse.Namespace) -> Options:
    host, port = parse_target(args.target)
    alpn: list[str] = []
    for item in args.alpn or ():
        alpn.extend(p for p in item.split(",") if p)
    for path in [*(args.cafile or ()), args.cert, args.key]:
        if path is not None and not Path(path).is_file():
            raise UsageError(f"{path}: no such file")
    return Options(
        host=host,
        port=port,
        servername=args.servername,
        cafiles=tuple(args.cafile or ()),
        cert=args.cert,
        key=args.key,
        tls=args.tls,
        alpn=tuple(alpn),
        confirm_client_auth=args.confirm_client_auth,
        insecure=args.insecure,
        timeout=args.timeout,
        read=args.read,
        json=args.json,
    )


async def run_async(args: argparse.Namespace, stdout: Console) -> int:
    """Probe, print, and return the exit status (for callers inside Trio)."""
    opts = _options(args)
    report = await probe(opts)
    if opts.json:
        dump_json(report.to_json(), stdout.file)
    else:
        render(report, stdout)
    return 0 if report.ok else 1


def main(args: argparse.Namespace, stdout: Console, stderr: Console) -> int:
    del stderr
    return trio.run(run_async, args, stdout)
