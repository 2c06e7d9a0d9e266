"""How small can the learning tests be? Margins and CPU time of the two learning checks at a chosen size.

- ``prompt``: tests/test_prompt_aware.py's comparison: experiments/demo_prompt.yaml fitted with and without
  ``--model.use_prompt``, held-out ``align`` and ``mos`` SRCC of each (the test asserts aware - blind > 0.3 on align,
  aware > 0.4, aware mos > blind mos - 0.1).
- ``demo``: tests/test_demo.py's check: experiments/demo.yaml fitted, held-out SRCC trained vs untrained (the test
  asserts trained > 0.5 and trained > untrained + 0.3).

One JSON line per seed with the margins, wall and CPU seconds (this process). Run it on a quiet machine, e.g.
    .venv/bin/python benchmarks/learning_margins.py prompt --images 1000 --epochs 60 --seeds 0 1 2
    .venv/bin/python benchmarks/learning_margins.py demo --images 600 --epochs 40 --seeds 0 1 2 --cache-views 4
Extra ``--key value`` pairs after ``--`` go to the CLI as they are (e.g. ``-- --model.lr 0.02``).
Its figures are recorded in CHANGELOG.md beside the change they sized.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
REPO = Path(__file__).resolve().parents[1]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def prompt_margin(work: Path, args, seed: int) -> dict:
    from clip_agiqa.cli import main

    metrics = {}
    for use_prompt in ("true", "false"):
        run = work / f"use_prompt_{use_prompt}"
        common = ["--config", str(REPO / "experiments" / "demo_prompt.yaml"), "--data.root", str(work / "data"),
                  "--trainer.default_root_dir", str(run), "--trainer.enable_progress_bar", "false",
                  "--trainer.logger", "false", "--model.use_prompt", use_prompt, "--seed_everything", str(seed),
                  "--data.num_images", str(args.images), "--trainer.max_epochs", str(args.epochs),
                  "--data.cache_views", str(args.cache_views), *args.extra]
        main(["fit", *common])
        cli = main(["test", *common, "--ckpt_path", str(run / "checkpoints" / "best.ckpt")])
        metrics[use_prompt] = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    aware, blind = metrics["true"], metrics["false"]
    return {"aware_align": aware["test/align/srcc"], "blind_align": blind["test/align/srcc"],
            "align_margin": aware["test/align/srcc"] - blind["test/align/srcc"],
            "aware_mos": aware["test/mos/srcc"], "blind_mos": blind["test/mos/srcc"]}


def demo_margin(work: Path, args, seed: int) -> dict:
    import lightning as L

    from clip_agiqa import CLIPAGIQA
    from clip_agiqa.cli import main

    def held_out_srcc(model, data) -> float:
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
        return trainer.test(model, data, verbose=False)[0]["test/srcc"]

    cli = main(["fit", "--config", str(REPO / "experiments" / "demo.yaml"), "--trainer.default_root_dir",
                str(work / "run"), "--data.root", str(work / "data"), "--trainer.enable_progress_bar", "false",
                "--trainer.logger", "false", "--seed_everything", str(seed), "--data.num_images", str(args.images),
                "--trainer.max_epochs", str(args.epochs), "--data.cache_views", str(args.cache_views), *args.extra])
    trained = CLIPAGIQA.load_from_checkpoint(work / "run" / "checkpoints" / "best.ckpt")
    L.seed_everything(0)
    untrained = CLIPAGIQA(**{k: v for k, v in cli.model.hparams.items() if not k.startswith("_")})
    trained_srcc, untrained_srcc = held_out_srcc(trained, cli.datamodule), held_out_srcc(untrained, cli.datamodule)
    return {"trained": trained_srcc, "untrained": untrained_srcc, "margin": trained_srcc - untrained_srcc}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("check", choices=["prompt", "demo"])
    parser.add_argument("--images", type=int, required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--cache-views", type=int, default=4, help="0: no feature cache")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.extra = argv[split + 1:]  # more CLI arguments, as they are
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    measure = prompt_margin if args.check == "prompt" else demo_margin
    for seed in args.seeds:
        work = Path(tempfile.mkdtemp(prefix=f"margins_{args.check}_"))
        start, cpu = time.perf_counter(), cpu_seconds()
        try:
            figures = measure(work, args, seed)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(json.dumps({"check": args.check, "images": args.images, "epochs": args.epochs,
                          "cache_views": args.cache_views, "extra": args.extra, "seed": seed,
                          **{k: round(v, 3) for k, v in figures.items()},
                          "wall_s": round(time.perf_counter() - start, 1), "cpu_s": round(cpu_seconds() - cpu, 1)}),
              flush=True)


if __name__ == "__main__":
    sys.exit(main())
