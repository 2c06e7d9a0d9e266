"""The benchmark's certainty figures: a distribution model's test predictions carry each image's std
(and, with the raters' std, the distances), the benchmark computes coverage, width, JS and Wasserstein from them with
the test step's own CalibrationMetrics, and results.csv, summary.md and compare show them; score models show none."""

import csv
import json
import math
from types import SimpleNamespace

import layouts
import numpy as np
import pytest
import torch
from experiment_helpers import folder_args
from helpers import REPO, TINY_MODEL_ARGS, run_cli
from scipy.spatial.distance import jensenshannon
from scipy.stats import norm, wasserstein_distance

from clip_agiqa import run_files
from clip_agiqa.benchmark import results
from clip_agiqa.benchmark.command import _printed
from clip_agiqa.benchmark.compare import comparison
from clip_agiqa.callbacks import reports as reporting

DEMO = str(REPO / "experiments" / "demo.yaml")
Z90 = norm.ppf(0.95)  # the half-width of the central 90% interval, in stds


def raters_distribution(mos: float, std: float, levels: np.ndarray) -> np.ndarray:
    """N(mos, std) on bins whose edges lie half-way between the levels, the end bins open (scipy, not the package)."""
    cdf = norm.cdf((levels[:-1] + levels[1:]) / 2, loc=mos, scale=std)
    return np.diff(np.concatenate([[0.0], cdf, [1.0]]))


@pytest.fixture
def rated_predictions(tmp_path):
    """A hand-made test of 7 images on 5 levels, written by the test report as a test would; the raters' std of the
    last image is unknown."""
    rng = np.random.default_rng(3)
    levels = np.linspace(1.0, 5.0, 5)
    probs = rng.dirichlet(np.ones(5), size=7)
    mos = rng.uniform(1, 5, size=7)
    score = probs @ levels
    std = np.array([0.2, 0.5, 1.0, 1.5, 0.3, 2.0, 0.8])
    rater_std = np.array([0.4, 0.6, 0.3, 0.9, 0.5, 0.7, np.nan])
    model = SimpleNamespace(mos_levels=lambda: torch.tensor(levels, dtype=torch.float32)[None])
    batch = {"mos": torch.tensor(mos, dtype=torch.float32), "mos_std": torch.tensor(rater_std, dtype=torch.float32)}
    outputs = {"score": torch.tensor(score), "std": torch.tensor(std), "probs": torch.tensor(probs)[:, None]}
    report = reporting.TestReport()
    report.predictions = [(f"img_{i}.png", float(mos[i]), float(score[i])) for i in range(7)]
    report.certainty = reporting.certainty_of_batch(SimpleNamespace(model=model), batch, outputs, 7)
    report.write(tmp_path, SimpleNamespace(loggers=[]))
    return tmp_path / run_files.PREDICTIONS_FILE, levels, probs, mos, score, std, rater_std


def test_a_distribution_models_predictions_give_coverage_width_and_distances_as_scipy(rated_predictions):
    path, levels, probs, mos, score, std, rater_std = rated_predictions
    rows = list(csv.DictReader(open(path)))
    assert list(rows[0]) == ["file_name", "mos", "score", "std", "rater_std", "js", "wasserstein"]
    assert rows[6]["rater_std"] == rows[6]["js"] == rows[6]["wasserstein"] == ""  # not known: an empty cell
    row = results.test_metrics(path)
    inside = np.abs(mos - score) <= Z90 * std
    assert row["coverage90"] == pytest.approx(inside.mean(), abs=1e-6)
    assert row["coverage50"] == pytest.approx((np.abs(mos - score) <= norm.ppf(0.75) * std).mean(), abs=1e-6)
    assert row["width90"] == pytest.approx((2 * Z90 * std).mean(), rel=1e-5)
    raters = [raters_distribution(m, s, levels) for m, s in zip(mos[:6], rater_std[:6])]
    js = [jensenshannon(p, q) for p, q in zip(probs, raters)]
    moved = [wasserstein_distance(levels, levels, p, q) for p, q in zip(probs, raters)]
    assert row["js"] == pytest.approx(np.mean(js), abs=1e-5)  # the image without the raters' std left out
    assert row["wasserstein"] == pytest.approx(np.mean(moved), abs=1e-5)
    assert row["srcc"] == pytest.approx(results.target_metrics(list(mos), list(score))["srcc"], abs=1e-5)


def test_results_summary_and_compare_show_the_certainty_only_where_it_was_measured(rated_predictions, tmp_path):
    measured = results.test_metrics(rated_predictions[0])
    rows = [{"split": str(k), "seed": str(k), "fold": "", "n_test": "7", "best_epoch": "0", "val_srcc": "0.5",
             "tested_on": "rated", "images": results.OWN_TEST,
             **{key: str(value + k / 100) for key, value in measured.items() if key != "n_test"}} for k in range(2)]
    folder = tmp_path / "distribution"
    folder.mkdir()
    (folder / results.SETTINGS_FILE).write_text(json.dumps({"splits": 2, "protocol": {"data": "rated"}}))
    results.write_results(folder, rows)
    header = next(csv.reader(open(folder / results.RESULTS_FILE)))
    assert header[header.index("plcc_logistic") + 1:header.index("seconds")] == [key for key, _ in results.CERTAINTY]
    summary = results.write_summary(folder, results.read_results(folder), "clip-agiqa benchmark", 2).read_text()
    coverage = measured["coverage90"] + 0.005  # the mean over the two splits
    assert f"| coverage of the 90% interval | {coverage:.4f} | 0.0071 |" in summary
    assert "| Jensen-Shannon distance to the raters |" in summary
    assert "| PLCC (logistic) | coverage of the 90% interval |" in summary  # the per-split table's column
    assert _printed(rows[1]).endswith(f" coverage90 {measured['coverage90'] + 0.01:.4f}")  # the line per split
    paper = tmp_path / "paper"
    paper.mkdir()
    results.write_results(paper, [{**{k: v for k, v in row.items() if k not in dict(results.CERTAINTY)}}
                                  for row in rows])
    paper_summary = results.write_summary(paper, results.read_results(paper), "clip-agiqa benchmark", 2).read_text()
    assert "coverage" not in paper_summary and "Certainty" not in paper_summary
    assert "coverage" not in comparison([paper])  # the table of score models as it always was
    assert "coverage" not in _printed(results.read_results(paper)[0])
    table = comparison([paper, folder]).splitlines()
    assert table[0].endswith("| coverage of the 50% interval | coverage of the 90% interval | Jensen-Shannon distance "
                             "to the raters | Wasserstein distance to the raters | SRCC - first row |")
    assert table[2].split(" | ")[-5:-1] == ["-", "-", "-", "-"]
    assert f"{coverage:.4f} ± 0.0071" in table[3]


def test_several_targets_get_each_targets_certainty_and_their_mean(tmp_path):
    path = tmp_path / run_files.PREDICTIONS_FILE
    path.write_text("file_name,quality_mos,quality_score,quality_std,align_mos,align_score,align_std\n"
                    "a,1.0,1.5,1.0,2.0,2.0,0.1\nb,2.0,2.0,0.1,3.0,4.0,0.1\nc,3.0,2.0,0.1,4.0,4.0,1.0\n"
                    "d,4.0,4.0,1.0,1.0,1.0,1.0\n")
    row = results.test_metrics(path)
    assert row["quality/coverage90"] == pytest.approx(3 / 4) and row["align/coverage90"] == pytest.approx(3 / 4)
    assert row["coverage90"] == pytest.approx(3 / 4) and "js" not in row  # no raters' std in these data
    assert row["align/width90"] == pytest.approx(2 * Z90 * 0.55, rel=1e-5)
    path.write_text("file_name,quality_mos,quality_score,quality_sd\na,1.0,1.5,1.0\n")
    with pytest.raises(results.InputError, match="not a predictions file"):
        results.test_metrics(path)


@pytest.fixture
def rated_folder(tmp_path):
    """A small generated MOSFolder whose raters' std is known per image."""
    return layouts.rated_root(tmp_path / "rated", num_images=48, noisy=False)


@pytest.mark.slow
def test_the_benchmark_summary_gives_the_splits_test_coverage(rated_folder, tmp_path, benchmark_here):
    # benchmark_here: the splits' fit and test commands run in this process (the processes: test_benchmark.py)
    out = tmp_path / "bench"
    run_cli(["benchmark", "--config", DEMO, "--splits", "2", "--out", str(out), *TINY_MODEL_ARGS,
             *folder_args(rated_folder), "--trainer.max_epochs", "1", "--trainer.logger", "false",
             "--trainer.enable_progress_bar", "false", "--model.warmup_epochs", "0",
             "--model.output", "distribution", "--model.levels", "11"])
    rows = results.read_results(out)
    logged = [json.loads((out / f"split_{k}" / "test_metrics.json").read_text())["metrics"] for k in range(2)]
    for row, metrics in zip(rows, logged):  # each split's figures are its test step's
        for key in ("coverage50", "coverage90", "width90", "js", "wasserstein"):
            assert float(row[key]) == pytest.approx(metrics[f"test/{key}"], abs=1e-5), key
    summary = (out / "summary.md").read_text()
    coverage = np.mean([metrics["test/coverage90"] for metrics in logged])
    line = next(line for line in summary.splitlines() if line.startswith("| coverage of the 90% interval |"))
    assert float(line.split(" | ")[1]) == pytest.approx(coverage, abs=1e-4)
    assert "| Wasserstein distance to the raters |" in summary
    assert math.isfinite(float(rows[0]["srcc"]))


@pytest.mark.filterwarnings("ignore:logistic PLCC is NaN")  # two images: the logistic fit needs four
def test_several_targets_predictions_file_from_the_test_report(tmp_path):
    levels = torch.tensor([[0.0, 1.0, 2.0], [0.0, 5.0, 10.0]])  # each target's levels on its MOS scale
    probs = torch.tensor([[[0.2, 0.5, 0.3], [0.1, 0.1, 0.8]], [[0.6, 0.3, 0.1], [0.3, 0.4, 0.3]]])
    mos, score = torch.tensor([[1.0, 9.0], [0.5, 4.0]]), (probs * levels).sum(-1)
    batch = {"mos": mos, "mos_std": torch.tensor([[0.4, float("nan")], [0.3, float("nan")]])}  # align: no std
    outputs = {"score": score, "std": torch.tensor([[0.5, 2.0], [0.5, 0.5]]), "probs": probs}
    report = reporting.TestReport()
    report.targets = ["quality", "align"]
    report.predictions = [(name, mos[i].tolist(), score[i].tolist()) for i, name in enumerate(["a.png", "b.png"])]
    report.certainty = reporting.certainty_of_batch(SimpleNamespace(model=SimpleNamespace(mos_levels=lambda: levels)),
                                                    batch, outputs, 2)
    report.write(tmp_path, SimpleNamespace(loggers=[]))
    rows = list(csv.DictReader(open(tmp_path / run_files.PREDICTIONS_FILE)))
    assert list(rows[0]) == ["file_name", *[f"{t}_{kind}" for t in ("quality", "align")
                                            for kind in ("mos", "score", "std", "rater_std", "js", "wasserstein")]]
    assert rows[0]["align_js"] == "" and float(rows[1]["align_score"]) == pytest.approx(float(score[1, 1]))
    assert (tmp_path / "test_scatter_align.png").is_file()
    row = results.test_metrics(tmp_path / run_files.PREDICTIONS_FILE)
    expected = np.mean([jensenshannon(probs[i, 0].numpy(), raters_distribution(m, s, levels[0].numpy()))
                        for i, (m, s) in enumerate([(1.0, 0.4), (0.5, 0.3)])])
    assert row["quality/js"] == pytest.approx(expected, abs=1e-5) and "align/js" not in row
    assert row["js"] == row["quality/js"]
    assert row["align/coverage90"] == pytest.approx(0.5)  # |9 - 8.5| <= 1.645 * 2, |4 - 5| > 1.645 * 0.5
