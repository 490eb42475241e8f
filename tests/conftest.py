"""Fixtures every test module may use: the certificate kit and ``openssl``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from certs import CertKit


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertKit:
    """One :class:`certs.CertKit` for the whole test run, its files in a temp dir."""
    return CertKit(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def openssl() -> Path:
    """The ``openssl`` command line tool; tests that use it skip without it."""
    path = shutil.which("openssl")
    if path is None:
        pytest.skip("the openssl command line tool is not on PATH")
    return Path(path)
