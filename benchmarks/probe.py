"""What the frozen features hold, and how much of it the trained model learns.

For each config (default: the two demos), on the very split the config's datamodule makes:
- the probe: the frozen image features (centre view, the eval transform) of train/val/test, for a prompt-aware
  config also [image, prompt, image x prompt, cosine] of the L2-normalised image and generation-prompt features,
  standardised with the training split's mean and std, into a 2-layer MLP (AdamW, full batch); the epoch is
  chosen on the val split's mean SRCC over targets, and test SRCC per target is reported at that epoch;
- the model: ``clip-agiqa fit --config <config>`` then ``test`` on its best checkpoint (in this process), with
  any ``--override`` options added to both (e.g. ``--override --model.lr=0.003``);
- the ratio model / probe per target, and whether it is at least 0.9 (``GOAL``) on every target.

    .venv/bin/python benchmarks/probe.py                       # both demos, a few minutes each on a CPU
    .venv/bin/python benchmarks/probe.py --probe-only          # the probe alone (seconds)
    .venv/bin/python benchmarks/probe.py --configs experiments/demo.yaml --override=--trainer.max_epochs=10

Prints one table per config and writes ``<workdir>/probe.json``. On a CPU shared with other work, run it with
``OMP_NUM_THREADS=1``: the small steps of these models ran 20-50 times slower with torch's threads competing
for 2 busy cores.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from scipy.stats import spearmanr

REPO = Path(__file__).resolve().parents[1]
DEMOS = [REPO / "experiments" / "demo.yaml", REPO / "experiments" / "demo_prompt.yaml"]
GOAL = 0.9  # the model reaches this share of the probe's test SRCC on every target


def instantiate(spec: dict, **changes):
    module, name = spec["class_path"].rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(**{**spec.get("init_args", {}), **changes})


def data_overrides(overrides: list[str]) -> dict:
    """The ``--data.<name>=<value>`` overrides, so the probe sees the split the model is trained on."""
    found = {}
    for option in overrides:
        name, _, value = option.partition("=")
        if name.startswith("--data.") and value:
            found[name.removeprefix("--data.")] = yaml.safe_load(value)
    return found


def split_features(config: dict, workdir: Path, overrides: list[str] = ()) -> tuple[dict, list[str]]:
    """{split: (inputs, mos)} of the config's data and split (with the ``--data.*`` overrides), and the targets."""
    from clip_agiqa.config import DEFAULT_BACKBONE
    from clip_agiqa.data.records import target_tensor
    from clip_agiqa.data.transforms import ImageTransform
    from clip_agiqa.model import CLIPAGIQAModel

    model_args = config["model"]["init_args"]
    # a run's config.yaml leaves the architecture it took from the defaults as null
    model = CLIPAGIQAModel(backbone=model_args.get("backbone") or DEFAULT_BACKBONE,
                           n_ctx=model_args.get("n_ctx") or 16).eval()
    data_args = config["data"]["init_args"]
    # generated data goes into the work folder; a --data.root override (your own folder) is read where it is
    datamodule = instantiate(config["data"], **{"root": str(workdir / Path(data_args["root"]).name),
                                                **data_overrides(overrides), "num_workers": 0})
    if hasattr(datamodule, "prepare_data"):
        datamodule.prepare_data()
    transform = ImageTransform(model.image_settings, train=False)
    use_prompt = bool(model_args.get("use_prompt"))
    splits = {}
    for split in ("train", "val", "test"):
        records = datamodule.split_records(split)
        images = []
        with torch.no_grad():
            for start in range(0, len(records), 256):
                pixels = torch.stack([transform(datamodule_image(r.path)) for r in records[start: start + 256]])
                images.append(model.encode_images(pixels).float())
        image = F.normalize(torch.cat(images), dim=-1)
        inputs = image
        if use_prompt:
            text, _ = model.encode_texts([r.prompt or "" for r in records])
            text = F.normalize(text, dim=-1)
            inputs = torch.cat([image, text, image * text, (image * text).sum(-1, keepdim=True)], dim=1)
        mos = torch.stack([target_tensor(r, datamodule.targets) for r in records]).reshape(len(records), -1)
        splits[split] = (inputs, mos.float())
    return splits, list(datamodule.targets)


def datamodule_image(path):
    from clip_agiqa.data.images import load_rgb

    return load_rgb(path)


def srcc(prediction: torch.Tensor, mos: torch.Tensor) -> list[float]:
    return [float(spearmanr(prediction[:, t].numpy(), mos[:, t].numpy())[0]) for t in range(mos.shape[1])]


def fit_probe(splits: dict, hidden: int = 256, epochs: int = 300, lr: float = 1e-3, seed: int = 0,
              standardise: bool = True) -> dict:
    """The probe's test SRCC per target at the epoch with the best val mean SRCC."""
    torch.manual_seed(seed)
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = splits["train"], splits["val"], splits["test"]
    mean, std = (train_x.mean(0), train_x.std(0).clamp_min(1e-8)) if standardise else (0.0, 1.0)
    y_mean, y_std = train_y.mean(0), train_y.std(0).clamp_min(1e-8)
    normal = [(x - mean) / std for x in (train_x, val_x, test_x)]
    mlp = torch.nn.Sequential(torch.nn.Linear(train_x.shape[1], hidden), torch.nn.ReLU(), torch.nn.Dropout(0.1),
                              torch.nn.Linear(hidden, train_y.shape[1]))
    optimiser = torch.optim.AdamW(mlp.parameters(), lr=lr, weight_decay=1e-4)
    best = (-float("inf"), None, -1)
    for epoch in range(epochs):
        mlp.train()
        optimiser.zero_grad()
        F.mse_loss(mlp(normal[0]), (train_y - y_mean) / y_std).backward()
        optimiser.step()
        mlp.eval()
        with torch.no_grad():
            val = float(np.mean(srcc(mlp(normal[1]), val_y)))
            if val > best[0]:
                best = (val, srcc(mlp(normal[2]), test_y), epoch)
    return {"val_srcc": best[0], "test_srcc": best[1], "epoch": best[2]}


def fit_model(config_path: Path, workdir: Path, overrides: list[str]) -> dict:
    """Test SRCC per target of the config's model (fit, then test of its best checkpoint), in this process."""
    from clip_agiqa.cli import main

    run = workdir / f"run_{config_path.stem}"
    data_root = workdir / Path(yaml.safe_load(config_path.read_text())["data"]["init_args"]["root"]).name
    common = ["--config", str(config_path), "--trainer.default_root_dir", str(run), "--trainer.logger", "false",
              "--trainer.enable_progress_bar", "false", "--data.root", str(data_root),
              "--data.num_workers", "0", *overrides]
    started = time.perf_counter()
    fit = main(["fit", *common])
    best = fit.trainer.checkpoint_callback.best_model_path
    test = main(["test", *common, "--ckpt_path", best])
    metrics = {k: float(v) for k, v in test.trainer.callback_metrics.items()}
    targets = list(test.model.model.targets)
    keys = ["test/srcc"] if len(targets) == 1 else [f"test/{t}/srcc" for t in targets]
    return {"test_srcc": [metrics[k] for k in keys], "seconds": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", type=Path, default=DEMOS)
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "probe")
    parser.add_argument("--override", action="append", default=[], help="an option for fit and test, e.g. "
                        "--override=--model.lr=0.003 (repeat for more)")
    parser.add_argument("--probe-only", action="store_true", help="measure the probe alone")
    parser.add_argument("--probe-epochs", type=int, default=300)
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = {}
    for config_path in args.configs:
        config = yaml.safe_load(config_path.read_text())
        splits, targets = split_features(config, args.workdir, args.override)
        probe = fit_probe(splits, epochs=args.probe_epochs)
        raw = fit_probe(splits, epochs=args.probe_epochs, standardise=False)
        row = {"targets": targets, "sizes": {s: len(v[1]) for s, v in splits.items()}, "probe": probe,
               "probe_unstandardised": raw}
        if not args.probe_only:
            row["model"] = fit_model(config_path, args.workdir, args.override)
            row["ratio"] = [m / p if p > 0 else float("nan") for m, p in zip(row["model"]["test_srcc"],
                                                                          probe["test_srcc"])]
        results[str(config_path.relative_to(REPO) if config_path.is_relative_to(REPO) else config_path)] = row
        print(f"\n{config_path.name}: train/val/test {row['sizes']}, overrides {args.override or 'none'}")
        print("| target | probe test SRCC (epoch) | probe, unstandardised | model test SRCC | model / probe |")
        print("|---|---|---|---|---|")
        for index, target in enumerate(targets):
            model = f"{row['model']['test_srcc'][index]:.3f}" if "model" in row else "-"
            ratio = f"{row['ratio'][index]:.2f}" if "ratio" in row else "-"
            print(f"| {target} | {probe['test_srcc'][index]:.3f} ({probe['epoch']}) | {raw['test_srcc'][index]:.3f} | "
                  f"{model} | {ratio} |")
        if "ratio" in row:
            short = [t for t, r in zip(targets, row["ratio"]) if not r >= GOAL]
            print(f"model / probe at least {GOAL} on every target: "
                  + ("yes" if not short else f"no ({', '.join(short)})"))
        sys.stdout.flush()
    (args.workdir / "probe.json").write_text(json.dumps({"overrides": args.override, "results": results}, indent=2))
    return results


if __name__ == "__main__":
    main()
