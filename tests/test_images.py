"""The shared loader decodes each image mode as a viewer shows it, checked against numpy reference conversions."""

import numpy as np
import pytest
from PIL import Image, features

from clip_agiqa.data.images import BACKGROUND, load_rgb

COLOURS = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)  # asymmetric: rotations show


def loaded(path) -> np.ndarray:
    image = load_rgb(path)
    assert image.mode == "RGB"
    return np.asarray(image).astype(np.int64)


def as_grey_rgb(values: np.ndarray) -> np.ndarray:
    return np.repeat(values[..., None], 3, axis=2).astype(np.int64)


def assert_pixels(actual: np.ndarray, expected: np.ndarray, atol: int = 1) -> None:
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=0)


def over_background(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Straight alpha compositing over BACKGROUND, in floats."""
    weight = alpha[..., None].astype(np.float64) / 255
    return np.rint(rgb * weight + np.array(BACKGROUND) * (1 - weight))


GRADIENT_16 = np.linspace(0, 65535, 32 * 48).reshape(32, 48).astype(np.uint16)


@pytest.mark.parametrize("dtype, suffix", [(np.uint16, "png"), (">u2", "tif"), (np.int32, "tif")],
                         ids=["I;16 png", "I;16B tiff", "I tiff"])
def test_16_bit_gradient_loads_as_the_8_bit_gradient(tmp_path, dtype, suffix):
    path = tmp_path / f"gradient.{suffix}"
    Image.fromarray(GRADIENT_16.astype(dtype)).save(path)
    assert_pixels(loaded(path), as_grey_rgb(np.rint(GRADIENT_16 / 257)))  # was all white (clipped at 255)


def test_float_image_scales_0_1_to_0_255(tmp_path):
    values = np.linspace(0, 1, 32 * 48, dtype=np.float32).reshape(32, 48)
    Image.fromarray(values).save(tmp_path / "float.tif")
    assert_pixels(loaded(tmp_path / "float.tif"), as_grey_rgb(np.rint(values * 255)))


@pytest.mark.parametrize("suffix, atol", [("png", 0), ("jpg", 8)])
def test_exif_orientation_6_is_applied(tmp_path, suffix, atol):
    path = tmp_path / f"phone.{suffix}"
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the stored picture must be turned 90 degrees clockwise to display
    # Coarse 8x8 blocks so that JPEG's loss stays far below the difference a wrong rotation makes.
    blocks = np.kron(COLOURS[::8, ::8], np.ones((8, 8, 1), dtype=np.uint8))
    Image.fromarray(blocks).save(path, exif=exif, quality=95, subsampling=0)  # no chroma bleed
    expected = np.rot90(blocks, k=-1)  # clockwise
    assert_pixels(loaded(path), expected.astype(np.int64), atol=atol)


def test_rgba_is_composited_on_the_background(tmp_path):
    alpha = np.random.default_rng(1).integers(0, 256, COLOURS.shape[:2], dtype=np.uint8)
    alpha[0, 0] = 128  # a half-transparent pixel
    Image.fromarray(np.dstack([COLOURS, alpha]), "RGBA").save(tmp_path / "rgba.png")
    actual = loaded(tmp_path / "rgba.png")
    assert_pixels(actual, over_background(COLOURS, alpha))
    half_white = COLOURS[0, 0].astype(np.float64) * 128 / 255 + np.array(BACKGROUND) * 127 / 255
    assert abs(actual[0, 0] - half_white).max() <= 1


def test_la_is_composited_on_the_background(tmp_path):
    grey, alpha = COLOURS[..., 0], COLOURS[..., 1]
    Image.fromarray(np.dstack([grey, alpha]), "LA").save(tmp_path / "la.png")
    assert_pixels(loaded(tmp_path / "la.png"), over_background(as_grey_rgb(grey), alpha))


def test_palette_with_a_transparent_index_shows_the_background(tmp_path):
    palette = np.array([[0, 0, 0], [200, 30, 60], [10, 220, 90]], dtype=np.uint8)
    indices = np.random.default_rng(2).integers(0, 3, (16, 16), dtype=np.uint8)
    image = Image.fromarray(indices, "P")
    image.putpalette(palette.flatten().tolist())
    image.save(tmp_path / "palette.png", transparency=0)
    expected = palette[indices].astype(np.int64)
    expected[indices == 0] = BACKGROUND
    assert_pixels(loaded(tmp_path / "palette.png"), expected, atol=0)


def test_cmyk_becomes_rgb(tmp_path):
    cmyk = np.random.default_rng(3).integers(0, 256, (16, 24, 4), dtype=np.uint8)
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "cmyk.tif")
    ink = cmyk.astype(np.float64)
    expected = np.rint((255 - ink[..., :3]) * (255 - ink[..., 3:]) / 255)
    assert_pixels(loaded(tmp_path / "cmyk.tif"), expected)


ANIMATED = [("gif", {}), ("png", {}), pytest.param("webp", {"lossless": True}, marks=pytest.mark.skipif(
    not features.check("webp"), reason="Pillow built without WebP"))]


@pytest.mark.parametrize("suffix, options", ANIMATED, ids=["gif", "apng", "webp"])
def test_animated_file_gives_its_first_frame(tmp_path, suffix, options):
    first, second = Image.new("RGB", (16, 16), (255, 0, 0)), Image.new("RGB", (16, 16), (0, 0, 255))
    path = tmp_path / f"animated.{suffix}"
    first.save(path, save_all=True, append_images=[second], duration=100, loop=0, **options)
    with Image.open(path) as image:
        assert getattr(image, "n_frames", 1) == 2
    assert_pixels(loaded(path), np.asarray(first).astype(np.int64))
