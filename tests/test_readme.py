"""The README's example stays valid Python against the real API."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import trio_verify

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", README.read_text(), re.M | re.S)


def test_readme_has_an_example() -> None:
    assert python_blocks()


def test_readme_example_compiles_and_imports_only_public_names() -> None:
    for block in python_blocks():
        tree = ast.parse(block)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "trio_verify":
                for alias in node.names:
                    assert alias.name in trio_verify.__all__, alias.name
