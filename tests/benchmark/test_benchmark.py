"""The repeated-split benchmark: one row per split, a summary with mean/std/median, resume after a kill, splits in
parallel (--jobs), each split's fit and tests as processes with their output in the split's log.

One benchmark runs its splits as real `clip-agiqa` processes (the ``two_splits`` fixture, read by several tests);
the tests of planning, results and resuming run the splits' commands in this process (``benchmark_here``)."""

import contextlib
import csv
import io
import json
import math
import os
import shutil

import pytest
import torch
from experiment_helpers import (
    DEMO,
    EXPERIMENTS,
    Ended,
    benchmark_args,
    composed_args,
    console_here,
    folder_args,
    launch_here,
    printed_configs_here,
)
from helpers import REPO, run_cli

from clip_agiqa.benchmark import plan as planning
from clip_agiqa.benchmark import results as results_module
from clip_agiqa.benchmark import run as runs
from clip_agiqa.errors import InputError, UsageError

WANDB_CONFIG = str(REPO / "experiments" / "wandb.yaml")
PER_SPLIT_METRICS = ("n_test", "best_epoch", "val_srcc", "srcc", "plcc", "krcc", "rmse", "plcc_logistic")


def results(out) -> list[dict]:
    return list(csv.DictReader(open(out / "results.csv")))


def no_split_may_start(monkeypatch, what: str = "a split was started"):
    def must_not_run(*args, **kwargs):
        raise AssertionError(what)

    monkeypatch.setattr(runs, "launch", must_not_run)


def wandb_benchmark_args(data_root, out) -> list[str]:
    """Two splits of the demo config with W&B (offline) on, both at once."""
    return [*benchmark_args(data_root, out, splits=2, configs=(DEMO, WANDB_CONFIG), logger=True), "--jobs", "2"]


@pytest.fixture(scope="module")
def two_splits(tmp_path_factory, synthetic_root):
    """The one benchmark whose splits are real processes: 2 splits, both at once (--jobs 2), W&B offline (each
    process starts its own W&B service). Returns its folder and what it printed; tests only read them."""
    out = tmp_path_factory.mktemp("two_splits") / "bench"
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setenv("WANDB_MODE", "offline")
        run_cli(wandb_benchmark_args(synthetic_root, out))
    return out, printed.getvalue()


@pytest.mark.slow
def test_each_split_is_a_fit_process_then_a_test_process_two_at_once(two_splits):
    out, printed = two_splits
    rows = results(out)
    assert [r["seed"] for r in rows] == ["0", "1"]
    assert all(0 < int(r["n_test"]) and -1 <= float(r["srcc"]) <= 1 and r["plcc_logistic"] for r in rows)
    assert all(-1 <= float(r["val_srcc"]) <= 1 for r in rows)  # read from the val-chosen checkpoint
    splits_0 = list(csv.DictReader(open(out / "split_0" / "checkpoints" / "splits.csv")))
    splits_1 = list(csv.DictReader(open(out / "split_1" / "checkpoints" / "splits.csv")))
    assert [r["split"] for r in splits_0] != [r["split"] for r in splits_1]  # each seed its own split
    for split in ("split_0", "split_1"):
        log = (out / split / "split.log").read_text()
        assert "-m clip_agiqa fit " in log and "-m clip_agiqa test " in log  # a fit process, then a test process
    summary = (out / "summary.md").read_text()
    for label in ("| SRCC |", "| PLCC |", "| KRCC |", "| RMSE |", "| PLCC (4-parameter logistic fit) |",
                  "| metric | mean | std | median |"):
        assert label in summary
    assert "running up to 2 splits at once" in printed
    assert "[split 1/2] seed 0: fitting" in printed and "[split 2/2] seed 1: SRCC" in printed


@pytest.mark.slow
def test_each_split_gets_its_own_wandb_run(two_splits):
    out, _ = two_splits
    run_ids = [{p.name.rsplit("-", 1)[1] for p in (out / split / "wandb").glob("offline-run-*")}
               for split in ("split_0", "split_1")]
    assert all(run_ids) and not run_ids[0] & run_ids[1]  # W&B files in each split's folder, no run shared


@pytest.mark.slow
def test_splits_at_once_give_the_results_of_one_split_at_a_time(two_splits, synthetic_root, tmp_path,
                                                                  benchmark_here):
    parallel, _ = two_splits
    one_at_a_time = tmp_path / "serial"
    run_cli(benchmark_args(synthetic_root, one_at_a_time, splits=2) + ["--jobs", "1"])
    for one, two in zip(results(one_at_a_time), results(parallel), strict=True):
        assert (one["split"], one["n_test"], one["best_epoch"]) == (two["split"], two["n_test"], two["best_epoch"])
        torch.testing.assert_close(torch.tensor([float(one[k]) for k in PER_SPLIT_METRICS]),  # other thread counts
                                   torch.tensor([float(two[k]) for k in PER_SPLIT_METRICS]),  # sum in another order
                                   rtol=1e-4, atol=1e-4, equal_nan=True)


@pytest.mark.slow
def test_finished_splits_are_not_run_again(two_splits, synthetic_root, tmp_path, monkeypatch, capsys):
    finished, _ = two_splits
    out = tmp_path / "bench"
    shutil.copytree(finished, out)
    (out / "results.csv").unlink()  # killed after the splits' result.json, before results.csv: nothing is redone
    monkeypatch.setattr(planning, "printed_configs", printed_configs_here)
    no_split_may_start(monkeypatch, "a finished split was run again")
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_cli(wandb_benchmark_args(synthetic_root, out))
    printed = capsys.readouterr().out
    assert "[split 1/2] seed 0: done earlier, skipped" in printed
    assert "[split 2/2] seed 1: done earlier, skipped" in printed
    assert results(out) == results(finished)


@pytest.mark.slow
def test_a_killed_benchmark_skips_its_finished_splits_and_resumes_the_interrupted_fit(synthetic_root, tmp_path,
                                                                                       benchmark_here, monkeypatch,
                                                                                       capsys):
    out = tmp_path / "bench"
    args = benchmark_args(synthetic_root, out, splits=2, epochs=2)
    interrupted = out / "split_1" / "checkpoints" / "last.ckpt"

    def killed_after_one_epoch(command, log, environment):
        """Split 2's fit ends after its first epoch's last.ckpt, with the status of a process killed by SIGKILL:
        what a kill mid-fit leaves (a kill during the checkpoint write itself: test_faults.py)."""
        if command[3] == "fit" and str(out / "split_1") in command:
            log.write(f"\n$ {' '.join(command)}\n")
            assert console_here([*command[3:], "--trainer.max_epochs", "1"], log) == 0
            return Ended(-9)
        return launch_here(command, log, environment)

    monkeypatch.setattr(runs, "launch", killed_after_one_epoch)
    with pytest.raises(runs.SplitsFailed, match=r"\[split 2/2\] seed 1: failed \(exit status -9"):
        run_cli(args)
    assert interrupted.is_file() and not (out / "split_1" / runs.RESULT_FILE).exists()
    assert [r["seed"] for r in results(out)] == ["0"]

    monkeypatch.setattr(runs, "launch", launch_here)
    capsys.readouterr()
    run_cli(args)
    printed = capsys.readouterr().out
    assert "[split 1/2] seed 0: done earlier, skipped" in printed
    assert "[split 2/2] seed 1: resuming the interrupted fit from last.ckpt" in printed
    assert f"--ckpt_path {interrupted}" in (out / "split_1" / "split.log").read_text()
    assert [r["seed"] for r in results(out)] == ["0", "1"]
    assert "# Benchmark: 2 of 2 splits" in (out / "summary.md").read_text()


def test_a_failed_split_is_named_in_one_line_with_its_log(tmp_path, capsys, benchmark_here):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "bench"
    with pytest.raises(runs.SplitsFailed) as failed:
        run_cli(benchmark_args(empty, out, splits=2) + ["--jobs", "1"])
    message = str(failed.value)
    assert "\n" not in message and f"log: {out / 'split_0' / 'split.log'}" in message
    assert "1 of 2 split(s) failed: [split 1/2] seed 0: failed (exit status 1: " in message
    assert "metadata.csv" in message  # the fit's own one-line error, from the end of its log
    printed = capsys.readouterr().out
    assert "1 split(s) not started after the failure: [split 2/2] seed 1" in printed
    assert not (out / "split_1").exists()


def test_benchmark_refuses_to_mix_settings_in_one_folder(tmp_path):
    (tmp_path / results_module.SETTINGS_FILE).write_text('{"configs": ["other.yaml"]}')
    with pytest.raises(InputError, match="holds a benchmark run with other settings .configs differ"):
        planning.claim_folder(tmp_path, {"configs": [DEMO], "splits": 2})
    planning.claim_folder(tmp_path, {"configs": ["other.yaml"], "splits": 3})  # the number of splits may grow
    (tmp_path / results_module.SETTINGS_FILE).write_text("[1, 2]")
    with pytest.raises(InputError, match="not a benchmark's settings .not a JSON object"):
        planning.claim_folder(tmp_path, {"configs": [DEMO]})


def test_a_split_folder_gives_back_only_its_own_finished_rows(tmp_path):
    split = planning.Split(1, 1)
    (tmp_path / split.folder_name).mkdir()
    result = tmp_path / split.folder_name / runs.RESULT_FILE
    result.write_text(json.dumps([{"split": 1, "images": "test split", "srcc": 0.5}]))
    assert runs.recorded_rows(fake_plan(tmp_path, 1), split) == [{"split": 1, "images": "test split", "srcc": 0.5}]
    for damaged in ('[{"split": 0}]', '{"split": 1}', "[1]", "cut sh"):
        result.write_text(damaged)
        assert runs.recorded_rows(fake_plan(tmp_path, 1), split) == []


@pytest.mark.parametrize("extra, message", [
    (["--data.split", "paper"], "--splits 3: split 'paper' does not depend on the seed"),
    (["--report.enabled", "false"], "leave out --report.enabled false"),
    (["--data.rot", "x"], "the fit's arguments: the CLI refused the arguments: .*data.rot"),
])
def test_benchmark_refuses_what_cannot_work_before_any_fit(synthetic_root, tmp_path, monkeypatch, extra, message):
    if "--data.rot" not in extra:  # the CLI's refusal comes through the real --print_config process
        monkeypatch.setattr(planning, "printed_configs", printed_configs_here)
    no_split_may_start(monkeypatch)
    with pytest.raises(InputError, match=message):
        run_cli(benchmark_args(synthetic_root, tmp_path / "bench", splits=3) + extra)
    assert not (tmp_path / "bench").exists()


@pytest.mark.parametrize("data, vary, message", [
    ({"split": "predefined"}, "seed", "split 'predefined' does not depend on the seed"),
    ({"split": "random"}, "fold", "--vary fold needs the k-fold split"),
    ({"split": "kfold", "folds": 2}, "fold", "--splits 3 with --vary fold needs as many folds"),
])
def test_splits_that_would_repeat_are_refused(data, vary, message):
    args = planning.parse_args(["--config", DEMO, "--splits", "3", "--vary", vary])[0]
    with pytest.raises(InputError, match=message):
        planning.check_splits_differ(args, data)
    planning.check_splits_differ(args, {"split": "kfold", "folds": 3})  # three folds: three splits


def test_benchmark_plans_the_data_the_fit_would_get(synthetic_root):
    printed = planning.printed_configs({"fit": ["fit", "--config", DEMO, *folder_args(synthetic_root),
                                                "--data.split", "kfold", "--data.folds", "4"]})
    init_args = printed["fit"]["data"]["init_args"]
    assert printed["fit"]["data"]["class_path"] == "clip_agiqa.MOSFolder"
    assert (init_args["split"], init_args["folds"], init_args["root"]) == ("kfold", 4, str(synthetic_root))


def fake_plan(tmp_path, jobs: int, **trainer) -> planning.Plan:
    return planning.Plan(configs=[DEMO], fit_args=[], out=tmp_path, splits=[], test_sets=(), jobs=jobs, command="",
                         configured_split="random", about={}, trainer=trainer)


def test_jobs_share_the_cpu_threads_or_get_a_gpu_each(tmp_path, monkeypatch):
    assert runs.job_environments(fake_plan(tmp_path, 1), 1) == [{}]  # one at a time: this process's environment
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(runs, "_gpus", lambda plan: [])
    assert runs.job_environments(fake_plan(tmp_path, 2), 2) == [{"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"}] * 2
    monkeypatch.setattr(runs, "_gpus", lambda plan: ["0", "1", "2", "3"])
    assert runs.job_environments(fake_plan(tmp_path, 3), 3) == [{"CUDA_VISIBLE_DEVICES": d} for d in "012"]
    two_each = runs.job_environments(fake_plan(tmp_path, 4, devices=2), 4)  # DDP fits of 2 GPUs: 2 at once
    assert two_each == [{"CUDA_VISIBLE_DEVICES": "0,1"}, {"CUDA_VISIBLE_DEVICES": "2,3"}]


def test_summary_statistics():
    rows = [{"srcc": "0.5", "plcc": "0.6", "krcc": "0.4", "rmse": "1.0", "plcc_logistic": "0.7"},
            {"srcc": "0.7", "plcc": "0.8", "krcc": "0.5", "rmse": "0.8", "plcc_logistic": "0.75"},
            {"srcc": "0.9", "plcc": "0.7", "krcc": "0.6", "rmse": "0.9", "plcc_logistic": "0.8"}]
    stats = results_module.summarise(rows)
    assert stats["srcc"]["mean"] == pytest.approx(0.7) and stats["srcc"]["median"] == pytest.approx(0.7)
    assert stats["srcc"]["std"] == pytest.approx(0.2)  # sample std (n-1)
    assert stats["rmse"]["min"] == pytest.approx(0.8) and stats["plcc"]["max"] == pytest.approx(0.8)


def test_a_last_checkpoint_cut_short_by_a_kill_sets_the_checkpoints_folder_aside(tmp_path, capsys):
    # fit refuses a checkpoints/ folder that holds other checkpoints: the restart needs an empty one.
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    (checkpoints / "best.ckpt").write_bytes(b"an earlier best")
    (checkpoints / "last.ckpt").write_bytes(b"PK\x03\x04 cut short")
    assert runs.usable_last_checkpoint(checkpoints) is None
    assert not checkpoints.exists()
    assert sorted(p.name for p in (tmp_path / "checkpoints.damaged").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert "checkpoints/ kept as checkpoints.damaged/, the split starts over" in capsys.readouterr().out
    checkpoints.mkdir()
    (checkpoints / "last.ckpt").write_bytes(b"cut short again")
    runs.usable_last_checkpoint(checkpoints)
    assert (tmp_path / "checkpoints.damaged2" / "last.ckpt").is_file()


# --- published split folders, cross-dataset tests (composed configs on tiny roots in the real layouts) -----------
AGIQA3K_PARTS = ["data/agiqa3k_quality.yaml", "model/clip_agiqa.yaml", "protocol/prompt_disjoint.yaml"]


def split_of(run_folder) -> dict[str, str]:
    return dict(list(csv.reader(open(run_folder / "checkpoints" / "splits.csv")))[1:])


@pytest.mark.slow
def test_benchmark_runs_ipce_split_folders_with_prompt_disjoint_validation(tmp_path, capsys, benchmark_here):
    from layouts import agiqa3k_prompted_root, ipce_folder

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
def test_benchmark_tests_each_split_on_other_datasets_and_writes_the_matrix(tmp_path, benchmark_here):
    from layouts import agiqa1k_root, agiqa3k_prompted_root, aigciqa20k_root

    root = agiqa3k_prompted_root(tmp_path / "AGIQA-3K")
    (tmp_path / "AGIQA-1K").mkdir()
    (tmp_path / "AIGCIQA-20K").mkdir()
    agiqa1k, aigciqa20k = agiqa1k_root(tmp_path / "AGIQA-1K"), aigciqa20k_root(tmp_path / "AIGCIQA-20K")
    out = tmp_path / "bench"
    run_cli(composed_args(AGIQA3K_PARTS, root, out) + [  # one split: each test on other data is a process
        "--splits", "1", "--test_on", f"{EXPERIMENTS / 'data/agiqa1k.yaml'}:{agiqa1k}",
        "--test_on", f"{EXPERIMENTS / 'data/aigciqa20k.yaml'}:{aigciqa20k}"])
    rows = results(out)
    assert [(r["split"], r["tested_on"], r["images"], r["n_test"]) for r in rows] == [
        ("0", "agiqa3k_quality", "test split", "12"), ("0", "agiqa1k", "all", "10"), ("0", "aigciqa20k", "all", "12")]
    assert all(-1 <= float(r["srcc"]) <= 1 and r["plcc_logistic"] for r in rows)
    split_0 = out / "split_0"
    own = list(csv.DictReader(open(split_0 / "test_predictions.csv")))
    assert len(own) == 12  # the cross tests did not overwrite the split's own predictions
    assert len(list(csv.DictReader(open(split_0 / "test_on_agiqa1k" / "test_predictions.csv")))) == 10
    summary = (out / "summary.md").read_text()
    assert "# Benchmark: 1 of 1 splits" in summary and "PLCC is given after the 4-parameter logistic fit" in summary
    assert "| trained on \\ tested on | agiqa3k_quality | agiqa1k | aigciqa20k |" in summary
    matrix_row = [line for line in summary.splitlines() if line.startswith("| agiqa3k_quality |")][0]
    cells = matrix_row.strip("| ").split(" | ")[1:]
    assert len(cells) == 3 and cells[0].endswith("(test split)") and all(c[:7].lstrip("-")[:1].isdigit() for c in cells)


def test_test_on_data_with_another_number_of_targets_is_refused_before_any_fit(tmp_path, monkeypatch):
    from layouts import agiqa1k_root, agiqa3k_prompted_root

    monkeypatch.setattr(planning, "printed_configs", printed_configs_here)
    no_split_may_start(monkeypatch)
    root = agiqa3k_prompted_root(tmp_path / "AGIQA-3K")
    (tmp_path / "AGIQA-1K").mkdir()
    args = composed_args(AGIQA3K_PARTS, root, tmp_path / "bench", **{"data.target": "[quality, align]"})
    with pytest.raises(InputError, match=r"agiqa1k\.yaml: its data has 1 target\(s\) \(quality\) but the model learns "
                                         r"2 \(quality, align\)"):
        run_cli(args + ["--splits", "1", "--test_on", f"{EXPERIMENTS / 'data/agiqa1k.yaml'}:"
                                                       f"{agiqa1k_root(tmp_path / 'AGIQA-1K')}"])
    no_root = planning.test_set(str(EXPERIMENTS / "data/agiqa1k.yaml"))  # as the CLI prints a part without root
    with pytest.raises(InputError, match="sets no data.root; give it as --test_on .*agiqa1k.yaml:ROOT"):
        planning.check_test_set(no_root, {"class_path": "clip_agiqa.AGIQA1K", "init_args": {"root": None}}, ["q"])
    with pytest.raises(InputError, match="names no data class"):
        planning.check_test_set(no_root, None, ["q"])


def test_splits_from_takes_no_splits_count(tmp_path):
    with pytest.raises(UsageError, match="--splits_from runs one split per path: leave out --splits and --vary"):
        run_cli(["benchmark", "--config", DEMO, "--splits", "3", "--splits_from", str(tmp_path)])
    with pytest.raises(InputError, match="neither a split folder"):
        run_cli(["benchmark", "--config", DEMO, "--splits_from", str(tmp_path)])


def test_several_targets_get_their_own_metrics_and_summary_columns(tmp_path):
    from clip_agiqa.metrics import correlations, logistic_plcc

    predictions = tmp_path / "test_predictions.csv"
    quality = [(float(i), i + 0.1 * (i % 2)) for i in range(8)]
    align = [(float(i % 3), (i % 3) + 0.2 * (i % 2) - 0.05 * i) for i in range(8)]
    with open(predictions, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "quality_mos", "quality_score", "align_mos", "align_score"])
        writer.writerows([f"n{i}", *quality[i], *align[i]] for i in range(8))
    row = results_module.test_metrics(predictions)
    expected = {t: correlations([s for _, s in pairs], [m for m, _ in pairs])
                for t, pairs in (("quality", quality), ("align", align))}
    assert row["n_test"] == 8 and row["quality/srcc"] == pytest.approx(expected["quality"]["srcc"])
    assert row["align/krcc"] == pytest.approx(expected["align"]["krcc"])
    assert row["srcc"] == pytest.approx((expected["quality"]["srcc"] + expected["align"]["srcc"]) / 2)
    quality_scores, quality_mos = [s for _, s in quality], [m for m, _ in quality]
    assert row["quality/plcc_logistic"] == pytest.approx(logistic_plcc(quality_scores, quality_mos))
    assert row["align/rmse"] == pytest.approx(math.sqrt(sum((s - m) ** 2 for m, s in align) / 8))
    rows = [{"split": str(k), "seed": str(k), "fold": "", "n_test": "8", "best_epoch": "0", "val_srcc": "0.5",
             "images": "test split", **{key: str(value + k / 100) for key, value in row.items()}} for k in range(2)]
    results_module.write_results(tmp_path, rows)
    header = next(csv.reader(open(tmp_path / "results.csv")))
    assert header.index("quality/srcc") > header.index("plcc_logistic") and "align/plcc_logistic" in header
    summary = results_module.write_summary(tmp_path, rows, "clip-agiqa benchmark", 2).read_text()
    assert f"| quality SRCC | {expected['quality']['srcc'] + 0.005:.4f} | 0.0071 |" in summary
    assert "| align PLCC (4-parameter logistic fit) |" in summary
    assert "| quality SRCC | quality PLCC (4-parameter logistic fit) | align SRCC |" in summary  # per-split columns
    assert "the overall figures are the mean over targets" in summary


def test_one_target_predictions_give_the_overall_metrics(tmp_path):
    predictions = tmp_path / "test_predictions.csv"
    predictions.write_text("file_name,mos,score\na.png,1.0,2.0\nb.png,2.0,2.5\nc.png,3.0,2.4\nd.png,4.0,5.0\n")
    row = results_module.test_metrics(predictions)
    assert row["n_test"] == 4 and set(row) == {"n_test", "srcc", "plcc", "krcc", "rmse", "plcc_logistic"}
    assert row["srcc"] == pytest.approx(0.8) and row["rmse"] == pytest.approx(math.sqrt((1 + 0.25 + 0.36 + 1) / 4))
    predictions.write_text("file_name,mos\na.png,1.0\n")
    with pytest.raises(InputError, match="not a predictions file"):
        results_module.test_metrics(predictions)
