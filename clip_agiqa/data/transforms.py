"""Image transforms from a backbone's image settings, written with PIL and torch (no torchvision).

``ImageSettings`` lives here, on the data side: the backbone reports its settings in this form, and data
code never needs the model to build its transforms."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

RESIZE_INTERPOLATION = Image.Resampling.BICUBIC  # CLIP's preprocessing; part of the feature cache's key


@dataclass(frozen=True)
class ImageSettings:
    """What the image transforms need to know about a backbone."""

    size: int = 224
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def random_crop_box(width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float],
                    generator: torch.Generator | None) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a random crop, as torchvision's RandomResizedCrop draws it."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * _uniform(scale[0], scale[1], generator)
        aspect = math.exp(_uniform(*log_ratio, generator))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left = int(torch.randint(0, width - w + 1, (), generator=generator))
            top = int(torch.randint(0, height - h + 1, (), generator=generator))
            return left, top, left + w, top + h
    # Fallback: the largest centred crop within the ratio range.
    in_ratio = width / height
    w, h = (width, int(round(width / ratio[0]))) if in_ratio < ratio[0] else (
        (int(round(height * ratio[1])), height) if in_ratio > ratio[1] else (width, height))
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


class ImageTransform:
    """PIL image -> normalised float tensor (3, size, size).

    Training: random resized crop + horizontal flip. Otherwise: resize the shorter side + centre crop.
    A ``generator`` makes a training view reproducible (the feature cache draws views this way).
    """

    def __init__(self, settings: ImageSettings, train: bool, crop_scale: tuple[float, float] = (0.08, 1.0),
                 crop_ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: bool = True):
        self.settings = settings
        self.train = train
        self.crop_scale = tuple(crop_scale)
        self.crop_ratio = tuple(crop_ratio)
        self.flip = flip
        self._mean = torch.tensor(settings.mean).view(3, 1, 1)
        self._std = torch.tensor(settings.std).view(3, 1, 1)

    def describe(self) -> dict:
        """Every setting that changes the output (used to key cached features)."""
        return {"size": self.settings.size, "mean": list(self.settings.mean), "std": list(self.settings.std),
                "train": self.train, "crop_scale": list(self.crop_scale), "crop_ratio": list(self.crop_ratio),
                "flip": self.flip, "interpolation": Image.Resampling(RESIZE_INTERPOLATION).name}

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        size = self.settings.size
        if self.train:
            box = random_crop_box(image.width, image.height, self.crop_scale, self.crop_ratio, generator)
            image = image.resize((size, size), RESIZE_INTERPOLATION, box=box)
            if self.flip and float(torch.rand((), generator=generator)) < 0.5:
                image = image.transpose(Image.FLIP_LEFT_RIGHT)
        else:
            scale = size / min(image.width, image.height)
            width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
            image = image.resize((width, height), RESIZE_INTERPOLATION)
            left, top = (width - size) // 2, (height - size) // 2
            image = image.crop((left, top, left + size, top + size))
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (pixels - self._mean) / self._std

