# Everything runs from .venv, built from uv.lock. Only python3 and make are needed beforehand:
# uv itself is bootstrapped into .uv/ with the interpreter's own venv + pip.
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .uv/bin/uv
VENV := .venv
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never
# Compile bytecode at install time: imports of torch/lightning then take seconds, not tens of seconds,
# also where PYTHONDONTWRITEBYTECODE is set.
export UV_COMPILE_BYTECODE := 1

.PHONY: install demo test test-all test-slow test-slurm slurm-up slurm-down bench figures figures-check lint clean

$(UV):
	$(PYTHON) -m venv .uv
	.uv/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --python $(PYTHON)
	touch $@

install: $(VENV)/.installed

# The benchmarks alone need the `bench` group (quantus): make test and make install leave it out.
$(VENV)/.bench-installed: $(VENV)/.installed
	$(UV) sync --locked --group bench --python $(PYTHON)
	touch $@

demo: install
	$(VENV)/bin/roar experiment=digits

# Every folder with Python in it, the results folders' scripts included.
PY_SOURCES = roar hydra_plugins tests benchmarks examples scripts docs/results

# --durations: each run names its slowest tests, so the ~12-minute budget's overruns have names.
test: install
	$(VENV)/bin/ruff check $(PY_SOURCES)
	$(VENV)/bin/pytest -m "not slow" --durations=15

# The tests marked slow alone (.ci/run runs them after make test).
test-slow: install
	$(VENV)/bin/pytest -m slow

test-all: install
	$(VENV)/bin/pytest

# The SLURM tests alone, against the cluster slurm-up brings up on this machine (root, Debian/Ubuntu).
test-slurm: install
	$(VENV)/bin/pytest -m slurm -rs

slurm-up:
	slurm/cluster-up.sh

slurm-down:
	slurm/cluster-down.sh

bench: $(VENV)/.bench-installed
	$(VENV)/bin/python -m benchmarks

# Every figure and summary under docs/ regenerated from real runs (scripts/figures/, docs/figures.md).
figures: install
	scripts/figures/all.sh docs

# The same runs into a temporary directory; fails where a committed number differs from what they give.
figures-check: install
	scripts/figures/check.sh

lint: install
	$(VENV)/bin/ruff check $(PY_SOURCES)
	$(VENV)/bin/ruff format --check $(PY_SOURCES)

clean:
	rm -rf $(VENV) .uv outputs multirun cache wandb
