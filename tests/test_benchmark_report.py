"""The one-report runner, ``python -m benchmarks``: it runs the chosen benchmarks, writes
one Markdown report with the machine facts and a headline table, and says when one fails."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _runner():
    spec = importlib.util.spec_from_file_location("benchmarks_main", ROOT / "benchmarks" / "__main__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_report_of_the_kernel_benchmark(tmp_path: Path):
    out = tmp_path / "report.md"
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "kernels", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    for heading in ("# lwpd benchmark report", "## Machine", "## Headline", "## CPU kernels"):
        assert heading in text
    assert "mode: **quick**" in text and "| CPU |" in text and "| Numba |" in text and "| BLAS |" in text
    headline = text.split("## Headline", 1)[1].split("\n## ", 1)[0]
    assert "| kernels | decode 70%" in headline and ">= 50x" in headline
    assert "[1/1] kernels: ok" in proc.stderr


def test_unknown_benchmark_is_refused_by_name(tmp_path: Path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "kernels,nope", "--out", str(tmp_path / "r.md")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "--only takes names from kernels, stragglers, cluster, sklearn, torch, ddp" in proc.stderr
    assert not (tmp_path / "r.md").exists()


def test_a_failing_benchmark_is_reported_and_fails_the_run(tmp_path: Path):
    runner = _runner()
    script = tmp_path / "bench_broken.py"
    script.write_text("import sys\nprint('partial output')\nsys.exit('broken on purpose')\n")
    bench = runner.Benchmark("broken", "A broken benchmark", (), (), False, lambda data: [])
    runner.HERE = tmp_path  # run_one looks for bench_<name>.py here
    outcome = runner.run_one(bench, full=False, scratch=tmp_path)
    assert outcome.returncode == 1 and not outcome.headline
    report = runner.render([outcome], full=False, load_before="0.00 0.00 0.00", seconds=1.0)
    assert "| broken | **FAILED** (exit status 1) |" in report
    assert "broken on purpose" in report.split("## A broken benchmark", 1)[1]


def test_straggler_headline_counts_wins_losses_and_settings_nobody_reached():
    """The tally per workload and placement, read from bench_stragglers' verdicts, and the
    non-IID goal line."""
    runner = _runner()
    won = {"text": "**won** 2.00x (1.50-2.50) lwpd-mem vs iag", "variant": "lwpd-mem", "won": True}
    never = {"text": "LWPD never (nor any baseline)", "variant": "lwpd", "won": False}
    lost = {"text": "lost 1.20x (1.10-1.30) lwpd-fr vs replication", "variant": "lwpd-fr", "won": False}
    tie = {"text": "tie: lwpd and ignore", "variant": "lwpd", "won": False}
    data = {
        "axes": {"seeds": [0, 1, 2]},
        "verdicts": {"w | sorted | (a) x | compute": won, "w | sorted | (b) y | compute": never,
                     "w | sorted | (a) x | bw=n": lost, "w | iid | (a) x | compute": tie},
        "goal": {"met": 1, "cells": 4},
    }
    rows = runner._stragglers(data)
    assert rows[0] == ("w, sorted: best LWPD vs best baseline, time to target (3 settings, 3 seeds)",
                       "won 1, tied 0, lost 1, LWPD never reached 1 (in 1 of them no scheme reached it)",
                       "won by lwpd-mem")
    assert rows[1] == ("w, iid: best LWPD vs best baseline, time to target (1 settings, 3 seeds)",
                       "won 0, tied 1, lost 0, LWPD never reached 0", "-")
    assert rows[2][1] == "met in 1 of 4 settings"


@pytest.mark.slow
def test_saved_runs_are_reported_without_running_them(tmp_path: Path):
    """--saved stragglers=JSON prints the tables of an earlier run and reads its headline."""
    bench = ROOT / "benchmarks" / "bench_stragglers.py"
    saved = tmp_path / "stragglers.json"
    proc = subprocess.run([sys.executable, str(bench), "--quick", "--workloads", "lstsq", "--seeds", "1",
                           "--placements", "sorted", "--models", "b", "--networks", "compute", "--schemes", "replication,lwpd-fr",
                           "--json", str(saved),
                           "--jobs", "1"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "report.md"
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "stragglers", "--saved", f"stragglers={saved}",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "--saved stragglers=stragglers.json" in text and "--report-from stragglers.json" in text
    assert "| stragglers | lstsq, sorted: best LWPD vs best baseline" in text
    assert "### Verdicts" in text and "| lstsq | sorted | compute |" in text
