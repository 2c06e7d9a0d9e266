"""The repeated-split benchmark: fit, pick the checkpoint on val, test once; repeat over split seeds.

    clip-agiqa benchmark --config experiments/agiqa3k_quality.yaml --splits 10 --data.root /data/AGIQA-3K

Every argument it does not know goes to ``clip-agiqa fit`` unchanged. Split ``k`` uses seed
``first_seed + k`` for both the data split and training (or fold ``k`` with ``--vary fold``) and runs in
``OUT/split_<seed>/``. ``OUT/results.csv`` gets one row per finished split and ``OUT/summary.md`` the
mean, std, median, min and max of each metric. Run the same command again after a crash or a kill:
finished splits are skipped and an interrupted one resumes from its ``last.ckpt``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import io
import json
import math
import os
import shlex
import statistics
import time
import warnings
from pathlib import Path

import yaml

from .metrics import logistic_plcc

RESULTS_FILE = "results.csv"
SUMMARY_FILE = "summary.md"
SETTINGS_FILE = "benchmark.json"
FIXED_SPLITS = ("paper", "predefined")  # the same split whatever the seed
METRICS = (("srcc", "SRCC"), ("plcc", "PLCC"), ("krcc", "KRCC"), ("rmse", "RMSE"),
           ("plcc_logistic", "PLCC (4-parameter logistic fit)"))
COLUMNS = ("split", "seed", "fold", "n_test", "best_epoch", "val_srcc", "srcc", "plcc", "krcc", "rmse",
           "plcc_logistic", "seconds", "checkpoint")


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(
        prog="clip-agiqa benchmark",
        description="Repeated-split benchmark: for each split, fit, choose the checkpoint on val, test once. "
                    "Unknown arguments (e.g. --data.root DIR, --trainer.max_epochs N) go to `clip-agiqa fit`.")
    parser.add_argument("--config", action="append", required=True,
                        help="a LightningCLI config (repeat to add more, e.g. experiments/wandb.yaml)")
    parser.add_argument("--splits", type=int, default=10, help="how many splits (default 10)")
    parser.add_argument("--first_seed", "--first-seed", type=int, default=0, help="seed of the first split")
    parser.add_argument("--vary", choices=("seed", "fold"), default="seed",
                        help="seed: split k uses seed first_seed+k; fold: split k is fold k (for split: kfold)")
    parser.add_argument("--out", help="results folder (default: runs/benchmark/<first config's name>)")
    args, fit_args = parser.parse_known_args(argv)
    if args.splits < 1:
        parser.error(f"--splits must be at least 1, got {args.splits}")
    if args.out is None:
        args.out = str(Path("runs") / "benchmark" / Path(args.config[0]).stem)
    return args, fit_args


def planned_data(configs: list[str], fit_args: list[str]) -> dict:
    """The data arguments `clip-agiqa fit` would get from these configs and arguments: parsed by the CLI
    (its --print_config), nothing instantiated."""
    from .cli import main as cli_main

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
        try:
            cli_main(["fit", *[a for c in configs for a in ("--config", c)], *fit_args, "--print_config"])
        except SystemExit as done:
            if done.code not in (0, None):
                raise
    data = yaml.safe_load(printed.getvalue())["data"]
    return data.get("init_args", data)


def check_splits_differ(args, data: dict) -> None:
    """Refuse a benchmark whose runs would all use one and the same split."""
    split = data.get("split")
    if args.vary == "fold":
        if split != "kfold":
            raise SystemExit(f"--vary fold needs the k-fold split (--data.split kfold), but the split is {split!r}: "
                             "every run would use the same split")
        if args.splits > data["folds"]:
            raise SystemExit(f"--splits {args.splits} with --vary fold needs as many folds, but --data.folds is "
                             f"{data['folds']}")
    elif args.splits > 1 and split in FIXED_SPLITS:
        raise SystemExit(f"--splits {args.splits}: split {split!r} does not depend on the seed, so every run would "
                         "repeat the same split. Use --splits 1, a split drawn from the seed (random, prompt, kfold), "
                         "or --data.split kfold with --vary fold")


def _check_settings(out: Path, settings: dict) -> None:
    """Refuse to mix results of a different benchmark into the same folder."""
    path = out / SETTINGS_FILE
    if path.is_file():
        previous = json.loads(path.read_text())
        changed = [k for k in settings if k != "splits" and previous.get(k) != settings[k]]
        if changed:
            raise SystemExit(f"{out} holds a benchmark run with other settings ({', '.join(changed)} differ: "
                             f"{ {k: previous.get(k) for k in changed} }); use another --out or remove {out}")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n")


def read_results(out: Path) -> list[dict]:
    path = out / RESULTS_FILE
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_results(out: Path, rows: list[dict]) -> None:
    partial = out / (RESULTS_FILE + ".partial")
    with open(partial, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: int(r["split"])))
    partial.replace(out / RESULTS_FILE)  # atomic: a kill never leaves half a file


def _fmt(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


def summarise(rows: list[dict]) -> dict[str, dict[str, float]]:
    """mean / std (sample, n-1) / median / min / max of each metric over the splits."""
    summary = {}
    for key, _ in METRICS:
        values = [float(r[key]) for r in rows if r.get(key) not in (None, "", "nan")]
        summary[key] = {
            "mean": statistics.fmean(values) if values else math.nan,
            "std": statistics.stdev(values) if len(values) > 1 else math.nan,
            "median": statistics.median(values) if values else math.nan,
            "min": min(values, default=math.nan),
            "max": max(values, default=math.nan),
        }
    return summary


def write_summary(out: Path, rows: list[dict], command: str, planned: int) -> Path:
    stats = summarise(rows)
    lines = [
        f"# Benchmark: {len(rows)} of {planned} splits",
        "",
        f"Command: `{command}`",
        "",
        "Each split: fit on train, checkpoint chosen on val/srcc, test set evaluated once with that checkpoint.",
        "std is the sample standard deviation (n-1).",
        "",
        "| metric | mean | std | median | min | max |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in METRICS:
        s = stats[key]
        lines.append(f"| {label} | {_fmt(s['mean'])} | {_fmt(s['std'])} | {_fmt(s['median'])} | "
                     f"{_fmt(s['min'])} | {_fmt(s['max'])} |")
    lines += ["", "Per split:", "", "| split | seed | fold | n_test | best epoch | val SRCC | SRCC | PLCC | KRCC | RMSE "
              "| PLCC (logistic) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: int(r["split"])):
        metrics = " | ".join(_fmt(float(r[k])) for k in ("val_srcc", "srcc", "plcc", "krcc", "rmse", "plcc_logistic"))
        lines.append(f"| {r['split']} | {r['seed']} | {r['fold'] or '-'} | {r['n_test']} | {r['best_epoch']} | {metrics} |")
    path = out / SUMMARY_FILE
    path.write_text("\n".join(lines) + "\n")
    return path


def _test_report(trainer):
    from .reporting import TestReport

    reports = [c for c in trainer.callbacks if isinstance(c, TestReport) and c.enabled]
    if not reports:
        raise SystemExit("the benchmark needs the test report (predictions for the logistic PLCC): "
                         "do not pass --report.enabled false")
    return reports[0]


def _best_epoch(path: str) -> str:
    import torch

    try:
        return str(torch.load(path, map_location="cpu", weights_only=True).get("epoch", ""))
    except Exception:  # informative only
        return ""


def split_folder(out: Path, seed: int, fold: int | None) -> Path:
    return out / (f"split_{seed}" if fold is None else f"split_fold{fold}")


def usable_last_checkpoint(checkpoints: Path) -> Path | None:
    """The split's last.ckpt if it loads; one cut short by a kill is set aside and the split starts over."""
    import torch

    last = checkpoints / "last.ckpt"
    if not last.is_file():
        return None
    try:
        torch.load(last, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated or damaged: any reader error
        damaged = last.with_name("last.damaged.ckpt")
        last.replace(damaged)
        print(f"{last} cannot be read ({type(error).__name__}); kept as {damaged.name}, the split starts over",
              flush=True)
        return None
    return last


def run_split(index: int, seed: int, fold: int | None, configs: list[str], fit_args: list[str], out: Path) -> dict:
    """Fit one split (resuming its last.ckpt if any), test its val-best checkpoint once; returns its row."""
    from .cli import main

    root = split_folder(out, seed, fold)
    checkpoints = root / "checkpoints"
    args = ["fit", *[a for c in configs for a in ("--config", c)], *fit_args,
            "--seed_everything", str(seed), "--trainer.default_root_dir", str(root),
            "--checkpoint.dirpath", str(checkpoints)]
    args += ["--data.init_args.seed", str(seed)] if fold is None else ["--data.init_args.fold", str(fold)]
    last = usable_last_checkpoint(checkpoints)
    if last is not None:
        args += ["--ckpt_path", str(last)]
    started = time.time()
    with warnings.catch_warnings():
        # sys.argv stays as it is (DDP relaunches the command from it); LightningCLI would warn about it.
        warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
        cli = main(args)
    trainer = cli.trainer
    callback = trainer.checkpoint_callback
    best = callback.best_model_path or str(checkpoints / "best.ckpt")
    if not Path(best).is_file():
        raise SystemExit(f"split {index}: no best checkpoint in {checkpoints} (was there a validation set?)")
    tested = trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best, verbose=False)[0]
    predictions = _test_report(trainer).predictions
    row = {
        "split": index, "seed": seed, "fold": "" if fold is None else fold, "n_test": len(predictions),
        "best_epoch": _best_epoch(best),
        "val_srcc": float(callback.best_model_score) if callback.best_model_score is not None else math.nan,
        **{k: float(tested[f"test/{k}"]) for k in ("srcc", "plcc", "krcc", "rmse")},
        "plcc_logistic": logistic_plcc([p[2] for p in predictions], [p[1] for p in predictions]),
        "seconds": round(time.time() - started, 1), "checkpoint": os.path.relpath(best, out),
    }
    del cli, trainer
    finish_wandb_run()
    gc.collect()
    return row


def finish_wandb_run() -> None:
    """Close this split's W&B run: otherwise the next split's WandbLogger would log into it."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()


def _is_main_process() -> bool:
    # Under DDP every rank runs this loop (Lightning relaunches the command); only rank 0 writes and prints.
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def main(argv: list[str] | None = None) -> Path:
    args, fit_args = parse_args(argv)
    out = Path(args.out)
    command = "clip-agiqa benchmark " + " ".join(shlex.quote(a) for a in (argv or []))
    if not _is_main_process():
        return _follow(args, fit_args, out)
    if args.splits > 1 or args.vary == "fold":
        check_splits_differ(args, planned_data(args.config, fit_args))
    _check_settings(out, {"configs": args.config, "fit_args": fit_args, "first_seed": args.first_seed,
                          "vary": args.vary, "splits": args.splits})
    rows = {int(r["split"]): r for r in read_results(out)}
    for index in range(args.splits):
        seed = args.first_seed + index
        fold = index if args.vary == "fold" else None
        label = f"[split {index + 1}/{args.splits}] seed {seed}" + (f" fold {fold}" if fold is not None else "")
        if index in rows:
            print(f"{label}: done earlier, skipped (SRCC {float(rows[index]['srcc']):.4f})", flush=True)
            continue
        folder = split_folder(out, seed, fold)
        resuming = usable_last_checkpoint(folder / "checkpoints") is not None
        print(f"{label}: {'resuming the interrupted fit from last.ckpt' if resuming else 'fitting'} in {folder}",
              flush=True)
        row = run_split(index, seed, fold, args.config, fit_args, out)
        rows[index] = {k: row[k] for k in COLUMNS}
        write_results(out, list(rows.values()))
        write_summary(out, [rows[i] for i in sorted(rows) if i < args.splits], command, args.splits)
        print(f"{label}: SRCC {row['srcc']:.4f} PLCC {row['plcc']:.4f} KRCC {row['krcc']:.4f} "
              f"RMSE {row['rmse']:.4f} PLCC(logistic) {row['plcc_logistic']:.4f} "
              f"(best epoch {row['best_epoch']}, {row['seconds']:.0f} s)", flush=True)
    summary = write_summary(out, [rows[i] for i in sorted(rows) if i < args.splits], command, args.splits)
    print(f"wrote {out / RESULTS_FILE} and {summary}", flush=True)
    print(summary.read_text(), flush=True)
    return summary


def _follow(args, fit_args: list[str], out: Path) -> Path:
    """Another DDP rank: run the same splits as rank 0 (it read the same results.csv), write nothing."""
    done = {int(r["split"]) for r in read_results(out)}
    for index in range(args.splits):
        if index not in done:
            fold = index if args.vary == "fold" else None
            run_split(index, args.first_seed + index, fold, args.config, fit_args, out)
    return out / SUMMARY_FILE
