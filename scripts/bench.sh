#!/usr/bin/env bash
# bench.sh BINARY: the figures of `make bench` (see bench/run.py), on the rig.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck disable=SC1091
source "$root/.rig/env"
command -v jq >/dev/null || { apt-get update -qq && apt-get install -y -qq jq >/dev/null; }
exec "$RIG_PYTHON" "$root/bench/run.py" "$1"
