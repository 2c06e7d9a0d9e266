"""Helpers the tests share: the repository's paths, the tiny model, and the CLI run in-process or as a user types it.

Plain functions and constants only; fixtures and hooks live in conftest.py (which also keeps every test offline).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_ANNOTATIONS = REPO.parent / "shared" / "annotations"

# A subprocess that runs longer than this hangs: generous, so that a slow or busy machine never trips it.
HANG_GUARD = 1800

# The tiny random CLIP every fast test builds: CLIPAGIQA(**TINY_MODEL, ...) or CLIPAGIQAModel(**TINY_MODEL, ...).
TINY_MODEL = {"backbone": "random:tiny", "n_ctx": 4, "hidden_dim": 16}

# The same model on the command line: shrinks any run to a fast CPU smoke run; tests add their own data arguments.
TINY_MODEL_ARGS = [arg for name, value in TINY_MODEL.items() for arg in (f"--model.{name}", str(value))]


def trainer_args(root: Path, epochs: int = 1) -> list[str]:
    return [
        "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.max_epochs", str(epochs),
        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", str(root),
        "--seed_everything", "0",
    ]


def run_cli(args: list[str]):
    """The CLI in-process (fast); returns the LightningCLI object."""
    from clip_agiqa.cli import main

    return main(args)


def run_checked(command: list[str], cwd: Path | None = None, timeout: float | None = None
                ) -> subprocess.CompletedProcess:
    """A process that must succeed; its output tails in the failure message. The timeout is a hang guard only."""
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout or HANG_GUARD,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def run_cli_subprocess(args: list[str], cwd: Path | None = None, timeout: float | None = None
                       ) -> subprocess.CompletedProcess:
    """The console script exactly as a user types it."""
    return run_checked([str(Path(sys.executable).with_name("clip-agiqa")), *args], cwd=cwd, timeout=timeout)


def run_cli_expecting_failure(args: list[str], cwd: Path | None = None, env: dict | None = None,
                              timeout: float = HANG_GUARD) -> subprocess.CompletedProcess:
    """The console script as a user types it, for input that must be refused: returns the failed process."""
    exe = Path(sys.executable).with_name("clip-agiqa")
    result = subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})
    assert result.returncode != 0, f"clip-agiqa {' '.join(args)} succeeded:\n{result.stdout[-3000:]}"
    return result


# Modules whose tests share a costly module-scoped fixture (test_ddp: one 2-process launch; test_benchmark: one
# benchmark of real processes): under pytest-xdist all their tests go to one worker, so it is built once.
ONE_WORKER_MODULES = {"test_ddp.py", "test_benchmark.py"}


def unit_of_work(nodeid: str) -> str:
    """What pytest-xdist hands a worker as one: a test on its own, or the whole module for ONE_WORKER_MODULES."""
    module = nodeid.split("::", 1)[0]
    return module if os.path.basename(module) in ONE_WORKER_MODULES else nodeid
