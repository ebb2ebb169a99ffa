#!/usr/bin/env bash
# krew-manifest.sh DISTDIR BASEURL: the krew manifest for the archives in
# DISTDIR, rendered from the template krew/scalardb-graphql.yaml, which
# krew-release-bot renders the same way for krew-index:
#   {{ .TagName }}                     the tag, v<the version in Cargo.toml>
#   {{addURIAndSha "URL" .TagName }}   `uri:` and `sha256:` of the archive URL
#                                      names (its {{ .TagName }} filled in),
#                                      here BASEURL/<archive> and the sha256 of
#                                      DISTDIR/<archive>
# Any other {{ }} in the template is an error. A platform whose archive is not
# in DISTDIR is left out (PLATFORMS= builds); an archive of DISTDIR that the
# template does not name, or under another os/arch, is an error.
set -euo pipefail
# A failure inside $(…) fails the assignment too.
shopt -s inherit_errexit
dist="$1"; base="$2"
root="$(cd "$(dirname "$0")/.." && pwd)"
. "$root/scripts/platforms.sh"
version="v$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)"
archives=("$dist"/kubectl-scalardb-graphql_"${version}"_*.tar.gz)
[ -e "${archives[0]}" ] || { echo "krew-manifest.sh: no ${version} archive in $dist; run make dist" >&2; exit 1; }
# Each archive as NAME=OS/ARCH=SHA256 (platforms.sh reads the platform from the name).
args=()
for archive in "${archives[@]}"; do
  args+=("$(basename "$archive")=$(archive_platform "$archive")=$(sha256sum "$archive" | cut -d' ' -f1)")
done

python3 - "$root/krew/scalardb-graphql.yaml" "$version" "$base" "${args[@]}" <<'PY'
import re, sys

template_file, tag, base, *archives = sys.argv[1:]
have = {}
for a in archives:
    name, platform, sha = a.split("=")
    have[name] = (platform, sha)

def fail(msg):
    sys.exit(f"krew-manifest.sh: {template_file}: {msg}")

TAG = re.compile(r"\{\{\s*\.TagName\s*\}\}")
CALL = re.compile(r'^(\s*)\{\{\s*addURIAndSha\s+"([^"]*)"\s+\.TagName\s*\}\}\s*$')

lines = open(template_file).read().splitlines()
at = next((i for i, l in enumerate(lines) if re.fullmatch(r"\s*platforms:\s*", l)), None)
if at is None:
    fail("no platforms:")
# The platforms list: items at the indentation of its first "- ", up to the first line less indented.
item_indent = len(lines[at + 1]) - len(lines[at + 1].lstrip()) if at + 1 < len(lines) else -1
if at + 1 >= len(lines) or not lines[at + 1].lstrip().startswith("- "):
    fail("platforms: is not followed by a list")
items, end = [], at + 1
for i in range(at + 1, len(lines)):
    line = lines[i]
    indent = len(line) - len(line.lstrip())
    if line.strip() and indent < item_indent or (indent == item_indent and not line.lstrip().startswith("- ")):
        break
    if indent == item_indent and line.lstrip().startswith("- "):
        items.append([])
    items[-1].append(line)
    end = i + 1

def field(item, key):
    m = [re.match(rf"\s*{key}:\s*(\S+)\s*$", l) for l in item]
    m = [x.group(1) for x in m if x]
    return m[0] if len(m) == 1 else None

out_items, named = [], set()
for item in items:
    calls = [(k, CALL.match(l)) for k, l in enumerate(item) if "addURIAndSha" in l]
    if len(calls) != 1 or not calls[0][1]:
        fail(f"each platform needs one line {{{{addURIAndSha \"URL\" .TagName }}}}:\n" + "\n".join(item))
    k, m = calls[0]
    indent, url = m.group(1), TAG.sub(tag, m.group(2))
    name = url.rsplit("/", 1)[-1]
    named.add(name)
    if name not in have:
        print(f"krew-manifest.sh: no {name} in the dist directory; its platform is left out", file=sys.stderr)
        continue
    platform, sha = have[name]
    said = f"{field(item, 'os')}/{field(item, 'arch')}"
    if said != platform:
        fail(f"{name} is the archive for {platform}, but its selector says {said}")
    # As krew-release-bot writes it: uri, then sha256 on a line of the same indentation.
    item[k] = f"{indent}uri: {base}/{name}\n{indent}sha256: {sha}"
    out_items.append(item)

extra = sorted(set(have) - named)
if extra:
    fail(f"names no platform for {', '.join(extra)}; add it to the template")
if not out_items:
    fail("none of its platforms has an archive in the dist directory")
text = "\n".join(lines[: at + 1] + [l for item in out_items for l in item] + lines[end:]) + "\n"
text = TAG.sub(tag, text)
left = re.search(r"\{\{.*?\}\}", text)
if left:
    fail(f"{left.group(0)} is not a placeholder this renders (only .TagName and addURIAndSha)")
sys.stdout.write(text)
PY
