"""Scoring benchmark rows, printed alone or by ``benchmarks/bench.py``.

- peak RSS of ``clip-agiqa score`` on 2,000 vs 200 generated images (goal <= 1.2x: memory does not grow with the
  number of images), each run in a fresh process that reports its own peak and its DataLoader workers';
- ``clip-agiqa score`` throughput with its workers (decode + resize + normalise in workers, batches streamed to
  the device, rows written as they come) vs the bare image encoder on pre-decoded tensors (goal >= 0.9x).

    .venv/bin/python benchmarks/bench_scoring.py                       # CPU, random:tiny for RSS, ViT-B/16 size
    .venv/bin/python benchmarks/bench_scoring.py --device cuda --throughput-images 3000 --batch-size 256
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (DataLoader workers): steadier than wall time on a
    shared machine."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


GOALS = {"score_peak_rss_2000_vs_200": ("<=", 1.2), "score_vs_bare_encoder_throughput": (">=", 0.9)}


def generate_images(folder: Path, count: int, size: int, seed: int = 0) -> Path:
    """``count`` JPEGs of ``size`` px (smooth colour fields with noise, so decoding costs what photos cost)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    for i in range(count):
        path = folder / f"img_{i:05d}.jpg"
        if path.exists():
            continue
        colour = rng.uniform(0, 255, 3).astype(np.float32)
        field = colour * ramp[:, None, None] + (255 - colour) * ramp[None, :, None]
        pixels = np.clip(field + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(path, quality=90)
    return folder


def save_model(folder: Path, backbone: str) -> Path:
    from clip_agiqa import CLIPAGIQAModel

    if not (folder / "config.json").exists():
        CLIPAGIQAModel(backbone).save_pretrained(folder)
    return folder


# --- fresh processes --------------------------------------------------------------------------------------
def child_score(args) -> dict:
    """``clip-agiqa score`` as a user runs it; the time of the scoring loop (workers' start included), after one
    warm-up batch as the bare encoder gets, without start-up and model load."""
    import torch

    from clip_agiqa import scoring

    timed = {}
    original = scoring.QualityScorer.write_csv

    def write_csv(self, *positional, **named):
        size = self.transform.settings.size
        self._score_pixels(torch.zeros(self.batch_size, 3, size, size), None).cpu()  # warm-up, as the bare run
        start, cpu = time.perf_counter(), cpu_seconds()
        result = original(self, *positional, **named)
        timed["seconds"], timed["cpu_seconds"] = time.perf_counter() - start, cpu_seconds() - cpu
        return result

    scoring.QualityScorer.write_csv = write_csv
    output = Path(tempfile.mkdtemp(prefix="bench-score-")) / "scores.csv"
    scoring.main([str(args.model), str(args.images), "--output", str(output), "--device", args.device,
                  "--batch_size", str(args.batch_size), "--precision", args.precision,
                  *(["--num_workers", str(args.num_workers)] if args.num_workers is not None else [])])
    rows = sum(1 for _ in open(output)) - 1
    return {"images": rows, "seconds": timed["seconds"], "images_per_s": rows / timed["seconds"],
            "cpu_ms_per_image": 1000 * timed["cpu_seconds"] / rows,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "workers_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def child_bare(args) -> dict:
    """The bare image encoder on tensors decoded and transformed before the timer: the ceiling for scoring."""
    import torch

    from clip_agiqa import CLIPAGIQAModel
    from clip_agiqa.data.images import load_rgb
    from clip_agiqa.data.transforms import ImageTransform

    model = CLIPAGIQAModel.from_pretrained(str(args.model)).eval().to(args.device)
    transform = ImageTransform(model.image_settings, train=False)
    paths = sorted(args.images.iterdir())
    pixels = torch.stack([transform(load_rgb(p)) for p in paths])
    dtype = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}[args.precision]
    device = torch.device(args.device)

    def encode(batch):
        with torch.autocast(device.type, dtype=dtype) if dtype else torch.no_grad():
            return model.encode_images(batch.to(device)).float().cpu()

    encode(pixels[: args.batch_size])  # warm-up
    start, cpu = time.perf_counter(), cpu_seconds()
    for first in range(0, len(pixels), args.batch_size):
        encode(pixels[first: first + args.batch_size])
    seconds = time.perf_counter() - start
    return {"images": len(pixels), "seconds": seconds, "images_per_s": len(pixels) / seconds,
            "cpu_ms_per_image": 1000 * (cpu_seconds() - cpu) / len(pixels),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


CHILDREN = {"score": child_score, "bare": child_bare}


def run_child(kind: str, model: Path, images: Path, device: str, batch_size: int, precision: str,
              num_workers: int | None) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--model", str(model),
               "--images", str(images), "--device", device, "--batch-size", str(batch_size), "--precision", precision,
               *(["--num-workers", str(num_workers)] if num_workers is not None else [])]
    result = subprocess.run(command, capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"})
    if result.returncode != 0:
        raise RuntimeError(f"bench_scoring {kind} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- the rows ----------------------------------------------------------------------------------------------
def figure(name: str, value: float, detail: str) -> dict:
    comparison, goal = GOALS[name]
    met = value >= goal if comparison == ">=" else value <= goal
    return {"figure": name, "value": value, "goal": f"{comparison} {goal:g}", "met": met, "detail": detail}


def scoring_rows(workdir: Path, device: str = "cpu", precision: str = "32", batch_size: int = 32,
                 num_workers: int | None = None, rss_backbone: str = "random:tiny",
                 throughput_backbone: str = "random:vit-b-16", counts: tuple[int, int] = (200, 2000),
                 picture_size: int = 256, throughput_images: int = 64, repeats: int = 2) -> list[dict]:
    """Measure, print and return the scoring rows (the dicts ``bench.py``'s table holds)."""
    workdir = Path(workdir)
    few, many = counts
    print(f"scoring: generating {many} images of {picture_size} px ...", flush=True)
    pool = generate_images(workdir / "score_images" / "pool", many, picture_size)
    folders = {}
    for count in counts:  # links into one pool of images: the same pictures, only their number differs
        folder = workdir / "score_images" / str(count)
        folder.mkdir(parents=True, exist_ok=True)
        for path in sorted(pool.iterdir())[:count]:
            if not (folder / path.name).exists():
                (folder / path.name).symlink_to(path)
        folders[count] = folder
    small = save_model(workdir / "score_model_rss", rss_backbone)
    rss = {}
    for count in counts:
        print(f"scoring: peak RSS, {count} images ({rss_backbone}, fresh process) ...", flush=True)
        rss[count] = run_child("score", small, folders[count], device, batch_size, precision, num_workers)
    through = workdir / "score_images" / f"throughput_{throughput_images}"
    through.mkdir(parents=True, exist_ok=True)
    for path in sorted(pool.iterdir())[:throughput_images]:
        if not (through / path.name).exists():
            (through / path.name).symlink_to(path)
    big = save_model(workdir / "score_model_throughput", throughput_backbone)
    runs = {"score": [], "bare": []}
    for repeat in range(repeats):  # alternated; the fastest of each (load elsewhere only slows a run down)
        for kind in runs:
            print(f"scoring: {kind} throughput ({throughput_backbone}, {repeat + 1}/{repeats}) ...", flush=True)
            runs[kind].append(run_child(kind, big, through, device, batch_size, precision, num_workers))
    score = max(runs["score"], key=lambda r: r["images_per_s"])
    bare = max(runs["bare"], key=lambda r: r["images_per_s"])
    rows = [
        figure("score_peak_rss_2000_vs_200", rss[many]["peak_rss_mb"] / rss[few]["peak_rss_mb"],
               f"clip-agiqa score {many} images {rss[many]['peak_rss_mb']:.0f} MB, {few} images "
               f"{rss[few]['peak_rss_mb']:.0f} MB (main process; largest worker {rss[many]['workers_peak_rss_mb']:.0f}"
               f" vs {rss[few]['workers_peak_rss_mb']:.0f} MB); {rss[many]['images_per_s']:.0f} img/s at {many}"),
        figure("score_vs_bare_encoder_throughput", score["images_per_s"] / bare["images_per_s"],
               f"clip-agiqa score {score['images_per_s']:.2f} img/s (files, workers, CSV), bare image encoder "
               f"{bare['images_per_s']:.2f} img/s on pre-decoded tensors; {throughput_images} images of "
               f"{picture_size} px; CPU time per image {score['cpu_ms_per_image']:.0f} ms (workers included) vs "
               f"{bare['cpu_ms_per_image']:.0f} ms"),
    ]
    print_rows(rows)
    return rows


def rows_for_bench(args, workdir: Path) -> list[dict]:
    """The rows with ``bench.py``'s settings (its parsed arguments), for its table."""
    device = f"cuda:{args.device}" if args.accelerator == "gpu" else "cpu"
    precision = {"32-true": "32", "bf16-mixed": "bf16", "16-mixed": "16"}[args.precision]
    return scoring_rows(workdir, device, precision, args.batch_size, throughput_backbone=args.backbone,
                        picture_size=args.picture_size, throughput_images=args.throughput_images)


def print_rows(rows: list[dict]) -> None:
    for row in rows:
        print(f"| {row['figure']:36} | {row['value']:8.2f} | {row['goal']:>7} | {'yes' if row['met'] else 'NO ':3} "
              f"| {row['detail']}", flush=True)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="32", choices=["32", "bf16", "16"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=None, help="default: clip-agiqa score's own")
    parser.add_argument("--rss-backbone", default="random:tiny")
    parser.add_argument("--throughput-backbone", default="random:vit-b-16")
    parser.add_argument("--picture-size", type=int, default=256)
    parser.add_argument("--throughput-images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--images", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child](args)))
        return []
    with tempfile.TemporaryDirectory(prefix="clip-agiqa-bench-scoring-") as scratch:
        return scoring_rows(args.workdir or Path(scratch), args.device, args.precision, args.batch_size,
                            args.num_workers, args.rss_backbone, args.throughput_backbone,
                            picture_size=args.picture_size, throughput_images=args.throughput_images,
                            repeats=args.repeats)


if __name__ == "__main__":
    main()
