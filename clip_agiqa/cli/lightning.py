"""The ``clip-agiqa`` command: LightningCLI with fit / validate / test / predict, plus export and benchmark.

One run = one folder, ``--trainer.default_root_dir`` (the current folder when not given): ``fit`` writes
``config.yaml``, ``metrics.csv``, ``hparams.yaml`` and ``checkpoints/`` (``best.ckpt``, ``last.ckpt``,
``splits.csv``) directly into it; ``test`` adds its report and metrics there. ``fit`` refuses a folder that
already holds another run's checkpoints unless it resumes that run (``--ckpt_path last`` or one of its
checkpoints). Under a W&B sweep agent each run gets ``<default_root_dir>/<W&B run id>``.

Nothing lost (``runs.py``): the run folder is locked for the command, checkpoints are written whole (beside
their target, then renamed), ``last.ckpt`` after every epoch, ``metrics.csv`` keeps each step once after a
resume, and Ctrl-C / SIGTERM stop a fit at a step boundary with ``last.ckpt`` written. Mistyped options and
values are one line with the valid choices; a fit whose output is a file or pipe prints a line per epoch.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import sys
import warnings
from argparse import ArgumentError
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import CheckpointIO
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from ..callbacks.checkpoints import ForgetReplayedMetrics, LastCheckpoint, RunCheckpoint
from ..callbacks.predictions import ScoreWriter
from ..callbacks.progress import EpochLines
from ..callbacks.reports import TestReport
from ..callbacks.signals import StopOnSignal
from ..callbacks.wandb import ConfigToWandb, place_wandb_logs, reuse_wandb_run
from ..config import ARCHITECTURE, CLIPAGIQAConfig, same_value

# Imported so that --data takes their short names (jsonargparse looks among loaded subclasses).
from ..data import (  # noqa: F401
    AGIQA1K,
    AGIQA3K,
    AIGCIQA20K,
    AIGCIQA2023,
    EvalMi50K,
    HFDataset,
    ImageFolder,
    MOSDataModule,
    MOSFolder,
    SyntheticAIGI,
    TableData,
)
from ..data.mixed import MIXED_MONITOR, MixedData, selects_on_pooled_srcc  # noqa: F401
from ..errors import InputError
from ..module import CLIPAGIQA, leave_architecture_to_start, typed_model_fields
from ..run_files import BEST_NAME, CHECKPOINTS, CONFIG_FILE, HPC_PREFIX, LAST_FILE, METRICS_FILE
from ..runs import (
    AtomicCheckpointIO,
    RunLock,
    RunLogger,
    check_run_folder_is_free,
    remove_unfinished_writes,
    resolve_last_checkpoint,
)
from ..saved import FIELDS_ADDED_LATER, read_checkpoint
from .usage import usage_error

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
    "The dirpath has changed",  # a run folder that moved or is reached by another path: best.ckpt stays best
    r"The `?LightningModule.configure_callbacks",  # the task's own callbacks (ModelToData), on purpose
    "The number of training batches .* is smaller than the logging interval",  # one line per epoch says it
    "You're resuming from a checkpoint that ended before the epoch ended",  # Ctrl-C: our own line says how to resume
)
NOISY_LOG_PREFIXES = ("💡 Tip:", "Loading `train_dataloader` to estimate", "You are using a CUDA device",
                      "Too many dataloader workers",  # datasets: a stream of fewer shards than workers
                      "`weights_only` was not set",  # a resume: the checkpoint was checked before (saved.py)
                      # Lightning's notes on every run: the seed is in config.yaml, the device in the options.
                      "Seed set to", "GPU available:", "TPU available:", "LOCAL_RANK:")
LOCKED_COMMANDS = ("fit", "validate", "test")  # those that write into the run folder

DESCRIPTION = (
    "CLIP-AGIQA: train, evaluate and apply a quality model for AI-generated images. "
    "Besides fit/validate/test/predict: `clip-agiqa export CKPT OUT_DIR` (safetensors + JSON, loads without "
    "pickle), `clip-agiqa score MODEL INPUT...` (score images with a saved model), "
    "`clip-agiqa benchmark --config CONFIG --splits N` (repeated splits, mean/std/median) and "
    "`clip-agiqa compare OUT...` (benchmark folders side by side). "
    "--trainer.default_root_dir is the run folder (config.yaml, metrics.csv, checkpoints/); "
    "CLIP_AGIQA_DEBUG=1 shows tracebacks."
)


def _run_folder_of(config) -> Path:
    return Path(config.trainer.default_root_dir or os.getcwd())


def _checkpoint_folder_of(config) -> Path:
    return Path(config.checkpoint.dirpath or _run_folder_of(config) / CHECKPOINTS)


def _as_list(value) -> list:
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def _only_first_process() -> bool:
    """False in the processes DDP starts for ranks 1..N (they share the first process's run folder)."""
    return all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK"))


# --- checkpoints named by keyword ---------------------------------------------------------------------------
def hpc_checkpoint(run_folder: Path) -> Path | None:
    """The ``hpc_ckpt_<n>.ckpt`` of highest n in the run folder: what Lightning resumes from under SLURM (and on
    ``--ckpt_path hpc``), or None."""
    numbered = []
    for path in run_folder.glob(f"{HPC_PREFIX}*.ckpt") if run_folder.is_dir() else []:
        number = path.stem[len(HPC_PREFIX):]
        if number.isdigit():
            numbered.append((int(number), path))
    return max(numbered)[1] if numbered else None


def resolve_checkpoint_keyword(keyword: str, config) -> Path:
    """The file a ``--ckpt_path`` keyword names in this run folder (what Lightning would load unchecked), refused in
    one line when there is none; a model registry's checkpoint is never fetched."""
    run_folder, checkpoint_folder = _run_folder_of(config), _checkpoint_folder_of(config)
    if keyword.startswith("registry"):
        raise InputError(f"--ckpt_path {keyword}: checkpoints are not fetched from a model registry; download "
                         "the file and give its path (it is checked before use)")
    if keyword == "hpc":
        found = hpc_checkpoint(run_folder)
        if found is None:
            raise InputError(f"--ckpt_path hpc: {run_folder} holds no {HPC_PREFIX}<n>.ckpt; give a checkpoint file")
        return found
    name = LAST_FILE if keyword == "last" else f"{BEST_NAME}.ckpt"
    found = checkpoint_folder / name
    if not found.exists():
        raise InputError(f"--ckpt_path {keyword}: {checkpoint_folder} holds no {name}; give a checkpoint file "
                         f"(or the --trainer.default_root_dir of the run that wrote it)")
    return found


class AGIQACLI(LightningCLI):
    save_config_kwargs: dict[str, Any]

    def __init__(self, *args, **kwargs) -> None:
        self.run_lock: RunLock | None = None
        self.subcommand_parsers: list = []  # filled by add_arguments_to_parser, in the order of subcommands()
        self.chosen_architecture: dict = {}  # the --model.* architecture options given, before a checkpoint's
        self.checkpoint_config: CLIPAGIQAConfig | None = None  # the model config of the checkpoint given, once checked
        try:
            super().__init__(*args, **kwargs)
        finally:
            if self.run_lock is not None:
                self.run_lock.release()

    def add_arguments_to_parser(self, parser) -> None:
        self.subcommand_parsers.append(parser)  # the option names of a mistyped option's "did you mean"
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": "val/srcc",
            "checkpoint.mode": "max",
            "checkpoint.select": "latest_within_se",
            "checkpoint.filename": BEST_NAME,
            "checkpoint.auto_insert_metric_name": False,
            "checkpoint.enable_version_counter": False,
            "trainer.log_every_n_steps": 1,  # a train/loss curve even when an epoch has few steps
            "trainer.enable_model_summary": False,  # 19 lines about the frozen encoders on every run
        })
        parser.add_lightning_class_args(ScoreWriter, "predictions")
        parser.add_lightning_class_args(TestReport, "report")
        parser.set_defaults({"model": {"class_path": "clip_agiqa.module.CLIPAGIQA"}})
        # The data owns its targets and their MOS scales (fixed by a benchmark or measured on the training split).
        parser.link_arguments("data.target_scales", "model.init_args.data_targets", apply_on="instantiate")
        parser.link_arguments("data.has_rater_std", "model.init_args.data_has_rater_std", apply_on="instantiate")

    # --- the command line ---------------------------------------------------------------------------------
    def parse_arguments(self, parser, args) -> None:
        """A parse error as one line (``UsageError``); ``fit --ckpt_path last`` resolved to the run's last.ckpt,
        which must be there and whole (Lightning would silently start from scratch)."""
        self.typed_model_fields = typed_model_fields(sys.argv[1:] if args is None else list(args))
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as error:
            raise usage_error(str(error), self._option_names(args)) from None
        subcommand = self.config.get("subcommand")
        if subcommand is None:
            return
        self._check_options(self.config[subcommand], subcommand)
        if subcommand == "fit" and self.config.fit.ckpt_path == "last":
            config = self.config.fit
            config.ckpt_path = str(resolve_last_checkpoint(_checkpoint_folder_of(config), _run_folder_of(config)))
        self.check_checkpoint()  # before LightningCLI reads the checkpoint's model options

    def _option_names(self, args) -> list[str]:
        """The options of the sub-command given, as its live help lists them."""
        argv = sys.argv[1:] if args is None else list(args)
        parsers = dict(zip(self.subcommands(), self.subcommand_parsers))
        subcommand = next((a for a in argv if a in parsers), None)
        parser = parsers[subcommand] if subcommand else self.parser
        return sorted({name for name in re.findall(r"(?<![\w-])--[A-Za-z][\w.-]*\+?", parser.format_help())
                       if not name.endswith(".help")})

    # --- the model a checkpoint brings ---------------------------------------------------------------
    def _model_options(self) -> dict:
        model = self.config[self.config.subcommand].get("model")
        init_args = getattr(model, "init_args", None)
        return dict(vars(init_args)) if init_args is not None else {}

    def check_checkpoint(self) -> None:
        """LightningCLI then reads the model options from a ``--ckpt_path`` checkpoint, importing any class it names,
        and the trainer loads it: every way a checkpoint gets there (a path, ``last``, ``best``, ``hpc``, Lightning's
        SLURM auto-resume) is checked first (``saved.read_checkpoint``: a regular file, unpickled with
        ``weights_only=True``, naming only this package's task and its parameters, a valid model config, finite
        float tensors). The architecture options given here are kept, to be held against the checkpoint's."""
        config = self.config[self.config.subcommand]
        ckpt_path = config.get("ckpt_path")
        if ckpt_path in CKPT_KEYWORDS or str(ckpt_path or "").startswith("registry"):
            ckpt_path = config.ckpt_path = str(resolve_checkpoint_keyword(str(ckpt_path), config))
        task_parameters = inspect.signature(CLIPAGIQA).parameters
        if ckpt_path:
            if not Path(ckpt_path).exists():
                raise InputError(f"--ckpt_path {ckpt_path} not found")
            self.checkpoint_config = read_checkpoint(Path(ckpt_path), task_parameters=task_parameters).config
        elif self.config.subcommand == "fit" and SLURMEnvironment.detect():
            auto_resume = hpc_checkpoint(_run_folder_of(config))  # what Lightning resumes from by itself
            if auto_resume is not None:
                read_checkpoint(auto_resume, task_parameters=task_parameters)
        self.chosen_architecture = {k: v for k, v in self._model_options().items()
                                    if k in ARCHITECTURE_OPTIONS and k in task_parameters
                                    and not same_value(v, task_parameters[k].default)}

    def take_the_checkpoints_model(self) -> None:
        """After LightningCLI merged the checkpoint's model options: a field an older checkpoint lacks takes the
        value it was trained with (not today's default), and a given option that contradicts the checkpoint's
        architecture is refused (LightningCLI would silently replace it)."""
        saved = self.checkpoint_config
        if saved is None:
            return
        for name in FIELDS_ADDED_LATER:
            self.config[self.subcommand].model.init_args[name] = getattr(saved, name)
        from_checkpoint = self._model_options()
        chosen = self.chosen_architecture
        differing = [k for k, v in chosen.items() if not same_value(from_checkpoint.get(k), v)]
        if differing:
            raise InputError(
                f"{self.config[self.subcommand].ckpt_path} holds another model than the one asked for: "
                + "; ".join(f"--model.{k} is {chosen[k]!r} but the checkpoint's is {from_checkpoint[k]!r}"
                            for k in differing)
                + ". A checkpoint carries its own model options: leave these out, or start a new run "
                  "(another --trainer.default_root_dir) without --ckpt_path.")

    # --- the run folder ------------------------------------------------------------------------------
    def before_instantiate_classes(self) -> None:
        self.take_the_checkpoints_model()
        config = self.config[self.subcommand]
        model_args = getattr(config.get("model"), "init_args", None)
        if model_args is not None:
            leave_architecture_to_start(model_args, getattr(self, "typed_model_fields", set()))
        sweep_run = os.environ.get("WANDB_RUN_ID") if os.environ.get("WANDB_SWEEP_ID") else None
        if sweep_run and self.subcommand == "fit" and config.ckpt_path is None:
            # A sweep agent starts every run with the same arguments: each gets its own folder.
            config.trainer.default_root_dir = str(Path(config.trainer.default_root_dir or ".") / sweep_run)
        self.run_folder = Path(config.trainer.default_root_dir or os.getcwd())
        self.checkpoint_folder = Path(config.checkpoint.dirpath or self.run_folder / CHECKPOINTS)
        if selects_on_pooled_srcc(config.data, config.checkpoint.monitor):
            config.checkpoint.monitor = MIXED_MONITOR  # several datasets: the mean of their val SRCCs
        if self.subcommand in LOCKED_COMMANDS and _only_first_process() and (
                self.subcommand == "fit" or (self.run_folder / CONFIG_FILE).is_file()):
            self.run_lock = RunLock(self.run_folder).acquire()
        if self.subcommand == "fit":
            check_run_folder_is_free(self.checkpoint_folder, config.ckpt_path, self.run_folder)
            if self.run_lock is not None:
                remove_unfinished_writes(self.checkpoint_folder)
        # config.yaml describes the fit; test/predict must not replace it with their own arguments.
        self.save_config_kwargs = {**self.save_config_kwargs, "save_to_log_dir": self.subcommand == "fit"}
        place_wandb_logs(config.trainer)
        if self.subcommand != "fit" or config.ckpt_path is not None:
            reuse_wandb_run(config.trainer, self.run_folder)  # test/resume log into the fit's W&B run

    @staticmethod
    def _check_options(config, subcommand: str) -> None:
        """Values the parser takes but that cannot work, refused in one line before anything is built."""
        accelerator = config.trainer.accelerator
        if isinstance(accelerator, str) and accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
            raise InputError(f"--trainer.accelerator {accelerator}: no CUDA GPU is usable here (torch "
                             f"{torch.__version__}); use --trainer.accelerator cpu (or auto)")
        data_args = getattr(config.get("data"), "init_args", None)
        workers = data_args.get("num_workers") if data_args is not None else None
        if isinstance(workers, int) and workers < 0:
            raise InputError(f"--data.num_workers {workers}: give 0 (load in the main process) or more")
        for option in ("batch_size", "eval_batch_size"):
            size = data_args.get(option) if data_args is not None else None
            if isinstance(size, int) and size < 1:
                raise InputError(f"--data.{option} {size}: give 1 or more images per batch")
        if subcommand == "predict" and config.ckpt_path is None:
            model_args = getattr(config.get("model"), "init_args", None)
            if model_args is None or not model_args.get("init_from"):
                raise InputError("predict needs trained weights: add --ckpt_path <run folder>/checkpoints/best.ckpt "
                                 "(or --model.init_from <checkpoint or exported model folder>); without them every "
                                 "score would come from an untrained model")

    def after_instantiate_classes(self) -> None:
        # config.yaml records how the run is set up, not where this command resumed it from: reused for
        # a new run (another default_root_dir), it then starts afresh; `--ckpt_path last` resumes.
        self.config[self.subcommand].ckpt_path = None

    def instantiate_trainer(self, **kwargs):
        # Set on the objects, not in the config: config.yaml then names no folder, so it can start a new run.
        config = self.config_init[self.subcommand]
        checkpoint = config.checkpoint  # best.ckpt (--checkpoint.*): trainer.checkpoint_callback
        if checkpoint.dirpath is None:
            checkpoint.dirpath = os.path.realpath(self.checkpoint_folder)
        if config.trainer.logger in (None, True) and "logger" not in kwargs:
            keep_metrics = self.subcommand != "fit" or config.ckpt_path is not None
            kwargs["logger"] = False if self.subcommand == "predict" else RunLogger(str(self.run_folder), keep_metrics)
        plugins = _as_list(config.trainer.plugins)
        if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        if self.subcommand == "fit":
            added = [StopOnSignal(), ForgetReplayedMetrics()]
            if not sys.stdout.isatty():  # a job log or a pipe: a progress bar shows nothing there
                added.append(EpochLines())
            kwargs["callbacks"] = [*_as_list(config.trainer.callbacks), *added]
        if config.trainer.enable_progress_bar is None and not sys.stderr.isatty():
            kwargs["enable_progress_bar"] = False
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except MisconfigurationException as error:
            raise InputError(f"the --trainer options: {error}") from None
        # After best.ckpt's callback, which stays trainer.checkpoint_callback; on every subcommand, as a checkpoint
        # holds the state of both (Lightning warns about a missing one).
        trainer.callbacks.append(LastCheckpoint(checkpoint.dirpath))
        return trainer

    # --- what each subcommand tells at the end ---------------------------------------------------------
    @rank_zero_only
    def after_fit(self) -> None:
        checkpoint = self.trainer.checkpoint_callback
        best = getattr(checkpoint, "best_model_path", "")
        if best and checkpoint.best_model_score is not None:
            epoch = torch.load(best, map_location="cpu", weights_only=True).get("epoch")
            score, seen = float(checkpoint.best_model_score), getattr(checkpoint, "best_seen", None)
            if seen is not None and seen > score:  # chosen within one standard error of the best
                print(f"best {checkpoint.monitor} {seen:.4f}; best.ckpt is the latest epoch within one standard "
                      f"error ({checkpoint.tolerance:.2f}) of it, {score:.4f} at epoch {epoch}: {best}")
            else:
                print(f"best {checkpoint.monitor} {score:.4f} at epoch {epoch}: {best}")
        else:
            last = next((c.path for c in self.trainer.checkpoint_callbacks
                         if isinstance(c, LastCheckpoint) and c.path and c.path.is_file()), None)
            print(f"no {getattr(checkpoint, 'monitor', 'val/srcc')} was logged (no validation set?); "
                  f"last checkpoint: {last or 'none'}")
        written = [name for name in (CONFIG_FILE, METRICS_FILE) if (self.run_folder / name).is_file()]
        print(f"run folder: {self.run_folder} ({', '.join([*written, f'{CHECKPOINTS}/'])})")

    @rank_zero_only
    def after_test(self) -> None:
        report = self.config_init[self.subcommand].report
        if report.enabled and report.files:
            print(f"wrote {', '.join(str(path) for path in report.files)}")
        self._tell_metrics_file()

    @rank_zero_only
    def after_validate(self) -> None:
        self._tell_metrics_file()

    def _tell_metrics_file(self) -> None:
        logger = self.trainer.logger
        if isinstance(logger, RunLogger):
            print(f"metrics appended to {Path(logger.log_dir) / METRICS_FILE}")


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not re.sub(r"^\[rank: \d+\] ", "", str(record.msg)).startswith(NOISY_LOG_PREFIXES)


def quiet_third_party_noise() -> None:
    """Leave out messages about other packages' features and internals that a user cannot act on."""
    for message in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    for name in ("lightning.pytorch.utilities.rank_zero", "datasets.iterable_dataset",
                 "lightning.pytorch.trainer.connectors.checkpoint_connector", "lightning.fabric.utilities.seed",
                 "lightning.pytorch.accelerators.cuda"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in logger.filters):
            logger.addFilter(_DropTips())


def main(args: list[str] | None = None):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_third_party_noise()
    return AGIQACLI(
        CLIPAGIQA,
        LightningDataModule,  # a MOSDataModule (AGIQA3K, MOSFolder ...), or MixedData: several of them
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=ConfigToWandb,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        # Parse errors come back as exceptions (one line, see usage_error), not as 80 lines of usage.
        parser_kwargs={"description": DESCRIPTION, "exit_on_error": False,
                       **{name: {"exit_on_error": False} for name in LightningCLI.subcommands()}},
        args=args,
    )
