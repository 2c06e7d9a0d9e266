"""`make bench`: the performance figures, each a ratio measured in one run, with its absolute numbers.

On the offline ``random:vit-b-16`` backbone (ViT-B/16 sized, random weights) and a generated image set:

  predict throughput / bare image-encoder throughput      (same images, batch and dtype; goal >= 0.9)
  fit epoch time, cache off / cache on (epochs 2+)         (goal >= 20x)
  text step (forward + backward), 77 tokens / cut prompts  (goal >= 3x, outputs identical)
  peak RSS of predict / of the bare encoder                (each in a fresh subprocess; goal <= 1.3)
  exported model / resumable checkpoint size               (goal <= 10 MB / <= 25 MB)
  cache build images/s / bare encoder images/s             (goal >= 0.8)
  cached epoch time, prompt-aware / prompt-blind model      (goal <= 1.3)
  clip-agiqa score (image + prompt) / bare image + text encoders, images/s   (goal >= 0.9)
  cached epoch through Lightning / a bare PyTorch loop, same math, same tensors  (goal <= 1.3)
  RSS added by opening a cached split of 50,000 entries / its features' size     (goal <= 0.1)
  fit time of 100 epochs on 3,000 images, extrapolated, cache on and off

Prints a table and writes it as JSON (``--output``). On a GPU::

  python benchmarks/bench.py --accelerator gpu --device 0 --precision bf16-mixed --num-images 2048 --batch-size 64
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")

import torch  # noqa: E402
from bench_scoring import rows_for_bench  # noqa: E402 (benchmarks/ is on the path when run as a script)

GOALS = {  # figure -> (comparison, goal)
    "predict_vs_encoder_throughput": (">=", 0.9),
    "fit_epoch_speedup_cache": (">=", 20.0),
    "text_step_speedup_cut_prompts": (">=", 3.0),
    "predict_vs_encoder_peak_rss": ("<=", 1.3),
    "export_size_mb": ("<=", 10.0),
    "checkpoint_size_mb": ("<=", 25.0),
    "cache_build_vs_encoder_throughput": (">=", 0.8),
    "prompt_aware_vs_blind_cached_epoch": ("<=", 1.3),
    "score_vs_encoders_throughput": (">=", 0.9),
    "cached_epoch_lightning_vs_bare": ("<=", 1.3),
    "open_cached_split_rss_vs_features": ("<=", 0.1),
}
# What a full-size run looks like for the extrapolation: AGIQA-3K, the default split, 100 epochs, K = 8.
FULL_IMAGES, FULL_EPOCHS, FULL_VIEWS = 3000, 100, 8
FULL_TRAIN = 2160  # AGIQA-3K training images (test 0.2, then val 0.1 of the rest)
TEST_SIZE, VAL_SIZE = 0.2, 0.1


# --- shared helpers --------------------------------------------------------------------------------
def torch_device(args) -> torch.device:
    return torch.device("cpu") if args.accelerator == "cpu" else torch.device("cuda", args.device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(args, device: torch.device):
    """The same autocast Lightning's precision plugin uses, for code that runs outside a Trainer."""
    dtypes = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
    if args.precision in dtypes:
        return torch.autocast(device.type, dtype=dtypes[args.precision])
    return nullcontext()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def trainer(args, **kwargs):
    import lightning as L

    accelerator = "cpu" if args.accelerator == "cpu" else "gpu"
    return L.Trainer(accelerator=accelerator, devices=[args.device] if accelerator == "gpu" else 1,
                     precision=args.precision, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, **kwargs)


def data_module(args, cache_views: int = 0, cache_dir: str | None = None, **kwargs):
    from clip_agiqa import MOSFolder

    return MOSFolder(str(args.data), batch_size=args.batch_size, num_workers=args.num_workers,
                     test_size=TEST_SIZE, val_size=VAL_SIZE, cache_views=cache_views, cache_dir=cache_dir, **kwargs)


# --- workers: each runs in a fresh process so its peak RSS is its own ------------------------------
def worker_bare_encoder(args) -> dict:
    """The bare image encoder: CLIP, batches of pixels, get_image_features. Nothing else."""
    from clip_agiqa.backbone import feature_output, load_backbone
    from clip_agiqa.data.images import load_rgb
    from clip_agiqa.data.transforms import ImageTransform

    device = torch_device(args)
    backbone = load_backbone(args.backbone)
    clip = backbone.clip.eval().requires_grad_(False).to(device)
    transform = ImageTransform(backbone.image_settings, train=False)
    paths = sorted(args.data.glob("*.png"))[: args.throughput_images]
    batches = [paths[i: i + args.batch_size] for i in range(0, len(paths), args.batch_size)]
    timed_images, elapsed = 0, 0.0
    for number, batch in enumerate(batches):
        pixels = torch.stack([transform(load_rgb(p)) for p in batch]).to(device)  # outside the timer
        synchronize(device)
        start = time.perf_counter()
        with torch.no_grad(), autocast(args, device):
            feature_output(clip.get_image_features(pixel_values=pixels))
        synchronize(device)
        if number > 0:  # the first batch warms up
            elapsed += time.perf_counter() - start
            timed_images += len(batch)
    return {"images_per_s": timed_images / elapsed, "images": timed_images, "seconds": elapsed,
            "peak_rss_mb": peak_rss_mb(), **gpu_memory(device)}


def worker_predict(args) -> dict:
    """``trainer.predict`` of the full model on the same images (cache off), timed after the first batch."""
    from lightning.pytorch.callbacks import Callback

    from clip_agiqa import CLIPAGIQA

    device = torch_device(args)

    class BatchTimer(Callback):
        def __init__(self):
            self.start, self.images, self.elapsed = None, 0, 0.0

        def on_predict_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
            synchronize(device)
            if batch_idx == 1:
                self.start = time.perf_counter()
            if batch_idx >= 1:
                self.images += len(batch["index"])

        def on_predict_epoch_end(self, trainer, module):
            synchronize(device)
            self.elapsed = time.perf_counter() - self.start

    timer = BatchTimer()
    model = CLIPAGIQA(args.backbone)
    trainer(args, callbacks=[timer], limit_predict_batches=math.ceil(args.throughput_images / args.batch_size)).predict(
        model, data_module(args, predict_split="all"), return_predictions=False)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"images_per_s": timer.images / timer.elapsed, "images": timer.images, "seconds": timer.elapsed,
            "peak_rss_mb": peak_rss_mb(), "peak_rss_workers_mb": children, **gpu_memory(device)}


def gpu_memory(device: torch.device) -> dict:
    if device.type != "cuda":
        return {}
    return {"peak_gpu_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20}


def score_inputs(args) -> tuple[list, list[str]]:
    """Decoded images and their generation prompts (outside every timer), in name order."""
    import csv

    from clip_agiqa.data.images import load_rgb

    rows = sorted(csv.DictReader(open(args.data / "metadata.csv")), key=lambda r: r["file_name"])
    rows = rows[: args.throughput_images]
    return [load_rgb(args.data / r["file_name"]) for r in rows], [r["prompt"] for r in rows]


def worker_bare_encoders(args) -> dict:
    """The bare image and text encoders: pixels and each image's prompt through get_image/text_features."""
    from clip_agiqa.backbone import feature_output, load_backbone
    from clip_agiqa.data.transforms import ImageTransform

    device = torch_device(args)
    backbone = load_backbone(args.backbone)
    clip = backbone.clip.eval().requires_grad_(False).to(device)
    transform = ImageTransform(backbone.image_settings, train=False)
    images, prompts = score_inputs(args)
    timed_images, elapsed = 0, 0.0
    for number, start_index in enumerate(range(0, len(images), args.batch_size)):
        chunk = slice(start_index, start_index + args.batch_size)
        synchronize(device)
        start = time.perf_counter()
        pixels = torch.stack([transform(image) for image in images[chunk]]).to(device)
        tokens = backbone.tokenizer(prompts[chunk], padding=True, truncation=True, return_tensors="pt").to(device)
        with torch.no_grad(), autocast(args, device):
            feature_output(clip.get_image_features(pixel_values=pixels))
            feature_output(clip.get_text_features(**tokens))
        synchronize(device)
        if number > 0:  # the first batch warms up
            elapsed += time.perf_counter() - start
            timed_images += len(pixels)
    return {"images_per_s": timed_images / elapsed, "images": timed_images, "seconds": elapsed,
            "peak_rss_mb": peak_rss_mb()}


def worker_score(args) -> dict:
    """QualityScorer (what `clip-agiqa score` runs) of a saved prompt-aware model on the same images and prompts."""
    from clip_agiqa import CLIPAGIQAModel, QualityScorer

    device = torch_device(args)
    folder = Path(tempfile.mkdtemp(prefix="clip-agiqa-bench-model-"))
    CLIPAGIQAModel(args.backbone, use_prompt=True).save_pretrained(folder)
    scorer = QualityScorer(CLIPAGIQAModel.from_pretrained(folder), device=device, batch_size=args.batch_size,
                           precision={"32-true": "32", "bf16-mixed": "bf16", "16-mixed": "16"}[args.precision])
    images, prompts = score_inputs(args)
    scorer.score_many(images[: args.batch_size], prompts[: args.batch_size])  # warm-up batch
    scorer.model._text_features.clear()  # every prompt encoded inside the timer, as the bare encoders do
    synchronize(device)
    start = time.perf_counter()
    scorer.score_many(images[args.batch_size:], prompts[args.batch_size:])
    synchronize(device)
    elapsed = time.perf_counter() - start
    timed = len(images) - args.batch_size
    return {"images_per_s": timed / elapsed, "images": timed, "seconds": elapsed, "peak_rss_mb": peak_rss_mb()}


WORKERS = {"bare": worker_bare_encoder, "predict": worker_predict, "bare_encoders": worker_bare_encoders,
           "score": worker_score}


def best_of(runs: list[dict]) -> dict:
    """The fastest run's throughput (noise on a shared machine only ever slows a run down) and the
    largest peak memory (the conservative side); every run is kept."""
    best = dict(max(runs, key=lambda r: r["images_per_s"]))
    best["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    best["runs"] = runs
    return best


def run_worker(args, name: str) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", name, *args.forwarded]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark worker {name} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- in-process measurements -----------------------------------------------------------------------
def epoch_timer():
    from lightning.pytorch.callbacks import Callback

    class EpochTimer(Callback):
        """Wall time of each training epoch, its validation included (Lightning validates before
        on_train_epoch_end)."""

        def __init__(self):
            self.epochs: list[float] = []

        def on_train_epoch_start(self, trainer, module):
            synchronize(module.device)
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            synchronize(module.device)
            self.epochs.append(time.perf_counter() - self.start)

    return EpochTimer()


def timed_folder_class():
    from clip_agiqa import MOSFolder

    class TimedFolder(MOSFolder):
        """Records how long building each cached split takes and how many views it encodes."""

        builds: list[tuple[float, int]] = []

        def cached_dataset(self, records, transform):
            start = time.perf_counter()
            dataset = super().cached_dataset(records, transform)
            self.builds.append((time.perf_counter() - start, len(records) * dataset.features.shape[1]))
            return dataset

    return TimedFolder


def measure_fit(args, model, cache_dir: Path) -> dict:
    """One fit with the cache off, one with a fresh cache; epoch times and the build."""
    off = epoch_timer()
    trainer(args, max_epochs=args.uncached_epochs, callbacks=[off], enable_checkpointing=False).fit(
        model, data_module(args))
    folder = timed_folder_class()(str(args.data), batch_size=args.batch_size, num_workers=args.num_workers,
                                   test_size=TEST_SIZE, val_size=VAL_SIZE, cache_views=args.cache_views,
                                   cache_dir=str(cache_dir))
    on = epoch_timer()
    fit_on = trainer(args, max_epochs=args.cached_epochs, callbacks=[on], enable_checkpointing=False)
    fit_on.fit(model, folder)
    build_seconds = sum(seconds for seconds, _ in folder.builds)
    build_views = sum(views for _, views in folder.builds)
    n_train, n_val = len(folder.split_records("train")), len(folder.split_records("val"))
    return {"trainer": fit_on, "epochs_off_s": off.epochs, "epochs_on_s": on.epochs,
            "epoch_off_s": min(off.epochs), "epoch_on_s": statistics.median(on.epochs[1:] or on.epochs),
            "build_s": build_seconds, "build_views": build_views, "build_views_per_s": build_views / build_seconds,
            "train_images": n_train, "val_images": n_val}


def measure_prompt_aware_epochs(args, cache_dir: Path) -> dict:
    """Cached epochs of the prompt-blind and the prompt-aware model on the cache measure_fit built, alternated
    twice; each model's fastest median (load elsewhere only ever slows an epoch down)."""
    from clip_agiqa import CLIPAGIQA

    epochs = {"blind": [], "aware": []}
    for _ in range(2):
        for name in epochs:
            timer = epoch_timer()
            data = data_module(args, cache_views=args.cache_views, cache_dir=str(cache_dir))
            trainer(args, max_epochs=args.cached_epochs, callbacks=[timer], enable_checkpointing=False).fit(
                CLIPAGIQA(args.backbone, use_prompt=name == "aware"), data)
            epochs[name].append(timer.epochs)
    medians = {name: min(statistics.median(times[1:] or times) for times in runs) for name, runs in epochs.items()}
    return {"epoch_blind_s": medians["blind"], "epoch_aware_s": medians["aware"], "epochs": epochs}


def cached_split(n: int, views: int, dim: int, seed: int = 0):
    """A cached training split at a real size without images: random features (n, views, dim), MOS and prompts."""
    from clip_agiqa.data import Record
    from clip_agiqa.data.cache import CachedFeatures

    generator = torch.Generator().manual_seed(seed)
    mos = torch.rand(n, generator=generator) * 5
    records = [Record(f"image_{i:06d}.png", Path(f"image_{i:06d}.png"), {"mos": float(mos[i])},
                      prompt=f"prompt {i % 300}") for i in range(n)]
    return CachedFeatures(records, torch.randn(n, views, dim, generator=generator))


def bare_epoch(module, dataset, optimizer, scheduler, batch_size: int, device: torch.device) -> None:
    """One epoch of the cached step's math in plain PyTorch, on the same tensors: shuffled batches, one random view
    each, the model's scores, MSE on the training scale, SGD step and per-step schedule."""
    import torch.nn.functional as F

    model, table = module.model, dataset.features.shards[0]
    mos = dataset.mos
    order = torch.randperm(len(dataset))
    for start in range(0, len(order), batch_size):
        rows = order[start: start + batch_size]
        views = torch.randint(table.shape[1], (len(rows),))
        features, target = table[rows, views].to(device), mos[rows].to(device).reshape(len(rows), -1)
        scores = model.training_scale_scores(features)
        loss = F.mse_loss(scores, model.to_training_scale(target), reduction="none").sum(dim=-1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()


def measure_step_overhead(args, n_train: int = FULL_TRAIN, epochs: int = 3, rounds: int = 2) -> dict:
    """A cached training epoch through Lightning vs the bare loop doing the same math on the same tensors, at
    AGIQA-3K's training size; alternated ``rounds`` times, each side's fastest median epoch (2+)."""
    from torch.utils.data import DataLoader

    from clip_agiqa import CLIPAGIQA

    device = torch_device(args)
    dim = CLIPAGIQA(args.backbone).model.clip.config.projection_dim
    dataset = cached_split(n_train, args.cache_views, dim)
    epochs_of = {"lightning": [], "bare": []}
    for _ in range(rounds):
        torch.manual_seed(0)
        timer = epoch_timer()
        loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, collate_fn=dataset.collate_fn)
        trainer(args, max_epochs=epochs, callbacks=[timer], enable_checkpointing=False).fit(
            CLIPAGIQA(args.backbone), train_dataloaders=loader)
        epochs_of["lightning"].append(timer.epochs)
        torch.manual_seed(0)
        module = CLIPAGIQA(args.backbone).to(device).train()
        hp = module.hparams
        optimizer = torch.optim.SGD(module.trainable_parameters(), lr=hp.lr, momentum=hp.momentum,
                                    weight_decay=hp.weight_decay)
        steps = epochs * math.ceil(n_train / args.batch_size)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
        times = []
        for _ in range(epochs):
            synchronize(device)
            start = time.perf_counter()
            with autocast(args, device):
                bare_epoch(module, dataset, optimizer, scheduler, args.batch_size, device)
            synchronize(device)
            times.append(time.perf_counter() - start)
        epochs_of["bare"].append(times)
    medians = {name: min(statistics.median(t[1:] or t) for t in runs) for name, runs in epochs_of.items()}
    steps_per_epoch = math.ceil(n_train / args.batch_size)
    return {"epoch_lightning_s": medians["lightning"], "epoch_bare_s": medians["bare"], "train_images": n_train,
            "steps_per_epoch": steps_per_epoch, "step_lightning_ms": 1000 * medians["lightning"] / steps_per_epoch,
            "step_bare_ms": 1000 * medians["bare"] / steps_per_epoch, "epochs": epochs_of}


def current_rss_mb(kind: str = "RssAnon") -> float:
    """Resident memory now (Linux): ``RssAnon`` is the process's own; ``RssFile`` counts mapped file pages, shared
    with every process mapping the same file and dropped by the kernel under pressure."""
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(kind + ":")) / 1024


def measure_open_cached_split(workdir: Path, n: int = 50_000, views: int = 8, dim: int = 512) -> dict:
    """A cached split of ``n`` entries written with random tensors (real shards and manifests, image files of a few
    bytes for the identities), then opened as a loader would: time and resident memory added by opening it, and by
    reading one batch."""
    from clip_agiqa.data import Record
    from clip_agiqa.data.cache import CachedFeatures, FeatureCache
    from clip_agiqa.data.transforms import ImageTransform
    from clip_agiqa.frozen import EncoderKey, FrozenEncoder, ImageSettings

    folder = workdir / "open_split"
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        path = images / f"image_{i:06d}.png"
        path.write_bytes(b"x")
        records.append(Record(path.name, path, {"mos": float(i % 5)}, prompt=f"prompt {i % 300}"))
    encoder = FrozenEncoder(EncoderKey("random:bench", "0" * 16), ImageSettings(224),
                            encode_images=lambda pixels: None, encode_texts=lambda texts: None)
    cache = FeatureCache(folder / "cache", encoder, progress=False)
    transform = ImageTransform(encoder.image_settings, train=True)
    store, generator = cache.store(transform), torch.Generator().manual_seed(0)
    shards = cache.shards(records)
    for name, part, identities in shards:  # written as the cache writes them, random values instead of encoding
        store.write(name, identities, torch.randn(len(part), views, dim, generator=generator))
    del shards
    import gc

    warm = CachedFeatures(records[:64], torch.randn(64, views, dim))  # the indexing kernels' first use, not the split's
    warm.__getitems__(list(range(0, 64, 2)))
    del warm
    gc.collect()
    rss_before, file_before = current_rss_mb(), current_rss_mb("RssFile")
    start = time.perf_counter()
    dataset = CachedFeatures(records, cache.features(records, transform, views))
    open_s = time.perf_counter() - start
    rss_open = current_rss_mb()
    assert cache.built_views == 0, "opening the written split encoded something"
    dataset.__getitems__(list(range(0, n, n // 32))[:32])
    rss_batch = current_rss_mb()
    size_mb = n * views * dim * 4 / 2**20
    return {"entries": n, "views": views, "dim": dim, "features_mb": size_mb, "open_s": open_s,
            "rss_added_open_mb": rss_open - rss_before, "rss_added_after_batch_mb": rss_batch - rss_before,
            "mapped_file_pages_after_batch_mb": current_rss_mb("RssFile") - file_before,
            "shards": len(dataset.features.shards)}


def measure_text_step(args, model) -> dict:
    """Forward + backward of the prompt text path, cut after EOS vs padded to 77 tokens."""
    from clip_agiqa.prompts import PromptLearner

    device = torch_device(args)
    clip = model.model.clip.to(device)
    learners = {}
    for cut in (True, False):
        torch.manual_seed(0)
        learners[cut] = PromptLearner(clip, model.model.tokenizer, cut_after_eos=cut).to(device)
    times, outputs = {}, {}
    for cut, learner in learners.items():
        samples = []
        for repeat in range(args.text_repeats + 1):
            learner.zero_grad(set_to_none=True)
            synchronize(device)
            start = time.perf_counter()
            with autocast(args, device):
                features = learner(clip)
            features.float().sum().backward()
            synchronize(device)
            if repeat > 0:
                samples.append(time.perf_counter() - start)
        times[cut], outputs[cut] = statistics.median(samples), features.detach().float()
    fp_diff = float((outputs[True] - outputs[False]).abs().max())
    # Exactness: in float64 the two paths agree to rounding (causal attention: nothing after EOS counts).
    text_parts = (clip.text_model, clip.text_projection)  # only what the prompt path uses
    for part in text_parts:
        part.to("cpu", torch.float64)
    with torch.no_grad():
        exact = [learners[c].to("cpu", torch.float64)(clip) for c in (True, False)]
    for part in text_parts:
        part.to(device, torch.float32)  # float32 -> float64 -> float32 is lossless
    return {"cut_s": times[True], "full_s": times[False], "cut_tokens": learners[True].prompt_embeddings().shape[1],
            "full_tokens": learners[False].prompt_embeddings().shape[1],
            "max_abs_diff": fp_diff, "max_abs_diff_float64": float((exact[0] - exact[1]).abs().max()),
            "relative_scale": float(outputs[False].abs().max())}


def measure_sizes(fit_trainer, model, workdir: Path) -> dict:
    checkpoint = workdir / "resumable.ckpt"
    fit_trainer.save_checkpoint(checkpoint)
    from clip_agiqa.export import export_checkpoint

    folder = export_checkpoint(checkpoint, workdir / "export", overwrite=True)  # a reused --workdir
    export_bytes, how = sum(p.stat().st_size for p in folder.iterdir()), "clip_agiqa.export (save_pretrained)"
    trained = sum(p.numel() for p in model.trainable_parameters())
    return {"checkpoint_mb": checkpoint.stat().st_size / 1e6, "export_mb": export_bytes / 1e6, "export_by": how,
            "trained_parameters": trained}


# --- the table -------------------------------------------------------------------------------------
def figure(name: str, value: float, detail: str) -> dict:
    comparison, goal = GOALS[name]
    met = value >= goal if comparison == ">=" else value <= goal
    return {"figure": name, "value": value, "goal": f"{comparison} {goal:g}", "met": met, "detail": detail}


def extrapolate(fit: dict) -> dict:
    """Per-epoch cost scales with the images an epoch touches (train + val); the build with the views."""
    test = round(FULL_IMAGES * TEST_SIZE)
    val = round((FULL_IMAGES - test) * VAL_SIZE)
    train = FULL_IMAGES - test - val
    scale = (train + val) / (fit["train_images"] + fit["val_images"])
    build_s = (train * FULL_VIEWS + val) / fit["build_views_per_s"]
    return {"images": FULL_IMAGES, "epochs": FULL_EPOCHS, "cache_views": FULL_VIEWS,
            "cache_off_h": FULL_EPOCHS * fit["epoch_off_s"] * scale / 3600,
            "cache_on_h": (build_s + FULL_EPOCHS * fit["epoch_on_s"] * scale) / 3600,
            "cache_on_epochs_only_min": FULL_EPOCHS * fit["epoch_on_s"] * scale / 60,
            "cache_build_once_h": build_s / 3600}


def table(results: dict) -> list[dict]:
    bare, predict, fit, text, sizes = (results[k] for k in ("bare_encoder", "predict", "fit", "text_step", "sizes"))
    prompt_epochs, score, encoders = results["prompt_epochs"], results["score"], results["bare_encoders"]
    return [
        figure("predict_vs_encoder_throughput", predict["images_per_s"] / bare["images_per_s"],
               f"predict {predict['images_per_s']:.2f} img/s, bare encoder {bare['images_per_s']:.2f} img/s"),
        figure("fit_epoch_speedup_cache", fit["epoch_off_s"] / fit["epoch_on_s"],
               f"epoch cache off {fit['epoch_off_s']:.2f} s, on {fit['epoch_on_s']:.3f} s "
               f"({fit['train_images']} train + {fit['val_images']} val images)"),
        figure("text_step_speedup_cut_prompts", text["full_s"] / text["cut_s"],
               f"{text['full_tokens']} tokens {1000 * text['full_s']:.1f} ms, {text['cut_tokens']} tokens "
               f"{1000 * text['cut_s']:.1f} ms; max |diff| {text['max_abs_diff']:.1e} "
               f"(float64: {text['max_abs_diff_float64']:.1e})"),
        figure("predict_vs_encoder_peak_rss", predict["peak_rss_mb"] / bare["peak_rss_mb"],
               f"predict {predict['peak_rss_mb']:.0f} MB, bare encoder {bare['peak_rss_mb']:.0f} MB"),
        figure("export_size_mb", sizes["export_mb"], f"{sizes['trained_parameters']:,} trained parameters"),
        figure("checkpoint_size_mb", sizes["checkpoint_mb"], "weights + optimiser + loop state"),
        figure("cache_build_vs_encoder_throughput", fit["build_views_per_s"] / bare["images_per_s"],
               f"build {fit['build_views_per_s']:.2f} views/s ({fit['build_views']} in {fit['build_s']:.1f} s), "
               f"bare encoder {bare['images_per_s']:.2f} img/s"),
        figure("prompt_aware_vs_blind_cached_epoch", prompt_epochs["epoch_aware_s"] / prompt_epochs["epoch_blind_s"],
               f"cached epoch prompt-aware {prompt_epochs['epoch_aware_s']:.3f} s, prompt-blind "
               f"{prompt_epochs['epoch_blind_s']:.3f} s"),
        figure("score_vs_encoders_throughput", score["images_per_s"] / encoders["images_per_s"],
               f"score {score['images_per_s']:.2f} img/s, bare image + text encoders "
               f"{encoders['images_per_s']:.2f} img/s (each image with its own prompt)"),
        *cached_rows(results),
    ]


def cached_rows(results: dict) -> list[dict]:
    step, split = results["step_overhead"], results["open_split"]
    return [
        figure("cached_epoch_lightning_vs_bare", step["epoch_lightning_s"] / step["epoch_bare_s"],
               f"cached epoch of {step['train_images']} images, Lightning {step['epoch_lightning_s']:.3f} s "
               f"({step['step_lightning_ms']:.1f} ms/step), bare PyTorch loop {step['epoch_bare_s']:.3f} s "
               f"({step['step_bare_ms']:.1f} ms/step)"),
        figure("open_cached_split_rss_vs_features", split["rss_added_open_mb"] / split["features_mb"],
               f"{split['entries']:,} entries x {split['views']} views x {split['dim']} ({split['features_mb']:.0f} MB "
               f"in {split['shards']} shards): opened in {split['open_s']:.2f} s, own memory (RssAnon) "
               f"+{split['rss_added_open_mb']:.0f} MB, +{split['rss_added_after_batch_mb']:.0f} MB after a batch "
               f"(+{split['mapped_file_pages_after_batch_mb']:.0f} MB of shared, evictable file pages mapped)"),
    ]


def print_table(rows: list[dict], full: dict, header: str) -> None:
    print(f"\n{header}\n")
    print(f"| {'figure':36} | {'value':>8} | {'goal':>7} | met | detail")
    print(f"|{'-' * 38}|{'-' * 10}|{'-' * 9}|-----|-------")
    for row in rows:
        print(f"| {row['figure']:36} | {row['value']:8.2f} | {row['goal']:>7} | {'yes' if row['met'] else 'NO ':3} "
              f"| {row['detail']}")
    print(f"\nfit, {full['epochs']} epochs on {full['images']} images (extrapolated): cache off "
          f"{full['cache_off_h']:.1f} h; cache on {full['cache_on_h']:.2f} h = build once with K={full['cache_views']} "
          f"{full['cache_build_once_h']:.2f} h + {full['epochs']} epochs {full['cache_on_epochs_only_min']:.1f} min")


def environment(args) -> dict:
    device = torch_device(args)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"device": name, "accelerator": args.accelerator, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "precision": args.precision, "backbone": args.backbone,
            "num_images": args.num_images, "batch_size": args.batch_size, "num_workers": args.num_workers,
            "cache_views": args.cache_views, "repeats": args.repeats, "torch": torch.__version__}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accelerator", choices=["cpu", "gpu", "cuda"], default="cpu")
    parser.add_argument("--device", type=int, default=0, help="GPU index (with --accelerator gpu)")
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed", "16-mixed"])
    parser.add_argument("--backbone", default="random:vit-b-16")
    parser.add_argument("--num-images", type=int, default=96, help="generated images (train/val/test 72/8/20%%)")
    parser.add_argument("--picture-size", type=int, default=256, help="side of the generated images, pixels")
    parser.add_argument("--batch-size", type=int, default=32, help="training and inference batch (the paper's 32)")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--cache-views", type=int, default=2, help="views per training image in the cache")
    parser.add_argument("--uncached-epochs", type=int, default=2, help="the fastest one is taken")
    parser.add_argument("--cached-epochs", type=int, default=5, help="epochs 2+ are timed (median)")
    parser.add_argument("--text-repeats", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="alternated runs of the bare/predict processes")
    parser.add_argument("--throughput-images", type=int, default=64,
                        help="images the bare/predict processes score (the first batch warms up)")
    parser.add_argument("--data", type=Path, default=None, help="image folder (default: generated in --workdir)")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--output", type=Path, default=Path("runs/bench/bench.json"))
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--step-images", type=int, default=FULL_TRAIN,
                        help="training images of the Lightning-vs-bare cached epoch (default: AGIQA-3K's)")
    parser.add_argument("--step-rounds", type=int, default=2, help="alternated Lightning/bare rounds, 3 epochs each")
    parser.add_argument("--only-cached", action="store_true",
                        help="only the cached-step and cached-split rows (a minute or two; e.g. on a lent GPU)")
    args = parser.parse_args(argv)
    if args.accelerator == "cuda":
        args.accelerator = "gpu"
    if args.accelerator == "gpu" and not torch.cuda.is_available():
        parser.error("--accelerator gpu: no CUDA device is visible to torch")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return {}
    from clip_agiqa import CLIPAGIQA
    from clip_agiqa.data import write_synthetic_dataset

    scratch = tempfile.TemporaryDirectory(prefix="clip-agiqa-bench-") if args.workdir is None else None
    workdir = Path(scratch.name) if scratch else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    if args.only_cached:
        results = {"environment": environment(args),
                   "step_overhead": measure_step_overhead(args, args.step_images, rounds=args.step_rounds),
                   "open_split": measure_open_cached_split(workdir)}
        results["table"] = cached_rows(results)
        for row in results["table"]:
            print(f"| {row['figure']:36} | {row['value']:8.2f} | {row['goal']:>7} | {'yes' if row['met'] else 'NO ':3} "
                  f"| {row['detail']}")
        save_partial(args.output, results)
        if scratch:
            scratch.cleanup()
        return results
    if args.data is None:
        args.data = workdir / "images"
        write_synthetic_dataset(args.data, num_images=args.num_images, picture_size=args.picture_size, seed=0)
    args.forwarded = ["--accelerator", args.accelerator, "--device", str(args.device), "--precision", args.precision,
                      "--backbone", args.backbone, "--batch-size", str(args.batch_size),
                      "--num-workers", str(args.num_workers), "--data", str(args.data),
                      "--throughput-images", str(args.throughput_images)]
    started = time.perf_counter()
    results = {"environment": environment(args)}
    runs = {"bare": [], "predict": [], "bare_encoders": [], "score": []}
    for repeat in range(args.repeats):  # alternated, so a burst of load elsewhere hits all alike
        for name in runs:
            print(f"{name} (fresh process, {repeat + 1}/{args.repeats}) ...", flush=True)
            runs[name].append(run_worker(args, name))
    results["bare_encoder"], results["predict"] = best_of(runs["bare"]), best_of(runs["predict"])
    results["bare_encoders"], results["score"] = best_of(runs["bare_encoders"]), best_of(runs["score"])
    save_partial(args.output, results)
    print("fit, cache off then on ...", flush=True)
    model = CLIPAGIQA(args.backbone)
    fit = measure_fit(args, model, workdir / "feature_cache")
    print("text step, cut vs 77 tokens ...", flush=True)
    results["sizes"] = measure_sizes(fit.pop("trainer"), model, workdir)
    results["fit"] = fit
    save_partial(args.output, results)
    results["text_step"] = measure_text_step(args, model)
    print("cached epochs, prompt-aware vs prompt-blind ...", flush=True)
    results["prompt_epochs"] = measure_prompt_aware_epochs(args, workdir / "feature_cache")
    print("cached epoch, Lightning vs a bare loop; opening a cached split of 50,000 entries ...", flush=True)
    results["step_overhead"] = measure_step_overhead(args, args.step_images, rounds=args.step_rounds)
    results["open_split"] = measure_open_cached_split(workdir)
    results["fit_extrapolated"] = extrapolate(fit)
    results["table"] = table(results) + rows_for_bench(args, workdir)  # scoring: peak RSS, workers' throughput
    results["bench_seconds"] = time.perf_counter() - started
    env = results["environment"]
    print_table(results["table"], results["fit_extrapolated"],
                f"clip-agiqa bench on {env['device']} ({env['cpu_count']} CPUs), {args.precision}, {args.backbone}, "
                f"{args.num_images} images, batch {args.batch_size}, {results['bench_seconds']:.0f} s")
    save_partial(args.output, results)
    print(f"\nwrote {args.output}")
    if scratch:
        scratch.cleanup()
    return results


def save_partial(output: Path, results: dict) -> None:
    """Write what is measured so far, so a failure late in the run keeps the earlier figures."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
