"""A client pool: connections reused, sessions resumed, failures typed."""

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
    server_policy = tv.ServerPolicy(identity=identity(ca.issue_cert("localhost")))
    resumed: list[bool] = []  # what the server saw of each new connection

    async def handler(stream: tv.TLSStream[trio.SocketStream]) -> None:
        resumed.append(stream.session_reused)
        while request := await stream.receive_some():
            await stream.send_all(b"hello " + request)

    serve = functools.partial(tv.serve_tls, handler, 0, server_policy, host="127.0.0.1")
    seen: dict[str, object] = {}
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(serve)
        port = listeners[0].transport_listener.socket.getsockname()[1]

        client_policy = tv.ClientPolicy(trust=ca.cert_pem.bytes())
        async with tv.open_client_pool(policy=client_policy, max_per_host=2) as pool:

            async def get(name: str) -> bytes:
                async with pool.connection(
                    "127.0.0.1", port, server_hostname="localhost"
                ) as stream:
                    await stream.send_all(name.encode())
                    return await stream.receive_some()  # read the whole reply

            seen["alice"] = await get("alice")  # a new connection
            seen["bob"] = await get("bob")  # the same connection again
            async with trio.open_nursery() as requests:
                for n in range(4):  # four at once, on at most two connections
                    requests.start_soon(get, f"task {n}")
            seen["stats"] = pool.stats()

        # A client that does not trust the server's CA: refused, not retried.
        stranger = tv.ClientPolicy(trust=trustme.CA().cert_pem.bytes())
        async with tv.open_client_pool(policy=stranger) as pool:
            try:
                async with pool.connection(
                    "127.0.0.1", port, server_hostname="localhost"
                ):
                    pass
            except tv.CertificateVerificationError as exc:
                seen["stranger"] = exc
            seen["stranger stats"] = pool.stats()

        nursery.cancel_scope.cancel()
    seen["resumed"] = resumed
    return seen


if __name__ == "__main__":
    for what, value in trio.run(main).items():
        print(f"{what}: {value!r}")
