"""Export to safetensors + JSON, load without pickle, and score from Python like an IQA library."""

import csv
import json

import numpy as np
import pytest
import torch
from experiment_helpers import fit_tiny, trained_parts
from helpers import run_cli
from PIL import Image

import clip_agiqa
from clip_agiqa import CLIPAGIQA
from clip_agiqa.model import CONFIG_FILE, WEIGHTS_FILE


@pytest.fixture(scope="module")
def checkpoint(synthetic_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("export_run")
    fit_tiny(synthetic_root, run_dir)
    return run_dir / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "model"
    run_cli(["export", str(checkpoint), str(out)])
    return out


def test_export_writes_small_safetensors_a_config_and_a_model_card(exported, checkpoint):
    assert sorted(p.name for p in exported.iterdir()) == ["README.md", CONFIG_FILE, WEIGHTS_FILE]
    config = json.loads((exported / CONFIG_FILE).read_text())
    assert config["backbone"] == "random:tiny" and config["n_ctx"] == 4
    assert config["backbone_fingerprint"] == torch.load(checkpoint, weights_only=True)["backbone_fingerprint"]
    assert "init_from" not in config and config["training"]["data"] == "MOSFolder"
    assert "val/srcc" in config["training"]
    card = (exported / "README.md").read_text()
    assert "Trained on: MOSFolder" in card and "val/srcc" in card
    from safetensors.torch import load_file

    tensors = load_file(str(exported / WEIGHTS_FILE))
    assert tensors and not any(k.startswith("clip.") for k in tensors)  # never the frozen backbone


def test_load_gives_the_checkpoint_model_without_unpickling(exported, checkpoint, synthetic_root, monkeypatch):
    reference = CLIPAGIQA.load_from_checkpoint(checkpoint).eval()
    expected_state = trained_parts(reference)

    def no_pickle(*args, **kwargs):
        raise AssertionError("the scoring path must not call torch.load")

    monkeypatch.setattr(torch, "load", no_pickle)
    scorer = clip_agiqa.load(exported)
    for key, value in trained_parts(scorer.model).items():
        assert torch.equal(value, expected_state[key]), key  # the same tensors, copied through safetensors
    path = synthetic_root / "synthetic_00000.png"
    pixels = scorer.transform(Image.open(path).convert("RGB")).unsqueeze(0)
    with torch.no_grad():
        assert scorer(path) == pytest.approx(reference(pixels).item(), abs=1e-6)


def test_scorer_accepts_pil_path_list_tensor_and_folder(exported, synthetic_root, tmp_path):
    scorer = clip_agiqa.load(exported, batch_size=3)
    paths = sorted(synthetic_root.glob("*.png"))[:4]
    by_path = scorer(str(paths[0]))
    assert isinstance(by_path, float)
    assert scorer(Image.open(paths[0])) == pytest.approx(by_path, abs=1e-6)
    many = scorer(paths)
    assert len(many) == 4 and many[0] == pytest.approx(by_path, abs=1e-6)
    batch = torch.stack([torch.tensor(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1) / 255 for p in paths])
    assert scorer(batch) == pytest.approx(many, abs=1e-5)
    assert scorer(batch[0]) == pytest.approx(by_path, abs=1e-5)
    output = tmp_path / "scores.csv"
    rows = scorer.score_folder(synthetic_root, output)
    assert len(rows) == 41 and list(csv.DictReader(open(output)))[0]["file_name"] == "synthetic_00000.png"
    assert scorer.mos_scale == tuple(scorer.model.mos_scale[0].tolist())
    with pytest.raises(TypeError, match="cannot score"):
        scorer(42)


def test_load_refuses_a_checkpoint_and_names_export(checkpoint):
    with pytest.raises(ValueError, match="clip-agiqa export"):
        clip_agiqa.load(checkpoint)


def test_export_refuses_a_checkpoint_with_arbitrary_objects(tmp_path):
    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {}, "payload": Image.new("RGB", (2, 2))}, bad)
    with pytest.raises(ValueError, match="refused"):
        clip_agiqa.export_checkpoint(bad, tmp_path / "out")


def test_mismatched_exports_are_refused_with_the_reason(exported, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / WEIGHTS_FILE).write_bytes((exported / WEIGHTS_FILE).read_bytes())
    config = json.loads((exported / CONFIG_FILE).read_text())
    (copy / CONFIG_FILE).write_text(json.dumps({**config, "backbone_fingerprint": "0" * 16}))
    with pytest.raises(ValueError, match="frozen weights differ"):
        clip_agiqa.load(copy)
    with pytest.raises(ValueError, match="differs from 16 of init_from"):
        CLIPAGIQA(init_from=str(exported), hidden_dim=8)
    with pytest.raises(ValueError, match="config.json"):
        clip_agiqa.load(tmp_path)


def test_export_of_something_that_is_not_a_checkpoint_says_so(tmp_path):
    (tmp_path / "notes.ckpt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a checkpoint written by clip-agiqa fit"):
        clip_agiqa.export_checkpoint(tmp_path / "notes.ckpt", tmp_path / "out")
    with pytest.raises(ValueError, match="not a checkpoint file"):
        clip_agiqa.export_checkpoint(tmp_path, tmp_path / "out")


def test_export_refuses_an_existing_folder_unless_asked_and_replaces_it_whole(checkpoint, tmp_path):
    out = tmp_path / "model"
    run_cli(["export", str(checkpoint), str(out)])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ValueError, match="already exists.*--overwrite"):
        run_cli(["export", str(checkpoint), str(out)])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    (out / "stale.txt").write_text("from the older model")
    run_cli(["export", str(checkpoint), str(out), "--overwrite"])
    assert sorted(p.name for p in out.iterdir()) == ["README.md", CONFIG_FILE, WEIGHTS_FILE]  # nothing of the old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no partial or set-aside folder left
    clip_agiqa.load(out)


def test_a_full_disk_during_export_leaves_the_older_model_whole(checkpoint, tmp_path, monkeypatch):
    """Seen: export over an existing folder deleted its config.json when the disk filled; the old model no longer
    loaded."""
    import errno

    import clip_agiqa.model as model_module

    out = tmp_path / "model"
    clip_agiqa.export_checkpoint(checkpoint, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_writer = model_module.atomic_write

    def disk_full_at_the_config(path, *args, **kwargs):
        if path.name == CONFIG_FILE:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_writer(path, *args, **kwargs)

    monkeypatch.setattr(model_module, "atomic_write", disk_full_at_the_config)
    with pytest.raises(OSError, match="No space left"):
        clip_agiqa.export_checkpoint(checkpoint, out, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    monkeypatch.undo()
    clip_agiqa.load(out)


def test_every_exported_file_gets_the_same_mode(exported):
    """Seen: model.safetensors was 0600 while the other files were 0644."""
    from clip_agiqa.files import UMASK

    modes = {p.name: p.stat().st_mode & 0o777 for p in exported.iterdir()}
    assert set(modes.values()) == {0o666 & ~UMASK}, modes  # 0644 under the usual 022
    assert exported.stat().st_mode & 0o777 == 0o777 & ~UMASK
