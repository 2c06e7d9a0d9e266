"""The ``clip-agiqa`` command: LightningCLI with fit / validate / test / predict, plus export and benchmark.

One run = one folder, ``--trainer.default_root_dir`` (the current folder when not given): ``fit`` writes
``config.yaml``, ``metrics.csv``, ``hparams.yaml`` and ``checkpoints/`` (``best.ckpt``, ``last.ckpt``,
``splits.csv``) directly into it; ``test`` adds its report and metrics there. ``fit`` refuses a folder that
already holds another run's checkpoints unless it resumes that run (``--ckpt_path last`` or one of its
checkpoints). Under a W&B sweep agent each run gets ``<default_root_dir>/<W&B run id>``.
"""

from __future__ import annotations

import csv
import inspect
import logging
import os
import warnings
from pathlib import Path

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from .callbacks import ScoreWriter
from .config import ARCHITECTURE, same_value
# Imported so that --data takes their short names (jsonargparse looks among loaded subclasses).
from .data import (AGIQA1K, AGIQA3K, AIGCIQA20K, AIGCIQA2023, HFDataset, ImageFolder,  # noqa: F401
                   MOSDataModule, MOSFolder, SyntheticAIGI)
from .errors import InputError
from .module import CLIPAGIQA
from .reporting import ConfigToWandb, TestReport, place_wandb_logs
from .saved import read_checkpoint

CHECKPOINTS = "checkpoints"
# Model options that fix the network (CLIPAGIQAConfig's architecture fields): a checkpoint's values must not
# silently replace chosen ones.
ARCHITECTURE_OPTIONS = ARCHITECTURE
CKPT_KEYWORDS = ("last", "best", "hpc")  # what Lightning resolves to a checkpoint path itself
# Third-party messages a user cannot act on (regular expressions of their start).
NOISY_WARNINGS = (
    "No seed found",
    "Metric `SpearmanCorrcoef` will save all targets",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    "The '.*' does not have many workers",
    "The `srun` command is available",
    ".*args parameter is intended to run from within Python",
    r"Found \d+ module\(s\) in eval mode",  # the frozen encoders, on purpose
    "Checkpoint directory .* exists and is not empty",  # only when resuming: other fits are refused
)
NOISY_LOG_PREFIXES = ("💡 Tip:", "Loading `train_dataloader` to estimate")

DESCRIPTION = (
    "CLIP-AGIQA: train, evaluate and apply a quality model for AI-generated images. "
    "Besides fit/validate/test/predict: `clip-agiqa export CKPT OUT_DIR` (safetensors + JSON, loads without "
    "pickle), `clip-agiqa score MODEL INPUT...` (score images with a saved model) and "
    "`clip-agiqa benchmark --config CONFIG --splits N` (repeated splits, mean/std/median). "
    "--trainer.default_root_dir is the run folder (config.yaml, metrics.csv, checkpoints/); "
    "CLIP_AGIQA_DEBUG=1 shows tracebacks."
)


class _RunMetricsWriter(ExperimentWriter):
    """metrics.csv that a resumed run, or a later test of the run, extends instead of deleting."""

    def __init__(self, log_dir: str, keep_metrics: bool) -> None:
        self.keep_metrics = keep_metrics
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        if not self._fs.isfile(self.metrics_file_path):
            return
        if not self.keep_metrics:
            self._fs.rm_file(self.metrics_file_path)
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
            self.metrics_keys = next(csv.reader(handle), [])  # new rows keep the earlier columns


class RunLogger(CSVLogger):
    """The default logger: metrics.csv and hparams.yaml directly in the run folder (no version_N)."""

    def __init__(self, run_folder: str, keep_metrics: bool) -> None:
        super().__init__(save_dir=run_folder, name="", version="")
        self.keep_metrics = keep_metrics

    @property
    def version(self) -> None:  # one run per folder: nothing to number (and no v_num in the progress bar)
        return None

    @property
    def log_dir(self) -> str:
        return self.save_dir

    @property
    @rank_zero_experiment
    def experiment(self) -> _RunMetricsWriter:
        if self._experiment is None:
            self._fs.makedirs(self.log_dir, exist_ok=True)
            self._experiment = _RunMetricsWriter(self.log_dir, self.keep_metrics)
        return self._experiment


def checkpoints_of(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.ckpt")) if folder.is_dir() else []


def check_run_folder_is_free(checkpoint_folder: Path, ckpt_path, run_folder: Path) -> None:
    """A fit writes into a folder holding checkpoints only when it resumes from one of them."""
    found = checkpoints_of(checkpoint_folder)
    if not found or ckpt_path == "last":
        return
    if ckpt_path is not None and Path(ckpt_path).resolve().parent == checkpoint_folder.resolve():
        return
    raise ValueError(
        f"{checkpoint_folder} already holds the checkpoints of another run ({', '.join(found)}); "
        "a new fit would overwrite them. To resume that run: clip-agiqa fit --config "
        f"{run_folder / 'config.yaml'} --ckpt_path last. To start a new run, choose another folder: "
        "--trainer.default_root_dir runs/<new name>.")


class AGIQACLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": "val/srcc",
            "checkpoint.mode": "max",
            "checkpoint.filename": "best",
            "checkpoint.save_last": True,
            "checkpoint.auto_insert_metric_name": False,
            "checkpoint.enable_version_counter": False,
            "trainer.log_every_n_steps": 1,  # a train/loss curve even when an epoch has few steps
        })
        parser.add_lightning_class_args(ScoreWriter, "predictions")
        parser.add_lightning_class_args(TestReport, "report")
        parser.set_defaults({"model": {"class_path": "clip_agiqa.module.CLIPAGIQA"}})
        # The data owns its targets and their MOS scales (fixed by a benchmark or measured on the training split).
        parser.link_arguments("data.target_scales", "model.init_args.data_targets", apply_on="instantiate")

    # --- the model a checkpoint brings ---------------------------------------------------------------
    def _model_options(self) -> dict:
        model = self.config[self.config.subcommand].get("model")
        init_args = getattr(model, "init_args", None)
        return dict(vars(init_args)) if init_args is not None else {}

    def _parse_ckpt_path(self) -> None:
        """LightningCLI reads the model options from a ``--ckpt_path`` checkpoint, importing any class it names:
        the file is checked first (``saved.read_checkpoint``: a readable checkpoint naming only this package's task
        and its parameters, a valid model config, finite float tensors), then options given here that contradict
        the checkpoint's architecture are refused (LightningCLI would silently replace them)."""
        if not self.config.get("subcommand"):
            return super()._parse_ckpt_path()
        ckpt_path = self.config[self.config.subcommand].get("ckpt_path")
        if ckpt_path and (Path(ckpt_path).is_file() or (ckpt_path not in CKPT_KEYWORDS
                                                        and not str(ckpt_path).startswith("registry"))):
            if not Path(ckpt_path).exists():
                raise InputError(f"--ckpt_path {ckpt_path} not found")
            read_checkpoint(Path(ckpt_path), task_parameters=inspect.signature(CLIPAGIQA).parameters)
        defaults = inspect.signature(CLIPAGIQA).parameters
        chosen = {k: v for k, v in self._model_options().items()
                  if k in ARCHITECTURE_OPTIONS and k in defaults and not same_value(v, defaults[k].default)}
        super()._parse_ckpt_path()
        from_checkpoint = self._model_options()
        differing = [k for k, v in chosen.items() if not same_value(from_checkpoint.get(k), v)]
        if differing:
            raise InputError(
                f"{ckpt_path} holds another model than the one asked for: "
                + "; ".join(f"--model.{k} is {chosen[k]!r} but the checkpoint's is {from_checkpoint[k]!r}"
                            for k in differing)
                + ". A checkpoint carries its own model options: leave these out, or start a new run "
                  "(another --trainer.default_root_dir) without --ckpt_path.")

    # --- the run folder ------------------------------------------------------------------------------
    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        sweep_run = os.environ.get("WANDB_RUN_ID") if os.environ.get("WANDB_SWEEP_ID") else None
        if sweep_run and self.subcommand == "fit" and config.ckpt_path is None:
            # A sweep agent starts every run with the same arguments: each gets its own folder.
            config.trainer.default_root_dir = str(Path(config.trainer.default_root_dir or ".") / sweep_run)
        self.run_folder = Path(config.trainer.default_root_dir or os.getcwd())
        self.checkpoint_folder = Path(config.checkpoint.dirpath or self.run_folder / CHECKPOINTS)
        if self.subcommand == "fit":
            check_run_folder_is_free(self.checkpoint_folder, config.ckpt_path, self.run_folder)
        # config.yaml describes the fit; test/predict must not replace it with their own arguments.
        self.save_config_kwargs = {**self.save_config_kwargs, "save_to_log_dir": self.subcommand == "fit"}
        place_wandb_logs(config.trainer)

    def after_instantiate_classes(self) -> None:
        # config.yaml records how the run is set up, not where this command resumed it from: reused for
        # a new run (another default_root_dir), it then starts afresh; `--ckpt_path last` resumes.
        self.config[self.subcommand].ckpt_path = None

    def instantiate_trainer(self, **kwargs):
        # Set on the objects, not in the config: config.yaml then names no folder, so it can start a new run.
        checkpoint = self._get(self.config_init, "checkpoint")
        if checkpoint.dirpath is None:
            checkpoint.dirpath = os.path.realpath(self.checkpoint_folder)
        config = self.config_init[self.subcommand]
        if config.trainer.logger in (None, True) and "logger" not in kwargs:
            keep_metrics = self.subcommand != "fit" or config.ckpt_path is not None
            kwargs["logger"] = False if self.subcommand == "predict" else RunLogger(str(self.run_folder), keep_metrics)
        return super().instantiate_trainer(**kwargs)

    # --- what each subcommand tells at the end ---------------------------------------------------------
    @rank_zero_only
    def after_fit(self) -> None:
        checkpoint = self.trainer.checkpoint_callback
        best = getattr(checkpoint, "best_model_path", "")
        if best and checkpoint.best_model_score is not None:
            epoch = torch.load(best, map_location="cpu", weights_only=True).get("epoch")
            print(f"best {checkpoint.monitor} {float(checkpoint.best_model_score):.4f} at epoch {epoch}: {best}")
        else:
            print(f"no {getattr(checkpoint, 'monitor', 'val/srcc')} was logged (no validation set?); "
                  f"last checkpoint: {getattr(checkpoint, 'last_model_path', '') or 'none'}")
        print(f"run folder: {self.run_folder} (config.yaml, metrics.csv, {CHECKPOINTS}/)")

    @rank_zero_only
    def after_test(self) -> None:
        report = self._get(self.config_init, "report")
        if report.enabled and report.files:
            print(f"wrote {', '.join(str(path) for path in report.files)}")
        self._tell_metrics_file()

    @rank_zero_only
    def after_validate(self) -> None:
        self._tell_metrics_file()

    def _tell_metrics_file(self) -> None:
        logger = self.trainer.logger
        if isinstance(logger, RunLogger):
            print(f"metrics appended to {Path(logger.log_dir) / ExperimentWriter.NAME_METRICS_FILE}")


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(NOISY_LOG_PREFIXES)


def quiet_third_party_noise() -> None:
    """Leave out messages about other packages' features and internals that a user cannot act on."""
    for message in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropTips) for f in logger.filters):
        logger.addFilter(_DropTips())


def main(args: list[str] | None = None):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_third_party_noise()
    return AGIQACLI(
        CLIPAGIQA,
        MOSDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=ConfigToWandb,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        parser_kwargs={"description": DESCRIPTION},
        args=args,
    )
