"""Scoring images the way IQA users expect, from Python and the command line; only ``CLIPAGIQAModel``, no Lightning.

Python: ``scorer(image)`` -> a score, ``scorer([...])`` -> scores, ``scorer(image, prompt="...")`` for a model
that reads the generation prompt; a model with several targets gives ``{target: score}`` per image.
Command line: ``clip-agiqa score MODEL INPUT... --output scores.csv`` (see ``main``).
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .data.images import load_rgb, to_rgb
from .data.records import (IMAGE_EXTENSIONS, column, list_images, parse_names, read_csv_rows, require_unique,
                           table)
from .data.transforms import ImageTransform
from .export import load_model
from .score_csv import warn_unreadable, write_scores

PRECISIONS = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


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

    Call it on a PIL image, a file path or a (3, H, W) tensor in [0, 1] to get one float (a dict
    ``{target: float}`` for a model with several targets); on a list of those, or a (B, 3, H, W) tensor, to
    get a list. A model that reads generation prompts needs ``prompt=``: one text for all, or one per image.
    Images go through the same resize and centre crop as at test time.

    Args:
        precision: ``32``, ``bf16`` or ``16`` (autocast on the device; the heads stay in fp32).
    """

    lower_better = False

    def __init__(self, model, device: str | torch.device | None = None, batch_size: int = 32,
                 precision: str = "32", progress: bool = False):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if device is None:
            device = next(model.parameters()).device
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.precision = precision
        self.progress = progress
        self.transform = ImageTransform(model.image_settings, train=False)

    def __repr__(self) -> str:
        arguments = self.model.arguments
        return (f"QualityScorer(backbone={arguments['backbone']!r}, head={arguments['head']!r}, "
                f"targets={self.targets}, use_prompt={self.model.use_prompt})")

    @property
    def targets(self) -> list[str]:
        return self.model.targets

    @property
    def score_range(self):
        """The MOS scale of the training data: (low, high), or {target: (low, high)} for several targets."""
        scales = {t: tuple(pair) for t, pair in zip(self.targets, self.model.mos_scale.tolist())}
        return next(iter(scales.values())) if len(scales) == 1 else scales

    def __call__(self, images, prompt=None):
        single = not (isinstance(images, (list, tuple)) or (isinstance(images, torch.Tensor) and images.dim() == 4))
        items = [images] if single else list(images)
        rows = [self._as_result(scores) for scores in self.score_many(items, self._prompts(prompt, len(items)))]
        return rows[0] if single else rows

    def _as_result(self, scores: list[float]):
        return scores[0] if len(scores) == 1 else dict(zip(self.targets, scores))

    def _prompts(self, prompt, count: int) -> list[str] | None:
        if prompt is None:
            return None
        prompts = [prompt] * count if isinstance(prompt, str) else list(prompt)
        if len(prompts) != count:
            raise ValueError(f"give one prompt for all images or one per image: {len(prompts)} prompts, "
                             f"{count} images")
        return prompts

    def _autocast(self):
        dtype = PRECISIONS[self.precision]
        return torch.autocast(self.device.type, dtype=dtype) if dtype is not None else nullcontext()

    @torch.no_grad()
    def score_many(self, items: list, prompts: list[str] | None = None) -> list[list[float]]:
        """One list of scores (one per target) per item, batched on the scorer's device."""
        if self.model.use_prompt and prompts is None:
            raise ValueError("this model reads each image's generation prompt: pass prompt= (one text for all "
                             "images, or one per image)")
        scores: list[list[float]] = []
        bar = tqdm(total=len(items), unit="img", disable=not self.progress, leave=False)
        for start in range(0, len(items), self.batch_size):
            chunk = items[start: start + self.batch_size]
            pixels = torch.stack([self.transform(_to_pil(item)) for item in chunk]).to(self.device)
            chunk_prompts = prompts[start: start + self.batch_size] if prompts is not None else None
            with self._autocast():
                features = self.model.encode_images(pixels)
            values = self.model.score_features(features, chunk_prompts if self.model.use_prompt else None)
            scores.extend(values.float().cpu().tolist())
            bar.update(len(chunk))
        bar.close()
        return scores

    def score_files(self, files: dict[str, Path], output=None, prompts: dict[str, str] | None = None) -> list:
        """Score named files (name -> path, in order). An unreadable file does not stop the run: it gets NaN
        scores (empty ones and its reason in the CSV) and one warning names them all. With ``output``, also
        write the CSV (``file_name[,prompt],score...,error``)."""
        images, errors = {}, {}
        for name, path in files.items():
            try:
                images[name] = load_rgb(path)
            except (ValueError, FileNotFoundError) as error:
                errors[name] = str(error).split(": ", 1)[-1]
        prompt_list = [prompts[name] for name in images] if prompts is not None else None
        scored = dict(zip(images, self.score_many(list(images.values()), prompt_list)))
        nan = [float("nan")] * len(self.targets)
        rows = [(name, scored.get(name, nan)) for name in files]
        warn_unreadable(errors, len(rows), output or "the scores")
        if output is not None:
            write_scores(output, rows, errors, self.targets, prompts)
        return [(name, self._as_result(scores)) for name, scores in rows]

    def score_folder(self, folder, output=None, prompt: str | None = None) -> list:
        """Score every image under ``folder`` (recursively, sorted); see ``score_files``."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"image folder {folder} not found")
        files = {str(p.relative_to(folder)): p for p in list_images(folder)}
        if not files:
            raise ValueError(f"{folder} holds no images")
        return self.score_files(files, output, {name: prompt for name in files} if prompt is not None else None)


def load(path, device: str | torch.device | None = None, backbone: str | None = None, batch_size: int = 32,
         precision: str = "32") -> QualityScorer:
    """A ready-to-call scorer from a saved folder or hub id: ``load(dir)(image_or_path_or_list)`` gives scores."""
    return QualityScorer(load_model(path, device, backbone), batch_size=batch_size, precision=precision)


# --- clip-agiqa score --------------------------------------------------------------------------------------
def read_score_list(path: Path) -> tuple[dict[str, Path], dict[str, str] | None]:
    """A CSV ``file_name[,prompt]`` (names relative to the CSV's folder) -> files and prompts."""
    rows = table(read_csv_rows(path), ["file_name"], str(path))
    names = parse_names(column(rows, "file_name"), str(path), "file_name")
    require_unique(names, str(path), [number for number, _ in rows])
    files = {name: path.parent / name for name in names}
    if "prompt" not in rows[0][1]:
        return files, None
    return files, {name: str(prompt or "").strip() for name, (_, prompt) in zip(names, column(rows, "prompt"))}


def gather_inputs(inputs: list[str]) -> tuple[dict[str, Path], dict[str, str] | None]:
    """Image files, folders (recursively) and CSV lists -> name -> path (and prompts from CSV lists)."""
    files: dict[str, Path] = {}
    prompts: dict[str, str] = {}
    listed_prompts = False
    for given in inputs:
        path = Path(given).expanduser()
        if path.is_dir():
            files.update({str(p): p for p in list_images(path)})
        elif path.suffix.lower() == ".csv":
            listed, listed_with_prompts = read_score_list(path)
            files.update(listed)
            if listed_with_prompts is not None:
                prompts.update(listed_with_prompts)
                listed_prompts = True
        elif path.suffix.lower() in IMAGE_EXTENSIONS or path.is_file():
            files[str(path)] = path
        else:
            raise FileNotFoundError(f"{given}: not an image file, a folder or a CSV list")
    if not files:
        raise ValueError(f"no images found in {', '.join(inputs)}")
    return files, (prompts if listed_prompts else None)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="clip-agiqa score",
        description="Score images with a saved model (a folder from `clip-agiqa export`, or a hub id). Writes "
                    "file_name, prompt (when given), one column per target and error.")
    parser.add_argument("model", help="a saved model folder or hub id")
    parser.add_argument("inputs", nargs="+", help="image files, folders (recursive) or CSV lists file_name[,prompt]")
    parser.add_argument("--output", default="scores.csv", help="the CSV to write (default: scores.csv)")
    parser.add_argument("--prompt", help="one generation prompt for every image (CSV lists may give one each)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="32", choices=sorted(PRECISIONS))
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--backbone", help="where the model's CLIP lies on this machine (its fingerprint is checked)")
    args = parser.parse_args(argv)
    files, prompts = gather_inputs(args.inputs)
    if args.prompt is not None:
        prompts = {name: args.prompt for name in files}
    scorer = QualityScorer(load_model(args.model, args.device, args.backbone), batch_size=args.batch_size,
                           precision=args.precision, progress=True)
    if scorer.model.use_prompt and (prompts is None or any(not prompts.get(n) for n in files)):
        missing = [n for n in files if not (prompts or {}).get(n)]
        raise ValueError(f"{args.model} reads each image's generation prompt: give --prompt or a CSV list with a "
                         f"prompt column; {len(missing)} image(s) have none, e.g. {', '.join(missing[:3])}")
    rows = scorer.score_files(files, args.output, prompts)
    print(f"wrote {len(rows)} rows ({', '.join(scorer.targets)}) to {args.output}")
    return Path(args.output)
