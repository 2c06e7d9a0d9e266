"""The narrow handle on the frozen encoders that data code receives instead of the model.

The datamodule and the feature cache need four things from the network: what identifies the frozen weights (so
cached features are keyed by it), the image settings (size, mean, std), and two encoders, one for pixels and one
for texts. ``CLIPAGIQAModel.frozen_encoder()`` hands them out; nothing else of the model reaches the data side.
This module imports nothing from the package, so both sides can import it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Sequence

import torch

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ImageSettings:
    """What the image transforms need to know about a backbone."""

    size: int = 224
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD


@dataclass(frozen=True)
class EncoderKey:
    """Everything about the frozen encoders that changes their features: every field is part of a cache key."""

    backbone: str
    fingerprint: str
    dtype: str = "float32"
    precision: str = "32-true"
    attn_implementation: str = "sdpa"  # sdpa and eager kernels round differently

    def describe(self) -> dict:
        return asdict(self)

    def folder_name(self) -> str:
        """The backbone's name (readable) and a hash of every field (one folder per encoder setting)."""
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", self.backbone).strip("_")
        digest = hashlib.sha256(json.dumps(self.describe(), sort_keys=True).encode()).hexdigest()
        return f"{name}-{digest[:16]}"


@dataclass(frozen=True)
class FrozenEncoder:
    """What data code may use of a model.

    Attributes:
        key: identifies the frozen weights, their dtype, the attention kernel and the precision they run under.
        image_settings: size, mean and std of the pixels ``encode_images`` takes.
        encode_images: normalised pixels (batch, 3, size, size), on any device -> projected features (batch, dim)
            on the encoders' device; called without grad.
        encode_texts: texts -> (projected features (n, dim) in fp32 on the CPU, how many texts were longer than
            the text encoder's window and were truncated); one batched tokenisation.
        device: where the encoders are now (they move with the model, e.g. when a Trainer places it).
    """

    key: EncoderKey
    image_settings: Any
    encode_images: Callable[[torch.Tensor], torch.Tensor]
    encode_texts: Callable[[Sequence[str]], tuple[torch.Tensor, int]]
    device: Callable[[], torch.device] = lambda: torch.device("cpu")

    def under_precision(self, precision: str) -> "FrozenEncoder":
        """The same encoders keyed by the precision a Trainer runs them under (autocast changes features)."""
        return replace(self, key=replace(self.key, precision=str(precision)))
