"""Hostile or odd annotation files get one line naming the file and row: names leaving the data root, non-UTF-8
text, huge fields; IPCE's published AGIQA-1K split folders (one name listed twice in every folder) run."""

from __future__ import annotations

import csv
import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clip_agiqa.data import AGIQA1K, MOSFolder
from clip_agiqa.data.splits import read_splits
from clip_agiqa.errors import InputError

SHARED_AGIQA1K = Path(__file__).resolve().parents[3] / "shared" / "annotations" / "agiqa1k"


def image(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (10, 10, 3), dtype=np.uint8)).save(path)


def metadata(root: Path, names: list[str]) -> Path:
    """A MOSFolder root with images img_0..img_5 and a metadata.csv listing those and ``names``."""
    root.mkdir(parents=True, exist_ok=True)
    own = [f"img_{i}.png" for i in range(6)]
    for i, name in enumerate(own):
        image(root / name, i)
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "mos"])
        writer.writerows([name, i % 5] for i, name in enumerate(own + names))
    return root


def loaded(root: Path, **kwargs) -> MOSFolder:
    data = MOSFolder(str(root), num_workers=0, image_size=8, **kwargs)
    data.setup("fit")
    return data


@pytest.mark.parametrize("kind", ["parent", "absolute", "symlink"])
def test_a_name_outside_the_root_is_refused_naming_its_row_unless_allowed(tmp_path, kind):
    image(tmp_path / "outside" / "x.png")
    root = tmp_path / "shared" / "data"
    if kind == "symlink":
        root.mkdir(parents=True)
        (root / "link.png").symlink_to(tmp_path / "outside" / "x.png")
    name = {"parent": "../../outside/x.png", "absolute": str(tmp_path / "outside" / "x.png"),
            "symlink": "link.png"}[kind]
    metadata(root, [name])
    with pytest.raises(InputError, match=rf"metadata\.csv, row 8: {name}\ resolves outside the data root "
                                         rf".*--data\.allow_outside_root true") as error:
        loaded(root)
    assert "\n" not in str(error.value)
    assert len(loaded(root, allow_outside_root=True).records) == 7


def test_a_symlink_inside_the_root_is_fine(tmp_path):
    root = metadata(tmp_path / "d", [])
    (root / "sub").mkdir()
    (root / "sub" / "again.png").symlink_to(root / "img_0.png")
    with open(root / "metadata.csv", "a", newline="") as handle:
        csv.writer(handle).writerow(["sub/again.png", 1])
    assert len(loaded(root).records) == 7


def test_latin1_metadata_gets_one_line_naming_the_file(tmp_path):
    root = metadata(tmp_path / "d", [])
    (root / "metadata.csv").write_bytes("file_name,mos,prompt\nimg_0.png,1,un caf\xe9 \xe0 Paris\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"metadata\.csv is not UTF-8 text \(byte 0xe9 .*line 2\).*iconv") as error:
        loaded(root)
    assert str(root / "metadata.csv") in str(error.value) and "\n" not in str(error.value)


def test_a_field_over_the_csv_limit_gets_one_line_naming_the_file_and_row(tmp_path):
    root = metadata(tmp_path / "d", [])
    with open(root / "metadata.csv", "a", newline="") as handle:
        handle.write(f'img_9.png,1,"{"x" * 140_000}"\n')
    with pytest.raises(InputError, match=r"metadata\.csv, row 8: a field is longer than 131,072 characters"):
        loaded(root)


# --- IPCE's published AGIQA-1K split folders -----------------------------------------------------------------------
DOUBLED = "dreamStudio_8_9_1_1.jpg"


def agiqa1k_root(root: Path, names: list[str]) -> Path:
    """An AGIQA-1K root in the real layout: the spreadsheet (with the real doubled row) and file/."""
    import openpyxl

    workbook = openpyxl.Workbook()
    workbook.active.append(["Image", "Prompt", "MOS"])
    for i, name in enumerate(names):
        workbook.active.append([name, f"prompt {i // 2}", float(i % 5)])
        image(root / "file" / name, i)
    workbook.active.append([DOUBLED, "alien, wearing shirt, wild, realistic style", 2.08])  # listed twice
    root.mkdir(parents=True, exist_ok=True)
    workbook.save(root / "AIGC_MOS_Zscore.xlsx")
    return root


def ipce_folders(database: Path, names: list[str]) -> list[Path]:
    """11 folders as IPCE publishes them (train.csv and val.csv, columns Image,Prompt,MOS): the doubled name twice
    in train in 7 folders, once in train and once in val (the test set) in folders 2, 3, 5 and 10."""
    folders = []
    for k in range(11):
        rng = np.random.default_rng(k)
        pool = [n for n in names if n != DOUBLED]
        test = set(rng.choice(pool, size=len(pool) // 5, replace=False))
        train = [n for n in names if n not in test]
        train.append(DOUBLED)  # its second row
        val = sorted(test) + ([DOUBLED] if k in (2, 3, 5, 10) else [])
        if k in (2, 3, 5, 10):
            train.remove(DOUBLED)
        folder = database / str(k)
        folder.mkdir(parents=True)
        for file, part in (("train.csv", train), ("val.csv", val)):
            with open(folder / file, "w", newline="") as handle:
                csv.writer(handle).writerows([["Image", "Prompt", "MOS"], *[[n, "p", "1.0"] for n in part]])
        folders.append(folder)
    return folders


NAMES = [f"deepai_{i}_0_0_{j}.jpg" for i in range(8) for j in range(2)] + [DOUBLED]


@pytest.mark.parametrize("duplicates", ["drop", "first"])
def test_every_ipce_agiqa1k_folder_runs(tmp_path, duplicates):
    root = agiqa1k_root(tmp_path / "AGIQA-1K", NAMES)
    for k, folder in enumerate(ipce_folders(tmp_path / "Database" / "AGIQA1k", NAMES)):
        data = AGIQA1K(str(root), duplicates=duplicates, split="predefined", splits_file=str(folder), val_size=0.2,
                       num_workers=0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            data.setup("fit")
        messages = " | ".join(str(w.message) for w in caught)
        split = dict(zip((r.file_name for r in data.records), data.assignment))
        if duplicates == "drop":
            assert DOUBLED not in split and len(split) == len(NAMES) - 1
        elif k in (2, 3, 5, 10):
            assert split[DOUBLED] == "test"
            assert f"taken out of train: {DOUBLED}" in messages
        else:
            assert split[DOUBLED] in ("train", "val")
            assert f"listed twice in one part, read once: {DOUBLED}" in messages
        assert Counter(split.values())["test"] == (len(NAMES) - 1) // 5 + (duplicates == "first" and k in (2, 3, 5, 10))


def test_a_name_twice_in_train_and_test_is_named_in_the_warnings(tmp_path):
    for file, rows in (("train.csv", [["name"], ["a.png"], ["a.png"], ["b.png"]]), ("test.csv", [["name"], ["b.png"]])):
        with open(tmp_path / file, "w", newline="") as handle:
            csv.writer(handle).writerows(rows)
    with pytest.warns(UserWarning) as caught:
        assert read_splits(tmp_path, ["a.png", "b.png"]) == ["train", "test"]
    text = " | ".join(str(w.message) for w in caught)
    assert "a.png (" in text and "train.csv, row 3, first at" in text and "b.png (" in text


def test_the_real_agiqa1k_spreadsheet_with_ipce_style_folders(tmp_path):
    sheet = SHARED_AGIQA1K / "AIGC_MOS_Zscore.xlsx"
    if not sheet.is_file():
        pytest.skip(f"{sheet} not present (the real annotation files are optional)")
    import openpyxl

    workbook = openpyxl.load_workbook(sheet, read_only=True)
    names = sorted({row[0] for row in workbook.worksheets[0].iter_rows(min_row=2, values_only=True) if row[0]})
    workbook.close()
    root = tmp_path / "AGIQA-1K"
    (root / "file").mkdir(parents=True)
    os.symlink(sheet, root / "AIGC_MOS_Zscore.xlsx")
    for name in names:
        (root / "file" / name).write_bytes(b"")  # the split needs names, not pixels
    published = sorted(p for p in SHARED_AGIQA1K.glob("*/*") if p.is_dir() and (p / "train.csv").is_file())
    # Folders 0 and 2: the doubled name twice in train, and once in train and once in test.
    folders = published or ipce_folders(tmp_path / "Database", [n for n in names if n != DOUBLED] + [DOUBLED])[:3:2]
    for folder in folders:
        data = AGIQA1K(str(root), duplicates="first", split="predefined", splits_file=str(folder), num_workers=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data.load()
        assert len(data.records) == len(names) == 1079 and "test" in data.assignment
