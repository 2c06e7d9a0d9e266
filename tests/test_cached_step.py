"""The cached training step and what the task hands the data: a frozen-encoder handle (never the model), generation
prompts' features from the cache, batches without per-sample strings in training, and step metrics logged only on
the steps Lightning writes."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import TINY_MODEL
from lightning.pytorch.loggers import CSVLogger

from clip_agiqa import CLIPAGIQA
from clip_agiqa.data import MOSFolder
from clip_agiqa.frozen import FrozenEncoder


class RecordingFolder(MOSFolder):
    """Records what the task hands over."""

    def use_encoder(self, encoder, read_prompts: bool = False) -> None:
        self.handed = (encoder, read_prompts)
        super().use_encoder(encoder, read_prompts)


def folder(root: Path, cache_dir: Path | None, views: int, cls=MOSFolder, **kwargs) -> MOSFolder:
    return cls(str(root), batch_size=8, num_workers=0, cache_views=views,
               cache_dir=str(cache_dir) if cache_dir else None, **kwargs)


def quiet_trainer(**kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=kwargs.pop("logger", False), enable_progress_bar=False,
                     enable_model_summary=False, enable_checkpointing=False, **kwargs)


def test_the_data_receives_a_frozen_encoder_handle_not_the_model(synthetic_root, tmp_path):
    model = CLIPAGIQA(**TINY_MODEL, use_prompt=True)
    data = folder(synthetic_root, tmp_path / "cache", 1, RecordingFolder)
    quiet_trainer().validate(model, data, verbose=False)
    encoder, read_prompts = data.handed
    assert isinstance(encoder, FrozenEncoder) and read_prompts
    assert not any(isinstance(value, torch.nn.Module) for value in vars(data).values())
    assert encoder.key.fingerprint == model.model.backbone_fingerprint
    assert encoder.image_settings == model.model.image_settings


def test_prompt_aware_validation_is_the_same_with_and_without_the_cache(synthetic_root, tmp_path):
    torch.manual_seed(0)
    model = CLIPAGIQA(**TINY_MODEL, use_prompt=True)
    results = {views: quiet_trainer().validate(model, folder(synthetic_root, tmp_path / "cache", views),
                                               verbose=False)[0] for views in (0, 1)}
    assert model.model._text_features, "the uncached path encodes prompts in the model"
    model.model._text_features.clear()
    again = quiet_trainer().validate(model, folder(synthetic_root, tmp_path / "cache", 1), verbose=False)[0]
    assert not model.model._text_features  # the cached path reads them from the cache, not the model
    for name in results[0]:
        assert results[1][name] == pytest.approx(results[0][name], rel=1e-5, abs=1e-6), name
        assert again[name] == results[1][name], name
    assert len(list((tmp_path / "cache").rglob("prompts-*.npy"))) == 1  # every prompt of the data, one table


def test_training_batches_carry_tensors_only_and_eval_batches_their_names(synthetic_root, tmp_path):
    model = CLIPAGIQA(**TINY_MODEL, use_prompt=True)
    data = folder(synthetic_root, tmp_path / "cache", 2)
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(model, data)
    train = next(iter(data.train_dataloader()))
    assert set(train) == {"features", "mos", "mos_std", "index", "text_features"}
    assert train["features"].shape == (8, 32) and train["text_features"].shape == (8, 32)
    val = next(iter(data.val_dataloader()))
    records = data.split_records("val")[:8]
    assert val["file_name"] == [r.file_name for r in records] and val["error"] == [""] * len(records)
    assert val["index"].tolist() == list(range(len(records)))


def test_step_metrics_are_logged_only_on_the_steps_lightning_writes(synthetic_root, tmp_path, monkeypatch):
    model = CLIPAGIQA(**TINY_MODEL)
    calls = []
    original = CLIPAGIQA.log
    monkeypatch.setattr(CLIPAGIQA, "log", lambda self, name, *a, **k: calls.append(name) or original(self, name, *a,
                                                                                                            **k))
    data = folder(synthetic_root, tmp_path / "cache", 1)
    steps = len(data.split_records("train")) // 8 + 1  # 29 training images in batches of 8: 4 steps an epoch
    quiet_trainer(max_epochs=2, log_every_n_steps=3, logger=CSVLogger(tmp_path, name="run")).fit(model, data)
    with open(next(tmp_path.rglob("metrics.csv")), newline="") as handle:
        logged = [int(row["step"]) for row in csv.DictReader(handle) if row.get("train/loss")]
    assert steps == 4 and logged == [2, 5]  # what Lightning writes with log_every_n_steps=3 over 8 steps
    assert calls.count("train/loss") == 4  # steps 2 and 5, and each epoch's last (3, 7): not once per step
