"""The sans-IO ClientHello reader: the ``hello`` layer.

A server that chooses its policy per connection must see the ClientHello
before OpenSSL does, because the policy decides which :class:`ssl.SSLContext`
OpenSSL is given.  :class:`ClientHelloReader` takes the bytes a
client sends first, in any chunks, and returns a :class:`ClientHello` once the
whole handshake message is in.  The caller then builds the ``SSLObject`` from
the chosen context and replays :attr:`ClientHello.raw` into it, so OpenSSL sees
exactly what the client sent and nothing is lost.

Theory of operation
-------------------

*The reader must be invisible.*  A client must not be able to tell that
something reads its ClientHello before OpenSSL does: for every input the
server must answer what a plain OpenSSL server answers, with the same alert,
after the same byte.  Otherwise the reader becomes a fingerprint and, worse,
a parser that disagrees with OpenSSL is a way round the policy: if the reader
sees one server name and OpenSSL another, the policy chosen for the first
governs a connection to the second.

So the reader refuses exactly what OpenSSL 3.0 refuses *whatever the
context*, at the byte at which OpenSSL refuses it, and accepts everything
else.  The bytes OpenSSL would write are kept for :meth:`data_to_send
<ClientHelloReader.data_to_send>`.  What OpenSSL refuses regardless of
configuration, measured against OpenSSL 3.0.19 (``tests/test_hello.py``
feeds every case to a real ``SSLObject`` and compares):

* the first record: bytes that are not a TLS record header get no alert at
  all (:class:`~trio_verify.NotTLS`; plaintext HTTP is named as such).  Any
  record version ``0x03XX`` is accepted, as OpenSSL does.  A first record in
  the SSL 2.0 format (RFC 5246 appendix E.2) is parsed as a ClientHello, as
  OpenSSL does; only one that claims SSL 2.0 itself is refused.
* records: longer than 16 704 bytes (judged on the header), longer than
  16 384 (judged once complete), a later record whose version is not
  ``0x03XX``, more than 32 empty records in a row, or any record other than
  handshake before the ClientHello is complete.  An empty handshake record is
  skipped, and so is an empty ChangeCipherSpec before the message header.
* the handshake message: a type other than ClientHello, a length above
  :data:`MAX_CLIENT_HELLO_SIZE` (OpenSSL's ``CLIENT_HELLO_MAX_LENGTH``).
* the message body: lengths that do not add up, a session id longer than 32
  bytes, trailing bytes, an extension that OpenSSL knows appearing twice,
  ``pre_shared_key`` not last, ``use_srtp`` (DTLS only).

Everything else is left to OpenSSL, because its answer depends on the
context: versions, cipher suites, groups, signature algorithms, the contents
of each extension.  The reader decodes the extensions it reports without
judging them; one it cannot decode is reported as absent, and OpenSSL refuses
such a hello once it is replayed.  The server name is decoded exactly as
OpenSSL decodes it, so the two can never disagree about it.

OpenSSL writes a refusal as an alert record whose version is ``0x0303``,
except when it refuses a record for its type: then it echoes that record's
version.  An end of file before the ClientHello is complete gets
``decode_error``.  :meth:`ClientHelloReader.data_to_send` reproduces all of
that byte for byte.  Two deliberate differences remain, both documented on
the reader: a caller may choose a ``max_size`` below OpenSSL's, and the
reader bounds the bytes it buffers, which only a ClientHello chopped into
absurdly many records can reach.

Why not let OpenSSL answer whatever the reader cannot read, by replaying the
bytes into an ``SSLObject`` under some default policy?  That gives the right
answer only while OpenSSL refuses the bytes too; wherever the two disagreed,
the connection would carry on under a policy nobody chose for it.  So the
reader decides by itself, and the tests hold its decisions to OpenSSL's.
The extensions OpenSSL refuses to see twice are those it implements, which
depends on its version; the table here is OpenSSL 3.0's, and the tests
compare it with the OpenSSL that Python is linked against.
"""

from __future__ import annotations

import ssl
import struct
from dataclasses import dataclass, field
from typing import Final, NoReturn

from ._errors import (
    HTTP_METHODS,
    Alert,
    NotTLS,
    Phase,
    ProtocolViolation,
    TLSError,
    TruncatedStream,
)

__all__ = [
    "MAX_CLIENT_HELLO_SIZE",
    "ClientHello",
    "ClientHelloReader",
    "parse_client_hello",
]

MAX_CLIENT_HELLO_SIZE: Final = 131396
"""The largest ClientHello OpenSSL accepts: the handshake message body, in
bytes (``CLIENT_HELLO_MAX_LENGTH`` in OpenSSL's ``statem_srvr.c``).  A larger
one is refused with ``illegal_parameter`` as soon as its 4-byte header is in.
"""

# TLS record content types and handshake message types (RFC 8446 §5, §4).
_CHANGE_CIPHER_SPEC: Final = 20
_ALERT: Final = 21
_HANDSHAKE: Final = 22
_APPLICATION_DATA: Final = 23
_HS_CLIENT_HELLO: Final = 1

# Record sizes as OpenSSL 3.0 enforces them.  A TLSPlaintext fragment may
# carry at most 2^14 bytes; OpenSSL's read buffer holds 2^14 plus 320 bytes of
# encryption overhead (with compression off, as Python always sets it), so a
# longer record is refused from its header and one in between once it is in.
_RECORD_HEADER: Final = 5
_MAX_PLAINTEXT: Final = 1 << 14
_MAX_RECORD_BODY: Final = _MAX_PLAINTEXT + 320
_MAX_EMPTY_RECORDS: Final = 32
_SSL2_MIN_RECORD: Final = 9
_MAX_SESSION_ID: Final = 32
_ALERT_VERSION: Final = 0x0303

# Extension types (IANA "TLS ExtensionType Values").
_EXT_SERVER_NAME: Final = 0
_EXT_SUPPORTED_GROUPS: Final = 10
_EXT_SIGNATURE_ALGORITHMS: Final = 13
_EXT_USE_SRTP: Final = 14
_EXT_ALPN: Final = 16
_EXT_PRE_SHARED_KEY: Final = 41
_EXT_SUPPORTED_VERSIONS: Final = 43

# The extension types OpenSSL 3.0 implements itself (ext_defs in
# ssl/statem/extensions.c, as built): only these are refused when they appear
# twice; a repeated unknown type passes.  Measured by sending each of the
# 65536 types twice.
_OPENSSL_EXTENSIONS: Final = frozenset(
    {0, 1, 5, 10, 11, 12, 13, 14, 16, 18, 21, 22, 23, 35, 41, 42, 43, 44, 45, 47,
     49, 50, 51, 13172, 65000, 65281}
)  # fmt: skip

_EXTENSION_NAMES: Final = {
    0: "server_name",
    1: "max_fragment_length",
    5: "status_request",
    10: "supported_groups",
    11: "ec_point_formats",
    12: "srp",
    13: "signature_algorithms",
    14: "use_srtp",
    16: "application_layer_protocol_negotiation",
    18: "signed_certificate_timestamp",
    21: "padding",
    22: "encrypt_then_mac",
    23: "extended_master_secret",
    35: "session_ticket",
    41: "pre_shared_key",
    42: "early_data",
    43: "supported_versions",
    44: "cookie",
    45: "psk_key_exchange_modes",
    47: "certificate_authorities",
    49: "post_handshake_auth",
    50: "signature_algorithms_cert",
    51: "key_share",
    13172: "next_protocol_negotiation",
    65281: "renegotiation_info",
}

_RECORD_NAMES: Final = {
    _CHANGE_CIPHER_SPEC: "change_cipher_spec",
    _ALERT: "alert",
    _HANDSHAKE: "handshake",
    _APPLICATION_DATA: "application_data",
}

_HANDSHAKE_NAMES: Final = {
    0: "hello_request",
    2: "server_hello",
    4: "new_session_ticket",
    8: "encrypted_extensions",
    11: "certificate",
    12: "server_key_exchange",
    13: "certificate_request",
    14: "server_hello_done",
    15: "certificate_verify",
    16: "client_key_exchange",
    20: "finished",
}

_TLS_VERSIONS: Final = {
    0x0300: ssl.TLSVersion.SSLv3,
    0x0301: ssl.TLSVersion.TLSv1,
    0x0302: ssl.TLSVersion.TLSv1_1,
    0x0303: ssl.TLSVersion.TLSv1_2,
    0x0304: ssl.TLSVersion.TLSv1_3,
}

# Only ASCII letters are folded: str.lower() would also fold non-ASCII
# characters, some of them onto ASCII letters (KELVIN SIGN -> "k").
_ASCII_LOWER: Final = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What a client offered in its ClientHello, read before the handshake.

    Values are as sent, in the client's order, including GREASE values
    (RFC 8701).  An extension that is absent, or that cannot be decoded, gives
    an empty value; OpenSSL refuses a hello whose server name, ALPN list or
    supported versions cannot be decoded once the bytes are replayed into it.
    """

    legacy_version: int
    """``ClientHello.legacy_version`` (``0x0303`` for TLS 1.2 and 1.3)."""

    cipher_suites: tuple[int, ...]
    """The offered cipher suites, as 16-bit code points."""

    extension_types: tuple[int, ...]
    """The type of every extension, in the order sent."""

    server_name: str | None = None
    """The server name (SNI ``host_name``), exactly as sent, or ``None``.

    Not normalised: letters keep their case and a trailing dot stays (use
    :attr:`normalized_server_name` to choose a policy).  No IDNA processing is
    done: an internationalised name arrives as its A-label (``xn--...``).  The
    bytes are decoded as ASCII; a byte outside ASCII, which OpenSSL lets
    through, becomes a lone surrogate (``U+DC80``-``U+DCFF``, as
    ``os.fsdecode`` does), so it can never equal a configured name and
    ``server_name.encode("ascii", "surrogateescape")`` gives the bytes back.
    An empty name is ``""``, not ``None``.
    """

    alpn_protocols: tuple[str, ...] = ()
    """The offered ALPN protocol names (``"h2"``, ``"http/1.1"``), decoded as
    :attr:`server_name` is."""

    supported_versions: tuple[int, ...] = ()
    """The versions in the ``supported_versions`` extension (``0x0304`` is
    TLS 1.3); empty when the extension is absent."""

    signature_algorithms: tuple[int, ...] = ()
    """The ``signature_algorithms`` code points (``0x0403`` is
    ``ecdsa_secp256r1_sha256``)."""

    supported_groups: tuple[int, ...] = ()
    """The ``supported_groups`` code points (``0x001d`` is X25519)."""

    sslv2_format: bool = False
    """``True`` when the hello came in the SSL 2.0-compatible format (RFC 5246
    appendix E.2), which has no extensions and cannot offer TLS 1.3."""

    raw: bytes = field(default=b"", repr=False)
    """Every byte read from the client up to the end of the hello: the records
    that carried it and whatever came after them in the same reads (a
    ChangeCipherSpec, early data).  Replay them into OpenSSL unchanged."""

    peer_address: object = None
    """The client's transport address, as given to the reader."""

    @property
    def normalized_server_name(self) -> str | None:
        """The server name as a policy should look it up.

        ASCII letters are lowercased and one trailing dot is removed, since DNS
        names are case-insensitive and ``example.com.`` is ``example.com``: a
        client must not reach a different policy by spelling the same name
        differently.
        """
        name = self.server_name
        if name is None:
            return None
        name = name.translate(_ASCII_LOWER)
        return name[:-1] if name.endswith(".") else name

    @property
    def offers_tls13(self) -> bool:
        """Whether the client offers TLS 1.3 (in ``supported_versions``)."""
        return 0x0304 in self.supported_versions

    @property
    def max_version(self) -> ssl.TLSVersion | None:
        """The newest protocol version the client offers, or ``None``.

        From ``supported_versions`` when the client sent it (unknown values and
        GREASE are skipped).  Without it the client cannot negotiate TLS 1.3
        (RFC 8446 §4.2.1), so ``legacy_version`` counts up to TLS 1.2.
        ``None`` when nothing offered is a version ``ssl`` knows.
        """
        if _EXT_SUPPORTED_VERSIONS in self.extension_types:
            known = [v for v in self.supported_versions if v in _TLS_VERSIONS]
            return _TLS_VERSIONS[max(known)] if known else None
        if self.legacy_version >> 8 != 3:
            return None
        return _TLS_VERSIONS[min(self.legacy_version, 0x0303)]


class _Refusal(Exception):
    """Internal: the input is refused; converted to a TLSError by the reader."""

    def __init__(
        self,
        cls: type[TLSError],
        message: str,
        alert: Alert | None,
        record_version: int = _ALERT_VERSION,
    ) -> None:
        super().__init__(message)
        self.cls = cls
        self.message = message
        self.alert = alert
        self.record_version = record_version


def _malformed(message: str, alert: Alert = Alert.DECODE_ERROR) -> _Refusal:
    return _Refusal(ProtocolViolation, f"malformed ClientHello: {message}", alert)


def _extension_name(ext_type: int) -> str:
    name = _EXTENSION_NAMES.get(ext_type)
    return f"{name} ({ext_type})" if name else f"type {ext_type}"


def _u16(data: bytes, pos: int) -> int:
    return (data[pos] << 8) | data[pos + 1]


def _u16s(data: bytes, pos: int, count: int) -> tuple[int, ...]:
    """``count`` big-endian 16-bit values from ``pos``, in one C call."""
    return struct.unpack_from(f">{count}H", data, pos)


def _decode(name: bytes) -> str:
    return name.decode("ascii", "surrogateescape")


class ClientHelloReader:
    """Reads a ClientHello from the first bytes of a connection.  No I/O.

    Feed it what the transport delivers with :meth:`feed`, in chunks of any
    size, until it returns the :class:`ClientHello`.  If it raises instead,
    send :meth:`data_to_send` to the client (the alert a plain OpenSSL server
    would send for those bytes; often nothing) and close.  If the client
    closes first, call :meth:`feed_eof`.

    Errors are raised with ``phase=Phase.CLIENT_HELLO`` and ``side="server"``,
    and ``alert_sent`` is the alert in :meth:`data_to_send`:

    * :class:`~trio_verify.NotTLS`: the client does not speak TLS: plaintext
      HTTP, an SSL 2.0 hello, anything else that is not a TLS record.
    * :class:`~trio_verify.ProtocolViolation`: malformed records or a
      malformed ClientHello (see the module documentation for the list).
    * :class:`~trio_verify.TruncatedStream`: from :meth:`feed_eof`, the
      client closed before its ClientHello was complete.

    Nothing else is raised for any input, except :exc:`RuntimeError` for
    feeding a reader that has already finished.

    Args:
        max_size: the largest ClientHello accepted: the handshake message
            body, in bytes.  The default is OpenSSL's own limit; a larger value
            gains nothing, since OpenSSL refuses a larger hello when it is
            replayed.  A smaller one refuses hellos OpenSSL would accept, with
            the alert OpenSSL sends for its own limit (``illegal_parameter``).
        peer_address: the client's address, copied into the
            :class:`ClientHello` and into errors.

    The reader keeps every byte it is fed, for replay, but never more than
    ``2 * max_size + 16709`` before the hello is complete: room for a hello
    of ``max_size`` bytes in records of 5 bytes or more, and for a hello of
    any real size (tens of kilobytes) even in records of one byte.  A client
    that fragments more finely than that is refused with
    ``illegal_parameter``, where OpenSSL would keep reading.
    """

    __slots__ = (
        "_buffer",
        "_empty_run",
        "_error",
        "_handshake",
        "_hello",
        "_message_length",
        "_outgoing",
        "_pos",
        "_raw_limit",
        "_records",
        "max_size",
        "peer_address",
    )

    def __init__(
        self, *, max_size: int = MAX_CLIENT_HELLO_SIZE, peer_address: object = None
    ) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be positive, not {max_size}")
        self.max_size = max_size
        self.peer_address = peer_address
        self._raw_limit = 2 * max_size + _RECORD_HEADER + _MAX_RECORD_BODY
        self._buffer = bytearray()
        self._pos = 0  # start of the first record not yet read
        self._records = 0
        self._empty_run = 0
        self._handshake = bytearray()
        self._message_length: int | None = None
        self._outgoing = b""
        self._hello: ClientHello | None = None
        self._error: TLSError | None = None

    @property
    def raw(self) -> bytes:
        """Every byte fed so far (after a hello, the same as its ``raw``)."""
        return bytes(self._buffer)

    @property
    def hello(self) -> ClientHello | None:
        """The ClientHello, once :meth:`feed` has returned it."""
        return self._hello

    def data_to_send(self) -> bytes:
        """The bytes to send the client after an error, then forget them.

        This is the alert record a plain OpenSSL server writes for the same
        input, byte for byte, or ``b""`` where OpenSSL sends nothing (for
        instance in answer to plaintext HTTP).
        """
        data, self._outgoing = self._outgoing, b""
        return data

    def feed(self, data: bytes | bytearray | memoryview) -> ClientHello | None:
        """Add bytes from the client; return the ClientHello once it is complete.

        Returns ``None`` while more bytes are needed.  Once it has returned a
        ClientHello or raised, the reader is finished and must not be fed
        again.

        Raises:
            NotTLS: the bytes are not TLS.
            ProtocolViolation: the records or the ClientHello are malformed,
                or too large.
        """
        self._check_open()
        self._buffer += data
        try:
            hello = self._read_records()
            if hello is None and len(self._buffer) > self._raw_limit:
                raise _Refusal(
                    ProtocolViolation,
                    f"the ClientHello is still incomplete after "
                    f"{len(self._buffer)} bytes in {self._records} records; "
                    f"the reader buffers at most {self._raw_limit}",
                    Alert.ILLEGAL_PARAMETER,
                )
        except _Refusal as refusal:
            self._refuse(refusal)
        if hello is not None:
            self._hello = hello
        return hello

    def feed_eof(self) -> None:
        """Tell the reader the client closed its side of the connection.

        Does nothing once the ClientHello is complete.

        Raises:
            TruncatedStream: the ClientHello was not complete.  OpenSSL answers
                such an EOF with ``decode_error``, so that is
                :meth:`data_to_send`.
        """
        if self._hello is not None:
            return
        self._check_open()
        size = len(self._buffer)
        what = (
            "without sending anything"
            if size == 0
            else f"after {size} bytes, before its ClientHello was complete"
        )
        self._refuse(
            _Refusal(
                TruncatedStream,
                f"peer closed the connection {what}",
                Alert.DECODE_ERROR,
            )
        )

    def _check_open(self) -> None:
        if self._hello is not None:
            raise RuntimeError(
                "the ClientHello is already complete; replay ClientHello.raw "
                "into the TLS connection instead"
            )
        if self._error is not None:
            raise RuntimeError(f"the ClientHello reader already failed: {self._error}")

    def _refuse(self, refusal: _Refusal) -> NoReturn:
        alert = refusal.alert
        if alert is not None:
            version = refusal.record_version
            self._outgoing = bytes(
                (_ALERT, version >> 8, version & 0xFF, 0, 2, 2, alert)
            )
        error = refusal.cls(
            refusal.message,
            phase=Phase.CLIENT_HELLO,
            side="server",
            alert_sent=alert,
            peer_address=self.peer_address,
        )
        self._error = error
        raise error

    # -- the record layer --------------------------------------------------

    def _read_records(self) -> ClientHello | None:
        """Read every complete record buffered; judge each as OpenSSL would."""
        buf = self._buffer
        while len(buf) - self._pos >= _RECORD_HEADER:
            pos = self._pos
            first = self._records == 0
            if first and buf[0] & 0x80 and buf[2] == 1:
                return self._sslv2_record()
            content_type = buf[pos]
            version = (buf[pos + 1] << 8) | buf[pos + 2]
            length = (buf[pos + 3] << 8) | buf[pos + 4]
            if version >> 8 != 3:
                if first:
                    raise _Refusal(NotTLS, _not_tls_message(bytes(buf)), None)
                raise _Refusal(
                    ProtocolViolation,
                    f"record version {version:#06x} in the middle of the "
                    "ClientHello is not TLS",
                    Alert.PROTOCOL_VERSION,
                )
            if length > _MAX_RECORD_BODY:
                raise _record_overflow(length)
            end = pos + _RECORD_HEADER + length
            if len(buf) < end:
                return None
            body = bytes(buf[pos + _RECORD_HEADER : end])
            self._pos = end
            self._records += 1
            if length > _MAX_PLAINTEXT:
                raise _record_overflow(length)
            if length == 0:
                # OpenSSL skips empty records but counts them, across types.
                self._empty_run += 1
                if self._empty_run > _MAX_EMPTY_RECORDS:
                    raise _Refusal(
                        ProtocolViolation,
                        f"more than {_MAX_EMPTY_RECORDS} empty records in a row",
                        Alert.UNEXPECTED_MESSAGE,
                    )
            else:
                self._empty_run = 0
            if content_type == _HANDSHAKE:
                if length:
                    self._handshake += body
                    hello = self._read_message()
                    if hello is not None:
                        return hello
            elif content_type == _CHANGE_CIPHER_SPEC and len(self._handshake) < 4:
                # Until the message header is in, OpenSSL's message reader
                # takes a ChangeCipherSpec itself (and skips an empty one);
                # after that the record layer refuses it like any other type.
                if length:
                    raise _Refusal(
                        ProtocolViolation,
                        "peer sent change_cipher_spec before its ClientHello",
                        Alert.UNEXPECTED_MESSAGE,
                    )
            else:
                name = _RECORD_NAMES.get(content_type, "unknown")
                raise _Refusal(
                    ProtocolViolation,
                    f"peer sent a record of type {name} ({content_type}) before "
                    "its ClientHello was complete",
                    Alert.UNEXPECTED_MESSAGE,
                    record_version=version,
                )
        return None

    def _sslv2_record(self) -> ClientHello | None:
        """A first record in the SSL 2.0 format: a two-byte header."""
        buf = self._buffer
        length = ((buf[0] & 0x7F) << 8) | buf[1]
        if length > _MAX_RECORD_BODY:
            raise _record_overflow(length)
        if length < _SSL2_MIN_RECORD:
            raise _malformed(f"SSL 2.0-format record of {length} bytes is too short")
        if length > self.max_size:
            raise _too_large(length, self.max_size)
        if len(buf) < 2 + length:
            return None
        self._pos = 2 + length
        self._records = 1
        if length > _MAX_PLAINTEXT:
            raise _record_overflow(length)
        return self._build(_parse_sslv2(bytes(buf[2 : 2 + length])))

    # -- the handshake message ---------------------------------------------

    def _read_message(self) -> ClientHello | None:
        hs = self._handshake
        if len(hs) < 4:
            return None
        if self._message_length is None:
            if hs[0] != _HS_CLIENT_HELLO:
                name = _HANDSHAKE_NAMES.get(hs[0], f"type {hs[0]}")
                raise _Refusal(
                    ProtocolViolation,
                    f"expected a ClientHello, got a {name} handshake message",
                    Alert.UNEXPECTED_MESSAGE,
                )
            length = int.from_bytes(hs[1:4], "big")
            if length > self.max_size:
                raise _too_large(length, self.max_size)
            self._message_length = length
        end = 4 + self._message_length
        if len(hs) < end:
            return None
        return self._build(_parse_body(bytes(hs[4:end])))

    def _build(self, parsed: _Parsed) -> ClientHello:
        return parsed.hello(bytes(self._buffer), self.peer_address)


def _record_overflow(length: int) -> _Refusal:
    return _Refusal(
        ProtocolViolation,
        f"record of {length} bytes is longer than TLS allows ({_MAX_PLAINTEXT})",
        Alert.RECORD_OVERFLOW,
    )


def _too_large(length: int, limit: int) -> _Refusal:
    return _Refusal(
        ProtocolViolation,
        f"ClientHello of {length} bytes is larger than the limit of {limit}",
        Alert.ILLEGAL_PARAMETER,
    )


def _begins(data: bytes, marker: bytes) -> bool:
    """Whether ``data`` starts with ``marker``, or is a start of it."""
    return data.startswith(marker) or marker.startswith(data)


def _not_tls_message(data: bytes) -> str:
    # Judged on the first record header (5 bytes) at least, as OpenSSL does;
    # more bytes may be in, so a marker longer than 5 bytes may be complete.
    if _begins(data, b"PRI * HTTP/2"):
        return "peer sent the HTTP/2 cleartext preface (PRI * HTTP/2.0), not TLS"
    if _begins(data, b"CONNECT "):
        return "peer sent a plaintext HTTP CONNECT (proxy) request, not TLS"
    for method in HTTP_METHODS:
        if _begins(data, method):
            verb = method.decode().strip()
            return f"peer sent a plaintext HTTP {verb} request, not TLS"
    return (
        f"peer does not speak TLS: its first bytes {data[:8].hex(' ')} "
        "are not a TLS record"
    )


# -- the ClientHello body ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Parsed:
    legacy_version: int
    cipher_suites: tuple[int, ...]
    extensions: tuple[tuple[int, bytes], ...] = ()
    sslv2_format: bool = False

    def hello(self, raw: bytes, peer_address: object) -> ClientHello:
        found: dict[int, bytes] = {}
        for ext_type, data in self.extensions:
            # A repeated extension OpenSSL knows has been refused already; of
            # a repeated unknown one, which nothing reads, the first counts.
            found.setdefault(ext_type, data)
        return ClientHello(
            legacy_version=self.legacy_version,
            cipher_suites=self.cipher_suites,
            extension_types=tuple(ext_type for ext_type, _ in self.extensions),
            server_name=_server_name(found.get(_EXT_SERVER_NAME)),
            alpn_protocols=_alpn(found.get(_EXT_ALPN)),
            supported_versions=_supported_versions(found.get(_EXT_SUPPORTED_VERSIONS)),
            signature_algorithms=_u16_list(found.get(_EXT_SIGNATURE_ALGORITHMS)),
            supported_groups=_u16_list(found.get(_EXT_SUPPORTED_GROUPS)),
            sslv2_format=self.sslv2_format,
            raw=raw,
            peer_address=peer_address,
        )


def _parse_body(body: bytes) -> _Parsed:
    """Parse a ClientHello message body as OpenSSL's tls_process_client_hello.

    Raises the refusal OpenSSL makes before any of its configuration matters.
    """
    n = len(body)
    if n < 2:
        raise _malformed("too short for a legacy_version")
    legacy_version = _u16(body, 0)
    pos = 2 + 32
    if n < pos + 1:
        raise _malformed("truncated before the session id")
    session_id_length = body[pos]
    pos += 1 + session_id_length
    if pos > n:
        raise _malformed("the session id runs past the end of the message")
    if session_id_length > _MAX_SESSION_ID:
        raise _malformed(f"session id of {session_id_length} bytes (at most 32)")
    if pos + 2 > n or pos + 2 + _u16(body, pos) > n:
        raise _malformed("the cipher suites run past the end of the message")
    suites = body[pos + 2 : pos + 2 + _u16(body, pos)]
    pos += 2 + len(suites)
    if pos + 1 > n or pos + 1 + body[pos] > n:
        raise _malformed("the compression methods run past the end of the message")
    pos += 1 + body[pos]
    cipher_suites = _u16s(suites, 0, len(suites) // 2)
    if pos == n:
        return _Parsed(legacy_version, cipher_suites)
    if pos + 2 > n or pos + 2 + _u16(body, pos) != n:
        raise _malformed("the extensions length does not match the message length")
    return _Parsed(legacy_version, cipher_suites, _collect_extensions(body, pos + 2))


def _collect_extensions(body: bytes, pos: int) -> tuple[tuple[int, bytes], ...]:
    """Split the extensions block as OpenSSL's tls_collect_extensions does."""
    end = len(body)
    seen: set[int] = set()
    extensions: list[tuple[int, bytes]] = []
    while pos < end:
        if end - pos < 4 or pos + 4 + _u16(body, pos + 2) > end:
            raise _malformed("an extension runs past the end of the message")
        ext_type = _u16(body, pos)
        data = body[pos + 4 : pos + 4 + _u16(body, pos + 2)]
        pos += 4 + len(data)
        if ext_type == _EXT_USE_SRTP:
            raise _malformed(
                "the use_srtp extension (14) belongs to DTLS only",
                Alert.ILLEGAL_PARAMETER,
            )
        if ext_type in seen:
            raise _malformed(
                f"extension {_extension_name(ext_type)} appears twice",
                Alert.ILLEGAL_PARAMETER,
            )
        if ext_type in _OPENSSL_EXTENSIONS:
            seen.add(ext_type)
        if ext_type == _EXT_PRE_SHARED_KEY and pos != end:
            raise _malformed(
                "the pre_shared_key extension is not the last one",
                Alert.ILLEGAL_PARAMETER,
            )
        extensions.append((ext_type, data))
    return tuple(extensions)


def _parse_sslv2(record: bytes) -> _Parsed:
    """Parse an SSL 2.0-format CLIENT-HELLO (at least 9 bytes, type byte 1)."""
    version = _u16(record, 1)
    suites_length = _u16(record, 3)
    session_id_length = _u16(record, 5)
    challenge_length = _u16(record, 7)
    if session_id_length > _MAX_SESSION_ID:
        raise _malformed(
            f"session id of {session_id_length} bytes (at most 32)",
            Alert.ILLEGAL_PARAMETER,
        )
    if 9 + suites_length + session_id_length + challenge_length != len(record):
        raise _malformed("the SSL 2.0-format lengths do not match the record length")
    if version == 0x0002 or version >> 8 != 3:
        raise _Refusal(
            NotTLS,
            f"peer sent an SSL 2.0 ClientHello (version {version:#06x}); "
            "SSL 2.0 is not supported",
            Alert.PROTOCOL_VERSION,
        )
    # SSL 2.0 cipher specs are 3 bytes; a TLS suite is one whose first byte
    # is zero, as OpenSSL reads them.  Pure SSL 2.0 specs are dropped.
    specs = record[9 : 9 + suites_length]
    suites = tuple(
        _u16(specs, i + 1) for i in range(0, len(specs) - 2, 3) if specs[i] == 0
    )
    return _Parsed(version, suites, sslv2_format=True)


# -- the extensions the ClientHello reports ---------------------------------
#
# Each decoder checks the framing exactly as OpenSSL's parser for the same
# extension does and returns the "absent" value when it does not hold.  For
# the server name that precision matters: OpenSSL must never accept a name the
# reader did not see.


def _server_name(data: bytes | None) -> str | None:
    # tls_parse_ctos_server_name: a non-empty list holding exactly one entry,
    # of type host_name, whose length covers the rest of the extension.
    if data is None or len(data) < 5 or _u16(data, 0) != len(data) - 2:
        return None
    if data[2] != 0 or _u16(data, 3) != len(data) - 5:
        return None
    return _decode(data[5:])


def _alpn(data: bytes | None) -> tuple[str, ...]:
    # tls_parse_ctos_alpn: a list of at least 2 bytes of non-empty names.
    if data is None or len(data) < 4 or _u16(data, 0) != len(data) - 2:
        return ()
    names: list[str] = []
    pos = 2
    while pos < len(data):
        length = data[pos]
        if length == 0 or pos + 1 + length > len(data):
            return ()
        names.append(_decode(data[pos + 1 : pos + 1 + length]))
        pos += 1 + length
    return tuple(names)


def _supported_versions(data: bytes | None) -> tuple[int, ...]:
    # ssl_choose_server_version: a 1-byte length covering the rest, then
    # 2-byte versions with nothing left over.
    if data is None or len(data) < 1 or data[0] != len(data) - 1 or data[0] % 2:
        return ()
    return _u16s(data, 1, data[0] // 2)


def _u16_list(data: bytes | None) -> tuple[int, ...]:
    # signature_algorithms and supported_groups: a non-empty list of 16-bit
    # values with a 2-byte length covering the rest.
    if data is None or len(data) < 4 or _u16(data, 0) != len(data) - 2 or len(data) % 2:
        return ()
    return _u16s(data, 2, (len(data) - 2) // 2)


def parse_client_hello(
    message: bytes, *, peer_address: object = None
) -> ClientHello | None:
    """Parse a complete ClientHello handshake message; ``None`` if malformed.

    ``message`` is the handshake message *including* its 4-byte header (type
    and length), as it appears in the handshake records; bytes after it are
    ignored.  This never raises: it is for watching a ClientHello that OpenSSL
    judges itself.  :attr:`ClientHello.raw` is the message.
    """
    if len(message) < 4 or message[0] != _HS_CLIENT_HELLO:
        return None
    end = 4 + int.from_bytes(message[1:4], "big")
    if len(message) < end:
        return None
    try:
        parsed = _parse_body(bytes(message[4:end]))
    except _Refusal:
        return None
    return parsed.hello(bytes(message[:end]), peer_address)
