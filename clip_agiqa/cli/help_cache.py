"""``clip-agiqa COMMAND --help`` kept in the user's cache folder ($XDG_CACHE_HOME/clip-agiqa/help, else
~/.cache/clip-agiqa/help), so that help answers without importing torch after its first call.

The text is the live parser's, rendered on this machine. Its file name holds a key of everything it depends
on: the command line, the terminal width, Python, the libraries that build the parsers and the package's own
source; any change renders it afresh. The file is read as any cache file: a regular file of bounded size,
UTF-8, that starts as a help text, or it is rendered again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # clip_agiqa/
LIBRARIES = ("lightning", "jsonargparse", "torch", "transformers")  # what builds the parsers and their classes
MAX_HELP_BYTES = 1 << 20  # a help text is a few dozen kB


def help_folder() -> Path | None:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "clip-agiqa" / "help" if os.path.isabs(root) else None  # no home: no cache


def source_digest() -> str:
    """The package's source, file names and contents."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        digest.update(str(path.relative_to(PACKAGE_DIR)).encode())
        with contextlib.suppress(OSError):
            digest.update(path.read_bytes())
    return digest.hexdigest()


def library_versions() -> list[str | None]:
    from importlib import metadata

    versions: list[str | None] = []
    for name in LIBRARIES:
        try:
            versions.append(metadata.version(name))
        except metadata.PackageNotFoundError:
            versions.append(None)
    return versions


def help_key(argv: list[str]) -> str:
    """Changes whenever the help could: the command, the width, Python, the libraries, the package's source."""
    width = shutil.get_terminal_size().columns
    described = (argv, width, sys.version, library_versions(), source_digest())
    return hashlib.sha256(repr(described).encode()).hexdigest()[:24]


def help_file(argv: list[str]) -> Path | None:
    folder = help_folder()
    return folder / f"{argv[0]}-{help_key(argv)}.txt" if folder is not None else None


def read_cache_file(path: Path) -> str | None:
    """The text of a cached help, or None when it is missing, not a regular file, too big or not a help text."""
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    info = os.fstat(descriptor)
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_HELP_BYTES:
        os.close(descriptor)
        return None
    with os.fdopen(descriptor, "rb") as handle:
        data = handle.read(MAX_HELP_BYTES + 1)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if len(data) <= MAX_HELP_BYTES and text.startswith("usage:") else None


def cached_help(argv: list[str]) -> str | None:
    path = help_file(argv)
    return read_cache_file(path) if path is not None else None


def store_help(argv: list[str], text: str) -> None:
    """Written whole (a reader never sees half of it); renderings of code no longer installed are removed. A
    cache that cannot be written only costs the next call its speed."""
    from ..files import atomic_write

    path = help_file(argv)
    if path is None:
        return
    with contextlib.suppress(OSError):
        for stale in path.parent.glob(f"{argv[0]}-*.txt"):
            if stale != path:
                stale.unlink()
        with atomic_write(path) as handle:
            handle.write(text)
