"""Several datasets in one model from the command line: a YAML config listing the datasets (MixedData with
class_path/init_args members) fits through the CLI, reports each dataset and selects on their mean; the ranking
loss within each dataset trains; the benchmark gives the cross-dataset matrix (train on A+B, test on A, B and C)."""

from __future__ import annotations

import csv

import pytest
import torch
import yaml
from experiment_helpers import benchmark_here  # noqa: F401 - a fixture
from helpers import TINY_MODEL_ARGS, run_cli, trainer_args

from clip_agiqa.data import write_synthetic_dataset

MEMBER = {"split": "prompt", "num_workers": 0, "test_size": 0.3, "val_size": 0.3}


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """Three generated studies (A, B, C) and a config that mixes A and B, one that names C alone."""
    root = tmp_path_factory.mktemp("studies")
    for name, seed, count in (("a", 3, 30), ("b", 4, 24), ("c", 5, 12)):
        write_synthetic_dataset(root / name, num_images=count, picture_size=32, seed=seed)
    mixed = {"data": {"class_path": "clip_agiqa.data.mixed.MixedData", "init_args": {
        "datasets": [{"class_path": "clip_agiqa.data.MOSFolder", "init_args": {"root": str(root / n), **MEMBER}}
                     for n in ("a", "b")],
        "names": ["a", "b"], "mix": "equal", "batch_size": 8}}}
    (root / "mixed.yaml").write_text(yaml.safe_dump(mixed))
    (root / "c.yaml").write_text(yaml.safe_dump({"data": {"class_path": "clip_agiqa.data.MOSFolder",
                                                          "init_args": {"num_workers": 0}}}))
    return root


def test_a_yaml_of_several_datasets_fits_reports_each_and_selects_on_their_mean(studies, tmp_path):
    run = tmp_path / "run"
    cli = run_cli(["fit", "--config", str(studies / "mixed.yaml"), *TINY_MODEL_ARGS, "--model.loss", "rank",
                   *trainer_args(run, epochs=2)])
    logged = cli.trainer.callback_metrics
    assert {"val/a/srcc", "val/b/srcc", "val/a/n", "val/mean_srcc"} <= set(logged)
    assert float(logged["val/mean_srcc"]) == pytest.approx(
        (float(logged["val/a/srcc"]) + float(logged["val/b/srcc"])) / 2, abs=1e-6)
    assert cli.trainer.checkpoint_callback.monitor == "val/mean_srcc"  # the default for several datasets
    assert yaml.safe_load((run / "config.yaml").read_text())["checkpoint"]["monitor"] == "val/mean_srcc"
    state = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert state["hyper_parameters"]["loss"] == "rank"
    assert any("val/mean_srcc" in key for key in state["callbacks"])
    for name in ("a", "b"):  # each dataset's own split beside the checkpoints
        assert (run / "checkpoints" / name / "splits.csv").is_file()


def test_an_explicit_monitor_is_kept(studies, tmp_path):
    cli = run_cli(["fit", "--config", str(studies / "mixed.yaml"), *TINY_MODEL_ARGS, "--checkpoint.monitor",
                   "val/b/srcc", *trainer_args(tmp_path / "run")])
    assert cli.trainer.checkpoint_callback.monitor == "val/b/srcc"


def test_the_benchmark_tests_each_dataset_and_another_one(studies, tmp_path, benchmark_here):  # noqa: F811
    out = tmp_path / "bench"
    run_cli(["benchmark", "--config", str(studies / "mixed.yaml"), "--splits", "1", "--out", str(out),
             "--test_on", f"{studies / 'c.yaml'}:{studies / 'c'}", *TINY_MODEL_ARGS, "--trainer.max_epochs", "1",
             "--trainer.accelerator", "cpu", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"])
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["tested_on"], r["images"]) for r in rows] == [("a", "test split"), ("b", "test split"), ("c", "all")]
    splits = {n: [r["split"] for r in csv.DictReader(open(out / "split_0" / "checkpoints" / n / "splits.csv"))]
              for n in ("a", "b")}
    assert [int(r["n_test"]) for r in rows] == [splits["a"].count("test"), splits["b"].count("test"), 12]
    assert len(splits["a"]) == 30 and len(splits["b"]) == 24  # each dataset's own split, every image once
    assert all(-1 <= float(r["srcc"]) <= 1 for r in rows)
    summary = (out / "summary.md").read_text()
    assert "| trained on \\ tested on | a | b | c |" in summary
    assert "Split: mixed: a prompt, b prompt." in summary


def test_the_shipped_example_lists_three_datasets_with_their_weights(capsys):
    from experiment_helpers import EXPERIMENTS

    with pytest.raises(SystemExit) as done:
        run_cli(["fit", "--config", str(EXPERIMENTS / "mixed.yaml"), "--print_config"])
    assert done.value.code in (0, None)
    data = yaml.safe_load(capsys.readouterr().out)["data"]
    assert data["class_path"].endswith("MixedData")
    assert [m["class_path"].rsplit(".", 1)[1] for m in data["init_args"]["datasets"]] == [
        "AGIQA3K", "AIGCIQA2023", "MOSFolder"]
    assert data["init_args"]["mix"] == [2, 1, 1]


@pytest.mark.slow
def test_each_dataset_figures_on_two_processes_equal_one(studies, tmp_path):
    """Two DDP processes on the CPU (gloo): each rank sees part of each dataset's test split; the figures are
    computed from every rank's rows, so they equal one process's."""
    from helpers import run_cli_subprocess

    run_cli(["fit", "--config", str(studies / "mixed.yaml"), *TINY_MODEL_ARGS, *trainer_args(tmp_path / "run")])
    checkpoint = str(tmp_path / "run" / "checkpoints" / "last.ckpt")
    figures = {}
    for devices in ("1", "2"):  # one process here; two need their own launch
        folder = tmp_path / f"test{devices}"
        args = ["test", "--config", str(studies / "mixed.yaml"), *TINY_MODEL_ARGS, *trainer_args(folder),
                "--data.init_args.eval_batch_size", "3", "--ckpt_path", checkpoint, "--report.dirpath", str(folder)]
        if devices == "1":
            run_cli(args)
        else:
            run_cli_subprocess([*args, "--trainer.devices", devices, "--trainer.strategy", "ddp"])
        figures[devices] = yaml.safe_load((folder / "test_metrics.json").read_text())["metrics"]
    assert {"test/a/n", "test/b/n", "test/mean_srcc"} <= set(figures["2"])
    for key, value in figures["1"].items():
        if key.startswith(("test/a/", "test/b/", "test/mean_srcc")):
            assert figures["2"][key] == pytest.approx(value, abs=1e-5), key
