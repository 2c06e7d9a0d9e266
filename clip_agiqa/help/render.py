"""Renders the shipped help (``make help``): ``clip_agiqa/help/<command>.txt`` and ``options.json``.

    python -m clip_agiqa.help.render            # write them
    python -m clip_agiqa.help.render --check    # exit 1 (and name what differs) when they are stale

Run it in a fresh process: it imports the package's classes (and only those) as the console script does.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import json
import os
import sys
import types
import typing
from unittest import mock

from . import HELP_DIR, OPTIONS_FILE, rendering_versions
from .precheck import CLASS_GROUPS

WIDTH = 80  # columns of the shipped text: fits any terminal
PROGRAM = "clip-agiqa"


@contextlib.contextmanager
def _rendering_setting():
    """The console script's program name and a fixed width (argparse reads $COLUMNS)."""
    with mock.patch.dict(os.environ, {"COLUMNS": str(WIDTH)}), mock.patch.object(sys, "argv", [PROGRAM]):
        yield


def command_help(command: str):
    """``clip-agiqa COMMAND --help`` as printed, and the parser that printed it."""
    from .. import commands

    printed, parsers = io.StringIO(), []
    print_help = argparse.ArgumentParser.print_help

    def recording_print_help(parser, *args, **kwargs):
        parsers.append(parser)
        return print_help(parser, *args, **kwargs)

    with _rendering_setting(), contextlib.redirect_stdout(printed), \
            mock.patch.object(argparse.ArgumentParser, "print_help", recording_print_help):
        try:
            commands.dispatch([command, "--help"], [command, "--help"])
        except SystemExit as done:
            if done.code not in (0, None):
                raise RuntimeError(f"{command} --help exited with {done.code}") from None
    return printed.getvalue(), parsers[-1]


def option_names(parser) -> list[str]:
    return [option for action in parser._actions for option in action.option_strings if option.startswith("--")]


def default_classes(parser) -> dict[str, str]:
    """The short names of the model / data classes the LightningCLI parser uses when none is given."""
    defaults = {}
    for group in CLASS_GROUPS:
        default = parser.get_default(group)
        class_path = default.get("class_path") if isinstance(default, dict) else getattr(default, "class_path", None)
        if class_path:
            defaults[group] = class_path.rpartition(".")[2]
    return defaults


def _choices(hint) -> list[str] | None:
    """The fixed string choices of a field (``Literal[...]``, optionally with None or a list of them); None when
    the field also takes other strings or types."""
    members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    choices = []
    for member in members:
        origin = typing.get_origin(member)
        if member is type(None) or origin in (list, tuple):  # a list is given as [a, b]: left to the parser
            continue
        if origin is typing.Literal and all(isinstance(value, str) for value in typing.get_args(member)):
            choices += typing.get_args(member)
            continue
        return None
    return choices or None


def class_fields(klass) -> dict[str, list[str] | None]:
    """The ``--model.FIELD`` / ``--data.FIELD`` names jsonargparse takes for the class, with their choices."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(klass, "x", fail_untyped=False)
    fields = {}
    for action in parser._actions:
        if action.dest.startswith("x.") and not action.dest.endswith(".help"):
            name = action.dest.split(".")[1]
            fields.setdefault(name, _choices(getattr(action, "_typehint", None)))
    return dict(sorted(fields.items()))


def shipped_classes(base) -> dict[str, dict]:
    """The base class and its subclasses in this package, by the short name ``--model``/``--data`` take."""
    found, todo = {}, [base]
    while todo:
        klass = todo.pop()
        if klass.__module__.startswith("clip_agiqa."):
            found[klass.__name__] = {"class_path": f"{klass.__module__}.{klass.__qualname__}",
                                     "fields": class_fields(klass)}
        todo.extend(klass.__subclasses__())
    return dict(sorted(found.items()))


def render() -> dict[str, str]:
    """Every shipped file's name and text."""
    from .. import commands

    files, facts, defaults = {}, {}, {}
    for command in commands.ALL_COMMANDS:
        text, parser = command_help(command)
        files[f"{command}.txt"] = text
        facts[command] = {"options": option_names(parser)}
        if command in commands.TRAINING_COMMANDS:  # a LightningCLI subcommand's parser
            facts[command]["lightning"] = True
            defaults = default_classes(parser)
    # Imported after the help is printed: the order of imports is the order of "known subclasses" there.
    from ..data import MOSDataModule
    from ..module import CLIPAGIQA

    shipped = {"rendered_with": rendering_versions(), "width": WIDTH, "commands": facts, "default_class": defaults,
               "classes": {"model": shipped_classes(CLIPAGIQA), "data": shipped_classes(MOSDataModule)}}
    files[OPTIONS_FILE.name] = json.dumps(shipped, indent=1) + "\n"
    return files


def stale(files: dict[str, str]) -> list[str]:
    """A unified diff line block per shipped file that differs from ``files``."""
    differences = []
    for name, text in files.items():
        path = HELP_DIR / name
        shipped = path.read_text() if path.is_file() else ""
        if shipped != text:
            diff = difflib.unified_diff(shipped.splitlines(), text.splitlines(), f"shipped {name}", "rendered now",
                                        lineterm="", n=1)
            differences.append("\n".join(list(diff)[:40]))
    return differences


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clip_agiqa.help.render", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the shipped files, write nothing")
    check = parser.parse_args(argv).check
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    files = render()
    if check:
        differences = stale(files)
        for difference in differences:
            print(difference)
        if differences:
            print("the shipped help is stale: run `make help` (python -m clip_agiqa.help.render) and commit "
                  "clip_agiqa/help/")
        return 1 if differences else 0
    from ..files import atomic_write

    for name, text in files.items():
        with atomic_write(HELP_DIR / name) as handle:
            handle.write(text)
    print(f"wrote {len(files)} files to {HELP_DIR} (rendered with {rendering_versions()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
