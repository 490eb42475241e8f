"""The README's first command works in a fresh virtual environment.

A newcomer's first step is the first line of the README's first ``sh`` block:
install the package with its command line tool and run ``trio-verify
matrix``.  This test does exactly that, as written, in a new virtual
environment made with the Python running the tests, from a copy of the
source tree (so uncommitted work is tested too, and nothing is written into
the tree itself).  It needs the package index: ``pip`` downloads the build
backend and the dependencies (its cache makes later runs fast).  Set
``TRIO_VERIFY_SKIP_FRESH_INSTALL=1`` to skip it where there is no network.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SKIP_VARIABLE = "TRIO_VERIFY_SKIP_FRESH_INSTALL"

pytestmark = pytest.mark.skipif(
    os.environ.get(SKIP_VARIABLE) == "1",
    reason=f"{SKIP_VARIABLE}=1: the fresh-install test needs the package index",
)

# Generated or local-only paths (as in .gitignore) that a copy of the tree
# must not carry: they are large, machine-specific, or would be reused.
_IGNORED_NAMES = {
    ".git",
    ".nox",
    ".venv",
    "venv",
    "env",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    "htmlcov",
    "build",
    "dist",
}
_IGNORED_PATTERNS = re.compile(r".*\.egg-info|.*\.py[cod]|\.coverage(\..*)?")

# Generous: a cold pip cache downloads a few megabytes of wheels.
INSTALL_TIMEOUT = 900


def repository_root() -> Path:
    """The root of the source tree these tests belong to."""
    here = Path(__file__).resolve().parent.parent
    git = shutil.which("git")
    if git is not None:
        done = subprocess.run(
            [git, "-C", str(here), "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if done.returncode == 0 and done.stdout.strip():
            return Path(done.stdout.strip())
    return here


def readme_first_command(readme: Path) -> str:
    """The first line of the first ```sh block of the README."""
    match = re.search(r"^```sh\n(.*)$", readme.read_text(), re.M)
    assert match is not None, f"{readme} has no ```sh block"
    return match.group(1).strip()


def copy_tree(source: Path, destination: Path) -> None:
    top_level_build = source / "docs" / "_build"

    def ignore(directory: str, names: list[str]) -> set[str]:
        ignored = {
            name
            for name in names
            if name in _IGNORED_NAMES or _IGNORED_PATTERNS.fullmatch(name)
        }
        if Path(directory) == top_level_build.parent:
            ignored.add("_build")
        return ignored

    shutil.copytree(source, destination, ignore=ignore, symlinks=True)


def fresh_environment(venv: Path) -> dict[str, str]:
    """The environment of a shell in which ``venv`` is activated."""
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PIP_USER"):
        env.pop(name, None)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")])
    env["VIRTUAL_ENV"] = str(venv)
    # What --disable-pip-version-check -q would say, without changing the
    # command as the README writes it.
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    env["PIP_QUIET"] = "1"
    return env


def test_the_readmes_first_command_works_in_a_fresh_virtualenv(
    tmp_path: Path,
) -> None:
    root = repository_root()
    command = readme_first_command(root / "README.md")
    assert "trio-verify matrix" in command, command

    tree = tmp_path / "trio_verify"
    copy_tree(root, tree)
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", str(venv)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    env = fresh_environment(venv)
    shell = shutil.which("sh") or "/bin/sh"

    # The command exactly as the README writes it, in the copied tree.
    done = subprocess.run(
        [shell, "-c", command],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, (
        f"{command!r} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    )
    assert "every cell matches the documented behaviour" in done.stdout

    # The installed command, again on its own, from the new environment.
    trio_verify = shutil.which("trio-verify", path=env["PATH"])
    assert trio_verify is not None
    assert Path(trio_verify).parent.parent == venv
    done = subprocess.run(
        [trio_verify, "matrix"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(
        r"^\d+ cells in [\d.]+ s: every cell matches the documented behaviour$",
        done.stdout,
        re.M,
    ), done.stdout
