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
header ``00 00 00 00``; fuzz/run.py seeds the corpus that way.  The
certificates, configurations and crash criteria are shared with
fuzz_client_engine.py (engine_session.py).
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["trio_verify"]):
    import trio_verify  # noqa: F401 - instrumented before anything imports it
    from trio_verify._engine import TLSEngine

from engine_session import HEADER, REQUEST, STAGES, drive, mix, pair, shuttle


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
    shuttle(client, server)
    client.write(REQUEST)
    request = client.data_to_send()
    if stage == 2:
        return request
    server.receive_data(request)
    assert server.read(65536) == REQUEST
    client.start_close()
    close_notify = client.data_to_send()
    if stage == 3:
        return close_notify
    server.receive_data(close_notify)
    assert server.read(65536) == b""
    server.unwrap()
    server.data_to_send()
    return request  # stage 4: an old record, replayed after the close


def TestOneInput(data: bytes) -> None:
    if len(data) < HEADER:
        return
    config, stage, mode, flags = data[:HEADER]
    client, server = pair(config)
    real = _advance(client, server, stage % STAGES)
    drive(server, mix(real, mode, data[HEADER:]), eof=bool(flags & 1))


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
