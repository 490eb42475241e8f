"""``trio-verify matrix``: the verify-mode matrix, played live on loopback.

Every row of the matrix (how a client verifies servers, how a server asks
clients for certificates) meets every kind of certificate the other side may
present, on TLS 1.2 and on TLS 1.3.  Each cell is one real connection between
a trio_verify client and a trio_verify server over loopback TCP; what *both*
sides observed (the exception, its phase, where it surfaced, the alert) is
compared with the documented behaviour, which is written down below as a
table: the same values the test suite asserts.
"""

from __future__ import annotations

import re
import ssl
import sys
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import trio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from .. import (
    Alert,
    CertificateExpired,
    CertificateNotYetValid,
    ClientAuth,
    ClientPolicy,
    InvalidPurpose,
    MissingClientCertificate,
    NameMismatch,
    PeerAlert,
    PeerInfo,
    PeerRejectedCertificate,
    PeerRequiresCertificate,
    Phase,
    PolicyError,
    PolicyWarning,
    ServerPolicy,
    TLSError,
    TLSStream,
    UnknownIssuer,
    __version__,
)
from ._common import UsageError, alert_json, alert_text, dump_json, error_json
from ._pki import KINDS, Authority, CertFactory, Kind

__all__ = [
    "CELL_TIMEOUT",
    "EXPECTED_CLIENT_CERTIFICATE",
    "EXPECTED_MISSING_CERTIFICATE",
    "EXPECTED_SERVER_CERTIFICATE",
    "ROWS",
    "Cell",
    "Kit",
    "Options",
    "Result",
    "expected",
    "run",
    "select_cells",
]

TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
VERSION_NAMES = {TLS12: "TLSv1.2", TLS13: "TLSv1.3"}

CELL_TIMEOUT = 10.0
"""Seconds one cell (one connection) may take before it counts as failed."""

DATE = r"\d{4}-\d{2}-\d{2}"
UNTRUSTED = "not a trusted CA"

Side = Literal["client", "server"]
Peer = Literal["none", "verified", "unverified"]


@dataclass(frozen=True)
class Refusal:
    """How the side that judges a certificate refuses it.

    Attributes:
        error: What the judging side raises.
        verify_code: OpenSSL's ``X509_V_ERR_*`` code (``None``: nothing judged).
        alert: The alert it sends; the other side must receive it.
        facts: A regular expression the error's message must match.
        peer_error: What the other side raises.
    """

    error: type[TLSError]
    verify_code: int | None
    alert: Alert
    facts: str
    peer_error: type[PeerAlert] = PeerRejectedCertificate


# ---------------------------------------------------------------------------
# The documented behaviour (docs/matrix.rst), as tests/test_matrix.py
# asserts it: Refusal(error, verify code, alert sent, facts in the message),
# or ``None`` where the certificate is accepted.
#
# A client verifying the server's certificate (phase SERVER_CERTIFICATE; both
# sides learn of a refusal inside their handshake):

EXPECTED_SERVER_CERTIFICATE: dict[Kind, Refusal | None] = {
    "valid":         None,
    "expired":       Refusal(CertificateExpired,     10, Alert.CERTIFICATE_EXPIRED,     rf"certificate expired {DATE}, 30 days ago"),  # noqa: E501
    "not-yet-valid": Refusal(CertificateNotYetValid,  9, Alert.BAD_CERTIFICATE,         rf"certificate is not valid until {DATE}, in 30 days"),  # noqa: E501
    "other-ca":      Refusal(UnknownIssuer,          20, Alert.UNKNOWN_CA,              rf"untrusted CA.*, which is {UNTRUSTED}"),  # noqa: E501
    "wrong-name":    Refusal(NameMismatch,           62, Alert.BAD_CERTIFICATE,         r"certificate is valid for example\.org, not localhost"),  # noqa: E501
    "wrong-eku":     Refusal(InvalidPurpose,         26, Alert.UNSUPPORTED_CERTIFICATE, r"extended key usages are: clientAuth\b"),  # noqa: E501
    "self-signed":   Refusal(UnknownIssuer,          18, Alert.UNKNOWN_CA,              r"OU=server-self-signed.* is self-signed and not trusted"),  # noqa: E501
}  # fmt: skip

# A server that asks for a client certificate (ClientAuth.OPTIONAL or
# REQUIRED) judging the one it gets (phase CLIENT_CERTIFICATE; the client
# learns of a refusal inside its handshake in TLS 1.2, and in TLS 1.3 while
# confirming, after its own handshake finished).  A server checks no names on
# a client certificate (that is what ``authorize=`` is for).

EXPECTED_CLIENT_CERTIFICATE: dict[Kind, Refusal | None] = {
    "valid":         None,
    "wrong-name":    None,
    "expired":       Refusal(CertificateExpired,     10, Alert.CERTIFICATE_EXPIRED,     rf"client certificate refused: .*certificate expired {DATE}, 30 days ago"),  # noqa: E501
    "not-yet-valid": Refusal(CertificateNotYetValid,  9, Alert.BAD_CERTIFICATE,         rf"client certificate refused: .*not valid until {DATE}, in 30 days"),  # noqa: E501
    "other-ca":      Refusal(UnknownIssuer,          20, Alert.UNKNOWN_CA,              rf"client certificate refused: .*untrusted CA.*, which is {UNTRUSTED}"),  # noqa: E501
    "wrong-eku":     Refusal(InvalidPurpose,         26, Alert.UNSUPPORTED_CERTIFICATE, r"client certificate refused: .*extended key usages are: serverAuth\b"),  # noqa: E501
    "self-signed":   Refusal(UnknownIssuer,          18, Alert.UNKNOWN_CA,              r"client certificate refused: .*OU=client-self-signed.* is self-signed and not trusted"),  # noqa: E501
}  # fmt: skip

# A REQUIRED server refusing a client that sent no certificate.  In TLS 1.3
# the client's handshake finishes first and, having sent no certificate, it
# does not wait for a verdict: it learns of the refusal at its first read.

EXPECTED_MISSING_CERTIFICATE: dict[ssl.TLSVersion, Refusal] = {
    TLS12: Refusal(MissingClientCertificate, None, Alert.HANDSHAKE_FAILURE,    "client sent no certificate", PeerRequiresCertificate),  # noqa: E501
    TLS13: Refusal(MissingClientCertificate, None, Alert.CERTIFICATE_REQUIRED, "client sent no certificate", PeerRequiresCertificate),  # noqa: E501
}  # fmt: skip

# Warnings and refusals of the client rows that adopt a raw ssl.SSLContext,
# or turn verification off.
CERT_OPTIONAL_WARNING = r"CERT_OPTIONAL on a client is"
INSECURE_WARNING = r"not verified"
NO_HOSTNAME_CHECK_REFUSAL = r"check_hostname is False"


# ---------------------------------------------------------------------------
# Rows, cells and what each side is expected to observe.


@dataclass(frozen=True)
class Row:
    """One row of the verify-mode matrix."""

    side: Side
    name: str
    setting: str
    policy: str
    meaning: str

    @property
    def title(self) -> str:
        return f"{self.side} · {self.policy} ({self.setting})"


ROWS: tuple[Row, ...] = (
    Row("client", "verified", "CERT_REQUIRED + check_hostname", "ClientPolicy()",
        "the server is authenticated"),
    Row("client", "insecure", "CERT_NONE", "ClientPolicy(insecure=True)",
        "any server certificate is accepted, with a PolicyWarning"),
    Row("client", "cert-optional", "CERT_OPTIONAL", "an adopted ssl.SSLContext",
        "identical to CERT_REQUIRED, with a PolicyWarning"),
    Row("client", "no-hostname-check", "CERT_REQUIRED, check_hostname=False",
        "an adopted ssl.SSLContext",
        "not authentication: refused with PolicyError before connecting"),
    Row("server", "client-auth-none", "CERT_NONE", "ClientAuth.NONE",
        "no client certificate is requested, so none is sent"),
    Row("server", "client-auth-optional", "CERT_OPTIONAL", "ClientAuth.OPTIONAL",
        "requested, verified if sent; a bad one aborts the handshake"),
    Row("server", "client-auth-required", "CERT_REQUIRED", "ClientAuth.REQUIRED",
        "mandatory and verified (mutual TLS)"),
)  # fmt: skip

CLIENT_AUTH = {
    "client-auth-none": ClientAuth.NONE,
    "client-auth-optional": ClientAuth.OPTIONAL,
    "client-auth-required": ClientAuth.REQUIRED,
}


@dataclass(frozen=True)
class Expect:
    """What one side of a cell is expected to observe."""

    outcome: Literal["ok", "error", "not_connected"]
    peer: Peer | None = None
    error: type[Exception] | None = None
    phase: Phase | None = None
    surfaced_in: str | None = None
    alert_sent: Alert | None = None
    alert_received: Alert | None = None
    verify_code: int | None = None
    facts: str | None = None
    warning: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "peer": self.peer,
            "error": None if self.error is None else self.error.__name__,
            "phase": None if self.phase is None else self.phase.name,
            "surfaced_in": self.surfaced_in,
            "alert_sent": alert_json(self.alert_sent),
            "alert_received": alert_json(self.alert_received),
            "verify_code": self.verify_code,
            "message_pattern": self.facts,
            "warning_pattern": self.warning,
        }


@dataclass(frozen=True)
class Cell:
    row: Row
    kind: Kind
    version: ssl.TLSVersion

    @property
    def id(self) -> str:
        return (
            f"{self.row.side}/{self.row.name}/{self.kind}/{VERSION_NAMES[self.version]}"
        )


def _refused(
    refusal: Refusal, phase: Phase, peer_surfaced_in: str
) -> tuple[Expect, Expect]:
    """(judge, peer) expectations for a refusal."""
    judge = Expect(
        "error",
        error=refusal.error,
        phase=phase,
        surfaced_in="handshake",
        alert_sent=refusal.alert,
        verify_code=refusal.verify_code,
        facts=refusal.facts,
    )
    peer = Expect(
        "error",
        error=refusal.peer_error,
        phase=phase,
        surfaced_in=peer_surfaced_in,
        alert_received=refusal.alert,
    )
    return judge, peer


def expected(cell: Cell) -> tuple[Expect, Expect]:
    """What the (client, server) of ``cell`` must observe, by the table above."""
    row, kind, version = cell.row, cell.kind, cell.version
    if row.side == "client":
        if row.name == "no-hostname-check":
            return (
                Expect("error", error=PolicyError, facts=NO_HOSTNAME_CHECK_REFUSAL),
                Expect("not_connected"),
            )
        if row.name == "insecure":
            return (
                Expect("ok", peer="unverified", warning=INSECURE_WARNING),
                Expect("ok", peer="none"),
            )
        warning = CERT_OPTIONAL_WARNING if row.name == "cert-optional" else None
        refusal = EXPECTED_SERVER_CERTIFICATE[kind]
        if refusal is None:
            return Expect("ok", peer="verified", warning=warning), Expect(
                "ok", peer="none"
            )
        judge, told = _refused(refusal, Phase.SERVER_CERTIFICATE, "handshake")
        return _with_warning(judge, warning), told
    client_auth = CLIENT_AUTH[row.name]
    if client_auth is ClientAuth.NONE:
        return Expect("ok", peer="verified"), Expect("ok", peer="none")
    if kind == "none":
        if client_auth is ClientAuth.OPTIONAL:
            return Expect("ok", peer="verified"), Expect("ok", peer="none")
        judge, told = _refused(
            EXPECTED_MISSING_CERTIFICATE[version],
            Phase.CLIENT_CERTIFICATE,
            "handshake" if version is TLS12 else "receive",
        )
        return told, judge
    refusal = EXPECTED_CLIENT_CERTIFICATE[kind]
    if refusal is None:
        return Expect("ok", peer="verified"), Expect("ok", peer="verified")
    judge, told = _refused(
        refusal,
        Phase.CLIENT_CERTIFICATE,
        "handshake" if version is TLS12 else "confirm",
    )
    return told, judge


def _with_warning(expect: Expect, warning: str | None) -> Expect:
    if warning is None:
        return expect
    return Expect(**{**expect.__dict__, "warning": warning})


def select_cells(rows: str, tls: str, kinds: Sequence[Kind] | None) -> list[Cell]:
    """The cells a command line asks for, row by row, kind by kind."""
    versions = {"1.2": [TLS12], "1.3": [TLS13], "both": [TLS12, TLS13]}[tls]
    cells: list[Cell] = []
    for row in ROWS:
        if rows != "all" and row.side != rows:
            continue
        for kind in KINDS:
            if kinds and kind not in kinds:
                continue
            if row.side == "client" and kind == "none":
                continue  # a server always presents a certificate
            cells.extend(Cell(row, kind, version) for version in versions)
    return cells


# ---------------------------------------------------------------------------
# Playing a cell.


@dataclass
class Seen:
    """What one side of a cell observed."""

    outcome: Literal["ok", "error", "not_connected"] = "not_connected"
    error: BaseException | None = None
    peer: PeerInfo | None = None
    received: bytes | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def peer_kind(self) -> Peer | None:
        if self.peer is None:
            return None
        if self.peer.certificate is None:
            return "none"
        return "verified" if self.peer.chain_verified else "unverified"

    def to_json(self) -> dict[str, Any]:
        error = None if self.error is None else error_json(self.error)
        peer = self.peer
        return {
            "outcome": self.outcome,
            "peer": self.peer_kind,
            "peer_certificate": None
            if peer is None or peer.certificate is None
            else peer.certificate.subject,
            "tls_version": peer.tls_version
            if peer is not None
            else getattr(self.error, "tls_version", None),
            "error": None if error is None else error["type"],
            "phase": None if error is None else error["phase"],
            "surfaced_in": None if error is None else error["surfaced_in"],
            "alert_sent": None if error is None else error["alert_sent"],
            "alert_received": None if error is None else error["alert_received"],
            "verify_code": None if error is None else error["verify_code"],
            "message": None if error is None else error["message"],
            "warnings": list(self.warnings),
        }


class Kit:
    """The certificates and policies of one run."""

    def __init__(self, factory: CertFactory) -> None:
        self.factory = factory
        self.ca_pem = factory.ca.pem

    def server_policy(self, cell: Cell) -> ServerPolicy:
        kind: Kind = cell.kind if cell.row.side == "client" else "valid"
        client_auth = CLIENT_AUTH.get(cell.row.name, ClientAuth.NONE)
        return ServerPolicy(
            identity=self.factory.server(kind).identity(),
            client_auth=client_auth,
            client_trust=None if client_auth is ClientAuth.NONE else self.ca_pem,
            minimum_version=cell.version,
            maximum_version=cell.version,
            name=cell.row.name,
        )

    def client_policy(self, cell: Cell) -> ClientPolicy:
        """The client's policy; raw contexts are adopted as TLSStream does."""
        row = cell.row
        if row.side == "server":
            issued = self.factory.client(cell.kind)
            return ClientPolicy(
                trust=self.ca_pem,
                identity=None if issued is None else issued.identity(),
            )
        if row.name == "verified":
            return ClientPolicy(trust=self.ca_pem)
        if row.name == "insecure":
            return ClientPolicy(insecure=True)
        context = self._ssl_client_context()
        if row.name == "cert-optional":
            context.verify_mode = ssl.CERT_OPTIONAL
        else:
            context.check_hostname = False
        return ClientPolicy.from_ssl_context(context)

    def _ssl_client_context(self) -> ssl.SSLContext:
        """A plain ``ssl`` client context with trio_verify's default checks."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.hostname_checks_common_name = False
        context.verify_flags |= ssl.VERIFY_X509_STRICT | ssl.VERIFY_X509_PARTIAL_CHAIN
        context.load_verify_locations(cadata=self.ca_pem.decode("ascii"))
        return context


@contextmanager
def _recording(seen: Seen) -> Iterator[None]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PolicyWarning)
        try:
            yield
        finally:
            seen.warnings.extend(
                str(w.message) for w in caught if issubclass(w.category, PolicyWarning)
            )


async def _server_talks(stream: TLSStream[trio.SocketStream], seen: Seen) -> None:
    await stream.do_handshake()
    seen.peer = stream.peer
    await stream.send_all(b"ping")
    seen.received = await stream.receive_some()


async def _client_talks(stream: TLSStream[trio.SocketStream], seen: Seen) -> None:
    await stream.do_handshake()
    seen.peer = stream.peer
    seen.received = await stream.receive_some()
    await stream.send_all(b"pong")


async def _side(
    stream: TLSStream[trio.SocketStream],
    talk: Callable[[TLSStream[trio.SocketStream], Seen], Awaitable[None]],
    seen: Seen,
) -> None:
    # Policies warn when they are made, before the connection (see play());
    # catch_warnings() is not safe to nest across tasks, so not here.
    try:
        await talk(stream, seen)
        seen.outcome = "ok"
    except Exception as exc:
        seen.outcome, seen.error = "error", exc
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


async def play(
    cell: Cell, kit: Kit, listener: trio.SocketListener
) -> tuple[Seen, Seen]:
    """One connection for ``cell``; return what the (client, server) observed."""
    client_seen, server_seen = Seen(), Seen()
    server_policy = kit.server_policy(cell)
    try:
        with _recording(client_seen):
            client_policy = kit.client_policy(cell)
    except PolicyError as exc:
        client_seen.outcome, client_seen.error = "error", exc
        return client_seen, server_seen
    port = listener.socket.getsockname()[1]
    with trio.move_on_after(CELL_TIMEOUT) as scope:
        client_sock = await trio.open_tcp_stream("127.0.0.1", port)
        server_sock = await listener.accept()
        client = TLSStream(client_sock, client_policy, server_hostname="localhost")
        server = TLSStream(server_sock, server_policy, server_side=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_side, client, _client_talks, client_seen)
            nursery.start_soon(_side, server, _server_talks, server_seen)
    if scope.cancelled_caught:
        for seen in (client_seen, server_seen):
            if seen.outcome == "not_connected":
                seen.outcome = "error"
                seen.error = TimeoutError(f"no outcome within {CELL_TIMEOUT} s")
    return client_seen, server_seen


# ---------------------------------------------------------------------------
# Judging a cell.


def compare(
    expect: Expect, seen: Seen, cell: Cell, side: Side, presented: str | None
) -> list[str]:
    """How ``seen`` differs from ``expect``: one phrase per difference."""
    problems: list[str] = []

    def differ(what: str, want: object, got: object) -> None:
        if want != got:
            problems.append(f"{what}: expected {want}, observed {got}")

    differ("outcome", expect.outcome, seen.outcome)
    version = VERSION_NAMES[cell.version]
    if expect.outcome == "ok" and seen.outcome == "ok":
        differ("peer certificate", expect.peer, seen.peer_kind)
        if seen.peer is not None:
            differ("TLS version", version, seen.peer.tls_version)
            if expect.peer not in (None, "none") and seen.peer.certificate is not None:
                differ(
                    "peer certificate",
                    presented,
                    seen.peer.certificate.sha256_fingerprint,
                )
        # The server says "ping" and the client answers "pong".
        differ("data received", b"ping" if side == "client" else b"pong", seen.received)
    elif expect.outcome == "error" and seen.error is not None:
        error = seen.error
        assert expect.error is not None
        if not isinstance(error, expect.error):
            differ("error", expect.error.__name__, type(error).__name__)
        if isinstance(error, TLSError):
            differ("phase", _name(expect.phase), error.phase.name)
            differ("surfaced in", expect.surfaced_in, error.surfaced_in)
            differ(
                "alert sent",
                alert_text(expect.alert_sent),
                alert_text(error.alert_sent),
            )
            differ(
                "alert received",
                alert_text(expect.alert_received),
                alert_text(error.alert_received),
            )
            differ("verify code", expect.verify_code, error.verify_code)
            differ("TLS version", version, error.tls_version)
        if expect.facts is not None and not re.search(expect.facts, str(error)):
            problems.append(f"message {str(error)!r} does not match {expect.facts!r}")
    if expect.warning is None:
        if seen.warnings:
            problems.append(f"unexpected PolicyWarning: {seen.warnings[0]!r}")
    elif not any(re.search(expect.warning, w) for w in seen.warnings):
        problems.append(f"expected a PolicyWarning matching {expect.warning!r}")
    return problems


def _name(phase: Phase | None) -> str | None:
    return None if phase is None else phase.name


@dataclass
class Result:
    cell: Cell
    expect: tuple[Expect, Expect]
    seen: tuple[Seen, Seen]
    mismatches: list[str]

    @property
    def matches(self) -> bool:
        return not self.mismatches

    def to_json(self) -> dict[str, Any]:
        cell = self.cell
        return {
            "id": cell.id,
            "side": cell.row.side,
            "row": cell.row.name,
            "presented": cell.kind,
            "tls_version": VERSION_NAMES[cell.version],
            "matches": self.matches,
            "mismatches": self.mismatches,
            "client": {
                "expected": self.expect[0].to_json(),
                "observed": self.seen[0].to_json(),
            },
            "server": {
                "expected": self.expect[1].to_json(),
                "observed": self.seen[1].to_json(),
            },
        }


def judge(cell: Cell, kit: Kit, seen: tuple[Seen, Seen]) -> Result:
    expect = expected(cell)
    # The certificate each side should have seen of the other, when accepted.
    server_cert = kit.factory.server(
        cell.kind if cell.row.side == "client" else "valid"
    )
    client_issued = kit.factory.client(cell.kind) if cell.row.side == "server" else None
    mismatches = [
        f"client {p}"
        for p in compare(
            expect[0], seen[0], cell, "client", server_cert.info.sha256_fingerprint
        )
    ] + [
        f"server {p}"
        for p in compare(
            expect[1],
            seen[1],
            cell,
            "server",
            None if client_issued is None else client_issued.info.sha256_fingerprint,
        )
    ]
    return Result(cell, expect, seen, mismatches)


# ---------------------------------------------------------------------------
# The command.


@dataclass(frozen=True)
class Options:
    rows: str = "all"
    tls: str = "both"
    kinds: tuple[Kind, ...] = ()
    ca_file: str | None = None
    ca_key: str | None = None
    json: bool = False


async def play_all(
    cells: Sequence[Cell], kit: Kit, progress: Callable[[Cell], None]
) -> list[Result]:
    results = []
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    async with listener:
        for cell in cells:
            progress(cell)
            seen = await play(cell, kit, listener)
            results.append(judge(cell, kit, seen))
    return results


def run(options: Options, stdout: Console, stderr: Console) -> int:
    """Run the matrix; return the exit status."""
    if bool(options.ca_file) != bool(options.ca_key):
        raise UsageError("--ca-file and --ca-key go together")
    cells = select_cells(options.rows, options.tls, options.kinds or None)
    if not cells:
        raise UsageError(
            "no cell selected: a server always presents a certificate, so "
            "--cert-kind none applies to the server rows only"
        )
    started = time.monotonic()
    ca = (
        Authority.from_files(options.ca_file, options.ca_key)
        if options.ca_file and options.ca_key
        else None
    )
    factory = CertFactory(ca)
    notes = factory.ca.problems() if ca is not None else []
    kit = Kit(factory)

    show_progress = not options.json and stderr.is_terminal
    progress_bar = Progress(
        TextColumn("[bold]matrix[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        console=stderr,
        transient=True,
        disable=not show_progress,
    )
    with progress_bar:
        task = progress_bar.add_task("", total=len(cells))
        done = [0]

        def advance(cell: Cell) -> None:
            progress_bar.update(task, completed=done[0], description=cell.id)
            done[0] += 1

        results = trio.run(play_all, cells, kit, advance)
        progress_bar.update(task, completed=len(cells))
    seconds = time.monotonic() - started
    matched = sum(r.matches for r in results)
    ok = matched == len(results)
    if options.json:
        dump_json(
            {
                "command": "matrix",
                "trio_verify": __version__,
                "python": sys.version.split()[0],
                "openssl": ssl.OPENSSL_VERSION,
                "ca": {
                    "source": "embedded" if factory.embedded else "file",
                    "subject": factory.ca.info.subject,
                    "sha256_fingerprint": factory.ca.info.sha256_fingerprint,
                    "problems": notes,
                },
                "ok": ok,
                "summary": {
                    "cells": len(results),
                    "matched": matched,
                    "mismatched": len(results) - matched,
                    "seconds": round(seconds, 3),
                },
                "cells": [r.to_json() for r in results],
            },
            stdout.file,
        )
    else:
        render(results, factory, notes, seconds, stdout)
    return 0 if ok else 1


# ---------------------------------------------------------------------------
# Human output.


def _describe(seen: Seen, side: Side) -> Text:
    other = "server" if side == "client" else "client"
    if seen.outcome == "not_connected":
        return Text("not contacted", style="dim")
    text = Text()
    error = seen.error
    if error is None:
        kind = seen.peer_kind
        text.append("ok", style="green")
        if kind == "none":
            text.append(f" · no {other} cert")
        elif kind == "verified":
            text.append(f" · {other} cert verified")
        elif kind == "unverified":
            text.append(f" · {other} cert NOT verified", style="yellow")
    elif isinstance(error, TLSError):
        text.append(
            type(error).__name__,
            style="bold red" if side == "client" else "bold magenta",
        )
        text.append(f"\n{error.phase.name}")
        text.append(f"\nin {error.surfaced_in}", style="dim")
        if error.alert_sent is not None:
            text.append(f"\n→ {error.alert_sent}")
        if error.alert_received is not None:
            text.append(f"\n← {error.alert_received}")
    elif isinstance(error, PolicyError):
        text.append("PolicyError", style="bold red")
        text.append("\nbefore connecting")
    else:
        text.append(f"{type(error).__name__}: {error}", style="bold red")
    if seen.warnings:
        text.append("\n⚠ PolicyWarning", style="yellow")
    return text


_SIDES: tuple[tuple[int, Side], ...] = ((0, "client"), (1, "server"))


def _merge_versions(results: Sequence[Result]) -> list[list[Result]]:
    """One group for results that look the same on TLS 1.2 and 1.3, else one each."""
    if len(results) == 2:
        a, b = results
        if a.matches == b.matches and all(
            _describe(a.seen[i], side).plain == _describe(b.seen[i], side).plain
            for i, side in _SIDES
        ):
            return [[a, b]]
    return [[r] for r in results]


def render(
    results: Sequence[Result],
    factory: CertFactory,
    notes: Sequence[str],
    seconds: float,
    console: Console,
) -> None:
    source = "embedded CA" if factory.embedded else "your CA"
    console.print(
        Text.assemble(
            ("trio-verify matrix", "bold"),
            f": every cell of the verify-mode matrix, one loopback connection "
            f"each; certificates issued by the {source} ",
            (factory.ca.info.subject, "cyan"),
        )
    )
    for note in notes:
        console.print(Text(f"note: {note}", style="yellow"))
    for row in ROWS:
        row_results = [r for r in results if r.cell.row is row]
        if not row_results:
            continue
        presenter = "server" if row.side == "client" else "client"
        table = Table(
            title=Text.assemble(
                (row.title, "bold"), f": {row.meaning}", style="not italic"
            ),
            title_justify="left",
            show_lines=True,
        )
        table.add_column(f"{presenter}\ncert", no_wrap=True)
        table.add_column("TLS", no_wrap=True)
        table.add_column("client observed")
        table.add_column("server observed")
        table.add_column("", justify="center", no_wrap=True)
        for kind in KINDS:
            same_kind = [r for r in row_results if r.cell.kind == kind]
            for group in _merge_versions(same_kind):
                first = group[0]
                table.add_row(
                    kind,
                    "\n".join(
                        VERSION_NAMES[r.cell.version].removeprefix("TLSv")
                        for r in group
                    ),
                    _describe(first.seen[0], "client"),
                    _describe(first.seen[1], "server"),
                    Text("✓", style="green")
                    if first.matches
                    else Text("✗", style="bold red"),
                )
        console.print(table)
    failed = [r for r in results if not r.matches]
    for result in failed:
        console.print(Text(f"✗ {result.cell.id}", style="bold red"))
        for problem in result.mismatches:
            console.print(Text(f"    {problem}"), soft_wrap=True)
    summary = f"{len(results)} cells in {seconds:.1f} s: " + (
        "every cell matches the documented behaviour"
        if not failed
        else f"{len(failed)} differ from the documented behaviour"
    )
    console.print(Text(summary, style="bold green" if not failed else "bold red"))
