r"""The repeated-split benchmark: fit, pick the checkpoint on val, test once; repeat over splits.

    clip-agiqa benchmark --config experiments/data/agiqa3k_quality.yaml --config experiments/model/clip_agiqa.yaml \
        --config experiments/protocol/prompt_disjoint.yaml --data.root /data/AGIQA-3K --splits 10 --jobs 2

Every argument it does not know goes to ``clip-agiqa fit`` unchanged. Split ``k`` uses seed
``first_seed + k`` for both the data split and training (or fold ``k`` with ``--vary fold``) and runs in
``OUT/split_<seed>/``. ``--splits_from PATH ...`` runs one split per given split file or folder instead
(``OUT/split_file<k>/``; a folder of split folders, such as IPCE's ``Database/AGIQA-3K/``, gives each of
them): train and test come from the file, val is drawn from train (see ``clip_agiqa.data.splits``).
``--test_on CONFIG[:ROOT]`` (repeatable) also tests each split's val-chosen checkpoint on every image of
another dataset: a data config part, with ROOT as its ``data.root`` when the config sets none.

It is made of runs (``clip_agiqa.benchmark``: plan, run, results): the plan (every refusal before any fit), each split
as its own ``clip-agiqa fit`` and ``clip-agiqa test`` processes, up to ``--jobs`` at once (output in the split folder's
``split.log``), and the results: ``OUT/results.csv`` gets one row per finished split and tested dataset,
``OUT/summary.md`` the mean, std, median, min and max of each metric (per target too, for a model with several) and,
with ``--test_on``, the cross-dataset matrix. Run the same command again after a crash or a kill: finished splits are
skipped and an interrupted one resumes from its ``last.ckpt``. ``clip-agiqa compare`` puts several
OUT folders side by side.
"""

from __future__ import annotations

from pathlib import Path

from . import run as runs
from .plan import Plan, Split, make_plan
from .results import RESULTS_FILE, is_cross, read_results, write_results, write_summary


def finish_wandb_run() -> None:
    """Close this process's W&B run (the benchmark's runs are processes of their own; tests share one process)."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()


def _printed(row: dict) -> str:
    return (f"SRCC {float(row['srcc']):.4f} PLCC {float(row['plcc']):.4f} KRCC {float(row['krcc']):.4f} "
            f"RMSE {float(row['rmse']):.4f} PLCC(logistic) {float(row['plcc_logistic']):.4f}"
            + (f" coverage90 {float(row['coverage90']):.4f}" if row.get("coverage90") not in (None, "") else ""))


def _own(rows: list[dict], split: Split) -> list[dict]:
    return [r for r in rows if int(r["split"]) == split.index and not is_cross(r)]


def main(argv: list[str] | None = None) -> Path:
    plan: Plan = make_plan(argv)
    out, total = plan.out, len(plan.splits)
    rows = [r for r in read_results(out) if int(r["split"]) < total]
    pending = []
    for split in plan.splits:
        if not _own(rows, split):
            rows += runs.recorded_rows(plan, split)  # finished, but killed before results.csv had it
        done = _own(rows, split)
        if done:
            print(f"{split.label(total)}: done earlier, skipped (SRCC {float(done[0]['srcc']):.4f})", flush=True)
        else:
            pending.append(split)

    def finished(split: Split, new: list[dict]) -> None:
        rows.extend(new)
        write_results(out, rows)
        write_summary(out, rows, plan.command, total, plan.about)
        label = split.label(total)
        for row in new:
            where = "" if not is_cross(row) else f" on all {row['n_test']} images of {row['tested_on']}"
            print(f"{label}{where}: {_printed(row)}" + ("" if where else
                  f" (best epoch {row['best_epoch']}, {row['seconds']:.0f} s)"), flush=True)

    failures = runs.run_splits(plan, pending, finished)
    if rows:
        write_results(out, rows)
    summary = write_summary(out, rows, plan.command, total, plan.about)
    print(f"wrote {out / RESULTS_FILE} and {summary}", flush=True)
    print(summary.read_text(), flush=True)
    if failures:
        raise runs.SplitsFailed(f"{len(failures)} of {len(pending)} split(s) failed: "
                                + "; ".join(failures) + ". Fix the cause and run the same command again: "
                                "finished splits are skipped")
    return summary
