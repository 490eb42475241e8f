"""Sphinx configuration for the trio_verify documentation."""

from __future__ import annotations

import inspect
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from docutils.nodes import Element, Node
    from sphinx.addnodes import pending_xref
    from sphinx.application import Sphinx
    from sphinx.environment import BuildEnvironment

_ROOT = Path(__file__).resolve().parent.parent
# Document the package from this source tree, installed or not.
sys.path.insert(0, str(_ROOT))
with (_ROOT / "pyproject.toml").open("rb") as _file:
    _PROJECT = tomllib.load(_file)["project"]

# -- Project -----------------------------------------------------------------

project = "trio_verify"
author = "The trio_verify authors"
copyright = "2026, The trio_verify authors"
release = _PROJECT["version"]
version = ".".join(release.split(".")[:2])

# -- General -----------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.napoleon",
]

exclude_patterns = ["_build", "_inventories"]
templates_path: list[str] = []

# Every cross-reference must resolve: a broken link is a build error (-W).
nitpicky = True
# Names that can never resolve; prefer adding a real target to
# _inventories/make_inventories.py over listing a name here.
nitpick_ignore: list[tuple[str, str]] = []

# Single backquotes mean inline code, as in most docstrings.
default_role = "literal"

# -- autodoc / napoleon ------------------------------------------------------

autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# -- intersphinx -------------------------------------------------------------
# The inventories are generated files kept in the repository, so the build
# needs no network; see _inventories/make_inventories.py to add names.

intersphinx_mapping = {
    "python": ("https://docs.python.org/3", "_inventories/python.inv"),
    "trio": ("https://trio.readthedocs.io/en/stable", "_inventories/trio.inv"),
    "cryptography": (
        "https://cryptography.io/en/latest",
        "_inventories/cryptography.inv",
    ),
}

# -- HTML --------------------------------------------------------------------

html_theme = "alabaster"
html_title = f"trio_verify {release}"
html_static_path: list[str] = []
html_theme_options = {
    "description": "TLS for Trio with explicit verification policy",
    "fixed_sidebar": True,
}

# -- Cross-reference helpers -------------------------------------------------
# Public objects live in private modules (trio_verify._stream.TLSStream) and
# are documented under their public name (trio_verify.TLSStream), but type
# hints are written with the defining module.  These hooks send such
# references to the public name, and render internal type aliases and type
# variables, which are not documented on their own, as plain text.  Anything
# else that does not resolve still fails the build.

_PACKAGE = "trio_verify"


def _private_lookup(target: str) -> tuple[str, object] | None:
    """Find ``target`` (dotted, or a bare name) in the package's private modules.

    Returns ``(public path or "", object)``: the public path is the dotted name
    under which the object is documented, or "" when it has none.
    """
    package = sys.modules.get(_PACKAGE)
    if package is None:
        return None
    public = set(getattr(package, "__all__", ()))
    parts = target.split(".")
    if parts[0] == _PACKAGE and len(parts) > 2 and parts[1].startswith("_"):
        modules = [sys.modules.get(".".join(parts[:2]))]
        path = parts[2:]
    elif len(parts) == 1:
        prefix = _PACKAGE + "._"
        modules = [m for n, m in sorted(sys.modules.items()) if n.startswith(prefix)]
        path = parts
    else:
        return None
    for module in modules:
        obj: object = module
        try:
            for name in path:
                obj = getattr(obj, name)
        except AttributeError:
            continue
        if path[0] in public:
            return ".".join([_PACKAGE, *path]), obj
        return "", obj
    return None


def _resolve_private_reference(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: Element
) -> Node | None:
    if node.get("refdomain") != "py":
        return None
    found = _private_lookup(node.get("reftarget", ""))
    if found is None:
        return None
    public_name, obj = found
    if public_name:
        return env.get_domain("py").resolve_xref(
            env,
            node["refdoc"],
            app.builder,
            node["reftype"],
            public_name,
            node,
            contnode,
        )
    if not (inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj)):
        return contnode  # a type alias or type variable: plain text
    return None


def _drop_exception_return_type(
    app: Sphinx, domain: str, objtype: str, contentnode: Element
) -> None:
    """Do not list "Return type: None" for an exception's constructor.

    autodoc leaves it out for classes but not for exceptions.
    """
    if domain != "py" or objtype != "exception":
        return
    try:
        signature: Any = contentnode.parent[0]
        module, fullname = signature["module"], signature["fullname"]
        annotations = app.env.current_document.autodoc_annotations
    except (AttributeError, IndexError, KeyError):
        return
    annotations.get(f"{module}.{fullname}" if module else fullname, {}).pop(
        "return", None
    )


def _attribute_docstrings_without_inline_types() -> None:
    """Read attribute docstrings as plain prose.

    In the Google style, napoleon takes "Word: text" at the start of an
    attribute docstring as "type: description".  This package's attributes
    have real annotations, so a leading "Negotiation: ..." is always prose.
    """
    from sphinx.ext.napoleon.docstring import GoogleDocstring

    if not hasattr(GoogleDocstring, "_parse_attribute_docstring"):
        return

    def parse(self: Any) -> list[str]:
        lines = self._dedent(self._consume_to_end())
        lines = type(self)(lines, self._config).lines()
        return self._format_field("", "", lines)

    GoogleDocstring._parse_attribute_docstring = parse


def setup(app: Sphinx) -> None:
    _attribute_docstrings_without_inline_types()
    app.connect("missing-reference", _resolve_private_reference)
    app.connect("object-description-transform", _drop_exception_return_type, 499)
