"""Devices with self-signed certificates, accepted because they are pinned."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

import trio
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from cryptography.x509.oid import NameOID

import trio_verify as tv


def self_signed(name: str, days: tuple[int, int] = (-1, 365)) -> tv.Identity:
    """A self-signed certificate, as a device makes for itself at first boot."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start, end = (datetime.now(UTC) + timedelta(days=d) for d in days)
    cert = (
        x509.CertificateBuilder(subject, subject, key.public_key())  # self-signed
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    return tv.Identity.from_pem(cert.public_bytes(Encoding.PEM), key_pem)


async def main() -> dict[str, object]:
    devices = {
        "sensor-1": self_signed("sensor-1.example"),
        "sensor-2": self_signed("sensor-2.example", days=(-30, -1)),  # expired
        "intruder": self_signed("sensor-1.example"),  # same name, other key
    }
    ca = trustme.CA()  # only for the server's own certificate
    pem = ca.issue_cert("localhost").private_key_and_cert_chain_pem.bytes()
    policy = tv.ServerPolicy(
        identity=tv.Identity.from_pem(pem, pem),
        client_auth=tv.ClientAuth.REQUIRED,
        # The server knows the devices' certificates, never their keys.
        pinned_clients=[devices[n].certificate for n in ("sensor-1", "sensor-2")],
    )
    seen: dict[str, object] = {}

    async def handler(stream: tv.TLSStream[trio.SocketStream]) -> None:
        await stream.send_all(b"welcome")

    def record(report: tv.HandshakeReport) -> None:
        if report.error is not None:
            seen[f"server, {report.error_type}"] = report.error

    serve = functools.partial(
        tv.serve_tls, handler, 0, policy, host="127.0.0.1", on_handshake=record
    )
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(serve)
        port = listeners[0].transport_listener.socket.getsockname()[1]
        for name, device in devices.items():
            client = tv.ClientPolicy(trust=ca.cert_pem.bytes(), identity=device)
            try:
                stream = await tv.open_tls_stream(
                    "127.0.0.1", port, policy=client, server_hostname="localhost"
                )
                async with stream:
                    seen[name] = await stream.receive_some()
            except tv.TLSError as exc:
                seen[name] = exc
        nursery.cancel_scope.cancel()
    return seen


if __name__ == "__main__":
    for who, outcome in trio.run(main).items():
        print(f"{who}: {outcome!r}")
