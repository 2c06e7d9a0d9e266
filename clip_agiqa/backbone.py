"""Loading the frozen CLIP backbone and its tokenizer: a hub id, a local folder, or a random preset.

Random presets (``random:tiny``, ``random:vit-b-16``) need no network: the weights come from a
fixed seed, so the same preset always gives the same frozen weights (checkpoints do not store them),
and the tokenizer is a small byte-level BPE built in memory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, TypeVar

import torch
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

from .config import DEFAULT_BACKBONE
from .errors import InputError
from .frozen import CLIP_MEAN, CLIP_STD, ImageSettings

RANDOM_PREFIX = "random:"
HUB_CHECK_TIMEOUT = 5.0  # seconds for the one request that tells whether the hub can be reached
Loaded = TypeVar("Loaded")
RANDOM_SEED = 0

# Architecture of each random preset (text and vision towers); vocab and special ids come from the tokenizer.
RANDOM_PRESETS: dict[str, dict] = {
    "tiny": {
        "projection_dim": 32,
        "text": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                     max_position_embeddings=77),
        "vision": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                       image_size=32, patch_size=4,
                       initializer_factor=2.0),  # image content dominates the random features,
    },
    "vit-b-16": {
        "projection_dim": 512,
        "text": dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
                     max_position_embeddings=77),
        "vision": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       image_size=224, patch_size=16),
    },
}

# Words the offline tokenizer knows whole; any other text still tokenizes, byte by byte.
OFFLINE_WORDS = (
    "a photo of an image the picture that is quality looks with and in on it".split()
    + "terrible bad poor average fair good great excellent perfect high low".split()
    + "authentic realistic fake aligned misaligned prompt generated".split()
)


@dataclass
class Backbone:
    clip: CLIPModel
    tokenizer: CLIPTokenizer
    image_settings: ImageSettings


def _bytes_to_unicode() -> list[str]:
    """The printable stand-in of each byte used by CLIP's byte-level BPE (same table as GPT-2)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    chars, extra = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


@lru_cache(maxsize=1)
def _offline_vocab_and_merges() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """A tiny CLIP-style BPE: every byte (alone and word-final), plus whole-word merges of OFFLINE_WORDS."""
    symbols = _bytes_to_unicode()
    vocab: dict[str, int] = {}
    for token in symbols + [s + "</w>" for s in symbols]:
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in OFFLINE_WORDS:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        merged = parts[0]
        for part in parts[1:]:
            if (merged, part) not in merges:
                merges.append((merged, part))
            merged = merged + part
            vocab.setdefault(merged, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return vocab, tuple(merges)


def offline_tokenizer() -> CLIPTokenizer:
    vocab, merges = _offline_vocab_and_merges()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=77)


def _random_clip(preset: str, attn_implementation: str | None) -> Backbone:
    if preset not in RANDOM_PRESETS:
        raise InputError(
            f"unknown random backbone preset {preset!r}; choose one of "
            + ", ".join(RANDOM_PREFIX + p for p in RANDOM_PRESETS)
        )
    spec = RANDOM_PRESETS[preset]
    tokenizer = offline_tokenizer()
    text = dict(spec["text"], vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    config = CLIPConfig(text_config=text, vision_config=spec["vision"], projection_dim=spec["projection_dim"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        clip = CLIPModel._from_config(config, attn_implementation=attn_implementation)
    size = spec["vision"]["image_size"]
    return Backbone(clip, tokenizer, ImageSettings(size, CLIP_MEAN, CLIP_STD))


def _pretrained_image_settings(name: str, config: CLIPConfig) -> ImageSettings:
    """Mean/std from the checkpoint's image processor when it has one, CLIP's otherwise."""
    size = config.vision_config.image_size
    try:
        from transformers import CLIPImageProcessor

        processor = from_hub(CLIPImageProcessor.from_pretrained, name)
        return ImageSettings(size, tuple(processor.image_mean), tuple(processor.image_std))
    except (OSError, ValueError):
        return ImageSettings(size, CLIP_MEAN, CLIP_STD)


def image_settings_of(name: str = DEFAULT_BACKBONE) -> ImageSettings:
    """A backbone's image settings from its id alone, without building it (its config files only): what the
    data side needs at parse time (``MOSDataModule(image_settings=...)``), equal to ``load_backbone(name)``'s."""
    if name.startswith(RANDOM_PREFIX):
        preset = RANDOM_PRESETS.get(name[len(RANDOM_PREFIX):])
        if preset is None:
            raise InputError(f"unknown random backbone preset {name!r}; choose one of "
                             + ", ".join(RANDOM_PREFIX + p for p in RANDOM_PRESETS))
        return ImageSettings(preset["vision"]["image_size"], CLIP_MEAN, CLIP_STD)
    try:
        config = from_hub(CLIPConfig.from_pretrained, name)
    except OSError as error:
        raise InputError(_not_loadable_message(name, error)) from None
    return _pretrained_image_settings(name, config)


def check_tokenizer(tokenizer: CLIPTokenizer, words: list[str], name: str) -> None:
    """Refuse a tokenizer that cannot really encode our words (what an offline hub load returns)."""
    if len(tokenizer) < 300:
        raise InputError(
            f"the tokenizer of backbone {name!r} has only {len(tokenizer)} tokens: it did not load "
            "(no network or an incomplete folder?). Download the model first or use a local folder."
        )
    unknown = tokenizer.unk_token_id
    for word in words:
        ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        if not ids or (unknown is not None and unknown in ids and tokenizer.unk_token != tokenizer.eos_token):
            raise InputError(f"the tokenizer of backbone {name!r} cannot encode the word {word!r}")
        if any(i in (tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.pad_token_id) for i in ids):
            raise InputError(f"the tokenizer of backbone {name!r} maps the word {word!r} to a special token")


def load_backbone(name: str = DEFAULT_BACKBONE, attn_implementation: str | None = "sdpa",
                  check_words: tuple[str, ...] = ()) -> Backbone:
    """Build the CLIP model, its tokenizer and image settings from a hub id, a folder or a random preset."""
    if name.startswith(RANDOM_PREFIX):
        backbone = _random_clip(name[len(RANDOM_PREFIX):], attn_implementation)
    else:
        try:
            clip = from_hub(CLIPModel.from_pretrained, name, attn_implementation=attn_implementation)
            tokenizer = from_hub(CLIPTokenizer.from_pretrained, name)
        except OSError as error:
            raise InputError(_not_loadable_message(name, error)) from None
        backbone = Backbone(clip, tokenizer, _pretrained_image_settings(name, clip.config))
    check_tokenizer(backbone.tokenizer, list(check_words), name)
    return backbone


def from_hub(load: Callable[..., Loaded], name: str, **kwargs) -> Loaded:
    """``load(name)`` (a ``from_pretrained``) for a folder or a hub id. A hub id is read from the Hugging Face cache
    when it is there (no request at all); otherwise the hub is asked once, with a short timeout, before the download:
    the library's own requests retry for a minute where there is no network."""
    from huggingface_hub import constants

    if Path(name).exists() or constants.HF_HUB_OFFLINE:
        return load(name, **kwargs)
    try:
        return load(name, local_files_only=True, **kwargs)
    except OSError:
        pass
    check_hub_reachable(name)
    return load(name, **kwargs)


def check_hub_reachable(name: str, timeout: float = HUB_CHECK_TIMEOUT) -> None:
    """One request to the hub for ``name``'s page; any answer (even "not found") means the download can be tried.
    No answer is the one-line error that says how to proceed offline."""
    from huggingface_hub import constants, get_session

    try:
        get_session().head(f"{constants.ENDPOINT}/api/models/{name}", timeout=timeout)
    except Exception as error:  # the HTTP library's connection and timeout errors, whatever the library
        unreachable = f"the hub at {constants.ENDPOINT} cannot be reached: {type(error).__name__}"
        raise InputError(_not_loadable_message(name, unreachable=unreachable)) from None


def _not_loadable_message(name: str, error: OSError | None = None, unreachable: str = "") -> str:
    """What to do when a backbone is neither a usable folder nor in the Hugging Face cache."""
    if Path(name).exists():
        return (f"backbone folder {name} could not be loaded ({str(error).splitlines()[0]}); it should hold "
                "what CLIPModel.save_pretrained and CLIPTokenizer.save_pretrained write")
    from huggingface_hub import constants

    offline = " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
    why = f"{offline} ({unreachable})" if unreachable else offline
    return (
        f"backbone {name!r} could not be downloaded{why} and is not in the Hugging Face cache "
        f"({constants.HF_HUB_CACHE}). To proceed: download it once where there is network "
        f"(CLIPModel.from_pretrained({name!r}).save_pretrained(FOLDER), the same for CLIPTokenizer) and "
        "pass --model.backbone FOLDER; or point HF_HOME at a cache that holds it; or try things with "
        "--model.backbone random:tiny (random weights, no download).")


def weights_fingerprint(module: torch.nn.Module) -> str:
    """A short hash of the weights as loaded, stored in checkpoints to catch a different backbone on load.

    It hashes a fixed sample of each tensor's values (no reductions, so it is exact on any device).
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        values = tensor.detach().flatten()
        sample = values[:: max(1, values.numel() // 256)].to("cpu", torch.float32)
        digest.update(name.encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]


def feature_output(output) -> torch.Tensor:
    """The projected embedding from get_*_features: a tensor (transformers 4.x) or an output object (5.x)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output
