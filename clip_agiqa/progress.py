"""Progress of a long stage (building the feature cache, scoring): tqdm's bar on a terminal; where stderr is a
file or a pipe (a job log, ``nohup``), plain lines at a steady pace and one at the end, never a bar that
redraws in place with carriage returns."""

from __future__ import annotations

import sys
import time

LINE_INTERVAL = 30.0  # seconds between two lines in a log


class ProgressLines:
    """The part of tqdm's interface the stages use (``update``, ``close``, a ``with`` block), written as lines:
    ``caching train features: 120/400 img (30%), 4.0 img/s, 30 s``."""

    def __init__(self, total: int, description: str, unit: str, initial: int, stream, interval: float) -> None:
        self.total, self.description, self.unit, self.interval = total, description, unit, interval
        self.count = self.initial = initial
        self.stream = stream
        self.started = self.last = time.monotonic()

    def update(self, done: int = 1) -> None:
        self.count += done
        if time.monotonic() - self.last >= self.interval:
            self._write()

    def _write(self) -> None:
        self.last = time.monotonic()
        elapsed = self.last - self.started
        rate = (self.count - self.initial) / elapsed if elapsed > 0 else 0.0
        share = f" ({100 * self.count / self.total:.0f}%)" if self.total else ""
        self.stream.write(f"{self.description}: {self.count}/{self.total} {self.unit}{share}, "
                          f"{rate:.1f} {self.unit}/s, {elapsed:.0f} s\n")
        self.stream.flush()

    def close(self, finished: bool = True) -> None:
        if finished and self.stream is not None:
            self._write()
        self.stream = None  # closed: nothing more is written

    def __enter__(self) -> ProgressLines:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self.close(finished=kind is None)  # an error's own message says why it stopped


class NoProgress:
    def update(self, done: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> NoProgress:
        return self

    def __exit__(self, *exc_info) -> None:
        pass


def progress(total: int, description: str, unit: str = "img", initial: int = 0, bar: bool = True,
             lines: bool = True, stream=None, interval: float = LINE_INTERVAL):
    """A progress reporter for ``total`` items to ``stream`` (stderr): a tqdm bar on a terminal (when ``bar``),
    lines every ``interval`` seconds and at the end elsewhere (when ``lines``)."""
    stream = stream if stream is not None else sys.stderr
    terminal = hasattr(stream, "isatty") and stream.isatty()
    if terminal and bar:
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=description, unit=unit, leave=False, file=stream)
    if not terminal and lines:
        return ProgressLines(total, description, unit, initial, stream, interval)
    return NoProgress()
