# Set-up and the two entry points named in the README.
#   make reproduce   install everything, then run the main job
#   make test        install everything, then run the test suite
#   make docs        regenerate docs/findings.md from the experiments' claims and criteria
# GPU users: make setup TORCH_SPEC="torch==2.14.1" (or any spec pip understands).
PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY         := $(VENV)/bin/python
PIP        := $(PY) -m pip
STAMP      := $(VENV)/.losslab-installed

.PHONY: setup browser reproduce test test-fast bench docs clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	echo "$(TORCH_SPEC)" > $(VENV)/constraints.txt
	$(PIP) install --disable-pip-version-check -q "$(TORCH_SPEC)"
	$(PIP) install --disable-pip-version-check -q -c $(VENV)/constraints.txt -e ".[test,report]"
	$(PY) -c "import torch, losslab; print('torch', torch.__version__, 'losslab', losslab.__version__)"
	touch $(STAMP)

reproduce: setup
	$(VENV)/bin/losslab reproduce --quick --jobs 2 --out reproduce-out

# The report's browser test needs Debian's chromium (installed once; a no-op when present).
browser:
	sh scripts/install-chromium.sh

test: setup browser
	$(PY) -m ruff check src tests bench
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

bench: setup
	$(PIP) install --disable-pip-version-check -q -c $(VENV)/constraints.txt -e ".[bench]"
	$(PY) bench/surface.py

# docs/findings.md is generated from the experiment modules' declared claims and CRITERIA
# (tests/test_docs.py fails when the committed file differs from the generator's output).
docs: setup
	$(PY) scripts/findings.py docs/findings.md

clean:
	rm -rf $(VENV) runs .pytest_cache
