"""Image transforms from a backbone's image settings (``frozen.ImageSettings``), written with PIL and torch (no
torchvision)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import InputError
from ..frozen import ImageSettings

RESIZE_INTERPOLATION = Image.Resampling.BICUBIC  # CLIP's preprocessing; part of the feature cache's key


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def low_high(values: Sequence[float]) -> tuple[float, float]:
    """A (low, high) range as a tuple (a config gives it as a list)."""
    low, high = values
    return low, high


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


# Training augmentations (``augment``): what a training view is; val/test/score views are the same for all.
#   resized_crop: a random crop of area ``crop_scale`` resized to the input size, and a flip (the paper's);
#   crop: the image at the eval view's pixel scale, a random input-size window of it (never rescaled: blur,
#         noise and detail look as in the views the model is tested and scored on), and a flip;
#   none: the eval view itself.
AUGMENTATIONS = ("resized_crop", "crop", "none")


def checked_augment(augment: str) -> str:
    if augment not in AUGMENTATIONS:
        raise InputError(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {str(augment)[:80]!r}")
    return augment


class ImageTransform:
    """PIL image -> normalised float tensor (3, size, size).

    Training: the ``augment`` view (see ``AUGMENTATIONS``; default: random resized crop + horizontal flip).
    Otherwise: resize the shorter side + centre crop. A ``generator`` makes a training view reproducible (the
    feature cache draws views this way).
    """

    def __init__(self, settings: ImageSettings, train: bool, crop_scale: tuple[float, float] = (0.08, 1.0),
                 crop_ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: bool = True, augment: str = "resized_crop"):
        self.settings = settings
        self.train = train
        self.crop_scale = low_high(crop_scale)
        self.crop_ratio = low_high(crop_ratio)
        self.flip = flip
        self.augment = checked_augment(augment)
        self._mean = torch.tensor(settings.mean).view(3, 1, 1)
        self._std = torch.tensor(settings.std).view(3, 1, 1)

    def describe(self) -> dict:
        """Every setting that changes the output (used to key cached features)."""
        settings = {"size": self.settings.size, "mean": list(self.settings.mean), "std": list(self.settings.std),
                    "train": self.train, "crop_scale": list(self.crop_scale), "crop_ratio": list(self.crop_ratio),
                    "flip": self.flip, "interpolation": Image.Resampling(RESIZE_INTERPOLATION).name}
        if self.train and self.augment != "resized_crop":  # absent for the default: caches made before stay valid
            settings["augment"] = self.augment
        return settings

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        size = self.settings.size
        if self.train and self.augment == "resized_crop":
            box = random_crop_box(image.width, image.height, self.crop_scale, self.crop_ratio, generator)
            image = image.resize((size, size), RESIZE_INTERPOLATION, box=box)
        else:
            image = self._at_eval_scale(image)
            width, height = image.size
            if self.train and self.augment == "crop":
                left = int(torch.randint(0, width - size + 1, (), generator=generator))
                top = int(torch.randint(0, height - size + 1, (), generator=generator))
            else:
                left, top = (width - size) // 2, (height - size) // 2
            image = image.crop((left, top, left + size, top + size))
        if self.train and self.augment != "none" and self.flip and float(torch.rand((), generator=generator)) < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (pixels - self._mean) / self._std

    def _at_eval_scale(self, image: Image.Image) -> Image.Image:
        """The image with its shorter side at the input size: the pixel scale of every eval view."""
        size = self.settings.size
        scale = size / min(image.width, image.height)
        width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
        return image.resize((width, height), RESIZE_INTERPOLATION)
