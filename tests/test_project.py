"""The README's promises: its commands match CI, and its examples run; and the package's
house rules: no import cycle, no module over 800 lines."""

import ast
import graphlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_second():
    commands = [b.strip() for b in _blocks("bash")]
    assert len(commands) == 2
    assert commands[0].endswith("lwpd run")
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci.splitlines()


def test_readme_python_examples_run():
    quick_start, sklearn_example, torch_example, _ = _blocks("python")
    namespace = {}
    exec(compile(quick_start, "README.md", "exec"), namespace)
    g, g_hat = namespace["g"], namespace["g_hat"]
    assert g_hat @ g >= 0
    assert 0 < namespace["decoder"].recovered_fraction() < 1

    namespace = {}
    exec(compile(sklearn_example, "README.md", "exec"), namespace)
    assert namespace["model"].score(namespace["X"], namespace["y"]) > 0.95
    assert namespace["clf"].history_.time[-1] > 0

    namespace = {}
    exec(compile(torch_example, "README.md", "exec"), namespace)
    stats = namespace["opt"].last_stats
    assert 0 < stats.received <= stats.n_codewords and 0 < stats.recovered_fraction <= 1



@pytest.mark.slow
def test_readme_dask_example_runs_as_a_saved_script(tmp_path):
    """Saved to a file and run with ``python file.py``, as a user would: Dask's worker
    processes re-import the script, which needs the ``__main__`` guard."""
    dask_example = _blocks("python")[3]
    assert 'if __name__ == "__main__":' in dask_example
    checks = (
        '\nif __name__ == "__main__":\n'
        "    assert len(h) == 30 and h.loss[-1] < 1e-3 * problem.loss(np.zeros(40))\n"
        "    totals = h.totals()\n"
        '    assert totals["dispatched"] == sum(h.received) + sum(h.dropped) and totals["failed"] == 0\n'
        '    print("README dask example: ok")\n'
    )
    script = tmp_path / "readme_dask_example.py"
    script.write_text(dask_example + checks)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "README dask example: ok" in out.stdout


def test_readme_console_example_matches_the_cli():
    (console,) = _blocks("console")
    command, expected = console.split("\n", 1)
    args = command.removeprefix("$ lwpd ").split()
    out = subprocess.run([sys.executable, "-m", "lwpd.cli", *args], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected.strip()


def test_main_job_prints_the_metrics_table():
    out = subprocess.run([sys.executable, "-m", "lwpd.cli", "codebook", "--dim", "3"], capture_output=True, text=True, check=True)
    assert "13 codewords" in out.stdout
    for label in ("coherence", "Welch bound", "min angle (deg)", "frame potential", "max weight"):
        assert label in out.stdout
    assert np.isclose(float(out.stdout.split("coherence")[-1].split()[0]), np.sqrt(2 / 3), atol=1e-6)


def test_entry_points_share_the_worker_count_and_wait_for_defaults():
    """lwpd run, the scikit-learn wrappers and CodedOptimizer simulate the same number of
    workers by default, and every partial-decoding scheme waits for the same fraction."""
    import inspect

    from lwpd import _defaults, cli
    from lwpd.schemes import LWPD, IgnoreStragglers, RandomK, ReplicatedLWPD, registry
    from lwpd.sklearn import CodedGDClassifier, CodedGDRegressor
    from lwpd.torch import CodedOptimizer

    def default(fn, name):
        return inspect.signature(fn).parameters[name].default

    assert {default(CodedGDClassifier, "n_workers"), default(CodedGDRegressor, "n_workers"),
            default(CodedOptimizer, "n_workers"), cli.build_parser().parse_args(["run"]).workers} == {_defaults.WORKERS}
    assert {default(cls, "wait_for") for cls in (LWPD, IgnoreStragglers, RandomK, ReplicatedLWPD, CodedOptimizer)} \
        == {_defaults.WAIT_FOR}
    assert registry.make_scheme("lwpd", 8).wait_for == registry.make_scheme("ignore", 8).wait_for == _defaults.WAIT_FOR


def test_policy_names_are_trains_and_the_old_optimizer_name_still_works():
    import torch

    from lwpd.torch import CodedOptimizer

    model = torch.nn.Linear(8, 2)  # 18 parameters: codewords enough for the default 16 workers
    with pytest.warns(DeprecationWarning, match="'first_k'"):
        opt = CodedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), policy="fastest", seed=0)
    assert opt.policy == "first_k"
    with pytest.raises(ValueError, match="'deadline', 'first_k', 'all'"):
        CodedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), policy="async")
    with pytest.warns(DeprecationWarning, match="parameter_partition"):
        assert opt.layout is opt.parameter_partition


def test_directional_derivatives_still_take_the_old_layout_keyword():
    import torch

    from lwpd import block_codebook, projective_codebook
    from lwpd.torch import directional_derivatives, partition_parameters

    model = torch.nn.Linear(3, 2)
    parts = partition_parameters(model, "neuron")
    cb = block_codebook(projective_codebook(4, max_weight=2), parts.partition)
    x, y = torch.randn(5, 3), torch.randn(5, 2)
    loss = torch.nn.functional.mse_loss
    with pytest.warns(DeprecationWarning, match="partition="):
        old = directional_derivatives(model, loss, x, y, cb, layout=parts)
    torch.testing.assert_close(old, directional_derivatives(model, loss, x, y, cb, partition=parts))


PACKAGE = ROOT / "codes" / "lwpd"


def _import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere (function-level imports too), plus the
    ``__init__`` of every subpackage it imports from (importing ``a.b.c`` runs ``a.b``)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else [])) \
                    if node.level else (node.module or "")
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                if target not in modules or target == name:
                    continue
                graph[name].add(target)
                pieces = target.split(".")
                for k in range(2, len(pieces)):  # the subpackages on the way (the root only re-exports)
                    parent = ".".join(pieces[:k])
                    if parent in modules and not name.startswith(parent + ".") and parent != name:
                        graph[name].add(parent)
    return graph


def test_the_package_imports_without_a_cycle_counting_function_level_imports():
    graph = _import_graph()
    assert {"lwpd.decoders.projection", "lwpd.torch.optimizer", "lwpd._kernels.cpu"} <= set(graph)
    assert "lwpd._config" in graph["lwpd._kernels.cpu"]  # the walk sees imports
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as cycle:
        pytest.fail(f"import cycle: {' -> '.join(cycle.args[1])}")


def test_no_module_is_over_800_lines():
    lengths = {p.relative_to(PACKAGE).as_posix(): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert len(lengths) > 20
    assert not {name: n for name, n in lengths.items() if n > 800}
