"""Mistyped options and unknown choices refused before the heavy imports, from the shipped ``options.json``.

Conservative: a command line is refused here only when the full parser would refuse it too; anything this
cannot judge (a ``--config`` file that may name other classes, a custom class path, deeper keys of a
class-typed option, an abbreviation argparse would accept, a name or value the package's code names although the
shipped options lack it: they may be older than the code) is left to the full parser.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from ..errors import UsageError
from ..text import did_you_mean

CLASS_GROUPS = ("model", "data")  # LightningCLI's subclass-mode options: their fields depend on the class
# Keys under --model / --data that are not fields of the class.
CLASS_KEYS = ("help", "class_path", "init_args", "dict_kwargs")
OPEN_COMMANDS = ("benchmark",)  # passes options it does not know to `clip-agiqa fit`
NULL_VALUES = ("null", "Null", "NULL", "~", "None", "none")  # YAML's null (jsonargparse takes it for any field)
PLAIN_VALUE = re.compile(r"[A-Za-z0-9_.+-]+\Z")  # a value read as a plain string (not a list, dict or quoted)
LIBRARY_GROUPS = ("trainer",)  # options named by Lightning alone (its version is the shipped one)
PACKAGE_DIR = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=1)
def _package_code() -> str:
    return "\n".join(path.read_text(errors="replace") for path in sorted(PACKAGE_DIR.rglob("*.py"))
                     if path.parent.name != "help")


def _named_in_the_code(word: str) -> bool:
    """Whether the package's code names ``word`` (read only before refusing): shipped options that lack it may be
    older than the code (a field, option or choice added since `make help`), so the full parser decides."""
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", _package_code()) is not None


def _unknown_part(name: str, options: list[str]) -> str:
    """The first component of a dotted option that no known option has there (``modle`` of ``--modle.lr``)."""
    parts = name[2:].rstrip("+").split(".")
    for at, part in enumerate(parts):
        prefix = "--" + ".".join(parts[:at + 1])
        if not any(option == prefix or option.startswith(f"{prefix}.") for option in options):
            return part
    return parts[-1]


def _options_given(args: list[str]) -> list[tuple[str, str | None]]:
    """(option, value) for each ``--option`` before a ``--``; the value is None when none follows."""
    if "--" in args:
        args = args[:args.index("--")]
    given = []
    for at, token in enumerate(args):
        if not token.startswith("--"):
            continue
        if "=" in token:
            name, value = token.split("=", 1)
        else:
            following = args[at + 1] if at + 1 < len(args) else None
            name, value = token, None if following is None or following.startswith("--") else following
        given.append((name, value))
    return given


def _abbreviates(name: str, options: list[str]) -> bool:
    """Argparse takes any unambiguous start of an option (and refuses an ambiguous one itself)."""
    return any(option.startswith(name) for option in options)


def _names_a_config_file(args: list[str], given) -> bool:
    short = any(token.startswith("-c") for token in args if not token.startswith("--"))
    return short or any(len(name) > 2 and "--config".startswith(name) for name, _ in given)


def _classes_named(group: str, given, classes: dict) -> list[str] | None:
    """The shipped classes named by ``--model``/``--data`` on the line; None when one is not a shipped class (a
    custom class path, a config file, a dict) or is left out."""
    named = []
    for name, value in given:
        if name not in (f"--{group}", f"--{group}.class_path"):
            continue
        short = value.rpartition(".")[2] if value and value.startswith("clip_agiqa.") else value
        if short not in classes:
            return None
        named.append(short)
    return named


def _check_class_option(group: str, name: str, value: str | None, named: list[str], shipped: dict) -> None:
    """``--data.FIELD`` / ``--data.init_args.FIELD``: a field of the named class (or of any shipped class when
    none is named) and, for a field with fixed choices, one of them."""
    classes = shipped["classes"][group]
    if not named:
        default = shipped["default_class"].get(group)
        named = [default] if default else list(classes)
    parts = name[len(group) + 3:].split(".")
    if parts[0] == "init_args":
        parts = parts[1:]
    if not parts or parts[0].rstrip("+") in CLASS_KEYS:
        return
    field = parts[0].rstrip("+")
    fields = {f: None for klass in named for f in classes[klass]["fields"]}
    if field not in fields:
        if _named_in_the_code(field):
            return
        owner = f" of {named[0]}" if len(set(named)) == 1 else ""
        raise UsageError(f"unknown option {name}{owner}{did_you_mean(name, [f'--{group}.{f}' for f in fields])}")
    if len(parts) > 1 or value is None or not PLAIN_VALUE.match(value) or value in NULL_VALUES:
        return
    choices = [classes[klass]["fields"].get(field) for klass in named]  # None: a class without fixed choices
    if None in choices:
        return
    allowed = list(dict.fromkeys(choice for listed in choices for choice in listed))
    if value not in allowed and not _named_in_the_code(value):
        option = f"--{group}.{field}"
        raise UsageError(f"{option} {value}: not one of {', '.join(allowed)}{did_you_mean(value, allowed)}")


def _suggestions(options: list[str], shipped: dict) -> list[str]:
    """What a mistyped option may have meant: the parser's options and the fields of the model and data classes
    (``--modle.lr`` -> ``--model.lr``)."""
    listed = [option for option in options if not option.endswith((".help", "+"))]
    for group in CLASS_GROUPS:
        listed += [f"--{group}.{field}" for klass in shipped["classes"][group].values() for field in klass["fields"]]
    return list(dict.fromkeys(listed))


def check_training_options(command: str, args: list[str], shipped: dict) -> None:
    """fit/validate/test/predict (LightningCLI): each ``--option`` one the parser takes."""
    options = shipped["commands"][command]["options"]
    given = _options_given(args)
    from_config = _names_a_config_file(args, given)
    named = {group: None if from_config else _classes_named(group, given, shipped["classes"][group])
             for group in CLASS_GROUPS}
    for name, value in given:
        if name in options or name.rstrip("+") in options or _abbreviates(name, options):
            continue
        group = next((g for g in CLASS_GROUPS if name.startswith(f"--{g}.")), None)
        if group is not None:
            if named[group] is not None:
                _check_class_option(group, name, value, named[group], shipped)
            continue
        # Deeper keys of an option (--trainer.logger.project after --trainer.logger WandbLogger): the full parser.
        if any(name.startswith(f"{option}.") for option in options if "." in option):
            continue
        from_library = name.startswith(tuple(f"--{group}." for group in LIBRARY_GROUPS))
        if from_library or not _named_in_the_code(_unknown_part(name, options)):
            raise UsageError(f"unknown option {name}{did_you_mean(name, _suggestions(options, shipped))}")


def check_plain_options(command: str, args: list[str], shipped: dict) -> None:
    """export/score/compare (argparse): each ``--option`` one of the command's (or the start of one)."""
    options = shipped["commands"][command]["options"]
    for name, _ in _options_given(args):
        if name not in options and not _abbreviates(name, options) and not _named_in_the_code(name[2:]):
            raise UsageError(f"unknown option {name}{did_you_mean(name, options)}")


def check_options(command: str, args: list[str], shipped: dict | None) -> None:
    """Raises ``UsageError`` for an option or choice the command's parser would refuse; ``args`` follow the
    command. Does nothing without shipped options for the installed versions."""
    if shipped is None or command not in shipped["commands"] or command in OPEN_COMMANDS:
        return
    if any(token in ("-h", "--help") for token in args):
        return  # help first, whatever else is on the line (as the parsers do)
    if shipped["commands"][command].get("lightning"):
        check_training_options(command, args, shipped)
    else:
        check_plain_options(command, args, shipped)
