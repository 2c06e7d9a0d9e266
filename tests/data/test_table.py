"""Datasets described as data (clip_agiqa.data.table): the shipped descriptions give the same records as the code
readers, EvalMuse-40K's train_list.json shape (raters' scores -> mean and std) reads and trains, every format reads
the same table, and every bad description or annotation file is one line naming the file and the column or key."""

from __future__ import annotations

import csv
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from experiment_helpers import as_flags, shrink_args
from helpers import REPO, run_cli
from layouts import placeholder, write_csv, write_xlsx

from clip_agiqa.data.agiqa3k import AGIQA3KReader
from clip_agiqa.data.aigciqa20k import AIGCIQA20KReader
from clip_agiqa.data.table import TableData, TableDescription, TableReader
from clip_agiqa.errors import InputError

ROWS = Path(__file__).parent
DATASETS = REPO / "experiments" / "datasets"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "annotations"


def test_agiqa3k_description_gives_the_readers_records(tmp_path):
    shutil.copy(ROWS / "agiqa3k_data.csv", tmp_path / "data.csv")
    described = TableReader(DATASETS / "agiqa3k.yaml")
    assert described.read(tmp_path) == AGIQA3KReader().read(tmp_path)
    assert described.targets == ("quality", "align") and described.scale_of("align") == (0.0, 5.0)


def test_aigciqa20k_description_reads_the_headerless_release(tmp_path):
    shutil.copy(ROWS / "aigciqa20k_info_train.csv", tmp_path / "info_train.csv")
    assert TableReader(DATASETS / "aigciqa20k.yaml").read(tmp_path) == AIGCIQA20KReader().read(tmp_path)


def test_agiqa3k_description_on_the_full_file(tmp_path):
    if not (SHARED / "agiqa3k").is_dir():
        pytest.skip(f"{SHARED / 'agiqa3k'} not present (the real annotation files are optional)")
    assert TableReader(DATASETS / "agiqa3k.yaml").read(SHARED / "agiqa3k") == AGIQA3KReader().read(SHARED / "agiqa3k")


# --- EvalMuse-40K's train_list.json, generated in its published shape --------------------------------------------
def evalmuse_root(root: Path, prompts: int = 12, per_prompt: int = 3, seed: int = 0) -> Path:
    """A train_list.json of the published shape and placeholder images: each image's raters' 1-5 scores follow
    a hidden quality, so a model has something to learn."""
    rng = np.random.default_rng(seed)
    items = []
    for prompt in range(prompts):
        for k in range(per_prompt):
            quality = rng.uniform(1, 5)
            raters = np.clip(np.rint(quality + rng.normal(0, 0.6, rng.integers(2, 5))), 1, 5).astype(int).tolist()
            items.append({"prompt_id": f"{prompt:05d}", "prompt": f"a picture of thing {prompt}",
                          "type": "real" if prompt % 2 else "synthetic", "img_path": f"images/{prompt:05d}_{k}.jpg",
                          "total_score": raters, "element_score": {f"thing {prompt} (object)": [1, 0, 1]}})
    root.mkdir(parents=True, exist_ok=True)
    (root / "train_list.json").write_text(json.dumps(items))
    for index, item in enumerate(items):
        placeholder(root / item["img_path"], seed=index)
    return root


def test_evalmuse40k_description_gives_the_raters_mean_and_std(tmp_path):
    root = evalmuse_root(tmp_path)
    items = json.loads((root / "train_list.json").read_text())
    records = TableReader(DATASETS / "evalmuse40k.yaml").read(root)
    assert len(records) == len(items) == 36
    for record, item in zip(records, items):
        assert record.file_name == item["img_path"] and record.path == root / item["img_path"]
        assert record.targets["overall"] == pytest.approx(np.mean(item["total_score"]))
        assert record.stds["overall"] == pytest.approx(np.std(item["total_score"], ddof=1))
        assert record.prompt == item["prompt"] and record.groups == {"prompt_type": item["type"]}
    assert records[0].where == f"{root / 'train_list.json'}, item 1"


def test_evalmuse40k_shape_trains_through_the_description(tmp_path):
    root = evalmuse_root(tmp_path / "evalmuse")
    shrink = shrink_args(root, tmp_path / "run", {"data.split": "prompt"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = run_cli(["fit", "--data", "clip_agiqa.data.TableData", "--data.description",
                       str(DATASETS / "evalmuse40k.yaml"), *as_flags(shrink)])
    assert cli.datamodule.target_scales == {"overall": [1.0, 5.0]}
    batch = next(iter(cli.datamodule.train_dataloader()))
    assert bool(np.isfinite(batch["mos_std"].numpy()).any())  # the raters' spread reaches training
    assert (tmp_path / "run" / "checkpoints" / "splits.csv").is_file()


# --- one table in every format ----------------------------------------------------------------------------------
ROWS_OF_TABLE = [["image", "text", "score", "spread", "model"],
                 ["a.png", "a cat", 3.5, 0.5, "sd"], ["b.png", "a dog", 2.0, "", "dalle"]]
DESCRIPTION = {"image": "image", "prompt": "text", "targets": {"mos": "score"}, "stds": {"mos": "spread"},
               "groups": {"generator": "model"}}


def write_table(path: Path) -> Path:
    header, *rows = ROWS_OF_TABLE
    items = [dict(zip(header, row)) for row in rows]
    if path.suffix in (".csv", ".tsv"):
        with open(path, "w", newline="") as handle:
            csv.writer(handle, delimiter="\t" if path.suffix == ".tsv" else ",").writerows(ROWS_OF_TABLE)
    elif path.suffix == ".xlsx":
        write_xlsx(path, [header, *[[v if v != "" else None for v in row] for row in rows]])
    elif path.suffix == ".json":
        path.write_text(json.dumps(items))
    elif path.suffix == ".jsonl":
        path.write_text("\n".join(map(json.dumps, items)) + "\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as parquet

        table = {name: [str(v) if name == "spread" else v for v in column]
                 for name, column in zip(header, zip(*rows))}
        parquet.write_table(pa.table(table), path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".xlsx", ".json", ".jsonl", ".parquet"])
def test_every_format_gives_the_same_records(tmp_path, suffix):
    write_table(tmp_path / f"labels{suffix}")
    records = TableReader(TableDescription.from_mapping({**DESCRIPTION, "file": f"labels{suffix}"})).read(tmp_path)
    assert [(r.file_name, r.prompt, r.generator, r.targets) for r in records] == [
        ("a.png", "a cat", "sd", {"mos": 3.5}), ("b.png", "a dog", "dalle", {"mos": 2.0})]
    assert records[0].stds == {"mos": 0.5} and np.isnan(records[1].stds["mos"])  # an empty std: not given


def test_template_folder_and_several_targets_with_their_own_scales(tmp_path):
    write_csv(tmp_path / "labels.csv", [["id", "q", "yes"], ["7", "3", "1"], ["8", "4", "0"]])
    described = TableDescription.from_mapping({"file": "labels.csv", "image": "id", "image_template": "pics/{}.png",
                                               "image_folder": "", "targets": {"quality": "q", "answer": "yes"},
                                               "scale": [0, 5], "scales": {"answer": [0, 1]}})
    reader = TableReader(described)
    records = reader.read(tmp_path)
    assert [r.file_name for r in records] == ["pics/7.png", "pics/8.png"] and records[0].path == tmp_path / "pics/7.png"
    assert reader.scale_of("quality") == (0.0, 5.0) and reader.scale_of("answer") == (0.0, 1.0)


def test_table_data_takes_a_description_and_refuses_other_targets(tmp_path):
    data = TableData(str(tmp_path), str(DATASETS / "agiqa3k.yaml"), target=["align", "quality"])
    assert data.target_scales == {"align": [0.0, 5.0], "quality": [0.0, 5.0]}
    with pytest.raises(InputError, match="AGIQA-3K target must be one of quality, align"):
        TableData(str(tmp_path), str(DATASETS / "agiqa3k.yaml"), target="mos")


# --- bad input: one line naming the file and the column (or the description and the key) --------------------------
def one_line(error) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


def test_a_missing_column_names_the_file_and_the_column(tmp_path):
    write_table(tmp_path / "labels.csv")
    reader = TableReader(TableDescription.from_mapping({**DESCRIPTION, "file": "labels.csv",
                                                        "targets": {"mos": "scroe"}}))
    with pytest.raises(InputError,
                       match=r"labels.csv: missing column\(s\) scroe; the columns are image, text") as error:
        reader.read(tmp_path)
    assert str(tmp_path / "labels.csv") in one_line(error)


@pytest.mark.parametrize("item, message", [
    ({"img_path": "x.jpg", "prompt": "p", "type": "real", "total_score": "4"},
     r"train_list.json \(described by .*evalmuse40k.yaml\): 1 bad value\(s\): item 2: total_score is '4', not a "
     r"list of the raters' scores"),
    ({"img_path": "x.jpg", "prompt": "p", "type": "real", "total_score": [4, "high"]}, r"item 2: total_score is"),
    ({"img_path": "x.jpg", "prompt": "p", "type": "real"}, r"item 2: total_score is missing"),
    ({"img_path": "", "prompt": "p", "type": "real", "total_score": [3]}, r"item 2: img_path is empty, not an image"),
    ({"img_path": "x.jpg", "prompt": "p", "total_score": [3]}, r"item 2: type is missing"),
])
def test_a_mistyped_value_names_the_file_the_item_and_the_column(tmp_path, item, message):
    good = {"img_path": "a.jpg", "prompt": "p", "type": "real", "total_score": [3, 4]}
    (tmp_path / "train_list.json").write_text(json.dumps([good, item]))
    with pytest.raises(InputError, match=message) as error:
        TableReader(DATASETS / "evalmuse40k.yaml").read(tmp_path)
    one_line(error)


def test_bad_numbers_are_counted_and_named_by_row(tmp_path):
    write_csv(tmp_path / "labels.csv", [["image", "score"], ["a.png", "x"], ["b.png", ""], ["c.png", "-1"]])
    with pytest.raises(InputError, match=r"2 bad value\(s\): row 2: score is 'x', not a number; row 3: score is "
                                         r"empty, not a number"):
        TableReader(TableDescription.from_mapping({"file": "labels.csv", "image": "image",
                                                   "targets": {"mos": "score"}})).read(tmp_path)


@pytest.mark.parametrize("content, message", [
    ({"file": "a.csv", "image": "i", "targets": {"m": "s"}, "promt": "p"},
     r"unknown key 'promt' \(did you mean prompt"),
    ({"image": "i", "targets": {"m": "s"}}, r"file must be given"),
    ({"file": "a.txt", "image": "i", "targets": {"m": "s"}}, r"format must be one of csv, tsv, json"),
    ({"file": "a.csv", "image": "i", "targets": {"m": 3}}, r"targets.m must be a column"),
    ({"file": "a.csv", "image": "i", "targets": {"m": "s"}, "scale": [5, 1]}, r"scale must be \[low, high\]"),
    ({"file": "a.csv", "image": "i", "targets": {"m": "s"}, "stds": {"q": "sd"}}, r"stds names 'q', which is not a"),
    ({"file": "a.csv", "image": "i", "targets": {"m": "s"}, "image_template": "x/{0}"}, r"image_template must hold"),
    ({"file": "a.csv", "image": "i", "targets": {"m": "s"}, "groups": {"g": {"column": "i", "pattern": "x"}}},
     r"groups.g.pattern needs a group"),
    ({"file": "a.json", "image": "i", "targets": {"m": "s"}, "header": ["i", "s"]}, r"header .* is for a CSV/TSV"),
])
def test_a_bad_description_names_itself_and_the_key(tmp_path, content, message):
    path = tmp_path / "mine.yaml"
    import yaml

    path.write_text(yaml.safe_dump(content))
    with pytest.raises(InputError, match=message) as error:
        TableReader(path)
    assert one_line(error).startswith(str(path))


def test_hostile_files_are_refused_by_type_and_by_content(tmp_path):
    os.mkfifo(tmp_path / "labels.csv")  # would block a plain open() for good
    with pytest.raises(InputError, match=r"labels.csv is not a regular file"):
        TableReader(TableDescription.from_mapping({**DESCRIPTION, "file": "labels.csv"})).read(tmp_path)
    (tmp_path / "deep.json").write_text("[" * 100_000)
    with pytest.raises(InputError, match=r"deep.json: not valid JSON"):
        TableReader(TableDescription.from_mapping({**DESCRIPTION, "file": "deep.json"})).read(tmp_path)
    (tmp_path / "mine.yaml").write_text("file: [unclosed")
    with pytest.raises(InputError, match=r"mine.yaml is not a YAML description"):
        TableReader(tmp_path / "mine.yaml")
    with pytest.raises(InputError, match=r"absent.yaml not found"):
        TableReader(tmp_path / "absent.yaml")


def test_a_group_pattern_that_does_not_match_is_named(tmp_path):
    write_csv(tmp_path / "data.csv",
              [["name", "prompt", "mos_quality", "mos_align"], ["nounderscore.jpg", "p", "1", "2"]])
    with pytest.raises(InputError, match=r"row 2: name is 'nounderscore.jpg', which '\^\(\[\^_\]\+\)_' does not match"):
        TableReader(DATASETS / "agiqa3k.yaml").read(tmp_path)
