"""Files a stranger can plant in a run folder, reached without being named by the user: checkpoints by keyword
(last, best, hpc, SLURM auto-resume, a benchmark's resume), test reports, split files; and the one-line messages
around them."""

import csv
import json
import os
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch
from helpers import TINY_MODEL_ARGS, run_cli, run_cli_expecting_failure

from clip_agiqa.errors import InputError


def run_args(data_root: Path, run: Path, epochs: int = 1) -> list[str]:
    return [*TINY_MODEL_ARGS, "--data", "MOSFolder", "--data.root", str(data_root), "--data.batch_size", "8",
            "--data.num_workers", "0", "--trainer.accelerator", "cpu", "--trainer.devices", "1",
            "--trainer.max_epochs", str(epochs), "--trainer.default_root_dir", str(run),
            "--trainer.enable_progress_bar", "false", "--seed_everything", "0"]


class Planted:
    """Unpickled, it creates the file ``marker``: what a pickle planted as a checkpoint could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def plant_pickle(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "payload": Planted(marker)}, path)


# --- checkpoints reached by keyword ------------------------------------------------------------------------
def console_fails(args: list[str], env: dict, monkeypatch, capsys) -> tuple[int, str]:
    """The console script's entry point, in this process, with ``env``: its exit status and standard error."""
    from clip_agiqa.cli import console

    for name, value in env.items():
        monkeypatch.setenv(name, value)  # torch and Lightning read these when they load, not at import
    monkeypatch.setattr(sys, "argv", ["clip-agiqa", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as ended:
        console()
    return ended.value.code, capsys.readouterr().err


@pytest.mark.parametrize("command", ["test", "predict", "fit"])
def test_a_planted_pickle_last_ckpt_runs_nothing_on_any_torch(synthetic_root, tmp_path, command, monkeypatch,
                                                               capsys):
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 gives torch.load the default of torch before 2.6: unpickle anything."""
    run, marker = tmp_path / "run", tmp_path / "ran"
    plant_pickle(run / "checkpoints" / "last.ckpt", marker)
    status, err = console_fails([command, *run_args(synthetic_root, run), "--ckpt_path", "last"],
                                {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}, monkeypatch, capsys)
    assert not marker.exists()
    lines = err.strip().splitlines()
    assert status == 1 and "Traceback" not in err, err[-3000:]
    assert lines[-1].startswith(f"clip-agiqa: error: {run / 'checkpoints' / 'last.ckpt'}: refused to load"), lines


def test_a_planted_hpc_checkpoint_is_checked_before_slurm_auto_resume(synthetic_root, tmp_path, monkeypatch, capsys):
    run, marker = tmp_path / "run", tmp_path / "ran"
    plant_pickle(run / "hpc_ckpt_1.ckpt", marker)
    slurm = {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train", "SLURM_NODELIST": "localhost", "SLURM_PROCID": "0",
             "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_ID": "1", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    status, err = console_fails(["fit", *run_args(synthetic_root, run)], slurm, monkeypatch, capsys)
    assert not marker.exists()
    assert status == 1 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1].startswith(f"clip-agiqa: error: {run / 'hpc_ckpt_1.ckpt'}: refused to load")


def test_lightning_loads_checkpoints_without_unpickling(tmp_path, monkeypatch):
    from clip_agiqa.runs import AtomicCheckpointIO

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "ran"
    plant_pickle(tmp_path / "hpc_ckpt_2.ckpt", marker)
    with pytest.raises(Exception, match="Unsupported global|Weights only load failed"):
        AtomicCheckpointIO().load_checkpoint(tmp_path / "hpc_ckpt_2.ckpt")
    assert not marker.exists()


@pytest.mark.parametrize("keyword", ["last", "best"])
def test_a_keyword_checkpoint_naming_another_class_is_refused(synthetic_root, tmp_path, keyword):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {"model.x": torch.zeros(1)}, "hyper_parameters": {"_class_path": "evilmod.Model"}},
               run / "checkpoints" / f"{keyword}.ckpt")
    with pytest.raises(InputError, match=r"names the class 'evilmod.Model'.*nothing imported"):
        run_cli(["test", *run_args(synthetic_root, run), "--ckpt_path", keyword])
    assert "evilmod" not in sys.modules


@pytest.mark.parametrize(("keyword", "expected"), [
    ("best", r"--ckpt_path best: .*checkpoints holds no best.ckpt"),
    ("hpc", r"--ckpt_path hpc: .* holds no hpc_ckpt_<n>.ckpt"),
    ("registry:me/model:latest", r"not fetched from a model registry"),
])
def test_a_keyword_without_its_checkpoint_is_one_line(synthetic_root, tmp_path, keyword, expected):
    with pytest.raises(InputError, match=expected):
        run_cli(["test", *run_args(synthetic_root, tmp_path / "run"), "--ckpt_path", keyword])


def test_a_benchmark_resume_sets_aside_a_last_ckpt_that_fails_the_check(tmp_path, capsys):
    from clip_agiqa.benchmark.run import usable_last_checkpoint

    checkpoints = tmp_path / "split_0" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save({"state_dict": {"model.head.weight": torch.full((2,), float("nan"))}, "hyper_parameters": {}},
               checkpoints / "last.ckpt")  # loads with weights_only, but every fit would refuse it
    assert usable_last_checkpoint(checkpoints) is None
    assert not checkpoints.exists() and (tmp_path / "split_0" / "checkpoints.damaged" / "last.ckpt").is_file()
    assert "NaN" in capsys.readouterr().out


# --- test reports ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted(tmp_path_factory, synthetic_root):
    """A run fitted for 2 epochs (metrics.csv logged), its best.ckpt tested."""
    run = tmp_path_factory.mktemp("mine")
    run_cli(["fit", *run_args(synthetic_root, run, epochs=2)])
    run_cli(["test", *run_args(synthetic_root, run), "--ckpt_path", "best"])
    return run


def copy_run(fitted: Path, tmp_path: Path) -> Path:
    run = tmp_path / "mine"
    shutil.copytree(fitted, run, ignore=shutil.ignore_patterns(".clip-agiqa.lock"))
    return run


def metrics_test_rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as handle:
        return [row for row in csv.DictReader(handle) if row.get("test/srcc")]


def test_another_checkpoint_never_replaces_the_runs_test_report(fitted, synthetic_root, tmp_path):
    run = copy_run(fitted, tmp_path)
    own = {name: (run / name).read_bytes() for name in ("test_predictions.csv", "test_scatter.png",
                                                        "test_metrics.json")}
    best = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    other = tmp_path / "demo" / "checkpoints" / "best.ckpt"  # another run's checkpoint (this run's last epoch)
    other.parent.mkdir(parents=True)
    shutil.copy(run / "checkpoints" / "last.ckpt", other)
    tester = run_cli(["test", *run_args(synthetic_root, run), "--ckpt_path", str(other)])
    assert {name: (run / name).read_bytes() for name in own} == own
    [folder] = (run / "tests").iterdir()
    from clip_agiqa.files import file_sha256

    assert folder.name == f"best-{file_sha256(other)[:12]}"
    report = json.loads((folder / "test_metrics.json").read_text())
    assert report["checkpoint"] == str(other.resolve()) and report["checkpoint_epoch"] == 1
    assert (folder / "test_predictions.csv").is_file() and (folder / "test_scatter.png").is_file()
    own_row, other_row = metrics_test_rows(run)  # each names its checkpoint by its epoch and step, not 0 and 0
    assert (int(own_row["epoch"]), int(own_row["step"])) == (best["epoch"], best["global_step"])
    assert (int(other_row["epoch"]), int(other_row["step"])) == (1, report["checkpoint_step"]) != (0, 0)
    assert tester.trainer.current_epoch == 0  # the trainer's own counters are put back


def planted_report(run: Path, **changes) -> None:
    path = run / "test_metrics.json"
    report = json.loads(path.read_text())
    metrics = {**report["metrics"], **changes.pop("metrics", {})}
    path.write_text(json.dumps({**report, **changes, "metrics": metrics}))


def card_of(run: Path, out: Path) -> str:
    run_cli(["export", str(run / "checkpoints" / "best.ckpt"), str(out)])
    return (out / "README.md").read_text()


def test_the_card_takes_only_figures_its_runs_metrics_csv_confirms(fitted, tmp_path):
    run = copy_run(fitted, tmp_path)
    measured = json.loads((run / "test_metrics.json").read_text())["metrics"]["test/srcc"]
    assert f"| test/srcc | {measured:.4f} |" in card_of(run, tmp_path / "honest")
    planted_report(run, metrics={"test/srcc": 0.999})  # SHA-256, epoch and step all right: anyone can compute them
    with pytest.warns(UserWarning, match="not confirmed by a test row of .*metrics.csv"):
        card = card_of(run, tmp_path / "claimed")
    assert "0.999" not in card and "test/srcc" not in card


@pytest.mark.parametrize(("changes", "expected"), [
    ({"metrics": {"test/srcc": 7.5}}, r"test/srcc is 7.5, outside \[-1, 1\]"),
    ({"metrics": {"test/rmse": -1.0}}, r"test/rmse is -1.0, below 0"),
    ({"n_test": -5}, r"n_test is -5, not a positive number"),
    ({"metrics": {"<script>": 1.0}}, r"a metric named '<script>'"),
    ({"metrics": {"test/plcc": "NaN"}}, r"test/plcc is NaN, not a finite number"),
    ({"extra": 1}, r"its fields are"),
])
def test_a_test_report_that_is_not_what_test_writes_is_refused(fitted, tmp_path, changes, expected):
    run = copy_run(fitted, tmp_path)
    planted_report(run, **changes)
    with pytest.raises(InputError, match=rf"test_metrics.json: not the test results .*{expected}"):
        card_of(run, tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_a_fifo_as_test_report_is_refused_without_blocking(fitted, tmp_path):
    run = copy_run(fitted, tmp_path)
    (run / "test_metrics.json").unlink()
    os.mkfifo(run / "test_metrics.json")
    with pytest.raises(InputError, match="test_metrics.json is not a regular file"):
        card_of(run, tmp_path / "model")


# --- split files and one-line messages ------------------------------------------------------------------------
def test_a_fifo_as_splits_file_is_named_as_such(synthetic_root, tmp_path):
    fifo = tmp_path / "splits.csv"
    os.mkfifo(fifo)
    failed = run_cli_expecting_failure(["fit", *run_args(synthetic_root, tmp_path / "run"), "--data.split",
                                        "predefined", "--data.splits_file", str(fifo)], timeout=120)
    assert failed.stderr.strip().splitlines()[-1].startswith(
        f"clip-agiqa: error: --data.splits_file {fifo}: a FIFO (named pipe), not a regular file")


def test_a_fifo_named_in_metadata_is_reported_as_a_fifo_not_missing(tmp_path):
    from clip_agiqa.data import write_synthetic_dataset

    root = tmp_path / "data"
    write_synthetic_dataset(root, num_images=12, picture_size=16, seed=0)
    name = next(row["file_name"] for row in csv.DictReader(open(root / "metadata.csv")))
    (root / name).unlink()
    os.mkfifo(root / name)
    with pytest.raises(InputError, match=rf"1 of 12 image\(s\) cannot be read: {name} \(a FIFO \(named pipe\)"):
        run_cli(["fit", *run_args(root, tmp_path / "run")])


@pytest.mark.parametrize("size", ["0", "-4"])
def test_a_batch_size_below_one_is_one_line_before_any_run_folder(synthetic_root, tmp_path, size):
    run = tmp_path / "run"
    with pytest.raises(InputError, match=rf"--data.batch_size {size}: give 1 or more"):
        run_cli(["fit", *run_args(synthetic_root, run), "--data.batch_size", size])
    assert not run.exists()


@pytest.mark.parametrize("cell", ["\n=HYPERLINK(\"x\")", "  =1+1", " \n@SUM(1)"])
def test_formulas_after_spaces_or_line_breaks_are_escaped_and_read_back(cell):
    from clip_agiqa.csv_cells import escape_formula, unescape_formula

    assert escape_formula(cell) == "'" + cell and unescape_formula(escape_formula(cell)) == cell
    assert escape_formula(" -0.25") == " -0.25"  # a number stays a number


def test_the_epoch_line_of_several_targets_gives_each_targets_figure():
    import io

    from clip_agiqa.callbacks.progress import EpochLines

    stream = io.StringIO()
    trainer = types.SimpleNamespace(
        is_global_zero=True, max_epochs=3, current_epoch=0, global_step=4,
        callback_metrics={"train/loss": torch.tensor(0.5), "val/quality/srcc": torch.tensor(0.25),
                          "val/alignment/srcc": torch.tensor(0.75), "val/srcc": torch.tensor(0.5),
                          "val/quality/plcc": torch.tensor(0.1)},
        checkpoint_callback=types.SimpleNamespace(monitor="val/srcc", mode="max", best_model_score=None))
    EpochLines(stream=stream).on_train_epoch_end(trainer, None)
    assert "val/srcc 0.5000 (best 0.5000)  quality 0.2500  alignment 0.7500" in stream.getvalue()
    # best.ckpt holds a later epoch within one standard error of the best: the line gives the best seen
    trainer.checkpoint_callback = types.SimpleNamespace(monitor="val/srcc", mode="max", best_model_score=0.45,
                                                        best_seen=0.7)
    EpochLines(stream=stream).on_train_epoch_end(trainer, None)
    assert "val/srcc 0.5000 (best 0.7000)" in stream.getvalue()
