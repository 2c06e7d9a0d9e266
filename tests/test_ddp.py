"""Metrics and predictions on 2 CPU processes (gloo) equal the single-process values: no padded duplicates;
fit on 2 processes with uneven validation batches; the test report holds every test sample once; a streamed
dataset split by node. One 2-process launch runs validate, test, predict and fit, then a streamed fit and test
(tests/two_processes.py); the single-process references run in this process."""

import csv
import json
import math
import sys
from pathlib import Path

import pytest
from helpers import HANG_GUARD, TINY_MODEL_ARGS, run_checked, run_cli, trainer_args

from clip_agiqa.data import write_synthetic_dataset

pytestmark = pytest.mark.slow

TWO_PROCESSES = ["--trainer.strategy", "ddp", "--trainer.devices", "2"]


@pytest.fixture(scope="module")
def odd_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("odd")
    write_synthetic_dataset(root / "data", num_images=45, picture_size=32, seed=3)
    # test: 9 samples, val: 5 samples; eval batches of 2 give the ranks uneven numbers of batches
    data = ["--data", "MOSFolder", "--data.root", str(root / "data"), "--data.num_workers", "0",
            "--data.batch_size", "8", "--data.eval_batch_size", "2", "--data.val_size", "0.14"]
    run_cli(["fit", *TINY_MODEL_ARGS, *data, *trainer_args(root / "train")])
    return root, data, root / "train" / "checkpoints" / "last.ckpt"


def evaluation_args(root: Path, data: list[str], checkpoint: Path, subcommand: str, processes: int) -> list[str]:
    extra = ["--predictions.output", str(root / f"scores{processes}.csv"), "--data.predict_split", "all"] \
        if subcommand == "predict" else []
    ddp = TWO_PROCESSES if processes == 2 else []
    return [subcommand, *data, *trainer_args(root / f"{subcommand}{processes}"), *ddp, "--ckpt_path", str(checkpoint),
            *extra]


def streamed_args(root: Path) -> list[str]:
    """A streamed HFDataset (an imagefolder of 30 pictures): each rank reads its own part of the stream."""
    return [*TINY_MODEL_ARGS, *trainer_args(root / "streamed"), "--data", "HFDataset", "--data.path",
            str(root / "imagefolder"), "--data.streaming", "true", "--data.hf_cache_dir", str(root / "hf-cache"),
            "--data.batch_size", "4", "--data.num_workers", "0", "--data.test_size", "0.4"]


@pytest.fixture(scope="module")
def two_processes(odd_dataset):
    """validate, test, predict (from the fixture's checkpoint) and a 2-epoch fit, then a streamed fit and the test
    of its checkpoint, all in one 2-process launch."""
    root, data, checkpoint = odd_dataset
    commands = [[name, evaluation_args(root, data, checkpoint, name, 2)] for name in ("validate", "test", "predict")]
    commands.append(["fit", ["fit", *TINY_MODEL_ARGS, *data, *trainer_args(root / "fit2", epochs=2), *TWO_PROCESSES]])
    write_synthetic_dataset(root / "imagefolder", num_images=30, picture_size=40, seed=1)
    streamed_checkpoint = ["--ckpt_path", str(root / "streamed" / "checkpoints" / "last.ckpt")]
    commands += [["streamed_fit", ["fit", *streamed_args(root), *TWO_PROCESSES]],
                 ["streamed_test", ["test", *streamed_args(root), *streamed_checkpoint, *TWO_PROCESSES]]]
    plan = root / "plan.json"
    plan.write_text(json.dumps({"commands": commands, "results": str(root / "results.json")}))
    run_checked([sys.executable, str(Path(__file__).with_name("two_processes.py")), str(plan)], timeout=HANG_GUARD)
    return json.loads((root / "results.json").read_text())


@pytest.mark.parametrize("subcommand,prefix", [("test", "test/"), ("validate", "val/")])
def test_metrics_on_two_processes_equal_one(odd_dataset, two_processes, subcommand, prefix):
    root, data, checkpoint = odd_dataset
    cli = run_cli(evaluation_args(root, data, checkpoint, subcommand, 1))
    single = {key: float(value) for key, value in cli.trainer.callback_metrics.items()}
    double = two_processes[subcommand]
    assert double["world_size"] == 2
    # Each process scores its own batches, whose fp32 predictions may differ in the last bits from the
    # single-process ones; on these 9 images a near-zero PLCC moves by up to ~2e-6 from that alone.
    for name in ("srcc", "plcc", "krcc", "rmse"):
        assert math.isfinite(single[prefix + name]), name
        assert double[prefix + name] == pytest.approx(single[prefix + name], abs=1e-5), name


def test_predictions_on_two_processes_equal_one(odd_dataset, two_processes):
    root, data, checkpoint = odd_dataset
    run_cli(evaluation_args(root, data, checkpoint, "predict", 1))
    one, two = (list(csv.DictReader(open(root / f"scores{processes}.csv"))) for processes in (1, 2))
    assert len(one) == 45 and [r["file_name"] for r in one] == sorted(r["file_name"] for r in one)
    assert [r["file_name"] for r in two] == [r["file_name"] for r in one]
    for single, double in zip(one, two):
        assert float(double["score"]) == pytest.approx(float(single["score"]), abs=1e-5)


def test_fit_on_two_processes_with_uneven_validation(odd_dataset, two_processes):
    root, _, _ = odd_dataset
    fitted = two_processes["fit"]
    assert fitted["world_size"] == 2 and math.isfinite(fitted["val/srcc"]) and math.isfinite(fitted["train/loss"])
    assert (root / "fit2" / "checkpoints" / "best.ckpt").is_file()


def test_the_test_report_on_two_processes_holds_every_test_sample_once(odd_dataset, two_processes):
    root, _, checkpoint = odd_dataset
    [report] = (root / "test2" / "tests").glob("last-*/test_predictions.csv")  # another run's checkpoint
    names = [r["file_name"] for r in csv.DictReader(open(report))]
    splits = list(csv.DictReader(open(checkpoint.parent / "splits.csv")))  # the same data arguments and seed
    assert sorted(names) == sorted(r["file_name"] for r in splits if r["split"] == "test")  # 9: uneven shares
    assert len(names) == 9


def test_streamed_test_metrics_on_two_processes_equal_one(odd_dataset, two_processes):
    root, _, _ = odd_dataset
    assert two_processes["streamed_fit"]["world_size"] == 2
    cli = run_cli(["test", *streamed_args(root), "--ckpt_path", str(root / "streamed" / "checkpoints" / "last.ckpt")])
    single, double = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}, two_processes["streamed_test"]
    assert double["world_size"] == 2
    for metric in ("test/srcc", "test/plcc", "test/krcc", "test/rmse"):
        assert math.isfinite(single[metric]), metric
        assert double[metric] == pytest.approx(single[metric], abs=1e-5), metric
    splits = list(csv.DictReader(open(root / "streamed" / "checkpoints" / "splits.csv")))
    assert sum(r["split"] == "test" for r in splits) == 12
