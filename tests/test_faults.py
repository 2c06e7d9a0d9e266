"""Runs that lose nothing: Ctrl-C / SIGTERM / kill -9 during a fit, a checkpoint write that dies or finds the
disk full, a damaged last.ckpt, two commands on one run folder. Resuming with --ckpt_path last redoes no
finished epoch and leaves each step once in metrics.csv."""

import csv
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from clip_agiqa.errors import InputError
from clip_agiqa.runs import AtomicCheckpointIO, RunInterrupted, RunLock, StopOnSignal
from conftest import TINY_MODEL_ARGS, run_cli

STEPS_PER_EPOCH = 4  # 30 training images of the 41 in synthetic_root, batches of 8


def fit_args(data_root, run_dir, epochs: int) -> list[str]:
    return ["fit", *TINY_MODEL_ARGS, "--data", "MOSFolder", "--data.root", str(data_root), "--data.batch_size", "8",
            "--data.num_workers", "0", "--trainer.accelerator", "cpu", "--trainer.devices", "1",
            "--trainer.max_epochs", str(epochs), "--trainer.default_root_dir", str(run_dir),
            "--trainer.enable_progress_bar", "false", "--seed_everything", "0"]


def metric_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def assert_each_step_once(run_dir: Path, epochs: int) -> None:
    rows = metric_rows(run_dir)
    train_steps = [int(r["step"]) for r in rows if r["train/loss"]]
    assert train_steps == list(range(epochs * STEPS_PER_EPOCH)), train_steps
    val_epochs = [int(r["epoch"]) for r in rows if r["val/srcc"]]
    assert val_epochs == list(range(epochs)), val_epochs  # no finished epoch validated twice


def checkpoint_step(path: Path) -> tuple[int, int]:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return checkpoint["epoch"], checkpoint["global_step"]


def signal_at_step(monkeypatch, step: int, signum: int) -> None:
    """Sends the process ``signum`` when the fit reaches ``step`` (what a user's Ctrl-C or a scheduler does)."""
    original = StopOnSignal.on_train_batch_start

    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == step and self.received is None:
            os.kill(os.getpid(), signum)
        return original(self, trainer, *args)

    monkeypatch.setattr(StopOnSignal, "on_train_batch_start", on_train_batch_start)


def test_last_ckpt_is_the_last_epoch_not_the_best(synthetic_root, tmp_path):
    run_cli(fit_args(synthetic_root, tmp_path, epochs=3))
    best_epoch, _ = checkpoint_step(tmp_path / "checkpoints" / "best.ckpt")
    assert checkpoint_step(tmp_path / "checkpoints" / "last.ckpt") == (2, 3 * STEPS_PER_EPOCH)
    assert best_epoch < 2  # on this data the best val SRCC comes early: last.ckpt must still be epoch 2


@pytest.mark.parametrize("step", [6, 8])  # inside epoch 1; at the first step of epoch 2
def test_sigterm_mid_epoch_saves_last_and_the_resume_redoes_nothing(synthetic_root, tmp_path, monkeypatch, step):
    signal_at_step(monkeypatch, step, signal.SIGTERM)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RunInterrupted) as stopped:
        run_cli(fit_args(synthetic_root, tmp_path, epochs=3))
    assert signal.getsignal(signal.SIGTERM) == before  # handlers given back
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert stopped.value.checkpoint == last and stopped.value.signum == signal.SIGTERM
    assert f"--config {tmp_path / 'config.yaml'} --ckpt_path last" in stopped.value.resume
    assert checkpoint_step(last) == (step // STEPS_PER_EPOCH, step)
    monkeypatch.undo()

    cli = run_cli(fit_args(synthetic_root, tmp_path, epochs=3)[:1] + ["--config", str(tmp_path / "config.yaml"),
                                                                       "--ckpt_path", "last"])
    assert cli.trainer.global_step == 3 * STEPS_PER_EPOCH
    assert_each_step_once(tmp_path, epochs=3)


def test_a_resume_after_a_later_epoch_forgets_the_rows_after_its_checkpoint(synthetic_root, tmp_path):
    """kill -9 after epoch 1 finished but before its rows... : rows past last.ckpt's step are replayed, not doubled."""
    run_cli(fit_args(synthetic_root, tmp_path, epochs=2))
    last = tmp_path / "checkpoints" / "last.ckpt"
    saved_epoch_0 = tmp_path / "epoch0.ckpt"
    run_cli(fit_args(synthetic_root, tmp_path / "other", epochs=1))
    saved_epoch_0.write_bytes((tmp_path / "other" / "checkpoints" / "last.ckpt").read_bytes())
    last.write_bytes(saved_epoch_0.read_bytes())  # as if killed in epoch 1 after its rows were flushed
    run_cli([*fit_args(synthetic_root, tmp_path, epochs=2), "--ckpt_path", "last"])
    assert_each_step_once(tmp_path, epochs=2)
