#!/usr/bin/env bash
# demo.sh BINARY: install ScalarDB GraphQL on the local rig, then check it.
# The rig stands in for EKS and AWS (see rig/): the charts come from its
# local repository, the IAM policy from its pinned URL through the rig's
# proxy (the rig's only page of the internet, sha256-checked by the plugin),
# and the probe runs from a Pod the rig's pod runner really runs, inside the
# rig's VPC.
set -euo pipefail
bin="$1"
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck disable=SC1091
source "$root/.rig/env"
plugin="$(mktemp -d)"; trap 'rm -rf "$plugin"' EXIT
ln -s "$bin" "$plugin/kubectl-scalardb_graphql"
export PATH="$plugin:$PATH"
# Demo credentials, handed over the way the plugin accepts secrets: never as flag values.
export DEMO_REGISTRY_TOKEN=ghp_demo_token DEMO_DB_PASSWORD=demo-password

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
say "kubectl scalardb-graphql install ..."
kubectl scalardb-graphql install -y \
  --namespaces sample \
  --registry-username demo --registry-password-env DEMO_REGISTRY_TOKEN \
  --db-username scalar --db-password-env DEMO_DB_PASSWORD \
  --lbc-chart-repo "$RIG_CHART_REPO_URL" --chart-repo "$RIG_CHART_REPO_URL"
say "kubectl scalardb-graphql status"
kubectl scalardb-graphql status
printf '\nThe rig keeps running: `source .rig/env` to look around, `kubectl scalardb-graphql uninstall` to undo, `make rig-down` to stop it.\n'
