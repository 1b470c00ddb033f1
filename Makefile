# The two README commands:
#   make demo   install the runtime and stream the bundled EmoDB clips through the default model, live
#   make test   install everything the tests need (Debian packages and Python) and run them
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test install install-dev default-model bench cross-corpus cross-corpus-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

# [adapt] pins torch==2.13.0 (CPU wheel on these machines); never add onnxruntime-gpu beside onnxruntime
install-dev: $(BIN)/python
	$(BIN)/pip install -q -e '.[adapt,dev,pipecat,bench]'
	PYTHON=$(BIN)/python bash scripts/ci_apt.sh

demo: install
	$(BIN)/edgeser demo

test: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -ra

# recipes that need ../shared/data (see benchmarks/README.md)
default-model: install-dev
	$(BIN)/python benchmarks/default_model/recipe.py

bench: install
	$(BIN)/python benchmarks/runtime/run.py

cross-corpus-quick: install-dev
	$(BIN)/python benchmarks/cross_corpus/run.py --quick

cross-corpus: install-dev
	$(BIN)/python benchmarks/cross_corpus/run.py

clean:
	rm -rf $(VENV) runs build *.egg-info
