#!/usr/bin/env bash
# The checks that need a GPU, in one run: mixed-precision fit + test on CUDA (16-mixed and bf16-mixed,
# metrics must stay finite), a ViT-B/16-size fit with fp16 frozen encoders, then the bench with bf16-mixed.
# Usage: benchmarks/gpu_check.sh [OUTPUT_DIR]   (PY=python to choose the interpreter)
set -uo pipefail
out=${1:-runs/gpu}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=${PY:-python3}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
$py -c "import torch, lightning, transformers; print('torch', torch.__version__, 'lightning', lightning.__version__, 'transformers', transformers.__version__)" | tee -a "$out/gpu.txt"

for precision in 16-mixed bf16-mixed; do
  run=runs/gpu-demo-$precision
  $py -m clip_agiqa fit --config experiments/demo.yaml --trainer.accelerator gpu --trainer.precision $precision \
    --trainer.default_root_dir $run --data.root runs/gpu-demo-data --data.num_workers 4 \
    --trainer.enable_progress_bar false 2>&1 | tail -n 2
  $py -m clip_agiqa test --config experiments/demo.yaml --trainer.accelerator gpu --trainer.precision $precision \
    --trainer.default_root_dir $run --data.root runs/gpu-demo-data --data.num_workers 4 \
    --trainer.enable_progress_bar false --ckpt_path $run/checkpoints/best.ckpt 2>&1 | grep -E "test/" | tee "$out/demo-test-$precision.txt"
done

$py - <<'PY' 2>&1 | grep -vi warn | tee "$out/vit-b-16-fp16.txt"
import math, lightning as L
from clip_agiqa import CLIPAGIQA, SyntheticAIGI
model = CLIPAGIQA("random:vit-b-16", frozen_dtype="float16")
data = SyntheticAIGI("runs/gpu-vit-data", num_images=256, picture_size=256, batch_size=32, num_workers=4)
trainer = L.Trainer(accelerator="gpu", precision="16-mixed", max_epochs=2, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False)
trainer.fit(model, data)
metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
print("vit-b-16 16-mixed, fp16 frozen encoders:", metrics)
assert all(math.isfinite(v) for v in metrics.values()), "a metric is not finite"
PY

$py benchmarks/bench.py --accelerator gpu --device 0 --precision bf16-mixed --num-images ${BENCH_IMAGES:-2048} \
  --throughput-images 1024 --batch-size 64 --num-workers 8 --output "$out/bench-gpu.json" 2>&1 | tee "$out/bench-gpu.txt"
