"""Build the Sphinx site with warnings as errors, offline, as a user of the docs would see it.

The tutorials are rendered without executing them here (``nb_execution_mode=off``):
``tests/test_tutorials.py`` executes every notebook already, and executing them twice would
double their share of the suite's time. Everything else -- the API reference of every
public name (autodoc imports each module), cross-references, math, the user guide -- is
built as on the published site, and any warning fails the test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.mark.slow
def test_sphinx_builds_without_warnings(tmp_path: Path):
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_nb")
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
               "-D", "nb_execution_mode=off", "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"sphinx-build failed (exit status {proc.returncode}):\n{proc.stderr[-6000:]}"
    assert not proc.stderr.strip(), f"sphinx-build printed warnings:\n{proc.stderr[-6000:]}"
    pages = {p.relative_to(tmp_path / "html").as_posix() for p in (tmp_path / "html").rglob("*.html")}
    assert {"index.html", "theory.html", "api.html", "tutorials.html"} <= pages
    assert any(p.startswith("_generated/tutorials/") for p in pages), "the tutorials were not rendered"
