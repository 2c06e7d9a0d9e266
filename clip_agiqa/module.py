"""CLIPAGIQA: frozen CLIP + learned prompt context + regression head, as a LightningModule."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from .backbone import DEFAULT_BACKBONE, feature_output, load_backbone, weights_fingerprint
from .heads import build_head
from .metrics import as_metric_input, quality_metrics
from .prompts import DEFAULT_CATEGORIES, PromptLearner

FROZEN_PREFIX = "clip."
# The frozen encoders stay in eval mode on purpose; Lightning warns about that at every fit.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class CLIPAGIQA(L.LightningModule):
    """Predicts the MOS of an AI-generated image.

    Args:
        backbone: hub id, local folder, or ``random:tiny`` / ``random:vit-b-16`` (offline, random weights).
        head: ``concat`` (the paper) or ``similarity`` (image-prompt similarity over ordered quality levels).
        categories: quality words, ordered from worst to best.
        n_ctx: number of learned context vectors (ignored when ``ctx_init`` is given).
        ctx_init: words that initialise the context, e.g. ``"a photo of"``.
        class_specific_ctx: one context per category instead of one shared context.
        mos_range: the MOS scale, used by the similarity head to map levels to scores.
        frozen_dtype: hold the frozen encoders in this dtype (``float16``/``bfloat16`` halve their memory).
        loss: ``mse`` (the paper) or ``l1``.
        optimizer: ``sgd`` (the paper) or ``adamw``.
        warmup_epochs, warmup_lr: epochs at a constant small lr before the cosine schedule.
        init_from: a trained checkpoint (``.ckpt``, read without arbitrary unpickling) or an exported folder
            whose prompt context and head start this run (fine-tuning); applied when a Trainer sets the model up.
        trainable: ``all`` (prompt context and head), ``head`` (freeze the context) or ``prompt`` (freeze the head).
    """

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        head: Literal["concat", "similarity"] = "concat",
        categories: list[str] = list(DEFAULT_CATEGORIES),
        n_ctx: int = 16,
        ctx_init: str | None = None,
        class_specific_ctx: bool = False,
        hidden_dim: int = 512,
        dropout: float = 0.5,
        mos_range: tuple[float, float] = (0.0, 5.0),
        frozen_dtype: Literal["float32", "float16", "bfloat16"] = "float32",
        attn_implementation: Literal["sdpa", "eager"] = "sdpa",
        loss: Literal["mse", "l1"] = "mse",
        optimizer: Literal["sgd", "adamw"] = "sgd",
        lr: float = 0.002,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        warmup_epochs: int = 1,
        warmup_lr: float = 1e-5,
        init_from: str | None = None,
        trainable: Literal["all", "prompt", "head"] = "all",
    ):
        super().__init__()
        self.save_hyperparameters()
        loaded = load_backbone(backbone, attn_implementation, check_words=tuple(categories))
        self.clip = loaded.clip
        self.tokenizer = loaded.tokenizer
        self.image_settings = loaded.image_settings
        self.backbone_fingerprint = weights_fingerprint(self.clip)
        self.clip.requires_grad_(False)
        self.prompt_learner = PromptLearner(self.clip, self.tokenizer, categories, n_ctx, ctx_init,
                                            class_specific_ctx)
        self.clip.to(DTYPES[frozen_dtype])
        self.head = build_head(head, self.clip.config.projection_dim, len(categories), hidden_dim, dropout,
                               tuple(mos_range))
        self._freeze_untrained_parts(trainable)
        self._init_from_applied = False
        self.val_metrics = quality_metrics("val/")
        self.test_metrics = quality_metrics("test/")
        self.val_loss = MeanMetric()
        self._eval_prompt_features: torch.Tensor | None = None
        self.clip.eval()

    # --- frozen backbone ---------------------------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        self.clip.eval()  # frozen encoders never run dropout or update statistics
        return self

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Projected image embeddings of normalised pixel tensors (batch, 3, size, size)."""
        dtype = self.clip.visual_projection.weight.dtype
        return feature_output(self.clip.get_image_features(pixel_values=images.to(dtype)))

    def prompt_features(self) -> torch.Tensor:
        """Features of every category prompt. They do not depend on the image: computed once per training
        step, and once per validation/test/predict run."""
        if not self.training or not torch.is_grad_enabled() or not self.prompt_learner.ctx.requires_grad:
            if self._eval_prompt_features is None:
                with torch.no_grad():
                    self._eval_prompt_features = self.prompt_learner(self.clip)
            return self._eval_prompt_features
        self._eval_prompt_features = None
        return self.prompt_learner(self.clip)

    def image_features(self, batch: dict) -> torch.Tensor:
        if "features" in batch:  # precomputed by the feature cache
            return batch["features"]
        return self.encode_images(batch["image"])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Predicted MOS of a batch of normalised images."""
        return self.head(self.encode_images(images), self.prompt_features())

    def predict_batch(self, batch: dict) -> torch.Tensor:
        return self.head(self.image_features(batch), self.prompt_features())

    # --- fine-tuning ------------------------------------------------------------------------------
    def _freeze_untrained_parts(self, trainable: str) -> None:
        if trainable not in ("all", "prompt", "head"):
            raise ValueError(f"trainable must be all, prompt or head, got {trainable!r}")
        self.prompt_learner.requires_grad_(trainable in ("all", "prompt"))
        self.head.requires_grad_(trainable in ("all", "head"))
        if not self.trainable_parameters():
            raise ValueError(f"trainable={trainable!r} leaves nothing to train with head={self.hparams.head!r}")

    def setup(self, stage: str) -> None:
        # Here rather than in __init__: load_from_checkpoint must not need the init_from file, and a
        # checkpoint given to fit/test (restored after setup) still wins over init_from.
        if self.hparams.init_from and not self._init_from_applied:
            from .export import apply_trained_weights

            apply_trained_weights(self, self.hparams.init_from)
            self._init_from_applied = True
        self._check_mos_range()

    def _check_mos_range(self) -> None:
        """The similarity head can only output scores inside mos_range: say so when the data's scale differs."""
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        data_range = getattr(datamodule, "mos_range", None)
        if self.hparams.head == "similarity" and data_range and tuple(data_range) != tuple(self.hparams.mos_range):
            warnings.warn(f"model.mos_range {tuple(self.hparams.mos_range)} differs from the MOS scale of "
                          f"{type(datamodule).__name__} {tuple(data_range)}: the similarity head only outputs "
                          f"scores inside model.mos_range; set --model.mos_range to the data's scale", stacklevel=2)

    def on_fit_start(self) -> None:
        """Record the split beside the checkpoints, so every run says which images it trained on."""
        datamodule = self.trainer.datamodule
        if self.trainer.is_global_zero and hasattr(datamodule, "save_splits"):
            callback = self.trainer.checkpoint_callback
            directory = getattr(callback, "dirpath", None) or self.trainer.log_dir or self.trainer.default_root_dir
            datamodule.save_splits(Path(directory))

    # --- steps -------------------------------------------------------------------------------------
    def _loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.float()
        return F.mse_loss(prediction, target) if self.hparams.loss == "mse" else F.l1_loss(prediction, target)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        prediction = self.predict_batch(batch)
        loss = self._loss(prediction, batch["mos"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(prediction))
        return loss

    def on_train_epoch_end(self) -> None:
        self._eval_prompt_features = None

    def _evaluate(self, batch: dict, metrics, loss_metric=None) -> torch.Tensor:
        prediction = self.predict_batch(batch)
        metrics.update(as_metric_input(prediction), as_metric_input(batch["mos"]))
        if loss_metric is not None:
            loss_metric.update(self._loss(prediction, batch["mos"]))
        return prediction

    def _log_metrics(self, metrics, loss_metric=None, loss_name: str = "") -> None:
        values = metrics.compute()  # synchronised across processes by torchmetrics
        if loss_metric is not None:
            values[loss_name] = loss_metric.compute()
            loss_metric.reset()
        metrics.reset()
        self.log_dict(values, prog_bar=True)
        self._eval_prompt_features = None

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics, self.val_loss)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics(self.val_metrics, self.val_loss, "val/loss")

    def test_step(self, batch: dict, batch_idx: int) -> dict:
        # The scores go to callbacks (the test report's scatter plot and predictions table).
        return {"score": self._evaluate(batch, self.test_metrics).detach()}

    def on_test_epoch_end(self) -> None:
        self._log_metrics(self.test_metrics)

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        return {"index": batch["index"], "file_name": batch["file_name"],
                "score": self.predict_batch(batch).float().cpu()}

    def on_predict_epoch_end(self) -> None:
        self._eval_prompt_features = None

    # --- optimisation ------------------------------------------------------------------------------
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self):
        hp = self.hparams
        params = self.trainable_parameters()
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        else:
            optimizer = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        max_epochs = max(1, self.trainer.max_epochs or 1) if self._trainer is not None else 1

        def lr_factor(epoch: int) -> float:
            if epoch < hp.warmup_epochs:
                return hp.warmup_lr / hp.lr
            return 0.5 * (1 + math.cos(math.pi * min(epoch, max_epochs) / max_epochs))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # --- checkpoints: only what was trained --------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith(FROZEN_PREFIX)]:
            del state[key]
        checkpoint["backbone_fingerprint"] = self.backbone_fingerprint

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("backbone_fingerprint")
        if saved is not None and saved != self.backbone_fingerprint:
            raise RuntimeError(
                f"this checkpoint was trained on backbone {self.hparams.backbone!r} with weights fingerprint "
                f"{saved}, but the backbone loaded now has {self.backbone_fingerprint}: the frozen weights differ"
            )
        own = self.state_dict()
        state = checkpoint["state_dict"]
        for key, value in own.items():
            if key.startswith(FROZEN_PREFIX):
                state.setdefault(key, value)
