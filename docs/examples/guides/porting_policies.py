"""The same mutual-TLS service, configured with ssl contexts and with policies."""

from __future__ import annotations

import functools
import ssl
import tempfile
from pathlib import Path

import trio
import trustme

import trio_verify as tv


def with_contexts(d: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Before: the contexts as they were written for trio.SSLStream."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(d / "server.pem")
    server.load_verify_locations(d / "ca.pem")
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.create_default_context(cafile=d / "ca.pem")
    client.load_cert_chain(d / "alice.pem")
    return server, client


def with_policies(d: Path) -> tuple[tv.ServerPolicy, tv.ClientPolicy]:
    """After: the same choices, named for what they mean."""
    server = tv.ServerPolicy(
        identity=tv.Identity.from_files(d / "server.pem"),
        client_auth=tv.ClientAuth.REQUIRED,
        client_trust=d / "ca.pem",
    )
    client = tv.ClientPolicy(
        trust=d / "ca.pem", identity=tv.Identity.from_files(d / "alice.pem")
    )
    return server, client


async def handler(stream: tv.TLSStream[trio.SocketStream]) -> None:
    client = stream.peer.certificate
    assert client is not None
    await stream.send_all(f"hello {client.dns_names[0]}".encode())


async def run(
    server: tv.ServerPolicy | ssl.SSLContext, client: tv.ClientPolicy | ssl.SSLContext
) -> bytes:
    serve = functools.partial(tv.serve_tls, handler, 0, server, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(serve)
        port = listeners[0].transport_listener.socket.getsockname()[1]
        stream = await tv.open_tls_stream(
            "127.0.0.1", port, policy=client, server_hostname="localhost"
        )
        async with stream:
            reply = await stream.receive_some()
        nursery.cancel_scope.cancel()
    return reply


async def main() -> dict[str, object]:
    ca = trustme.CA()
    seen: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        ca.cert_pem.write_to_path(d / "ca.pem")
        for name, cert in (
            ("server", ca.issue_cert("localhost")),
            ("alice", ca.issue_cert("alice.example")),
        ):
            cert.private_key_and_cert_chain_pem.write_to_path(d / f"{name}.pem")

        server_context, client_context = with_contexts(d)
        seen["contexts"] = await run(server_context, client_context)
        server, client = with_policies(d)
        seen["policies"] = await run(server, client)

        # What each client configuration makes the server prove, in words.
        adopted = tv.ClientPolicy.from_ssl_context(client_context, has_identity=True)
        seen["client context"] = adopted.explain()
        seen["client policy"] = client.explain()
    return seen


if __name__ == "__main__":
    for what, value in trio.run(main).items():
        print(f"{what}: {value}")
