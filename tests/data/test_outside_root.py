"""Images that resolve outside the data root are found with one resolution per folder, not per file, and every way
out is still caught: ``..`` through a linked folder, a linked file, a linked folder, an absolute name."""

from __future__ import annotations

import os
from pathlib import Path

from clip_agiqa.data import Record
from clip_agiqa.data.records import outside_root


def record(path: Path) -> Record:
    return Record(path.name, path, {"mos": 1.0})


def test_every_way_out_is_caught(tmp_path):
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    (root / "gen").mkdir(parents=True)
    (elsewhere / "deep").mkdir(parents=True)
    for path in (root / "gen" / "001.png", elsewhere / "x.png", elsewhere / "deep" / "y.png"):
        path.write_bytes(b"png")
    (root / "gen" / "link.png").symlink_to(elsewhere / "x.png")  # a linked file leading out
    (root / "linked_folder").symlink_to(elsewhere / "deep")  # a linked folder leading out
    (root / "inside_link.png").symlink_to(root / "gen" / "001.png")  # a link that stays inside
    candidates = {
        "plain": root / "gen" / "001.png",
        "linked file": root / "gen" / "link.png",
        "linked folder": root / "linked_folder" / "y.png",
        "dots through a link": root / "linked_folder" / ".." / "x.png",  # lexically inside, really elsewhere/x.png
        "dots": root / "gen" / ".." / ".." / "elsewhere" / "x.png",
        "absolute": elsewhere / "x.png",
        "inside link": root / "inside_link.png",
    }
    found = {name for name, path in candidates.items()
             if outside_root([record(path)], root)}
    assert found == {"linked file", "linked folder", "dots through a link", "dots", "absolute"}


def test_each_folder_is_resolved_once(tmp_path, monkeypatch):
    root = tmp_path / "root"
    records = []
    for generator in ("a", "b", "c"):
        (root / generator).mkdir(parents=True)
        for number in range(20):
            (root / generator / f"{number:03d}.png").write_bytes(b"png")
            records.append(record(root / generator / f"{number:03d}.png"))
    calls = []
    real = os.path.realpath
    monkeypatch.setattr(os.path, "realpath", lambda path, **kwargs: calls.append(path) or real(path, **kwargs))
    assert outside_root(records, root) == []
    assert 1 <= len(calls) <= 4  # the root and the three folders, not the 60 files
