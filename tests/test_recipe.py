"""The default recipe on a stranger's data: a fine-tune as the README types it, a head that starts on the MOS scale,
and a fit that says when its validation set is too small to choose a checkpoint on."""

import csv
import shutil
import warnings

import pytest
import torch
from experiment_helpers import fit_tiny, folder_args
from helpers import TINY_MODEL, run_cli, trainer_args

from clip_agiqa.module import MIN_VALIDATION, leave_architecture_to_start, typed_model_fields


@pytest.fixture(scope="module")
def shifted_root(synthetic_root, tmp_path_factory):
    """The synthetic pictures with MOS on a 60-110 scale: an untrained head's outputs near 0 are far off it."""
    root = tmp_path_factory.mktemp("shifted")
    with open(synthetic_root / "metadata.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        shutil.copy(synthetic_root / row["file_name"], root / row["file_name"])
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "mos"])
        writer.writerows([(row["file_name"], 60 + 10 * float(row["mos"])) for row in rows])
    return root


@pytest.fixture(scope="module")
def start(synthetic_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("start")
    fit_tiny(synthetic_root, run_dir)  # a fit's default: standardise true
    return run_dir / "checkpoints" / "best.ckpt"


def test_a_config_part_never_contradicts_the_checkpoint_a_fine_tune_starts_from(start, synthetic_root, tmp_path):
    """Seen: `--model.standardise False differs from True of init_from`, from a composed config part the user
    never typed."""
    part = tmp_path / "paper_part.yaml"
    part.write_text("model:\n  class_path: clip_agiqa.CLIPAGIQA\n  init_args:\n    standardise: false\n"
                    "    n_ctx: 16\n    hidden_dim: 512\n")
    fine_tune = ["fit", "--config", str(part), *folder_args(synthetic_root), "--model.init_from", str(start)]
    cli = run_cli([*fine_tune, *trainer_args(tmp_path / "ft")])
    assert cli.model.hparams.standardise is True and cli.model.hparams.n_ctx == 4
    assert cli.model.hparams.hidden_dim == 16
    with pytest.raises(ValueError, match="standardise False differs from True of init_from"):
        run_cli([*fine_tune, *trainer_args(tmp_path / "typed"), "--model.standardise", "false"])


def test_typed_fields_are_told_from_config_parts():
    assert typed_model_fields(["fit", "--config", "x.yaml", "--model.n_ctx", "4", "--model.init_args.head=concat",
                               "--data.root", "d"]) == {"n_ctx", "head"}
    options = {"init_from": "a.ckpt", "n_ctx": 16, "head": "concat", "lr": 0.1}
    leave_architecture_to_start(options, {"head"})
    assert options == {"init_from": "a.ckpt", "n_ctx": None, "head": "concat", "lr": 0.1}
    fresh = {"init_from": None, "n_ctx": 16}
    leave_architecture_to_start(fresh, set())
    assert fresh["n_ctx"] == 16  # no start: the config part is the architecture


def test_an_epoch_0_checkpoint_predicts_near_the_training_mean(shifted_root, tmp_path):
    """Seen: an epoch-0 best.ckpt predicted -0.19..-0.05 on a 1-5 task. The head starts at the training MOS mean,
    and the warm-up epoch (lr 1e-5) leaves it there."""
    fit = fit_tiny(shifted_root, tmp_path)
    best = fit.trainer.checkpoint_callback.best_model_path
    run_cli(["test", "--ckpt_path", best, "--data", "MOSFolder", "--data.root", str(shifted_root),
             "--data.num_workers", "0", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
             "--trainer.default_root_dir", str(tmp_path)])
    with open(tmp_path / "test_predictions.csv", newline="") as handle:
        scores = torch.tensor([float(row["score"]) for row in csv.DictReader(handle)])
    datamodule = fit.datamodule
    mos = torch.tensor([r.mos for r in datamodule.split_records("train")], dtype=torch.float64).flatten()
    assert mos.min() <= scores.min() and scores.max() <= mos.max()
    assert (scores - mos.mean()).abs().max() < 0.1 * (mos.max() - mos.min())  # a mean predictor, at worst


def test_a_resumed_or_fine_tuned_head_is_not_restarted(start, synthetic_root, tmp_path):
    from clip_agiqa import CLIPAGIQA

    before = CLIPAGIQA.load_from_checkpoint(start).model.head.mlp[-1].bias.clone()
    cli = fit_tiny(synthetic_root, tmp_path, "--model.init_from", str(start), "--model.trainable", "prompt")
    assert torch.equal(cli.model.model.head.mlp[-1].bias, before)  # exact: copied from the checkpoint, never trained


def test_a_small_validation_split_says_so_in_one_line(synthetic_root, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit_tiny(synthetic_root, tmp_path)
    said = [str(w.message) for w in caught if "validation split has" in str(w.message)]
    assert len(said) == 1 and "\n" not in said[0]
    assert f"at least {MIN_VALIDATION}" in said[0] and "--data.val_size" in said[0]


def test_intervals_stay_inside_the_mos_scale():
    """Seen: 37 of 80 90% intervals reached outside the MOS scale (symmetric around the score)."""
    from clip_agiqa.calibration import central_interval
    from clip_agiqa.metrics import CalibrationMetrics

    mean, std = torch.tensor([1.2, 3.0, 4.9]), torch.tensor([1.0, 0.5, 1.0])
    lower, upper = central_interval(mean, std, 0.9, (1.0, 5.0))
    assert (lower >= 1.0).all() and (upper <= 5.0).all() and (lower < mean).all() and (upper > mean).all()
    metrics = CalibrationMetrics("test/")
    levels = torch.linspace(1.0, 5.0, 5)
    probs = torch.full((3, 5), 0.2)
    metrics.update(torch.tensor([1.0, 3.1, 5.0]), mean, std, probs, levels)
    values = metrics.compute()
    assert float(values["test/coverage90"]) == pytest.approx(1.0)
    assert float(values["test/width90"]) == pytest.approx(float((upper - lower).mean()), abs=1e-6)
    assert float(values["test/width90"]) < 2 * 1.645 * float(std.mean())  # cut at the scale's ends


@pytest.mark.parametrize("output", ["score", "distribution"])
def test_a_started_head_predicts_the_training_mean(output):
    from clip_agiqa import CLIPAGIQA

    torch.manual_seed(0)
    task = CLIPAGIQA(**TINY_MODEL, output=output).eval()
    mos = torch.tensor([[1.0], [2.0], [4.0], [4.5]])  # on the default 0-5 scale: the training scale
    features = torch.randn(8, task.model.clip.config.projection_dim)
    task._start_head_at_training_mos(mos)
    with torch.no_grad():
        scores = task.model.training_scale_scores(features)
    assert (scores - mos.mean()).abs().max() < 0.3  # before: the untrained head's outputs, anywhere near 0
