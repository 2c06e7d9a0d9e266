"""Several datasets in one model: each keeps its own reader, MOS scale and split; batches mix them in stated
proportions; validation and test report each dataset's figures and their mean.

MOS scales of different studies do not mean the same thing (AGIQA-3K's 0-5 is not EvalMi-50K's 0-100, nor is a
4 of one lab a 4 of another), so each dataset's targets are mapped onto 0-1 by its own scale (its fixed scale, else
the range of its own training split) before they meet in a batch: the loss then works within each dataset's
normalisation, and the model's scale is 0-1. Validation and test run over every dataset's own split, one after
the other; ``DatasetMetrics`` computes SRCC and PLCC per dataset (``val/<name>/srcc`` ...) and their mean
(``val/mean_srcc``), the figure to select the checkpoint on. Each member is an ordinary datamodule (``AGIQA3K``,
``EvalMi50K``, ``TableData`` ...), so its split options, prompt-disjoint splits included, work as they do alone.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, Sequence

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import ConcatDataset, DataLoader, Dataset, WeightedRandomSampler, default_collate

from ..errors import InputError
from .base import MOSDataModule

Mix = Literal["size", "equal"]


def mix_proportions(mix: Mix | Sequence[float], sizes: Sequence[int]) -> list[float]:
    """Each dataset's share of the training samples: ``size`` (as many as it has: every sample equally likely),
    ``equal`` (the same share each) or given weights (normalised)."""
    if mix == "size":
        weights = [float(size) for size in sizes]
    elif mix == "equal":
        weights = [1.0] * len(sizes)
    else:
        weights = [float(w) for w in mix]
        if len(weights) != len(sizes) or not all(math.isfinite(w) and w >= 0 for w in weights):
            raise InputError(f"mix: give one finite weight >= 0 per dataset ({len(sizes)}), got {list(mix)!r}")
    total = sum(weights)
    if not total > 0:
        raise InputError(f"mix: the weights {weights} sum to 0")
    return [w / total for w in weights]


def default_names(kinds: Sequence[str]) -> list[str]:
    """Each member's class name, numbered where two share one (``MOSFolder_1``, ``MOSFolder_2``)."""
    return [kind if kinds.count(kind) == 1 else f"{kind}_{kinds[:k + 1].count(kind)}" for k, kind in enumerate(kinds)]


class NormalisedMember(Dataset):
    """One dataset's items with its targets (and raters' std) mapped onto 0-1 by its own scale, and its number in
    ``dataset``."""

    def __init__(self, dataset: Dataset, number: int, scales: Sequence[Sequence[float]]):
        self.dataset, self.number = dataset, number
        bounds = torch.as_tensor(scales, dtype=torch.float32)
        self.low, self.width = bounds[:, 0], bounds[:, 1] - bounds[:, 0]

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.dataset[index])
        mos = torch.as_tensor(item["mos"], dtype=torch.float32)
        item["mos"] = ((mos.reshape(-1) - self.low) / self.width).reshape(mos.shape)
        if "mos_std" in item:
            std = torch.as_tensor(item["mos_std"], dtype=torch.float32)
            item["mos_std"] = (std.reshape(-1) / self.width).reshape(std.shape)
        item["dataset"] = self.number
        return item


class MixedData(L.LightningDataModule):
    """Several datamodules trained as one.

    Args:
        datasets: the members (any ``MOSDataModule``: ``AGIQA3K``, ``EvalMi50K``, ``TableData`` ...), each with its
            own root, target(s), split options and seed; every member has the same number of targets (the model's
            outputs; named after the first member's).
        names: a name per member for its metrics (``val/<name>/srcc``); default: each member's class name
            (numbered where two share one).
        mix: the training batches' proportions: ``size`` (each dataset by its number of training samples),
            ``equal``, or a weight per dataset.
        epoch_samples: training samples drawn per epoch (with replacement, in the proportions); default: the sum
            of the training splits.
        seed: when given, every member's split seed (so one seed varies all the splits, as a benchmark does) and
            the draws' seed; None: each member keeps its own split seed, and the draws use 0.
        test_datasets: the members ``test`` evaluates, by name (default: all of them, one after the other); one
            name tests that dataset's own test split alone (the benchmark's per-dataset rows).
        batch_size, eval_batch_size, num_workers: the loaders' (the members' own are not used).
    """

    def __init__(self, datasets: list[MOSDataModule], names: list[str] | None = None,
                 mix: Mix | list[float] = "size", epoch_samples: int | None = None, seed: int | None = None,
                 test_datasets: list[str] | None = None, batch_size: int = 32, eval_batch_size: int | None = None,
                 num_workers: int = 0):
        super().__init__()
        if len(datasets) < 2:
            raise InputError("MixedData: give at least two datasets")
        self.members = list(datasets)
        self.names = list(names) if names else default_names([type(member).__name__ for member in self.members])
        if len(self.names) != len(self.members) or len(set(self.names)) != len(self.names):
            raise InputError(f"MixedData: give one distinct name per dataset, got {self.names}")
        widths = {len(member.targets) for member in self.members}
        if len(widths) != 1:
            raise InputError("MixedData: the datasets must have the same number of targets, got "
                             + ", ".join(f"{n}: {m.targets}" for n, m in zip(self.names, self.members)))
        if seed is not None:
            for member in self.members:
                member.seed = seed
        unknown = [name for name in test_datasets or [] if name not in self.names]
        if unknown:
            raise InputError(f"MixedData: test_datasets names {', '.join(unknown)}; the datasets are "
                             + ", ".join(self.names))
        self.test_datasets = list(test_datasets) if test_datasets else list(self.names)
        self.mix, self.epoch_samples, self.seed = mix, epoch_samples, 0 if seed is None else seed
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers = num_workers
        self.datasets: dict[tuple[str, tuple[str, ...]], ConcatDataset] = {}

    @property
    def targets(self) -> list[str]:
        return list(self.members[0].targets)

    @property
    def target_scales(self) -> dict[str, list[float]]:
        """Every target on 0-1: each dataset's own scale is applied before its samples meet the others."""
        return {name: [0.0, 1.0] for name in self.targets}

    @property
    def has_rater_std(self) -> bool:
        return any(member.has_rater_std for member in self.members)

    def member_scales(self) -> list[list[list[float]]]:
        """Each member's (low, high) per target: its fixed scale, else its training split's range."""
        scales = []
        for name, member in zip(self.names, self.members):
            own = member.target_scales
            if own is None:
                raise InputError(f"MixedData: dataset {name} has no labels to train on")
            scales.append([own[target] for target in member.targets])
        return scales

    # --- what the training task hands over -------------------------------------------------------------
    def use_encoder(self, encoder, read_prompts: bool = False) -> None:
        for member in self.members:
            member.use_encoder(encoder, read_prompts)

    def save_splits(self, directory: Path) -> list[Path]:
        """Each member's ``splits.csv`` and ``data.json``, in a folder per dataset."""
        saved = []
        for name, member in zip(self.names, self.members):
            (Path(directory) / name).mkdir(parents=True, exist_ok=True)
            saved.append(member.save_splits(Path(directory) / name))
        return saved

    # --- loaders -----------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        for member in self.members:
            member.trainer = self.trainer

    def dataset(self, split: str, names: Sequence[str] | None = None) -> ConcatDataset:
        """The members' ``split`` one after the other (those in ``names``, default all), normalised, each item with
        its dataset's number. Made when a loader first asks (as a member makes its own): by then the task has handed
        over the encoders the feature cache needs."""
        chosen = tuple(self.names if names is None else names)
        if (split, chosen) not in self.datasets:
            scales = self.member_scales()
            self.datasets[split, chosen] = ConcatDataset([
                NormalisedMember(member.make_dataset(split), number, scales[number])
                for number, (name, member) in enumerate(zip(self.names, self.members)) if name in chosen])
        return self.datasets[split, chosen]

    def sampler(self) -> WeightedRandomSampler:
        """Draws training samples so that dataset ``d`` gives its proportion of them (per-sample weight:
        proportion / its size)."""
        sizes = [len(part) for part in self.dataset("train").datasets]
        proportions = mix_proportions(self.mix, sizes)
        weights = torch.cat([torch.full((size,), share / size, dtype=torch.float64)
                             for size, share in zip(sizes, proportions)])
        generator = torch.Generator().manual_seed(self.seed)  # advances every epoch: new draws, the same run
        return WeightedRandomSampler(weights, self.epoch_samples or sum(sizes), replacement=True, generator=generator)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset("train"), batch_size=self.batch_size, sampler=self.sampler(),
                          num_workers=self.num_workers, collate_fn=default_collate, drop_last=False)

    def _eval_loader(self, dataset: ConcatDataset) -> DataLoader:
        sampler = None
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            # Each sample once over the ranks (Lightning's default sampler pads with repeats, which biases SRCC);
            # DatasetMetrics gathers the ranks' rows.
            sampler = UnrepeatedDistributedSampler(dataset, num_replicas=trainer.world_size, rank=trainer.global_rank,
                                                   shuffle=False)
        return DataLoader(dataset, batch_size=self.eval_batch_size, shuffle=False, sampler=sampler,
                          num_workers=self.num_workers, collate_fn=default_collate)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.dataset("val"))

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.dataset("test", self.test_datasets))


MIXED_MONITOR = "val/mean_srcc"  # what a mixed fit selects its checkpoint on unless told otherwise


def selects_on_pooled_srcc(data, monitor: str | None) -> bool:
    """Whether a fit of ``data`` (its parsed ``class_path`` config) would select on ``val/srcc``, the SRCC of every
    dataset's samples pooled, where it has several datasets: there the checkpoint is selected on the mean of their
    own SRCCs (``MIXED_MONITOR``) instead."""
    class_path = str(getattr(data, "class_path", "") or "")
    return monitor == "val/srcc" and class_path.rsplit(".", 1)[-1] == MixedData.__name__
