"""The same code on trio.SSLStream and on TLSStream: what a refused client sees."""

from __future__ import annotations

import functools
import ssl

import trio
import trustme

import trio_verify as tv

StreamClass = (
    type[trio.SSLStream[trio.SocketStream]] | type[tv.TLSStream[trio.SocketStream]]
)


def contexts(version: ssl.TLSVersion) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context that requires client certificates, and a client
    context that has none to give."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server)
    ca.configure_trust(server)
    server.verify_mode = ssl.CERT_REQUIRED  # mutual TLS
    server.maximum_version = version
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


# The code below is written for trio.SSLStream; it runs unchanged on TLSStream.


async def serve_one(
    tcp: trio.SocketStream,
    stream_class: StreamClass,
    context: ssl.SSLContext,
    seen: dict[str, object],
) -> None:
    stream = stream_class(tcp, context, server_side=True)
    try:
        await stream.do_handshake()
        request = await stream.receive_some()
        await stream.send_all(b"re: " + request)
    except trio.BrokenResourceError as exc:  # every TLSError is one
        seen["server"] = exc
    finally:
        await trio.aclose_forcefully(stream)


async def fetch(
    port: int, stream_class: StreamClass, context: ssl.SSLContext
) -> object:
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = stream_class(tcp, context, server_hostname="localhost")
    try:
        await stream.send_all(b"GET /")
        return await stream.receive_some()
    except trio.BrokenResourceError as exc:
        return exc
    finally:
        await trio.aclose_forcefully(stream)


async def pair(
    server_class: StreamClass,
    client_class: StreamClass,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> dict[str, object]:
    """One refused connection: what the client and the server observed."""
    seen: dict[str, object] = {}
    served = trio.Event()

    async def handler(tcp: trio.SocketStream) -> None:
        await serve_one(tcp, server_class, server_context, seen)
        served.set()

    serve = functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(serve)
        port = listeners[0].socket.getsockname()[1]
        seen["client"] = await fetch(port, client_class, client_context)
        await served.wait()
        nursery.cancel_scope.cancel()
    return seen


async def main(
    version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3,
) -> dict[str, dict[str, object]]:
    server_context, client_context = contexts(version)
    classes: tuple[StreamClass, ...] = (trio.SSLStream, tv.TLSStream)
    seen: dict[str, dict[str, object]] = {}
    for server_class in classes:
        for client_class in classes:
            name = f"{server_class.__name__} server, {client_class.__name__} client"
            seen[name] = await pair(
                server_class, client_class, server_context, client_context
            )
    return seen


def describe(outcome: object) -> str:
    if isinstance(outcome, tv.TLSError):
        return (
            f"{type(outcome).__name__} in {outcome.phase.name} "
            f"(surfaced in {outcome.surfaced_in}), alert received: "
            f"{outcome.alert_received}, sent: {outcome.alert_sent}"
        )
    if isinstance(outcome, trio.BrokenResourceError):
        return f"BrokenResourceError from {outcome.__cause__!r}"
    return repr(outcome)


if __name__ == "__main__":
    for pairing, outcome in trio.run(main).items():
        print(pairing)
        for side in ("client", "server"):
            print(f"  {side}: {describe(outcome[side])}")
