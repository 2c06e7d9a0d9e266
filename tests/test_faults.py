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
from helpers import TINY_MODEL_ARGS, run_cli

from clip_agiqa.callbacks.signals import RunInterrupted, StopOnSignal
from clip_agiqa.errors import InputError
from clip_agiqa.run_files import LOCK_FILE
from clip_agiqa.runs import AtomicCheckpointIO, RunLock

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
    run_cli([*fit_args(synthetic_root, tmp_path, epochs=3), "--checkpoint.select", "best"])  # Lightning's best
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
    """Killed after epoch 1's rows reached metrics.csv but before its last.ckpt did: the resume (the fit's own
    command line with --ckpt_path last) finds the run's last.ckpt, keeps epoch 0's rows as they were, replays
    epoch 1, and its rows are there once."""
    run_cli(fit_args(synthetic_root, tmp_path, epochs=2))
    epoch_0_rows = [row for row in metric_rows(tmp_path) if row["epoch"] == "0"]
    last = tmp_path / "checkpoints" / "last.ckpt"
    saved_epoch_0 = tmp_path / "epoch0.ckpt"
    run_cli(fit_args(synthetic_root, tmp_path / "other", epochs=1))
    saved_epoch_0.write_bytes((tmp_path / "other" / "checkpoints" / "last.ckpt").read_bytes())
    last.write_bytes(saved_epoch_0.read_bytes())  # as if killed in epoch 1 after its rows were flushed
    cli = run_cli([*fit_args(synthetic_root, tmp_path, epochs=2), "--ckpt_path", "last"])
    assert cli.trainer.ckpt_path == str(last) and cli.trainer.current_epoch == 2  # "last" was found, then went on
    assert epoch_0_rows and metric_rows(tmp_path)[:len(epoch_0_rows)] == epoch_0_rows
    assert_each_step_once(tmp_path, epochs=2)


def wait_for(path: Path, process: subprocess.Popen, guard: float = 1800) -> None:
    """Until ``path`` exists (a hang guard, not a speed limit)."""
    started = time.monotonic()
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() - started < guard, f"{path} never appeared"
        time.sleep(0.2)


@pytest.mark.slow
def test_ctrl_c_in_a_real_fit_saves_last_says_how_to_resume_and_exits_quietly(synthetic_root, tmp_path):
    run = tmp_path / "run"
    exe = Path(sys.executable).with_name("clip-agiqa")
    fit = subprocess.Popen([str(exe), *fit_args(synthetic_root, run, epochs=1000)], cwd=tmp_path, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env={**os.environ, "PYTHONWARNINGS": "ignore"})
    wait_for(run / "checkpoints" / "last.ckpt", fit)  # epoch 0 is done: now a user presses Ctrl-C
    fit.send_signal(signal.SIGINT)
    out, err = fit.communicate(timeout=1800)
    assert fit.returncode == 130, err
    lines = [line for line in err.splitlines() if line.startswith("clip-agiqa:")]
    assert len(lines) == 1 and "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert lines[0].startswith("clip-agiqa: stopped by SIGINT in epoch ")
    assert lines[0].endswith(f"Resume with: clip-agiqa fit --config {run / 'config.yaml'} --ckpt_path last")
    epoch, step = checkpoint_step(run / "checkpoints" / "last.ckpt")
    assert step >= STEPS_PER_EPOCH and f"in epoch {epoch} at step {step};" in lines[0]

    epochs = epoch + 2
    run_cli(["fit", "--config", str(run / "config.yaml"), "--ckpt_path", "last", "--trainer.max_epochs", str(epochs)])
    assert_each_step_once(run, epochs)


KILL_ON_THIRD_WRITE = """
import os, signal, sys
from clip_agiqa import runs
from clip_agiqa.cli import console

saves = []
original = runs.AtomicCheckpointIO.save_checkpoint

def save_checkpoint(self, checkpoint, path, storage_options=None):
    saves.append(path)
    if len(saves) == 3:  # the third checkpoint write (epoch 1) dies halfway: kill -9, nothing runs after it
        with runs.atomic_write(path, "wb") as handle:
            handle.write(b"PK\\x03\\x04" + bytes(4096))
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    return original(self, checkpoint, path, storage_options)

runs.AtomicCheckpointIO.save_checkpoint = save_checkpoint
sys.argv = ["clip-agiqa", *sys.argv[1:]]
console()
"""


@pytest.mark.slow
def test_kill_during_a_checkpoint_write_leaves_whole_checkpoints_and_the_resume_redoes_nothing(synthetic_root,
                                                                                             tmp_path):
    run = tmp_path / "run"
    killed = subprocess.run([sys.executable, "-c", KILL_ON_THIRD_WRITE, *fit_args(synthetic_root, run, epochs=3)],
                            cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    checkpoints = run / "checkpoints"
    assert checkpoint_step(checkpoints / "last.ckpt") == (0, STEPS_PER_EPOCH)  # the one before: whole
    checkpoint_step(checkpoints / "best.ckpt")  # loads
    orphans = list(checkpoints.glob(".*.tmp"))
    assert len(orphans) == 1 and not list(run.glob(".*.tmp"))  # beside its target only

    run_cli(["fit", "--config", str(run / "config.yaml"), "--ckpt_path", "last"])
    assert not list(checkpoints.glob(".*.tmp"))  # the resumed run (holding the lock) cleared it
    assert_each_step_once(run, epochs=3)


class FullDisk:
    """A file whose writes fail with ENOSPC after ``room`` bytes, as on a full disk."""

    def __init__(self, handle, room: int) -> None:
        self.handle, self.room = handle, room

    def write(self, data) -> int:
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)


def test_a_full_disk_during_fit_is_one_line_and_keeps_the_checkpoints_whole(synthetic_root, tmp_path, monkeypatch,
                                                                            capsys):
    import contextlib

    from clip_agiqa import cli as commands
    from clip_agiqa import runs

    real_atomic_write, saves = runs.atomic_write, []

    @contextlib.contextmanager
    def filling_disk(path, mode="w", **kwargs):
        saves.extend([path] if str(path).endswith(".ckpt") else [])  # runs.py writes metrics.csv whole too
        with real_atomic_write(path, mode, **kwargs) as handle:
            yield FullDisk(handle, room=1000) if len(saves) >= 3 else handle

    monkeypatch.setattr(runs, "atomic_write", filling_disk)
    monkeypatch.setattr(sys, "argv", ["clip-agiqa", *fit_args(synthetic_root, tmp_path, epochs=3)])
    with pytest.raises(SystemExit) as done:
        commands.console()
    err = capsys.readouterr().err
    assert done.value.code == 1 and "Traceback" not in err
    [line] = [line for line in err.splitlines() if line.startswith("clip-agiqa:")]
    assert line.startswith("clip-agiqa: error: no space left on the device")
    assert line.endswith(f"then resume with: clip-agiqa fit --config {tmp_path / 'config.yaml'} --ckpt_path last")
    assert checkpoint_step(tmp_path / "checkpoints" / "last.ckpt") == (0, STEPS_PER_EPOCH)
    assert not list(tmp_path.rglob("*.tmp"))  # the unfinished file was removed


def test_a_damaged_last_ckpt_is_refused_in_one_line_never_restarted(synthetic_root, tmp_path):
    run_cli(fit_args(synthetic_root, tmp_path, epochs=1))
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # cut, as by a full disk elsewhere
    with pytest.raises(InputError, match=rf"{last} is damaged .*best.ckpt"):
        run_cli([*fit_args(synthetic_root, tmp_path, epochs=2), "--ckpt_path", "last"])


def test_a_second_command_on_a_run_folder_in_use_is_refused(synthetic_root, tmp_path):
    lock = RunLock(tmp_path).acquire()  # another fit holds the folder
    try:
        with pytest.raises(InputError, match=rf"{tmp_path} is in use by another clip-agiqa command \(process "
                                             rf"{os.getpid()}\)"):
            run_cli(fit_args(synthetic_root, tmp_path, epochs=1))
    finally:
        lock.release()
    assert not (tmp_path / "checkpoints").exists()
    run_cli(fit_args(synthetic_root, tmp_path, epochs=1))  # free again once the other ended
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / LOCK_FILE).exists()  # a folder that had no lock file is left without one


def test_a_fit_refused_before_writing_anything_leaves_no_run_folder(tmp_path):
    run = tmp_path / "runs" / "new"
    with pytest.raises(InputError, match="metadata.csv"):
        run_cli(fit_args(tmp_path / "no_such_data", run, epochs=1))
    assert not run.exists()


def test_checkpoints_are_written_beside_and_renamed(tmp_path, monkeypatch):
    target = tmp_path / "best.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, target)
    monkeypatch.setattr(torch, "save", lambda obj, handle: (handle.write(b"PK\x03\x04half"), 1 / 0))
    with pytest.raises(ZeroDivisionError):
        AtomicCheckpointIO().save_checkpoint({"step": 2}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True) == {"step": 1} and sorted(tmp_path.iterdir()) == [target]


def test_a_failed_fit_leaves_no_lock_file_in_a_folder_that_had_none(tmp_path, monkeypatch):
    """The repository root (the run folder when none is given) or a folder made beforehand stays as it was."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine\n")
    args = fit_args(tmp_path / "no_such_data", tmp_path, epochs=1)
    del args[args.index("--trainer.default_root_dir"):][:2]
    with pytest.raises(InputError, match="metadata.csv"):
        run_cli(args)
    empty = tmp_path / "made_before"
    empty.mkdir()
    with pytest.raises(InputError, match="metadata.csv"):
        run_cli(fit_args(tmp_path / "no_such_data", empty, epochs=1))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["made_before", "notes.txt"]


def test_the_lock_file_goes_with_the_command_and_the_folder_is_free_again(tmp_path):
    run = tmp_path / "run"
    lock = RunLock(run).acquire()
    assert (run / LOCK_FILE).read_text() == f"{os.getpid()}\n"  # what a refused command names
    with pytest.raises(InputError, match=rf"{run} is in use by another clip-agiqa command \(process {os.getpid()}\)"):
        RunLock(run).acquire()
    (run / "config.yaml").write_text("written\n")
    lock.release()
    assert [p.name for p in run.iterdir()] == ["config.yaml"]  # the folder stays (it was written), its lock goes
    RunLock(run).acquire().release()
    lock = RunLock(tmp_path / "new").acquire()
    lock.release()
    assert not (tmp_path / "new").exists()  # made and left empty: gone


def test_a_full_disk_while_writing_hparams_leaves_no_temporary_file(tmp_path, monkeypatch):
    from clip_agiqa import runs

    def filling_disk(path, hparams):
        Path(path).write_text("")
        raise OSError(errno.ENOSPC, "No space left on device")

    logger = runs.RunLogger(str(tmp_path), keep_metrics=False)
    monkeypatch.setattr(runs, "save_hparams_to_yaml", filling_disk)
    with pytest.raises(OSError, match="No space"):
        logger.log_hyperparams({"lr": 0.1})
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    logger.log_hyperparams({"lr": 0.2})  # the resume, with room again
    assert [p.name for p in tmp_path.iterdir()] == ["hparams.yaml"] and "0.2" in (tmp_path / "hparams.yaml").read_text()


def test_metrics_csv_is_extended_by_a_resume_and_rewritten_whole_for_a_new_column(tmp_path, monkeypatch):
    from clip_agiqa import runs

    first = runs.RunLogger(str(tmp_path), keep_metrics=False)
    first.log_metrics({"train/loss": torch.tensor(0.5)}, step=0)
    first.save()
    resumed = runs.RunLogger(str(tmp_path), keep_metrics=True)
    resumed.log_metrics({"train/loss": 0.25}, step=1)
    resumed.save()
    rewrites = []
    real_atomic_write = runs.atomic_write
    monkeypatch.setattr(runs, "atomic_write", lambda *a, **k: rewrites.append(a[0]) or real_atomic_write(*a, **k))
    resumed.log_metrics({"val/srcc": 0.75}, step=1)
    resumed.save()
    assert rewrites == [tmp_path / "metrics.csv"]  # whole, beside and renamed
    assert metric_rows(tmp_path) == [{"step": "0", "train/loss": "0.5", "val/srcc": ""},
                                     {"step": "1", "train/loss": "0.25", "val/srcc": ""},
                                     {"step": "1", "train/loss": "", "val/srcc": "0.75"}]
    runs.RunLogger(str(tmp_path), keep_metrics=False).save()  # a new run in the folder starts afresh
    assert not (tmp_path / "metrics.csv").exists()


def test_lightning_still_counts_the_logged_steps_where_the_signal_stop_adjusts_them():
    """The one private Lightning name StopOnSignal uses (its loop's count of steps for the loggers): renamed
    upstream, this fails first."""
    from lightning.pytorch import Trainer

    loop = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False).fit_loop.epoch_loop
    assert loop._batches_that_stepped == 0 and "_batches_that_stepped" in loop.state_dict()["state_dict"]
