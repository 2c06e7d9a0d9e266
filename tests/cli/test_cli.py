"""The clip-agiqa command as users type it: splits.csv, class paths in YAML, one-line errors, a line per epoch.

The README's fit -> resume -> validate -> test -> predict -> export journey is in test_docs.py, resuming in
test_faults.py.
"""

import csv
import sys

import pytest
from helpers import TINY_MODEL_ARGS, run_cli, run_cli_expecting_failure, trainer_args


def data_args(root):
    return ["--data", "MOSFolder", "--data.root", str(root), "--data.batch_size", "8", "--data.num_workers", "0"]


def test_splits_csv_is_written_beside_the_checkpoints(synthetic_root, tmp_path):
    run_cli(["fit", *TINY_MODEL_ARGS, *data_args(synthetic_root), *trainer_args(tmp_path)])
    rows = list(csv.DictReader(open(tmp_path / "checkpoints" / "splits.csv")))
    assert len(rows) == 41 and set(rows[0]) == {"file_name", "split"}
    counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")}
    assert counts == {"train": 30, "val": 3, "test": 8}  # test 20 %, val 10 % of the rest


def test_same_seed_gives_the_same_split(synthetic_root, tmp_path):
    for name in ("a", "b"):
        run_cli(["fit", *TINY_MODEL_ARGS, *data_args(synthetic_root), *trainer_args(tmp_path / name),
                 "--data.seed", "7", "--trainer.max_steps", "1"])
    assert (tmp_path / "a/checkpoints/splits.csv").read_text() == (tmp_path / "b/checkpoints/splits.csv").read_text()


def test_model_and_data_by_class_path_in_yaml(synthetic_root, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"""
model:
  class_path: clip_agiqa.CLIPAGIQA
  init_args: {{backbone: "random:tiny", n_ctx: 2, head: similarity}}
data:
  class_path: clip_agiqa.data.MOSFolder
  init_args: {{root: "{synthetic_root}", batch_size: 8, num_workers: 0}}
""")
    cli = run_cli(["fit", "--config", str(config), *trainer_args(tmp_path), "--trainer.max_steps", "2"])
    assert cli.model.hparams.head == "similarity" and cli.model.model.prompt_learner.n_ctx == 2


def test_input_errors_are_one_short_message_without_traceback(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for root in (empty, tmp_path / "no_such_folder"):
        failed = run_cli_expecting_failure(["fit", *TINY_MODEL_ARGS, "--data", "MOSFolder", "--data.root", str(root),
                                            "--trainer.default_root_dir", str(tmp_path / "run")])
        assert "Traceback" not in failed.stderr
        assert f"clip-agiqa: error: {root / 'metadata.csv'} not found" in failed.stderr
        assert "CLIP_AGIQA_DEBUG=1" in failed.stderr


def test_debug_variable_shows_the_traceback(tmp_path, monkeypatch):
    from clip_agiqa.cli import console

    monkeypatch.setattr(sys, "argv", ["clip-agiqa", "fit", *TINY_MODEL_ARGS, "--data", "MOSFolder",
                                      "--data.root", str(tmp_path), "--trainer.default_root_dir", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        console()
    assert exit_info.value.code == 1
    monkeypatch.setenv("CLIP_AGIQA_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="metadata.csv"):
        console()


def test_a_fit_into_a_log_prints_a_line_per_epoch_and_no_progress_bar(synthetic_root, tmp_path, capsys):
    args = trainer_args(tmp_path, epochs=2)
    at = args.index("--trainer.enable_progress_bar")
    del args[at:at + 2]  # left to the CLI
    cli = run_cli(["fit", *TINY_MODEL_ARGS, *data_args(synthetic_root), *args])  # stdout/stderr: not a terminal
    assert cli.trainer.progress_bar_callback is None  # it would only redraw in place
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert [line.split("  ")[:2] for line in lines] == [["epoch 0/1", "step 4"], ["epoch 1/1", "step 8"]]
    for line in lines:
        assert "train/loss " in line and " val/srcc " in line and "(best " in line
