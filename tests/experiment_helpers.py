"""Helpers shared by the experiments tests (export, fine-tuning, W&B, benchmark, configs, sweeps)."""

from __future__ import annotations

from pathlib import Path

from conftest import TINY_MODEL_ARGS, run_cli, trainer_args


def folder_args(root: Path, batch_size: int = 8) -> list[str]:
    return ["--data", "MOSFolder", "--data.root", str(root), "--data.batch_size", str(batch_size),
            "--data.num_workers", "0"]


def fit_tiny(data_root: Path, run_dir: Path, *extra: str, epochs: int = 1):
    """A one-epoch fit of the tiny model on a MOSFolder; returns the CLI (its trainer holds the best path)."""
    return run_cli(["fit", *TINY_MODEL_ARGS, *folder_args(data_root), *trainer_args(run_dir, epochs), *extra])


def trained_parts(model) -> dict:
    """The prompt context and head tensors (what checkpoints and exports hold), cloned."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("clip.")}
