"""Writing files so that a kill or a full disk never leaves a target half-written: every write goes to a
temporary file beside its target (same folder, so the same filesystem) and is renamed into place; and reading
a file someone else wrote: a regular file of bounded size, or one line naming it."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO

from .errors import InputError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs):
    """Write ``path`` whole: the target appears complete or not at all (the old one stays until the new one is
    whole); ``with atomic_write(path) as handle: ...``. On any error, the temporary file is removed and the error
    raised."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o666 & ~UMASK)  # mkstemp makes 0600; written files read like any other
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once at import, before any thread could write a file
    os.umask(mask)
    return mask


UMASK = _read_umask()


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return handle_sha256(handle)


def handle_sha256(handle: BinaryIO) -> str:
    """The SHA-256 of what ``handle`` reads from where it stands to its end, read in blocks (Python 3.10, which
    ``requires-python`` allows, has no ``hashlib.file_digest``)."""
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def regular_file(path: Path, limit: int) -> int:
    """The size of ``path`` after checking, without opening it, that it is a regular file of at most ``limit``
    bytes (links are followed to what they name: a link to /dev/zero is a device, refused)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{path} not found") from None
    except OSError as error:
        raise InputError(f"{path} cannot be read ({error.strerror or error})") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{path} is not a regular file")
    if info.st_size > limit:
        raise InputError(f"{path} is {info.st_size:,} bytes, more than the {limit:,} such a file can be")
    return info.st_size


def read_bytes(path: Path, limit: int) -> bytes:
    size = regular_file(path, limit)
    try:
        with open(path, "rb") as handle:
            # A read of n bytes reserves n up front: ask for the size checked (+1 to see growth), not the limit.
            data = handle.read(size + 1)
            if len(data) > size:  # it grew after the check: read on, never more than the limit
                data += handle.read(limit + 1 - len(data))
    except OSError as error:
        raise InputError(f"{path} cannot be read ({error.strerror or error})") from None
    if len(data) > limit:
        raise InputError(f"{path} is more than the {limit:,} bytes such a file can be")
    return data
