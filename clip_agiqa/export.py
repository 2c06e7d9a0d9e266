"""Sharing a trained model: ``clip-agiqa export CKPT OUT_DIR`` = the checkpoint's ``CLIPAGIQAModel.save_pretrained``.

``OUT_DIR`` then holds ``config.json``, ``model.safetensors`` (the trained tensors only) and a ``README.md``
model card; ``clip_agiqa.load(OUT_DIR)`` (``scoring.py``, or ``CLIPAGIQAModel.from_pretrained``, also with a hub
id) rebuilds the model from them. Loading never reads a ``.ckpt``: a Lightning checkpoint is a pickle, and a
pickle from an unknown source can run code. Export reads your own checkpoint with
``torch.load(weights_only=True)`` (``saved.py``), which accepts only tensors and plain values.

The model card gives the checkpoint's figures on its test split (interval coverage, SRCC, PLCC ...) when the run
folder holds what ``clip-agiqa test`` wrote of that very checkpoint (``test_metrics.json``, matched by the
checkpoint's SHA-256); otherwise it says the coverage was not measured.

The folder is written whole beside its target and renamed into place: a kill or a full disk leaves the older
model as it was. An existing folder is replaced only when asked (``--overwrite``). Nothing here imports
Lightning.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import CommandParser, InputError
from .files import UMASK, file_sha256
from .model import CLIPAGIQAModel
from .run_files import TEST_METRICS_FILE
from .saved import MAX_CONFIG_BYTES, read_bytes, read_checkpoint


def run_folder_of(checkpoint: Path) -> Path:
    """The run folder of a checkpoint written by ``clip-agiqa fit`` (``<run>/checkpoints/best.ckpt``)."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


def measured_on_test(checkpoint: Path) -> dict[str, float]:
    """The ``test/*`` figures ``clip-agiqa test`` logged for this checkpoint (its run folder's ``test_metrics.json``,
    when the SHA-256 it recorded is this file's), else none: the figures of another checkpoint are never shown."""
    path = run_folder_of(checkpoint) / TEST_METRICS_FILE
    if not path.is_file():
        return {}
    data = read_bytes(path, MAX_CONFIG_BYTES)  # at most 1 MB: a stranger's run folder may hold anything
    try:
        results = json.loads(data.decode("utf-8"))
        recorded, metrics = results["checkpoint_sha256"], results["metrics"]
        if not (isinstance(metrics, dict) and all(isinstance(v, (int, float)) for v in metrics.values())):
            raise ValueError("its metrics are not numbers")
    except (ValueError, KeyError, TypeError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise InputError(f"{path}: not the test results `clip-agiqa test` writes ({error}); remove it or run "
                         f"the test again") from None
    if recorded != file_sha256(checkpoint):
        return {}
    return {name: float(value) for name, value in metrics.items() if name.startswith("test/")}


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
    model.training_info = {**model.training_info, **measured_on_test(source)}  # the card shows test/* figures
    with folder_in_place(out, overwrite) as folder:
        model.save_pretrained(folder)
    return out


def main(argv: list[str] | None = None) -> Path:
    parser = CommandParser(
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
