# `make test` and `make demo` set everything up on a fresh machine (a .venv here), then run.
PYTHON ?= python3
VENV ?= .venv
# What pip installs for torch. The range brings a CUDA build on Linux (what GPU users want); CI pins the
# CPU wheel (TORCH=torch==2.13.0); CPU-only elsewhere: TORCH="torch --index-url https://download.pytorch.org/whl/cpu"
TORCH ?= 'torch>=2.4'
BIN := $(VENV)/bin

.PHONY: install lint test test-fast demo bench clean

$(BIN)/clip-agiqa: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/clip-agiqa

# A worker per core (pytest-xdist); how tests are shared out between them: tests/conftest.py.
PYTEST_WORKERS ?= auto
PYTEST_PARALLEL := -n $(PYTEST_WORKERS)

# Style, types and the manual, as configured in pyproject.toml and mkdocs.yml (the site is built to a throwaway
# folder: only its warnings matter). `make test` runs this first, so CI does too.
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	site=$$(mktemp -d) && $(BIN)/mkdocs build --strict --quiet --site-dir "$$site"; status=$$?; rm -rf "$$site"; exit $$status

test: lint
	HF_HUB_OFFLINE=1 WANDB_MODE=disabled $(BIN)/pytest -q $(PYTEST_PARALLEL)

test-fast: install
	HF_HUB_OFFLINE=1 WANDB_MODE=disabled $(BIN)/pytest -q $(PYTEST_PARALLEL) -m "not slow"

# The demo run starts afresh each time: fit never overwrites a run folder's checkpoints by itself.
demo: install
	rm -rf runs/demo/checkpoints
	HF_HUB_OFFLINE=1 $(BIN)/clip-agiqa fit --config experiments/demo.yaml
	HF_HUB_OFFLINE=1 $(BIN)/clip-agiqa test --config runs/demo/config.yaml --ckpt_path runs/demo/checkpoints/best.ckpt

# Performance figures of the feature cache and cut prompts (a few minutes on 2 CPU cores); see README.
# On a GPU: make bench BENCH_ARGS="--accelerator gpu --precision bf16-mixed --num-images 2048 --batch-size 64"
BENCH_ARGS ?=
bench: install
	HF_HUB_OFFLINE=1 WANDB_MODE=disabled $(BIN)/python benchmarks/bench.py --output runs/bench/bench.json $(BENCH_ARGS)

clean:
	rm -rf runs lightning_logs .pytest_cache
