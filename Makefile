# Two commands do everything on a machine with Python >= 3.11 and make:
#   make demo   bring up the local stack on embedded servers and run the main job
#   make test   lint, type-check and run the whole test suite
# Both create the virtualenv (.venv) and install the locked dependencies themselves.

PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
export UV_PYTHON_DOWNLOADS := never

.PHONY: install demo test lint typecheck pytest protos lock up down status clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.installed: $(UV) pyproject.toml uv.lock
	$(UV) sync --locked --all-extras --python $(PYTHON)
	@touch $@

install: $(VENV)/.installed

lock: $(UV)
	$(UV) lock --python $(PYTHON)

protos: install
	$(BIN)/python -m scripts.gen_protos

demo: install
	$(BIN)/enishi dev up --detach
	$(BIN)/enishi demo

up: install
	$(BIN)/enishi dev up

down: install
	$(BIN)/enishi dev down

status: install
	$(BIN)/enishi dev status

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest

test: lint typecheck pytest

clean:
	rm -rf $(VENV) $(TOOLS) .mypy_cache .pytest_cache .ruff_cache
