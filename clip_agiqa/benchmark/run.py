"""Running a benchmark's splits: each split is its own ``clip-agiqa fit`` process, then a ``clip-agiqa test``
process on its test set with the checkpoint chosen on val, then one ``clip-agiqa test`` process per ``--test_on``
dataset. Up to ``--jobs`` splits run at once, one GPU each when there are GPUs (``CUDA_VISIBLE_DEVICES``), the
CPU threads divided between them otherwise (``OMP_NUM_THREADS``). Every process of a split writes its output
to ``split.log`` in the split's folder; the split's rows go to ``result.json`` there when its tests are done.
A split with a ``last.ckpt`` resumes from it (one cut short by a kill sets the checkpoints folder aside).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Iterator

import yaml

from ..errors import InputError
from ..files import atomic_write
from ..run_files import LAST_FILE, PREDICTIONS_FILE
from .plan import Plan, Split, cli_command, config_args
from .results import ALL_IMAGES, OWN_TEST, test_metrics

LOG_FILE = "split.log"
RESULT_FILE = "result.json"  # a finished split's rows, read back if results.csv missed them (a kill between)
CROSS_TRAINER_FILE = "test_on_trainer.yaml"  # the fits' trainer settings, for the --test_on processes
POLL_SECONDS = 0.5
STOP_SECONDS = 30  # how long a stopped split's process gets to end before it is killed


class SplitsFailed(InputError):
    """Some splits failed; each is named with its log (the message is one line)."""


# --- checkpoints ----------------------------------------------------------------------------------------------
def usable_last_checkpoint(checkpoints: Path) -> Path | None:
    """The split's last.ckpt if it passes the checkpoint check (``saved.read_checkpoint``). One cut short by a kill,
    or one that is not a checkpoint of clip-agiqa, sets the whole checkpoints/ folder aside (fit refuses a folder
    holding other checkpoints) and the split starts over."""
    from ..saved import read_checkpoint

    last = checkpoints / LAST_FILE
    if not os.path.lexists(last):
        return None
    try:
        read_checkpoint(last)  # the fit's own check: a regular file, no pickle, a valid model, finite tensors
    except Exception as error:  # truncated, damaged or planted: any reader error
        damaged = checkpoints.with_name(f"{checkpoints.name}.damaged")
        number = 1
        while damaged.exists():
            number += 1
            damaged = checkpoints.with_name(f"{checkpoints.name}.damaged{number}")
        checkpoints.replace(damaged)
        reason = str(error) if isinstance(error, InputError) else type(error).__name__
        print(f"{last} cannot be resumed from ({reason}); {checkpoints.name}/ kept as {damaged.name}/, "
              f"the split starts over", flush=True)
        return None
    return last


def best_of(checkpoint: Path) -> tuple[str, float]:
    """The epoch of the val-chosen checkpoint and its val SRCC (the checkpoint callback's best score in it)."""
    import torch

    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as error:
        raise InputError(f"{checkpoint}: cannot be read ({type(error).__name__})") from None
    scores = [s.get("best_model_score") for s in (state.get("callbacks") or {}).values()
              if isinstance(s, dict) and "best_model_score" in s]  # a ModelCheckpoint's (or a subclass's) state
    score = next((float(s) for s in scores if s is not None), float("nan"))
    return str(state.get("epoch", "")), score


# --- the commands of one split ---------------------------------------------------------------------------------
def folder_of(plan: Plan, split: Split) -> Path:
    return plan.out / split.folder_name


def _split_args(plan: Plan, split: Split) -> list[str]:
    root = folder_of(plan, split)
    return [*config_args(plan.configs), *plan.fit_args, "--seed_everything", str(split.seed),
            "--trainer.default_root_dir", str(root), "--checkpoint.dirpath", str(root / "checkpoints"),
            *split.data_args(plan.configured_split)]


def fit_command(plan: Plan, split: Split, resume: Path | None) -> list[str]:
    return cli_command("fit", *_split_args(plan, split), *(["--ckpt_path", str(resume)] if resume else []))


def test_command(plan: Plan, split: Split, best: Path) -> list[str]:
    return cli_command("test", *_split_args(plan, split), "--ckpt_path", str(best),
                       "--report.dirpath", str(folder_of(plan, split)))


def member_folder(plan: Plan, split: Split, name: str) -> Path:
    return folder_of(plan, split) / f"test_{name}"


def member_test_command(plan: Plan, split: Split, best: Path, name: str) -> list[str]:
    """Several datasets in one model: the test split of one of them (its own predictions and report)."""
    folder = member_folder(plan, split, name)
    return cli_command("test", *_split_args(plan, split), "--data.init_args.test_datasets", f"[{name}]",
                       "--ckpt_path", str(best), "--report.dirpath", str(folder), "--trainer.logger", "false")


def cross_folder(plan: Plan, split: Split, label: str) -> Path:
    return folder_of(plan, split) / f"test_on_{label}"


def cross_test_command(plan: Plan, split: Split, best: Path, test) -> list[str]:
    """Every image of another dataset: its data part and root, the fits' trainer settings, nothing logged into
    the split's own run (its metrics.csv, W&B)."""
    folder = cross_folder(plan, split, test.label)
    return cli_command("test", "--config", str(plan.out / CROSS_TRAINER_FILE), *test.data_args,
                       "--seed_everything", str(split.seed), "--trainer.default_root_dir", str(folder),
                       "--trainer.logger", "false", "--ckpt_path", str(best), "--report.dirpath", str(folder))


def write_cross_trainer(plan: Plan) -> None:
    trainer = {k: v for k, v in plan.trainer.items() if k not in ("logger", "default_root_dir")}
    with atomic_write(plan.out / CROSS_TRAINER_FILE) as handle:
        yaml.safe_dump({"trainer": trainer}, handle, sort_keys=False)


def split_commands(plan: Plan, split: Split, resume: Path | None) -> Iterator[list[str]]:
    """fit, then test on the split's test set, then on each --test_on dataset (each waits for the one before)."""
    yield fit_command(plan, split, resume)
    best = folder_of(plan, split) / "checkpoints" / plan.checkpoint_file
    if not best.is_file():
        raise InputError(f"no {best.name} in {best.parent} after the fit (was there a validation set?)")
    if plan.members:  # each dataset's own test split, one at a time: a row each
        for name in plan.members:
            yield member_test_command(plan, split, best, name)
    else:
        yield test_command(plan, split, best)
    for test in plan.test_sets:
        yield cross_test_command(plan, split, best, test)


def split_rows(plan: Plan, split: Split, seconds: float) -> list[dict]:
    """The split's rows from its checkpoint and its tests' predictions files."""
    root = folder_of(plan, split)
    best = root / "checkpoints" / plan.checkpoint_file
    epoch, val_srcc = best_of(best)
    common = {"split": split.index, "seed": split.seed, "fold": "" if split.fold is None else split.fold,
              "splits_file": split.splits_file or "", "best_epoch": epoch, "val_srcc": val_srcc,
              "checkpoint": os.path.relpath(best, plan.out), "seconds": round(seconds, 1)}
    own = {name: member_folder(plan, split, name) for name in plan.members} or {plan.trained_on: root}
    rows = [{**common, "tested_on": name, "images": OWN_TEST, **test_metrics(folder / PREDICTIONS_FILE)}
            for name, folder in own.items()]
    rows += [{**common, "tested_on": test.label, "images": ALL_IMAGES,
              **test_metrics(cross_folder(plan, split, test.label) / PREDICTIONS_FILE)} for test in plan.test_sets]
    with atomic_write(root / RESULT_FILE) as handle:
        json.dump(rows, handle, indent=1)
    return rows


def recorded_rows(plan: Plan, split: Split) -> list[dict]:
    """The rows a finished split left in its folder (result.json), or none."""
    path = folder_of(plan, split) / RESULT_FILE
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    usable = isinstance(rows, list) and all(isinstance(r, dict) and str(r.get("split")) == str(split.index)
                                            for r in rows)
    return rows if usable else []


# --- where each job runs ----------------------------------------------------------------------------------------
def _gpus(plan: Plan) -> list[str]:
    if str(plan.trainer.get("accelerator", "auto")).lower() == "cpu":
        return []
    import torch

    if not torch.cuda.is_available():
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def job_environments(plan: Plan, jobs: int) -> list[dict[str, str]]:
    """The environment of each job slot. One job: this process's, unchanged. Several: a share of the GPUs each
    (``trainer.devices`` of them, 1 by default) or, without GPUs, a share of the CPU threads."""
    if jobs == 1:
        return [{}]
    gpus = _gpus(plan)
    if gpus:
        devices = plan.trainer.get("devices", "auto")
        each = int(devices) if str(devices).isdigit() and int(devices) > 0 else 1
        slots = max(1, len(gpus) // each)
        if jobs > slots:
            print(f"--jobs {jobs}: {len(gpus)} GPU(s) give {slots} job(s) of {each} GPU(s) at once", flush=True)
        groups = [gpus[k * each:(k + 1) * each] for k in range(min(jobs, slots))]
        print(f"running up to {len(groups)} splits at once, on GPU(s) " + "; ".join(map(",".join, groups)), flush=True)
        return [{"CUDA_VISIBLE_DEVICES": ",".join(group)} for group in groups]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = str(max(1, cores // jobs))
    print(f"running up to {jobs} splits at once, {threads} CPU thread(s) each", flush=True)
    return [{"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}] * jobs


def launch(command: list[str], log, environment: dict[str, str]) -> subprocess.Popen:
    """Start one process of a split, its output appended to the split's log."""
    log.write(f"\n$ {' '.join(command)}\n")
    log.flush()
    # Each process starts its own W&B service: one inherited from a caller that used W&B (a notebook, a test
    # session) would hold the fit's run id, and the split's test, which logs into that run, would be refused.
    inherited = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**inherited, **environment})


def _last_line(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 4096))
            lines = [line.strip() for line in handle.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    errors = [line for line in lines if "error" in line.lower()]  # the CLI's one-line error, if it gave one
    return (errors or lines or [""])[-1]


@dataclass
class Job:
    """One split on its way through its processes."""

    split: Split
    slot: int
    commands: Iterator[list[str]]
    log_path: Path
    log: IO[str]
    started: float = field(default_factory=time.time)
    process: subprocess.Popen | None = None


def run_splits(plan: Plan, pending: list[Split], finished: Callable[[Split, list[dict]], None]) -> list[str]:
    """Run the pending splits, up to ``plan.jobs`` at once; ``finished(split, rows)`` for each that completes.
    After a failure no new split starts (the running ones finish). Returns one line per failed split."""
    if not pending:
        return []
    if plan.test_sets:
        write_cross_trainer(plan)
    environments = job_environments(plan, min(plan.jobs, len(pending)))
    running: list[Job]
    free, queue, running, failures = list(range(len(environments))), list(pending), [], []
    total = len(plan.splits)

    def fail(job: Job, reason: str) -> None:
        failures.append(f"{job.split.label(total)}: failed ({reason}); log: {job.log_path}")
        print(failures[-1], flush=True)

    def advance(job: Job) -> bool:
        """Start the job's next process; False when it has none left or failed."""
        try:
            command = next(job.commands)
        except StopIteration:
            try:
                finished(job.split, split_rows(plan, job.split, time.time() - job.started))
            except InputError as error:
                fail(job, str(error))
            return False
        except InputError as error:
            fail(job, str(error))
            return False
        job.process = launch(command, job.log, environments[job.slot])
        return True

    def start(split: Split, slot: int) -> Job:
        folder = folder_of(plan, split)
        folder.mkdir(parents=True, exist_ok=True)
        resume = usable_last_checkpoint(folder / "checkpoints")
        log_path = folder / LOG_FILE
        print(f"{split.label(total)}: {'resuming the interrupted fit from last.ckpt' if resume else 'fitting'} in "
              f"{folder} (log: {log_path.name})", flush=True)
        return Job(split, slot, split_commands(plan, split, resume), log_path, open(log_path, "a"))

    def end(job: Job) -> None:
        job.log.close()
        running.remove(job)
        free.append(job.slot)

    previous = _stop_on_sigterm()
    try:
        while running or (queue and not failures):
            while queue and free and not failures:
                job = start(queue.pop(0), free.pop(0))
                running.append(job)
                if not advance(job):
                    end(job)
            time.sleep(POLL_SECONDS)
            for job in list(running):
                assert job.process is not None, "a job is running once advance has started its process"
                code = job.process.poll()
                if code is None:
                    continue
                if code != 0:
                    fail(job, f"exit status {code}: {_last_line(job.log_path)}")
                    end(job)
                elif not advance(job):
                    end(job)
        if queue:
            print(f"{len(queue)} split(s) not started after the failure: "
                  + ", ".join(s.label(total) for s in queue), flush=True)
    finally:
        for job in running:  # interrupted: stop the splits' processes too (a rerun resumes them)
            _stop(job.process)
            job.log.close()
        _restore_sigterm(previous)
    return failures


def _stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _raise_exit(signum, frame):
    raise SystemExit(128 + signum)


def _stop_on_sigterm():
    """SIGTERM ends the benchmark like Ctrl-C does: through ``finally``, which stops the splits' processes."""
    try:
        return signal.signal(signal.SIGTERM, _raise_exit)
    except ValueError:  # not the main thread: leave signals alone
        return None


def _restore_sigterm(previous) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)
