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
# that torchvision 0.29.1 is built for. About 2.5 minutes to create on x86_64 (5.9 GB).
VISION_VENV := .venv-vision
VISION_PY := $(VISION_VENV)/bin/python
VISION_STAMP := $(VISION_VENV)/.installed-stamp
VISION_PINS ?= torch==2.14.1 torchvision==0.29.1 timm

.PHONY: demo test coverage lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e '.[dev,hf]'
	touch $(STAMP)

$(VISION_STAMP): pyproject.toml
	test -x $(VISION_PY) || $(PYTHON) -m venv $(VISION_VENV)
	$(VISION_PY) -m pip install -q --upgrade pip
	$(VISION_PY) -m pip install -q $(VISION_PINS)
	$(VISION_PY) -m pip install -q -e '.[dev]'
	touch $(VISION_STAMP)

demo: $(STAMP)
	$(VENV)/bin/nasprune demo

test: $(STAMP) $(VISION_STAMP)
	$(PY) -m pytest -q -n auto -m "not timing"
	$(PY) -m pytest -q -m timing
	$(VISION_PY) -m pytest -q -n auto -m "vision and not slow"

# The whole coverage table of issue 14 (every torchvision/timm model searched, pruned, saved
# and loaded): about half an hour on 2 cores, so `make test` runs only its fast rows.
coverage: $(STAMP) $(VISION_STAMP)
	$(VISION_PY) -m pytest -q -n auto -m vision
	$(PY) -m pytest -q -n auto tests/pruning/test_coverage_hf.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench

clean:
	rm -rf $(VENV) $(VISION_VENV) build *.egg-info src/*.egg-info
