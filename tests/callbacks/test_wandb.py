"""Weights & Biases (what the package hands to its public API; no network, no W&B files) and the test report:
metrics, resolved config, split, scatter plot, table."""

import csv
import functools
from pathlib import Path

import pytest
from experiment_helpers import folder_args
from helpers import REPO, TINY_MODEL_ARGS, run_cli, trainer_args
from PIL import Image

WANDB_CONFIG = str(REPO / "experiments" / "wandb.yaml")


class _Config(dict):
    def update(self, values, allow_val_change: bool = False) -> None:  # as Lightning calls it
        super().update(values)


class RecordingRun:
    """Stands in for a W&B run: records what the package and Lightning hand to W&B's public API
    (no network, no files, no state left in the wandb library)."""

    def __init__(self, **init_kwargs):
        self.init_kwargs = init_kwargs
        self.config = _Config()
        self.logged: list[dict] = []
        self.saved: list[str] = []
        self.metric_summaries: dict[str, str] = {}
        self.finished = False
        self.id = self.name = init_kwargs.get("id") or f"run{id(self)}"  # as W&B: a given id resumes that run

    def log(self, data: dict, *args, **kwargs) -> None:
        self.logged.append(data)

    def save(self, path: str, base_path: str | None = None, policy: str = "live") -> None:
        self.saved.append(str(Path(path).relative_to(base_path)) if base_path else path)

    def define_metric(self, name: str, summary: str | None = None, **kwargs) -> None:
        self.metric_summaries[name] = summary

    def project_name(self) -> str:
        return self.init_kwargs.get("project", "")

    def logged_value(self, key: str):
        return next(entry[key] for entry in self.logged if key in entry)


@pytest.fixture
def wandb_runs(monkeypatch, tmp_path) -> list[RecordingRun]:
    """Every run the code under test starts, in order; ``wandb.run`` and ``wandb.finish`` behave as in W&B."""
    import wandb

    runs: list[RecordingRun] = []

    @functools.wraps(wandb.init)  # keeps its signature: the CLI reads WandbLogger's init arguments from it
    def init(**kwargs) -> RecordingRun:
        run = RecordingRun(**kwargs)
        runs.append(run)
        monkeypatch.setattr(wandb, "run", run)
        return run

    def finish(*args, **kwargs) -> None:
        wandb.run.finished = True
        monkeypatch.setattr(wandb, "run", None)

    monkeypatch.setattr(wandb, "run", None)
    monkeypatch.setattr(wandb, "init", init)
    monkeypatch.setattr(wandb, "finish", finish)
    monkeypatch.chdir(tmp_path)
    return runs


def test_wandb_run_holds_metrics_config_split_plot_and_table(synthetic_root, tmp_path, wandb_runs):
    import wandb

    run_dir = tmp_path / "run"
    cli = run_cli(["fit", "--config", WANDB_CONFIG, *TINY_MODEL_ARGS, *folder_args(synthetic_root),
                   "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(run_dir),
                   "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"])
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False)

    [run] = wandb_runs
    assert run.init_kwargs["dir"] == str(run_dir)  # the W&B folder goes into the run folder, not the working dir
    history = {key for entry in run.logged for key in entry}
    assert {"val/srcc", "val/plcc", "test/srcc", "test/plcc", "test/krcc", "test/rmse"} <= history
    assert run.metric_summaries["val/srcc"] == "max"  # a sweep reads the best val SRCC, not the last
    assert {"config", "split", "data_class"} <= set(run.config)
    assert run.config["config"]["model"]["init_args"]["backbone"] == "random:tiny"  # the resolved config
    assert run.config["split"]["n_test"] == 8
    assert run.saved == ["splits.csv"]
    table = run.logged_value("test/predictions")
    assert isinstance(table, wandb.Table) and table.columns == ["file_name", "mos", "score"] and len(table.data) == 8
    assert isinstance(run.logged_value("test/scatter"), wandb.plot.CustomChart)  # a W&B plot of that table
    assert isinstance(run.logged_value("test/scatter_png"), wandb.Image)
    assert (run_dir / "test_scatter.png").is_file()


def test_wandb_gets_one_table_and_a_scatter_plot_per_target(synthetic_root, tmp_path, wandb_runs):
    import wandb

    run_dir = tmp_path / "run"
    cli = run_cli(["fit", "--config", WANDB_CONFIG, *TINY_MODEL_ARGS, *folder_args(synthetic_root),
                   "--data.target", "[mos, align]", "--trainer.max_epochs", "1", "--trainer.default_root_dir",
                   str(run_dir), "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"])
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False)

    [run] = wandb_runs
    table = run.logged_value("test/predictions")
    assert table.columns == ["file_name", "mos_mos", "mos_score", "align_mos", "align_score"] and len(table.data) == 8
    for target in ("mos", "align"):
        assert isinstance(run.logged_value(f"test/scatter/{target}"), wandb.plot.CustomChart)
        assert isinstance(run.logged_value(f"test/scatter_png/{target}"), wandb.Image)
        assert (run_dir / f"test_scatter_{target}.png").is_file()
    assert run.config["split"]["target"] == "mos,align"


def test_without_wandb_the_scatter_png_and_predictions_are_in_the_run_folder(synthetic_root, tmp_path):
    run_cli(["fit", *TINY_MODEL_ARGS, *folder_args(synthetic_root), *trainer_args(tmp_path)])
    run_cli(["test", *TINY_MODEL_ARGS, *folder_args(synthetic_root), *trainer_args(tmp_path),
             "--ckpt_path", str(tmp_path / "checkpoints" / "best.ckpt")])
    with Image.open(tmp_path / "test_scatter.png") as image:
        assert image.size == (480, 480)
    rows = list(csv.DictReader(open(tmp_path / "test_predictions.csv")))
    assert len(rows) == 8 and set(rows[0]) == {"file_name", "mos", "score"}
    assert not (tmp_path / "wandb").exists()


def test_test_and_a_resume_log_into_the_fits_wandb_run(synthetic_root, tmp_path, wandb_runs):
    run_dir = tmp_path / "run"
    common = ["--config", WANDB_CONFIG, *TINY_MODEL_ARGS, *folder_args(synthetic_root), "--trainer.default_root_dir",
              str(run_dir), "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"]
    import wandb

    for command in (["fit", *common, "--trainer.max_epochs", "1"],
                    ["test", *common, "--ckpt_path", str(run_dir / "checkpoints" / "best.ckpt")],
                    ["fit", *common, "--trainer.max_epochs", "2", "--ckpt_path", "last"]):
        run_cli(command)
        wandb.finish()  # each command is its own process, with no W&B run left from the one before
    fit, test, resumed = wandb_runs
    assert (run_dir / "wandb_run_id").read_text().strip() == fit.id
    assert fit.init_kwargs["id"] is None  # a new fit: a new run
    for later in (test, resumed):
        assert later.init_kwargs["id"] == fit.id and later.init_kwargs["resume"] == "allow"
    assert "test/srcc" in {key for entry in test.logged for key in entry}
