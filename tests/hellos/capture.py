"""Regenerate the ClientHello corpus in this directory.

Run it from the repository root with the development environment::

    python tests/hellos/capture.py

Each ``.bin`` file is the first flight a real client sent to a loopback
listener that answered nothing: the records carrying its ClientHello, and for
``s_client_early_data`` also what the client sent after it unprompted (a
ChangeCipherSpec and encrypted early data).  The clients are trio_verify's
own, Python's :mod:`ssl`, and ``openssl s_client`` with the options below.
The listener frames records itself, independently of trio_verify, so the
corpus does not depend on the code it tests.  The files differ from run to
run (random values, key shares); the tests check only what the options make
certain.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio
import trustme

import trio_verify as tv

HERE = Path(__file__).resolve().parent

Client = Callable[[int], Awaitable[None]]

MANY_PROTOCOLS = (
    "h2",
    "http/1.1",
    *(f"x-proto-{i:02d}.example/1.0" for i in range(40)),
)

# Options given to ``openssl s_client`` for each file.  s_client sends no SNI
# when it connects to an IP address unless -servername says so.
S_CLIENT: dict[str, list[str]] = {
    "s_client_tls12": ["-tls1_2", "-servername", "tls12.example"],
    "s_client_tls13": ["-tls1_3", "-servername", "tls13.example"],
    "s_client_alpn": ["-alpn", "h2,http/1.1", "-servername", "alpn.example"],
    "s_client_no_sni": ["-noservername"],
    "s_client_groups": [
        "-groups",
        "X25519:P-256:P-384:P-521:ffdhe2048",
        "-servername",
        "groups.example",
    ],
    # A key share for the first group only: ffdhe4096 makes it 512 bytes.
    "s_client_ffdhe": ["-groups", "ffdhe4096:X25519", "-servername", "ffdhe.example"],
    "s_client_sigalgs": [
        "-sigalgs",
        "ECDSA+SHA256:RSA-PSS+SHA256:ed25519",
        "-servername",
        "sigalgs.example",
    ],
    # Records of at most 512 bytes: the ClientHello spans two.
    "s_client_split": [
        "-max_send_frag",
        "512",
        "-groups",
        "ffdhe4096:X25519",
        "-servername",
        "split.example",
    ],
    # 42 ALPN protocols in records of at most 512 bytes: the ClientHello
    # spans three.
    "s_client_many_records": [
        "-max_send_frag",
        "512",
        "-alpn",
        ",".join(MANY_PROTOCOLS),
        "-servername",
        "many.example",
    ],
}


def flight_complete(data: bytes) -> bool:
    """Whether ``data`` holds whole records carrying a whole handshake message."""
    pos = 0
    handshake = b""
    while len(data) - pos >= 5:
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        if len(data) - pos - 5 < length:
            return False
        if data[pos] == 22:
            handshake += data[pos + 5 : pos + 5 + length]
        pos += 5 + length
        if len(handshake) >= 4 and len(handshake) - 4 >= int.from_bytes(
            handshake[1:4], "big"
        ):
            return True
    return False


async def capture(client: Client, *, linger: float = 0.0) -> bytes:
    """Run ``client`` against a silent listener; return what it sent first.

    After the ClientHello is complete, keep reading for ``linger`` seconds to
    collect what the client sends without waiting for an answer.
    """
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    data = b""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client, port)
        with trio.fail_after(10):
            stream = await listener.accept()
        async with stream:
            with trio.fail_after(10):
                while not flight_complete(data):
                    chunk = await stream.receive_some()
                    if not chunk:
                        raise RuntimeError(f"client closed after {data!r}")
                    data += chunk
            with trio.move_on_after(linger):
                while chunk := await stream.receive_some():
                    data += chunk
        await listener.aclose()
        nursery.cancel_scope.deadline = trio.current_time() + 5
    return data


def s_client(*args: str) -> Client:
    async def run(port: int) -> None:
        await trio.run_process(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args],
            stdin=b"",
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )

    return run


def stream_client(
    policy: tv.ClientPolicy | ssl.SSLContext, server_hostname: str
) -> Client:
    async def run(port: int) -> None:
        sock = await trio.open_tcp_stream("127.0.0.1", port)
        stream = tv.TLSStream(sock, policy, server_hostname=server_hostname)
        # The listener never answers: the handshake fails when it closes.
        with contextlib.suppress(tv.TLSError, trio.BrokenResourceError):
            await stream.do_handshake()
        await stream.aclose()

    return run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def resumable_session(directory: Path) -> Path:
    """A TLS 1.3 session that allows early data, from a real ``s_server``."""
    ca = trustme.CA()
    pem = directory / "server.pem"
    ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(str(pem))
    port = free_port()
    server = subprocess.Popen(
        [
            *("openssl", "s_server", "-accept", f"127.0.0.1:{port}"),
            *("-cert", str(pem), "-key", str(pem)),
            *("-early_data", "-quiet"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    session = directory / "session.pem"
    try:
        for _ in range(50):
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=0.1),
            ):
                break
            time.sleep(0.1)
        # stdin stays open for a second so that s_client reads the tickets
        # the server sends after the handshake before it quits.
        client = subprocess.Popen(
            [
                *("openssl", "s_client", "-connect", f"127.0.0.1:{port}"),
                *("-servername", "early.example", "-sess_out", str(session)),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1)
        client.communicate(b"", timeout=10)
    finally:
        server.terminate()
        server.wait()
    return session


async def main() -> None:
    files: dict[str, bytes] = {}
    files["trio_verify_client"] = await capture(
        stream_client(tv.ClientPolicy(alpn=("h2", "http/1.1")), "api.example.com")
    )
    ctx = ssl.create_default_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    files["python_ssl_tls12"] = await capture(stream_client(ctx, "Legacy.Example.ORG."))
    for name, args in S_CLIENT.items():
        files[name] = await capture(s_client(*args))
    with tempfile.TemporaryDirectory() as tmp:
        session = await trio.to_thread.run_sync(resumable_session, Path(tmp))
        early = Path(tmp) / "early.txt"
        early.write_bytes(b"GET / HTTP/1.1\r\nHost: early.example\r\n\r\n")
        files["s_client_early_data"] = await capture(
            s_client(
                "-sess_in",
                str(session),
                "-early_data",
                str(early),
                "-servername",
                "early.example",
            ),
            linger=0.5,
        )
    for name, data in files.items():
        path = HERE / f"{name}.bin"
        path.write_bytes(data)
        print(f"{path.relative_to(HERE.parent.parent)}: {len(data)} bytes")


if __name__ == "__main__":
    trio.run(main)
