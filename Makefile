# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# A GPU user installs their own torch into $(VENV) first (or sets TORCH_SPEC); it is never replaced.
TORCH_SPEC ?= torch==2.13.0

# Data: the shared datasets beside the checkout when they exist, else the user cache.
SHARED_DATA := $(abspath ../shared/data)
ifeq ($(wildcard $(SHARED_DATA)),)
VIRTUALMLE_DATA_DIR ?= $(HOME)/.cache/virtualmle/data
else
VIRTUALMLE_DATA_DIR ?= $(SHARED_DATA)
endif
export VIRTUALMLE_DATA_DIR
# Oversubscribed cores (parallel tests, several workers) are several times slower with spinning OpenMP threads.
export OMP_WAIT_POLICY ?= PASSIVE

DEMO_DIR ?= demo-output

# The embedded LLM's runtime, llama-cpp-python, compiles from source. A default build targets the
# building CPU (GGML_NATIVE), and on virtual machines that advertise AMX without enabling it such a
# wheel dies with SIGSEGV on its first call; pip's wheel cache then hands that wheel to every later
# install. So the wheel is built once for any x86-64 CPU with AVX2 and kept in a cache keyed by
# version and flags. LLAMA_PORTABLE=0 skips this (bring your own build, e.g. CUDA).
LLAMA_VERSION ?= 0.3.36
LLAMA_PORTABLE ?= $(if $(filter x86_64,$(shell uname -m)),1,0)
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
LLAMA_WHEELS ?= $(HOME)/.cache/virtualmle/wheels/llama-cpp-python-$(LLAMA_VERSION)-portable

.PHONY: install demo test results system-deps clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	@if [ "$(LLAMA_PORTABLE)" = 1 ]; then \
		if ! ls $(LLAMA_WHEELS)/*.whl >/dev/null 2>&1; then \
			echo "building llama-cpp-python $(LLAMA_VERSION) for any AVX2 CPU (about 5 minutes, once)"; \
			rm -rf $(LLAMA_WHEELS).tmp && mkdir -p $(LLAMA_WHEELS).tmp && \
			CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) wheel -q --no-cache-dir --no-deps -w $(LLAMA_WHEELS).tmp \
				"llama-cpp-python==$(LLAMA_VERSION)" && \
			rm -rf $(LLAMA_WHEELS) && mv $(LLAMA_WHEELS).tmp $(LLAMA_WHEELS) || exit 1; \
		fi; \
		$(PIP) install -q --no-deps --force-reinstall $(LLAMA_WHEELS)/*.whl || exit 1; \
	fi
	$(PIP) install -q -e ".[dev,server]"
	touch $@

install: $(VENV)/.installed

# Headless Chromium renders the HTML report in the tests; installed only where apt is usable as root.
system-deps:
	@if ! command -v chromium >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "warning: could not install chromium; the report rendering test will be skipped"; \
	fi

demo: install
	mkdir -p $(DEMO_DIR)
	$(VENV)/bin/virtualmle tune --data beauty --model sasrec --trials 6 --slice-users 4000 --max-epochs 3 \
		--storage sqlite:///$(DEMO_DIR)/studies.db --memory $(DEMO_DIR)/memory --run-dir $(DEMO_DIR)/runs
	$(VENV)/bin/virtualmle report --storage sqlite:///$(DEMO_DIR)/studies.db --out $(DEMO_DIR)/report
	@echo "Report: $(DEMO_DIR)/report/index.html"

test: install system-deps
	$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 1; fi; exit $$rc

# Regenerate docs/results.md and its plots (benchmarks, not tests; takes a while on a CPU).
results: install
	$(PY) benchmarks/results.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
