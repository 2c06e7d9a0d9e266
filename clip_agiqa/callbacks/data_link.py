"""The one link between the training task and the data: the frozen-encoder handle, never the model."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Callback


class ModelToData(Callback):
    """The one link between the task and the data: hands the datamodule the model's frozen-encoder handle (image
    size, mean and std; the feature cache's encoders; whether the model reads generation prompts) before any loader
    is made - never the model - and records the split beside the checkpoints when training starts."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        datamodule = trainer.datamodule
        if hasattr(datamodule, "use_encoder"):
            datamodule.use_encoder(pl_module.model.frozen_encoder(), read_prompts=pl_module.model.use_prompt)

    def on_fit_start(self, trainer, pl_module) -> None:
        datamodule = trainer.datamodule
        # Beside the checkpoints, else in the logger's folder; a run that keeps neither has no folder to mark.
        directory = getattr(trainer.checkpoint_callback, "dirpath", None) or (trainer.log_dir if trainer.loggers
                                                                              else None)
        if trainer.is_global_zero and directory and hasattr(datamodule, "save_splits"):
            datamodule.save_splits(Path(directory))
        if hasattr(datamodule, "split_records"):  # the training MOS distribution, for percentiles
            pl_module.record_training_mos(datamodule)
