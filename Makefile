# eventshop developer entry points. README: `make demo`, `make test`.
#
#   make setup   ensure infra (RabbitMQ/PostgreSQL/Redis on loopback) + .venv + node tools
#   make browser Debian's chromium, for the console's browser tests (make test does it)
#   make demo    run the end-to-end demo
#   make test    lint (ruff + mypy), then pytest
#   make lint    ruff + mypy only (needs only the venv)
#   make bench   event-bus benchmark
#   make up/down start/stop the platform
#   make image   the one container image of every service (eventshop:dev; TAG=...)
#   make compose-up / compose-demo / compose-down   the platform in containers (deploy/)
#   make clean   remove .venv (and tool caches)
#
# Extra arguments: make test PYTEST_ARGS='-k orders -x', make demo ARGS='...'

SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin

PYTEST_ARGS ?=
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup infra venv node-tools browser demo test lint pytest bench up down image compose-up compose-demo compose-down clean

help:
	@sed -n 's/^#   //p' $(firstword $(MAKEFILE_LIST))

setup: infra venv node-tools

infra:
	@scripts/ensure-infra.sh

venv:
	@scripts/ensure-venv.sh

node-tools:
	@scripts/ensure-node-tools.sh

browser:
	@scripts/ensure-browser.sh

demo: setup
	$(BIN)/eventshop demo $(ARGS)

lint: venv
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

test: setup browser lint
	$(BIN)/pytest -q $(PYTEST_ARGS)

bench: setup
	$(BIN)/eventshop bench bus $(ARGS)

up: setup
	$(BIN)/eventshop up $(ARGS)

down: setup
	$(BIN)/eventshop down $(ARGS)

image: venv
	@scripts/build-image.sh $(TAG)

compose-up: venv
	@scripts/compose.sh up

compose-demo: venv
	@scripts/compose.sh demo $(ARGS)

compose-down:
	@scripts/compose.sh down

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
