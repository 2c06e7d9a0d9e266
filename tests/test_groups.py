"""Results per group (clip_agiqa.groups): SRCC/PLCC per generator and task against scipy, counts, the too-small
flag, and test_groups.csv written by a test run on data that names its groups (EvalMi-50K's real rows)."""

from __future__ import annotations

import csv
import math
import warnings

import numpy as np
import pytest
from experiment_helpers import as_flags, shrink_args
from helpers import REPO, run_cli
from layouts import evalmi50k_root
from scipy import stats

from clip_agiqa.groups import GROUPS_FILE, MIN_GROUP_SIZE, group_markdown, group_results, labels_of, write_test_groups


def test_each_group_matches_scipy_with_its_count():
    rng = np.random.default_rng(0)
    mos = rng.uniform(0, 5, 120)
    scores = mos + rng.normal(0, 1, 120)
    generators = [("sd", "dalle", "glide")[i % 3] for i in range(120)]
    tasks = ["counting"] * 100 + ["OCR"] * 8 + [None] * 12  # the last 12 have no task
    results = group_results("quality", mos, scores, {"generator": generators, "task": tasks})
    assert [(r.group, r.value, r.n) for r in results] == [
        ("generator", "dalle", 40), ("generator", "glide", 40), ("generator", "sd", 40),
        ("task", "OCR", 8), ("task", "counting", 100)]
    for result in results:
        labels = generators if result.group == "generator" else tasks
        chosen = np.array([label == result.value for label in labels])
        assert result.n == chosen.sum()
        assert result.srcc == pytest.approx(stats.spearmanr(scores[chosen], mos[chosen]).statistic, abs=1e-12)
        assert result.plcc == pytest.approx(stats.pearsonr(scores[chosen], mos[chosen]).statistic, abs=1e-12)
        assert result.too_small == (result.n < MIN_GROUP_SIZE)
    assert [r.too_small for r in results] == [False, False, False, True, False]  # 8 OCR images: too few


def test_a_tiny_or_constant_group_is_flagged_not_dropped():
    results = group_results("mos", [1.0, 2.0, 3.0, 4.0, 4.0, 4.0], [1.0, 2.5, 2.0, 1.0, 2.0, 3.0],
                            {"generator": ["a", "a", "a", "b", "b", "b"]})
    small, constant = results
    assert small.n == 3 and small.too_small and not math.isnan(small.srcc)
    assert constant.n == 3 and math.isnan(constant.srcc) and constant.too_small  # constant MOS: undefined
    lines = group_markdown(results)
    assert "| a * | 3 | 0.5000 |" in "\n".join(lines) and "| b * | 3 | - | - |" in lines


def test_the_test_groups_file_has_every_target(tmp_path):
    names = [f"img{i}.png" for i in range(30)]
    groups = {name: {"generator": "x" if i % 2 else "y", "task": "t"} for i, name in enumerate(names)}
    mos = [[float(i), float(30 - i)] for i in range(30)]
    scores = [[float(i) + (i % 3), float(i)] for i in range(30)]
    [path] = write_test_groups(tmp_path, ["quality", "align"], names, mos, scores, groups)
    rows = list(csv.DictReader(open(path)))
    assert [(r["target"], r["group"], r["value"], r["n"]) for r in rows] == [
        ("quality", "generator", "x", "15"), ("quality", "generator", "y", "15"), ("quality", "task", "t", "30"),
        ("align", "generator", "x", "15"), ("align", "generator", "y", "15"), ("align", "task", "t", "30")]
    assert float(rows[-1]["srcc"]) == pytest.approx(-1.0) and rows[-1]["too_small"] == "0"
    assert rows[0]["too_small"] == "1"  # 15 images
    assert write_test_groups(tmp_path / "none", ["q"], names, [1.0] * 30, [1.0] * 30, {}) == []
    assert labels_of(["a", "b"], {"a": {"task": "t"}}) == {"task": ["t", None]}


def test_a_test_run_writes_results_per_generator_and_task(tmp_path):
    root = evalmi50k_root(tmp_path / "evalmi50k")
    run_dir = tmp_path / "run"
    shrink = shrink_args(root, run_dir, {"data.split": "prompt", "data.test_size": "0.5"})
    experiments = REPO / "experiments"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = run_cli(["fit", "--config", str(experiments / "data" / "evalmi50k_perception.yaml"),
                       *as_flags(shrink)])
        cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False)
    rows = list(csv.DictReader(open(run_dir / GROUPS_FILE)))
    tested = len(list(csv.DictReader(open(run_dir / "test_predictions.csv"))))
    by_group = {group: [r for r in rows if r["group"] == group] for group in ("generator", "task", "task_answer")}
    assert by_group["generator"]
    assert {r["value"] for r in by_group["generator"]} <= {"ali_flux_schnell", "DALLE3", "Kolors"}
    assert sum(int(r["n"]) for r in by_group["generator"]) == tested
    assert sum(int(r["n"]) for r in by_group["task"]) == tested and all(r["too_small"] == "1" for r in rows)


def test_the_benchmark_summary_pools_each_group_over_the_splits(tmp_path):
    from clip_agiqa.benchmark.results import write_summary
    from clip_agiqa.groups import GroupResult, benchmark_group_lines, write_group_table

    for split, (srcc, n) in enumerate([(0.5, 30), (0.7, 10)]):
        (tmp_path / f"split_{split}").mkdir()
        write_group_table(tmp_path / f"split_{split}" / GROUPS_FILE,
                          [GroupResult("mos", "generator", "sd", n, srcc, srcc + 0.1),
                           GroupResult("mos", "task", "OCR", 40, 0.2, float("nan"))])
    lines = benchmark_group_lines(tmp_path)
    assert "| sd * | 20 | 0.6000 ± 0.1414 | 0.7000 ± 0.1414 |" in lines  # 10 images in split 1: flagged
    assert "| OCR | 40 | 0.2000 ± 0.0000 | - |" in lines and "### task (mos)" in lines
    summary = write_summary(tmp_path, [], "clip-agiqa benchmark ...", 2, {}).read_text()
    assert "## Per group" in summary and "| sd * | 20 |" in summary
    assert benchmark_group_lines(tmp_path / "nothing") == []
