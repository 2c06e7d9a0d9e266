"""Every W&B sweep: its command rendered exactly as the W&B agent renders it (wandb's own helpers,
``${args}`` -> ``--key=value``), with values from each parameter's range, runs for a step, and every
swept value arrives in the CLI's config as meant."""

import os

import pytest
import yaml
from experiment_helpers import (
    as_flags,
    configured,
    data_class,
    fit_tiny,
    make_data_root,
    shrink_args,
)
from helpers import REPO, run_cli

pytestmark = pytest.mark.usefixtures("no_wandb_run_left")

SWEEPS = sorted((REPO / "experiments" / "sweeps").glob("*.yaml"))
ENDS = ("low", "high")


def parameter_value(spec: dict, end: str):
    """The first/last listed value, or the min/max of a distribution."""
    if "value" in spec:
        return spec["value"]
    if "values" in spec:
        return spec["values"][0 if end == "low" else -1]
    return spec["min" if end == "low" else "max"]


def agent_command(sweep: dict, values: dict, before_args: list[str]) -> list[str]:
    """The argv the W&B agent builds (wandb_agent.Agent._command_run), with ``before_args`` ahead of ${args}."""
    from wandb.sdk.launch.sweeps import utils as sweep_utils

    command = sweep_utils.create_sweep_command(list(sweep["command"]))
    sweep_vars = sweep_utils.create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})
    sweep_vars.update(interpreter=["python"], program=[sweep["program"]], env=["/usr/bin/env"])
    sweep_vars["args"] = before_args + sweep_vars["args"]
    argv = []
    for chunk in map(str, command):
        argv += sweep_vars.get(chunk[2:-1]) or [] if chunk.startswith("${") and chunk.endswith("}") else [chunk]
    return argv


def command_configs(sweep: dict) -> list:
    """The config files the sweep's command composes, in order."""
    command = [str(c) for c in sweep["command"]]
    return [REPO / command[i + 1] for i, token in enumerate(command) if token == "--config"]


def normal(value):
    """A swept value as the CLI should hold it: "null" is None, lists and tuples compare alike."""
    return None if value == "null" else list(value) if isinstance(value, (list, tuple)) else value


def test_every_sweep_is_an_honest_agent_sweep():
    assert SWEEPS
    for path in SWEEPS:
        sweep = yaml.safe_load(path.read_text())
        command = [str(c) for c in sweep["command"]]
        assert command[-1] == "${args}" and command[1:3] == ["clip-agiqa", "fit"], path.name
        assert sweep["metric"]["name"].startswith("val/"), f"{path.name}: a sweep must never select on test"
        assert all(config.is_file() for config in command_configs(sweep)), f"{path.name}: a --config is missing"
        for key, spec in sweep["parameters"].items():
            assert spec.get("values", [0]) and all(v is not None for v in spec.get("values", [])), \
                f"{path.name}: {key}: write null as \"null\" (the agent turns None into the text 'None')"


@pytest.mark.parametrize("end", ENDS)
@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_command_runs_with_values_from_each_range(path, end, synthetic_root, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the agent runs from the repository root
    sweep = yaml.safe_load(path.read_text())
    data_root, data_extra = make_data_root(data_class(command_configs(sweep)), tmp_path, synthetic_root)
    monkeypatch.setenv("DATA_ROOT", str(data_root))
    if "INIT_FROM" in str(sweep["command"]):
        fit_tiny(synthetic_root, tmp_path / "start", "--model.standardise", "false")  # as the sweep's paper recipe
        monkeypatch.setenv("INIT_FROM", str(tmp_path / "start" / "checkpoints" / "best.ckpt"))
    values = {key: parameter_value(spec, end) for key, spec in sweep["parameters"].items()}
    shrink = as_flags(shrink_args(data_root, tmp_path / "run", data_extra), skip=set(values))
    argv = agent_command(sweep, values, shrink)
    assert argv[:2] == ["/usr/bin/env", "clip-agiqa"] and all("${" not in a for a in argv)
    assert os.environ["DATA_ROOT"] in " ".join(argv)

    cli = run_cli(argv[2:])
    assert cli.trainer.global_step >= 1
    config = cli.config["fit"]
    for key, value in values.items():
        assert normal(configured(config, key)) == normal(value), key
