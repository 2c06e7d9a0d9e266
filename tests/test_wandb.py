"""Weights & Biases (offline, no network) and the test report: metrics, resolved config, split, scatter plot, table."""

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from conftest import REPO, TINY_MODEL_ARGS, run_cli, run_cli_subprocess, trainer_args
from clip_agiqa.benchmark import finish_wandb_run
from experiment_helpers import folder_args

WANDB_CONFIG = str(REPO / "experiments" / "wandb.yaml")


def read_wandb_records(path: Path) -> list:
    """The records of an offline run's ``run-*.wandb`` file (a LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    position, block, chunks, records = 7, 32768, [], []
    while position + 7 <= len(data):
        left = block - position % block
        length, kind = int.from_bytes(data[position + 4: position + 6], "little"), data[position + 6]
        if left < 7 or kind == 0:  # block trailer / padding
            position += left
            continue
        chunks.append(data[position + 7: position + 7 + length])
        position += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(b"".join(chunks))
            records.append(record)
            chunks = []
    return records


def logged_keys(records, kind: str) -> set[str]:
    keys = set()
    for record in records:
        if record.WhichOneof("record_type") == kind:
            items = {"history": lambda r: r.history.item, "config": lambda r: r.config.update,
                     "files": lambda r: r.files.files}[kind](record)
            keys |= {getattr(i, "path", "") or i.key or "/".join(i.nested_key) for i in items}
    return keys


@pytest.fixture
def offline_wandb(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb_home"))
    monkeypatch.chdir(tmp_path)
    finish_wandb_run()  # a run left open by an earlier test would be reused
    yield
    finish_wandb_run()


def test_wandb_run_holds_metrics_config_split_plot_and_table(synthetic_root, tmp_path, offline_wandb):
    import wandb

    run_dir = tmp_path / "run"
    cli = run_cli(["fit", "--config", WANDB_CONFIG, *TINY_MODEL_ARGS, *folder_args(synthetic_root),
                   "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(run_dir),
                   "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"])
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False)
    wandb.finish()

    assert not (tmp_path / "wandb").exists()  # the W&B folder goes into the run folder, not the working dir
    run_files = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 1
    records = read_wandb_records(run_files[0])
    assert {"val/srcc", "val/plcc", "test/srcc", "test/plcc", "test/krcc", "test/rmse"} <= logged_keys(records, "history")
    config_keys = logged_keys(records, "config")
    assert {"config", "split", "backbone", "_wandb/visualize/test/scatter"} <= config_keys  # scatter: a W&B plot
    files = logged_keys(records, "files")
    assert "splits.csv" in files
    assert any(f.startswith("media/table/test/predictions") for f in files)
    assert any(f.startswith("media/images/test/scatter_png") for f in files)
    split_value = next(i.value_json for r in records if r.WhichOneof("record_type") == "config"
                       for i in r.config.update if i.key == "split")
    assert json.loads(split_value)["n_test"] == 8
    assert (run_dir / "test_scatter.png").is_file()


def test_benchmark_gives_each_split_its_own_wandb_run(synthetic_root, tmp_path, offline_wandb):
    out = tmp_path / "bench"
    run_cli(["benchmark", "--config", str(REPO / "experiments" / "demo.yaml"), "--config", WANDB_CONFIG,
             "--splits", "2", "--out", str(out), *TINY_MODEL_ARGS, *folder_args(synthetic_root),
             "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"])
    for split in ("split_0", "split_1"):
        runs = list((out / split / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(runs) == 1, split
        assert "test/srcc" in logged_keys(read_wandb_records(runs[0]), "history")


def test_without_wandb_the_scatter_png_and_predictions_are_in_the_run_folder(synthetic_root, tmp_path):
    run_cli(["fit", *TINY_MODEL_ARGS, *folder_args(synthetic_root), *trainer_args(tmp_path)])
    run_cli(["test", *TINY_MODEL_ARGS, *folder_args(synthetic_root), *trainer_args(tmp_path),
             "--ckpt_path", str(tmp_path / "checkpoints" / "best.ckpt")])
    with Image.open(tmp_path / "test_scatter.png") as image:
        assert image.size == (480, 480)
    rows = list(csv.DictReader(open(tmp_path / "test_predictions.csv")))
    assert len(rows) == 8 and set(rows[0]) == {"file_name", "mos", "score"}
    assert not (tmp_path / "wandb").exists()


@pytest.mark.slow
def test_report_under_ddp_holds_every_test_sample_once(synthetic_root, tmp_path):
    run_dir = tmp_path / "ddp"
    common = [*TINY_MODEL_ARGS, *folder_args(synthetic_root, batch_size=3), *trainer_args(run_dir),
              "--trainer.devices", "2", "--trainer.strategy", "ddp"]
    run_cli_subprocess(["fit", *common, "--data.test_size", "0.27"], cwd=tmp_path)
    run_cli_subprocess(["test", *common, "--data.test_size", "0.27", "--ckpt_path",
                        str(run_dir / "checkpoints" / "best.ckpt")], cwd=tmp_path)
    names = [r["file_name"] for r in csv.DictReader(open(run_dir / "test_predictions.csv"))]
    splits = list(csv.DictReader(open(run_dir / "checkpoints" / "splits.csv")))
    assert sorted(names) == sorted(r["file_name"] for r in splits if r["split"] == "test")  # 11: uneven shares
