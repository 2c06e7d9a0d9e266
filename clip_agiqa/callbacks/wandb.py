"""Weights & Biases: the resolved config in the run, one W&B run per run folder, its files in the run folder.

``ConfigToWandb`` writes config.yaml whole and logs it to an active W&B run; a fit records its W&B run id in the
run folder so that a later ``test`` or a resume logs into that run (``reuse_wandb_run``).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from lightning.pytorch.cli import SaveConfigCallback

from ..files import atomic_write
from ..run_files import WANDB_RUN_FILE


def wandb_loggers(trainer) -> list:
    from lightning.pytorch.loggers import WandbLogger

    return [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]


class ConfigToWandb(SaveConfigCallback):
    """Writes config.yaml whole (beside it, then renamed) and, when a WandbLogger is active, logs the resolved
    config to the run and records a fit's run id in the run folder."""

    already_saved: bool  # set by SaveConfigCallback.__init__

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.already_saved:
            return
        if self.save_to_log_dir:
            log_dir = trainer.log_dir  # on every process: it broadcasts the folder
            if trainer.is_global_zero:
                with atomic_write(Path(log_dir) / self.config_filename) as handle:
                    handle.write(self.parser.dump(self.config, skip_none=False))
        if trainer.is_global_zero:
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def save_config(self, trainer, pl_module, stage: str) -> None:
        loggers = wandb_loggers(trainer)
        if loggers:
            config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
            for logger in loggers:
                logger.log_hyperparams({"config": config})
            if stage == "fit":
                with atomic_write(Path(trainer.default_root_dir) / WANDB_RUN_FILE) as handle:
                    handle.write(f"{loggers[0].experiment.id}\n")



def _wandb_logger_configs(trainer_config) -> list:
    loggers = trainer_config.logger
    loggers = loggers if isinstance(loggers, list) else [loggers]
    return [logger for logger in loggers if (getattr(logger, "class_path", None) or "").endswith("WandbLogger")]



def reuse_wandb_run(trainer_config, run_folder: Path) -> None:
    """A WandbLogger without an ``id`` logs into the run folder's fit run (``test`` after ``fit``, a resume)."""
    recorded = Path(run_folder) / WANDB_RUN_FILE
    configs = [c for c in _wandb_logger_configs(trainer_config)
               if c.init_args.get("id") is None and c.init_args.get("version") is None]
    if not configs or not recorded.is_file() or recorded.stat().st_size > 256:
        return
    run_id = recorded.read_text(errors="replace").strip()
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,128}", run_id):
        return  # not a W&B run id: a new run, as without the file
    for config in configs:
        config.init_args["id"] = run_id
        if config.init_args.get("resume") is None and "resume" in config.init_args:
            config.init_args["resume"] = "allow"  # (the CLI hands wandb.init's default, None, past WandbLogger's)



def place_wandb_logs(trainer_config) -> None:
    """A WandbLogger without ``save_dir`` writes into the working directory; put it in the run folder."""
    root = trainer_config.default_root_dir
    for logger in _wandb_logger_configs(trainer_config):
        init_args = logger.init_args
        if root and init_args.get("save_dir") in (None, ".") and init_args.get("dir") in (None, "."):
            init_args["save_dir"] = root
