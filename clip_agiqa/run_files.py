"""Every file of a run folder, named once.

A run folder (``--trainer.default_root_dir``) holds what ``fit`` writes (the settings, the metrics, the
checkpoints with the split and the data's scale) and what ``test`` adds beside them (its report). Every module
that writes or reads one of these files takes its name from here.
"""

from __future__ import annotations

from pathlib import Path

CONFIG_FILE = "config.yaml"  # the fit's settings (naming no folder, so it can start another run)
METRICS_FILE = "metrics.csv"  # every logged value, a row per step or epoch
HPARAMS_FILE = "hparams.yaml"
CHECKPOINTS = "checkpoints"  # the folder of the checkpoints, the split and the data's scale
BEST_NAME = "best"  # best.ckpt: chosen on the monitored validation metric
LAST_FILE = "last.ckpt"  # the end of the last finished epoch (or of a stopped step): what a resume starts from
HPC_PREFIX = "hpc_ckpt_"  # Lightning's SLURM checkpoints in the run folder: hpc_ckpt_<n>.ckpt
SPLITS_FILE = "splits.csv"  # in checkpoints/: file_name,split, the exact split of the run
DATA_FILE = "data.json"  # in checkpoints/: the data's targets, MOS scales and quantiles, measured on train
PREDICTIONS_FILE = "test_predictions.csv"
GROUPS_FILE = "test_groups.csv"  # SRCC/PLCC per generator, task ... where the data names them
TEST_METRICS_FILE = "test_metrics.json"  # the test's figures with the SHA-256 of the tested checkpoint
SCATTER_FILE = "test_scatter.png"  # one target; several: test_scatter_<target>.png
RELIABILITY_FILE = "test_reliability.png"  # one target; several: test_reliability_<target>.png
TESTS_FOLDER = "tests"  # the test reports of other checkpoints than the run's best.ckpt: tests/<stem>-<sha>/
LOCK_FILE = ".clip-agiqa.lock"  # held by the one command that writes the folder
WANDB_RUN_FILE = "wandb_run_id"  # the W&B run of the fit, which test and a resume log into


def per_target(name: str, target: str, targets: list[str]) -> str:
    """``name`` for a model of one target, ``<stem>_<target><suffix>`` for each of several."""
    if len(targets) == 1:
        return name
    path = Path(name)
    return f"{path.stem}_{target}{path.suffix}"


def scatter_file(target: str, targets: list[str]) -> str:
    return per_target(SCATTER_FILE, target, targets)


def reliability_file(target: str, targets: list[str]) -> str:
    return per_target(RELIABILITY_FILE, target, targets)



def test_report_folder(run_folder: Path, checkpoint: Path | None, sha256: str | None, best: Path | None) -> Path:
    """Where ``test`` writes the report of ``checkpoint``: the run folder for the run's own ``best`` checkpoint,
    ``tests/<checkpoint name>-<first 12 of its SHA-256>/`` for any other (the run's last.ckpt, another run's),
    ``tests/without-checkpoint/`` for a model tested without one. A test never replaces another checkpoint's."""
    if checkpoint is None or sha256 is None:
        return run_folder / TESTS_FOLDER / "without-checkpoint"
    if best is not None and checkpoint.resolve() == best.resolve():
        return run_folder
    return run_folder / TESTS_FOLDER / f"{checkpoint.stem}-{sha256[:12]}"
