"""A transport wrapper that watches the plaintext TLS records going by.

``probe`` owns its TCP connection, so it can look at what crosses it before
and after trio_verify does: when the ClientHello left, when the ServerHello
came and what it said, the alerts, and what TLS sends in the clear (in TLS
1.2 the server's certificates and its CertificateRequest; in TLS 1.3 only
the ServerHello, after which everything looks like application data).
Nothing here judges anything: OpenSSL and trio_verify do that.
"""

from __future__ import annotations

import contextlib
import ssl
from dataclasses import dataclass, field

import trio

from .. import CertificateInfo

__all__ = ["Direction", "ServerHello", "WireTap", "cipher_name"]

_CHANGE_CIPHER_SPEC, _ALERT, _HANDSHAKE, _APPLICATION_DATA = 20, 21, 22, 23
_CLIENT_HELLO, _SERVER_HELLO, _CERTIFICATE, _CERTIFICATE_REQUEST = 1, 2, 11, 13
_SERVER_HELLO_DONE = 14
_EXT_ALPN, _EXT_SUPPORTED_VERSIONS = 16, 43
_HELLO_RETRY_RANDOM = bytes.fromhex(
    "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c"
)
_VERSIONS = {0x0301: "TLSv1", 0x0302: "TLSv1.1", 0x0303: "TLSv1.2", 0x0304: "TLSv1.3"}
_LIMIT = 1 << 20  # stop watching a direction after this much unparsed data


def cipher_name(code: int) -> str:
    """OpenSSL's name for a cipher suite code point, else its hex value."""
    try:
        ciphers = ssl.create_default_context().get_ciphers()
    except ssl.SSLError:  # pragma: no cover - an odd OpenSSL build
        ciphers = []
    for cipher in ciphers:
        if int(cipher["id"]) & 0xFFFF == code:
            return str(cipher["name"])
    return f"0x{code:04x}"


@dataclass
class ServerHello:
    """What a ServerHello (or a HelloRetryRequest) said."""

    version: str | None
    cipher: int
    alpn: str | None
    hello_retry: bool


@dataclass
class Direction:
    """The records seen in one direction."""

    size: int = 0
    first_at: float | None = None
    change_cipher_spec: bool = False
    encrypted_records: int = 0
    alerts: list[tuple[int, int]] = field(default_factory=list)
    messages: list[int] = field(default_factory=list)
    server_hello: ServerHello | None = None
    server_hello_at: float | None = None
    certificates: tuple[CertificateInfo, ...] = ()
    certificate_count: int | None = None
    _records: bytearray = field(default_factory=bytearray, repr=False)
    _handshake: bytearray = field(default_factory=bytearray, repr=False)
    _watching: bool = True

    def feed(self, data: bytes | bytearray | memoryview, version: str | None) -> None:
        if not data:
            return
        if self.first_at is None:
            self.first_at = trio.current_time()
        self.size += len(data)
        if not self._watching:
            return
        records = self._records
        records += data
        pos = 0
        while len(records) - pos >= 5:
            kind = records[pos]
            length = int.from_bytes(records[pos + 3 : pos + 5], "big")
            if len(records) - pos - 5 < length:
                break
            body = bytes(records[pos + 5 : pos + 5 + length])
            pos += 5 + length
            self._record(kind, body, version)
        del records[:pos]
        if len(records) + len(self._handshake) > _LIMIT:
            self._watching = False
            self._records.clear()
            self._handshake.clear()

    def _record(self, kind: int, body: bytes, version: str | None) -> None:
        if kind == _ALERT and len(body) == 2:
            self.alerts.append((body[0], body[1]))
        elif kind == _CHANGE_CIPHER_SPEC:
            self.change_cipher_spec = True
        elif kind == _APPLICATION_DATA:
            self.encrypted_records += 1
        elif kind == _HANDSHAKE and not (
            self.change_cipher_spec and (self.version or version) != "TLSv1.3"
        ):
            # In TLS 1.2 a handshake record after ChangeCipherSpec is the
            # encrypted Finished; in TLS 1.3 the compatibility CCS means
            # nothing and encrypted records look like application data.
            self._handshake += body
            self._messages()

    @property
    def version(self) -> str | None:
        hello = self.server_hello
        return None if hello is None else hello.version

    def _messages(self) -> None:
        buf = self._handshake
        pos = 0
        while len(buf) - pos >= 4:
            kind = buf[pos]
            length = int.from_bytes(buf[pos + 1 : pos + 4], "big")
            if len(buf) - pos - 4 < length:
                break
            body = bytes(buf[pos + 4 : pos + 4 + length])
            pos += 4 + length
            self.messages.append(kind)
            # OpenSSL judges malformed messages; this only watches them.
            with contextlib.suppress(IndexError, ValueError):
                self._message(kind, body)
        del buf[:pos]

    def _message(self, kind: int, body: bytes) -> None:
        if kind == _SERVER_HELLO:
            self.server_hello = _parse_server_hello(body)
            self.server_hello_at = trio.current_time()
        elif kind == _CERTIFICATE and self.version != "TLSv1.3":
            certificates = []
            end = 3 + int.from_bytes(body[0:3], "big")
            pos = 3
            while pos + 3 <= end:
                length = int.from_bytes(body[pos : pos + 3], "big")
                certificates.append(
                    CertificateInfo.from_der(body[pos + 3 : pos + 3 + length])
                )
                pos += 3 + length
            self.certificates = tuple(certificates)
            self.certificate_count = len(certificates)

    @property
    def certificate_request(self) -> bool:
        return _CERTIFICATE_REQUEST in self.messages

    @property
    def server_hello_done(self) -> bool:
        return _SERVER_HELLO_DONE in self.messages

    @property
    def client_hello(self) -> bool:
        return _CLIENT_HELLO in self.messages


def _parse_server_hello(body: bytes) -> ServerHello:
    legacy = int.from_bytes(body[0:2], "big")
    random = body[2:34]
    pos = 34
    pos += 1 + body[pos]  # session id
    cipher = int.from_bytes(body[pos : pos + 2], "big")
    pos += 3  # cipher suite, compression method
    extensions: dict[int, bytes] = {}
    if pos + 2 <= len(body):
        end = pos + 2 + int.from_bytes(body[pos : pos + 2], "big")
        pos += 2
        while pos + 4 <= end:
            ext = int.from_bytes(body[pos : pos + 2], "big")
            length = int.from_bytes(body[pos + 2 : pos + 4], "big")
            extensions[ext] = body[pos + 4 : pos + 4 + length]
            pos += 4 + length
    supported = extensions.get(_EXT_SUPPORTED_VERSIONS)
    if supported is not None and len(supported) == 2:
        legacy = int.from_bytes(supported, "big")
    alpn = None
    data = extensions.get(_EXT_ALPN)
    if data is not None and len(data) >= 3:
        alpn = data[3 : 3 + data[2]].decode("ascii", "replace")
    return ServerHello(
        version=_VERSIONS.get(legacy, f"0x{legacy:04x}"),
        cipher=cipher,
        alpn=alpn,
        hello_retry=random == _HELLO_RETRY_RANDOM,
    )


class WireTap(trio.abc.HalfCloseableStream):
    """A :class:`trio.SocketStream` that records the TLS records both ways.

    Attributes:
        outgoing: what we sent (the ClientHello, our certificate, ...).
        incoming: what the server sent.
    """

    def __init__(self, transport: trio.SocketStream) -> None:
        self.transport = transport
        self.outgoing = Direction()
        self.incoming = Direction()

    @property
    def socket(self) -> trio.socket.SocketType:
        """The socket, for code that asks a transport for its peer address."""
        return self.transport.socket

    @property
    def version(self) -> str | None:
        """The protocol version the ServerHello chose, once seen."""
        return self.incoming.version

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.outgoing.feed(data, self.version)
        await self.transport.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self.transport.receive_some(max_bytes)
        self.incoming.feed(data, self.version)
        return data

    async def send_eof(self) -> None:
        await self.transport.send_eof()

    async def aclose(self) -> None:
        await self.transport.aclose()
