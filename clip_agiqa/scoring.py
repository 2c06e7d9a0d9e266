"""Scoring images from Python the way IQA users expect: ``scorer(image)`` -> a score, ``scorer([...])`` -> scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .callbacks import write_scores
from .data.records import list_images
from .data.images import load_rgb
from .data.transforms import ImageTransform


def _to_pil(item) -> Image.Image:
    """A PIL image, a path, or a float tensor (3, H, W) of RGB values in [0, 1] -> an RGB PIL image."""
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if isinstance(item, (str, Path)):
        return load_rgb(item)
    if isinstance(item, torch.Tensor) and item.dim() == 3 and item.shape[0] == 3:
        pixels = (item.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
        return Image.fromarray(np.ascontiguousarray(pixels))
    raise TypeError(f"cannot score a {type(item).__name__}: give a PIL image, a path, a (3, H, W) tensor "
                    "in [0, 1], or a list or (B, 3, H, W) batch of them")


class QualityScorer:
    """A trained CLIP-AGIQA ready to score images. Higher is better (``lower_better`` is False).

    Call it on a PIL image, a file path or a (3, H, W) tensor in [0, 1] to get one float; on a list of
    those, or a (B, 3, H, W) tensor, to get a list of floats. Images go through the same resize and
    centre crop as at test time.
    """

    lower_better = False

    def __init__(self, model, device: str | torch.device | None = None, batch_size: int = 32):
        if device is None:
            device = next(model.parameters()).device
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.transform = ImageTransform(model.image_settings, train=False)

    def __repr__(self) -> str:
        return f"QualityScorer(backbone={self.model.hparams.backbone!r}, head={self.model.hparams.head!r})"

    def __call__(self, images):
        single = not (isinstance(images, (list, tuple)) or (isinstance(images, torch.Tensor) and images.dim() == 4))
        items = [images] if single else list(images)
        scores = self.score_many(items)
        return scores[0] if single else scores

    @torch.no_grad()
    def score_many(self, items: list) -> list[float]:
        scores: list[float] = []
        for start in range(0, len(items), self.batch_size):
            chunk = items[start: start + self.batch_size]
            pixels = torch.stack([self.transform(_to_pil(item)) for item in chunk]).to(self.device)
            scores.extend(self.model(pixels).float().cpu().tolist())
        return scores

    def score_folder(self, folder, output=None) -> list[tuple[str, float]]:
        """Score every image under ``folder`` (sorted); with ``output``, also write ``file_name,score`` there."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"image folder {folder} not found")
        paths = list_images(folder)
        if not paths:
            raise ValueError(f"{folder} holds no images")
        rows = [(str(p.relative_to(folder)), s) for p, s in zip(paths, self.score_many(paths))]
        if output is not None:
            write_scores(output, rows)
        return rows
