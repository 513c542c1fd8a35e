# The two commands of the README, and the course author's helpers.
#   make lab    install what the lab needs and open JupyterLab on notebooks/
#   make test   install the test extras and run the whole test suite
VENV ?= .venv
BIN := $(VENV)/bin
# nbgrader runs alembic from PATH; jupyter refuses root without --allow-root.
export PATH := $(abspath $(BIN)):$(PATH)
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: lab test lint format bench release

lab:
	VENV=$(VENV) scripts/setup.sh lab
	$(BIN)/jupyter lab notebooks/ $(ROOT_FLAG)

test:
	VENV=$(VENV) scripts/setup.sh test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint format:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench:
	$(BIN)/python benchmarks/bench_logprobs.py

# Course authors: re-execute solutions/ and regenerate the student release in notebooks/.
release:
	scripts/release.sh
