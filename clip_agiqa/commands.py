"""The ``clip-agiqa`` console script: LightningCLI's fit/validate/test/predict (``cli.py``) and the commands
beside it, dispatched on the first argument; the package's own input errors as one short message."""

from __future__ import annotations

import importlib
import linecache
import os
import sys

# Commands outside LightningCLI: name -> module with main(argv). Imported only when used, so `score` and
# `export` start without Lightning.
COMMANDS = {"export": "clip_agiqa.export", "benchmark": "clip_agiqa.benchmark", "score": "clip_agiqa.scoring",
            "compare": "clip_agiqa.compare"}
TRAINING_CLI = "clip_agiqa.cli"
DEBUG_VARIABLE = "CLIP_AGIQA_DEBUG"  # set to 1: errors about the input show their traceback too


def main(args: list[str] | None = None):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = sys.argv[1:] if args is None else list(args)
    if argv and argv[0] in COMMANDS:
        return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])
    return importlib.import_module(TRAINING_CLI).main(args)


def raised_by_the_package(error: BaseException) -> bool:
    """True for an error this package raised on purpose (a ``raise`` line in its code): a message for the user."""
    frame = error.__traceback__
    if frame is None:
        return False
    while frame.tb_next is not None:
        frame = frame.tb_next
    filename = os.path.abspath(frame.tb_frame.f_code.co_filename)
    line = linecache.getline(filename, frame.tb_lineno).strip()
    return filename.startswith(os.path.dirname(os.path.abspath(__file__)) + os.sep) and line.startswith("raise ")


def input_error(error: BaseException) -> BaseException | None:
    """The package's own error in the chain (jsonargparse wraps errors raised while building the classes)."""
    while error is not None:
        if raised_by_the_package(error):
            return error
        error = error.__cause__
    return None


def console() -> None:
    """The console script: exit status 0 on success; the package's own input errors as one short message."""
    try:
        main()
    except Exception as error:
        cause = input_error(error)
        if cause is None or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0"):
            raise
        sys.stderr.write(f"clip-agiqa: error: {cause}\n({DEBUG_VARIABLE}=1 shows the traceback)\n")
        sys.exit(1)
