"""The feature cache: same losses as encoding each time, keys that follow every input, damaged shards rebuilt,
memory-mapped splits read once per loader, generation prompts encoded once."""

from __future__ import annotations

import copy
import hashlib
import os
from dataclasses import fields, replace
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import TINY_MODEL, TINY_MODEL_ARGS, run_cli, trainer_args

from clip_agiqa.data import ImageDataset, MOSFolder
from clip_agiqa.data import cache as cache_module
from clip_agiqa.data.cache import (
    CachedFeatures,
    EncoderKey,
    FeatureCache,
    ShardedFeatures,
    ShardStore,
    cache_for_trainer,
    view_generator,
)
from clip_agiqa.data.images import load_rgb
from clip_agiqa.data.transforms import ImageTransform
from clip_agiqa.errors import InputError
from clip_agiqa.model import CLIPAGIQAModel


def make_cache(module, directory: Path, **kwargs) -> FeatureCache:
    return FeatureCache(directory, module.model.frozen_encoder(), progress=False, **kwargs)


def train_transform(module, **kwargs) -> ImageTransform:
    return ImageTransform(module.model.image_settings, train=True, **kwargs)


def eval_transform(module) -> ImageTransform:
    return ImageTransform(module.model.image_settings, train=False)


def shard_files(directory: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in directory.rglob("shard-*")}


def test_cached_and_uncached_training_give_the_same_loss(tiny_model, images, tmp_path):
    cache = make_cache(tiny_model, tmp_path / "cache")
    transform = train_transform(tiny_model)
    features = cache.features(images, transform, views=3).materialize()
    assert features.shape == (4, 3, tiny_model.model.clip.config.projection_dim)
    mos = torch.tensor([r.mos for r in images])
    tiny_model.train()
    head = copy.deepcopy(tiny_model.model.head.state_dict())  # a training step moves the standardising statistics
    for view in range(3):
        pixels = torch.stack([transform(load_rgb(r.path), generator=view_generator(r.file_name, view))
                              for r in images])
        torch.manual_seed(view)  # the same dropout masks for both
        uncached = tiny_model.training_step({"image": pixels, "mos": mos}, 0)
        tiny_model.model.head.load_state_dict(head)
        torch.manual_seed(view)
        cached = tiny_model.training_step({"features": features[:, view], "mos": mos}, 0)
        tiny_model.model.head.load_state_dict(head)
        torch.testing.assert_close(cached, uncached, rtol=1e-5, atol=1e-6)


def test_views_differ_and_the_eval_view_is_the_centre_crop(tiny_model, images, tmp_path):
    cache = make_cache(tiny_model, tmp_path / "cache")
    train = cache.features(images, train_transform(tiny_model), views=2).materialize()
    assert not torch.allclose(train[:, 0], train[:, 1])
    centre = cache.features(images, eval_transform(tiny_model), views=8)  # eval always has one view
    pixels = torch.stack([eval_transform(tiny_model)(load_rgb(r.path)) for r in images])
    assert centre.shape[1] == 1
    torch.testing.assert_close(centre.materialize()[:, 0], tiny_model.model.encode_images(pixels),
                               rtol=1e-5, atol=1e-6)


def test_shards_are_reused_and_extended_with_more_views(tiny_model, images, tmp_path):
    first = make_cache(tiny_model, tmp_path / "cache", shard_rows=3)
    two = first.features(images, train_transform(tiny_model), views=2).materialize()
    assert first.built_views == 8
    again = make_cache(tiny_model, tmp_path / "cache", shard_rows=3)
    assert torch.equal(again.features(images, train_transform(tiny_model), views=2).materialize(), two)
    assert again.built_views == 0
    three = again.features(images, train_transform(tiny_model), views=3).materialize()
    assert again.built_views == 4  # only the new view of each image
    assert torch.equal(three[:, :2], two)
    assert torch.equal(again.features(images, train_transform(tiny_model), views=2).materialize(), two)
    assert again.built_views == 4  # fewer views than cached: read, not rebuilt


def test_shards_are_checked_without_hashlib_file_digest(tiny_model, images, tmp_path, monkeypatch):
    """Python 3.10 (which the package supports) has no hashlib.file_digest: reading a shard back must not need it."""
    built = make_cache(tiny_model, tmp_path / "cache").features(images, eval_transform(tiny_model)).materialize()
    monkeypatch.delattr(hashlib, "file_digest", raising=False)
    again = make_cache(tiny_model, tmp_path / "cache")
    # Exact: the same stored bytes read back (nothing is encoded again, as the next line checks).
    assert torch.equal(again.features(images, eval_transform(tiny_model)).materialize(), built)
    assert again.built_views == 0  # read back and its checksum accepted, not rebuilt


def test_a_split_is_memory_mapped_shards_read_once_per_loader(tiny_model, images, tmp_path, monkeypatch):
    make_cache(tiny_model, tmp_path / "cache", shard_rows=3).features(images, train_transform(tiny_model), views=2)
    assert len(list((tmp_path / "cache").rglob("shard-*.npy"))) == 2  # 4 rows in shards of 3
    hashed = []
    original = cache_module.handle_sha256
    monkeypatch.setattr(cache_module, "handle_sha256", lambda handle: hashed.append(handle.name) or original(handle))
    features = make_cache(tiny_model, tmp_path / "cache", shard_rows=3).features(images, train_transform(tiny_model),
                                                                                 views=2)
    assert len(hashed) == 2  # one checksum per shard, not one per entry per read
    assert isinstance(features, ShardedFeatures) and features.shape[:2] == (4, 2)
    rows, views = torch.tensor([3, 0, 2, 1, 3]), torch.tensor([1, 0, 1, 1, 0])
    whole = features.materialize()
    assert torch.equal(features.gather(rows, views), whole[rows, views])
    assert torch.equal(features[3], whole[3])


def test_rows_held_by_other_shards_are_copied_not_encoded(tiny_model, images, tmp_path):
    cache = make_cache(tiny_model, tmp_path / "cache", shard_rows=2)
    every = cache.features(images, eval_transform(tiny_model)).materialize()
    other_split = make_cache(tiny_model, tmp_path / "cache", shard_rows=2)
    subset = other_split.features([images[3], images[0], images[1]], eval_transform(tiny_model)).materialize()
    assert other_split.built_views == 0  # another split of the same images: new shards, nothing encoded
    assert torch.equal(subset, every[[3, 0, 1]])


def test_a_run_killed_while_building_keeps_its_finished_shards(tiny_model, images, tmp_path):
    encoder = tiny_model.model.frozen_encoder()
    calls = []

    def dies_on_the_second_batch(pixels):
        calls.append(len(pixels))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return encoder.encode_images(pixels)

    killed = FeatureCache(tmp_path / "cache", replace(encoder, encode_images=dies_on_the_second_batch),
                          progress=False, shard_rows=2, batch_size=2)
    with pytest.raises(KeyboardInterrupt):
        killed.features(images, eval_transform(tiny_model))
    assert len(list((tmp_path / "cache").rglob("shard-*.npy"))) == 1
    assert not list((tmp_path / "cache").rglob("*.tmp"))
    resumed = make_cache(tiny_model, tmp_path / "cache", shard_rows=2)
    resumed.features(images, eval_transform(tiny_model))
    assert resumed.built_views == 2  # only the shard that was not finished


def test_key_changes_with_backbone_and_transform_settings(tiny_model, images, tmp_path):
    cache = make_cache(tiny_model, tmp_path / "cache")
    base = train_transform(tiny_model)
    folder = cache.folder(base)
    for changed in (train_transform(tiny_model, crop_scale=(0.5, 1.0)), train_transform(tiny_model, flip=False),
                    eval_transform(tiny_model)):
        assert cache.folder(changed) != folder
    assert make_cache(tiny_model, tmp_path / "cache").folder(base) == folder
    other_values = {"backbone": "random:vit-b-16", "fingerprint": "0" * 16, "precision": "bf16-mixed",
                    "dtype": "float16", "attn_implementation": "eager"}
    assert set(other_values) == {f.name for f in fields(EncoderKey)}  # a new setting must be tested here too
    for name, value in other_values.items():
        encoder = replace(cache.encoder, key=replace(cache.key, **{name: value}))
        other = FeatureCache(tmp_path / "cache", encoder, progress=False)
        assert other.folder(base) != folder, name
        assert other.store(base).key != cache.store(base).key, name


def test_key_changes_with_the_resize_interpolation(tiny_model, images, tmp_path, monkeypatch):
    from PIL import Image

    from clip_agiqa.data import transforms

    cache = make_cache(tiny_model, tmp_path / "cache")
    for make in (train_transform, eval_transform):
        before = cache.folder(make(tiny_model))
        with monkeypatch.context() as patch:
            patch.setattr(transforms, "RESIZE_INTERPOLATION", Image.Resampling.BILINEAR)
            assert cache.folder(make(tiny_model)) != before


def test_the_trainer_cache_keys_the_model_attention_kernel_and_precision(tmp_path):
    encoders = {}
    for kernel, precision in (("sdpa", "32-true"), ("eager", "32-true"), ("sdpa", "bf16-mixed")):
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                            precision=precision)
        model = CLIPAGIQAModel(**TINY_MODEL, attn_implementation=kernel)
        encoders[kernel, precision] = cache_for_trainer(trainer, model.frozen_encoder(), tmp_path / "cache",
                                                        tmp_path, 4, 0).key
    assert encoders["eager", "32-true"].attn_implementation == "eager"
    assert encoders["sdpa", "bf16-mixed"].precision == "bf16-mixed"
    assert len({key.folder_name() for key in encoders.values()}) == 3


@pytest.mark.parametrize("change", ["content", "mtime"])
def test_a_changed_image_file_is_rebuilt(tiny_model, images, tmp_path, change):
    cache = make_cache(tiny_model, tmp_path / "cache")
    transform = eval_transform(tiny_model)
    before = cache.features(images, transform).materialize()
    target = images[1].path
    if change == "content":
        load_rgb(images[2].path).save(target)
    else:
        stat = target.stat()
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    again = make_cache(tiny_model, tmp_path / "cache")
    after = again.features(images, transform).materialize()
    assert again.built_views == 1
    assert torch.equal(after[[0, 2, 3]], before[[0, 2, 3]])  # read back as stored, not re-encoded
    if change == "content":
        torch.testing.assert_close(after[1], before[2])


@pytest.mark.parametrize("damage", ["truncated", "flipped_byte", "garbage_manifest", "no_manifest", "other_key",
                                    "leftover_temporary"])
def test_a_damaged_or_incomplete_shard_is_rebuilt_not_used(tiny_model, images, tmp_path, damage):
    cache = make_cache(tiny_model, tmp_path / "cache", shard_rows=2)
    transform = train_transform(tiny_model)
    before = cache.features(images, transform, views=2).materialize()
    name = cache.shards(images)[0][0]
    array, manifest = cache.folder(transform) / f"{name}.npy", cache.folder(transform) / f"{name}.json"
    data = array.read_bytes()
    if damage == "truncated":
        array.write_bytes(data[: len(data) - 17])
    elif damage == "flipped_byte":  # still parses: only the checksum catches it
        array.write_bytes(data[:-5] + bytes([data[-5] ^ 0xFF]) + data[-4:])
    elif damage == "garbage_manifest":
        manifest.write_bytes(b"\xff not a manifest")
    elif damage == "no_manifest":  # killed between writing the array and its manifest
        manifest.unlink()
    elif damage == "other_key":
        manifest.write_text(manifest.read_text().replace('"format": "2"', '"format": "1"'))
    else:  # a run killed while writing leaves only its temporary file
        array.rename(array.with_name(f".{array.name}.x1.tmp"))
    again = make_cache(tiny_model, tmp_path / "cache", shard_rows=2)
    after = again.features(images, transform, views=2).materialize()
    assert again.built_views == 4  # the damaged shard's 2 rows x 2 views
    assert torch.equal(after[2:], before[2:])  # intact shards are read back as stored
    # The rebuilt rows were encoded in a batch of 2, the originals in a batch of 4: batched kernels may
    # differ in the last bits (about 5e-7 seen on AMD EPYC), so allow float32 rounding, not more.
    torch.testing.assert_close(after[:2], before[:2], rtol=1e-5, atol=1e-6)


def test_a_shard_under_another_key_or_with_hostile_contents_is_refused(tmp_path):
    store = ShardStore(tmp_path, {"encoder": "a"})
    features = torch.randn(3, 2, 5).to(torch.bfloat16)
    store.write("s", [["x"], ["y"], ["z"]], features)
    opened = store.open("s")
    assert opened.features.dtype == torch.bfloat16 and torch.equal(opened.features, features)
    assert ShardStore(tmp_path, {"encoder": "b"}).open("s") is None
    import numpy as np

    np.save(tmp_path / "s.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)  # would need unpickling
    assert store.open("s") is None
    assert store.open("missing") is None


def test_ranks_build_disjoint_shards_and_nothing_twice(tiny_model, images, tmp_path):
    ranks = [make_cache(tiny_model, tmp_path / "cache", rank=r, world_size=2, shard_rows=2) for r in (0, 1)]
    transform = train_transform(tiny_model)
    built = [cache.build(images, transform, 2, share=[cache.rank]) for cache in ranks]
    assert built == [2, 2]
    reader = make_cache(tiny_model, tmp_path / "cache", rank=0, world_size=2, shard_rows=2)
    reader.features(images, transform, views=2)
    assert reader.built_views == 0


def test_cached_dataset_draws_one_of_the_views(tiny_model, images, tmp_path):
    features = make_cache(tiny_model, tmp_path / "cache").features(images, train_transform(tiny_model), views=3)
    dataset = CachedFeatures(images, features)
    seen = {int(torch.nonzero((features[0] == dataset[0]["features"]).all(dim=1))[0]) for _ in range(40)}
    assert seen == {0, 1, 2}
    assert dataset[2]["mos"] == 2.0 and dataset[2]["file_name"] == images[2].file_name
    batch = dataset.__getitems__([3, 1])
    assert batch["features"].shape == (2, features.shape[2]) and batch["mos"].tolist() == [3.0, 1.0]
    assert batch["index"].tolist() == [3, 1] and batch["file_name"] == [images[3].file_name, images[1].file_name]


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


def test_prompt_features_are_encoded_once_batched_and_read_back(tmp_path):
    model = CLIPAGIQAModel(**TINY_MODEL, use_prompt=True).eval()
    encoder = model.frozen_encoder()
    calls = []

    def counted(texts):
        if texts:  # an empty call (the cache asking the feature size) runs no encoder
            calls.append(len(texts))
        return encoder.encode_texts(texts)

    cache = FeatureCache(tmp_path / "cache", replace(encoder, encode_texts=counted), progress=False)
    long_prompt = "a photo of " * 40
    prompts = ["a red circle", long_prompt, "a red circle", "a blue square"]
    with pytest.warns(UserWarning, match="1 of 3 generation prompt.*truncated"):
        table = cache.prompt_table(prompts)
    assert calls == [3] and table.prompts == sorted(set(prompts))
    expected, _ = encoder.encode_texts(table.prompts)
    torch.testing.assert_close(table.features, expected)
    assert table.rows_of(["a blue square", "a red circle"]).tolist() == [0, 2]  # sorted: blue, photo, red
    with pytest.warns(UserWarning, match="truncated"):  # every run says so, not only the one that encoded
        again = FeatureCache(tmp_path / "cache", replace(encoder, encode_texts=counted), progress=False)
        assert torch.equal(again.prompt_table(list(reversed(prompts))).features, table.features)
    assert calls == [3]


def test_long_prompts_are_cut_as_the_tokenizer_cuts_them():
    from clip_agiqa.backbone import feature_output

    model = CLIPAGIQAModel(**TINY_MODEL).eval()
    texts = ["a red circle", "a photo of " * 40, "x"]
    features, truncated = model.encode_texts(texts)
    assert truncated == 1
    for text, row in zip(texts, features):
        tokens = model.tokenizer([text], truncation=True, max_length=77, return_tensors="pt")
        with torch.no_grad():
            torch.testing.assert_close(row, feature_output(model.clip.get_text_features(**tokens))[0],
                                       rtol=1e-5, atol=1e-6)


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
    assert not list(tmp_path.rglob("shard-*"))  # the folder may hold the record of checked images, no features


def test_cache_without_a_model_says_how_to_fix_it(synthetic_root, tmp_path):
    with pytest.raises(InputError, match="cache_views: 0"):
        datamodule(synthetic_root, tmp_path / "cache", 2).val_dataloader()
    with pytest.raises(ValueError, match="cache_views"):
        datamodule(synthetic_root, tmp_path / "cache", -1)


def test_cli_fit_with_the_cache_builds_once_and_reuses_it(synthetic_root, tmp_path):
    cache_dir = tmp_path / "cache"
    data = ["--data.class_path", "clip_agiqa.MOSFolder", "--data.root", str(synthetic_root),
            "--data.batch_size", "8", "--data.num_workers", "0",
            "--data.cache_views", "2", "--data.cache_dir", str(cache_dir)]
    run_cli(["fit", *TINY_MODEL_ARGS, *trainer_args(tmp_path / "run", epochs=2), *data])
    entries = shard_files(cache_dir)
    assert len(entries) == 2 * 2  # train and val: one shard each, array and manifest
    run_cli(["fit", *TINY_MODEL_ARGS, *trainer_args(tmp_path / "another_run", epochs=2), *data])
    assert shard_files(cache_dir) == entries  # reused, not rewritten


@pytest.mark.slow
def test_ddp_ranks_build_the_cache_together(synthetic_root, tmp_path):
    """Two CPU processes (gloo) build one cache: complete afterwards, and a single process reuses all of it."""
    from helpers import run_cli_subprocess

    cache_dir = tmp_path / "cache"
    common = [*TINY_MODEL_ARGS, "--data.class_path", "clip_agiqa.MOSFolder", "--data.root", str(synthetic_root),
              "--data.batch_size", "8", "--data.num_workers", "0", "--data.cache_views", "2",
              "--data.cache_dir", str(cache_dir)]
    ddp = trainer_args(tmp_path / "ddp")
    ddp[ddp.index("--trainer.devices") + 1] = "2"
    run_cli_subprocess(["fit", *common, *ddp, "--trainer.strategy", "ddp"])
    entries = shard_files(cache_dir)
    assert len(entries) == 2 * 2  # train and val: one shard each, array and manifest
    assert not list(cache_dir.rglob("*.tmp*"))
    run_cli(["fit", *common, *trainer_args(tmp_path / "single")])
    assert shard_files(cache_dir) == entries
