"""Authorization after verification: only listed SPIFFE IDs may connect."""

from __future__ import annotations

import functools
import ssl
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
    load_pem_private_key,
)

import trio_verify as tv

ALLOWED = {"spiffe://example/client"}


def authorize(peer: tv.PeerInfo) -> bool:
    """Runs after the client's chain has been verified against the CA."""
    uris = peer.certificate.uris if peer.certificate is not None else ()
    return any(uri in ALLOWED for uri in uris)


def svid(ca: trustme.CA, spiffe_id: str) -> tv.Identity:
    """An X.509-SVID: a client certificate named only by its URI."""
    ca_key = load_pem_private_key(ca.private_key_pem.bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    issuer = x509.load_pem_x509_certificate(ca.cert_pem.bytes()).subject
    key = ec.generate_private_key(ec.SECP256R1())
    uri = x509.UniformResourceIdentifier(spiffe_id)
    cert = (
        x509.CertificateBuilder(issuer, x509.Name([]), key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.now(UTC))
        .not_valid_after(datetime.now(UTC) + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([uri]), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    return tv.Identity.from_pem(cert.public_bytes(Encoding.PEM), key_pem)


async def main(version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3) -> dict[str, object]:
    ca = trustme.CA()
    trust = ca.cert_pem.bytes()
    pem = ca.issue_cert("localhost").private_key_and_cert_chain_pem.bytes()
    policy = tv.ServerPolicy(
        identity=tv.Identity.from_pem(pem, pem),
        client_auth=tv.ClientAuth.REQUIRED,
        client_trust=trust,
        authorize=authorize,
        maximum_version=version,
    )
    seen: dict[str, object] = {}

    async def handler(stream: tv.TLSStream[trio.SocketStream]) -> None:
        await stream.send_all(b"authorized")

    def record(report: tv.HandshakeReport) -> None:
        if report.error is not None:
            seen["server"] = report.error

    serve = functools.partial(
        tv.serve_tls, handler, 0, policy, host="127.0.0.1", on_handshake=record
    )
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(serve)
        port = listeners[0].transport_listener.socket.getsockname()[1]
        for spiffe_id in ("spiffe://example/client", "spiffe://example/intruder"):
            client = tv.ClientPolicy(trust=trust, identity=svid(ca, spiffe_id))
            try:
                stream = await tv.open_tls_stream(
                    "127.0.0.1", port, policy=client, server_hostname="localhost"
                )
                async with stream:
                    seen[spiffe_id] = await stream.receive_some()
            except tv.TLSError as exc:
                seen[spiffe_id] = exc
        nursery.cancel_scope.cancel()
    return seen


if __name__ == "__main__":
    for who, outcome in trio.run(main).items():
        print(f"{who}: {outcome!r}")
