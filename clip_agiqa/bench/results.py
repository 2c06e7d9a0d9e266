"""Benchmark results: the metrics of a test's predictions file, the results CSV, statistics (mean, sample std,
median, min, max), the markdown summary and the cross-dataset matrix. ``clip-agiqa benchmark`` writes them,
``clip-agiqa compare`` reads them; plain ``csv`` (pandas is not a dependency)."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

from ..errors import InputError
from ..files import atomic_write

RESULTS_FILE = "results.csv"
SUMMARY_FILE = "summary.md"
SETTINGS_FILE = "benchmark.json"
PREDICTIONS_FILE = "test_predictions.csv"  # what `clip-agiqa test` writes (reporting.TestReport)
METRICS = (("srcc", "SRCC"), ("plcc", "PLCC"), ("krcc", "KRCC"), ("rmse", "RMSE"),
           ("plcc_logistic", "PLCC (4-parameter logistic fit)"))
HEAD_COLUMNS = ("split", "seed", "fold", "splits_file", "tested_on", "images", "n_test", "best_epoch", "val_srcc")
TAIL_COLUMNS = ("seconds", "checkpoint")
OWN_TEST, ALL_IMAGES = "test split", "all"  # the `images` column: the split's own test set, or another dataset
CROSS_NOTE = ("Cross-dataset: each split's checkpoint chosen on val, tested on its own test split and on every "
              "image of each other dataset. MOS scales differ between datasets: SRCC needs no mapping; PLCC is "
              "given after the 4-parameter logistic fit of the predictions to that dataset's MOS.")


# --- one test's metrics ----------------------------------------------------------------------------------------
def read_predictions(path: Path) -> dict[str, tuple[list[float], list[float]]]:
    """A test's predictions file: each target's (MOS, scores). ``file_name,mos,score`` for one target (named
    ``quality`` here), ``file_name,<target>_mos,<target>_score,...`` for several."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle))
    except OSError as error:
        raise InputError(f"{path}: cannot read the test's predictions ({error.strerror})") from None
    if not rows or len(rows[0]) < 3 or (len(rows[0]) - 1) % 2:
        raise InputError(f"{path}: not a predictions file (file_name, then MOS and score per target)")
    header = rows[0]
    targets = ["quality"] if header[1:] == ["mos", "score"] else [name[:-len("_mos")] for name in header[1::2]]
    try:
        values = [[float(cell.lstrip("'")) for cell in row[1:]] for row in rows[1:]]  # "'" a spreadsheet escape
    except ValueError as error:
        raise InputError(f"{path}: a MOS or score is not a number ({error})") from None
    return {target: ([row[2 * k] for row in values], [row[2 * k + 1] for row in values])
            for k, target in enumerate(targets)}


def target_metrics(mos: list[float], scores: list[float]) -> dict[str, float]:
    from ..metrics import correlations, logistic_plcc  # torch and scipy: not for `--help` or compare

    rmse = math.sqrt(statistics.fmean((s - m) ** 2 for s, m in zip(scores, mos))) if mos else math.nan
    return {**correlations(scores, mos), "rmse": rmse, "plcc_logistic": logistic_plcc(scores, mos)}


def test_metrics(path: Path) -> dict:
    """The metrics of one test from its predictions file: ``n_test`` and SRCC, PLCC, KRCC, RMSE and the PLCC after
    the logistic fit; for several targets each target's (``<target>/srcc`` ...) and, unprefixed, their mean."""
    per_target = read_predictions(path)
    n_test = len(next(iter(per_target.values()))[0])
    if len(per_target) == 1:
        return {"n_test": n_test, **target_metrics(*next(iter(per_target.values())))}
    values = {f"{target}/{key}": value for target, (mos, scores) in per_target.items()
              for key, value in target_metrics(mos, scores).items()}
    for key, _ in METRICS:
        values[key] = statistics.fmean(values[f"{target}/{key}"] for target in per_target)
    return {"n_test": n_test, **values}


# --- the results CSV -------------------------------------------------------------------------------------------
def read_results(out: Path) -> list[dict]:
    path = Path(out) / RESULTS_FILE
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
    """results.csv, one row per split and tested dataset (replaced whole: a kill never leaves half a file)."""
    with atomic_write(Path(out) / RESULTS_FILE, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*HEAD_COLUMNS, *metric_keys(rows), *TAIL_COLUMNS], restval="")
        writer.writeheader()
        writer.writerows(sorted(rows, key=_row_order))


# --- statistics and markdown -----------------------------------------------------------------------------------
def _fmt(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


def _value(row: dict, key: str) -> float:
    value = row.get(key)
    return math.nan if value in (None, "") else float(value)


def summarise(rows: list[dict], keys: list[str] | None = None) -> dict[str, dict[str, float]]:
    """mean / std (sample, n-1) / median / min / max of each metric over the splits (NaN values left out)."""
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


def summary_markdown(rows: list[dict], command: str, planned: int, about: dict | None = None) -> str:
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
    return "\n".join(lines) + "\n"


def write_summary(out: Path, rows: list[dict], command: str, planned: int, about: dict | None = None) -> Path:
    path = Path(out) / SUMMARY_FILE
    with atomic_write(path) as handle:
        handle.write(summary_markdown(rows, command, planned, about))
    return path


# --- a benchmark folder, as compare reads it -------------------------------------------------------------------
def read_benchmark(folder: Path) -> tuple[dict, list[dict]]:
    """A benchmark folder's protocol (from benchmark.json) and result rows, or a clear error."""
    if not (folder / RESULTS_FILE).is_file():
        raise InputError(f"{folder}: no {RESULTS_FILE}; give folders written by `clip-agiqa benchmark`")
    settings = {}
    if (folder / SETTINGS_FILE).is_file():
        try:
            settings = json.loads((folder / SETTINGS_FILE).read_text())
        except (OSError, ValueError) as error:
            raise InputError(f"{folder / SETTINGS_FILE}: not a benchmark's settings ({error})") from None
    about = settings.get("protocol") or {}
    return {"data": about.get("data", "?"), "split": about.get("split", "?"), "selection": about.get("selection", "?"),
            "planned": settings.get("splits", "?")}, read_results(folder)
