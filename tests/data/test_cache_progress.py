"""The feature cache in a job log: a plain line per shard it encodes (no progress bar draws there), none when every
shard is already built."""

from __future__ import annotations

import shutil

from conftest import TINY_MODEL_ARGS, run_cli, trainer_args

from clip_agiqa.data import Record
from clip_agiqa.data.cache import FeatureCache
from clip_agiqa.data.transforms import ImageTransform


def test_each_encoded_shard_is_one_line_and_a_built_cache_says_nothing(tiny_model, synthetic_root, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    records = []
    for index, source in enumerate(sorted(synthetic_root.glob("*.png"))[:5]):
        shutil.copy2(source, folder / source.name)
        records.append(Record(source.name, folder / source.name, {"mos": float(index)}))
    transform = ImageTransform(tiny_model.model.image_settings, train=True)
    lines = []
    cache = FeatureCache(tmp_path / "cache", tiny_model.model.frozen_encoder(), progress=False, shard_rows=2,
                         log=lines.append)
    cache.features(records, transform, views=2)
    assert [line.split(":")[1].strip() for line in lines] == [
        "train shard 1/3 (2 images)", "train shard 2/3 (2 images)", "train shard 3/3 (1 images)"]
    assert all("view(s) encoded" in line for line in lines) and "4 view(s)" in lines[0]
    lines.clear()
    FeatureCache(tmp_path / "cache", tiny_model.model.frozen_encoder(), progress=False, shard_rows=2,
                 log=lines.append).features(records, transform, views=2)
    assert lines == []


def test_a_fit_without_a_progress_bar_prints_the_cache_lines(synthetic_root, tmp_path, capsys):
    data = ["--data.class_path", "clip_agiqa.MOSFolder", "--data.root", str(synthetic_root), "--data.batch_size", "8",
            "--data.num_workers", "0", "--data.cache_views", "1", "--data.cache_dir", str(tmp_path / "cache")]
    run_cli(["fit", *TINY_MODEL_ARGS, *trainer_args(tmp_path / "run"), *data])  # enable_progress_bar false
    printed = capsys.readouterr().out
    assert "feature cache: train shard 1/1" in printed and "feature cache: eval shard 1/1" in printed
