import json
import math
import re

import pytest

from lwpd.cli import main


def test_codebook_command_prints_codewords_and_metrics(capsys):
    assert main(["codebook", "--dim", "2"]) == 0
    out = capsys.readouterr().out
    assert "PG(1, 3): 4 codewords" in out
    assert "[  +1  -1 ]" in out
    assert "45.000000" in out  # minimum angle of the four lines of PG(1,3)


def test_codebook_command_with_weight_limit_and_q(capsys):
    assert main(["codebook", "--dim", "4", "--q", "5", "--max-weight", "2"]) == 0
    out = capsys.readouterr().out
    assert f"{4 + 6 * 4} codewords" in out


@pytest.mark.parametrize("criterion", ["coherence", "frame_potential", "mutual_information", "logdet"])
def test_codebook_command_compresses(capsys, criterion):
    assert main(["codebook", "--dim", "3", "--compress", "4", "--criterion", criterion]) == 0
    out = capsys.readouterr().out
    assert "compressed to 4" in out
    assert len(re.findall(r"^\s+v\d+\s+weight", out, flags=re.M)) == 4


@pytest.mark.parametrize(
    "argv,message",
    [
        (["codebook", "--dim", "3", "--q", "4"], "q must be a prime"),
        (["codebook", "--dim", "0"], "dim must be >= 1"),
        (["codebook", "--dim", "3", "--compress", "99"], "--compress must be in [1, 13]"),
        (["codebook", "--dim", "3", "--max-weight", "0"], "--max-weight must be >= 1"),
    ],
)
def test_codebook_command_reports_bad_input(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_welch_bound_line_is_correct(capsys):
    main(["codebook", "--dim", "3"])
    out = capsys.readouterr().out
    value = float(out.split("Welch bound")[1].split()[0])
    assert value == pytest.approx(math.sqrt((13 - 3) / (3 * 12)), abs=1e-6)


def test_criterion_without_compress_is_an_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["codebook", "--dim", "3", "--criterion", "logdet"])
    assert info.value.code == 2
    assert "--criterion needs --compress" in capsys.readouterr().err


@pytest.mark.slow
def test_a_closed_pipe_ends_quietly():
    import subprocess
    import sys

    reader = "import sys; sys.stdin.readline()"
    cmd = f"{sys.executable} -m lwpd.cli codebook --dim 9 | {sys.executable} -c '{reader}'"
    out = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr


def test_run_writes_its_table_json_and_plot(tmp_path, capsys):
    import json

    out = tmp_path / "results"
    argv = ["run", "--dataset", "wine", "--workers", "4", "--max-steps", "15", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    names = ["uncoded", "ignore", "replication", "gc-cyclic", "gc-partial", "lwpd"]
    for name in names:
        assert re.search(rf"^{name}\s", printed, flags=re.M)
    assert re.search(r"^scheme\s+compute\s+floats\s+decode ms\s+time to target", printed, flags=re.M)
    data = json.loads((out / "results.json").read_text())
    assert [r["scheme"] for r in data["results"]] == names
    uncoded = data["results"][0]
    assert uncoded["compute_per_worker_step"] == 1.0 and uncoded["floats_per_worker_step"] == 14 * 3  # wine: 13 features + 1, 3 classes
    assert all(len(r["history"]["loss"]) >= 1 for r in data["results"])
    assert (out / "loss_vs_time.png").stat().st_size > 1000


def test_run_prices_communication(tmp_path, capsys):
    argv = ["run", "--dataset", "wine", "--schemes", "uncoded", "--workers", "4", "--max-steps", "3", "--stragglers",
            "none", "--latency", "0.5", "--bandwidth", "42", "--quiet", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert "latency 0.5, bandwidth 42 floats per time unit" in capsys.readouterr().out
    import json

    from lwpd._experiment import load_problem

    history = json.loads((tmp_path / "results.json").read_text())["results"][0]["history"]
    m = load_problem("wine", "auto", 0)[0].n_samples  # 133 rows: shards of 34 and 33
    step = 34 / (m / 4) + 0.5 + 42 / 42  # the largest shard's compute, latency, the gradient's 42 floats
    assert history["time"] == pytest.approx([step, 2 * step, 3 * step])


def test_run_least_squares_with_lcc_on_threads(tmp_path, capsys):
    argv = ["run", "--dataset", "diabetes", "--schemes", "uncoded,lcc,lwpd", "--workers", "5", "--max-steps", "5",
            "--backend", "threads", "--stragglers", "none", "--quiet", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert "R^2" in capsys.readouterr().out


@pytest.mark.slow
def test_run_on_dask(tmp_path, capsys):
    import json

    argv = ["run", "--dataset", "diabetes", "--schemes", "uncoded,lwpd", "--workers", "4", "--max-steps", "5",
            "--backend", "dask", "--stragglers", "none", "--quiet", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert "backend dask" in capsys.readouterr().out
    for scheme in json.loads((tmp_path / "results.json").read_text())["results"]:
        history = scheme["history"]
        counted = [sum(c) for c in zip(history["received"], history["dropped"], history["failed"], history["rejected"])]
        assert counted == history["dispatched"] and sum(history["failed"]) == 0


def test_run_reports_an_unreachable_scheduler(tmp_path, capsys, monkeypatch):
    from lwpd import _config

    monkeypatch.setattr(_config, "DASK_CONNECT_TIMEOUT", 0.5)
    argv = ["run", "--backend", "dask", "--dask-address", "tcp://127.0.0.1:1", "--quiet", "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "could not reach the Dask scheduler at 'tcp://127.0.0.1:1'" in err and len(err.strip().splitlines()) == 1


def test_run_is_deterministic_for_a_seed(tmp_path, capsys):
    import json

    results = []
    for name in ("a", "b"):
        main(["run", "--dataset", "breast_cancer", "--workers", "4", "--max-steps", "10", "--quiet", "--out", str(tmp_path / name)])
        results.append(json.loads((tmp_path / name / "results.json").read_text())["results"])
    for run in results:  # the master's decode times are wall-clock measurements
        for scheme in run:
            assert all(t >= 0 for t in scheme["history"].pop("decode_time"))
            assert scheme.pop("decode_ms_per_step") >= 0
    assert results[0] == results[1]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["run", "--stragglers", "weird"], "--stragglers must start with one of"),
        (["run", "--bandwidth", "0"], "--bandwidth must be > 0"),
        (["run", "--latency", "-1"], "--latency must be >= 0"),
        (["run", "--stragglers", "pareto:beta=2"], "keys alpha, scale"),
        (["run", "--schemes", "uncoded,magic"], "--schemes takes distinct names"),
        (["run", "--schemes", "uncoded,,lwpd"], "--schemes takes distinct names"),
        (["run", "--schemes", "lwpd,lwpd"], "--schemes takes distinct names"),
        (["run", "--stragglers", "pareto:alpha=nan"], "--stragglers pareto:alpha=nan: alpha must be finite"),
        (["run", "--seed", "-1"], "--seed must be an integer in [0, 2**32 - 1], got -1"),
        (["run", "--dataset", "digits", "--model", "logistic"], "needs two classes"),
        (["run", "--dataset", "diabetes", "--model", "softmax"], "needs class labels"),
        (["run", "--schemes", "lcc"], "least squares only"),
        (["run", "--workers", "1"], "--workers must be >= 2"),
        (["run", "--dask-address", "tcp://127.0.0.1:1"], "--dask-address needs --backend dask"),
        (["run", "--placement", "shuffled"], "--placement must be iid, sorted or dirichlet:alpha=A"),
        (["run", "--placement", "dirichlet:alpha=0"], "--placement 'dirichlet': alpha must be finite and > 0"),
        (["run", "--placement", "dirichlet:beta=1"], "--placement 'dirichlet' needs its concentration as 'dirichlet:alpha=A'"),
        (["run", "--placement", "sorted:x=1"], "--placement 'sorted' takes no parameters"),
    ],
)
def test_run_reports_bad_options_in_one_line(capsys, argv, message, tmp_path):
    assert main([*argv, "--quiet", "--out", str(tmp_path), "--max-steps", "2"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_run_with_the_async_policy(tmp_path, capsys):
    argv = ["run", "--dataset", "breast_cancer", "--policy", "async", "--workers", "4", "--max-steps", "10",
            "--quiet", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert "policy async" in capsys.readouterr().out


@pytest.mark.parametrize("placement", ["sorted", "dirichlet:alpha=0.5"])
def test_run_places_the_data_as_asked(tmp_path, capsys, placement):
    import json

    argv = ["run", "--dataset", "wine", "--schemes", "uncoded,lwpd", "--workers", "4", "--max-steps", "5",
            "--placement", placement, "--quiet", "--out", str(tmp_path)]
    assert main(argv) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"wine, 4 workers, placement {placement}, stragglers ")
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["config"]["placement"] == placement
    assert [r["scheme"] for r in data["results"]] == ["uncoded", "lwpd"]


def test_run_records_the_default_placement_and_leaves_it_unsaid(tmp_path, capsys):
    import json

    argv = ["run", "--dataset", "wine", "--schemes", "uncoded", "--workers", "4", "--max-steps", "2", "--quiet",
            "--out", str(tmp_path)]
    assert main(argv) == 0
    assert "placement" not in capsys.readouterr().out.splitlines()[0]  # the guide's recorded outputs stand
    assert json.loads((tmp_path / "results.json").read_text())["config"]["placement"] == "iid"


def test_run_gives_every_scheme_the_same_placement(tmp_path, monkeypatch):
    """Every scheme, warm-up steps included, trains on the shards of the placement asked
    for, and the uncoded run is the library's own train on them."""
    import json

    import numpy as np

    import lwpd
    from lwpd import _experiment
    from lwpd.cluster import SimulatedCluster
    from lwpd.placement import label_counts, shard_rows
    from lwpd.schemes import Uncoded

    real_train = lwpd.train
    seen = []

    def recording_train(problem, scheme, cluster, **kwargs):
        history = real_train(problem, scheme, cluster, **kwargs)
        seen.append((scheme.name, kwargs["placement"], [s.tolist() for s in scheme.shards_]))
        return history

    monkeypatch.setattr(_experiment, "train", recording_train)
    schemes = ("uncoded", "ignore", "replication", "gc-cyclic", "gc-partial", "lwpd")
    outcomes = _experiment.run(dataset="wine", schemes=schemes, workers=4, seed=3, max_steps=8, progress=False,
                               out=tmp_path, placement="sorted")
    monkeypatch.setattr(_experiment, "train", real_train)
    problem = _experiment.load_problem("wine", "auto", 3)[0]
    shards = [s.tolist() for s in shard_rows(problem, 4, "sorted")]
    assert [name for name, _, _ in seen] == [name for name in schemes for _ in range(2)]  # warm-up, then the run
    assert all(placement == "sorted" and got == shards for _, placement, got in seen)
    assert (label_counts(problem, shard_rows(problem, 4, "sorted")) == 0).sum() >= 4  # skewed: not every class everywhere
    config = json.loads((tmp_path / "results.json").read_text())["config"]
    assert config["placement"] == "sorted"
    direct = real_train(problem, Uncoded(), SimulatedCluster(4, _experiment.parse_stragglers(config["stragglers"]), seed=3),
                        policy="first_k", max_steps=8, target_loss=config["target_loss"], progress=False, seed=3,
                        placement="sorted")
    uncoded = outcomes[0]
    assert uncoded.scheme == "uncoded"
    assert uncoded.final_loss == direct.loss[-1] and uncoded.history.loss == direct.loss
    np.testing.assert_array_equal(uncoded.history.theta, direct.theta)


def test_results_json_is_strict_json(tmp_path):
    """No NaN or Infinity (a strict parser refuses them): null, documented as 'not a finite number'."""
    argv = ["run", "--dataset", "wine", "--schemes", "uncoded,ignore", "--workers", "4", "--max-steps", "2",
            "--quiet", "--out", str(tmp_path)]
    assert main(argv) == 0

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    data = json.loads((tmp_path / "results.json").read_text(), parse_constant=refuse)
    assert data["results"][0]["time_to_target"] is None  # two steps: never reached


def test_version_and_help_with_defaults(capsys):
    import lwpd

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"lwpd {lwpd.__version__}"
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for shown in ("(default: 16)", "(default: 0)", "(default: 300)", "(default: digits)", "(default: lwpd-results)"):
        assert shown in text
    assert "(default: None)" not in text and "(default: False)" not in text


def test_table_says_when_a_scheme_took_no_step_and_why_speed_up_is_blank(tmp_path, capsys):
    """A scheme none of whose steps could decode is marked and explained (its 'final' loss
    is the initial one), the JSON counts the steps taken, and without uncoded the speed-up
    column says why it is blank."""
    from lwpd import _experiment
    from lwpd.train import History

    idle = History(scheme="gc-frc")
    for t in range(3):
        idle.record(time=float(t + 1), loss=0.7, grad_error=math.nan, staleness=0.0, lr=math.nan, received=0, dropped=16,
                    compute=32.0, floats=0.0, decode_time=0.0)
    moving = History(scheme="lwpd")
    for t in range(3):
        moving.record(time=float(t + 1), loss=0.7 - 0.1 * t, grad_error=0.1, staleness=0.0, lr=0.5, received=12,
                      dropped=4, compute=16.0, floats=128.0, decode_time=1e-4)
    outcomes = [_experiment.Outcome("lwpd", moving, 2.0, 0.5, "accuracy", 0.9, 0.1, 1.0, 8.0, 0.1, 3),
                _experiment.Outcome("gc-frc", idle, math.inf, 0.7, "accuracy", 0.1, math.nan, 2.0, 8.0, 0.1, 0)]
    text = _experiment.table(outcomes)
    assert "\ngc-frc* " in text and "* took no step: gc-frc" in text
    assert "speed-up: against uncoded, which is not among the schemes run" in text
    # a real run without uncoded: the speed-up note, and steps_taken in the JSON
    assert main(["run", "--schemes", "ignore,lwpd", "--max-steps", "5", "--quiet", "--out", str(tmp_path)]) == 0
    assert "speed-up: against uncoded" in capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    assert all(r["steps_taken"] == 5 for r in results)


def test_table_states_no_speed_up_for_a_target_met_at_the_start():
    """A time to target of 0 (the initial loss already met it) gives no speed-up, not a
    division by zero."""
    from lwpd import History
    from lwpd._experiment import Outcome, table

    def outcome(scheme, reached):
        return Outcome(scheme, History(scheme=scheme), reached, 0.1, "accuracy", 0.9, 0.0, 1.0, 10.0, 0.1, 1)

    text = table([outcome("uncoded", 0.0), outcome("lwpd", 0.0)])
    assert "0.0" in text and "inf" not in text.lower().replace("information", "")
    assert all(line.split()[5] == "-" for line in text.splitlines()[1:3])
