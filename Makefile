# Two commands on a fresh machine with Python 3 and make:
#   make quickstart   create .venv, install the project (pip install -e .: requirements.txt and the repo's
#                     own packages), train the offline quickstart
#   make test         create .venv, install requirements-dev.txt (the same, plus pytest and ruff), run the
#                     linter (ruff check, ruff format --check) and the test suite
#                     (what CI runs)
# PYTHON picks the interpreter that creates the venv (default python3).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: quickstart test clean-venv

quickstart: $(VENV)/.requirements
	$(BIN)/python train.py --config configs/quickstart.yaml

test: $(VENV)/.requirements-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests

# A stamp per install: redone only when what it installs from changes.
$(VENV)/.requirements: requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.requirements-dev: requirements-dev.txt requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.requirements

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

clean-venv:
	rm -rf $(VENV)
