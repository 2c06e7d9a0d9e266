"""The README's command-line block, run as a user types it: fit -> resume -> test -> predict -> export (and a
validate with the test's options).

The commands are read from the README itself, so the README cannot drift. Only the data folders are
replaced by a generated one, the GPU by the CPU, and a tiny backbone and short training are added. The first
command runs through the real console script (as typed, in its own process); the others run the same entry
point in this process (``run_cli``), in the same folder, which checks the same outputs without a process start.
"""

import csv
import math
import re
import shlex

import pytest
import torch
from conftest import REPO, TINY_MODEL_ARGS, run_cli, run_cli_subprocess

SHORT = {"fit": [*TINY_MODEL_ARGS, "--trainer.max_epochs", "1", "--data.batch_size", "8", "--data.num_workers", "0",
                 "--trainer.enable_progress_bar", "false"],
         "predict": ["--data.batch_size", "8", "--data.num_workers", "0", "--trainer.enable_progress_bar", "false"]}


def readme_cli_commands() -> list[list[str]]:
    """The clip-agiqa commands of the first bash block in the README's command-line section."""
    section = (REPO / "README.md").read_text().split("## The command line", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    lines = [line for line in block.replace("\\\n", " ").splitlines() if line.startswith("clip-agiqa ")]
    return [shlex.split(line)[1:] for line in lines]


def as_run_here(args: list[str], data_root) -> list[str]:
    replaced = {"/data/my_images": str(data_root), "/data/new_images": str(data_root), "gpu": "cpu"}
    return [replaced.get(arg, arg) for arg in args]


@pytest.mark.slow
def test_the_readme_command_sequence_works_as_written(synthetic_root, tmp_path, monkeypatch, capsys):
    commands = readme_cli_commands()
    assert [c[0] for c in commands] == ["fit", "fit", "test", "predict", "export"]
    fit, resume, test, predict, export = (as_run_here(c, synthetic_root) for c in commands)
    run = tmp_path / "runs" / "mine"

    fitted = run_cli_subprocess([*fit, *SHORT["fit"]], cwd=tmp_path)
    assert "best val/srcc" in fitted.stdout and "run folder: runs/mine" in fitted.stdout
    assert (run / "config.yaml").is_file() and (run / "metrics.csv").is_file()
    last = run / "checkpoints" / "last.ckpt"
    first_steps = torch.load(last, weights_only=True)["global_step"]
    monkeypatch.chdir(tmp_path)  # the README's paths are relative to where the user types them
    run_cli([*resume, "--trainer.max_epochs", "2"])
    assert torch.load(last, weights_only=True)["global_step"] == 2 * first_steps  # it went on for one more epoch

    capsys.readouterr()
    run_cli(["validate", *test[1:]])  # not in the README's block: the same command line as test
    assert "val/srcc" in capsys.readouterr().out
    tested = run_cli(test)
    out = capsys.readouterr().out
    assert "runs/mine/test_predictions.csv" in out and "test/srcc" in out and "test/plcc" in out
    assert math.isfinite(tested.trainer.callback_metrics["test/srcc"])
    run_cli([*predict, *SHORT["predict"]])
    rows = list(csv.DictReader(open(tmp_path / "scores.csv")))
    assert [r["file_name"] for r in rows] == sorted(p.name for p in synthetic_root.glob("*.png"))
    assert all(math.isfinite(float(r["score"])) for r in rows)
    run_cli(export)
    assert {"model.safetensors", "config.json"} <= {p.name for p in (tmp_path / "models" / "mine").iterdir()}
    assert not list(tmp_path.rglob("lightning_logs"))
