# Two commands do everything on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
# `make run` installs requirements.txt only; `make test` (and bench, reliability) adds
# requirements-dev.txt. pip installs uv (pinned) into the venv and uv the packages: for
# the running set 3 s instead of pip's 80 s here. Without uv (no network to PyPI, say)
# pip installs them.
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.8
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed-dev
NODE_STAMP := node_modules/.installed
SYNTHESIZED := cdk.out/EventRegistration.template.json
# `make run TEMPLATE=path/to/template.json` runs the stack of another synthesized template.
TEMPLATE ?= $(SYNTHESIZED)
STACK := EventRegistration
# The CDK CLI pinned in package.json (installed by `make deps`), for deploy and destroy.
CDK := node_modules/.bin/cdk
# Extra CDK CLI arguments, e.g. CDK_ARGS="--profile dev" or "--require-approval never".
CDK_ARGS ?=
OUTPUTS := .local/cdk-outputs.json
SOURCES := $(shell find infrastructure workflows lambdas -name '*.py' -not -path '*/__pycache__/*' 2>/dev/null)

export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# The CLI is pinned: no daily look-up of a newer release, no telemetry (cdk.json also
# turns off telemetry and notices for `npx cdk`).
export CDK_DISABLE_VERSION_CHECK := 1
export CDK_DISABLE_CLI_TELEMETRY := true
# `make e2e URL=...` alone points the HTTP tests at another API; every other target tests locally.
unexport E2E_URL

.PHONY: help venv deps run-deps synth test test-fast test-thorough lint typecheck clean demo diagrams run bench reliability \
	bootstrap deploy destroy e2e

help:
	@echo "make run            serve the whole pipeline on 127.0.0.1:3000 (DynamoDB Local, local engine)"
	@echo "make test           every test tier (unit, property, integration, infrastructure) + lint"
	@echo "make test-thorough  the same with many more hypothesis examples"
	@echo "make bench          cost, latency and AWS figures; rewrites docs/benchmarks.md and its plots"
	@echo "make reliability    concurrency, fault, fuzz and security suites; rewrites docs/reliability.md"
	@echo "make demo           one registration story through the local engine, with execution histories"
	@echo "make diagrams       redraw the workflow diagrams in docs/workflows.md from the synthesized ASL"
	@echo "make synth          write cdk.out/ (no Docker, no AWS account)"
	@echo "make lint           ruff and mypy"
	@echo "make bootstrap      prepare the AWS account and region for CDK (once; needs AWS credentials)"
	@echo "make deploy         deploy the $(STACK) stack with the pinned CDK CLI (outputs in $(OUTPUTS))"
	@echo "make destroy        delete the stack (the table and the log groups are kept)"
	@echo "make e2e URL=...    the HTTP tests against a running API: the ApiUrl output, or make run's URL"

$(VENV)/bin/python:
	python3 -m venv $(VENV)

# `pip install $(1)` into the venv, by uv when it can.
define install
	{ { test -x $(UV) || $(VENV)/bin/pip install -q uv==$(UV_VERSION); } && \
		$(UV) pip install -q --python $(PY) $(1); } || \
	{ echo "uv could not install $(1): installing with pip" >&2; $(VENV)/bin/pip install -q $(1); }
endef

$(RUN_STAMP): requirements.txt pyproject.toml | $(VENV)/bin/python
	$(call install,-r requirements.txt)
	$(call install,--no-deps -e .)
	@touch $@

$(STAMP): requirements-dev.txt $(RUN_STAMP)
	$(call install,-r requirements-dev.txt)
	@touch $@

venv: $(STAMP)

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

deps: $(STAMP) $(NODE_STAMP)
run-deps: $(RUN_STAMP) $(NODE_STAMP)

$(SYNTHESIZED): $(RUN_STAMP) $(SOURCES) cdk.json
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

run: run-deps $(TEMPLATE)
	$(PY) -m infrastructure.local.server --template $(TEMPLATE) $(if $(filter memory,$(DB)),--in-memory,)

bench: deps $(SYNTHESIZED)
	$(PY) -m infrastructure.bench

reliability: deps $(SYNTHESIZED)
	CI=1 $(PY) -m tests.reliability

demo: run-deps $(SYNTHESIZED)
	$(PY) -m infrastructure.local.demo $(if $(filter memory,$(DB)),--in-memory,)

diagrams: $(SYNTHESIZED)
	$(PY) -m infrastructure.diagrams

# AWS: account and region come from the usual AWS settings (AWS_PROFILE, AWS_REGION, ...).
bootstrap: run-deps
	$(CDK) bootstrap $(CDK_ARGS)

deploy: run-deps
	@mkdir -p $(dir $(OUTPUTS))
	$(CDK) deploy $(STACK) --outputs-file $(OUTPUTS) $(CDK_ARGS) || { \
		echo "Deploy failed. Check the AWS credentials and region (AWS_PROFILE, AWS_REGION);" \
			"an account and region CDK has not used yet need 'make bootstrap' first." >&2; \
		exit 1; }
	@echo "Check the deployed API: make e2e URL=<ApiUrl above, also in $(OUTPUTS)>"

destroy: run-deps
	$(CDK) destroy $(STACK) $(CDK_ARGS)
	@echo "Retained when the stack is deleted: the DynamoDB table (with its data), the log groups and," \
		"if the stack created it, API Gateway's CloudWatch role; delete them by hand if unwanted."

# The HTTP contract tests (tests/http) against any base URL; the tests that reach around
# the API (table, engine, faults, the local CLI) are skipped there.
e2e: $(STAMP)
	@test -n "$(URL)" || { \
		echo "usage: make e2e URL=<base URL>, e.g. the stack's ApiUrl output or http://127.0.0.1:3000 (make run)" >&2; \
		exit 2; }
	E2E_URL='$(URL)' E2E_TOKEN='$(TOKEN)' $(PY) -m pytest tests/http -q

clean:
	rm -rf cdk.out .pytest_cache .mypy_cache .ruff_cache .hypothesis
