"""Several targets in one run and the generation prompt: every dataset's records and batches, the CLI's
per-target metrics and test report, the prompt a prompt-aware model needs, cached features."""

from __future__ import annotations

import csv
import shutil
import warnings

import pytest
import torch
from experiment_helpers import folder_args
from helpers import TINY_MODEL_ARGS, run_cli, trainer_args
from layouts import agiqa3k_root, aigciqa2023_root

from clip_agiqa.cli import input_error
from clip_agiqa.data import AGIQA3K, AIGCIQA2023, MOSFolder

SMALL = dict(batch_size=4, num_workers=0, image_size=32)
# Enough samples in val and test for a correlation on the 12-image AGIQA-3K root.
SPLIT_ARGS = ["--data.split", "random", "--data.test_size", "0.34", "--data.val_size", "0.5", "--data.batch_size", "4",
              "--data.num_workers", "0"]


def first_item(data) -> tuple[dict, object]:
    """The first training item and its record."""
    data.setup()
    dataset = data.make_dataset("train")
    return dataset[0], dataset.records[0]


# --- records and batches ---------------------------------------------------------------------------
def test_agiqa3k_two_targets_in_every_record_and_batch(tmp_path):
    data = AGIQA3K(str(agiqa3k_root(tmp_path)), target=["align", "quality"], **SMALL)
    item, record = first_item(data)
    assert data.targets == ["align", "quality"] and record.mos == record.targets["align"]
    assert item["mos"].shape == (2,)
    torch.testing.assert_close(item["mos"], torch.tensor([record.targets["align"], record.targets["quality"]]))
    assert item["prompt"] == record.prompt and item["prompt"]


def test_aigciqa2023_three_targets_in_every_record_and_batch(tmp_path):
    targets = ["quality", "authenticity", "correspondence"]
    data = AIGCIQA2023(str(aigciqa2023_root(tmp_path)), target=targets, **SMALL)
    item, record = first_item(data)
    assert item["mos"].shape == (3,) and record.mos == record.targets["quality"]
    torch.testing.assert_close(item["mos"], torch.tensor([record.targets[t] for t in targets]))
    assert item["prompt"].startswith("prompt ")  # no prompts spreadsheet: "prompt NNN"


def test_aigciqa2023_several_targets_need_every_mat_file(tmp_path):
    root = aigciqa2023_root(tmp_path)
    (root / "DATA" / "MOS" / "mosz3.mat").unlink()
    AIGCIQA2023(str(root), target=["quality", "authenticity"]).setup()  # mosz3 is not needed
    with pytest.raises(FileNotFoundError, match=r"mosz1\.mat, mosz3\.mat not found together"):
        AIGCIQA2023(str(root), target=["quality", "correspondence"]).setup()


def test_mosfolder_any_numeric_columns(synthetic_root):
    data = MOSFolder(str(synthetic_root), target=["mos", "align"], **SMALL)
    item, record = first_item(data)
    assert set(record.targets) == {"mos", "align"} and record.mos == record.targets["mos"]
    torch.testing.assert_close(item["mos"], torch.tensor([record.targets["mos"], record.targets["align"]]))


def test_a_single_target_keeps_its_scalar_mos(synthetic_root):
    for target in ("mos", ["mos"]):
        item, record = first_item(MOSFolder(str(synthetic_root), target=target, **SMALL))
        assert item["mos"].shape == () and float(item["mos"]) == pytest.approx(record.mos)


def test_mosfolder_names_every_bad_value_of_every_target_column(tmp_path):
    (tmp_path / "metadata.csv").write_text("file_name,mos,align,prompt\na.png,1,x,p\nb.png,,2,p\nc.png,3,nan,p\n")
    with pytest.raises(ValueError) as raised:
        MOSFolder(str(tmp_path), target=["mos", "align"]).setup()
    message = str(raised.value)
    assert "mos must be a finite number; 1 row(s) are not: row 3 (empty)" in message
    assert "align must be a finite number; 2 row(s) are not: row 2 ('x'), row 4 ('nan')" in message


def test_mosfolder_missing_target_column_is_named(synthetic_root):
    with pytest.raises(ValueError, match=r"missing column\(s\) sharpness"):
        MOSFolder(str(synthetic_root), target=["mos", "sharpness"]).setup()


@pytest.mark.parametrize("data_class, target, valid", [
    (AGIQA3K, ["quality", "aesthetics"], "quality, align"),
    (AIGCIQA2023, "align", "quality, authenticity, correspondence")])
def test_unknown_target_names_the_valid_ones(tmp_path, data_class, target, valid):
    with pytest.raises(ValueError, match=f"target must be one of {valid}"):
        data_class(str(tmp_path), target=target)


@pytest.mark.parametrize("target", [[], ["quality", "quality"]])
def test_no_target_or_a_repeated_one_is_refused(tmp_path, target):
    with pytest.raises(ValueError, match="one target or a list of distinct ones"):
        AGIQA3K(str(tmp_path), target=target)


def test_the_cli_refuses_an_unknown_target_naming_the_valid_ones(tmp_path, capsys):
    with pytest.raises((SystemExit, ValueError)) as error:  # a parse error: SystemExit or the CLI's one-line error
        run_cli(["fit", *TINY_MODEL_ARGS, *trainer_args(tmp_path), "--data", "AGIQA3K", "--data.root", str(tmp_path),
                 "--data.target", "[quality, aesthetics]"])
    said = f"{error.value} {capsys.readouterr().err}"
    assert "aesthetics" in said and "quality" in said and "align" in said


# --- through the CLI -------------------------------------------------------------------------------
def test_two_targets_fit_and_test_through_the_cli(tmp_path):
    root = agiqa3k_root(tmp_path)
    run_dir = tmp_path / "run"
    common = [*TINY_MODEL_ARGS, *trainer_args(run_dir), "--data", "AGIQA3K", "--data.root", str(root),
              "--data.target", "[quality, align]", *SPLIT_ARGS]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a tiny val set may give NaN correlations
        fitted = run_cli(["fit", *common])
    metrics = fitted.trainer.callback_metrics
    assert {"val/quality/srcc", "val/align/srcc", "val/quality/plcc", "val/align/rmse", "val/srcc"} <= set(metrics)
    torch.testing.assert_close(metrics["val/srcc"], (metrics["val/quality/srcc"] + metrics["val/align/srcc"]) / 2,
                               rtol=1e-6, atol=1e-6, equal_nan=True)

    tested = run_cli(["test", *common, "--ckpt_path", str(run_dir / "checkpoints" / "best.ckpt")])
    assert {"test/quality/srcc", "test/align/srcc", "test/srcc"} <= set(tested.trainer.callback_metrics)
    rows = list(csv.DictReader(open(run_dir / "test_predictions.csv")))
    certainty = ["std", "rater_std", "js", "wasserstein"]  # a fit's default output on data with the raters' std
    assert list(rows[0]) == ["file_name", *(f"{target}_{column}" for target in ("quality", "align")
                                            for column in ("mos", "score", *certainty))]
    records = {r.file_name: r for r in tested.datamodule.records}
    assert len(rows) == len(tested.datamodule.split_records("test"))
    for row in rows:
        record = records[row["file_name"]]
        assert float(row["quality_mos"]) == pytest.approx(record.targets["quality"], abs=1e-6)
        assert float(row["align_mos"]) == pytest.approx(record.targets["align"], abs=1e-6)
    assert (run_dir / "test_scatter_quality.png").is_file() and (run_dir / "test_scatter_align.png").is_file()
    assert not (run_dir / "test_scatter.png").exists()


def test_a_prompt_aware_fit_on_a_folder_without_prompts_names_the_files(synthetic_root, tmp_path):
    root = tmp_path / "no_prompts"
    shutil.copytree(synthetic_root, root)
    lines = (root / "metadata.csv").read_text().splitlines()
    (root / "metadata.csv").write_text("\n".join(",".join(line.split(",")[:3]) for line in lines) + "\n")
    with pytest.raises(ValueError, match=r"use_prompt.*41 of 41 sample\(s\) have none, e\.g\. synthetic_00000\.png")\
            as raised:
        run_cli(["fit", *TINY_MODEL_ARGS, *folder_args(root), *trainer_args(tmp_path / "run"),
                 "--model.use_prompt", "true"])
    assert input_error(raised.value) is raised.value and len(str(raised.value)) < 400  # one short line for a user


def test_cached_features_with_two_targets_and_prompts_train(synthetic_root, tmp_path):
    run_dir = tmp_path / "run"
    cli = run_cli(["fit", *TINY_MODEL_ARGS, *folder_args(synthetic_root), *trainer_args(run_dir),
                   "--data.target", "[mos, align]", "--data.cache_views", "2",
                   "--data.cache_dir", str(tmp_path / "cache"), "--model.use_prompt", "true"])
    assert cli.model.model.targets == ["mos", "align"] and cli.model.model.use_prompt
    batch = next(iter(cli.datamodule.train_dataloader()))
    # Cached training batches carry the prompts' cached text features (not their strings).
    assert "features" in batch and batch["mos"].shape == (8, 2) and batch["text_features"].shape[0] == 8
    assert {"val/mos/srcc", "val/align/srcc", "val/srcc"} <= set(cli.trainer.callback_metrics)
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])


def test_records_of_every_benchmark_carry_their_prompt(tmp_path):
    from layouts import agiqa1k_root, aigciqa20k_root

    from clip_agiqa.data import AGIQA1K, AIGCIQA20K

    roots = {AGIQA3K: agiqa3k_root, AGIQA1K: agiqa1k_root, AIGCIQA20K: aigciqa20k_root}
    for data_class, build in roots.items():
        folder = tmp_path / data_class.__name__
        folder.mkdir()
        data = data_class(str(build(folder)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # AGIQA-1K's duplicated name
            prompts = data.generation_prompts()
        assert len(prompts) == len(data.records) and all(p.strip() for p in prompts), data_class.__name__


def test_report_columns_for_one_target_stay_as_they_were(tmp_path):
    from clip_agiqa.callbacks.reports import prediction_columns
    from clip_agiqa.run_files import scatter_file

    assert prediction_columns(["quality"]) == ["file_name", "mos", "score"]
    assert scatter_file("quality", ["quality"]) == "test_scatter.png"
    assert scatter_file("align", ["quality", "align"]) == "test_scatter_align.png"


def test_split_summary_names_several_targets(tmp_path):
    from clip_agiqa.data.splits import split_summary

    data = AGIQA3K(str(agiqa3k_root(tmp_path)), target=["quality", "align"])
    data.setup()
    assert split_summary(data)["target"] == "quality,align"
