#!/usr/bin/env bash
# dist-helm.sh DISTDIR: for each release archive in DISTDIR, the Helm plugin
# tarball scalardb-graphql-<version>-<os>-<arch>.tgz (the archive's files
# under scalardb-graphql/, the name Helm takes the plugin's from) and its
# provenance file (.tgz.prov: Helm's format, clear-signed with gpg), and
# DISTDIR/scalardb-graphql-signing-key.asc, the public key. Helm 4 then
# verifies each tarball against that key (`helm plugin verify`), as
# `helm plugin install` does.
#
#   SIGNING_KEY              the key to sign with (fingerprint or user id), in
#                            GNUPGHOME (the release workflow imports it there)
#   SIGNING_PASSPHRASE_FILE  its passphrase, if it has one
#   DIST_GZIP_LEVEL          gzip's level, 1 to 9 (default: 9), as for dist.sh
#   Without SIGNING_KEY: a throw-away key, made once (no passphrase) in its own
#   GNUPGHOME under ~/.cache/kubectl-scalardb-graphql/signing-test-key: for
#   local builds, never for a release.
#
# Not `helm plugin package --sign`: it names the tarball <name>-<version>.tgz,
# one for every platform, and a .prov is valid only under the file name it
# was signed for.
set -euo pipefail
# A failure inside $(…) fails the assignment too.
shopt -s inherit_errexit
root="$(cd "$(dirname "$0")/.." && pwd)"
dist="$(cd "$1" && pwd)"
. "$root/scripts/platforms.sh"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)"
level="${DIST_GZIP_LEVEL:-9}"
case "$level" in [1-9]) ;; *) echo "dist-helm.sh: DIST_GZIP_LEVEL is 1 to 9, not $level" >&2; exit 2 ;; esac
pubkey="$dist/scalardb-graphql-signing-key.asc"
work="$(mktemp -d)"
own_home=""
cleanup() {
  # Stop the gpg-agent this script started for its own throw-away key.
  [ -z "$own_home" ] || GNUPGHOME="$own_home" gpgconf --kill gpg-agent 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

plugin_version="$(sed -n 's/^version: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$root/plugin.yaml")"
[ "$plugin_version" = "$version" ] ||
  { echo "dist-helm.sh: plugin.yaml says version $plugin_version, Cargo.toml $version" >&2; exit 1; }
command -v gpg >/dev/null || { echo "dist-helm.sh: gpg is missing (Debian's gnupg)" >&2; exit 1; }

if [ -z "${SIGNING_KEY:-}" ]; then
  own_home="${XDG_CACHE_HOME:-$HOME/.cache}/kubectl-scalardb-graphql/signing-test-key"
  export GNUPGHOME="$own_home"
  if ! gpg --batch --quiet --list-secret-keys 2>/dev/null | grep -q '^sec'; then
    mkdir -p "$GNUPGHOME" && chmod 0700 "$GNUPGHOME"
    gpg --batch --quiet --pinentry-mode loopback --passphrase '' --quick-generate-key \
      "kubectl-scalardb-graphql local build (throw-away key) <local-build@example.invalid>" rsa3072 sign never
  fi
  SIGNING_KEY="$(gpg --batch --quiet --list-secret-keys --with-colons 2>/dev/null | awk -F: '$1 == "fpr" {print $10; exit}')"
  echo "dist-helm.sh: SIGNING_KEY is not set: signing with the throw-away key $SIGNING_KEY ($GNUPGHOME)" >&2
fi
sign=(gpg --batch --yes --local-user "$SIGNING_KEY" --digest-algo SHA256)
if [ -n "${SIGNING_PASSPHRASE_FILE:-}" ]; then
  sign+=(--pinentry-mode loopback --passphrase-file "$SIGNING_PASSPHRASE_FILE")
fi
gpg --batch --armor --export "$SIGNING_KEY" >"$pubkey"
[ -s "$pubkey" ] || { echo "dist-helm.sh: no public key for $SIGNING_KEY in ${GNUPGHOME:-~/.gnupg}" >&2; exit 1; }

# Helm 4 itself checks what is signed here: the rig's, or built once (rig/tools.py's pin and cache).
helm4="$(python3 - "$root/rig" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
import tools
print(tools.ensure(["helm4"])["helm4"])
PY
)"

archives=("$dist"/kubectl-scalardb-graphql_v"${version}"_*.tar.gz)
[ -e "${archives[0]}" ] || { echo "dist-helm.sh: no v${version} archive in $dist; run make dist" >&2; exit 1; }
for archive in "${archives[@]}"; do
  platform="$(archive_platform "$archive")"
  name="scalardb-graphql-${version}-${platform/\//-}.tgz"
  stage="$work/${platform/\//-}"
  mkdir -p "$stage/scalardb-graphql"
  tar -xzf "$archive" -C "$stage/scalardb-graphql"
  # As dist.sh packs the archive: fixed order, owner, modes and time.
  tar --sort=name --owner=0 --group=0 --numeric-owner --mode='go-w' --mtime='2026-01-01 00:00Z' \
    -C "$stage" -cf - scalardb-graphql | gzip -n "-$level" >"$dist/$name"
  sha="$(sha256sum "$dist/$name" | cut -d' ' -f1)"
  # Helm's provenance: the plugin's metadata, "...", then the files' sha256s. Helm 4 checks
  # the entry of the name it installs from, and `helm plugin list` the name it keeps the
  # tarball under (<name>-<version>.tgz): both are listed, for the same bytes.
  {
    grep -v '^#' "$stage/scalardb-graphql/plugin.yaml"
    printf '\n...\nfiles:\n  %s: sha256:%s\n  %s: sha256:%s\n' "$name" "$sha" "scalardb-graphql-${version}.tgz" "$sha"
  } >"$work/$name.message"
  "${sign[@]}" --clearsign --output "$dist/$name.prov" "$work/$name.message"
  "$helm4" plugin verify --keyring "$pubkey" "$dist/$name" >"$work/verify.log" 2>&1 ||
    { echo "dist-helm.sh: helm 4 does not verify $name:" >&2; cat "$work/verify.log" >&2; exit 1; }
  echo "dist-helm.sh: $name signed by $SIGNING_KEY, verified by helm $("$helm4" version --template '{{.Version}}')"
done
