# platforms.sh: the one table of a release's platforms, sourced by the dist
# scripts (dist.sh, dist-tools.sh, dist-check.sh, krew-manifest.sh).
#   PLATFORMS             every platform a release has, as os/arch
#   rust_target PLATFORM  its Rust target; any other platform is named with the
#                         known ones, and returns 2
#   exe PLATFORM          the binary's name in the archive (.exe on Windows, as
#                         krew and Windows require)
#   archive_platform FILE the os/arch an archive's name says it is for
PLATFORMS=(linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64)

rust_target() {
  case "$1" in
    linux/amd64) echo x86_64-unknown-linux-gnu ;;
    linux/arm64) echo aarch64-unknown-linux-gnu ;;
    darwin/amd64) echo x86_64-apple-darwin ;;
    darwin/arm64) echo aarch64-apple-darwin ;;
    windows/amd64) echo x86_64-pc-windows-gnu ;;
    *) echo "$(basename "$0"): unknown platform $1; use one of ${PLATFORMS[*]}" >&2
       return 2 ;;
  esac
}

exe() { case "$1" in windows/*) echo kubectl-scalardb_graphql.exe ;; *) echo kubectl-scalardb_graphql ;; esac; }

# kubectl-scalardb-graphql_vX.Y.Z_<os>_<arch>.tar.gz -> <os>/<arch>
archive_platform() {
  local name; name="$(basename "$1" .tar.gz)"
  name="${name#kubectl-scalardb-graphql_v*_}"
  echo "${name/_//}"
}
