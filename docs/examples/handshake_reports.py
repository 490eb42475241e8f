"""Handshake reports: the on_handshake hook and the trio_verify log lines."""

from __future__ import annotations

import functools
import logging

import trio
import trustme

import trio_verify as tv


def identity(ca: trustme.CA, name: str) -> tv.Identity:
    cert = ca.issue_cert(
        name, common_name=name, organization_name="Example", organization_unit_name="IT"
    )
    pem = cert.private_key_and_cert_chain_pem.bytes()
    return tv.Identity.from_pem(pem, pem)


async def main() -> list[tv.HandshakeReport]:
    ca = trustme.CA(organization_name="Example", organization_unit_name="Clients CA")
    stranger = trustme.CA(organization_name="Elsewhere", organization_unit_name="CA")
    policy = tv.ServerPolicy(
        identity=identity(ca, "localhost"),
        client_auth=tv.ClientAuth.REQUIRED,
        client_trust=ca.cert_pem.bytes(),
        name="api",  # names the policy in reports and log lines
    )
    reports: list[tv.HandshakeReport] = []

    async def handler(stream: tv.TLSStream[trio.SocketStream]) -> None:
        await stream.send_all(b"hello")

    serve = functools.partial(
        tv.serve_tls, handler, 0, policy, host="127.0.0.1", on_handshake=reports.append
    )
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(serve)
        port = listeners[0].transport_listener.socket.getsockname()[1]
        for issuer, name in ((ca, "alice.example"), (stranger, "mallory.example")):
            client = tv.ClientPolicy(
                trust=ca.cert_pem.bytes(), identity=identity(issuer, name)
            )
            try:
                stream = await tv.open_tls_stream(
                    "127.0.0.1", port, policy=client, server_hostname="localhost"
                )
                async with stream:
                    await stream.receive_some()
            except tv.TLSError:
                pass  # the server's side of it is in the report
        nursery.cancel_scope.cancel()
    return reports


if __name__ == "__main__":
    # One line per handshake: INFO when it succeeded, WARNING when it failed.
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("trio_verify").setLevel(logging.INFO)
    for report in trio.run(main):
        print(report.error_type or "ok", report.phase, report.alert_sent)
