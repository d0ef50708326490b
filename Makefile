# Everyday verbs. `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SYSTEM_TOOLS := ffmpeg sox espeak-ng
PYTEST_ARGS ?=
# Optional: a PyTorch wheel index for torch/torchaudio, e.g. the CPU-only one
# (https://download.pytorch.org/whl/cpu, ~0.2 GB instead of ~5 GB of CUDA libraries).
TORCH_INDEX_URL ?=

.PHONY: setup system-deps demo test test-fast lint format bench clean

setup: system-deps $(STAMP)

# FFmpeg's shared libraries (for torchcodec), sox and espeak-ng (to make test audio) come from Debian.
system-deps:
	@missing=""; for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg sox espeak-ng >/dev/null; \
	  else \
	    echo "missing system tools:$$missing -- install them as root: apt-get install ffmpeg sox espeak-ng"; exit 1; \
	  fi; \
	fi

# The stamp is written only after the smoke check passes (import torch, torchaudio and torchcodec,
# decode a generated wav through FFmpeg), so a broken environment is repaired by rerunning make.
$(STAMP): pyproject.toml losatok/environment.py
	@rm -f $(STAMP)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@echo "installing the project and its pinned torch set (the default CUDA build of torch is about 5 GB)"
	$(if $(TORCH_INDEX_URL),$(BIN)/python -m pip install -q --index-url $(TORCH_INDEX_URL) \
	    $$(grep -oE '"torch(audio)?==[0-9.]+"' pyproject.toml | tr -d '"'))
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m losatok.environment
	touch $(STAMP)

# The main job on an embedded default: a corpus of real speech and music (plus broken files),
# tokenized by the tiny model on a local Ray, then checked. Rerun it: it resumes and skips.
DEMO ?= demo
demo: setup
	$(BIN)/python -m losatok_input.testing $(DEMO)/corpus
	$(BIN)/losatok-tokenize source.path=$(DEMO)/corpus sink.path=$(DEMO)/dataset \
	    sink.inputs_per_shard=4 cluster.max_failure_fraction=0.5
	$(BIN)/losatok-data verify $(DEMO)/dataset
	$(BIN)/losatok-data stats $(DEMO)/dataset

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m 'not slow' $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup
	$(BIN)/python bench/encoder_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
