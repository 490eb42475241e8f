"""Write the intersphinx inventories that the documentation links against.

The documentation is built without network access, so intersphinx cannot
download ``objects.inv`` from the Python, Trio and cryptography sites.  This
script writes small stand-ins holding only the external names these docs
refer to, with the URLs of the real pages.  ``docs/conf.py`` points
``intersphinx_mapping`` at the generated files.

To link a new external name, add one line to the right table below and run::

    python docs/_inventories/make_inventories.py

then commit the regenerated ``.inv`` files together with this script.

An entry is ``(role, name)`` or ``(role, name, target)``:

* ``role`` is the Sphinx object type (``py:class``, ``py:exception``,
  ``py:function``, ``py:method``, ``py:attribute``, ``py:data``,
  ``py:module``), as the target project documents it.
* ``name`` is the fully qualified name that a reference uses.
* ``target`` (optional) is the documented name whose anchor ``name`` should
  link to, or ``""`` to link to the top of the page.  Use it for objects
  whose runtime ``__module__`` differs from the documented one
  (``_ssl.MemoryBIO`` is documented as ``ssl.MemoryBIO``;
  ``cryptography.x509.Certificate`` is implemented in a private extension
  module), because autodoc writes type hints with the runtime name.

Each table maps a page (relative to the project's base URL) to its entries;
the anchor of an entry is its (target) name, or ``module-NAME`` for modules,
following Sphinx's conventions.
"""

from __future__ import annotations

import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

Entry = tuple[str, str] | tuple[str, str, str]

# --------------------------------------------------------------------- Python
# Base URL: https://docs.python.org/3

PYTHON: dict[str, list[Entry]] = {
    "library/ssl.html": [
        ("py:module", "ssl"),
        ("py:class", "ssl.SSLContext"),
        ("py:class", "ssl.SSLObject"),
        ("py:class", "ssl.SSLSocket"),
        ("py:class", "ssl.MemoryBIO"),
        ("py:class", "ssl.SSLSession"),
        ("py:class", "ssl.TLSVersion"),
        ("py:class", "ssl.VerifyMode"),
        ("py:class", "ssl.VerifyFlags"),
        ("py:class", "ssl.Options"),
        ("py:class", "ssl.AlertDescription"),
        ("py:class", "ssl.Purpose"),
        ("py:class", "_ssl.MemoryBIO", "ssl.MemoryBIO"),
        ("py:class", "_ssl.SSLSession", "ssl.SSLSession"),
        ("py:exception", "ssl.SSLError"),
        ("py:exception", "ssl.SSLCertVerificationError"),
        ("py:exception", "ssl.SSLZeroReturnError"),
        ("py:exception", "ssl.SSLWantReadError"),
        ("py:exception", "ssl.SSLWantWriteError"),
        ("py:exception", "ssl.SSLSyscallError"),
        ("py:exception", "ssl.SSLEOFError"),
        ("py:exception", "ssl.CertificateError"),
        ("py:attribute", "ssl.SSLError.library"),
        ("py:attribute", "ssl.SSLError.reason"),
        ("py:function", "ssl.create_default_context"),
        ("py:data", "ssl.CERT_NONE"),
        ("py:data", "ssl.CERT_OPTIONAL"),
        ("py:data", "ssl.CERT_REQUIRED"),
        ("py:data", "ssl.PROTOCOL_TLS_CLIENT"),
        ("py:data", "ssl.PROTOCOL_TLS_SERVER"),
        ("py:data", "ssl.VERIFY_DEFAULT"),
        ("py:data", "ssl.VERIFY_CRL_CHECK_LEAF"),
        ("py:data", "ssl.VERIFY_CRL_CHECK_CHAIN"),
        ("py:data", "ssl.VERIFY_X509_STRICT"),
        ("py:data", "ssl.VERIFY_X509_PARTIAL_CHAIN"),
        ("py:data", "ssl.OP_NO_TICKET"),
        ("py:data", "ssl.OP_NO_RENEGOTIATION"),
        ("py:data", "ssl.HAS_ALPN"),
        ("py:data", "ssl.HAS_SNI"),
        ("py:data", "ssl.HAS_TLSv1_3"),
        ("py:data", "ssl.OPENSSL_VERSION"),
        ("py:attribute", "ssl.SSLContext.check_hostname"),
        ("py:attribute", "ssl.SSLContext.hostname_checks_common_name"),
        ("py:attribute", "ssl.SSLContext.maximum_version"),
        ("py:attribute", "ssl.SSLContext.minimum_version"),
        ("py:attribute", "ssl.SSLContext.num_tickets"),
        ("py:attribute", "ssl.SSLContext.options"),
        ("py:attribute", "ssl.SSLContext.post_handshake_auth"),
        ("py:attribute", "ssl.SSLContext.sni_callback"),
        ("py:attribute", "ssl.SSLContext.verify_flags"),
        ("py:attribute", "ssl.SSLContext.verify_mode"),
        ("py:method", "ssl.SSLContext.load_cert_chain"),
        ("py:method", "ssl.SSLContext.load_default_certs"),
        ("py:method", "ssl.SSLContext.load_verify_locations"),
        ("py:method", "ssl.SSLContext.set_alpn_protocols"),
        ("py:method", "ssl.SSLContext.set_ciphers"),
        ("py:method", "ssl.SSLContext.wrap_bio"),
        ("py:method", "ssl.SSLContext.wrap_socket"),
        ("py:method", "ssl.SSLSocket.cipher"),
        ("py:method", "ssl.SSLSocket.do_handshake"),
        ("py:method", "ssl.SSLSocket.get_unverified_chain"),
        ("py:method", "ssl.SSLSocket.get_verified_chain"),
        ("py:method", "ssl.SSLSocket.getpeercert"),
        ("py:method", "ssl.SSLSocket.selected_alpn_protocol"),
        ("py:method", "ssl.SSLSocket.unwrap"),
        ("py:method", "ssl.SSLSocket.verify_client_post_handshake"),
        ("py:method", "ssl.SSLSocket.version"),
        ("py:attribute", "ssl.SSLSocket.context"),
        ("py:attribute", "ssl.SSLSocket.session"),
        ("py:attribute", "ssl.SSLSocket.session_reused"),
        # SSLObject documents its methods by listing SSLSocket's.
        ("py:method", "ssl.SSLObject.cipher", "ssl.SSLSocket.cipher"),
        ("py:method", "ssl.SSLObject.do_handshake", "ssl.SSLSocket.do_handshake"),
        (
            "py:method",
            "ssl.SSLObject.get_unverified_chain",
            "ssl.SSLSocket.get_unverified_chain",
        ),
        ("py:method", "ssl.SSLObject.getpeercert", "ssl.SSLSocket.getpeercert"),
        (
            "py:method",
            "ssl.SSLObject.selected_alpn_protocol",
            "ssl.SSLSocket.selected_alpn_protocol",
        ),
        ("py:method", "ssl.SSLObject.unwrap", "ssl.SSLSocket.unwrap"),
        (
            "py:method",
            "ssl.SSLObject.verify_client_post_handshake",
            "ssl.SSLSocket.verify_client_post_handshake",
        ),
        ("py:method", "ssl.SSLObject.version", "ssl.SSLSocket.version"),
        ("py:attribute", "ssl.SSLObject.context", "ssl.SSLSocket.context"),
        ("py:attribute", "ssl.SSLObject.session", "ssl.SSLSocket.session"),
    ],
    "library/exceptions.html": [
        ("py:exception", "BaseException"),
        ("py:exception", "BaseExceptionGroup"),
        ("py:exception", "BrokenPipeError"),
        ("py:exception", "ConnectionError"),
        ("py:exception", "ConnectionResetError"),
        ("py:exception", "DeprecationWarning"),
        ("py:exception", "EOFError"),
        ("py:exception", "Exception"),
        ("py:exception", "ExceptionGroup"),
        ("py:exception", "KeyError"),
        ("py:exception", "LookupError"),
        ("py:exception", "NotImplementedError"),
        ("py:exception", "OSError"),
        ("py:exception", "RuntimeError"),
        ("py:exception", "RuntimeWarning"),
        ("py:exception", "TimeoutError"),
        ("py:exception", "TypeError"),
        ("py:exception", "UserWarning"),
        ("py:exception", "ValueError"),
        ("py:exception", "Warning"),
        ("py:attribute", "BaseException.__cause__"),
        ("py:attribute", "BaseException.__context__"),
    ],
    "library/stdtypes.html": [
        ("py:class", "bytearray"),
        ("py:class", "bytes"),
        ("py:class", "dict"),
        ("py:class", "frozenset"),
        ("py:class", "list"),
        ("py:class", "memoryview"),
        ("py:class", "range"),
        ("py:class", "set"),
        ("py:class", "str"),
        ("py:class", "tuple"),
    ],
    "library/functions.html": [
        ("py:class", "bool"),
        ("py:class", "float"),
        ("py:class", "int"),
        ("py:class", "object"),
        ("py:class", "type"),
        ("py:function", "isinstance"),
        ("py:function", "len"),
        ("py:function", "repr"),
    ],
    "library/constants.html": [
        ("py:data", "None"),
        ("py:data", "True"),
        ("py:data", "False"),
        ("py:data", "Ellipsis"),
        ("py:data", "NotImplemented"),
    ],
    "library/typing.html": [
        ("py:module", "typing"),
        ("py:data", "typing.Any"),
        ("py:data", "typing.ClassVar"),
        ("py:data", "typing.Final"),
        ("py:data", "typing.Literal"),
        ("py:data", "typing.Never"),
        ("py:data", "typing.NoReturn"),
        ("py:data", "typing.Optional"),
        ("py:data", "typing.Self"),
        ("py:data", "typing.TYPE_CHECKING"),
        ("py:data", "typing.TypeAlias"),
        ("py:data", "typing.Union"),
        ("py:class", "typing.Generic"),
        ("py:class", "typing.NamedTuple"),
        ("py:class", "typing.Protocol"),
        ("py:class", "typing.TypedDict"),
        ("py:class", "typing.TypeVar"),
        ("py:class", "typing.ParamSpec"),
        ("py:function", "typing.final"),
        ("py:function", "typing.overload"),
    ],
    "library/collections.abc.html": [
        ("py:module", "collections.abc"),
        ("py:class", "collections.abc.AsyncGenerator"),
        ("py:class", "collections.abc.AsyncIterable"),
        ("py:class", "collections.abc.AsyncIterator"),
        ("py:class", "collections.abc.Awaitable"),
        ("py:class", "collections.abc.Buffer"),
        ("py:class", "collections.abc.Callable"),
        ("py:class", "collections.abc.Collection"),
        ("py:class", "collections.abc.Container"),
        ("py:class", "collections.abc.Coroutine"),
        ("py:class", "collections.abc.Generator"),
        ("py:class", "collections.abc.Hashable"),
        ("py:class", "collections.abc.ItemsView"),
        ("py:class", "collections.abc.Iterable"),
        ("py:class", "collections.abc.Iterator"),
        ("py:class", "collections.abc.KeysView"),
        ("py:class", "collections.abc.Mapping"),
        ("py:class", "collections.abc.MutableMapping"),
        ("py:class", "collections.abc.MutableSequence"),
        ("py:class", "collections.abc.MutableSet"),
        ("py:class", "collections.abc.Sequence"),
        ("py:class", "collections.abc.Set"),
        ("py:class", "collections.abc.Sized"),
        ("py:class", "collections.abc.ValuesView"),
    ],
    "library/contextlib.html": [
        ("py:class", "contextlib.AbstractAsyncContextManager"),
        ("py:class", "contextlib.AbstractContextManager"),
        ("py:function", "contextlib.asynccontextmanager"),
        ("py:function", "contextlib.contextmanager"),
    ],
    "library/dataclasses.html": [
        ("py:function", "dataclasses.dataclass"),
        ("py:function", "dataclasses.field"),
        ("py:function", "dataclasses.replace"),
    ],
    "library/datetime.html": [
        ("py:class", "datetime.datetime"),
        ("py:class", "datetime.timedelta"),
        ("py:class", "datetime.timezone"),
        ("py:attribute", "datetime.timezone.utc"),
    ],
    "library/enum.html": [
        ("py:class", "enum.Enum"),
        ("py:class", "enum.Flag"),
        ("py:class", "enum.IntEnum"),
        ("py:class", "enum.IntFlag"),
        ("py:class", "enum.StrEnum"),
    ],
    "library/functools.html": [
        ("py:function", "functools.cached_property"),
    ],
    "library/ipaddress.html": [
        ("py:class", "ipaddress.IPv4Address"),
        ("py:class", "ipaddress.IPv4Network"),
        ("py:class", "ipaddress.IPv6Address"),
        ("py:class", "ipaddress.IPv6Network"),
        ("py:function", "ipaddress.ip_address"),
    ],
    "library/logging.html": [
        ("py:module", "logging"),
        ("py:class", "logging.Logger"),
        ("py:function", "logging.getLogger"),
    ],
    "library/os.html": [
        ("py:class", "os.PathLike"),
        ("py:function", "os.fspath"),
    ],
    "library/pathlib.html": [
        ("py:class", "pathlib.Path"),
        ("py:class", "pathlib.PurePath"),
    ],
    "library/socket.html": [
        ("py:module", "socket"),
        ("py:class", "socket.socket"),
    ],
    "library/types.html": [
        ("py:class", "types.MappingProxyType"),
        ("py:class", "types.TracebackType"),
    ],
    "library/warnings.html": [
        ("py:module", "warnings"),
        ("py:function", "warnings.filterwarnings"),
        ("py:function", "warnings.simplefilter"),
        ("py:function", "warnings.warn"),
    ],
}

# ----------------------------------------------------------------------- Trio
# Base URL: https://trio.readthedocs.io/en/stable

TRIO: dict[str, list[Entry]] = {
    "reference-core.html": [
        ("py:module", "trio"),
        ("py:function", "trio.run"),
        ("py:function", "trio.open_nursery"),
        ("py:class", "trio.Nursery"),
        ("py:method", "trio.Nursery.start"),
        ("py:method", "trio.Nursery.start_soon"),
        ("py:attribute", "trio.Nursery.cancel_scope"),
        ("py:class", "trio.TaskStatus"),
        ("py:data", "trio.TASK_STATUS_IGNORED"),
        ("py:class", "trio.CancelScope"),
        ("py:attribute", "trio.CancelScope.deadline"),
        ("py:method", "trio.CancelScope.cancel"),
        ("py:function", "trio.current_time"),
        ("py:function", "trio.sleep"),
        ("py:function", "trio.sleep_forever"),
        ("py:function", "trio.move_on_after"),
        ("py:function", "trio.move_on_at"),
        ("py:function", "trio.fail_after"),
        ("py:function", "trio.fail_at"),
        ("py:class", "trio.Event"),
        ("py:class", "trio.Lock"),
        ("py:class", "trio.StrictFIFOLock"),
        ("py:class", "trio.Semaphore"),
        ("py:class", "trio.CapacityLimiter"),
        ("py:class", "trio.Condition"),
        ("py:function", "trio.open_memory_channel"),
        ("py:class", "trio.MemorySendChannel"),
        ("py:class", "trio.MemoryReceiveChannel"),
        ("py:exception", "trio.Cancelled"),
        ("py:exception", "trio.TooSlowError"),
        ("py:exception", "trio.BrokenResourceError"),
        ("py:exception", "trio.ClosedResourceError"),
        ("py:exception", "trio.BusyResourceError"),
        ("py:exception", "trio.EndOfChannel"),
        ("py:exception", "trio.WouldBlock"),
        ("py:exception", "trio.RunFinishedError"),
        ("py:exception", "trio.TrioInternalError"),
    ],
    "reference-io.html": [
        ("py:module", "trio.abc"),
        ("py:class", "trio.abc.AsyncResource"),
        ("py:method", "trio.abc.AsyncResource.aclose"),
        ("py:class", "trio.abc.SendStream"),
        ("py:method", "trio.abc.SendStream.send_all"),
        ("py:method", "trio.abc.SendStream.wait_send_all_might_not_block"),
        ("py:class", "trio.abc.ReceiveStream"),
        ("py:method", "trio.abc.ReceiveStream.receive_some"),
        ("py:class", "trio.abc.Stream"),
        ("py:class", "trio.abc.HalfCloseableStream"),
        ("py:method", "trio.abc.HalfCloseableStream.send_eof"),
        ("py:class", "trio.abc.Listener"),
        ("py:method", "trio.abc.Listener.accept"),
        ("py:class", "trio.abc.SendChannel"),
        ("py:class", "trio.abc.ReceiveChannel"),
        ("py:class", "trio.abc.Channel"),
        ("py:class", "trio.abc.HostnameResolver"),
        ("py:class", "trio.abc.SocketFactory"),
        ("py:function", "trio.aclose_forcefully"),
        ("py:class", "trio.StapledStream"),
        ("py:class", "trio.SocketStream"),
        ("py:class", "trio.SocketListener"),
        ("py:class", "trio.SSLStream"),
        ("py:method", "trio.SSLStream.do_handshake"),
        ("py:method", "trio.SSLStream.unwrap"),
        ("py:method", "trio.SSLStream.aclose"),
        ("py:method", "trio.SSLStream.send_all"),
        ("py:method", "trio.SSLStream.receive_some"),
        ("py:method", "trio.SSLStream.wait_send_all_might_not_block"),
        ("py:attribute", "trio.SSLStream.transport_stream"),
        ("py:class", "trio.SSLListener"),
        ("py:exception", "trio.NeedHandshakeError"),
        ("py:function", "trio.open_tcp_stream"),
        ("py:function", "trio.open_tcp_listeners"),
        ("py:function", "trio.serve_tcp"),
        ("py:function", "trio.serve_listeners"),
        ("py:function", "trio.open_ssl_over_tcp_stream"),
        ("py:function", "trio.open_ssl_over_tcp_listeners"),
        ("py:function", "trio.serve_ssl_over_tcp"),
        ("py:function", "trio.open_unix_socket"),
        ("py:module", "trio.socket"),
        ("py:class", "trio.socket.SocketType"),
    ],
    "reference-testing.html": [
        ("py:module", "trio.testing"),
        ("py:function", "trio.testing.wait_all_tasks_blocked"),
        ("py:class", "trio.testing.MockClock"),
        ("py:class", "trio.testing.Sequencer"),
        ("py:class", "trio.testing.MemorySendStream"),
        ("py:class", "trio.testing.MemoryReceiveStream"),
        ("py:function", "trio.testing.memory_stream_pump"),
        ("py:function", "trio.testing.memory_stream_one_way_pair"),
        ("py:function", "trio.testing.memory_stream_pair"),
        ("py:function", "trio.testing.lockstep_stream_one_way_pair"),
        ("py:function", "trio.testing.lockstep_stream_pair"),
        ("py:function", "trio.testing.open_stream_to_socket_listener"),
        ("py:function", "trio.testing.check_one_way_stream"),
        ("py:function", "trio.testing.check_two_way_stream"),
        ("py:function", "trio.testing.check_half_closeable_stream"),
    ],
    "reference-lowlevel.html": [
        ("py:module", "trio.lowlevel"),
        ("py:function", "trio.lowlevel.checkpoint"),
        ("py:function", "trio.lowlevel.checkpoint_if_cancelled"),
        ("py:function", "trio.lowlevel.cancel_shielded_checkpoint"),
        ("py:function", "trio.lowlevel.current_task"),
        ("py:class", "trio.lowlevel.Task"),
        ("py:class", "trio.lowlevel.ParkingLot"),
    ],
}

# --------------------------------------------------------------- cryptography
# Base URL: https://cryptography.io/en/latest

_RUST = "cryptography.hazmat.bindings._rust"
_ASYM = "cryptography.hazmat.primitives.asymmetric"

CRYPTOGRAPHY: dict[str, list[Entry]] = {
    "": [
        ("py:module", "cryptography", ""),
    ],
    "x509/reference/": [
        ("py:module", "cryptography.x509"),
        ("py:class", "cryptography.x509.Certificate"),
        ("py:class", f"{_RUST}.x509.Certificate", "cryptography.x509.Certificate"),
        ("py:method", "cryptography.x509.Certificate.fingerprint"),
        ("py:method", "cryptography.x509.Certificate.public_key"),
        ("py:attribute", "cryptography.x509.Certificate.extensions"),
        ("py:attribute", "cryptography.x509.Certificate.issuer"),
        ("py:attribute", "cryptography.x509.Certificate.not_valid_after_utc"),
        ("py:attribute", "cryptography.x509.Certificate.not_valid_before_utc"),
        ("py:attribute", "cryptography.x509.Certificate.serial_number"),
        ("py:attribute", "cryptography.x509.Certificate.subject"),
        ("py:function", "cryptography.x509.load_pem_x509_certificate"),
        ("py:function", "cryptography.x509.load_pem_x509_certificates"),
        ("py:function", "cryptography.x509.load_der_x509_certificate"),
        ("py:class", "cryptography.x509.Name"),
        ("py:class", "cryptography.x509.name.Name", "cryptography.x509.Name"),
        ("py:class", "cryptography.x509.NameAttribute"),
        ("py:class", "cryptography.x509.ObjectIdentifier"),
        ("py:class", f"{_RUST}.ObjectIdentifier", "cryptography.x509.ObjectIdentifier"),
        ("py:class", "cryptography.x509.Extension"),
        ("py:class", "cryptography.x509.Extensions"),
        ("py:class", "cryptography.x509.BasicConstraints"),
        ("py:class", "cryptography.x509.KeyUsage"),
        ("py:class", "cryptography.x509.ExtendedKeyUsage"),
        ("py:class", "cryptography.x509.SubjectAlternativeName"),
        (
            "py:class",
            "cryptography.x509.extensions.SubjectAlternativeName",
            "cryptography.x509.SubjectAlternativeName",
        ),
        ("py:class", "cryptography.x509.GeneralName"),
        ("py:class", "cryptography.x509.DNSName"),
        ("py:class", "cryptography.x509.IPAddress"),
        ("py:class", "cryptography.x509.RFC822Name"),
        ("py:class", "cryptography.x509.UniformResourceIdentifier"),
        (
            "py:class",
            "cryptography.x509.general_name.GeneralName",
            "cryptography.x509.GeneralName",
        ),
    ],
    "hazmat/primitives/cryptographic-hashes/": [
        ("py:class", "cryptography.hazmat.primitives.hashes.HashAlgorithm"),
        ("py:class", "cryptography.hazmat.primitives.hashes.SHA256"),
    ],
    "hazmat/primitives/asymmetric/serialization/": [
        ("py:class", "cryptography.hazmat.primitives.serialization.Encoding"),
        ("py:class", "cryptography.hazmat.primitives.serialization.PublicFormat"),
        (
            "py:function",
            "cryptography.hazmat.primitives.serialization.load_pem_private_key",
        ),
    ],
    "hazmat/primitives/asymmetric/rsa/": [
        ("py:class", f"{_ASYM}.rsa.RSAPrivateKey"),
        ("py:class", f"{_ASYM}.rsa.RSAPublicKey"),
    ],
    "hazmat/primitives/asymmetric/ec/": [
        ("py:class", f"{_ASYM}.ec.EllipticCurvePrivateKey"),
        ("py:class", f"{_ASYM}.ec.EllipticCurvePublicKey"),
    ],
    "hazmat/primitives/asymmetric/ed25519/": [
        ("py:class", f"{_ASYM}.ed25519.Ed25519PrivateKey"),
        ("py:class", f"{_ASYM}.ed25519.Ed25519PublicKey"),
    ],
}


@dataclass(frozen=True)
class Inventory:
    filename: str
    project: str
    version: str
    pages: dict[str, list[Entry]]


INVENTORIES = [
    Inventory("python.inv", "Python", "3", PYTHON),
    Inventory("trio.inv", "Trio", "stable", TRIO),
    Inventory("cryptography.inv", "Cryptography", "latest", CRYPTOGRAPHY),
]


def _lines(inventory: Inventory) -> list[str]:
    seen: set[tuple[str, str]] = set()
    lines = []
    for page, entries in inventory.pages.items():
        for entry in entries:
            role, name = entry[0], entry[1]
            target = entry[2] if len(entry) == 3 else name
            if (role, name) in seen:
                raise SystemExit(f"{inventory.filename}: duplicate {role} {name}")
            seen.add((role, name))
            anchor = f"module-{target}" if role == "py:module" and target else target
            # "$" at the end of a URI stands for the name itself (Sphinx's
            # own shorthand); aliases spell their anchor out.
            if not anchor:
                uri = page
            elif anchor == name:
                uri = f"{page}#$"
            else:
                uri = f"{page}#{anchor}"
            priority = 1 if target == name else -1
            lines.append(f"{name} {role} {priority} {uri} -\n")
    return sorted(lines)


def render(inventory: Inventory) -> bytes:
    """Return the bytes of a version 2 ``objects.inv`` for ``inventory``."""
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {inventory.project}\n"
        f"# Version: {inventory.version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    body = "".join(_lines(inventory)).encode()
    return header.encode() + zlib.compress(body, 9)


def _check_with_sphinx(path: Path) -> None:
    """Load a written file with Sphinx's own reader, when Sphinx is installed."""
    try:
        from sphinx.util.inventory import InventoryFile
    except ImportError:
        return
    with path.open("rb") as stream:
        InventoryFile.load(stream, "https://example.invalid", lambda a, b: f"{a}/{b}")


def main() -> None:
    here = Path(__file__).resolve().parent
    for inventory in INVENTORIES:
        path = here / inventory.filename
        path.write_bytes(render(inventory))
        _check_with_sphinx(path)
        count = sum(len(entries) for entries in inventory.pages.values())
        print(f"wrote {path.name}: {count} names", file=sys.stderr)


if __name__ == "__main__":
    main()
