"""EvalMi-50K: the reader on real rows (copied into tests/data) and on the full published files in
../shared/annotations when present; its targets and their scales, its groups, the prompt-disjoint split,
and every bad input of its own format (its spreadsheet, its JSON lines)."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest
from layouts import evalmi50k_annotations, evalmi50k_root, write_xlsx

from clip_agiqa.data.evalmi50k import EvalMi50K, EvalMi50KReader
from clip_agiqa.errors import InputError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "annotations"
HEADER = ["ImageName", "MOS1", "MOS2", "Y/N", "YN_1", "YN_2", "YN_3", "YN_4"]


def test_reader_on_real_rows_with_images_in_a_sub_folder(tmp_path):
    records = EvalMi50KReader().read(evalmi50k_root(tmp_path, image_folder="images"))
    first = records[0]
    assert len(records) == 36 and first.file_name == "ali_flux_schnell/001.png"
    assert first.path == tmp_path / "images" / "ali_flux_schnell" / "001.png"
    assert first.targets == pytest.approx({"perception": 66.2747966387611, "correspondence": 64.6884993873751,
                                           "task_answer": 1.0})
    assert first.prompt == "a photo of a bench" and first.generator == "ali_flux_schnell"
    assert first.groups == {"task": "single_class", "task_answer": "yes"}
    assert first.where.endswith("AIGI2025_MOS_yn.xlsx, row 2")
    by_name = {r.file_name: r for r in records}
    assert by_name["Kolors/1051.png"].groups["task"] == "style + color_attr + position"


def test_annotations_may_sit_in_another_folder(tmp_path):
    annotations = evalmi50k_annotations(tmp_path / "labels")
    (tmp_path / "images").mkdir()
    records = EvalMi50K(str(tmp_path / "images"), annotations=str(annotations)).load_records()
    assert len(records) == 36 and records[0].path.parent.parent == tmp_path / "images"


def test_each_target_keeps_its_own_fixed_scale(tmp_path):
    data = EvalMi50K(str(tmp_path), target=["perception", "task_answer", "correspondence"])
    assert data.target_scales == {"perception": [0.0, 100.0], "task_answer": [0.0, 1.0],
                                  "correspondence": [0.0, 100.0]}  # known without reading a file
    assert data.scales_fixed()
    with pytest.raises(InputError, match="EvalMi50K target must be one of perception, correspondence, task_answer"):
        EvalMi50K(str(tmp_path), target="quality")


def test_prompt_split_keeps_every_prompt_in_one_part(tmp_path):
    data = EvalMi50K(str(evalmi50k_root(tmp_path)), split="prompt", test_size=0.25, val_size=0.2, seed=3)
    data.load()
    parts = {}
    for record, part in zip(data.records, data.assignment):
        parts.setdefault(record.prompt, set()).add(part)
    assert all(len(found) == 1 for found in parts.values()) and len(parts) == 12
    assert Counter(next(iter(found)) for found in parts.values()) == {"train": 7, "test": 3, "val": 2}


def write_rows(folder: Path, rows: list[list], header: list[str] = HEADER) -> Path:
    evalmi50k_annotations(folder)  # the real prompt lines
    write_xlsx(folder / "AIGI2025_MOS_yn.xlsx", [header, *rows])
    return folder


@pytest.mark.parametrize("row, message", [
    (["DALLE3/001.jpg", 50.0, 50.0, 1], r"row 2 \(ImageName 'DALLE3/001.jpg' is not <generator>/<NNN>.png\)"),
    (["DALLE3/2101.png", 50.0, 50.0, 1], r"row 2 \(DALLE3/2101.png: prompt 2101 is not a line of prompt_tasks"),
    (["DALLE3/001.png", None, 50.0, 1], r"row 2 \(MOS1 is empty\)"),
    (["DALLE3/001.png", 50.0, "high", 1], r"row 2 \(MOS2 is 'high'\)"),
    (["DALLE3/001.png", 50.0, 50.0, 2], r"row 2 \(Y/N is 2, not 0 or 1\)"),
])
def test_a_bad_row_is_one_line_naming_the_file_and_row(tmp_path, row, message):
    folder = write_rows(tmp_path, [row, ["DALLE3/002.png", 50.0, 50.0, 0]])
    with pytest.raises(InputError, match=message) as raised:
        EvalMi50KReader().read(folder)
    assert str(folder / "AIGI2025_MOS_yn.xlsx") in str(raised.value) and "\n" not in str(raised.value)


def test_missing_columns_and_duplicated_names_are_named(tmp_path):
    folder = write_rows(tmp_path, [["DALLE3/001.png", 50.0, 1]], header=["ImageName", "MOS1", "Y/N"])
    with pytest.raises(InputError, match=r"AIGI2025_MOS_yn.xlsx: missing column\(s\) MOS2; the columns are "
                                         r"ImageName, MOS1, Y/N"):
        EvalMi50KReader().read(folder)
    write_rows(tmp_path, [["DALLE3/001.png", 50.0, 50.0, 1]] * 2)
    with pytest.raises(InputError, match=r"1 duplicated name\(s\): DALLE3/001.png at rows 2, 3"):
        EvalMi50KReader().read(folder)


def test_bad_prompt_lines_and_hostile_files_are_named(tmp_path):
    folder = write_rows(tmp_path, [["DALLE3/001.png", 50.0, 50.0, 1]])
    prompts = folder / "prompt_tasks.jsonl"
    prompts.write_text('{"tag": "colors", "prompt": "a red cup"}\n{"tag": "colors"}\n')
    with pytest.raises(InputError, match=r"prompt_tasks.jsonl, line 2: needs a non-empty string \"prompt\""):
        EvalMi50KReader().read(folder)
    prompts.write_text('{"tag": "colors", "prompt": "a red cup"}\n[[[\n')
    with pytest.raises(InputError, match=r"prompt_tasks.jsonl, line 2: not a JSON object"):
        EvalMi50KReader().read(folder)
    prompts.unlink()
    os.mkfifo(prompts)  # would block a plain open() for good
    with pytest.raises(InputError, match=r"prompt_tasks.jsonl is not a regular file"):
        EvalMi50KReader().read(folder)
    prompts.unlink()
    with pytest.raises(InputError, match=r"prompt_tasks.jsonl not found: expected EvalMi-50K as downloaded"):
        EvalMi50KReader().read(folder)


# --- the full published files, when ../shared is there ------------------------------------------------------------
def shared_evalmi50k() -> Path:
    if not (SHARED / "evalmi50k").is_dir():
        pytest.skip(f"{SHARED / 'evalmi50k'} not present (the real annotation files are optional)")
    return SHARED / "evalmi50k"


@pytest.fixture(scope="module")
def real_records(tmp_path_factory):
    annotations = shared_evalmi50k()
    return EvalMi50KReader(annotations).read(tmp_path_factory.mktemp("evalmi50k"))  # records only: no image read


def test_the_real_files_give_every_record(real_records):
    assert len(real_records) == 50_400
    generators = Counter(r.generator for r in real_records)
    assert len(generators) == 24 and set(generators.values()) == {2_100}
    assert len({r.file_name.split("/")[1] for r in real_records}) == 2_100  # prompt numbers 001 .. 2100
    assert len({r.prompt for r in real_records}) == 2_090  # ten texts appear under two numbers each
    tasks = Counter(r.groups["task"] for r in real_records)
    base = {task for task in tasks if " + " not in task}
    assert len(tasks) == 58 and len(base) == 20 and {"counting", "OCR", "position", "HOI"} <= base
    assert Counter(r.groups["task_answer"] for r in real_records) == {"yes": 28_931, "no": 21_469}
    perception = [r.targets["perception"] for r in real_records]
    assert min(perception) == pytest.approx(15.9531563777631) and max(perception) == pytest.approx(73.3049776344248)
    lines = (shared_evalmi50k() / "prompt_tasks.jsonl").read_text().splitlines()
    last_line = int(real_records[-1].file_name.split("/")[1][:-4])
    assert real_records[-1].prompt == json.loads(lines[last_line - 1])["prompt"]


def test_the_real_prompt_split_is_disjoint_and_quick(real_records, tmp_path):
    data = EvalMi50K(str(tmp_path), split="prompt", test_size=0.2, val_size=0.1, seed=0)
    started = time.perf_counter()
    assignment = data.assign_splits(sorted(real_records, key=lambda r: r.file_name))
    assert time.perf_counter() - started < 10  # a few hundredths of a second when quiet
    parts = {}
    for record, part in zip(sorted(real_records, key=lambda r: r.file_name), assignment):
        parts.setdefault(record.prompt, set()).add(part)
    assert all(len(found) == 1 for found in parts.values())
    counts = Counter(assignment)
    assert counts["test"] == pytest.approx(0.2 * 50_400, rel=0.05) and counts["val"] > 0.05 * 50_400
