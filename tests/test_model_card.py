"""The model card says how its intervals held on its test split: `clip-agiqa export` takes the figures
`clip-agiqa test` logged for that very checkpoint (test_metrics.json, matched by SHA-256, epoch and step, and
confirmed by the test's row in metrics.csv), and says "not measured"
where there are none; it never shows another checkpoint's figures."""

import csv
import json
import shutil

import pytest
from experiment_helpers import folder_args
from helpers import TINY_MODEL, TINY_MODEL_ARGS, run_cli, trainer_args

from clip_agiqa import CLIPAGIQA
from clip_agiqa.errors import InputError

NOT_MEASURED = "- Interval coverage on a test split: not measured"


@pytest.fixture(scope="module")
def tested(tmp_path_factory):
    """A distribution model fitted for one epoch on data with the raters' std, and tested once."""
    from clip_agiqa.data import write_synthetic_dataset

    root, run = tmp_path_factory.mktemp("rated"), tmp_path_factory.mktemp("run")
    write_synthetic_dataset(root, num_images=40, picture_size=32, seed=0)
    rows = list(csv.DictReader(open(root / "metadata.csv")))
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "mos", "mos_std"])
        writer.writerows([row["file_name"], row["mos"], "0.5"] for row in rows)
    args = [*TINY_MODEL_ARGS, *folder_args(root), *trainer_args(run, epochs=1), "--model.output", "distribution",
            "--model.levels", "11", "--model.warmup_epochs", "0",
            "--trainer.logger", "true"]  # metrics.csv: its test row confirms test_metrics.json
    run_cli(["fit", *args])
    checkpoint = run / "checkpoints" / "best.ckpt"
    test = run_cli(["test", *args, "--ckpt_path", str(checkpoint)])
    return run, checkpoint, {k: float(v) for k, v in test.trainer.callback_metrics.items()}


def test_the_card_gives_the_coverage_its_test_measured(tested, tmp_path):
    run, checkpoint, logged = tested
    recorded = json.loads((run / "test_metrics.json").read_text())
    assert recorded["metrics"] == pytest.approx({k: v for k, v in logged.items() if k.startswith("test/")})
    assert recorded["checkpoint"] == str(checkpoint.resolve()) and recorded["n_test"] > 0
    run_cli(["export", str(checkpoint), str(tmp_path / "model")])
    card = (tmp_path / "model" / "README.md").read_text()
    assert (f"- Interval coverage on its test split, measured by `clip-agiqa test` of this checkpoint: the 50% "
            f"interval holds {100 * logged['test/coverage50']:.1f}% of the test MOS, the 90% interval "
            f"{100 * logged['test/coverage90']:.1f}%") in card
    for name in ("test/srcc", "test/plcc", "test/coverage90", "test/js"):
        assert f"| {name} | {logged[name]:.4f} |" in card
    assert NOT_MEASURED not in card
    training = json.loads((tmp_path / "model" / "config.json").read_text())["training"]
    assert training["test/coverage90"] == pytest.approx(logged["test/coverage90"])


def test_without_a_test_of_that_checkpoint_the_card_says_not_measured(tested, tmp_path):
    run, checkpoint, _ = tested
    elsewhere = tmp_path / "copied" / "checkpoints" / "best.ckpt"  # a run folder without test results
    elsewhere.parent.mkdir(parents=True)
    shutil.copy(checkpoint, elsewhere)
    run_cli(["export", str(elsewhere), str(tmp_path / "untested")])
    card = (tmp_path / "untested" / "README.md").read_text()
    assert NOT_MEASURED in card and "test/" not in card and "val/srcc" in card
    results = json.loads((run / "test_metrics.json").read_text())
    (elsewhere.parent.parent / "test_metrics.json").write_text(json.dumps({**results, "checkpoint_sha256": "0" * 64}))
    run_cli(["export", str(elsewhere), str(tmp_path / "other")])  # another checkpoint's figures: never shown
    card = (tmp_path / "other" / "README.md").read_text()
    assert NOT_MEASURED in card and "test/" not in card
    (elsewhere.parent.parent / "test_metrics.json").write_text("{not json")
    with pytest.raises(InputError, match=r"copied/test_metrics.json: not the test results `clip-agiqa test` writes"):
        run_cli(["export", str(elsewhere), str(tmp_path / "damaged")])
    assert not (tmp_path / "damaged").exists()
    (elsewhere.parent.parent / "test_metrics.json").write_text("[" * 2_000_000)  # neither read whole nor parsed
    with pytest.raises(InputError, match=r"test_metrics.json is 2,000,000 bytes, more than the 1,048,576"):
        run_cli(["export", str(elsewhere), str(tmp_path / "huge")])
    assert not (tmp_path / "huge").exists()


def test_each_target_gets_its_coverage_line_and_a_score_model_none():
    model = CLIPAGIQA(**TINY_MODEL, output="distribution", levels=5,
                      targets=["quality", "align"]).model
    model.training_info = {"test/quality/coverage50": 0.52, "test/quality/coverage90": 0.875}
    card = str(model.generate_model_card())
    assert ("- Interval coverage on its test split (quality), measured by `clip-agiqa test` of this checkpoint: the "
            "50% interval holds 52.0% of the test MOS, the 90% interval 87.5%") in card
    assert "- Interval coverage on a test split (align): not measured" in card
    paper = CLIPAGIQA(**TINY_MODEL, output="score").model
    paper.training_info = {"test/srcc": 0.5}
    card = str(paper.generate_model_card())
    assert "Interval coverage" not in card and "| test/srcc | 0.5000 |" in card
