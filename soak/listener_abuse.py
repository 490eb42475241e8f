"""Soak: thousands of connections, most of them abusive, against one serve_tls.

The server runs in a child process (this script started with ``--serve``),
so that its resident memory and open file descriptors can be read from
``/proc`` without counting the clients.  Its handshake timeout is 1 second
and it requires a client certificate (mutual TLS).

Phases, all over loopback:

1. *baseline*: good clients only, to measure handshake latency unloaded;
2. *abuse*: ``--connections`` connections (3000 by default), at most
   ``--parallel`` at a time, in a shuffled mix of good clients, slowloris
   ClientHellos (a few bytes every 100 ms), half-open sockets (connect, send
   nothing), garbage, oversized ClientHellos (a handshake message longer than
   131396 bytes), and clients with an expired certificate or one from another
   CA, in ``--rounds`` rounds;
3. *settle*, after every round: nothing connects; the server's descriptor
   count must come back to what it was before the abuse within ``--settle``
   seconds.  Then its memory is measured: RSS, and, with ``--trim`` (the
   default with glibc), RSS again after a full garbage collection and
   glibc's ``malloc_trim(0)``, with the bytes malloc has in use and Python's
   allocated block count.

Checked: every good client completed its handshake and got its request
echoed; every abusive connection was closed by the server (none left
hanging); the server counted as many handshakes as there were connections;
its descriptors came back after every round; and its memory is bounded,
by one of two checks:

* with ``--trim``, ``rss_after_trim_bounded``: RSS after the collection and
  the trim, after the last of R rounds, is at most 2 MiB plus 64 bytes per
  connection of rounds 2 to R above the same after round 1.  What the trim
  leaves is memory in use and the pages of Python's own object arenas;
  neither may grow with the connections.
* with ``--no-trim``, ``rss_levels_off``: RSS after the last round is at
  most 6 MiB plus 128 bytes per connection of rounds ceil(R/2)+1 to R above
  RSS after round ceil(R/2).  Allocators keep freed memory for reuse, so
  RSS rises over the first rounds and then stays level; a leak keeps rising
  with every connection.

A leak of 2 KiB per connection adds at least 4000 KiB after the trim over
rounds 2 and 3 of the default run (bound 2173 KiB); over 30000 connections
in 10 rounds, at least 54000 KiB after the trim over rounds 2 to 10 (bound
3735 KiB), or without the trim at least 30000 KiB over rounds 6 to 10
(bound 8019 KiB).  Without the trim, the default run catches only leaks of
about 6 KiB per connection or more.  The bounds are at least twice the
largest growth measured without a leak (docs/reliability.rst).  The script
exits 1 when a check fails.

Linux only (``/proc``).  Usage::

    python soak/listener_abuse.py [--connections 3000] [--rounds 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import gc
import json
import logging
import os
import platform
import random
import resource
import shlex
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

import trio
import trustme

import trio_verify as tv

HOST = "127.0.0.1"
SERVER_NAME = "localhost"
HANDSHAKE_TIMEOUT = 1.0
MAX_HELLO = 131396  # the largest ClientHello body trio_verify accepts
REQUEST = bytes(range(64))
# An abusive client gives up on its own after this long; the server should
# have closed it after HANDSHAKE_TIMEOUT.
CLIENT_PATIENCE = 5.0
# Memory bounds, in KiB and bytes per connection; see the module docstring.
PLATEAU_FIXED_KIB = 6144
PLATEAU_PER_CONNECTION = 128
TRIMMED_FIXED_KIB = 2048
TRIMMED_PER_CONNECTION = 64

MIX = {
    "good": 30,
    "slowloris": 10,
    "half_open": 10,
    "garbage": 15,
    "oversized": 10,
    "expired": 12,
    "other_ca": 13,
}
GARBAGE = (
    b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"SSH-2.0-OpenSSH_9.6\r\n",
    b"\x16\x03\x01\x00\x04\x02\x00\x00\x00",  # a ServerHello header
    b"\x17\x03\x03\x00\x05hello",  # application data first
    b"\x16\x03\x01\xff\xff" + b"\x01" * 32,  # a record too long for TLS
    bytes(64),
)


# -- the server (child process) --------------------------------------------------


async def _echo(stream: tv.TLSStream[trio.SocketStream]) -> None:
    try:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return


class _MallInfo2(ctypes.Structure):
    _fields_ = tuple(
        (name, ctypes.c_size_t)
        for name in (
            "arena",  # bytes in the heaps taken from the system with brk/mmap
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",  # bytes in chunks mmapped one by one
            "usmblks",
            "fsmblks",
            "uordblks",  # bytes in use in the heaps
            "fordblks",  # bytes free in the heaps, kept for reuse
            "keepcost",
        )
    )


class Allocator:
    """glibc malloc's own statistics and ``malloc_trim``, through ctypes.

    Both are unavailable (``None``, ``False``) with another C library.
    """

    def __init__(self) -> None:
        self._mallinfo2: Callable[[], _MallInfo2] | None = None
        self._trim: Callable[[int], int] | None = None
        if platform.libc_ver()[0] != "glibc":
            return
        libc = ctypes.CDLL(None)
        mallinfo2 = getattr(libc, "mallinfo2", None)  # glibc 2.33 and later
        if mallinfo2 is not None:
            mallinfo2.restype = _MallInfo2
            mallinfo2.argtypes = []
            self._mallinfo2 = mallinfo2
        trim = getattr(libc, "malloc_trim", None)
        if trim is not None:
            trim.restype = ctypes.c_int
            trim.argtypes = [ctypes.c_size_t]
            self._trim = trim

    def stats(self) -> dict[str, int] | None:
        """Heap in use and heap free, over all arenas, in KiB."""
        if self._mallinfo2 is None:
            return None
        info = self._mallinfo2()
        return {
            "heap_kib": info.arena // 1024,
            "in_use_kib": info.uordblks // 1024,
            "free_kib": info.fordblks // 1024,
            "mmapped_kib": info.hblkhd // 1024,
        }

    @property
    def can_trim(self) -> bool:
        return self._trim is not None

    def trim(self) -> bool:
        """Give free heap memory back to the system; ``False`` if unavailable."""
        if self._trim is None:
            return False
        self._trim(0)
        return True


def status_kib() -> dict[str, int]:
    """VmRSS and its anonymous part, in KiB, and the thread count."""
    wanted = {"VmRSS:": "rss_kib", "RssAnon:": "anon_kib", "Threads:": "threads"}
    found: dict[str, int] = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            key, _, rest = line.partition("\t")
            if key in wanted:
                found[wanted[key]] = int(rest.split()[0])
    return found


def anonymous_rss_kib() -> dict[str, int]:
    """Resident anonymous memory: brk heap, and the other mappings (KiB)."""
    heap = other = 0
    name = ""
    with open("/proc/self/smaps", encoding="utf-8") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:
                name = fields[5] if len(fields) > 5 else ""
            elif fields[0] == "Rss:":
                if name == "[heap]":
                    heap += int(fields[1])
                elif name == "":
                    other += int(fields[1])
    return {"brk_heap_rss_kib": heap, "other_anon_rss_kib": other}


def memory(allocator: Allocator) -> dict[str, Any]:
    return {
        **status_kib(),
        **anonymous_rss_kib(),
        "python_blocks": sys.getallocatedblocks(),
        "malloc": allocator.stats(),
    }


def command(line: str, allocator: Allocator) -> dict[str, Any]:
    """Answer one line from the parent: ``mem``, or ``trim``.

    ``trim`` runs a full garbage collection and then ``malloc_trim(0)``,
    measuring after each: memory that only the allocator held comes back
    to the system then, memory still in use does not.
    """
    if line == "mem":
        return {"now": memory(allocator)}
    if line == "trim":
        gc.collect()
        after_gc = memory(allocator)
        trimmed = allocator.trim()
        return {
            "after_gc": after_gc,
            "after_trim": memory(allocator) if trimmed else None,
        }
    raise ValueError(line)


async def serve(material: Path) -> None:
    """Serve until stdin closes; then print the handshake counts as JSON.

    Each line read from stdin before that is a :func:`command`, answered
    with one line of JSON.
    """
    logging.getLogger("trio_verify").setLevel(logging.CRITICAL)
    policy = tv.ServerPolicy(
        identity=tv.Identity.from_pem(
            (material / "server.pem").read_bytes(),
            (material / "server.key").read_bytes(),
        ),
        client_auth=tv.ClientAuth.REQUIRED,
        client_trust=(material / "ca.pem").read_bytes(),
        minimum_version=ssl.TLSVersion.TLSv1_3,
    )
    outcomes: Counter[str] = Counter()

    def on_handshake(report: tv.HandshakeReport) -> None:
        outcomes[report.error_type or "ok"] += 1

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(
                tv.serve_tls,
                _echo,
                0,
                policy,
                host=HOST,
                backlog=1024,
                handshake_timeout=HANDSHAKE_TIMEOUT,
                on_handshake=on_handshake,
            )
        )
        port = listeners[0].transport_listener.socket.getsockname()[1]
        print(port, flush=True)
        allocator = Allocator()
        stdin = trio.lowlevel.FdStream(os.dup(0))
        pending = b""
        while data := await stdin.receive_some(1024):
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                reply = command(line.decode("ascii").strip(), allocator)
                print(json.dumps(reply), flush=True)
        nursery.cancel_scope.cancel()
    print(json.dumps(dict(outcomes)), flush=True)


# -- measuring the server ----------------------------------------------------------


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Gauge:
    """Samples the server's RSS and descriptor count, keeping the peaks."""

    pid: int
    peak_rss: int = 0
    peak_fds: int = 0

    def sample(self) -> tuple[int, int]:
        rss, fds = rss_kib(self.pid), fd_count(self.pid)
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_fds = max(self.peak_fds, fds)
        return rss, fds

    async def run(self, interval: float = 0.05) -> None:
        while True:
            self.sample()
            await trio.sleep(interval)


# -- the clients -------------------------------------------------------------------


@dataclass
class Material:
    ca_pem: bytes
    good: tv.ClientPolicy
    expired: tv.ClientPolicy
    other_ca: tv.ClientPolicy
    hello: bytes


def make_material(directory: Path) -> Material:
    ca = trustme.CA()
    other = trustme.CA()
    server = ca.issue_cert(SERVER_NAME, HOST)
    (directory / "ca.pem").write_bytes(ca.cert_pem.bytes())
    (directory / "server.pem").write_bytes(
        b"".join(blob.bytes() for blob in server.cert_chain_pems)
    )
    (directory / "server.key").write_bytes(server.private_key_pem.bytes())
    now = datetime.datetime.now(datetime.UTC)

    def identity(leaf: trustme.LeafCert) -> tv.Identity:
        chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
        return tv.Identity.from_pem(chain, leaf.private_key_pem.bytes())

    def policy(leaf: trustme.LeafCert) -> tv.ClientPolicy:
        return tv.ClientPolicy(
            trust=ca.cert_pem.bytes(),
            identity=identity(leaf),
            minimum_version=ssl.TLSVersion.TLSv1_3,
        )

    good = policy(ca.issue_cert("client.example"))
    expired = policy(
        ca.issue_cert(
            "expired.example",
            not_before=now - datetime.timedelta(days=30),
            not_after=now - datetime.timedelta(days=1),
        )
    )
    other_ca = policy(other.issue_cert("stranger.example"))
    # A real first flight, to dribble out slowly.
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = good.context.wrap_bio(incoming, outgoing, server_hostname=SERVER_NAME)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return Material(ca.cert_pem.bytes(), good, expired, other_ca, outgoing.read())


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    good_ok: int = 0
    good_failed: list[str] = field(default_factory=list)
    bad_refused: int = 0
    bad_accepted: int = 0
    closed_by_server: int = 0
    left_hanging: int = 0
    kinds: Counter[str] = field(default_factory=Counter)


async def good_client(port: int, material: Material, tally: Tally) -> None:
    start = time.perf_counter()
    try:
        with trio.fail_after(30):
            stream = await tv.open_tls_stream(
                HOST, port, policy=material.good, server_hostname=SERVER_NAME
            )
            tally.latencies.append(time.perf_counter() - start)
            async with stream:
                await stream.send_all(REQUEST)
                got = b""
                while len(got) < len(REQUEST):
                    data = await stream.receive_some(65536)
                    if not data:
                        break
                    got += data
            if got != REQUEST:
                raise RuntimeError("wrong echo")
    except Exception as exc:
        tally.good_failed.append(repr(exc))
        return
    tally.good_ok += 1


async def bad_cert_client(policy: tv.ClientPolicy, port: int, tally: Tally) -> None:
    try:
        with trio.fail_after(30):
            stream = await tv.open_tls_stream(
                HOST, port, policy=policy, server_hostname=SERVER_NAME
            )
            async with stream:
                await stream.send_all(REQUEST)
                data = await stream.receive_some(65536)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        tally.bad_refused += 1
        return
    if data:
        tally.bad_accepted += 1
    else:
        tally.bad_refused += 1


async def _wait_closed(sock: trio.socket.SocketType, tally: Tally) -> None:
    """Read until the server closes; count a connection it never closed."""
    with trio.move_on_after(CLIENT_PATIENCE) as scope:
        try:
            while await sock.recv(65536):
                pass
        except OSError:
            pass
    if scope.cancelled_caught:
        tally.left_hanging += 1
    else:
        tally.closed_by_server += 1


async def raw_client(
    port: int,
    tally: Tally,
    dribble: Callable[[trio.socket.SocketType], Awaitable[None]],
) -> None:
    sock = trio.socket.socket()
    with sock:
        await sock.connect((HOST, port))
        try:
            with trio.move_on_after(CLIENT_PATIENCE):
                await dribble(sock)
        except OSError:
            pass  # the server closed first: what it should do
        await _wait_closed(sock, tally)


async def _send_nothing(sock: trio.socket.SocketType) -> None:
    return


async def _send_garbage(payload: bytes, sock: trio.socket.SocketType) -> None:
    await sock.send(payload)


async def _slowloris(hello: bytes, sock: trio.socket.SocketType) -> None:
    for offset in range(0, len(hello), 3):
        await sock.send(hello[offset : offset + 3])
        await trio.sleep(0.1)


def oversized_hello(body_length: int = MAX_HELLO + 4096) -> bytes:
    """A ClientHello handshake message whose body is too long, in records."""
    message = (
        b"\x01" + body_length.to_bytes(3, "big") + b"\x03\x03" + bytes(body_length - 2)
    )
    records = []
    for offset in range(0, len(message), 16384):
        chunk = message[offset : offset + 16384]
        records.append(b"\x16\x03\x01" + len(chunk).to_bytes(2, "big") + chunk)
    return b"".join(records)


async def _send_oversized(payload: bytes, sock: trio.socket.SocketType) -> None:
    view = memoryview(payload)
    while view:
        sent = await sock.send(view[:65536])
        view = view[sent:]


def client_for(
    kind: int | str, index: int, port: int, material: Material, tally: Tally, big: bytes
) -> Callable[[], Awaitable[None]]:
    match kind:
        case "good":
            return partial(good_client, port, material, tally)
        case "expired":
            return partial(bad_cert_client, material.expired, port, tally)
        case "other_ca":
            return partial(bad_cert_client, material.other_ca, port, tally)
        case "slowloris":
            return partial(raw_client, port, tally, partial(_slowloris, material.hello))
        case "half_open":
            return partial(raw_client, port, tally, _send_nothing)
        case "garbage":
            payload = GARBAGE[index % len(GARBAGE)]
            return partial(raw_client, port, tally, partial(_send_garbage, payload))
        case "oversized":
            return partial(raw_client, port, tally, partial(_send_oversized, big))
    raise ValueError(kind)


async def run_many(
    clients: Sequence[Callable[[], Awaitable[None]]], parallel: int
) -> float:
    """Run the clients, at most ``parallel`` at a time; return the seconds taken."""
    limiter = trio.CapacityLimiter(parallel)

    async def one(client: Callable[[], Awaitable[None]]) -> None:
        async with limiter:
            await client()

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for client in clients:
            await limiter.acquire()  # do not start thousands of idle tasks
            limiter.release()
            nursery.start_soon(one, client)
            await trio.lowlevel.checkpoint()
    return time.perf_counter() - start


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "p50_ms": round(statistics.median(values) * 1000, 2),
        "p99_ms": round(cuts[98] * 1000, 2),
        "max_ms": round(max(values) * 1000, 2),
    }


def mix_plan(total: int, seed: int) -> list[str]:
    weight = sum(MIX.values())
    plan: list[str] = []
    for kind, share in MIX.items():
        plan += [kind] * (total * share // weight)
    plan += ["good"] * (total - len(plan))
    random.Random(seed).shuffle(plan)
    return plan


# -- the soak ---------------------------------------------------------------------


def facts() -> dict[str, Any]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next(
                (
                    line.split(":", 1)[1].strip()
                    for line in info
                    if "model name" in line
                ),
                cpu,
            )
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.system()} {platform.release()} {platform.machine()}",
        "cpu": cpu,
        "nproc": len(os.sched_getaffinity(0)),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "openssl": ssl.OPENSSL_VERSION,
        "trio": version("trio"),
        "trio_verify": version("trio-verify"),
        "command": shlex.join(getattr(sys, "orig_argv", sys.argv)),
    }


async def ask(server: subprocess.Popen[str], line: str) -> dict[str, Any]:
    """Send the server one :func:`command` and return its answer."""
    assert server.stdin is not None
    assert server.stdout is not None
    server.stdin.write(line + "\n")
    server.stdin.flush()
    answer: dict[str, Any] = json.loads(
        await trio.to_thread.run_sync(server.stdout.readline)
    )
    return answer


async def measure_memory(server: subprocess.Popen[str], trim: bool) -> dict[str, Any]:
    """The server's memory now, and with ``trim`` after a collection and a trim."""
    now = (await ask(server, "mem"))["now"]
    found: dict[str, Any] = {"now": now}
    if trim:
        trimmed = await ask(server, "trim")
        found["after_gc"] = trimmed["after_gc"]
        found["after_trim"] = trimmed["after_trim"]
    return found


def _after_trim(measured: dict[str, Any]) -> int | None:
    after = measured.get("after_trim")
    return None if after is None else int(after["rss_kib"])


def _in_use(measured: dict[str, Any]) -> dict[str, int | None] | None:
    """Bytes malloc has handed out, and Python's blocks, after a collection."""
    after_gc = measured.get("after_gc")
    if after_gc is None:
        return None
    malloc = after_gc["malloc"]
    return {
        "malloc_kib": None if malloc is None else malloc["in_use_kib"],
        "python_blocks": after_gc["python_blocks"],
    }


def memory_bounds(rounds: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The RSS check, with its measured growth and its bound (KiB).

    With a trim after every round, ``rss_after_trim_bounded``: RSS after the
    collection and the trim, after the last round minus after the first, at
    most TRIMMED_FIXED_KIB plus TRIMMED_PER_CONNECTION bytes per connection
    of the rounds after the first.

    Without, ``rss_levels_off``: RSS after the last round minus RSS after
    round ceil(R/2) of R, at most PLATEAU_FIXED_KIB plus
    PLATEAU_PER_CONNECTION bytes per connection of the later rounds.  (With
    the trim, RSS after a round is that round's own peak, not the high-water
    mark of all rounds so far, so it is not compared.)
    """
    trimmed = [r["rss_after_trim_kib"] for r in rounds]
    if None not in trimmed:
        name, first = "rss_after_trim_bounded", 1
        fixed, per_connection = TRIMMED_FIXED_KIB, TRIMMED_PER_CONNECTION
        growth = trimmed[-1] - trimmed[0]
    else:
        name, first = "rss_levels_off", (len(rounds) + 1) // 2
        fixed, per_connection = PLATEAU_FIXED_KIB, PLATEAU_PER_CONNECTION
        growth = rounds[-1]["rss_after_kib"] - rounds[first - 1]["rss_after_kib"]
    later = sum(r["connections"] for r in rounds[first:])
    bound = fixed + later * per_connection // 1024
    return {
        name: {
            "from_round": first,
            "connections": later,
            "growth_kib": growth,
            "bound_kib": bound,
            "ok": growth <= bound,
        }
    }


async def soak(
    args: argparse.Namespace, server: subprocess.Popen[str], material: Material
) -> dict[str, Any]:
    assert server.stdout is not None
    port = int(await trio.to_thread.run_sync(server.stdout.readline))
    pid = server.pid
    gauge = Gauge(pid)
    await trio.sleep(0.5)
    rss_start, fds_start = gauge.sample()

    # 1. baseline: good clients only.
    base = Tally()
    base_clients = [
        partial(good_client, port, material, base) for _ in range(args.baseline)
    ]
    base_seconds = await run_many(base_clients, args.good_parallel)
    await trio.sleep(0.5)
    gauge.peak_rss = gauge.peak_fds = 0
    rss_before, fds_before = gauge.sample()
    memory_before = await measure_memory(server, args.trim)

    # 2. abuse, in rounds, each followed by 3. a settle time.
    abuse = Tally()
    plan = mix_plan(args.connections, args.seed)
    abuse.kinds.update(plan)
    big = oversized_hello()
    clients = [
        client_for(kind, index, port, material, abuse, big)
        for index, kind in enumerate(plan)
    ]
    rounds: list[dict[str, Any]] = []
    abuse_seconds = 0.0
    per_round = -(-len(clients) // args.rounds)
    for first in range(0, len(clients), per_round):
        gauge.peak_rss = gauge.peak_fds = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(gauge.run)
            seconds = await run_many(clients[first : first + per_round], args.parallel)
            nursery.cancel_scope.cancel()
        abuse_seconds += seconds
        peak_rss, peak_fds = gauge.peak_rss, gauge.peak_fds
        settle_start = time.perf_counter()
        settled_after = None
        rss_after, fds_after = gauge.sample()
        while time.perf_counter() - settle_start < args.settle:
            rss_after, fds_after = gauge.sample()
            if fds_after <= fds_before:
                settled_after = round(time.perf_counter() - settle_start, 2)
                break
            await trio.sleep(0.1)
        rounds.append(
            {
                "connections": len(clients[first : first + per_round]),
                "seconds": round(seconds, 2),
                "peak_rss_kib": peak_rss,
                "peak_fds": peak_fds,
                "rss_after_kib": rss_after,
                "fds_after": fds_after,
                "fds_settled_after_s": settled_after,
            }
        )
        measured = await measure_memory(server, args.trim)
        rounds[-1].update(
            rss_after_trim_kib=_after_trim(measured),
            in_use_after_gc=_in_use(measured),
            memory=measured,
        )
    memory_checks = memory_bounds(rounds)

    stdout, _ = await trio.to_thread.run_sync(server.communicate, "")
    outcomes = json.loads(stdout.strip().splitlines()[-1])
    handshakes = sum(outcomes.values())
    expected = args.baseline + args.connections
    good_total = abuse.kinds["good"]
    bad_cert_total = abuse.kinds["expired"] + abuse.kinds["other_ca"]
    raw_total = args.connections - good_total - bad_cert_total
    checks = {
        "baseline_good_all_completed": base.good_ok == args.baseline,
        "abuse_good_all_completed": abuse.good_ok == good_total,
        "bad_certificates_all_refused": abuse.bad_refused == bad_cert_total,
        "abusive_sockets_all_closed_by_server": abuse.closed_by_server == raw_total,
        "one_report_per_connection": handshakes == expected,
        "fds_back_to_baseline_after_every_round": all(
            r["fds_after"] <= fds_before for r in rounds
        ),
        **{name: check["ok"] for name, check in memory_checks.items()},
    }
    return {
        "facts": facts(),
        "config": {
            "connections": args.connections,
            "baseline": args.baseline,
            "parallel": args.parallel,
            "good_parallel": args.good_parallel,
            "handshake_timeout_s": HANDSHAKE_TIMEOUT,
            "settle_s": args.settle,
            "rounds": args.rounds,
            "trim": args.trim,
            "seed": args.seed,
            "mix": dict(abuse.kinds),
        },
        "baseline": {
            "seconds": round(base_seconds, 2),
            "connections_per_s": round(args.baseline / base_seconds, 1),
            "good_completed": base.good_ok,
            "latency": percentiles(base.latencies),
        },
        "abuse": {
            "seconds": round(abuse_seconds, 2),
            "connections_per_s": round(args.connections / abuse_seconds, 1),
            "good_completed": abuse.good_ok,
            "good_total": good_total,
            "good_failures": abuse.good_failed[:10],
            "latency": percentiles(abuse.latencies),
            "bad_certificates_refused": abuse.bad_refused,
            "bad_certificates_accepted": abuse.bad_accepted,
            "abusive_closed_by_server": abuse.closed_by_server,
            "abusive_left_hanging": abuse.left_hanging,
        },
        "server": {
            "handshake_outcomes": outcomes,
            "rss_kib": {
                "start": rss_start,
                "before_abuse": rss_before,
                "before_abuse_after_trim": _after_trim(memory_before),
                "peak": max(r["peak_rss_kib"] for r in rounds),
                "after": rounds[-1]["rss_after_kib"],
                "after_trim": rounds[-1]["rss_after_trim_kib"],
            },
            "memory_before_abuse": memory_before,
            "memory_checks": memory_checks,
            "fds": {
                "start": fds_start,
                "before_abuse": fds_before,
                "peak": max(r["peak_fds"] for r in rounds),
                "after": rounds[-1]["fds_after"],
            },
            "rounds": rounds,
        },
        "checks": checks,
        "ok": all(checks.values()),
    }


def _memory_line(measured: dict[str, Any]) -> str:
    after_gc, after_trim = measured["after_gc"], measured["after_trim"]
    malloc = after_gc["malloc"] or {}
    return (
        f"after gc: malloc in use {malloc.get('in_use_kib')} KiB, free "
        f"{malloc.get('free_kib')} KiB, Python blocks {after_gc['python_blocks']}; "
        f"RSS after trim {after_trim['rss_kib']} KiB"
    )


def summary(result: dict[str, Any]) -> str:
    f, c = result["facts"], result["config"]
    b, a, s = result["baseline"], result["abuse"], result["server"]
    lines = []
    lines.append(
        f"{f['date']}  {f['machine']}  {f['nproc']} CPUs  {f['python']}  "
        f"trio {f['trio']}  trio_verify {f['trio_verify']}"
    )
    lines.append(f"mix: {c['mix']}")
    lines.append(
        f"baseline: {c['baseline']} good clients in {b['seconds']} s "
        f"({b['connections_per_s']}/s); handshake p50 "
        f"{b['latency'].get('p50_ms')} ms, p99 {b['latency'].get('p99_ms')} ms"
    )
    lines.append(
        f"abuse:    {c['connections']} connections in {a['seconds']} s "
        f"({a['connections_per_s']}/s); good {a['good_completed']}/"
        f"{a['good_total']}, handshake p50 {a['latency'].get('p50_ms')} ms, "
        f"p99 {a['latency'].get('p99_ms')} ms"
    )
    lines.append(
        f"bad certificates refused {a['bad_certificates_refused']}, accepted "
        f"{a['bad_certificates_accepted']}; abusive sockets closed by the "
        f"server {a['abusive_closed_by_server']}, left hanging "
        f"{a['abusive_left_hanging']}"
    )
    lines.append(f"server outcomes: {s['handshake_outcomes']}")
    lines.append(f"server RSS KiB: {s['rss_kib']}")
    lines.append(f"server fds:     {s['fds']}")
    before = s["memory_before_abuse"]
    if "after_trim" in before:
        lines.append(f"before abuse, {_memory_line(before)}")
    for index, r in enumerate(s["rounds"], 1):
        lines.append(
            f"round {index}: {r['connections']} connections in {r['seconds']} s, "
            f"peak RSS {r['peak_rss_kib']} KiB / {r['peak_fds']} fds, after "
            f"{r['rss_after_kib']} KiB / {r['fds_after']} fds (fds settled after "
            f"{r['fds_settled_after_s']} s)"
        )
        if "after_trim" in r["memory"]:
            lines.append(f"  {_memory_line(r['memory'])}")
    for name, check in s["memory_checks"].items():
        lines.append(
            f"{name}: RSS grew {check['growth_kib']} KiB after round "
            f"{check['from_round']}, over {check['connections']} connections; "
            f"bound {check['bound_kib']} KiB"
        )
    checks = ", ".join(
        f"{k}={'ok' if v else 'FAILED'}" for k, v in result["checks"].items()
    )
    lines.append(f"checks: {checks}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python soak/listener_abuse.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--baseline", type=int, default=300, help="good-only clients")
    parser.add_argument("--parallel", type=int, default=200, help="abuse concurrency")
    parser.add_argument("--good-parallel", type=int, default=16)
    parser.add_argument("--settle", type=float, default=15.0, help="seconds")
    parser.add_argument("--rounds", type=int, default=3, help="abuse rounds, 2 or more")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--trim",
        action=argparse.BooleanOptionalAction,
        help="after each round, have the server run a full garbage collection "
        "and glibc's malloc_trim(0), and measure its RSS again (default: on "
        "with glibc)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        trio.run(serve, args.serve)
        return 0
    if args.rounds < 2:
        parser.error("--rounds: at least 2, the memory checks compare rounds")
    can_trim = Allocator().can_trim
    if args.trim is None:
        args.trim = can_trim
    elif args.trim and not can_trim:
        parser.error("--trim needs glibc's malloc_trim")
    if not sys.platform.startswith("linux"):
        raise SystemExit("this soak reads /proc: Linux only")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * args.parallel + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    with tempfile.TemporaryDirectory() as directory:
        material = make_material(Path(directory))
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", directory],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            # The whole run is bounded: a stuck soak fails rather than hangs.
            deadline = 120 + args.connections * 0.1 + args.settle
            result = trio.run(_bounded, deadline, args, server, material)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
    print(summary(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0 if result["ok"] else 1


async def _bounded(
    seconds: float,
    args: argparse.Namespace,
    server: subprocess.Popen[str],
    material: Material,
) -> dict[str, Any]:
    with trio.fail_after(seconds):
        return await soak(args, server, material)


if __name__ == "__main__":
    sys.exit(main())
