"""Mutual TLS: a server that requires a client certificate from its CA."""

from __future__ import annotations

import functools
import ssl
from typing import Literal

import trio
import trustme

import trio_verify as tv


def identity(cert: trustme.LeafCert) -> tv.Identity:
    pem = cert.private_key_and_cert_chain_pem.bytes()
    return tv.Identity.from_pem(pem, pem)


async def main(
    version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3,
    confirm: Literal["never", "auto", "always"] = "auto",
) -> dict[str, object]:
    ca = trustme.CA()  # vouches for the server and for the clients
    policy = tv.ServerPolicy(
        identity=identity(ca.issue_cert("localhost")),
        client_auth=tv.ClientAuth.REQUIRED,
        client_trust=ca.cert_pem.bytes(),
        maximum_version=version,
    )
    seen: dict[str, object] = {}

    async def handler(stream: tv.TLSStream[trio.SocketStream]) -> None:
        await stream.receive_some()
        client = stream.peer.certificate
        assert client is not None  # ClientAuth.REQUIRED: always there
        await stream.send_all(f"hello {client.dns_names[0]}".encode())

    def record(report: tv.HandshakeReport) -> None:
        if report.error is not None:  # failed handshakes never reach handler
            seen["server"] = report.error

    async def connect(port: int, who: str, cert: trustme.LeafCert | None) -> None:
        client = tv.ClientPolicy(
            trust=ca.cert_pem.bytes(),
            identity=identity(cert) if cert is not None else None,
            confirm_client_auth=confirm,
        )
        try:
            stream = await tv.open_tls_stream(
                "127.0.0.1", port, policy=client, server_hostname="localhost"
            )
            async with stream:
                await stream.send_all(b"hi")
                seen[who] = await stream.receive_some()
        except tv.TLSError as exc:
            seen[who] = exc

    serve = functools.partial(
        tv.serve_tls, handler, 0, policy, host="127.0.0.1", on_handshake=record
    )
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(serve)
        port = listeners[0].transport_listener.socket.getsockname()[1]
        await connect(port, "alice", ca.issue_cert("alice.example"))
        await connect(port, "anonymous", None)  # no client certificate
        nursery.cancel_scope.cancel()
    return seen


if __name__ == "__main__":
    for who, outcome in trio.run(main).items():
        print(f"{who}: {outcome!r}")
