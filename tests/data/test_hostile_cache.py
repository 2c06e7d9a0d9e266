"""A feature cache planted in a shared data folder: a FIFO or a link to /dev/zero ends in seconds (refused by
type, rebuilt), features of another size, NaN or all zero are never used; each bad file is named in one warning
and rebuilt."""

import os
import subprocess
import sys
import textwrap

import helpers
import pytest
import torch
from helpers import TINY_MODEL

from clip_agiqa import CLIPAGIQA
from clip_agiqa.data import Record, write_synthetic_dataset
from clip_agiqa.data.cache import FeatureCache
from clip_agiqa.data.transforms import ImageTransform

HANG_GUARD = 120  # seconds: only a hang reaches it


def setup(root, write=True):
    if write:
        write_synthetic_dataset(root / "data", num_images=4, picture_size=32, seed=0)
    images = sorted((root / "data").glob("*.png"))
    records = [Record(p.name, p, {"mos": 1.0}) for p in images]
    model = CLIPAGIQA(**TINY_MODEL)
    cache = FeatureCache(root / "cache", model.model.frozen_encoder(), progress=False, shard_rows=2)
    return records, cache, ImageTransform(model.model.image_settings, train=False)


PLANTED = textwrap.dedent("""
    import os, sys, warnings
    from pathlib import Path
    sys.path[:0] = [{tests!r}, {helpers!r}]
    from test_hostile_cache import setup
    root = Path({root!r})
    records, cache, transform = setup(root)
    cache.features(records, transform)
    (first, *_), (second, *_) = cache.shards(records)
    folder = cache.folder(transform)
    manifest, array = folder / (first + ".json"), folder / (second + ".npy")
    manifest.unlink(); os.mkfifo(manifest)  # open() would wait for a writer forever
    array.unlink(); os.symlink("/dev/zero", array)  # the checksum would read forever
    records, cache, transform = setup(root, write=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        features = cache.features(records, transform).materialize()
    print("built", cache.built_views, "finite", bool(features.isfinite().all()))
    for warning in caught:
        print("warning", warning.message)
    print("regular", manifest.is_file() and not manifest.is_symlink(), array.is_file() and not array.is_symlink())
""")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are a POSIX thing")
def test_a_fifo_or_dev_zero_cache_file_is_rebuilt_not_waited_on(tmp_path):
    script = PLANTED.format(tests=os.path.dirname(__file__), helpers=os.path.dirname(helpers.__file__),
                            root=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=HANG_GUARD,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert "built 4 finite True" in lines  # both planted shards (2 rows each) encoded again
    warned = [line for line in lines if line.startswith("warning")]
    assert len(warned) == 2 and any(".json is not usable (a FIFO (named pipe), not a regular file)" in w
                                    for w in warned) and any("character device" in w for w in warned), warned
    assert "regular True True" in lines  # replaced by regular files, not written through


@pytest.mark.parametrize("plant", ["nan", "zeros", "other_size"])
def test_planted_features_are_never_used(tmp_path, plant):
    records, cache, transform = setup(tmp_path)
    honest = cache.features(records, transform).materialize()
    name = cache.shards(records)[0][0]
    store = cache.store(transform)
    shard = store.open(name)
    features = shard.features.clone()
    if plant == "nan":
        features[1, 0, 3] = float("nan")
    elif plant == "zeros":
        features[0] = 0
    else:  # a manifest consistent with a shard of another feature size
        features = torch.randn(2, 1, features.shape[-1] + 7)
    store.write(name, shard.rows, features)  # checksum and manifest agree with the planted array
    records, again, transform = setup(tmp_path, write=False)
    with pytest.warns(UserWarning, match=rf"feature cache file .*{name}\.(npy|json) is not usable"):
        features = again.features(records, transform).materialize()
    assert again.built_views == 2
    torch.testing.assert_close(features, honest, rtol=1e-5, atol=1e-6)
