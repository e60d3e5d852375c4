# Two commands set everything up: `make demo` and `make test`.
# Both create .venv when missing; torch is pinned here (a local CPU build), while the
# package itself only asks for a range. transformers (the optional `hf` extra) is installed
# after torch, so pip keeps the pinned CPU build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
TORCH_PIN ?= torch==2.13.0

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e '.[dev,hf]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/nasprune demo

test: $(STAMP)
	$(PY) -m pytest -q -n auto

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
