"""Builds or installs every tool the rig runs, into a cache keyed by versions.

Everything comes from the package registries this machine reaches: the Go
module proxy (control plane, kwok, helm, krew), PyPI (moto, the AWS CLI),
the npm registry (the controller's IAM policy document, which the AWS CDK's
library carries) and Debian (HAProxy, strace). A tool whose versioned directory already holds its
binaries is not built again, so a warm machine starts in seconds.
"""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

CACHE = Path(os.environ.get("RIG_CACHE", Path.home() / ".cache" / "scalardb-graphql-rig"))

KUBERNETES = "v1.35.4"
ETCD = "v3.6.16"
KWOK = "v0.8.0"
HELM3 = "v3.22.0"
HELM4 = "v4.3.1"
KREW = "v0.4.3"
MOTO = "5.2.5"
AWSCLI = "1.46.3"
PY_KUBERNETES = "35.0.0"
# The AWS CDK's library carries the controller's IAM policy documents; v3.2.2's is byte for byte the
# v3.5.0 document the plugin pins (its sha256 is checked against src/pins.rs before it is used).
CDK = "2.278.0"
CDK_POLICY = "package/aws-eks/lib/addons/alb-iam_policy-v3.2.2.json"
ROOT = Path(__file__).resolve().parent.parent

KUBE_COMMANDS = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"]


def log(msg):
    print(f"rig: {msg}", file=sys.stderr, flush=True)


def go_env():
    env = dict(os.environ)
    # No DWARF: the binaries are stripped (-s -w), so the compiler need not write it either.
    env.update(GOTOOLCHAIN="local", CGO_ENABLED="0", GOFLAGS="-buildvcs=false -gcflags=all=-dwarf=false")
    return env


def run(cmd, cwd=None, env=None):
    subprocess.run(cmd, cwd=cwd, env=env or go_env(), check=True)


def done(directory, names):
    return (directory / ".complete").is_file() and all((directory / n).is_file() for n in names)


def timed(name, directory, names, build):
    """Runs `build` unless `directory` already holds every binary in `names`.
    A build that stops half-way leaves no `.complete` marker and is redone."""
    if done(directory, names):
        return directory
    log(f"building {name} into {directory} (once per version)")
    started = time.monotonic()
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    build(directory)  # in place: a Python venv cannot be moved after it is made
    (directory / ".complete").write_text(f"{time.monotonic() - started:.0f}s\n")
    log(f"built {name} in {time.monotonic() - started:.0f}s")
    return directory


def staging_modules(version):
    """Reads the staging modules that k8s.io/kubernetes replaces onto ./staging."""
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{version}"],
        env=go_env(), check=True, capture_output=True, text=True).stdout
    gomod = Path(re.search(r'"GoMod":\s*"([^"]+)"', out).group(1)).read_text()
    return sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging", gomod, re.M)))


def build_kubernetes(out):
    """The kubernetes module cannot be `go install`ed (replaces onto ./staging):
    a wrapper module requires it and maps each staging module to its published tag."""
    minor = KUBERNETES.split(".")[1]
    staging = "v0." + KUBERNETES[len("v1."):]
    src = out / "src"
    src.mkdir()
    replaces = "\n".join(f"\t{m} => {m} {staging}" for m in staging_modules(KUBERNETES))
    (src / "go.mod").write_text(
        f"module rig/kubernetes\n\ngo 1.25.0\n\nrequire k8s.io/kubernetes {KUBERNETES}\n\n"
        f"replace (\n{replaces}\n)\n")
    imports = "\n".join(f'\t_ "k8s.io/kubernetes/cmd/{c}"' for c in KUBE_COMMANDS)
    (src / "tools.go").write_text(f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n")
    run(["go", "mod", "tidy"], cwd=src)
    stamp = " ".join([
        f"-X k8s.io/component-base/version.gitVersion={KUBERNETES}",
        "-X k8s.io/component-base/version.gitMajor=1",
        f"-X k8s.io/component-base/version.gitMinor={minor}",
        "-X k8s.io/component-base/version.gitTreeState=clean",
        f"-X k8s.io/client-go/pkg/version.gitVersion={KUBERNETES}",
        "-X k8s.io/client-go/pkg/version.gitMajor=1",
        f"-X k8s.io/client-go/pkg/version.gitMinor={minor}",
        "-s -w",
    ])
    run(["go", "build", "-trimpath", "-ldflags", stamp, "-o", str(out) + "/"]
        + [f"k8s.io/kubernetes/cmd/{c}" for c in KUBE_COMMANDS], cwd=src)
    shutil.rmtree(src)


def build_etcd(out):
    """etcd's server module has replaces too; a wrapper that requires it needs none."""
    src = out / "src"
    src.mkdir()
    (src / "go.mod").write_text(f"module rig/etcd\n\ngo 1.25.0\n\nrequire go.etcd.io/etcd/server/v3 {ETCD}\n")
    (src / "tools.go").write_text('//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n')
    run(["go", "mod", "tidy"], cwd=src)
    run(["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / "etcd"),
         "go.etcd.io/etcd/server/v3"], cwd=src)
    shutil.rmtree(src)


def go_install(*packages, rename=None, stamp=""):
    def build(out):
        env = go_env()
        env["GOBIN"] = str(out)
        for pkg in packages:
            run(["go", "install", "-trimpath", "-ldflags", f"-s -w {stamp}".strip(), pkg], env=env)
        for old, new in (rename or {}).items():
            (out / old).rename(out / new)
    return build


def python_venv(out):
    run([sys.executable, "-m", "venv", str(out / "venv")], env=dict(os.environ))
    run([str(out / "venv" / "bin" / "pip"), "install", "--quiet",
         f"moto[server]=={MOTO}", f"awscli=={AWSCLI}", f"kubernetes=={PY_KUBERNETES}"],
        env=dict(os.environ))


def debian(package, also=()):
    """A tool from Debian, installed system-wide once, then linked into the cache."""
    def install(out):
        if not shutil.which(package):
            log(f"installing {package} from Debian")
            subprocess.run(["apt-get", "update", "-qq"], check=True, stdout=sys.stderr)
            subprocess.run(["apt-get", "install", "-y", "-qq", package, *also], check=True, stdout=sys.stderr,
                           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
            if package == "haproxy":
                # The package starts a system service; the rig runs its own instance only.
                subprocess.run(["service", "haproxy", "stop"], capture_output=True)
        (out / package).symlink_to(shutil.which(package))
    return install


def pinned_policy():
    """(url, sha256) of the IAM policy document the plugin pins (IAM_POLICY in src/pins.rs)."""
    text = (ROOT / "src" / "pins.rs").read_text()
    block = re.search(r"pub const IAM_POLICY: PolicyPin = PolicyPin \{(.*?)\};", text, re.S).group(1)
    return re.search(r'url: "([^"]+)"', block).group(1), re.search(r'sha256: "([0-9a-f]{64})"', block).group(1)


def fetch_policy(out):
    """The pinned document, out of the CDK library's package, refused unless its sha256 is the pin's."""
    import hashlib
    import tarfile
    _, sha256 = pinned_policy()
    subprocess.run(["npm", "pack", f"aws-cdk-lib@{CDK}", "--pack-destination", str(out), "--silent"],
                   check=True, stdout=subprocess.DEVNULL)
    package = out / f"aws-cdk-lib-{CDK}.tgz"
    with tarfile.open(package) as tar:
        body = tar.extractfile(CDK_POLICY).read()
    package.unlink()
    if hashlib.sha256(body).hexdigest() != sha256:
        raise SystemExit(f"rig: {CDK_POLICY} of aws-cdk-lib {CDK} is not the pinned policy (sha256 {sha256})")
    (out / "iam_policy.json").write_bytes(body)


def plan():
    """Every tool: {key: (label, directory, the binaries it must hold, build)}. Nothing is built here."""
    return {
        "kubernetes": (f"kubernetes {KUBERNETES}", CACHE / f"kubernetes-{KUBERNETES}", KUBE_COMMANDS,
                       build_kubernetes),
        "etcd": (f"etcd {ETCD}", CACHE / f"etcd-{ETCD}", ["etcd"], build_etcd),
        "kwok": (f"kwok {KWOK}", CACHE / f"kwok-{KWOK}", ["kwok", "kwokctl"],
                 go_install(f"sigs.k8s.io/kwok/cmd/kwok@{KWOK}", f"sigs.k8s.io/kwok/cmd/kwokctl@{KWOK}")),
        # Unstamped, helm reports only its minor version ("v3.22").
        "helm3": (f"helm {HELM3}", CACHE / f"helm-{HELM3}-stamped", ["helm3"],
                  go_install(f"helm.sh/helm/v3/cmd/helm@{HELM3}", rename={"helm": "helm3"},
                             stamp=f"-X helm.sh/helm/v3/internal/version.version={HELM3}")),
        "helm4": (f"helm {HELM4}", CACHE / f"helm-{HELM4}-stamped", ["helm4"],
                  go_install(f"helm.sh/helm/v4/cmd/helm@{HELM4}", rename={"helm": "helm4"},
                             stamp=f"-X helm.sh/helm/v4/internal/version.version={HELM4}")),
        "krew": (f"krew {KREW}", CACHE / f"krew-{KREW}", ["kubectl-krew", "validate-krew-manifest"],
                 go_install(f"sigs.k8s.io/krew/cmd/krew@{KREW}",
                            f"sigs.k8s.io/krew/cmd/validate-krew-manifest@{KREW}",
                            rename={"krew": "kubectl-krew"})),
        "python": (f"python tools (moto {MOTO})", CACHE / f"python-moto-{MOTO}-awscli-{AWSCLI}",
                   ["venv/bin/python", "venv/bin/aws"], python_venv),
        "haproxy": ("haproxy", CACHE / "haproxy", ["haproxy"], debian("haproxy", also=["openssl"])),
        # The rig's tests trace the control plane's connect() calls with it.
        "strace": ("strace", CACHE / "strace", ["strace"], debian("strace")),
        "policy": ("the controller's IAM policy document", CACHE / f"lbc-iam-policy-{pinned_policy()[1][:12]}",
                   ["iam_policy.json"], fetch_policy),
    }


# What `rig up` runs (the control plane, kwok, helm, moto and the stand-ins, HAProxy, the policy
# document); the rest only the tests use (Helm 4, krew, strace). Longest build first.
RIG_RUNS = ["kubernetes", "kwok", "helm3", "etcd", "python", "haproxy", "policy"]
TESTS_USE = ["helm4", "krew", "strace"]
# Builds side by side: each Go build keeps both cores busy only while it compiles; fetching
# modules, `go mod tidy` and linking leave them to the others.
SIDE_BY_SIDE = 2


def paths():
    """{tool name: path to its binary}, where each is or will be once built: each binary
    plan() lists, by its file name."""
    return {Path(name).name: directory / name
            for _, directory, names, _ in plan().values() for name in names}


def ensure(keys):
    """Builds the tools `keys` names that are missing, up to SIDE_BY_SIDE at a time (the
    Debian packages one at a time: apt holds one lock), and returns paths().
    A failed build fails the call once the others have finished."""
    from concurrent.futures import ThreadPoolExecutor
    import threading
    steps = plan()
    apt = threading.Lock()

    def one(key):
        label, directory, names, build = steps[key]
        if key in ("haproxy", "strace"):
            with apt:
                timed(label, directory, names, build)
        else:
            timed(label, directory, names, build)

    with ThreadPoolExecutor(max_workers=SIDE_BY_SIDE) as pool:
        futures = {key: pool.submit(one, key) for key in keys}
    failed = [steps[key][0] for key, f in futures.items() if f.exception() is not None]
    if failed:
        raise SystemExit(f"rig: could not build {', '.join(failed)} (its output is above); "
                         "run the command again once the cause is fixed")
    return paths()


def ensure_rig():
    """What `rig up` runs; the paths of the rest, which the tests use, may not exist yet."""
    return ensure(RIG_RUNS)


def ensure_krew():
    """kubectl, krew and krew's manifest validator (what `make krew-manifest` needs of the rig)."""
    bins = ensure(["kubernetes", "krew"])
    return {name: bins[name] for name in ("kubectl", "kubectl-krew", "validate-krew-manifest")}


def ensure_all():
    """Returns {tool name: path to its binary}, building what is missing."""
    return ensure(RIG_RUNS + TESTS_USE)


if __name__ == "__main__":
    # `tools.py krew`: only krew's tools; else every tool.
    tools = ensure_krew() if sys.argv[1:] == ["krew"] else ensure_all()
    for name, path in tools.items():
        print(f"{name}\t{path}")
