"""Reading what a run or an export saved: checkpoints, ``config.json`` and ``model.safetensors``.

Every file here may come from someone else, so reading one runs nothing, exhausts nothing and hangs on
nothing: only regular files are opened (a link to ``/dev/zero`` or a FIFO is refused by type), sizes are
checked before reading, a checkpoint is unpickled with ``torch.load(weights_only=True)`` (tensors and plain
values only) and may name no class but this package's task, every model field is checked by
``CLIPAGIQAConfig``, and tensors must be floating point and finite. Each mistake is one ``InputError`` line
that names the file. Nothing here imports Lightning or builds a model.
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import FIELDS, CLIPAGIQAConfig, check_mos_scale
from .errors import InputError
from .files import read_bytes, regular_file  # noqa: F401 (re-exported: export.py)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
FORMAT_NAME = "clip-agiqa"
FORMAT_VERSION = 2
MODEL_PREFIX = "model."  # the task's network attribute: the prefix of its tensors in a Lightning checkpoint
# The only classes a checkpoint's hyper-parameters may name (LightningCLI would import any other).
TASK_CLASS_PATHS = ("clip_agiqa.module.CLIPAGIQA", "clip_agiqa.CLIPAGIQA")
TRUSTED_INSTANTIATORS = ("lightning.pytorch.cli.instantiate_module",)
MAX_CONFIG_BYTES = 1 << 20  # config.json is a few kB
MAX_WEIGHTS_BYTES = 1 << 30  # a ViT-B/16 model's trained tensors are 7.4 MB
# config.json beside the model's own fields: what the folder is and where the model came from.
SAVED_FIELDS = ("format", "format_version", "clip_agiqa_version", "backbone_fingerprint", "weights_sha256",
                "image_settings", "training")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Model fields added after models were saved without them, and the value every such model was made with. A
# config.json or checkpoint that lacks one gets this value, not today's default (which may differ).
FIELDS_ADDED_LATER = {"standardise": False, "input_dropout": None, "prompt_norm": "l2", "whiten": 0.0}


@dataclass
class TrainedWeights:
    """The trained tensors of a model (keys as in ``CLIPAGIQAModel``), its config and where they came from."""

    state: dict[str, torch.Tensor]
    config: CLIPAGIQAConfig
    backbone_fingerprint: str | None
    source: str
    training_info: dict


# --- files ------------------------------------------------------------------------------------------------
def read_json(path: Path, limit: int = MAX_CONFIG_BYTES) -> dict:
    import json

    data = read_bytes(path, limit)  # outside the try: its one-line refusals (size, type) stay as they are
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise InputError(f"{path} is not valid JSON ({str(error).splitlines()[0][:120]})") from None
    if not isinstance(value, dict):
        raise InputError(f"{path} must hold a JSON object, got {type(value).__name__}")
    return value


# --- tensors -------------------------------------------------------------------------------------------------
def check_tensors(state: dict, source: str) -> dict[str, torch.Tensor]:
    """Trained tensors are floating point (never cast: an int64 file would score nonsense) and finite; a
    ``mos_scale`` among them is a valid scale."""
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise InputError(f"{source}: {str(key)[:80]!r} is not a named tensor")
        if value.dtype not in FLOAT_DTYPES:
            raise InputError(f"{source}: tensor {key} is {str(value.dtype).removeprefix('torch.')}, "
                             f"not floating point")
        if not bool(torch.isfinite(value).all()):
            raise InputError(f"{source}: tensor {key} holds NaN or infinite values")
    if "mos_scale" in state:
        scale = state["mos_scale"]
        if scale.dim() != 2 or scale.shape[-1] != 2:
            raise InputError(f"{source}: mos_scale has shape {tuple(scale.shape)}, not (targets, 2)")
        try:
            check_mos_scale(scale.tolist(), len(scale))
        except InputError as error:
            raise InputError(f"{source}: {error}") from None
    return state


def read_weights_file(path: Path, sha256: str | None) -> dict[str, torch.Tensor]:
    """The tensors of a ``model.safetensors`` after checking it is the file its config.json describes. Read once
    into memory, so the bytes checked are the bytes loaded. The SHA-256 catches damage, not tampering: whoever
    can change the weights can change config.json too; the checks on the tensors hold either way."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    data = read_bytes(path, MAX_WEIGHTS_BYTES)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise InputError(f"{path} does not match the SHA-256 recorded in its {CONFIG_FILE}: the weights are "
                         f"damaged or were changed; get the model again")
    try:
        state = load(data)
    except (SafetensorError, ValueError, RuntimeError, OSError) as error:
        raise InputError(f"{path} is not a safetensors file ({str(error).splitlines()[0][:120]})") from None
    return check_tensors(state, str(path))


def model_fields(saved: dict) -> dict:
    """The model's fields among what a file saved; a field added since (``FIELDS_ADDED_LATER``) that it lacks
    takes the value the model was made with."""
    return {**FIELDS_ADDED_LATER, **{k: saved[k] for k in FIELDS if k in saved}}


# --- a saved model folder ------------------------------------------------------------------------------------------
def read_saved_config(path: Path) -> tuple[CLIPAGIQAConfig, dict]:
    """``config.json`` of a saved model: the model's config and the rest (format, fingerprint, SHA-256, training),
    every field checked before anything is built."""
    raw = read_json(path)
    if raw.get("format") != FORMAT_NAME:
        raise InputError(f"{path} is not a clip-agiqa model (format {str(raw.get('format'))[:80]!r})")
    if raw.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{path} has format_version {str(raw.get('format_version'))[:20]}; this clip-agiqa reads "
                         f"{FORMAT_VERSION}: export the checkpoint again with this version")
    unknown = sorted(set(raw) - set(FIELDS) - set(SAVED_FIELDS))
    if unknown:
        raise InputError(f"{path}: unknown field(s) {', '.join(k[:40] for k in unknown[:5])}")
    config = CLIPAGIQAConfig.checked(str(path), **model_fields(raw))
    saved = {"backbone_fingerprint": fingerprint(raw.get("backbone_fingerprint"), str(path)),
             "weights_sha256": raw.get("weights_sha256"),
             "training": plain_info(raw.get("training"), str(path))}
    if not (isinstance(saved["weights_sha256"], str) and len(saved["weights_sha256"]) == 64):
        raise InputError(f"{path}: weights_sha256 must be the 64-character SHA-256 of {WEIGHTS_FILE}")
    # Recorded for people (the image settings come from the backbone when it loads): plain values only.
    if not isinstance(raw.get("clip_agiqa_version", ""), str) or not isinstance(raw.get("image_settings", {}), dict):
        raise InputError(f"{path}: clip_agiqa_version must be a text and image_settings a mapping")
    return config, saved


def read_saved_model(directory: Path) -> TrainedWeights:
    """A saved model folder: JSON and safetensors only, so nothing in it can run code."""
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.exists():
            raise InputError(f"{path} not found: a saved clip-agiqa model is a folder with {CONFIG_FILE} and "
                             f"{WEIGHTS_FILE} (made by `clip-agiqa export CKPT OUT_DIR`)")
    config, saved = read_saved_config(config_path)
    state = read_weights_file(weights_path, saved["weights_sha256"])
    check_same_scale(config, state, str(directory))
    return TrainedWeights(state, config, saved["backbone_fingerprint"], str(directory), saved["training"])


def check_same_scale(config: CLIPAGIQAConfig, state: dict, source: str) -> None:
    """The scale in the weights and the one in config.json are the same thing written twice."""
    if "mos_scale" in state and state["mos_scale"].tolist() != config.mos_scale:
        raise InputError(f"{source}: mos_scale {state['mos_scale'].tolist()} in {WEIGHTS_FILE} differs from "
                         f"{config.mos_scale} in {CONFIG_FILE}")


def fingerprint(value, source: str) -> str | None:
    if value is not None and not (isinstance(value, str) and 0 < len(value) <= 64 and value.isalnum()):
        raise InputError(f"{source}: backbone_fingerprint must be a short hexadecimal text, got {str(value)[:80]!r}")
    return value


def plain_info(info, source: str) -> dict:
    """What a model learned from (names, sizes, metrics): a small dict of plain values, for the model card."""
    if info is None:
        return {}
    plain = (str, int, float, bool, type(None))
    if (not isinstance(info, dict) or len(info) > 200
            or not all(isinstance(k, str) and len(k) <= 200 and isinstance(v, plain)
                       and (not isinstance(v, str) or len(v) <= 1000) for k, v in info.items())):
        raise InputError(f"{source}: training information must be a small mapping of names to plain values")
    return dict(info)


# --- a Lightning checkpoint ----------------------------------------------------------------------------------------
def load_checkpoint(path: Path) -> dict:
    """A checkpoint unpickled with ``weights_only=True``: tensors and plain values only, any other object refused."""
    regular_file(path, limit=1 << 40)  # refuses folders, FIFOs and devices before torch.load opens them
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error):
            detail = str(error).split("Unsupported global:")[-1].splitlines()[0].strip()[:120]
            raise InputError(f"{path}: refused to load, it holds objects beyond tensors and plain values "
                             f"({detail})") from None
        raise InputError(f"{path} is not a checkpoint written by clip-agiqa fit") from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, UnicodeDecodeError):
        raise InputError(f"{path} is not a checkpoint written by clip-agiqa fit (damaged or truncated?)") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise InputError(f"{path} is not a Lightning checkpoint of clip-agiqa (no state_dict)")
    if not isinstance(checkpoint.get("hyper_parameters", {}), dict):
        raise InputError(f"{path}: its hyper_parameters are not a mapping")
    return checkpoint


def checkpoint_position(path: Path) -> tuple[int | None, int | None]:
    """The epoch and global step a checkpoint was saved at (None where it does not say, or says nonsense)."""
    checkpoint = load_checkpoint(path)

    def count(value: object) -> int | None:
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

    return count(checkpoint.get("epoch")), count(checkpoint.get("global_step"))


def read_checkpoint(path: Path, task_parameters=None) -> TrainedWeights:
    """The model of a Lightning checkpoint: its config (from the hyper-parameters) and trained tensors. Given
    the task's parameter names, the hyper-parameters must be those only (what LightningCLI reads back)."""
    checkpoint = load_checkpoint(path)
    if task_parameters is not None:
        check_task_hyperparameters(checkpoint.get("hyper_parameters", {}), str(path), task_parameters)
    state = {k[len(MODEL_PREFIX):]: v for k, v in checkpoint["state_dict"].items()
             if isinstance(k, str) and k.startswith(MODEL_PREFIX)}
    if not state:
        raise InputError(f"{path} is not a checkpoint of clip-agiqa's CLIPAGIQA (no model.* tensors)")
    hparams = checkpoint.get("hyper_parameters", {})
    config = CLIPAGIQAConfig.checked(f"{path} (hyper-parameters)", **model_fields(hparams))
    return TrainedWeights(check_tensors(state, str(path)), config,
                          fingerprint(checkpoint.get("backbone_fingerprint"), str(path)), str(path),
                          plain_info(checkpoint.get("training_info"), str(path)))


def check_task_hyperparameters(hparams: dict, source: str, parameters) -> None:
    """What LightningCLI reads from a checkpoint given as ``--ckpt_path``: it would import any class the
    hyper-parameters name (``_class_path``, a ``class_path`` in a value). Only this package's task class and
    its own parameters pass; anything else is refused before any import."""
    class_path = hparams.get("_class_path")
    if class_path is not None and class_path not in TASK_CLASS_PATHS:
        raise InputError(f"{source} names the class {str(class_path)[:80]!r}; a clip-agiqa checkpoint may name only "
                         f"{TASK_CLASS_PATHS[0]} (refused, nothing imported)")
    instantiator = hparams.get("_instantiator")
    if instantiator is not None and instantiator not in TRUSTED_INSTANTIATORS:
        raise InputError(f"{source} names the instantiator {str(instantiator)[:80]!r} (refused, nothing imported)")
    unknown = sorted(str(k)[:40] for k in hparams if k not in parameters and k not in ("_class_path", "_instantiator"))
    if unknown:
        raise InputError(f"{source}: unknown hyper-parameter(s) {', '.join(unknown[:5])} (refused, nothing imported)")
    if _names_a_class(list(hparams.values())):
        raise InputError(f"{source}: a hyper-parameter names a class_path (refused, nothing imported)")


def _names_a_class(value, depth: int = 0) -> bool:
    if depth > 20:
        return True
    if isinstance(value, dict):
        return any(k in ("class_path", "_class_path", "__path__") or _names_a_class(v, depth + 1)
                   for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_names_a_class(v, depth + 1) for v in value)
    return False


def read_trained_weights(path) -> TrainedWeights:
    """Trained weights from a saved model folder (or its model.safetensors) or a ``.ckpt`` (for init_from)."""
    path = Path(path).expanduser()
    if path.is_dir():
        return read_saved_model(path)
    if path.name == WEIGHTS_FILE:
        return read_saved_model(path.parent)
    if not path.exists():
        raise InputError(f"{path} not found: give a clip-agiqa checkpoint (.ckpt) or saved model folder")
    return read_checkpoint(path)
