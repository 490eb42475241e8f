"""``trio-verify serve``: a TLS server that tells each client what it saw.

Built on :func:`trio_verify.serve_tls` with a policy selector, so a server
name given with ``--sni NAME=POLICY`` really gets its own client
authentication (the policy is chosen from the ClientHello, before OpenSSL
sees it).  Each client whose handshake succeeds gets a short plain-text
report, as an HTTP response when it speaks HTTP; every handshake, failures
included, is logged as one :class:`~trio_verify.HandshakeReport` line on
stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import signal
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import trio
from rich.console import Console
from rich.text import Text

from .. import (
    ClientAuth,
    ClientHello,
    HandshakeReport,
    Identity,
    PolicyError,
    Reject,
    ServerPolicy,
    TLSStream,
    serve_tls,
)
from ._common import UsageError, cert_json, cert_names, error_json, iso
from ._pki import SERVER_NAMES, CertFactory

__all__ = ["Options", "Ready", "main", "options_from_args", "report_text", "serve"]

HTTP_WAIT = 0.5
"""Seconds to wait for an HTTP request before writing the plain report."""

_MODES = {
    "none": ClientAuth.NONE,
    "optional": ClientAuth.OPTIONAL,
    "required": ClientAuth.REQUIRED,
}
_MEANING = {
    ClientAuth.NONE: "no client certificate asked for (ClientAuth.NONE)",
    ClientAuth.OPTIONAL: "client certificate optional (ClientAuth.OPTIONAL)",
    ClientAuth.REQUIRED: "client certificate required (ClientAuth.REQUIRED)",
}
_HTTP_METHODS = (
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
)


@dataclass(frozen=True)
class Options:
    cert: str | None = None
    key: str | None = None
    client_ca: tuple[str, ...] = ()
    client_auth: str = "optional"
    sni: tuple[tuple[str, str], ...] = ()
    alpn: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8443
    write_dir: str | None = None
    handshake_timeout: float = 10.0
    json: bool = False


@dataclass
class Ready:
    """What a started server tells its starter."""

    addresses: list[tuple[str, int]]
    directory: Path | None
    files: dict[str, Path] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "event": "listening",
            "listening": [{"host": h, "port": p} for h, p in self.addresses],
            "directory": None if self.directory is None else str(self.directory),
            "files": {name: str(path) for name, path in self.files.items()},
        }


def options_from_args(args: argparse.Namespace) -> Options:
    sni = []
    for item in args.sni or ():
        name, sep, mode = item.partition("=")
        name = name.strip().lower().rstrip(".")
        if not sep or not name or mode not in _MODES:
            raise UsageError(
                f"--sni {item!r}: expected NAME=POLICY with POLICY one of "
                "none, optional, required"
            )
        sni.append((name, mode))
    alpn: list[str] = []
    for item in args.alpn or ():
        alpn.extend(p for p in item.split(",") if p)
    if args.key is not None and args.cert is None:
        raise UsageError("--key needs --cert")
    return Options(
        cert=args.cert,
        key=args.key,
        client_ca=tuple(args.client_ca or ()),
        client_auth=args.client_auth,
        sni=tuple(sni),
        alpn=tuple(alpn),
        host=args.host,
        port=args.port,
        write_dir=args.write_dir,
        handshake_timeout=args.handshake_timeout,
        json=args.json,
    )


# ---------------------------------------------------------------------------
# Setting up: identity, files, policies.


@dataclass
class Setup:
    policies: dict[str, ServerPolicy]
    by_name: dict[str, str]
    directory: Path | None
    temporary: bool
    files: dict[str, Path]


def _write_files(factory: CertFactory, directory: Path) -> dict[str, Path]:
    client = factory.client("valid")
    assert client is not None
    directory.mkdir(parents=True, exist_ok=True)
    contents = {
        "ca": ("ca.pem", factory.ca.pem),
        "client_bundle": ("client.pem", client.chain_pem + client.key_pem),
        "client_cert": ("client.crt", client.chain_pem),
        "client_key": ("client.key", client.key_pem),
    }
    files = {}
    for name, (filename, data) in contents.items():
        path = directory / filename
        path.write_bytes(data)
        if filename.endswith((".key", "client.pem")):
            path.chmod(0o600)
        files[name] = path
    return files


def setup(opts: Options) -> Setup:
    """Identity, written files and one policy per client-auth mode in use.

    Raises:
        UsageError: a file cannot be used, or a mode needs client CAs that
            were not given.
    """
    directory: Path | None = None
    temporary = False
    files: dict[str, Path] = {}
    trust: list[bytes | str] = list(opts.client_ca)
    try:
        if opts.cert is not None:
            identity = Identity.from_files(opts.cert, opts.key)
        else:
            extra = [name for name, _ in opts.sni if name not in SERVER_NAMES]
            factory = CertFactory(server_names=(*SERVER_NAMES, *extra))
            identity = factory.server("valid").identity()
            trust.insert(0, factory.ca.pem)
            if opts.write_dir is not None:
                directory = Path(opts.write_dir).resolve()
            else:
                directory = Path(tempfile.mkdtemp(prefix="trio-verify-serve-"))
                temporary = True
            files = _write_files(factory, directory)
        modes = {opts.client_auth, *(mode for _, mode in opts.sni)}
        if not trust and modes - {"none"}:
            raise UsageError(
                "asking for client certificates needs --client-ca (the CAs "
                "that vouch for clients); or leave out --cert to use the "
                "embedded CA"
            )
        policies = {}
        for mode in sorted(modes):
            client_auth = _MODES[mode]
            policies[mode] = ServerPolicy(
                identity=identity,
                client_auth=client_auth,
                client_trust=None if client_auth is ClientAuth.NONE else trust,
                alpn=opts.alpn,
                handshake_timeout=opts.handshake_timeout,
                name=mode,
            )
    except (PolicyError, OSError) as exc:
        if temporary and directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        raise UsageError(str(exc)) from None
    return Setup(
        policies=policies,
        by_name=dict(opts.sni),
        directory=directory,
        temporary=temporary,
        files=files,
    )


def _selector(
    setup: Setup, default: str
) -> Callable[[ClientHello], ServerPolicy | Reject]:
    def select(hello: ClientHello) -> ServerPolicy | Reject:
        name = hello.normalized_server_name
        mode = setup.by_name.get(name or "", default)
        return setup.policies[mode]

    return select


# ---------------------------------------------------------------------------
# Serving.


def report_text(stream: TLSStream[trio.SocketStream]) -> str:
    """What the server saw of this connection, for the client to read."""
    peer = stream.peer
    hello = stream.client_hello
    policy = stream.policy
    assert isinstance(policy, ServerPolicy)
    address = "-"
    if hello is not None and isinstance(hello.peer_address, tuple):
        host, port = hello.peer_address[:2]
        address = f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    offered = ", ".join(hello.alpn_protocols) if hello and hello.alpn_protocols else ""
    alpn = peer.alpn_protocol or "none"
    alpn += f" (you offered {offered})" if offered else " (you offered none)"
    lines = [
        "trio-verify serve: what this server saw of your connection",
        f"  from         {address}",
        f"  TLS version  {peer.tls_version}",
        f"  cipher       {peer.cipher[0] if peer.cipher else '-'}",
        f"  SNI          {(hello.server_name if hello else None) or '(none)'}",
        f"  ALPN         {alpn}",
        f"  policy       {policy.name}: {_MEANING[policy.client_auth]}",
    ]
    cert = peer.certificate
    if cert is None:
        if policy.client_auth is ClientAuth.NONE:
            lines.append("client certificate: none (this server did not ask for one)")
        else:
            lines.append("client certificate: none (asked for; not required)")
    else:
        state = "verified" if peer.chain_verified else "NOT verified"
        lines += [
            f"client certificate: {state}",
            f"  subject      {cert.subject or '(empty)'}",
            f"  issuer       {cert.issuer}",
            (
                f"  valid        {cert.not_before:%Y-%m-%d %H:%M} to "
                f"{cert.not_after:%Y-%m-%d %H:%M} UTC"
            ),
            f"  names        {', '.join(cert_names(cert)) or '(none)'}",
            f"  key          {cert.key_description}",
            f"  sha256       {cert.sha256_fingerprint}",
            f"  pin          sha256//{cert.spki_pin}",
        ]
        if len(peer.chain) > 1:
            lines.append(f"  chain        {' <- '.join(c.label for c in peer.chain)}")
    return "\n".join(lines) + "\n"


async def _handle(stream: TLSStream[trio.SocketStream]) -> None:
    first = b""
    with trio.move_on_after(HTTP_WAIT):
        first = await stream.receive_some(65536)
    http = stream.peer.alpn_protocol == "http/1.1" or first.startswith(_HTTP_METHODS)
    body = report_text(stream).encode("utf-8")
    if http:
        head = (
            "HTTP/1.1 200 OK\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        body = head.encode("ascii") + (b"" if first.startswith(b"HEAD ") else body)
    await stream.send_all(body)


class _Log:
    """One line per handshake (and per library log record) on stderr."""

    def __init__(self, console: Console, *, as_json: bool) -> None:
        self.console = console
        self.as_json = as_json

    def line(self, event: dict[str, Any], text: str, style: str = "") -> None:
        if self.as_json:
            self.console.file.write(json.dumps(event, ensure_ascii=False) + "\n")
            self.console.file.flush()
        else:
            self.console.print(Text(text, style=style), soft_wrap=True)

    def handshake(self, report: HandshakeReport) -> None:
        now = datetime.now(UTC)
        cert = report.client_certificate
        event = {
            "event": "handshake",
            "time": iso(now),
            "ok": report.ok,
            "peer": _address(report.peer_address),
            "server_name": report.server_name,
            "tls_version": report.tls_version,
            "cipher": report.cipher,
            "alpn": report.alpn_protocol,
            "policy": report.policy_name,
            "duration_ms": round(report.duration * 1000, 3),
            "client_certificate": None if cert is None else cert_json(cert),
            "error": None if report.error is None else error_json(report.error),
            "summary": report.summary(),
        }
        self.line(
            event,
            f"{iso(now)} {report.summary()}",
            "green" if report.ok else "red",
        )


def _address(address: object) -> str | None:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return None if address is None else str(address)


class _LibraryHandler(logging.Handler):
    """The ``trio_verify`` logger's records, except the handshake summaries
    (:class:`_Log` writes those, from the same reports)."""

    def __init__(self, log: _Log) -> None:
        super().__init__(logging.INFO)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        if (
            record.msg == "%s"
            and isinstance(record.args, tuple)
            and record.args
            and str(record.args[0]).startswith("handshake ")
            and not record.exc_info
        ):
            return
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        self.log.line(
            {
                "event": "log",
                "time": iso(datetime.now(UTC)),
                "level": record.levelname.lower(),
                "message": message,
            },
            f"{iso(datetime.now(UTC))} {record.levelname.lower()}: {message}",
            "yellow",
        )


def _announce(opts: Options, ready: Ready, stdout: Console) -> None:
    if opts.json:
        stdout.file.write(json.dumps(ready.to_json(), ensure_ascii=False) + "\n")
        stdout.file.flush()
        return
    policy = _MEANING[_MODES[opts.client_auth]]
    stdout.print(Text(f"trio-verify serve: {policy}", style="bold"), soft_wrap=True)
    for name, mode in opts.sni:
        stdout.print(
            Text(f"  for SNI {name}: {_MEANING[_MODES[mode]]}"), soft_wrap=True
        )
    host, port = ready.addresses[0]
    files = ready.files
    if ready.directory is not None and files:
        connect_host = "localhost" if host in SERVER_NAMES else host
        connect = f"[{host}]" if ":" in host else host
        stdout.print(Text(f"files in {ready.directory}:"), soft_wrap=True)
        for line in (
            "  ca.pem       the CA that issued the server and client certificates",
            "  client.pem   a client certificate and its key (for curl --cert)",
            "  client.crt   the client certificate alone",
            "  client.key   its key",
        ):
            stdout.print(Text(line), soft_wrap=True)
        ca, bundle = files["ca"], files["client_bundle"]
        cert, key = files["client_cert"], files["client_key"]
        stdout.print(Text("try:"))
        for line in (
            f"  curl --cacert {ca} --cert {bundle} https://{connect_host}:{port}/",
            (
                f"  openssl s_client -connect {connect}:{port} -servername "
                f"{connect_host} -CAfile {ca} -cert {cert} -key {key}"
            ),
            (
                f"  trio-verify probe {connect_host}:{port} --cafile {ca} --cert {cert} "
                f"--key {key} --read 1"
            ),
        ):
            stdout.print(Text(line), soft_wrap=True)
    for host, port in ready.addresses:
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        stdout.print(Text(f"listening on {where}"), soft_wrap=True)
    stdout.file.flush()


async def serve(
    opts: Options,
    stdout: Console,
    stderr: Console,
    *,
    handle_signals: bool = True,
    task_status: trio.TaskStatus[Ready] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled (or, with ``handle_signals``, SIGINT/SIGTERM)."""
    config = setup(opts)
    log = _Log(stderr, as_json=opts.json)
    library = logging.getLogger("trio_verify")
    handler = _LibraryHandler(log)
    saved = library.propagate, library.level
    library.addHandler(handler)
    library.propagate = False
    if library.level == logging.NOTSET or library.level > logging.INFO:
        library.setLevel(logging.INFO)
    try:
        async with trio.open_nursery() as nursery:
            try:
                listeners = await nursery.start(
                    partial(
                        serve_tls,
                        _handle,
                        opts.port,
                        _selector(config, opts.client_auth),
                        host=opts.host,
                        handshake_timeout=opts.handshake_timeout,
                        on_handshake=log.handshake,
                    )
                )
            except OSError as exc:
                raise UsageError(
                    f"cannot listen on {opts.host} port {opts.port}: "
                    f"{exc.strerror or exc}"
                ) from None
            addresses = []
            for listener in listeners:
                host, port = listener.transport_listener.socket.getsockname()[:2]
                addresses.append((str(host), int(port)))
            ready = Ready(addresses, config.directory, config.files)
            _announce(opts, ready, stdout)
            task_status.started(ready)
            if handle_signals:
                with trio.open_signal_receiver(
                    signal.SIGINT, signal.SIGTERM
                ) as signals:
                    async for signum in signals:
                        name = signal.Signals(signum).name
                        log.line(
                            {
                                "event": "stopped",
                                "time": iso(datetime.now(UTC)),
                                "signal": name,
                            },
                            f"stopped ({name})",
                        )
                        nursery.cancel_scope.cancel()
                        break
    finally:
        library.removeHandler(handler)
        library.propagate = saved[0]
        library.setLevel(saved[1])
        if config.temporary and config.directory is not None:
            shutil.rmtree(config.directory, ignore_errors=True)


def main(args: argparse.Namespace, stdout: Console, stderr: Console) -> int:
    opts = options_from_args(args)
    trio.run(partial(serve, opts, stdout, stderr))
    return 0
