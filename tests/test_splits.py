"""The split protocol: random | prompt | kfold | predefined | paper, reproducible and checked."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from clip_agiqa.data import MOSFolder, Record
from clip_agiqa.data.splits import assign, kfold_split, paper_split, random_split, read_splits, write_splits


def records(n: int, per_prompt: int = 3) -> list[Record]:
    return [Record(f"img_{i:03d}.png", Path(f"img_{i:03d}.png"), float(i % 5), prompt=f"prompt {i // per_prompt}")
            for i in range(n)]


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
    again = dict(zip((r.file_name for r in reordered), assign("prompt", reordered, test_size=0.2, val_size=0.1, seed=1)))
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


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def test_predefined_split_reads_a_run_splits_file(tmp_path):
    rows = records(20)
    assignment = random_split(20, 0.2, 0.1, 0)
    write_splits(tmp_path / "splits.csv", rows, assignment)
    assert read_splits(tmp_path / "splits.csv", [r.file_name for r in rows], 0.1, 0) == assignment


def test_predefined_split_without_val_draws_val_from_train(tmp_path):
    names = [f"n{i}" for i in range(20)]
    path = write_csv(tmp_path / "s.csv", [["file_name", "split"]] + [[n, "test" if i < 4 else "train"]
                                                                     for i, n in enumerate(names)])
    assignment = read_splits(path, names, 0.25, 0)
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
        read_splits(path, ["n0", "n1"], 0.0, 0)
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
