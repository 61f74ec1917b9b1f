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


def test_a_closed_pipe_ends_quietly():
    import subprocess
    import sys

    reader = "import sys; sys.stdin.readline()"
    cmd = f"{sys.executable} -m lwpd.cli codebook --dim 9 | {sys.executable} -c '{reader}'"
    out = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
