"""Calibration, measured during a test (training side: torchmetrics and Lightning; the maths is in ``calibration``).

``CalibrationMetrics`` (one per target) gives the coverage of the central 50% and 90% predictive intervals (the
share of test MOS inside) and their mean width (MOS scale), and where the data gives the raters' std, the mean
Jensen-Shannon and Wasserstein distances between predicted and rater distributions. Every state is a sum that
torchmetrics synchronises across processes, and ``update`` keeps everything on the device (no host sync).
``ReliabilityReport`` draws the reliability plot(s) beside the test report's scatter plot.
"""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import Callback
from torchmetrics import MeanMetric

from .calibration import COVERAGES, draw_reliability, rater_distances, z_of

RELIABILITY_FILE = "test_reliability.png"  # one target; several: test_reliability_<target>.png


def coverage_name(coverage: float) -> str:
    return f"coverage{round(coverage * 100)}"


def width_name(coverage: float) -> str:
    return f"width{round(coverage * 100)}"


class CalibrationMetrics(torch.nn.Module):
    """``update(mos, mean, std, probs, levels, mos_std)`` for one target ((batch,) each; ``probs`` (batch, levels)
    over ``levels``; ``mos_std`` NaN where unknown), or ``add(mos, mean, std, js, wass)`` with the per-sample
    distances already taken (a test's predictions file); ``compute()`` -> {prefix + name: value}."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix
        names = [f(c) for c in COVERAGES for f in (coverage_name, width_name)] + ["js", "wasserstein"]
        self.means = torch.nn.ModuleDict({name: MeanMetric() for name in names})

    def update(self, mos, mean, std, probs, levels, mos_std=None) -> None:
        distances = (None, None) if mos_std is None else rater_distances(mos, probs, levels, mos_std)
        self.add(mos, mean, std, *distances)

    def add(self, mos, mean, std, js=None, wass=None) -> None:
        """Coverage and width of the central intervals ``mean +- z * std``; the mean of the per-sample distances
        where they are known (finite)."""
        mos, mean, std = mos.float(), mean.float(), std.float()
        for coverage in COVERAGES:
            half = z_of(coverage) * std
            self.means[coverage_name(coverage)].update(((mos - mean).abs() <= half).float())
            self.means[width_name(coverage)].update(2 * half)
        for name, distance in (("js", js), ("wasserstein", wass)):
            if distance is not None:
                known = torch.isfinite(distance.float())
                self.means[name].update(distance.float().nan_to_num(0.0), known.float())

    def compute(self) -> dict[str, torch.Tensor]:
        values = {}
        for name, metric in self.means.items():
            if name in ("js", "wasserstein") and not float(metric.weight) > 0:
                continue  # no rater std in the data: no distances
            values[self.prefix + name] = metric.compute()
        return values

    def reset(self) -> None:
        for metric in self.means.values():
            metric.reset()


def reliability_file(target: str, targets: list[str]) -> str:
    return RELIABILITY_FILE if len(targets) == 1 else f"test_reliability_{target}.png"


class ReliabilityReport(Callback):
    """Keeps the test's MOS, scores and stds; at test end writes the reliability plot per target into the test
    report's folder (the run folder) and, with W&B, logs it as an image."""

    def __init__(self):
        self._rows: list = []
        self.files: list[Path] = []

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._rows, self.files = [], []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not isinstance(outputs, dict) or "std" not in outputs:
            return
        mos = batch["mos"].float().reshape(len(batch["mos"]), -1).cpu()
        score = outputs["score"].float().reshape(len(mos), -1).cpu()
        std = outputs["std"].float().reshape(len(mos), -1).cpu()
        self._rows.extend(zip(torch.as_tensor(batch["index"]).tolist(), mos, score, std))

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        from .reporting import TestReport, _all_rows, wandb_loggers

        rows = _all_rows(trainer, [(i, m.tolist(), s.tolist(), d.tolist()) for i, m, s, d in self._rows])
        self._rows = []
        report = next((c for c in trainer.callbacks if isinstance(c, TestReport)), None)
        folder = Path((report.dirpath if report is not None else None) or trainer.log_dir
                      or trainer.default_root_dir)
        if not rows or not trainer.is_global_zero:
            return
        targets = list(pl_module.model.targets)
        for position, target in enumerate(targets):
            columns = [[row[k][position] for row in rows] for k in (1, 2, 3)]
            title = "reliability (test)" if len(targets) == 1 else f"reliability {target} (test)"
            self.files.append(draw_reliability(*columns, folder / reliability_file(target, targets), title=title))
        for logger in wandb_loggers(trainer):
            import wandb

            logger.experiment.log({f"test/reliability_png{'' if len(targets) == 1 else '/' + t}": wandb.Image(str(p))
                                   for t, p in zip(targets, self.files)})
