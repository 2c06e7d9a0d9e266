"""The readability check of a data root: first run (every header checked, in threads) vs a second run over the
same files (only stat calls against the record), on generated PNGs, as a MOSFolder sees them.

    .venv/bin/python benchmarks/image_checks.py --images 2000 --side 256
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from clip_agiqa.data import MOSFolder, checks
from clip_agiqa.data.checks import CHECKS_FILE, check_threads


def write_pngs(root: Path, count: int, side: int) -> None:
    rng = np.random.default_rng(0)
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "mos"])
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(root / f"{i:05d}.png")
            writer.writerow([f"{i:05d}.png", f"{rng.uniform(0, 5):.3f}"])


def timed_setup(root: Path) -> float:
    data = MOSFolder(str(root), num_workers=0)
    data.load()  # annotations and split: the same in both runs, not what is measured
    start = time.perf_counter()
    data.check_images()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--side", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_pngs(root, args.images, args.side)
        record = root / ".feature_cache" / CHECKS_FILE
        threads, checks.check_threads = check_threads(), lambda: 1
        serial = timed_setup(root)  # what every run cost before: one thread, nothing recorded
        record.unlink()
        checks.check_threads = lambda: threads
        first = timed_setup(root)
        second = timed_setup(root)
        print(f"image check of {args.images} PNGs ({args.side} px): one thread {serial:.2f} s; {threads} threads "
              f"{first:.2f} s; second run {second:.3f} s ({serial / max(second, 1e-9):.0f}x less than one thread); "
              f"record {record.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
