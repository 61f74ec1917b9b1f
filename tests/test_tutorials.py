"""Execute every tutorial notebook, without Jupyter.

Each ``tutorials/*.ipynb`` is read as JSON and its code cells are executed in order in one
namespace, with matplotlib on the non-interactive Agg backend. A tutorial passes when no cell
raises and it produced at least one figure. The notebooks' own ``assert`` statements are
checks too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))


def test_tutorials_exist():
    assert NOTEBOOKS, f"no notebooks found in {TUTORIALS}"


def _code_cells(path: Path) -> list[str]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb.get("nbformat") == 4, f"{path.name}: expected nbformat 4, got {nb.get('nbformat')}"
    cells = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = cell["source"]
        cells.append("".join(source) if isinstance(source, list) else source)
    return cells


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
@pytest.mark.slow
def test_tutorial_runs(path: Path, monkeypatch: pytest.MonkeyPatch):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = _code_cells(path)
    assert cells, f"{path.name} has no code cells"
    for i, source in enumerate(cells):
        magic = [line for line in source.splitlines() if line.lstrip().startswith(("%", "!"))]
        assert not magic, f"{path.name} code cell {i} uses IPython syntax, which plain Python cannot run: {magic}"

    monkeypatch.chdir(path.parent)  # as Jupyter runs a notebook: from its own folder
    plt.close("all")
    namespace: dict = {"__name__": "__main__"}
    try:
        for i, source in enumerate(cells):
            exec(compile(source, f"{path.name}[code cell {i}]", "exec"), namespace)
        n_figures = len(plt.get_fignums())
    finally:
        plt.close("all")
    assert n_figures >= 1, f"{path.name} produced no figure"
