"""The user guide's examples are real: every page's code runs, and every command's output
shown is what the command prints.

- Every fenced ``python`` block of ``docs/guide/*.md`` is executed, in page order, in one
  namespace per page, from a temporary folder (the examples' own ``assert`` statements are
  checks too). Blocks fenced as ``bash``, ``console`` or ``text`` are not executed.
- Every ``$ lwpd ...`` line of a ``console`` block is run through :func:`lwpd.cli.main` and
  its output compared with the lines shown below it, exactly, except the ``decode ms``
  column of ``lwpd run`` (wall clock).
- The CLI page documents every option of every subcommand, and the guide's index lists
  every page.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lwpd import cli

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guide"
PAGES = sorted(p for p in GUIDE.glob("*.md") if p.name != "index.md")
FENCE = re.compile(r"^```(\S*)\n(.*?)^```", re.S | re.M)
#: Columns of ``lwpd run``'s table that are wall-clock measurements, not results.
WALL_CLOCK_COLUMNS = ("decode ms",)


def _blocks(page: Path, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(page.read_text(encoding="utf-8")) if lang == language]


def _console_examples() -> list[tuple[str, str, list[str]]]:
    """``(page name, command, expected output lines)`` for every ``$ lwpd`` line."""
    examples = []
    for page in PAGES:
        for body in _blocks(page, "console"):
            lines = body.rstrip("\n").split("\n")
            starts = [i for i, line in enumerate(lines) if line.startswith("$ ")] + [len(lines)]
            for here, after in zip(starts, starts[1:]):
                command = lines[here][2:]
                assert command.startswith("lwpd "), f"{page.name}: a console example runs something other than lwpd: {command}"
                examples.append((page.name, command, lines[here + 1:after]))
    return examples


CONSOLE = _console_examples()


def test_guide_pages_exist_and_are_listed():
    assert PAGES, f"no guide pages in {GUIDE}"
    index = (GUIDE / "index.md").read_text(encoding="utf-8")
    toctree = re.search(r"```\{toctree\}\n(.*?)```", index, re.S)
    assert toctree, "docs/guide/index.md has no toctree"
    listed = {line.strip() for line in toctree.group(1).splitlines() if line.strip() and not line.startswith(":")}
    assert listed == {p.stem for p in PAGES}
    assert "guide/index" in (GUIDE.parent / "index.md").read_text(encoding="utf-8")


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if _blocks(p, "python")], ids=lambda p: p.stem)
def test_guide_page_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    blocks = _blocks(page, "python")
    if any(_starts_processes(block) for block in blocks):
        _run_as_a_saved_script(page, blocks, tmp_path)
        return
    namespace: dict = {"__name__": "__guide__"}
    try:
        for i, source in enumerate(_blocks(page, "python")):
            exec(compile(source, f"{page.name}[python block {i}]", "exec"), namespace)
    finally:
        plt.close("all")


def _starts_processes(source: str) -> bool:
    return any(call in source for call in ("dask_cluster(", "ProcessPoolExecutor(", "LocalCluster("))


def _run_as_a_saved_script(page: Path, blocks: list[str], folder: Path) -> None:
    """A page whose examples start processes runs as a user would run it: its blocks saved to
    a file and run by ``python file.py``; spawned workers import that file again, so every
    block that starts processes must keep its run under the ``__main__`` guard."""
    for block in blocks:
        if _starts_processes(block):
            assert 'if __name__ == "__main__":' in block, f"{page.name}: a block starts processes without the __main__ guard"
    script = folder / f"{page.stem}_examples.py"
    script.write_text("\n\n".join(blocks), encoding="utf-8")
    env = {**os.environ, "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, str(script)], cwd=folder, capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 0, f"{page.name} run as a script failed:\n{out.stderr[-3000:]}"


def _fields(line: str) -> list[str]:
    """A table row's fields: columns are separated by two spaces or more."""
    return re.split(r"\s{2,}", line.strip())


def _without_wall_clock(lines: list[str]) -> list[str]:
    """The lines with the wall-clock columns of any table blanked out."""
    out, drop = [], []
    for line in lines:
        fields = _fields(line)
        if any(name in fields for name in WALL_CLOCK_COLUMNS):
            drop = [fields.index(name) for name in WALL_CLOCK_COLUMNS if name in fields]
            width = len(fields)
        if drop and len(fields) == width:
            out.append(" | ".join("<wall clock>" if i in drop else f for i, f in enumerate(fields)))
        else:
            drop = [] if not line.strip() else drop
            out.append(line.rstrip())
    return out


def test_wall_clock_masking_blanks_only_that_column():
    table = ["name   compute  decode ms  time", "a         1.00      0.070     2.5", "", "a  b"]
    other = ["name   compute  decode ms  time", "a         1.00      9.999     2.5", "", "a  b"]
    assert _without_wall_clock(table) == _without_wall_clock(other)
    assert _without_wall_clock(table) != _without_wall_clock(["name   compute  decode ms  time", "a  1.01  0.070  2.5", "", "a  b"])


@pytest.mark.slow
@pytest.mark.parametrize("page, command, expected", CONSOLE, ids=[c for _, c, _ in CONSOLE])
def test_console_output_is_what_the_command_prints(page, command, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    status = cli.main(shlex.split(command)[1:])
    assert status == 0, f"{page}: `{command}` exited with status {status}"
    printed = capsys.readouterr().out.rstrip("\n").split("\n")
    assert _without_wall_clock(printed) == _without_wall_clock(expected), f"{page}: `{command}` prints something else now"


def test_cli_page_documents_every_option():
    text = (GUIDE / "cli.md").read_text(encoding="utf-8")
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert set(subparsers.choices) == {"codebook", "run"}
    for name, sub in subparsers.choices.items():
        assert f"`lwpd {name}`" in text, f"cli.md has no section for `lwpd {name}`"
        for action in sub._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert re.search(rf"`{re.escape(flag)}[` ]", text), f"cli.md does not document `lwpd {name} {flag}`"
