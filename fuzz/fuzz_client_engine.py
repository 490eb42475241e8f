#!/usr/bin/env python3
"""Coverage-guided fuzz target: a client TLSEngine after a real handshake prefix.

The mirror image of fuzz_server_engine.py.  Each input runs a real client
engine and a real server engine in memory up to a *stage*, then hands the
client bytes chosen by the input instead of (or mixed into) what the server
really sent next, and drives the client on as TLSStream would.  The client
may make progress or raise a :class:`~trio_verify.TLSError`; any other
exception is a crash, and so is a TLSError that does not describe itself
(side, phase, message), or output out of proportion to the input.

Input layout: ``[configuration] [stage] [mode] [flags] payload...``

* configuration: TLS 1.2 or 1.3, with or without a client certificate;
* stage: where the session is when the payload arrives: 0 before the
  ServerHello (the client has sent its ClientHello), 1 in the middle of the
  handshake (the client has read the first record of the server's first
  flight, the rest is next), 2 after the handshake (the server's response is
  next, with its TLS 1.3 session tickets), 3 at the server's close_notify,
  4 after the session closed (a replay of the response);
* mode: 0 the payload replaces what the server sent next, 1 the payload
  flips bits in it (triples of a 16-bit position and an XOR mask), 2 the
  payload follows it;
* flags: bit 0 an end of file after the payload.

fuzz/run.py seeds the corpus with one input per stage and mode, and with the
real first flights of tests/hellos behind the header ``NN 00 00 00`` (a
ClientHello where the ServerHello belongs: well-framed, wrong handshake
messages).  Run it with ``python fuzz/run.py client_engine``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["trio_verify"]):
    import trio_verify  # noqa: F401 - instrumented before anything imports it
    from trio_verify._engine import TLSEngine

from engine_session import (
    HEADER,
    REQUEST,
    RESPONSE,
    STAGES,
    drive,
    mix,
    pair,
    shuttle,
)


def _advance(client: TLSEngine, server: TLSEngine, stage: int) -> bytes:
    """Run the session to ``stage``; the bytes the server would send next."""
    client.do_handshake()
    server.receive_data(client.data_to_send())
    server.do_handshake()
    flight = server.data_to_send()
    if stage == 0:
        return flight
    if stage == 1:
        first = 5 + int.from_bytes(flight[3:5], "big")
        client.receive_data(flight[:first])
        client.do_handshake()
        client.data_to_send()
        return flight[first:]
    client.receive_data(flight)
    shuttle(client, server)
    client.write(REQUEST)
    server.receive_data(client.data_to_send())
    assert server.read(65536) == REQUEST
    server.write(RESPONSE)
    response = server.data_to_send()
    if stage == 2:
        return response
    client.receive_data(response)
    assert client.read(65536) == RESPONSE
    server.start_close()
    close_notify = server.data_to_send()
    if stage == 3:
        return close_notify
    client.receive_data(close_notify)
    assert client.read(65536) == b""
    client.unwrap()
    client.data_to_send()
    return response  # stage 4: an old record, replayed after the close


def TestOneInput(data: bytes) -> None:
    if len(data) < HEADER:
        return
    config, stage, mode, flags = data[:HEADER]
    client, server = pair(config)
    real = _advance(client, server, stage % STAGES)
    drive(client, mix(real, mode, data[HEADER:]), eof=bool(flags & 1))


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
