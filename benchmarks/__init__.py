"""Benchmarks: trio_verify.TLSStream against trio.SSLStream and anyio's TLSStream.

Run ``python -m benchmarks.run --help``; ``nox -s bench`` runs the full set
and records the result in ``docs/benchmarks.rst``.  These are measurements,
not tests: nothing here asserts a speed.
"""
