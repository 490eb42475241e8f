#!/usr/bin/env python3
"""Coverage-guided fuzz target: the sans-IO ClientHello reader.

The input is fed to a fresh :class:`~trio_verify.ClientHelloReader`, then
``feed_eof()``: once whole, and once cut into pieces of pseudo-random sizes
chosen from the input's checksum (so that a raw ClientHello, such as the
files in tests/hellos, is a meaningful input as it is).  The reader
may return a :class:`~trio_verify.ClientHello` or raise ``NotTLS``,
``ProtocolViolation`` or ``TruncatedStream``; anything else is a crash.  Two
more properties are checked, since they are what the reader promises a
listener:

* the outcome does not depend on how the bytes were chunked (the same hello,
  or the same error class and alert);
* a hello's ``raw`` is every byte fed up to the end of the hello's read,
  ready for replay.

Run it with ``python fuzz/run.py client_hello`` (see fuzz/README.md), or
directly: ``python fuzz/fuzz_client_hello.py CORPUS_DIR [libFuzzer flags]``.
"""

from __future__ import annotations

import dataclasses
import sys
import zlib

import atheris

with atheris.instrument_imports(include=["trio_verify"]):
    from trio_verify import ClientHello, NotTLS, ProtocolViolation, TruncatedStream
    from trio_verify._hello import ClientHelloReader, parse_client_hello

Outcome = tuple[str, object]

EXPECTED_ERRORS = (NotTLS, ProtocolViolation, TruncatedStream)


def read(chunks: list[bytes]) -> tuple[Outcome, bytes]:
    """Feed ``chunks``, then EOF; the outcome and the alert the reader wrote."""
    reader = ClientHelloReader()
    try:
        for count, chunk in enumerate(chunks, 1):
            hello = reader.feed(chunk)
            if hello is not None:
                fed = b"".join(chunks[:count])
                assert hello.raw == fed, "raw is not every byte fed"
                # What the connection carries on with; raw depends on chunking.
                return ("hello", dataclasses.replace(hello, raw=b"")), b""
        reader.feed_eof()
    except EXPECTED_ERRORS as exc:
        error = exc
    else:
        raise AssertionError("feed_eof() on an incomplete hello must raise")
    alert = reader.data_to_send()
    if error.alert_sent is None:
        assert alert == b"", "an alert was written but not reported"
    else:
        assert alert.endswith(bytes((error.alert_sent,))), "the wrong alert"
    return ("error", (type(error), error.alert_sent)), alert


def split(data: bytes, seed: int) -> list[bytes]:
    """Cut ``data`` into pieces of 1 to ``seed`` bytes (a pseudo-random walk)."""
    chunks = []
    pos = 0
    state = seed
    while pos < len(data):
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        size = 1 + state % seed
        chunks.append(data[pos : pos + size])
        pos += size
    return chunks


def TestOneInput(data: bytes) -> None:
    whole, whole_alert = read([data])
    pieces, pieces_alert = read(split(data, 1 + zlib.crc32(data) % 64))
    assert whole == pieces, f"chunking changed the outcome: {whole} != {pieces}"
    assert whole_alert == pieces_alert
    kind, value = whole
    # Documented never to raise, whatever it is given.
    parse_client_hello(data)
    parse_client_hello(data[5:])
    if kind == "hello":
        assert isinstance(value, ClientHello)
        # When the first record holds the whole message, the record-free
        # parser must read the same names and versions from it.
        first = data[5 : 5 + int.from_bytes(data[3:5], "big")]
        parsed = parse_client_hello(first)
        if parsed is not None and not value.sslv2_format:
            assert (
                parsed.server_name,
                parsed.alpn_protocols,
                parsed.supported_versions,
            ) == (value.server_name, value.alpn_protocols, value.supported_versions)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
