"""Test, lint, type-check and documentation sessions, plus benchmarks.

``python -m nox`` runs tests, lint, typecheck and docs;
``python -m nox -s tests-3.13 -- -k alert`` runs one, passing what follows
``--`` to pytest.  ``bench`` runs only when named.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import nox

# The test matrix: the oldest and the newest supported CPython.
PYTHONS = ["3.11", "3.13"]

# Linters and type checkers are pinned so that a new release cannot break an
# unchanged tree; raise the pins deliberately.
RUFF = "ruff==0.17.6"
MYPY = "mypy==2.4.1"

nox.options.error_on_missing_interpreters = True
nox.options.reuse_venv = "yes"
nox.options.sessions = ["tests", "lint", "typecheck", "docs"]


def _use_all_pyenv_pythons() -> None:
    """Make every installed pyenv CPython >= 3.11 reachable by its name.

    pyenv's shims run ``python3.13`` only while 3.13 is an active version, so
    on a machine whose global version is 3.11 nox would not find 3.13.  This
    activates every installed CPython >= 3.11 after the versions already
    active, so ``python`` itself still means what it meant.  Note that a
    ``python`` started through a shim already has PYENV_VERSION set to its
    own version.  Without pyenv, PATH is used as it is.
    """
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        return

    def ask(*args: str) -> str | None:
        try:
            return subprocess.run(
                [pyenv, *args], capture_output=True, text=True, check=True, timeout=60
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return None

    listing = ask("versions", "--bare")
    if listing is None:
        return
    current = os.environ.get("PYENV_VERSION") or ask("version-name") or ""
    found: list[tuple[tuple[int, int, int], str]] = []
    for line in listing.splitlines():
        name = line.strip()
        # Plain CPython releases only: skips virtualenvs, pypy, -dev, 3.13t.
        match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", name)
        if match is None:
            continue
        version = (int(match[1]), int(match[2]), int(match[3]))
        if version >= (3, 11, 0):
            found.append((version, name))
    active = [v for v in current.strip().split(":") if v]
    added = [name for _, name in sorted(found) if name not in active]
    if added:
        os.environ["PYENV_VERSION"] = ":".join(active + added)


_use_all_pyenv_pythons()


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite."""
    session.install(".[test,cli]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and formatting with ruff."""
    session.install(RUFF)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check the package strictly."""
    session.install(".[cli]", MYPY)
    session.run("mypy", "--strict", "trio_verify")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the HTML documentation, failing on any warning."""
    session.install(".[docs]")
    session.run(
        "sphinx-build",
        "-W",
        "--keep-going",
        "-b",
        "html",
        "docs",
        "docs/_build/html",
        *session.posargs,
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks and record the results in docs/benchmarks.rst.

    Not run by default.  ``python -m nox -s bench`` is the full run (several
    minutes); ``python -m nox -s bench -- --quick`` a short one.  Arguments
    after ``--`` go to ``python -m benchmarks.run``.
    """
    session.install(".", "anyio", "trustme")
    session.run(
        "python",
        "-m",
        "benchmarks.run",
        "--update-docs",
        "docs/benchmarks.rst",
        *session.posargs,
    )


@nox.session
def fuzz(session: nox.Session) -> None:
    """Run the atheris fuzz targets in fuzz/ for a bounded time each.

    Not run by default.  ``python -m nox -s fuzz`` runs every target for 60
    seconds; ``python -m nox -s fuzz -- --time 600 client_hello`` one target
    for ten minutes.  Arguments after ``--`` go to ``fuzz/run.py``, libFuzzer
    flags (``-max_len=4096``) included; see fuzz/README.md.  Crashing inputs
    are written to fuzz/crashes/, and the session fails if there are any.
    """
    session.install(".", "atheris")
    session.run("python", "fuzz/run.py", *session.posargs)


@nox.session
def soak(session: nox.Session) -> None:
    """Run the listener soak: thousands of abusive connections on loopback.

    Not run by default.  ``python -m nox -s soak`` makes 3000 connections
    against one ``serve_tls`` server and stops by itself (about 10 seconds on
    two cores, after the install); ``python -m nox -s soak -- --connections
    30000 --rounds 10 --json soak.json`` a longer one (about a minute).
    Arguments after ``--`` go to ``soak/listener_abuse.py``.  The session
    fails if a good client failed, the server did not settle, or its memory
    kept growing from round to round (see docs/reliability.rst).
    """
    session.install(".", "trustme")
    session.run("python", "soak/listener_abuse.py", *session.posargs)
