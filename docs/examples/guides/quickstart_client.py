"""A first verified client: open_tls_stream() against a server started here."""

from __future__ import annotations

import functools

import trio
import trustme

import trio_verify as tv


async def main() -> dict[str, object]:
    # A throwaway CA, made in memory, and a certificate for "localhost".
    ca = trustme.CA()
    pem = ca.issue_cert("localhost").private_key_and_cert_chain_pem.bytes()
    server_policy = tv.ServerPolicy(identity=tv.Identity.from_pem(pem, pem))

    async def handler(stream: tv.TLSStream[trio.SocketStream]) -> None:
        name = await stream.receive_some()
        await stream.send_all(b"hello " + name)

    seen: dict[str, object] = {}
    serve = functools.partial(tv.serve_tls, handler, 0, server_policy, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(serve)
        port = listeners[0].transport_listener.socket.getsockname()[1]

        # The default policy, except that it trusts our CA, not the system's.
        policy = tv.ClientPolicy(trust=ca.cert_pem.bytes())
        stream = await tv.open_tls_stream(
            "127.0.0.1", port, policy=policy, server_hostname="localhost"
        )
        async with stream:  # the handshake is done: the server is verified
            await stream.send_all(b"world")
            seen["reply"] = await stream.receive_some()
            seen["peer"] = stream.peer
        nursery.cancel_scope.cancel()
    return seen


if __name__ == "__main__":
    seen = trio.run(main)
    peer = seen["peer"]
    assert isinstance(peer, tv.PeerInfo)
    assert peer.certificate is not None
    print("reply:", seen["reply"])
    print("version:", peer.tls_version)
    print("server certificate:", peer.certificate.subject)
    print("valid for:", ", ".join(peer.certificate.dns_names))
