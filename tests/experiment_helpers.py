"""Helpers shared by the experiments tests (export, fine-tuning, W&B, benchmark, configs, sweeps)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import TINY_MODEL_ARGS, run_cli, trainer_args


@pytest.fixture
def no_wandb_run_left():
    """Close any W&B run a test opened (even a disabled one): the next WandbLogger would reuse it."""
    yield
    from clip_agiqa.benchmark.command import finish_wandb_run

    finish_wandb_run()


def folder_args(root: Path, batch_size: int = 8) -> list[str]:
    return ["--data", "MOSFolder", "--data.root", str(root), "--data.batch_size", str(batch_size),
            "--data.num_workers", "0"]


def fit_tiny(data_root: Path, run_dir: Path, *extra: str, epochs: int = 1):
    """A one-epoch fit of the tiny model on a MOSFolder; returns the CLI (its trainer holds the best path)."""
    return run_cli(["fit", *TINY_MODEL_ARGS, *folder_args(data_root), *trainer_args(run_dir, epochs), *extra])


def trained_parts(model) -> dict:
    """The prompt context, head and scale tensors (what checkpoints and exports hold) of a CLIPAGIQAModel or of
    the training task around one, cloned."""
    network = getattr(model, "model", model)
    return {k: v.detach().clone() for k, v in network.trained_state_dict().items()}


# --- shrinking a shipped config to a smoke run ---------------------------------------------------------
def data_class(config_paths) -> str:
    """The data class that composed configs name (the last one that names one wins, as in the CLI)."""
    import yaml

    named = [config["data"]["class_path"] for config in map(yaml.safe_load, map(Path.read_text, config_paths))
             if "class_path" in (config or {}).get("data", {})]
    assert named, f"none of {[str(p) for p in config_paths]} names a data class_path"
    return named[-1].rsplit(".", 1)[-1]


def make_data_root(data_class: str, tmp: Path, synthetic_root: Path) -> tuple[Path, dict]:
    """A tiny root in the real layout of ``data_class``, and extra data arguments that shrink it."""
    import shutil

    from layouts import agiqa1k_root, agiqa3k_root, aigciqa20k_root, aigciqa2023_root, evalmi50k_root

    builders = {"AGIQA3K": agiqa3k_root, "AGIQA1K": agiqa1k_root, "AIGCIQA20K": aigciqa20k_root,
                "EvalMi50K": evalmi50k_root}
    root = tmp / data_class
    if data_class in builders:
        root.mkdir(parents=True)
        return builders[data_class](root), {}
    if data_class == "AIGCIQA2023":  # 2,400 placeholders: built once, read-only
        shared = tmp.parent / "aigciqa2023_shared"
        if not (shared / "done").is_file():
            shutil.rmtree(shared, ignore_errors=True)
            aigciqa2023_root(shared)
            vary_images(sorted(shared.rglob("*.png")))
            (shared / "done").touch()
        return shared, {}
    if data_class == "MOSFolder":
        return synthetic_root, {}
    if data_class == "SyntheticAIGI":
        return root, {"data.num_images": "30", "data.picture_size": "32"}
    raise AssertionError(f"no tiny root for data class {data_class}: add one to tests/experiment_helpers.py")


def vary_images(paths: list[Path], distinct: int = 16) -> None:
    """Give copies of one placeholder ``distinct`` different contents in turn, so that a model's scores vary and
    SRCC/PLCC are defined (they are NaN on constant scores)."""
    import shutil

    from layouts import placeholder

    for index, path in enumerate(paths[:distinct]):
        placeholder(path, seed=index)
    for index, path in enumerate(paths[distinct:], start=distinct):
        shutil.copyfile(paths[index % distinct], path)


def shrink_args(data_root: Path, run_dir: Path, extra: dict | None = None) -> dict:
    """Overrides that turn any config into a CPU smoke run of the tiny model (a couple of steps); val and
    test a third each, so that a dozen samples still give a val SRCC to pick the best checkpoint by."""
    return {
        "model.backbone": "random:tiny", "model.n_ctx": "4", "model.hidden_dim": "16",
        "trainer.accelerator": "cpu", "trainer.devices": "1", "trainer.max_epochs": "1", "trainer.max_steps": "2",
        "trainer.limit_train_batches": "2",
        "trainer.limit_val_batches": "2", "trainer.limit_test_batches": "2", "trainer.logger": "false",
        "trainer.enable_progress_bar": "false", "trainer.enable_model_summary": "false",
        "trainer.default_root_dir": str(run_dir), "data.root": str(data_root), "data.batch_size": "4",
        "data.eval_batch_size": "4", "data.num_workers": "0", "data.test_size": "0.34", "data.val_size": "0.34",
        **(extra or {}),
    }


def as_flags(args: dict, skip=()) -> list[str]:
    return [token for key, value in args.items() if key not in skip for token in (f"--{key}", value)]


def configured(config, key: str):
    """A value of the parsed CLI config by the key a user types (``model.lr`` = ``model.init_args.lr``)."""
    for candidate in (key, key.replace(".", ".init_args.", 1)):
        try:
            return config[candidate]
        except KeyError:
            continue
    raise KeyError(key)


# --- benchmarks whose splits run in this process ------------------------------------------------------------
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
DEMO = str(EXPERIMENTS / "demo.yaml")


def benchmark_args(data_root: Path, out: Path, splits: int, epochs: int = 1, configs=(DEMO,),
                   logger: bool = False) -> list[str]:
    """The demo config (or ``configs``) as a benchmark of the tiny model on a MOSFolder."""
    return ["benchmark", *[a for c in configs for a in ("--config", str(c))], "--splits", str(splits), "--out",
            str(out), *TINY_MODEL_ARGS, *folder_args(data_root), "--trainer.max_epochs", str(epochs),
            *([] if logger else ["--trainer.logger", "false"]), "--trainer.enable_progress_bar", "false",
            "--model.warmup_epochs", "0"]


def composed_args(parts: list[str], data_root: Path, out: Path, **extra: str) -> list[str]:
    """A benchmark of composed config parts shrunk to a CPU smoke run of the tiny model; every test image is read."""
    shrunk = shrink_args(data_root, out / "unused", {"trainer.limit_test_batches": "1.0", **extra})
    return ["benchmark", *[a for p in parts for a in ("--config", str(EXPERIMENTS / p))], "--out", str(out),
            *as_flags(shrunk, skip=("trainer.default_root_dir",))]


class Ended:
    """What the benchmark polls of a split's process, for a command that already ran here."""

    def __init__(self, returncode: int):
        self.returncode = returncode

    def poll(self) -> int:
        return self.returncode


def console_here(args: list[str], output) -> int:
    """``clip-agiqa ARGS`` run by the console script in this process, its output to ``output``; the exit status."""
    import contextlib
    import sys
    from unittest import mock

    from clip_agiqa.benchmark.command import finish_wandb_run
    from clip_agiqa.cli import console

    with mock.patch.object(sys, "argv", ["clip-agiqa", *args]), contextlib.redirect_stdout(output), \
            contextlib.redirect_stderr(output):
        try:
            console()
            status = 0
        except SystemExit as exit:
            status = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
        finally:
            finish_wandb_run()  # a process's W&B run ends with it
    return status


def launch_here(command: list[str], log, environment: dict[str, str]) -> Ended:
    """clip_agiqa.benchmark.run.launch, but the split's command runs in this process (no interpreter start: seconds
    less per command), its output in the split's log as a process's would be."""
    from clip_agiqa.benchmark.plan import cli_command

    prefix = cli_command()
    assert command[:len(prefix)] == prefix, command
    log.write(f"\n$ {' '.join(command)}\n")
    status = console_here(command[len(prefix):], log)
    log.flush()  # the benchmark reads a failed split's last line from the log file
    return Ended(status)


def printed_configs_here(commands: dict[str, list[str]]) -> dict[str, dict]:
    """clip_agiqa.benchmark.plan.printed_configs, each ``--print_config`` run in this process."""
    import io

    import yaml

    from clip_agiqa.errors import InputError

    printed = {}
    for name, args in commands.items():
        output = io.StringIO()
        if console_here([*args, "--print_config"], output) != 0:
            raise InputError(f"{name}: the CLI refused the arguments: {output.getvalue().strip()[-500:]}")
        printed[name] = yaml.safe_load(output.getvalue()) or {}
    return printed


@pytest.fixture
def benchmark_here(monkeypatch):
    """Benchmarks in this test run their planning ``--print_config`` and their splits' fit and test commands in
    this process. For tests of what the benchmark plans, runs and records; the process boundary itself (and
    --jobs) is tested in test_benchmark.py with real processes."""
    from clip_agiqa.benchmark import plan, run

    monkeypatch.setattr(plan, "printed_configs", printed_configs_here)
    monkeypatch.setattr(run, "launch", launch_here)
