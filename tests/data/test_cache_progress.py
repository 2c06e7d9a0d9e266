"""The feature cache in a job log: plain progress lines while it encodes (no bar draws there, no carriage returns),
none once every shard is built."""

from __future__ import annotations

from helpers import TINY_MODEL_ARGS, run_cli, trainer_args

from clip_agiqa.data.cache import FeatureCache
from clip_agiqa.data.transforms import ImageTransform


def test_encoding_writes_lines_and_a_built_cache_says_nothing(tiny_model, images, tmp_path, capsys):
    transform = ImageTransform(tiny_model.model.image_settings, train=True)
    cache = FeatureCache(tmp_path / "cache", tiny_model.model.frozen_encoder(), progress=False, shard_rows=2)
    cache.features(images, transform, views=2)
    err = capsys.readouterr().err
    assert "caching train features (2 view(s))" in err and "\r" not in err
    FeatureCache(tmp_path / "cache", tiny_model.model.frozen_encoder(), progress=False,
                 shard_rows=2).features(images, transform, views=2)
    assert "caching" not in capsys.readouterr().err


def test_a_fit_without_a_progress_bar_prints_the_cache_lines(synthetic_root, tmp_path, capsys):
    data = ["--data.class_path", "clip_agiqa.MOSFolder", "--data.root", str(synthetic_root), "--data.batch_size", "8",
            "--data.num_workers", "0", "--data.cache_views", "1", "--data.cache_dir", str(tmp_path / "cache")]
    run_cli(["fit", *TINY_MODEL_ARGS, *trainer_args(tmp_path / "run"), *data])  # enable_progress_bar false
    err = capsys.readouterr().err
    assert "caching train features" in err and "caching eval features" in err and "\r" not in err
