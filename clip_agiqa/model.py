"""CLIPAGIQAModel: the network alone (frozen CLIP + learned prompt context + head), usable without Lightning.

It scores normalised pixels on the MOS scale it was trained on, owns its image preprocessing settings and
output scale, and shares the Hugging Face way: ``save_pretrained(dir)`` writes ``config.json`` (its
arguments, the backbone's id and weights fingerprint, the SHA-256 of the weights), ``model.safetensors``
(the trained tensors only: never the frozen backbone) and a ``README.md`` model card; ``from_pretrained``
reads a folder or a hub id (``push_to_hub`` comes from ``huggingface_hub.ModelHubMixin``).

Training happens on a fixed scale, ``TRAINING_SCALE`` (0-5, where the paper tuned its recipe): targets are
mapped linearly from the data's MOS scale onto it, and predictions back. So the paper's model on 0-5 data
is unchanged, and the same recipe fits data on any scale.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch
from huggingface_hub import ModelHubMixin, hf_hub_download
from safetensors.torch import load_file, save_file
from torch import nn

from . import __version__
from .errors import InputError
from .backbone import DEFAULT_BACKBONE, feature_output, load_backbone, weights_fingerprint
from .frozen import EncoderKey, FrozenEncoder
from .heads import build_head
from .prompts import DEFAULT_CATEGORIES, PromptLearner

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
FORMAT_NAME = "clip-agiqa"
FORMAT_VERSION = 2
TRAINING_SCALE = (0.0, 5.0)
FROZEN_PREFIX = "clip."
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# What fixes the shape of the trained tensors: a model started from another takes these from it.
ARCHITECTURE = {"backbone": DEFAULT_BACKBONE, "head": "concat", "categories": list(DEFAULT_CATEGORIES), "n_ctx": 16,
                "ctx_init": None, "class_specific_ctx": False, "hidden_dim": 512, "targets": ["quality"],
                "use_prompt": False}


def check_scales(scale, n_targets: int) -> list[list[float]]:
    """One (low, high) per target; a single pair is shared by all targets."""
    pairs = [scale] if len(scale) and not isinstance(scale[0], (list, tuple)) else list(scale)
    if len(pairs) == 1:
        pairs = pairs * n_targets
    if len(pairs) != n_targets or any(len(p) != 2 or not float(p[1]) > float(p[0]) for p in pairs):
        raise ValueError(f"a MOS scale is (low, high) with high > low, one per target ({n_targets}), got {scale}")
    return [[float(low), float(high)] for low, high in pairs]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class CLIPAGIQAModel(nn.Module, ModelHubMixin, library_name="clip-agiqa",
                     tags=["image-quality-assessment", "aigc", "clip"],
                     repo_url="https://github.com/clip-agiqa/clip-agiqa"):
    """Predicts the MOS of AI-generated images.

    Args:
        backbone: hub id, local folder, or ``random:tiny`` / ``random:vit-b-16`` (offline, random weights).
        head: ``concat`` (the paper) or ``similarity`` (image-prompt similarity over ordered quality levels).
        categories: quality words, ordered from worst to best.
        n_ctx: number of learned context vectors (ignored when ``ctx_init`` is given).
        ctx_init: words that initialise the context, e.g. ``"a photo of"``.
        class_specific_ctx: one context per category instead of one shared context.
        hidden_dim, dropout: size and dropout of the concat head.
        targets: the names of what it predicts, one output each (e.g. ``[quality, align]``).
        use_prompt: read each image's generation prompt (its frozen text features fused with the image's in
            the head); False is the paper's model.
        mos_scale: the (low, high) MOS scale of the data it learns, one per target (or one for all); scores
            come out on it.
        frozen_dtype: hold the frozen encoders in this dtype (``float16``/``bfloat16`` halve their memory).
        attn_implementation: ``sdpa`` or ``eager``.
    """

    def __init__(self, backbone: str = DEFAULT_BACKBONE, head: str = "concat",
                 categories: list[str] = list(DEFAULT_CATEGORIES), n_ctx: int = 16, ctx_init: str | None = None,
                 class_specific_ctx: bool = False, hidden_dim: int = 512, dropout: float = 0.5,
                 targets: list[str] = ("quality",), use_prompt: bool = False,
                 mos_scale: list = TRAINING_SCALE, frozen_dtype: str = "float32", attn_implementation: str = "sdpa"):
        super().__init__()
        if frozen_dtype not in DTYPES:
            raise ValueError(f"frozen_dtype must be one of {', '.join(DTYPES)}, got {frozen_dtype!r}")
        targets = [targets] if isinstance(targets, str) else list(targets)
        if not targets or len(set(targets)) != len(targets):
            raise ValueError(f"targets must name at least one target, each once, got {targets}")
        self.arguments = {"backbone": backbone, "head": head, "categories": list(categories), "n_ctx": n_ctx,
                          "ctx_init": ctx_init, "class_specific_ctx": class_specific_ctx,
                          "hidden_dim": hidden_dim, "dropout": dropout, "targets": targets,
                          "use_prompt": use_prompt, "frozen_dtype": frozen_dtype,
                          "attn_implementation": attn_implementation}
        self.targets = targets
        self.use_prompt = use_prompt
        loaded = load_backbone(backbone, attn_implementation, check_words=tuple(categories))
        self.clip = loaded.clip.requires_grad_(False)
        self.tokenizer = loaded.tokenizer
        self.image_settings = loaded.image_settings
        self.backbone_fingerprint = weights_fingerprint(self.clip)
        self.prompt_learner = PromptLearner(self.clip, self.tokenizer, categories, n_ctx, ctx_init,
                                            class_specific_ctx)
        self.clip.to(DTYPES[frozen_dtype])
        self.head = build_head(head, self.clip.config.projection_dim, len(categories), hidden_dim, dropout,
                               TRAINING_SCALE, n_outputs=len(targets), prompt_aware=use_prompt)
        self.register_buffer("mos_scale", torch.tensor(check_scales(mos_scale, len(targets)), dtype=torch.float64))
        self.training_info: dict = {}  # what it learned from (data, split, metrics): goes into the model card
        self._prompt_memo: tuple | None = None
        self._text_features: dict[str, torch.Tensor] = {}  # generation prompt -> frozen text features (CPU, fp32)
        self.clip.eval()

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

    def prompt_features(self) -> torch.Tensor:
        """Features of every category prompt, (n_categories, dim). They do not depend on the image: while the
        context trains they are computed afresh (one pass of a few short prompts); otherwise they are reused
        as long as the context tensor, its version (bumped by every in-place change, e.g. an optimiser step
        or ``load_state_dict``), device and dtype stay the same."""
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
        key = EncoderKey(self.arguments["backbone"], self.backbone_fingerprint,
                         str(self.clip.visual_projection.weight.dtype).removeprefix("torch."),
                         attn_implementation=self.arguments["attn_implementation"])
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
        text = None
        if self.use_prompt:
            text = text_features if text_features is not None else self.prompt_text_features(prompts)
        return self.head(image_features, self.prompt_features(), text)

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

    def forward(self, pixel_values: torch.Tensor, prompts=None) -> torch.Tensor:
        """Predicted MOS (on ``mos_scale``) of a batch of normalised images (and their generation prompts when
        ``use_prompt``): (batch,) for one target, (batch, targets) for several."""
        scores = self.score_features(self.encode_images(pixel_values), prompts)
        return scores.squeeze(-1) if len(self.targets) == 1 else scores

    # --- trained tensors ---------------------------------------------------------------------------------
    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """What training changed (context, head) and the output scale: never the frozen backbone."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(FROZEN_PREFIX)}

    def load_trained_state(self, state: dict[str, torch.Tensor], source: str, keep_scale: bool = False) -> None:
        """Load trained tensors after checking they fit this architecture (a clear error names the source)."""
        expected = self.trained_state_dict()
        if keep_scale:
            expected.pop("mos_scale")
            state = {k: v for k, v in state.items() if k != "mos_scale"}
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong_shape = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
                       for k, v in expected.items() if k in state and state[k].shape != v.shape]
        if missing or unexpected or wrong_shape:
            raise ValueError(f"{source} does not fit this model (head, n_ctx, hidden_dim or categories differ): "
                             f"missing {missing}, unexpected {unexpected}, wrong shape {wrong_shape}")
        self.load_state_dict(state, strict=False)

    def check_fingerprint(self, saved: str | None, source: str) -> None:
        if saved is not None and saved != self.backbone_fingerprint:
            raise ValueError(f"{source} was trained on backbone weights with fingerprint {saved}, but backbone "
                             f"{self.arguments['backbone']!r} loaded here has {self.backbone_fingerprint}: "
                             f"the frozen weights differ")

    # --- sharing: save_pretrained / from_pretrained ------------------------------------------------------
    def saved_config(self) -> dict:
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **self.arguments,
                "mos_scale": self.mos_scale.tolist(), "backbone_fingerprint": self.backbone_fingerprint,
                "image_settings": vars(self.image_settings), "training": self.training_info}

    def _save_pretrained(self, save_directory: Path) -> None:
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.trained_state_dict().items()}
        save_file(tensors, str(save_directory / WEIGHTS_FILE), metadata={"format": FORMAT_NAME})
        config = {**self.saved_config(), "clip_agiqa_version": __version__,
                  "weights_sha256": file_sha256(save_directory / WEIGHTS_FILE)}
        (save_directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        (save_directory / CARD_FILE).write_text(model_card(config))

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision, cache_dir, force_download, local_files_only, token,
                         config: dict | None = None, backbone: str | None = None,
                         map_location: str | torch.device = "cpu", **model_kwargs) -> "CLIPAGIQAModel":
        folder = Path(model_id)
        if config is None:
            raise FileNotFoundError(f"{model_id}: no {CONFIG_FILE}; a saved clip-agiqa model is a folder with "
                                    f"{CONFIG_FILE} and {WEIGHTS_FILE} (save_pretrained or `clip-agiqa export`)")
        check_config(config, model_id)
        if folder.is_dir():
            weights_path = folder / WEIGHTS_FILE
            if not weights_path.is_file():
                raise FileNotFoundError(f"{weights_path} not found: the saved model is incomplete")
        else:
            weights_path = Path(hf_hub_download(model_id, WEIGHTS_FILE, revision=revision, cache_dir=cache_dir,
                                                force_download=force_download, local_files_only=local_files_only,
                                                token=token))
        # A backbone given here names the same CLIP elsewhere (e.g. a local copy); its fingerprint is checked.
        model_kwargs["backbone"] = backbone or config["backbone"]
        model_kwargs["mos_scale"] = config.get("mos_scale", TRAINING_SCALE)
        model = cls(**model_kwargs)
        model.check_fingerprint(config.get("backbone_fingerprint"), model_id)
        model.load_trained_state(verified_weights(config, weights_path), str(weights_path))
        model.training_info = dict(config.get("training") or {})
        return model.eval().to(map_location)


def check_config(config: dict, source: str) -> None:
    if config.get("format") != FORMAT_NAME:
        raise ValueError(f"{source}/{CONFIG_FILE} is not a clip-agiqa model (format {config.get('format')!r})")
    if config.get("format_version", 0) != FORMAT_VERSION:
        raise ValueError(f"{source}/{CONFIG_FILE} has format_version {config.get('format_version')}; this "
                         f"clip-agiqa reads {FORMAT_VERSION}: export the checkpoint again with this version")


def verified_weights(config: dict, weights_path: Path) -> dict[str, torch.Tensor]:
    """The saved tensors, after checking the file is the one its config.json describes."""
    if file_sha256(weights_path) != config.get("weights_sha256"):
        raise ValueError(f"{weights_path} does not match the SHA-256 recorded in its {CONFIG_FILE}: "
                         f"the weights are damaged or were changed; get the model again")
    return load_file(str(weights_path))


def model_card(config: dict) -> str:
    """A README.md for the saved model: what it is, what it learned from, its scale and metrics, how to use it."""
    training = config.get("training") or {}
    scales = ", ".join(f"{name} from {low:g} to {high:g}" for name, (low, high) in
                       zip(config["targets"], config["mos_scale"]))
    lines = [
        "---", "library_name: clip-agiqa", "tags: [image-quality-assessment, aigc, clip]", "---", "",
        "# CLIP-AGIQA quality model", "",
        "Predicts the mean opinion score (MOS) people give an AI-generated image: a frozen CLIP "
        f"(`{config['backbone']}`), learned prompt context ({config['n_ctx']} vectors, categories "
        f"{', '.join(config['categories'])}) and a `{config['head']}` head (CLIP-AGIQA, Tang et al., ICPR 2024).", "",
        f"- Outputs (MOS, higher is better): {scales}.",
        f"- Reads the generation prompt: {'yes (pass prompt=...)' if config['use_prompt'] else 'no'}.",
        f"- Backbone weights fingerprint: `{config['backbone_fingerprint']}` (checked on load).",
    ]
    for key, label in (("data", "Trained on"), ("target", "Target"), ("split", "Split")):
        if training.get(key) is not None:
            lines.append(f"- {label}: {training[key]}")
    metrics = {k: v for k, v in training.items() if k.startswith(("val/", "test/")) and isinstance(v, (int, float))}
    if metrics:
        lines += ["", "| metric | value |", "|---|---|"] + [f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items())]
    lines += ["", "## Use", "", "```python", "import clip_agiqa", "",
              "scorer = clip_agiqa.load(\"<this folder or hub id>\")", "scorer(\"image.png\")        # one score",
              "scorer.score_folder(\"images/\", \"scores.csv\")", "```", "",
              "The frozen backbone is not stored here: it is loaded from its own id and its fingerprint checked.", ""]
    return "\n".join(lines)
