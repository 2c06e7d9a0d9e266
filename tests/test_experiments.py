"""Every shipped experiment config runs through the CLI (shrunk to the tiny model, a tiny root in its
dataset's real layout, a couple of steps), so no config can rot; and each says what it promises."""

import warnings

import pytest
import yaml

from conftest import REPO, run_cli
from experiment_helpers import no_wandb_run_left  # noqa: F401 (used by pytestmark)
from experiment_helpers import as_flags, config_data_class, make_data_root, shrink_args

pytestmark = pytest.mark.usefixtures("no_wandb_run_left")

EXPERIMENTS = REPO / "experiments"
OVERLAYS = {"wandb.yaml"}  # added with one more --config on top of another
CONFIGS = sorted(p.name for p in EXPERIMENTS.glob("*.yaml") if p.name not in OVERLAYS)
BENCHMARKS = [name for name in CONFIGS if name not in ("demo.yaml", "custom.yaml")]


def load(name: str) -> dict:
    return yaml.safe_load((EXPERIMENTS / name).read_text())


@pytest.mark.parametrize("name", CONFIGS)
def test_config_fits_and_tests_through_the_cli(name, synthetic_root, tmp_path):
    data_root, data_extra = make_data_root(config_data_class(load(name)), tmp_path, synthetic_root)
    run_dir = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # AGIQA-1K's duplicated name, the paper split's warning
        cli = run_cli(["fit", "--config", str(EXPERIMENTS / name), *as_flags(shrink_args(data_root, run_dir, data_extra))])
        tested = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False)[0]
    assert {"test/srcc", "test/plcc", "test/krcc", "test/rmse"} <= set(tested)
    assert (run_dir / "checkpoints" / "splits.csv").is_file() and (run_dir / "test_scatter.png").is_file()


def test_wandb_overlay_adds_a_wandb_logger(synthetic_root, tmp_path):
    data_root, data_extra = make_data_root("SyntheticAIGI", tmp_path, synthetic_root)
    shrink = shrink_args(data_root, tmp_path / "run", data_extra)
    cli = run_cli(["fit", "--config", str(EXPERIMENTS / "demo.yaml"), "--config", str(EXPERIMENTS / "wandb.yaml"),
                   *as_flags(shrink, skip={"trainer.logger"}), "--trainer.logger.init_args.offline", "true"])
    from lightning.pytorch.loggers import WandbLogger

    assert isinstance(cli.trainer.logger, WandbLogger)
    assert cli.trainer.logger.save_dir == str(tmp_path / "run")  # W&B files in the run folder


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_config_names_its_recipe_and_protocol(name):
    config = load(name)
    model, data = config["model"]["init_args"], config["data"]["init_args"]
    for key in ("backbone", "head", "categories", "n_ctx", "optimizer", "lr", "weight_decay", "warmup_epochs",
                "frozen_dtype"):
        assert key in model, f"{name}: model.{key} is not set"
    assert "precision" in config["trainer"] and "max_epochs" in config["trainer"], name
    assert "root" not in data, f"{name}: the root is given on the command line (--data.root)"
    assert data["split"] == ("paper" if name.startswith("paper_") else "prompt"), name
    assert config["trainer"]["default_root_dir"] == f"runs/{name[:-5]}"
