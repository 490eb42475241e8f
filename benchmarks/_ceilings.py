"""Ceilings: the same TLS work with no event loop, and OpenSSL's own cipher speed.

A pair of :class:`ssl.SSLObject` connected through memory BIOs does exactly
the encryption, decryption and record handling that a TLS stream does, with
no sockets, no scheduler and no stream logic: what is left is the cost of
TLS itself as seen from Python.  Both ends run in this one thread, as both
ends of a stream benchmark run in one process, so every measurement here
counts the TLS work of both ends: the sender's encryption and the receiver's
decryption, and the client's and the server's side of a handshake.
``openssl speed`` measures the bulk cipher alone, in C, one direction
(encryption only).
"""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess
import time
from dataclasses import dataclass

from ._material import SERVER_NAME, Side
from ._workloads import CHUNK, MESSAGE_SIZE

#: The memory-BIO measurements, when run in a stream benchmark's rotation.
TLS_ALONE_KEY = "memory_bio"
TLS_ALONE_LABEL = "TLS alone: memory BIOs, no event loop (reference)"

# TLS 1.3 cipher suites and the name ``openssl speed -evp`` knows them by.
_OPENSSL_CIPHERS = {
    "TLS_AES_256_GCM_SHA384": "aes-256-gcm",
    "TLS_AES_128_GCM_SHA256": "aes-128-gcm",
    "TLS_CHACHA20_POLY1305_SHA256": "chacha20-poly1305",
}


@dataclass
class MemoryPair:
    """A handshaken client and server connected by memory BIOs."""

    client: ssl.SSLObject
    client_in: ssl.MemoryBIO
    client_out: ssl.MemoryBIO
    server: ssl.SSLObject
    server_in: ssl.MemoryBIO
    server_out: ssl.MemoryBIO

    @classmethod
    def open(cls, side: Side) -> MemoryPair:
        client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        client = side.client_context.wrap_bio(
            client_in, client_out, server_hostname=SERVER_NAME
        )
        server = side.server_context.wrap_bio(server_in, server_out, server_side=True)
        pair = cls(client, client_in, client_out, server, server_in, server_out)
        done = [False, False]
        while not all(done):
            for index, obj in enumerate((client, server)):
                if not done[index]:
                    try:
                        obj.do_handshake()
                        done[index] = True
                    except ssl.SSLWantReadError:
                        pass
                pair.pump()
        # Deliver the server's session tickets, as a stream would.
        pair.drain(client)
        return pair

    def pump(self) -> None:
        """Move every pending byte to the other side."""
        if self.client_out.pending:
            self.server_in.write(self.client_out.read())
        if self.server_out.pending:
            self.client_in.write(self.server_out.read())

    @staticmethod
    def drain(obj: ssl.SSLObject) -> int:
        """Decrypt everything buffered for ``obj``; return the byte count."""
        got = 0
        while True:
            try:
                got += len(obj.read(CHUNK))
            except ssl.SSLWantReadError:
                return got


def cipher_name(side: Side) -> str:
    """The cipher suite the benchmarks negotiate."""
    cipher = MemoryPair.open(side).client.cipher()
    assert cipher is not None
    return cipher[0]


def bio_bulk(side: Side, total: int, *, server_to_client: bool = False) -> float:
    """Bytes per second, 64 KiB per write: one encryption and one decryption.

    Client to server, or server to client with ``server_to_client``.
    """
    pair = MemoryPair.open(side)
    chunk = bytes(CHUNK)
    writes = total // CHUNK
    if server_to_client:
        sender, out, into, receiver = (
            pair.server,
            pair.server_out,
            pair.client_in,
            pair.client,
        )
    else:
        sender, out, into, receiver = (
            pair.client,
            pair.client_out,
            pair.server_in,
            pair.server,
        )
    write = sender.write
    start = time.perf_counter()
    for _ in range(writes):
        write(chunk)
        into.write(out.read())
        MemoryPair.drain(receiver)
    return writes * CHUNK / (time.perf_counter() - start)


def bio_echo(side: Side, seconds: float) -> float:
    """64-byte round trips per second."""
    pair = MemoryPair.open(side)
    message = bytes(MESSAGE_SIZE)
    client, server = pair.client, pair.server
    clock = time.perf_counter
    done = 0
    start = clock()
    deadline = start + seconds
    while clock() < deadline:
        for _ in range(100):
            client.write(message)
            pair.server_in.write(pair.client_out.read())
            data = server.read(CHUNK)
            server.write(data)
            pair.client_in.write(pair.server_out.read())
            client.read(CHUNK)
        done += 100
    return done / (clock() - start)


def bio_handshakes(side: Side, seconds: float) -> float:
    """Complete handshakes per second, both ends in this thread."""
    clock = time.perf_counter
    done = 0
    start = clock()
    deadline = start + seconds
    while clock() < deadline:
        MemoryPair.open(side)
        done += 1
    return done / (clock() - start)


def openssl_speed(cipher_suite: str, seconds: int) -> tuple[str, float] | None:
    """``openssl speed -evp`` for the suite's cipher at 16 KiB blocks.

    Returns the cipher name and bytes per second, or ``None`` when the
    ``openssl`` command is missing or its output cannot be read.
    """
    name = _OPENSSL_CIPHERS.get(cipher_suite)
    openssl = shutil.which("openssl")
    if name is None or openssl is None:
        return None
    command = [
        openssl,
        "speed",
        "-mr",
        "-evp",
        name,
        "-seconds",
        str(seconds),
        "-bytes",
        "16384",
    ]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 60, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    # Machine-readable result: "+F:<n>:<CIPHER>:<bytes per second>...".
    match = re.search(r"^\+F:\d+:[^:]+:([0-9.]+)", result.stdout, re.MULTILINE)
    if match is None:
        return None
    return name, float(match.group(1))
