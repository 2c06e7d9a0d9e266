"""The help the package ships: ``<command>.txt`` (``clip-agiqa COMMAND --help`` rendered at a fixed width) and
``options.json`` (each command's option names, and the fields and choices of the shipped model and data
classes), so that help and a mistyped option answer without importing torch or Lightning.

Both are rendered by ``python -m clip_agiqa.help.render`` (``make help``); ``tests/test_help.py`` fails when
they differ from a live rendering. They are used only where the libraries that build the parsers have the
versions they were rendered with (``rendered_with``); elsewhere the help is rendered and cached as before.
"""

from __future__ import annotations

import functools
import json
import sys
from importlib import metadata
from pathlib import Path

HELP_DIR = Path(__file__).parent
OPTIONS_FILE = HELP_DIR / "options.json"
# What the rendered text depends on besides the package: the libraries that build the parsers, and argparse's
# formatting (the Python version).
RENDERING_LIBRARIES = ("lightning", "jsonargparse")


def rendering_versions() -> dict[str, str | None]:
    versions = {"python": "{}.{}".format(*sys.version_info[:2])}
    for name in RENDERING_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@functools.lru_cache(maxsize=1)
def shipped_options() -> dict | None:
    """``options.json`` when it was rendered with the installed versions; None otherwise (or when missing)."""
    try:
        shipped = json.loads(OPTIONS_FILE.read_text())
    except (OSError, ValueError):
        return None
    return shipped if shipped.get("rendered_with") == rendering_versions() else None


def shipped_help(command: str) -> str | None:
    """The shipped ``clip-agiqa COMMAND --help`` text, when it holds for the installed versions."""
    if shipped_options() is None or command not in shipped_options()["commands"]:
        return None
    try:
        return (HELP_DIR / f"{command}.txt").read_text()
    except OSError:
        return None
