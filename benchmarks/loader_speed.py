"""Images per second of the training DataLoader alone (decode + random resized crop + flip + normalise),
on a generated folder of 512x512 JPEGs, as a MOSFolder sees it.

    .venv/bin/python benchmarks/loader_speed.py --images 256 --workers 2 --batch-size 32 --size 224
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from clip_agiqa.data import MOSFolder


def write_jpegs(root: Path, count: int, side: int = 512) -> None:
    """Smooth random pictures with texture (so JPEG decoding costs what a real picture costs)."""
    rng = np.random.default_rng(0)
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "mos"])
        for i in range(count):
            base = rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8)
            picture = np.asarray(Image.fromarray(base).resize((side, side), Image.BICUBIC), dtype=np.float64)
            picture += rng.normal(0, 10, size=picture.shape)
            Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8)).save(root / f"{i:05d}.jpg", quality=90)
            writer.writerow([f"{i:05d}.jpg", f"{rng.uniform(0, 5):.3f}"])


def measure(root: Path, workers: int, batch_size: int, size: int, epochs: int) -> float:
    data = MOSFolder(str(root), batch_size=batch_size, num_workers=workers, image_size=size, test_size=0.01,
                     val_size=0.0)
    data.setup("fit")
    loader = data.train_dataloader()
    for _ in loader:  # warm-up epoch: starts the (persistent) workers and the page cache
        pass
    start, seen = time.perf_counter(), 0
    for _ in range(epochs):
        for batch in loader:
            seen += len(batch["image"])
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_jpegs(root, args.images)
        rate = measure(root, args.workers, args.batch_size, args.size, args.epochs)
    print(f"train loader: {rate:.1f} images/s ({args.images} JPEGs 512x512 -> {args.size}, batch {args.batch_size}, "
          f"{args.workers} workers)")


if __name__ == "__main__":
    main()
