"""Reading an annotation file reserves what the file holds, not its size limit (a 1 GiB limit reserved 1 GiB for
every small file read), and still refuses a file that grows past the limit."""

from __future__ import annotations

import tracemalloc

import pytest

from clip_agiqa.data.evalmi50k import read_prompt_tasks
from clip_agiqa.errors import InputError
from clip_agiqa.files import read_bytes


def test_a_small_file_under_a_large_limit_allocates_little(tmp_path):
    path = tmp_path / "prompt_tasks.jsonl"
    path.write_text('{"tag": "counting", "prompt": "two cats"}\n' * 1000)
    tracemalloc.start()
    try:
        assert read_bytes(path, 1 << 30) == path.read_bytes()
        assert len(read_prompt_tasks(path)) == 1000
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # the file is 43 kB; the old read reserved the 1 GiB limit


def test_the_limit_still_holds(tmp_path):
    path = tmp_path / "big.csv"
    path.write_bytes(b"x" * 100)
    assert read_bytes(path, 100) == b"x" * 100
    with pytest.raises(InputError, match="more than the 99 such a file can be"):
        read_bytes(path, 99)
