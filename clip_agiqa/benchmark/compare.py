"""``clip-agiqa compare OUT_A OUT_B ...``: the summaries of several benchmark folders in one table, with their
protocols (split kind, where the checkpoint was chosen, number of splits), e.g. the paper protocol against the
prompt-disjoint one on the same model, so that the optimism of selecting on test is a measured number. When
the folders tested on other datasets (``benchmark --test_on``), their cross-dataset matrices are joined; when their
tests wrote results per group (``test_groups.csv``), each grouping gets one table with a column set per folder.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import CommandParser
from ..files import atomic_write
from ..groups import POOLED_NOTE, pooled_cells, pooled_groups
from .results import (
    CERTAINTY_NOTE,
    CROSS_NOTE,
    certainty_keys,
    cross_matrix,
    is_cross,
    mean_std,
    metric_label,
    read_benchmark,
    summarise,
)

TABLE_METRICS = ("srcc", "plcc", "krcc", "plcc_logistic")
TABLE_CERTAINTY = ("coverage50", "coverage90", "js", "wasserstein")  # columns only where a folder has them


def comparison(folders: list[Path]) -> str:
    """Markdown: one row per benchmark folder (with a distribution model's interval coverage and distances where
    any folder has them; "-" for a folder without), then the joined cross-dataset matrix if any."""
    benchmarks = [(folder, *read_benchmark(folder)) for folder in folders]
    present = {key for _, _, rows in benchmarks for key in certainty_keys([r for r in rows if not is_cross(r)])}
    certainty = [key for key in TABLE_CERTAINTY if key in present]
    headers = ["benchmark", "data", "split", "selected on", "splits", *map(metric_label, TABLE_METRICS),
               *map(metric_label, certainty), "SRCC - first row"]
    lines = ["| " + " | ".join(headers) + " |", "|---" * len(headers) + "|"]
    first_srcc = None
    trained = []
    for folder, about, rows in benchmarks:
        own = [r for r in rows if not is_cross(r)]
        srcc = summarise(own, ["srcc"])["srcc"]["mean"]
        first_srcc = srcc if first_srcc is None else first_srcc
        cells = [folder.name, about["data"], about["split"], about["selection"], f"{len(own)} of {about['planned']}",
                 *(mean_std(own, key) for key in (*TABLE_METRICS, *certainty)), f"{srcc - first_srcc:+.4f}"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
        if any(is_cross(r) for r in rows):
            trained.append((f"{about['data']} ({folder.name})", rows))
    lines += ["", "mean ± sample std over the splits. Selected on test (the paper split: no validation set) is "
              "optimistic; selected on val is the honest figure."]
    if certainty:
        lines += ["", CERTAINTY_NOTE + " '-': a model without distributions (or data without the raters' std)."]
    if trained:
        lines += ["", "## Cross-dataset", "", CROSS_NOTE, *cross_matrix(trained)]
    lines += group_comparison(folders)
    return "\n".join(lines) + "\n"


def group_comparison(folders: list[Path]) -> list[str]:
    """Markdown: per target and grouping (generator, task ...), one row per group and, for each folder, its mean
    count, SRCC and PLCC over the splits ("-" where a folder has no such group; * too small in some split); empty
    when no folder's tests wrote groups."""
    pooled = [pooled_groups(folder)[1] for folder in folders]
    keys = list(dict.fromkeys(key for groups in pooled for key in groups))
    if not keys:
        return []
    headers = [f"{folder.name}: {column}" for folder in folders for column in ("n", "SRCC", "PLCC")]
    lines = ["", "## Per group", "", POOLED_NOTE]
    for target, group in dict.fromkeys((t, g) for t, g, _ in keys):
        lines += ["", f"### {group} ({target})", "", "| " + " | ".join([group, *headers]) + " |",
                  "|---" * (1 + len(headers)) + "|"]
        for value in sorted(value for t, g, value in keys if (t, g) == (target, group)):
            cells = [value]
            for groups in pooled:
                results = groups.get((target, group, value))
                if results is None:
                    cells += ["-", "-", "-"]
                else:
                    flag, count, srcc, plcc = pooled_cells(results)
                    cells += [count + flag, srcc, plcc]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> str:
    parser = CommandParser(prog="clip-agiqa compare",
                                     description="Several benchmark folders (clip-agiqa benchmark --out) in one table.")
    parser.add_argument("folders", nargs="+", type=Path, metavar="OUT", help="benchmark result folders")
    parser.add_argument("--output", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    table = comparison(args.folders)
    print(table, end="", flush=True)
    if args.output is not None:
        with atomic_write(args.output) as handle:
            handle.write(table)
        print(f"wrote {args.output}", flush=True)
    return table
