"""--data.augment: the training view. ``crop`` takes a window at the eval view's pixel scale (never
rescaled, so blur and noise look as at test time) and flips; ``resized_crop`` is the paper's; ``none`` is the eval
view. Every mode works with the feature cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from clip_agiqa.data import MOSFolder, Record
from clip_agiqa.data.cache import FeatureCache, view_generator
from clip_agiqa.data.transforms import ImageTransform
from clip_agiqa.errors import InputError
from clip_agiqa.frozen import ImageSettings

SETTINGS = ImageSettings(size=32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # pixels stay in [0, 1]


def board(width: int, height: int, square: int) -> Image.Image:
    """A black-and-white checkerboard of ``square``-pixel squares."""
    cells = (np.arange(height)[:, None] // square + np.arange(width)[None, :] // square) % 2
    return Image.fromarray(np.repeat((cells * 255).astype(np.uint8)[..., None], 3, axis=2))


def runs(row: torch.Tensor) -> list[int]:
    """Lengths of the runs of equal (thresholded) pixels along a row, the cut-off ones at both ends left out."""
    changes = torch.nonzero((row[1:] > 0.5) != (row[:-1] > 0.5)).flatten().tolist()
    return [b - a for a, b in zip(changes, changes[1:])]


def view(augment: str, image: Image.Image, seed: int, **kwargs) -> torch.Tensor:
    transform = ImageTransform(SETTINGS, train=True, augment=augment, **kwargs)
    return transform(image, generator=torch.Generator().manual_seed(seed))


def test_a_crop_keeps_the_pixel_scale_of_the_eval_view():
    image = board(96, 32, square=4)  # the shorter side is the input size: the eval view is not rescaled
    eval_view = ImageTransform(SETTINGS, train=False)(image)
    assert set(runs(eval_view[0, 0])) == {4}
    crops = [view("crop", image, seed) for seed in range(8)]
    for crop in crops:
        assert crop.shape == (3, 32, 32)
        assert set(runs(crop[0, 0])) == {4} and set(runs(crop[0, :, 0])) == {4}  # squares not resized
        assert set(crop.unique().tolist()) == {0.0, 1.0}  # no resampling either: only black and white pixels
    assert len({tuple(c[0, 0, :8].tolist()) for c in crops}) > 1  # windows at different places
    zoomed = view("resized_crop", image, 0, crop_scale=(0.05, 0.05))  # about 12 pixels a side, to 32
    assert min(runs(zoomed[0, 0])) > 6  # the paper's crop enlarges what it keeps


def test_a_crop_of_a_large_image_is_taken_at_the_eval_scale():
    image = board(192, 64, square=8)  # halved for every view: 4-pixel squares, as the eval view shows them
    assert set(runs(ImageTransform(SETTINGS, train=False)(image)[0, 0])) == {4}
    for seed in range(4):
        assert set(runs(view("crop", image, seed)[0, 0])) <= {4, 5}  # bicubic edges may shift a run by one


def test_views_are_reproducible_and_flipped_half_the_time():
    image = Image.fromarray(np.concatenate([np.zeros((32, 16, 3), np.uint8), np.full((32, 16, 3), 255, np.uint8)],
                                           axis=1))  # dark left half, bright right half
    for augment in ("crop", "resized_crop"):
        torch.testing.assert_close(view(augment, image, 3), view(augment, image, 3))
        flipped = [bool(view(augment, image, seed)[0, 0, 0] > 0.5) for seed in range(20)]
        assert 3 <= sum(flipped) <= 17
    unflipped = ImageTransform(SETTINGS, train=True, augment="crop", flip=False)
    assert all(unflipped(image, torch.Generator().manual_seed(s))[0, 0, 0] < 0.5 for s in range(10))


def test_none_is_the_eval_view():
    image = board(80, 48, square=3)
    eval_view = ImageTransform(SETTINGS, train=False)(image)
    for seed in range(3):
        torch.testing.assert_close(view("none", image, seed), eval_view, rtol=0, atol=0)


def test_the_cache_key_names_the_augmentation_only_where_it_changes_the_view():
    def described(train: bool, augment: str) -> dict:
        return ImageTransform(SETTINGS, train=train, augment=augment).describe()

    assert "augment" not in described(True, "resized_crop")  # caches made before the option stay valid
    assert described(True, "crop")["augment"] == "crop" and described(True, "none")["augment"] == "none"
    assert described(False, "crop") == described(False, "resized_crop")  # val/test views are shared


def test_a_bad_augmentation_is_one_line_naming_the_choices(synthetic_root):
    with pytest.raises(InputError, match="augment must be one of resized_crop, crop, none, got 'zoom'"):
        ImageTransform(SETTINGS, train=True, augment="zoom")
    with pytest.raises(InputError, match="augment must be one of"):
        MOSFolder(str(synthetic_root), augment="zoom")


def test_the_datamodule_trains_on_the_chosen_view(synthetic_root):
    data = MOSFolder(str(synthetic_root), augment="crop", image_size=32, num_workers=0)
    train, val = data.make_dataset("train").transform, data.make_dataset("val").transform
    assert (train.train, train.augment) == (True, "crop") and not val.train


def test_cached_crop_views_are_the_views_the_transform_draws(tiny_model, synthetic_root, tmp_path):
    records = [Record(p.name, p, {"mos": float(i)}) for i, p in enumerate(sorted(synthetic_root.glob("*.png"))[:3])]
    settings = tiny_model.model.image_settings
    crop = ImageTransform(settings, train=True, augment="crop")
    cache = FeatureCache(tmp_path / "cache", tiny_model.model.frozen_encoder(), progress=False)
    features = cache.features(records, crop, views=2).materialize()
    with torch.no_grad():
        for view_index in range(2):
            pixels = torch.stack([crop(Image.open(r.path).convert("RGB"),
                                       generator=view_generator(r.file_name, view_index)) for r in records])
            torch.testing.assert_close(features[:, view_index], tiny_model.model.encode_images(pixels).float(),
                                       rtol=1e-4, atol=1e-5)
    resized = cache.features(records, ImageTransform(settings, train=True), views=2).materialize()
    assert not torch.allclose(resized, features)  # kept apart from the paper's views, under another key
