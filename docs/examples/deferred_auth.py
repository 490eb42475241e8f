"""Deferred client authentication: ask for a certificate only when needed."""

from __future__ import annotations

import functools

import trio
import trustme

import trio_verify as tv


def identity(cert: trustme.LeafCert) -> tv.Identity:
    pem = cert.private_key_and_cert_chain_pem.bytes()
    return tv.Identity.from_pem(pem, pem)


async def main() -> dict[str, object]:
    ca = trustme.CA()
    policy = tv.ServerPolicy(
        identity=identity(ca.issue_cert("localhost")),
        client_auth=tv.ClientAuth.DEFERRED,  # TLS 1.3 only
        client_trust=ca.cert_pem.bytes(),
    )
    seen: dict[str, object] = {}

    async def handler(stream: tv.TLSStream[trio.SocketStream]) -> None:
        while request := await stream.receive_some():
            if request != b"GET /admin":
                await stream.send_all(b"public page")
                continue
            try:
                peer = await stream.request_client_certificate(timeout=5)
            except tv.NegotiationFailed:  # the client cannot be asked
                await stream.send_all(b"403 log in with a certificate")
                continue
            except tv.TLSError as exc:  # refused; the client knows why
                seen["server"] = exc
                return
            assert peer.certificate is not None
            await stream.send_all(
                f"admin page for {peer.certificate.dns_names[0]}".encode()
            )

    async def visit(port: int, who: str, client: tv.ClientPolicy) -> None:
        try:
            stream = await tv.open_tls_stream(
                "127.0.0.1", port, policy=client, server_hostname="localhost"
            )
            async with stream:
                replies = []
                for request in (b"GET /", b"GET /admin"):
                    await stream.send_all(request)
                    replies.append(await stream.receive_some())
                seen[who] = replies
        except tv.TLSError as exc:
            seen[who] = exc

    trust = ca.cert_pem.bytes()
    alice = identity(ca.issue_cert("alice.example"))
    serve = functools.partial(tv.serve_tls, handler, 0, policy, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(serve)
        port = listeners[0].transport_listener.socket.getsockname()[1]
        policy_for = functools.partial(tv.ClientPolicy, trust=trust)
        await visit(port, "alice", policy_for(identity=alice, post_handshake_auth=True))
        await visit(port, "anonymous", policy_for(post_handshake_auth=True))
        await visit(port, "legacy", policy_for(identity=alice))  # does not offer it
        nursery.cancel_scope.cancel()
    return seen


if __name__ == "__main__":
    for who, outcome in trio.run(main).items():
        print(f"{who}: {outcome!r}")
