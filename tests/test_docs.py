"""The documentation, tested: every `clip-agiqa ...` line of README.md and docs/*.md is a valid command line for the
live parser, the README's journey runs as a user types it, and the manual builds with `mkdocs build --strict`.

The commands are read from the files themselves, so the docs cannot drift. Parsing: the LightningCLI commands
(fit, validate, test, predict) get `--print_config` (nothing is built or read but the config files); the plain
commands (export, score, compare) have each option checked against their live `--help`; a benchmark line's own
options are checked the same way and the rest, which it hands to `clip-agiqa fit`, goes through fit's parser. The
journey (README, "Your own images"): fit on a generated folder through the real console script, then test, predict,
export, score and the fine-tune from the fit's checkpoint in this process, with the tiny backbone and one epoch.
"""

import csv
import math
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, TINY_MODEL_ARGS, run_cli, run_cli_subprocess

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
BENCHMARK_OPTIONS = {"--splits": 1, "--out": 1, "--jobs": 1, "--first_seed": 1, "--vary": 1, "--splits_from": "+",
                     "--test_on": 1}  # the rest of a benchmark line goes to clip-agiqa fit
SHORT_FIT = ["--trainer.max_epochs", "1", "--data.batch_size", "8", "--data.num_workers", "0",
             "--trainer.enable_progress_bar", "false"]
SHORT_PREDICT = ["--data.batch_size", "8", "--data.num_workers", "0", "--trainer.enable_progress_bar", "false"]


def command_lines(path) -> list[list[str]]:
    """The `clip-agiqa` command lines of a markdown file's code blocks, as the shell splits them (comments off)."""
    found = []
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", path.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith("clip-agiqa "):
                found.append(shlex.split(line, comments=True)[1:])
    return found


def every_command() -> list[tuple[str, list[str]]]:
    return [(f"{path.name}: {' '.join(args)[:70]}", args) for path in DOCS for args in command_lines(path)]


def readme_block(heading: str) -> list[list[str]]:
    """The clip-agiqa lines of the README section under `## heading` (up to the next `## `)."""
    section = (REPO / "README.md").read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        lines += [shlex.split(line)[1:] for line in block.replace("\\\n", " ").splitlines()
                  if line.startswith("clip-agiqa ")]
    return lines


def test_the_docs_have_command_lines_of_every_kind():
    kinds = {args[0] for _, args in every_command()}
    assert set(LIGHTNING_COMMANDS) | {"export", "score", "benchmark", "compare"} <= kinds


def test_the_docs_never_send_users_to_files_they_do_not_have():
    for path in [*DOCS, REPO / "CHANGELOG.md"]:
        text = path.read_text()
        assert "../shared" not in text and "DESIGN.md" not in text, f"{path.name} names the project's shared notes"
        assert "make help" not in text and "options.json" not in text, f"{path.name} describes the shipped help"


def test_the_readme_is_short():
    assert len((REPO / "README.md").read_text().splitlines()) <= 250


# --- every command line parses --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder to type the docs' commands in: experiments/ as in the repository, and a run's config.yaml wherever
    a command names one (what a fit would have written there)."""
    here = tmp_path_factory.mktemp("typed")
    (here / "experiments").symlink_to(REPO / "experiments")
    return here


def help_text_of(args: list[str], capsys) -> str:
    capsys.readouterr()
    try:
        run_cli(args)
    except SystemExit as done:
        assert done.code in (0, None)
    return capsys.readouterr().out


def help_text(command: str, capsys) -> str:
    return help_text_of([command, "--help"], capsys)


def assert_options_in_help(command: str, args: list[str], capsys) -> None:
    text = help_text(command, capsys)
    for word in args:
        if word.startswith("--"):
            option = word.split("=", 1)[0]
            assert re.search(rf"{re.escape(option)}\b", text), f"clip-agiqa {command} has no option {option}"


def benchmark_own_and_forwarded(args: list[str]) -> tuple[list[str], list[str]]:
    own, forwarded, at = [], [], 0
    while at < len(args):
        name = args[at].split("=", 1)[0]
        if name in BENCHMARK_OPTIONS:
            width = 1 if "=" in args[at] else (BENCHMARK_OPTIONS[name] if BENCHMARK_OPTIONS[name] != "+" else
                                               next((i for i, a in enumerate(args[at + 1:]) if a.startswith("--")),
                                                    len(args) - at - 1))
            own += args[at:at + 1 + (0 if "=" in args[at] else width)]
            at += 1 + (0 if "=" in args[at] else width)
        else:
            forwarded.append(args[at])
            at += 1
    return own, forwarded


def print_config(args: list[str], workdir, monkeypatch, capsys) -> str:
    """`clip-agiqa COMMAND ... --print_config` in `workdir`: the live parser's verdict (exit 0 or a one-line error)."""
    monkeypatch.chdir(workdir)
    for at, word in enumerate(args[:-1]):
        if word == "--config" and not (workdir / args[at + 1]).exists():
            write_run_config(workdir / args[at + 1], workdir, capsys)
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        run_cli([*args, "--print_config"])
    assert done.value.code in (0, None), f"clip-agiqa {' '.join(args)} refused: {capsys.readouterr().err[-500:]}"
    return capsys.readouterr().out


def write_run_config(path, workdir, capsys) -> None:
    """A run's config.yaml as a fit of your own folder writes it (the resolved config, naming no folder)."""
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run_cli(["fit", "--data", "MOSFolder", "--data.root", str(workdir / "images"), "--print_config"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(capsys.readouterr().out)


@pytest.mark.parametrize("args", [args for _, args in every_command()], ids=[name for name, _ in every_command()])
def test_every_command_line_in_the_docs_is_valid(args, workdir, monkeypatch, capsys):
    command, rest = args[0], args[1:]
    if command in ("--help", "-h"):
        assert "commands:" in help_text_of([command], capsys)
    elif rest in (["--help"], ["-h"]):
        assert "--" in help_text_of(args, capsys)
    elif command in LIGHTNING_COMMANDS:
        print_config(args, workdir, monkeypatch, capsys)
    elif command == "benchmark":
        own, forwarded = benchmark_own_and_forwarded(rest)
        assert_options_in_help("benchmark", own, capsys)
        print_config(["fit", *forwarded], workdir, monkeypatch, capsys)
    else:
        assert command in ("export", "score", "compare"), f"unknown command {command}"
        assert_options_in_help(command, rest, capsys)


# --- the README's journey, for real ---------------------------------------------------------------------------
def as_run_here(args: list[str], data_root) -> list[str]:
    return [str(data_root) if arg.startswith("/data/") else arg for arg in args]


@pytest.mark.slow
def test_the_readme_journey_works_as_written(synthetic_root, tmp_path, monkeypatch, capsys):
    commands = [as_run_here(c, synthetic_root) for c in readme_block("Your own images")]
    assert [c[0] for c in commands] == ["fit", "test", "predict", "export", "score", "fit"]
    fit, test, predict, export, score, _ = commands
    run = tmp_path / "runs" / "mine"

    fitted = run_cli_subprocess([*fit, *TINY_MODEL_ARGS, *SHORT_FIT], cwd=tmp_path)  # the console script as typed
    assert "best val/srcc" in fitted.stdout and "run folder: runs/mine" in fitted.stdout
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "best.ckpt").is_file()
    monkeypatch.chdir(tmp_path)  # the README's paths are relative to where the user types them

    capsys.readouterr()
    tested = run_cli(test)
    out = capsys.readouterr().out
    assert "runs/mine/test_predictions.csv" in out and "test/srcc" in out
    assert math.isfinite(tested.trainer.callback_metrics["test/srcc"])
    run_cli([*predict, *SHORT_PREDICT])
    rows = list(csv.DictReader(open(tmp_path / "predictions.csv")))
    assert [r["file_name"] for r in rows] == sorted(p.name for p in synthetic_root.glob("*.png"))
    assert all(math.isfinite(float(r["score"])) for r in rows)
    run_cli(export)
    assert {"model.safetensors", "config.json"} <= {p.name for p in (tmp_path / "models" / "mine").iterdir()}
    run_cli([*score, "--num_workers", "0"])  # as typed: its output is a new file
    scored = list(csv.DictReader(open(tmp_path / "scores.csv")))
    assert len(scored) == len(rows) and all(math.isfinite(float(r["score"])) for r in scored)
    assert not list(tmp_path.rglob("lightning_logs"))


@pytest.mark.slow
def test_the_readme_fine_tune_works_as_written(synthetic_root, tmp_path, monkeypatch):
    """The README's fine-tune of a default fit's checkpoint, as a user types it."""
    fit, *_, fine_tune = [as_run_here(c, synthetic_root) for c in readme_block("Your own images")]
    monkeypatch.chdir(tmp_path)
    run_cli([*fit, *TINY_MODEL_ARGS, *SHORT_FIT])
    run_cli([*fine_tune, *SHORT_FIT])
    assert (tmp_path / "runs" / "mine-ft" / "checkpoints" / "best.ckpt").is_file()


def test_the_resume_command_the_readme_gives_is_valid(workdir, monkeypatch, capsys):
    """The README names the resume command in its text (not in a block): it must parse too."""
    text = (REPO / "README.md").read_text()
    resume = re.search(r"`(clip-agiqa fit --config runs/mine/config.yaml --ckpt_path last)`", text)
    assert resume is not None
    print_config(shlex.split(resume.group(1))[1:], workdir, monkeypatch, capsys)


# --- the manual builds ----------------------------------------------------------------------------------------
def test_the_manual_builds_strictly(tmp_path):
    mkdocs = Path(sys.executable).with_name("mkdocs")
    if not mkdocs.is_file():
        pytest.skip("mkdocs is not installed (pip install -e '.[dev]' brings it)")
    built = subprocess.run([str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=REPO,
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    nav = (REPO / "mkdocs.yml").read_text()
    assert all(page.name in nav for page in (REPO / "docs").glob("*.md")), "a page missing from mkdocs.yml's nav"


# --- the experiment commands name exactly the tested combinations ---------------------------------------------
def docs_config_combinations() -> set[tuple[str, ...]]:
    """The experiments configs (--config experiments/...) of every clip-agiqa command of the docs, overlays left out."""
    from test_experiments import OVERLAYS

    named = [tuple(value.removeprefix("experiments/") for option, value in zip(args, args[1:])
                   if option == "--config" and value.startswith("experiments/")
                   and value.removeprefix("experiments/") not in OVERLAYS)
             for _, args in every_command()]
    return {configs for configs in named if configs}


def test_the_docs_commands_name_exactly_the_tested_combinations():
    """Every config combination the docs' commands use is one that test_experiments.py runs, and every one it runs is
    named in the docs."""
    from test_experiments import COMBINATIONS

    assert docs_config_combinations() == set(COMBINATIONS)
