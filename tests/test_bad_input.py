"""Bad input to MOSFolder gets a clear error naming the file or row; odd image modes become RGB."""

import csv
import math

import numpy as np
import pytest
from PIL import Image

from clip_agiqa.data import MOSFolder
from clip_agiqa.data.transforms import load_rgb


def make_folder(root, rows, header=("file_name", "mos"), images=None):
    root.mkdir(parents=True, exist_ok=True)
    for name in images if images is not None else [r[0] for r in rows]:
        Image.new("RGB", (16, 16), (120, 30, 200)).save(root / name)
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return MOSFolder(str(root), num_workers=0, image_size=16)


def good_rows(n=10):
    return [(f"img_{i}.png", str(i / 2)) for i in range(n)]


def test_missing_images_are_all_reported_at_once(tmp_path):
    rows = good_rows()
    data = make_folder(tmp_path / "d", rows, images=[r[0] for r in rows[:7]])
    with pytest.raises(FileNotFoundError, match=r"3 of 10 image\(s\) not found.*img_7.png, img_8.png, img_9.png"):
        data.setup("fit")


def test_unreadable_image_names_the_file(tmp_path):
    data = make_folder(tmp_path / "d", good_rows())
    (tmp_path / "d" / "img_3.png").write_bytes(b"not a png at all")
    data.setup("fit")
    dataset = data.make_dataset("all") if hasattr(data, "make_dataset") else None
    index = [r.file_name for r in dataset.records].index("img_3.png")
    with pytest.raises(ValueError, match="img_3.png"):
        dataset[index]


def test_truncated_image_names_the_file(tmp_path):
    data = make_folder(tmp_path / "d", good_rows())
    path = tmp_path / "d" / "img_2.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="img_2.png"):
        load_rgb(path)


def test_missing_column_is_named(tmp_path):
    data = make_folder(tmp_path / "d", good_rows(), header=("file_name", "score"))
    with pytest.raises(ValueError, match=r"metadata.csv: missing column\(s\) mos"):
        data.setup("fit")


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "", "good"])
def test_bad_mos_names_file_and_row(tmp_path, bad):
    rows = good_rows()
    rows[4] = ("img_4.png", bad)
    data = make_folder(tmp_path / "d", rows)
    with pytest.raises(ValueError, match=r"metadata.csv, row 6: mos"):  # row 1 is the header
        data.setup("fit")


def test_duplicate_file_name_is_refused(tmp_path):
    rows = good_rows() + [("img_1.png", "3.0")]
    data = make_folder(tmp_path / "d", rows, images=[r[0] for r in good_rows()])
    with pytest.raises(ValueError, match="duplicated file name.*img_1.png"):
        data.setup("fit")


def test_empty_metadata_is_refused(tmp_path):
    data = make_folder(tmp_path / "d", [])
    with pytest.raises(ValueError, match="metadata.csv: no rows"):
        data.setup("fit")


def test_missing_metadata_says_what_it_expects(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(FileNotFoundError, match="file_name,mos"):
        MOSFolder(str(tmp_path / "d")).setup("fit")


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "CMYK"])
def test_any_image_mode_becomes_rgb(tmp_path, mode):
    path = tmp_path / ("x.tif" if mode in ("I;16", "CMYK") else "x.png")
    Image.new(mode, (20, 12)).save(path)
    image = load_rgb(path)
    assert image.mode == "RGB" and image.size == (20, 12)


def test_mixed_modes_load_through_the_datamodule(tmp_path):
    rows = good_rows(10)
    data = make_folder(tmp_path / "d", rows)
    Image.new("L", (16, 16), 90).save(tmp_path / "d" / "img_0.png")
    Image.new("RGBA", (16, 16), (1, 2, 3, 4)).save(tmp_path / "d" / "img_1.png")
    Image.new("P", (16, 16)).save(tmp_path / "d" / "img_2.png")
    data.setup("fit")
    dataset = data.make_dataset("all")
    for i in range(len(dataset)):
        item = dataset[i]
        assert item["image"].shape == (3, 16, 16) and not math.isnan(float(item["mos"]))
