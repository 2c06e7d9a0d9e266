# `make test` and `make demo` set everything up on a fresh machine (a .venv here), then run.
PYTHON ?= python3
VENV ?= .venv
# CI pins the CPU wheel (torch==2.13.0); a plain range lets GPU users get a CUDA build.
TORCH ?= torch>=2.4
BIN := $(VENV)/bin

.PHONY: install test test-fast demo bench clean

$(BIN)/clip-agiqa: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/clip-agiqa

test: install
	HF_HUB_OFFLINE=1 WANDB_MODE=disabled $(BIN)/pytest -q

test-fast: install
	HF_HUB_OFFLINE=1 WANDB_MODE=disabled $(BIN)/pytest -q -m "not slow"

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/clip-agiqa fit --config experiments/demo.yaml
	HF_HUB_OFFLINE=1 $(BIN)/clip-agiqa test --config experiments/demo.yaml --ckpt_path runs/demo/checkpoints/best.ckpt

clean:
	rm -rf runs lightning_logs .pytest_cache
