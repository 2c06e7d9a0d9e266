"""The feature cache: same losses as encoding each time, keys that follow every input, bad entries rebuilt."""

from __future__ import annotations

import os
import shutil
from dataclasses import fields, replace
from pathlib import Path

import lightning as L
import pytest
import torch

from clip_agiqa.cache import (CachedFeatures, Encoder, FeatureCache, cache_for_trainer, entry_key, read_entry,
                              view_generator)
from clip_agiqa.data import ImageDataset, MOSFolder, Record
from clip_agiqa.model import CLIPAGIQAModel
from clip_agiqa.data.images import load_rgb
from clip_agiqa.data.transforms import ImageTransform

from conftest import TINY_MODEL_ARGS, run_cli, trainer_args


@pytest.fixture
def images(synthetic_root, tmp_path) -> list[Record]:
    """Four private copies of the shared synthetic images (tests change them)."""
    folder = tmp_path / "images"
    folder.mkdir()
    records = []
    for index, source in enumerate(sorted(synthetic_root.glob("*.png"))[:4]):
        shutil.copy2(source, folder / source.name)
        records.append(Record(source.name, folder / source.name, float(index)))
    return records


def make_cache(module, directory: Path, **kwargs) -> FeatureCache:
    encoder = Encoder(module.model.arguments["backbone"], module.model.backbone_fingerprint)
    return FeatureCache(directory, encoder, module.model.encode_images, progress=False, **kwargs)


def train_transform(module, **kwargs) -> ImageTransform:
    return ImageTransform(module.model.image_settings, train=True, **kwargs)


def eval_transform(module) -> ImageTransform:
    return ImageTransform(module.model.image_settings, train=False)


def test_cached_and_uncached_training_give_the_same_loss(tiny_model, images, tmp_path):
    cache = make_cache(tiny_model, tmp_path / "cache")
    transform = train_transform(tiny_model)
    features = cache.features(images, transform, views=3)
    assert features.shape == (4, 3, tiny_model.model.clip.config.projection_dim)
    mos = torch.tensor([r.mos for r in images])
    tiny_model.train()
    for view in range(3):
        pixels = torch.stack([transform(load_rgb(r.path), generator=view_generator(r.file_name, view))
                              for r in images])
        torch.manual_seed(view)  # the same dropout masks for both
        uncached = tiny_model.training_step({"image": pixels, "mos": mos}, 0)
        torch.manual_seed(view)
        cached = tiny_model.training_step({"features": features[:, view], "mos": mos}, 0)
        torch.testing.assert_close(cached, uncached, rtol=1e-5, atol=1e-6)


def test_views_differ_and_the_eval_view_is_the_centre_crop(tiny_model, images, tmp_path):
    cache = make_cache(tiny_model, tmp_path / "cache")
    train = cache.features(images, train_transform(tiny_model), views=2)
    assert not torch.allclose(train[:, 0], train[:, 1])
    centre = cache.features(images, eval_transform(tiny_model), views=8)  # eval always has one view
    pixels = torch.stack([eval_transform(tiny_model)(load_rgb(r.path)) for r in images])
    assert centre.shape[1] == 1
    torch.testing.assert_close(centre[:, 0], tiny_model.model.encode_images(pixels), rtol=1e-5, atol=1e-6)


def test_entries_are_reused_and_extended_with_more_views(tiny_model, images, tmp_path):
    first = make_cache(tiny_model, tmp_path / "cache")
    two = first.features(images, train_transform(tiny_model), views=2)
    assert first.built_views == 8
    again = make_cache(tiny_model, tmp_path / "cache")
    assert torch.equal(again.features(images, train_transform(tiny_model), views=2), two)
    assert again.built_views == 0
    three = again.features(images, train_transform(tiny_model), views=3)
    assert again.built_views == 4  # only the new view of each image
    assert torch.equal(three[:, :2], two)


def test_key_changes_with_backbone_and_transform_settings(tiny_model, images, tmp_path):
    cache = make_cache(tiny_model, tmp_path / "cache")
    record, base = images[0], train_transform(tiny_model)
    path = cache.entry_path(base, record)
    for changed in (train_transform(tiny_model, crop_scale=(0.5, 1.0)), train_transform(tiny_model, flip=False),
                    eval_transform(tiny_model)):
        assert cache.entry_path(changed, record) != path
    assert make_cache(tiny_model, tmp_path / "cache").entry_path(base, record) == path
    other_values = {"backbone": "random:vit-b-16", "fingerprint": "0" * 16, "precision": "bf16-mixed",
                    "dtype": "float16", "attn_implementation": "eager"}
    assert set(other_values) == {f.name for f in fields(Encoder)}  # a new setting must be tested here too
    for name, value in other_values.items():
        encoder = replace(cache.encoder, **{name: value})
        other = FeatureCache(tmp_path / "cache", encoder, tiny_model.model.encode_images, progress=False)
        assert other.entry_path(base, record) != path, name
        assert entry_key(encoder, base, record) != entry_key(cache.encoder, base, record), name


def test_key_changes_with_the_resize_interpolation(tiny_model, images, tmp_path, monkeypatch):
    from PIL import Image

    from clip_agiqa.data import transforms

    cache = make_cache(tiny_model, tmp_path / "cache")
    for make in (train_transform, eval_transform):
        before = cache.entry_path(make(tiny_model), images[0])
        with monkeypatch.context() as patch:
            patch.setattr(transforms, "RESIZE_INTERPOLATION", Image.Resampling.BILINEAR)
            assert cache.entry_path(make(tiny_model), images[0]) != before


def test_the_trainer_cache_keys_the_model_attention_kernel(tmp_path):
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    encoders = {}
    for kernel in ("sdpa", "eager"):
        model = CLIPAGIQAModel("random:tiny", n_ctx=4, hidden_dim=16, attn_implementation=kernel)
        encoders[kernel] = cache_for_trainer(trainer, model, tmp_path / "cache", tmp_path, 4, 0).encoder
    assert encoders["sdpa"].attn_implementation == "sdpa" and encoders["eager"].attn_implementation == "eager"
    assert encoders["sdpa"].folder_name() != encoders["eager"].folder_name()


@pytest.mark.parametrize("change", ["content", "mtime"])
def test_a_changed_image_file_is_rebuilt(tiny_model, images, tmp_path, change):
    cache = make_cache(tiny_model, tmp_path / "cache")
    transform = eval_transform(tiny_model)
    before = cache.features(images, transform)
    target = images[1].path
    if change == "content":
        load_rgb(images[2].path).save(target)
    else:
        stat = target.stat()
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    again = make_cache(tiny_model, tmp_path / "cache")
    after = again.features(images, transform)
    assert again.built_views == 1
    assert torch.equal(after[[0, 2, 3]], before[[0, 2, 3]])  # read back as stored, not re-encoded
    if change == "content":
        torch.testing.assert_close(after[1], before[2])


@pytest.mark.parametrize("damage", ["truncated", "flipped_byte", "garbage", "leftover_temporary"])
def test_a_damaged_or_incomplete_entry_is_rebuilt_not_used(tiny_model, images, tmp_path, damage):
    cache = make_cache(tiny_model, tmp_path / "cache")
    transform = train_transform(tiny_model)
    before = cache.features(images, transform, views=2)
    path = cache.entry_path(transform, images[0])
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) - 17])
    elif damage == "flipped_byte":  # still parses: only the checksum catches it
        path.write_bytes(data[:-5] + bytes([data[-5] ^ 0xFF]) + data[-4:])
    elif damage == "garbage":
        path.write_bytes(b"not a cache entry")
    else:  # a run killed while writing leaves only its temporary file
        path.rename(path.with_name(path.name + ".tmp12345"))
        path.with_name(path.name + ".tmp12345").write_bytes(data[:40])
    assert damage == "leftover_temporary" or path.exists()
    again = make_cache(tiny_model, tmp_path / "cache")
    after = again.features(images, transform, views=2)
    assert again.built_views == 2
    assert torch.equal(after[1:], before[1:])  # intact entries are read back as stored
    # The rebuilt entry was encoded in a batch of 1, the original in a batch of 4: batched kernels may
    # differ in the last bits (about 5e-7 seen on AMD EPYC), so allow float32 rounding, not more.
    torch.testing.assert_close(after[0], before[0], rtol=1e-5, atol=1e-6)
    assert read_entry(path, {"another": "key"}) is None  # an intact entry under another key is refused too


def test_ranks_build_disjoint_shares_and_nothing_twice(tiny_model, images, tmp_path):
    ranks = [make_cache(tiny_model, tmp_path / "cache", rank=r, world_size=2) for r in (0, 1)]
    transform = train_transform(tiny_model)
    built = [cache.build(images, transform, 2, share=range(cache.rank, len(images), 2)) for cache in ranks]
    assert built == [2, 2]
    reader = make_cache(tiny_model, tmp_path / "cache", rank=0, world_size=2)
    reader.features(images, transform, views=2)
    assert reader.built_views == 0


def test_cached_dataset_draws_one_of_the_views(tiny_model, images, tmp_path):
    features = make_cache(tiny_model, tmp_path / "cache").features(images, train_transform(tiny_model), views=3)
    dataset = CachedFeatures(images, features)
    seen = {int(torch.nonzero((features[0] == dataset[0]["features"]).all(dim=1))[0]) for _ in range(40)}
    assert seen == {0, 1, 2}
    assert dataset[2]["mos"] == 2.0 and dataset[2]["file_name"] == images[2].file_name


def test_cached_items_carry_mos_prompt_and_error_as_image_items(tiny_model, images, tmp_path):
    transform = eval_transform(tiny_model)
    for index, record in enumerate(images):
        record.targets, record.prompt = {"quality": float(index), "align": 10.0 + index}, f"prompt {index}"
    features = make_cache(tiny_model, tmp_path / "cache").features(images, transform)
    for targets in (["quality"], ["align", "quality"]):
        cached, decoded = CachedFeatures(images, features, targets)[1], ImageDataset(images, transform, targets)[1]
        assert {"mos", "prompt", "index", "file_name", "error"} <= set(cached)
        for key in ("mos", "prompt", "index", "file_name", "error"):
            assert torch.equal(cached[key], decoded[key]) if key == "mos" else cached[key] == decoded[key], key
    assert CachedFeatures(images, features, ["align", "quality"])[1]["mos"].tolist() == [11.0, 1.0]


def datamodule(root: Path, cache_dir: Path, cache_views: int) -> MOSFolder:
    return MOSFolder(str(root), batch_size=8, num_workers=0, cache_views=cache_views, cache_dir=str(cache_dir))


def test_validation_metrics_are_the_same_with_and_without_the_cache(tiny_model, synthetic_root, tmp_path):
    results = {}
    for views in (0, 2):
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
        results[views] = trainer.validate(tiny_model, datamodule(synthetic_root, tmp_path / "cache", views),
                                          verbose=False)[0]
    assert results[0].keys() == results[2].keys()
    for name in results[0]:
        assert results[2][name] == pytest.approx(results[0][name], rel=1e-5, abs=1e-6), name


def test_cache_views_zero_is_the_uncached_path(tiny_model, synthetic_root, tmp_path):
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    module = datamodule(synthetic_root, tmp_path / "cache", 0)
    trainer.validate(tiny_model, module, verbose=False)
    assert isinstance(module.make_dataset("val"), ImageDataset)
    assert not (tmp_path / "cache").exists()


def test_cache_without_a_model_says_how_to_fix_it(synthetic_root, tmp_path):
    with pytest.raises(RuntimeError, match="cache_views: 0"):
        datamodule(synthetic_root, tmp_path / "cache", 2).val_dataloader()
    with pytest.raises(ValueError, match="cache_views"):
        datamodule(synthetic_root, tmp_path / "cache", -1)


def test_cli_fit_with_the_cache_builds_once_and_reuses_it(synthetic_root, tmp_path):
    cache_dir = tmp_path / "cache"
    data = ["--data.class_path", "clip_agiqa.MOSFolder", "--data.root", str(synthetic_root),
            "--data.batch_size", "8", "--data.num_workers", "0",
            "--data.cache_views", "2", "--data.cache_dir", str(cache_dir)]
    run_cli(["fit", *TINY_MODEL_ARGS, *trainer_args(tmp_path / "run", epochs=2), *data])
    entries = sorted(cache_dir.rglob("*.safetensors"))
    assert len(entries) == 41 - len(MOSFolder(str(synthetic_root)).split_records("test"))  # train + val
    stamps = [p.stat().st_mtime_ns for p in entries]
    run_cli(["fit", *TINY_MODEL_ARGS, *trainer_args(tmp_path / "another_run", epochs=2), *data])
    assert [p.stat().st_mtime_ns for p in entries] == stamps  # reused, not rewritten


@pytest.mark.slow
def test_ddp_ranks_build_the_cache_together(synthetic_root, tmp_path):
    """Two CPU processes (gloo) build one cache: complete afterwards, and a single process reuses all of it."""
    from conftest import run_cli_subprocess

    cache_dir = tmp_path / "cache"
    common = [*TINY_MODEL_ARGS, "--data.class_path", "clip_agiqa.MOSFolder", "--data.root", str(synthetic_root),
              "--data.batch_size", "8", "--data.num_workers", "0", "--data.cache_views", "2",
              "--data.cache_dir", str(cache_dir)]
    ddp = trainer_args(tmp_path / "ddp")
    ddp[ddp.index("--trainer.devices") + 1] = "2"
    run_cli_subprocess(["fit", *common, *ddp, "--trainer.strategy", "ddp"], timeout=240)
    entries = {p: p.stat().st_mtime_ns for p in cache_dir.rglob("*.safetensors")}
    assert len(entries) == 41 - len(MOSFolder(str(synthetic_root)).split_records("test"))
    assert not list(cache_dir.rglob("*.tmp*"))
    run_cli(["fit", *common, *trainer_args(tmp_path / "single")])
    assert {p: p.stat().st_mtime_ns for p in cache_dir.rglob("*.safetensors")} == entries
