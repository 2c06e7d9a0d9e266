"""Fixtures and hooks: everything offline, a random tiny CLIP, a small generated dataset, how xdist shares tests.

Plain helpers (paths, the tiny model's arguments, running the CLI) are in helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _share_the_cores_between_workers() -> None:
    """Under pytest-xdist (make test: -n auto), each worker's torch and the processes it starts get their share
    of the cores: a worker per core with as many threads each oversubscribes them. Set before torch loads."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, str(max(1, cores // workers)))


_share_the_cores_between_workers()

import pytest  # noqa: E402
from helpers import TINY_MODEL, unit_of_work  # noqa: E402

from clip_agiqa.data import write_synthetic_dataset  # noqa: E402

# Fixtures of the experiments tests (W&B clean-up, a benchmark folder ...), available to every test module.
pytest_plugins = ["experiment_helpers"]

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

    return CLIPAGIQA(**TINY_MODEL)
