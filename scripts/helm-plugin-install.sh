#!/bin/sh
# Helm plugin install hook: make $HELM_PLUGIN_DIR/bin/kubectl-scalardb_graphql exist.
# A release archive already carries it; a checkout links the binary found on
# PATH (e.g. installed through krew or built with cargo), or builds one.
set -eu
dir="${HELM_PLUGIN_DIR:?helm sets HELM_PLUGIN_DIR}"
bin="$dir/bin/kubectl-scalardb_graphql"
[ -x "$bin" ] && exit 0
mkdir -p "$dir/bin"
if found="$(command -v kubectl-scalardb_graphql 2>/dev/null)"; then
  ln -sf "$found" "$bin"
  echo "scalardb-graphql: using $found"
elif command -v cargo >/dev/null 2>&1 && [ -f "$dir/Cargo.toml" ]; then
  echo "scalardb-graphql: building the plugin with cargo (this takes a while)"
  cargo build --release --manifest-path "$dir/Cargo.toml" --target-dir "$dir/target"
  ln -sf "$dir/target/release/kubectl-scalardb_graphql" "$bin"
else
  echo "scalardb-graphql: no kubectl-scalardb_graphql on PATH and no cargo to build it;" >&2
  echo "install it first (kubectl krew install scalardb-graphql), then re-run helm plugin install" >&2
  exit 1
fi
