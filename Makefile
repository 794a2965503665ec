# One venv under .venv holds everything; `make install` makes it from scratch.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install test test-next-keras lint format clean train smoke

install:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[test,bench]"

# Two worker processes: while one traces a graph in Python, the other computes
# (about 1.4x faster than one process on 2 cores: 583 s against 820 s).
test:
	$(BIN)/python -m pytest -n 2

# The suite against the next Keras's pre-release (keras-nightly) in its own venv;
# CI and `make install` keep the pinned Keras.
NEXT_VENV ?= .venv-next-keras
test-next-keras:
	$(PYTHON) -m venv $(NEXT_VENV)
	$(NEXT_VENV)/bin/pip install --upgrade pip
	$(NEXT_VENV)/bin/pip install -e ".[test,bench]"
	$(NEXT_VENV)/bin/pip uninstall -y keras
	$(NEXT_VENV)/bin/pip install --pre --upgrade keras-nightly
	$(NEXT_VENV)/bin/python -c "import keras; print('Keras', keras.__version__)"
	$(NEXT_VENV)/bin/python -m pytest -n 2

train:
	$(BIN)/python apps/train.py --flagfile=configs/cifar10.flags $(ARGS)

# Offline: on images it makes (apps/smoke.py); `apps/train.py --flagfile=configs/smoke.flags` uses CIFAR-10.
smoke:
	$(BIN)/python apps/smoke.py --flagfile=configs/smoke.flags $(ARGS)

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) $(NEXT_VENV) build *.egg-info .pytest_cache .ruff_cache
