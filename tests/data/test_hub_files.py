"""HFDataset streamed from a dataset of image files (not parquet) in EvalMi-50K's layout, as its hub page holds it:
``<generator>/<NNN>.png`` folders and a metadata file at the top. The same file name in every generator folder must
give distinct samples (the name keeps its folder), and the stream must give the map-style split and every test
image once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clip_agiqa.data import HFDataset

GENERATORS = ("DALLE3", "Kolors", "ali_flux_schnell")
PROMPTS = 12


@pytest.fixture(scope="module")
def generator_folders(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("evalmi_hub")
    lines = ["file_name,mos,prompt"]
    rng = np.random.default_rng(0)
    for generator in GENERATORS:
        (root / generator).mkdir()
        for number in range(1, PROMPTS + 1):
            name = f"{generator}/{number:03d}.png"
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / name)
            lines.append(f"{name},{rng.uniform(0, 100):.2f},prompt {number}")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


def hub(root: Path, tmp_path: Path, **kwargs) -> HFDataset:
    return HFDataset(path=str(root), hf_cache_dir=str(tmp_path / "hf-cache"), batch_size=5, eval_batch_size=7,
                     num_workers=0, image_size=32, split="prompt", test_size=0.25, **kwargs)


def test_streamed_generator_folders_give_the_map_style_split_and_each_test_image_once(generator_folders, tmp_path):
    mapped, streamed = hub(generator_folders, tmp_path), hub(generator_folders, tmp_path, streaming=True)
    mapped.setup("fit"), streamed.setup("fit")
    names = [r.file_name for r in streamed.records]
    assert len(names) == len(set(names)) == len(GENERATORS) * PROMPTS  # 001.png of each generator: three samples
    assert "Kolors/001.png" in names and names == [r.file_name for r in mapped.records]
    assert streamed.assignment == mapped.assignment
    test_prompts = {r.prompt for r in streamed.split_records("test")}
    assert test_prompts.isdisjoint(r.prompt for r in streamed.split_records("train"))  # prompt-disjoint
    streamed_test = [name for batch in streamed.test_dataloader() for name in batch["file_name"]]
    assert sorted(streamed_test) == sorted(r.file_name for r in streamed.split_records("test"))
    batch = next(iter(streamed.test_dataloader()))
    assert batch["image"].shape[1:] == (3, 32, 32)
