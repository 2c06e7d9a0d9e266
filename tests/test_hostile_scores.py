"""Score outputs as anyone's files: an existing output is kept without --overwrite, a locked output refuses a
second run, the rows of a ``.partial`` are checked before ``--resume`` keeps them, a huge line is refused
without being held, and a failed run's message says what will work next."""

import csv
import tracemalloc

import numpy as np
import pytest
from helpers import TINY_MODEL, run_cli
from PIL import Image

from clip_agiqa import CLIPAGIQAModel
from clip_agiqa.errors import InputError
from clip_agiqa.scores_file import MAX_LINE_CHARS, ScoreCSV


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile_scores") / "model"
    CLIPAGIQAModel(**TINY_MODEL).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (30, 28 + i, 3), dtype=np.uint8)).save(folder / f"img_{i}.png")
    return folder


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def command(saved_model, image_folder, output):
    return ["score", str(saved_model), str(image_folder), "--output", str(output), "--num_workers", "0"]


def test_an_existing_output_is_replaced_only_with_overwrite(saved_model, image_folder, tmp_path):
    output = tmp_path / "scores.csv"
    output.write_text("someone's results\n")
    with pytest.raises(InputError, match=r"scores.csv exists: add --overwrite to replace it"):
        run_cli(command(saved_model, image_folder, output))
    assert output.read_text() == "someone's results\n"
    run_cli([*command(saved_model, image_folder, output), "--overwrite"])
    assert len(read_rows(output)) == 6


def test_a_second_run_on_one_output_is_refused_and_leaves_one_row_per_image(saved_model, image_folder, tmp_path):
    output = tmp_path / "scores.csv"
    first = ScoreCSV(output, None, with_prompt=False)  # a run writing this output now (its lock is held)
    with pytest.raises(InputError, match=r"scores.csv is being written by another clip-agiqa run"):
        run_cli([*command(saved_model, image_folder, output), "--resume"])
    first.close()
    run_cli(command(saved_model, image_folder, output))
    rows = read_rows(output)
    assert sorted(r["file_name"] for r in rows) == sorted(str(p) for p in image_folder.glob("*.png"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.csv"]  # no lock or .partial left behind


def test_resume_keeps_only_the_rows_this_run_would_have_written(saved_model, image_folder, tmp_path):
    output = tmp_path / "scores.csv"
    run_cli(command(saved_model, image_folder, output))
    complete = output.read_text().splitlines()
    header, first = complete[0], complete[1]
    name = first.split(",")[0]
    planted = [header, first, first,  # a row twice
               "/etc/shadow,0.5,", "=HYPERLINK(\"http://x\"),0.5,", "@SUM(1),0.5,",  # not inputs, unescaped
               f"{str(image_folder / 'img_1.png')},abc,", f"{str(image_folder / 'img_2.png')},nan,",
               f"{str(image_folder / 'img_3.png')},0.5,not escaped? fine but with a score",
               ",,", "", f"{str(image_folder / 'img_4.png')},,"]  # empty row, blank line, no score and no error
    (tmp_path / "scores.csv.partial").write_text("\n".join(planted) + "\n")
    output.unlink()
    with pytest.warns(UserWarning, match=r"scores.csv.partial: dropped 9 row\(s\)"):
        run_cli([*command(saved_model, image_folder, output), "--resume"])
    rows = read_rows(output)
    assert sorted(r["file_name"] for r in rows) == sorted(str(p) for p in image_folder.glob("*.png"))
    assert all(np.isfinite(float(r["score"])) and r["error"] == "" for r in rows)
    assert [r["file_name"] for r in rows].count(name) == 1


def test_a_huge_partial_line_is_refused_without_being_held(tmp_path):
    partial = tmp_path / "scores.csv.partial"
    line = "x" * (32 * MAX_LINE_CHARS)  # 32 MB in one line, no line break
    partial.write_text(f"file_name,score,error\n{line},0.5,\n")
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="a line longer than"):
            ScoreCSV(tmp_path / "scores.csv", None, with_prompt=False, partial="resume",
                     inputs={f"img_{i}.png": None for i in range(40)})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * MAX_LINE_CHARS, f"{peak:,} bytes held for a {len(line):,}-character line"
    assert not (tmp_path / "scores.csv.lock").exists()


def test_a_partial_larger_than_its_rows_can_be_is_refused(tmp_path):
    partial = tmp_path / "scores.csv.partial"
    partial.write_text("file_name,score,error\n" + "a,0.5,\n" * (MAX_LINE_CHARS // 3))
    with pytest.raises(InputError, match=r"more than rows for 1 image\(s\) can be"):
        ScoreCSV(tmp_path / "scores.csv", None, with_prompt=False, partial="resume", inputs={"a": None})


def test_a_failure_before_any_row_leaves_nothing_and_says_run_again(saved_model, image_folder, tmp_path,
                                                                     monkeypatch):
    import errno

    import clip_agiqa.scores_file as scores_file

    real_writer = scores_file.safe_writer

    class FullDisk:  # the header goes in (buffered), the first row does not
        def __init__(self, handle):
            self.writer = real_writer(handle)

        def writerow(self, row):
            if row[0] != "file_name":
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.writer.writerow(row)

    monkeypatch.setattr(scores_file, "safe_writer", FullDisk)
    output = tmp_path / "scores.csv"
    with pytest.raises(InputError, match="no row was written: run the same command again") as refused:
        run_cli(command(saved_model, image_folder, output))
    assert "--resume" not in str(refused.value)
    assert list(tmp_path.iterdir()) == []  # no .partial to refuse the next run, no lock
    monkeypatch.setattr(scores_file, "safe_writer", real_writer)
    run_cli(command(saved_model, image_folder, output))  # exactly what the message says works
    assert len(read_rows(output)) == 6
