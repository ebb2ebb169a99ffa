#!/usr/bin/env bash
# dist-tools.sh [PLATFORM...]: installs what `make dist` needs to build and
# check the platforms' archives (default: all five) from a Linux amd64
# machine, and prints the directory to put first on PATH. Idempotent; kept
# under ~/.cache between runs.
#   - rustup targets for the five platforms
#   - zig and cargo-zigbuild (a Python venv): the linker for Linux (glibc 2.17)
#     and macOS
#   - mingw-w64: the linker for Windows
#   - qemu-user and arm64 glibc: run the linux/arm64 binary; wine: the Windows one
#   - LLVM's object tools, to read the binaries' headers
set -euo pipefail
# A failure inside $(…) fails the assignment too.
shopt -s inherit_errexit
ZIG_VERSION=0.15.2
ZIGBUILD_VERSION=0.24.1
cache="${XDG_CACHE_HOME:-$HOME/.cache}/kubectl-scalardb-graphql/dist-tools"
venv="$cache/venv-zig-$ZIG_VERSION-zigbuild-$ZIGBUILD_VERSION"
. "$(dirname "$0")/platforms.sh"
[ $# -gt 0 ] || set -- "${PLATFORMS[@]}"
targets=() packages=()
for platform in "$@"; do
  platform="${platform%%=*}"
  targets+=("$(rust_target "$platform")")
  # What links and runs each platform's binary here, beyond zig.
  case "$platform" in
    linux/arm64) packages+=(qemu-user libc6-arm64-cross) ;;
    windows/*) packages+=(gcc-mingw-w64-x86-64); [ "${DIST_WINE:-1}" = 1 ] && packages+=(wine64) ;;
  esac
done
# dist-check.sh reads ELF, Mach-O and PE headers with LLVM's tools.
command -v llvm-readobj >/dev/null || command -v llvm-readobj-14 >/dev/null || packages+=(llvm)

log() { echo "dist-tools: $*" >&2; }

missing_targets=()
installed="$(rustup target list --installed)"
for t in "${targets[@]}"; do grep -qx "$t" <<<"$installed" || missing_targets+=("$t"); done
if [ ${#missing_targets[@]} -gt 0 ]; then
  log "rustup target add ${missing_targets[*]}"
  rustup target add "${missing_targets[@]}" >&2
fi

missing_packages=()
for p in ${packages[@]+"${packages[@]}"}; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing_packages+=("$p"); done
if [ ${#missing_packages[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  log "apt-get install ${missing_packages[*]}"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing_packages[@]}" >/dev/null
fi

if [ ! -x "$venv/bin/cargo-zigbuild" ] || [ ! -x "$venv/bin/python-zig" ]; then
  log "ziglang $ZIG_VERSION and cargo-zigbuild $ZIGBUILD_VERSION into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "ziglang==$ZIG_VERSION" "cargo-zigbuild==$ZIGBUILD_VERSION" >&2
fi
# cargo-zigbuild finds zig as `python -m ziglang` when no zig is on PATH.
echo "$venv/bin"
