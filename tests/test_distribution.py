"""Scores with certainty: score distributions, their loss, calibrated intervals, distances to the raters'
distribution, percentiles among the training MOS, and the columns of ``clip-agiqa score``."""

from __future__ import annotations

import csv
import json

import layouts
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import TINY_MODEL, TINY_MODEL_ARGS, run_cli, trainer_args
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from clip_agiqa.calibration import js_distance, kl_to, mean_and_std, percentile, quantiles_of, soft_labels, wasserstein
from clip_agiqa.errors import InputError


# --- the maths, against scipy and numpy ----------------------------------------------------------------------
def test_distances_equal_scipys():
    generator = torch.Generator().manual_seed(0)
    levels = torch.linspace(1.0, 9.0, 7, dtype=torch.float64)
    p = torch.rand(5, 7, generator=generator, dtype=torch.float64).softmax(-1)
    q = (3 * torch.rand(5, 7, generator=generator, dtype=torch.float64)).softmax(-1)
    q[0, :3] = 0  # empty levels are fine
    q[0] /= q[0].sum()
    for row in range(5):
        torch.testing.assert_close(js_distance(p[row], q[row]).item(), float(jensenshannon(p[row], q[row])),
                                   rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(wasserstein(p[row], q[row], levels).item(),
                                   wasserstein_distance(levels, levels, p[row], q[row]), rtol=1e-9, atol=1e-12)
    assert js_distance(p, p).abs().max() < 1e-6 and wasserstein(p, p, levels).abs().max() < 1e-12


def test_soft_labels_are_the_raters_gaussian_on_the_levels():
    levels = torch.linspace(0, 5, 51, dtype=torch.float64)
    mos, std = torch.tensor([2.0, 2.6]), torch.tensor([0.4, 0.5])
    labels = soft_labels(mos.double(), std.double(), levels)
    torch.testing.assert_close(labels.sum(-1), torch.ones(2, dtype=torch.float64))
    mean, spread = mean_and_std(labels, levels)
    torch.testing.assert_close(mean, mos.double(), atol=1e-3, rtol=0)  # far from the ends: unbiased
    torch.testing.assert_close(spread, (std.double() ** 2 + 0.1 ** 2 / 12).sqrt(), atol=2e-3, rtol=0)  # + binning
    point = soft_labels(torch.tensor([2.0]), torch.tensor([0.0]), levels.float())  # one rater: a point mass
    assert point.argmax().item() == 20 and point.max().item() > 0.999
    assert kl_to(labels, labels.clamp_min(1e-30).log()).abs().max() < 1e-9


def test_percentile_among_the_training_mos():
    rng = np.random.default_rng(0)
    training = rng.gamma(2.0, 1.0, size=(500, 2))
    quantiles = quantiles_of(torch.tensor(training))
    assert quantiles.shape == (2, 201)
    scores = torch.tensor([[0.5, 1.0], [2.0, 3.0], [-1.0, 100.0]])
    got = percentile(scores, quantiles)
    for row in range(2):
        for target in range(2):
            expected = 100 * np.mean(training[:, target] <= scores[row, target].item())
            assert abs(got[row, target].item() - expected) < 1.0  # 201 quantiles: within a percent
    assert got[2].tolist() == [0.0, 100.0]  # below every training MOS, above every one


# --- the model and its loss ------------------------------------------------------------------------------
def test_the_paper_model_and_loss_stay_exactly_as_they_were():
    from clip_agiqa import CLIPAGIQA

    task = CLIPAGIQA(**TINY_MODEL, standardise=False, prompt_norm="l2", output="score")  # the paper head
    model = task.model.eval()
    assert model.config.output == "score" and not hasattr(model, "std_scale") and model.extra_columns() == []
    assert model.head.mlp[-1].out_features == 1 and not hasattr(task, "val_abs_z")
    features = torch.randn(4, model.clip.config.projection_dim)
    prompts = F.normalize(model.quality_prompt_features(), dim=-1).flatten()
    paper = model.head.mlp(torch.cat([F.normalize(features, dim=-1), prompts.expand(4, -1)], dim=1))
    torch.testing.assert_close(model.training_scale_scores(features), paper, rtol=0, atol=0)
    mos = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    with_std = task._per_sample_loss(paper, mos, None, torch.tensor([0.5, 0.5, float("nan"), 0.2]))
    torch.testing.assert_close(with_std, ((paper - mos) ** 2).sum(-1), rtol=0, atol=0)  # std is not read


def test_a_distribution_learns_the_raters_distribution_where_their_std_is_known():
    from clip_agiqa import CLIPAGIQA

    task = CLIPAGIQA(**TINY_MODEL, output="distribution", levels=11, mos_scale=[0, 10])
    task.model.eval()  # no dropout: the same distribution each call
    features = torch.randn(2, task.model.clip.config.projection_dim)
    log_probs = task.model.training_scale_log_probs(features)
    levels = task.model.head.levels
    scores = log_probs.exp() @ levels
    mos, std = torch.tensor([[4.0], [6.0]]), torch.tensor([1.0, float("nan")])
    loss = task._per_sample_loss(scores, mos, log_probs, std)
    raters = soft_labels(torch.tensor([2.0]), torch.tensor([0.5]), levels)  # MOS 4 of 0-10 and std 1 on 0-5
    torch.testing.assert_close(loss[0], kl_to(raters, log_probs[0]).sum())
    torch.testing.assert_close(loss[1], ((scores[1] - 3.0) ** 2).sum())  # no std: the mean's regression loss
    described = task.model.distribution_of_features(features)
    torch.testing.assert_close(described["mean"], task.model.to_mos(scores))
    torch.testing.assert_close(described["levels"][0], torch.linspace(0, 10, 11))


def test_saved_quantiles_are_checked_and_an_older_model_has_no_percentiles():
    from clip_agiqa.model import CLIPAGIQAModel

    model = CLIPAGIQAModel(**TINY_MODEL)
    state = model.trained_state_dict()
    older = {k: v for k, v in state.items() if k != "mos_quantiles"}
    model.load_trained_state(older, "older.safetensors")
    assert not model.knows_percentiles and model.extra_columns() == []
    with pytest.raises(InputError, match="hostile.safetensors: mos_quantiles must be ascending"):
        model.load_trained_state({**state, "mos_quantiles": torch.linspace(5, 0, 201)[None]}, "hostile.safetensors")


def test_a_bad_std_column_names_its_rows(tmp_path):
    from clip_agiqa.data.folder import MOSFolderReader

    (tmp_path / "metadata.csv").write_text("file_name,mos,mos_std\na.png,3,0.5\nb.png,2,\nc.png,1,-1\nd.png,1,x\n")
    with pytest.raises(InputError, match=r"metadata.csv: mos_std must be .* 2 row\(s\) are not: row 4 .*row 5"):
        MOSFolderReader().read(tmp_path)
    (tmp_path / "metadata.csv").write_text("file_name,mos,mos_std\na.png,3,0.5\nb.png,2,\n")
    first, second = MOSFolderReader().read(tmp_path)
    assert first.stds == {"mos": 0.5} and np.isnan(second.stds["mos"])


# --- end to end: fit, test, export, score ------------------------------------------------------------------
@pytest.fixture(scope="module")
def rated_root(tmp_path_factory):
    """A generated set whose raters' std is known per image: MOS = the picture's quality + N(0, std)."""
    return layouts.rated_root(tmp_path_factory.mktemp("rated"), num_images=200, noisy=True)


@pytest.fixture(scope="module")
def fitted(rated_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    args = [*TINY_MODEL_ARGS, "--model.output", "distribution", "--model.levels", "11", "--model.optimizer", "adamw",
            "--model.lr", "0.003", "--model.warmup_epochs", "0", "--data", "MOSFolder", "--data.root", str(rated_root),
            "--data.batch_size", "16", "--data.num_workers", "0", "--data.cache_views", "1",
            "--data.val_size", "0.35", "--data.test_size", "0.35", *trainer_args(run, epochs=4),
            "--model.standardise", "false"]  # as measured; the default's standardised head covers 69 of 70 (0.986)
    fit = run_cli(["fit", *args])
    checkpoint = run / "checkpoints" / "best.ckpt"
    test = run_cli(["test", *args, "--ckpt_path", str(checkpoint)])
    return run, checkpoint, fit, test


def test_the_90_percent_interval_covers_the_test_mos(fitted):
    run, _, fit, test = fitted
    metrics = {k: float(v) for k, v in test.trainer.callback_metrics.items()}
    assert 0.80 <= metrics["test/coverage90"] <= 0.98, metrics
    assert 0.3 <= metrics["test/coverage50"] <= 0.7, metrics
    assert 0 < metrics["test/width50"] < metrics["test/width90"]
    assert 0 < metrics["test/js"] <= np.sqrt(np.log(2)) and metrics["test/wasserstein"] > 0  # the data has std
    assert fit.model.model.std_scale.item() != 1.0  # fitted on the validation split (and saved: see below)
    assert (run / "test_reliability.png").stat().st_size > 0 and (run / "test_scatter.png").is_file()


def test_score_writes_a_std_and_a_percentile_per_target(fitted, rated_root, tmp_path):
    from clip_agiqa import export_checkpoint, load
    from clip_agiqa.saved import read_checkpoint
    from clip_agiqa.scoring import main as score

    run, checkpoint, fit, _ = fitted
    folder = export_checkpoint(checkpoint, tmp_path / "model")
    card = (folder / "README.md").read_text()
    assert "higher is better" in card and "`mos_std`" in card and "`mos_percentile`" in card
    scorer = load(folder)
    model = scorer.model
    # The training split's MOS distribution was kept (201 quantiles), and the calibration scale with it.
    splits = {r["file_name"]: r["split"] for r in csv.DictReader(open(run / "checkpoints" / "splits.csv"))}
    train_mos = [float(r["mos"]) for r in csv.DictReader(open(rated_root / "metadata.csv"))
                 if splits[r["file_name"]] == "train"]
    torch.testing.assert_close(model.mos_quantiles[0].double(),
                               torch.tensor(np.quantile(train_mos, np.linspace(0, 1, 201))), atol=1e-4, rtol=0)
    assert model.std_scale.item() == read_checkpoint(checkpoint).state["std_scale"].item() != 1.0
    names = sorted(splits)[:6]
    output = score([str(folder), *(str(rated_root / n) for n in names), "--output", str(tmp_path / "scores.csv"),
                    "--num_workers", "0"])
    rows = list(csv.DictReader(open(output)))
    assert list(rows[0]) == ["file_name", "score", "mos_std", "mos_percentile", "error"]
    described = model.predict_distribution(torch.stack([scorer.transform(_image(rated_root / n)) for n in names]))
    for row, mean, std in zip(rows, described["mean"][:, 0], described["std"][:, 0]):
        torch.testing.assert_close(float(row["score"]), mean.item(), atol=1e-4, rtol=0)
        torch.testing.assert_close(float(row["mos_std"]), std.item(), atol=1e-4, rtol=0)
        assert abs(float(row["mos_percentile"]) - 100 * np.mean(np.array(train_mos) <= mean.item())) < 1.5
    assert json.loads((folder / "config.json").read_text())["output"] == "distribution"
    assert scorer(str(rated_root / names[0])) == pytest.approx(float(rows[0]["score"]), abs=1e-4)  # still a number


def _image(path):
    from PIL import Image

    return Image.open(path).convert("RGB")


def test_predict_writes_the_same_columns_as_score(fitted, tmp_path):
    run, checkpoint, _, _ = fitted
    args = [*TINY_MODEL_ARGS, "--model.output", "distribution", "--model.levels", "11", "--data", "MOSFolder",
            "--data.root", str(fitted[2].datamodule.root), "--data.num_workers", "0",
            "--data.val_size", "0.35", "--data.test_size", "0.35", *trainer_args(tmp_path),
            "--predictions.output", str(tmp_path / "predictions.csv"), "--ckpt_path", str(checkpoint)]
    run_cli(["predict", *args])
    rows = list(csv.DictReader(open(tmp_path / "predictions.csv")))
    assert list(rows[0]) == ["file_name", "score", "mos_std", "mos_percentile", "error"] and len(rows) == 70
    assert all(float(r["mos_std"]) > 0 and 0 <= float(r["mos_percentile"]) <= 100 for r in rows)


def test_a_fit_with_no_model_options_gives_a_std_where_the_data_has_the_raters_std(rated_root, synthetic_root,
                                                                                    tmp_path):
    """The default output: a distribution where the training data gives ``mos_std`` (so ``score`` writes a std and a
    percentile), one score where it does not (nothing would train each picture's spread)."""
    from clip_agiqa import export_checkpoint
    from clip_agiqa.scoring import main as score

    data = ["--data", "MOSFolder", "--data.batch_size", "16", "--data.num_workers", "0"]
    size = ["--model.backbone", "random:tiny", "--model.n_ctx", "2", "--model.hidden_dim", "8"]  # no recipe option
    rated = run_cli(["fit", *size, *data, "--data.root", str(rated_root), *trainer_args(tmp_path / "rated")])
    assert rated.model.model.config.output == "distribution" and rated.model.model.config.standardise
    folder = export_checkpoint(tmp_path / "rated" / "checkpoints" / "best.ckpt", tmp_path / "model")
    name = next(p for p in sorted(rated_root.iterdir()) if p.suffix == ".png")
    rows = list(csv.DictReader(open(score([str(folder), str(name), "--output", str(tmp_path / "scores.csv"),
                                           "--num_workers", "0"]))))
    assert list(rows[0]) == ["file_name", "score", "mos_std", "mos_percentile", "error"]
    assert float(rows[0]["mos_std"]) > 0 and 0 <= float(rows[0]["mos_percentile"]) <= 100
    plain = run_cli(["fit", *size, *data, "--data.root", str(synthetic_root), *trainer_args(tmp_path / "plain")])
    assert plain.model.model.config.output == "score"
    given = run_cli(["fit", *size, *data, "--data.root", str(rated_root), "--model.output", "score",
                     *trainer_args(tmp_path / "given")])
    assert given.model.model.config.output == "score"  # a typed output is kept
