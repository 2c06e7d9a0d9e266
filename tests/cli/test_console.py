"""The command line as people meet it: every mistake one line (no traceback, no usage dump) naming the thing, with
the valid choices; exit status 1 (input) or 2 (a mistyped command or option); help of every command quickly
(the live parser's, cached per installed code, then read without torch); the package's warnings as one line.
Each rewritten jsonargparse message has its test in test_usage.py."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, TINY_MODEL_ARGS

from clip_agiqa import cli as commands
from clip_agiqa.cli import ALL_COMMANDS, check_config_files, console, help_cache, one_line_warning


def console_run(monkeypatch, capsys, args: list[str]) -> tuple[int, str, str]:
    """``clip-agiqa ARGS`` in this process: (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["clip-agiqa", *args])
    status = 0
    try:
        console()
    except SystemExit as done:
        status = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    out, err = capsys.readouterr()
    return status, out, err


def the_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("clip-agiqa: ")]
    assert len(lines) == 1 and "Traceback" not in err and "usage:" not in err, err
    return lines[0]


@pytest.mark.parametrize("args, status, expected", [
    (["fti"], 2, "unknown command 'fti' (did you mean fit?); the commands are fit, validate, test, predict, "
                 "export, score, benchmark, compare"),
    (["fit", "--data", "MOSFolder", "--data.root", ".", "--data.num_workers", "-1"], 1,
     "--data.num_workers -1: give 0 (load in the main process) or more"),
    (["predict", "--data", "ImageFolder", "--data.root", "."], 1, "predict needs trained weights: add --ckpt_path"),
    (["fit", "--config", "no/such.yaml"], 2, "--config no/such.yaml: no such file"),
    (["test", "-c", "no/such.yml"], 2, "--config no/such.yml: no such file"),
    (["compare"], 2, "clip-agiqa: error: the following arguments are required: OUT"),  # argparse's, one line
    (["benchmark", "--config", "no.yaml", "--splits", "0"], 2, "clip-agiqa: error: --splits must be at least 1, got 0"),
])
def test_each_mistake_is_one_line_with_the_choices(monkeypatch, capsys, args, status, expected):
    code, out, err = console_run(monkeypatch, capsys, args)
    assert code == status
    assert expected in the_error_line(err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is there")
def test_a_gpu_that_is_not_there_is_one_line(monkeypatch, capsys, synthetic_root, tmp_path):
    code, _, err = console_run(monkeypatch, capsys, ["fit", "--data", "MOSFolder", "--data.root", str(synthetic_root),
                                                     "--trainer.accelerator", "gpu",
                                                     "--trainer.default_root_dir", str(tmp_path)])
    assert code == 1 and "--trainer.accelerator gpu: no CUDA GPU is usable here" in the_error_line(err)
    assert not (tmp_path / "checkpoints").exists()


def test_a_missing_checkpoint_is_one_line(monkeypatch, capsys, synthetic_root, tmp_path):
    missing = tmp_path / "runs" / "mine" / "checkpoints" / "nope.ckpt"
    code, _, err = console_run(monkeypatch, capsys, ["test", "--data", "MOSFolder", "--data.root", str(synthetic_root),
                                                     "--ckpt_path", str(missing)])
    assert code == 1 and str(missing) in the_error_line(err)


def test_resuming_a_run_without_last_ckpt_is_refused(monkeypatch, capsys, synthetic_root, tmp_path):
    code, _, err = console_run(monkeypatch, capsys, ["fit", *TINY_MODEL_ARGS, "--data", "MOSFolder", "--data.root",
                                                     str(synthetic_root), "--trainer.default_root_dir", str(tmp_path),
                                                     "--ckpt_path", "last"])
    assert code == 1 and f"{tmp_path / 'checkpoints'} holds no last.ckpt" in the_error_line(err)


def test_the_top_level_help_names_every_command_with_one_line(monkeypatch, capsys):
    code, out, _ = console_run(monkeypatch, capsys, ["--help"])
    assert code == 0
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert listed == list(ALL_COMMANDS) == ["fit", "validate", "test", "predict", "export", "score", "benchmark",
                                            "compare"]


def test_help_comes_from_the_cache_without_importing_torch(tmp_path):
    """The first `clip-agiqa fit --help` renders the live parser's help into the user's cache; the second reads it,
    and works even where torch cannot be imported."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "COLUMNS": "100", "PYTHONWARNINGS": "ignore"}
    help_of_fit = "from clip_agiqa import cli; cli.main(['fit', '--help'])"
    first = subprocess.run([sys.executable, "-c", help_of_fit], cwd=REPO, env=env, capture_output=True, text=True)
    assert first.returncode == 0 and "--trainer.max_epochs" in first.stdout, first.stderr[-2000:]
    assert len(list((tmp_path / "clip-agiqa" / "help").glob("fit-*.txt"))) == 1
    no_torch = f"import sys; sys.modules.update(torch=None, lightning=None, transformers=None); {help_of_fit}"
    second = subprocess.run([sys.executable, "-c", no_torch], cwd=REPO, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout == first.stdout


def test_a_missing_config_file_is_refused_without_importing_torch():
    code = ("import sys; sys.modules.update(torch=None, lightning=None, transformers=None); "
            "from clip_agiqa import cli; sys.argv = ['clip-agiqa', 'fit', '--config', 'no/such.yaml']; cli.console()")
    refused = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert refused.returncode == 2 and refused.stderr == "clip-agiqa: error: --config no/such.yaml: no such file\n"


def test_a_config_given_as_yaml_text_is_left_to_the_parser():
    check_config_files(["--config", "{trainer: {max_epochs: 1}}", "--config=run.yaml: x"])


def test_the_help_key_follows_the_code_and_the_libraries(tmp_path, monkeypatch):
    (tmp_path / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(help_cache, "PACKAGE_DIR", tmp_path)
    key = help_cache.help_key(["fit", "--help"])
    assert help_cache.help_key(["test", "--help"]) != key
    (tmp_path / "a.py").write_text("x = 2\n")
    assert help_cache.help_key(["fit", "--help"]) != key  # the same size and time, other contents
    changed = help_cache.help_key(["fit", "--help"])
    monkeypatch.setattr(help_cache, "library_versions", lambda: ["9.9.9"] * len(help_cache.LIBRARIES))
    assert help_cache.help_key(["fit", "--help"]) != changed


@pytest.mark.parametrize("make", ["garbage", "not utf-8", "link to a device", "fifo", "folder", "too big"])
def test_a_hostile_help_cache_file_is_not_shown(tmp_path, monkeypatch, make):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    argv = ["fit", "--help"]
    path = help_cache.help_file(argv)
    path.parent.mkdir(parents=True)
    if make == "garbage":
        path.write_text("Traceback: not a help text\n")
    elif make == "not utf-8":
        path.write_bytes(b"usage: \xff\xfe")
    elif make == "link to a device":
        path.symlink_to("/dev/zero")
    elif make == "fifo":
        os.mkfifo(path)
    elif make == "folder":
        path.mkdir()
    else:
        path.write_text("usage: " + "x" * help_cache.MAX_HELP_BYTES)
    assert help_cache.cached_help(argv) is None
    help_cache.store_help(argv, "usage: clip-agiqa fit\n")  # replaces it where it can, never fails
    if make not in ("folder",):
        assert help_cache.cached_help(argv) == "usage: clip-agiqa fit\n"


@pytest.mark.parametrize("command", ["validate", "export", "score", "benchmark", "compare"])  # fit: above
def test_every_command_answers_help(command, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    code, out, _ = console_run(monkeypatch, capsys, [command, "--help"])
    assert code == 0 and out.startswith("usage:"), out[:300]


def test_the_package_warnings_are_one_line():
    package_file = str(REPO / "clip_agiqa" / "scoring.py")
    text = one_line_warning(UserWarning("this model does not read prompts:\n  the prompt is ignored"), UserWarning,
                            package_file, 12, "warnings.warn(...)")
    assert text == "clip-agiqa: warning: this model does not read prompts: the prompt is ignored\n"
    other = one_line_warning(DeprecationWarning("old"), DeprecationWarning, "/x/lib/other.py", 3)
    assert other.count("\n") == 1 and "other.py:3" in other


def test_a_package_warning_naming_its_caller_is_still_the_packages(tmp_path):
    """warn_skipped warns with stacklevel=2 (the line names its caller): as console() prints warnings."""
    code = ("import warnings, sys; from pathlib import Path; from clip_agiqa.cli import one_line_warning; "
            "warnings.formatwarning = one_line_warning; from clip_agiqa.data.images import warn_skipped; "
            "root = Path(sys.argv[1]); warn_skipped(root, [(root / 'notes.txt', 'not an image format')])")
    shown = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                           env={k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"})
    assert shown.stderr == (f"clip-agiqa: warning: {tmp_path}: the scan left out 1 file(s) or folder(s): notes.txt "
                            "(not an image format)\n")


def test_an_input_error_wrapped_by_another_error_is_still_one_line(monkeypatch, capsys):
    from clip_agiqa.errors import InputError

    def main():
        try:
            raise InputError("metadata.csv: row 3: mos is empty")
        except InputError as error:
            raise RuntimeError("Problem with given class_path") from error  # as jsonargparse wraps it

    monkeypatch.setattr(commands, "main", main)
    code, _, err = console_run(monkeypatch, capsys, [])
    assert code == 1 and the_error_line(err).startswith("clip-agiqa: error: metadata.csv: row 3: mos is empty")


def test_a_bug_keeps_its_traceback(monkeypatch):
    def main():
        raise KeyError("a bug")

    monkeypatch.setattr(commands, "main", main)
    with pytest.raises(KeyError):
        console()


LIGHTNING_NOTES = ("`Trainer.fit` stopped:",)  # why it stopped (max_epochs, max_steps, early stopping)
CACHE_PROGRESS = re.compile(r"caching (train|eval) features \(\d+ view\(s\)\): \d+/\d+ img \(\d+%\), ")


def test_a_fit_of_the_shipped_demo_prints_no_warning(tmp_path):
    """As a user runs it (default warning filters), shrunk to 60 pictures and 2 epochs."""
    exe = Path(sys.executable).with_name("clip-agiqa")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONWARNINGS"}
    fit = subprocess.run([str(exe), "fit", "--config", str(REPO / "experiments" / "demo.yaml"), "--data.root",
                          str(tmp_path / "data"), "--data.num_images", "60", "--trainer.max_epochs", "2",
                          "--trainer.default_root_dir", str(tmp_path / "run")], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert fit.returncode == 0, fit.stderr[-3000:]
    progress = [line for line in fit.stderr.splitlines() if CACHE_PROGRESS.match(line)]
    assert progress and "\r" not in fit.stderr  # the feature cache's build, as lines in a log
    others = [line for line in fit.stderr.splitlines() if line not in progress]
    small_validation = [line for line in others if "the validation split has 5 picture(s)" in line]
    assert len(small_validation) == 1  # shrunk to 60 pictures, the demo's split keeps too few to choose on
    assert [line for line in others if not line.startswith(LIGHTNING_NOTES) and line not in small_validation] == []
    assert "best val/srcc" in fit.stdout
