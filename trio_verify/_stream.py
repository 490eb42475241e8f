"""TLSStream: a :class:`trio.abc.Stream` that drives :class:`TLSEngine`.

Theory of operation
-------------------

All TLS work happens synchronously inside the engine; this module only moves
bytes between the engine and the transport stream, and decides who may do so.

*Transport locks.*  One task at a time may send on the transport and one may
receive from it, but either direction can be needed by either public method:
a lazy handshake inside ``send_all`` must receive, and a ``receive_some`` may
have to answer a post-handshake message.  Two strict FIFO locks guard the
transport; when free they are taken by setting a flag, so the uncontended
path costs no scheduler pass.  Outgoing bytes are taken from the
engine *after* the send lock is held, which keeps them in order however tasks
interleave.  A task that had to wait for the receive lock does not read again:
the task that held it has fed the engine, so it retries its operation first.

*Checkpoints.*  Every public call is exactly one checkpoint when it can be:
transport I/O is one, and a call that finishes from buffered data ends with a
``cancel_shielded_checkpoint`` after an early ``checkpoint_if_cancelled``.
A handshake sends its flights without yielding: each is followed by a wait
for the peer's, which is the call's checkpoint.

*The socket path.*  Over a plain :class:`trio.SocketStream` the stream calls
``recv`` and ``send`` on its socket itself, waiting with
``wait_readable``/``wait_writable`` only when the kernel has nothing or is
full, and raising what the SocketStream would raise.  Every other transport
goes through its ``receive_some`` and ``send_all``.

*Cancellation.*  A ``receive_some`` cancelled while it waited for transport
bytes has consumed nothing, so the stream stays usable (``trio.SSLStream``
breaks it).  A cancelled handshake or a cancelled send may have left half a
record on the wire: the stream is broken afterwards, as in Trio.

*Failures.*  When the engine raises a :class:`TLSError`, the bytes it leaves
behind are the alert.  Before the error propagates the stream sends them,
half-closes its write side where the transport allows it, and reads and
discards whatever the peer is still sending for at most ``alert_linger``
seconds.  Without that last step a peer that is still writing (its
certificate, its first request) gets a TCP reset from our kernel, and the
reset can destroy the alert before the peer reads it.
"""

from __future__ import annotations

import contextlib
import copy
import enum
import errno
import operator
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Final, Generic, TypeAlias, TypeVar

import trio
from trio.lowlevel import (
    cancel_shielded_checkpoint,
    checkpoint_if_cancelled,
    wait_readable,
    wait_writable,
)

from ._certs import CertificateInfo, PeerInfo
from ._engine import TLSEngine
from ._errors import (
    Alert,
    ClientAuthNotConfirmed,
    HandshakeTimeout,
    NegotiationFailed,
    Phase,
    PolicyRejected,
    TLSError,
    TruncatedStream,
)
from ._hello import ClientHello, ClientHelloReader
from ._policy import ClientPolicy, Reject, ServerPolicy, coerce_policy
from ._report import HandshakeReport

__all__ = ["TLSStream", "open_tls_stream"]

T_Stream = TypeVar("T_Stream", bound=trio.abc.Stream)

Selector: TypeAlias = Callable[[ClientHello], Awaitable[ServerPolicy | Reject]]
"""How a listener chooses a policy: async, from the ClientHello."""

_RECEIVE_SIZE: Final = 65536
_DEFAULT_MAX_BYTES: Final = 65536

# SSLObject attributes that TLSStream exposes as its own, as trio.SSLStream
# does; the second set needs a finished handshake.
_FORWARDED: Final = frozenset(
    {
        "context",
        "server_side",
        "server_hostname",
        "session",
        "session_reused",
        "getpeercert",
        "selected_npn_protocol",
        "cipher",
        "shared_ciphers",
        "compression",
        "pending",
        "get_channel_binding",
        "selected_alpn_protocol",
        "version",
    }
)
_AFTER_HANDSHAKE: Final = frozenset(
    {
        "session_reused",
        "getpeercert",
        "selected_npn_protocol",
        "cipher",
        "shared_ciphers",
        "compression",
        "get_channel_binding",
        "selected_alpn_protocol",
        "version",
    }
)


class _State(enum.Enum):
    OK = "ok"
    BROKEN = "broken"
    CLOSED = "closed"


class _TransportLock:
    """A strict FIFO lock for one direction of the transport.

    The same semantics as :class:`trio.Lock` for the way this module uses it,
    without its per-call owner bookkeeping: on the hot path a stream takes
    and releases it on every send, so that cost is paid per record.  A
    waiter parks; ``release`` hands the lock directly to the first waiter,
    so a newcomer can never overtake it (outgoing bytes stay in order).
    """

    __slots__ = ("_held", "_lot", "_waiters")

    def __init__(self) -> None:
        self._held = False
        self._waiters = 0
        # Made on first contention: most streams never have any.
        self._lot: trio.lowlevel.ParkingLot | None = None

    def locked(self) -> bool:
        return self._held

    def acquire_nowait(self) -> None:
        if self._held:
            raise trio.WouldBlock
        self._held = True

    async def acquire(self) -> None:
        if self._held:
            # Ownership arrives with the wake-up (see release); a task
            # cancelled while parked is simply removed from the queue.
            lot = self._lot
            if lot is None:
                lot = self._lot = trio.lowlevel.ParkingLot()
            self._waiters += 1
            try:
                await lot.park()
            finally:
                self._waiters -= 1
        else:
            self._held = True
            await trio.lowlevel.cancel_shielded_checkpoint()

    def release(self) -> None:
        if self._waiters:
            assert self._lot is not None
            self._lot.unpark()
        else:
            self._held = False

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()


_SENDING: Final = "another task is currently sending data on this TLSStream"
_RECEIVING: Final = "another task is currently receiving data on this TLSStream"


def _raw_socket(transport: trio.abc.Stream) -> socket.socket | None:
    """The stdlib socket under a plain :class:`trio.SocketStream`, else None.

    Only an exact ``trio.SocketStream`` qualifies: a subclass may change what
    sending and receiving mean.  The socket is Trio's own, still owned and
    closed by the transport; the stream only reads and writes it.
    """
    if type(transport) is not trio.SocketStream:
        return None
    raw = getattr(transport.socket, "_sock", None)
    if not isinstance(raw, socket.socket) or raw.type != socket.SOCK_STREAM:
        return None
    return raw


_CLOSED_ERRNOS: Final = frozenset({errno.EBADF, errno.ENOTSOCK})


def _socket_error(exc: OSError, transport: trio.abc.Stream | None) -> Exception:
    """The error :class:`trio.SocketStream` would raise for ``exc``."""
    if exc.errno in _CLOSED_ERRNOS:
        return trio.ClosedResourceError("this socket was already closed")
    if isinstance(transport, trio.SocketStream) and (
        transport.socket.did_shutdown_SHUT_WR
    ):
        return trio.ClosedResourceError("can't send data after sending EOF")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")


async def _socket_receive(
    sock: socket.socket, transport: trio.abc.Stream, max_bytes: int
) -> bytes:
    """``transport.receive_some(max_bytes)`` straight on its socket.

    The same outcome and the same single checkpoint as the call it replaces,
    without its layers of wrappers: tried at once, and only if nothing is
    there, waited for (a cancellation there has consumed nothing).
    """
    try:
        data = sock.recv(max_bytes)
    except BlockingIOError:
        return await _socket_wait_and_receive(sock, transport, max_bytes)
    except OSError as exc:
        raise _socket_error(exc, transport) from exc
    await cancel_shielded_checkpoint()
    return data


async def _socket_wait_and_receive(
    sock: socket.socket, transport: trio.abc.Stream, max_bytes: int
) -> bytes:
    """The rest of :func:`_socket_receive` once the socket had nothing."""
    while True:
        await wait_readable(sock)
        try:
            return sock.recv(max_bytes)
        except BlockingIOError:
            continue
        except OSError as exc:
            raise _socket_error(exc, transport) from exc


async def _socket_send(
    sock: socket.socket, transport: trio.abc.Stream, data: bytes, checkpoint: bool
) -> None:
    """``transport.send_all(data)`` straight on its socket (``data`` non-empty).

    With ``checkpoint=False`` a send the kernel takes at once does not yield:
    for a caller that is about to wait for the peer anyway (a handshake
    flight), that pass through the scheduler would be pure cost.
    """
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    except OSError as exc:
        raise _socket_error(exc, transport) from exc
    if sent == len(data):
        if checkpoint:
            await cancel_shielded_checkpoint()
        return
    with memoryview(data) as view:
        while sent < len(data):
            await wait_writable(sock)
            try:
                sent += sock.send(view[sent:])
            except BlockingIOError:
                continue
            except OSError as exc:
                raise _socket_error(exc, transport) from exc


_NO_PINS: Final[frozenset[bytes]] = frozenset()


def _pinned_ders(pinned: tuple[CertificateInfo, ...]) -> frozenset[bytes]:
    # One shared empty set: an empty frozenset is a new object every time.
    return frozenset(cert.der for cert in pinned) if pinned else _NO_PINS


# Parts given to one sendmsg() at most; far under any system's IOV_MAX.
_MAX_PARTS: Final = 64


async def _socket_send_parts(
    sock: socket.socket,
    transport: trio.abc.Stream,
    parts: list[bytes],
    checkpoint: bool,
) -> None:
    """:func:`_socket_send` of the parts joined, without joining them first."""
    total = sum(map(len, parts))
    if len(parts) > _MAX_PARTS:
        await _socket_send(sock, transport, b"".join(parts), checkpoint)
        return
    try:
        sent = sock.sendmsg(parts)
    except BlockingIOError:
        sent = 0
    except OSError as exc:
        raise _socket_error(exc, transport) from exc
    if sent == total:
        if checkpoint:
            await cancel_shielded_checkpoint()
        return
    # The kernel took part of it: the rest goes the ordinary way (and waits).
    rest = b"".join(parts)[sent:]
    await _socket_send(sock, transport, rest, checkpoint=True)


def _alert_record(alert: Alert | None) -> bytes:
    """A plaintext fatal alert record, as sent before any keys exist."""
    if alert is None:
        return b""
    return bytes((21, 3, 3, 0, 2, 2, alert))


def _encode_hostname(name: str | bytes | None) -> str | None:
    """IDNA 2008 (UTS #46) A-label form of a host name; IP literals unchanged."""
    if name is None:
        return None
    if isinstance(name, bytes):
        name = name.decode("ascii")
    if name.isascii():
        return name
    try:
        import idna  # a dependency of trio
    except ImportError:  # pragma: no cover - trio always brings it
        return name.encode("idna").decode("ascii")
    return idna.encode(name, uts46=True).decode("ascii")


class TLSStream(trio.abc.Stream, Generic[T_Stream]):
    """TLS over any Trio stream, with an explicit verification policy.

    A drop-in for :class:`trio.SSLStream`: the same constructor shape, lazy
    handshake, full-duplex use from two tasks, the same attribute forwarding
    to the underlying :class:`ssl.SSLObject`, and the same error base classes.
    What differs is what a failure tells you: every TLS failure is a
    :class:`~trio_verify.TLSError` subclass naming the phase, side and alerts,
    and the alert has reached the peer before the error reaches you.

    Args:
        transport_stream: the stream to run TLS over.
        policy: a :class:`~trio_verify.ClientPolicy`,
            :class:`~trio_verify.ServerPolicy`, or a plain
            :class:`ssl.SSLContext` (adopted and checked with
            ``from_ssl_context``).
        server_hostname: the name to send as SNI and to check the server's
            certificate against (client side).  Non-ASCII names are encoded
            with IDNA 2008.
        server_side: whether we are the server.
        https_compatible: accept an EOF without close_notify as the end of the
            stream, as HTTPS clients must; without it such an EOF raises
            :class:`~trio_verify.TruncatedStream`.
        alert_linger: after a failure, how long (seconds) to keep reading and
            discarding the peer's bytes so that it receives our alert.

    Attributes:
        transport_stream: the wrapped stream; ``None`` after :meth:`unwrap`.
    """

    transport_stream: T_Stream

    def __init__(
        self,
        transport_stream: T_Stream,
        policy: ClientPolicy | ServerPolicy | ssl.SSLContext,
        *,
        server_hostname: str | bytes | None = None,
        server_side: bool = False,
        https_compatible: bool = False,
        alert_linger: float = 1.0,
    ) -> None:
        coerced = coerce_policy(policy, server_side=server_side)
        self._init_state(
            transport_stream,
            server_side=server_side,
            https_compatible=https_compatible,
            alert_linger=alert_linger,
            handshake_timeout=coerced.handshake_timeout,
        )
        self._policy = coerced
        if isinstance(coerced, ClientPolicy):
            self._engine = TLSEngine(
                coerced.context,
                server_side=False,
                server_hostname=_encode_hostname(server_hostname),
                spki_pins=coerced.spki_pins,
                pinned=_pinned_ders(coerced.pinned),
                ragged_eof_ok=https_compatible,
            )
        else:
            self._engine = self._server_engine(coerced)

    @classmethod
    def _accepted(
        cls,
        transport_stream: T_Stream,
        selector: Selector,
        *,
        https_compatible: bool,
        alert_linger: float,
        handshake_timeout: float | None,
        on_report: Callable[[HandshakeReport], None] | None,
    ) -> TLSStream[T_Stream]:
        """A server stream whose policy ``selector`` picks from the ClientHello."""
        self = cls.__new__(cls)
        self._init_state(
            transport_stream,
            server_side=True,
            https_compatible=https_compatible,
            alert_linger=alert_linger,
            handshake_timeout=handshake_timeout,
        )
        self._selector = selector
        self._on_report = on_report
        self._peer_address()  # now, while the peer cannot have reset yet
        return self

    def _init_state(
        self,
        transport_stream: T_Stream,
        *,
        server_side: bool,
        https_compatible: bool,
        alert_linger: float,
        handshake_timeout: float | None,
    ) -> None:
        self.transport_stream = transport_stream
        self._socket = _raw_socket(transport_stream)
        self._server_side = server_side
        self._address: object = None
        self._https_compatible = https_compatible
        self._alert_linger = alert_linger
        self._handshake_timeout = handshake_timeout
        self._selector = None
        self._on_report = None
        self._client_hello = None
        self._client_hello_raw = b""
        self._state = _State.OK
        self._broken_by = None
        self._handshake_done = False
        self._handshake_event = None
        self._handshake_failure = None
        self._close_notify_received = False
        self._buffer = b""
        self._send_lock = _TransportLock()
        self._recv_lock = _TransportLock()
        self._sending = False
        self._receiving = False

    def _server_engine(
        self, policy: ServerPolicy, hello: ClientHello | None = None
    ) -> TLSEngine:
        offers_tls13 = hello is None or hello.offers_tls13
        return TLSEngine(
            policy.context_for(offers_tls13=offers_tls13),
            server_side=True,
            pinned=_pinned_ders(policy.pinned_clients),
            authorize=policy.authorize,
            ragged_eof_ok=self._https_compatible,
        )

    # Instance attributes.  A stream made by a listener has no ``_policy``
    # and ``_engine`` until its ClientHello has been read.
    _policy: ClientPolicy | ServerPolicy
    _engine: TLSEngine
    _socket: socket.socket | None
    _server_side: bool
    _handshake_timeout: float | None
    _selector: Selector | None
    _on_report: Callable[[HandshakeReport], None] | None
    _client_hello: ClientHello | None
    _client_hello_raw: bytes
    _https_compatible: bool
    _alert_linger: float
    _state: _State
    _broken_by: BaseException | None
    _handshake_done: bool
    _handshake_event: trio.Event | None
    _handshake_failure: BaseException | None
    _close_notify_received: bool
    _buffer: bytes
    _send_lock: _TransportLock
    _recv_lock: _TransportLock
    _sending: bool
    _receiving: bool

    # -- attribute forwarding, as trio.SSLStream --------------------------------

    def __getattr__(self, name: str) -> Any:
        # Only reached for names not found normally; private names are never
        # forwarded (and must not recurse while __init__ has not run).
        if name in _FORWARDED:
            try:
                done = object.__getattribute__(self, "_handshake_done")
            except AttributeError:
                raise AttributeError(name) from None
            engine: TLSEngine | None = getattr(self, "_engine", None)
            if engine is None or (name in _AFTER_HANDSHAKE and not done):
                raise trio.NeedHandshakeError(
                    f"call do_handshake() before calling {name!r}"
                )
            return getattr(engine.ssl_object, name)
        raise AttributeError(name)

    # The two settable SSLObject attributes are properties here, so that
    # setting any other attribute costs no detour (trio.SSLStream forwards
    # every assignment through a __setattr__).

    def _ssl_object(self, name: str) -> ssl.SSLObject:
        engine: TLSEngine | None = getattr(self, "_engine", None)
        if engine is None:
            raise trio.NeedHandshakeError(f"call do_handshake() before using {name!r}")
        return engine.ssl_object

    @property
    def context(self) -> ssl.SSLContext:
        """The :class:`ssl.SSLContext` in use; may be replaced before the handshake."""
        return self._ssl_object("context").context

    @context.setter
    def context(self, value: ssl.SSLContext) -> None:
        self._ssl_object("context").context = value

    @property
    def session(self) -> ssl.SSLSession | None:
        """The TLS session; set it before the handshake to resume one."""
        return self._ssl_object("session").session

    @session.setter
    def session(self, value: ssl.SSLSession | None) -> None:
        self._ssl_object("session").session = value

    def __dir__(self) -> list[str]:
        return [*super().__dir__(), *_FORWARDED]

    @property
    def server_side(self) -> bool:
        """Whether this end is the server."""
        return self._server_side

    @property
    def server_hostname(self) -> str | None:
        """The server name in use (SNI), in IDNA A-label form.

        On a server this is ``None``; the name the client asked for is in
        :attr:`client_hello` and :attr:`peer`.
        """
        engine = getattr(self, "_engine", None)
        return None if engine is None else engine.ssl_object.server_hostname

    @property
    def policy(self) -> ClientPolicy | ServerPolicy:
        """The verification policy this connection applies.

        Raises:
            trio.NeedHandshakeError: on a stream accepted by a
                :class:`~trio_verify.TLSListener` whose selector has not
                chosen yet.
        """
        policy = getattr(self, "_policy", None)
        if policy is None:
            raise trio.NeedHandshakeError("the policy is chosen during the handshake")
        return policy  # type: ignore[no-any-return]

    def _reusable(self) -> bool:
        """Whether a pool may hand this stream to its next user."""
        return (
            self._state is _State.OK
            and self._handshake_done
            and not self._close_notify_received
            and not self._buffer
            and self._engine.ssl_object.pending() == 0
            and not self._engine.has_buffered_input
        )

    @property
    def client_hello(self) -> ClientHello | None:
        """The client's ClientHello, once a server has read it."""
        hello = self._client_hello
        if hello is None and self._client_hello_raw:
            # Parsed again from the bytes kept (see _forget_client_hello).
            hello = ClientHelloReader(peer_address=self._peer_address()).feed(
                self._client_hello_raw
            )
            self._client_hello = hello
        return hello

    def _forget_client_hello(self) -> None:
        """Keep only the ClientHello's bytes once the handshake is done.

        The parsed form (tuples of code points) is several times larger than
        the message, and most connections never look at it again.
        """
        hello = self._client_hello
        if hello is not None:
            self._client_hello_raw = hello.raw
            self._client_hello = None

    @property
    def peer(self) -> PeerInfo:
        """What the handshake established about the peer.

        Raises:
            trio.NeedHandshakeError: before the handshake has finished.
        """
        if not self._handshake_done:
            raise trio.NeedHandshakeError("call do_handshake() before reading 'peer'")
        return self._engine.peer

    # -- state ---------------------------------------------------------------

    @contextlib.contextmanager
    def _using(self, *, send: bool = False, receive: bool = False) -> Iterator[None]:
        """Claim a direction (or both) for one call; BusyResourceError if taken."""
        if send and self._sending:
            raise trio.BusyResourceError(_SENDING)
        if receive and self._receiving:
            raise trio.BusyResourceError(_RECEIVING)
        if send:
            self._sending = True
        if receive:
            self._receiving = True
        try:
            yield
        finally:
            if send:
                self._sending = False
            if receive:
                self._receiving = False

    def _check_status(self) -> None:
        if self._state is _State.OK:
            return
        if self._state is _State.BROKEN:
            raise trio.BrokenResourceError(
                "this TLSStream is broken by an earlier failure"
            ) from self._broken_by
        raise trio.ClosedResourceError("this TLSStream is closed")

    def _mark_broken(self, cause: BaseException | None) -> None:
        if self._state is _State.OK:
            self._state = _State.BROKEN
            self._broken_by = cause

    def _peer_address(self) -> object:
        """The transport's peer address, remembered once known.

        Remembered because a peer that resets the connection takes its
        address with it: ``getpeername()`` then fails.
        """
        address = self._address
        if address is None:
            sock = getattr(self.transport_stream, "socket", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    address = self._address = sock.getpeername()
        return address

    # -- moving bytes ----------------------------------------------------------

    async def _flush(self, checkpoint: bool = True) -> None:
        """Send whatever the engine has queued, in order.

        ``checkpoint=False``: the caller has checkpointed or will (see
        :func:`_socket_send`).
        """
        engine = self._engine
        if not engine.has_data_to_send:
            return
        lock = self._send_lock
        if lock._held:
            await lock.acquire()
        else:
            lock._held = True
        try:
            sock = self._socket
            if sock is None:
                data = engine.data_to_send()
                if data:
                    await self.transport_stream.send_all(data)
            elif engine.sends_in_parts:
                await _socket_send_parts(
                    sock, self.transport_stream, engine.data_to_send_parts(), checkpoint
                )
            else:
                data = engine.data_to_send()
                # The common case inline: the kernel takes it all at once.
                try:
                    sent = sock.send(data) if data else 0
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    raise _socket_error(exc, self.transport_stream) from exc
                if sent == len(data):
                    if checkpoint and data:
                        await cancel_shielded_checkpoint()
                else:
                    await _socket_send(
                        sock, self.transport_stream, data[sent:], checkpoint=True
                    )
        except BaseException as exc:
            # Part of a record may be on the wire: nothing can follow it.
            self._mark_broken(exc)
            raise
        finally:
            lock.release()

    async def _transport_receive(self) -> bytes | bytearray:
        sock = self._socket
        if sock is None:
            return await self.transport_stream.receive_some(_RECEIVE_SIZE)
        return await _socket_receive(sock, self.transport_stream, _RECEIVE_SIZE)

    async def _receive(self) -> None:
        """Feed the engine one transport read (or nothing, if another task did)."""
        lock = self._recv_lock
        if lock._held:
            await lock.acquire()
            lock.release()
            return
        lock._held = True
        try:
            sock = self._socket
            if sock is None:
                data = await self.transport_stream.receive_some(_RECEIVE_SIZE)
            else:
                # The common case inline (see _socket_receive).
                try:
                    data = sock.recv(_RECEIVE_SIZE)
                except BlockingIOError:
                    data = await _socket_wait_and_receive(
                        sock, self.transport_stream, _RECEIVE_SIZE
                    )
                except OSError as exc:
                    raise _socket_error(exc, self.transport_stream) from exc
                else:
                    await cancel_shielded_checkpoint()
        except trio.Cancelled:
            raise
        except BaseException as exc:
            self._mark_broken(exc)
            raise
        finally:
            lock.release()
        if data:
            self._engine.receive_data(data)
        else:
            self._engine.receive_eof()

    async def _fatal(self, err: TLSError) -> None:
        """Deliver the alert for ``err`` to the peer, then mark us broken."""
        self._mark_broken(err)
        if err.peer_address is None:
            err.peer_address = self._peer_address()
        engine = getattr(self, "_engine", None)
        if engine is not None and engine.has_data_to_send:
            await self._deliver(engine.data_to_send())

    async def _deliver(self, alert: bytes) -> None:
        """Send ``alert``, half-close, and drain what the peer still sends."""
        transport = self.transport_stream
        # Shielded: a caller's cancellation must not swallow the alert.  Both
        # steps are bounded, the send by a fixed second (an alert is a few
        # bytes), the drain by ``alert_linger``.
        with trio.CancelScope(shield=True, deadline=trio.current_time() + 1.0):
            try:
                if alert:
                    async with self._send_lock:
                        await transport.send_all(alert)
                if isinstance(transport, trio.abc.HalfCloseableStream):
                    await transport.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return
        if self._alert_linger <= 0 or self._recv_lock.locked():
            return
        with trio.CancelScope(
            shield=True, deadline=trio.current_time() + self._alert_linger
        ):
            try:
                async with self._recv_lock:
                    while await transport.receive_some(_RECEIVE_SIZE):
                        pass
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass

    # -- the handshake --------------------------------------------------------

    async def do_handshake(self) -> None:
        """Perform the handshake, if it has not happened yet.

        Safe to call more than once and from several tasks at once: one task
        runs the handshake, the others wait for it, and if it fails every one
        of them gets the error.  A client whose policy asks for it
        (``confirm_client_auth``) also waits here for the server's verdict on
        its certificate in TLS 1.3.

        Raises:
            TLSError: the handshake failed (a subclass says how).
            trio.BrokenResourceError: the transport failed, or the stream was
                already broken.
            trio.ClosedResourceError: the stream was closed.
        """
        await checkpoint_if_cancelled()
        self._check_status()
        if self._handshake_done:
            await cancel_shielded_checkpoint()
            return
        await self._ensure_handshake()

    async def _ensure_handshake(self) -> None:
        if self._handshake_done:
            return
        event = self._handshake_event
        if event is not None:
            await event.wait()
            failure = self._handshake_failure
            if failure is not None:
                if isinstance(failure, TLSError):
                    raise copy.copy(failure) from failure.ssl_error
                raise trio.BrokenResourceError(
                    "the handshake failed in another task"
                ) from failure
            self._check_status()
            return
        event = self._handshake_event = trio.Event()
        started = trio.current_time()
        try:
            await self._run_handshake()
        except BaseException as exc:
            self._handshake_failure = exc
            self._mark_broken(exc)
            if not isinstance(exc, trio.Cancelled):
                self._report(exc, started)
            raise
        finally:
            event.set()
        self._handshake_event = None  # tasks waiting on it hold their own
        self._report(None, started)
        self._forget_client_hello()

    def _report(self, error: BaseException | None, started: float) -> None:
        hook = self._on_report
        if hook is None:
            return
        engine = getattr(self, "_engine", None)
        peer = engine.peer if engine is not None else None
        hello = self._client_hello
        certificate = peer.certificate if peer is not None else None
        if certificate is None and isinstance(error, TLSError) and error.peer_chain:
            certificate = error.peer_chain[0]
        policy = getattr(self, "_policy", None)
        report = HandshakeReport(
            peer_address=hello.peer_address if hello else self._peer_address(),
            server_name=hello.server_name if hello else None,
            alpn_protocol=peer.alpn_protocol if peer else None,
            tls_version=(peer.tls_version if peer else None)
            or (error.tls_version if isinstance(error, TLSError) else None),
            cipher=peer.cipher[0] if peer and peer.cipher else None,
            policy_name=getattr(policy, "name", None),
            client_certificate=certificate,
            duration=trio.current_time() - started,
            error=error,
        )
        hook(report)

    async def _run_handshake(self) -> None:
        timeout = self._handshake_timeout
        bound: AbstractContextManager[object] = (
            trio.fail_after(timeout) if timeout is not None else nullcontext()
        )
        try:
            with bound:
                if self._server_side:
                    await self._read_client_hello()
                engine = self._engine
                # Each flight is followed by a wait for the peer's, which is
                # this call's checkpoint; the last one by none, but by then
                # the call has waited at least once.
                while not engine.do_handshake():
                    await self._flush(checkpoint=False)
                    await self._receive()
                await self._flush(checkpoint=False)
        except TLSError as err:
            await self._fatal(err)
            raise
        except trio.TooSlowError:
            engine_now: TLSEngine | None = getattr(self, "_engine", None)
            timed_out = HandshakeTimeout(
                f"handshake did not finish within {timeout} seconds",
                phase=(
                    Phase.CLIENT_HELLO
                    if engine_now is None
                    # Complete for OpenSSL, but our last flight never left.
                    else Phase.FINISHED
                    if engine_now.handshake_complete
                    else engine_now.current_phase()
                ),
                side="server" if self._server_side else "client",
                tls_version=engine_now.tls_version if engine_now else None,
                server_name=self.server_hostname,
                peer_address=self._peer_address(),
            )
            if engine_now is not None:
                engine_now.fail_with(timed_out)
            raise timed_out from None
        if self._needs_confirmation():
            await self._confirm()
        self._handshake_done = True

    async def _read_client_hello(self) -> None:
        """Read the ClientHello before OpenSSL sees it; choose the policy.

        The bytes are replayed into the engine afterwards, so nothing is lost,
        and the policy chosen from them governs the whole handshake (which an
        ``sni_callback`` swapping contexts cannot do: the verify mode stays).
        """
        reader = ClientHelloReader(peer_address=self._peer_address())
        hello = None
        try:
            while hello is None:
                data = await self._transport_receive()
                if not data:
                    reader.feed_eof()
                hello = reader.feed(data)
        except TLSError as err:
            # Whatever a plain OpenSSL server would answer these bytes with.
            self._mark_broken(err)
            await self._deliver(reader.data_to_send())
            raise
        except BaseException as exc:
            self._mark_broken(exc)
            raise
        self._client_hello = hello
        policy = getattr(self, "_policy", None)
        if policy is None:
            assert self._selector is not None
            try:
                decision = await self._selector(hello)
            except Exception as exc:
                reject = Reject(Alert.INTERNAL_ERROR, f"selector raised {exc!r}")
                raise await self._refuse(hello, reject) from exc
            if isinstance(decision, Reject):
                raise await self._refuse(hello, decision)
            policy = self._policy = decision
            self._engine = self._server_engine(decision, hello)
        elif isinstance(policy, ServerPolicy) and (
            policy.context_for(offers_tls13=hello.offers_tls13)
            is not self._engine.ssl_object.context
        ):
            self._engine = self._server_engine(policy, hello)
        # As in Go and rustls: a client that offers no ALPN at all is served;
        # one whose offer shares nothing with ours is refused.
        if (
            isinstance(policy, ServerPolicy)
            and policy.alpn_required
            and hello.alpn_protocols
            and not set(hello.alpn_protocols).intersection(policy.alpn)
        ):
            raise await self._refuse(
                hello,
                Reject(
                    Alert.NO_APPLICATION_PROTOCOL,
                    f"no shared application protocol (client offered "
                    f"{', '.join(hello.alpn_protocols)})",
                ),
                NegotiationFailed,
            )
        self._engine.server_name = hello.server_name
        self._engine.receive_data(hello.raw)

    async def _refuse(
        self,
        hello: ClientHello,
        reject: Reject,
        cls: type[TLSError] = PolicyRejected,
    ) -> TLSError:
        """Send ``reject``'s alert; return the error to raise."""
        error = cls(
            f"refused: {reject.reason or 'by the policy selector'}",
            phase=Phase.CLIENT_HELLO,
            side="server",
            alert_sent=reject.alert,
            server_name=hello.server_name,
            peer_address=hello.peer_address,
        )
        self._mark_broken(error)
        await self._deliver(_alert_record(reject.alert))
        return error

    def _needs_confirmation(self) -> bool:
        policy = self._policy
        engine = self._engine
        if not isinstance(policy, ClientPolicy) or engine.tls_version != "TLSv1.3":
            return False
        mode = policy.confirm_client_auth
        if mode == "always":
            return True
        return mode == "auto" and bool(engine.certificate_sent)

    async def _confirm(self) -> None:
        """Read on until the server's verdict on our certificate (TLS 1.3)."""
        engine = self._engine
        policy = self._policy
        assert isinstance(policy, ClientPolicy)
        # What arrived before now (a server that sends tickets early) is
        # judged by the session; what arrives from now on is counted.
        early = engine.has_buffered_input
        engine.watch_replies()
        with trio.move_on_after(policy.confirm_timeout):
            try:
                while True:
                    data = engine.read(_DEFAULT_MAX_BYTES, "confirm")
                    if data == b"":
                        self._close_notify_received = True
                        return
                    if data:
                        self._buffer += data
                        return
                    if engine.replies or (early and engine.has_session_ticket):
                        return
                    early = False
                    await self._flush()
                    await self._receive()
            except TLSError as err:
                await self._fatal(err)
                raise
            finally:
                engine.stop_watching()
        raise engine.fail_with(
            ClientAuthNotConfirmed(
                "the server sent no verdict on our client certificate within "
                f"{policy.confirm_timeout} seconds (no session ticket, data or "
                "alert); it may have session tickets turned off",
                phase=Phase.CLIENT_CERTIFICATE,
                side="client",
                surfaced_in="confirm",
                tls_version=engine.tls_version,
                server_name=self.server_hostname,
                peer_address=self._peer_address(),
            )
        )

    # -- the Stream interface ---------------------------------------------------

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt and send ``data``; performs the handshake first if needed.

        Raises:
            TLSError: the connection failed.
            trio.BusyResourceError: another task is sending.
            trio.BrokenResourceError: the transport failed.
            trio.ClosedResourceError: the stream was closed.
        """
        if self._sending:
            raise trio.BusyResourceError(_SENDING)
        self._sending = True
        try:
            await checkpoint_if_cancelled()
            if self._state is not _State.OK:
                self._check_status()
            if not self._handshake_done:
                await self._ensure_handshake()
                if not data:
                    return
            elif not data:
                await cancel_shielded_checkpoint()
                return
            engine = self._engine
            try:
                written = engine.write(data)
                if written < len(data) or isinstance(data, memoryview):
                    # Only a TLS 1.2 renegotiation makes a write wait.
                    with memoryview(data) as view, view.cast("B") as octets:
                        while written < len(octets):
                            await self._flush()
                            await self._receive()
                            written += engine.write(octets[written:])
                await self._flush()
            except TLSError as err:
                await self._fatal(err)
                raise
            except BaseException as exc:
                # The data is encrypted and queued: a cancelled send cannot
                # be taken back, nor retried without sending it twice.
                self._mark_broken(exc)
                raise
        finally:
            self._sending = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Receive and decrypt up to ``max_bytes`` bytes of data.

        Returns ``b""`` once the peer has closed the TLS session cleanly (or,
        with ``https_compatible``, closed the connection).  A call cancelled
        while it waited for the transport leaves the stream usable.

        Raises:
            TLSError: the connection failed, or the peer refused our
                certificate after a TLS 1.3 handshake.
            trio.BusyResourceError: another task is receiving.
            trio.BrokenResourceError: the transport failed.
            trio.ClosedResourceError: the stream was closed.
        """
        if self._receiving:
            raise trio.BusyResourceError(_RECEIVING)
        self._receiving = True
        try:
            if max_bytes is None:
                max_bytes = _DEFAULT_MAX_BYTES
            else:
                max_bytes = operator.index(max_bytes)
                if max_bytes < 1:
                    raise ValueError("max_bytes must be >= 1")
            await checkpoint_if_cancelled()
            if self._state is not _State.OK:
                self._check_status()
            if not self._handshake_done:
                try:
                    await self._ensure_handshake()
                except TruncatedStream:
                    # As trio does: an HTTPS peer may hang up before the
                    # handshake, and that is an end of stream, not an attack.
                    if not self._https_compatible:
                        raise
                    return b""
                checkpointed = True
            else:
                checkpointed = False
            if self._buffer:
                data = self._buffer[:max_bytes]
                self._buffer = self._buffer[max_bytes:]
                if not checkpointed:
                    await cancel_shielded_checkpoint()
                return data
            if self._close_notify_received:
                if not checkpointed:
                    await cancel_shielded_checkpoint()
                return b""
            engine = self._engine
            try:
                while True:
                    got = engine.read(max_bytes)
                    if got is not None and not got:
                        self._close_notify_received = True
                    if engine.has_data_to_send:
                        # Reading made OpenSSL answer something (a key
                        # update, a certificate request).  If sending that is
                        # cancelled, the data already decrypted stays ours.
                        try:
                            await self._flush()
                        except BaseException:
                            if got:
                                self._buffer += got
                            raise
                        checkpointed = True
                    if got is not None:
                        if not checkpointed:
                            await cancel_shielded_checkpoint()
                        return got
                    await self._receive()
                    checkpointed = True
            except TLSError as err:
                await self._fatal(err)
                raise
        finally:
            self._receiving = False

    async def request_client_certificate(
        self, *, timeout: float | None = 30.0
    ) -> PeerInfo:
        """Ask the client for its certificate now (TLS 1.3, server side).

        For servers whose policy has ``ClientAuth.DEFERRED``: a connection can
        be accepted anonymously and asked to authenticate later, for instance
        when it requests something protected.  The client answers when it next
        reads, so call this while the client is waiting for a response.
        Application data that arrives meanwhile is kept for
        :meth:`receive_some`.

        Returns:
            The refreshed :attr:`peer`, with the verified client certificate.

        Raises:
            NegotiationFailed: the connection cannot do it (TLS 1.2, or the
                client did not offer post-handshake authentication); the
                stream stays usable.
            CertificateVerificationError: the client's certificate was refused
                (``phase=Phase.POST_HANDSHAKE_AUTH``); the alert was sent.
            MissingClientCertificate: the client sent none.
            PolicyRejected: the policy's ``authorize`` refused it.
            HandshakeTimeout: no answer within ``timeout`` seconds.
            trio.BusyResourceError: another task is receiving.
        """
        with self._using(receive=True):
            await checkpoint_if_cancelled()
            self._check_status()
            if not self._server_side:
                raise RuntimeError("only a server can ask for a client certificate")
            await self._ensure_handshake()
            engine = self._engine
            engine.request_client_certificate()
            try:
                with trio.fail_after(timeout) if timeout is not None else nullcontext():
                    await self._flush()
                    while True:
                        data = engine.read(_DEFAULT_MAX_BYTES)
                        if data == b"":
                            self._close_notify_received = True
                            raise trio.BrokenResourceError(
                                "the client closed the connection instead of "
                                "presenting a certificate"
                            )
                        if data:
                            self._buffer += data
                        if engine.client_certificate_received:
                            break
                        await self._flush()
                        if not data:
                            await self._receive()
                    # OpenSSL issues fresh session tickets that carry the
                    # client's identity.
                    await self._flush()
                return engine.finish_post_handshake_auth()
            except TLSError as err:
                await self._fatal(err)
                raise
            except trio.TooSlowError:
                timed_out = engine.fail_with(
                    HandshakeTimeout(
                        f"the client presented no certificate within {timeout} "
                        "seconds of being asked",
                        phase=Phase.POST_HANDSHAKE_AUTH,
                        side="server",
                        tls_version=engine.tls_version,
                        peer_address=self._peer_address(),
                    )
                )
                self._mark_broken(timed_out)
                raise timed_out from None

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until :meth:`send_all` might not block (no handshake done)."""
        with self._using(send=True):
            await checkpoint_if_cancelled()
            self._check_status()
            async with self._send_lock:
                await self.transport_stream.wait_send_all_might_not_block()

    async def unwrap(self) -> tuple[T_Stream, bytes]:
        """Close the TLS session cleanly and hand back the transport.

        Returns:
            The transport stream and any raw bytes that arrived after the
            peer's close_notify (they belong to whatever follows TLS).
        """
        with self._using(send=True, receive=True):
            await checkpoint_if_cancelled()
            self._check_status()
            await self._ensure_handshake()
            engine = self._engine
            try:
                while not engine.unwrap():
                    await self._flush()
                    await self._receive()
                await self._flush()
            except TLSError as err:
                await self._fatal(err)
                raise
            transport = self.transport_stream
            self.transport_stream = None  # type: ignore[assignment]
            self._socket = None
            self._state = _State.CLOSED
            return transport, engine.unused_data()

    async def aclose(self) -> None:
        """Send close_notify (without waiting for the reply) and close.

        As in :class:`trio.SSLStream`, a stream that has not handshaken yet
        does so first, so that the peer gets a close_notify rather than a bare
        EOF; with ``https_compatible`` no close_notify is sent at all.
        Idempotent.  Closes the transport exactly once, also when cancelled,
        when the stream is broken, or when that last handshake fails (whose
        error is then raised).
        """
        if self._state is _State.CLOSED:
            await trio.lowlevel.checkpoint()
            return
        transport = self.transport_stream
        try:
            if self._state is _State.OK and not self._https_compatible:
                if not self._handshake_done:
                    await self._ensure_handshake()
                self._engine.start_close()
                with contextlib.suppress(
                    trio.BrokenResourceError, trio.ClosedResourceError
                ):
                    # Closing the transport below is this call's checkpoint.
                    await self._flush(checkpoint=False)
        except BaseException:
            self._state = _State.CLOSED
            await trio.aclose_forcefully(transport)
            raise
        self._state = _State.CLOSED
        await transport.aclose()


async def open_tls_stream(
    host: str | bytes,
    port: int,
    *,
    policy: ClientPolicy | ssl.SSLContext | None = None,
    server_hostname: str | bytes | None = None,
    happy_eyeballs_delay: float | None = 0.25,
) -> TLSStream[trio.SocketStream]:
    """Connect over TCP and complete a TLS handshake.

    Args:
        host: the host to connect to; also the name checked against the
            server's certificate unless ``server_hostname`` is given.
        port: the TCP port.
        policy: the client policy; by default :class:`ClientPolicy` with the
            system trust store.
        server_hostname: the name to send as SNI and verify, if not ``host``.
        happy_eyeballs_delay: passed to :func:`trio.open_tcp_stream`.

    Raises:
        TLSError: the handshake failed.
        OSError: the TCP connection failed.
    """
    # Judge the policy before touching the network.
    checked = coerce_policy(
        ClientPolicy() if policy is None else policy, server_side=False
    )
    tcp = await trio.open_tcp_stream(
        host, port, happy_eyeballs_delay=happy_eyeballs_delay
    )
    try:
        stream = TLSStream(
            tcp,
            checked,
            server_hostname=server_hostname if server_hostname is not None else host,
        )
        await stream.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(tcp)
        raise
    return stream
