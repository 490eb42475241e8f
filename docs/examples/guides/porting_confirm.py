"""A client certificate, a trio.SSLStream server, and confirm_client_auth."""

from __future__ import annotations

import functools
import ssl
from typing import Literal

import trio
import trustme

import trio_verify as tv


async def main(confirm_timeout: float = 1.0) -> dict[str, object]:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    ca.configure_trust(server_context)
    server_context.verify_mode = ssl.CERT_REQUIRED
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    ca.issue_cert("alice.example").configure_cert(client_context)

    # A trio.SSLStream server for a protocol in which the client speaks first.
    async def handler(stream: trio.SSLStream[trio.SocketStream]) -> None:
        try:
            request = await stream.receive_some()
            await stream.send_all(b"re: " + request)
        except trio.BrokenResourceError:
            pass

    async def ask(port: int, confirm: Literal["never", "auto", "always"]) -> object:
        policy = tv.ClientPolicy.from_ssl_context(
            client_context,
            has_identity=True,  # a certificate is loaded into the context
            confirm_client_auth=confirm,
            confirm_timeout=confirm_timeout,
        )
        try:
            stream = await tv.open_tls_stream(
                "127.0.0.1", port, policy=policy, server_hostname="localhost"
            )
            async with stream:
                await stream.send_all(b"GET /")
                return await stream.receive_some()
        except tv.TLSError as exc:
            return exc

    seen: dict[str, object] = {}
    serve = functools.partial(
        trio.serve_ssl_over_tcp, handler, 0, server_context, host="127.0.0.1"
    )
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(serve)
        port = listeners[0].transport_listener.socket.getsockname()[1]
        seen["auto"] = await ask(port, "auto")  # the default
        seen["never"] = await ask(port, "never")
        nursery.cancel_scope.cancel()
    return seen


if __name__ == "__main__":
    for confirm, outcome in trio.run(main).items():
        print(f"confirm_client_auth={confirm!r}: {outcome!r}")
