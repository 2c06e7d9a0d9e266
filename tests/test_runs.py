"""One run = one folder: a fit never overwrites another run's checkpoints; config.yaml starts new runs anywhere."""

import csv

import pytest
import yaml
from helpers import TINY_MODEL_ARGS, run_cli

from clip_agiqa.errors import InputError

QUIET = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false", "--seed_everything", "0"]


def fit_args(data_root, run_dir, epochs: int = 1) -> list[str]:
    """A tiny fit with the default logger (so metrics.csv is written) into run_dir."""
    return ["fit", *TINY_MODEL_ARGS, "--data", "MOSFolder", "--data.root", str(data_root), "--data.batch_size", "8",
            "--data.num_workers", "0", *QUIET, "--trainer.max_epochs", str(epochs),
            "--trainer.default_root_dir", str(run_dir)]


def metric_rows(run_dir) -> list[dict]:
    return list(csv.DictReader(open(run_dir / "metrics.csv")))


def test_run_folder_holds_config_metrics_and_checkpoints_and_no_lightning_logs(synthetic_root, tmp_path, monkeypatch,
                                                                               capsys):
    monkeypatch.chdir(tmp_path)
    run_cli(fit_args(synthetic_root, "runs/mine"))
    run = tmp_path / "runs" / "mine"
    assert {"config.yaml", "metrics.csv", "hparams.yaml", "checkpoints"} <= {p.name for p in run.iterdir()}
    assert {"best.ckpt", "last.ckpt", "splits.csv"} <= {p.name for p in (run / "checkpoints").iterdir()}
    assert not list(tmp_path.rglob("lightning_logs")) and not list(tmp_path.rglob("version_*"))
    out = capsys.readouterr().out
    assert "best val/srcc" in out and "at epoch 0" in out and str(run / "checkpoints" / "best.ckpt") in out
    assert "run folder: runs/mine" in out
    assert [r["train/loss"] for r in metric_rows(run) if r["train/loss"]], "train/loss is logged on short epochs"

    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["checkpoint"]["dirpath"] is None and config["ckpt_path"] is None  # nothing pins a folder

    run_cli(["test", "--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints" / "best.ckpt")])
    assert (run / "test_predictions.csv").is_file() and (run / "test_scatter.png").is_file()
    assert any(r.get("test/srcc") for r in metric_rows(run)) and any(r["train/loss"] for r in metric_rows(run))
    assert yaml.safe_load((run / "config.yaml").read_text()) == config  # test leaves the fit's config as it was
    assert "wrote runs/mine/test_predictions.csv" in capsys.readouterr().out


def test_a_second_fit_into_the_same_folder_is_refused(synthetic_root, tmp_path):
    run_cli(fit_args(synthetic_root, tmp_path))
    best = tmp_path / "checkpoints" / "best.ckpt"
    before = best.read_bytes()
    with pytest.raises(InputError, match=r"already holds the checkpoints of another run.*--ckpt_path last"):
        run_cli(fit_args(synthetic_root, tmp_path))
    elsewhere = tmp_path / "elsewhere.ckpt"
    elsewhere.write_bytes(before)
    with pytest.raises(InputError, match="another run"):  # a checkpoint of another run does not resume this one
        run_cli([*fit_args(synthetic_root, tmp_path), "--ckpt_path", str(elsewhere)])
    assert best.read_bytes() == before


def test_a_saved_config_with_a_new_root_writes_under_the_new_root(synthetic_root, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    run_cli(fit_args(synthetic_root, first))
    before = {p.name: p.read_bytes() for p in (first / "checkpoints").iterdir()}
    run_cli(["fit", "--config", str(first / "config.yaml"), "--trainer.default_root_dir", str(second)])
    assert (second / "checkpoints" / "best.ckpt").is_file() and (second / "config.yaml").is_file()
    assert {p.name: p.read_bytes() for p in (first / "checkpoints").iterdir()} == before


def test_a_checkpoint_of_another_backbone_is_refused(synthetic_root, tmp_path):
    run_cli(fit_args(synthetic_root, tmp_path))
    resume = [*fit_args(synthetic_root, tmp_path), "--ckpt_path", "last"]
    resume[resume.index("random:tiny")] = "random:vit-b-16"
    resume[resume.index("last")] = str(tmp_path / "checkpoints" / "last.ckpt")
    with pytest.raises(ValueError,
                       match=r"--model.backbone is 'random:vit-b-16' but the checkpoint's is 'random:tiny'"):
        run_cli(resume)


def test_each_sweep_run_gets_its_own_folder(synthetic_root, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep1")
    for run_id in ("run_a", "run_b"):
        monkeypatch.setenv("WANDB_RUN_ID", run_id)
        run_cli([*fit_args(synthetic_root, tmp_path), "--trainer.max_steps", "1"])
        assert (tmp_path / run_id / "checkpoints" / "last.ckpt").is_file()
