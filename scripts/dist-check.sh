#!/usr/bin/env bash
# dist-check.sh ARCHIVE...: checks each release archive's contents and binary
# on this Linux amd64 machine, one line per check, and exits 1 on the first
# that fails.
#   linux/amd64    runs `version --client`; needs glibc 2.17 at most
#   linux/arm64    an AArch64 ELF; runs `version --client` under qemu-aarch64
#   darwin/*       a Mach-O executable for the platform's CPU, for macOS 10.12
#                  (amd64) or 11.0 (arm64) and later, that loads only
#                  libraries every macOS has under /usr/lib (no framework);
#                  its code signature (ad-hoc; Apple silicon requires one)
#                  matches every page (scripts/macho-signature.py); it
#                  cannot be run here
#   windows/amd64  a PE32+ console executable for x86-64 importing only
#                  Windows' own DLLs; runs `version --client` under wine
#                  (DIST_WINE=0: headers and imports only)
set -euo pipefail
# A failure inside $(…) fails the assignment too.
shopt -s inherit_errexit
root="$(cd "$(dirname "$0")/.." && pwd)"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)"
. "$root/scripts/platforms.sh"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT

fail() { echo "dist-check: FAIL $*" >&2; exit 1; }
ok() { echo "dist-check: ok   $*"; }

[ $# -gt 0 ] || fail "no archive to check; run make dist"
readobj="$(command -v llvm-readobj || command -v llvm-readobj-14)" || fail "no llvm-readobj (scripts/dist-tools.sh installs llvm)"
objdump="$(command -v llvm-objdump || command -v llvm-objdump-14)" || fail "no llvm-objdump (scripts/dist-tools.sh installs llvm)"

# The glibc symbol versions an ELF needs, at most 2.17 (the oldest distribution kubectl users still run).
glibc_at_most_2_17() {
  local need
  need="$("$objdump" -T "$1" | { grep -o 'GLIBC_[0-9.]*' || true; } | sort -u -t. -k2,2n -k3,3n | tail -1)"
  [ -n "$need" ] || fail "$2: no glibc symbol versions found"
  printf '%s\n%s\n' "$need" GLIBC_2.17 | sort -C -t. -k2,2n -k3,3n || fail "$2: needs $need, above GLIBC_2.17"
  ok "$2: needs $need at most"
}

says_version() {
  grep -q "kubectl-scalardb-graphql $version" <<<"$1" || fail "$2: \`version --client\` said: $1"
  ok "$2: \`version --client\` runs ($3)"
}

for archive in "$@"; do
  base="$(basename "$archive" .tar.gz)"
  platform="$(archive_platform "$archive")"; exe="$(exe "$platform")"
  dir="$work/$base"; mkdir -p "$dir"
  tar -xzf "$archive" -C "$dir"
  for f in "bin/$exe" LICENSE README.md docs/commands.md plugin.yaml scripts/helm-plugin-install.sh; do
    [ -f "$dir/$f" ] || fail "$base: $f is missing"
  done
  bin="$dir/bin/$exe"
  ok "$base: holds bin/$exe, LICENSE, README.md, docs/, plugin.yaml ($(du -k "$archive" | cut -f1) KiB)"
  case "$platform" in
    linux/amd64)
      "$readobj" --file-headers "$bin" | grep -q 'Machine: EM_X86_64' || fail "$base: not an x86-64 ELF"
      glibc_at_most_2_17 "$bin" "$base"
      said="$("$bin" version --client 2>&1)" || fail "$base: \`version --client\` failed: $said"
      says_version "$said" "$base" native
      ;;
    linux/arm64)
      "$readobj" --file-headers "$bin" | grep -q 'Machine: EM_AARCH64' || fail "$base: not an AArch64 ELF"
      glibc_at_most_2_17 "$bin" "$base"
      command -v qemu-aarch64 >/dev/null || fail "$base: qemu-aarch64 is missing (scripts/dist-tools.sh installs it)"
      said="$(qemu-aarch64 -L /usr/aarch64-linux-gnu "$bin" version --client 2>&1)" ||
        fail "$base: under qemu-aarch64, \`version --client\` failed: $said"
      says_version "$said" "$base" "qemu-aarch64"
      ;;
    darwin/*)
      cpu=X86_64; [ "${platform#*/}" = arm64 ] && cpu=ARM64
      headers="$("$objdump" --macho --private-headers "$bin")"
      grep -Eq "MH_MAGIC_64 +$cpu .* EXECUTE" <<<"$headers" || fail "$base: not a Mach-O $cpu executable"
      libs="$(awk '/cmd LC_LOAD_DYLIB|cmd LC_LOAD_WEAK_DYLIB/ {getline; getline; print $2}' <<<"$headers")"
      [ -n "$libs" ] || fail "$base: loads no library (libSystem expected)"
      while read -r lib; do
        case "$lib" in
          /usr/lib/libSystem.B.dylib | /usr/lib/libiconv.2.dylib | /usr/lib/libcharset.1.dylib | /usr/lib/libresolv.9.dylib) ;;
          *) fail "$base: loads $lib, which is not a library every macOS has" ;;
        esac
      done <<<"$libs"
      minos="$(awk '/cmd LC_BUILD_VERSION/ {b=1} b && $1 == "minos" {print $2; exit} /cmd LC_VERSION_MIN_MACOSX/ {v=1} v && $1 == "version" {print $2; exit}' <<<"$headers")"
      want=10.12; [ "$cpu" = ARM64 ] && want=11.0
      [ "$minos" = "$want" ] || fail "$base: made for macOS $minos and later, not $want"
      ok "$base: Mach-O $cpu executable for macOS $minos and later, loading only $(tr '\n' ' ' <<<"$libs")"
      # Apple silicon runs only signed code; a signature (ad-hoc, from the linker) must match every page.
      if [ "$cpu" = ARM64 ] || grep -q 'cmd LC_CODE_SIGNATURE' <<<"$headers"; then
        said="$("$root/scripts/macho-signature.py" "$bin")" || fail "$base: $said"
        ok "$base: $said"
      fi
      ;;
    windows/amd64)
      headers="$("$readobj" --file-headers "$bin")"
      grep -q 'Machine: IMAGE_FILE_MACHINE_AMD64' <<<"$headers" || fail "$base: not an x86-64 PE"
      grep -q 'Magic: 0x20B' <<<"$headers" || fail "$base: not PE32+"
      grep -q 'Subsystem: IMAGE_SUBSYSTEM_WINDOWS_CUI' <<<"$headers" || fail "$base: not a console program"
      dlls="$("$readobj" --coff-imports "$bin" | awk '/^  Name: / {print tolower($2)}' | sort -u)"
      while read -r dll; do
        case "$dll" in
          kernel32.dll | ntdll.dll | advapi32.dll | ws2_32.dll | bcrypt.dll | bcryptprimitives.dll | userenv.dll | \
            msvcrt.dll | secur32.dll | crypt32.dll | shell32.dll | ole32.dll | oleaut32.dll | iphlpapi.dll | \
            api-ms-win-*.dll) ;;
          *) fail "$base: imports $dll, which Windows does not have" ;;
        esac
      done <<<"$dlls"
      ok "$base: PE32+ x86-64 console program importing only $(tr '\n' ' ' <<<"$dlls")"
      if [ "${DIST_WINE:-1}" = 1 ]; then
        # Debian's wine64 package keeps the loader off PATH.
        wine="$(command -v wine64 || ls /usr/lib/wine/wine64 2>/dev/null)" ||
          fail "$base: wine64 is missing (scripts/dist-tools.sh installs it; DIST_WINE=0 skips the run)"
        # wine 8 has no bcryptprimitives.dll, whose ProcessPrng Rust's std imports:
        # a stand-in next to the program (found first) answers it.
        x86_64-w64-mingw32-gcc -O2 -shared -o "$dir/bin/bcryptprimitives.dll" "$root/scripts/wine/processprng.c" -lbcrypt ||
          fail "$base: cannot build the bcryptprimitives.dll stand-in (x86_64-w64-mingw32-gcc)"
        export WINEPREFIX="${XDG_CACHE_HOME:-$HOME/.cache}/kubectl-scalardb-graphql/dist-tools/wineprefix"
        said="$(WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml=" "$wine" "$bin" version --client 2>&1 | tr -d '\r')" ||
          fail "$base: under wine, \`version --client\` failed: $said"
        says_version "$said" "$base" "wine $("$wine" --version 2>/dev/null | sed 's/^wine-//')"
      fi
      ;;
    *) fail "$base: unknown platform $platform" ;;
  esac
done
