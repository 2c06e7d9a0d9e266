"""HFDataset on local datasets built here (never the hub): map-style and streaming, split by node (the 2-process
run of a streamed dataset: test_ddp.py)."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import TINY_MODEL_ARGS, run_cli, trainer_args
from PIL import Image

from clip_agiqa.data import HFDataset, write_synthetic_dataset

SMALL = dict(batch_size=4, num_workers=0, image_size=32)


@pytest.fixture(scope="module")
def imagefolder(tmp_path_factory) -> Path:
    """An ``imagefolder`` dataset: images + metadata.csv (file_name,mos,prompt)."""
    root = tmp_path_factory.mktemp("imagefolder")
    write_synthetic_dataset(root, num_images=30, picture_size=40, seed=1)
    return root


@pytest.fixture(scope="module")
def saved_dataset(tmp_path_factory, imagefolder) -> Path:
    """A ``save_to_disk`` folder with embedded image bytes and a name column (as a hub dataset holds them)."""
    import datasets

    names = sorted(p.name for p in imagefolder.glob("*.png"))
    rows = {"name": names, "image": [{"bytes": (imagefolder / n).read_bytes(), "path": None} for n in names],
            "score": [float(i % 7) for i in range(len(names))], "prompt": [f"p{i // 3}" for i in range(len(names))]}
    features = datasets.Features({"name": datasets.Value("string"), "image": datasets.Image(),
                                  "score": datasets.Value("float32"), "prompt": datasets.Value("string")})
    path = tmp_path_factory.mktemp("saved") / "ds"
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(path), num_shards=4)
    return path


def hf(root: Path, tmp_path: Path, **kwargs) -> HFDataset:
    return HFDataset(path=str(root), hf_cache_dir=str(tmp_path / "hf-cache"), **{**SMALL, **kwargs})


def fake_trainer(rank: int = 0, world_size: int = 1, epoch: int = 0):
    return SimpleNamespace(global_rank=rank, world_size=world_size, current_epoch=epoch, lightning_module=None)


def names_of(loader) -> list[str]:
    return [name for batch in loader for name in batch["file_name"]]


def test_streaming_gives_the_same_split_as_map_style(imagefolder, tmp_path):
    mapped, streamed = hf(imagefolder, tmp_path, split="prompt"), hf(imagefolder, tmp_path, split="prompt",
                                                                      streaming=True)
    mapped.setup(), streamed.setup()
    assert [r.file_name for r in mapped.records] == [r.file_name for r in streamed.records]
    assert mapped.assignment == streamed.assignment
    assert mapped.records[0].file_name == "synthetic_00000.png" and mapped.records[0].prompt


def test_map_style_items_match_their_records(imagefolder, tmp_path):
    data = hf(imagefolder, tmp_path)
    data.setup()
    dataset = data.make_dataset("test")
    item = dataset[0]
    assert item["image"].shape == (3, 32, 32) and item["file_name"] == dataset.records[0].file_name
    assert float(item["mos"]) == pytest.approx(dataset.records[0].mos)


def test_saved_dataset_with_a_name_column(saved_dataset, tmp_path):
    data = hf(saved_dataset, tmp_path, target_column="score", file_name_column="name", streaming=True)
    data.setup()
    assert len(data.records) == 30 and data.records[0].file_name == "synthetic_00000.png"
    test = data.split_records("test")
    assert sorted(names_of(data.test_dataloader())) == sorted(r.file_name for r in test)


def test_the_streamed_metadata_pass_never_reads_the_image_column(saved_dataset, tmp_path, monkeypatch):
    """With a name column, names and targets come from a stream whose columns were selected before iterating:
    no example of that pass carries an image (a hub dataset's images are not downloaded for it)."""
    import datasets

    seen, real_iter = [], datasets.IterableDataset.__iter__

    def spying(self):
        for example in real_iter(self):
            seen.append(set(example))
            yield example

    monkeypatch.setattr(datasets.IterableDataset, "__iter__", spying)
    data = hf(saved_dataset, tmp_path, target_column="score", file_name_column="name", streaming=True)
    data.load()
    assert len(seen) == 30 and all("image" not in keys for keys in seen) and seen[0] >= {"name", "score"}
    assert sorted(r.file_name for r in data.records) == sorted(f"synthetic_{i:05d}.png" for i in range(30))


@pytest.mark.parametrize("world_size", [2, 3])
def test_streamed_eval_splits_are_exact_across_ranks(saved_dataset, tmp_path, world_size):
    """Every val/test sample on exactly one rank: no padding, no duplicates, nothing lost."""
    data = hf(saved_dataset, tmp_path, target_column="score", file_name_column="name", streaming=True,
              test_size=0.3)
    data.setup()
    seen = []
    for rank in range(world_size):
        data.trainer = fake_trainer(rank, world_size)
        seen += names_of(data.test_dataloader())
    assert sorted(seen) == sorted(r.file_name for r in data.split_records("test"))


def test_streamed_training_runs_equal_steps_on_every_rank_and_reshuffles(saved_dataset, tmp_path):
    data = hf(saved_dataset, tmp_path, target_column="score", file_name_column="name", streaming=True,
              shuffle_buffer=8)
    data.setup()
    train = sorted(r.file_name for r in data.split_records("train"))
    steps = []
    for rank in range(2):
        data.trainer = fake_trainer(rank, 2)
        loader = data.train_dataloader()
        steps.append(sum(1 for _ in loader))
        assert steps[-1] == len(loader)
    assert steps[0] == steps[1]
    orders = []
    for epoch in range(2):
        data.trainer = fake_trainer(epoch=epoch)
        orders.append(names_of(data.train_dataloader()))
        assert sorted(orders[-1]) == train  # one process: every training sample once per epoch
    assert orders[0] != orders[1]


def test_items_carry_every_target_prompt_and_error_streamed_or_not(imagefolder, tmp_path):
    """The same keys as ImageDataset's items: mos one value per target (in order), the prompt, no error."""
    for streaming in (False, True):
        data = hf(imagefolder, tmp_path, target_column=["align", "mos"], streaming=streaming)
        data.setup()
        assert data.targets == ["align", "mos"]
        records = {r.file_name: r for r in data.records}
        batch = next(iter(data.test_dataloader()))
        assert {"image", "mos", "prompt", "index", "file_name", "error"} <= set(batch), streaming
        assert batch["mos"].shape == (len(batch["file_name"]), 2) and batch["error"] == [""] * len(batch["error"])
        for name, mos, prompt in zip(batch["file_name"], batch["mos"], batch["prompt"]):
            record = records[name]
            assert mos.tolist() == pytest.approx([record.targets["align"], record.targets["mos"]])
            assert prompt == record.prompt and prompt.startswith("a "), streaming


def test_streamed_items_of_a_dataset_without_prompts_have_empty_prompts(saved_dataset, tmp_path):
    data = hf(saved_dataset, tmp_path, target_column="score", file_name_column="name", prompt_column=None,
              streaming=True)
    data.setup()
    batch = next(iter(data.test_dataloader()))
    assert batch["prompt"] == [""] * len(batch["file_name"]) and batch["mos"].dim() == 1
    with pytest.raises(ValueError, match="generation prompt"):
        data.generation_prompts()


@pytest.mark.parametrize("mode", ["RGBA", "I;16", "exif"])
def test_image_bytes_decode_as_image_files_do(tmp_path, mode):
    """Transparency over white, 16-bit scaled, EXIF orientation applied: ``decode_image`` = ``load_rgb``."""
    import numpy as np

    from clip_agiqa.data.hub import decode_image
    from clip_agiqa.data.images import load_rgb

    path = tmp_path / ("image.jpg" if mode == "exif" else "image.png")
    if mode == "RGBA":
        Image.new("RGBA", (6, 4), (200, 10, 10, 0)).save(path)
    elif mode == "I;16":
        Image.fromarray(np.full((4, 6), 40000, dtype=np.uint16)).save(path)
    else:
        exif = Image.Exif()
        exif[0x0112] = 6  # rotated: a viewer shows it 4 wide, 6 high
        Image.new("RGB", (6, 4), (10, 200, 10)).save(path, exif=exif)
    expected = np.asarray(load_rgb(path))
    for value in ({"bytes": path.read_bytes(), "path": None}, Image.open(path)):
        decoded = decode_image(value, "sample")
        assert decoded.mode == "RGB" and np.array_equal(np.asarray(decoded), expected), type(value).__name__


def test_streaming_without_names_asks_for_a_name_column(tmp_path):
    import datasets

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    rows = {"image": [{"bytes": buffer.getvalue(), "path": None}] * 4, "mos": [1.0, 2.0, 3.0, 4.0]}
    features = datasets.Features({"image": datasets.Image(), "mos": datasets.Value("float32")})
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(ValueError, match="give file_name_column"):
        hf(tmp_path / "ds", tmp_path, streaming=True).setup()
    mapped = hf(tmp_path / "ds", tmp_path, prompt_column=None, test_size=0.25, val_size=0.0)
    mapped.setup()  # map-style falls back to row numbers
    assert [r.file_name for r in mapped.records] == ["00000000", "00000001", "00000002", "00000003"]


def test_missing_column_names_the_dataset(imagefolder, tmp_path):
    with pytest.raises(ValueError, match=r"missing column\(s\) quality"):
        hf(imagefolder, tmp_path, target_column="quality").setup()


def test_cli_fit_and_test_streaming(imagefolder, tmp_path):
    run_dir = tmp_path / "run"
    common = ["--data", "HFDataset", "--data.path", str(imagefolder), "--data.streaming", "true",
              "--data.hf_cache_dir", str(tmp_path / "hf-cache"), "--data.batch_size", "8", "--data.num_workers", "0"]
    run_cli(["fit", *TINY_MODEL_ARGS, *trainer_args(run_dir), *common])
    assert (run_dir / "checkpoints" / "splits.csv").is_file()
    cli = run_cli(["test", *TINY_MODEL_ARGS, *trainer_args(run_dir), *common,
                   "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt")])
    assert "test/srcc" in cli.trainer.callback_metrics


def test_feature_cache_is_refused_rather_than_silently_ignored(imagefolder, tmp_path):
    with pytest.raises(ValueError, match="cache_views is not supported by HFDataset"):
        hf(imagefolder, tmp_path, cache_views=4)
