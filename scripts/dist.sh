#!/usr/bin/env bash
# dist.sh BINARY OUTDIR: a release archive for this machine's OS and CPU,
# holding bin/kubectl-scalardb_graphql, LICENSE, README.md and the helm
# plugin files, so that one archive serves krew and `helm plugin install`.
set -euo pipefail
binary="$1"; out="$2"
root="$(cd "$(dirname "$0")/.." && pwd)"
version="v$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)"
os="$(uname -s | tr '[:upper:]' '[:lower:]')"
case "$(uname -m)" in x86_64) arch=amd64 ;; aarch64|arm64) arch=arm64 ;; *) arch="$(uname -m)" ;; esac
name="kubectl-scalardb-graphql_${version}_${os}_${arch}"
stage="$(mktemp -d)"; trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/scripts" "$out"
cp "$binary" "$stage/bin/kubectl-scalardb_graphql"
cp "$root/LICENSE" "$root/README.md" "$root/plugin.yaml" "$stage/"
cp "$root/scripts/helm-plugin-install.sh" "$stage/scripts/"
# Reproducible: fixed order, owner and time.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='2026-01-01 00:00Z' -C "$stage" -czf "$out/$name.tar.gz" .
echo "$out/$name.tar.gz"
