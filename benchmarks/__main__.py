"""Run every benchmark and write one Markdown report: ``python -m benchmarks``.

From the repository root::

    python -m benchmarks                 # quick mode: every benchmark, under 10 minutes on 2 cores
    python -m benchmarks --full          # the sizes behind the tables of docs/benchmarks.md (the sum of the scripts' times)
    python -m benchmarks --only kernels,cluster --out /tmp/report.md

Each benchmark runs in its own process (so that its thread settings are its own) with
``--json``; the report holds the machine facts (CPU, memory, BLAS and its threads, Numba's
threads, versions, load), a headline table drawn from every benchmark's JSON -- the ratios
and goals, won or lost -- and then every benchmark's full output. Quick mode runs smaller
problems and fewer repeats: its numbers are smoke-level and noisier than those of docs/benchmarks.md. A
benchmark that fails is reported as failed (with the end of its error output), the others
still run, and the command exits with status 1.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # _machine, as the scripts import it

from _machine import busy_warning, load_average, machine_facts  # noqa: E402

Headline = list[tuple[str, str, str]]  # (measure, result, goal or remark)


@dataclass(frozen=True)
class Benchmark:
    """One script: its arguments in each mode, how its output is shown, its headline rows."""

    name: str
    title: str
    quick: tuple[str, ...]
    full: tuple[str, ...]
    markdown: bool  # its stdout is Markdown (embedded as is) rather than plain text (fenced)
    # (the headline reads the JSON the script writes with --json)
    headline: Callable[[object], Headline] = field(repr=False)


def _ratio(x: float) -> str:
    return "never" if not math.isfinite(x) else (f"{x:,.0f}x" if x >= 100 else f"{x:.2f}x")


def _kernels(data) -> Headline:
    rows = []
    for r in data["rows"]:
        goal = "-" if r["goal"] is None else f">= {r['goal']:g}x: {'met' if r['met'] == 'yes' else 'MISSED'}"
        rows.append((r["case"].rstrip("*"), _ratio(r["ratio"]), goal))
    memory = [n for n in data["notes"] if n.startswith("ProjectionDecoder, n =")]
    rows += [("decoder memory: " + n.split(": peak", 1)[0].replace("ProjectionDecoder, ", ""),
              "peak" + n.split(": peak", 1)[1].split(";")[0], n.rsplit(";", 1)[1].strip()) for n in memory]
    return rows


def _stragglers(data) -> Headline:
    """Per workload and placement: the verdicts' tally (best LWPD variant against the best
    baseline, median over seeds), and the non-IID goal."""
    rows = []
    by_cell: dict[tuple[str, str], list[dict]] = {}
    for key, verdict in data["verdicts"].items():
        workload, placement, _, _ = key.split(" | ")
        by_cell.setdefault((workload, placement), []).append(verdict)
    for (workload, placement), verdicts in by_cell.items():
        texts = [v["text"] for v in verdicts]
        won = sum(v["won"] for v in verdicts)
        ties = sum(t.startswith("tie") for t in texts)
        never = sum(t.startswith("LWPD never") for t in texts)
        nobody = sum("nor any baseline" in t for t in texts)
        lost = len(texts) - won - ties - never
        winners = sorted({v["variant"] for v in verdicts if v["won"]})
        result = f"won {won}, tied {ties}, lost {lost}, LWPD never reached {never}"
        if nobody:
            result += f" (in {nobody} of them no scheme reached it)"
        rows.append((f"{workload}, {placement}: best LWPD vs best baseline, time to target "
                     f"({len(texts)} settings, {len(data['axes']['seeds'])} seeds)", result,
                     "won by " + ", ".join(winners) if winners else "-"))
    goal = data["goal"]
    rows.append(("non-IID goal: sorted and Dirichlet shards, stragglers (b) and failures (d)",
                 f"met in {goal['met']} of {goal['cells']} settings", "goal: every setting"))
    return rows


def _cluster(data) -> Headline:
    by = {r["scheme"]: r for r in data["training"]}
    base = by["uncoded"]
    rows = []
    for scheme, r in by.items():
        if scheme == "uncoded":
            continue
        rows.append((f"Dask: {scheme} wall time to target over uncoded",
                     _ratio(base["wall_to_target_s"] / r["wall_to_target_s"]),
                     f"simulation predicts {_ratio(base['predicted_to_target_s'] / r['predicted_to_target_s'])}"))
    o = data["overhead"]
    rows.append(("Dask scheduler overhead per task / process pool", _ratio(o["dask_ms_per_task"] / o["pool_ms_per_task"]),
                 f"{o['dask_ms_per_task']:.2f} ms vs {o['pool_ms_per_task']:.2f} ms"))
    for r in data["robust"]:
        rows.append((f"robust / plain decoding time per block ({r['case']})", _ratio(r["ratio"]),
                     f"error robust {r['robust_error']:.1e}, plain {r['projection_error']:.1e}"))
    return rows


def _ddp(data) -> Headline:
    settings = data["settings"]
    runs = ("smoke test: 1 epoch, 1 seed, 1 fold -- no verdict" if settings["quick"] else
            f"{settings['epochs']} epochs, median of {settings['seeds']} seeds, {settings['folds']}-fold cross-validation")
    rows = []
    for world, results in data["worlds"].items():
        for model in sorted({r["model"] for r in results}):
            by = {r["hook"]: r for r in results if r["model"] == model}
            gaps = []
            for hook, p in by.items():
                if not hook.startswith("powersgd-"):
                    continue
                rank = hook.split("-", 1)[1]
                ours = [by[h] for h in (f"lwpd@{rank}", f"lwpd@{rank}-noef", f"lwpd@{rank}-random") if h in by]
                if ours:
                    best = max(ours, key=lambda r: r["accuracy"])
                    gaps.append(f"rank {rank}: {100 * (best['accuracy'] - p['accuracy']):+.1f} "
                                f"({best['ms_per_step'] / p['ms_per_step']:.2f}x time)")
            rows.append((f"DDP {model}, {world} processes ({runs}): best LWPD minus PowerSGD accuracy at equal floats "
                         "(points; time per step)", ", ".join(gaps), "goal: within 0.5 points at lower time"))
            if "lwpd-exact" in by and "allreduce" in by:
                e, a = by["lwpd-exact"], by["allreduce"]
                ratio, goal = e["ms_per_step"] / a["ms_per_step"], settings["exact_goal"]
                rows.append((f"DDP {model}, {world} processes: LWPD hook in exact mode (a whole basis per block) over "
                             "allreduce, time per step",
                             f"{ratio:.2f}x ({e['ms_per_step']:.2f} vs {a['ms_per_step']:.2f} ms; recovered "
                             f"{100 * e['recovered']:.0f}%, accuracy {100 * e['accuracy']:.1f}% vs {100 * a['accuracy']:.1f}%)",
                             f"<= {goal:g}x: {'met' if ratio <= goal else 'MISSED'}"))
    return rows


def _sklearn(data) -> Headline:
    rows = []
    for data_name in dict.fromkeys(r["data"] for r in data):
        by = {r["model"]: r for r in data if r["data"] == data_name}
        ref_name = next(iter(by))
        ref = by[ref_name]
        large = data_name.startswith("synthetic (100,000")
        for label in ("CodedGD, no stragglers", "CodedGD, no stragglers, tol=1e-6"):
            coded = by[label]
            goal = (f"<= 3x: {'met' if coded['x_reference'] <= 3 else 'MISSED'}"
                    if large and label == "CodedGD, no stragglers" else "-")  # the goal is for the defaults
            rows.append((f"{data_name}: {label} vs {ref_name}, fit time",
                         f"{_ratio(coded['x_reference'])} ({coded['steps']} steps; score {coded['score']:.4f} vs "
                         f"{ref['score']:.4f}, coefficients {coded['coef_distance']:.0e} from the reference's)", goal))
        if "CodedGD, stragglers, lwpd" in by:
            lw, un = by["CodedGD, stragglers, lwpd"], by["CodedGD, stragglers, uncoded"]
            rows.append((f"{data_name}: simulated time to a common loss, LWPD over uncoded (16 workers)",
                         _ratio(un["sim_time"] / lw["sim_time"]) if lw["sim_time"] else "-", "straggler speed-up"))
    return rows


def _torch(data) -> Headline:
    rows = []
    for s in data["steps"]:
        goal = ""
        if s["batch"] == 128 and s["variant"].startswith("neuron,"):  # the goal: every failure rate, batch 128
            goal = f"<= 15%: {'met' if s['overhead'] <= 0.15 else 'MISSED'}"
            if s.get("by_lost"):  # the reason: which steps cost what
                goal += " (" + "; ".join(f"{100 * g['share']:.0f}% of steps lost {g['lost']}: {100 * g['overhead']:+.0f}%"
                                         for g in s["by_lost"]) + ")"
        rows.append((f"CodedOptimizer overhead, {s['variant']}, batch {s['batch']}",
                     f"{100 * s['overhead']:.0f}% wall, {100 * s['cpu_overhead']:.0f}% CPU", goal))
    d = data["derivatives"]
    rows.append(("one directional derivative by jvp / by backprop", _ratio(d["jvp_one_ms"] / d["backprop_ms"]), ""))
    return rows


def _scaling(data) -> Headline:
    largest, base = data["workers"][-1], data["ms"]["uncoded"][-1]
    rows = []
    for scheme, row in data["ms"].items():
        if scheme != "uncoded":
            ratio = row[-1] / base
            rows.append((f"simulated cluster, {largest:,} workers: {scheme} wall time per step over uncoded",
                         f"{ratio:.1f}x ({row[-1]:,.0f} ms)", f"<= {data['goal']:g}x: {'met' if ratio <= data['goal'] else 'MISSED'}"))
    return rows


BENCHMARKS = [
    Benchmark("kernels", "CPU kernels: encode, decode, update, memory", ("--quick", "--markdown"), ("--markdown",), True,
              _kernels),
    Benchmark("stragglers", "Stragglers: simulated time to a target loss on honest costs",
              ("--quick",), (), True, _stragglers),
    # its full run takes about a minute, and its quick run stops before any scheme reaches the target
    Benchmark("cluster", "Clusters: Dask wall clock, scheduler overhead, robust decoding", (), (), True, _cluster),
    Benchmark("sklearn", "scikit-learn: fit time and accuracy", ("--quick", "--repeat", "1"), (), False, _sklearn),
    Benchmark("torch", "torch: CodedOptimizer overhead, directional derivatives", ("--quick",), (), False, _torch),
    Benchmark("ddp", "DDP: the LWPD hook against torch's own hooks", ("--quick",), (), True, _ddp),
    Benchmark("scaling", "Simulating large clusters: wall time per step", ("--quick",), (), True, _scaling),
]
NAMES = [b.name for b in BENCHMARKS]


@dataclass
class Outcome:
    bench: Benchmark
    command: list[str]
    seconds: float
    returncode: int
    stdout: str
    stderr: str
    headline: Headline
    headline_error: str = ""


def run_one(bench: Benchmark, full: bool, scratch: Path, saved: Path | None = None) -> Outcome:
    """Run one benchmark script with ``--json``; with ``saved`` (a JSON an earlier run of the
    script wrote), print its tables (``--report-from``) and read its headline instead."""
    out_json = scratch / f"{bench.name}.json" if saved is None else saved
    script = HERE / f"bench_{bench.name}.py"
    args = [*(bench.full if full else bench.quick), "--json", str(out_json)] if saved is None else \
        [*(a for a in bench.quick if a == "--markdown"), "--report-from", str(saved)]
    command = [sys.executable, str(script), *args]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    headline: Headline = []
    error = ""
    if proc.returncode == 0:
        try:
            headline = bench.headline(json.loads(out_json.read_text()))
        except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError) as exc:  # report, do not hide
            error = f"{type(exc).__name__}: {exc}"
    return Outcome(bench, command, seconds, proc.returncode, proc.stdout, proc.stderr, headline, error)


def _git_commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(outcomes: list[Outcome], full: bool, load_before: str, seconds: float, saved: tuple = ()) -> str:
    mode = "full" if full else "quick"
    lines = [
        "# lwpd benchmark report",
        "",
        f"- mode: **{mode}**" + ("" if full else " (smaller problems and fewer repeats than the tables of docs/benchmarks.md: "
                                              "smoke-level numbers; `python -m benchmarks --full` for those)"),
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- commit: {_git_commit()}",
        f"- command: `python -m benchmarks{' --full' if full else ''}{''.join(f' --saved {s}' for s in saved)}`, "
        f"total {seconds / 60:.1f} minutes",
        "- every ratio is measured in one run, on this machine; ratio > 1 means lwpd does better",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {k} | {_cell(v)} |" for k, v in machine_facts(load_before, optional=True)]
    warning = busy_warning(load_before)
    if warning:
        lines += ["", warning]
    lines += ["", "## Headline", "", "| benchmark | measure | result | goal / remark |", "|---|---|---|---|"]
    for o in outcomes:
        if o.returncode != 0:
            lines.append(f"| {o.bench.name} | **FAILED** (exit status {o.returncode}) | | see its section |")
        elif o.headline_error:
            lines.append(f"| {o.bench.name} | headline not read: {_cell(o.headline_error)} | | see its section |")
        lines += [f"| {o.bench.name} | {_cell(m)} | {_cell(r)} | {_cell(g)} |" for m, r, g in o.headline]
    for o in outcomes:
        shown = o.command[2:] if "--report-from" in o.command else o.command[2:-2]
        if "--report-from" in o.command:
            shown = ["--report-from", Path(o.command[-1]).name]
        lines += ["", f"## {o.bench.title}", "",
                  f"`{' '.join(['python', 'benchmarks/' + Path(o.command[1]).name, *shown])}` "
                  f"-- {o.seconds:.0f} s, exit status {o.returncode}"
                  + (" (the tables of an earlier run; its own wall time is on the last line)"
                     if "--report-from" in o.command else ""), ""]
        if o.returncode != 0:
            tail = "\n".join(o.stderr.strip().splitlines()[-30:])
            lines += ["It failed; the end of its error output:", "", "```text", tail, "```"]
            continue
        body = o.stdout.strip()
        lines += [body] if o.bench.markdown else ["```text", body, "```"]
    return "\n".join(lines) + "\n"


DOCS_PAGE = ROOT / "docs" / "benchmarks.md"
_MARKERS = ("<!-- headline:start -->", "<!-- headline:end -->")


def update_docs_headline(report: str, page: Path) -> Path:
    """Copy the report's headline table (with its date, commit and mode) between the markers
    of the docs' benchmarks page, so the page and ``REPORT.md`` show the same numbers."""
    head, table = report.split("\n## Headline\n", 1)
    table = table.split("\n## ", 1)[0].strip()
    facts = [line for line in head.splitlines() if line.startswith(("- mode:", "- date:", "- commit:", "- command:"))]
    text = page.read_text(encoding="utf-8")
    start, end = (text.index(marker) for marker in _MARKERS)
    body = "\n".join(["From `benchmarks/REPORT.md`:", "", *facts, "", table])
    page.write_text(text[: start + len(_MARKERS[0])] + "\n" + body + "\n" + text[end:], encoding="utf-8")
    return page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="the sizes behind docs/benchmarks.md's tables instead of quick mode")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of: {', '.join(NAMES)}")
    parser.add_argument("--out", default=str(HERE / "REPORT.md"), help="where to write the report (default: %(default)s)")
    parser.add_argument("--saved", action="append", default=[], metavar="NAME=JSON",
                        help="report a benchmark from the JSON of an earlier (longer) run instead of running it, "
                        "e.g. stragglers=stragglers_full.json (its scripts' --report-from)")
    args = parser.parse_args(argv)
    saved = {}
    for item in args.saved:
        name, sep, path = item.partition("=")
        if not sep or name not in NAMES or not Path(path).is_file():
            parser.error(f"--saved takes NAME=JSON with NAME from {', '.join(NAMES)} and an existing file; got {item!r}")
        saved[name] = Path(path).resolve()
    chosen = NAMES if args.only is None else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(chosen) - set(NAMES))
    if unknown or not chosen:
        parser.error(f"--only takes names from {', '.join(NAMES)}; got {args.only!r}")
    load_before = load_average()
    start = time.perf_counter()
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="lwpd-bench-") as scratch:
        for i, bench in enumerate(b for b in BENCHMARKS if b.name in chosen):
            print(f"[{i + 1}/{len(chosen)}] {bench.name} ...", file=sys.stderr, flush=True)
            outcome = run_one(bench, args.full, Path(scratch), saved.get(bench.name))
            status = "ok" if outcome.returncode == 0 else f"FAILED (exit status {outcome.returncode})"
            print(f"[{i + 1}/{len(chosen)}] {bench.name}: {status} in {outcome.seconds:.0f} s "
                  f"(total {(time.perf_counter() - start) / 60:.1f} min)", file=sys.stderr, flush=True)
            outcomes.append(outcome)
    report = render(outcomes, args.full, load_before, time.perf_counter() - start,
                    tuple(f"{n}={p.name}" for n, p in saved.items()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report, encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)
    if out.resolve() == (HERE / "REPORT.md").resolve():  # the committed report: its docs page follows it
        print(f"updated {update_docs_headline(report, DOCS_PAGE)}", file=sys.stderr)
    return 0 if all(o.returncode == 0 and not o.headline_error for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
