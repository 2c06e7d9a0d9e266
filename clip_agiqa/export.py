"""Sharing a trained model: ``clip-agiqa export CKPT OUT_DIR`` = the checkpoint's ``CLIPAGIQAModel.save_pretrained``.

``OUT_DIR`` then holds ``config.json``, ``model.safetensors`` (the trained tensors only) and a ``README.md``
model card; ``clip_agiqa.load(OUT_DIR)`` (``scoring.py``, or ``CLIPAGIQAModel.from_pretrained``, also with a hub id) rebuilds
the model from them. Loading never reads a ``.ckpt``: a Lightning checkpoint is a pickle, and a pickle from an
unknown source can run code. Export reads your own checkpoint with ``torch.load(weights_only=True)``, which
accepts only tensors and plain values. Nothing here imports Lightning.
"""

from __future__ import annotations

import argparse
import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from .model import ARCHITECTURE, CONFIG_FILE, WEIGHTS_FILE, CLIPAGIQAModel, check_config, verified_weights

MODEL_PREFIX = "model."
# The model's own arguments among a training task's hyper-parameters (mos_scale travels in the weights).
MODEL_ARGS = (*ARCHITECTURE, "dropout", "frozen_dtype", "attn_implementation")


@dataclass
class TrainedWeights:
    """The trained tensors of a model (keys as in ``CLIPAGIQAModel``), its arguments and where they came from."""

    state: dict[str, torch.Tensor]
    model_args: dict
    backbone_fingerprint: str | None
    source: str
    training_info: dict


def read_checkpoint(path: Path) -> TrainedWeights:
    """A Lightning checkpoint you trained, read with the restricted (tensors and plain values) unpickler."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error):
            raise ValueError(f"{path}: refused to load, it holds objects beyond tensors and plain values "
                             f"({str(error).splitlines()[-1].strip()})") from None
        raise ValueError(f"{path} is not a checkpoint written by clip-agiqa fit") from None
    except (RuntimeError, EOFError):
        raise ValueError(f"{path} is not a checkpoint written by clip-agiqa fit") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{path} is not a Lightning checkpoint of clip-agiqa (no state_dict)")
    state = {k[len(MODEL_PREFIX):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(MODEL_PREFIX)}
    if not state:
        raise ValueError(f"{path} is not a checkpoint of clip-agiqa's CLIPAGIQA (no model.* tensors)")
    hparams = checkpoint.get("hyper_parameters", {})
    args = {k: hparams[k] for k in MODEL_ARGS if k in hparams}
    return TrainedWeights(state, args, checkpoint.get("backbone_fingerprint"), str(path),
                          dict(checkpoint.get("training_info") or {}))


def read_saved_model(directory: Path) -> TrainedWeights:
    """A saved model folder: JSON and safetensors only, so nothing in it can run code."""
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: a saved clip-agiqa model is a folder with "
                                    f"{CONFIG_FILE} and {WEIGHTS_FILE} (made by `clip-agiqa export CKPT OUT_DIR`)")
    config = json.loads(config_path.read_text())
    check_config(config, str(directory))
    args = {k: config[k] for k in MODEL_ARGS if k in config}
    return TrainedWeights(verified_weights(config, weights_path), args, config.get("backbone_fingerprint"),
                          str(directory), dict(config.get("training") or {}))


def read_trained_weights(path) -> TrainedWeights:
    """Trained weights from a saved model folder (or its model.safetensors) or a ``.ckpt`` (for init_from)."""
    path = Path(path).expanduser()
    if path.is_dir():
        return read_saved_model(path)
    if path.name == WEIGHTS_FILE:
        return read_saved_model(path.parent)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: give a clip-agiqa checkpoint (.ckpt) or saved model folder")
    return read_checkpoint(path)


def model_from_weights(weights: TrainedWeights) -> CLIPAGIQAModel:
    """The ``CLIPAGIQAModel`` the weights belong to, with them loaded, in eval mode."""
    scale = weights.state.get("mos_scale")
    model = CLIPAGIQAModel(**weights.model_args, **({"mos_scale": scale.tolist()} if scale is not None else {}))
    model.check_fingerprint(weights.backbone_fingerprint, weights.source)
    model.load_trained_state(weights.state, weights.source)
    model.training_info = weights.training_info
    return model.eval()


def export_checkpoint(checkpoint, out_dir) -> Path:
    """Save the model of a trained checkpoint with ``save_pretrained``; returns the folder."""
    source = Path(checkpoint).expanduser()
    if source.is_dir() or not source.exists():
        raise FileNotFoundError(f"{source}: not a checkpoint file; give the .ckpt written by clip-agiqa fit "
                                f"(e.g. runs/mine/checkpoints/best.ckpt)")
    model = model_from_weights(read_checkpoint(source))
    out = Path(out_dir).expanduser()
    model.save_pretrained(out)
    return out


def load_model(path, device: str | torch.device | None = None, backbone: str | None = None) -> CLIPAGIQAModel:
    """The ``CLIPAGIQAModel`` of a saved folder or hub id, in eval mode. ``backbone`` replaces the stored
    backbone name (e.g. the local folder where the same CLIP lies on this machine); its fingerprint is still
    checked."""
    local = Path(path).expanduser()
    if local.is_file():
        raise ValueError(f"{local}: only saved model folders are loaded here, never a checkpoint (a pickle). If "
                         f"you trust its source, run `clip-agiqa export {local} OUT_DIR` and load OUT_DIR")
    if not local.exists() and str(path).startswith((".", "/", "~")):
        raise FileNotFoundError(f"{local} not found: give a saved clip-agiqa model folder (with {CONFIG_FILE} "
                                f"and {WEIGHTS_FILE}) or a hub id")
    model = CLIPAGIQAModel.from_pretrained(str(local) if local.exists() else str(path),
                                           **({"backbone": backbone} if backbone else {}))
    return model.to(device) if device is not None else model


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="clip-agiqa export",
        description="Save the model of a trained checkpoint as config.json + model.safetensors + README.md, "
                    "loadable with clip_agiqa.load(OUT_DIR) or CLIPAGIQAModel.from_pretrained without pickle.")
    parser.add_argument("checkpoint", help="a .ckpt written by clip-agiqa fit (e.g. runs/x/checkpoints/best.ckpt)")
    parser.add_argument("out_dir", help="the folder to write")
    args = parser.parse_args(argv)
    out = export_checkpoint(args.checkpoint, args.out_dir)
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    print(f"exported {args.checkpoint} to {out} ({size:.2f} MB); load it with clip_agiqa.load({str(out)!r})")
    return out
