"""Readers (plain classes, no Lightning): each dataset's reader on its real annotation format (rows copied into tests/data,
and the full files in ../shared/annotations when present); one datamodule takes any reader."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from clip_agiqa.data.agiqa1k import AGIQA1KReader
from clip_agiqa.data.agiqa3k import AGIQA3KReader
from clip_agiqa.data.aigciqa20k import AIGCIQA20KReader
from clip_agiqa.data.aigciqa2023 import NUM_IMAGES, AIGCIQA2023Reader
from clip_agiqa.data.base import MOSDataModule
from clip_agiqa.data.folder import MOSFolderReader
from clip_agiqa.data.readers import Reader
from clip_agiqa.data.records import Record, generator_of
from clip_agiqa.data.synthetic import SyntheticReader
from clip_agiqa.text import first_and_more

ROWS = Path(__file__).parent  # tests/data: a few real rows of each annotation file
SHARED = Path(__file__).resolve().parents[3] / "shared" / "annotations"


def write_xlsx(path: Path, rows: list[list]) -> None:
    import openpyxl

    workbook = openpyxl.Workbook()
    for row in rows:
        workbook.active.append(row)
    workbook.save(path)


def test_agiqa3k_reader_on_the_real_columns(tmp_path):
    shutil.copy(ROWS / "agiqa3k_data.csv", tmp_path / "data.csv")
    records = AGIQA3KReader().read(tmp_path)
    first = records[0]
    assert len(records) == 12 and first.file_name == "AttnGAN_normal_000.jpg" and first.path == tmp_path / first.file_name
    assert first.targets == pytest.approx({"quality": 0.965602553, "align": 0.40889324})
    assert first.prompt == "statue of a man" and first.generator == "AttnGAN"
    assert first.where == f"{tmp_path / 'data.csv'}, row 2"


def test_agiqa1k_reader_leaves_out_the_doubled_name_and_says_so(tmp_path):
    with open(ROWS / "agiqa1k_rows.csv", newline="") as handle:
        header, *rows = list(csv.reader(handle))
    rows = [[n, p, float(m)] for n, p, m in rows]  # the real rows, with the real doubled name
    write_xlsx(tmp_path / "AIGC_MOS_Zscore.xlsx", [header, *rows])
    (tmp_path / "file").mkdir()
    reader = AGIQA1KReader()
    with pytest.warns(UserWarning, match=r"dreamStudio_8_9_1_1\.jpg \(rows \d+, \d+\)"):
        records = reader.read(tmp_path)
    assert len(records) == len(rows) - 2 and reader.left_out == {"dreamStudio_8_9_1_1.jpg"}
    assert records[0].generator == "deepai" and records[0].path == tmp_path / "file" / records[0].file_name
    first = AGIQA1KReader("first")
    with pytest.warns(UserWarning, match="kept at its first row"):
        kept = first.read(tmp_path)
    doubled = [r for r in kept if r.file_name == "dreamStudio_8_9_1_1.jpg"]
    assert len(doubled) == 1 and doubled[0].targets["quality"] == pytest.approx(0.4414155439958131)
    assert not first.left_out


def test_aigciqa20k_reader_on_the_headerless_release(tmp_path):
    shutil.copy(ROWS / "aigciqa20k_info_train.csv", tmp_path / "info_train.csv")
    records = AIGCIQA20KReader().read(tmp_path)
    assert records[0].file_name == "DALLE2_0000.png" and records[0].targets["quality"] == pytest.approx(3.6638868235)
    assert records[0].where.endswith("info_train.csv, row 1")  # no header: the first line is row 1


def test_aigciqa2023_reader_keeps_every_target_and_reads_the_prompts(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "DATA" / "MOS").mkdir(parents=True)
    values = {i: rng.uniform(27, 72, NUM_IMAGES) for i in (1, 2, 3)}
    for i, mos in values.items():
        scipy.io.savemat(tmp_path / "DATA" / "MOS" / f"mosz{i}.mat", {"MOSz": mos.reshape(-1, 1)})
    (tmp_path / "Image" / "DALLE").mkdir(parents=True)
    write_xlsx(tmp_path / "AIGCIQA2023_Prompts.xlsx", [["animal", "dog", f"a dog number {i}"] for i in range(100)])
    records = AIGCIQA2023Reader(needed=["authenticity"]).read(tmp_path)
    assert len(records) == NUM_IMAGES and records[401].file_name == "DALLE/000-2.png"
    assert records[401].targets == pytest.approx({"quality": values[1][401], "authenticity": values[2][401],
                                                  "correspondence": values[3][401]})
    assert records[401].prompt == "a dog number 0" and records[401].path == tmp_path / "Image" / "DALLE" / "000-2.png"


def test_mosfolder_and_synthetic_readers(tmp_path):
    records = SyntheticReader(columns=["mos", "align"], num_images=5, picture_size=16).read(tmp_path / "s")
    assert len(records) == 5 and set(records[0].targets) == {"mos", "align"} and records[0].prompt
    again = MOSFolderReader(columns=["align"]).read(tmp_path / "s")
    assert [r.targets["align"] for r in again] == [r.targets["align"] for r in records]


def test_one_datamodule_takes_any_reader(tmp_path):
    class TwoImages(Reader):
        """A dataset in one small class: what adding a dataset takes."""

        name, targets, mos_scale = "TwoImages", ("quality",), (1.0, 5.0)

        def read(self, root: Path) -> list[Record]:
            return [Record(f"{i}.png", root / f"{i}.png", {"quality": float(i)}) for i in range(9)]

    from PIL import Image

    for i in range(9):
        Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(tmp_path / f"{i}.png")
    data = MOSDataModule(str(tmp_path), reader=TwoImages(), num_workers=0, image_size=8, batch_size=2)
    assert data.target_scales == {"quality": [1.0, 5.0]}
    data.setup()
    assert len(data.records) == 9 and data.make_dataset("train")[0]["image"].shape == (3, 8, 8)
    with pytest.raises(ValueError, match="TwoImages target must be one of quality"):
        MOSDataModule(str(tmp_path), reader=TwoImages(), target="align")


def test_the_shared_text_helpers():
    assert first_and_more(["a", "b", "c"], 2) == "a, b and 1 more" and first_and_more([1, 2]) == "1, 2"
    assert generator_of("sd1.5_lowcorr_210.jpg") == "sd1.5" and generator_of("LCM_SDXL_0123.png", from_end=True) == "LCM_SDXL"


# --- the full published files, when ../shared is there ------------------------------------------------------------
def shared(name: str) -> Path:
    if not (SHARED / name).is_dir():
        pytest.skip(f"{SHARED / name} not present (the real annotation files are optional)")
    return SHARED / name


def test_real_files_through_their_readers(tmp_path):
    records = AGIQA3KReader().read(shared("agiqa3k"))
    assert len(records) == 2982 and len({r.prompt for r in records}) == 300
    twenty = AIGCIQA20KReader().read(shared("aigciqa20k"))
    assert len(twenty) == 14000 and max(r.targets["quality"] for r in twenty) <= 5
    reader = AGIQA1KReader()
    with pytest.warns(UserWarning, match="dreamStudio_8_9_1_1.jpg"):
        assert len(reader.read(shared("agiqa1k"))) == 1078
    assert reader.left_out == {"dreamStudio_8_9_1_1.jpg"}
