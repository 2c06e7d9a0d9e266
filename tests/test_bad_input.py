"""Bad input to MOSFolder gets a clear error naming the file or row; odd image modes become RGB;
unreadable images are named before training, and predict lists them instead of failing."""

import csv
import math

import numpy as np
import pytest
from helpers import TINY_MODEL_ARGS, run_cli, trainer_args
from PIL import Image

from clip_agiqa.data import ImageFolder, MOSFolder
from clip_agiqa.data.images import load_rgb


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


def truncated_png(path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])


def break_images(root):
    """A zero-byte file, a text file named .png and a truncated PNG."""
    (root / "img_1.png").write_bytes(b"")
    (root / "img_3.png").write_bytes(b"not a png at all")
    truncated_png(root / "img_8.png")


def test_unreadable_images_are_all_named_before_training(tmp_path):
    data = make_folder(tmp_path / "d", good_rows())
    break_images(tmp_path / "d")
    with pytest.raises(ValueError, match=r"3 of 10 image\(s\) cannot be read: img_1.png .*img_3.png .*img_8.png "
                                         r".*skip_bad_images") as caught:
        data.setup("fit")
    assert str(tmp_path / "d" / "img_") not in str(caught.value)  # names relative to the dataset root


def test_fit_with_a_broken_test_image_stops_before_training(tmp_path):
    make_folder(tmp_path / "d", good_rows())
    (tmp_path / "d" / "img_5.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"1 of 10 image\(s\) cannot be read: img_5.png"):
        run_cli(["fit", *TINY_MODEL_ARGS, "--data", "MOSFolder", "--data.root", str(tmp_path / "d"),
                 "--data.num_workers", "0", *trainer_args(tmp_path / "run")])
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_skip_bad_images_leaves_each_kind_out(tmp_path):
    data = make_folder(tmp_path / "d", good_rows())
    break_images(tmp_path / "d")
    data.skip_bad_images = True
    left_out = r"left out 3 of 10 unreadable image\(s\), e.g. img_1.png, img_3.png, img_8.png"
    with pytest.warns(UserWarning, match=left_out):
        data.setup("fit")
    assert [r.file_name for r in data.records] == [f"img_{i}.png" for i in (0, 2, 4, 5, 6, 7, 9)]


def test_image_folder_gives_a_placeholder_and_the_error_for_an_unreadable_image(tmp_path):
    make_folder(tmp_path / "d", good_rows(3))
    (tmp_path / "d" / "img_1.png").write_bytes(b"")
    data = ImageFolder(str(tmp_path / "d"), num_workers=0, image_size=16)
    data.setup("predict")  # not stopped by the pre-check
    dataset = data.make_dataset("all")
    items = [dataset[i] for i in range(len(dataset))]
    assert [item["error"] == "" for item in items] == [True, False, True]
    assert items[1]["error"] == "empty file"  # the loader's short reason (the row names the file), as score writes it
    assert items[1]["image"].shape == items[0]["image"].shape == (3, 16, 16)


def test_labelled_dataset_still_raises_on_an_unreadable_image(tmp_path):
    data = make_folder(tmp_path / "d", good_rows())
    data.setup("fit")
    dataset = data.make_dataset("all")
    assert dataset[3]["error"] == ""  # the key is always there, so batches collate
    (tmp_path / "d" / "img_3.png").write_bytes(b"")  # broken after the pre-check
    with pytest.raises(ValueError, match="img_3.png"):
        dataset[3]


def test_truncated_image_names_the_file(tmp_path):
    path = tmp_path / "img_2.png"
    truncated_png(path)
    with pytest.raises(ValueError, match="img_2.png"):
        load_rgb(path)


def test_missing_column_is_named(tmp_path):
    data = make_folder(tmp_path / "d", good_rows(), header=("file_name", "score"))
    with pytest.raises(ValueError, match=r"metadata.csv: missing column\(s\) mos"):
        data.setup("fit")


@pytest.mark.parametrize("bad, shown", [("nan", "'nan'"), ("inf", "'inf'"), ("-inf", "'-inf'"), ("", "empty"),
                                         ("good", "'good'")])
def test_bad_mos_names_file_and_row(tmp_path, bad, shown):
    rows = good_rows()
    rows[4] = ("img_4.png", bad)
    data = make_folder(tmp_path / "d", rows)
    with pytest.raises(ValueError, match=rf"metadata.csv: mos must be a finite number; 1 row\(s\) are not: "
                                         rf"row 6 \({shown}\)$"):  # row 1 is the header
        data.setup("fit")


def test_every_bad_mos_row_is_named_up_to_ten(tmp_path):
    rows = [(name, "x" if i % 2 else mos) for i, (name, mos) in enumerate(good_rows(30))]
    data = make_folder(tmp_path / "d", rows)
    listed = ", ".join(f"row {row} \\('x'\\)" for row in range(3, 23, 2))
    with pytest.raises(ValueError, match=rf"15 row\(s\) are not: {listed} and 5 more$"):
        data.setup("fit")


def test_duplicated_file_names_are_named_with_their_rows(tmp_path):
    rows = good_rows() + [("img_1.png", "3.0"), ("img_4.png", "1.0"), ("img_1.png", "2.0")]
    data = make_folder(tmp_path / "d", rows, images=[r[0] for r in good_rows()])
    with pytest.raises(ValueError, match=r"metadata.csv: 2 duplicated name\(s\): img_1.png at rows 3, 12, 14; "
                                         r"img_4.png at rows 6, 13$"):
        data.setup("fit")


def test_metadata_with_a_header_and_no_rows_is_refused(tmp_path):
    data = make_folder(tmp_path / "d", [])
    with pytest.raises(ValueError, match="metadata.csv: no rows below the header"):
        data.setup("fit")


def test_an_empty_metadata_file_says_it_is_empty(tmp_path):
    data = make_folder(tmp_path / "d", [])
    (tmp_path / "d" / "metadata.csv").write_text("\n\n")
    with pytest.raises(ValueError, match=r"metadata.csv is empty: expected a header row with the columns "
                                         r"file_name, mos$"):
        data.setup("fit")


def test_header_names_are_stripped_and_blank_rows_skipped(tmp_path):
    rows = good_rows(4)
    data = make_folder(tmp_path / "d", rows[:2] + [("", ""), ()] + rows[2:], header=(" file_name ", "mos "),
                       images=[name for name, _ in rows])
    data.setup("fit")
    assert [(r.file_name, r.mos) for r in data.records] == [(name, float(mos)) for name, mos in rows]


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
