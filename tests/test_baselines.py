"""`bench --baseline airbench SOURCE` (baselines.py): the published script's table parsed, the
porting tool found and run, failures reported. A stand-in tool prints airbench's own table, so
these tests need neither the airbench code nor a 15-minute run."""

import textwrap

import pytest

from cifar_cnn.baselines import compare, parse_rows, run_airbench
from cifar_cnn.cli import main
from cifar_cnn.errors import CifarCnnError

# What airbench94_muon prints (print_columns / print_training_details), two runs of 2 epochs.
TABLE = """\
---------------------------------------------------------------------
|  run     |  epoch  |  train_acc  |  val_acc  |  tta_val_acc  |  time_seconds  |
---------------------------------------------------------------------
|       0  |      0  |     0.4500  |   0.5012  |               |       410.1234  |
|          |      1  |     0.8900  |   0.9011  |               |       820.5000  |
|          |   eval  |     0.8900  |   0.9011  |       0.9093  |       850.2500  |
---------------------------------------------------------------------
|       1  |      0  |     0.4400  |   0.5100  |               |       400.0000  |
|          |      1  |     0.8800  |   0.9000  |               |       800.0000  |
|          |   eval  |     0.8800  |   0.9000  |       0.9041  |       830.7500  |
---------------------------------------------------------------------
Mean: 0.9067    Std: 0.0037
"""


def test_parse_rows_reads_airbenchs_table():
    runs = parse_rows(TABLE.splitlines())
    assert [r["run"] for r in runs] == ["0", "1"]
    assert [r["accuracy"] for r in runs] == [0.9093, 0.9041]
    assert [r["seconds"] for r in runs] == [850.25, 830.75]
    assert runs[0]["epochs"] == [{"epoch": 0, "train_acc": 0.45, "val_acc": 0.5012, "seconds": 410.1234},
                                 {"epoch": 1, "train_acc": 0.89, "val_acc": 0.9011, "seconds": 820.5}]  # fmt: skip


def test_parse_rows_drops_an_unfinished_run():
    cut = (
        TABLE.split("|       1  |")[0] + "|       1  |      0  |     0.4400  |   0.5100  |               |  400.0  |\n"
    )
    assert [r["run"] for r in parse_rows(cut.splitlines())] == ["0"]


@pytest.fixture
def fake_tool(tmp_path, monkeypatch):
    """A stand-in for shared/tools/airbench-cpu: checks its arguments, prints the table."""
    tool = tmp_path / "airbench-cpu"
    tool.write_text(textwrap.dedent(f"""\
        import sys
        source, runs = sys.argv[1], int(sys.argv[2])
        if "fail" in source:
            print("Traceback: something broke", flush=True)
            sys.exit(3)
        table = {TABLE!r}
        print(table if runs == 2 else table.split("|       1  |")[0])
        """))  # fmt: skip
    monkeypatch.setenv("CIFAR_CNN_AIRBENCH_TOOL", str(tool))
    return tool


def test_run_airbench_through_the_tool(fake_tool, tmp_path):
    source = tmp_path / "airbench94_muon.py"
    source.write_text("# your copy\n")
    logged = []
    result = run_airbench(source, runs=2, log=logged.append)
    assert result["mean_accuracy"] == pytest.approx((0.9093 + 0.9041) / 2)
    assert result["seconds"] == pytest.approx((850.25 + 830.75) / 2)
    assert result["std_accuracy"] > 0 and len(result["runs"]) == 2
    assert any("airbench" in line and "eval" in line for line in logged)  # its table is shown as it runs
    with pytest.raises(CifarCnnError, match="printed 1 finished runs, expected 3"):
        run_airbench(source, runs=3, log=lambda _: None)


def test_run_airbench_errors(fake_tool, tmp_path, monkeypatch):
    with pytest.raises(CifarCnnError, match="does not exist"):
        run_airbench(tmp_path / "missing.py", log=lambda _: None)
    failing = tmp_path / "fail.py"
    failing.write_text("")
    with pytest.raises(CifarCnnError, match="exited with status 3: Traceback: something broke"):
        run_airbench(failing, log=lambda _: None)
    monkeypatch.setenv("CIFAR_CNN_AIRBENCH_TOOL", str(tmp_path / "nope"))
    with pytest.raises(CifarCnnError, match="not a file"):
        run_airbench(failing, log=lambda _: None)


def test_compare_counts_the_ratio_only_at_matched_accuracy():
    theirs = {"mean_accuracy": 0.9067, "seconds": 1000.0}
    fast = compare({"mean_accuracy": 0.9070, "train_seconds": 560.0, "tta_eval_seconds": 40.0}, theirs)
    assert fast["ratio"] == pytest.approx(0.6) and fast["matched"]
    slow = compare({"mean_accuracy": 0.9000, "train_seconds": 500.0}, theirs)
    assert not slow["matched"] and slow["accuracy_difference"] == pytest.approx(-0.0067)


def test_cli_baseline_usage_errors(capsys):
    assert main(["bench", "--baseline", "airbench"]) == 2
    assert "--baseline airbench SOURCE" in capsys.readouterr().err
    assert main(["bench", "--baseline", "keras_cnn", "extra"]) == 2
    assert main(["bench", "--baseline", "airbench", "x.py", "--baseline-runs", "0"]) == 2


def test_markdown_shows_the_side_by_side():
    from cifar_cnn.bench import airbench_lines

    report = {"recipe": "fast", "seeds": [0, 1, 2, 3, 4], "mean_accuracy": 0.9071, "std_accuracy": 0.001,
              "airbench": {"commit": "f1c599c", "runs": [{}, {}, {}], "mean_accuracy": 0.9067, "std_accuracy": 0.002,
                           "seconds": 1000.0,
                           "comparison": compare({"mean_accuracy": 0.9071, "train_seconds": 590.0,
                                                  "tta_eval_seconds": 10.0}, {"mean_accuracy": 0.9067, "seconds": 1000.0})}}  # fmt: skip
    text = "\n".join(airbench_lines(report))
    assert "**0.60x** airbench's, at matched accuracy (+0.04 points)" in text
    assert "| fast | 5 | 90.71% ± 0.10% | 600 |" in text


def test_tool_is_found_beside_the_project(monkeypatch, tmp_path):
    from cifar_cnn.baselines import airbench_tool

    monkeypatch.delenv("CIFAR_CNN_AIRBENCH_TOOL", raising=False)
    (tmp_path / "shared" / "tools").mkdir(parents=True)
    (tmp_path / "shared" / "tools" / "airbench-cpu").write_text("")
    project = tmp_path / "main" / "sub"
    project.mkdir(parents=True)
    monkeypatch.chdir(project)
    assert airbench_tool() == tmp_path / "shared" / "tools" / "airbench-cpu"


@pytest.mark.parametrize("precision, dtype", [("fp32", "torch.float32"), ("bf16", "torch.bfloat16")])
def test_baseline_precision_reaches_the_script(tmp_path, monkeypatch, precision, dtype):
    """The tool execs the ported script in a new process: fp32 must turn its CPU bf16 autocast
    off there too (through PYTHONPATH), bf16 must leave it on."""
    script = tmp_path / "ported.py"
    script.write_text(textwrap.dedent(f"""\
        import torch
        with torch.autocast("cpu", torch.bfloat16):
            print("DTYPE", (torch.ones(2, 2) @ torch.ones(2, 2)).dtype, flush=True)
        print({TABLE!r})
        """))  # fmt: skip
    tool = tmp_path / "airbench-cpu"
    tool.write_text(f"import os, sys\nos.execv(sys.executable, [sys.executable, {str(script)!r}])\n")
    monkeypatch.setenv("CIFAR_CNN_AIRBENCH_TOOL", str(tool))
    source = tmp_path / "airbench94_muon.py"
    source.write_text("# your copy\n")
    logged = []
    result = run_airbench(source, runs=2, log=logged.append, precision=precision)
    assert f"  airbench DTYPE {dtype}" in logged
    assert result["precision"] == precision
    with pytest.raises(CifarCnnError, match="precision must be one of"):
        run_airbench(source, runs=2, log=logged.append, precision="fp8")


def test_baseline_precision_auto_follows_our_training(fake_tool, tmp_path, monkeypatch):
    import cifar_cnn.hardware

    source = tmp_path / "airbench94_muon.py"
    source.write_text("# your copy\n")
    for native, expected in ((False, "fp32"), (True, "bf16")):
        monkeypatch.setattr(cifar_cnn.hardware, "use_bf16", lambda device, native=native: native)
        assert run_airbench(source, runs=2, log=lambda _: None)["precision"] == expected
