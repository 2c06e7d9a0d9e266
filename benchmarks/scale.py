"""EvalMi-50K at its size on one machine: peak memory and time of each stage at N and 10 N images.

Writes N placeholder images in EvalMi-50K's layout (24 generator folders, ``<generator>/<NNN>.png``, tiny PNGs) with
the annotation files in their real format (the real ``AIGI2025_MOS_yn.xlsx`` and ``prompt_tasks.jsonl`` when a folder
of them is given, cut to the first N / 24 prompts; generated ones otherwise), then runs each stage in its own
process and reports its wall time and peak RSS (``getrusage(RUSAGE_CHILDREN)`` of a fresh wrapper process: the
largest process of the stage, DataLoader workers included):

- ``split``: the reader and the prompt-disjoint split (``EvalMi50K(...).load()``);
- ``cache``: ``clip-agiqa fit`` with ``--data.cache_views 1`` and one step, output to a job log: the train and val
  feature caches built (the log's progress lines are counted);
- ``epoch``: the same fit, cache built, one whole epoch over the cached features;
- ``score``: ``clip-agiqa score`` over every image (streamed to a CSV).

    nice -n 15 .venv/bin/python benchmarks/scale.py --sizes 5040 50400 --annotations DIR
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

GENERATORS = 24
PROMPTS = 2100
MODEL_ARGS = ["--model.backbone", "random:tiny", "--model.n_ctx", "4", "--model.hidden_dim", "16"]
TRAINER_ARGS = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.max_epochs", "1",
                "--trainer.logger", "false"]
GOAL = 1.3  # peak RSS at the largest size within this factor of the smallest
MEASURE = ("import resource, subprocess, sys, time; start = time.monotonic(); "
           "code = subprocess.run(sys.argv[1:]).returncode; "
           "print('MEASURED', code, time.monotonic() - start, "
           "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)")


# --- the data ---------------------------------------------------------------------------------------------------
def placeholder_pngs(count: int = 64) -> list[bytes]:
    """A few distinct 16 x 16 PNGs: every image file is one of them (decoding costs little, names are real)."""
    import numpy as np
    from PIL import Image

    blobs = []
    for seed in range(count):
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buffer, "PNG")
        blobs.append(buffer.getvalue())
    return blobs


def annotation_rows(annotations: Path | None, prompts: int) -> tuple[list[str], list[tuple], list[str]]:
    """(header, rows, prompt_tasks lines) for the first ``prompts`` prompts: the real files' rows where given,
    generated rows of the same format otherwise (generators ``gen00``..``gen23``)."""
    if annotations is not None:
        from openpyxl import load_workbook

        lines = (annotations / "prompt_tasks.jsonl").read_text().splitlines()[:prompts]
        book = load_workbook(annotations / "AIGI2025_MOS_yn.xlsx", read_only=True)
        sheet_rows = book.active.iter_rows(values_only=True)
        header = list(next(sheet_rows))
        rows = [row for row in sheet_rows if row[0] and int(str(row[0]).split("/")[1][:-4]) <= prompts]
        book.close()
        return header, rows, lines
    rng = random.Random(0)
    tags = ["counting", "OCR", "position", "color", "single_class", "counting + color"]
    lines = [json.dumps({"tag": tags[p % len(tags)], "include": [], "prompt": f"prompt number {p + 1}"})
             for p in range(prompts)]
    rows = [(f"gen{g:02d}/{p + 1:03d}.png", round(rng.uniform(0, 100), 2), round(rng.uniform(0, 100), 2),
             rng.randint(0, 1), None, None, None, None) for g in range(GENERATORS) for p in range(prompts)]
    return ["ImageName", "MOS1", "MOS2", "Y/N", "YN_1", "YN_2", "YN_3", "YN_4"], rows, lines


def write_root(root: Path, images: int, annotations: Path | None) -> Path:
    """An EvalMi-50K root of ``images`` placeholder images (24 per prompt) and its two annotation files."""
    if (root / "done").exists():
        return root
    from openpyxl import Workbook

    header, rows, lines = annotation_rows(annotations, images // GENERATORS)
    root.mkdir(parents=True, exist_ok=True)
    (root / "prompt_tasks.jsonl").write_text("\n".join(lines) + "\n")
    book = Workbook(write_only=True)
    sheet = book.create_sheet()
    sheet.append(header)
    for row in rows:
        sheet.append(list(row))
    book.save(root / "AIGI2025_MOS_yn.xlsx")
    blobs = placeholder_pngs()
    for number, row in enumerate(rows):
        path = root / str(row[0])
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(blobs[number % len(blobs)])
    (root / "done").write_text(str(len(rows)))
    return root


# --- the stages -------------------------------------------------------------------------------------------------
def measured(command: list[str], log: Path) -> dict:
    """Run ``command`` under a fresh wrapper process: its exit code, wall seconds and peak RSS (MB); output to
    ``log``."""
    with open(log, "w") as handle:
        done = subprocess.run([sys.executable, "-c", MEASURE, *command], stdout=handle, stderr=subprocess.STDOUT,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"})
    last = [line for line in log.read_text().splitlines() if line.startswith("MEASURED ")][-1].split()
    if done.returncode or last[1] != "0":
        raise SystemExit(f"{' '.join(command[:4])} ... failed: see {log}")
    return {"seconds": round(float(last[2]), 1), "peak_rss_mb": round(int(last[3]) / 1024, 1)}


SPLIT = ("import sys, time; from clip_agiqa.data import EvalMi50K; start = time.monotonic(); "
         "data = EvalMi50K(sys.argv[1], split='prompt'); data.load(); "
         "print('records', len(data.records), 'train', len(data.split_records('train')), "
         "'seconds', round(time.monotonic() - start, 2))")


def fit_command(root: Path, run: Path, *extra: str) -> list[str]:
    return [str(Path(sys.executable).with_name("clip-agiqa")), "fit", "--data", "EvalMi50K", "--data.root", str(root),
            "--data.split", "prompt", "--data.cache_views", "1", "--data.batch_size", "64",
            "--data.eval_batch_size", "256", "--data.num_workers", "0", *MODEL_ARGS, *TRAINER_ARGS,
            "--trainer.default_root_dir", str(run), *extra]


def run_size(images: int, work: Path, annotations: Path | None) -> dict:
    root = write_root(work / f"evalmi50k_{images}", images, annotations)
    shutil.rmtree(root / ".feature_cache", ignore_errors=True)  # the cache stage builds it from nothing
    logs = work / f"logs_{images}"
    logs.mkdir(exist_ok=True)
    model = work / "model"
    if not (model / "config.json").exists():
        subprocess.run([sys.executable, "-c", "import sys; from clip_agiqa import CLIPAGIQAModel; "
                        "CLIPAGIQAModel('random:tiny', n_ctx=4, hidden_dim=16).save_pretrained(sys.argv[1])",
                        str(model)], check=True)
    figures = {"images": images}
    figures["split"] = measured([sys.executable, "-c", SPLIT, str(root)], logs / "split.log")
    figures["cache"] = measured(fit_command(root, work / f"run_cache_{images}", "--trainer.limit_train_batches", "1",
                                            "--trainer.limit_val_batches", "1"), logs / "cache.log")
    figures["cache"]["progress_lines"] = sum(line.startswith("caching ") for line in
                                             (logs / "cache.log").read_text().splitlines())
    figures["epoch"] = measured(fit_command(root, work / f"run_epoch_{images}", "--trainer.limit_val_batches", "0"),
                                logs / "epoch.log")
    scores = work / f"scores_{images}.csv"
    figures["score"] = measured([str(Path(sys.executable).with_name("clip-agiqa")), "score", str(model), str(root),
                                 "--output", str(scores), "--batch_size", "256", "--num_workers", "0"],
                                logs / "score.log")
    figures["score"]["rows"] = sum(1 for _ in open(scores)) - 1
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5040, 50400])
    parser.add_argument("--annotations", type=Path, help="the folder of the real AIGI2025_MOS_yn.xlsx and "
                        "prompt_tasks.jsonl (default: generated files of that format)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/clip-agiqa-scale"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for images in args.sizes:
        started = time.monotonic()
        rows.append(run_size(images, args.work, args.annotations))
        print(json.dumps(rows[-1]), f"({time.monotonic() - started:.0f} s)", flush=True)
    if len(rows) > 1:
        for stage in ("split", "cache", "epoch", "score"):
            ratio = rows[-1][stage]["peak_rss_mb"] / rows[0][stage]["peak_rss_mb"]
            print(f"{stage}: peak RSS {rows[-1]['images']} / {rows[0]['images']} = {ratio:.2f}x "
                  f"({'within' if ratio <= GOAL else 'above'} {GOAL}x)", flush=True)


if __name__ == "__main__":
    main()
