"""Each benchmark datamodule on a generated root in its real layout (placeholder images, real rows): its target and
split, and a fit and test through the CLI; the published splits on the full real annotation files. What each reader
reads, its layouts and its bad input (no Lightning): tests/data/test_readers.py."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import SHARED_ANNOTATIONS, TINY_MODEL_ARGS, run_cli, trainer_args
from layouts import agiqa1k_root, agiqa3k_root, aigciqa20k_root, aigciqa2023_root

from clip_agiqa.data import AGIQA3K
from clip_agiqa.data.splits import assign

# A few batches are enough to prove the wiring; the 2,400-image layout would otherwise take minutes.
SHORT = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2", "--trainer.limit_test_batches", "2",
         "--data.batch_size", "4", "--data.num_workers", "0"]


# --- the datamodule over a reader (the records themselves: tests/data/test_readers.py) ------------------------
def test_agiqa3k_puts_the_selected_target_first_and_splits_by_prompt(tmp_path):
    data = AGIQA3K(str(agiqa3k_root(tmp_path)), target="align", split="prompt")
    data.setup()
    first = data.records[0]
    assert first.mos == pytest.approx(0.40889324) and first.targets["quality"] == pytest.approx(0.965602553)
    assert sorted(set(data.assignment)) == ["test", "train", "val"]


def test_unknown_target_is_refused(tmp_path):
    with pytest.raises(ValueError, match="quality, align"):
        AGIQA3K(str(tmp_path), target="aesthetics")


# --- through the CLI -------------------------------------------------------------------------------
def fit_and_test(root: Path, tmp_path: Path, data_class: str, extra: list[str] = (), same_pictures: bool = False):
    """Fit and test through the CLI; the test metrics must be numbers (RMSE always; the correlations too unless
    every placeholder is the same picture, when the predictions are constant by design)."""
    run_dir = tmp_path / "run"
    common = ["--data", data_class, "--data.root", str(root), *SHORT, *extra]
    run_cli(["fit", *TINY_MODEL_ARGS, *trainer_args(run_dir), *common])
    assert (run_dir / "checkpoints" / "splits.csv").is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NaN warnings of the constant-picture case
        cli = run_cli(["test", *TINY_MODEL_ARGS, *trainer_args(run_dir), *common,
                       "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt")])
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    assert np.isfinite(metrics["test/rmse"]), metrics
    if not same_pictures:
        assert np.isfinite(metrics["test/srcc"]) and np.isfinite(metrics["test/plcc"]), metrics
    return metrics


def test_cli_agiqa3k(tmp_path):
    fit_and_test(agiqa3k_root(tmp_path), tmp_path, "AGIQA3K", ["--data.target", "align", "--data.split", "prompt"])


def test_cli_agiqa1k(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_and_test(agiqa1k_root(tmp_path), tmp_path, "AGIQA1K")


def test_cli_aigciqa2023(tmp_path):
    fit_and_test(aigciqa2023_root(tmp_path / "root"), tmp_path, "AIGCIQA2023", ["--data.target", "correspondence"],
                 same_pictures=True)  # 2,400 copies of one placeholder


def test_cli_aigciqa20k(tmp_path):
    fit_and_test(aigciqa20k_root(tmp_path), tmp_path, "AIGCIQA20K", ["--data.split", "kfold", "--data.fold", "1"])


# --- the full real annotation files ----------------------------------------------------------------
def shared(*parts: str) -> Path:
    path = SHARED_ANNOTATIONS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (the real annotation files live in ../shared/annotations)")
    return path


def test_real_agiqa3k_prompt_split_keeps_each_prompt_in_one_split():
    records = AGIQA3K(str(shared("agiqa3k"))).load_records()  # 2,982 records of 300 prompts: test_readers.py
    assignment = assign("prompt", records, test_size=0.2, val_size=0.1, seed=3)
    prompts = {s: {r.prompt for r, a in zip(records, assignment) if a == s} for s in ("train", "val", "test")}
    assert not prompts["train"] & prompts["test"] and not prompts["train"] & prompts["val"]
    assert not prompts["val"] & prompts["test"] and len(prompts["test"]) == 60


def test_real_agiqa3k_paper_split_matches_the_published_split():
    records = AGIQA3K(str(shared("agiqa3k"))).load_records()
    names = [r.file_name for r in records]
    assignment = assign("paper", records, test_size=0.2, val_size=0.1, seed=0, annotation_order=names)
    assert assignment.count("test") == 597 and "val" not in assignment
    # The first rows of the published code's test list (sklearn train_test_split, random_state=42).
    for name in ("sd1.5_normal_027.jpg", "sd1.5_highcorr_065.jpg", "glide_normal_291.jpg", "DALLE2_normal_032.jpg"):
        assert assignment[names.index(name)] == "test"
