# Quickstart targets. Each sets up .venv (idempotent, see scripts/setup.sh) and then runs.
#   make run               the embedded default experiment
#   make test              the unit tier (about 10 minutes on 2 cores): everything but the integration tier
#   make test-integration  the integration tier: real engines and models, smoke searches, multinode, fault battery
#   make test-all          both tiers (CI runs `make test` then `make test-integration`)
.PHONY: run test test-integration test-all
export HF_HUB_OFFLINE ?= 1
# A native crash (in the suite or in a CLI) prints every thread's stack instead of a bare "Error 139".
export PYTHONFAULTHANDLER ?= 1
# --durations below: the slowest tests' times in every log (CI's included), where the tier's time goes.
PY := .venv/bin/python

run:
	scripts/setup.sh
	$(PY) -m cotgap_ray.search

test:
	scripts/setup.sh --dev
	$(PY) -m pytest -m "not integration" -q --durations=15

test-integration:
	scripts/setup.sh --dev
	$(PY) -m pytest -m integration -q --durations=40

test-all:
	scripts/setup.sh --dev
	$(PY) -m pytest -q
