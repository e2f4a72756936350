# The two commands: `make lab` and `make test`. Everything else is a building block.
SHELL := /bin/bash
VENV ?= $(CURDIR)/.venv
export VENV
COLLECTIONS := $(CURDIR)/.build/collections
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export PYTHONPATH := $(COLLECTIONS)

.PHONY: all lab test venv system collection-link unit integration sanity lint docs changelog build bench clean

all: test

venv:
	@./scripts/setup-venv.sh

system:
	@./scripts/setup-system.sh

collection-link:
	@mkdir -p $(COLLECTIONS)/ansible_collections/shadownet
	@ln -sfn $(CURDIR) $(COLLECTIONS)/ansible_collections/shadownet/proxmox

## make lab: start the PVE simulator and the namespace lab, run the main job end to end, stop everything.
lab: venv system collection-link
	@./scripts/lab.sh

## make test: every test, lint and packaging check (what CI runs).
test: venv system collection-link
	@./scripts/run-tests.sh

unit integration sanity lint docs changelog build: venv collection-link
	@./scripts/run-tests.sh $@

bench: venv system collection-link
	@./scripts/run-benchmarks.sh

clean:
	rm -rf .build dist tests/output
