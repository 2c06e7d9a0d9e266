"""The ``clip-agiqa`` console script: LightningCLI's fit/validate/test/predict (``lightning.py``) and the commands
beside it, dispatched on the first argument.

It imports nothing heavy itself: the top-level help, a mistyped command, a ``--config`` file that is not there
and a sub-command's ``--help`` after its first call answer without importing torch. The help is the live
parser's, rendered once per installed code and libraries into the user's cache folder (``help_cache.py``);
every other mistake is the live parser's, turned into one line (``usage.py``). The user's mistakes
(``InputError`` anywhere in an error's chain) and a stopped fit are one line, never a traceback.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import io
import os
import sys
import warnings
from types import FrameType

from ..errors import UsageError, disk_full, input_error
from .help_cache import cached_help, store_help

# Every command with its one line: LightningCLI's (lightning.py) and those beside it (module with main(argv),
# imported only when used, so that `score` and `export` start without Lightning).
TRAINING_COMMANDS = {
    "fit": "train a model; the run folder (--trainer.default_root_dir) gets config.yaml, metrics.csv, checkpoints/",
    "validate": "the validation metrics of a checkpoint (--ckpt_path)",
    "test": "the test metrics, test_predictions.csv and test_scatter.png of a checkpoint (--ckpt_path)",
    "predict": "score a dataset's images with a checkpoint (--ckpt_path) -> file_name,score,error CSV",
}
COMMANDS = {"export": "clip_agiqa.export", "score": "clip_agiqa.scoring", "benchmark": "clip_agiqa.benchmark.command",
            "compare": "clip_agiqa.benchmark.compare"}
OTHER_COMMANDS = {
    "export": "a checkpoint -> a model folder (model.safetensors + config.json) that loads without pickle",
    "score": "score image files, folders or CSV lists with a saved model -> CSV",
    "benchmark": "repeated splits of one config (fit + test each), with mean, median and std",
    "compare": "several benchmark folders side by side, with their protocols",
}
ALL_COMMANDS = {**TRAINING_COMMANDS, **OTHER_COMMANDS}
TRAINING_CLI = "clip_agiqa.cli.lightning"
DEBUG_VARIABLE = "CLIP_AGIQA_DEBUG"  # set to 1: errors about the input show their traceback too
HELP_FLAGS = ("-h", "--help")
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # clip_agiqa/


def top_level_help() -> str:
    width = max(len(name) for name in ALL_COMMANDS) + 2
    lines = ["usage: clip-agiqa COMMAND [options]      (clip-agiqa COMMAND --help: the options of COMMAND)", "",
             "CLIP-AGIQA: train, evaluate and apply a quality model for AI-generated images.", "", "commands:"]
    lines += [f"  {name:<{width}}{about}" for name, about in ALL_COMMANDS.items()]
    lines += ["", "fit/validate/test/predict take --config FILE.yaml, --model.*, --data.*, --trainer.* (LightningCLI).",
              f"{DEBUG_VARIABLE}=1 shows the traceback of an error."]
    return "\n".join(lines) + "\n"


def unknown_command(name: str) -> UsageError:
    close = difflib.get_close_matches(name, list(ALL_COMMANDS), n=2, cutoff=0.5)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    return UsageError(f"unknown command {name!r}{hint}; the commands are {', '.join(ALL_COMMANDS)}")


def main(args: list[str] | None = None):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = sys.argv[1:] if args is None else list(args)
    if not argv or argv[0] in HELP_FLAGS:
        sys.stdout.write(top_level_help())
        return None
    command = argv[0]
    if not command.startswith("-") and command not in ALL_COMMANDS:
        raise unknown_command(command)
    if len(argv) == 2 and argv[1] in HELP_FLAGS:
        return print_help(command, argv)
    if command in TRAINING_COMMANDS:
        check_config_files(argv[1:])  # before the heavy imports
    return dispatch(argv, args)


def dispatch(argv: list[str], args: list[str] | None = None):
    if argv[0] in COMMANDS:
        return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])
    return importlib.import_module(TRAINING_CLI).main(argv if args is not None else None)


def check_config_files(args: list[str]) -> None:
    """``--config PATH`` naming no file, refused as the live parser would (``usage.missing_config_file``) but
    before torch is imported. A value that is not a path (jsonargparse also takes a YAML string) is left to it."""
    from .usage import missing_config_file

    for at, token in enumerate(args[:args.index("--")] if "--" in args else args):
        if token.startswith("--config="):
            path = token.split("=", 1)[1]
        elif token in ("--config", "-c") and at + 1 < len(args):
            path = args[at + 1]
        else:
            continue
        looks_like_a_path = path.endswith((".yaml", ".yml", ".json")) and not any(c in path for c in "{}:\n ")
        if looks_like_a_path and not os.path.exists(path):
            raise missing_config_file(path)


def print_help(command: str, argv: list[str]):
    """``clip-agiqa COMMAND --help``: the live parser's text, read from the user's cache after the first call
    with the installed code (rendering it imports torch and Lightning)."""
    text = cached_help(argv)
    if text is not None:
        sys.stdout.write(text)
        return None
    printed = io.StringIO()
    code: str | int | None = 0
    with contextlib.redirect_stdout(printed):
        try:
            dispatch(argv, argv)
        except SystemExit as done:
            code = done.code
    text = printed.getvalue()
    if code in (0, None) and text:
        store_help(argv, text)
    sys.stdout.write(text)
    if code not in (0, None):
        raise SystemExit(code)
    return None


# --- errors and warnings as one line -------------------------------------------------------------------------


def _warned_by_the_package() -> bool:
    """Whether ``warnings.warn`` was called from this package's code (a ``stacklevel`` may name its caller)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and (frame.f_code.co_filename == __file__
                                 or os.path.basename(frame.f_code.co_filename) == "warnings.py"):
        frame = frame.f_back
    return frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(PACKAGE_DIR)


def one_line_warning(message, category, filename, lineno, line=None) -> str:
    """The package's own warnings as ``clip-agiqa: warning: ...``; others on one line with where they come from."""
    text = " ".join(str(message).split())
    if os.path.abspath(filename).startswith(PACKAGE_DIR) or _warned_by_the_package():
        return f"clip-agiqa: warning: {text}\n"
    return f"{category.__name__}: {text} ({filename}:{lineno})\n"


def _fail(message: str, status: int) -> None:
    sys.stderr.write(f"clip-agiqa: {message}\n")
    sys.exit(status)


def console() -> None:
    """The console script: exit status 0 on success, 1 for an error about the input, 2 for a mistyped command
    or option, 128 + the signal for a fit stopped by Ctrl-C or SIGTERM; a traceback only for a bug (or with
    ``CLIP_AGIQA_DEBUG=1``)."""
    debug = os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")
    formatwarning, warnings.formatwarning = warnings.formatwarning, one_line_warning
    try:
        main()
    except KeyboardInterrupt:
        if debug:
            raise
        _fail("interrupted", 130)
    except Exception as error:
        cause = input_error(error)
        full = disk_full(error) if cause is None else None
        if (cause is None and full is None) or debug:
            raise
        if full is not None:
            where = f" writing {full.filename}" if full.filename else ""
            resume = getattr(full, "resume", "")  # a fit that wrote last.ckpt (cli/lightning.py) goes on from it
            again = f"resume with: {resume}" if resume else "run the command again"
            _fail(f"error: no space left on the device{where}: free some space, then {again}", 1)
        hint = "" if isinstance(cause, UsageError) else f" ({DEBUG_VARIABLE}=1 shows the traceback)"
        _fail(f"error: {cause}{hint}", getattr(cause, "exit_status", 1))
    except BaseException as error:
        signals = sys.modules.get("clip_agiqa.callbacks.signals")
        if signals is None or not isinstance(error, signals.RunInterrupted) or debug:
            raise
        resume = getattr(error, "resume", "")
        _fail(f"{error}{'. Resume with: ' + resume if resume else ''}", 128 + error.signum)
    finally:
        warnings.formatwarning = formatwarning  # (console() run in a process that goes on, e.g. a test)
