# The two commands of the README, and the course author's helpers.
#   make lab    install what the lab needs and open Part 1 in the student's JupyterLab
#   make test   install the test extras and run the whole test suite
VENV ?= .venv
BIN := $(VENV)/bin
# nbgrader runs alembic from PATH; jupyter refuses root without --allow-root.
export PATH := $(abspath $(BIN)):$(PATH)
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: lab student-lab test lint format bench bench-train release gpu-check graded-course

# The student's JupyterLab: Part 1 open and, where nbgrader is installed, its student tools only
# (binder/student-jupyter-config turns off Create Assignment, Formgrader and Courses; a plain
# `jupyter lab` keeps them). `make student-lab` opens it without the set-up; LAB_ARGS adds
# options (tests/test_student_lab.py: a port, a token, no browser).
STUDENT_CONFIG := $(abspath binder/student-jupyter-config)
LAB_ARGS ?=

lab:
	VENV=$(VENV) scripts/setup.sh lab
	@$(MAKE) --no-print-directory student-lab

student-lab:
	JUPYTER_CONFIG_PATH="$(STUDENT_CONFIG)$${JUPYTER_CONFIG_PATH:+:$$JUPYTER_CONFIG_PATH}" \
	  $(BIN)/jupyter lab notebooks/lab_3_1_5_dpo/01_dpo_loss.ipynb $(ROOT_FLAG) $(LAB_ARGS)

# Three pytest workers, each taking whole test files (a file's fixtures are built once), on a
# 2-core machine: many tests wait (on a hostile cell's timeout, pip, a browser page, a server),
# and a third worker fills that time (two left the cores idle a third of the run).
# PYTEST_WORKERS=0: one process. The files go out in the order of tests/conftest.py (the slowest
# first), not by their number of tests.
PYTEST_WORKERS ?= 3

test:
	VENV=$(VENV) scripts/setup.sh test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25

lint format:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench:
	$(BIN)/python benchmarks/bench_logprobs.py

# Notebook 04's figures (issue 7): the 3-seed SFT/DPO/variants table, the DPO step against TRL
# and a four-forward step (with MFU), and notebook 04's wall time and peak RSS (full and autograde).
bench-train:
	$(BIN)/python benchmarks/bench_task_seeds.py --all
	$(BIN)/python benchmarks/bench_dpo_step.py
	$(BIN)/python benchmarks/bench_notebook04.py
	$(BIN)/python benchmarks/bench_notebook04.py --autograde

# On a machine with a CUDA GPU: tests, solution notebooks and notebook 04's experiment on CUDA.
gpu-check:
	scripts/gpu_check.sh

# Course authors: re-execute solutions/ and regenerate the student release in notebooks/.
release:
	scripts/release.sh

# Instructors of a graded course: the release notebooks and a dpolab without the exercises'
# reference (what students install), in $(GRADED_OUT): notebooks/, package/, dist/.
GRADED_OUT ?= graded-course
graded-course:
	VENV=$(VENV) scripts/setup.sh instructor
	$(BIN)/python -m dpolab_grade.student_package $(GRADED_OUT)
