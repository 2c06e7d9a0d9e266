"""The repeated-split benchmark: fit, pick the checkpoint on val, test once; repeat over splits.

    clip-agiqa benchmark --config experiments/data/agiqa3k_quality.yaml --config experiments/model/clip_agiqa.yaml \
        --config experiments/protocol/prompt_disjoint.yaml --data.root /data/AGIQA-3K --splits 10

Every argument it does not know goes to ``clip-agiqa fit`` unchanged. Split ``k`` uses seed
``first_seed + k`` for both the data split and training (or fold ``k`` with ``--vary fold``) and runs in
``OUT/split_<seed>/``. ``--splits_from PATH ...`` runs one split per given split file or folder instead
(``OUT/split_file<k>/``; a folder of split folders, such as IPCE's ``Database/AGIQA-3K/``, gives each of
them): train and test come from the file, val is drawn from train (see ``clip_agiqa.data.splits``).
``--test_on CONFIG[:ROOT]`` (repeatable) also tests each split's val-chosen checkpoint on every image of
another dataset: a data config part, with ROOT as its ``data.root`` when the config sets none.

``OUT/results.csv`` gets one row per finished split and tested dataset, ``OUT/summary.md`` the mean, std,
median, min and max of each metric (per target too, for a model with several) and, with ``--test_on``, the
cross-dataset matrix. Run the same command again after a crash or a kill: finished splits are skipped and
an interrupted one resumes from its ``last.ckpt``. ``clip-agiqa compare`` puts several OUT folders side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import importlib
import io
import json
import math
import os
import re
import shlex
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import yaml

from .metrics import logistic_plcc

RESULTS_FILE = "results.csv"
SUMMARY_FILE = "summary.md"
SETTINGS_FILE = "benchmark.json"
FIXED_SPLITS = ("paper", "predefined")  # the same split whatever the seed
METRICS = (("srcc", "SRCC"), ("plcc", "PLCC"), ("krcc", "KRCC"), ("rmse", "RMSE"),
           ("plcc_logistic", "PLCC (4-parameter logistic fit)"))
LOGGED = ("srcc", "plcc", "krcc", "rmse")  # what the task logs at test; the logistic PLCC is computed here
HEAD_COLUMNS = ("split", "seed", "fold", "splits_file", "tested_on", "images", "n_test", "best_epoch", "val_srcc")
TAIL_COLUMNS = ("seconds", "checkpoint")
OWN_TEST, ALL_IMAGES = "test split", "all"  # the `images` column: the split's own test set, or another dataset
DERIVED_SETTINGS = ("splits", "protocol")  # written for `compare`, not part of what must match on a rerun
CROSS_NOTE = ("Cross-dataset: each split's checkpoint chosen on val, tested on its own test split and on every "
              "image of each other dataset. MOS scales differ between datasets: SRCC needs no mapping; PLCC is "
              "given after the 4-parameter logistic fit of the predictions to that dataset's MOS.")


@dataclass(frozen=True)
class Split:
    """One run of the benchmark: its number, seed (data split and training), fold or split file."""

    index: int
    seed: int
    fold: int | None = None
    splits_file: str | None = None

    @property
    def folder_name(self) -> str:
        if self.splits_file is not None:
            return f"split_file{self.index}"
        return f"split_{self.seed}" if self.fold is None else f"split_fold{self.fold}"

    def label(self, total: int) -> str:
        where = (f" fold {self.fold}" if self.fold is not None else "") + (
            f" from {self.splits_file}" if self.splits_file is not None else "")
        return f"[split {self.index + 1}/{total}] seed {self.seed}{where}"

    def data_args(self, configured_split: str | None) -> list[str]:
        """The fit arguments that select this split (the split file under ``split: prompt`` keeps drawing val by
        prompt; any other protocol reads it as ``predefined``)."""
        if self.splits_file is not None:
            keep = [] if configured_split == "prompt" else ["--data.init_args.split", "predefined"]
            return [*keep, "--data.init_args.splits_file", self.splits_file, "--data.init_args.seed", str(self.seed)]
        if self.fold is not None:
            return ["--data.init_args.fold", str(self.fold)]
        return ["--data.init_args.seed", str(self.seed)]


@dataclass(frozen=True)
class TestSet:
    """Another dataset to test every split's checkpoint on: a data config part and its root."""

    config: str
    root: str | None

    @property
    def label(self) -> str:
        return Path(self.config).stem

    def datamodule(self):
        """The config's datamodule (its ``data`` section; ``root`` from the command line when given)."""
        path = Path(self.config)
        if not path.is_file():
            raise SystemExit(f"--test_on {self.config}: no such config file")
        data = (yaml.safe_load(path.read_text()) or {}).get("data") or {}
        if "class_path" not in data:
            raise SystemExit(f"--test_on {self.config}: the config names no data class (data.class_path): give a data "
                             f"part such as experiments/data/aigciqa2023_quality.yaml")
        init_args = {**(data.get("init_args") or {}), **({"root": self.root} if self.root else {})}
        if "root" not in init_args:
            raise SystemExit(f"--test_on {self.config}: the config sets no data.root; give it as "
                             f"--test_on {self.config}:ROOT")
        module, name = data["class_path"].rsplit(".", 1)
        return getattr(importlib.import_module(module), name)(**init_args)


def test_set(argument: str) -> TestSet:
    """``CONFIG`` or ``CONFIG:ROOT`` (the config ends in .yaml or .yml)."""
    match = re.fullmatch(r"(.+?\.ya?ml)(?::(.+))?", argument)
    if match is None:
        raise argparse.ArgumentTypeError(f"{argument!r} is not CONFIG.yaml or CONFIG.yaml:ROOT")
    return TestSet(match.group(1), match.group(2))


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(
        prog="clip-agiqa benchmark",
        description="Repeated-split benchmark: for each split, fit, choose the checkpoint on val, test once. "
                    "Unknown arguments (e.g. --data.root DIR, --trainer.max_epochs N) go to `clip-agiqa fit`.")
    parser.add_argument("--config", action="append", required=True,
                        help="a LightningCLI config (repeat to add more, e.g. experiments/wandb.yaml)")
    parser.add_argument("--splits", type=int, help="how many seeded splits (default 10)")
    parser.add_argument("--first_seed", "--first-seed", type=int, default=0, help="seed of the first split")
    parser.add_argument("--vary", choices=("seed", "fold"), default="seed",
                        help="seed: split k uses seed first_seed+k; fold: split k is fold k (for split: kfold)")
    parser.add_argument("--splits_from", "--splits-from", nargs="+", metavar="PATH",
                        help="one split per split file (file_name,split) or split folder (train.csv + test.csv or "
                             "val.csv); a folder of split folders gives each of them")
    parser.add_argument("--test_on", "--test-on", action="append", type=test_set, default=[],
                        metavar="CONFIG[:ROOT]", help="also test each split's checkpoint on every image of this "
                                                      "dataset (a data config part; repeatable)")
    parser.add_argument("--out", help="results folder (default: runs/benchmark/<first config's name>)")
    args, fit_args = parser.parse_known_args(argv)
    if args.splits_from and (args.splits is not None or args.vary == "fold"):
        parser.error("--splits_from runs one split per path: leave out --splits and --vary")
    if args.splits is None:
        args.splits = 10
    if args.splits < 1:
        parser.error(f"--splits must be at least 1, got {args.splits}")
    if args.splits_from:
        args.splits_from = split_sources(args.splits_from)
        args.splits = len(args.splits_from)
    if args.out is None:
        args.out = str(Path("runs") / "benchmark" / Path(args.config[0]).stem)
    return args, fit_args


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def split_sources(paths: list[str]) -> list[str]:
    """Each split file or split folder given, as an absolute path; a folder of split folders (IPCE's
    ``Database/<benchmark>/``) gives each of them, in numeric order."""
    sources = []
    for given in paths:
        path = Path(given).expanduser()
        if not path.exists():
            raise SystemExit(f"--splits_from {given}: not found")
        if path.is_dir() and not (path / "train.csv").is_file():
            folders = sorted((p for p in path.iterdir() if (p / "train.csv").is_file()), key=_natural_key)
            if not folders:
                raise SystemExit(f"--splits_from {given}: neither a split folder (train.csv + test.csv or val.csv) "
                                 f"nor a folder of split folders")
            sources += folders
        else:
            sources.append(path)
    return [str(p.resolve()) for p in sources]


def planned_splits(args) -> list[Split]:
    if args.splits_from:
        return [Split(k, args.first_seed + k, splits_file=path) for k, path in enumerate(args.splits_from)]
    return [Split(k, args.first_seed + k, k if args.vary == "fold" else None) for k in range(args.splits)]


def planned_data(configs: list[str], fit_args: list[str]) -> dict:
    """The data section (``class_path``, ``init_args``) `clip-agiqa fit` would get from these configs and
    arguments: parsed by the CLI (its --print_config), nothing instantiated."""
    from .cli import main as cli_main

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
        try:
            cli_main(["fit", *[a for c in configs for a in ("--config", c)], *fit_args, "--print_config"])
        except SystemExit as done:
            if done.code not in (0, None):
                raise
    return yaml.safe_load(printed.getvalue())["data"]


def check_splits_differ(args, data: dict) -> None:
    """Refuse a benchmark whose runs would all use one and the same split."""
    split = data.get("split")
    if args.splits_from:
        return  # one file each
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
                         "--data.split kfold with --vary fold, or one split file each with --splits_from")


def check_test_sets(test_sets: list[TestSet], data: dict) -> None:
    """Every --test_on dataset builds and has as many targets as the trained model predicts (before any fit)."""
    module, name = data["class_path"].rsplit(".", 1)
    trained = getattr(importlib.import_module(module), name)(**data["init_args"]).targets
    for test in test_sets:
        targets = test.datamodule().targets
        if len(targets) != len(trained):
            raise SystemExit(f"--test_on {test.config}: its data has {len(targets)} target(s) ({', '.join(targets)}) "
                             f"but the model learns {len(trained)} ({', '.join(trained)}): test on data with as many")


def protocol(args, data: dict) -> dict:
    """What `compare` shows of this benchmark: the split kind and where the checkpoint is chosen."""
    split = data["init_args"].get("split")
    kind = f"{split} ({len(args.splits_from)} split files)" if args.splits_from else split
    return {"data": Path(args.config[0]).stem, "split": kind, "selection": "test" if split == "paper" else "val"}


def _check_settings(out: Path, settings: dict) -> None:
    """Refuse to mix results of a different benchmark into the same folder."""
    path = out / SETTINGS_FILE
    if path.is_file():
        previous = json.loads(path.read_text())
        changed = [k for k in settings if k not in DERIVED_SETTINGS and previous.get(k) != settings[k]]
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


def is_cross(row: dict) -> bool:
    """A row of another dataset's images (not the split's own test set)."""
    return row.get("images") == ALL_IMAGES


def metric_keys(rows: list[dict]) -> list[str]:
    """The overall metrics, then each target's (``<target>/srcc`` ...) in the order the rows have them."""
    per_target = [k for row in rows for k in row if "/" in k and k.rsplit("/", 1)[1] in dict(METRICS)]
    return [key for key, _ in METRICS] + list(dict.fromkeys(per_target))


def metric_label(key: str) -> str:
    target, _, metric = key.rpartition("/")
    return f"{target} {dict(METRICS)[metric]}" if target else dict(METRICS)[metric]


def _row_order(row: dict) -> tuple:
    return int(row["split"]), is_cross(row), row.get("tested_on", "")


def write_results(out: Path, rows: list[dict]) -> None:
    columns = [*HEAD_COLUMNS, *metric_keys(rows), *TAIL_COLUMNS]
    partial = out / (RESULTS_FILE + ".partial")
    with open(partial, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(sorted(rows, key=_row_order))
    partial.replace(out / RESULTS_FILE)  # atomic: a kill never leaves half a file


def _fmt(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


def _value(row: dict, key: str) -> float:
    value = row.get(key)
    return math.nan if value in (None, "") else float(value)


def summarise(rows: list[dict], keys: list[str] | None = None) -> dict[str, dict[str, float]]:
    """mean / std (sample, n-1) / median / min / max of each metric over the splits."""
    summary = {}
    for key in keys or [k for k, _ in METRICS]:
        values = [v for v in (_value(r, key) for r in rows) if not math.isnan(v)]
        summary[key] = {
            "mean": statistics.fmean(values) if values else math.nan,
            "std": statistics.stdev(values) if len(values) > 1 else math.nan,
            "median": statistics.median(values) if values else math.nan,
            "min": min(values, default=math.nan),
            "max": max(values, default=math.nan),
        }
    return summary


def mean_std(rows: list[dict], key: str) -> str:
    """``mean ± std`` of a metric over rows (std only with two or more)."""
    stats = summarise(rows, [key])[key]
    return _fmt(stats["mean"]) + ("" if math.isnan(stats["std"]) else f" ± {_fmt(stats['std'])}")


def cross_matrix(trained: list[tuple[str, list[dict]]]) -> list[str]:
    """Markdown: trained on (rows) x tested on (columns), SRCC and logistic PLCC mean ± std over the splits, from
    (training data, result rows) pairs; each row's own column is its test split."""
    columns = list(dict.fromkeys(r["tested_on"] for _, rows in trained for r in rows))
    lines = []
    for key in ("srcc", "plcc_logistic"):
        lines += ["", f"{metric_label(key)}, mean ± std over the splits:", "",
                  "| trained on \\ tested on | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for name, rows in trained:
            cells = []
            for column in columns:
                tested = [r for r in rows if r["tested_on"] == column]
                cells.append(mean_std(tested, key) + (" (test split)" if tested and not is_cross(tested[0]) else "")
                             if tested else "")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def write_summary(out: Path, rows: list[dict], command: str, planned: int, about: dict | None = None) -> Path:
    own = [r for r in rows if not is_cross(r)]
    keys = metric_keys(own)
    stats = summarise(own, keys)
    about = about or {}
    lines = [
        f"# Benchmark: {len(own)} of {planned} splits",
        "",
        f"Command: `{command}`",
        "",
        f"Split: {about.get('split', '?')}. Each split: fit on train, checkpoint chosen on val/srcc"
        + (" (the paper split has no val: the test set picks it, so these figures are optimistic)"
           if about.get("selection") == "test" else "") + ", test set evaluated once with that checkpoint.",
        "std is the sample standard deviation (n-1)."
        + (" For several targets, the overall figures are the mean over targets." if len(keys) > len(METRICS) else ""),
        "",
        "| metric | mean | std | median | min | max |",
        "|---|---|---|---|---|---|",
    ]
    for key in keys:
        s = stats[key]
        lines.append(f"| {metric_label(key)} | {_fmt(s['mean'])} | {_fmt(s['std'])} | {_fmt(s['median'])} | "
                     f"{_fmt(s['min'])} | {_fmt(s['max'])} |")
    split_columns = ["val_srcc", *[k for k, _ in METRICS], *[k for k in keys[len(METRICS):]
                                                             if k.endswith(("/srcc", "/plcc_logistic"))]]
    labels = ["val SRCC", "SRCC", "PLCC", "KRCC", "RMSE", "PLCC (logistic)", *map(metric_label, split_columns[6:])]
    lines += ["", "Per split:", "", "| split | seed | fold | split file | n_test | best epoch | " + " | ".join(labels)
              + " |", "|---" * (6 + len(labels)) + "|"]
    for r in sorted(own, key=_row_order):
        metrics = " | ".join(_fmt(_value(r, k)) for k in split_columns)
        source = Path(r["splits_file"]).name if r.get("splits_file") else "-"
        lines.append(f"| {r['split']} | {r['seed']} | {r['fold'] or '-'} | {source} | {r['n_test']} | "
                     f"{r['best_epoch']} | {metrics} |")
    if any(is_cross(r) for r in rows):
        lines += ["", "## Cross-dataset", "", CROSS_NOTE, *cross_matrix([(about.get("data", "this data"), rows)])]
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


def usable_last_checkpoint(checkpoints: Path) -> Path | None:
    """The split's last.ckpt if it loads. One cut short by a kill sets the whole checkpoints/ folder aside (fit
    refuses a folder holding other checkpoints) and the split starts over."""
    import torch

    last = checkpoints / "last.ckpt"
    if not last.is_file():
        return None
    try:
        torch.load(last, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated or damaged: any reader error
        damaged = checkpoints.with_name(f"{checkpoints.name}.damaged")
        number = 1
        while damaged.exists():
            number += 1
            damaged = checkpoints.with_name(f"{checkpoints.name}.damaged{number}")
        checkpoints.replace(damaged)
        print(f"{last} cannot be read ({type(error).__name__}); {checkpoints.name}/ kept as {damaged.name}/, "
              f"the split starts over", flush=True)
        return None
    return last


def test_metrics(tested: dict, predictions: list, targets: list[str]) -> dict:
    """One test's metrics: for several targets each target's (``<target>/srcc`` ...) and their mean; the PLCC after
    the logistic fit from the predictions (file_name, MOS, score; a list each for several targets)."""
    if len(targets) == 1:
        values = {k: float(tested[f"test/{k}"]) for k in LOGGED}
        return {**values, "plcc_logistic": logistic_plcc([p[2] for p in predictions], [p[1] for p in predictions])}
    values = {}
    for index, target in enumerate(targets):
        values.update({f"{target}/{k}": float(tested[f"test/{target}/{k}"]) for k in LOGGED})
        values[f"{target}/plcc_logistic"] = logistic_plcc([p[2][index] for p in predictions],
                                                          [p[1][index] for p in predictions])
    for key, _ in METRICS:
        values[key] = statistics.fmean(values[f"{target}/{key}"] for target in targets)
    return values


@contextlib.contextmanager
def _reporting_into(trainer, report, folder: Path):
    """Test elsewhere: predictions into ``folder``, nothing into the split's own logs (metrics.csv, W&B)."""
    loggers, dirpath = trainer.loggers, report.dirpath
    trainer.loggers, report.dirpath = [], str(folder)
    try:
        yield
    finally:
        trainer.loggers, report.dirpath = loggers, dirpath


def test_on_all_images(trainer, task, best: str, test: TestSet, folder: Path) -> dict:
    """The metrics of the checkpoint ``best`` on every image of another dataset (its split "all")."""
    data = test.datamodule()
    data.predict_split = "all"
    data.trainer = trainer  # what Lightning sets for a datamodule it is given: DDP sampler, feature cache
    data.use_encoder(task.model.frozen_encoder(), read_prompts=task.model.use_prompt)
    data.setup("test")
    report = _test_report(trainer)
    with _reporting_into(trainer, report, folder / f"test_on_{test.label}"):
        tested = trainer.test(task, dataloaders=data.predict_dataloader(), ckpt_path=best, verbose=False)[0]
    predictions = report.predictions
    return {"n_test": len(predictions), **test_metrics(tested, predictions, task.model.targets)}


def run_split(split: Split, configs: list[str], fit_args: list[str], out: Path,
              configured_split: str | None = None, test_sets: tuple[TestSet, ...] = (),
              trained_on: str = "") -> list[dict]:
    """Fit one split (resuming its last.ckpt if any), test its val-best checkpoint once on its test set and on
    every image of each test set; returns its rows."""
    from .cli import main

    root = out / split.folder_name
    checkpoints = root / "checkpoints"
    args = ["fit", *[a for c in configs for a in ("--config", c)], *fit_args,
            "--seed_everything", str(split.seed), "--trainer.default_root_dir", str(root),
            "--checkpoint.dirpath", str(checkpoints), *split.data_args(configured_split)]
    last = usable_last_checkpoint(checkpoints)
    if last is not None:
        args += ["--ckpt_path", str(last)]
    started = time.time()
    with warnings.catch_warnings():
        # sys.argv stays as it is (DDP relaunches the command from it); LightningCLI would warn about it.
        warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
        cli = main(args)
    trainer, task = cli.trainer, cli.model
    callback = trainer.checkpoint_callback
    best = callback.best_model_path or str(checkpoints / "best.ckpt")
    if not Path(best).is_file():
        raise SystemExit(f"split {split.index}: no best checkpoint in {checkpoints} (was there a validation set?)")
    tested = trainer.test(task, datamodule=cli.datamodule, ckpt_path=best, verbose=False)[0]
    predictions = _test_report(trainer).predictions
    common = {"split": split.index, "seed": split.seed, "fold": "" if split.fold is None else split.fold,
              "splits_file": split.splits_file or "", "best_epoch": _best_epoch(best),
              "val_srcc": float(callback.best_model_score) if callback.best_model_score is not None else math.nan,
              "checkpoint": os.path.relpath(best, out)}
    rows = [{**common, "tested_on": trained_on, "images": OWN_TEST, "n_test": len(predictions),
             **test_metrics(tested, predictions, task.model.targets)}]
    rows += [{**common, "tested_on": test.label, "images": ALL_IMAGES,
              **test_on_all_images(trainer, task, best, test, root)} for test in test_sets]
    for row in rows:
        row["seconds"] = round(time.time() - started, 1)
    del cli, trainer, task
    finish_wandb_run()
    gc.collect()
    return rows


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


def _printed(row: dict) -> str:
    return (f"SRCC {row['srcc']:.4f} PLCC {row['plcc']:.4f} KRCC {row['krcc']:.4f} RMSE {row['rmse']:.4f} "
            f"PLCC(logistic) {row['plcc_logistic']:.4f}")


def main(argv: list[str] | None = None) -> Path:
    args, fit_args = parse_args(argv)
    out = Path(args.out)
    command = "clip-agiqa benchmark " + " ".join(shlex.quote(a) for a in (argv or []))
    data = planned_data(args.config, fit_args)
    splits = planned_splits(args)
    run = dict(configs=args.config, fit_args=fit_args, out=out, configured_split=data["init_args"].get("split"),
               test_sets=tuple(args.test_on), trained_on=Path(args.config[0]).stem)
    if not _is_main_process():
        return _follow(splits, run)
    check_splits_differ(args, data["init_args"])
    if args.test_on:
        check_test_sets(args.test_on, data)
    about = protocol(args, data)
    _check_settings(out, {"configs": args.config, "fit_args": fit_args, "first_seed": args.first_seed,
                          "vary": args.vary, "splits_from": args.splits_from,
                          "test_on": [[t.config, t.root] for t in args.test_on], "splits": args.splits,
                          "protocol": about})
    rows = [r for r in read_results(out) if int(r["split"]) < len(splits)]
    for split in splits:
        label = split.label(len(splits))
        done = [r for r in rows if int(r["split"]) == split.index and not is_cross(r)]
        if done:
            print(f"{label}: done earlier, skipped (SRCC {float(done[0]['srcc']):.4f})", flush=True)
            continue
        folder = out / split.folder_name
        resuming = usable_last_checkpoint(folder / "checkpoints") is not None
        print(f"{label}: {'resuming the interrupted fit from last.ckpt' if resuming else 'fitting'} in {folder}",
              flush=True)
        new = run_split(split, **run)
        rows += new
        write_results(out, rows)
        write_summary(out, rows, command, len(splits), about)
        for row in new:
            where = "" if not is_cross(row) else f" on all {row['n_test']} images of {row['tested_on']}"
            print(f"{label}{where}: {_printed(row)}" + ("" if where else
                  f" (best epoch {row['best_epoch']}, {row['seconds']:.0f} s)"), flush=True)
    summary = write_summary(out, rows, command, len(splits), about)
    print(f"wrote {out / RESULTS_FILE} and {summary}", flush=True)
    print(summary.read_text(), flush=True)
    return summary


def _follow(splits: list[Split], run: dict) -> Path:
    """Another DDP rank: run the same splits as rank 0 (it read the same results.csv), write nothing."""
    done = {int(r["split"]) for r in read_results(run["out"]) if not is_cross(r)}
    for split in splits:
        if split.index not in done:
            run_split(split, **run)
    return run["out"] / SUMMARY_FILE
