# Two commands set everything up: `make demo` and `make test`.
# Both create .venv when missing; torch is pinned here (a local CPU build), while the
# package itself only asks for a range. transformers (the optional `hf` extra) is installed
# after torch, so pip keeps the pinned CPU build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
TORCH_PIN ?= torch==2.13.0
# torchvision does not import beside the pinned torch: the tests marked `vision` (a
# torchvision detector pruned and fine-tuned) run in a second environment with the torch
# that torchvision 0.29.1 is built for. About 2.5 minutes to create on x86_64 (5.9 GB), so
# `make test` builds it only where the disk has VISION_MIN_FREE_GB free; elsewhere those
# tests are reported as skipped, with the reason, and `make coverage` still demands them.
VISION_MIN_FREE_GB ?= 9
VISION_VENV := .venv-vision
VISION_PY := $(VISION_VENV)/bin/python
VISION_STAMP := $(VISION_VENV)/.installed-stamp
VISION_PINS ?= torch==2.14.1 torchvision==0.29.1 timm

.PHONY: demo test coverage lint clean

# No pip cache: the wheels would take the disk a second time.
PIP_FLAGS := -q --no-cache-dir

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade pip
	$(PY) -m pip install $(PIP_FLAGS) $(TORCH_PIN)
	$(PY) -m pip install $(PIP_FLAGS) -e '.[dev,hf]'
	touch $(STAMP)

$(VISION_STAMP): pyproject.toml
	test -x $(VISION_PY) || $(PYTHON) -m venv $(VISION_VENV)
	$(VISION_PY) -m pip install $(PIP_FLAGS) --upgrade pip
	$(VISION_PY) -m pip install $(PIP_FLAGS) $(VISION_PINS)
	$(VISION_PY) -m pip install $(PIP_FLAGS) -e '.[dev]'
	touch $(VISION_STAMP)

demo: $(STAMP)
	$(VENV)/bin/nasprune demo

test: $(STAMP)
	$(PY) -m pytest -q -n auto -m "not timing"
	$(PY) -m pytest -q -m timing
	@free=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); \
	if [ -f $(VISION_STAMP) ] || [ "$$free" -ge $(VISION_MIN_FREE_GB) ]; then \
		$(MAKE) --no-print-directory $(VISION_STAMP) && \
		$(VISION_PY) -m pytest -q -n auto -m "vision and not slow"; \
	else \
		echo "SKIPPED the tests marked vision: $(VISION_VENV) needs about 6 GB and" \
			"$${free} GB are free (VISION_MIN_FREE_GB=$(VISION_MIN_FREE_GB))"; \
	fi

# The whole coverage table of issue 14 (every torchvision/timm model searched, pruned, saved
# and loaded): about half an hour on 2 cores, so `make test` runs only its fast rows.
coverage: $(STAMP) $(VISION_STAMP)
	$(VISION_PY) -m pytest -q -n auto -m vision
	$(PY) -m pytest -q -n auto tests/pruning/test_coverage_hf.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench

clean:
	rm -rf $(VENV) $(VISION_VENV) build *.egg-info src/*.egg-info
