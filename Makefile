# Quickstart targets. Each sets up .venv (idempotent, see scripts/setup.sh) and then runs.
.PHONY: run test test-all bench
export HF_HUB_OFFLINE ?= 1
# A native crash (in the suite or in a CLI) prints every thread's stack instead of a bare "Error 139".
export PYTHONFAULTHANDLER ?= 1
PY := .venv/bin/python

run:            ## set up, then run the embedded default experiment
	scripts/setup.sh
	$(PY) -m cotgap_ray.search

test:           ## set up with test tools, then run the test suite (slow real-model tests excluded)
	scripts/setup.sh --dev
	$(PY) -m pytest -m "not slow" -q

test-all:       ## every test, the slow real-model ones included
	scripts/setup.sh --dev
	$(PY) -m pytest -q
