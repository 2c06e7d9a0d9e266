"""Sharing a trained model: ``clip-agiqa export CKPT OUT_DIR`` = the checkpoint's ``CLIPAGIQAModel.save_pretrained``.

``OUT_DIR`` then holds ``config.json``, ``model.safetensors`` (the trained tensors only) and a ``README.md``
model card; ``clip_agiqa.load(OUT_DIR)`` (``scoring.py``, or ``CLIPAGIQAModel.from_pretrained``, also with a hub
id) rebuilds the model from them. Loading never reads a ``.ckpt``: a Lightning checkpoint is a pickle, and a
pickle from an unknown source can run code. Export reads your own checkpoint with
``torch.load(weights_only=True)`` (``saved.py``), which accepts only tensors and plain values.

The model card gives the checkpoint's figures on its test split (interval coverage, SRCC, PLCC ...) when the run
folder holds what ``clip-agiqa test`` wrote of that very checkpoint (``test_metrics.json``, matched by the
checkpoint's SHA-256, epoch and step) and the test's row in the run's ``metrics.csv`` agrees with it; otherwise it
says the coverage was not measured. This catches a report of another checkpoint and one planted or edited on its
own; it is no signature: whoever can write the run folder can write both files (test the checkpoint yourself).

The folder is written whole beside its target and renamed into place: a kill or a full disk leaves the older
model as it was. An existing folder is replaced only when asked (``--overwrite``). Nothing here imports
Lightning.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path

from .errors import CommandParser, InputError
from .files import UMASK, file_sha256
from .model import CLIPAGIQAModel
from .run_files import BEST_NAME, CHECKPOINTS, METRICS_FILE, TEST_METRICS_FILE, test_report_folder
from .saved import MAX_CONFIG_BYTES, checkpoint_position, read_bytes, read_checkpoint, read_json

# What test_metrics.json holds (``callbacks.reports.TestReport``), and what its figures can be.
REPORT_KEYS = {"checkpoint", "checkpoint_sha256", "checkpoint_epoch", "checkpoint_step", "n_test", "metrics"}
METRIC_NAME = re.compile(r"test/(?:[A-Za-z0-9_.-]{1,64}/)?[a-z][a-z0-9_]{0,31}")  # test/srcc, test/<target>/srcc
CORRELATIONS = ("srcc", "plcc", "krcc")
NON_NEGATIVE = ("rmse", "mae", "mse", "js", "wasserstein", "abs_z")
MAX_METRICS = 500
MAX_METRICS_CSV_BYTES = 256 << 20  # a row per logged step: a long run's is tens of MB


def run_folder_of(checkpoint: Path) -> Path:
    """The run folder of a checkpoint written by ``clip-agiqa fit`` (``<run>/checkpoints/best.ckpt``)."""
    return checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINTS else checkpoint.parent


def _report_error(path: Path, reason: str) -> InputError:
    return InputError(f"{path}: not the test results `clip-agiqa test` writes ({reason}); remove it or run the test "
                      f"again")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _metric_problem(name: str, value) -> str | None:
    """Why a test figure cannot be what the test logged, or None."""
    if not (isinstance(name, str) and METRIC_NAME.fullmatch(name)):
        return f"a metric named {str(name)[:40]!r}"
    if not _finite(value):
        return f"{name} is {str(value)[:20]}, not a finite number"
    kind = name.rsplit("/", 1)[-1]
    if kind in CORRELATIONS and not -1 <= value <= 1:
        return f"{name} is {value}, outside [-1, 1]"
    if kind.startswith("coverage") and not 0 <= value <= 1:
        return f"{name} is {value}, outside [0, 1]"
    if (kind in NON_NEGATIVE or kind.startswith("width")) and value < 0:
        return f"{name} is {value}, below 0"
    return None


def read_test_report(path: Path) -> dict:
    """``test_metrics.json`` read as a stranger's file: a small regular file holding exactly what the test writes,
    figures named like the test's and within their ranges, a positive count of images."""
    try:
        report = read_json(path, MAX_CONFIG_BYTES)
    except InputError as error:
        if "not valid JSON" in str(error) or "must hold a JSON object" in str(error):
            raise _report_error(path, str(error).removeprefix(f"{path} ")) from None
        raise
    if set(report) != REPORT_KEYS:
        raise _report_error(path, f"its fields are {', '.join(sorted(str(k)[:40] for k in report)[:8])}")
    sha256, metrics, n_test = report["checkpoint_sha256"], report["metrics"], report["n_test"]
    if not (isinstance(sha256, str) and len(sha256) == 64 and all(c in "0123456789abcdef" for c in sha256)):
        raise _report_error(path, "checkpoint_sha256 is not a SHA-256")
    if not (isinstance(n_test, int) and not isinstance(n_test, bool) and n_test > 0):
        raise _report_error(path, f"n_test is {str(n_test)[:20]}, not a positive number of images")
    for key in ("checkpoint_epoch", "checkpoint_step"):
        if not (isinstance(report[key], int) and not isinstance(report[key], bool) and report[key] >= 0):
            raise _report_error(path, f"{key} is {str(report[key])[:20]}, not a count")
    if not (isinstance(metrics, dict) and 0 < len(metrics) <= MAX_METRICS):
        raise _report_error(path, f"its metrics must be a mapping of at most {MAX_METRICS} figures")
    for name, value in metrics.items():
        problem = _metric_problem(name, value)
        if problem:
            raise _report_error(path, problem)
    return report


def logged_test_rows(metrics_file: Path, epoch: int | None, step: int | None) -> list[dict[str, float]]:
    """The test figures of each row of a run's metrics.csv logged at the checkpoint's epoch and step (None, a
    checkpoint that does not say: no row)."""
    if not os.path.lexists(metrics_file):
        return []
    text = read_bytes(metrics_file, MAX_METRICS_CSV_BYTES).decode("utf-8", errors="replace")
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        try:
            at = int(float(row.get("epoch") or "nan")), int(float(row.get("step") or "nan"))
            figures = {k: float(v) for k, v in row.items() if isinstance(k, str) and k.startswith("test/") and v}
        except (ValueError, TypeError, OverflowError):
            continue  # a row cut by a kill, or not the run's: it confirms nothing
        if at == (epoch, step) and figures:
            rows.append(figures)
    return rows


def _same_figures(reported: dict[str, float], logged: dict[str, float]) -> bool:
    return set(reported) == set(logged) and all(
        math.isclose(reported[k], logged[k], rel_tol=1e-6, abs_tol=1e-9) for k in reported)


def measured_on_test(checkpoint: Path) -> dict[str, float]:
    """The ``test/*`` figures ``clip-agiqa test`` logged for this checkpoint, else none: its report
    (``run_files.test_report_folder``: the run folder for the run's best.ckpt) must be of this very file (SHA-256,
    epoch and step) and agree with the test's row in the run's metrics.csv. A stranger's report, or one of another
    checkpoint, is never shown; one that is not what the test writes is refused in one line."""
    run = run_folder_of(checkpoint)
    sha256 = file_sha256(checkpoint)
    best = run / CHECKPOINTS / f"{BEST_NAME}.ckpt" if checkpoint.parent.name == CHECKPOINTS else None
    path = test_report_folder(run, checkpoint, sha256, best) / TEST_METRICS_FILE
    if not os.path.lexists(path):
        return {}
    report = read_test_report(path)
    epoch, step = checkpoint_position(checkpoint)
    if (report["checkpoint_sha256"], report["checkpoint_epoch"], report["checkpoint_step"]) != (sha256, epoch, step):
        return {}
    reported = {name: float(value) for name, value in report["metrics"].items()}
    if not any(_same_figures(reported, row) for row in logged_test_rows(run / METRICS_FILE, epoch, step)):
        warnings.warn(f"{path} is not confirmed by a test row of {run / METRICS_FILE} at the checkpoint's epoch "
                      f"{epoch} and step {step}: its figures are left out of the model card", stacklevel=2)
        return {}
    return reported


@contextlib.contextmanager
def folder_in_place(target: Path, overwrite: bool = False):
    """Write a folder whole: with ``folder_in_place(out) as folder``, the files written into ``folder`` go into a new
    folder beside ``target`` (same filesystem), which then takes its place. On any error the new folder is removed and
    an existing ``target`` is untouched. An existing ``target`` is moved aside, the new one renamed in, and the old one
    deleted; a crash between the two renames leaves it whole, as ``.<name>.old-*`` beside ``target``."""
    if target.exists() and not overwrite:
        raise InputError(f"{target} already exists; give another folder, or --overwrite to replace it")
    if target.exists() and not target.is_dir():
        raise InputError(f"{target} exists and is not a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield folder
        os.chmod(folder, 0o777 & ~UMASK)  # mkdtemp makes 0700; a model folder reads like any other
        if target.exists():
            aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, aside / target.name)
            os.replace(folder, target)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(folder, target)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def export_checkpoint(checkpoint, out_dir, overwrite: bool = False) -> Path:
    """Save the model of a trained checkpoint with ``save_pretrained``; returns the folder."""
    source = Path(checkpoint).expanduser()
    if source.is_dir() or not source.exists():
        raise InputError(f"{source}: not a checkpoint file; give the .ckpt written by clip-agiqa fit "
                         f"(e.g. runs/mine/checkpoints/best.ckpt)")
    out = Path(out_dir).expanduser()
    if out.exists() and not overwrite:  # before the model is built: a mistake costs nothing
        raise InputError(f"{out} already exists; give another folder, or --overwrite to replace it")
    model = CLIPAGIQAModel.from_trained_weights(read_checkpoint(source))
    model.training_info = {**model.training_info, **measured_on_test(source)}  # the card shows test/* figures
    with folder_in_place(out, overwrite) as folder:
        model.save_pretrained(folder)
    return out


def main(argv: list[str] | None = None) -> Path:
    parser = CommandParser(
        prog="clip-agiqa export",
        description="Save the model of a trained checkpoint as config.json + model.safetensors + README.md, "
                    "loadable with clip_agiqa.load(OUT_DIR) or CLIPAGIQAModel.from_pretrained without pickle.")
    parser.add_argument("checkpoint", help="a .ckpt written by clip-agiqa fit (e.g. runs/x/checkpoints/best.ckpt)")
    parser.add_argument("out_dir", help="the folder to write (written beside and renamed into place)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    args = parser.parse_args(argv)
    out = export_checkpoint(args.checkpoint, args.out_dir, overwrite=args.overwrite)
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    print(f"exported {args.checkpoint} to {out} ({size:.2f} MB); load it with clip_agiqa.load({str(out)!r})")
    return out
