"""The split protocol: random | prompt | kfold | predefined | paper, reproducible and checked."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from layouts import agiqa3k_prompted_root, ipce_folder, write_csv

from clip_agiqa.data import MOSFolder, Record
from clip_agiqa.data.splits import (
    assign,
    kfold_split,
    paper_split,
    predefined_split,
    random_split,
    read_splits,
    write_splits,
)


def records(n: int, per_prompt: int = 3) -> list[Record]:
    return [Record(f"img_{i:03d}.png", Path(f"img_{i:03d}.png"), {"mos": float(i % 5)},
                   prompt=f"prompt {i // per_prompt}") for i in range(n)]


def test_random_split_is_the_same_on_any_machine():
    # A fixed expectation: numpy's PCG64 permutation does not depend on the platform.
    assert random_split(10, 0.2, 0.1, 0) == ["train", "train", "val", "train", "test", "train", "test", "train",
                                             "train", "train"]
    assert random_split(100, 0.2, 0.1, 5) == random_split(100, 0.2, 0.1, 5) != random_split(100, 0.2, 0.1, 6)
    assert Counter(random_split(100, 0.2, 0.1, 5)) == {"train": 72, "test": 20, "val": 8}


def test_prompt_split_shares_no_prompt():
    rows = records(90)
    assignment = assign("prompt", rows, test_size=0.2, val_size=0.1, seed=1)
    by_split = {s: {r.prompt for r, a in zip(rows, assignment) if a == s} for s in ("train", "val", "test")}
    assert by_split["train"] and by_split["val"] and by_split["test"]
    assert not (by_split["train"] & by_split["test"] or by_split["train"] & by_split["val"]
                or by_split["val"] & by_split["test"])
    # Independent of the record order.
    reordered = list(reversed(rows))
    again = dict(zip((r.file_name for r in reordered),
                     assign("prompt", reordered, test_size=0.2, val_size=0.1, seed=1)))
    assert [again[r.file_name] for r in rows] == assignment


def test_prompt_split_needs_prompts():
    rows = records(9)
    rows[4].prompt = None
    with pytest.raises(ValueError, match="1 of 9 have none"):
        assign("prompt", rows, test_size=0.2, val_size=0.1, seed=0)


def test_kfold_test_parts_cover_every_sample_once():
    tests = [np.flatnonzero(np.array(kfold_split(23, 5, fold, 0.1, 7)) == "test") for fold in range(5)]
    assert sorted(np.concatenate(tests).tolist()) == list(range(23))
    assert all("val" in kfold_split(23, 5, fold, 0.1, 7) for fold in range(5))
    with pytest.raises(ValueError, match="0 <= fold < folds"):
        kfold_split(23, 5, 5, 0.1, 7)


def test_paper_split_is_sklearn_train_test_split_random_state_42():
    order = [f"n{i}" for i in range(50)]
    assignment = paper_split(order, order)
    expected_test = set(np.random.RandomState(42).permutation(50)[:10])  # ceil(0.2 * 50)
    assert {i for i, a in enumerate(assignment) if a == "test"} == expected_test
    # Follows the annotation order, whatever order the records come in.
    shuffled = list(reversed(order))
    assert paper_split(order, shuffled) == list(reversed(assignment))


def test_predefined_split_reads_a_run_splits_file(tmp_path):
    rows = records(20)
    assignment = random_split(20, 0.2, 0.1, 0)
    write_splits(tmp_path / "splits.csv", rows, assignment)
    assert read_splits(tmp_path / "splits.csv", [r.file_name for r in rows]) == assignment


def test_predefined_split_without_val_or_prompts_draws_val_from_train_at_random(tmp_path):
    rows = [Record(f"n{i}", Path(f"n{i}"), {"mos": 1.0}) for i in range(20)]
    path = write_csv(tmp_path / "s.csv", [["file_name", "split"]] + [[r.file_name, "test" if i < 4 else "train"]
                                                                     for i, r in enumerate(rows)])
    assignment = predefined_split(path, rows, 0.25, 0)
    assert Counter(assignment) == {"train": 12, "val": 4, "test": 4} and assignment[:4] == ["test"] * 4


@pytest.mark.parametrize("rows, message", [
    ([["name", "split"], ["n0", "train"]], r"needs columns file_name,split; the columns are name, split"),
    ([["file_name", "split"], ["n0", "train"], ["n1", "holdout"]], r"row 3: split 'holdout' is not one of"),
    ([["file_name", "split"], ["n0", "train"], ["n0", "test"]], r"row 3: n0 is listed twice"),
    ([["file_name", "split"], ["n0", "train"], ["", "test"]], r"row 3: empty file_name"),
    ([["file_name", "split"], ["n0", "train"], ["n1", "test"], ["zz", "test"]], r"1 name\(s\) are not samples.*zz"),
    ([["file_name", "split"], ["n0", "train"]], r"1 of 2 samples have no split, e\.g\. n1"),
])
def test_predefined_split_errors_name_the_file_and_row(tmp_path, rows, message):
    path = write_csv(tmp_path / "s.csv", rows)
    with pytest.raises(ValueError, match=message) as error:
        read_splits(path, ["n0", "n1"])
    assert str(path) in str(error.value)


def test_predefined_split_needs_a_file():
    with pytest.raises(ValueError, match="needs splits_file"):
        assign("predefined", records(5), test_size=0.2, val_size=0.1, seed=0)


def test_unknown_protocol():
    with pytest.raises(ValueError, match="random, prompt, kfold, predefined, paper"):
        assign("by-generator", records(5), test_size=0.2, val_size=0.1, seed=0)


def test_paper_protocol_in_a_datamodule_uses_test_as_val_and_warns(synthetic_root):
    data = MOSFolder(str(synthetic_root), split="paper")
    with pytest.warns(UserWarning, match="reproduction only"):
        data.setup()
    assert set(data.assignment) == {"train", "test"}
    assert data.split_records("val") == data.split_records("test")
    assert len(data.split_records("test")) == 9  # ceil(0.2 * 41)


def test_predefined_protocol_reuses_an_earlier_split(synthetic_root, tmp_path):
    first = MOSFolder(str(synthetic_root), split="prompt", seed=3)
    path = first.save_splits(tmp_path)
    again = MOSFolder(str(synthetic_root), split="predefined", splits_file=str(path))
    again.setup()
    assert again.assignment == first.assignment


# --- published split folders (IPCE's layout) and the validation set drawn from train ----------------------------
def prompts_of(data, split: str) -> set[str]:
    return {r.prompt for r in data.split_records(split)}


def test_an_ipce_split_folder_loads_and_val_is_drawn_by_prompt_when_test_is_prompt_disjoint(tmp_path):
    from clip_agiqa.data import AGIQA3K

    root = agiqa3k_prompted_root(tmp_path / "AGIQA-3K")
    folder = ipce_folder(tmp_path / "Database" / "AGIQA-3K" / "1", root, test_prompts={0, 5, 9})
    data = AGIQA3K(str(root), split="predefined", splits_file=str(folder), val_size=0.25)
    data.setup()
    assert Counter(data.assignment) == {"train": 21, "val": 6, "test": 9}  # val.csv is the test set; 2 of 9 prompts
    assert prompts_of(data, "test") == {"prompt number 0", "prompt number 5", "prompt number 9"}
    assert not prompts_of(data, "val") & prompts_of(data, "train")
    assert not prompts_of(data, "val") & prompts_of(data, "test")
    recorded = dict(csv.reader(open(data.save_splits(tmp_path / "run"))))
    assert [recorded[r.file_name] for r in data.records] == data.assignment  # splits.csv holds the drawn val


def test_val_is_drawn_at_random_when_train_and_test_share_prompts_and_by_prompt_under_split_prompt(tmp_path):
    rows = records(60, per_prompt=3)
    shared = write_csv(tmp_path / "s.csv", [["file_name", "split"]] + [[r.file_name, "test" if i % 5 == 0 else "train"]
                                                                       for i, r in enumerate(rows)])
    at_random = predefined_split(shared, rows, 0.2, 0)
    assert at_random == assign("predefined", rows, test_size=0.2, val_size=0.2, seed=0, splits_file=str(shared))
    val = {r.prompt for r, s in zip(rows, at_random) if s == "val"}
    assert val & {r.prompt for r, s in zip(rows, at_random) if s == "train"}  # random: images of one prompt split
    with pytest.warns(UserWarning, match=r"share \d+ prompt\(s\), so the test set is not prompt-disjoint"):
        by_prompt = assign("prompt", rows, test_size=0.2, val_size=0.2, seed=0, splits_file=str(shared))
    assert not {r.prompt for r, s in zip(rows, by_prompt) if s == "val"} & {r.prompt for r, s in zip(rows, by_prompt)
                                                                             if s == "train"}


def test_a_split_folder_with_test_csv_keeps_val_csv_as_val(tmp_path):
    names = [f"n{i}.png" for i in range(6)]
    for split, part in (("train", names[:3]), ("val", names[3:4]), ("test", names[4:])):
        write_csv(tmp_path / f"{split}.csv", [["image_name", "MOS"]] + [[n, "1.0"] for n in part])
    assert read_splits(tmp_path, names) == ["train"] * 3 + ["val"] + ["test"] * 2


def test_ipce_aigciqa2023_rows_join_the_model_folder_and_agiqa1k_rows_name_the_image(tmp_path):
    names = ["Controlnet/000-1.png", "DALLE/000-1.png", "stable-diffusion/003-2.png"]
    write_csv(tmp_path / "train.csv", [["model", "image_name", "mosz1", "mosz2", "mosz3", "prompt"],
                                       ["Controlnet", "000-1.png", "3.0", "2.3", "2.9", "a corgi"],
                                       ["DALLE", "000-1.png", "3.4", "3.3", "3.3", "a corgi"]])
    write_csv(tmp_path / "val.csv", [["model", "image_name", "mosz1", "mosz2", "mosz3", "prompt"],
                                     ["stable-diffusion", "003-2.png", "2.6", "2.8", "2.8", "a bench"]])
    assert read_splits(tmp_path, names) == ["train", "train", "test"]
    agiqa1k = tmp_path / "agiqa1k"
    agiqa1k.mkdir()
    write_csv(agiqa1k / "train.csv", [["Image", "Prompt", "MOS"], ["deepai_0_0_0_0.jpg", "bird", "2.7"]])
    write_csv(agiqa1k / "val.csv", [["Image", "Prompt", "MOS"], ["deepai_0_0_0_1.jpg", "bird", "4.1"]])
    assert read_splits(agiqa1k, ["deepai_0_0_0_0.jpg", "deepai_0_0_0_1.jpg"]) == ["train", "test"]


@pytest.mark.parametrize("files, message", [
    ({"train.csv": [["name"], ["a.png"]]}, r"needs train\.csv and test\.csv \(or val\.csv.*holds train\.csv"),
    ({"train.csv": [["file", "mos"], ["a.png", "1"]], "val.csv": [["file"], ["b.png"]]},
     r"train\.csv: no image name column \(one of file_name, name, image_name, image\); the columns are file, mos"),
    ({"train.csv": [["name", "mos"], ["a.png", "1"], ["", "2"]], "val.csv": [["name"], ["b.png"]]},
     r"train\.csv, row 3: empty name"),
    ({"train.csv": [["name"], ["a.png"]], "val.csv": [["name"], ["b.png"]], "test.csv": [["name"], ["b.png"]]},
     r"test\.csv, row 2: b\.png is listed twice \(first at .*val\.csv, row 2\)"),
    ({"train.csv": [["name"], ["a.png"]], "val.csv": [["name"], ["b.png"], ["../../outside/x.png"]]},
     r"val\.csv, row 3: \.\./\.\./outside/x\.png points outside the data root"),
    ({"train.csv": [["name"], ["a.png"]], "val.csv": [["name"], ["b.png"], ["0.png"]]},
     r"1 name\(s\) are not samples of this dataset, e\.g\. 0\.png; its samples are named like a\.png, b\.png"),
    ({"train.csv": [["name"], ["a.png"]], "val.csv": [["name"]]}, r"1 of 2 samples have no split, e\.g\. b\.png"),
])
def test_split_folder_errors_name_the_file_and_row(tmp_path, files, message):
    for name, rows in files.items():
        write_csv(tmp_path / name, rows)
    with pytest.raises((ValueError, FileNotFoundError), match=message) as error:
        read_splits(tmp_path, ["a.png", "b.png"])
    assert str(tmp_path) in str(error.value)


def test_a_missing_splits_path_says_what_it_expects(tmp_path):
    with pytest.raises(FileNotFoundError, match="a CSV file_name,split or a folder with train.csv"):
        read_splits(tmp_path / "nowhere", ["a"])
