# hibernation-resume-lab: every target sets up what it needs on a fresh machine.
#
#   make lab     JupyterLab on notebooks/00-welcome.ipynb (127.0.0.1, token)
#   make test    every test: tests/ (unit, property, scenario, browser) and nbval over notebooks/
#   make bench   the benchmarks (benchmarks/run.py)
#   make clean   remove .venv and caches

PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium

# Arguments for scripts/lab.py, e.g. make lab LAB_ARGS='--port 9000 --no-browser'
LAB_ARGS ?=
# Seconds one test may take before pytest-timeout fails it.
TEST_TIMEOUT ?= 300
# Extra pytest arguments, e.g. make test PYTEST_ARGS='-x -k walk'
PYTEST_ARGS ?=
# What pytest runs: the test tree and every notebook (nbval-lax only checks
# cells marked "# NBVAL_CHECK_OUTPUT"). Only folders that exist are passed.
TEST_PATHS := $(wildcard tests notebooks)

.PHONY: lab test bench clean browser-deps

# The virtual environment, made with the machine's python3 if missing.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The package and its test extra; installed again only when pyproject.toml changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -e '.[test]'
	touch $@

lab: $(STAMP)
	$(BIN)/python scripts/lab.py $(LAB_ARGS)

test: $(STAMP) browser-deps
	$(BIN)/python -m pytest -p no:cacheprovider --timeout=$(TEST_TIMEOUT) \
		--nbval-lax --nbval-current-env $(PYTEST_ARGS) $(TEST_PATHS)

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

# Chromium for the browser test (Playwright drives the system one; it cannot
# download its own here). Installed when missing and we are root; otherwise
# the browser test skips and says why.
browser-deps:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium for the browser test"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	else \
		echo "note: $(CHROMIUM) is missing and this is not root: the browser test will be skipped"; \
		echo "      (to run it: sudo apt-get install chromium)"; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis test-artifacts build *.egg-info
	find . -path ./.git -prune -o -type d \( -name __pycache__ -o -name .ipynb_checkpoints \) -prune -exec rm -rf {} +
