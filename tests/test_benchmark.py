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


# --- published split folders, cross-dataset tests (composed configs on tiny roots in the real layouts) -----------
EXPERIMENTS = REPO / "experiments"
AGIQA3K_PARTS = ["data/agiqa3k_quality.yaml", "model/clip_agiqa.yaml", "protocol/prompt_disjoint.yaml"]


def composed_args(parts: list[str], data_root, out, **extra: str) -> list[str]:
    """A composed benchmark shrunk to a CPU smoke run of the tiny model; every test image is read."""
    from experiment_helpers import as_flags, shrink_args

    shrunk = shrink_args(data_root, out / "unused", {"trainer.limit_test_batches": "1.0", **extra})
    return ["benchmark", *[a for p in parts for a in ("--config", str(EXPERIMENTS / p))], "--out", str(out),
            *as_flags(shrunk, skip=("trainer.default_root_dir",))]


def split_of(run_folder) -> dict[str, str]:
    return dict(list(csv.reader(open(run_folder / "checkpoints" / "splits.csv")))[1:])


@pytest.mark.slow
def test_benchmark_runs_ipce_split_folders_with_prompt_disjoint_validation(tmp_path, capsys):
    from test_splits import agiqa3k_prompted_root, ipce_folder

    root = agiqa3k_prompted_root(tmp_path / "AGIQA-3K")
    database = tmp_path / "Database" / "AGIQA-3K"
    for k, test_prompts in ((1, {0, 4, 8}), (2, {1, 2, 11})):
        ipce_folder(database / str(k), root, test_prompts)
    out = tmp_path / "bench"
    run_cli(composed_args(AGIQA3K_PARTS, root, out, **{"data.val_size": "0.25"}) + ["--splits_from", str(database)])
    rows = results(out)
    assert [(r["split"], r["splits_file"]) for r in rows] == [("0", str(database / "1")), ("1", str(database / "2"))]
    for k, row in zip((1, 2), rows):
        split = split_of(out / f"split_file{row['split']}")
        ipce_test = [r["name"] for r in csv.DictReader(open(database / str(k) / "val.csv"))]
        assert sorted(n for n, s in split.items() if s == "test") == sorted(ipce_test) and row["n_test"] == "9"
        prompts = {r["name"]: r["prompt"] for r in csv.DictReader(open(root / "data.csv"))}
        by_split = {s: {prompts[n] for n, a in split.items() if a == s} for s in ("train", "val", "test")}
        assert by_split["val"] and not by_split["val"] & by_split["train"]  # checkpoint selection does not leak
    summary = (out / "summary.md").read_text()
    assert "# Benchmark: 2 of 2 splits" in summary and "Split: prompt (2 split files)" in summary
    capsys.readouterr()
    run_cli(composed_args(AGIQA3K_PARTS, root, out, **{"data.val_size": "0.25"}) + ["--splits_from", str(database)])
    assert f"[split 2/2] seed 1 from {database / '2'}: done earlier, skipped" in capsys.readouterr().out


@pytest.mark.slow
def test_benchmark_tests_each_split_on_other_datasets_and_writes_the_matrix(tmp_path):
    from test_datasets import agiqa1k_root, aigciqa20k_root
    from test_splits import agiqa3k_prompted_root

    root = agiqa3k_prompted_root(tmp_path / "AGIQA-3K")
    (tmp_path / "AGIQA-1K").mkdir()
    (tmp_path / "AIGCIQA-20K").mkdir()
    agiqa1k, aigciqa20k = agiqa1k_root(tmp_path / "AGIQA-1K"), aigciqa20k_root(tmp_path / "AIGCIQA-20K")
    out = tmp_path / "bench"
    run_cli(composed_args(AGIQA3K_PARTS, root, out) + [
        "--splits", "2", "--test_on", f"{EXPERIMENTS / 'data/agiqa1k.yaml'}:{agiqa1k}",
        "--test_on", f"{EXPERIMENTS / 'data/aigciqa20k.yaml'}:{aigciqa20k}"])
    rows = results(out)
    assert [(r["split"], r["tested_on"], r["images"], r["n_test"]) for r in rows] == [
        (split, name, images, n) for split in ("0", "1") for name, images, n in (
            ("agiqa3k_quality", "test split", "12"), ("agiqa1k", "all", "10"), ("aigciqa20k", "all", "12"))]
    assert all(-1 <= float(r["srcc"]) <= 1 and r["plcc_logistic"] for r in rows)
    split_0 = out / "split_0"
    own = list(csv.DictReader(open(split_0 / "test_predictions.csv")))
    assert len(own) == 12  # the cross tests did not overwrite the split's own predictions
    assert len(list(csv.DictReader(open(split_0 / "test_on_agiqa1k" / "test_predictions.csv")))) == 10
    summary = (out / "summary.md").read_text()
    assert "# Benchmark: 2 of 2 splits" in summary and "PLCC is given after the 4-parameter logistic fit" in summary
    assert "| trained on \\ tested on | agiqa3k_quality | agiqa1k | aigciqa20k |" in summary
    matrix_row = [line for line in summary.splitlines() if line.startswith("| agiqa3k_quality |")][0]
    assert matrix_row.count("±") == 3 and "(test split)" in matrix_row


def test_test_on_data_with_another_number_of_targets_is_refused_before_any_fit(tmp_path, monkeypatch):
    from test_datasets import agiqa1k_root
    from test_splits import agiqa3k_prompted_root

    def must_not_run(*args, **kwargs):
        raise AssertionError("a split was fitted")

    monkeypatch.setattr(benchmark, "run_split", must_not_run)
    root = agiqa3k_prompted_root(tmp_path / "AGIQA-3K")
    (tmp_path / "AGIQA-1K").mkdir()
    args = composed_args(AGIQA3K_PARTS, root, tmp_path / "bench", **{"data.target": "[quality, align]"})
    with pytest.raises(SystemExit, match=r"agiqa1k\.yaml: its data has 1 target\(s\) \(quality\) but the model learns "
                                         r"2 \(quality, align\)"):
        run_cli(args + ["--splits", "1", "--test_on", f"{EXPERIMENTS / 'data/agiqa1k.yaml'}:"
                                                       f"{agiqa1k_root(tmp_path / 'AGIQA-1K')}"])
    with pytest.raises(SystemExit, match="sets no data.root; give it as --test_on .*agiqa1k.yaml:ROOT"):
        run_cli(args + ["--splits", "1", "--test_on", str(EXPERIMENTS / "data/agiqa1k.yaml")])


def test_splits_from_takes_no_splits_count(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_cli(["benchmark", "--config", DEMO, "--splits", "3", "--splits_from", str(tmp_path)])
    assert "--splits_from runs one split per path: leave out --splits and --vary" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="neither a split folder"):
        run_cli(["benchmark", "--config", DEMO, "--splits_from", str(tmp_path)])


def test_several_targets_get_their_own_metrics_and_summary_columns(tmp_path):
    tested = {f"test/{t}/{k}": v for t, base in (("quality", 0.8), ("align", 0.6))
              for k, v in zip(benchmark.LOGGED, (base, base + 0.05, base - 0.2, 0.3))}
    predictions = [(f"n{i}", [float(i), float(i % 3)], [i + 0.1 * (i % 2), (i % 3) + 0.2]) for i in range(8)]
    row = benchmark.test_metrics(tested, predictions, ["quality", "align"])
    assert row["quality/srcc"] == 0.8 and row["align/srcc"] == 0.6 and row["srcc"] == pytest.approx(0.7)
    assert row["quality/plcc_logistic"] == pytest.approx(1.0, abs=0.01)
    rows = [{"split": str(k), "seed": str(k), "fold": "", "n_test": "8", "best_epoch": "0", "val_srcc": "0.5",
             "images": "test split", **{key: str(value + k / 100) for key, value in row.items()}} for k in range(2)]
    benchmark.write_results(tmp_path, rows)
    header = next(csv.reader(open(tmp_path / "results.csv")))
    assert header.index("quality/srcc") > header.index("plcc_logistic") and "align/plcc_logistic" in header
    summary = benchmark.write_summary(tmp_path, rows, "clip-agiqa benchmark", 2).read_text()
    assert "| quality SRCC | 0.8050 | 0.0071 |" in summary and "| align PLCC (4-parameter logistic fit) |" in summary
    assert "| quality SRCC | quality PLCC (4-parameter logistic fit) | align SRCC |" in summary  # per-split columns
    assert "the overall figures are the mean over targets" in summary
