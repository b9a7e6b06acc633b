# mlseclab: a secure ML lab as code. `make` lists the targets; run them as root.
SHELL := /bin/bash
.DEFAULT_GOAL := help
MLSECLAB := .venv/bin/mlseclab
LAB ?= reference

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-6s %s\n", $$1, $$2}'

bootstrap: ## install the Debian packages and the virtual environment
	@scripts/bootstrap.sh

up: bootstrap ## stand the lab up on this host (LAB=reference)
	$(MLSECLAB) up --lab $(LAB)

test: bootstrap ## linters, then the whole test suite (unit, stacks, end-to-end)
	scripts/test.sh

lint: bootstrap ## ruff, mypy, yamllint, ansible-lint
	scripts/lint.sh

down: bootstrap ## remove the lab; protected datasets stay (LAB=reference)
	$(MLSECLAB) down --lab $(LAB)

clean: ## remove the virtual environment and tool caches (never a lab or its data)
	rm -rf .venv .pytest_cache .ruff_cache .mypy_cache .hypothesis

.PHONY: help bootstrap up test lint down clean
