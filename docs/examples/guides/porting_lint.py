"""What happens to an ssl.SSLContext passed to TLSStream in place of a policy."""

from __future__ import annotations

import dataclasses
import functools
import ssl
import warnings
from collections.abc import Sequence

import trio
import trustme

import trio_verify as tv


@dataclasses.dataclass
class Outcome:
    warnings: list[str]
    refused: tv.PolicyError | None = None  # refused before connecting
    verified: bool | None = None  # connected: was the server verified?


async def connect(
    port: int,
    context: ssl.SSLContext,
    *,
    spki_pins: Sequence[str] = (),
    allow_unauthenticated: bool = False,
) -> Outcome:
    """Connect with ``context`` as code written for trio.SSLStream does, or
    adopt it explicitly first when there is more to say about it."""
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", tv.PolicyWarning)
        try:
            policy: ssl.SSLContext | tv.ClientPolicy = context
            if spki_pins or allow_unauthenticated:
                policy = tv.ClientPolicy.from_ssl_context(
                    context,
                    spki_pins=spki_pins,
                    allow_unauthenticated=allow_unauthenticated,
                )
            stream = tv.TLSStream(tcp, policy, server_hostname="localhost")
        except tv.PolicyError as exc:
            refused: tv.PolicyError | None = exc
        else:
            refused = None
    outcome = Outcome([str(w.message) for w in caught], refused)
    if refused is not None:  # refused before a single byte was sent
        await tcp.aclose()
        return outcome
    async with stream:
        await stream.do_handshake()
        outcome.verified = stream.peer.chain_verified
    return outcome


async def main() -> dict[str, Outcome]:
    ca = trustme.CA()
    server_cert = ca.issue_cert("localhost")
    pem = server_cert.private_key_and_cert_chain_pem.bytes()
    server_identity = tv.Identity.from_pem(pem, pem)

    def client_context(
        verify_mode: ssl.VerifyMode = ssl.CERT_REQUIRED, check_hostname: bool = True
    ) -> ssl.SSLContext:
        context = ssl.create_default_context()
        ca.configure_trust(context)
        context.check_hostname = check_hostname
        context.verify_mode = verify_mode
        return context

    async def handler(stream: tv.TLSStream[trio.SocketStream]) -> None:
        pass

    server_policy = tv.ServerPolicy(identity=server_identity)
    serve = functools.partial(tv.serve_tls, handler, 0, server_policy, host="127.0.0.1")
    seen: dict[str, Outcome] = {}
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(serve)
        port = listeners[0].transport_listener.socket.getsockname()[1]

        no_name_check = client_context(check_hostname=False)
        no_verification = client_context(ssl.CERT_NONE, check_hostname=False)
        seen["CERT_REQUIRED"] = await connect(port, client_context())
        seen["CERT_OPTIONAL"] = await connect(port, client_context(ssl.CERT_OPTIONAL))
        seen["check_hostname=False"] = await connect(port, no_name_check)
        seen["CERT_NONE"] = await connect(port, no_verification)

        # What makes the last two acceptable: a pin that identifies the
        # server, or saying out loud that nothing does.
        pin = server_identity.certificate.spki_pin
        seen["check_hostname=False, pinned"] = await connect(
            port, no_name_check, spki_pins=[pin]
        )
        seen["CERT_NONE, allowed"] = await connect(
            port, no_verification, allow_unauthenticated=True
        )
        nursery.cancel_scope.cancel()
    return seen


if __name__ == "__main__":
    for case, outcome in trio.run(main).items():
        print(f"{case}:")
        if outcome.refused is not None:
            print(f"  PolicyError: {outcome.refused}")
        else:
            print(f"  connected, server verified: {outcome.verified}")
        for warning in outcome.warnings:
            print(f"  PolicyWarning: {warning}")
