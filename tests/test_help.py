"""Help and option errors before the heavy imports: the help the package ships (clip_agiqa/help/) is the live
rendering, is what every command's --help prints without torch, and the options check refuses only what the
full parser refuses (and passes every command line of the README and every form of jsonargparse's)."""

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile

import pytest
from helpers import REPO

from clip_agiqa import cli as commands
from clip_agiqa import help as shipped
from clip_agiqa.errors import UsageError
from clip_agiqa.help.precheck import check_options

# Modules the answers below must not need: importing any of them fails in the checked process.
HEAVY = "import sys; sys.modules.update(torch=None, lightning=None, transformers=None, jsonargparse=None); "


def python(code: str, tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)


def test_the_shipped_help_is_the_live_rendering():
    """Rendered in a fresh process as the console script does; `make help` writes it again."""
    checked = subprocess.run([sys.executable, "-m", "clip_agiqa.help.render", "--check"], cwd=REPO,
                             capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert checked.returncode == 0, checked.stdout[-4000:] + checked.stderr[-2000:]


def test_every_command_help_is_the_shipped_text_without_torch(tmp_path):
    code = HEAVY + ("from clip_agiqa import cli as commands\n"
                    "for command in commands.ALL_COMMANDS:\n"
                    "    commands.main([command, '--help'])\n"
                    "    print('\\n<end of help>')")
    answered = python(code, tmp_path)
    assert answered.returncode == 0, answered.stderr[-2000:]
    printed = answered.stdout.split("\n<end of help>\n")[:-1]
    expected = [(REPO / "clip_agiqa" / "help" / f"{command}.txt").read_text() for command in commands.ALL_COMMANDS]
    assert printed == expected
    assert not (tmp_path / "cache").exists()  # nothing rendered, nothing cached


def test_an_option_error_answers_without_torch(tmp_path):
    code = HEAVY + ("import sys; from clip_agiqa.cli import console; "
                    "sys.argv = ['clip-agiqa', 'fit', '--data', 'AGIQA3K', '--data.target', 'qualty']; console()")
    answered = python(code, tmp_path)
    assert answered.returncode == 2 and answered.stdout == ""
    assert answered.stderr == ("clip-agiqa: error: --data.target qualty: not one of quality, align "
                               "(did you mean quality?)\n")


def test_other_library_versions_render_the_help_and_cache_it(monkeypatch, capsys, tmp_path):
    """The shipped text is for the versions it was rendered with; elsewhere the help is rendered (and cached)."""
    versions = {**shipped.rendering_versions(), "lightning": "0.0.1"}
    monkeypatch.setattr(shipped, "rendering_versions", lambda: versions)
    shipped.shipped_options.cache_clear()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    try:
        assert shipped.shipped_options() is None and shipped.shipped_help("compare") is None
        check_options("fit", ["--data.rot", "1"], shipped.shipped_options())  # no options to check against
        commands.main(["compare", "--help"])
    finally:
        shipped.shipped_options.cache_clear()
    assert capsys.readouterr().out.startswith("usage: clip-agiqa compare")
    assert [path.name.split("-")[0] for path in (tmp_path / "clip-agiqa" / "help").iterdir()] == ["compare"]


def test_the_options_file_names_the_versions_it_holds_for():
    options = json.loads((REPO / "clip_agiqa" / "help" / "options.json").read_text())
    assert set(options["rendered_with"]) == {"python", "lightning", "jsonargparse"}
    assert set(options["commands"]) == set(commands.ALL_COMMANDS)


# --- the options check refuses only what the full parser refuses ---------------------------------------------
REFUSED = [
    (["fit", "--data.rot", "1"], "unknown option --data.rot (did you mean --data.root"),
    (["fit", "--modle.lr", "1"], "unknown option --modle.lr (did you mean --model.lr"),
    (["fit", "--model.head", "foo"], "--model.head foo: not one of concat, similarity"),
    (["fit", "--data", "AGIQA3K", "--data.target", "foo"], "--data.target foo: not one of quality, align"),
    (["fit", "--data=clip_agiqa.data.AGIQA3K", "--data.init_args.target=qualty"],
     "--data.target qualty: not one of quality, align (did you mean quality?)"),
    (["fit", "--data", "MOSFolder", "--data.rot", "x"], "unknown option --data.rot of MOSFolder (did you mean "
                                                       "--data.root"),
    (["fit", "--config", "any.yaml", "--trainer.acelerator", "cpu"], "unknown option --trainer.acelerator (did you "
                                                                     "mean --trainer.accelerator"),
    (["fit", "--trainer.seed", "3"], "unknown option --trainer.seed"),  # a word of the code, not a Trainer option
    (["test", "--ckpt_pth", "x.ckpt"], "unknown option --ckpt_pth (did you mean --ckpt_path"),
    (["predict", "--predictions.outptu", "s.csv"], "unknown option --predictions.outptu (did you mean "
                                                   "--predictions.output"),
    (["score", "models/mine", "images", "--batchsize", "2"], "unknown option --batchsize (did you mean --batch_size"),
    (["export", "a.ckpt", "out", "--force"], "unknown option --force"),
    (["compare", "a", "--ouput", "b.md"], "unknown option --ouput (did you mean --output"),
]


@pytest.mark.parametrize("argv, message", REFUSED)
def test_a_mistyped_option_or_choice_is_refused_before_the_parser(argv, message):
    with pytest.raises(UsageError) as refused:
        check_options(argv[0], argv[1:], shipped.shipped_options())
    assert str(refused.value).startswith(message)


@pytest.mark.parametrize("argv, message", [(argv, message) for argv, message in REFUSED if "--config" not in argv])
def test_the_full_parser_refuses_the_same(argv, message):
    """The check is conservative: what it refuses, the parser behind it refuses too (a UsageError, exit 2), naming
    the same option and value (its "did you mean" may differ)."""
    with pytest.raises(UsageError) as refused:
        commands.dispatch(argv, argv)
    assert str(refused.value).split()[:3] == message.split()[:3]


def test_what_the_code_added_since_the_shipped_options_is_left_to_the_parser():
    """Options rendered before a field, choice or option was added (before `make help`) refuse none of them."""
    older = copy.deepcopy(shipped.shipped_options())
    fields = older["classes"]["model"]["CLIPAGIQA"]["fields"]
    del fields["lr"]
    fields["head"] = ["concat"]
    older["commands"]["fit"]["options"].remove("--ckpt_path")
    for args in (["--model.lr", "0.1"], ["--model.head", "similarity"], ["--ckpt_path", "last"]):
        check_options("fit", args, older)
    with pytest.raises(UsageError, match="--model.head simlarity: not one of concat"):
        check_options("fit", ["--model.head", "simlarity"], older)  # named nowhere in the code: still refused


def readme_command_lines() -> list[list[str]]:
    """Every `clip-agiqa ...` command in the README's code blocks, as the shell splits it."""
    found = []
    for block in re.findall(r"```\w*\n(.*?)```", (REPO / "README.md").read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            match = re.search(r"(?:^|[\s$(])clip-agiqa\s+(.*)", line)
            if match is None or line.lstrip().startswith("#"):
                continue
            words = shlex.split(match.group(1), comments=True)
            ends = [at for at, word in enumerate(words) if word in ("|", "||", "&&", ";", ">", ")")]
            found.append(words[:ends[0]] if ends else words)
    return found


def test_the_readme_has_command_lines_of_every_kind():
    kinds = {line[0] for line in readme_command_lines()}
    assert {"fit", "test", "predict", "export", "score", "benchmark"} <= kinds


# Valid in jsonargparse (checked with --print_config where the classes are the package's): never refused here.
VALID = [
    ["fit", "--data=MOSFolder", "--data.root=/x", "--model.init_args.head=concat"],
    ["fit", "--data", "clip_agiqa.data.MOSFolder", "--data.init_args.root", "/x", "--model.head", "null"],
    ["fit", "--data.root", "/x", "--data", "MOSFolder"],  # the class after its fields
    ["fit", "--data", "AGIQA3K", "--data.root", "/x", "--data.target", "[quality, align]"],
    ["fit", "--data", "AGIQA3K", "--data", "MOSFolder", "--data.root", "/x", "--data.target", "anything"],
    ["fit", "--data", "MOSFolder", "--data.root", "/x", "--trainer.max_epo", "3"],  # argparse takes abbreviations
    ["fit", "--data", "MOSFolder", "--data.root", "/x", "--trainer.callbacks+=EarlyStopping",
     "--trainer.callbacks.monitor", "val/srcc", "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", "/x"],
    ["fit", "--data", "MOSFolder", "--data.root", "/x", "--print_config=skip_unset"],
    ["fit", "--data.help", "MOSFolder"],
    ["fit", "--data", "my_package.data.MyData", "--data.my_field", "1", "--model", "my_package.Model",
     "--model.depth", "2"],
    ["fit", "--config", "mine.yaml", "--data.my_field", "1", "--model.width", "3"],
    ["fit", "-c", "mine.yaml", "--data.my_field", "1"],
    ["fit", "--data", '{"class_path": "MOSFolder", "init_args": {"root": "/x"}}', "--data.whatever", "1"],
    ["fit", "--trainer.logger", "WandbLogger", "--trainer.logger.project", "x", "--trainer.logger.init_args.tags",
     "[a]"],
    ["predict", "--ckpt_path", "best.ckpt", "--data", "ImageFolder", "--data.root", "/x"],
    ["benchmark", "--config", "a.yaml", "--data.root", "/x", "--trainer.max_epochs", "3"],  # passed on to fit
    ["score", "models/mine", "images", "--out", "s.csv", "--batch", "4"],  # argparse takes abbreviations
    ["fit", "--data", "MOSFolder", "--", "--not.an.option"],
]


@pytest.mark.parametrize("argv", readme_command_lines() + VALID, ids=lambda argv: " ".join(argv)[:60])
def test_a_valid_command_line_passes_the_check(argv):
    check_options(argv[0], argv[1:], shipped.shipped_options())


@pytest.mark.parametrize("argv", [argv for argv in VALID[:9] if argv[0] == "fit"], ids=lambda argv: " ".join(argv)[:60])
def test_the_valid_forms_are_valid(argv, capsys):
    """The forms above that name the package's classes, through the full parser (printing the config)."""
    argv = argv if any(a.startswith(("--print_config", "--data.help")) for a in argv) else [*argv, "--print_config"]
    with pytest.raises(SystemExit) as done:
        commands.dispatch(argv, argv)
    assert done.value.code in (0, None)


@pytest.mark.slow
def test_a_built_wheel_ships_the_help(tmp_path):
    """Pyproject's package-data: a non-editable install has the help (built from a copy: the build leaves files)."""
    source = tmp_path / "source"
    shutil.copytree(REPO / "clip_agiqa", source / "clip_agiqa", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(tmp_path), str(source)], check=True, capture_output=True, cwd=tmp_path)
    names = zipfile.ZipFile(next(tmp_path.glob("clip_agiqa-*.whl"))).namelist()
    assert {f"clip_agiqa/help/{command}.txt" for command in commands.ALL_COMMANDS} <= set(names)
    assert "clip_agiqa/help/options.json" in names
