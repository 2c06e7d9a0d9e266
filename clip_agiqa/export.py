"""Sharing a trained model: a small folder of safetensors weights and a JSON config, loaded without pickle.

``clip-agiqa export CKPT OUT_DIR`` writes::

    OUT_DIR/model.safetensors   the trained tensors only (prompt context + head), never the frozen backbone
    OUT_DIR/config.json         the model's arguments, the backbone it needs and that backbone's fingerprint

``clip_agiqa.load(OUT_DIR)`` rebuilds the model from those two files. It never reads a ``.ckpt``: a Lightning
checkpoint is a pickle, and a pickle from an unknown source can run code. Export reads your own checkpoint
with ``torch.load(weights_only=True)``, which accepts only tensors and plain values.
"""

from __future__ import annotations

import argparse
import inspect
import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT_NAME = "clip-agiqa"
FORMAT_VERSION = 1
FROZEN_PREFIX = "clip."
# Arguments that say how to start a run, not what the trained model is.
RUN_ONLY_ARGS = ("init_from", "trainable")


@dataclass
class TrainedWeights:
    """The trained tensors of a model, the arguments it was built with, and where they came from."""

    state: dict[str, torch.Tensor]
    model_args: dict
    backbone_fingerprint: str | None
    source: str


def _model_args(hparams: dict) -> dict:
    """Keep only CLIPAGIQA's own arguments (drops LightningCLI's ``_class_path`` and the like)."""
    from .module import CLIPAGIQA

    accepted = set(inspect.signature(CLIPAGIQA.__init__).parameters) - {"self"}
    args = {k: v for k, v in dict(hparams).items() if k in accepted and k not in RUN_ONLY_ARGS}
    if "mos_range" in args:
        args["mos_range"] = list(args["mos_range"])
    return args


def read_checkpoint(path: Path) -> TrainedWeights:
    """A Lightning checkpoint you trained, read with the restricted (tensors and plain values) unpickler."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(f"{path}: refused to load, it holds objects beyond tensors and plain values "
                         f"({str(error).splitlines()[0]})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{path} is not a Lightning checkpoint of clip-agiqa (no state_dict)")
    state = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(FROZEN_PREFIX)}
    return TrainedWeights(state, _model_args(checkpoint.get("hyper_parameters", {})),
                          checkpoint.get("backbone_fingerprint"), str(path))


def read_export(directory: Path) -> TrainedWeights:
    """An exported folder: JSON and safetensors only, so nothing in it can run code."""
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: an exported clip-agiqa model is a folder with "
                                    f"{CONFIG_FILE} and {WEIGHTS_FILE} (made by `clip-agiqa export CKPT OUT_DIR`)")
    config = json.loads(config_path.read_text())
    if config.get("format") != FORMAT_NAME:
        raise ValueError(f"{config_path} is not a clip-agiqa export (format {config.get('format')!r})")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{config_path} has format_version {config['format_version']}; this clip-agiqa reads "
                         f"up to {FORMAT_VERSION}: upgrade clip-agiqa")
    return TrainedWeights(load_file(str(weights_path)), _model_args(config["model"]),
                          config.get("backbone_fingerprint"), str(directory))


def read_trained_weights(path, allow_checkpoint: bool = True) -> TrainedWeights:
    """Trained weights from an exported folder (or its model.safetensors) or, if allowed, a ``.ckpt``."""
    path = Path(path).expanduser()
    if path.is_dir():
        return read_export(path)
    if path.name == WEIGHTS_FILE:
        return read_export(path.parent)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: give a clip-agiqa checkpoint (.ckpt) or exported folder")
    if not allow_checkpoint:
        raise ValueError(f"{path}: only exported folders are loaded here, never a checkpoint (a pickle). If you "
                         f"trust its source, run `clip-agiqa export {path} OUT_DIR` and load OUT_DIR")
    return read_checkpoint(path)


def apply_trained_weights(model, source) -> None:
    """Copy trained prompt context and head weights into ``model`` after checking they fit it."""
    weights = source if isinstance(source, TrainedWeights) else read_trained_weights(source)
    saved, own = weights.backbone_fingerprint, model.backbone_fingerprint
    if saved is not None and saved != own:
        raise ValueError(f"{weights.source} was trained on backbone {weights.model_args.get('backbone')!r} "
                         f"(weights fingerprint {saved}), but this model's backbone {model.hparams.backbone!r} "
                         f"has {own}: the frozen weights differ")
    saved_categories = weights.model_args.get("categories")
    if saved_categories is not None and list(saved_categories) != list(model.hparams.categories):
        raise ValueError(f"{weights.source} was trained with categories {list(saved_categories)}, this model "
                         f"has {list(model.hparams.categories)}")
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith(FROZEN_PREFIX)}
    missing = sorted(set(expected) - set(weights.state))
    unexpected = sorted(set(weights.state) - set(expected))
    wrong_shape = [f"{k} {tuple(weights.state[k].shape)} vs {tuple(v.shape)}"
                   for k, v in expected.items() if k in weights.state and weights.state[k].shape != v.shape]
    if missing or unexpected or wrong_shape:
        raise ValueError(f"{weights.source} does not fit this model (head, n_ctx, hidden_dim or categories "
                         f"differ): missing {missing}, unexpected {unexpected}, wrong shape {wrong_shape}")
    model.load_state_dict(weights.state, strict=False)
    model._eval_prompt_features = None


def export_checkpoint(checkpoint, out_dir) -> Path:
    """Write ``model.safetensors`` and ``config.json`` for a trained checkpoint; returns the folder."""
    from . import __version__

    weights = read_trained_weights(checkpoint)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in weights.state.items()}
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": FORMAT_NAME})
    config = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "clip_agiqa_version": __version__,
        "backbone": weights.model_args.get("backbone"),
        "backbone_fingerprint": weights.backbone_fingerprint,
        "model": weights.model_args,
        "exported_from": Path(weights.source).name,
    }
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return out


def load_model(path, device: str | torch.device | None = None, backbone: str | None = None):
    """The CLIPAGIQA module of an exported folder, in eval mode. ``backbone`` replaces the stored backbone
    name (e.g. the local folder where the same CLIP lies on this machine); its fingerprint is still checked."""
    from .module import CLIPAGIQA

    weights = read_trained_weights(path, allow_checkpoint=False)
    args = dict(weights.model_args)
    if backbone is not None:
        args["backbone"] = backbone
    model = CLIPAGIQA(**args)
    apply_trained_weights(model, weights)
    model.eval()
    return model.to(device) if device is not None else model


def load(path, device: str | torch.device | None = None, backbone: str | None = None, batch_size: int = 32):
    """A ready-to-call scorer from an exported folder: ``load(dir)(image_or_path_or_list)`` gives scores."""
    from .scoring import QualityScorer

    return QualityScorer(load_model(path, device, backbone), batch_size=batch_size)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="clip-agiqa export",
        description="Export a trained checkpoint to a folder of safetensors weights + config.json, "
                    "loadable with clip_agiqa.load(OUT_DIR) without pickle.")
    parser.add_argument("checkpoint", help="a .ckpt written by clip-agiqa fit (e.g. runs/x/checkpoints/best.ckpt)")
    parser.add_argument("out_dir", help="the folder to write")
    args = parser.parse_args(argv)
    out = export_checkpoint(args.checkpoint, args.out_dir)
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    print(f"exported {args.checkpoint} to {out} ({size:.2f} MB); load it with clip_agiqa.load({str(out)!r})")
    return out
