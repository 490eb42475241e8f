"""What the engine fuzz targets share: fixed certificates, the four
configurations, and a clean client/server session to run up to a stage.

Import it after the target has imported trio_verify under
``atheris.instrument_imports``, so that the code under test is instrumented.

The certificates are Ed25519 with fixed keys, serials and dates: every run
builds the same ones, so a crashing input crashes again in the next run.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import trio_verify as tv
from trio_verify._engine import TLSEngine

HEADER = 4
"""Input layout: ``[configuration] [stage] [mode] [flags] payload...``."""
STAGES = 5
REQUEST = b"GET / HTTP/1.1\r\n\r\n"
RESPONSE = b"HTTP/1.1 204 No Content\r\n\r\n"


def _self_signed(
    name: str, eku: x509.ObjectIdentifier, seed: int
) -> tuple[bytes, bytes]:
    """A self-signed end-entity certificate that passes VERIFY_X509_STRICT.

    Byte for byte the same in every run (an Ed25519 key from ``seed``, whose
    signatures are deterministic, fixed serial and dates).
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
    """TLS 1.2 and 1.3, each without and with a client certificate."""
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


def pair(index: int) -> tuple[TLSEngine, TLSEngine]:
    """A fresh (client, server) engine pair of configuration ``index``."""
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


def shuttle(client: TLSEngine, server: TLSEngine, rounds: int = 8) -> None:
    """Run a clean handshake to its end (from wherever it is)."""
    for _ in range(rounds):
        client.do_handshake()
        server.do_handshake()
        server.receive_data(client.data_to_send())
        client.receive_data(server.data_to_send())
        if client.handshake_complete and server.handshake_complete:
            client.read(65536)  # TLS 1.3 tickets
            return
    raise AssertionError("the clean handshake did not complete")


def flip(data: bytes, payload: bytes) -> bytes:
    """``data`` with bits flipped: ``payload`` is triples of a 16-bit
    position and an XOR mask (0 counts as 1)."""
    out = bytearray(data)
    if not out:
        return payload
    for i in range(0, len(payload) - 2, 3):
        pos = int.from_bytes(payload[i : i + 2], "big") % len(out)
        out[pos] ^= payload[i + 2] or 1
    return bytes(out)


def mix(real: bytes, mode: int, payload: bytes) -> bytes:
    """Mode 0: the payload replaces ``real``; 1: flips bits in it; 2: follows it."""
    if mode % 3 == 0:
        return payload
    if mode % 3 == 1:
        return flip(real, payload)
    return real + payload


def call(engine: TLSEngine, method: Callable[[], object]) -> bool:
    """Run one engine method; ``False`` once it raised a TLSError.

    Any other exception is a crash, and so is a TLSError that does not
    describe itself (side, phase, message) or is not the engine's error.
    """
    try:
        method()
    except tv.TLSError as error:
        _check(error, engine)
        return False
    return True


def _check(error: tv.TLSError, engine: TLSEngine) -> None:
    assert error.side == engine.side, error
    assert isinstance(error.phase, tv.Phase), error
    assert str(error)
    assert engine.error is error


def drive(engine: TLSEngine, incoming: bytes, *, eof: bool) -> None:
    """Hand ``engine`` bytes (and maybe an end of file), then drive it as
    TLSStream would: handshake, then reads, a few rounds since nothing more
    arrives, and at the end, failed or not, a close.  What it sends must
    stay in proportion to what it was given."""
    engine.receive_data(incoming)
    if eof:
        engine.receive_eof()
    for _ in range(4):
        if not engine.handshake_complete:
            alive = call(engine, engine.do_handshake)
        else:
            alive = call(engine, lambda: engine.read(65536))
        out = engine.data_to_send()
        assert isinstance(out, bytes)
        assert len(out) <= 64 * 1024 + 4 * len(incoming)
        if not alive:
            break
    engine.start_close()
    engine.data_to_send()
