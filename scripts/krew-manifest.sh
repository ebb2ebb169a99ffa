#!/usr/bin/env bash
# krew-manifest.sh DISTDIR BASEURL: the krew manifest for the archives in
# DISTDIR (one platform each), each with its sha256, downloadable at
# BASEURL/<archive>. Windows' binary ends in .exe, as krew requires there.
set -euo pipefail
# A failure inside $(…) fails the assignment too.
shopt -s inherit_errexit
dist="$1"; base="$2"
root="$(cd "$(dirname "$0")/.." && pwd)"
. "$root/scripts/platforms.sh"
version="v$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)"
cat <<YAML
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: scalardb-graphql
spec:
  version: ${version}
  homepage: https://github.com/kubectl-scalardb-graphql/kubectl-scalardb-graphql
  shortDescription: Deploy ScalarDB GraphQL on EKS behind a sticky internal ALB
  description: |
    Turns the ScalarDB GraphQL deployment guide for AWS EKS into three commands:
    install (IRSA for the AWS Load Balancer Controller, its chart, subnet tags,
    dedicated nodes, registry and database secrets, the scalardb-graphql chart,
    then waits for a cookie-sticky internal ALB), status (one checklist that
    proves a transaction stays on one pod) and uninstall (undoes exactly what
    install did, in the order that leaks no ALB).
  platforms:
YAML
archives=("$dist"/kubectl-scalardb-graphql_"${version}"_*.tar.gz)
[ -e "${archives[0]}" ] || { echo "krew-manifest.sh: no ${version} archive in $dist; run make dist" >&2; exit 1; }
for archive in "${archives[@]}"; do
  file="$(basename "$archive")"
  platform="$(archive_platform "$file")"; exe="$(exe "$platform")"
  cat <<YAML
  - selector:
      matchLabels:
        os: ${platform%/*}
        arch: ${platform#*/}
    uri: ${base}/${file}
    sha256: $(sha256sum "$archive" | cut -d' ' -f1)
    files:
    - from: bin/${exe}
      to: .
    - from: LICENSE
      to: .
    bin: ${exe}
YAML
done
