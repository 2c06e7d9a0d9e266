"""Scoring images from Python the way IQA users expect: ``scorer(image)`` -> a score, ``scorer([...])`` -> scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .score_csv import warn_unreadable, write_scores
from .data.records import list_images
from .data.images import load_rgb, to_rgb
from .data.transforms import ImageTransform


def _to_pil(item) -> Image.Image:
    """A PIL image, a path, or a float tensor (3, H, W) of RGB values in [0, 1] -> an RGB PIL image."""
    if isinstance(item, Image.Image):
        return to_rgb(item)
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
        arguments = self.model.arguments
        return (f"QualityScorer(backbone={arguments['backbone']!r}, head={arguments['head']!r}, "
                f"score_range={self.score_range})")

    @property
    def score_range(self) -> tuple[float, float]:
        """The MOS scale the model was trained on (scores may fall slightly outside it)."""
        low, high = self.model.mos_scale.tolist()
        return low, high

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
        """Score every image under ``folder`` (sorted); with ``output``, also write ``file_name,score,error``.

        An unreadable image does not stop the run: it gets a NaN score (an empty one and its reason in the
        CSV) and one warning names them all."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"image folder {folder} not found")
        paths = list_images(folder)
        if not paths:
            raise ValueError(f"{folder} holds no images")
        images, errors = {}, {}
        for path in paths:
            name = str(path.relative_to(folder))
            try:
                images[name] = load_rgb(path)
            except ValueError as error:
                errors[name] = str(error).split(": ", 1)[-1]
        scores = dict(zip(images, self.score_many(list(images.values()))))
        rows = [(name, scores.get(name, float("nan"))) for name in (str(p.relative_to(folder)) for p in paths)]
        warn_unreadable(errors, len(rows), output or folder)
        if output is not None:
            write_scores(output, rows, errors)
        return rows
