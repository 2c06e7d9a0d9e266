"""Shared fixtures: everything offline, a random tiny CLIP, small generated datasets, the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _share_the_cores_between_workers() -> None:
    """Under pytest-xdist (make test: -n auto), each worker's torch and the processes it starts get their share
    of the cores: a worker per core with as many threads each oversubscribes them (measured on the 2-core
    machine: test_targets + test_finetune take 22.5 CPU s with 2 threads, 14.2 s with 1). Set before torch loads."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, str(max(1, cores // workers)))


_share_the_cores_between_workers()

import pytest  # noqa: E402

from clip_agiqa.data import write_synthetic_dataset  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_ANNOTATIONS = REPO.parent / "shared" / "annotations"

# A subprocess that runs longer than this hangs: generous, so that a slow or busy machine never trips it.
HANG_GUARD = 1800

# Shrinks any run to a fast CPU smoke run; tests add their own model/data arguments.
TINY_MODEL_ARGS = ["--model.backbone", "random:tiny", "--model.n_ctx", "4", "--model.hidden_dim", "16"]


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


def run_checked(command: list[str], cwd: Path | None = None, timeout: float = None) -> subprocess.CompletedProcess:
    """A process that must succeed; its output tails in the failure message. The timeout is a hang guard only."""
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout or HANG_GUARD,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def run_cli_subprocess(args: list[str], cwd: Path | None = None, timeout: float = None) -> subprocess.CompletedProcess:
    """The console script exactly as a user types it."""
    return run_checked([str(Path(sys.executable).with_name("clip-agiqa")), *args], cwd=cwd, timeout=timeout)


# Modules whose tests share a costly module-scoped fixture (test_ddp: one 2-process launch; test_benchmark: one
# benchmark of real processes): under pytest-xdist all their tests go to one worker, so it is built once.
ONE_WORKER_MODULES = {"test_ddp.py", "test_benchmark.py"}


def unit_of_work(nodeid: str) -> str:
    """What pytest-xdist hands a worker as one: a test on its own, or the whole module for ONE_WORKER_MODULES."""
    module = nodeid.split("::", 1)[0]
    return module if os.path.basename(module) in ONE_WORKER_MODULES else nodeid


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class Scheduling(LoadScopeScheduling):
        # xdist's private hook (its one use in the tests): the stock way, --dist loadgroup with xdist_group marks,
        # is ignored on pytest 9.2 (it renames node ids through a private attribute pytest no longer reads:
        # pytest-dev/pytest-xdist#1386). tests/test_xdist_scheduler.py fails if xdist changes this hook.
        def _split_scope(self, nodeid: str) -> str:
            return unit_of_work(nodeid)

    return Scheduling(config, log)


@pytest.hookimpl(tryfirst=True)  # after pytest-randomly's shuffle (a wrapper)
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist the tests marked slow are handed out first, so that no worker is left with a long one
    at the end while the other waits; the order stays random within each part."""
    if "PYTEST_XDIST_WORKER" in os.environ:
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small generated MOSFolder (file_name,mos,prompt), shared read-only by the tests."""
    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic_dataset(root, num_images=41, picture_size=40, seed=0)
    return root


@pytest.fixture
def tiny_model():
    from clip_agiqa import CLIPAGIQA

    return CLIPAGIQA("random:tiny", n_ctx=4, hidden_dim=16)


def run_cli_expecting_failure(args: list[str], cwd: Path | None = None, env: dict | None = None,
                              timeout: float = HANG_GUARD) -> subprocess.CompletedProcess:
    """The console script as a user types it, for input that must be refused: returns the failed process."""
    exe = Path(sys.executable).with_name("clip-agiqa")
    result = subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})
    assert result.returncode != 0, f"clip-agiqa {' '.join(args)} succeeded:\n{result.stdout[-3000:]}"
    return result
