"""Writing files so that a kill or a full disk never leaves a target half-written: every write goes to a
temporary file beside its target (same folder, so the same filesystem) and is renamed into place."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs):
    """``with atomic_write(path) as handle: ...``: the target appears complete or not at all (the old one stays
    until the new one is whole). On any error, the temporary file is removed and the error raised."""
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
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
