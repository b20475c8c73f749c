# Two commands do everything on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
SYNTHESIZED := cdk.out/EventRegistration.template.json
# `make run TEMPLATE=path/to/template.json` runs the stack of another synthesized template.
TEMPLATE ?= $(SYNTHESIZED)
SOURCES := $(shell find infrastructure workflows lambdas -name '*.py' -not -path '*/__pycache__/*' 2>/dev/null)

export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help venv deps synth test test-fast test-thorough lint typecheck clean demo diagrams run bench reliability

help:
	@echo "make run            serve the whole pipeline on 127.0.0.1:3000 (DynamoDB Local, local engine)"
	@echo "make test           every test tier (unit, property, integration, infrastructure) + lint"
	@echo "make test-thorough  the same with many more hypothesis examples"
	@echo "make bench          cost, latency and AWS figures; rewrites docs/benchmarks.md and its plots"
	@echo "make reliability    concurrency, fault, fuzz and security suites; rewrites docs/reliability.md"
	@echo "make demo           one registration story through the local engine, with execution histories"
	@echo "make diagrams       redraw the workflow diagrams (README, docs/workflows.md) from the synthesized ASL"
	@echo "make synth          write cdk.out/ (no Docker, no AWS account)"
	@echo "make lint           ruff and mypy"

$(STAMP): requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements.txt
	$(VENV)/bin/pip install -q --no-deps -e .
	@touch $@

venv: $(STAMP)

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

deps: $(STAMP) $(NODE_STAMP)

$(SYNTHESIZED): $(STAMP) $(SOURCES) cdk.json
	$(PY) -m infrastructure.app

synth: $(SYNTHESIZED)

lint: $(STAMP) $(SYNTHESIZED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy lambdas infrastructure workflows
	$(PY) -m infrastructure.diagrams --check

typecheck: lint

test: deps $(SYNTHESIZED) lint
	HYPOTHESIS_PROFILE=ci $(PY) -m pytest -n 2 --dist loadgroup

test-fast: deps $(SYNTHESIZED)
	HYPOTHESIS_PROFILE=dev $(PY) -m pytest -n 2 --dist loadgroup -m "not integration"

test-thorough: deps $(SYNTHESIZED)
	HYPOTHESIS_PROFILE=thorough $(PY) -m pytest -n 2 --dist loadgroup

run: deps $(TEMPLATE)
	$(PY) -m infrastructure.local.server --template $(TEMPLATE) $(if $(filter memory,$(DB)),--in-memory,)

bench: deps $(SYNTHESIZED)
	$(PY) -m infrastructure.bench

reliability: deps $(SYNTHESIZED)
	CI=1 $(PY) -m tests.reliability

demo: deps $(SYNTHESIZED)
	$(PY) -m infrastructure.local.demo $(if $(filter memory,$(DB)),--in-memory,)

diagrams: $(SYNTHESIZED)
	$(PY) -m infrastructure.diagrams

clean:
	rm -rf cdk.out .pytest_cache .mypy_cache .ruff_cache .hypothesis
