"""A tour of trio_verify on loopback, with certificates made in memory.

Runs a mutual-TLS server and a few clients against it, and prints what each
side observed: who was let in, and for everyone else the typed error, the
phase it failed in, and the alert that crossed the wire.

    python examples/demo.py
"""

from __future__ import annotations

import datetime as dt
import ssl

import trio
import trustme

import trio_verify as tv


def _identity(cert: trustme.LeafCert) -> tv.Identity:
    return tv.Identity.from_pem(
        b"".join(blob.bytes() for blob in cert.cert_chain_pems),
        cert.private_key_pem.bytes(),
    )


def _describe(outcome: BaseException | str) -> str:
    if isinstance(outcome, tv.TLSError):
        alert = outcome.alert_sent or outcome.alert_received
        return (
            f"{type(outcome).__name__} in {outcome.phase.name} "
            f"(surfaced in {outcome.surfaced_in}, alert {alert})"
        )
    if isinstance(outcome, BaseException):
        return f"{type(outcome).__name__}: {outcome}"
    return outcome


async def _one_connection(
    server_policy: tv.ServerPolicy,
    client_policy: tv.ClientPolicy,
    version: ssl.TLSVersion,
) -> tuple[BaseException | str, BaseException | str]:
    outcomes: dict[str, BaseException | str] = {}
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def serve() -> None:
        transport = await listeners[0].accept()
        stream = tv.TLSStream(transport, server_policy, server_side=True)
        try:
            await stream.do_handshake()
            request = await stream.receive_some()
            await stream.send_all(b"hello " + request)
            outcomes["server"] = "accepted the client"
        except tv.TLSError as exc:
            outcomes["server"] = exc
        finally:
            await stream.aclose()

    async def connect() -> None:
        try:
            stream = await tv.open_tls_stream(
                "127.0.0.1", port, policy=client_policy, server_hostname="localhost"
            )
            async with stream:
                await stream.send_all(b"demo")
                reply = await stream.receive_some()
                outcomes["client"] = f"got {reply!r}"
        except tv.TLSError as exc:
            outcomes["client"] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        nursery.start_soon(connect)
    await listeners[0].aclose()
    return outcomes["client"], outcomes["server"]


async def main() -> None:
    ca = trustme.CA()
    stranger = trustme.CA()
    now = dt.datetime.now(dt.UTC)
    server_cert = ca.issue_cert("localhost")
    expired_server = ca.issue_cert(
        "localhost",
        not_before=now - dt.timedelta(days=60),
        not_after=now - dt.timedelta(days=30),
    )
    good_client = ca.issue_cert("client.example")
    foreign_client = stranger.issue_cert("client.example")

    def server(cert: trustme.LeafCert, auth: tv.ClientAuth) -> tv.ServerPolicy:
        return tv.ServerPolicy(
            identity=_identity(cert),
            client_auth=auth,
            client_trust=ca.cert_pem.bytes()
            if auth is not tv.ClientAuth.NONE
            else None,
        )

    def client(cert: trustme.LeafCert | None) -> tv.ClientPolicy:
        return tv.ClientPolicy(
            trust=ca.cert_pem.bytes(),
            identity=_identity(cert) if cert is not None else None,
        )

    mtls = server(server_cert, tv.ClientAuth.REQUIRED)
    optional = server(server_cert, tv.ClientAuth.OPTIONAL)
    expired = server(expired_server, tv.ClientAuth.NONE)
    cases = [
        ("mTLS, client has a good certificate", mtls, client(good_client)),
        ("mTLS, client sends no certificate", mtls, client(None)),
        ("mTLS, client certificate from another CA", mtls, client(foreign_client)),
        ("optional client auth, no certificate", optional, client(None)),
        ("server certificate expired", expired, client(None)),
    ]
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        print(f"== {version.name} ==")
        for title, server_policy, client_policy in cases:
            pinned_server = _with_version(server_policy, version)
            client_seen, server_seen = await _one_connection(
                pinned_server, client_policy, version
            )
            print(f"- {title}")
            print(f"    client: {_describe(client_seen)}")
            print(f"    server: {_describe(server_seen)}")


def _with_version(policy: tv.ServerPolicy, version: ssl.TLSVersion) -> tv.ServerPolicy:
    import dataclasses

    return dataclasses.replace(policy, maximum_version=version)


if __name__ == "__main__":
    trio.run(main)
