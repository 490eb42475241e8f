"""The sans-IO TLS connection: an :class:`ssl.SSLObject` between two memory BIOs.

Theory of operation
-------------------

OpenSSL's memory-BIO mode turns TLS into a pure function of bytes: the engine
feeds whatever the transport delivered into the *incoming* BIO
(:meth:`TLSEngine.receive_data`), calls an ``SSLObject`` method, and whatever
OpenSSL wants to put on the wire accumulates in the *outgoing* BIO
(:meth:`TLSEngine.data_to_send`).  A method that needs more input raises
``SSLWantReadError``; the engine turns that into a plain "not yet" return
value, and the caller (the stream) reads from the transport and tries again.
The engine imports neither trio nor sockets, so every path through it can be
driven by a test with nothing but byte strings.

Two things make it more than a thin wrapper.

*It watches the wire during the handshake.*  Until the keys are in place, TLS
records travel in plaintext, and since the engine sees every byte in both
directions it reads them: the ServerHello (the negotiated version, long before
``SSLObject.version()`` knows it), a TLS 1.2 CertificateRequest and
Certificate (whether a client certificate was asked for and sent), and
plaintext alerts (the exact alert code, which ``ssl.SSLError`` does not carry).
In TLS 1.3 those messages are encrypted, but OpenSSL writes every handshake
message as its own record, so the number of encrypted records in the client's
second flight tells whether the server asked for a certificate (2 or more:
Certificate, [CertificateVerify,] Finished) and whether one was sent (3).
Watching stops when the handshake completes, so steady-state traffic pays
nothing for it.

*It never loses the alert.*  When an ``SSLObject`` call fails, OpenSSL has
usually written a fatal alert into the outgoing BIO.  The engine captures those
bytes before it raises, classifies the failure into a :class:`TLSError`
subclass (see :mod:`trio_verify._errors`), and keeps the bytes for
:meth:`data_to_send`.  The caller's duty is simple: send ``data_to_send()``
before propagating any :class:`TLSError` from the engine.  The stream does
that, half-closes, and lingers briefly so that the peer reads the alert
instead of a TCP reset.

After the handshake the engine runs the policy's own checks (SPKI pins on a
client, ``authorize`` on a server): failures there are
``Phase.CONNECTION_POLICY`` errors.  OpenSSL offers no way to send an alert
after its handshake has finished, so the peer of such a failure sees the
connection close without one; this is documented on the error classes.
"""

from __future__ import annotations

import contextlib
import ssl
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Final

from ._certs import (
    CertificateInfo,
    PeerInfo,
    chain_from_sslobject,
    describe_names,
    describe_validity,
)
from ._errors import (
    Alert,
    FailureContext,
    NegotiationFailed,
    Phase,
    PinMismatch,
    PolicyError,
    PolicyRejected,
    Side,
    SurfacedIn,
    TLSError,
    classify,
    phase_in_progress,
)

__all__ = ["TLSEngine"]

# TLS record content types and handshake message types (RFC 8446 §5, §4).
_CHANGE_CIPHER_SPEC: Final = 20
_ALERT: Final = 21
_HANDSHAKE: Final = 22
_APPLICATION_DATA: Final = 23
_HS_SERVER_HELLO: Final = 2
_HS_CERTIFICATE: Final = 11
_HS_CERTIFICATE_REQUEST: Final = 13
_EXT_SUPPORTED_VERSIONS: Final = 43
_FATAL: Final = 2

# Stop watching a direction that sends more plaintext handshake than any real
# handshake does: the watcher is an observer and must never cost memory.
_WATCH_LIMIT: Final = 1 << 18
# The most plaintext encrypted at once (one record), and the most received
# bytes given to OpenSSL at once: see TLSEngine.receive_data and write.
_WRITE_AT_ONCE: Final = 1 << 14
_FEED_AT_ONCE: Final = 1 << 15
_PIECE: Final = 1 << 14
_RECORD_MAX: Final = 5 + (1 << 14) + 256  # the largest record on the wire
_PREFIX_LEN: Final = 16
_VERSION_NAMES: Final = {
    0x0301: "TLSv1",
    0x0302: "TLSv1.1",
    0x0303: "TLSv1.2",
    0x0304: "TLSv1.3",
}


class _WireWatcher:
    """Reads the plaintext TLS records travelling in one direction."""

    __slots__ = (
        "_handshake",
        "_records",
        "active",
        "alert",
        "certificate_count",
        "certificate_request",
        "change_cipher_spec",
        "encrypted_records",
        "version",
    )

    def __init__(self) -> None:
        self._records = bytearray()
        self._handshake = bytearray()
        self.active = True
        self.alert: Alert | None = None
        self.change_cipher_spec = False
        self.encrypted_records = 0
        self.version: str | None = None
        self.certificate_request = False
        self.certificate_count: int | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if not self.active or not data:
            return
        records = self._records
        records += data
        pos = 0
        end = len(records)
        while end - pos >= 5:
            content_type = records[pos]
            length = (records[pos + 3] << 8) | records[pos + 4]
            if end - pos - 5 < length:
                break
            start = pos + 5
            pos = start + length
            if content_type == _APPLICATION_DATA:
                # Encrypted: only counted, so not copied.
                self.encrypted_records += 1
            else:
                self._record(content_type, bytes(records[start:pos]))
        del records[:pos]
        if len(records) + len(self._handshake) > _WATCH_LIMIT:
            self.stop()

    def stop(self) -> None:
        self.active = False
        self._records = bytearray()
        self._handshake = bytearray()

    def _record(self, content_type: int, body: bytes) -> None:
        if content_type == _ALERT and len(body) == 2:
            # Two bytes is a plaintext alert; an encrypted one is longer.
            if self.alert is None or body[0] == _FATAL:
                with contextlib.suppress(ValueError):
                    self.alert = Alert(body[1])
        elif content_type == _CHANGE_CIPHER_SPEC:
            self.change_cipher_spec = True
        elif content_type == _APPLICATION_DATA:
            self.encrypted_records += 1
        elif content_type == _HANDSHAKE and not (
            self.change_cipher_spec and self.version != "TLSv1.3"
        ):
            # In TLS 1.2 a handshake record after ChangeCipherSpec is the
            # encrypted Finished; in TLS 1.3 encrypted records look like
            # application data and the compatibility CCS means nothing.
            self._handshake += body
            self._messages()

    def _messages(self) -> None:
        buf = self._handshake
        pos = 0
        while len(buf) - pos >= 4:
            msg_type = buf[pos]
            length = int.from_bytes(buf[pos + 1 : pos + 4], "big")
            if len(buf) - pos - 4 < length:
                break
            body = bytes(buf[pos + 4 : pos + 4 + length])
            pos += 4 + length
            # OpenSSL judges malformed messages; the watcher only watches.
            with contextlib.suppress(IndexError, ValueError):
                self._message(msg_type, body)
        del buf[:pos]

    def _message(self, msg_type: int, body: bytes) -> None:
        if msg_type == _HS_SERVER_HELLO:
            self.version = _server_hello_version(body)
        elif msg_type == _HS_CERTIFICATE_REQUEST:
            self.certificate_request = True
        elif msg_type == _HS_CERTIFICATE and self.version != "TLSv1.3":
            # TLS 1.2: a 3-byte length of the certificate list comes first.
            self.certificate_count = int.from_bytes(body[0:3], "big") and 1


def _extensions(body: bytes, pos: int) -> dict[int, bytes]:
    """Parse a TLS extensions block starting at ``pos``."""
    found: dict[int, bytes] = {}
    if pos + 2 > len(body):
        return found
    end = min(len(body), pos + 2 + int.from_bytes(body[pos : pos + 2], "big"))
    pos += 2
    while pos + 4 <= end:
        ext_type = int.from_bytes(body[pos : pos + 2], "big")
        ext_len = int.from_bytes(body[pos + 2 : pos + 4], "big")
        found[ext_type] = body[pos + 4 : pos + 4 + ext_len]
        pos += 4 + ext_len
    return found


def _server_hello_version(body: bytes) -> str | None:
    legacy = int.from_bytes(body[0:2], "big")
    pos = 2 + 32
    pos += 1 + body[pos]  # session id
    pos += 2 + 1  # cipher suite, compression method
    supported = _extensions(body, pos).get(_EXT_SUPPORTED_VERSIONS)
    if supported is not None and len(supported) == 2:
        legacy = int.from_bytes(supported, "big")
    return _VERSION_NAMES.get(legacy)


def _verify_details(
    code: int, chain: tuple[CertificateInfo, ...], server_name: str | None
) -> str | None:
    """Facts from the peer's chain that explain a verification failure."""
    if not chain:
        return None
    leaf = chain[0]
    if code in (9, 10):
        for cert in chain:
            facts = describe_validity(cert)
            if facts is not None:
                who = "" if cert is leaf else f" (chain certificate {cert.subject})"
                return facts + who
        return None
    if code in (62, 64) and server_name:
        return describe_names(leaf, server_name)
    if code == 18:
        return f"the certificate {leaf.subject} is self-signed and not trusted"
    if code in (2, 19, 20, 21):
        top = chain[-1]
        return f"the chain ends at {top.issuer}, which is not a trusted CA"
    if code == 26:
        usages = ", ".join(leaf.extended_key_usages) or "none"
        return f"the certificate's extended key usages are: {usages}"
    return f"certificate {leaf.subject}, issued by {leaf.issuer}"


class TLSEngine:
    """One TLS connection, driven with bytes.  Not thread-safe; no I/O.

    Args:
        context: the :class:`ssl.SSLContext` to wrap with.
        server_side: which end we are.
        server_hostname: the name to send as SNI and check the certificate for
            (client only).
        session: an :class:`ssl.SSLSession` to resume (client only).
        spki_pins: SHA-256 digests of SubjectPublicKeyInfo; when not empty, a
            certificate in the peer's verified chain must match one.
        pinned: DER of certificates the policy trusts as they are (pinned
            leaves).  A chain that ends at one of them must *be* one of them:
            a pinned certificate that happens to be a CA must not vouch for
            others.
        authorize: called with the :class:`PeerInfo` after the handshake; a
            false result refuses the connection.
        ragged_eof_ok: treat an EOF without close_notify as a clean end of
            stream (``https_compatible``).
    """

    __slots__ = (
        "_authorize",
        "_backlog",
        "_backlog_eof",
        "_backlog_pos",
        "_held",
        "_incoming",
        "_obj",
        "_outgoing",
        "_parts",
        "_peer",
        "_pending_out",
        "_pinned",
        "_prefix",
        "_ragged_eof_ok",
        "_raw",
        "_read_end",
        "_spki_pins",
        "_watch_in",
        "_watch_out",
        "app_data_received",
        "certificate_requested",
        "certificate_sent",
        "error",
        "handshake_complete",
        "received_anything",
        "server_name",
        "server_side",
        "side",
        "tls_version",
    )

    def __init__(
        self,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        session: ssl.SSLSession | None = None,
        spki_pins: frozenset[bytes] = frozenset(),
        pinned: frozenset[bytes] = frozenset(),
        authorize: Callable[[PeerInfo], bool] | None = None,
        ragged_eof_ok: bool = False,
    ) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        if not server_side and context.check_hostname and not server_hostname:
            # ssl enforces this in wrap_socket but not in wrap_bio: without a
            # name, only the chain would be checked.
            raise PolicyError(
                "this client checks the server's name, so it needs "
                "server_hostname=: pass the name you are connecting to"
            )
        self._obj = context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
            session=session,
        )
        # The C-level object behind the SSLObject: the same methods without
        # the Python wrapper's extra call on every read and write.
        self._raw: Any = getattr(self._obj, "_sslobj", self._obj)
        self.server_side = server_side
        self.server_name: str | None = server_hostname
        """The SNI name: ours on a client; on a server, the client's, once the
        caller (who read the ClientHello) sets it."""
        self.side: Side = "server" if server_side else "client"
        self._spki_pins = spki_pins
        self._pinned = pinned
        self._authorize = authorize
        self._ragged_eof_ok = ragged_eof_ok
        self._read_end: ssl.SSLError | None = None
        self._watch_in: _WireWatcher | None = _WireWatcher()
        self._watch_out: _WireWatcher | None = _WireWatcher()
        self._pending_out = b""
        # Records encrypted a record at a time by write(), in order, ahead
        # of _pending_out and of the outgoing BIO.
        self._parts: list[bytes] = []
        # Received bytes not yet given to OpenSSL (see receive_data).
        self._backlog = b""
        self._backlog_pos = 0
        self._backlog_eof = False
        # Bytes at the head of the outgoing BIO that must not go out alone
        # (a TLS 1.3 server's session tickets, see _finish_handshake).
        self._held = 0
        self._prefix = b""
        self._peer: PeerInfo | None = None
        self.handshake_complete = False
        self.received_anything = False
        self.app_data_received = False
        self.error: TLSError | None = None
        self.tls_version: str | None = None
        self.certificate_requested: bool | None = None
        if server_side and (
            context.verify_mode == ssl.CERT_NONE or context.post_handshake_auth
        ):
            # Known from our own configuration: the handshake asks for none
            # (a deferred request happens after it, in TLS 1.3).
            self.certificate_requested = False
        self.certificate_sent: bool | None = None

    # -- the transport side ---------------------------------------------------

    @property
    def ssl_object(self) -> ssl.SSLObject:
        """The wrapped :class:`ssl.SSLObject`."""
        return self._obj

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes that arrived from the transport.

        After the handshake a delivery of more than 32 KiB is handed to
        OpenSSL in 16 KiB pieces as :meth:`read` consumes it, always enough
        for one whole record (so that no read stops inside one, which would
        cost a failed read).  A memory BIO never gives back the memory it has
        grown to, so writing 64 KiB into it at once would leave every
        connection that ever received that much holding about 85 KiB for the
        rest of its life; fed in pieces, it stays under 44 KiB.
        """
        if self._watch_in is not None:
            if not self.received_anything:
                self._prefix = bytes(data[:_PREFIX_LEN])
            self._watch_in.feed(data)
        self.received_anything = True
        if self._backlog:
            self._backlog = self._backlog[self._backlog_pos :] + bytes(data)
            self._backlog_pos = 0
        elif len(data) > _FEED_AT_ONCE and self.handshake_complete:
            self._backlog = bytes(data)
            self._backlog_pos = 0
        else:
            self._incoming.write(data)

    def receive_eof(self) -> None:
        """Tell the engine that the transport reached end of file."""
        if self._backlog:
            self._backlog_eof = True
        else:
            self._incoming.write_eof()

    def _feed_piece(self) -> None:
        """Give OpenSSL the next piece of the backlog."""
        backlog, pos = self._backlog, self._backlog_pos
        end = pos + _PIECE
        if end >= len(backlog):
            with memoryview(backlog) as view:
                self._incoming.write(view[pos:])
            self._backlog = b""
            self._backlog_pos = 0
            if self._backlog_eof:
                self._backlog_eof = False
                self._incoming.write_eof()
        else:
            with memoryview(backlog) as view:
                self._incoming.write(view[pos:end])
            self._backlog_pos = end

    def _feed_backlog(self) -> None:
        """Give OpenSSL everything received (before anything but reading)."""
        while self._backlog:
            self._feed_piece()

    def data_to_send(self) -> bytes:
        """Take the bytes waiting to go to the transport (alerts included).

        Session tickets held back after a TLS 1.3 server handshake travel
        with the next bytes there are to send, never alone.
        """
        if self._parts:
            self._parts.append(self._pending_out)
            self._parts.append(self._outgoing.read())
            data = b"".join(self._parts)
            self._parts = []
            self._pending_out = b""
        elif self._pending_out:
            data = self._pending_out
            if self._outgoing.pending:
                data += self._outgoing.read()
            self._pending_out = b""
        else:
            data = self._outgoing.read()
            if self._watch_out is not None:
                self._watch_out.feed(data)
        self._held = 0  # whatever was held went with it
        return data

    @property
    def has_buffered_input(self) -> bool:
        """Whether received bytes wait to be decrypted."""
        return bool(self._backlog) or self._incoming.pending > 0

    @property
    def has_data_to_send(self) -> bool:
        """Whether :meth:`data_to_send` would return bytes."""
        return (
            bool(self._parts)
            or bool(self._pending_out)
            or self._outgoing.pending > self._held
        )

    @property
    def sends_in_parts(self) -> bool:
        """Whether a large write left records to send as separate parts."""
        return bool(self._parts)

    def data_to_send_parts(self) -> list[bytes]:
        """:meth:`data_to_send`, as pieces to send in order in one go."""
        parts = self._parts
        if not parts:
            return [self.data_to_send()]
        self._parts = []
        if self._pending_out:
            parts.append(self._pending_out)
            self._pending_out = b""
        if self._outgoing.pending:
            parts.append(self._outgoing.read())
        self._held = 0
        return parts

    def unused_data(self) -> bytes:
        """Raw bytes that arrived after the peer's close_notify."""
        self._feed_backlog()
        return self._incoming.read()

    # -- the protocol side ----------------------------------------------------

    def do_handshake(self) -> bool:
        """Advance the handshake; ``True`` once it is complete.

        Raises:
            TLSError: the handshake failed; send :meth:`data_to_send` first.
        """
        if self.handshake_complete:
            return True
        try:
            self._obj.do_handshake()
        except ssl.SSLWantReadError:
            return False
        except ssl.SSLError as exc:
            raise self._fail(exc, "handshake") from exc
        self._finish_handshake()
        return True

    def read(self, max_bytes: int, surfaced_in: SurfacedIn = "receive") -> bytes | None:
        """Decrypt up to ``max_bytes`` of application data.

        Drains every whole record already buffered, not just one.  Returns
        ``None`` when more transport data is needed and ``b""`` at a clean end
        of stream.

        Raises:
            TLSError: the connection failed; send :meth:`data_to_send` first.
        """
        raw = self._raw
        incoming = self._incoming
        if self._read_end is not None:
            return self._end_of_reading(surfaced_in)
        if (
            incoming.pending == 0
            and raw.pending() == 0
            and not incoming.eof
            and not self._backlog
        ):
            return None
        chunks: list[bytes] = []
        total = 0
        while total < max_bytes:
            # Keep a whole record in the BIO while the backlog lasts, so that
            # reading never stops in the middle of one (a failed read costs
            # more than the piece).
            while self._backlog and incoming.pending < _RECORD_MAX:
                self._feed_piece()
            try:
                chunk = raw.read(max_bytes - total)
            except ssl.SSLWantReadError:
                if self._backlog:
                    self._feed_piece()  # the rest of a record
                    continue
                break
            except ssl.SSLError as exc:
                # The end of the data (a close_notify, an EOF, an error)
                # may come in the same delivery as the last of it: hand over
                # what was decrypted now and the end at the next call.
                self._read_end = exc
                break
            if not chunk:
                # CPython returns b"" (not SSLZeroReturnError) once it has
                # read the peer's close_notify.
                self._read_end = ssl.SSLZeroReturnError()
                break
            chunks.append(chunk)
            total += len(chunk)
            if incoming.pending == 0 and raw.pending() == 0 and not self._backlog:
                break
        if not chunks:
            return None if self._read_end is None else self._end_of_reading(surfaced_in)
        self.app_data_received = True
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _end_of_reading(self, surfaced_in: SurfacedIn) -> bytes:
        """``b""`` for a clean end of stream, else raise the stored failure."""
        end = self._read_end
        assert end is not None
        if isinstance(end, ssl.SSLZeroReturnError):
            return b""
        if isinstance(end, ssl.SSLEOFError) and self._ragged_eof_ok:
            self._discard_output()
            return b""
        if self.error is None:
            self._fail(end, surfaced_in)
        assert self.error is not None
        raise self.error from end

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Encrypt ``data``; returns how many bytes were taken.

        Fewer than all (even 0) only if the peer must be heard from first:
        with memory BIOs a write waits for input only during a TLS 1.2
        renegotiation.  The caller then feeds transport data and calls again
        with the rest.

        More than one record's worth is encrypted a record at a time, each
        taken out of the outgoing BIO at once, so that the BIO never grows
        past one record (see :meth:`receive_data`).

        Raises:
            TLSError: the connection failed; send :meth:`data_to_send` first.
        """
        raw = self._raw
        if isinstance(data, memoryview) and data.format != "B":
            data = data.cast("B")  # count bytes, not items
        size = len(data)
        if size <= _WRITE_AT_ONCE or self._watch_out is not None:
            try:
                raw.write(data)
            except ssl.SSLWantReadError:
                return 0
            except ssl.SSLError as exc:
                raise self._fail(exc, "send") from exc
            return size
        outgoing = self._outgoing
        parts = self._parts
        if self._pending_out:
            parts.append(self._pending_out)
            self._pending_out = b""
        if outgoing.pending:
            parts.append(outgoing.read())
        self._held = 0  # the held tickets are in parts now, ahead of the data
        done = 0
        try:
            with memoryview(data) as view:
                while done < size:
                    raw.write(view[done : done + _WRITE_AT_ONCE])
                    done = min(size, done + _WRITE_AT_ONCE)
                    parts.append(outgoing.read())
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            raise self._fail(exc, "send") from exc
        finally:
            self._parts = parts  # ahead of whatever a failure queued (its alert)
        return done

    def start_close(self) -> None:
        """Queue our close_notify without waiting for the peer's."""
        try:
            self._obj.unwrap()
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError:
            # Closing a connection that already failed: nothing to say.
            pass

    def unwrap(self) -> bool:
        """Exchange close_notify; ``True`` once the peer's has arrived.

        Raises:
            TLSError: the close failed; send :meth:`data_to_send` first.
        """
        self._feed_backlog()
        try:
            self._obj.unwrap()
        except ssl.SSLWantReadError:
            return False
        except ssl.SSLError as exc:
            raise self._fail(exc, "close") from exc
        return True

    def request_client_certificate(self) -> None:
        """Queue a TLS 1.3 CertificateRequest (post-handshake authentication).

        The client answers when it next reads; :meth:`read` then processes the
        answer, and :attr:`client_certificate_received` turns true once a
        certificate has been verified.

        Raises:
            NegotiationFailed: this connection cannot do it (TLS 1.2, or the
                client did not offer post-handshake authentication).  Nothing
                was sent; the connection is unharmed.
        """
        try:
            self._obj.verify_client_post_handshake()
            # OpenSSL writes the CertificateRequest at its next I/O call.
            self._obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            raise NegotiationFailed(
                "cannot ask this client for a certificate after the handshake: "
                f"{exc.reason or exc} (it needs TLS 1.3 and a client that offers "
                "post-handshake authentication)",
                phase=Phase.POST_HANDSHAKE_AUTH,
                side=self.side,
                tls_version=self.tls_version,
                ssl_error=exc,
            ) from exc

    @property
    def client_certificate_received(self) -> bool:
        """Whether the server holds a verified client certificate now."""
        try:
            return self._obj.getpeercert(binary_form=True) is not None
        except ValueError:
            # Mid-exchange OpenSSL is "in init" again and ssl refuses to look.
            return False

    def finish_post_handshake_auth(self) -> PeerInfo:
        """Refresh :attr:`peer` after post-handshake authentication and run
        the policy's ``authorize`` on it.

        Raises:
            PolicyRejected: ``authorize`` refused the client.
        """
        self._peer = self._build_peer()
        self._check_pinned_anchor()
        self._authorize_peer()
        return self._peer

    def watch_replies(self) -> None:
        """Start counting the records that arrive (see :attr:`replies`)."""
        self._watch_in = _WireWatcher()

    def stop_watching(self) -> None:
        """Stop counting records."""
        self._watch_in = None

    @property
    def replies(self) -> int:
        """Whole records received since :meth:`watch_replies`.

        A TLS 1.3 record that :meth:`read` took in without returning data or
        raising was a post-handshake message: session tickets, usually.
        Counting them costs little; reading ``SSLObject.session`` to look for
        a ticket costs about 0.13 ms (CPython copies the session, its
        certificates included, every time).
        """
        watcher = self._watch_in
        return 0 if watcher is None else watcher.encrypted_records

    @property
    def has_session_ticket(self) -> bool:
        """Whether the client has received a session ticket (TLS 1.3)."""
        session = self._obj.session
        return session is not None and session.has_ticket

    @property
    def peer(self) -> PeerInfo:
        """What is known of the peer (computed once after the handshake)."""
        if self._peer is not None:
            return self._peer
        info = self._build_peer()
        if self.handshake_complete:
            self._peer = info
        return info

    def current_phase(self) -> Phase:
        """The phase the handshake is in now (for timeouts and cancellation)."""
        return phase_in_progress(self._context("handshake"))

    def fail_with(self, error: TLSError) -> TLSError:
        """Record an error raised from outside (a timeout, say) as final."""
        if self.error is None:
            self.error = error
        return error

    # -- internals ------------------------------------------------------------

    def _capture_out(self) -> None:
        data = self._outgoing.read()
        if data:
            if self._watch_out is not None:
                self._watch_out.feed(data)
            self._pending_out += data

    def _learn_from_wire(self) -> None:
        win, wout = self._watch_in, self._watch_out
        if win is None or wout is None:
            return
        hello = wout if self.server_side else win
        if hello.version is not None:
            self.tls_version = hello.version
        ours, theirs = (wout, win)
        if self.server_side:
            if theirs.certificate_count is not None:
                self.certificate_sent = theirs.certificate_count > 0
            if ours.certificate_request:
                self.certificate_requested = True
        elif self.tls_version == "TLSv1.3":
            # OpenSSL writes each handshake message in its own record: the
            # client's encrypted flight is Finished alone, or Certificate
            # [+ CertificateVerify] + Finished when a certificate was asked for.
            if self.handshake_complete:
                n = ours.encrypted_records
                self.certificate_requested = n >= 2
                self.certificate_sent = n >= 3
        else:
            if theirs.certificate_request:
                self.certificate_requested = True
            elif theirs.change_cipher_spec:
                self.certificate_requested = False
            if ours.certificate_count is not None:
                self.certificate_sent = ours.certificate_count > 0

    def _finish_handshake(self) -> None:
        self.handshake_complete = True
        version = self._obj.version()
        if (
            self.server_side
            and version == "TLSv1.3"
            and self._obj.context.verify_mode == ssl.CERT_NONE
            and not self._pending_out
        ):
            # OpenSSL has just queued the session tickets, and nothing else.
            # Sending them now can deadlock a client that is not reading yet,
            # so, as trio does, they stay in the BIO until the next bytes we
            # send anyway.  After a handshake that asked for a client
            # certificate they go at once: a confirming client takes them as
            # the server's verdict.
            self._held = self._outgoing.pending
        else:
            self._capture_out()
        self._learn_from_wire()
        if version is not None:
            self.tls_version = sys.intern(version)
        self._watch_in = self._watch_out = None
        self._prefix = b""  # only judged before a handshake completes
        self._check_policy()

    def _check_pinned_anchor(self) -> None:
        if not self._pinned:
            return
        chain = self.peer.chain
        if (
            len(chain) > 1
            and chain[-1].der in self._pinned
            and chain[0].der not in self._pinned
        ):
            who = "server" if not self.server_side else "client"
            raise self._policy_error(
                PinMismatch,
                f"{who} certificate {chain[0].label} is not pinned; it was issued "
                f"by the pinned certificate {chain[-1].label}, and a pinned "
                "certificate vouches only for itself",
            )

    def _check_policy(self) -> None:
        # The peer's facts are built only when a check needs them: parsing
        # certificates is most of the cost of a short connection.
        self._check_pinned_anchor()
        if self._spki_pins and not self.server_side:
            peer = self.peer
            chain = peer.chain or ((peer.certificate,) if peer.certificate else ())
            if not any(cert.spki_sha256 in self._spki_pins for cert in chain):
                presented = peer.certificate.spki_pin if peer.certificate else "none"
                raise self._policy_error(
                    PinMismatch,
                    f"server public key matches no pin (presented {presented})",
                )
        if (
            self._authorize is not None
            and self.server_side
            and not self._obj.context.post_handshake_auth
        ):
            # With deferred client authentication there is nothing to judge
            # yet; finish_post_handshake_auth() runs authorize later.
            self._authorize_peer()

    def _authorize_peer(self) -> None:
        if self._authorize is not None:
            peer = self.peer
            try:
                allowed = self._authorize(peer)
            except Exception as exc:
                err = self._policy_error(
                    PolicyRejected,
                    f"authorize() raised {exc!r}; refusing the client",
                )
                raise err from exc
            if not allowed:
                who = peer.certificate.label if peer.certificate else "no certificate"
                raise self._policy_error(
                    PolicyRejected,
                    f"authorize() refused the client ({who})",
                )

    def _policy_error(self, cls: type[TLSError], message: str) -> TLSError:
        # Withhold what OpenSSL queued at the end of its handshake (our
        # Finished, or a server's session tickets): without them the peer
        # cannot take the connection for accepted.
        self._discard_output()
        peer = self.peer
        err = cls(
            message,
            phase=Phase.CONNECTION_POLICY,
            side=self.side,
            tls_version=self.tls_version,
            server_name=peer.server_name,
            peer_chain=peer.chain,
        )
        self.error = err
        return err

    def _build_peer(self) -> PeerInfo:
        obj = self._obj
        if not self.handshake_complete:
            return PeerInfo(server_name=self.server_name)
        try:
            der = obj.getpeercert(binary_form=True)
        except ValueError:  # the connection failed, or is renegotiating
            der = None
        chain = chain_from_sslobject(obj, verified=True)
        verified = bool(chain)
        if not chain and der:
            chain = (CertificateInfo.from_der(der),)
        cipher = obj.cipher()
        return PeerInfo(
            certificate=chain[0] if chain else None,
            chain=chain,
            chain_verified=verified,
            server_name=self.server_name,
            alpn_protocol=obj.selected_alpn_protocol(),
            tls_version=obj.version(),
            cipher=cipher,
            session_reused=obj.session_reused,
        )

    def _context(self, surfaced_in: SurfacedIn) -> FailureContext:
        self._learn_from_wire()
        win, wout = self._watch_in, self._watch_out
        return FailureContext(
            side=self.side,
            surfaced_in=surfaced_in,
            handshake_complete=self.handshake_complete,
            server_hello_seen=self._obj.cipher() is not None
            or self.tls_version is not None,
            received_anything=self.received_anything,
            tls_version=self._obj.version() or self.tls_version,
            certificate_requested=self.certificate_requested,
            certificate_sent=self.certificate_sent,
            wire_alert_received=win.alert if win is not None else None,
            wire_alert_sent=wout.alert if wout is not None else None,
            wrote_on_failure=bool(self._pending_out),
            received_prefix=self._prefix,
            server_name=self.server_name,
        )

    def _discard_output(self) -> None:
        self._outgoing.read()
        self._parts = []
        self._pending_out = b""
        self._held = 0

    def _fail(self, exc: ssl.SSLError, surfaced_in: SurfacedIn) -> TLSError:
        if isinstance(exc, ssl.SSLEOFError):
            # The peer is gone: OpenSSL's parting decode_error has nobody to
            # reach, and sending it would only fail.
            self._discard_output()
        self._capture_out()
        ctx = self._context(surfaced_in)
        chain: tuple[CertificateInfo, ...] = ()
        details = None
        if isinstance(exc, ssl.SSLCertVerificationError):
            chain = chain_from_sslobject(self._obj, verified=False)
            try:
                details = _verify_details(exc.verify_code, chain, ctx.server_name)
            except Exception:
                details = None
        elif self._peer is not None:
            chain = self._peer.chain
        else:
            # OpenSSL refuses most questions once a connection has failed;
            # the chain as received is still there (empty before it came).
            chain = chain_from_sslobject(self._obj, verified=False)
        ctx = replace(ctx, peer_chain=chain, verify_details=details)
        err = classify(exc, ctx)
        self.error = err
        if self._watch_in is not None:
            self._watch_in.stop()
        if self._watch_out is not None:
            self._watch_out.stop()
        return err
