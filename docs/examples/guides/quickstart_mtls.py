"""A first mutual-TLS server: serve_tls() with ClientAuth.REQUIRED."""

from __future__ import annotations

import functools

import trio
import trustme

import trio_verify as tv


def identity(cert: trustme.LeafCert) -> tv.Identity:
    pem = cert.private_key_and_cert_chain_pem.bytes()
    return tv.Identity.from_pem(pem, pem)


async def main() -> dict[str, object]:
    ca = trustme.CA()  # vouches for the server and for its clients
    server_policy = tv.ServerPolicy(
        identity=identity(ca.issue_cert("localhost")),
        client_auth=tv.ClientAuth.REQUIRED,  # every client needs a certificate,
        client_trust=ca.cert_pem.bytes(),  # issued by this CA
    )

    async def handler(stream: tv.TLSStream[trio.SocketStream]) -> None:
        # Only clients whose certificate was verified get here.
        client = stream.peer.certificate
        assert client is not None
        await stream.send_all(f"hello {client.dns_names[0]}".encode())

    seen: dict[str, object] = {}

    async def visit(port: int, who: str, cert: trustme.LeafCert | None) -> None:
        client_policy = tv.ClientPolicy(
            trust=ca.cert_pem.bytes(),
            identity=identity(cert) if cert is not None else None,
        )
        try:
            stream = await tv.open_tls_stream(
                "127.0.0.1", port, policy=client_policy, server_hostname="localhost"
            )
            async with stream:
                seen[who] = await stream.receive_some()
        except tv.TLSError as exc:
            seen[who] = exc

    serve = functools.partial(tv.serve_tls, handler, 0, server_policy, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(serve)
        port = listeners[0].transport_listener.socket.getsockname()[1]
        await visit(port, "alice", ca.issue_cert("alice.example"))
        await visit(port, "anonymous", None)  # presents no certificate
        nursery.cancel_scope.cancel()
    return seen


if __name__ == "__main__":
    for who, outcome in trio.run(main).items():
        print(f"{who}: {outcome!r}")
