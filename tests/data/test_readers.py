"""Readers (plain classes, no Lightning): each dataset's reader on its real annotation format (rows copied into
tests/data, and the full files in ../shared/annotations when present), its layouts and blank rows, and every bad input
of its own format (its file, its columns); one datamodule takes any reader. MOSFolder's bad input:
tests/test_bad_input.py."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from layouts import agiqa1k_root, agiqa3k_root, aigciqa20k_root, aigciqa2023_root, placeholder, write_mat, write_xlsx

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


def test_agiqa3k_reader_on_the_real_columns(tmp_path):
    shutil.copy(ROWS / "agiqa3k_data.csv", tmp_path / "data.csv")
    records = AGIQA3KReader().read(tmp_path)
    first = records[0]
    assert len(records) == 12
    assert first.file_name == "AttnGAN_normal_000.jpg" and first.path == tmp_path / first.file_name
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
    assert records[0].prompt == "bird, driving aircraft, city, anime style"
    first = AGIQA1KReader("first")
    with pytest.warns(UserWarning, match="kept at its first row"):
        kept = first.read(tmp_path)
    doubled = [r for r in kept if r.file_name == "dreamStudio_8_9_1_1.jpg"]
    assert len(doubled) == 1 and doubled[0].targets["quality"] == pytest.approx(0.4414155439958131)
    assert not first.left_out


def test_aigciqa20k_reader_on_the_headerless_release(tmp_path):
    shutil.copy(ROWS / "aigciqa20k_info_train.csv", tmp_path / "info_train.csv")
    records = AIGCIQA20KReader().read(tmp_path)
    assert len(records) == 12 and records[0].file_name == "DALLE2_0000.png"
    assert records[0].targets["quality"] == pytest.approx(3.6638868235)
    assert records[0].generator == "DALLE2" and records[0].prompt.startswith("A cyberpunk gopnik")
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
    assert generator_of("sd1.5_lowcorr_210.jpg") == "sd1.5"
    assert generator_of("LCM_SDXL_0123.png", from_end=True) == "LCM_SDXL"


# --- the full published files, when ../shared is there ------------------------------------------------------------
def shared(name: str) -> Path:
    if not (SHARED / name).is_dir():
        pytest.skip(f"{SHARED / name} not present (the real annotation files are optional)")
    return SHARED / name


def test_real_files_through_their_readers(tmp_path):
    records = AGIQA3KReader().read(shared("agiqa3k"))
    assert len(records) == 2982 and len({r.prompt for r in records}) == 300
    twenty = AIGCIQA20KReader().read(shared("aigciqa20k"))
    assert len(twenty) == 14000  # 14,000 rows (the last line has no newline, so `wc -l` says 13,999)
    assert len({r.generator for r in twenty}) == 15 and max(r.targets["quality"] for r in twenty) <= 5


def test_real_aigciqa2023_maps_every_mos_to_its_image(tmp_path):
    with open(shared("aigciqa2023") / "mos_normalized.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    write_mat(tmp_path / "DATA" / "MOS", {i: [20 * float(r[f"mosz{i}"]) for r in rows] for i in (1, 2, 3)})
    (tmp_path / "Image").mkdir()
    shutil.copy(shared("aigciqa2023") / "AIGCIQA2023_Prompts.xlsx", tmp_path)
    records = AIGCIQA2023Reader().read(tmp_path)
    assert len(records) == 2400
    for record, row in zip(records, rows):
        assert record.file_name == f"{row['model']}/{row['image_name']}"
        assert record.targets == pytest.approx({"quality": 20 * float(row["mosz1"]),
                                                "authenticity": 20 * float(row["mosz2"]),
                                                "correspondence": 20 * float(row["mosz3"])})
    assert len({r.prompt for r in records}) == 100 and records[0].prompt == "a corgi"


def test_real_agiqa1k_duplicated_and_missing_names(tmp_path):
    shutil.copy(shared("agiqa1k") / "AIGC_MOS_Zscore.xlsx", tmp_path)
    reader = AGIQA1KReader()
    with pytest.warns(UserWarning, match=r"dreamStudio_8_9_1_1\.jpg \(rows 1080, 1081\)"):
        dropped = reader.read(tmp_path)
    assert len(dropped) == 1078 and reader.left_out == {"dreamStudio_8_9_1_1.jpg"}
    assert "dreamStudio_8_9_1_1.jpg" not in {r.file_name for r in dropped}
    assert "dreamStudio_8_5_0_0.jpg" not in {r.file_name for r in dropped}  # no row: not a sample
    with pytest.warns(UserWarning, match="kept at its first row"):
        first = AGIQA1KReader("first").read(tmp_path)
    assert len(first) == 1079 and first[-1].targets["quality"] == pytest.approx(0.4414155439958131)
    with pytest.raises(ValueError, match=r"AIGC_MOS_Zscore\.xlsx.*dreamStudio_8_9_1_1\.jpg at rows 1080, 1081"):
        AGIQA1KReader("error").read(tmp_path)


# --- layouts and blank rows --------------------------------------------------------------------------------------
def test_agiqa3k_images_in_one_sub_folder(tmp_path):
    records = AGIQA3KReader().read(agiqa3k_root(tmp_path, image_folder="AGIQA-3K"))
    assert records[0].path == tmp_path / "AGIQA-3K" / "AttnGAN_normal_000.jpg"


def test_aigciqa2023_both_layouts_give_the_same_samples(tmp_path):
    reader = AIGCIQA2023Reader(needed=["authenticity"])
    nested = reader.read(aigciqa2023_root(tmp_path / "nested"))
    flat = reader.read(aigciqa2023_root(tmp_path / "flat", flat=True, mos_folder="MOS"))
    assert [(r.file_name, r.targets) for r in nested] == [(r.file_name, r.targets) for r in flat]
    record = next(r for r in flat if r.file_name == "Glide/007-3.png")
    assert record.path == tmp_path / "flat" / "allimg" / f"{2 * 400 + 7 * 4 + 2}.png"
    assert record.generator == "Glide" and record.prompt == "prompt 007"
    assert set(record.targets) == {"quality", "authenticity", "correspondence"}


def rewrite_csv(path: Path, edit) -> None:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    edit(rows)
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def insert_blank_rows(path: Path, before: list[int]) -> None:
    """Blank lines before the given (1-based) rows of a CSV, as an editor leaves them."""
    lines = path.read_text().splitlines(keepends=True)
    for row in sorted(before, reverse=True):
        lines.insert(row - 1, ",,\n" if row % 2 else "\n")  # an empty line, or a row of empty fields
    path.write_text("".join(lines))


def test_agiqa1k_blank_rows_drop_nothing(tmp_path):
    agiqa1k_root(tmp_path)
    import openpyxl

    workbook = openpyxl.load_workbook(tmp_path / "AIGC_MOS_Zscore.xlsx")
    workbook.active.insert_rows(4)  # a blank row before the third sample ...
    workbook.active.insert_rows(14)  # ... and one between the two rows of the duplicated name
    workbook.save(tmp_path / "AIGC_MOS_Zscore.xlsx")
    with pytest.warns(UserWarning, match=r"dreamStudio_8_9_1_1\.jpg \(rows 13, 15\)"):  # real row numbers
        records = AGIQA1KReader().read(tmp_path)
    assert len(records) == 10  # all of them, as without blank rows


def test_agiqa3k_blank_rows_are_skipped_and_rows_keep_their_numbers(tmp_path):
    agiqa3k_root(tmp_path)
    insert_blank_rows(tmp_path / "data.csv", [3, 6])
    assert len(AGIQA3KReader().read(tmp_path)) == 12
    rewrite_csv(tmp_path / "data.csv", lambda rows: rows[7].__setitem__(5, "high"))
    # The message of parse_targets (every kind of bad value, several rows: test_bad_input.py) names AGIQA-3K's column.
    with pytest.raises(ValueError, match=r"data\.csv: mos_quality must be a finite number; 1 row\(s\) are not: "
                                         r"row 8 \('high'\)$"):
        AGIQA3KReader().read(tmp_path)


def test_aigciqa20k_blank_rows_are_skipped(tmp_path):
    aigciqa20k_root(tmp_path)
    insert_blank_rows(tmp_path / "info_train.csv", [2, 5])
    records = AIGCIQA20KReader().read(tmp_path)
    assert len(records) == 12 and records[0].file_name == "DALLE2_0000.png"


def test_aigciqa2023_prompts_file_with_blank_rows(tmp_path):
    (tmp_path / "Image").mkdir()
    write_mat(tmp_path / "DATA" / "MOS", {1: np.full(NUM_IMAGES, 50.0)})
    rows = [["animal", "dog", f"prompt text {i}"] for i in range(100)]
    write_xlsx(tmp_path / "AIGCIQA2023_Prompts.xlsx", rows[:10] + [[None, "  ", None]] + rows[10:])
    records = AIGCIQA2023Reader().read(tmp_path)
    assert records[4 * 10].prompt == "prompt text 10" and records[-1].prompt == "prompt text 99"


# --- bad input of each dataset's own format (the shared checks' wording on MOSFolder: tests/test_bad_input.py) ---
def test_agiqa3k_missing_column(tmp_path):
    agiqa3k_root(tmp_path)
    rewrite_csv(tmp_path / "data.csv", lambda rows: rows[0].__setitem__(5, "mos_q"))
    with pytest.raises(ValueError, match=r"data\.csv: missing column\(s\) mos_quality"):
        AGIQA3KReader().read(tmp_path)


def test_agiqa3k_duplicated_names_name_the_rows(tmp_path):
    agiqa3k_root(tmp_path)
    rewrite_csv(tmp_path / "data.csv", lambda rows: rows[7].__setitem__(0, rows[2][0]))
    with pytest.raises(ValueError, match=r"data\.csv: 1 duplicated name\(s\): AttnGAN_normal_001\.jpg at rows 3, 8"):
        AGIQA3KReader().read(tmp_path)


def test_agiqa1k_missing_column(tmp_path):
    write_xlsx(tmp_path / "AIGC_MOS_Zscore.xlsx", [["Image", "Prompt", "Score"], ["a.jpg", "p", 1.0]])
    with pytest.raises(ValueError, match=r"AIGC_MOS_Zscore\.xlsx: missing column\(s\) MOS"):
        AGIQA1KReader().read(tmp_path)


def test_aigciqa20k_bad_rows(tmp_path):
    aigciqa20k_root(tmp_path)
    rewrite_csv(tmp_path / "info_train.csv", lambda rows: rows[3].pop())
    with pytest.raises(ValueError, match=r"info_train\.csv: expected 3 fields \(name,prompt,mos\) in every row; "
                                         r"row 4 has 2$"):
        AIGCIQA20KReader().read(tmp_path)


def test_aigciqa20k_val_file_without_mos_says_so(tmp_path):
    aigciqa20k_root(tmp_path)
    rewrite_csv(tmp_path / "info_train.csv", lambda rows: [row.pop() for row in rows])
    with pytest.raises(ValueError, match=r"row 1 has 2, row 2 has 2, .* and 2 more; info_val\.csv has no MOS"):
        AIGCIQA20KReader().read(tmp_path)


def test_aigciqa2023_mat_with_the_wrong_row_count(tmp_path):
    write_mat(tmp_path / "DATA" / "MOS", {1: np.full(2399, 50.0)})
    (tmp_path / "Image").mkdir()
    with pytest.raises(ValueError, match=r"mosz1\.mat: MOSz holds 2399 values, but AIGCIQA2023 has 2400"):
        AIGCIQA2023Reader().read(tmp_path)


def test_aigciqa2023_non_finite_mos_names_the_row(tmp_path):
    values = np.full(NUM_IMAGES, 50.0)
    values[401] = np.nan
    write_mat(tmp_path / "DATA" / "MOS", {1: values})
    (tmp_path / "Image").mkdir()
    with pytest.raises(ValueError, match=r"mosz1\.mat: 1 MOSz value\(s\) are not finite: row 402 \(DALLE/000-2\.png\)"):
        AIGCIQA2023Reader().read(tmp_path)


def test_aigciqa2023_wrong_variable(tmp_path):
    (tmp_path / "DATA").mkdir()
    scipy.io.savemat(tmp_path / "DATA" / "mosz1.mat", {"mos": np.zeros((2400, 1))})
    (tmp_path / "Image").mkdir()
    with pytest.raises(ValueError, match=r"mosz1\.mat: no variable MOSz; it holds mos"):
        AIGCIQA2023Reader().read(tmp_path)


@pytest.mark.parametrize("reader, expected", [
    (AGIQA3KReader, "AGIQA-3K as downloaded: data.csv"),
    (AGIQA1KReader, "AGIQA-1K as downloaded: AIGC_MOS_Zscore.xlsx"),
    (AIGCIQA2023Reader, "AIGCIQA2023 as downloaded: Image/<Model>/NNN-k.png"),
    (AIGCIQA20KReader, "AIGCIQA-20K as downloaded: info_train.csv")])
def test_a_folder_without_the_expected_files_names_the_layout(tmp_path, reader, expected):
    placeholder(tmp_path / "some.png")
    with pytest.raises(FileNotFoundError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        reader().read(tmp_path)
