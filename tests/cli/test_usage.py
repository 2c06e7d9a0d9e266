"""jsonargparse's errors as one line (clip_agiqa/cli/usage.py): one test per message it rewrites, each typed as
a user types it into the real command line."""

import sys

import pytest

from clip_agiqa.cli import console, usage


def error_line(monkeypatch, capsys, args: list[str], files: dict | None = None) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["clip-agiqa", *args])
    with pytest.raises(SystemExit) as done:
        console()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("clip-agiqa: ")]
    assert len(lines) == 1 and "Traceback" not in err and "usage:" not in err and "NestedArg" not in err, err
    return done.value.code, lines[0].removeprefix("clip-agiqa: error: ")


def rewrites(name: str) -> None:
    """Names the rewrite of usage.py a test is about (test_every_rewrite_has_its_test reads them)."""


def test_unknown_option_with_did_you_mean(monkeypatch, capsys):
    rewrites("unknown_option")
    assert error_line(monkeypatch, capsys, ["fit", "--trainer.acelerator", "cpu"]) == (
        2, "unknown option --trainer.acelerator (did you mean --trainer.accelerator or --trainer.logger or "
           "--trainer.logger+?)")


def test_invalid_choice():
    rewrites("invalid_choice")
    from clip_agiqa.cli import lightning

    with pytest.raises(usage.UsageError, match="'fti': not one of fit, validate, test, predict"):
        lightning.main(["fti"])  # the console script answers a mistyped command before this parser


def test_key_in_a_config_file_is_named_as_its_option(monkeypatch, capsys, tmp_path):
    rewrites("key_in_a_config_file")
    config = tmp_path / "run.yaml"
    config.write_text("trainer:\n  max_epoch: 3\n")
    assert error_line(monkeypatch, capsys, ["fit", "--config", str(config)]) == (
        2, "unknown option --trainer.max_epoch (in a --config file) (did you mean --trainer.max_epochs or "
           "--trainer.min_epochs or --trainer.max_steps?)")


def test_missing_config_file(monkeypatch, capsys, tmp_path):
    rewrites("missing_file")
    missing = tmp_path / "no" / "such.yaml"
    monkeypatch.setattr("clip_agiqa.cli.check_config_files", lambda args: None)  # the live parser's own check
    assert error_line(monkeypatch, capsys, ["fit", "--config", str(missing)]) == (
        2, f"--config {missing}: no such file")


def test_option_not_accepted_by_a_class(monkeypatch, capsys):
    rewrites("option_of_a_class")
    assert error_line(monkeypatch, capsys, ["fit", "--data", "MOSFolder", "--data.rot", "x"]) == (
        2, "unknown option --data.rot of MOSFolder (did you mean --data.root or --data.target or --data.metadata?)")
    code, line = error_line(monkeypatch, capsys, ["fit", "--data.rot", "x"])  # no data class chosen yet
    assert code == 2 and line.startswith("unknown option --data.rot (did you mean --data.root")


def test_missing_required(monkeypatch, capsys):
    rewrites("missing_required")
    assert error_line(monkeypatch, capsys, ["fit", "--data", "MOSFolder"]) == (2, "missing --data.root")
    assert error_line(monkeypatch, capsys, ["fit"]) == (2, f"missing --data{usage.DATA_CLASS_HINT}")


def test_literal_choice(monkeypatch, capsys):
    rewrites("literal_choice")
    assert error_line(monkeypatch, capsys, ["fit", "--data", "AGIQA3K", "--data.root", ".", "--data.target",
                                            "qualty"]) == (
        2, "--data.target qualty: not one of quality, align (did you mean quality?)")


def test_no_such_class(monkeypatch, capsys):
    rewrites("no_such_class")
    code, line = error_line(monkeypatch, capsys, ["fit", "--data", "MOSFoldr"])
    assert code == 2 and line.startswith("--data MOSFoldr: no such class (nor a config file); choose from AGIQA1K, ")
    assert line.endswith("(did you mean MOSFolder?)")


def test_expected_type(monkeypatch, capsys):
    rewrites("expected_type")
    assert error_line(monkeypatch, capsys, ["fit", "--trainer.max_epochs", "ten"]) == (
        2, "--trainer.max_epochs ten: expected int")
    assert error_line(monkeypatch, capsys, ["fit", "--model.lr", "nan"]) == (
        2, "--model.lr nan: expected a finite float")


def test_another_refused_value_names_the_option_and_the_value_as_typed(monkeypatch, capsys):
    rewrites("refused_value")
    assert error_line(monkeypatch, capsys, ["fit", "--data", "MOSFolder", "--data.root", ".", "--data.crop_scale",
                                            "[1]"]) == (2, "--data.crop_scale [1]: expected a tuple with 2 elements")


def test_every_rewrite_has_its_test():
    """Runs last in file order (-p no:randomly); in any order it checks the names this file declares."""
    declared = {line.split('"')[1] for line in open(__file__) if line.strip().startswith('rewrites("')}
    assert declared == {rewrite.__name__ for rewrite in usage.REWRITES}
