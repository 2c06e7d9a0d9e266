"""CLIPAGIQA: the training task. It wraps a ``CLIPAGIQAModel`` and owns loss, metrics, optimiser, schedule and
checkpoint hooks; the network itself lives in ``model.py`` and never needs Lightning."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback
from torchmetrics import CatMetric, MeanMetric

from .calibration import fitted_std_scale, kl_to, mean_and_std, soft_labels
from .callbacks.checkpoints import srcc_standard_error
from .callbacks.data_link import ModelToData
from .callbacks.per_dataset import DatasetMetrics
from .callbacks.reports import ReliabilityReport
from .config import (
    ARCHITECTURE,
    FIELDS,
    RECIPE_DEFAULTS,
    TRAINING_DEFAULTS,
    TRAINING_SCALE,
    CLIPAGIQAConfig,
    same_value,
)
from .data.mixed import MixedData
from .data.splits import split_summary
from .errors import InputError
from .losses import within_dataset_rank_loss
from .metrics import CalibrationMetrics, as_metric_input, quality_metrics
from .model import FROZEN_PREFIX as MODEL_FROZEN_PREFIX
from .model import CLIPAGIQAModel
from .saved import FIELDS_ADDED_LATER, MODEL_PREFIX, TrainedWeights, read_checkpoint, read_trained_weights

FROZEN_PREFIX = MODEL_PREFIX + MODEL_FROZEN_PREFIX
CONCAT_ONLY = ("standardise", "whiten", "prompt_norm", "output")  # default recipe fields that only the concat head has
# Fewer validation pictures than this choose best.ckpt mostly by chance: the fit says so.
MIN_VALIDATION = 40
# Precisions that keep the trainable parts in fp32 (a *-true precision would train them in half precision).
MIXED_OR_FULL = ("32-true", "32", "16-mixed", "bf16-mixed", "64-true")


def resolve_architecture(given: dict, start: TrainedWeights | None, rater_std: bool = False) -> dict:
    """The architecture to build: what was given, else what ``init_from`` was trained with, else the defaults
    (the published network with ``RECIPE_DEFAULTS``; its score distribution only where the data gives the raters'
    std, ``rater_std``). A given value that contradicts ``init_from`` is refused (its tensors would not fit)."""
    defaults = CLIPAGIQAConfig().architecture()
    source = start.config.architecture() if start is not None else {}
    resolved = {}
    for name in ARCHITECTURE:
        value, saved = given.get(name), source.get(name)
        # The backbone may be named differently (a local copy): its weights fingerprint is checked instead.
        # Targets may be renamed by new data (e.g. quality -> mos): the tensors' shapes are checked instead.
        if (start is not None and value is not None and saved is not None and name not in ("backbone", "targets")
                and not same_value(value, saved)):
            raise InputError(f"--model.{name} {value!r} differs from {saved!r} of init_from {start.source}: leave "
                             f"it out to take it from there (the trained tensors only fit their own architecture)")
        resolved[name] = value if value is not None else (saved if saved is not None else defaults[name])
    if start is None:  # a new model: the default recipe where nothing was given
        for name, value in RECIPE_DEFAULTS.items():
            if name == "output" and not rater_std:
                continue  # without the raters' std nothing trains the spread of each picture: one score
            if name == "whiten" and resolved["standardise"] is False:
                continue  # standardising nothing (e.g. the paper's part): nothing to whiten
            if given.get(name) is None and (name not in CONCAT_ONLY or resolved["head"] == "concat"):
                resolved[name] = value
    return resolved


def warn_if_validation_is_small(size: int) -> None:
    """One line when ``best.ckpt`` would be chosen on too few validation pictures (SRCC over n pictures varies by
    about 1 / sqrt(n - 1) from one sample to another: with few, the "best" epoch is mostly noise)."""
    if 0 < size < MIN_VALIDATION:
        warnings.warn(f"the validation split has {size} picture(s): best.ckpt is chosen on their SRCC, which varies "
                      f"by about {srcc_standard_error(size):.2f} by chance, so it tells few epochs apart; give it "
                      f"at least {MIN_VALIDATION} (a larger --data.val_size, or more data), or use last.ckpt",
                      UserWarning, stacklevel=2)


def typed_model_fields(argv: list[str]) -> set[str]:
    """The model fields typed on a command line (``--model.n_ctx 4``, ``--model.init_args.n_ctx=4``), as opposed
    to those a ``--config`` part sets."""
    typed = set()
    for argument in argv:
        if isinstance(argument, str) and argument.startswith("--model."):
            name = argument.split("=", 1)[0].removeprefix("--model.").removeprefix("init_args.")
            typed.add(name)
    return typed


def leave_architecture_to_start(init_args, typed: set[str]) -> None:
    """A fine-tune (``init_from``) takes every architecture field the user did not type from its start: a composed
    config part (e.g. the paper's ``standardise: false``) never contradicts the checkpoint it starts from."""
    if not init_args.get("init_from"):
        return
    for name in ARCHITECTURE:
        if name not in typed and name in init_args:
            init_args[name] = None


def check_optimisation(lr, momentum, weight_decay, warmup_epochs, warmup_lr) -> None:
    """Values no optimiser or schedule can run with (lr 0 divided the warm-up by zero), refused before a fit."""
    def number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    for name, value, valid, rule in (
            ("lr", lr, number(lr) and lr > 0, "a finite number above 0"),
            ("momentum", momentum, number(momentum) and 0 <= momentum < 1, "at least 0 and below 1"),
            ("weight_decay", weight_decay, number(weight_decay) and weight_decay >= 0, "a finite number, at least 0"),
            ("warmup_epochs", warmup_epochs, number(warmup_epochs) and warmup_epochs == int(warmup_epochs) >= 0,
             "a whole number, at least 0"),
            ("warmup_lr", warmup_lr, number(warmup_lr) and warmup_lr >= 0, "a finite number, at least 0")):
        if not valid:
            raise InputError(f"--model.{name} must be {rule}, got {value!r}")




class CLIPAGIQA(L.LightningModule):
    """Trains a ``CLIPAGIQAModel`` (``self.model``) to predict the MOS of AI-generated images.

    Args:
        backbone, head, categories, n_ctx, ctx_init, class_specific_ctx, hidden_dim: the architecture (see
            ``CLIPAGIQAModel``). Left out (None), they come from ``init_from`` when given, else the paper's
            network (ViT-B/16, concat head, terrible..perfect) with the default recipe's ``RECIPE_DEFAULTS``
            (8 shared context vectors, hidden 256, standardised inputs).
        dropout, input_dropout, frozen_dtype, attn_implementation: see ``CLIPAGIQAConfig``; dropout, input_dropout,
            optimizer, lr, weight_decay and warmup_lr default to the default recipe's ``TRAINING_DEFAULTS`` (the paper
            parts spell out their own).
        targets, use_prompt: what the model predicts (one output each) and whether it reads each image's
            generation prompt; left out, from ``init_from``, else ``[quality]`` and False (the paper).
        output, levels: ``score`` (the paper) or ``distribution`` over ``levels`` ordered levels per target (see
            ``CLIPAGIQAModel``); a distribution is trained against the raters' distribution (a Gaussian of MOS and
            their std, discretised on the levels: KL divergence) where the data gives their std, else with
            ``loss`` on its mean; its std scale is fitted on each validation pass. Left out, from ``init_from``,
            else a distribution for the concat head when the data gives the raters' std (``data_has_rater_std``),
            else a score.
        standardise: the concat head standardises its image-dependent inputs (see ``CLIPAGIQAConfig``); left out,
            from ``init_from`` when given, else true for the concat head: the default recipe (``RECIPE_DEFAULTS``);
            false is the paper's.
        whiten: with ``standardise``, the concat head also decorrelates its standardised inputs (ZCA whitening with
            this shrinkage; see ``CLIPAGIQAConfig``); left out, from ``init_from`` when given, else 0.1 where the
            head standardises (the default recipe); 0 whitens nothing.
        prompt_norm: how the concat head reads the quality prompts' features (see ``CLIPAGIQAConfig``); left out,
            from ``init_from`` when given, else ``l1`` for the concat head (the default recipe); ``l2`` is the paper's.
        mos_scale: the MOS scale (low, high), one per target or one for all. Targets are mapped onto 0-5 for
            training, scores back.
        data_targets: the data's targets and their MOS scales (a benchmark's fixed scale, or the range measured
            on the training split); the CLI links it from the datamodule, and it sets ``targets`` and
            ``mos_scale``. None (e.g. unlabelled images to score) keeps them.
        data_has_rater_std: whether the training data gives the raters' std (the CLI links it from the
            datamodule): with it, a new concat model predicts a score distribution unless ``output`` is given.
        loss: ``mse`` (the paper) or ``l1``, on the 0-5 training scale; ``rank``: MSE plus a ranking loss on the pairs
            of a batch from the same dataset (``losses.within_dataset_rank_loss``; val/loss is the MSE part).
        optimizer: ``adamw`` (the default recipe) or ``sgd`` (the paper); ``lr``, ``momentum``, ``weight_decay`` as
            usual.
        warmup_epochs, warmup_lr: epochs at a constant small lr, then cosine down to 0 at the last step.
        init_from: a trained checkpoint (``.ckpt``, read without arbitrary unpickling) or a saved model folder whose
            prompt context and head start this run (fine-tuning); its architecture is taken over.
        trainable: ``all`` (prompt context and head), ``head`` (freeze the context) or ``prompt`` (freeze the head).
    """

    def __init__(
        self,
        backbone: str | None = None,
        head: Literal["concat", "similarity"] | None = None,
        categories: list[str] | None = None,
        n_ctx: int | None = None,
        ctx_init: str | None = None,
        class_specific_ctx: bool | None = None,
        hidden_dim: int | None = None,
        targets: list[str] | None = None,
        use_prompt: bool | None = None,
        output: Literal["score", "distribution"] | None = None,
        levels: int | None = None,
        standardise: bool | None = None,
        whiten: float | None = None,
        prompt_norm: Literal["l2", "l1"] | None = None,
        dropout: float = TRAINING_DEFAULTS["dropout"],
        input_dropout: float | None = TRAINING_DEFAULTS["input_dropout"],
        mos_scale: list | None = None,
        data_targets: dict[str, tuple[float, float]] | None = None,
        data_has_rater_std: bool = False,
        frozen_dtype: Literal["float32", "float16", "bfloat16"] = "float32",
        attn_implementation: Literal["sdpa", "eager"] = "sdpa",
        loss: Literal["mse", "l1", "rank"] = "mse",
        optimizer: Literal["sgd", "adamw"] = TRAINING_DEFAULTS["optimizer"],
        lr: float = TRAINING_DEFAULTS["lr"],
        momentum: float = 0.9,
        weight_decay: float = TRAINING_DEFAULTS["weight_decay"],
        warmup_epochs: int = 1,
        warmup_lr: float = TRAINING_DEFAULTS["warmup_lr"],
        init_from: str | None = None,
        trainable: Literal["all", "prompt", "head"] = "all",
    ):
        options = {name: value for name, value in locals().items() if name in FIELDS}  # the model's, by its config
        super().__init__()
        check_optimisation(lr, momentum, weight_decay, warmup_epochs, warmup_lr)
        if data_targets:
            options["targets"] = list(data_targets)
            options["mos_scale"] = [list(scale) for scale in data_targets.values()]
        if isinstance(options["targets"], str):
            options["targets"] = [options["targets"]]
        start = read_trained_weights(init_from) if init_from else None
        options.update(resolve_architecture(options, start, data_has_rater_std))
        if options["mos_scale"] is None:
            del options["mos_scale"]  # the config's default: the training scale
        config = CLIPAGIQAConfig.checked("model options", **options)
        # Hyper-parameters hold the whole config (architecture resolved), so a checkpoint rebuilds without init_from.
        self.save_hyperparameters({
            **config.to_dict(), "loss": loss, "optimizer": optimizer, "lr": lr, "momentum": momentum,
            "weight_decay": weight_decay, "warmup_epochs": warmup_epochs, "warmup_lr": warmup_lr,
            "init_from": init_from, "trainable": trainable})
        self.model = CLIPAGIQAModel(config)
        if start is not None:
            self.model.check_fingerprint(start.backbone_fingerprint, start.source)
            self.model.load_trained_state(start.state, start.source, keep_scale=True)  # the data's scale here
        self._freeze_untrained_parts(trainable)
        self.val_metrics = self._target_metrics("val/")
        self.test_metrics = self._target_metrics("test/")
        self.val_loss = MeanMetric()
        if self.model.gives_distribution:
            targets = self.model.targets
            self.val_abs_z = torch.nn.ModuleList([CatMetric() for _ in targets])  # errors in predicted stds
            self.test_calibration = torch.nn.ModuleList([
                CalibrationMetrics("test/" if len(targets) == 1 else f"test/{t}/") for t in targets])

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, **kwargs):
        """Lightning's, where a field an older checkpoint lacks (``saved.FIELDS_ADDED_LATER``) takes the value it
        was trained with, not today's default."""
        if isinstance(checkpoint_path, (str, Path)) and Path(checkpoint_path).is_file():
            saved = read_checkpoint(Path(checkpoint_path)).config
            kwargs = {**{name: getattr(saved, name) for name in FIELDS_ADDED_LATER}, **kwargs}
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def _target_metrics(self, prefix: str) -> torch.nn.ModuleList:
        """One metric collection per target: ``val/srcc`` ... for one target, ``val/<target>/srcc`` for several."""
        targets = self.model.targets
        return torch.nn.ModuleList([quality_metrics(prefix if len(targets) == 1 else f"{prefix}{t}/")
                                    for t in targets])

    def _freeze_untrained_parts(self, trainable: str) -> None:
        if trainable not in ("all", "prompt", "head"):
            raise InputError(f"trainable must be all, prompt or head, got {trainable!r}")
        self.model.prompt_learner.requires_grad_(trainable in ("all", "prompt"))
        self.model.head.requires_grad_(trainable in ("all", "head"))
        if not self.trainable_parameters():
            raise InputError(f"trainable={trainable!r} leaves nothing to train with head={self.hparams.head!r}")

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def forward(self, pixel_values: torch.Tensor, prompts=None) -> torch.Tensor:
        """Predicted MOS of a batch of normalised images (see ``CLIPAGIQAModel.forward``)."""
        return self.model(pixel_values, prompts)

    def configure_callbacks(self) -> list[Callback]:
        datamodule = self.trainer.datamodule  # several datasets: each one's figures, and their mean to select on
        per_dataset = [DatasetMetrics(datamodule.names)] if isinstance(datamodule, MixedData) else []
        return [ModelToData(), *([ReliabilityReport()] if self.model.gives_distribution else []), *per_dataset]

    def record_training_mos(self, datamodule) -> None:
        """The training split's MOS quantiles per target go into the model (what ``score``'s percentiles read)."""
        from .data.records import target_tensor

        warn_if_validation_is_small(len(datamodule.split_records("val") or ()))
        records = datamodule.split_records("train")
        if records:
            targets = self.model.targets
            names = getattr(datamodule, "targets", None) or targets
            mos = torch.stack([target_tensor(r, list(names)) for r in records]).reshape(len(records), -1)
            self.model.record_training_mos(mos)
            if self._starts_afresh():
                self._start_head_at_training_mos(mos)

    def attached_trainer(self):
        """The trainer, or None when the task is used on its own (``self.trainer`` raises then)."""
        try:
            return self.trainer
        except RuntimeError:
            return None

    def _starts_afresh(self) -> bool:
        """A fit from nothing: not a fine-tune (``init_from``), not a resumed run (its head is restored)."""
        trainer = self.attached_trainer()
        return self.hparams.init_from is None and (trainer is None or trainer.ckpt_path is None)

    def _start_head_at_training_mos(self, mos: torch.Tensor) -> None:
        """The concat head starts at the training MOS mean and spread (see ``ConcatHead.start_at``)."""
        if not hasattr(self.model.head, "start_at"):
            return
        target = self.model.to_training_scale(mos.float())
        finite = torch.isfinite(target)
        counts = finite.sum(dim=0).clamp_min(1)
        mean = torch.where(finite, target, 0).sum(dim=0) / counts
        spread = (torch.where(finite, target - mean, 0) ** 2).sum(dim=0).div(counts).sqrt()
        self.model.head.start_at(mean.to(self.device), spread.to(self.device))

    def setup(self, stage: str) -> None:
        precision = str(self.trainer.precision)
        if precision not in MIXED_OR_FULL:
            raise InputError(f"--trainer.precision {precision} is not supported: it would hold the prompt context "
                             f"and head in half precision. Use --trainer.precision bf16-mixed (or 16-mixed on a GPU), "
                             f"and --model.frozen_dtype bfloat16 to halve the frozen encoders' memory")

    # --- steps ---------------------------------------------------------------------------------------
    def _training_scale_scores(self, batch: dict) -> torch.Tensor:
        """(batch, targets) scores on the training scale, from pixels or cached features."""
        return self._training_scale_outputs(batch)[0]

    def _training_scale_outputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(batch, targets) scores on the training scale and, for a distribution model, the log-probabilities of
        its levels (batch, targets, levels); else None."""
        features = batch["features"] if "features" in batch else self.model.encode_images(batch["image"])
        if not self.model.gives_distribution:
            return self.model.training_scale_scores(features, batch.get("prompt"), batch.get("text_features")), None
        log_probs = self.model.training_scale_log_probs(features, batch.get("prompt"), batch.get("text_features"))
        return log_probs.exp() @ self.model.head.levels.float(), log_probs

    @staticmethod
    def _targets(batch: dict) -> torch.Tensor:
        mos = batch["mos"]
        return mos.reshape(len(mos), -1)  # (batch,) for one target, (batch, targets) for several

    def _per_sample_loss(self, scores: torch.Tensor, mos: torch.Tensor, log_probs: torch.Tensor | None = None,
                         mos_std: torch.Tensor | None = None) -> torch.Tensor:
        """Per sample, summed over targets, on the training scale. A distribution (``log_probs``) is compared with
        the raters' distribution (KL divergence) where ``mos_std`` is finite, its mean with ``loss`` elsewhere."""
        target = self.model.to_training_scale(mos)
        loss = F.l1_loss if self.hparams.loss == "l1" else F.mse_loss
        per_target = loss(scores, target, reduction="none")
        if log_probs is not None and mos_std is not None:
            std = self._training_scale_std(mos_std.reshape(target.shape))
            raters = soft_labels(target, std.nan_to_num(1.0), self.model.head.levels.float())
            per_target = torch.where(torch.isfinite(std), kl_to(raters, log_probs), per_target)
        return per_target.sum(dim=-1)

    def _training_scale_std(self, mos_std: torch.Tensor) -> torch.Tensor:
        low, high = self.model.mos_scale[:, 0].float(), self.model.mos_scale[:, 1].float()
        return mos_std.float() * ((TRAINING_SCALE[1] - TRAINING_SCALE[0]) / (high - low))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        mos = self._targets(batch)
        scores, log_probs = self._training_scale_outputs(batch)
        loss = self._per_sample_loss(scores, mos, log_probs, batch.get("mos_std")).mean()
        if self.hparams.loss == "rank":  # the order within each dataset of the batch
            loss = loss + within_dataset_rank_loss(scores, self.model.to_training_scale(mos), batch.get("dataset"))
        if self._logs_this_step(batch_idx):
            self.log("train/loss", loss, prog_bar=True, batch_size=len(mos))
        return loss

    def _logs_this_step(self, batch_idx: int) -> bool:
        """Whether Lightning writes this step's metrics to the loggers (every ``log_every_n_steps``, as its logger
        connector decides), or the epoch ends (what callbacks and the epoch line read). Logging on the other steps
        would only cost: a move of Lightning's result collection per call and, with a progress bar, a host sync."""
        trainer = self.attached_trainer()
        if trainer is None:
            return True
        every = trainer.log_every_n_steps  # Lightning counts the batches that stepped: the global step here
        return (batch_idx + 1 == trainer.num_training_batches or trainer.should_stop
                or (every > 0 and (self.global_step + 1) % every == 0))

    def _evaluate(self, batch: dict, metrics, loss_metric: MeanMetric | None = None,
                  calibration: torch.nn.ModuleList | None = None) -> dict:
        """Updates the metrics; returns ``score`` (and a distribution model's calibrated ``std``) on the MOS scale."""
        mos = self._targets(batch)
        scores, log_probs = self._training_scale_outputs(batch)
        prediction = self.model.to_mos(scores)
        for index, collection in enumerate(metrics):
            collection.update(as_metric_input(prediction[:, index]), as_metric_input(mos[:, index]))
        mos_std = batch.get("mos_std")
        if loss_metric is not None:  # every sample weighs the same, however the set is batched or sharded
            loss_metric.update(self._per_sample_loss(scores, mos, log_probs, mos_std).float())
        squeeze = (lambda x: x.squeeze(-1)) if prediction.shape[1] == 1 else (lambda x: x)
        if log_probs is None:
            return {"score": squeeze(prediction)}
        probs = log_probs.exp()
        _, spread = mean_and_std(probs, self.model.head.levels.float())  # raw, on the training scale
        if calibration is None:  # validation: the standardised errors the std scale is fitted to
            abs_z = (self.model.to_training_scale(mos) - scores).abs() / spread.clamp_min(1e-6)
            for index, metric in enumerate(self.val_abs_z):
                metric.update(abs_z[:, index].float())
        unit = self.model.to_mos(torch.ones_like(scores)) - self.model.to_mos(torch.zeros_like(scores))
        std = spread * self.model.std_scale * unit
        if calibration is not None:
            levels = self.model.mos_levels()
            rater_std = mos_std.reshape(mos.shape) if mos_std is not None else None
            for index, metrics_of_target in enumerate(calibration):
                metrics_of_target.update(mos[:, index], prediction[:, index], std[:, index], probs[:, index],
                                         levels[index], None if rater_std is None else rater_std[:, index])
        return {"score": squeeze(prediction), "std": squeeze(std), "probs": probs}  # probs: the test report's distances

    def _log_metrics(self, metrics, prefix: str, loss_metric: MeanMetric | None = None) -> None:
        values = {}
        for collection in metrics:
            values.update(collection.compute())  # synchronised across processes by torchmetrics
            collection.reset()
        if len(metrics) > 1:  # the mean over targets picks the checkpoint
            values[f"{prefix}srcc"] = torch.stack([values[f"{prefix}{t}/srcc"] for t in self.model.targets]).mean()
        if loss_metric is not None:
            values[f"{prefix}loss"] = loss_metric.compute()
            loss_metric.reset()
        self.log_dict(values, prog_bar=True)

    def validation_step(self, batch: dict, batch_idx: int) -> dict:
        # The scores go to callbacks (per-dataset figures of a mixed fit), as the test step's do.
        return {"score": self._evaluate(batch, self.val_metrics, self.val_loss)["score"].detach()}

    def on_validation_epoch_end(self) -> None:
        self._log_metrics(self.val_metrics, "val/", self.val_loss)
        if self.model.gives_distribution:  # calibrated on this pass: the checkpoint of this epoch keeps it
            scales = []
            for metric in self.val_abs_z:
                scales.append(fitted_std_scale(metric.compute().reshape(-1)) if metric.update_count else
                              torch.ones((), device=self.device))
                metric.reset()
            self.model.std_scale.copy_(torch.stack(scales).to(self.model.std_scale))

    def test_step(self, batch: dict, batch_idx: int) -> dict:
        # The scores (and stds) go to callbacks (the test report's scatter plot, predictions, reliability plot).
        outputs = self._evaluate(batch, self.test_metrics, calibration=getattr(self, "test_calibration", None))
        return {key: value.detach() for key, value in outputs.items()}

    def on_test_epoch_end(self) -> None:
        self._log_metrics(self.test_metrics, "test/")
        if self.model.gives_distribution:
            values = {}
            for metrics_of_target in self.test_calibration:
                values.update(metrics_of_target.compute())
                metrics_of_target.reset()
            self.log_dict(values)

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        # scores, then the model's extra columns (<target>_std, <target>_percentile): one row of the CSV per image
        features = batch["features"] if "features" in batch else self.model.encode_images(batch["image"])
        scores = self.model.score_table(features, batch.get("prompt"), batch.get("text_features")).float().cpu()
        return {"index": batch["index"], "file_name": batch["file_name"],
                "score": scores.squeeze(-1) if scores.shape[1] == 1 else scores,
                "error": batch.get("error", [""] * len(batch["file_name"]))}

    # --- optimisation --------------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        params = self.trainable_parameters()
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        else:
            optimizer = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _lr_factor(self, step: int) -> float:
        """Constant warm-up, then cosine over the whole run, reaching 0 after its last step.

        Sized from the trainer when called (epochs or ``max_steps``, whichever ends training first), so a run
        resumed with a larger ``max_epochs`` goes on along the longer schedule instead of the finished one."""
        total, per_epoch = self._schedule_length()
        if step < self.hparams.warmup_epochs * per_epoch:
            return self.hparams.warmup_lr / self.hparams.lr
        return 0.5 * (1 + math.cos(math.pi * min(step, total) / total))

    def _schedule_length(self) -> tuple[int, int]:
        """(optimiser steps of the whole run, optimiser steps per epoch)."""
        trainer = self.trainer
        total = max(1, int(trainer.estimated_stepping_batches))
        batches = trainer.num_training_batches
        per_epoch = total if math.isinf(batches) else max(1, math.ceil(batches / trainer.accumulate_grad_batches))
        return total, per_epoch

    def on_train_start(self) -> None:
        # A resumed run restores the optimiser's last lr (0 at the end of a finished schedule): set the lr
        # the schedule gives now, so the first resumed step does not run at a stale rate.
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            for group, base, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs,
                                           scheduler.lr_lambdas):
                group["lr"] = base * factor(scheduler.last_epoch)

    # --- checkpoints: only what was trained ----------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith(FROZEN_PREFIX)]:
            del state[key]
        checkpoint["backbone_fingerprint"] = self.model.backbone_fingerprint
        # The weights are in the checkpoint now: rebuilding it must not need the init_from file.
        checkpoint["hyper_parameters"]["init_from"] = None
        checkpoint["training_info"] = self.training_info()

    def training_info(self) -> dict:
        """What this run learned from, for the model card of an export (plain values only)."""
        info = {}
        trainer = self.attached_trainer()
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        if datamodule is not None:
            info = {"data": type(datamodule).__name__, **split_summary(datamodule)}
        if trainer is not None:
            info.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("val/", "test/"))})
            info["epoch"] = trainer.current_epoch
        return info

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.model.check_fingerprint(checkpoint.get("backbone_fingerprint"), "this checkpoint")
        state = checkpoint["state_dict"]
        for key, value in self.state_dict().items():
            if key.startswith(FROZEN_PREFIX):
                state.setdefault(key, value)

