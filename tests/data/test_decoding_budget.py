"""Decoding is budgeted by bytes: an image whose decode would take more memory than ``MAX_DECODED_BYTES`` (an
88-megapixel float TIFF or 16-bit PNG, under the pixel limit) is refused from its header, with the same reason
for score and predict; decoding workers together stay within half the machine's memory. The files are headers
that declare the size (a few hundred bytes): what Pillow reads before decoding."""

import struct
import zlib

import pytest

from clip_agiqa.data import ImageDataset, Record
from clip_agiqa.data import images as images_module
from clip_agiqa.data.images import MAX_PIXELS, ImageError, decoding_workers, load_rgb
from clip_agiqa.data.transforms import ImageTransform
from clip_agiqa.frozen import ImageSettings
from clip_agiqa.scoring import ImageFiles

SIDE = 9400  # 88.4 million pixels, under MAX_PIXELS


def float_tiff(width: int, height: int) -> bytes:
    """A little-endian TIFF of one 32-bit float sample per pixel (mode F), its one strip left out."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 32), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 0), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, width * height * 4),
               (339, 3, 1, 3)]  # SampleFormat 3: IEEE float
    directory = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries)
    return b"II*\x00" + struct.pack("<I", 8) + directory + struct.pack("<I", 0)


def sixteen_bit_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)  # 16-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("name, make", [("huge.tif", float_tiff), ("huge.png", sixteen_bit_png)])
def test_an_image_too_big_to_decode_is_refused_from_its_header(tmp_path, name, make):
    assert SIDE * SIDE < MAX_PIXELS
    path = tmp_path / name
    path.write_bytes(make(SIDE, SIDE))
    with pytest.raises(ImageError, match=r"9400 x 9400 pixels of mode (F|I;16): decoding takes about [23]\.\d GiB, "
                                         r"more than the limit 1\.2 GiB"):
        load_rgb(path)
    transform = ImageTransform(ImageSettings(size=32), train=False)
    _, pixels, scored = ImageFiles([path], transform)[0]  # clip-agiqa score's row
    predicted = ImageDataset([Record(name, path, {"mos": float("nan")})], transform)[0]["error"]  # predict's row
    assert pixels is None and scored == predicted and "decoding takes about" in scored


def test_a_small_float_image_still_decodes(tmp_path):
    from PIL import Image

    Image.new("F", (40, 30), 0.5).save(tmp_path / "small.tif")
    assert load_rgb(tmp_path / "small.tif").getpixel((0, 0)) == (128, 128, 128)


def test_decoding_workers_stay_within_half_the_memory(monkeypatch):
    monkeypatch.setattr(images_module, "machine_memory", lambda: 1 << 50)
    assert decoding_workers(8) == 8
    monkeypatch.setattr(images_module, "machine_memory", lambda: 6 * images_module.MAX_DECODED_BYTES)
    with pytest.warns(UserWarning, match=r"decoding images in 3 worker\(s\), not 8"):
        assert decoding_workers(8) == 3
    assert decoding_workers(0) == 0
