"""The shared loader decodes each image mode as a viewer shows it (colour-managed: ICC profiles to sRGB), checked
against numpy and ImageCms reference conversions; it refuses hostile files (special files, images that would
explode) without opening or decoding them; folder scans take every format it reads and name what they skip."""

import io
import os
import signal
import struct

import numpy as np
import pytest
from PIL import Image, ImageCms, features

from clip_agiqa.data import images
from clip_agiqa.data.images import (
    BACKGROUND,
    READABLE_FORMATS,
    ImageError,
    header_problem,
    load_rgb,
    readable_image,
    scan_folder,
    warn_skipped,
)

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


# --- colour management ------------------------------------------------------------------------------------
def s15_16(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def icc_tag_xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ " + bytes(4) + s15_16(x) + s15_16(y) + s15_16(z)


def rgb_matrix_profile(primaries, gamma: float, description: str = "Adobe-like RGB") -> bytes:
    """A minimal ICC v2 display profile (RGB -> XYZ matrix, one gamma per channel), built by hand: ImageCms
    can only create sRGB, LAB and XYZ profiles."""
    text = description.encode("ascii") + b"\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256)) + bytes(2)
    tags = [(b"desc", desc), (b"cprt", b"text" + bytes(4) + b"none\0"), (b"wtpt", icc_tag_xyz(0.9642, 1.0, 0.8249)),
            (b"rXYZ", icc_tag_xyz(*primaries[0])), (b"gXYZ", icc_tag_xyz(*primaries[1])),
            (b"bXYZ", icc_tag_xyz(*primaries[2])), (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    offset, table, data = 128 + 4 + 12 * len(tags), b"", b""
    for signature, body in tags:
        body += bytes(-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + bytes(4) + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ " + bytes(12)
              + b"acsp" + bytes(24) + struct.pack(">I", 0) + icc_tag_xyz(0.9642, 1.0, 0.8249)[8:] + bytes(48))
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


ADOBE_RGB = rgb_matrix_profile([(0.6097, 0.3111, 0.0195), (0.2053, 0.6257, 0.0609), (0.1492, 0.0632, 0.7446)],
                               563 / 256)


def reference_srgb(image: Image.Image, icc: bytes) -> np.ndarray:
    """ImageCms's own conversion of the tagged pixels to sRGB."""
    converted = ImageCms.profileToProfile(image, ImageCms.ImageCmsProfile(io.BytesIO(icc)),
                                          ImageCms.createProfile("sRGB"), outputMode="RGB")
    return np.asarray(converted).astype(np.int64)


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_an_embedded_icc_profile_is_converted_to_srgb(tmp_path, suffix):
    image = Image.fromarray(np.kron(COLOURS[::4, ::4], np.ones((4, 4, 1), dtype=np.uint8)))
    path = tmp_path / f"adobe.{suffix}"
    image.save(path, icc_profile=ADOBE_RGB, **({"quality": 100, "subsampling": 0} if suffix == "jpg" else {}))
    with Image.open(path) as stored:
        stored.load()
        expected = reference_srgb(stored.convert("RGB"), ADOBE_RGB)
        untagged = np.asarray(stored.convert("RGB")).astype(np.int64)
    actual = loaded(path)
    assert_pixels(actual, expected, atol=0)
    assert np.abs(actual - untagged).max() > 20  # the profile matters: (39, 200, 60)-like greens move a lot


def test_transparent_pixels_are_converted_before_they_meet_the_background(tmp_path):
    alpha = np.random.default_rng(5).integers(0, 256, COLOURS.shape[:2], dtype=np.uint8)
    Image.fromarray(np.dstack([COLOURS, alpha]), "RGBA").save(tmp_path / "rgba.png", icc_profile=ADOBE_RGB)
    expected = reference_srgb(Image.fromarray(COLOURS), ADOBE_RGB)
    assert_pixels(loaded(tmp_path / "rgba.png"), over_background(expected, alpha))


@pytest.mark.parametrize("profile", [b"not a profile at all", ImageCms.ImageCmsProfile(
    ImageCms.createProfile("LAB")).tobytes()], ids=["damaged", "LAB profile on RGB pixels"])
def test_an_unusable_profile_is_ignored_as_viewers_do(tmp_path, profile):
    Image.fromarray(COLOURS).save(tmp_path / "tagged.png", icc_profile=profile)
    assert_pixels(loaded(tmp_path / "tagged.png"), COLOURS.astype(np.int64), atol=0)


# --- hostile files ----------------------------------------------------------------------------------------
def reason(path) -> str:
    with pytest.raises(ImageError) as error:
        load_rgb(path)
    assert str(path) in str(error.value)
    return error.value.reason


def test_a_thin_image_is_refused_from_its_header_with_the_limit(tmp_path):
    Image.new("L", (1, 100_000)).save(tmp_path / "thin.png")
    assert (tmp_path / "thin.png").stat().st_size < 1000
    assert reason(tmp_path / "thin.png") == "1 x 100000 pixels: aspect ratio 100,000 exceeds the limit 50"
    assert header_problem(tmp_path / "thin.png").endswith("exceeds the limit 50")
    assert not readable_image(tmp_path / "thin.png")
    Image.new("L", (50, 1)).save(tmp_path / "ratio_50.png")
    assert loaded(tmp_path / "ratio_50.png").shape == (1, 50, 3)


def test_too_many_pixels_are_refused_before_decoding(tmp_path, monkeypatch):
    Image.new("RGB", (40, 30)).save(tmp_path / "big.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded"))
    assert reason(tmp_path / "big.png") == "40 x 30 pixels: 1,200 pixels exceed the limit 1,000"


def test_a_fifo_is_refused_by_type_without_being_opened(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    signal.alarm(20)  # opening it would block forever: fail instead of hanging the suite
    try:
        assert reason(fifo) == "a FIFO (named pipe), not a regular file"
        assert header_problem(fifo) == "a FIFO (named pipe), not a regular file" and not readable_image(fifo)
    finally:
        signal.alarm(0)


def test_missing_and_empty_files_and_folders_say_so(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_rgb(tmp_path / "nope.png")
    assert reason(tmp_path / "nope.png") == "not found"
    (tmp_path / "empty.png").write_bytes(b"")
    assert reason(tmp_path / "empty.png") == "empty file"
    (tmp_path / "dir.png").mkdir()
    assert reason(tmp_path / "dir.png") == "a folder, not a regular file"


def test_an_eps_named_png_is_not_handed_to_ghostscript(tmp_path):
    (tmp_path / "page.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    assert "EPS" not in READABLE_FORMATS
    assert reason(tmp_path / "page.png") == "not an image"


# --- folder scans -----------------------------------------------------------------------------------------
def test_a_folder_scan_takes_every_format_the_loader_reads_and_names_what_it_leaves_out(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    formats = ["a.png", "b.gif", "c.tif", "d.bmp", "sub/e.jpg", "sub/f.webp", "sub/g.PNG"]
    if features.check("avif"):
        formats.append("h.avif")
    for name in formats:
        Image.new("RGB", (8, 8), "red").save(root / name)
    (root / "notes.txt").write_text("x")
    os.mkfifo(root / "pipe.png")
    (root / ".hidden").mkdir()
    Image.new("RGB", (8, 8)).save(root / ".hidden" / "cached.png")
    (root / "sub" / "loop").symlink_to(root)  # a link back up is walked once, not forever
    found, skipped = scan_folder(root)
    assert found == sorted(root / name for name in formats)
    assert skipped == [(root / "notes.txt", "not an image format"),
                       (root / "pipe.png", "a FIFO (named pipe), not a regular file")]
    with pytest.warns(UserWarning, match=r"left out 2 .*notes.txt \(not an image format.*pipe.png \(a FIFO"):
        warn_skipped(root, skipped)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_a_folder_scan_names_an_unreadable_sub_folder(tmp_path):
    (tmp_path / "locked").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "locked").chmod(0)
    try:
        found, skipped = scan_folder(tmp_path)
    finally:
        (tmp_path / "locked").chmod(0o755)
    assert found == [tmp_path / "a.png"]
    assert [(path, why.split(" (")[0]) for path, why in skipped] == [(tmp_path / "locked", "folder cannot be read")]


def test_image_bytes_get_the_same_checks_as_files(tmp_path):
    """A hub dataset's image bytes: the same formats, limits and reasons, the sample named."""
    Image.new("L", (1, 100_000)).save(tmp_path / "thin.png")
    with pytest.raises(ImageError, match=r"^cannot read image of sample 7: 1 x 100000 pixels: aspect ratio"):
        load_rgb(io.BytesIO((tmp_path / "thin.png").read_bytes()), name="of sample 7")
    for data, why in [(b"", "empty file"), (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not an image")]:
        with pytest.raises(ImageError) as error:
            load_rgb(io.BytesIO(data), name="of sample 7")
        assert error.value.reason == why
    Image.fromarray(COLOURS).save(tmp_path / "ok.png", icc_profile=ADOBE_RGB)
    assert_pixels(np.asarray(load_rgb(io.BytesIO((tmp_path / "ok.png").read_bytes()))).astype(np.int64),
                  loaded(tmp_path / "ok.png"), atol=0)


def test_a_big_profile_is_used_but_not_kept(tmp_path, monkeypatch):
    Image.fromarray(COLOURS).save(tmp_path / "tagged.png", icc_profile=ADOBE_RGB)
    images.srgb_transform.cache_clear()
    monkeypatch.setattr(images, "CACHED_PROFILE_BYTES", len(ADOBE_RGB) - 1)
    assert_pixels(loaded(tmp_path / "tagged.png"), reference_srgb(Image.fromarray(COLOURS), ADOBE_RGB), atol=0)
    assert images.srgb_transform.cache_info().currsize == 0
    monkeypatch.setattr(images, "CACHED_PROFILE_BYTES", len(ADOBE_RGB))
    loaded(tmp_path / "tagged.png")
    assert images.srgb_transform.cache_info().currsize == 1
