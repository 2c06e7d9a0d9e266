"""Progress of long stages in a job log: plain lines at a steady pace and at the end, never a bar redrawn with
carriage returns (clip_agiqa/progress.py; the feature cache's call site: the demo fit in test_console.py)."""

import sys

import numpy as np
from helpers import TINY_MODEL
from PIL import Image

from clip_agiqa.progress import NoProgress, ProgressLines, progress


def test_a_log_gets_lines_with_count_total_and_rate(tmp_path):
    log = tmp_path / "job.log"
    with open(log, "w") as stream, progress(10, "caching train features", stream=stream, interval=0.0) as bar:
        assert isinstance(bar, ProgressLines)
        for _ in range(4):
            bar.update(2)
    lines = log.read_text().splitlines()
    assert "\r" not in log.read_text()
    assert [line.split(",")[0] for line in lines] == [f"caching train features: {n}/10 img ({10 * n}%)"
                                                      for n in (2, 4, 6, 8, 8)]  # the last: at the end
    assert all(" img/s, " in line and line.endswith(" s") for line in lines)


def test_lines_come_at_the_interval_not_at_every_update(tmp_path):
    log = tmp_path / "job.log"
    with open(log, "w") as stream, progress(1000, "scoring", stream=stream, interval=3600.0) as bar:
        for _ in range(1000):
            bar.update()
    assert log.read_text().splitlines() == [line for line in log.read_text().splitlines() if "1000/1000" in line]
    assert len(log.read_text().splitlines()) == 1


def test_a_stage_stopped_by_an_error_adds_no_end_line(tmp_path):
    log = tmp_path / "job.log"
    try:
        with open(log, "w") as stream, progress(10, "scoring", stream=stream) as bar:
            bar.update(3)
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert log.read_text() == ""


def test_nothing_when_asked_for_nothing(tmp_path):
    with open(tmp_path / "job.log", "w") as stream:
        assert isinstance(progress(10, "scoring", stream=stream, lines=False), NoProgress)


def test_scoring_into_a_log_writes_progress_lines_without_carriage_returns(tmp_path, monkeypatch):
    from clip_agiqa.model import CLIPAGIQAModel
    from clip_agiqa.scoring import QualityScorer

    rng = np.random.default_rng(0)
    files = {}
    for i in range(5):
        files[f"img_{i}.png"] = tmp_path / f"img_{i}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(files[f"img_{i}.png"])
    log = tmp_path / "stderr.log"
    with open(log, "w") as stream:
        monkeypatch.setattr(sys, "stderr", stream)
        model = CLIPAGIQAModel(**TINY_MODEL)
        QualityScorer(model, batch_size=2, progress=True, num_workers=0).write_csv(files, tmp_path / "out.csv")
    text = log.read_text()
    assert "\r" not in text
    assert [line for line in text.splitlines() if line.startswith("scoring: 5/5 img (100%), ")], text
