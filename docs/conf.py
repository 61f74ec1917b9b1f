"""Sphinx configuration for the lwpd documentation.

Build from the repository root with::

    .venv/bin/python -m sphinx -b html docs docs/_build/html -W --keep-going

The tutorials live in ``../tutorials/`` (their single source). Sphinx only reads documents
inside its source directory, so :func:`_copy_tutorials` copies ``tutorials/*.ipynb`` into
``docs/_generated/tutorials/`` (git-ignored) when the builder starts, and ``tutorials.md``
links to the copies. myst-nb executes them (cached in ``docs/_build/.jupyter_cache``).
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
TUTORIALS = ROOT / "tutorials"
GENERATED = DOCS / "_generated" / "tutorials"

# Import the package from the working tree even when it is not installed.
sys.path.insert(0, str(ROOT / "codes"))

import lwpd  # noqa: E402

# -- Project -------------------------------------------------------------------------------
project = "lwpd"
author = "lwpd developers"
copyright = "lwpd developers"
version = release = lwpd.__version__

# -- General -------------------------------------------------------------------------------
extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]
# sphinx.ext.intersphinx is left out: the build machines have no network access.

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints", ".gitignore"]
templates_path: list[str] = []

# -- MyST ----------------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# -- myst-nb (notebook execution) ---------------------------------------------------------
nb_execution_mode = "cache"
nb_execution_timeout = 300
nb_execution_raise_on_error = True  # a failing tutorial fails the build
nb_execution_show_tb = True
nb_kernel_rgx_aliases = {".*": "python3"}
nb_merge_streams = True

# -- autodoc / autosummary / napoleon ------------------------------------------------------
autosummary_generate = False  # api.md documents every name on the page itself
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "none"  # the numpydoc docstrings carry the types
autodoc_member_order = "bysource"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_ivar = True

# -- HTML ------------------------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"lwpd {release}"
html_static_path: list[str] = []
html_theme_options = {"description": "Lightweight projective derivative codes", "fixed_sidebar": True}
mathjax3_config = {"tex": {"macros": {"R": r"\mathbb{R}", "F": r"\mathbb{F}"}}}


def _copy_tutorials(app) -> None:
    """Mirror ``tutorials/*.ipynb`` into ``docs/_generated/tutorials/``.

    A copy is rewritten only when its bytes change, so Sphinx and the execution cache see
    unchanged notebooks as unchanged; copies of deleted notebooks are removed.
    """
    GENERATED.mkdir(parents=True, exist_ok=True)
    sources = {p.name: p for p in sorted(TUTORIALS.glob("*.ipynb"))}
    for stale in GENERATED.glob("*.ipynb"):
        if stale.name not in sources:
            stale.unlink()
    for name, src in sources.items():
        dst = GENERATED / name
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copyfile(src, dst)


def _check_api_page(app) -> None:
    """Warn (an error under ``-W``) when api.md misses a name of ``lwpd.__all__``."""
    from sphinx.util import logging

    text = (DOCS / "api.md").read_text(encoding="utf-8")
    names = set(re.findall(r"^\.\. auto(?:class|function):: (\w+)", text, re.M))
    missing = sorted(set(lwpd.__all__) - names)
    if missing:
        logging.getLogger(__name__).warning(
            "api.md does not document these public names of lwpd.__all__: %s", ", ".join(missing)
        )


#: Classes whose ``__init__`` is private (built through classmethods or constructor
#: functions): their private constructor arguments are not shown as a signature.
PRIVATE_CONSTRUCTORS = {"lwpd.Codebook"}


def _hide_private_constructor(app, what, name, obj, options, signature, return_annotation):
    if what == "class" and name in PRIVATE_CONSTRUCTORS:
        return "", return_annotation
    return None


def _no_inline_property_type(app, what, name, obj, options, lines):
    """Keep napoleon from reading a property's first line ``text: more text`` as
    ``type: description`` (properties here carry their type in annotations, never inline).

    Runs before napoleon (priority 400 < 500) and puts an empty reST comment (``..``) first,
    so that napoleon finds no inline type; the comment renders as nothing.
    """
    if what in ("property", "attribute") and lines and ": " in lines[0]:
        lines[:0] = ["..", ""]


def setup(app):
    app.connect("autodoc-process-docstring", _no_inline_property_type, priority=400)
    app.connect("autodoc-process-signature", _hide_private_constructor)
    app.connect("builder-inited", _copy_tutorials)
    app.connect("builder-inited", _check_api_page)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
