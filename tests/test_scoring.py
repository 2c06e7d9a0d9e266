"""Scoring streams: files go through DataLoader workers, rows are written as batches finish into a ``.partial``
that ``--resume`` continues, the scores do not depend on batch size or workers; hostile and missing files cost
one row each; the CSV is safe to open in a spreadsheet; predict and score share one writer and one wording."""

import csv
import math
import os
import signal

import numpy as np
import pytest
import torch
from helpers import TINY_MODEL, TINY_MODEL_ARGS, run_cli, run_cli_expecting_failure, trainer_args
from PIL import Image

import clip_agiqa
from clip_agiqa import CLIPAGIQAModel
from clip_agiqa.csv_cells import escape_formula, safe_writer, unescape_formula
from clip_agiqa.errors import InputError
from clip_agiqa.scores_file import ScoreCSV
from clip_agiqa.scoring import read_score_list

SCORE_TOLERANCE = dict(rtol=0, atol=1e-5)  # fp32 features computed in other batches


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scoring") / "model"
    CLIPAGIQAModel(**TINY_MODEL).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Eleven small pictures of different sizes (so resizing takes part)."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(11):
        size = (24 + 3 * i, 40 - i)
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"img_{i:02d}.png")
    return folder


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def scores_of(rows, column="score"):
    return torch.tensor([float(r[column]) for r in rows], dtype=torch.float64)


def test_scores_do_not_depend_on_batch_size_or_workers(saved_model, image_folder, tmp_path):
    reference = clip_agiqa.load(saved_model)([str(p) for p in sorted(image_folder.iterdir())])
    results = {}
    for batch_size, workers in [(1, 0), (4, 2), (32, 1)]:
        scorer = clip_agiqa.load(saved_model, batch_size=batch_size, num_workers=workers)
        rows = scorer.score_folder(image_folder, tmp_path / f"b{batch_size}w{workers}.csv")
        results[(batch_size, workers)] = rows
        assert [name for name, _ in rows] == [p.name for p in sorted(image_folder.iterdir())]
        torch.testing.assert_close(torch.tensor([s for _, s in rows]), torch.tensor(reference), **SCORE_TOLERANCE)
        written = read_rows(tmp_path / f"b{batch_size}w{workers}.csv")
        torch.testing.assert_close(scores_of(written), torch.tensor(reference, dtype=torch.float64),
                                   rtol=0, atol=2e-6)  # 6 decimals written


class Interrupt(Exception):
    pass


def interrupt_after(scorer, batches: int, seen: list):
    """Make the scorer's device step raise after ``batches`` batches; ``seen`` counts the images it scored."""
    original = scorer._score_pixels

    def step(pixels, prompts):
        if len(seen) >= batches * scorer.batch_size:
            raise Interrupt
        seen.extend(range(len(pixels)))
        return original(pixels, prompts)

    scorer._score_pixels = step


def test_an_interrupted_run_leaves_a_partial_that_resume_continues(saved_model, image_folder, tmp_path):
    output = tmp_path / "scores.csv"
    scorer = clip_agiqa.load(saved_model, batch_size=3, num_workers=0)
    seen = []
    interrupt_after(scorer, 2, seen)
    with pytest.raises(Interrupt):
        scorer.score_folder(image_folder, output)
    assert not output.exists()  # never a file that looks complete
    partial = tmp_path / "scores.csv.partial"
    assert len(read_rows(partial)) == 3  # the first batch: the second was on the device when it stopped
    with pytest.raises(InputError, match="scores.csv.partial holds the rows of an interrupted run: add --resume"):
        clip_agiqa.load(saved_model).score_folder(image_folder, output)
    resumed = clip_agiqa.load(saved_model, batch_size=3, num_workers=1)
    seen = []
    interrupt_after(resumed, 100, seen)
    rows = resumed.score_folder(image_folder, output, resume=True)
    assert len(seen) == 8 and len(rows) == 8  # the 3 rows there were kept, not scored again
    assert not partial.exists()
    fresh = clip_agiqa.load(saved_model).score_folder(image_folder)
    written = read_rows(output)
    assert [r["file_name"] for r in written] == [name for name, _ in fresh]
    torch.testing.assert_close(scores_of(written), torch.tensor([s for _, s in fresh], dtype=torch.float64),
                               rtol=0, atol=2e-6)


def test_resume_drops_a_row_cut_by_the_kill_and_scores_it_again(saved_model, image_folder, tmp_path):
    output = tmp_path / "scores.csv"
    command = ["score", str(saved_model), str(image_folder), "--output", str(output), "--num_workers", "0"]
    run_cli(command)
    complete = output.read_text()
    cut = complete[: complete.index("img_04.png") + 8]  # a kill in the middle of row 5
    (tmp_path / "scores.csv.partial").write_text(cut)
    output.unlink()
    run_cli([*command, "--resume"])
    resumed, expected = read_rows(output), list(csv.DictReader(complete.splitlines()))
    assert [(r["file_name"], r["error"]) for r in resumed] == [(r["file_name"], r["error"]) for r in expected]
    assert resumed[:4] == expected[:4]  # the rows kept from the partial file, as written
    # the rest scored again in other batches: the same scores up to float rounding (another batch, another kernel)
    torch.testing.assert_close(scores_of(resumed), scores_of(expected), rtol=0, atol=1e-4)


def test_resume_refuses_a_partial_with_other_columns(saved_model, image_folder, tmp_path):
    (tmp_path / "scores.csv.partial").write_text("file_name,quality,align,error\n")
    with pytest.raises(InputError, match=r"its columns \(file_name, quality, align, error\) are not the ones"):
        run_cli(["score", str(saved_model), str(image_folder), "--output", str(tmp_path / "scores.csv"), "--resume"])


# --- hostile, missing and special files ---------------------------------------------------------------------
def test_hostile_and_missing_files_cost_one_row_each(saved_model, image_folder, tmp_path):
    listed = tmp_path / "list"
    listed.mkdir()
    Image.new("L", (1, 100_000)).save(listed / "thin.png")  # 274 bytes; 224 x 22,400,000 after the resize
    os.mkfifo(listed / "pipe.png")
    (listed / "good.png").write_bytes((image_folder / "img_00.png").read_bytes())
    with open(listed / "images.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["file_name"], ["good.png"], ["thin.png"], ["pipe.png"], ["gone.png"]])
    os.mkfifo(tmp_path / "direct.png")
    output = tmp_path / "scores.csv"
    signal.alarm(120)  # opening a FIFO blocks forever: fail instead of hanging the suite
    try:
        with pytest.warns(UserWarning, match=r"4 of 5 image\(s\) have no score .*: thin.png, pipe.png, gone.png"):
            run_cli(["score", str(saved_model), str(listed / "images.csv"), str(tmp_path / "direct.png"),
                     "--output", str(output), "--num_workers", "1"])
    finally:
        signal.alarm(0)
    rows = {r["file_name"]: r for r in read_rows(output)}
    assert math.isfinite(float(rows["good.png"]["score"])) and rows["good.png"]["error"] == ""
    assert rows["thin.png"]["error"] == "1 x 100000 pixels: aspect ratio 100,000 exceeds the limit 50"
    assert rows["pipe.png"]["error"] == rows[str(tmp_path / "direct.png")]["error"] == \
        "a FIFO (named pipe), not a regular file"
    assert rows["gone.png"]["error"] == "not found"
    assert all(rows[name]["score"] == "" for name in ["thin.png", "pipe.png", "gone.png"])


def test_a_missing_input_says_not_found(saved_model, tmp_path):
    with pytest.raises(InputError, match=r"^.*nope.png: not found$"):
        run_cli(["score", str(saved_model), str(tmp_path / "nope.png"), "--output", str(tmp_path / "s.csv")])
    assert not (tmp_path / "s.csv.partial").exists()


def test_a_fifo_named_csv_is_refused_without_being_read(saved_model, tmp_path):
    os.mkfifo(tmp_path / "list.csv")
    signal.alarm(60)
    try:
        with pytest.raises(InputError, match=r"CSV list .*list.csv: a FIFO \(named pipe\), not a regular file"):
            run_cli(["score", str(saved_model), str(tmp_path / "list.csv"), "--output", str(tmp_path / "s.csv")])
    finally:
        signal.alarm(0)


def test_a_folder_scan_scores_every_format_and_names_what_it_leaves_out(saved_model, image_folder, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    frames = [Image.open(image_folder / "img_00.png").convert("RGB"), Image.new("RGB", (24, 40), "blue")]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])
    frames[0].save(folder / "photo.tif")
    (folder / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match=r"left out 1 .*notes.txt"):
        rows = clip_agiqa.load(saved_model, num_workers=0).score_folder(folder)
    assert [name for name, _ in rows] == ["animated.gif", "photo.tif"]
    assert all(math.isfinite(score) for _, score in rows)


def test_a_non_finite_score_gets_an_error_and_is_counted(saved_model, image_folder, tmp_path):
    scorer = clip_agiqa.load(saved_model, num_workers=0)
    original = scorer._score_pixels
    scorer._score_pixels = lambda pixels, prompts: original(pixels, prompts).index_fill(0, torch.tensor([1]), math.nan)
    with pytest.warns(UserWarning, match=r"1 of 11 image\(s\) have no score .*: img_01.png$"):
        scorer.score_folder(image_folder, tmp_path / "scores.csv")
    rows = read_rows(tmp_path / "scores.csv")
    assert rows[1]["score"] == "" and rows[1]["error"] == "non-finite score (nan)"
    assert all(r["error"] == "" for i, r in enumerate(rows) if i != 1)


# --- the command line -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arguments, message", [
    (["--batch_size", "0"], "--batch_size must be at least 1, got 0"),
    (["--num_workers", "-1"], "--num_workers must be 0 or more, got -1"),
    (["--device", "cuda:7"] if torch.cuda.is_available() else ["--device", "cuda"], "device cuda"),
    (["--device", "potato"], "device 'potato' is not a device torch knows"),
])
def test_bad_options_are_refused_before_any_work(saved_model, image_folder, tmp_path, arguments, message):
    with pytest.raises(InputError, match=message):
        run_cli(["score", str(saved_model), str(image_folder), "--output", str(tmp_path / "s.csv"), *arguments])
    assert list(tmp_path.iterdir()) == []


def test_an_output_folder_is_refused_in_one_line_before_scoring(saved_model, image_folder, tmp_path):
    (tmp_path / "out").mkdir()
    result = run_cli_expecting_failure(["score", str(saved_model), str(image_folder), "--output",
                                        str(tmp_path / "out")])
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"--output {tmp_path / 'out'} is a folder" in result.stderr.splitlines()[0]
    assert list(tmp_path.iterdir()) == [tmp_path / "out"] and list((tmp_path / "out").iterdir()) == []


def test_a_prompt_for_a_prompt_blind_model_warns_and_adds_no_column(saved_model, image_folder, tmp_path):
    with pytest.warns(UserWarning, match="does not read generation prompts"):
        run_cli(["score", str(saved_model), str(image_folder), "--prompt", "a red fox", "--output",
                 str(tmp_path / "scores.csv"), "--num_workers", "0"])
    assert list(read_rows(tmp_path / "scores.csv")[0]) == ["file_name", "score", "error"]
    with open(tmp_path / "list.csv", "w", newline="") as handle:  # a list's prompts are copied, with the warning
        csv.writer(handle).writerows([["file_name", "prompt"], [str(image_folder / "img_00.png"), "a red fox"]])
    with pytest.warns(UserWarning, match="does not read generation prompts.*copied"):
        run_cli(["score", str(saved_model), str(tmp_path / "list.csv"), "--output", str(tmp_path / "listed.csv")])
    assert [r["prompt"] for r in read_rows(tmp_path / "listed.csv")] == ["a red fox"]


def test_the_summary_counts_every_row(saved_model, image_folder, tmp_path, capsys):
    with open(tmp_path / "list.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["file_name"], [str(image_folder / "img_00.png")], ["missing.png"]])
    with pytest.warns(UserWarning):
        run_cli(["score", str(saved_model), str(tmp_path / "list.csv"), "--output", str(tmp_path / "s.csv")])
    assert f"wrote 2 rows (1 unreadable) to {tmp_path / 's.csv'}" in capsys.readouterr().out


# --- spreadsheet formulas -----------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["=cmd|' /C calc'!A0", "+SUM(A1)", "-2+3", "@x", "\tx", "\rx", "'=x", "''-x",
                                   "'plain", "-0.25", "plain", "", "1e-3"])
def test_formula_escapes_read_back_as_written(value):
    escaped = escape_formula(value)
    assert unescape_formula(escaped) == value
    assert escaped == value or (escaped[0] == "'" and value[0] in "=+-@\t\r'")
    assert (escaped != value) == (value not in ("'plain", "-0.25", "plain", "", "1e-3"))


def test_text_cells_are_escaped_and_read_back(saved_model, image_folder, tmp_path):
    listed = tmp_path / "list"
    listed.mkdir()
    (listed / "=HYPERLINK(1).png").write_bytes((image_folder / "img_00.png").read_bytes())
    with open(listed / "images.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["file_name", "prompt"], ["=HYPERLINK(1).png", "+cmd"]])
    output = tmp_path / "scores.csv"
    with pytest.warns(UserWarning):
        run_cli(["score", str(saved_model), str(listed / "images.csv"), "--output", str(output)])
    raw = list(csv.reader(open(output, newline="")))
    assert raw[1][:2] == ["'=HYPERLINK(1).png", "'+cmd"] and float(raw[1][2]) == float(raw[1][2])
    moved = tmp_path / "again"  # a scores.csv read back as a list gives the names and prompts as they were
    moved.mkdir()
    (moved / "=HYPERLINK(1).png").write_bytes((image_folder / "img_00.png").read_bytes())
    (moved / "scores.csv").write_bytes(output.read_bytes())
    files, prompts = read_score_list(moved / "scores.csv")
    assert list(files) == ["=HYPERLINK(1).png"] and prompts == {"=HYPERLINK(1).png": "+cmd"}


def test_the_writer_escapes_text_but_not_numbers(tmp_path):
    with ScoreCSV(tmp_path / "s.csv", ["quality", "align"], with_prompt=True) as table:
        table.write("-x.png", "@me", [-0.5, 2.0])
        table.write("b.png", "p", None, "=not an image")
    assert (tmp_path / "s.csv").read_text().splitlines() == [
        "file_name,prompt,quality,align,error", "'-x.png,'@me,-0.500000,2.000000,", "b.png,p,,,'=not an image"]
    with open(tmp_path / "w.csv", "w", newline="") as handle:
        safe_writer(handle).writerows([["=a", 1.5, -2]])
    assert (tmp_path / "w.csv").read_text().strip() == "'=a,1.5,-2"


# --- predict shares the writer -------------------------------------------------------------------------------
def test_predict_writes_what_score_writes(tmp_path, image_folder, saved_model):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(5):
        (folder / f"img_{i}.png").write_bytes((image_folder / f"img_{i:02d}.png").read_bytes())
    (folder / "img_2.png").write_bytes(b"")
    output = tmp_path / "scores.csv"
    with pytest.warns(UserWarning, match=r"1 of 5 image\(s\) have no score .*: img_2.png$"):
        run_cli(["predict", *TINY_MODEL_ARGS, "--model.init_from", str(saved_model),
                 "--data", "ImageFolder", "--data.root", str(folder),
                 "--data.num_workers", "0", "--data.batch_size", "2", *trainer_args(tmp_path / "run"),
                 "--predictions.output", str(output)])
    rows = read_rows(output)
    assert [r["file_name"] for r in rows] == [f"img_{i}.png" for i in range(5)]
    assert rows[2]["score"] == "" and rows[2]["error"] == "empty file"  # the loader's reason, as score writes it
    assert all(r["error"] == "" and math.isfinite(float(r["score"])) for i, r in enumerate(rows) if i != 2)
    assert not list(tmp_path.glob("scores.csv.*"))


def test_splits_csv_escapes_names_and_reads_them_back(tmp_path):
    from clip_agiqa.data.records import Record
    from clip_agiqa.data.splits import read_splits, write_splits

    names = ["=1+1.png", "-cmd.png", "@a.png", "plain.png"]
    records = [Record(name, tmp_path / name, {"mos": 1.0}) for name in names]
    write_splits(tmp_path / "splits.csv", records, ["train", "val", "test", "train"])
    assert (tmp_path / "splits.csv").read_text().splitlines()[1:4] == ["'=1+1.png,train", "'-cmd.png,val",
                                                                       "'@a.png,test"]
    assert read_splits(tmp_path / "splits.csv", names) == ["train", "val", "test", "train"]


def test_test_predictions_csv_escapes_names(tmp_path):
    from types import SimpleNamespace

    from clip_agiqa.callbacks.reports import TestReport
    from clip_agiqa.run_files import PREDICTIONS_FILE

    report = TestReport()
    report.predictions = [("=1+1.png", 1.0, 2.0), ("b.png", 2.0, -1.5), ("@c.png", 3.0, 3.5)]
    report.write(tmp_path, SimpleNamespace(loggers=[]))
    rows = list(csv.reader(open(tmp_path / PREDICTIONS_FILE, newline="")))
    assert [row[0] for row in rows[1:]] == ["'=1+1.png", "b.png", "'@c.png"] and rows[2][2] == "-1.500000"
    assert [unescape_formula(row[0]) for row in rows[1:]] == ["=1+1.png", "b.png", "@c.png"]


def test_a_decoder_raising_anything_costs_one_row(saved_model, image_folder, tmp_path, monkeypatch):
    from clip_agiqa import scoring

    original = scoring.load_rgb

    def load(path):
        if path.endswith("img_03.png"):
            raise IndexError("tile outside the image")  # what a hostile file can make a Pillow plugin raise
        return original(path)

    monkeypatch.setattr(scoring, "load_rgb", load)
    with pytest.warns(UserWarning, match=r"1 of 11 image\(s\) have no score"):
        clip_agiqa.load(saved_model, num_workers=0).score_folder(image_folder, tmp_path / "scores.csv")
    rows = read_rows(tmp_path / "scores.csv")
    assert rows[3]["error"] == "cannot decode (IndexError: tile outside the image)" and rows[3]["score"] == ""
    assert sum(r["error"] == "" for r in rows) == 10


def test_a_full_disk_while_scoring_is_one_line_and_resume_goes_on(saved_model, image_folder, tmp_path, monkeypatch,
                                                                    capsys):
    import errno
    import sys

    from clip_agiqa import cli as commands
    from clip_agiqa import csv_cells as safe_csv

    real_writer, written = safe_csv.safe_writer, []

    class FillingDisk:  # the scores CSV's rows: the disk is full after the header and five rows
        def __init__(self, handle):
            self.writer = real_writer(handle)

        def writerow(self, row):
            if len(written) >= 6:
                raise OSError(errno.ENOSPC, "No space left on device")
            written.append(row)
            return self.writer.writerow(row)

    import clip_agiqa.scores_file as score_csv

    monkeypatch.setattr(score_csv, "safe_writer", FillingDisk)
    output = tmp_path / "scores.csv"
    command = ["score", str(saved_model), str(image_folder), "--output", str(output), "--num_workers", "0"]
    monkeypatch.setattr(sys, "argv", ["clip-agiqa", *command])
    with pytest.raises(SystemExit) as done:
        commands.console()
    err = capsys.readouterr().err
    assert done.value.code == 1 and "Traceback" not in err
    [line] = [line for line in err.splitlines() if line.startswith("clip-agiqa:")]  # not after the progress bar
    assert "No space left on device" in line and "--resume" in line, line
    assert not output.exists() and len(read_rows(tmp_path / "scores.csv.partial")) == 5  # the rows written stay
    monkeypatch.setattr(score_csv, "safe_writer", real_writer)  # room again
    run_cli([*command, "--resume"])
    assert len(read_rows(output)) == 11
