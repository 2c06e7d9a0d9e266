"""Jsonargparse's many-line report of a parse error turned into one line: the option, what was given, the valid
choices or a "did you mean". The only place that reads jsonargparse's messages; each rewrite has its test in
``tests/cli/test_usage.py``. The classes a message names are imported only when needed (they were, to parse)."""

from __future__ import annotations

import importlib
import inspect
import re

from ..errors import UsageError
from ..text import did_you_mean

SUBCOMMANDS = ("fit", "validate", "test", "predict")
BASE_CLASSES = ("MOSDataModule", "LightningDataModule")  # what --data is before a data class is chosen
NOT_FINITE = ("nan", "inf", "infinity")  # YAML reads them as floats; jsonargparse refuses them
DATA_CLASS_HINT = " (and the data class, e.g. --data MOSFolder --data.root DIR, or a --config FILE.yaml)"


def missing_config_file(path: str) -> UsageError:
    return UsageError(f"--config {path}: no such file")


def class_names(key: str) -> list[str]:
    """The short names --model / --data take."""
    from ..data import MOSDataModule
    from ..module import CLIPAGIQA

    base = {"model": CLIPAGIQA, "data": MOSDataModule}.get(key)
    if base is None:
        return []
    found, todo = [], [base]
    while todo:
        klass = todo.pop()
        found.append(klass.__name__)
        todo.extend(klass.__subclasses__())
    return sorted(set(found) - {"MOSDataModule"})


def parameters_of(class_path: str) -> list[str]:
    module, _, name = class_path.rpartition(".")
    try:
        klass = getattr(importlib.import_module(module), name)  # already imported: it was parsed
    except (ImportError, AttributeError, ValueError):
        return []
    return [p for p in inspect.signature(klass).parameters if p not in ("self", "args", "kwargs")]


def _option_of(message: str) -> tuple[str, str]:
    """The option the message is about (``--trainer.max_epochs``, from its "Parser key" lines) and the part of
    the message about that option."""
    keys = [re.sub(rf"^({'|'.join(SUBCOMMANDS)})\.", "", key) for key in re.findall(r'Parser key "([^"]+)"', message)]
    option = "--" + ".".join(dict.fromkeys(keys)) if keys else ""
    inner = message[message.rfind('Parser key "'):] if keys else message
    return option, inner


def _given_value(inner: str) -> str:
    """The value given to the option, as typed (jsonargparse shows a ``--group.key VALUE`` as a NestedArg)."""
    given = re.search(r"Got value: (.*)", inner) or re.search(r"Given value: (.*)", inner)
    value = given.group(1).strip() if given else ""
    nested = re.fullmatch(r"NestedArg\(key='[^']*', val=(.*)\)", value)
    return nested.group(1).strip("'") if nested else value


def unknown_option(message: str, options: list[str]) -> UsageError | None:
    unrecognized = re.match(r"unrecognized arguments: (\S+)", message)
    if not unrecognized:
        return None
    option = unrecognized.group(1).split("=")[0]
    return UsageError(f"unknown option {option}{did_you_mean(option, options)}")


def invalid_choice(message: str, options: list[str]) -> UsageError | None:
    found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if not found:
        return None
    given, choices = found.group(1), re.findall(r"'([^']*)'", found.group(2))
    return UsageError(f"{given!r}: not one of {', '.join(choices)}{did_you_mean(given, choices)}")


def key_in_a_config_file(message: str, options: list[str]) -> UsageError | None:
    """A key of a --config file that no option has, named as the option it would be (``--trainer.max_epoch``)."""
    found = re.search(r"does not accept option '([^']+)'", message)
    if not found:
        return None
    option = f"--{found.group(1)}"
    return UsageError(f"unknown option {option} (in a --config file){did_you_mean(option, options)}")


def missing_file(message: str, options: list[str]) -> UsageError | None:
    found = re.search(r'Parser key "config":\s*File does not exist: (.*)', message)
    if not found:
        return None
    return missing_config_file(found.group(1).strip().strip("'\""))


def option_of_a_class(message: str, options: list[str]) -> UsageError | None:
    found = re.search(r"Option '([^']+)' is not accepted", message)
    if not found:
        return None
    option, _ = _option_of(message)
    class_path = re.search(r"class_path '([^']+)'", message)
    owner = class_path.group(1).rpartition(".")[2] if class_path else ""
    # No data class chosen yet: suggest the options every dataset's class has.
    parameters = parameters_of("clip_agiqa.data.base.MOSDataModule" if owner in BASE_CLASSES else
                               class_path.group(1)) if class_path else []
    bad = f"{option}.{found.group(1)}"
    owner = f" of {owner}" if owner and owner not in BASE_CLASSES else ""  # no class chosen: no owner to name
    return UsageError(f"unknown option {bad}{owner}{did_you_mean(bad, [f'{option}.{p}' for p in parameters])}")


def missing_required(message: str, options: list[str]) -> UsageError | None:
    found = re.search(r"the following arguments are required: (.*)", message)
    if not found:
        return None
    option, _ = _option_of(message)
    names = [re.sub(rf"^({'|'.join(SUBCOMMANDS)})\.", "", name.strip()) for name in found.group(1).split(",")]
    names = [f"{option}.{name}" if option else f"--{name}" for name in names]
    no_class = names == ["--data"] or "class_path 'clip_agiqa.MOSDataModule'" in message
    return UsageError(f"missing {', '.join(names)}{DATA_CLASS_HINT if no_class else ''}")


def literal_choice(message: str, options: list[str]) -> UsageError | None:
    option, inner = _option_of(message)
    listed = re.findall(r"Literal\[([^\]]*)\]", inner)
    if not listed:
        return None
    given = _given_value(inner)
    choices = list(dict.fromkeys(c.strip().strip("'\"") for found in listed for c in found.split(",")))
    return UsageError(f"{option} {given}: not one of {', '.join(choices)}{did_you_mean(given, choices)}")


def no_such_class(message: str, options: list[str]) -> UsageError | None:
    option, inner = _option_of(message)
    if option not in ("--model", "--data") or not re.search(r"import path|not accessible", inner):
        return None
    given, names = _given_value(inner), class_names(option[2:])
    return UsageError(f"{option} {given}: no such class (nor a config file); choose from {', '.join(names)}"
                      f"{did_you_mean(given, names)}")


def expected_type(message: str, options: list[str]) -> UsageError | None:
    option, inner = _option_of(message)
    expected = [name for name in re.findall(r"Expected an? <class '(\w+)'>", inner) if name != "NoneType"]
    if not option or not expected:
        return None
    given = _given_value(inner)
    finite = "a finite " if given.lower().lstrip("+-") in NOT_FINITE else ""
    return UsageError(f"{option} {given}: expected {finite}{' or '.join(dict.fromkeys(expected))}")


def refused_value(message: str, options: list[str]) -> UsageError | None:
    """Any other value refused for an option: the option, the value and jsonargparse's reason."""
    option, inner = _option_of(message)
    reasons = [line.strip(" -") for line in inner.splitlines()[1:] if line.strip(" -")
               and "NoneType" not in line and not line.strip(" -").startswith(("Given value", "Problem with given"))]
    if not option or not reasons:
        return None
    reason = re.sub(r"\. Got value: .*", "", reasons[0])
    return UsageError(f"{option} {_given_value(inner)}: {reason[:1].lower()}{reason[1:]}")


REWRITES = (unknown_option, invalid_choice, key_in_a_config_file, missing_file, option_of_a_class, missing_required,
            literal_choice, no_such_class, expected_type, refused_value)


def usage_error(message: str, options: list[str]) -> UsageError:
    """Jsonargparse's report of a parse error as one line; ``options`` are the sub-command's option names."""
    for rewrite in REWRITES:
        error = rewrite(message, options)
        if error is not None:
            return error
    lines = [line.strip(" -") for line in message.splitlines() if line.strip(" -")]
    option, _ = _option_of(message)
    return UsageError(" ".join(lines[:3]) if len(lines) <= 3 else f"{option}: {lines[-1]}" if option else lines[0])
