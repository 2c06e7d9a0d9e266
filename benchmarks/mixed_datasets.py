"""Two generated studies in one model against each alone: test SRCC per dataset (``MixedData`` + ``DatasetMetrics``).

Study A: 400 generated pictures, MOS on 0-5. Study B: 120 pictures of another seed whose MOS is a different,
non-linear scale of the same quality (100 (mos / 5)^2: 0-100, bunched at the low end). Each fit: ``random:tiny``
with the demo's recipe, 4 cached views, prompt-disjoint splits; the checkpoint of the best val SRCC (alone) or of
the best mean of the two val SRCCs (joint) is tested. Repeated over split seeds.

    nice -n 15 .venv/bin/python benchmarks/mixed_datasets.py --seeds 0 1 2 3 4 --epochs 15 [--loss rank]

``--loss rank`` trains every fit (alone and joint) with the MSE plus the ranking loss within each dataset.
"""

from __future__ import annotations

import argparse
import csv
import json
import warnings
from pathlib import Path

import numpy as np

RECIPE = dict(backbone="random:tiny", n_ctx=4, hidden_dim=64, dropout=0.1, optimizer="adamw", lr=0.01,
              weight_decay=1e-4, warmup_epochs=1, warmup_lr=3e-4)


def studies(work: Path) -> tuple[Path, Path]:
    from clip_agiqa.data import write_synthetic_dataset

    a, b = work / "study_a", work / "study_b"
    if not (a / "metadata.csv").exists():
        write_synthetic_dataset(a, num_images=400, picture_size=64, seed=3)
    if not (b / "done").exists():
        write_synthetic_dataset(b, num_images=120, picture_size=64, seed=4)
        rows = list(csv.DictReader(open(b / "metadata.csv")))
        for row in rows:
            row["mos"] = f"{100 * (float(row['mos']) / 5) ** 2:.4f}"
        with open(b / "metadata.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        (b / "done").write_text("1")
    return a, b


def member(root: Path, seed: int, work: Path):
    from clip_agiqa.data import MOSFolder

    return MOSFolder(str(root), split="prompt", seed=seed, batch_size=16, num_workers=0, crop_scale=[0.5, 1.0],
                     cache_views=4, cache_dir=str(work / "cache" / root.name))


def fit_and_test(data, monitor: str, epochs: int, seed: int, callbacks: list, folder: Path, loss: str) -> dict:
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from clip_agiqa import CLIPAGIQA

    L.seed_everything(seed, verbose=False)
    model = CLIPAGIQA(**RECIPE, loss=loss, data_targets=data.target_scales)
    best = ModelCheckpoint(monitor=monitor, mode="max")
    trainer = L.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[*callbacks, best], default_root_dir=folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, datamodule=data)
        return trainer.test(model, datamodule=data, ckpt_path=best.best_model_path, verbose=False)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--work", type=Path, default=Path("/tmp/clip-agiqa-mixed"))
    parser.add_argument("--loss", choices=("mse", "rank"), default="mse")
    args = parser.parse_args()
    from clip_agiqa.callbacks.per_dataset import DatasetMetrics
    from clip_agiqa.data.mixed import MixedData

    a, b = studies(args.work)
    rows = []
    for seed in args.seeds:
        row = {"seed": seed}
        for name, root in (("a", a), ("b", b)):
            row[f"{name}_alone"] = fit_and_test(member(root, seed, args.work), "val/srcc", args.epochs, seed, [],
                                                args.work / f"run_{name}_{seed}", args.loss)["test/srcc"]
        joint = MixedData([member(a, seed, args.work), member(b, seed, args.work)], names=["a", "b"], mix="size",
                          batch_size=16, seed=seed)
        tested = fit_and_test(joint, "val/mean_srcc", args.epochs, seed, [DatasetMetrics(joint.names)],
                              args.work / f"run_joint_{seed}", args.loss)
        row.update(a_joint=tested["test/a/srcc"], b_joint=tested["test/b/srcc"])
        rows.append(row)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    for name in ("a", "b"):
        alone, joint = np.array([r[f"{name}_alone"] for r in rows]), np.array([r[f"{name}_joint"] for r in rows])
        print(f"study {name}: alone {alone.mean():.4f} ± {alone.std(ddof=1) if len(rows) > 1 else 0:.4f}, joint "
              f"{joint.mean():.4f} ± {joint.std(ddof=1) if len(rows) > 1 else 0:.4f}, joint - alone "
              f"{(joint - alone).mean():+.4f} (min {(joint - alone).min():+.4f})", flush=True)


if __name__ == "__main__":
    main()
