"""TLSListener and serve_tls: a policy per connection, chosen from the ClientHello.

A listener accepts transport connections and wraps each in a server-side
:class:`TLSStream` without touching the network: the ClientHello is read, the
policy chosen and the handshake run in the connection's own task, on first
use of the stream, under a timeout.  Nothing a client does can stall
:meth:`TLSListener.accept` or another connection.
"""

from __future__ import annotations

import inspect
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Generic, TypeAlias, TypeVar

import trio

from ._errors import Phase, PolicyRejected, TruncatedStream
from ._hello import ClientHello
from ._policy import Reject, ServerPolicy, coerce_policy
from ._report import HandshakeReport, _address, logger
from ._stream import TLSStream

__all__ = ["PolicySelector", "TLSListener", "serve_tls"]

T_Stream = TypeVar("T_Stream", bound=trio.abc.Stream)

PolicySelector: TypeAlias = Callable[
    [ClientHello], "ServerPolicy | Reject | Awaitable[ServerPolicy | Reject]"
]
"""Chooses the policy for one connection from its ClientHello (sync or async)."""

# Failures that are the client's doing, the network's, or the policy's
# verdict: logged without a stack trace.  Anything else is a bug somewhere.
_ORDINARY = (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError)


def _as_selector(
    policy: ServerPolicy | ssl.SSLContext | PolicySelector,
) -> Callable[[ClientHello], Awaitable[ServerPolicy | Reject]]:
    if isinstance(policy, (ServerPolicy, ssl.SSLContext)):
        fixed = coerce_policy(policy, server_side=True)

        async def constant(hello: ClientHello) -> ServerPolicy | Reject:
            return fixed

        return constant
    select = policy

    async def call(hello: ClientHello) -> ServerPolicy | Reject:
        decision = select(hello)
        if inspect.isawaitable(decision):
            decision = await decision
        if isinstance(decision, Reject):
            return decision
        return coerce_policy(decision, server_side=True)

    return call


def _log(report: HandshakeReport) -> None:
    error = report.error
    if error is None or _idle_probe(error):
        # Port scanners and health checks connect and leave: not news.
        # (The summary is built only if it will be written: it reads the
        # client certificate's names.)
        if logger.isEnabledFor(logging.INFO):
            logger.info("%s", report.summary())
    elif isinstance(error, _ORDINARY) and not _caused_by_our_code(error):
        logger.warning("%s", report.summary())
    else:
        logger.warning("%s", report.summary(), exc_info=error)


def _idle_probe(error: BaseException) -> bool:
    """A client that closed without sending a single byte."""
    return (
        isinstance(error, TruncatedStream)
        and error.phase is Phase.CLIENT_HELLO
        and "without sending anything" in error.message
    )


def _caused_by_our_code(error: BaseException) -> bool:
    """Whether a refusal came from a selector or ``authorize`` that raised:
    a bug to show with its traceback, not a client to shrug at."""
    return isinstance(error, PolicyRejected) and isinstance(error.__cause__, Exception)


class TLSListener(trio.abc.Listener[TLSStream[T_Stream]], Generic[T_Stream]):
    """Accepts TLS connections, judging each by a policy chosen for it.

    A drop-in for :class:`trio.SSLListener`.  ``policy`` is either one
    :class:`~trio_verify.ServerPolicy` (or :class:`ssl.SSLContext`) for every
    connection, or a *selector*: a function, sync or async, that receives the
    connection's :class:`~trio_verify.ClientHello` (server name, ALPN,
    versions, peer address, ...) and returns the
    :class:`~trio_verify.ServerPolicy` to apply, or a
    :class:`~trio_verify.Reject` to refuse the client with an alert.  Because
    the choice is made before OpenSSL sees the ClientHello, everything in the
    chosen policy applies, client authentication included.

    :meth:`accept` returns at once; the ClientHello is read and the handshake
    run by whichever task first uses the stream, bounded by
    ``handshake_timeout``.

    Args:
        transport_listener: the listener for the underlying transport.
        policy: a policy, or a selector as above.
        https_compatible: passed to every :class:`TLSStream`.
        handshake_timeout: seconds allowed for reading the ClientHello and
            completing the handshake (``None``: no limit).
        on_handshake: called with a :class:`~trio_verify.HandshakeReport`
            after every handshake, successful or not.  Exceptions it raises
            are logged and otherwise ignored.
        alert_linger: passed to every :class:`TLSStream`.
    """

    def __init__(
        self,
        transport_listener: trio.abc.Listener[T_Stream],
        policy: ServerPolicy | ssl.SSLContext | PolicySelector,
        *,
        https_compatible: bool = False,
        handshake_timeout: float | None = 30.0,
        on_handshake: Callable[[HandshakeReport], None] | None = None,
        alert_linger: float = 1.0,
    ) -> None:
        self.transport_listener = transport_listener
        self._selector = _as_selector(policy)
        self._https_compatible = https_compatible
        self._handshake_timeout = handshake_timeout
        self._on_handshake = on_handshake
        self._alert_linger = alert_linger

    def _report(self, report: HandshakeReport) -> None:
        _log(report)
        hook = self._on_handshake
        if hook is not None:
            try:
                hook(report)
            except Exception:
                logger.exception("on_handshake hook raised; ignoring it")

    async def accept(self) -> TLSStream[T_Stream]:
        """Accept a connection; the handshake happens later, on first use."""
        transport = await self.transport_listener.accept()
        return TLSStream._accepted(
            transport,
            self._selector,
            https_compatible=self._https_compatible,
            alert_linger=self._alert_linger,
            handshake_timeout=self._handshake_timeout,
            on_report=self._report,
        )

    async def aclose(self) -> None:
        """Close the transport listener."""
        await self.transport_listener.aclose()


async def serve_tls(
    handler: Callable[[TLSStream[trio.SocketStream]], Awaitable[object]],
    port: int,
    policy: ServerPolicy | ssl.SSLContext | PolicySelector,
    *,
    host: str | bytes | None = None,
    backlog: int | None = None,
    handler_nursery: trio.Nursery | None = None,
    handshake_timeout: float | None = 30.0,
    on_handshake: Callable[[HandshakeReport], None] | None = None,
    https_compatible: bool = False,
    task_status: trio.TaskStatus[
        list[TLSListener[trio.SocketStream]]
    ] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve TLS over TCP forever, in the shape of :func:`trio.serve_ssl_over_tcp`.

    ``handler`` is called, in its own task, with each stream whose handshake
    has *succeeded*; failed handshakes never reach it: they are reported
    (``on_handshake`` and the ``trio_verify`` logger) and closed, and they
    never disturb other connections or the accept loop.  The stream is closed
    when the handler returns.  A :class:`trio.BrokenResourceError` (every
    :class:`~trio_verify.TLSError` is one) or
    :class:`trio.ClosedResourceError` escaping the handler is logged and ends
    that connection only; any other exception propagates, as in
    :func:`trio.serve_listeners`.

    Use ``await nursery.start(serve_tls, ...)`` to learn the listeners (and
    the port, with ``port=0``).  Cancelling the call closes every listener;
    connections live in ``handler_nursery`` (by default an inner nursery that
    the cancellation also reaches).
    """
    transport_listeners = await trio.open_tcp_listeners(
        port, host=host, backlog=backlog
    )
    listeners = [
        TLSListener(
            listener,
            policy,
            https_compatible=https_compatible,
            handshake_timeout=handshake_timeout,
            on_handshake=on_handshake,
        )
        for listener in transport_listeners
    ]

    async def serve_one(stream: TLSStream[trio.SocketStream]) -> None:
        async with stream:
            try:
                await stream.do_handshake()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                # Reported by the stream; a TLSError is a BrokenResourceError.
                return
            except Exception:
                # A bug somewhere (a selector's policy that cannot load, say)
                # ends this connection, with its traceback, never the server.
                logger.exception("handshake ended by an unexpected error")
                return
            try:
                await handler(stream)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                # A client that breaks its own connection (a reset, a refused
                # certificate asked for later) must not take the server down.
                logger.warning(
                    "connection from %s ended in the handler: %r",
                    _address(stream.client_hello.peer_address)
                    if stream.client_hello
                    else "-",
                    exc,
                )

    await trio.serve_listeners(
        serve_one,
        listeners,
        handler_nursery=handler_nursery,
        task_status=task_status,
    )
