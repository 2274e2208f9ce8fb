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

.PHONY: install demo test results system-deps clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
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
