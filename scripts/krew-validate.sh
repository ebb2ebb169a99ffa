#!/usr/bin/env bash
# krew-validate.sh DISTDIR: validates the krew manifest of DISTDIR's archives
# with krew's validate-krew-manifest, which installs every platform's archive
# (downloaded, sha256 checked, unpacked, its bin found). The archives are
# served from 127.0.0.1 for it; the published manifest differs only in the
# base of each uri.
set -euo pipefail
# A failure inside $(…) fails the assignment too.
shopt -s inherit_errexit
root="$(cd "$(dirname "$0")/.." && pwd)"
dist="$(cd "$1" && pwd)"
work="$(mktemp -d)"
# It runs `kubectl krew install` for each platform: the rig's kubectl and krew, first on PATH.
mkdir -p "$work/bin"
while IFS=$'\t' read -r name path; do ln -s "$path" "$work/bin/$name"; done < <(python3 "$root/rig/tools.py" krew)
export PATH="$work/bin:$PATH" KREW_ROOT="$work/krew"
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# A static file server on a free loopback port, announcing the port once bound.
python3 - "$dist" >"$work/port" 2>"$work/server.log" <<'PY' &
import functools, http.server, sys
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
print(server.server_address[1], flush=True)
server.serve_forever()
PY
server=$!
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.05; done
port="$(cat "$work/port")"
[ -n "$port" ] || { echo "krew-validate.sh: the file server did not start: $(cat "$work/server.log")" >&2; exit 1; }

# validate-krew-manifest wants the file named after the plugin.
"$root/scripts/krew-manifest.sh" "$dist" "http://127.0.0.1:$port" >"$work/scalardb-graphql.yaml"
platforms="$(grep -c 'os: ' "$work/scalardb-graphql.yaml")"
validate-krew-manifest -manifest "$work/scalardb-graphql.yaml" >&2
echo "krew-validate.sh: the manifest validates, and each of its $platforms platforms installs"
