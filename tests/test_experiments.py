"""The experiment configs compose: a data part, a model part and a protocol part, each given with one more
``--config``. Every combination the docs ship runs through the CLI (shrunk to the tiny model, a tiny root
in its dataset's real layout, a couple of steps), so none can rot; each part says what it promises."""

import math
import warnings

import pytest
import yaml
from experiment_helpers import (
    as_flags,
    configured,
    data_class,
    make_data_root,
    shrink_args,
)
from helpers import REPO, run_cli

from clip_agiqa.run_files import scatter_file

pytestmark = pytest.mark.usefixtures("no_wandb_run_left")

EXPERIMENTS = REPO / "experiments"
PROMPT_DISJOINT = ("model/clip_agiqa.yaml", "protocol/prompt_disjoint.yaml")
PROMPT_AWARE = ("model/clip_agiqa_prompt.yaml", "protocol/prompt_disjoint.yaml")
BENCHMARK_PARTS = ("agiqa3k_quality", "agiqa3k_align", "agiqa1k", "aigciqa2023_quality", "aigciqa2023_authenticity",
                   "aigciqa2023_correspondence", "aigciqa20k")
ALL_TARGETS_PARTS = ("agiqa3k_all_targets", "aigciqa2023_all_targets")  # several targets in one model
# The shipped combinations (tests/test_docs.py checks that the docs name exactly these): data part, model part,
# protocol part.
COMBINATIONS = [
    *[(f"data/{name}.yaml", *PROMPT_DISJOINT) for name in BENCHMARK_PARTS],
    ("data/agiqa3k_quality.yaml", "model/clip_agiqa.yaml", "protocol/paper.yaml"),
    ("data/custom.yaml", "model/clip_agiqa.yaml", "protocol/random.yaml"),
    ("data/custom.yaml", "model/clip_agiqa_standardised.yaml", "protocol/random.yaml"),  # standardised inputs
    ("demo.yaml",),  # one self-contained file (make demo)
    *[(f"data/{name}.yaml", *PROMPT_AWARE) for name in BENCHMARK_PARTS + ALL_TARGETS_PARTS],
    *[(f"data/{name}.yaml", *PROMPT_DISJOINT) for name in ALL_TARGETS_PARTS],
    # EvalMi-50K: perception alone, and correspondence (alone and with perception) read with the prompt
    ("data/evalmi50k_perception.yaml", *PROMPT_DISJOINT),
    ("data/evalmi50k_correspondence.yaml", *PROMPT_AWARE),
    ("data/evalmi50k_all_targets.yaml", *PROMPT_AWARE),
]
OVERLAYS = {"wandb.yaml"}  # added with one more --config on top of a combination
PARTS = {kind: sorted(p.name for p in (EXPERIMENTS / kind).glob("*.yaml")) for kind in ("data", "model", "protocol")}


def load(name: str) -> dict:
    return yaml.safe_load((EXPERIMENTS / name).read_text())


def flat(tree: dict, prefix: str = "") -> dict:
    """Nested YAML as dotted keys (``model.init_args.lr``) -> leaf values."""
    items = {}
    for key, value in tree.items():
        items.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return items


def normal(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def combination_id(parts) -> str:
    return "+".join(p.rsplit("/", 1)[-1][:-5] for p in parts)


@pytest.mark.parametrize("parts", COMBINATIONS, ids=combination_id)
def test_combination_fits_and_tests_through_the_cli(parts, synthetic_root, tmp_path):
    data_root, data_extra = make_data_root(data_class([EXPERIMENTS / p for p in parts]), tmp_path, synthetic_root)
    run_dir = tmp_path / "run"
    shrink = shrink_args(data_root, run_dir, data_extra)
    configs = [token for part in parts for token in ("--config", str(EXPERIMENTS / part))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # AGIQA-1K's duplicated name, the paper split's warning
        cli = run_cli(["fit", *configs, *as_flags(shrink)])
        tested = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False)[0]
    targets = cli.model.model.targets
    assert targets == cli.datamodule.targets
    assert cli.model.model.use_prompt == (PROMPT_AWARE[0] in parts)
    per_target = [""] if len(targets) == 1 else [f"{target}/" for target in targets]
    expected_metrics = {f"test/{t}{name}" for t in per_target for name in ("srcc", "plcc", "krcc", "rmse")}
    for name in expected_metrics | {"test/srcc"}:  # defined on these roots: neither MOS nor scores are constant
        assert math.isfinite(tested[name]), f"{name} of {parts} is {tested[name]}"
    assert (run_dir / "checkpoints" / "splits.csv").is_file()
    assert all((run_dir / scatter_file(target, targets)).is_file() for target in targets)

    # Every value each part sets reaches the run (a later part wins), unless the smoke run shrinks it.
    shrunk = {key.replace(".", ".init_args.", 1) if key.startswith(("model.", "data.")) else key for key in shrink}
    expected = {key: value for part in parts for key, value in flat(load(part)).items()}
    for key, value in expected.items():
        if key not in shrunk:
            assert normal(configured(cli.config["fit"], key)) == normal(value), f"{key} of {parts}"


def test_benchmark_runs_a_combination_into_the_data_parts_folder(synthetic_root, tmp_path, monkeypatch,
                                                                  benchmark_here):
    parts = COMBINATIONS[0]
    data_root, data_extra = make_data_root(data_class([EXPERIMENTS / p for p in parts]), tmp_path, synthetic_root)
    monkeypatch.chdir(tmp_path)  # the default results folder is relative: runs/benchmark/<first config's name>
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_cli(["benchmark", *[t for p in parts for t in ("--config", str(EXPERIMENTS / p))], "--splits", "1",
                 *as_flags(shrink_args(data_root, tmp_path / "unused", data_extra))])
    out = tmp_path / "runs" / "benchmark" / "agiqa3k_quality"
    assert (out / "results.csv").is_file() and (out / "split_0" / "checkpoints" / "best.ckpt").is_file()


def test_wandb_overlay_adds_a_wandb_logger(synthetic_root, tmp_path):
    data_root, data_extra = make_data_root("SyntheticAIGI", tmp_path, synthetic_root)
    shrink = shrink_args(data_root, tmp_path / "run", data_extra)
    cli = run_cli(["fit", "--config", str(EXPERIMENTS / "demo.yaml"), "--config", str(EXPERIMENTS / "wandb.yaml"),
                   *as_flags(shrink, skip={"trainer.logger"}), "--trainer.logger.init_args.offline", "true"])
    from lightning.pytorch.loggers import WandbLogger

    assert isinstance(cli.trainer.logger, WandbLogger)
    assert cli.trainer.logger.save_dir == str(tmp_path / "run")  # W&B files in the run folder


def printed_config(capsys, parts) -> str:
    with pytest.raises(SystemExit):
        run_cli(["fit", *[t for p in parts for t in ("--config", str(EXPERIMENTS / p))], "--print_config"])
    return capsys.readouterr().out


def test_data_and_model_parts_compose_in_either_order(capsys):
    data, model, protocol = COMBINATIONS[0]
    assert printed_config(capsys, (data, model, protocol)) == printed_config(capsys, (model, data, protocol))


@pytest.mark.parametrize("name", PARTS["model"])
def test_model_part_names_the_whole_recipe(name):
    config = load(f"model/{name}")
    assert set(config) == {"model"}, f"model/{name}: a model part sets only the model"
    model = config["model"]["init_args"]
    for key in ("backbone", "head", "categories", "n_ctx", "hidden_dim", "dropout", "loss", "optimizer", "lr",
                "momentum", "weight_decay", "warmup_epochs", "warmup_lr", "use_prompt"):
        assert key in model, f"model/{name}: model.{key} is not set"


@pytest.mark.parametrize("name", PARTS["data"])
def test_data_part_names_the_dataset_and_its_run_folder_only(name):
    config = load(f"data/{name}")
    assert flat(config.get("trainer", {})) == {"default_root_dir": f"runs/{name[:-5]}"}, name
    assert set(config) == {"trainer", "data"} and "class_path" in config["data"], name
    data = config["data"]["init_args"]
    assert "root" not in data, f"data/{name}: the root is given on the command line (--data.root)"
    assert not {"split", "test_size", "val_size", "seed"} & set(data), f"data/{name}: the split is the protocol's"


@pytest.mark.parametrize("name", PARTS["protocol"])
def test_protocol_part_names_split_schedule_precision_and_selection(name):
    config = load(f"protocol/{name}")
    assert {"precision", "max_epochs", "devices"} <= set(config["trainer"]), name
    assert config["checkpoint"]["monitor"] == "val/srcc" and config["checkpoint"]["mode"] == "max", name
    assert "split" in config["data"]["init_args"] and "class_path" not in config["data"], name
    assert set(config["model"]) == {"init_args"} and set(config["model"]["init_args"]) == {"frozen_dtype"}, \
        f"protocol/{name}: a protocol sets the model's precision only (the recipe is the model part's)"


def test_no_config_sets_the_mos_scale():
    """The MOS scale comes from the datamodule: a config that set it would fight the data."""
    for path in EXPERIMENTS.rglob("*.yaml"):
        assert "mos_scale" not in path.read_text(), f"{path.relative_to(REPO)} sets mos_scale"


def test_every_part_is_in_a_tested_combination():
    used = {part for parts in COMBINATIONS for part in parts}
    unused = [f"{kind}/{name}" for kind, names in PARTS.items() for name in names if f"{kind}/{name}" not in used]
    assert not unused, f"not in any tested combination: {unused}"
