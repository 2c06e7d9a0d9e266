"""Tiny data roots in each benchmark's real layout (placeholder images, real annotation rows), shared by the
test modules: build one with ``agiqa3k_root(tmp_path)`` etc. Test modules import these from here, never from
each other."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from clip_agiqa.data.aigciqa2023 import NUM_IMAGES, sample_name

DATA = Path(__file__).parent / "data"


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def placeholder(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, size=(40, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def copy_placeholder(source: Path, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, path)


def agiqa3k_root(root: Path, image_folder: str = "") -> Path:
    shutil.copy(DATA / "agiqa3k_data.csv", root / "data.csv")
    with open(root / "data.csv", newline="") as handle:
        for i, row in enumerate(csv.DictReader(handle)):
            placeholder(root / image_folder / row["name"], i)
    return root


def write_xlsx(path: Path, rows: list[list]) -> None:
    import openpyxl

    workbook = openpyxl.Workbook()
    for row in rows:
        workbook.active.append(row)
    workbook.save(path)


def agiqa1k_root(root: Path) -> Path:
    with open(DATA / "agiqa1k_rows.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    write_xlsx(root / "AIGC_MOS_Zscore.xlsx", [rows[0]] + [[n, p, float(m)] for n, p, m in rows[1:]])
    for i, (name, _, _) in enumerate(rows[1:]):
        placeholder(root / "file" / name, i)
    return root


def write_mat(folder: Path, values: dict[int, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for number, mos in values.items():
        scipy.io.savemat(folder / f"mosz{number}.mat", {"MOSz": np.asarray(mos, dtype=np.float64).reshape(-1, 1)})


def aigciqa2023_root(root: Path, flat: bool = False, mos_folder: str = "DATA/MOS") -> Path:
    rng = np.random.default_rng(0)
    write_mat(root / mos_folder, {i: rng.uniform(27, 72, NUM_IMAGES) for i in (1, 2, 3)})
    source = root / "placeholder.png"
    placeholder(source)
    for n in range(NUM_IMAGES):
        name, _ = sample_name(n)
        copy_placeholder(source, root / ("allimg" if flat else "Image") / (f"{n}.png" if flat else name))
    source.unlink()
    return root


def aigciqa20k_root(root: Path) -> Path:
    shutil.copy(DATA / "aigciqa20k_info_train.csv", root / "info_train.csv")
    with open(root / "info_train.csv", newline="") as handle:
        for i, row in enumerate(csv.reader(handle)):
            placeholder(root / "images" / row[0], i)  # the images in one sub-folder
    return root


# --- published split folders (IPCE's layout) -------------------------------------------------------------
AGIQA3K_HEADER = ["name", "prompt", "adj1", "adj2", "style", "mos_quality", "std_quality", "mos_align", "std_align"]
GENERATORS = ("AttnGAN", "DALLE2", "glide")


def agiqa3k_prompted_root(root: Path, prompts: int = 12) -> Path:
    """A tiny AGIQA-3K root in the real layout (data.csv + images beside it) where, as in the real set, image i of
    every generator has prompt i: 3 images per prompt."""
    rows = [[f"{generator}_normal_{i:03d}.jpg", f"prompt number {i}", "", "", "", f"{(i * 7 + g) % 5}.5", "0.5",
             f"{(i * 3 + g) % 5}.25", "0.5"] for g, generator in enumerate(GENERATORS) for i in range(prompts)]
    root.mkdir(parents=True, exist_ok=True)
    write_csv(root / "data.csv", [AGIQA3K_HEADER, *rows])
    for number, row in enumerate(rows):
        placeholder(root / row[0], number)
    return root


def ipce_folder(folder: Path, root: Path, test_prompts: set[int], test_file: str = "val.csv") -> Path:
    """An IPCE split folder for an AGIQA-3K root: train.csv and val.csv (its test set) with data.csv's columns."""
    with open(root / "data.csv", newline="") as handle:
        header, *rows = list(csv.reader(handle))
    folder.mkdir(parents=True, exist_ok=True)
    in_test = [int(row[0].rsplit("_", 1)[1][:3]) in test_prompts for row in rows]
    write_csv(folder / "train.csv", [header] + [r for r, t in zip(rows, in_test) if not t])
    write_csv(folder / test_file, [header] + [r for r, t in zip(rows, in_test) if t])
    return folder


def rated_root(root: Path, num_images: int, noisy: bool) -> Path:
    """A generated MOSFolder whose raters' std is known per image (``mos_std`` uniform in 0.3-0.9); ``noisy``: each
    MOS is the picture's quality plus N(0, std), clipped to the 0-5 scale, as raters' means scatter."""
    from clip_agiqa.data import write_synthetic_dataset

    write_synthetic_dataset(root, num_images=num_images, picture_size=32, seed=0)
    with open(root / "metadata.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    rng = np.random.default_rng(1)
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "mos", "mos_std"])
        for row in rows:
            std = rng.uniform(0.3, 0.9)
            mos = f"{np.clip(float(row['mos']) + rng.normal(0, std), 0, 5):.4f}" if noisy else row["mos"]
            writer.writerow([row["file_name"], mos, f"{std:.4f}"])
    return root


# --- EvalMi-50K -----------------------------------------------------------------------------------------------
EVALMI50K_PROMPT_LINES = 2100


def evalmi50k_annotations(folder: Path) -> Path:
    """``AIGI2025_MOS_yn.xlsx`` of real rows (3 generators x 12 prompts) and a ``prompt_tasks.jsonl`` whose lines of
    those prompts are the real ones (the other lines: filler), in ``folder``."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    with open(DATA / "evalmi50k_rows.csv", newline="") as handle:
        header, *rows = list(csv.reader(handle))
    write_xlsx(folder / "AIGI2025_MOS_yn.xlsx",
               [header, *[[row[0], *[float(v) if v else None for v in row[1:]]] for row in rows]])
    real = {item.pop("line"): item for item in map(json.loads, (DATA / "evalmi50k_prompt_tasks_rows.jsonl")
                                                        .read_text().splitlines())}
    lines = [json.dumps(real.get(n, {"tag": "filler", "prompt": f"filler prompt {n}"}))
             for n in range(1, EVALMI50K_PROMPT_LINES + 1)]
    (folder / "prompt_tasks.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def evalmi50k_root(root: Path, image_folder: str = "") -> Path:
    """A tiny EvalMi-50K root as downloaded: the two annotation files and ``<generator>/<NNN>.png`` placeholders."""
    evalmi50k_annotations(root)
    with open(DATA / "evalmi50k_rows.csv", newline="") as handle:
        for i, row in enumerate(csv.DictReader(handle)):
            placeholder(root / image_folder / row["ImageName"], i)
    return root
