"""Two tasks wait for one handshake, and it fails: who hears about it?"""

from __future__ import annotations

import functools
import ssl

import trio
import trustme

import trio_verify as tv

StreamClass = (
    type[trio.SSLStream[trio.SocketStream]] | type[tv.TLSStream[trio.SocketStream]]
)


async def send_and_receive(
    port: int, stream_class: StreamClass, context: ssl.SSLContext, patience: float
) -> dict[str, object]:
    """Full-duplex use: the first send and the first receive, in two tasks,
    both need the handshake, whichever of them runs it."""
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = stream_class(tcp, context, server_hostname="localhost")
    seen: dict[str, object] = {}

    async def send() -> None:
        try:
            await stream.send_all(b"request")
            seen["sender"] = "sent"
        except trio.BrokenResourceError as exc:
            seen["sender"] = exc

    async def receive() -> None:
        try:
            seen["receiver"] = await stream.receive_some()
        except trio.BrokenResourceError as exc:
            seen["receiver"] = exc

    with trio.move_on_after(patience):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            nursery.start_soon(receive)
    for task in ("sender", "receiver"):
        seen.setdefault(task, f"still waiting after {patience} s")
    await trio.aclose_forcefully(stream)
    return seen


async def main(patience: float = 1.0) -> dict[str, dict[str, object]]:
    server_ca, other_ca = trustme.CA(), trustme.CA()
    pem = server_ca.issue_cert("localhost").private_key_and_cert_chain_pem.bytes()
    server_policy = tv.ServerPolicy(identity=tv.Identity.from_pem(pem, pem))
    client_context = ssl.create_default_context()
    other_ca.configure_trust(client_context)  # not the server's CA: refused

    async def handler(stream: tv.TLSStream[trio.SocketStream]) -> None:
        pass

    seen: dict[str, dict[str, object]] = {}
    serve = functools.partial(tv.serve_tls, handler, 0, server_policy, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(serve)
        port = listeners[0].transport_listener.socket.getsockname()[1]
        classes: tuple[StreamClass, ...] = (trio.SSLStream, tv.TLSStream)
        for stream_class in classes:
            seen[stream_class.__name__] = await send_and_receive(
                port, stream_class, client_context, patience
            )
        nursery.cancel_scope.cancel()
    return seen


if __name__ == "__main__":
    for name, tasks in trio.run(main).items():
        print(name)
        for task in ("sender", "receiver"):
            print(f"  {task}: {tasks[task]!r}")
