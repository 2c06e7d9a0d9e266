"""The readability check of a data root runs once per file version: recorded (path, size, mtime), threaded,
shared by ranks through prepare_data, never trusted blindly; target_scales of a fixed scale reads nothing."""

from __future__ import annotations

import csv
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clip_agiqa.data import AGIQA3K, MOSFolder, checks
from clip_agiqa.data.checks import CHECKS_FILE


def folder(root: Path, n: int = 8) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "mos"])
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(root / f"img_{i}.png")
            writer.writerow([f"img_{i}.png", i % 5])
    return root


@pytest.fixture
def opened(monkeypatch) -> list[tuple[str, int]]:
    """(file name, thread) of every header check that really opens a file."""
    calls, real = [], checks.CHECKS["header"]

    def counting(path):
        calls.append((Path(path).name, threading.get_ident()))
        time.sleep(0.02)  # long enough that the pool's threads overlap
        return real(path)

    monkeypatch.setitem(checks.CHECKS, "header", counting)
    return calls


def data(root: Path, **kwargs) -> MOSFolder:
    return MOSFolder(str(root), num_workers=0, image_size=8, **kwargs)


def test_a_second_run_over_the_same_files_checks_nothing_again(tmp_path, opened):
    root = folder(tmp_path / "d")
    data(root).setup("fit")
    assert sorted(name for name, _ in opened) == [f"img_{i}.png" for i in range(8)]
    assert (root / ".feature_cache" / CHECKS_FILE).is_file()
    if checks.check_threads() > 1:
        assert len({thread for _, thread in opened}) > 1  # run in parallel
    opened.clear()
    data(root).setup("fit")
    assert opened == []


def test_a_changed_file_is_checked_again_and_a_broken_one_is_caught(tmp_path, opened):
    root = folder(tmp_path / "d")
    data(root).setup("fit")
    opened.clear()
    stamp = os.stat(root / "img_3.png")
    os.utime(root / "img_3.png", ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))  # same size, new mtime
    (root / "img_5.png").write_bytes(b"broken")  # new size
    with pytest.raises(ValueError, match=r"1 of 8 image\(s\) cannot be read: img_5\.png"):
        data(root).setup("fit")
    assert sorted(name for name, _ in opened) == ["img_3.png", "img_5.png"]


@pytest.mark.parametrize("content", [b"{not json", b'{"format": 1, "checks": {"header": ["x"]}}', b"[]",
                                     b'{"format": 1, "checks": {"header": {"/x": [1, "2"]}}}'])
def test_a_damaged_record_is_ignored_and_every_file_checked(tmp_path, opened, content):
    root = folder(tmp_path / "d")
    data(root).setup("fit")
    (root / ".feature_cache" / CHECKS_FILE).write_bytes(content)
    opened.clear()
    data(root).setup("fit")
    assert len(opened) == 8


def test_a_record_naming_a_bad_file_as_passed_does_not_hide_it(tmp_path, opened):
    """Only a file's own size and mtime count: a record cannot vouch for a file that changed since."""
    root = folder(tmp_path / "d")
    data(root).setup("fit")
    (root / "img_2.png").write_bytes(b"x" * os.path.getsize(root / "img_2.png"))  # same size, new mtime
    with pytest.raises(ValueError, match="img_2.png"):
        data(root).setup("fit")


def test_one_rank_checks_in_prepare_data_and_the_others_read_its_record(tmp_path, opened):
    root = folder(tmp_path / "d")
    rank0, rank1 = data(root), data(root)
    rank0.prepare_data()  # Lightning: local rank 0 only, before any setup
    assert len(opened) == 8
    opened.clear()
    rank1.setup("fit")
    rank0.setup("fit")
    assert opened == []


def test_the_record_goes_into_cache_dir_when_given(tmp_path, opened):
    root = folder(tmp_path / "d")
    data(root, cache_dir=str(tmp_path / "cache")).setup("fit")
    assert (tmp_path / "cache" / CHECKS_FILE).is_file() and not (root / ".feature_cache").exists()


def test_skip_bad_images_decodes_once_per_file_version(tmp_path, monkeypatch):
    root = folder(tmp_path / "d")
    (root / "img_1.png").write_bytes(b"")
    decoded, real = [], checks.CHECKS["decode"]
    monkeypatch.setitem(checks.CHECKS, "decode", lambda path: decoded.append(Path(path).name) or real(path))
    with pytest.warns(UserWarning, match=r"left out 1 of 8 unreadable image\(s\), e\.g\. img_1\.png"):
        data(root, skip_bad_images=True).setup("fit")
    decoded.clear()
    with pytest.warns(UserWarning, match="left out 1 of 8"):
        data(root, skip_bad_images=True).setup("fit")
    assert decoded == ["img_1.png"]  # only the bad one, which is never recorded as passed


def test_a_fixed_scale_is_known_without_reading_the_data(tmp_path):
    data = AGIQA3K(str(tmp_path / "not there yet"), target=["quality", "align"])
    assert data.target_scales == {"quality": [0.0, 5.0], "align": [0.0, 5.0]}
    assert data.records is None  # nothing read: the CLI's link does not load the data before the Trainer


def test_a_measured_scale_reads_the_annotations_but_checks_no_image(tmp_path, opened):
    measured = data(folder(tmp_path / "d"))
    train = [r.targets["mos"] for r in measured.split_records("train")]
    assert measured.target_scales == {"mos": [min(train), max(train)]}
    assert opened == []


def test_an_explicit_loader_without_setup_still_names_a_broken_image_first(tmp_path):
    root = folder(tmp_path / "d")
    (root / "img_4.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"1 of 8 image\(s\) cannot be read: img_4\.png \(empty file\)"):
        data(root).dataloader("all")


def test_an_explicit_loader_takes_its_rank_and_world_size_as_arguments(tmp_path):
    """What a caller outside Lightning's fit/test passes instead of setting attributes on the datamodule."""
    module = data(folder(tmp_path / "d", n=9), batch_size=2)
    parts = [[name for batch in module.dataloader("all", rank=rank, world_size=2) for name in batch["file_name"]]
             for rank in range(2)]
    assert sorted(parts[0] + parts[1]) == sorted(f"img_{i}.png" for i in range(9))  # each once, no padding
    assert len(parts[0]) == 5 and len(parts[1]) == 4


def test_prepare_data_leaves_a_problem_to_setup_where_every_rank_meets_it(tmp_path):
    """Raised in prepare_data (local rank 0 alone), it would leave the other ranks waiting at Lightning's barrier."""
    root = folder(tmp_path / "d")
    (root / "img_2.png").write_bytes(b"not an image")
    rank0, rank1 = data(root), data(root)
    rank0.prepare_data()
    for rank in (rank0, rank1):
        with pytest.raises(ValueError, match=r"1 of 8 image\(s\) cannot be read: img_2\.png"):
            rank.setup("fit")
