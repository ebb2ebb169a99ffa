# kubectl-scalardb-graphql: the commands a newcomer runs are `make demo` and `make test`.
SHELL := /bin/bash
# One warm target directory, kept under ~/.cache so a fresh clone (and CI) reuses it.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/kubectl-scalardb-graphql/target
BIN := $(CARGO_TARGET_DIR)/debug/kubectl-scalardb_graphql
RELEASE_BIN := $(CARGO_TARGET_DIR)/release/kubectl-scalardb_graphql
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
# Where release archives are published; the krew manifest points there.
RELEASE_URL ?= https://github.com/kubectl-scalardb-graphql/kubectl-scalardb-graphql/releases/download

.PHONY: build test demo bench rig-up rig-down rig-status dist krew-manifest clean

build:
	cargo build

rig-up:
	rig/rig up

rig-down:
	rig/rig down

rig-status:
	rig/rig status

# Brings the rig up when it is not, then runs every test (unit and rig) against it.
test: rig-up
	cargo test

demo: build rig-up
	scripts/demo.sh "$(BIN)"

# The figures are the release binary's (the one users run). BENCH_RUNS=3
# BENCH_SCALE_NODES=100 make bench for a quick run.
bench: rig-up
	cargo build --release
	scripts/bench.sh "$(RELEASE_BIN)"

# Release archives (binary, LICENSE, README, plugin.yaml) for krew and helm, in dist/.
dist:
	cargo build --release
	scripts/dist.sh "$(RELEASE_BIN)" dist

krew-manifest: dist
	scripts/krew-manifest.sh dist "$(RELEASE_URL)/v$(VERSION)" > krew/scalardb-graphql.yaml

clean:
	rm -rf dist
