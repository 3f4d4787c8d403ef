# flashfeed: two commands set everything up on a fresh machine (Python 3.11, Java 17, Node 20):
#   make demo   - the main job on the embedded defaults (install, DynamoDB, data, both DAGs, API)
#   make test   - the test suite, every tier (what CI runs)
#   make test-fast - the fast tier: unit tests, DAG integrity, Spark transforms on tiny frames (under 5 min)
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
FLASHFEED := $(VENV)/bin/flashfeed
PYSPARK_VERSION := $(shell sed -n 's/^pyspark==//p' requirements.txt)
PYTEST_ARGS ?=

.PHONY: install browser demo test test-fast test-slow test-e2e airflow api dynamodb-start dynamodb-stop clean

install: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	# pyspark-client (pulled by the Spark provider) overwrites pyspark's Python files: restore them.
	$(PY) -m pip install --quiet --no-deps --force-reinstall pyspark==$(PYSPARK_VERSION)
	$(PY) -m pip install --quiet --no-deps -e .
	# Hadoop's S3 connector (s3a) for an s3a:// lake, from PyPI (flashfeed/local/s3a_jars.py)
	$(PY) -m flashfeed.local.s3a_jars
	$(PY) -c "import pyspark, pathlib, sys; v = pyspark.__version__; jars = pathlib.Path(pyspark.__file__).parent / 'jars'; \
	  ok = any(j.name.endswith('-' + v + '.jar') for j in jars.glob('spark-core_*.jar')); \
	  sys.exit(0 if ok else f'pyspark {v} does not match its jars in {jars}')"
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: install
	$(FLASHFEED) demo

# The browser test drives Debian's Chromium through Debian's chromedriver (same version,
# nothing downloaded at test time): installed from apt when missing (root, or sudo).
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo="sudo"; \
	  $$sudo apt-get update -qq && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver; \
	fi

# Test tiers, by pytest marker (pyproject.toml; tests/conftest.py marks everything under
# tests/e2e `e2e`, slower tests elsewhere are marked `slow`). `make test` runs them all.
# Tests run in TEST_WORKERS processes (pytest-xdist), a module per process at a time (its
# fixtures, e.g. one Airflow, stay together), the longest modules first (tests/conftest.py);
# tests marked `serial` (timing-sensitive) run afterwards, alone. Most of an end-to-end test's time is a JVM starting or a scheduler
# waiting, so two of them share two cores well.
FAST_TIER := not e2e and not slow
TEST_WORKERS ?= 2
PARALLEL := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: install browser
	$(PY) -m pytest tests -q -m "not serial" $(PARALLEL) $(PYTEST_ARGS)
	$(PY) -m pytest tests -q -m serial $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest tests -q -m "($(FAST_TIER)) and not serial" $(PARALLEL) $(PYTEST_ARGS)
	$(PY) -m pytest tests -q -m "($(FAST_TIER)) and serial" $(PYTEST_ARGS)

# What `make test` adds to the fast tier, in two parts.
test-slow: install
	$(PY) -m pytest tests -q -m "slow and not e2e and not serial" $(PARALLEL) $(PYTEST_ARGS)
	$(PY) -m pytest tests -q -m "slow and not e2e and serial" $(PYTEST_ARGS)

test-e2e: install browser
	$(PY) -m pytest tests -q -m "e2e and not serial" $(PARALLEL) $(PYTEST_ARGS)
	$(PY) -m pytest tests -q -m "e2e and serial" $(PYTEST_ARGS)

airflow: install
	$(FLASHFEED) dynamodb start
	$(FLASHFEED) airflow-ui

api: install
	$(FLASHFEED) dynamodb start
	$(FLASHFEED) api

dynamodb-start: install
	$(FLASHFEED) dynamodb start

dynamodb-stop: install
	$(FLASHFEED) dynamodb stop

clean:
	-$(FLASHFEED) dynamodb stop
	-$(FLASHFEED) postgres stop
	rm -rf .flashfeed
