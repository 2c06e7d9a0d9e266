"""Each benchmark datamodule on a generated root in its real layout (placeholder images, real rows),
through the CLI; integration checks on the full real annotation files; every bad-input case."""

from __future__ import annotations

import csv
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from clip_agiqa.data import AGIQA1K, AGIQA3K, AIGCIQA20K, AIGCIQA2023
from clip_agiqa.data.aigciqa2023 import NUM_IMAGES
from clip_agiqa.data.splits import assign
from conftest import SHARED_ANNOTATIONS, TINY_MODEL_ARGS, run_cli, trainer_args
from layouts import agiqa1k_root, agiqa3k_root, aigciqa20k_root, aigciqa2023_root, placeholder, write_mat, write_xlsx

DATA = Path(__file__).parent / "data"
# A few batches are enough to prove the wiring; the 2,400-image layout would otherwise take minutes.
SHORT = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2", "--trainer.limit_test_batches", "2",
         "--data.batch_size", "4", "--data.num_workers", "0"]


# --- loading and splitting -------------------------------------------------------------------------
def test_agiqa3k_loads_targets_prompts_generators(tmp_path):
    data = AGIQA3K(str(agiqa3k_root(tmp_path)), target="align", split="prompt")
    data.setup()
    first = data.records[0]
    assert len(data.records) == 12 and first.file_name == "AttnGAN_normal_000.jpg"
    assert first.mos == pytest.approx(0.40889324) and first.targets["quality"] == pytest.approx(0.965602553)
    assert first.prompt == "statue of a man" and first.generator == "AttnGAN"
    assert sorted(set(data.assignment)) == ["test", "train", "val"]


def test_agiqa3k_images_in_one_sub_folder(tmp_path):
    data = AGIQA3K(str(agiqa3k_root(tmp_path, image_folder="AGIQA-3K")))
    data.setup()
    assert data.records[0].path == tmp_path / "AGIQA-3K" / "AttnGAN_normal_000.jpg"


def test_agiqa1k_reads_the_spreadsheet_and_drops_the_duplicated_name(tmp_path):
    data = AGIQA1K(str(agiqa1k_root(tmp_path)))
    with pytest.warns(UserWarning, match=r"dreamStudio_8_9_1_1\.jpg \(rows 12, 13\)"):
        data.setup()
    assert len(data.records) == 10
    assert data.records[0].prompt == "bird, driving aircraft, city, anime style"
    assert {r.generator for r in data.records} == {"deepai"}


def test_aigciqa2023_both_layouts_give_the_same_samples(tmp_path):
    nested = AIGCIQA2023(str(aigciqa2023_root(tmp_path / "nested")), target="authenticity")
    flat = AIGCIQA2023(str(aigciqa2023_root(tmp_path / "flat", flat=True, mos_folder="MOS")), target="authenticity")
    nested.setup(), flat.setup()
    assert [r.file_name for r in nested.records] == [r.file_name for r in flat.records]
    assert [r.mos for r in nested.records] == [r.mos for r in flat.records]
    record = next(r for r in flat.records if r.file_name == "Glide/007-3.png")
    assert record.path == tmp_path / "flat" / "allimg" / f"{2 * 400 + 7 * 4 + 2}.png"
    assert record.generator == "Glide" and record.prompt == "prompt 007"
    assert set(record.targets) == {"quality", "authenticity", "correspondence"}


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
    data = AGIQA1K(str(tmp_path))
    with pytest.warns(UserWarning, match=r"dreamStudio_8_9_1_1\.jpg \(rows 13, 15\)"):  # real row numbers
        data.setup()
    assert len(data.records) == 10  # all of them, as without blank rows


def test_agiqa3k_blank_rows_are_skipped_and_rows_keep_their_numbers(tmp_path):
    agiqa3k_root(tmp_path)
    insert_blank_rows(tmp_path / "data.csv", [3, 6])
    assert len(AGIQA3K(str(tmp_path)).load_records()) == 12
    rewrite_csv(tmp_path / "data.csv", lambda rows: rows[7].__setitem__(5, "high"))
    with pytest.raises(ValueError, match=r"row 8 \('high'\)"):
        AGIQA3K(str(tmp_path)).load_records()


def test_aigciqa20k_blank_rows_are_skipped(tmp_path):
    aigciqa20k_root(tmp_path)
    insert_blank_rows(tmp_path / "info_train.csv", [2, 5])
    records = AIGCIQA20K(str(tmp_path)).load_records()
    assert len(records) == 12 and records[0].file_name == "DALLE2_0000.png"


def test_aigciqa2023_prompts_file_with_blank_rows(tmp_path):
    (tmp_path / "Image").mkdir()
    write_mat(tmp_path / "DATA" / "MOS", {1: np.full(NUM_IMAGES, 50.0)})
    rows = [["animal", "dog", f"prompt text {i}"] for i in range(100)]
    write_xlsx(tmp_path / "AIGCIQA2023_Prompts.xlsx", rows[:10] + [[None, "  ", None]] + rows[10:])
    records = AIGCIQA2023(str(tmp_path)).load_records()
    assert records[4 * 10].prompt == "prompt text 10" and records[-1].prompt == "prompt text 99"


def test_aigciqa20k_reads_headerless_csv(tmp_path):
    data = AIGCIQA20K(str(aigciqa20k_root(tmp_path)))
    data.setup()
    assert len(data.records) == 12
    assert data.records[0].file_name == "DALLE2_0000.png" and data.records[0].mos == pytest.approx(3.6638868235)
    assert data.records[0].generator == "DALLE2" and data.records[0].prompt.startswith("A cyberpunk gopnik")


# --- through the CLI -------------------------------------------------------------------------------
def fit_and_test(root: Path, tmp_path: Path, data_class: str, extra: list[str] = (), same_pictures: bool = False):
    """Fit and test through the CLI; the test metrics must be numbers (RMSE always; the correlations too unless
    every placeholder is the same picture, when the predictions are constant by design)."""
    run_dir = tmp_path / "run"
    common = ["--data", data_class, "--data.root", str(root), *SHORT, *extra]
    run_cli(["fit", *TINY_MODEL_ARGS, *trainer_args(run_dir), *common])
    assert (run_dir / "checkpoints" / "splits.csv").is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NaN warnings of the constant-picture case
        cli = run_cli(["test", *TINY_MODEL_ARGS, *trainer_args(run_dir), *common,
                       "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt")])
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    assert np.isfinite(metrics["test/rmse"]), metrics
    if not same_pictures:
        assert np.isfinite(metrics["test/srcc"]) and np.isfinite(metrics["test/plcc"]), metrics
    return metrics


def test_cli_agiqa3k(tmp_path):
    fit_and_test(agiqa3k_root(tmp_path), tmp_path, "AGIQA3K", ["--data.target", "align", "--data.split", "prompt"])


def test_cli_agiqa1k(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_and_test(agiqa1k_root(tmp_path), tmp_path, "AGIQA1K")


def test_cli_aigciqa2023(tmp_path):
    fit_and_test(aigciqa2023_root(tmp_path / "root"), tmp_path, "AIGCIQA2023", ["--data.target", "correspondence"],
                 same_pictures=True)  # 2,400 copies of one placeholder


def test_cli_aigciqa20k(tmp_path):
    fit_and_test(aigciqa20k_root(tmp_path), tmp_path, "AIGCIQA20K", ["--data.split", "kfold", "--data.fold", "1"])


# --- the full real annotation files ----------------------------------------------------------------
def shared(*parts: str) -> Path:
    path = SHARED_ANNOTATIONS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (the real annotation files live in ../shared/annotations)")
    return path


def test_real_agiqa3k_counts_and_prompt_split():
    records = AGIQA3K(str(shared("agiqa3k"))).load_records()
    assert len(records) == 2982 and len({r.prompt for r in records}) == 300
    assignment = assign("prompt", records, test_size=0.2, val_size=0.1, seed=3)
    prompts = {s: {r.prompt for r, a in zip(records, assignment) if a == s} for s in ("train", "val", "test")}
    assert not prompts["train"] & prompts["test"] and not prompts["train"] & prompts["val"]
    assert not prompts["val"] & prompts["test"] and len(prompts["test"]) == 60


def test_real_agiqa3k_paper_split_matches_the_published_split():
    records = AGIQA3K(str(shared("agiqa3k"))).load_records()
    names = [r.file_name for r in records]
    assignment = assign("paper", records, test_size=0.2, val_size=0.1, seed=0, annotation_order=names)
    assert assignment.count("test") == 597 and "val" not in assignment
    # The first rows of the published code's test list (sklearn train_test_split, random_state=42).
    for name in ("sd1.5_normal_027.jpg", "sd1.5_highcorr_065.jpg", "glide_normal_291.jpg", "DALLE2_normal_032.jpg"):
        assert assignment[names.index(name)] == "test"


def test_real_aigciqa2023_maps_every_mos_to_its_image(tmp_path):
    with open(shared("aigciqa2023", "mos_normalized.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    write_mat(tmp_path / "DATA" / "MOS", {i: [20 * float(r[f"mosz{i}"]) for r in rows] for i in (1, 2, 3)})
    (tmp_path / "Image").mkdir()
    shutil.copy(shared("aigciqa2023", "AIGCIQA2023_Prompts.xlsx"), tmp_path)
    records = AIGCIQA2023(str(tmp_path), target="quality").load_records()
    assert len(records) == 2400
    for record, row in zip(records, rows):
        assert record.file_name == f"{row['model']}/{row['image_name']}"
        assert record.mos == pytest.approx(20 * float(row["mosz1"]))
        assert record.targets["authenticity"] == pytest.approx(20 * float(row["mosz2"]))
        assert record.targets["correspondence"] == pytest.approx(20 * float(row["mosz3"]))
    assert len({r.prompt for r in records}) == 100 and records[0].prompt == "a corgi"


def test_real_agiqa1k_duplicated_and_missing_names(tmp_path):
    shutil.copy(shared("agiqa1k", "AIGC_MOS_Zscore.xlsx"), tmp_path)
    with pytest.warns(UserWarning, match=r"dreamStudio_8_9_1_1\.jpg \(rows 1080, 1081\)"):
        dropped = AGIQA1K(str(tmp_path)).load_records()
    assert len(dropped) == 1078 and "dreamStudio_8_9_1_1.jpg" not in {r.file_name for r in dropped}
    assert "dreamStudio_8_5_0_0.jpg" not in {r.file_name for r in dropped}  # no row: not a sample
    with pytest.warns(UserWarning, match="kept at its first row"):
        first = AGIQA1K(str(tmp_path), duplicates="first").load_records()
    assert len(first) == 1079 and first[-1].mos == pytest.approx(0.4414155439958131)
    with pytest.raises(ValueError, match=r"AIGC_MOS_Zscore\.xlsx.*dreamStudio_8_9_1_1\.jpg at rows 1080, 1081"):
        AGIQA1K(str(tmp_path), duplicates="error").load_records()


def test_real_aigciqa20k_counts():
    records = AIGCIQA20K(str(shared("aigciqa20k"))).load_records()
    assert len(records) == 14000  # 14,000 rows (the last line has no newline, so `wc -l` says 13,999)
    assert len({r.generator for r in records}) == 15 and max(r.mos for r in records) <= 5


# --- bad input -------------------------------------------------------------------------------------
# Missing and unreadable images, skip_bad_images: the same for every dataset (MOSDataModule), tested once in
# test_bad_input.py and tests/data/test_image_checks.py.


def rewrite_csv(path: Path, edit) -> None:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    edit(rows)
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def test_agiqa3k_missing_column(tmp_path):
    agiqa3k_root(tmp_path)
    rewrite_csv(tmp_path / "data.csv", lambda rows: rows[0].__setitem__(5, "mos_q"))
    with pytest.raises(ValueError, match=r"data\.csv: missing column\(s\) mos_quality"):
        AGIQA3K(str(tmp_path)).setup()


def test_agiqa3k_bad_mos_names_every_row(tmp_path):
    agiqa3k_root(tmp_path)

    def spoil(rows):
        for row, value in ((4, ""), (6, "high"), (9, "nan")):
            rows[row][5] = value
    rewrite_csv(tmp_path / "data.csv", spoil)
    with pytest.raises(ValueError, match=r"data\.csv: mos_quality must be a finite number; 3 row\(s\) are not: "
                                         r"row 5 \(empty\), row 7 \('high'\), row 10 \('nan'\)$"):
        AGIQA3K(str(tmp_path)).setup()


def test_agiqa3k_duplicated_names_name_the_rows(tmp_path):
    agiqa3k_root(tmp_path)
    rewrite_csv(tmp_path / "data.csv", lambda rows: rows[7].__setitem__(0, rows[2][0]))
    with pytest.raises(ValueError, match=r"data\.csv: 1 duplicated name\(s\): AttnGAN_normal_001\.jpg at rows 3, 8"):
        AGIQA3K(str(tmp_path)).setup()


def test_aigciqa20k_bad_rows(tmp_path):
    aigciqa20k_root(tmp_path)
    rewrite_csv(tmp_path / "info_train.csv", lambda rows: rows[3].pop())
    with pytest.raises(ValueError, match=r"info_train\.csv: expected 3 fields \(name,prompt,mos\) in every row; "
                                         r"row 4 has 2$"):
        AIGCIQA20K(str(tmp_path)).setup()


def test_aigciqa20k_val_file_without_mos_says_so(tmp_path):
    aigciqa20k_root(tmp_path)
    rewrite_csv(tmp_path / "info_train.csv", lambda rows: [row.pop() for row in rows])
    with pytest.raises(ValueError, match=r"row 1 has 2, row 2 has 2, .* and 2 more; info_val\.csv has no MOS"):
        AIGCIQA20K(str(tmp_path)).setup()


def test_aigciqa2023_mat_with_the_wrong_row_count(tmp_path):
    write_mat(tmp_path / "DATA" / "MOS", {1: np.full(2399, 50.0)})
    (tmp_path / "Image").mkdir()
    with pytest.raises(ValueError, match=r"mosz1\.mat: MOSz holds 2399 values, but AIGCIQA2023 has 2400"):
        AIGCIQA2023(str(tmp_path)).setup()


def test_aigciqa2023_non_finite_mos_names_the_row(tmp_path):
    values = np.full(NUM_IMAGES, 50.0)
    values[401] = np.nan
    write_mat(tmp_path / "DATA" / "MOS", {1: values})
    (tmp_path / "Image").mkdir()
    with pytest.raises(ValueError, match=r"mosz1\.mat: 1 MOSz value\(s\) are not finite: row 402 \(DALLE/000-2\.png\)"):
        AIGCIQA2023(str(tmp_path)).setup()


def test_aigciqa2023_wrong_variable(tmp_path):
    (tmp_path / "DATA").mkdir()
    scipy.io.savemat(tmp_path / "DATA" / "mosz1.mat", {"mos": np.zeros((2400, 1))})
    (tmp_path / "Image").mkdir()
    with pytest.raises(ValueError, match=r"mosz1\.mat: no variable MOSz; it holds mos"):
        AIGCIQA2023(str(tmp_path)).setup()


def test_agiqa1k_missing_column(tmp_path):
    write_xlsx(tmp_path / "AIGC_MOS_Zscore.xlsx", [["Image", "Prompt", "Score"], ["a.jpg", "p", 1.0]])
    with pytest.raises(ValueError, match=r"AIGC_MOS_Zscore\.xlsx: missing column\(s\) MOS"):
        AGIQA1K(str(tmp_path)).setup()


@pytest.mark.parametrize("data_class, expected", [
    (AGIQA3K, "AGIQA-3K as downloaded: data.csv"), (AGIQA1K, "AGIQA-1K as downloaded: AIGC_MOS_Zscore.xlsx"),
    (AIGCIQA2023, "AIGCIQA2023 as downloaded: Image/<Model>/NNN-k.png"),
    (AIGCIQA20K, "AIGCIQA-20K as downloaded: info_train.csv")])
def test_a_folder_without_the_expected_files_names_the_layout(tmp_path, data_class, expected):
    placeholder(tmp_path / "some.png")
    with pytest.raises(FileNotFoundError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        data_class(str(tmp_path)).setup()


def test_unknown_target_is_refused(tmp_path):
    with pytest.raises(ValueError, match="quality, align"):
        AGIQA3K(str(tmp_path), target="aesthetics")
