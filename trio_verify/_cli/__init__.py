"""The ``trio-verify`` command line: ``matrix``, ``probe`` and ``serve``.

Installed with the ``cli`` extra (``trustme`` and ``rich``); the library
itself never imports this package.  :func:`main` takes an argument list and
returns the exit status, so it can be called in-process:

* 0: every check passed, or the connection succeeded;
* 1: a check failed, or the connection failed;
* 2: the command line is wrong (or the ``cli`` extra is missing).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from importlib import resources
from typing import Any, NoReturn

__all__ = ["main", "main_async", "run", "schema"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

KIND_CHOICES = (
    "none",
    "valid",
    "other-ca",
    "expired",
    "not-yet-valid",
    "wrong-name",
    "wrong-eku",
    "self-signed",
)


class _Parser(argparse.ArgumentParser):
    """Examples in the epilog keep their line breaks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)


def _examples(text: str) -> str:
    return "examples:\n" + textwrap.indent(textwrap.dedent(text).strip("\n"), "  ")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``trio-verify``."""
    from .. import __version__

    parser = _Parser(
        prog="trio-verify",
        description="Diagnose TLS certificate verification with trio_verify.",
        epilog=_examples(
            """
            trio-verify matrix                      # the verify-mode matrix, live
            trio-verify probe example.org           # diagnose a server
            trio-verify serve --port 0              # an mTLS diagnostic server
            trio-verify COMMAND --help              # a command's options
            """
        ),
    )
    parser.add_argument(
        "--version", action="version", version=f"trio-verify {__version__}"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    matrix = commands.add_parser(
        "matrix",
        help="play every cell of the verify-mode matrix on loopback",
        description=(
            "Make a CA and certificates of every kind in memory, run a "
            "trio_verify server and client on loopback for every cell of the "
            "verify-mode matrix (client rows: verified, insecure, an adopted "
            "CERT_OPTIONAL context, CERT_REQUIRED without check_hostname; "
            "server rows: ClientAuth NONE, OPTIONAL, REQUIRED) with every kind "
            "of presented certificate on TLS 1.2 and 1.3, and compare what "
            "both sides observe with the documented behaviour. Exit status 0 "
            "only if every cell matches."
        ),
        epilog=_examples(
            """
            trio-verify matrix
            trio-verify matrix --rows server --tls 1.3
            trio-verify matrix --cert-kind expired --cert-kind wrong-name
            trio-verify matrix --ca-file my-ca.pem --ca-key my-ca.key
            trio-verify matrix --json > matrix.json
            """
        ),
    )
    matrix.add_argument(
        "--rows",
        choices=("client", "server", "all"),
        default="all",
        help="which side's rows to play (default: all)",
    )
    matrix.add_argument(
        "--tls",
        choices=("1.2", "1.3", "both"),
        default="both",
        help="which TLS versions (default: both)",
    )
    matrix.add_argument(
        "--cert-kind",
        dest="kinds",
        action="append",
        choices=KIND_CHOICES,
        metavar="KIND",
        help="play only this kind of presented certificate; repeatable. "
        f"One of: {', '.join(KIND_CHOICES)}",
    )
    matrix.add_argument(
        "--ca-file", metavar="PEM", help="issue the certificates from this CA..."
    )
    matrix.add_argument(
        "--ca-key", metavar="PEM", help="...with this (unencrypted) private key"
    )
    matrix.add_argument(
        "--json", action="store_true", help="print one JSON document instead"
    )

    probe = commands.add_parser(
        "probe",
        help="connect to a TLS server and explain what happens",
        description=(
            "Connect to HOST[:PORT] (port 443 by default) and report phase by "
            "phase: TCP connect, ClientHello, the negotiated version, cipher "
            "and ALPN, the server's certificate chain, the verification "
            "result, and whether the server asked for a client certificate "
            "and accepted ours. On failure: the typed error, its phase, the "
            "alert, and a hint in plain words."
        ),
        epilog=_examples(
            """
            trio-verify probe example.org
            trio-verify probe localhost:8443 --cafile ca.pem
            trio-verify probe 127.0.0.1:8443 --servername api.internal \\
                --cafile ca.pem --cert client.crt --key client.key
            trio-verify probe [::1]:8443 --tls1.2 --alpn h2 --alpn http/1.1
            trio-verify probe self-signed.example --insecure --json
            """
        ),
    )
    probe.add_argument("target", metavar="HOST[:PORT]", help="the server to probe")
    probe.add_argument(
        "--servername",
        metavar="NAME",
        help="the name sent as SNI and checked against the certificate (default: HOST)",
    )
    probe.add_argument(
        "--cafile",
        action="append",
        metavar="PEM",
        help="trust these CA certificates instead of the system store; repeatable",
    )
    probe.add_argument("--cert", metavar="PEM", help="client certificate (chain)")
    probe.add_argument(
        "--key", metavar="PEM", help="client private key (default: in --cert)"
    )
    versions = probe.add_mutually_exclusive_group()
    versions.add_argument(
        "--tls1.2",
        dest="tls",
        action="store_const",
        const="1.2",
        help="speak TLS 1.2 only",
    )
    versions.add_argument(
        "--tls1.3",
        dest="tls",
        action="store_const",
        const="1.3",
        help="speak TLS 1.3 only",
    )
    probe.add_argument(
        "--alpn",
        action="append",
        metavar="PROTOCOL",
        help="offer this application protocol; repeatable or comma-separated",
    )
    probe.add_argument(
        "--confirm-client-auth",
        choices=("never", "auto", "always"),
        default="auto",
        help="TLS 1.3: whether the handshake waits for the server's verdict on "
        "our certificate (default: auto, when one was sent)",
    )
    probe.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify the server's certificate (the result is never "
        "reported as secure)",
    )
    probe.add_argument(
        "--timeout",
        type=_positive,
        default=10.0,
        metavar="SECONDS",
        help="bound on connecting, on the handshake and on waiting for a "
        "verdict (default: 10)",
    )
    probe.add_argument(
        "--read",
        type=_non_negative,
        default=0.0,
        metavar="SECONDS",
        help="after the handshake, show what the server sends within SECONDS "
        "(default: 0, do not wait)",
    )
    probe.add_argument(
        "--json", action="store_true", help="print one JSON document instead"
    )

    serve = commands.add_parser(
        "serve",
        help="a TLS server that tells each client what it saw",
        description=(
            "A diagnostic TLS server. It writes to each client a short "
            "plain-text report of what it saw (version, cipher, SNI, ALPN, "
            "the client certificate), as an HTTP response to an HTTP "
            "client, and closes; it logs one line per handshake, failures "
            "included, to stderr. Without --cert it makes a CA and a "
            "certificate for localhost, 127.0.0.1 and ::1, and writes "
            "ca.pem, client.pem (certificate and key), client.crt and "
            "client.key to a directory it prints. It prints 'listening on "
            "HOST:PORT' when ready and stops on SIGINT or SIGTERM."
        ),
        epilog=_examples(
            """
            trio-verify serve --port 8443
            trio-verify serve --port 0 --client-auth required --write-dir ./certs
            trio-verify serve --cert server.pem --key server.key \\
                --client-ca clients-ca.pem --client-auth optional
            trio-verify serve --sni admin.localhost=required --alpn http/1.1
            curl --cacert DIR/ca.pem --cert DIR/client.pem https://localhost:8443/
            """
        ),
    )
    serve.add_argument("--cert", metavar="PEM", help="server certificate (chain)")
    serve.add_argument(
        "--key", metavar="PEM", help="server private key (default: in --cert)"
    )
    serve.add_argument(
        "--client-ca",
        action="append",
        metavar="PEM",
        help="CA certificates that vouch for clients; repeatable",
    )
    serve.add_argument(
        "--client-auth",
        choices=("none", "optional", "required"),
        default="optional",
        help="whether a client certificate is asked for (default: optional)",
    )
    serve.add_argument(
        "--sni",
        action="append",
        metavar="NAME=POLICY",
        help="client authentication for clients asking for server name NAME "
        "(POLICY: none, optional or required); repeatable",
    )
    serve.add_argument(
        "--alpn",
        action="append",
        metavar="PROTOCOL",
        help="select from these application protocols; repeatable or comma-separated",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    serve.add_argument(
        "--port",
        type=_port,
        default=8443,
        help="TCP port; 0 picks a free one (default: 8443)",
    )
    serve.add_argument(
        "--write-dir",
        metavar="DIR",
        help="where to write the generated CA and client files (default: a "
        "temporary directory, removed on exit)",
    )
    serve.add_argument(
        "--handshake-timeout",
        type=_positive,
        default=10.0,
        metavar="SECONDS",
        help="bound on each handshake (default: 10)",
    )
    serve.add_argument(
        "--json",
        action="store_true",
        help="JSON instead of text: one document on stdout when ready, one "
        "JSON line per event on stderr",
    )
    return parser


def _positive(text: str) -> float:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a usable number")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number")
    return value


def schema(command: str) -> dict[str, Any]:
    """The JSON Schema of a command's ``--json`` output (``matrix``, ``probe``,
    ``serve``)."""
    import json

    text = (
        resources.files(__package__)
        .joinpath("schemas", f"{command}.schema.json")
        .read_text("utf-8")
    )
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _missing_extra(exc: ImportError) -> int:
    name = (exc.name or "a dependency").split(".")[0]
    print(
        f"trio-verify: the command line needs the 'cli' extra ({name} is "
        "missing): python -m pip install 'trio-verify[cli]'",
        file=sys.stderr,
    )
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``trio-verify`` with ``argv`` (default ``sys.argv[1:]``); return the
    exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        from ._common import UsageError, make_console
    except ImportError as exc:
        return _missing_extra(exc)
    stdout, stderr = make_console(), make_console(stderr=True)
    try:
        if args.command == "matrix":
            try:
                from . import _matrix
            except ImportError as exc:
                return _missing_extra(exc)
            return _matrix.run(
                _matrix.Options(
                    rows=args.rows,
                    tls=args.tls,
                    kinds=tuple(args.kinds or ()),
                    ca_file=args.ca_file,
                    ca_key=args.ca_key,
                    json=args.json,
                ),
                stdout,
                stderr,
            )
        if args.command == "probe":
            from . import _probe

            return _probe.main(args, stdout, stderr)
        from . import _serve

        return _serve.main(args, stdout, stderr)
    except UsageError as exc:
        stderr.print(f"trio-verify {args.command}: {exc}", markup=False, soft_wrap=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


async def main_async(argv: Sequence[str]) -> int:
    """:func:`main` for callers already inside Trio (``probe`` only)."""
    from ._common import UsageError, make_console
    from ._probe import run_async

    args = build_parser().parse_args(argv)
    if args.command != "probe":
        raise ValueError("main_async() runs the probe command only")
    try:
        return await run_async(args, make_console())
    except UsageError as exc:
        make_console(stderr=True).print(
            f"trio-verify probe: {exc}", markup=False, soft_wrap=True
        )
        return EXIT_USAGE


def run() -> NoReturn:
    """The console script's entry point."""
    sys.exit(main())
