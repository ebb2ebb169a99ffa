#!/usr/bin/env bash
# dist.sh OUTDIR [PLATFORM[=BINARY]]...: release archives, one per platform
# (default: all five), each holding bin/kubectl-scalardb_graphql (.exe on
# Windows), LICENSE, README.md, docs/ and the helm plugin files: krew installs it,
# and dist-helm.sh repacks it as the signed Helm plugin tarball. Prints each archive's path.
#
#   PLATFORM  linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64
#   =BINARY   package this binary instead of building one
#   DIST_PROFILE  the cargo profile to build with (default: release)
#   DIST_GZIP_LEVEL  gzip's level, 1 to 9 (default: 9, what a release ships; the
#                    tests pack the 100 MB debug binary at 1: the same files, sooner)
#
# Builds run one after another, on this Linux amd64 machine: cargo-zigbuild
# (zig as the linker) for Linux, against glibc 2.17, and for macOS; cargo with
# mingw-w64 for Windows. scripts/dist-tools.sh installs all of it.
set -euo pipefail
# A failure inside $(…) fails the assignment too.
shopt -s inherit_errexit
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$1"; shift
. "$root/scripts/platforms.sh"
[ $# -gt 0 ] || set -- "${PLATFORMS[@]}"
profile="${DIST_PROFILE:-release}"
version="v$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
level="${DIST_GZIP_LEVEL:-9}"
case "$level" in [1-9]) ;; *) echo "dist.sh: DIST_GZIP_LEVEL is 1 to 9, not $level" >&2; exit 2 ;; esac

tools=""
build() {
  local platform="$1" target; target="$(rust_target "$platform")"
  if [ -z "$tools" ]; then tools="$("$root/scripts/dist-tools.sh" "${platforms[@]}")"; fi
  local dir; dir="$([ "$profile" = dev ] && echo debug || echo "$profile")"
  echo "dist.sh: building $platform ($target, profile $profile)" >&2
  local started=$SECONDS
  case "$platform" in
    linux/*) PATH="$tools:$PATH" cargo zigbuild --locked --profile "$profile" --target "$target.2.17" --manifest-path "$root/Cargo.toml" >&2 ;;
    # The oldest macOS Rust supports on each CPU (zig alone would say 13.0).
    darwin/arm64) MACOSX_DEPLOYMENT_TARGET=11.0 PATH="$tools:$PATH" \
                    cargo zigbuild --locked --profile "$profile" --target "$target" --manifest-path "$root/Cargo.toml" >&2 ;;
    darwin/amd64) MACOSX_DEPLOYMENT_TARGET=10.12 PATH="$tools:$PATH" \
                    cargo zigbuild --locked --profile "$profile" --target "$target" --manifest-path "$root/Cargo.toml" >&2 ;;
    windows/*) CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc \
                 cargo build --locked --profile "$profile" --target "$target" --manifest-path "$root/Cargo.toml" >&2 ;;
  esac
  echo "dist.sh: built $platform in $((SECONDS - started)) s" >&2
  echo "$target_dir/$target/$dir/$(exe "$platform")"
}

platforms=("$@")
mkdir -p "$out"
for spec in "$@"; do
  platform="${spec%%=*}"
  rust_target "$platform" >/dev/null || exit 2
  if [ "$spec" != "$platform" ]; then binary="${spec#*=}"; else binary="$(build "$platform")"; fi
  [ -f "$binary" ] || { echo "dist.sh: no binary at $binary for $platform" >&2; exit 1; }
  name="kubectl-scalardb-graphql_${version}_${platform%/*}_${platform#*/}"
  stage="$(mktemp -d)"
  trap 'rm -rf "$stage"' EXIT
  mkdir -p "$stage/bin" "$stage/scripts"
  cp "$binary" "$stage/bin/$(exe "$platform")"
  chmod 0755 "$stage/bin/$(exe "$platform")"
  cp "$root/LICENSE" "$root/README.md" "$root/plugin.yaml" "$stage/"
  cp -r "$root/docs" "$stage/docs"
  cp "$root/scripts/helm-plugin-install.sh" "$stage/scripts/"
  # Reproducible: fixed order, owner, modes and time. No "./" entry: Helm 3
  # makes each directory entry's directory anew, and its own already exists.
  tar --sort=name --owner=0 --group=0 --numeric-owner --mode='go-w' --mtime='2026-01-01 00:00Z' \
    -C "$stage" -cf - LICENSE README.md bin docs plugin.yaml scripts | gzip -n "-$level" > "$out/$name.tar.gz"
  rm -rf "$stage"
  echo "$out/$name.tar.gz"
done
