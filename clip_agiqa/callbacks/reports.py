"""The test report: predictions, scatter and reliability plots, figures with the tested checkpoint.

At test end ``TestReport`` writes ``test_predictions.csv`` (file_name,mos,score; per target columns for several
targets; a distribution model adds each image's calibrated ``std`` and, where the data gives the raters' std,
``rater_std``, ``js`` and ``wasserstein``), ``test_scatter.png`` (per target for several) and
``test_metrics.json`` (the logged ``test/*`` figures with the checkpoint's path, SHA-256, epoch and step, which
``clip-agiqa export`` puts in the model card) into the run folder for the run's own best.ckpt and into
``tests/<checkpoint>-<SHA-256>/`` there for any other (a test never replaces another checkpoint's report), and logs a
table and plots to an active W&B run; at the start of training it logs the split. ``ReliabilityReport`` draws
observed against nominal coverage for a distribution model. Every file is written whole.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import Callback
from PIL import Image, ImageDraw

from ..calibration import draw_reliability, rater_distances
from ..csv_cells import safe_writer
from ..data.splits import split_summary  # the data side owns its summary
from ..files import atomic_write, file_sha256
from ..run_files import (
    PREDICTIONS_FILE,
    SPLITS_FILE,
    TEST_METRICS_FILE,
    reliability_file,
    scatter_file,
    test_report_folder,
)
from ..runs import RunLogger
from ..saved import checkpoint_position
from .wandb import wandb_loggers

CERTAINTY_COLUMNS = ("std", "rater_std", "js", "wasserstein")  # a distribution model's, after MOS and score


def _all_rows(trainer, rows: list) -> list:
    """Every process's rows, on every process (uneven sizes are fine), deduplicated by sample index."""
    if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        gathered: list = [None] * trainer.world_size
        torch.distributed.all_gather_object(gathered, rows)
        rows = [row for part in gathered for row in part]
    return sorted({row[0]: row for row in rows}.values())


def _correlations(mos: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    from ..metrics import correlation  # the package's one correlation helper

    return correlation("srcc", score, mos), correlation("plcc", score, mos)


def draw_scatter(mos, score, path: Path, title: str = "", size: int = 480) -> Path:
    """Predicted score (y) against MOS (x) as a PNG, with the y = x line and SRCC/PLCC in the title."""
    mos, score = np.asarray(mos, dtype=float), np.asarray(score, dtype=float)
    low = float(min(mos.min(), score.min())) if len(mos) else 0.0
    high = float(max(mos.max(), score.max())) if len(mos) else 1.0
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    margin, image = 50, Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    span = size - 2 * margin

    def to_pixel(x: float, y: float) -> tuple[float, float]:
        return margin + (x - low) / (high - low) * span, size - margin - (y - low) / (high - low) * span

    draw.rectangle([margin, margin, size - margin, size - margin], outline="black")
    draw.line([to_pixel(low, low), to_pixel(high, high)], fill=(180, 180, 180))
    for x, y in zip(mos, score):
        px, py = to_pixel(x, y)
        draw.ellipse([px - 2.5, py - 2.5, px + 2.5, py + 2.5], fill=(31, 119, 180))
    for value in np.linspace(low, high, 5):
        x, _ = to_pixel(value, low)
        _, y = to_pixel(low, value)
        draw.text((x - 12, size - margin + 5), f"{value:.2f}", fill="black")
        draw.text((5, y - 6), f"{value:.2f}", fill="black")
    srcc, plcc = _correlations(mos, score)
    draw.text((margin, 10), f"{title}  n={len(mos)}  SRCC={srcc:.4f}  PLCC={plcc:.4f}".strip(), fill="black")
    draw.text((size // 2 - 12, size - 20), "MOS", fill="black")
    draw.text((5, margin - 20), "predicted", fill="black")
    with atomic_write(path, "wb") as handle:
        image.save(handle, format="PNG")
    return path


def prediction_columns(targets: list[str], extras: tuple[str, ...] = ()) -> list[str]:
    """``file_name,mos,score`` (then ``extras``, e.g. ``std``) for one target; ``file_name`` and
    ``<target>_mos,<target>_score`` (then ``<target>_<extra>``) per target for several."""
    kinds = ("mos", "score", *extras)
    if len(targets) == 1:
        return ["file_name", *kinds]
    return ["file_name", *[f"{target}_{kind}" for target in targets for kind in kinds]]


def certainty_of_batch(pl_module, batch: dict, outputs: dict, size: int) -> list[dict | None]:
    """Per row, each target's calibrated std and, where the batch gives the raters' std, that std and the distances
    between predicted and raters' distributions (``calibration.rater_distances``, as the test step's);
    None per row for a model without distributions."""
    if "std" not in outputs:
        return [None] * size

    columns = {"std": outputs["std"].float().reshape(size, -1)}
    if "probs" in outputs and batch.get("mos_std") is not None:
        mos = batch["mos"].float().reshape(size, -1)
        rater_std = batch["mos_std"].float().reshape(mos.shape)
        levels = pl_module.model.mos_levels()
        distances = [rater_distances(mos[:, t], outputs["probs"][:, t], levels[t], rater_std[:, t])
                     for t in range(mos.shape[1])]
        columns.update(rater_std=rater_std, js=torch.stack([js for js, _ in distances], dim=1),
                       wasserstein=torch.stack([wass for _, wass in distances], dim=1))
    values = {name: column.cpu().tolist() for name, column in columns.items()}
    return [{name: column[row] for name, column in values.items()} for row in range(size)]


def as_values(value) -> list[float]:
    """One target's float or several targets' list, as a list."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def best_checkpoint_of(trainer) -> Path | None:
    """The run's own best checkpoint (the checkpoint callback's folder and file name), or None."""
    callback = trainer.checkpoint_callback
    dirpath, filename = getattr(callback, "dirpath", None), getattr(callback, "filename", None)
    if not (dirpath and filename):
        return None
    return Path(dirpath) / f"{filename}{getattr(callback, 'FILE_EXTENSION', '.ckpt')}"


class TestReport(Callback):
    """Keeps the test predictions; writes them, a scatter PNG and (with W&B) a plot and table at test end.

    Args:
        enabled: switch the report off.
        dirpath: where to write (default: the run folder, ``trainer.log_dir``).
        max_table_rows: at most this many rows go to the W&B table.
    """

    def __init__(self, enabled: bool = True, dirpath: str | None = None, max_table_rows: int = 20000):
        self.enabled = enabled
        self.dirpath = dirpath
        self.max_table_rows = max_table_rows
        self._rows: list = []
        # (file_name, mos, score) of the last test: floats for one target, lists in ``targets`` order for several
        self.predictions: list[tuple[str, float | list[float], float | list[float]]] = []
        # per prediction, a distribution model's {"std": [per target], ...} (``certainty_of_batch``); else empty
        self.certainty: list[dict] = []
        self._folder: Path | None = None
        self.checkpoint: dict = {}  # the tested checkpoint: path, SHA-256, epoch and step
        self.targets: list[str] = ["quality"]
        self.files: list[Path] = []  # what the last test wrote

    # --- the split, once training starts -------------------------------------------------------------
    def on_train_start(self, trainer, pl_module) -> None:
        loggers = wandb_loggers(trainer)
        if not (self.enabled and loggers and trainer.is_global_zero):
            return
        datamodule = trainer.datamodule
        summary = split_summary(datamodule) if datamodule is not None else {}
        callback = trainer.checkpoint_callback
        splits_file = Path(callback.dirpath) / SPLITS_FILE if getattr(callback, "dirpath", None) else None
        for logger in loggers:
            # A sweep's metric is read from the run summary: make it the best val SRCC, not the last.
            logger.experiment.define_metric("val/srcc", summary="max")
            logger.log_hyperparams({"split": summary, "data_class": type(datamodule).__name__})
            if splits_file is not None and splits_file.is_file():
                logger.experiment.save(str(splits_file), base_path=str(splits_file.parent), policy="now")

    # --- which checkpoint, and where its report goes ---------------------------------------------------
    def on_test_start(self, trainer, pl_module) -> None:
        """The tested checkpoint decides the report's folder (``run_files.test_report_folder``: never another
        checkpoint's) and the epoch and step of the test's rows in metrics.csv (the checkpoint's, not 0 and 0)."""
        path = Path(trainer.ckpt_path).resolve() if trainer.ckpt_path else None
        sha256 = file_sha256(path) if path is not None and path.is_file() else None
        epoch, step = checkpoint_position(path) if path is not None and sha256 else (None, None)
        self.checkpoint = {"checkpoint": str(path) if path else None, "checkpoint_sha256": sha256,
                           "checkpoint_epoch": epoch, "checkpoint_step": step}
        run_folder = Path(trainer.log_dir or trainer.default_root_dir)  # log_dir: on all ranks
        self._folder = Path(self.dirpath) if self.dirpath else test_report_folder(
            run_folder, path, sha256, best_checkpoint_of(trainer))
        if epoch is not None and step is not None:
            for logger in trainer.loggers:
                if isinstance(logger, RunLogger):
                    logger.position = (epoch, step)  # the test's rows say which checkpoint they are of

    @property
    def folder(self) -> Path | None:
        """Where the last (or current) test's report goes."""
        return self._folder

    # --- test predictions ----------------------------------------------------------------------------
    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._rows = []
        self.targets = list(getattr(getattr(pl_module, "model", None), "targets", None) or ["quality"])

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not self.enabled or not isinstance(outputs, dict) or "score" not in outputs:
            return
        indices = torch.as_tensor(batch["index"]).tolist()
        mos = batch["mos"].float().cpu().tolist()  # (batch,) for one target: floats; (batch, targets): lists
        scores = outputs["score"].float().cpu().tolist()
        certainty = certainty_of_batch(pl_module, batch, outputs, len(indices))
        self._rows.extend(zip(indices, batch["file_name"], mos, scores, certainty))

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        if not self.enabled:
            return
        rows = _all_rows(trainer, self._rows)
        self._rows = []
        self.predictions = [(name, mos, score) for _, name, mos, score, _ in rows]
        self.certainty = [extra for *_, extra in rows] if rows and all(r[-1] is not None for r in rows) else []
        self.files = []
        if self._folder is None:  # a test that did not pass on_test_start (called directly)
            self._folder = Path(self.dirpath or trainer.log_dir or trainer.default_root_dir)
        if trainer.is_global_zero and self.predictions:
            self.write(self._folder, trainer)

    def on_test_end(self, trainer, pl_module) -> None:
        """``test_metrics.json``: the logged test figures (complete once the test epoch has ended) and the checkpoint
        they are of (path, SHA-256, epoch and step)."""
        for logger in trainer.loggers:
            if isinstance(logger, RunLogger):
                logger.position = None
        if not (self.enabled and trainer.is_global_zero and self.predictions and self._folder is not None):
            return
        results = {**self.checkpoint, "n_test": len(self.predictions),
                   "metrics": {k: float(v) for k, v in sorted(trainer.callback_metrics.items())
                               if k.startswith("test/")}}
        with atomic_write(self._folder / TEST_METRICS_FILE) as handle:
            handle.write(json.dumps(results, indent=2) + "\n")
        self.files.append(self._folder / TEST_METRICS_FILE)

    def extras(self) -> tuple[str, ...]:
        """The certainty columns the last test has: ``std`` for a distribution model, then the raters' std and the
        distances where any image has its raters' std."""
        if not self.certainty:
            return ()
        rated = any(math.isfinite(v) for extra in self.certainty for v in extra.get("rater_std", ()))
        return CERTAINTY_COLUMNS if rated else CERTAINTY_COLUMNS[:1]

    def table_rows(self) -> list[list]:
        """Rows in ``prediction_columns(targets, extras())`` order: the name, then each target's MOS and score (and
        its certainty columns)."""
        extras = self.extras()
        rows = []
        for position, (name, mos, score) in enumerate(self.predictions):
            certainty = self.certainty[position] if extras else {}
            per_target = zip(as_values(mos), as_values(score), *(certainty[kind] for kind in extras))
            rows.append([name, *[value for values in per_target for value in values]])
        return rows

    def write(self, folder: Path, trainer) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        rows = self.table_rows()
        width = 2 + len(self.extras())  # columns per target
        with atomic_write(folder / PREDICTIONS_FILE, "w", newline="") as handle:
            writer = safe_writer(handle)  # file names safe to open in a spreadsheet
            writer.writerow(prediction_columns(self.targets, self.extras()))
            writer.writerows([row[0], *("" if math.isnan(value) else f"{value:.6f}" for value in row[1:])]
                             for row in rows)  # an empty cell: the raters' std of that image is not known
        pngs = {}
        for position, target in enumerate(self.targets):
            mos = [row[1 + width * position] for row in rows]
            score = [row[2 + width * position] for row in rows]
            title = "test" if len(self.targets) == 1 else f"test {target}"
            pngs[target] = draw_scatter(mos, score, folder / scatter_file(target, self.targets), title=title)
        self.files = [folder / PREDICTIONS_FILE, *pngs.values(), *self.write_groups(folder, trainer)]
        for logger in wandb_loggers(trainer):
            self._log_to_wandb(logger, rows, pngs)

    def write_groups(self, folder: Path, trainer) -> list[Path]:
        """``test_groups.csv``: SRCC/PLCC per generator, task ... where the data names them (``clip_agiqa.groups``)."""
        sample_groups = getattr(getattr(trainer, "datamodule", None), "sample_groups", None)
        if sample_groups is None:
            return []
        from ..groups import write_test_groups

        names, mos, scores = zip(*self.predictions)
        return write_test_groups(folder, self.targets, list(names), list(mos), list(scores), sample_groups())

    def _log_to_wandb(self, logger, rows: list[list], pngs: dict[str, Path]) -> None:
        """One table with every column; per target a scatter plot of it and the PNG (``test/scatter`` and
        ``test/scatter_png`` for one target, ``test/scatter/<target>`` ... for several)."""
        import wandb

        columns: list = prediction_columns(self.targets, self.extras())
        width = 2 + len(self.extras())
        known = [[None if isinstance(v, float) and math.isnan(v) else v for v in row] for row in rows]  # JSON: no NaN
        table = wandb.Table(columns=columns, data=known[: self.max_table_rows])
        logged: dict[str, object] = {"test/predictions": table}
        for position, (target, png) in enumerate(pngs.items()):
            suffix = "" if len(self.targets) == 1 else f"/{target}"
            mos, score = columns[1 + width * position], columns[2 + width * position]
            title = "predicted score vs MOS (test)" if len(self.targets) == 1 else f"predicted {target} vs MOS (test)"
            logged[f"test/scatter{suffix}"] = wandb.plot.scatter(table, mos, score, title=title)
            logged[f"test/scatter_png{suffix}"] = wandb.Image(str(png))
        logger.experiment.log(logged)













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
        rows = _all_rows(trainer, [(i, m.tolist(), s.tolist(), d.tolist()) for i, m, s, d in self._rows])
        self._rows = []
        report = next((c for c in trainer.callbacks if isinstance(c, TestReport)), None)
        folder = Path((report.folder if report is not None else None) or trainer.log_dir
                      or trainer.default_root_dir)
        if not rows or not trainer.is_global_zero:
            return
        targets = list(pl_module.model.targets)
        for position, target in enumerate(targets):
            mos, mean, std = ([row[k][position] for row in rows] for k in (1, 2, 3))
            title = "reliability (test)" if len(targets) == 1 else f"reliability {target} (test)"
            self.files.append(draw_reliability(mos, mean, std, folder / reliability_file(target, targets), title=title))
        for logger in wandb_loggers(trainer):
            import wandb

            logger.experiment.log({f"test/reliability_png{'' if len(targets) == 1 else '/' + t}": wandb.Image(str(p))
                                   for t, p in zip(targets, self.files)})
