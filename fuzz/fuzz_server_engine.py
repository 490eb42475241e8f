#!/usr/bin/env python3
"""Coverage-guided fuzz target: a server TLSEngine after a real handshake prefix.

Each input runs a real client engine and a real server engine in memory up to
a *stage*, then hands the server bytes chosen by the input instead of (or
mixed into) what the client really sent next, and drives the server on as
TLSStream would.  The server may make progress or raise a
:class:`~trio_verify.TLSError`; any other exception is a crash, and so is a
TLSError that does not describe itself (side, phase, message).

Input layout: ``[configuration] [stage] [mode] [flags] payload...``

* configuration: TLS 1.2 or 1.3, with or without a client certificate;
* stage: where the session is when the payload arrives: 0 before the
  ClientHello, 1 after it (the client's second flight is next), 2 after the
  handshake (application data is next), 3 at the client's close_notify, 4
  after the session closed (a replay of old records);
* mode: 0 the payload replaces what the client sent next, 1 the payload
  flips bits in it (pairs of a 16-bit position and an XOR mask), 2 the
  payload follows it;
* flags: bit 0 an end of file after the payload.

A raw ClientHello (tests/hellos) becomes a useful input with the 4-byte
header ``00 00 00 00``; fuzz/run.py seeds the corpus that way.
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import Callable
from datetime import UTC, datetime

import atheris
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

with atheris.instrument_imports(include=["trio_verify"]):
    import trio_verify as tv
    from trio_verify._engine import TLSEngine

HEADER = 4
STAGES = 5


def _self_signed(
    name: str, eku: x509.ObjectIdentifier, seed: int
) -> tuple[bytes, bytes]:
    """A self-signed end-entity certificate that passes VERIFY_X509_STRICT.

    Byte for byte the same in every run (an Ed25519 key from ``seed``, whose
    signatures are deterministic, fixed serial and dates), so that a crashing
    input found in one run crashes the same way in the next.
    """
    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes((seed,)) * 32)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(seed)
        .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2049, 12, 31, tzinfo=UTC))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .sign(key, None)
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _configurations() -> list[tuple[tv.ClientPolicy, tv.ServerPolicy]]:
    server_cert, server_key = _self_signed(
        "localhost", ExtendedKeyUsageOID.SERVER_AUTH, 1
    )
    client_cert, client_key = _self_signed(
        "client.example", ExtendedKeyUsageOID.CLIENT_AUTH, 2
    )
    server_identity = tv.Identity.from_pem(server_cert, server_key)
    client_identity = tv.Identity.from_pem(client_cert, client_key)
    found = []
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        for mutual in (False, True):
            client = tv.ClientPolicy(
                pinned=server_cert,
                identity=client_identity if mutual else None,
                minimum_version=version,
                maximum_version=version,
            )
            server = tv.ServerPolicy(
                identity=server_identity,
                client_auth=tv.ClientAuth.REQUIRED if mutual else tv.ClientAuth.NONE,
                pinned_clients=client_cert if mutual else (),
                authorize=(lambda peer: peer.certificate is not None)
                if mutual
                else None,
            )
            client.context  # noqa: B018 - build both contexts once, up front
            server.context  # noqa: B018
            found.append((client, server))
    return found


CONFIGURATIONS = _configurations()


def _pair(index: int) -> tuple[TLSEngine, TLSEngine]:
    client_policy, server_policy = CONFIGURATIONS[index % len(CONFIGURATIONS)]
    client = TLSEngine(
        client_policy.context,
        server_side=False,
        server_hostname="localhost",
        pinned=frozenset(cert.der for cert in client_policy.pinned),
    )
    server = TLSEngine(
        server_policy.context,
        server_side=True,
        pinned=frozenset(cert.der for cert in server_policy.pinned_clients),
        authorize=server_policy.authorize,
    )
    return client, server


def _shuttle(client: TLSEngine, server: TLSEngine, rounds: int = 8) -> None:
    for _ in range(rounds):
        client.do_handshake()
        server.do_handshake()
        server.receive_data(client.data_to_send())
        client.receive_data(server.data_to_send())
        if client.handshake_complete and server.handshake_complete:
            client.read(65536)  # TLS 1.3 tickets
            return
    raise AssertionError("the clean handshake did not complete")


def _advance(client: TLSEngine, server: TLSEngine, stage: int) -> bytes:
    """Run the session to ``stage``; the bytes the client would send next."""
    client.do_handshake()
    if stage == 0:
        return client.data_to_send()
    if stage == 1:
        server.receive_data(client.data_to_send())
        server.do_handshake()
        client.receive_data(server.data_to_send())
        client.do_handshake()
        return client.data_to_send()
    _shuttle(client, server)
    client.write(b"GET / HTTP/1.1\r\n\r\n")
    request = client.data_to_send()
    if stage == 2:
        return request
    server.receive_data(request)
    assert server.read(65536) == b"GET / HTTP/1.1\r\n\r\n"
    client.start_close()
    close_notify = client.data_to_send()
    if stage == 3:
        return close_notify
    server.receive_data(close_notify)
    assert server.read(65536) == b""
    server.unwrap()
    server.data_to_send()
    return request  # stage 4: an old record, replayed after the close


def _flip(data: bytes, payload: bytes) -> bytes:
    out = bytearray(data)
    if not out:
        return payload
    for i in range(0, len(payload) - 2, 3):
        pos = int.from_bytes(payload[i : i + 2], "big") % len(out)
        out[pos] ^= payload[i + 2] or 1
    return bytes(out)


def _check(error: tv.TLSError, engine: TLSEngine) -> None:
    assert error.side == "server", error
    assert isinstance(error.phase, tv.Phase), error
    assert str(error)
    assert engine.error is error


def _call(engine: TLSEngine, method: Callable[[], object]) -> bool:
    """Run one engine method; ``False`` once it raised a TLSError."""
    try:
        method()
    except tv.TLSError as error:
        _check(error, engine)
        return False
    return True


def TestOneInput(data: bytes) -> None:
    if len(data) < HEADER:
        return
    config, stage, mode, flags = data[:HEADER]
    payload = data[HEADER:]
    stage %= STAGES
    client, server = _pair(config)
    real = _advance(client, server, stage)
    if mode % 3 == 0:
        incoming = payload
    elif mode % 3 == 1:
        incoming = _flip(real, payload)
    else:
        incoming = real + payload
    server.receive_data(incoming)
    if flags & 1:
        server.receive_eof()
    # As TLSStream drives a server: handshake, then reads; at most a few
    # rounds, since nothing more arrives.
    for _ in range(4):
        if not server.handshake_complete:
            alive = _call(server, server.do_handshake)
        else:
            alive = _call(server, lambda: server.read(65536))
        out = server.data_to_send()
        assert isinstance(out, bytes)
        assert len(out) <= 64 * 1024 + 4 * len(incoming)
        if not alive:
            break
    # What the stream does at the end, failed or not: close.
    server.start_close()
    server.data_to_send()


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
