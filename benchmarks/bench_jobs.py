"""Wall time of `clip-agiqa benchmark --jobs 1` against `--jobs N` on a generated dataset (random tiny CLIP), and
the largest difference between their per-split metrics (they must agree: each split is the same runs).

    .venv/bin/python benchmarks/bench_jobs.py --splits 4 --jobs 2 --images 200 --epochs 3
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clip_agiqa.data import write_synthetic_dataset

REPO = Path(__file__).resolve().parents[1]
METRICS = ("srcc", "plcc", "krcc", "rmse", "plcc_logistic")


def run(data: Path, out: Path, splits: int, jobs: int, epochs: int) -> float:
    command = [sys.executable, "-m", "clip_agiqa", "benchmark", "--config", str(REPO / "experiments" / "demo.yaml"),
               "--splits", str(splits), "--jobs", str(jobs), "--out", str(out), "--model.backbone", "random:tiny",
               "--model.n_ctx", "4", "--model.hidden_dim", "16", "--data", "MOSFolder", "--data.root", str(data),
               "--data.num_workers", "0", "--trainer.max_epochs", str(epochs), "--trainer.logger", "false",
               "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu"]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def rows(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        write_synthetic_dataset(folder / "data", num_images=args.images, picture_size=64, seed=0)
        one = run(folder / "data", folder / "one", args.splits, 1, args.epochs)
        many = run(folder / "data", folder / "many", args.splits, args.jobs, args.epochs)
        difference = max(abs(float(a[k]) - float(b[k])) for a, b in zip(rows(folder / "one"), rows(folder / "many"))
                         for k in METRICS)
    print(f"{args.splits} splits of {args.images} images, {args.epochs} epochs: --jobs 1 {one:.1f} s, "
          f"--jobs {args.jobs} {many:.1f} s ({one / many:.2f}x); largest per-split metric difference {difference:.2e}")


if __name__ == "__main__":
    main()
