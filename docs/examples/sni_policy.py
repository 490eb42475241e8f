"""One listener, a policy per server name, chosen from the ClientHello."""

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
    server_id = identity(ca.issue_cert("secure.example", "public.example"))
    policies = {
        "secure.example": tv.ServerPolicy(
            identity=server_id,
            client_auth=tv.ClientAuth.REQUIRED,
            client_trust=ca.cert_pem.bytes(),
            name="secure",
        ),
        "public.example": tv.ServerPolicy(identity=server_id, name="public"),
    }

    def select(hello: tv.ClientHello) -> tv.ServerPolicy | tv.Reject:
        policy = policies.get(hello.normalized_server_name or "")
        if policy is None:  # no server name, or one we do not serve
            reason = f"unknown server name {hello.server_name!r}"
            return tv.Reject(tv.Alert.UNRECOGNIZED_NAME, reason)
        return policy

    async def handler(stream: tv.TLSStream[trio.SocketStream]) -> None:
        await stream.send_all(f"welcome to {stream.policy.name}".encode())

    seen: dict[str, object] = {}

    async def connect(port: int, name: str, cert: trustme.LeafCert | None) -> None:
        policy = tv.ClientPolicy(
            trust=ca.cert_pem.bytes(), identity=identity(cert) if cert else None
        )
        who = f"{name} ({'with' if cert else 'no'} certificate)"
        try:
            stream = await tv.open_tls_stream(
                "127.0.0.1", port, policy=policy, server_hostname=name
            )
            async with stream:
                seen[who] = await stream.receive_some()
        except tv.TLSError as exc:
            seen[who] = exc

    serve = functools.partial(tv.serve_tls, handler, 0, select, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(serve)
        port = listeners[0].transport_listener.socket.getsockname()[1]
        await connect(port, "secure.example", ca.issue_cert("client.example"))
        await connect(port, "secure.example", None)
        await connect(port, "public.example", None)
        await connect(port, "other.example", None)
        nursery.cancel_scope.cancel()
    return seen


if __name__ == "__main__":
    for who, outcome in trio.run(main).items():
        print(f"{who}: {outcome!r}")
