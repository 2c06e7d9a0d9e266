"""CLIPAGIQAModel: the network alone (frozen CLIP + learned prompt context + head), usable without Lightning.

It is built from a ``CLIPAGIQAConfig`` (``config.py``: the one list of its arguments), scores normalised pixels
on the MOS scale it was trained on, owns its image preprocessing settings and output scale, and shares the
Hugging Face way: ``save_pretrained(dir)`` writes ``config.json`` (the config, the backbone's weights
fingerprint, the SHA-256 of the weights, what it learned from), ``model.safetensors`` (the trained tensors
only: never the frozen backbone) and a ``README.md`` model card rendered from ``MODEL_CARD`` by
``huggingface_hub.ModelHubMixin``; ``from_pretrained`` reads a folder or a hub id, checking every file first
(``saved.py``); ``push_to_hub`` comes from the mixin.

Training happens on a fixed scale, ``TRAINING_SCALE`` (0-5, where the paper tuned its recipe): targets are
mapped linearly from the data's ``mos_scale`` onto it, and predictions back. So the paper's model on 0-5 data
is unchanged, and the same recipe fits data on any scale.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch
from huggingface_hub import ModelHubMixin
from safetensors.torch import save as safetensors_bytes
from torch import nn

from . import __version__
from .backbone import feature_output, load_backbone, weights_fingerprint
from .calibration import QUANTILES, check_quantiles, mean_and_std, percentile, quantiles_of
from .config import TRAINING_SCALE, CLIPAGIQAConfig
from .errors import InputError
from .files import atomic_write
from .frozen import EncoderKey, FrozenEncoder
from .heads import build_head
from .prompts import PromptLearner
from .saved import (
    CARD_FILE,
    CONFIG_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    WEIGHTS_FILE,
    TrainedWeights,
    check_same_scale,
    check_tensors,
    read_saved_config,
    read_weights_file,
)

FROZEN_PREFIX = "clip."
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# The model card (Jinja, rendered by ModelHubMixin.generate_model_card with ``card_values``).
MODEL_CARD = """---
{{ card_data }}
---

# CLIP-AGIQA quality model

Predicts the mean opinion score (MOS) people give an AI-generated image: a frozen CLIP (`{{ backbone }}`), \
learned prompt context ({{ n_ctx }} vectors, categories {{ categories | join(", ") }}) and a `{{ head }}` head \
(CLIP-AGIQA, Tang et al., ICPR 2024).

- Outputs (MOS, higher is better): {{ scales }}.
{% if distribution %}- Each score comes with a standard deviation ({{ std_columns }} in `clip-agiqa score`'s CSV; \\
calibrated on the validation split, scale {{ std_scale }}): the central 90% interval is score +- 1.645 std.
{% set measured = dict(metrics) %}{% for target in targets %}\
{% set prefix = "test/" if targets | length == 1 else "test/" ~ target ~ "/" %}\
{% set which = "" if targets | length == 1 else " (" ~ target ~ ")" %}\
{% if (prefix ~ "coverage90") in measured %}- Interval coverage on its test split{{ which }}, measured by \
`clip-agiqa test` of this checkpoint: the 50% interval holds \
{{ "%.1f" | format(100 * measured[prefix ~ "coverage50"]) }}% \
of the test MOS, the 90% interval {{ "%.1f" | format(100 * measured[prefix ~ "coverage90"]) }}% \
(all test figures below).
{% else %}- Interval coverage on a test split{{ which }}: not measured (no `clip-agiqa test` results of this \
checkpoint were in its run folder when it was exported).
{% endif %}{% endfor %}{% endif %}{% for line in percentiles %}- {{ line }}
{% endfor %}- Reads the generation prompt: {{ "yes (pass prompt=...)" if use_prompt else "no" }}.
- Backbone weights fingerprint: `{{ backbone_fingerprint }}` (checked on load).
{% for label, value in about %}- {{ label }}: {{ value }}
{% endfor %}{% if metrics %}
| metric | value |
|---|---|
{% for name, value in metrics %}| {{ name }} | {{ "%.4f" | format(value) }} |
{% endfor %}{% endif %}
## Use

```python
import clip_agiqa

scorer = clip_agiqa.load("<this folder or hub id>")
scorer("image.png")        # one score
scorer.score_folder("images/", "scores.csv")
```

The frozen backbone is not stored here: it is loaded from its own id and its fingerprint checked.
"""


class CLIPAGIQAModel(nn.Module, ModelHubMixin, library_name="clip-agiqa",
                     tags=["image-quality-assessment", "aigc", "clip"],
                     repo_url="https://github.com/clip-agiqa/clip-agiqa", model_card_template=MODEL_CARD):
    """Predicts the MOS of AI-generated images.

    ``CLIPAGIQAModel(config)`` with a ``CLIPAGIQAConfig`` (see there for every field), or keyword by keyword:
    ``CLIPAGIQAModel(backbone="random:tiny", n_ctx=4)`` (a first argument that is text is the backbone).
    """

    def __init__(self, config: CLIPAGIQAConfig | str | None = None, **options):
        super().__init__()
        if isinstance(config, str):
            config, options = None, {"backbone": config, **options}
        config = (config or CLIPAGIQAConfig()).replace(**options) if options else (config or CLIPAGIQAConfig())
        self.config = config
        loaded = load_backbone(config.backbone, config.attn_implementation, check_words=tuple(config.categories))
        self.clip = loaded.clip.requires_grad_(False)
        self.tokenizer = loaded.tokenizer
        self.image_settings = loaded.image_settings
        self.backbone_fingerprint = weights_fingerprint(self.clip)
        self.prompt_learner = PromptLearner(self.clip, self.tokenizer, config.categories, config.n_ctx,
                                            config.ctx_init, config.class_specific_ctx)
        self.clip.to(DTYPES[config.frozen_dtype])
        distribution = config.output == "distribution"
        self.head = build_head(config.head, self.clip.config.projection_dim, len(config.categories),
                               config.hidden_dim, config.dropout, TRAINING_SCALE, n_outputs=len(config.targets),
                               input_dropout=config.input_dropout,
                               prompt_aware=config.use_prompt, levels=config.levels if distribution else None,
                               standardise=config.standardise, prompt_norm=config.prompt_norm,
                               whiten=config.whiten)
        self.register_buffer("mos_scale", torch.tensor(config.mos_scale, dtype=torch.float64))
        # The training MOS distribution per target (calibration.QUANTILES quantiles; all equal: not recorded), what
        # a score's percentile is read from; set when a fit starts.
        self.register_buffer("mos_quantiles", torch.zeros(len(config.targets), QUANTILES))
        if distribution:  # predicted stds are multiplied by it: fitted on the validation split
            self.register_buffer("std_scale", torch.ones(len(config.targets)))
        self.training_info: dict = {}  # what it learned from (data, split, metrics): goes into the model card
        self._prompt_memo: tuple | None = None
        self._text_features: dict[str, torch.Tensor] = {}  # generation prompt -> frozen text features (CPU, fp32)
        self.clip.eval()

    @property
    def targets(self) -> list[str]:
        return self.config.targets

    @property
    def use_prompt(self) -> bool:
        return self.config.use_prompt

    @property
    def gives_distribution(self) -> bool:
        return self.config.output == "distribution"

    @property
    def knows_percentiles(self) -> bool:
        """Whether the training MOS quantiles were recorded (a model saved before they were is not)."""
        return bool((self.mos_quantiles[:, -1] > self.mos_quantiles[:, 0]).all())

    @property
    def arguments(self) -> dict:
        """The config as a dict (kept for callers that read ``model.arguments``; ``model.config`` is the source)."""
        return self.config.to_dict()

    # --- the frozen backbone -------------------------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        self.clip.eval()  # frozen encoders never run dropout or update statistics
        return self

    @torch.no_grad()
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected image embeddings of normalised pixels (batch, 3, size, size)."""
        dtype = self.clip.visual_projection.weight.dtype
        return feature_output(self.clip.get_image_features(pixel_values=pixel_values.to(dtype)))

    def quality_prompt_features(self) -> torch.Tensor:
        """Features of every learned quality prompt (one per category), (n_categories, dim). They do not depend on the
        image: while the context trains they are computed afresh (one pass of a few short prompts); otherwise they are
        reused as long as the context tensor, its version (bumped by every in-place change, e.g. an optimiser step or
        ``load_state_dict``), device and dtype stay the same."""
        ctx = self.prompt_learner.ctx
        if torch.is_grad_enabled() and ctx.requires_grad:
            self._prompt_memo = None
            return self.prompt_learner(self.clip)
        key = (ctx.data_ptr(), ctx._version, ctx.device, ctx.dtype, self.clip.text_projection.weight.data_ptr())
        if self._prompt_memo is None or self._prompt_memo[0] != key:
            with torch.no_grad():
                self._prompt_memo = (key, self.prompt_learner(self.clip))
        return self._prompt_memo[1]

    # --- generation prompts -----------------------------------------------------------------------------
    def frozen_encoder(self) -> FrozenEncoder:
        """The narrow handle data code gets (the feature cache, image settings): never the model itself."""
        key = EncoderKey(self.config.backbone, self.backbone_fingerprint,
                         str(self.clip.visual_projection.weight.dtype).removeprefix("torch."),
                         attn_implementation=self.config.attn_implementation)
        return FrozenEncoder(key, self.image_settings, self._encode_pixels_here, self.encode_texts,
                             device=lambda: self.clip.visual_projection.weight.device)

    def _encode_pixels_here(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.encode_images(pixel_values.to(self.clip.visual_projection.weight.device, non_blocking=True))

    @torch.no_grad()
    def encode_texts(self, texts, batch_size: int = 256) -> tuple[torch.Tensor, int]:
        """Frozen text features of ``texts`` ((n, dim), fp32, CPU) and how many were longer than the text encoder's
        window. One batched tokenisation; a long text keeps its first tokens and its EOS, as the tokenizer's own
        truncation does."""
        texts = [str(t) for t in texts]
        max_length = self.clip.text_model.config.max_position_embeddings
        ids = self.tokenizer(texts, verbose=False)["input_ids"] if texts else []
        truncated = sum(len(row) > max_length for row in ids)
        ids = [row if len(row) <= max_length else row[: max_length - 1] + row[-1:] for row in ids]
        device = self.clip.text_projection.weight.device
        chunks = []
        for start in range(0, len(ids), batch_size):
            tokens = self.tokenizer.pad({"input_ids": ids[start: start + batch_size]}, return_tensors="pt")
            output = self.clip.get_text_features(**{k: v.to(device) for k, v in tokens.items()})
            chunks.append(feature_output(output).float().cpu())
        dim = self.clip.config.projection_dim
        return (torch.cat(chunks) if chunks else torch.empty(0, dim)), truncated

    def prepare_prompts(self, prompts) -> None:
        """Encode the distinct generation prompts not seen yet, once each (kept in memory), in batches: what scoring
        uses (training reads them from the feature cache, or here when the cache is off). Prompts longer than the
        text encoder's window are truncated there, counted in one warning."""
        new = sorted({str(p) for p in prompts if str(p) not in self._text_features})  # per step: no set of all
        if not new:
            return
        features, truncated = self.encode_texts(new)
        if truncated:
            warnings.warn(f"{truncated} of {len(new)} generation prompt(s) are longer than the text encoder's "
                          f"{self.clip.text_model.config.max_position_embeddings} tokens and were truncated",
                          stacklevel=2)
        self._text_features.update(zip(new, features))

    def prompt_text_features(self, prompts) -> torch.Tensor:
        """Frozen text features of each image's generation prompt, (batch, dim), on the model's device."""
        if prompts is None or any(p is None or not str(p).strip() for p in prompts):
            raise InputError("this model reads each image's generation prompt (use_prompt=True): give a prompt for "
                             "every image")
        self.prepare_prompts(prompts)
        device = self.clip.text_projection.weight.device
        return torch.stack([self._text_features[str(p)] for p in prompts]).to(device)

    # --- scores ----------------------------------------------------------------------------------------
    def training_scale_scores(self, image_features: torch.Tensor, prompts=None,
                              text_features: torch.Tensor | None = None) -> torch.Tensor:
        """Scores on ``TRAINING_SCALE``, (batch, targets) (what the loss compares with ``to_training_scale``).
        A prompt-aware model reads ``text_features`` (the generation prompts' frozen features, e.g. cached) when
        given, else encodes ``prompts``."""
        return self.head(image_features, self.quality_prompt_features(), self._generation(prompts, text_features))

    def _generation(self, prompts, text_features):
        if not self.use_prompt:
            return None
        return text_features if text_features is not None else self.prompt_text_features(prompts)

    def training_scale_log_probs(self, image_features: torch.Tensor, prompts=None,
                                 text_features: torch.Tensor | None = None) -> torch.Tensor:
        """Log-probabilities of the distribution over the head's ``levels`` (on the training scale), (batch, targets,
        levels): a model with ``output: distribution`` only. Its mean is ``training_scale_scores``."""
        if not self.gives_distribution:
            raise InputError("this model predicts one score per target (output: score), not a distribution")
        logits = self.head.level_logits(image_features, self.quality_prompt_features(),
                                        self._generation(prompts, text_features))
        return logits.float().log_softmax(dim=-1)

    def mos_levels(self) -> torch.Tensor:
        """The levels of the distribution on each target's MOS scale: (targets, levels)."""
        return self.to_mos(self.head.levels.float()[:, None].expand(-1, len(self.targets))).T

    def distribution_of_features(self, image_features: torch.Tensor, prompts=None,
                                 text_features: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``mean`` (the score) and ``std`` (calibrated: times ``std_scale``) on the MOS scale, (batch, targets);
        ``probs`` (batch, targets, levels) over ``levels`` (targets, levels, on the MOS scale)."""
        probs = self.training_scale_log_probs(image_features, prompts, text_features).exp()
        mean, spread = mean_and_std(probs, self.head.levels.float())
        low, high = self.mos_scale[:, 0].float(), self.mos_scale[:, 1].float()
        unit = (high - low) / (TRAINING_SCALE[1] - TRAINING_SCALE[0])
        return {"mean": self.to_mos(mean), "std": spread * self.std_scale * unit, "probs": probs,
                "levels": self.mos_levels()}

    def predict_distribution(self, pixel_values: torch.Tensor, prompts=None) -> dict[str, torch.Tensor]:
        """The score distribution of a batch of normalised images: see ``distribution_of_features``."""
        return self.distribution_of_features(self.encode_images(pixel_values), prompts)

    def extra_columns(self) -> list[str]:
        """What ``score_table`` gives after the scores: ``<target>_std`` (a distribution model), then
        ``<target>_percentile`` (when the training MOS distribution was recorded)."""
        columns = [f"{t}_std" for t in self.targets] if self.gives_distribution else []
        return columns + ([f"{t}_percentile" for t in self.targets] if self.knows_percentiles else [])

    def score_table(self, image_features: torch.Tensor, prompts=None,
                    text_features: torch.Tensor | None = None) -> torch.Tensor:
        """Scores (batch, targets), then the ``extra_columns``: what ``clip-agiqa score`` and ``predict`` write."""
        if self.gives_distribution:
            described = self.distribution_of_features(image_features, prompts, text_features)
            scores, parts = described["mean"], [described["mean"], described["std"]]
        else:
            scores = self.to_mos(self.training_scale_scores(image_features, prompts, text_features))
            parts = [scores]
        if self.knows_percentiles:
            parts.append(percentile(scores, self.mos_quantiles))
        return torch.cat(parts, dim=1)

    def to_training_scale(self, mos: torch.Tensor) -> torch.Tensor:
        """MOS (batch, targets) on the data's scales -> the training scale."""
        low, high = self.mos_scale[:, 0].float(), self.mos_scale[:, 1].float()
        return (mos.float() - low) * ((TRAINING_SCALE[1] - TRAINING_SCALE[0]) / (high - low)) + TRAINING_SCALE[0]

    def to_mos(self, scores: torch.Tensor) -> torch.Tensor:
        """Scores (batch, targets) on the training scale -> the data's scales."""
        low, high = self.mos_scale[:, 0].float(), self.mos_scale[:, 1].float()
        return (scores.float() - TRAINING_SCALE[0]) * ((high - low) / (TRAINING_SCALE[1] - TRAINING_SCALE[0])) + low

    def score_features(self, image_features: torch.Tensor, prompts=None) -> torch.Tensor:
        """Predicted MOS (on ``mos_scale``) of precomputed image features: (batch, targets)."""
        return self.to_mos(self.training_scale_scores(image_features, prompts))

    def forward(self, pixel_values: torch.Tensor, prompts=None, return_distribution: bool = False):
        """Predicted MOS (on ``mos_scale``) of a batch of normalised images (and their generation prompts when
        ``use_prompt``): (batch,) for one target, (batch, targets) for several. ``return_distribution``: the dict
        of ``predict_distribution`` instead (a model with ``output: distribution``)."""
        if return_distribution:
            return self.predict_distribution(pixel_values, prompts)
        scores = self.score_features(self.encode_images(pixel_values), prompts)
        return scores.squeeze(-1) if len(self.targets) == 1 else scores

    # --- trained tensors ---------------------------------------------------------------------------------
    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """What training changed (context, head) and the output scale: never the frozen backbone."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(FROZEN_PREFIX)}

    def load_trained_state(self, state: dict[str, torch.Tensor], source: str, keep_scale: bool = False) -> None:
        """Load trained tensors after checking they fit this architecture: the same names, shapes and dtypes
        (never cast), finite values (a clear error names the source)."""
        expected = self.trained_state_dict()
        if keep_scale:
            expected.pop("mos_scale")
            state = {k: v for k, v in state.items() if k != "mos_scale"}
        if "mos_quantiles" not in state:  # saved before models kept them: no percentiles
            state = {**state, "mos_quantiles": expected["mos_quantiles"]}
        check_tensors(state, source)
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong_shape = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
                       for k, v in expected.items() if k in state and state[k].shape != v.shape]
        if missing or unexpected or wrong_shape:
            raise InputError(f"{source} does not fit this model (head, n_ctx, hidden_dim or categories differ): "
                             f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {wrong_shape[:5]}")
        wrong_dtype = [f"{k} {state[k].dtype} vs {v.dtype}" for k, v in expected.items() if state[k].dtype != v.dtype]
        if wrong_dtype:
            raise InputError(f"{source}: tensors of another dtype than this model's (never cast): {wrong_dtype[:5]}")
        check_quantiles(state["mos_quantiles"], source)
        self.load_state_dict(state, strict=False)

    def record_training_mos(self, mos: torch.Tensor) -> None:
        """Keep the quantiles of the training split's MOS (samples, targets) for percentiles."""
        self.mos_quantiles.copy_(quantiles_of(mos.reshape(len(mos), -1)).to(self.mos_quantiles))

    def check_fingerprint(self, saved: str | None, source: str) -> None:
        if saved is not None and saved != self.backbone_fingerprint:
            raise InputError(f"{source} was trained on backbone weights with fingerprint {saved}, but backbone "
                             f"{self.config.backbone!r} loaded here has {self.backbone_fingerprint}: "
                             f"the frozen weights differ")

    @classmethod
    def from_trained_weights(cls, weights: TrainedWeights) -> "CLIPAGIQAModel":
        """The model that trained weights (a checkpoint's, a saved folder's) belong to, with them loaded, in eval
        mode."""
        model = cls(weights.config)
        model.check_fingerprint(weights.backbone_fingerprint, weights.source)
        model.load_trained_state(weights.state, weights.source)
        model.training_info = weights.training_info
        return model.eval()

    # --- sharing: save_pretrained / from_pretrained ------------------------------------------------------
    def saved_config(self) -> dict:
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **self.config.to_dict(),
                "mos_scale": self.mos_scale.tolist(), "backbone_fingerprint": self.backbone_fingerprint,
                "image_settings": vars(self.image_settings), "training": self.training_info}

    def card_values(self) -> dict:
        """What the model card template (``MODEL_CARD``) shows."""
        training = self.training_info
        scales = ", ".join(f"{name} from {low:g} to {high:g}"
                           for name, (low, high) in zip(self.targets, self.mos_scale.tolist()))
        about = [(label, training[key]) for key, label in (("data", "Trained on"), ("target", "Target"),
                                                          ("split", "Split")) if training.get(key) is not None]
        metrics = sorted((k, v) for k, v in training.items()
                         if k.startswith(("val/", "test/")) and isinstance(v, (int, float)))
        percentiles = []
        if self.knows_percentiles:
            for name, row in zip(self.targets, self.mos_quantiles.tolist()):
                marks = ", ".join(f"{p}% {row[round(p / 100 * (len(row) - 1))]:.3g}" for p in (10, 25, 50, 75, 90))
                percentiles.append(f"Training MOS of {name} at percentiles {marks} (`score` writes "
                                   f"`{name}_percentile`: the share of training images with a lower MOS)")
        std_scale = ", ".join(f"{v:.3g}" for v in self.std_scale.tolist()) if self.gives_distribution else ""
        return {**self.config.to_dict(), "scales": scales, "backbone_fingerprint": self.backbone_fingerprint,
                "about": about, "metrics": metrics, "distribution": self.gives_distribution,
                "std_scale": std_scale, "percentiles": percentiles,
                "std_columns": ", ".join(f"`{t}_std`" for t in self.targets)}

    def generate_model_card(self, *args, **kwargs):
        return super().generate_model_card(*args, **{**self.card_values(), **kwargs})

    def _save_pretrained(self, save_directory: Path) -> None:
        """The mixin's hook behind ``save_pretrained`` and ``push_to_hub``: ``config.json`` is written here (so the
        mixin writes none of its own), each file beside its target and renamed into place (``files.atomic_write``)."""
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.trained_state_dict().items()}
        weights = safetensors_bytes(tensors, metadata={"format": FORMAT_NAME})
        with atomic_write(save_directory / WEIGHTS_FILE, "wb") as handle:
            handle.write(weights)
        config = {**self.saved_config(), "clip_agiqa_version": __version__,
                  "weights_sha256": hashlib.sha256(weights).hexdigest()}
        with atomic_write(save_directory / CONFIG_FILE) as handle:
            handle.write(json.dumps(config, indent=2) + "\n")
        with atomic_write(save_directory / CARD_FILE) as handle:
            handle.write(str(self.generate_model_card()))

    @classmethod
    def from_pretrained(  # type: ignore[override]  # adds backbone and map_location
            cls, pretrained_model_name_or_path, *, backbone: str | None = None,
            map_location: str | torch.device = "cpu", revision: str | None = None,
            cache_dir=None, force_download: bool = False, token=None,
            local_files_only: bool = False) -> "CLIPAGIQAModel":
        """A saved model (folder or hub id) in eval mode. ``config.json`` is checked (size, type, every field)
        before anything is built, and the weights (SHA-256, names, shapes, dtypes, finite values) before they
        load. ``backbone`` names the same CLIP elsewhere (e.g. a local copy); its fingerprint is checked.

        The mixin's own ``from_pretrained`` (and so its ``_from_pretrained`` hook) is not used: it reads
        ``config.json`` unchecked before the hook runs (a FIFO there would hang it, a huge file be read whole)."""
        name = str(pretrained_model_name_or_path)
        local = Path(name).expanduser()
        if local.is_file():
            raise InputError(f"{local}: only saved model folders are loaded here, never a checkpoint (a pickle). If "
                             f"you trust its source, run `clip-agiqa export {local} OUT_DIR` and load OUT_DIR")
        if local.is_dir():
            config_path, weights_path = local / CONFIG_FILE, local / WEIGHTS_FILE
            for path in (config_path, weights_path):
                if not path.exists():
                    raise InputError(f"{path} not found: a saved clip-agiqa model is a folder with {CONFIG_FILE} "
                                     f"and {WEIGHTS_FILE} (save_pretrained or `clip-agiqa export`)")
        elif name.startswith((".", "/", "~")):
            raise InputError(f"{local} not found: give a saved clip-agiqa model folder (with {CONFIG_FILE} and "
                             f"{WEIGHTS_FILE}) or a hub id")
        else:
            download = dict(revision=revision, cache_dir=cache_dir, force_download=force_download, token=token,
                            local_files_only=local_files_only)
            config_path, weights_path = hub_file(name, CONFIG_FILE, download), None
        config, saved = read_saved_config(config_path)
        if weights_path is None:
            weights_path = hub_file(name, WEIGHTS_FILE, download)
        state = read_weights_file(weights_path, saved["weights_sha256"])
        check_same_scale(config, state, name)
        model = cls(config.replace(backbone=backbone) if backbone else config)
        model.check_fingerprint(saved["backbone_fingerprint"], name)
        model.load_trained_state(state, str(weights_path))
        model.training_info = saved["training"]
        return model.eval().to(map_location)


def hub_file(model_id: str, filename: str, download: dict) -> Path:
    """One file of a model on the Hugging Face hub (or its cache); a missing model is one line."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError

    try:
        return Path(hf_hub_download(model_id, filename, **download))
    except (EntryNotFoundError, HFValidationError, OSError) as error:  # HTTP and offline errors are OSErrors
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise InputError(f"{model_id}: no such folder here, and no {filename} of a hub model by that id "
                         f"({reason})") from None


def load_model(path, device: str | torch.device | None = None, backbone: str | None = None) -> CLIPAGIQAModel:
    """The ``CLIPAGIQAModel`` of a saved folder or hub id, in eval mode (``CLIPAGIQAModel.from_pretrained``).
    ``backbone`` replaces the stored backbone name (e.g. the local folder where the same CLIP lies on this
    machine); its fingerprint is still checked."""
    model = CLIPAGIQAModel.from_pretrained(path, backbone=backbone)
    return model.to(device) if device is not None else model
