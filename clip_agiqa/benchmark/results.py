"""Benchmark results: the metrics of a test's predictions file, the results CSV, statistics (mean, sample std,
median, min, max), the markdown summary and the cross-dataset matrix. ``clip-agiqa benchmark`` writes them,
``clip-agiqa compare`` reads them; plain ``csv`` (pandas is not a dependency)."""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Mapping
from pathlib import Path

from ..errors import InputError
from ..files import atomic_write

RESULTS_FILE = "results.csv"
SUMMARY_FILE = "summary.md"
SETTINGS_FILE = "benchmark.json"
METRICS = (("srcc", "SRCC"), ("plcc", "PLCC"), ("krcc", "KRCC"), ("rmse", "RMSE"),
           ("plcc_logistic", "PLCC (4-parameter logistic fit)"))
# A distribution model's (its predictions file has a std per image), as the test step logs them; the distances
# only where the data gives the raters' std. A score model's rows have none of them.
CERTAINTY = (("coverage50", "coverage of the 50% interval"), ("coverage90", "coverage of the 90% interval"),
             ("width50", "width of the 50% interval"), ("width90", "width of the 90% interval"),
             ("js", "Jensen-Shannon distance to the raters"), ("wasserstein", "Wasserstein distance to the raters"))
LABELS = dict(METRICS + CERTAINTY)
CERTAINTY_COLUMNS = ("std", "rater_std", "js", "wasserstein")  # reporting.CERTAINTY_COLUMNS (no torch here)
HEAD_COLUMNS = ("split", "seed", "fold", "splits_file", "tested_on", "images", "n_test", "best_epoch", "val_srcc")
TAIL_COLUMNS = ("seconds", "checkpoint")
OWN_TEST, ALL_IMAGES = "test split", "all"  # the `images` column: the split's own test set, or another dataset
CERTAINTY_NOTE = ("Certainty (a distribution model): the share of the test MOS inside the central 50% and 90% "
                  "predictive intervals (score ± z · std, the std scale calibrated on val), their mean width (MOS "
                  "scale) and, where the data gives the raters' std, the mean distances between the predicted and "
                  "the raters' distributions; the test step's own figures (test/coverage90 ...).")
CROSS_NOTE = ("Cross-dataset: each split's checkpoint chosen on val, tested on its own test split and on every "
              "image of each other dataset. MOS scales differ between datasets: SRCC needs no mapping; PLCC is "
              "given after the 4-parameter logistic fit of the predictions to that dataset's MOS.")


# --- one test's metrics ----------------------------------------------------------------------------------------
def _columns_of(header: list[str]) -> dict[str, dict[str, int]] | None:
    """Each target's columns (``mos``, ``score``, then any of ``CERTAINTY_COLUMNS``) by position, or None."""
    kinds = ("mos", "score", *CERTAINTY_COLUMNS)
    if header[1:3] == ["mos", "score"]:  # one target, named ``quality`` here
        named = {name: position for position, name in enumerate(header) if position}
        return {"quality": named} if set(named) <= set(kinds) else None
    targets = [name[:-len("_mos")] for name in header[1:] if name.endswith("_mos")]
    columns = {target: {kind: header.index(f"{target}_{kind}") for kind in kinds if f"{target}_{kind}" in header}
               for target in targets}
    used = sum(len(named) for named in columns.values())
    return columns if targets and used == len(header) - 1 and all("score" in c for c in columns.values()) else None


def _number(cell: str) -> float:
    cell = cell.lstrip("'")  # "'" a spreadsheet escape
    return math.nan if cell == "" else float(cell)  # empty: not known (an image without the raters' std)


def read_predictions(path: Path) -> dict[str, dict[str, list[float]]]:
    """A test's predictions file: each target's columns (``mos``, ``score`` and a distribution model's ``std``,
    ``rater_std``, ``js``, ``wasserstein``) as lists. ``file_name,mos,score[,std...]`` for one target (named
    ``quality`` here), ``file_name,<target>_mos,<target>_score[,<target>_std...],...`` for several."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle))
    except OSError as error:
        raise InputError(f"{path}: cannot read the test's predictions ({error.strerror})") from None
    columns = _columns_of(rows[0]) if rows and len(rows[0]) >= 3 else None
    if columns is None:
        raise InputError(f"{path}: not a predictions file (file_name, then MOS and score per target)")
    try:
        values: list = [[math.nan, *map(_number, row[1:])] if len(row) == len(rows[0]) else None for row in rows[1:]]
    except ValueError as error:
        raise InputError(f"{path}: a MOS or score is not a number ({error})") from None
    if None in values:
        raise InputError(f"{path}: row {values.index(None) + 2} has not {len(rows[0])} cells")
    return {target: {kind: [row[position] for row in values] for kind, position in named.items()}
            for target, named in columns.items()}


def target_metrics(mos: list[float], scores: list[float]) -> dict[str, float]:
    from ..metrics import correlations, logistic_plcc  # torch and scipy: not for `--help` or compare

    rmse = math.sqrt(statistics.fmean((s - m) ** 2 for s, m in zip(scores, mos))) if mos else math.nan
    return {**correlations(scores, mos), "rmse": rmse, "plcc_logistic": logistic_plcc(scores, mos)}


def mos_scales_beside(path: Path) -> dict[str, list[float]]:
    """The MOS scale of each target of the run a predictions file belongs to (its ``checkpoints/data.json``), where
    the test step cut its intervals; empty when unknown or unreadable (intervals are then not cut)."""
    from ..run_files import CHECKPOINTS, DATA_FILE
    from ..saved import read_json

    try:
        targets = read_json(Path(path).parent / CHECKPOINTS / DATA_FILE).get("targets")
    except (InputError, OSError):
        return {}
    if not isinstance(targets, dict):
        return {}
    return {name: [float(v) for v in scale] for name, scale in targets.items()
            if isinstance(scale, list) and len(scale) == 2 and all(isinstance(v, (int, float)) for v in scale)}


def certainty_metrics(columns: dict[str, list[float]], scale: list[float] | None = None) -> dict[str, float]:
    """A distribution model's coverage50/90, width50/90 (intervals cut to the MOS ``scale`` when known, as the test
    step cuts them) and (with the raters' std) js and wasserstein from one target's columns, through the test
    step's own ``CalibrationMetrics``; none without a ``std`` column."""
    if "std" not in columns:
        return {}
    import torch

    from ..metrics import CalibrationMetrics

    tensors = {kind: torch.tensor(values, dtype=torch.float64) for kind, values in columns.items()}
    metrics = CalibrationMetrics(prefix="")
    metrics.add(tensors["mos"], tensors["score"], tensors["std"], tensors.get("js"), tensors.get("wasserstein"),
                scale=scale)
    return {name: float(value) for name, value in metrics.compute().items()}


def test_metrics(path: Path) -> dict:
    """The metrics of one test from its predictions file: ``n_test`` and SRCC, PLCC, KRCC, RMSE and the PLCC after
    the logistic fit (and a distribution model's ``CERTAINTY`` figures); for several targets each target's
    (``<target>/srcc`` ...) and, unprefixed, their mean over the targets that have it."""
    per_target = read_predictions(path)
    n_test = len(next(iter(per_target.values()))["mos"])
    scales = mos_scales_beside(path)
    only = next(iter(scales.values())) if len(scales) == 1 else None
    measured = {target: {**target_metrics(columns["mos"], columns["score"]),
                         **certainty_metrics(columns, only if len(per_target) == 1 else scales.get(target))}
                for target, columns in per_target.items()}
    if len(per_target) == 1:
        return {"n_test": n_test, **next(iter(measured.values()))}
    values = {f"{target}/{key}": value for target, of_target in measured.items() for key, value in of_target.items()}
    for key in LABELS:
        known = [of_target[key] for of_target in measured.values() if key in of_target]
        if known:
            values[key] = statistics.fmean(known)
    return {"n_test": n_test, **values}


# --- the results CSV -------------------------------------------------------------------------------------------
def read_results(out: Path) -> list[dict]:
    path = Path(out) / RESULTS_FILE
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def is_cross(row: Mapping) -> bool:
    """A row of another dataset's images (not the split's own test set)."""
    return row.get("images") == ALL_IMAGES


def certainty_keys(rows: list[dict]) -> list[str]:
    """The ``CERTAINTY`` figures the rows have (none for a score model's rows)."""
    return [key for key, _ in CERTAINTY if any(key in row for row in rows)]


def metric_keys(rows: list[dict]) -> list[str]:
    """The overall metrics (and certainty figures where present), then each target's (``<target>/srcc`` ...) in
    the order the rows have them."""
    per_target = [k for row in rows for k in row if "/" in k and k.rsplit("/", 1)[1] in LABELS]
    return [key for key, _ in METRICS] + certainty_keys(rows) + list(dict.fromkeys(per_target))


def metric_label(key: str) -> str:
    target, _, metric = key.rpartition("/")
    return f"{target} {LABELS[metric]}" if target else LABELS[metric]


def _row_order(row: Mapping) -> tuple:
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
    """Mean / std (sample, n-1) / median / min / max of each metric over the splits (NaN values left out)."""
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
        + (" For several targets, the overall figures are the mean over targets." if any("/" in k for k in keys)
           else ""),
        "",
        "| metric | mean | std | median | min | max |",
        "|---|---|---|---|---|---|",
    ]
    for key in keys:
        s = stats[key]
        lines.append(f"| {metric_label(key)} | {_fmt(s['mean'])} | {_fmt(s['std'])} | {_fmt(s['median'])} | "
                     f"{_fmt(s['min'])} | {_fmt(s['max'])} |")
    certainty = certainty_keys(own)
    if certainty:
        lines += ["", CERTAINTY_NOTE]
    split_columns = ["val_srcc", *[k for k, _ in METRICS], *[k for k in certainty if k == "coverage90"],
                     *[k for k in keys if "/" in k and k.endswith(("/srcc", "/plcc_logistic"))]]
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
    from ..groups import benchmark_group_lines  # per generator, task ... where the splits' tests wrote them

    path = Path(out) / SUMMARY_FILE
    per_group = "".join(f"{line}\n" for line in benchmark_group_lines(Path(out)))
    with atomic_write(path) as handle:
        handle.write(summary_markdown(rows, command, planned, about) + per_group)
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
