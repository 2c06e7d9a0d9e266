"""The ``clip-agiqa`` command: LightningCLI with fit / validate / test / predict, plus export and benchmark."""

from __future__ import annotations

import os
import sys

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from .callbacks import ScoreWriter
from .data.base import MOSDataModule
from .module import CLIPAGIQA
from .reporting import ConfigToWandb, TestReport, place_wandb_logs

# Subcommands outside LightningCLI, dispatched on the first argument: name -> module with main(argv).
EXTRA_COMMANDS = {"export": "clip_agiqa.export", "benchmark": "clip_agiqa.benchmark"}


DESCRIPTION = (
    "CLIP-AGIQA: train, evaluate and apply a quality model for AI-generated images. "
    "Besides fit/validate/test/predict: `clip-agiqa export CKPT OUT_DIR` (safetensors + JSON, loads without "
    "pickle) and `clip-agiqa benchmark --config CONFIG --splits N` (repeated splits, mean/std/median)."
)


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
        })
        parser.add_lightning_class_args(ScoreWriter, "predictions")
        parser.add_lightning_class_args(TestReport, "report")
        parser.set_defaults({"model": {"class_path": "clip_agiqa.module.CLIPAGIQA"}})
        # The data owns its MOS scale (fixed by a benchmark or measured on the training split).
        parser.link_arguments("data.mos_scale", "model.init_args.mos_scale", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        # A fixed checkpoint folder (not one per logger version) lets `--ckpt_path last` find the last run.
        config = self.config[self.subcommand]
        if config.checkpoint.dirpath is None:
            root = config.trainer.default_root_dir or os.getcwd()
            config.checkpoint.dirpath = os.path.join(root, "checkpoints")
        place_wandb_logs(config.trainer)


def main(args: list[str] | None = None):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = sys.argv[1:] if args is None else list(args)
    if argv and argv[0] in EXTRA_COMMANDS:
        import importlib

        return importlib.import_module(EXTRA_COMMANDS[argv[0]]).main(argv[1:])
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


def console() -> None:
    """The console script: returns nothing, so the exit status is 0 on success."""
    main()


if __name__ == "__main__":
    console()
