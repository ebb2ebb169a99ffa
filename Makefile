# kubectl-scalardb-graphql: the commands a newcomer runs are `make demo` and `make test`.
SHELL := /bin/bash
# One warm target directory, kept under ~/.cache so a fresh clone (and CI) reuses it.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/kubectl-scalardb-graphql/target
BIN := $(CARGO_TARGET_DIR)/debug/kubectl-scalardb_graphql
RELEASE_BIN := $(CARGO_TARGET_DIR)/release/kubectl-scalardb_graphql
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
# Where release archives are published; the krew manifest points there.
RELEASE_URL ?= https://github.com/kubectl-scalardb-graphql/kubectl-scalardb-graphql/releases/download

# The platforms to build, as os/arch (default: all five of scripts/platforms.sh);
# an archive each, all in one krew manifest, and a signed Helm plugin tarball each.
PLATFORMS ?=
# Where the release files are written.
DIST ?= dist
ARCHIVES := $(DIST)/kubectl-scalardb-graphql_v$(VERSION)_*.tar.gz
HELM_TARBALLS := $(DIST)/scalardb-graphql-$(VERSION)-*.tgz
# dist/SHA256SUMS: every archive and Helm plugin tarball there is (each target that adds some rewrites it).
SHA256SUMS = cd $(DIST) && ls kubectl-scalardb-graphql_v$(VERSION)_*.tar.gz scalardb-graphql-$(VERSION)-*.tgz 2>/dev/null | xargs sha256sum > SHA256SUMS

.PHONY: build test demo bench rig-up rig-down rig-status dist-tools dist krew-manifest helm-package clean

build:
	cargo build

rig-up:
	rig/rig up

rig-down:
	rig/rig down-all

rig-status:
	rig/rig status

# Every test binary (unit and rig), side by side on RIGS rigs (default 3), brought up
# when they are not; ends with a table of each binary's time (scripts/test.py).
test:
	scripts/test.py

# The plugin's build and the rig's (on a fresh machine, the tools' builds) side by side.
demo:
	$(MAKE) --no-print-directory -j2 build rig-up
	scripts/demo.sh "$(BIN)"

# The figures are the release binary's (the one users run). BENCH_RUNS=3
# BENCH_SCALE_NODES=100 make bench for a quick run.
bench: rig-up
	cargo build --release
	scripts/bench.sh "$(RELEASE_BIN)"

# The cross toolchains (rustup targets, zig and cargo-zigbuild, mingw-w64,
# qemu-user, wine), installed once under ~/.cache.
dist-tools:
	scripts/dist-tools.sh

# A release archive per platform (binary, LICENSE, README, docs/, plugin.yaml) for
# krew and helm, in dist/, each built (release profile) then checked here.
dist:
	rm -f $(ARCHIVES) $(HELM_TARBALLS) $(HELM_TARBALLS).prov $(DIST)/SHA256SUMS $(DIST)/scalardb-graphql.yaml \
	  $(DIST)/scalardb-graphql-signing-key.asc
	scripts/dist.sh $(DIST) $(PLATFORMS)
	scripts/dist-check.sh $(ARCHIVES)

# The krew manifest of dist/'s archives at RELEASE_URL, rendered from the template
# krew/scalardb-graphql.yaml, validated by installing every platform's archive; and dist/SHA256SUMS.
krew-manifest: dist
	scripts/krew-manifest.sh $(DIST) "$(RELEASE_URL)/v$(VERSION)" > $(DIST)/scalardb-graphql.yaml
	scripts/krew-validate.sh $(DIST)
	$(SHA256SUMS)

# A Helm plugin tarball per archive with its signed provenance (.prov), the public key
# (dist/scalardb-graphql-signing-key.asc), each verified by Helm 4; and dist/SHA256SUMS.
# SIGNING_KEY=<fingerprint> signs with that key of GNUPGHOME; without it, a throw-away key.
helm-package: dist
	scripts/dist-helm.sh $(DIST)
	$(SHA256SUMS)

clean:
	rm -rf dist
