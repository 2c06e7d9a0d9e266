"""Scoring images the way IQA users expect, from Python and the command line; only ``CLIPAGIQAModel``, no Lightning.

Python: ``scorer(image)`` -> a score, ``scorer([...])`` -> scores, ``scorer(image, prompt="...")`` for a model
that reads the generation prompt; a model with several targets gives ``{target: score}`` per image.
``scorer.score_files`` / ``score_folder`` stream files through DataLoader workers (decode, resize and normalise
there; batches go to the device as they come) and write the CSV as batches finish, so memory stays flat at
any number of images. Command line: ``clip-agiqa score MODEL INPUT... --output scores.csv`` (see ``main``).
"""

from __future__ import annotations

import os
import warnings
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .csv_cells import unescape_formula
from .data.images import (
    IMAGE_EXTENSIONS,
    decoding_workers,
    error_reason,
    file_problem,
    load_rgb,
    scan_folder,
    to_rgb,
    warn_skipped,
)
from .data.records import column, parse_names, read_csv_rows, require_unique, table
from .data.transforms import ImageTransform
from .errors import CommandParser, InputError
from .model import load_model
from .progress import progress
from .scores_file import ScoreCSV, check_output, partial_path, warn_unreadable

PRECISIONS = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}
MAX_DEFAULT_WORKERS = 8
NO_PROMPTS = ("this model does not read generation prompts: its scores do not depend on them")


def default_workers() -> int:
    """DataLoader workers when none are asked for: the cores this process may use, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(MAX_DEFAULT_WORKERS, cores)


def checked_device(device) -> torch.device:
    """``device`` as a ``torch.device`` this machine has, or one line that says why not."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InputError(f"device {str(device)!r} is not a device torch knows ({error}); use cpu or cuda") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise InputError(f"device {device}: {build}; use --device cpu")
        if device.index is not None and device.index >= count:
            raise InputError(f"device {device}: this machine has {count} CUDA GPU(s) (cuda:0 to cuda:{count - 1})")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {device}: MPS is not available here; use --device cpu")
    return device


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


class ImageFiles(Dataset):
    """Image files -> (position, normalised pixels or None, error). Runs in the DataLoader workers: an image
    that cannot be used (missing, special file, over the size limits, not decodable) gives its reason
    instead of stopping the run."""

    def __init__(self, paths: list, transform: ImageTransform):
        self.paths = [str(path) for path in paths]  # plain strings: cheap to hand to each worker
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, position: int):
        try:
            return position, self.transform(load_rgb(self.paths[position])), ""
        except ValueError as error:  # ImageError among them: the loader's short reason
            return position, None, error_reason(error)
        except Exception as error:  # a hostile file may make a decoder raise anything: one row, not the run
            return position, None, f"cannot decode ({type(error).__name__}{f': {error}' if str(error) else ''})"


def collate_images(batch):
    """(positions, stacked pixels of the readable images or None, their places in the batch, errors)."""
    readable = [place for place, (_, pixels, _) in enumerate(batch) if pixels is not None]
    pixels = torch.stack([batch[place][1] for place in readable]) if readable else None
    return [position for position, _, _ in batch], pixels, readable, [error for _, _, error in batch]


class QualityScorer:
    """A trained CLIP-AGIQA ready to score images. Higher is better (``lower_better`` is False).

    Call it on a PIL image, a file path or a (3, H, W) tensor in [0, 1] to get one float (a dict
    ``{target: float}`` for a model with several targets); on a list of those, or a (B, 3, H, W) tensor, to
    get a list. A model that reads generation prompts needs ``prompt=``: one text for all, or one per image.
    Images go through the same resize and centre crop as at test time.

    Args:
        precision: ``32``, ``bf16`` or ``16`` (autocast on the device; the heads stay in fp32).
        num_workers: DataLoader workers that decode files for ``score_files``/``score_folder`` (default: the
            cores there are, at most 8; 0 decodes in this process).
    """

    lower_better = False

    def __init__(self, model, device: str | torch.device | None = None, batch_size: int = 32,
                 precision: str = "32", progress: bool = False, num_workers: int | None = None):
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a whole number of at least 1, got {batch_size!r}")
        if num_workers is not None and (isinstance(num_workers, bool) or not isinstance(num_workers, int)
                                        or num_workers < 0):
            raise InputError(f"num_workers must be 0 or more, got {num_workers!r}")
        device = next(model.parameters()).device if device is None else checked_device(device)
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.precision = precision
        self.progress = progress
        self.num_workers = default_workers() if num_workers is None else num_workers
        self.transform = ImageTransform(model.image_settings, train=False)

    def __repr__(self) -> str:
        arguments = self.model.arguments
        return (f"QualityScorer(backbone={arguments['backbone']!r}, head={arguments['head']!r}, "
                f"targets={self.targets}, use_prompt={self.model.use_prompt})")

    @property
    def targets(self) -> list[str]:
        return self.model.targets

    @property
    def mos_scale(self):
        """The MOS scale of the training data: (low, high), or {target: (low, high)} for several targets."""
        scales = {t: tuple(pair) for t, pair in zip(self.targets, self.model.mos_scale.tolist())}
        return next(iter(scales.values())) if len(scales) == 1 else scales

    def __call__(self, images, prompt=None):
        single = not (isinstance(images, (list, tuple)) or (isinstance(images, torch.Tensor) and images.dim() == 4))
        items = [images] if single else list(images)
        rows = [self._as_result(scores) for scores in self.score_many(items, self._prompts(prompt, len(items)))]
        return rows[0] if single else rows

    def _as_result(self, scores: list[float]):
        scores = scores[: len(self.targets)]  # the CSV's std and percentile columns follow the scores
        return scores[0] if len(scores) == 1 else dict(zip(self.targets, scores))

    def _prompts(self, prompt, count: int) -> list[str] | None:
        if prompt is None:
            return None
        prompts = [prompt] * count if isinstance(prompt, str) else list(prompt)
        if len(prompts) != count:
            raise InputError(f"give one prompt for all images or one per image: {len(prompts)} prompts, "
                             f"{count} images")
        return prompts

    def _check_prompts(self, given: bool) -> None:
        if self.model.use_prompt and not given:
            raise InputError("this model reads each image's generation prompt: pass prompt= (one text for all "
                             "images, or one per image)")
        if given and not self.model.use_prompt:
            warnings.warn(NO_PROMPTS, stacklevel=3)

    def _autocast(self):
        dtype = PRECISIONS[self.precision]
        return torch.autocast(self.device.type, dtype=dtype) if dtype is not None else nullcontext()

    @torch.no_grad()
    def _score_pixels(self, pixels: torch.Tensor, prompts: list[str] | None) -> torch.Tensor:
        """(batch, targets) scores on the device; nothing waits for them (no host sync)."""
        with self._autocast():
            features = self.model.encode_images(pixels.to(self.device, non_blocking=True))
        # Scores, then the model's extra columns (<target>_std, <target>_percentile): see CLIPAGIQAModel.score_table
        return self.model.score_table(features, prompts if self.model.use_prompt else None)

    @torch.no_grad()
    def score_many(self, items: list, prompts: list[str] | None = None) -> list[list[float]]:
        """One list of scores (one per target) per item (in memory, or paths read here), batched on the device."""
        self._check_prompts(prompts is not None)
        scores: list[list[float]] = []
        for start in range(0, len(items), self.batch_size):
            pixels = torch.stack([self.transform(_to_pil(item)) for item in items[start: start + self.batch_size]])
            chunk = prompts[start: start + self.batch_size] if prompts is not None else None
            scores.extend(self._score_pixels(pixels, chunk).float().cpu().tolist())
        return scores

    def stream(self, paths: list, prompts: list[str] | None = None):
        """Score files through the DataLoader: yields, batch after batch in order, lists of
        ``(position in paths, scores per target or None, error)``. One batch is scored on the device while
        the one before is turned into rows, so the device is not kept waiting on the host."""
        self._check_prompts(prompts is not None)
        batches = -(-len(paths) // self.batch_size)
        workers = decoding_workers(min(self.num_workers, batches))
        loader = DataLoader(ImageFiles(paths, self.transform), batch_size=self.batch_size, shuffle=False,
                            num_workers=workers, collate_fn=collate_images,
                            pin_memory=self.device.type == "cuda")
        pending = None
        for positions, pixels, readable, errors in loader:
            values = None
            if readable:
                batch_prompts = [prompts[positions[place]] for place in readable] if prompts is not None else None
                values = self._score_pixels(pixels, batch_prompts)
            if pending is not None:
                yield self._rows(*pending)
            pending = positions, readable, errors, values
        if pending is not None:
            yield self._rows(*pending)

    @staticmethod
    def _rows(positions, readable, errors, values):
        scored = dict(zip(readable, values.float().cpu().tolist())) if values is not None else {}
        return [(position, scored.get(place), errors[place]) for place, position in enumerate(positions)]

    def write_csv(self, files: dict[str, Path], output, prompts: dict[str, str] | None = None,
                  resume: bool = False, with_prompt: bool | None = None, collect: bool = False,
                  overwrite: bool = False):
        """Score named files (name -> path, in order) into the CSV ``output`` as batches finish (see
        ``clip_agiqa.scores_file``); with ``resume``, the rows of ``<output>.partial`` that name these files are
        kept and only the rest is scored; an existing ``output`` is replaced only with ``overwrite``. Returns the
        finished ``ScoreCSV`` (its ``summary()``) and, with ``collect``, the rows scored by this call as
        ``(name, scores or None)``."""
        with_prompt = prompts is not None if with_prompt is None else with_prompt
        inputs = {name: (prompts.get(name) or "") if prompts is not None else None for name in files}
        table = ScoreCSV(output, self.targets, with_prompt, "resume" if resume else "refuse",
                         extra_columns=self.model.extra_columns(), inputs=inputs, overwrite=overwrite)
        collected = []
        try:
            names = [name for name in files if name not in table.done]
            prompt_list = [prompts.get(name, "") for name in names] if prompts is not None else None
            use_prompts = prompt_list if self.model.use_prompt else None
            if not self.model.use_prompt and prompts is not None:
                warnings.warn(NO_PROMPTS + ("; the prompt column is copied from the input" if with_prompt else ""),
                              stacklevel=2)
            # closed (its line cleared) however the loop ends, so an error message starts on a line of its own
            with progress(len(files), "scoring", initial=len(files) - len(names), bar=self.progress,
                          lines=self.progress) as bar:
                for rows in self.stream([files[name] for name in names], use_prompts) if names else ():
                    for position, scores, error in rows:
                        name = names[position]
                        table.write(name, prompts.get(name) if prompts is not None else None, scores, error)
                        if collect:
                            collected.append((name, scores))
                    table.flush()
                    bar.update(len(rows))
        except BaseException:
            table.close()  # the rows so far stay in the .partial, for resume
            raise
        table.finish()
        return table, collected

    def score_files(self, files: dict[str, Path], output=None, prompts: dict[str, str] | None = None,
                    resume: bool = False, overwrite: bool = False) -> list:
        """Score named files (name -> path, in order). An unreadable file does not stop the run: it gets NaN
        scores (empty ones and its reason in the CSV) and one warning names them. With ``output``, the CSV
        (``file_name[,prompt],score...,error``) is written as batches finish; ``resume`` continues an
        interrupted one; an existing ``output`` is replaced only with ``overwrite``. Returns ``(name, score)`` for
        each file scored by this call."""
        nan = [float("nan")] * len(self.targets)
        if output is not None:
            table, rows = self.write_csv(files, output, prompts, resume, collect=True, overwrite=overwrite)
            table.warn_unreadable()
        else:
            names, rows, failed = list(files), [], []
            prompt_list = [prompts.get(name, "") for name in names] if prompts is not None else None
            for batch in self.stream([files[name] for name in names], prompt_list):
                for position, scores, error in batch:
                    rows.append((names[position], scores))
                    if error:
                        failed.append(names[position])
            warn_unreadable(failed[:5], len(failed), len(rows), "the scores")
        return [(name, self._as_result(scores if scores is not None else nan)) for name, scores in rows]

    def score_folder(self, folder, output=None, prompt: str | None = None, resume: bool = False,
                     overwrite: bool = False) -> list:
        """Score every image under ``folder`` (recursively, sorted, names relative to it; what the scan leaves
        out is named in one warning); see ``score_files``."""
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise InputError(f"image folder {folder} not found")
        found, skipped = scan_folder(folder)
        warn_skipped(folder, skipped)
        if not found:
            raise InputError(f"{folder} holds no images")
        files = {str(p.relative_to(folder)): p for p in found}
        if prompt is not None and not self.model.use_prompt:
            warnings.warn(NO_PROMPTS, stacklevel=2)
            prompt = None
        return self.score_files(files, output, {name: prompt for name in files} if prompt is not None else None,
                                resume, overwrite)


def load(path, device: str | torch.device | None = None, backbone: str | None = None, batch_size: int = 32,
         precision: str = "32", num_workers: int | None = None) -> QualityScorer:
    """A ready-to-call scorer from a saved folder or hub id: ``load(dir)(image_or_path_or_list)`` gives scores."""
    device = checked_device(device) if device is not None else None
    return QualityScorer(load_model(path, device, backbone), batch_size=batch_size, precision=precision,
                         num_workers=num_workers)


# --- clip-agiqa score --------------------------------------------------------------------------------------
def read_score_list(path: Path) -> tuple[dict[str, Path], dict[str, str] | None]:
    """A CSV ``file_name[,prompt]`` (names relative to the CSV's folder) -> files and prompts. A ``scores.csv``
    of an earlier run reads as one (its formula escapes are undone)."""
    rows = table(read_csv_rows(path), ["file_name"], str(path))
    names = [unescape_formula(name) for name in parse_names(column(rows, "file_name"), str(path), "file_name")]
    require_unique(names, str(path), [number for number, _ in rows])
    files = {name: path.parent / name for name in names}
    if "prompt" not in rows[0][1]:
        return files, None
    return files, {name: unescape_formula(str(prompt or "").strip())
                   for name, (_, prompt) in zip(names, column(rows, "prompt"))}


def gather_inputs(inputs: list[str]) -> tuple[dict[str, Path], dict[str, str] | None]:
    """Image files, folders (recursively) and CSV lists -> name -> path (and prompts from CSV lists). A file or
    folder is named as given (``<folder>/<path inside it>``), a listed image as its list names it."""
    files: dict[str, Path] = {}
    sources: dict[str, str] = {}
    prompts: dict[str, str] = {}
    listed_prompts = False

    def add(name: str, path: Path, source: str) -> None:
        if name in files and files[name] != path:
            raise InputError(f"{name} names two images: {files[name]} ({sources[name]}) and {path} ({source})")
        files[name], sources[name] = path, source

    for given in inputs:
        path = Path(given).expanduser()
        problem = file_problem(path)
        if problem == "a folder, not a regular file":
            found, skipped = scan_folder(path)
            warn_skipped(path, skipped)
            for image in found:
                add(str(image), image, given)
        elif problem == "not found":
            raise InputError(f"{given}: not found")
        elif path.suffix.lower() == ".csv":
            if problem is not None:
                raise InputError(f"CSV list {given}: {problem}")
            listed, listed_with_prompts = read_score_list(path)
            for name, image in listed.items():
                add(name, image, given)
            if listed_with_prompts is not None:
                prompts.update(listed_with_prompts)
                listed_prompts = True
        else:  # any other file (or special file) is tried as an image: the loader says why it is not one
            add(str(path), path, given)
    if not files:
        raise InputError(f"no images found in {', '.join(inputs)} (image formats: "
                         f"{', '.join(sorted(IMAGE_EXTENSIONS)[:12])} ...)")
    return files, (prompts if listed_prompts else None)


def main(argv: list[str] | None = None) -> Path:
    parser = CommandParser(
        prog="clip-agiqa score",
        description="Score images with a saved model (a folder from `clip-agiqa export`, or a hub id). Writes "
                    "file_name, prompt (when given), one column per target and error, row by row.")
    parser.add_argument("model", help="a saved model folder or hub id")
    parser.add_argument("inputs", nargs="+", help="image files, folders (recursive) or CSV lists file_name[,prompt]")
    parser.add_argument("--output", default="scores.csv", help="the CSV to write (default: scores.csv); rows go "
                        "to <output>.partial until the last one is written")
    parser.add_argument("--resume", action="store_true", help="continue <output>.partial of an interrupted run: "
                        "its rows are kept, only the other images are scored")
    parser.add_argument("--overwrite", action="store_true", help="replace the output if it exists (it is never "
                        "replaced otherwise)")
    parser.add_argument("--prompt", help="one generation prompt for every image (CSV lists may give one each)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="32", choices=sorted(PRECISIONS))
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_workers", type=int, default=None,
                        help=f"processes that decode images (default: the cores there are, at most "
                             f"{MAX_DEFAULT_WORKERS}; 0: decode in this process)")
    parser.add_argument("--backbone", help="where the model's CLIP lies on this machine (its fingerprint is checked)")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        raise InputError(f"--batch_size must be at least 1, got {args.batch_size}")
    if args.num_workers is not None and args.num_workers < 0:
        raise InputError(f"--num_workers must be 0 or more, got {args.num_workers}")
    device = checked_device(args.device)
    output = check_output(Path(args.output))
    if os.path.lexists(output) and not args.overwrite:
        raise InputError(f"{output} exists: add --overwrite to replace it, or give another --output")
    if os.path.lexists(partial_path(output)) and not args.resume:
        raise InputError(f"{partial_path(output)} holds the rows of an interrupted run: add --resume to continue "
                         "it, or delete it to start over")
    files, prompts = gather_inputs(args.inputs)
    scorer = QualityScorer(load_model(args.model, device, args.backbone), batch_size=args.batch_size,
                           precision=args.precision, progress=True, num_workers=args.num_workers)
    if args.prompt is not None:
        if scorer.model.use_prompt:
            prompts = {name: args.prompt for name in files}
        else:
            warnings.warn(NO_PROMPTS + ": --prompt is left out", stacklevel=1)
    if scorer.model.use_prompt and (prompts is None or any(not prompts.get(n) for n in files)):
        missing = [n for n in files if not (prompts or {}).get(n)]
        raise InputError(f"{args.model} reads each image's generation prompt: give --prompt or a CSV list with a "
                         f"prompt column; {len(missing)} image(s) have none, e.g. {', '.join(missing[:3])}")
    table, _ = scorer.write_csv(files, output, prompts, resume=args.resume, overwrite=args.overwrite)
    table.warn_unreadable()
    print(f"{table.summary()} ({', '.join(scorer.targets)})")
    return output
