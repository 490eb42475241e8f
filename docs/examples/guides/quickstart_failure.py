"""What a failure looks like, on both ends of the connection."""

from __future__ import annotations

import functools

import trio
import trustme

import trio_verify as tv


async def main() -> dict[str, object]:
    ca = trustme.CA()  # not in the system trust store
    pem = ca.issue_cert("localhost").private_key_and_cert_chain_pem.bytes()
    server_policy = tv.ServerPolicy(identity=tv.Identity.from_pem(pem, pem))

    async def handler(stream: tv.TLSStream[trio.SocketStream]) -> None:
        await stream.send_all(b"never sent: the handshake fails")

    seen: dict[str, object] = {}
    reported = trio.Event()

    def record(report: tv.HandshakeReport) -> None:
        seen["server"] = report.error  # what the server observed
        reported.set()

    serve = functools.partial(
        tv.serve_tls, handler, 0, server_policy, host="127.0.0.1", on_handshake=record
    )
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(serve)
        port = listeners[0].transport_listener.socket.getsockname()[1]
        try:
            # No policy: the default ClientPolicy(), which trusts only the
            # system's CAs, and so not this server.
            await tv.open_tls_stream("127.0.0.1", port, server_hostname="localhost")
        except tv.CertificateVerificationError as exc:
            seen["client"] = exc
        await reported.wait()  # the server's side of the same failure
        nursery.cancel_scope.cancel()
    return seen


if __name__ == "__main__":
    seen = trio.run(main)
    for side in ("client", "server"):
        error = seen[side]
        assert isinstance(error, tv.TLSError)
        print(f"{side}: {type(error).__name__}")
        print(f"  phase {error.phase.name}, surfaced in {error.surfaced_in}")
        print(f"  alert sent: {error.alert_sent}, received: {error.alert_received}")
        print(f"  {error}")
