"""CLIPAGIQAConfig: the one list of a ``CLIPAGIQAModel``'s arguments, their defaults and their valid values.

The model takes it, ``save_pretrained`` writes it into ``config.json`` and ``from_pretrained`` reads it back,
a training checkpoint carries it in its hyper-parameters, and the training task, ``init_from`` and the CLI's
checks against a checkpoint all derive their lists of fields from it. Fields marked ``architecture`` fix the
shape of the trained tensors: a model started from another (``init_from``, ``--ckpt_path``) takes them from it.

Every value is checked here (type and range) before anything is built, because a config may come from a
file someone else made. This module is light (no torch), so the CLI can read it before heavy imports.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import InputError

DEFAULT_BACKBONE = "openai/clip-vit-base-patch16"
DEFAULT_CATEGORIES = ("terrible", "bad", "poor", "average", "good", "perfect")
HEADS = ("concat", "similarity")
PROMPT_NORMS = ("l2", "l1")
OUTPUTS = ("score", "distribution")
MAX_LEVELS = 256
FROZEN_DTYPES = ("float32", "float16", "bfloat16")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
# The fixed scale the model trains on (where the paper tuned its recipe): targets are mapped onto it from
# their ``mos_scale`` and scores back.
TRAINING_SCALE = (0.0, 5.0)
# Bounds that keep a hostile config from building a huge model (the paper: hidden 512, 16 context vectors).
MAX_HIDDEN_DIM = 8192
MAX_N_CTX = 75  # CLIP's text window is 77 tokens, start and end included; the prompt learner checks the rest
MAX_WORDS = 64  # categories or targets
MAX_WHITEN = 100.0  # a shrinkage far above the correlations' eigenvalues (mean 1) leaves them as they are
MAX_TEXT = 1000  # characters of a backbone name, a category, a target or ctx_init

ARCHITECTURE_FIELD = {"architecture": True}
# What a fit with no model options trains (``CLIPAGIQA``; chosen with benchmarks/task_suite.py): the published
# network with these changes. ``CLIPAGIQAConfig``'s own defaults stay the
# published network, which the paper parts spell out (experiments/model/clip_agiqa.yaml).
RECIPE_DEFAULTS = {"standardise": True, "whiten": 0.1, "prompt_norm": "l1", "output": "distribution", "n_ctx": 8,
                   "hidden_dim": 256}
# standardise, whiten, prompt_norm and output: the concat head's (whiten only where it standardises); output only
# where the data gives the raters' std (without it nothing trains each picture's spread, and the score learned worse
# on the prompt-aware demo)
# The optimisation of that default recipe (the training task's defaults), chosen with the architecture above on
# generated task families and judged on others held out (benchmarks/task_suite.py, docs "The task suite").
TRAINING_DEFAULTS: dict[str, Any] = {"dropout": 0.1, "input_dropout": 0.0, "optimizer": "adamw", "lr": 0.003,
                                     "weight_decay": 1e-4, "warmup_lr": 3e-4}


def _default_categories() -> list[str]:
    return list(DEFAULT_CATEGORIES)


@dataclass(frozen=True)
class CLIPAGIQAConfig:
    """A CLIP-AGIQA model's arguments.

    Args:
        backbone: hub id, local folder, or ``random:tiny`` / ``random:vit-b-16`` (offline, random weights).
        head: ``concat`` (the paper) or ``similarity`` (image-prompt similarity over ordered quality levels).
        categories: quality words, ordered from worst to best.
        n_ctx: number of learned context vectors (ignored when ``ctx_init`` is given).
        ctx_init: words that initialise the context, e.g. ``"a photo of"``.
        class_specific_ctx: one context per category instead of one shared context.
        hidden_dim: hidden size of the concat head.
        targets: the names of what it predicts, one output each (e.g. ``[quality, align]``).
        use_prompt: read each image's generation prompt (its frozen text features fused with the image's in
            the head); False is the paper's model.
        output: ``score`` (one number per target: the paper) or ``distribution`` (per target a distribution over
            ordered levels spanning the training scale: its mean is the score, its spread the certainty, trained
            against the raters' distribution where the data gives their std; see ``calibration.py``).
        levels: how many levels the concat head's distribution has (the similarity head's levels are its
            categories).
        standardise: the concat head standardises its image-dependent inputs with the training data's statistics
            (mean and variance per feature, kept with the model), as a linear probe on frozen features does.
        whiten: with ``standardise``, the concat head also decorrelates those inputs (ZCA whitening, the
            correlation matrix's eigenvalues raised by this shrinkage, e.g. 0.1); 0: standardised only (the
            paper standardises nothing). Frozen CLIP features crowd into a few directions, which a head trained by
            gradient steps learns far faster than the rest (see ``heads.FeatureStandardiser``).
        prompt_norm: how the concat head reads the quality prompts' features, which do not depend on the image
            (a learned constant input): ``l2``, each prompt's features L2-normalised (the paper); ``l1``, that
            block then scaled to unit L1 norm (the default recipe). Under Adam every weight moves by about the
            learning rate a step, so with ``l2`` the thousands of weights from the prompt block into a hidden unit
            move its offset a hundred times faster than one bias does; that cost the default recipe a sixth of its
            test SRCC on some task families of the task suite.
        dropout: dropout of the concat head.
        input_dropout: dropout of the concat head's input; None: ``dropout`` (the paper drops inputs and hidden
            units alike). The default recipe drops none of its standardised inputs.
        mos_scale: the (low, high) MOS scale of the data it learns, one per target (or one for all); scores
            come out on it.
        frozen_dtype: hold the frozen encoders in this dtype (``float16``/``bfloat16`` halve their memory).
        attn_implementation: ``sdpa`` or ``eager``.
    """

    backbone: str = field(default=DEFAULT_BACKBONE, metadata=ARCHITECTURE_FIELD)
    head: str = field(default="concat", metadata=ARCHITECTURE_FIELD)
    categories: list[str] = field(default_factory=_default_categories, metadata=ARCHITECTURE_FIELD)
    n_ctx: int = field(default=16, metadata=ARCHITECTURE_FIELD)
    ctx_init: str | None = field(default=None, metadata=ARCHITECTURE_FIELD)
    class_specific_ctx: bool = field(default=False, metadata=ARCHITECTURE_FIELD)
    hidden_dim: int = field(default=512, metadata=ARCHITECTURE_FIELD)
    targets: list[str] = field(default_factory=lambda: ["quality"], metadata=ARCHITECTURE_FIELD)
    use_prompt: bool = field(default=False, metadata=ARCHITECTURE_FIELD)
    output: str = field(default="score", metadata=ARCHITECTURE_FIELD)
    levels: int = field(default=21, metadata=ARCHITECTURE_FIELD)
    standardise: bool = field(default=False, metadata=ARCHITECTURE_FIELD)
    whiten: float = field(default=0.0, metadata=ARCHITECTURE_FIELD)
    prompt_norm: str = field(default="l2", metadata=ARCHITECTURE_FIELD)
    dropout: float = 0.5
    input_dropout: float | None = None
    mos_scale: list[list[float]] = field(default_factory=lambda: [list(TRAINING_SCALE)])
    frozen_dtype: str = "float32"
    attn_implementation: str = "sdpa"

    def __post_init__(self) -> None:
        targets = [self.targets] if isinstance(self.targets, str) else self.targets
        checked: dict[str, Any] = {
            "backbone": _text("backbone", self.backbone),
            "head": _choice("head", self.head, HEADS),
            "categories": _words("categories", self.categories),
            "n_ctx": _integer("n_ctx", self.n_ctx, 1, MAX_N_CTX),
            "ctx_init": None if self.ctx_init is None else _text("ctx_init", self.ctx_init),
            "class_specific_ctx": _boolean("class_specific_ctx", self.class_specific_ctx),
            "hidden_dim": _integer("hidden_dim", self.hidden_dim, 1, MAX_HIDDEN_DIM),
            "targets": _words("targets", targets),
            "use_prompt": _boolean("use_prompt", self.use_prompt),
            "output": _choice("output", self.output, OUTPUTS),
            "levels": _integer("levels", self.levels, 2, MAX_LEVELS),
            "standardise": _boolean("standardise", self.standardise),
            "whiten": _number("whiten", self.whiten),
            "prompt_norm": _choice("prompt_norm", self.prompt_norm, PROMPT_NORMS),
            "dropout": _number("dropout", self.dropout),
            "input_dropout": None if self.input_dropout is None else _number("input_dropout", self.input_dropout),
            "frozen_dtype": _choice("frozen_dtype", self.frozen_dtype, FROZEN_DTYPES),
            "attn_implementation": _choice("attn_implementation", self.attn_implementation, ATTN_IMPLEMENTATIONS),
        }
        for name in ("dropout", "input_dropout"):
            if checked[name] is not None and not 0 <= checked[name] < 1:
                raise InputError(f"{name} must be at least 0 and below 1, got {_show(getattr(self, name))}")
        if not 0 <= checked["whiten"] <= MAX_WHITEN:
            raise InputError(f"whiten must be at least 0 and at most {MAX_WHITEN}, got {_show(self.whiten)}")
        if checked["whiten"] and not checked["standardise"]:
            raise InputError(f"whiten {_show(self.whiten)} needs standardise true (it decorrelates the standardised "
                             f"inputs); give whiten 0 to standardise nothing")
        checked["mos_scale"] = check_mos_scale(self.mos_scale, len(checked["targets"]))
        for name, value in checked.items():
            object.__setattr__(self, name, value)  # normalised: lists, floats (frozen dataclass)

    @classmethod
    def checked(cls, source: str, **values) -> "CLIPAGIQAConfig":
        """A config from values read from ``source`` (a file, a checkpoint, options): a mistake or an unknown
        field is one line that names the source."""
        unknown = sorted(set(values) - set(FIELDS))
        if unknown:
            raise InputError(f"{source}: unknown model field(s) {', '.join(map(_show, unknown))}; the fields are "
                             f"{', '.join(FIELDS)}")
        try:
            return cls(**values)
        except InputError as error:
            raise InputError(f"{source}: {error}") from None

    def architecture(self) -> dict:
        """The fields that fix the shape of the trained tensors."""
        return {name: getattr(self, name) for name in ARCHITECTURE}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "CLIPAGIQAConfig":
        return dataclasses.replace(self, **changes)


FIELDS = tuple(f.name for f in dataclasses.fields(CLIPAGIQAConfig))
ARCHITECTURE = tuple(f.name for f in dataclasses.fields(CLIPAGIQAConfig) if f.metadata.get("architecture"))


def same_value(a, b) -> bool:
    """Equal as configured values: a tuple and a list with the same items are the same option."""
    def normal(value):
        return [normal(v) for v in value] if isinstance(value, (list, tuple)) else value

    return normal(a) == normal(b)


def check_mos_scale(scale, n_targets: int) -> list[list[float]]:
    """One finite (low, high) with high > low per target; a single pair is shared by all targets."""
    if not isinstance(scale, (list, tuple)) or not scale:
        raise InputError(f"mos_scale must be (low, high) or one such pair per target, got {_show(scale)}")
    pairs = [scale] if not isinstance(scale[0], (list, tuple)) else list(scale)
    if len(pairs) == 1:
        pairs = pairs * n_targets
    valid = len(pairs) == n_targets and all(
        isinstance(pair, (list, tuple)) and len(pair) == 2 and all(_is_number(v) and math.isfinite(v) for v in pair)
        and pair[1] > pair[0] for pair in pairs)
    if not valid:
        raise InputError(f"mos_scale must be finite (low, high) pairs with high > low, one per target "
                         f"({n_targets}) or one for all, got {_show(scale)}")
    return [[float(low), float(high)] for low, high in pairs]


# --- the checks behind each field ---------------------------------------------------------------------
def _show(value) -> str:
    """A value in an error message, cut short (it may come from a hostile file)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text(name: str, value) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
        raise InputError(f"{name} must be a non-empty text of at most {MAX_TEXT} characters, got {_show(value)}")
    return value


def _choice(name: str, value, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"{name} must be one of {', '.join(choices)}, got {_show(value)}")
    return value


def _words(name: str, value) -> list[str]:
    if (not isinstance(value, (list, tuple)) or not 1 <= len(value) <= MAX_WORDS
            or not all(isinstance(w, str) and w.strip() and len(w) <= MAX_TEXT for w in value)
            or len(set(value)) != len(value)):
        raise InputError(f"{name} must be a list of 1 to {MAX_WORDS} distinct non-empty words, got {_show(value)}")
    return list(value)


def _integer(name: str, value, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InputError(f"{name} must be an integer from {low} to {high}, got {_show(value)}")
    return int(value)


def _boolean(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{name} must be true or false, got {_show(value)}")
    return value


def _number(name: str, value) -> float:
    if not _is_number(value) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {_show(value)}")
    return float(value)


DEFAULTS = CLIPAGIQAConfig().to_dict()  # after the checks it runs
