"""Several datasets in one model (clip_agiqa.data.mixed): each keeps its own split and MOS scale (targets mapped onto
0-1 by its own), training draws them in the stated proportions, and validation/test report each dataset's SRCC/PLCC
and their mean (clip_agiqa.callbacks.per_dataset)."""

from __future__ import annotations

import csv
import math

import lightning as L
import pytest
import torch
from helpers import TINY_MODEL
from scipy import stats

from clip_agiqa.callbacks.per_dataset import DatasetMetrics
from clip_agiqa.data import MOSFolder, write_synthetic_dataset
from clip_agiqa.data.mixed import MixedData, mix_proportions
from clip_agiqa.errors import InputError


@pytest.fixture(scope="module")
def two_studies(tmp_path_factory):
    """Two generated studies on different scales: A's MOS on about 0-5 (60 images), B's the same kind of MOS
    times 20 and shifted (about 10-110, 24 images)."""
    a, b = tmp_path_factory.mktemp("study_a"), tmp_path_factory.mktemp("study_b")
    write_synthetic_dataset(a, num_images=60, picture_size=32, seed=3)
    write_synthetic_dataset(b, num_images=24, picture_size=32, seed=4)
    rows = list(csv.DictReader(open(b / "metadata.csv")))
    for row in rows:
        row["mos"] = f"{float(row['mos']) * 20 + 10:.4f}"
    with open(b / "metadata.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return a, b


def mixed(two_studies, cache_views: int = 0, cache_dir=None, **kwargs) -> MixedData:
    a, b = two_studies
    members = [MOSFolder(str(root), split="prompt", seed=seed, image_size=32, num_workers=0, cache_views=cache_views,
                         cache_dir=str(cache_dir / root.name) if cache_dir else None)
               for root, seed in ((a, 1), (b, 2))]
    return MixedData(members, names=["a", "b"], batch_size=8, **kwargs)


def test_proportions():
    assert mix_proportions("size", [30, 10]) == [0.75, 0.25]
    assert mix_proportions("equal", [30, 10]) == [0.5, 0.5]
    assert mix_proportions([1, 3], [30, 10]) == [0.25, 0.75]
    with pytest.raises(InputError, match="one finite weight >= 0 per dataset"):
        mix_proportions([1.0], [30, 10])


def test_each_dataset_keeps_its_split_and_is_normalised_by_its_own_scale(two_studies):
    data = mixed(two_studies)
    data.setup("fit")
    for number, member in enumerate(data.members):
        train, val = member.split_records("train"), member.split_records("val")
        assert {r.prompt for r in train}.isdisjoint(r.prompt for r in val)  # prompt-disjoint within each
        low, high = member.target_scales["mos"]
        part = data.dataset("train").datasets[number]
        assert len(part) == len(train)
        items = [part[i] for i in range(len(part))]
        assert all(item["dataset"] == number for item in items)
        normalised = torch.stack([item["mos"] for item in items])
        expected = torch.tensor([(r.mos - low) / (high - low) for r in train], dtype=torch.float32)
        torch.testing.assert_close(normalised, expected, atol=1e-6, rtol=0)
        assert normalised.min().item() == pytest.approx(0.0, abs=1e-6)  # its training range maps onto 0-1
        assert normalised.max().item() == pytest.approx(1.0, abs=1e-6)
    assert data.members[1].target_scales["mos"][1] > 50  # B's own scale, not A's
    assert data.target_scales == {"mos": [0.0, 1.0]}


@pytest.mark.parametrize("mix, share_of_a", [("equal", 0.5), ("size", None), ([3, 1], 0.75)])
def test_training_draws_the_datasets_in_the_stated_proportions(two_studies, mix, share_of_a):
    data = mixed(two_studies, mix=mix, epoch_samples=4000)
    data.setup("fit")
    sizes = [len(part) for part in data.dataset("train").datasets]
    expected = share_of_a if share_of_a is not None else sizes[0] / sum(sizes)
    drawn = torch.tensor(list(data.sampler()))
    share = (drawn < sizes[0]).double().mean().item()
    assert len(drawn) == 4000
    assert share == pytest.approx(expected, abs=0.03)  # 4000 draws: the share's std is below 0.008


@pytest.mark.parametrize("cache_views", [0, 2])
def test_a_mixed_fit_reports_each_dataset_and_their_mean(two_studies, tmp_path, cache_views):
    from clip_agiqa import CLIPAGIQA

    data = mixed(two_studies, cache_views=cache_views, cache_dir=tmp_path / "cache")
    model = CLIPAGIQA(**TINY_MODEL, data_targets=data.target_scales)
    metrics = DatasetMetrics(data.names)
    predictions = []

    class Keep(L.Callback):
        def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
            predictions.append((outputs["score"], batch["mos"], batch["dataset"]))

    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, callbacks=[metrics, Keep()], default_root_dir=tmp_path)
    trainer.fit(model, datamodule=data)
    logged = trainer.callback_metrics
    assert {"val/a/srcc", "val/b/srcc", "val/a/plcc", "val/mean_srcc"} <= set(logged)
    assert float(logged["val/mean_srcc"]) == pytest.approx(
        (float(logged["val/a/srcc"]) + float(logged["val/b/srcc"])) / 2, abs=1e-6)
    tested = trainer.test(model, datamodule=data, verbose=False)[0]
    score, mos, dataset = (torch.cat(parts) for parts in zip(*predictions))
    for number, name in enumerate(data.names):
        chosen = dataset == number
        assert tested[f"test/{name}/n"] == chosen.sum().item() == len(data.members[number].split_records("test"))
        expected = stats.spearmanr(score[chosen].numpy(), mos[chosen].numpy()).statistic
        assert tested[f"test/{name}/srcc"] == pytest.approx(expected, abs=1e-6)
    assert math.isfinite(tested["test/mean_srcc"])
    if cache_views:  # each member's own cache, built with the model's encoders
        assert all(any((tmp_path / "cache" / root.name).rglob("shard-*.npy")) for root in two_studies)


def test_mixed_data_refuses_what_it_cannot_mix(two_studies):
    a, b = two_studies
    with pytest.raises(InputError, match="at least two datasets"):
        MixedData([MOSFolder(str(a))])
    with pytest.raises(InputError, match="same number of targets"):
        MixedData([MOSFolder(str(a)), MOSFolder(str(b), target=["mos", "align"])])
    assert MixedData([MOSFolder(str(a)), MOSFolder(str(b))]).names == ["MOSFolder_1", "MOSFolder_2"]
    with pytest.raises(InputError, match="one distinct name per dataset"):
        MixedData([MOSFolder(str(a)), MOSFolder(str(b))], names=["x", "x"])
