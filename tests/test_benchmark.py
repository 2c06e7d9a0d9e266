"""The repeated-split benchmark: one row per split, a summary with mean/std/median, resume after a kill."""

import csv
import os
import signal
import subprocess
import sys
import time

import pytest

import clip_agiqa.benchmark as benchmark
from conftest import REPO, TINY_MODEL_ARGS, run_cli
from experiment_helpers import folder_args

DEMO = str(REPO / "experiments" / "demo.yaml")


def benchmark_args(data_root, out, splits: int, epochs: int = 1) -> list[str]:
    return ["benchmark", "--config", DEMO, "--splits", str(splits), "--out", str(out), *TINY_MODEL_ARGS,
            *folder_args(data_root), "--trainer.max_epochs", str(epochs), "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false", "--model.warmup_epochs", "0"]


def results(out) -> list[dict]:
    return list(csv.DictReader(open(out / "results.csv")))


def test_benchmark_writes_a_row_per_split_and_a_summary_then_skips_finished_splits(
        synthetic_root, tmp_path, capsys, monkeypatch):
    out = tmp_path / "bench"
    run_cli(benchmark_args(synthetic_root, out, splits=2))
    rows = results(out)
    assert [r["seed"] for r in rows] == ["0", "1"]
    assert all(0 < int(r["n_test"]) and -1 <= float(r["srcc"]) <= 1 and r["plcc_logistic"] for r in rows)
    splits_0 = list(csv.DictReader(open(out / "split_0" / "checkpoints" / "splits.csv")))
    splits_1 = list(csv.DictReader(open(out / "split_1" / "checkpoints" / "splits.csv")))
    assert [r["split"] for r in splits_0] != [r["split"] for r in splits_1]  # each seed its own split
    summary = (out / "summary.md").read_text()
    for label in ("| SRCC |", "| PLCC |", "| KRCC |", "| RMSE |", "| PLCC (4-parameter logistic fit) |",
                  "| metric | mean | std | median |"):
        assert label in summary
    printed = capsys.readouterr().out
    assert "[split 1/2] seed 0: fitting" in printed and "[split 2/2] seed 1: SRCC" in printed

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished split was run again")

    monkeypatch.setattr(benchmark, "run_split", must_not_run)
    run_cli(benchmark_args(synthetic_root, out, splits=2))
    assert "[split 2/2] seed 1: done earlier, skipped" in capsys.readouterr().out
    assert results(out) == rows


def test_benchmark_refuses_to_mix_settings_in_one_folder(synthetic_root, tmp_path):
    out = tmp_path / "bench"
    out.mkdir()
    (out / benchmark.SETTINGS_FILE).write_text('{"configs": ["other.yaml"]}')
    with pytest.raises(SystemExit, match="other settings"):
        run_cli(benchmark_args(synthetic_root, out, splits=1))


@pytest.mark.parametrize("extra, message", [
    (["--data.split", "paper"], "split 'paper' does not depend on the seed"),
    (["--data.split", "predefined", "--data.splits_file", "splits.csv"],
     "split 'predefined' does not depend on the seed"),
    (["--vary", "fold"], "--vary fold needs the k-fold split"),
    (["--vary", "fold", "--data.split", "kfold", "--data.folds", "2"],
     "--splits 3 with --vary fold needs as many folds"),
])
def test_benchmark_refuses_splits_that_would_repeat_before_any_fit(synthetic_root, tmp_path, monkeypatch, extra,
                                                                    message):
    def must_not_run(*args, **kwargs):
        raise AssertionError("a split was fitted")

    monkeypatch.setattr(benchmark, "run_split", must_not_run)
    with pytest.raises(SystemExit, match=message.replace("(", r"\(")):
        run_cli(benchmark_args(synthetic_root, tmp_path / "bench", splits=3) + extra)
    assert not (tmp_path / "bench").exists()


def test_benchmark_plans_the_data_the_fit_would_get(synthetic_root):
    data = benchmark.planned_data([DEMO], [*folder_args(synthetic_root), "--data.split", "kfold", "--data.folds", "4"])
    assert data["class_path"] == "clip_agiqa.MOSFolder"
    init_args = data["init_args"]
    assert (init_args["split"], init_args["folds"], init_args["root"]) == ("kfold", 4, str(synthetic_root))


def test_summary_statistics():
    rows = [{"srcc": "0.5", "plcc": "0.6", "krcc": "0.4", "rmse": "1.0", "plcc_logistic": "0.7"},
            {"srcc": "0.7", "plcc": "0.8", "krcc": "0.5", "rmse": "0.8", "plcc_logistic": "0.75"},
            {"srcc": "0.9", "plcc": "0.7", "krcc": "0.6", "rmse": "0.9", "plcc_logistic": "0.8"}]
    stats = benchmark.summarise(rows)
    assert stats["srcc"]["mean"] == pytest.approx(0.7) and stats["srcc"]["median"] == pytest.approx(0.7)
    assert stats["srcc"]["std"] == pytest.approx(0.2)  # sample std (n-1)
    assert stats["rmse"]["min"] == pytest.approx(0.8) and stats["plcc"]["max"] == pytest.approx(0.8)


def test_a_last_checkpoint_cut_short_by_a_kill_sets_the_checkpoints_folder_aside(tmp_path, capsys):
    # fit refuses a checkpoints/ folder that holds other checkpoints: the restart needs an empty one.
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    (checkpoints / "best.ckpt").write_bytes(b"an earlier best")
    (checkpoints / "last.ckpt").write_bytes(b"PK\x03\x04 cut short")
    assert benchmark.usable_last_checkpoint(checkpoints) is None
    assert not checkpoints.exists()
    assert sorted(p.name for p in (tmp_path / "checkpoints.damaged").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert "checkpoints/ kept as checkpoints.damaged/, the split starts over" in capsys.readouterr().out
    checkpoints.mkdir()
    (checkpoints / "last.ckpt").write_bytes(b"cut short again")
    benchmark.usable_last_checkpoint(checkpoints)
    assert (tmp_path / "checkpoints.damaged2" / "last.ckpt").is_file()


@pytest.mark.slow
def test_benchmark_resumes_after_being_killed(synthetic_root, tmp_path):
    out = tmp_path / "bench"
    command = [str(os.path.join(os.path.dirname(sys.executable), "clip-agiqa")),
               *benchmark_args(synthetic_root, out, splits=2, epochs=4)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    interrupted = out / "split_1" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not interrupted.is_file() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # mid-way through split 2
    process.wait()
    assert interrupted.is_file() and len(results(out)) == 1

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "[split 1/2] seed 0: done earlier, skipped" in resumed.stdout
    # Killed while last.ckpt was being written (rare), the split starts over instead: also correct.
    assert ("[split 2/2] seed 1: resuming the interrupted fit from last.ckpt" in resumed.stdout
            or "the split starts over" in resumed.stdout)
    assert [r["seed"] for r in results(out)] == ["0", "1"]
    assert "# Benchmark: 2 of 2 splits" in (out / "summary.md").read_text()
