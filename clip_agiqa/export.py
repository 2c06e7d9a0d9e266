"""Sharing a trained model: ``clip-agiqa export CKPT OUT_DIR`` = the checkpoint's ``CLIPAGIQAModel.save_pretrained``.

``OUT_DIR`` then holds ``config.json``, ``model.safetensors`` (the trained tensors only) and a ``README.md``
model card; ``clip_agiqa.load(OUT_DIR)`` (``scoring.py``, or ``CLIPAGIQAModel.from_pretrained``, also with a hub
id) rebuilds the model from them. Loading never reads a ``.ckpt``: a Lightning checkpoint is a pickle, and a
pickle from an unknown source can run code. Export reads your own checkpoint with
``torch.load(weights_only=True)`` (``saved.py``), which accepts only tensors and plain values.

The folder is written whole beside its target and renamed into place: a kill or a full disk leaves the older
model as it was. An existing folder is replaced only when asked (``--overwrite``). Nothing here imports
Lightning.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from .errors import InputError
from .files import UMASK
from .model import CLIPAGIQAModel
from .saved import read_checkpoint


@contextlib.contextmanager
def folder_in_place(target: Path, overwrite: bool = False):
    """``with folder_in_place(out) as folder: <write into folder>``: the files are written into a new folder beside
    ``target`` (same filesystem), which then takes its place. On any error the new folder is removed and an
    existing ``target`` is untouched. An existing ``target`` is moved aside, the new one renamed in, and the old
    one deleted; a crash between the two renames leaves it whole, as ``.<name>.old-*`` beside ``target``."""
    if target.exists() and not overwrite:
        raise InputError(f"{target} already exists; give another folder, or --overwrite to replace it")
    if target.exists() and not target.is_dir():
        raise InputError(f"{target} exists and is not a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield folder
        os.chmod(folder, 0o777 & ~UMASK)  # mkdtemp makes 0700; a model folder reads like any other
        if target.exists():
            aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, aside / target.name)
            os.replace(folder, target)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(folder, target)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def export_checkpoint(checkpoint, out_dir, overwrite: bool = False) -> Path:
    """Save the model of a trained checkpoint with ``save_pretrained``; returns the folder."""
    source = Path(checkpoint).expanduser()
    if source.is_dir() or not source.exists():
        raise InputError(f"{source}: not a checkpoint file; give the .ckpt written by clip-agiqa fit "
                         f"(e.g. runs/mine/checkpoints/best.ckpt)")
    out = Path(out_dir).expanduser()
    if out.exists() and not overwrite:  # before the model is built: a mistake costs nothing
        raise InputError(f"{out} already exists; give another folder, or --overwrite to replace it")
    model = CLIPAGIQAModel.from_trained_weights(read_checkpoint(source))
    with folder_in_place(out, overwrite) as folder:
        model.save_pretrained(folder)
    return out


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="clip-agiqa export",
        description="Save the model of a trained checkpoint as config.json + model.safetensors + README.md, "
                    "loadable with clip_agiqa.load(OUT_DIR) or CLIPAGIQAModel.from_pretrained without pickle.")
    parser.add_argument("checkpoint", help="a .ckpt written by clip-agiqa fit (e.g. runs/x/checkpoints/best.ckpt)")
    parser.add_argument("out_dir", help="the folder to write (written beside and renamed into place)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    args = parser.parse_args(argv)
    out = export_checkpoint(args.checkpoint, args.out_dir, overwrite=args.overwrite)
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    print(f"exported {args.checkpoint} to {out} ({size:.2f} MB); load it with clip_agiqa.load({str(out)!r})")
    return out
