"""``clip-agiqa compare OUT_A OUT_B ...``: the summaries of several benchmark folders in one table, with their
protocols (split kind, where the checkpoint was chosen, number of splits), e.g. the paper protocol against the
prompt-disjoint one on the same model, so that the optimism of selecting on test is a measured number. When
the folders tested on other datasets (``benchmark --test_on``), their cross-dataset matrices are joined.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import CommandParser
from ..files import atomic_write
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
    return "\n".join(lines) + "\n"


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
