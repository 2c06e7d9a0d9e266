"""AIGCIQA2023 (Wang et al., 2023): 2,400 images of 6 generators for 100 prompts (4 each), rated for
quality, authenticity and correspondence.

Download: https://github.com/wangjiarui153/AIGCIQA2023 (links to the archive). As downloaded the root
holds ``Image/<Model>/NNN-k.png`` and ``DATA/MOS/mosz1.mat``, ``mosz2.mat``, ``mosz3.mat``. Also read:
the flat ``allimg/{n}.png`` of some re-packagings, and .mat files in ``DATA/`` or ``MOS/``.

Each .mat holds ``MOSz`` (2400 x 1, raw scale about 27-72) in the order
n = 400 * model_index + 4 * prompt_index + (k - 1). Samples are named ``<Model>/NNN-k.png`` in both
layouts, so a splits file fits either. The prompt text comes from ``AIGCIQA2023_Prompts.xlsx`` when it
is in the root (or ``DATA/``); otherwise the prompt is ``prompt NNN``, which still groups the images of
one prompt for ``split: prompt``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Literal, cast

import numpy as np

from ..errors import InputError
from .base import MOSDataModule
from .readers import Reader
from .records import MissingFile, Record, listed, parse_names, read_xlsx_rows, selected_targets

MODELS = ("Controlnet", "DALLE", "Glide", "Lafite", "stable-diffusion", "Unidiffuser")
PROMPTS_PER_MODEL = 100
IMAGES_PER_PROMPT = 4
NUM_IMAGES = len(MODELS) * PROMPTS_PER_MODEL * IMAGES_PER_PROMPT
TARGET_FILES = {"quality": "mosz1.mat", "authenticity": "mosz2.mat", "correspondence": "mosz3.mat"}
Target = Literal["quality", "authenticity", "correspondence"]
MOS_FOLDERS = ("DATA/MOS", "DATA", "MOS", ".")
PROMPTS_FILE = "AIGCIQA2023_Prompts.xlsx"
LAYOUT = ("AIGCIQA2023 as downloaded: Image/<Model>/NNN-k.png (or allimg/{n}.png) and "
          "DATA/MOS/mosz1.mat, mosz2.mat, mosz3.mat (or in DATA/ or MOS/)")


def sample_name(n: int) -> tuple[str, int]:
    """Image number n (the .mat order) -> (``<Model>/NNN-k.png``, prompt index)."""
    model, rest = divmod(n, PROMPTS_PER_MODEL * IMAGES_PER_PROMPT)
    prompt, k = divmod(rest, IMAGES_PER_PROMPT)
    return f"{MODELS[model]}/{prompt:03d}-{k + 1}.png", prompt


def read_mos(path: Path) -> np.ndarray:
    """The 2400 values of ``MOSz`` in a .mat file, or an error naming the file and the bad row."""
    from scipy.io import loadmat

    try:
        content = loadmat(path)
    except Exception as error:  # scipy raises several types for a damaged file
        raise InputError(f"cannot read {path}: {error}") from error
    if "MOSz" not in content:
        variables = [k for k in content if not k.startswith("__")]
        raise InputError(f"{path}: no variable MOSz; it holds {', '.join(variables) or 'nothing'}")
    values = np.asarray(content["MOSz"], dtype=np.float64).reshape(-1)
    if values.size != NUM_IMAGES:
        raise InputError(f"{path}: MOSz holds {values.size} values, but AIGCIQA2023 has {NUM_IMAGES} images "
                         f"({len(MODELS)} models x {PROMPTS_PER_MODEL} prompts x {IMAGES_PER_PROMPT})")
    bad = [f"row {n + 1} ({sample_name(int(n))[0]}) is {values[n]}" for n in np.flatnonzero(~np.isfinite(values))]
    if bad:
        raise InputError(f"{path}: {len(bad)} MOSz value(s) are not finite: {listed(bad)}")
    return values


class AIGCIQA2023Reader(Reader):
    """``Image/<Model>/NNN-k.png`` (or ``allimg/{n}.png``), ``mosz{1,2,3}.mat`` and optionally the prompts' .xlsx.

    Args:
        needed: the targets whose .mat files must be found together (the others are read when present).
    """

    name = "AIGCIQA2023"
    targets = tuple(TARGET_FILES)
    mos_scale = (0.0, 100.0)

    def __init__(self, needed: list[str] | tuple[str, ...] = ("quality",)):
        super().__init__()
        self.needed = list(needed)

    def __repr__(self) -> str:
        return f"AIGCIQA2023Reader(needed={self.needed!r})"

    def mos_folder(self, root: Path) -> Path:
        """The first of ``MOS_FOLDERS`` that holds the .mat file of every needed target."""
        needed = [TARGET_FILES[name] for name in self.needed]
        for folder in MOS_FOLDERS:
            if all((root / folder / file).is_file() for file in needed):
                return root / folder
        raise MissingFile(f"{', '.join(needed)} not found together in {root} "
                          f"(looked in {', '.join(MOS_FOLDERS)}); expected {LAYOUT}")

    @staticmethod
    def image_path(root: Path) -> Callable[[str, int], Path]:
        """(``<Model>/NNN-k.png``, n) -> the image file, for whichever layout the root has."""
        image_dir = root / "Image"
        if image_dir.is_dir():
            folders = {p.name.lower(): p for p in image_dir.iterdir() if p.is_dir()}  # any capitalisation

            def nested(name: str, n: int) -> Path:
                model, file = name.split("/")
                return folders.get(model.lower(), image_dir / model) / file
            return nested
        flat = root / "allimg"
        if flat.is_dir():
            # 0-based as the .mat order; some copies number from 1.
            offset = 1 if not (flat / "0.png").exists() and (flat / f"{NUM_IMAGES}.png").exists() else 0
            return lambda name, n: flat / f"{n + offset}.png"
        raise MissingFile(f"{root} holds neither Image/ nor allimg/: expected {LAYOUT}")

    @staticmethod
    def prompts(root: Path) -> list[str] | None:
        for folder in (".", "DATA"):
            path = root / folder / PROMPTS_FILE
            if path.is_file():
                rows = read_xlsx_rows(path)
                if len(rows) != PROMPTS_PER_MODEL:
                    raise InputError(f"{path}: expected {PROMPTS_PER_MODEL} rows (category, sub-category, prompt), "
                                     f"found {len(rows)}")
                return parse_names([(number, row[2] if len(row) > 2 else None) for number, row in rows], str(path),
                                   "prompt (third column)")
        return None

    def read(self, root: Path) -> list[Record]:
        if not root.is_dir():
            raise MissingFile(f"dataset folder {root} not found; expected {LAYOUT}")
        image_path = self.image_path(root)
        folder = self.mos_folder(root)
        targets = {key: read_mos(folder / file) for key, file in TARGET_FILES.items() if (folder / file).is_file()}
        prompts = self.prompts(root)
        records = []
        for n in range(NUM_IMAGES):
            name, prompt_index = sample_name(n)
            values = {key: float(mos[n]) for key, mos in targets.items()}
            prompt = prompts[prompt_index] if prompts else f"prompt {prompt_index:03d}"
            records.append(Record(name, image_path(name, n), values, prompt=prompt,
                                  generator=name.split("/")[0], where=f"{folder}, MOSz row {n + 1}"))
        return records


class AIGCIQA2023(MOSDataModule):
    """AIGCIQA2023.

    Args:
        target: ``quality`` (mosz1), ``authenticity`` (mosz2) or ``correspondence`` (mosz3), or a list of them
            (``[quality, authenticity, correspondence]``: one model, one output each).
        (the rest: see ``MOSDataModule``)
    """

    def __init__(self, root: str, target: Target | list[Target] = "quality", **kwargs):
        needed = selected_targets(target, TARGET_FILES, "AIGCIQA2023")
        # a list of Target is a list of str (mypy's list is invariant)
        super().__init__(root, reader=AIGCIQA2023Reader(needed), target=cast("str | list[str]", target), **kwargs)
