"""The local rig: a real Kubernetes control plane, a simulated EKS account and a sticky ALB stand-in.

    rig/rig up        build what is missing (cached by version), start everything, write .rig/env
    rig/rig down      stop exactly the processes `up` started (RIG_STATE=DIR: that rig's; down-all: every rig here)
    rig/rig status    what runs, and whether it answers
    rig/rig reset     back to the state right after `up` (cluster objects, nodes, AWS account, data plane)
    rig/rig snapshot  the rig's state as JSON: objects by kind and name, node labels and taints, AWS resources
    rig/rig dataplane sticky on|off          cookie stickiness at the ALB stand-in
    rig/rig dataplane backend NAME up|down   take one GraphQL backend out of (or back into) rotation
    rig/rig aws-faults --throttle F [--seed N] | --off   throttle that fraction of AWS API requests
                      (each service's own throttling error; nothing applied); no flag: the counters
    rig/rig eks auto-mode on|off   EKS Auto Mode for the cluster (DescribeCluster, its CRDs, its ALB
                      controller for class eks.amazonaws.com/alb, the built-in Pod Identity agent);
                      no on/off: the current state. `reset` turns it off
    rig/rig supervise (started by `up`) restarts whatever of the rig exits; see supervise()

Every server binds 127.0.0.1 on a free port (the egress proxy, a Unix
socket), and nothing dials anything else: the API server reaches into the
cluster network (webhook Services, kubelets) only through its `cluster`
egress selector, a CONNECT proxy of the rig's (rig/cluster_egress.py) that
serves the load balancer controller's webhooks, tunnels kubelet requests
to the pod runner and refuses the rest. State, logs and pids live in .rig/
at the repository root; `.rig/env` holds `export NAME=value` lines for
tests, the demo and anyone debugging.

kwok's nodes run no containers and kwok fakes every pod's status, except
for two images that the rig really runs: the pod runner (rig/pod_runner.py)
plays the container runtime and kubelet for pods of `python` (the plugin's
probe) and `scalardb-schema-loader` (rig/schema_loader_standin.py), runs
them as host processes, writes their status, serves their logs to the API
server, and gives them the rig's VPC: an HTTP proxy through which the
ALBs' DNS names reach the data plane. `up` makes kwok's pod-ready and
pod-complete stages skip those pods (a selector added to the stages kwokctl
generated, then kwok's controller restarted); `reset` kills the runner's
processes and removes their logs.
"""

import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tools  # noqa: E402

# The proxy variables every client in the rig's environment has (the plugin, helm, kubectl, the
# tests): the internet is the policy mirror (rig/policy_mirror.py), loopback is reached directly.
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "SSL_CERT_FILE")
# rig/rig run in a shell that sourced a rig's env: its own requests (the registries it builds
# from, the API server it resets) do not go through a rig's mirror.
if os.environ.get("SSL_CERT_FILE", "").endswith("/rig-ca.crt"):
    for _var in PROXY_VARIABLES:
        os.environ.pop(_var, None)

RIG = Path(__file__).resolve().parent
ROOT = RIG.parent
# One rig per state directory: `.rig` by default, another with RIG_STATE (the test
# runner starts several side by side: `.rig`, `.rig.2`, `.rig.3`, …).
STATE = Path(os.environ.get("RIG_STATE") or ROOT / ".rig").resolve()
CLUSTER = "scalardb-graphql-rig"
REGION = "us-east-1"
ACCOUNT = "123456789012"
CONTEXT = f"arn:aws:eks:{REGION}:{ACCOUNT}:cluster/{CLUSTER}"
DEDICATED_NODES = ["graphql-1", "graphql-2", "graphql-3"]
GENERAL_NODES = ["general-1", "general-2"]
POOL_LABEL = ("agentpool", "scalardbgraphqlpool")
CHART_VERSIONS = {"aws-load-balancer-controller": [("3.4.0", "v3.4.0"), ("3.5.0", "v3.5.0")],
                  "scalardb-graphql": [("1.8.5", "3.13.5"), ("1.8.6", "3.13.6")],
                  "scalardb-cluster": [("1.10.0", "3.17.0"), ("1.11.0", "3.18.0")]}
BACKENDS = ["graphql-a", "graphql-b"]
# The rig's VPC has one PostgreSQL database; its account, as a DBA would give it out.
DATABASE = {"host": "db", "port": 5432, "user": "scalar", "password": "rig-db-password-7e3f9a"}


def log(msg):
    print(f"rig: {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- processes -------------------------------------------------------------------------
def start(name, argv, env=None):
    """Starts a long-running process in its own session; its pid goes to .rig/pids/NAME. The
    rig's own servers reach nothing beyond loopback: they get no proxy (the kubernetes
    client honours HTTPS_PROXY but not NO_PROXY, and would tunnel to the API server)."""
    (STATE / "logs").mkdir(parents=True, exist_ok=True)
    (STATE / "pids").mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in (env if env is not None else os.environ).items() if k not in PROXY_VARIABLES}
    spec = {"argv": [str(a) for a in argv], "env": env,
            "cwd": str(STATE), "log": str(STATE / "logs" / f"{name}.log"), "pid_file": str(STATE / "pids" / name)}
    write_spec(name, spec)
    return launch(spec)


def launch(spec):
    """Starts what a spec describes, in its own session, output appended to its log; writes its pid file."""
    with open(spec["log"], "ab") as out:
        for argv in spec.get("before_start", []):  # best effort: the API server may be down too
            try:
                subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               env=spec["env"], timeout=15)
            except (OSError, subprocess.SubprocessError):
                pass
        proc = subprocess.Popen(spec["argv"], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=spec["env"], start_new_session=True, cwd=spec["cwd"])
    tmp = Path(spec["pid_file"] + ".tmp")
    tmp.write_text(str(proc.pid))
    tmp.replace(spec["pid_file"])
    return proc.pid


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def our_pids():
    pids = {}
    for f in sorted((STATE / "pids").glob("*")) if (STATE / "pids").exists() else []:
        pids[f.name] = int(f.read_text())
    return pids


def stop(name, pid):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        for _ in range(50):
            if not alive(pid):
                break
            time.sleep(0.1)
        else:
            continue
        break
    (STATE / "pids" / name).unlink(missing_ok=True)


# --- supervision ------------------------------------------------------------------------
# Every long-running process of the rig, the control plane's included, is supervised as a
# real control plane is (systemd, the kubelet's static pods): whatever exits is started
# again with the same command line, environment and log, after a backoff that doubles
# with each exit (SUPERVISE_BACKOFF up to SUPERVISE_MAX_BACKOFF) and starts over once the
# process has stayed up SUPERVISE_STABLE seconds. A stopped process (SIGSTOP) is alive: it
# is left alone. One process, `rig.py supervise`, started last by `up` and stopped first
# by `down`, does this; it logs to .rig/logs/supervisor.log and writes what it sees to
# .rig/supervisor.json, which `status` reads: a component that is down, or has exited
# SUPERVISE_FLAPPING times without staying up in between, is a problem.
SUPERVISED = STATE / "supervised"
SUPERVISOR_PID = STATE / "supervisor.pid"
SUPERVISOR_STATE = STATE / "supervisor.json"
SUPERVISE_BACKOFF = 0.5
SUPERVISE_MAX_BACKOFF = 8.0
SUPERVISE_STABLE = 20.0
SUPERVISE_FLAPPING = 3


def write_spec(name, spec):
    SUPERVISED.mkdir(parents=True, exist_ok=True)
    path = SUPERVISED / f"{name}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the environment
    with os.fdopen(fd, "w") as f:
        json.dump(spec, f, indent=1)


def kwok_pid_files():
    kwok_pids = STATE / "kwok" / "clusters" / CLUSTER / "pids"
    return sorted(kwok_pids.glob("*.pid")) if kwok_pids.exists() else []


def record_control_plane_specs(env):
    """The control plane's processes, as kwokctl starts them (its kwok.yaml: binary, arguments,
    directory, environment), so the supervisor can start them again, logging where kwokctl
    does and writing their pid files where kwokctl (and `down`) look for them. Read from the
    configuration, not from the running processes: one may have exited already."""
    import yaml
    cluster_dir = STATE / "kwok" / "clusters" / CLUSTER
    config = next(d for d in yaml.safe_load_all((cluster_dir / "kwok.yaml").read_text())
                  if isinstance(d, dict) and d.get("kind") == "KwokctlConfiguration")
    for c in config["components"]:
        write_spec(c["name"], {
            "argv": [c["binary"], *c.get("args", [])],
            # No proxy: the control plane reaches the cluster through its egress proxy only (an
            # API server started again with HTTPS_PROXY would send webhook calls there).
            "env": dict({k: v for k, v in env.items() if k not in PROXY_VARIABLES},
                        **{e["name"]: e["value"] for e in c.get("envs") or []}),
            "cwd": c.get("workDir") or str(cluster_dir),
            "log": str(cluster_dir / "logs" / f"{c['name']}.log"),
            "pid_file": str(cluster_dir / "pids" / f"{c['name']}.pid"),
            # kwok's controller holds the nodes' leases under an identity of its own process: a new
            # one cannot take them over (it keeps failing "lease already exists" until they expire,
            # 200 s, and leaves every pod alone meanwhile). A restarted kubelet renews its lease at
            # once; so the old leases go before a new controller starts.
            "before_start": [[str(STATE / "bin" / "kubectl"), "--kubeconfig", str(STATE / "kubeconfig"),
                              "--request-timeout=5s", "delete", "leases", "-n", "kube-node-lease", "--all",
                              "--wait=false"]] if c["name"] == "kwok-controller" else []})


def read_pid(path):
    try:
        return int(Path(path).read_text())
    except (OSError, ValueError):
        return None


def supervise():
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    exits = {}  # pid -> how it ended, for the processes this one started
    components = {}

    def say(msg):
        print(f"{time.strftime('%H:%M:%S')} supervisor: {msg}", flush=True)

    def publish():
        tmp = STATE / "supervisor.json.tmp"
        tmp.write_text(json.dumps({"pid": os.getpid(), "components": {
            name: {k: c[k] for k in ("pid", "state", "exits", "restarts", "last_exit", "since")}
            for name, c in components.items()}}, indent=1))
        tmp.replace(SUPERVISOR_STATE)

    say(f"supervising {', '.join(sorted(p.stem for p in SUPERVISED.glob('*.json')))}")
    publish()
    while not stopping:
        changed = False
        while True:  # reap what this one started
            try:
                pid, code = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            exits[pid] = (f"exit code {os.waitstatus_to_exitcode(code)}" if os.WIFEXITED(code)
                          else f"signal {signal.Signals(os.WTERMSIG(code)).name}")
        now = time.time()
        for path in sorted(SUPERVISED.glob("*.json")):
            name = path.stem
            spec = json.loads(path.read_text())
            c = components.setdefault(name, {"pid": None, "state": "running", "exits": 0, "restarts": 0,
                                             "last_exit": None, "since": now, "next_start": None})
            pid = read_pid(spec["pid_file"])
            if pid is not None and alive(pid):
                if c["pid"] != pid or c["state"] != "running":
                    c.update(pid=pid, state="running", since=now)
                    changed = True
                if c["exits"] and now - c["since"] >= SUPERVISE_STABLE:
                    c["exits"] = 0  # it stayed up: the backoff starts over
                    changed = True
                continue
            if c["state"] == "running":
                c["exits"] += 1
                c["last_exit"] = exits.pop(pid, "exited, status unknown") if pid else "no pid file"
                delay = min(SUPERVISE_BACKOFF * 2 ** (c["exits"] - 1), SUPERVISE_MAX_BACKOFF)
                c.update(state="down", since=now, next_start=now + delay)
                say(f"{name} (pid {pid}) is down ({c['last_exit']}); starting it again in {delay:g}s")
                changed = True
            if c["state"] == "down" and now >= c["next_start"] and not stopping:
                try:
                    new = launch(spec)
                except OSError as e:
                    c["next_start"] = now + SUPERVISE_MAX_BACKOFF
                    say(f"{name} could not be started ({e}); trying again in {SUPERVISE_MAX_BACKOFF:g}s")
                    continue
                c["restarts"] += 1
                c.update(pid=new, state="running", since=now)
                say(f"{name} started again (pid {new}, restart {c['restarts']})")
                changed = True
        if changed:
            publish()
        time.sleep(0.25)
    say("stopping (the supervised processes keep running)")
    SUPERVISOR_STATE.unlink(missing_ok=True)


def start_supervisor(env):
    record_control_plane_specs(env)
    with open(STATE / "logs" / "supervisor.log", "ab") as out:
        proc = subprocess.Popen([sys.executable, __file__, "supervise"], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True, cwd=STATE)
    SUPERVISOR_PID.write_text(str(proc.pid))
    wait_for("the supervisor", lambda: SUPERVISOR_STATE.exists(), timeout=30)


def stop_supervisor():
    pid = read_pid(SUPERVISOR_PID)
    if pid is not None and alive(pid) and "supervise" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(
            errors="replace"):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            os.kill(pid, sig)
            for _ in range(50):
                if not alive(pid):
                    break
                time.sleep(0.1)
            else:
                continue
            break
    SUPERVISOR_PID.unlink(missing_ok=True)
    SUPERVISOR_STATE.unlink(missing_ok=True)
    shutil.rmtree(SUPERVISED, ignore_errors=True)


def supervision_problems():
    pid = read_pid(SUPERVISOR_PID)
    if pid is None or not alive(pid):
        return [f"the supervisor (pid {pid}) is not running: nothing restarts what exits"]
    try:
        components = json.loads(SUPERVISOR_STATE.read_text())["components"]
    except (OSError, ValueError, KeyError):
        return ["the supervisor has not said what it supervises"]
    found = []
    for name, c in sorted(components.items()):
        if c["state"] == "down":
            found.append(f"{name} is down ({c['last_exit']}), restart {c['restarts'] + 1} pending")
        elif c["exits"] >= SUPERVISE_FLAPPING:
            found.append(f"{name} is restarting repeatedly ({c['exits']} exits without staying up "
                         f"{SUPERVISE_STABLE:g}s, last {c['last_exit']}; restarted {c['restarts']}x in all)")
    return found


def wait_for(what, check, timeout=120):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as e:  # the thing is still starting
            last = e
        time.sleep(0.3)
    raise SystemExit(f"rig: timed out waiting for {what} ({last}); see {STATE / 'logs'}")


def http_ok(url, data=None):
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=5) as r:
        return r.status == 200


# --- environment -----------------------------------------------------------------------
def read_env():
    env = {}
    path = STATE / "env"
    if not path.exists():
        return env
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = value.strip('"')
    return env


def child_env(extra):
    env = dict(os.environ)
    for key, value in extra.items():
        env[key] = value.replace("${PATH}", os.environ.get("PATH", ""))
    return env


def kubectl(bins, *args, env, input=None, check=True):
    result = subprocess.run([str(bins["kubectl"]), *args], env=env, input=input, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise SystemExit(f"rig: kubectl {' '.join(args[:3])} failed: {result.stderr.strip()}")
    return result


# --- up ----------------------------------------------------------------------------------
def node_manifest():
    nodes = []
    for name in DEDICATED_NODES + GENERAL_NODES:
        labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                  "type": "kwok", "topology.kubernetes.io/zone": f"{REGION}{'ab'[len(nodes) % 2]}"}
        if name in DEDICATED_NODES:
            labels[POOL_LABEL[0]] = POOL_LABEL[1]
        nodes.append({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels, "annotations": {"kwok.x-k8s.io/node": "fake"}},
            "spec": {},
            "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                       "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"}},
        })
    return {"apiVersion": "v1", "kind": "List", "items": nodes}


def make_cert(directory, name="webhook", subject="/CN=rig-pod-identity-webhook",
              san="subjectAltName=IP:127.0.0.1"):
    """A self-signed certificate for 127.0.0.1 (the admission webhook's; the pod runner's kubelet API's)."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
                        "-subj", subject, "-addext", san,
                        "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def write_egress_selector(socket_path):
    """kube-apiserver's egress configuration: its cluster traffic goes to the egress proxy,
    HTTP CONNECT over a Unix socket. (Over TCP, kube-apiserver 1.35 speaks to the proxy
    only with mutual TLS: it dereferences the TLS settings that validation forbids for
    an http:// URL.)"""
    path = STATE / "egress-selector.yaml"
    path.write_text(json.dumps({
        "apiVersion": "apiserver.k8s.io/v1beta1", "kind": "EgressSelectorConfiguration",
        "egressSelections": [{"name": "cluster", "connection": {
            "proxyProtocol": "HTTPConnect", "transport": {"uds": {"udsName": str(socket_path)}}}}],
    }, indent=1) + "\n")
    return path


def oidc_issuer():
    """The EKS cluster's OIDC issuer, one per rig (EKS's form: 32 upper-case hex digits)."""
    digest = hashlib.sha256(str(STATE).encode()).hexdigest()[:32].upper()
    return f"https://oidc.eks.{REGION}.amazonaws.com/id/{digest}"


def write_kwokctl_config(issuer):
    """kwokctl's configuration: the API server issues ServiceAccount tokens as the EKS cluster's
    OIDC issuer, as EKS's does (replacing kwokctl's own issuer, which would stay first and sign)."""
    path = STATE / "kwokctl.yaml"
    path.write_text(json.dumps({
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1", "kind": "KwokctlConfiguration",
        "componentsPatches": [{"name": "kube-apiserver", "extraArgs": [
            {"key": "service-account-issuer", "value": issuer, "override": True},
            # EKS's discovery document names its keys under the issuer.
            {"key": "service-account-jwks-uri", "value": f"{issuer}/keys"}]}],
    }, indent=1) + "\n")
    return path


# The images the pod runner runs (pod_runner.py's IMAGES); kwok leaves their pods to it.
RUNNER_IMAGES = ["python", "scalardb-schema-loader", "scalardb-cluster-node", "scalardb-cluster-node-byol-premium",
                 "scalardb-cluster-node-byol-standard"]
RUNNER_IMAGES_JQ = ('.spec.containers.[0].image | split("@") | .[0] | split("/") | .[-1] | split(":") | .[0]')


def hand_runner_pods_to_the_runner(bins, env, cluster_dir):
    """kwok's pod-ready and pod-complete stages, as kwokctl generated them, skip the pod runner's
    images; kwok's controller is restarted to read them. Its pod-delete stage still takes every pod."""
    import yaml
    path = cluster_dir / "kwok.yaml"
    docs = path.read_text().split("\n---\n")
    changed = 0
    for i, text in enumerate(docs):
        doc = yaml.safe_load(text)
        if not (isinstance(doc, dict) and doc.get("kind") == "Stage"
                and doc["metadata"]["name"] in ("pod-ready", "pod-complete")):
            continue
        doc["spec"]["selector"].setdefault("matchExpressions", []).append(
            {"jq": {"key": RUNNER_IMAGES_JQ, "operator": "NotIn", "values": RUNNER_IMAGES}})
        if doc["metadata"]["name"] == "pod-ready":
            gate_ready(doc)
        docs[i] = yaml.safe_dump(doc, sort_keys=False, width=1000)
        changed += 1
    if changed != 2:
        raise SystemExit(f"rig: kwok's pod-ready and pod-complete stages not found in {path}")
    path.write_text("\n---\n".join(docs))
    pid_file = cluster_dir / "pids" / "kwok-controller.pid"
    pid = int(pid_file.read_text())
    os.kill(pid, signal.SIGTERM)
    wait_for("kwok's controller to stop", lambda: not alive(pid), timeout=30)
    pid_file.unlink()
    # With the others' pid files pointing at running processes, this starts the controller alone.
    subprocess.run([str(bins["kwokctl"]), "start", "cluster", "--name", CLUSTER], env=env, check=True,
                   capture_output=True)
    wait_for("kwok's controller to start again", lambda: pid_file.exists() and alive(int(pid_file.read_text())))


# kwok's pod-ready template makes a pod Ready, and every readiness gate's condition True, at
# once. As the kubelet does, a pod with readiness gates is Ready only once each gate's
# condition is True: here it starts NotReady (ReadinessGatesNotReady) with no gate condition,
# and the ALB simulator sets the gate, and Ready with it, from its target's health.
KWOK_READY = '  status: "True"\n  type: Ready\n'
KWOK_GATED_READY = (
    "{{ if .spec.readinessGates }}\n"
    '  status: "False"\n  reason: ReadinessGatesNotReady\n'
    "  message: '{{ range $i, $g := .spec.readinessGates }}{{ if $i }}, {{ end }}corresponding condition of pod "
    'readiness gate "{{ $g.conditionType }}" does not exist.{{ end }}\'\n'
    "{{ else }}\n" + KWOK_READY.replace("  type: Ready\n", "") + "{{ end }}\n  type: Ready\n")
KWOK_GATES = ('{{ range .spec.readinessGates }}\n- lastTransitionTime: {{ $now | Quote }}\n  status: "True"\n'
              '  type: {{ .conditionType | Quote }}\n{{ end }}\n')


def gate_ready(stage):
    for holder, key in ((stage["spec"]["next"], "statusTemplate"), (stage["spec"]["steps"][0]["patch"], "template")):
        template = holder.get(key)
        if template is None:
            continue
        if KWOK_READY not in template or KWOK_GATES not in template:
            raise SystemExit("rig: kwok's pod-ready template is not the one this rig knows (Ready, readiness gates)")
        holder[key] = template.replace(KWOK_READY, KWOK_GATED_READY, 1).replace(KWOK_GATES, "")


def build_chart_repo(bins, env):
    repo = STATE / "charts"
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    for chart, versions in CHART_VERSIONS.items():
        for version, app_version in versions:
            work = STATE / "chart-build" / f"{chart}-{version}"
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(RIG / "charts" / chart, work, ignore=shutil.ignore_patterns("crds-since-*"))
            for extra in sorted((RIG / "charts" / chart).glob("crds-since-*")):
                if tuple(map(int, version.split("."))) >= tuple(map(int, extra.name[len("crds-since-"):].split("."))):
                    for f in extra.iterdir():
                        shutil.copy(f, work / "crds" / f.name)
            subprocess.run([str(bins["helm3"]), "package", str(work), "--version", version,
                            "--app-version", app_version, "-d", str(repo)],
                           env=env, check=True, capture_output=True)
    shutil.rmtree(STATE / "chart-build", ignore_errors=True)
    return repo


HAPROXY_CFG = """\
global
    stats socket {socket} mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    option redispatch
frontend alb
    bind 127.0.0.1:{port}
    use_backend %[str(mode),map({map},sticky)]
backend sticky
    balance roundrobin
    cookie AWSALB insert indirect nocache httponly
    option httpchk GET /graphql?query=%7B__typename%7D
{sticky_servers}
backend roundrobin
    balance roundrobin
    option httpchk GET /graphql?query=%7B__typename%7D
{plain_servers}
"""


def make_mirror_cert(host):
    """The rig's CA (what SSL_CERT_FILE names) and a certificate it signs for `host` (the policy
    mirror's), as a company's TLS-inspecting proxy has."""
    ca, ca_key = STATE / "rig-ca.crt", STATE / "rig-ca.key"
    cert, key = STATE / "policy-mirror.crt", STATE / "policy-mirror.key"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
                        "-subj", "/CN=scalardb-graphql rig CA", "-addext", "basicConstraints=critical,CA:TRUE",
                        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                        "-keyout", str(ca_key), "-out", str(ca)], check=True, capture_output=True)
        csr = STATE / "policy-mirror.csr"
        subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={host}",
                        "-keyout", str(key), "-out", str(csr)], check=True, capture_output=True)
        ext = STATE / "policy-mirror.ext"
        ext.write_text(f"subjectAltName=DNS:{host}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
        subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
                        "-CAcreateserial", "-days", "3650", "-extfile", str(ext), "-out", str(cert)],
                       check=True, capture_output=True)
    return ca, cert, key


# The clients' bin directory: {link name: the tool it links to}.
LINKS = {"kubectl": "kubectl", "helm": "helm3", "helm3": "helm3", "helm4": "helm4", "kubectl-krew": "kubectl-krew",
         "validate-krew-manifest": "validate-krew-manifest", "aws": "aws", "kwokctl": "kwokctl",
         "strace": "strace"}


def link_tools(bins):
    """The clients' bin directory (first on the rig's PATH): every tool built so far. The tests'
    own tools (Helm 4, krew, strace) join it when built later (`make test` builds them first)."""
    bindir = STATE / "bin"
    bindir.mkdir(exist_ok=True)
    for name, tool in LINKS.items():
        if bins[tool].exists() and not (bindir / name).is_symlink():
            (bindir / name).symlink_to(bins[tool])


def up():
    bins = tools.ensure_rig()
    if read_env() and not problems(read_env()):
        link_tools(bins)
        log("already up")
        print(STATE / "env")
        return
    if our_pids() or (STATE / "kwok").exists():
        log("found a partial rig; taking it down first")
        down()
    started = time.monotonic()
    STATE.mkdir(exist_ok=True)
    bindir = STATE / "bin"
    shutil.rmtree(bindir, ignore_errors=True)
    link_tools(bins)

    kubeconfig = STATE / "kubeconfig"
    env = {
        "KUBECONFIG": str(kubeconfig),
        "PATH": f"{bindir}:${{PATH}}",
        "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
        "HELM_CACHE_HOME": str(STATE / "helm" / "cache"),
        "HELM_CONFIG_HOME": str(STATE / "helm" / "config"),
        "HELM_DATA_HOME": str(STATE / "helm" / "data"),
        "KREW_ROOT": str(STATE / "krew"),
        "KWOK_WORKDIR": str(STATE / "kwok"),
        "RIG_ROOT": str(ROOT),
        "RIG_STATE": str(STATE),
        "RIG_PYTHON": str(bins["python"]),
        "RIG_CLUSTER_NAME": CLUSTER,
        "RIG_CONTEXT": CONTEXT,
    }
    # The internet is one page: the pinned IAM policy document, behind the proxy every client
    # here is given (policy_mirror.py). The control plane gets none: it reaches the cluster
    # only through its egress proxy, and nothing else.
    policy_url, _ = tools.pinned_policy()
    ca, mirror_cert, mirror_key = make_mirror_cert(urllib.parse.urlsplit(policy_url).hostname)
    mirror_port = free_port()
    proxy = f"http://127.0.0.1:{mirror_port}"
    env.update({"HTTPS_PROXY": proxy, "https_proxy": proxy, "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost", "SSL_CERT_FILE": str(ca)})
    policy_copy = STATE / "iam_policy.json"
    shutil.copyfile(bins["iam_policy.json"], policy_copy)
    env["RIG_IAM_POLICY_FILE"] = str(policy_copy)
    aws_port = free_port()
    env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{aws_port}"
    env["RIG_MOTO_URL"] = env["AWS_ENDPOINT_URL"]
    run_env = child_env(env)
    kwok_env = {k: v for k, v in run_env.items() if k not in PROXY_VARIABLES}
    kwok_env.update(KWOK_KUBE_VERSION=tools.KUBERNETES, KWOK_KUBECTL_BINARY=str(bins["kubectl"]))

    log("starting the policy mirror (the rig's only page of the internet)")
    start("policy-mirror", [bins["python"], RIG / "policy_mirror.py", mirror_port, mirror_cert, mirror_key,
                            policy_copy, policy_url], env=run_env)
    wait_for("the policy mirror", lambda: mirror_answers(env))

    # First, so that the API server never finds its egress without a proxy.
    log("starting the cluster egress proxy (the webhooks' way in)")
    egress_socket = STATE / "cluster-egress.sock"
    kubelet_port = free_port()
    start("cluster-egress", [bins["python"], RIG / "cluster_egress.py", egress_socket, kubelet_port], env=run_env)
    env["RIG_CLUSTER_EGRESS_SOCKET"] = str(egress_socket)
    env["RIG_CLUSTER_EGRESS_LOG"] = str(STATE / "logs" / "cluster-egress.log")
    wait_for("the cluster egress proxy", lambda: egress_refuses(egress_socket))

    log("starting the control plane (kwokctl, binary runtime)")
    # kwokctl picks its control plane's ports from a range of its own, free when it looks:
    # two rigs coming up side by side would pick the same ones. One kwokctl at a time, until
    # every control plane process (kwok's controller restarted too) listens on its own.
    import fcntl
    lock = open(tools.CACHE / "kwokctl.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    issuer = oidc_issuer()
    subprocess.run([
        str(bins["kwokctl"]), "--config", str(write_kwokctl_config(issuer)),
        "create", "cluster", "--name", CLUSTER, "--runtime", "binary",
        "--extra-args", f"kube-apiserver=egress-selector-config-file={write_egress_selector(egress_socket)}",
        # One controller manager and one scheduler, each the only one: without leader
        # election a slow API server (a busy machine) cannot make them give up and exit.
        "--extra-args", "kube-controller-manager=leader-elect=false",
        "--extra-args", "kube-scheduler=leader-elect=false",
        "--kubeconfig", str(kubeconfig),
        "--etcd-binary", str(bins["etcd"]),
        "--kube-apiserver-binary", str(bins["kube-apiserver"]),
        "--kube-controller-manager-binary", str(bins["kube-controller-manager"]),
        "--kube-scheduler-binary", str(bins["kube-scheduler"]),
        "--kwok-controller-binary", str(bins["kwok"]),
        "--kube-audit-policy", str(RIG / "audit-policy.yaml"),
        "--kube-authorization",
        "--wait", "2m",
    ], env=kwok_env, check=True)
    cluster_dir = STATE / "kwok" / "clusters" / CLUSTER
    hand_runner_pods_to_the_runner(bins, kwok_env, cluster_dir)
    lock.close()  # its controller restarted on its own port: the next rig's kwokctl sees them all taken
    kubectl(bins, "config", "rename-context", f"kwok-{CLUSTER}", CONTEXT, env=run_env)
    server = kubectl(bins, "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}",
                     env=run_env).stdout.strip()
    kubectl(bins, "apply", "-f", "-", input=json.dumps(node_manifest()), env=run_env)
    wait_for("nodes Ready", lambda: kubectl(
        bins, "wait", "--for=condition=Ready", "node", "--all", "--timeout=5s", env=run_env,
        check=False).returncode == 0)
    env["RIG_AUDIT_LOG"] = str(cluster_dir / "logs" / "audit.log")

    log("starting the pod identity webhook")
    cert, key = make_cert(STATE)
    webhook_port = free_port()
    # The EKS Pod Identity agent stand-in's port (it listens only while the cluster has the
    # eks-pod-identity-agent add-on): the URL the webhook gives the pods of associated ServiceAccounts.
    agent_port = free_port()
    env["RIG_POD_IDENTITY_AGENT_URL"] = f"http://127.0.0.1:{agent_port}/v1/credentials"
    start("pod-identity-webhook", [bins["python"], RIG / "pod_identity_webhook.py", webhook_port, cert, key,
                                   env["RIG_POD_IDENTITY_AGENT_URL"]], env=run_env)
    import base64
    kubectl(bins, "apply", "-f", "-", env=run_env, input=json.dumps({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "rig-pod-identity-webhook"},
        "webhooks": [{
            "name": "pod-identity-webhook.rig.local",
            "clientConfig": {"url": f"https://127.0.0.1:{webhook_port}/mutate",
                             "caBundle": base64.b64encode(cert.read_bytes()).decode()},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["pods"]}],
            "failurePolicy": "Ignore", "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 5,
        }]}))

    log("starting the AWS account (moto)")
    # The data plane's GraphQL stand-ins also answer the health checks of kwok's pods (pod_network.py).
    servers = [(name, free_port()) for name in BACKENDS]
    aws_env = dict(run_env, MOTO_RECORDER_FILEPATH=str(STATE / "moto-recording.jsonl"),
                   RIG_GRAPHQL_STANDINS=",".join(f"127.0.0.1:{p}" for _, p in servers))
    start("aws", [bins["python"], RIG / "aws_server.py", aws_port, CLUSTER, server,
                  cluster_dir / "pki" / "ca.crt", issuer], env=aws_env)
    wait_for("the seeded EKS cluster", lambda: subprocess.run(
        [str(bins["aws"]), "eks", "describe-cluster", "--name", CLUSTER], env=run_env,
        capture_output=True, timeout=30).returncode == 0)

    log("starting the EKS Pod Identity agent stand-in (serves while the add-on is active)")
    start("pod-identity-agent", [bins["python"], RIG / "pod_identity_agent.py", agent_port, CLUSTER], env=run_env)

    log("starting the ALB simulator")
    start("alb-simulator", [bins["python"], RIG / "alb_simulator.py", CLUSTER], env=run_env)
    log("starting EKS Auto Mode's load balancing stand-in (acts while Auto Mode is on)")
    start("auto-mode-alb", [bins["python"], RIG / "auto_mode_alb.py", CLUSTER], env=run_env)

    log("packaging the test charts and serving them")
    repo = build_chart_repo(bins, run_env)
    chart_port = free_port()
    env["RIG_CHART_REPO_URL"] = f"http://127.0.0.1:{chart_port}"
    subprocess.run([str(bins["helm3"]), "repo", "index", str(repo), "--url", env["RIG_CHART_REPO_URL"]],
                   env=run_env, check=True)
    start("chart-repo", [bins["python"], "-m", "http.server", chart_port, "--bind", "127.0.0.1",
                         "--directory", repo], env=run_env)

    log("starting the ALB data plane (HAProxy + GraphQL stand-ins)")
    for name, port in servers:
        start(name, [bins["python"], RIG / "graphql_standin.py", port, name], env=run_env)
    alb_port = free_port()
    mode_map = STATE / "dataplane.map"
    mode_map.write_text("mode sticky\n")
    sock = STATE / "haproxy.sock"
    (STATE / "haproxy.cfg").write_text(HAPROXY_CFG.format(
        socket=sock, port=alb_port, map=mode_map,
        sticky_servers="\n".join(f"    server {n} 127.0.0.1:{p} check inter 1s cookie {n}" for n, p in servers),
        plain_servers="\n".join(f"    server {n} 127.0.0.1:{p} check inter 1s" for n, p in servers)))
    start("haproxy", [bins["haproxy"], "-db", "-f", STATE / "haproxy.cfg"], env=run_env)
    env["RIG_ALB_URL"] = f"http://127.0.0.1:{alb_port}"
    env["RIG_DATAPLANE_SOCKET"] = str(sock)
    (STATE / "database.json").write_text(json.dumps(DATABASE) + "\n")
    env["RIG_DATABASE_PASSWORD"] = DATABASE["password"]

    log("starting the pod runner (python and schema loader pods, their logs, the VPC)")
    kubelet_cert, kubelet_key = make_cert(STATE, "kubelet", "/CN=rig-kubelet",
                                          "subjectAltName=DNS:localhost,IP:127.0.0.1")
    proxy_port, admin_port = free_port(), free_port()
    start("pod-runner", [bins["python"], RIG / "pod_runner.py", STATE, kubelet_port, proxy_port, admin_port,
                         kubelet_cert, kubelet_key], env=child_env(env))
    env["RIG_POD_RUNNER_URL"] = f"http://127.0.0.1:{admin_port}"
    env["RIG_VPC_PROXY_URL"] = f"http://127.0.0.1:{proxy_port}"
    env["RIG_POD_RUNNER_LOG"] = str(STATE / "logs" / "pod-runner.log")
    wait_for("the pod runner", lambda: http_ok(f"{env['RIG_POD_RUNNER_URL']}/status"))

    wait_for("the chart repository", lambda: http_ok(f"{env['RIG_CHART_REPO_URL']}/index.yaml"))
    wait_for("the ALB data plane", lambda: all(
        haproxy_command(sock, f"show servers state {b}") and server_up(sock, b) for b in ("sticky", "roundrobin")))

    (STATE / "env").write_text("".join(f'export {k}="{v}"\n' for k, v in env.items()))
    baseline = snapshot(env)
    (STATE / "baseline.json").write_text(json.dumps(baseline, indent=1, sort_keys=True))
    log("starting the supervisor (restarts whatever exits)")
    start_supervisor(run_env)
    log(f"up in {time.monotonic() - started:.0f}s; source {STATE / 'env'}")
    print(STATE / "env")


# --- the data plane's switches ------------------------------------------------------------
def haproxy_command(sock, command):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(sock))
        s.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def server_up(sock, backend):
    """True when every server of the backend passes its health check (srv_op_state 2)."""
    lines = [l.split() for l in haproxy_command(sock, f"show servers state {backend}").splitlines()
             if l and not l.startswith("#") and len(l.split()) > 5]
    return bool(lines) and all(l[5] == "2" for l in lines)


def dataplane(args):
    env = read_env()
    sock = env["RIG_DATAPLANE_SOCKET"]
    if args[:1] == ["sticky"] and args[1:] in (["on"], ["off"]):
        mode = "sticky" if args[1] == "on" else "roundrobin"
        haproxy_command(sock, f"set map {STATE / 'dataplane.map'} mode {mode}")
        (STATE / "dataplane.map").write_text(f"mode {mode}\n")
    elif args[:1] == ["backend"] and len(args) == 3 and args[1] in BACKENDS and args[2] in ("up", "down"):
        state = "ready" if args[2] == "up" else "maint"
        for backend in ("sticky", "roundrobin"):
            haproxy_command(sock, f"set server {backend}/{args[1]} state {state}")
    else:
        raise SystemExit(f"usage: rig dataplane sticky on|off | backend {'|'.join(BACKENDS)} up|down")


def aws_faults(args):
    """The AWS server's fault switch: `--throttle F [--seed N]`, `--off`, or nothing to read it."""
    env = read_env()
    if not env:
        raise SystemExit("rig: not up (run `make rig-up`)")
    url = f"{env['AWS_ENDPOINT_URL']}/rig/faults"
    usage = "usage: rig aws-faults [--throttle FRACTION [--seed N] | --off]"
    if not args:
        request = urllib.request.Request(url)
    elif args == ["--off"]:
        request = urllib.request.Request(url, data=b'{"throttle": 0}')
    elif args[:1] == ["--throttle"] and len(args) in (2, 4) and (len(args) == 2 or args[2] == "--seed"):
        try:
            want = {"throttle": float(args[1]), "seed": int(args[3]) if len(args) == 4 else 0}
        except ValueError:
            raise SystemExit(usage)
        request = urllib.request.Request(url, data=json.dumps(want).encode())
    else:
        raise SystemExit(usage)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            print(r.read().decode().strip())
    except urllib.error.HTTPError as e:
        raise SystemExit(f"rig: aws-faults: {e.read().decode().strip()}")


# EKS Auto Mode: the AWS server's switch (eks_auto_mode.py), the state file it writes, and how
# far EKS Auto Mode's load balancing stand-in (auto_mode_alb.py) has got after a change.
AUTO_MODE_STATE = "eks-auto-mode.json"
AUTO_MODE_PHASE = "auto-mode-alb.json"


def auto_mode_on():
    try:
        return CLUSTER in json.loads((STATE / AUTO_MODE_STATE).read_text()).get("clusters", [])
    except (OSError, ValueError):
        return False


def auto_mode_phase():
    try:
        return json.loads((STATE / AUTO_MODE_PHASE).read_text())
    except (OSError, ValueError):
        return None


def switch_auto_mode(env, enabled):
    """Turns EKS Auto Mode on or off in the AWS account; False when the AWS server has no switch
    (one started before the rig had Auto Mode)."""
    request = urllib.request.Request(f"{env['AWS_ENDPOINT_URL']}/rig/eks/auto-mode",
                                     data=json.dumps({"cluster": CLUSTER, "enabled": enabled}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            r.read()
        return True
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return False
        raise SystemExit(f"rig: EKS Auto Mode: {e.read().decode().strip()}")


def auto_mode_settled(enabled):
    phase = auto_mode_phase()
    return phase is not None and phase.get("enabled") == enabled and phase.get("settled")


def eks(args):
    """`eks auto-mode on|off`: EKS Auto Mode on or off, returning once its load balancing has caught up
    (its CRDs established; or its load balancers, finalizers and unused CRDs gone); `eks auto-mode`:
    the current state."""
    usage = "usage: rig eks auto-mode [on|off]"
    env = read_env()
    if not env:
        raise SystemExit("rig: not up (run `make rig-up`)")
    if args == ["auto-mode"]:
        print(f"eks auto-mode: {'on' if auto_mode_on() else 'off'}")
        return
    if args[:1] != ["auto-mode"] or args[1:] not in (["on"], ["off"]):
        raise SystemExit(usage)
    enabled = args[1] == "on"
    if not (STATE / "supervised" / "auto-mode-alb.json").exists() or not switch_auto_mode(env, enabled):
        raise SystemExit("rig: this rig was started before it had EKS Auto Mode; `rig/rig down` and "
                         "`rig/rig up` start one that has")
    wait_for(f"EKS Auto Mode's load balancing to be {'on' if enabled else 'off'} ({STATE / 'logs'}/"
             "auto-mode-alb.log)", lambda: auto_mode_settled(enabled), timeout=90)
    print(f"eks auto-mode: {'on' if enabled else 'off'}")


# --- snapshot and reset -------------------------------------------------------------------
# Ephemeral or randomly named by the cluster itself (ClusterIP allocations).
SNAPSHOT_SKIP = {"events", "events.events.k8s.io", "leases.coordination.k8s.io", "componentstatuses",
                 "ipaddresses.networking.k8s.io"}


class KubeApi:
    """Reads the rig's API server the way kubectl does (discovery, then a list per kind),
    but in-process and many requests at once: a reset lists every kind several times."""

    def __init__(self, env):
        from kubernetes import client, config
        cfg = client.Configuration()
        config.load_kube_config(config_file=env["KUBECONFIG"], client_configuration=cfg)
        cfg.connection_pool_maxsize = 16
        self.host = cfg.host
        self.http = client.ApiClient(cfg).rest_client.pool_manager

    def get(self, path):
        """The JSON at `path`, or None when the server has no such thing (a kind whose CRD went)."""
        r = self.http.request("GET", self.host + path, timeout=30)
        if r.status == 404:
            return None
        if r.status != 200:
            raise SystemExit(f"rig: GET {path}: HTTP {r.status}: {r.data[:200]!r}")
        return json.loads(r.data)

    def each(self, paths, call=None):
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(max_workers=16) as pool:
            return list(pool.map(call or self.get, paths))

    def delete(self, path):
        """Deletes in the background, as `kubectl delete --wait=false`; gone already is fine."""
        r = self.http.request("DELETE", self.host + path, timeout=30, headers={"Content-Type": "application/json"},
                              body=json.dumps({"propagationPolicy": "Background"}))
        if r.status not in (200, 202, 404, 409):
            raise SystemExit(f"rig: DELETE {path}: HTTP {r.status}: {r.data[:200]!r}")

    def delete_collection(self, path):
        """Deletes every object at `path` (a namespaced kind's collection in one namespace)."""
        r = self.http.request("DELETE", self.host + path, timeout=30, headers={"Content-Type": "application/json"},
                              body=json.dumps({"propagationPolicy": "Background"}))
        if r.status not in (200, 202, 404, 405):
            raise SystemExit(f"rig: DELETE {path}: HTTP {r.status}: {r.data[:200]!r}")

    def finalize_namespace(self, namespace):
        """Takes the namespace controller's finalizer off a namespace being deleted (its
        `finalize` subresource, as the controller does once the namespace is empty)."""
        name = namespace["metadata"]["name"]
        finalizers = [f for f in (namespace.get("spec") or {}).get("finalizers") or [] if f != "kubernetes"]
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name},
                "spec": {"finalizers": finalizers}}
        r = self.http.request("PUT", self.host + f"/api/v1/namespaces/{name}/finalize", timeout=30,
                              body=json.dumps(body), headers={"Content-Type": "application/json"})
        if r.status not in (200, 404, 409):
            raise SystemExit(f"rig: PUT /api/v1/namespaces/{name}/finalize: HTTP {r.status}: {r.data[:200]!r}")

    def create(self, path, obj):
        """Creates `obj` at `path`; there already is fine."""
        r = self.http.request("POST", self.host + path, timeout=30, body=json.dumps(obj),
                              headers={"Content-Type": "application/json"})
        if r.status not in (200, 201, 409):
            raise SystemExit(f"rig: POST {path}: HTTP {r.status}: {r.data[:200]!r}")

    def merge_patch(self, path, patch):
        r = self.http.request("PATCH", self.host + path, timeout=30, body=json.dumps(patch),
                              headers={"Content-Type": "application/merge-patch+json"})
        if r.status not in (200, 404):
            raise SystemExit(f"rig: PATCH {path}: HTTP {r.status}: {r.data[:200]!r}")


def api_resources(api):
    """(group, kind) -> (resource.group, namespaced, list path) for every kind that can be
    listed and deleted, at its group's preferred version: what `kubectl api-resources` shows."""
    groups = [("", "v1")] + [(g["name"], g["preferredVersion"]["version"])
                             for g in (api.get("/apis") or {"groups": []})["groups"]]
    paths = ["/api/v1" if not g else f"/apis/{g}/{v}" for g, v in groups]
    resources = {}
    for (group, _), path, found in zip(groups, paths, api.each(paths)):
        for r in (found or {}).get("resources", []):
            full = f"{r['name']}.{group}" if group else r["name"]
            if "/" in r["name"] or not {"list", "delete"} <= set(r.get("verbs", [])) or full in SNAPSHOT_SKIP:
                continue
            resources[(group, r["kind"])] = (full, r["namespaced"], path, r["name"])
    return resources


def namespaced_collections(api):
    """(list path, plural) of every namespaced kind whose collection can be deleted, at its
    group's preferred version, the kinds a snapshot skips included: what the namespace
    controller deletes in a namespace being deleted."""
    groups = [("", "v1")] + [(g["name"], g["preferredVersion"]["version"])
                             for g in (api.get("/apis") or {"groups": []})["groups"]]
    paths = ["/api/v1" if not g else f"/apis/{g}/{v}" for g, v in groups]
    return [(path, r["name"]) for path, found in zip(paths, api.each(paths))
            for r in (found or {}).get("resources", [])
            if "/" not in r["name"] and r["namespaced"] and "deletecollection" in r.get("verbs", [])]


def controller_name_stem(name):
    """The controller names ALBs, target groups and their bindings `k8s-…-<hash>`, and
    the hash covers the Service's UID: a new install gets new names. The snapshot keeps
    the stem, so two installs of the same thing compare equal."""
    return re.sub(r"^(k8s-.*-)[0-9a-f]{10}$", r"\1*", name)


def kube_objects(env, api=None):
    """Every object of every kind that can be listed and deleted."""
    api = api or KubeApi(env)
    resources = api_resources(api)
    kinds = sorted(resources.items())
    objects = []
    listings = api.each([f"{base}/{plural}" for _, (_, _, base, plural) in kinds])
    for (_, (resource, _, base, plural)), listing in zip(kinds, listings):
        for item in (listing or {}).get("items", []):
            meta = item["metadata"]
            where = f"/namespaces/{meta['namespace']}" if meta.get("namespace") else ""
            # Generated names differ run to run; the snapshot keeps their stem.
            name = meta["name"]
            if meta.get("generateName") and name.startswith(meta["generateName"]):
                name = meta["generateName"] + "*"
            name = controller_name_stem(name)
            objects.append({"resource": resource, "namespace": meta.get("namespace", ""),
                            "name": name, "real_name": meta["name"], "object": item,
                            "path": f"{base}{where}/{plural}/{meta['name']}"})
    return objects


def aws_state(env):
    import boto3
    kw = dict(region_name=REGION, endpoint_url=env["AWS_ENDPOINT_URL"],
              aws_access_key_id="testing", aws_secret_access_key="testing")
    iam, ec2, elb = boto3.client("iam", **kw), boto3.client("ec2", **kw), boto3.client("elbv2", **kw)
    eks = boto3.client("eks", **kw)
    roles = {}
    for r in iam.list_roles()["Roles"]:
        attached = iam.list_attached_role_policies(RoleName=r["RoleName"])["AttachedPolicies"]
        tags = iam.list_role_tags(RoleName=r["RoleName"])["Tags"]
        roles[r["RoleName"]] = {"attached": sorted(p["PolicyArn"] for p in attached),
                                "tags": {t["Key"]: t["Value"] for t in tags},
                                "trust": r.get("AssumeRolePolicyDocument")}
    policies = sorted(p["Arn"] for p in iam.list_policies(Scope="Local")["Policies"])
    oidc = sorted(p["Arn"] for p in iam.list_open_id_connect_providers()["OpenIDConnectProviderList"])
    groups = ec2.describe_security_groups()["SecurityGroups"]
    # A security group by its name: its id depends on what else was made first (network interfaces too).
    named = {g["GroupId"]: f"security-group {controller_name_stem(g['GroupName'])}" for g in groups}
    tags = sorted(f"{named.get(t['ResourceId'], t['ResourceId'])} {t['Key']}={t['Value']}"
                  for t in ec2.describe_tags()["Tags"])
    lbs = sorted(controller_name_stem(lb["LoadBalancerName"]) for lb in elb.describe_load_balancers()["LoadBalancers"])
    tgs = sorted(controller_name_stem(tg["TargetGroupName"]) for tg in elb.describe_target_groups()["TargetGroups"])
    sgs = sorted(controller_name_stem(sg["GroupName"]) for sg in groups)
    # EKS add-ons by name (a status changes by itself), Pod Identity associations by what they bind
    # (their ids are drawn anew for each).
    from botocore.exceptions import ClientError
    try:
        addons = sorted(eks.list_addons(clusterName=CLUSTER)["addons"])
        associations = sorted(
            f"{a['namespace']}/{a['serviceAccount']} {a['roleArn']}"
            for a in (eks.describe_pod_identity_association(clusterName=CLUSTER, associationId=s["associationId"])
                      ["association"] for s in eks.list_pod_identity_associations(clusterName=CLUSTER)["associations"]))
    except ClientError as e:  # an AWS server started before the rig served them
        if e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404 or \
                e.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            raise
        addons, associations = [], []
    # EKS Auto Mode: its compute capability's switch (the three go together).
    cluster = eks.describe_cluster(name=CLUSTER)["cluster"]
    auto_mode = bool((cluster.get("computeConfig") or {}).get("enabled"))
    return {"iam_roles": roles, "iam_policies": policies, "iam_oidc_providers": oidc,
            "ec2_tags": tags, "ec2_security_groups": sgs, "elbv2_load_balancers": lbs, "elbv2_target_groups": tgs,
            "eks_addons": addons, "eks_pod_identity_associations": associations, "eks_auto_mode": auto_mode}


# The plugin's marks on objects it changed but did not create (annotations with this prefix).
MARK_PREFIX = "kubectl-scalardb-graphql/"


def marks(obj):
    return {k: v for k, v in (obj["metadata"].get("annotations") or {}).items() if k.startswith(MARK_PREFIX)}


def kube_state(objects):
    """What the baseline compares: every object by kind, namespace and name; node labels, taints
    and the plugin's marks; namespace labels and marks (a label on a namespace the rig keeps, such
    as the readiness-gate one on `default`, changes what the next install sees)."""
    nodes = {o["name"]: {"labels": o["object"]["metadata"].get("labels", {}),
                         "taints": o["object"]["spec"].get("taints", []),
                         "marks": marks(o["object"])}
             for o in objects if o["resource"] == "nodes"}
    namespaces = {o["name"]: {"labels": o["object"]["metadata"].get("labels", {}), "marks": marks(o["object"])}
                  for o in objects if o["resource"] == "namespaces"}
    return {"kubernetes": sorted(f"{o['resource']} {o['namespace']}/{o['name']}" for o in objects),
            "nodes": nodes, "namespaces": namespaces}


def snapshot(env):
    return {**kube_state(kube_objects(env)), "aws": aws_state(env)}


def reset():
    """Deletes every object `up` did not make, makes again a node that was deleted (as a
    cluster's node group replaces one), restores node labels and taints, reseeds AWS.
    Through the API in-process, many requests at once: a kubectl per object cost a process
    and a discovery each, seconds per reset on a loaded machine."""
    env = read_env()
    if not env:
        raise SystemExit("rig: not up (run `make rig-up`)")
    # A test that paused a process (SIGSTOP) and failed before letting it go: continue it.
    for pid in [*our_pids().values(), *(read_pid(f) for f in kwok_pid_files())]:
        try:
            if pid:
                os.kill(pid, signal.SIGCONT)
        except OSError:
            pass
    # EKS Auto Mode off first: its load balancing stand-in then deletes what it operated while the
    # objects go (and makes nothing any more).
    try:
        auto_mode_switch = switch_auto_mode(env, False)
    except (SystemExit, OSError):  # an AWS server without the switch, or not answering: it reseeds anyway
        auto_mode_switch = False
    baseline = json.loads((STATE / "baseline.json").read_text())
    keep = set(baseline["kubernetes"])
    api = KubeApi(env)
    listed = kube_objects(env, api)
    objects = [o for o in listed if f"{o['resource']} {o['namespace']}/{o['name']}" not in keep]

    def delete(batch):
        api.each([o["path"] for o in batch], api.delete)
    # Webhooks first: with the controller's (failurePolicy Fail) registered and the
    # controller down, no Ingress could lose its finalizer and no Service be made.
    webhooks = ("mutatingwebhookconfigurations.admissionregistration.k8s.io",
                "validatingwebhookconfigurations.admissionregistration.k8s.io")
    delete([o for o in objects if o["resource"] in webhooks])
    objects = [o for o in objects if o["resource"] not in webhooks]
    # A namespace being deleted takes its objects with it.
    namespaces = {o["real_name"] for o in objects if o["resource"] == "namespaces"}
    delete([o for o in objects if o["namespace"] not in namespaces and o["resource"] != "namespaces"])
    delete([o for o in objects if o["resource"] == "namespaces"])
    listed_state = kube_state(listed)
    current = listed_state["nodes"]
    for node in node_manifest()["items"]:
        if node["metadata"]["name"] in baseline["nodes"] and node["metadata"]["name"] not in current:
            api.create("/api/v1/nodes", node)
    for name, want in baseline["nodes"].items():
        if current.get(name) == want:
            continue
        labels = {k: None for k in current.get(name, {}).get("labels", {}) if k not in want["labels"]}
        labels.update(want["labels"])
        annotations = {k: None for k in current.get(name, {}).get("marks", {}) if k not in want["marks"]}
        annotations.update(want["marks"])
        api.merge_patch(f"/api/v1/nodes/{name}", {"metadata": {"labels": labels, "annotations": annotations},
                                                  "spec": {"taints": want["taints"] or None}})
    kept_namespaces = baseline.get("namespaces", {})
    for name, want in kept_namespaces.items():
        now = listed_state["namespaces"].get(name, {"labels": {}, "marks": {}})
        if now != want:
            labels = {k: None for k in now["labels"] if k not in want["labels"]}
            labels.update(want["labels"])
            annotations = {k: None for k in now["marks"] if k not in want["marks"]}
            annotations.update(want["marks"])
            api.merge_patch(f"/api/v1/namespaces/{name}", {"metadata": {"labels": labels, "annotations": annotations}})
    sock = env["RIG_DATAPLANE_SOCKET"]
    haproxy_command(sock, f"set map {STATE / 'dataplane.map'} mode sticky")
    (STATE / "dataplane.map").write_text("mode sticky\n")
    for backend in ("sticky", "roundrobin"):
        for name in BACKENDS:
            haproxy_command(sock, f"set server {backend}/{name} state ready")

    def clean():
        # Finalizers are dropped only once an object is being deleted: a controller
        # still running (the ALB simulator) could add them back before that.
        now = kube_objects(env, api)
        state = kube_state(now)
        # A node made again counts once kwok has made it Ready, as the baseline's were.
        ready = all(any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in (o["object"].get("status") or {}).get("conditions") or [])
                    for o in now if o["resource"] == "nodes")
        if state["kubernetes"] == baseline["kubernetes"] and state["nodes"] == baseline["nodes"] and ready \
                and all(state["namespaces"].get(n) == want for n, want in kept_namespaces.items()):
            return True
        terminating = {o["real_name"] for o in now if o["resource"] == "namespaces"
                       and o["object"]["metadata"].get("deletionTimestamp")}
        finalized, missed = [], []  # missed: not being deleted yet (made since, or a delete lost)
        for o in now:
            meta = o["object"]["metadata"]
            if f"{o['resource']} {o['namespace']}/{o['name']}" in keep:
                continue
            if meta.get("deletionTimestamp") and meta.get("finalizers") and o["resource"] != "namespaces":
                finalized.append(o["path"])
            elif not meta.get("deletionTimestamp"):
                # In a namespace being deleted too: the namespace controller would delete it, but only
                # once its 5 s grace period after the namespace's deletion is over (below).
                missed.append(o)
        api.each(finalized, lambda path: api.merge_patch(path, {"metadata": {"finalizers": None}}))
        delete(missed)
        # A namespace being deleted whose listed content is gone: what the namespace controller
        # does (it waits 5 s after the deletion before it starts, a fixed grace period), done here
        # at once: every namespaced kind's collection deleted, the kinds a snapshot skips (events,
        # leases) included, then the namespace finalized. Nothing new can be made in it meanwhile:
        # the API server refuses new content in a terminating namespace.
        emptied = [o for o in now if o["resource"] == "namespaces" and o["real_name"] in terminating
                   and f"namespaces /{o['name']}" not in keep
                   and not any(x["namespace"] == o["real_name"] for x in now)]
        if emptied:
            collections = namespaced_collections(api)
            api.each([f"{base}/namespaces/{o['real_name']}/{plural}" for o in emptied for base, plural in collections],
                     api.delete_collection)
            api.each(emptied, lambda o: api.finalize_namespace(o["object"]))
        return False
    if objects or any(current.get(n) != want for n, want in baseline["nodes"].items()) \
            or any(listed_state["namespaces"].get(n) != want for n, want in kept_namespaces.items()):
        wait_for("the cluster to be back at its baseline", clean, timeout=90)
    # Whatever the runner still runs (a pod it lost track of), and every log.
    http_ok(f"{env['RIG_POD_RUNNER_URL']}/reset", data=b"")
    # AWS last: until the Ingresses are gone, the simulator may still be making ALBs; and once
    # EKS Auto Mode's stand-in has finished deleting its own (a retried deletion after the
    # account is seeded again could name a new resource that was given the same id).
    stand_in = our_pids().get("auto-mode-alb")
    if auto_mode_switch and auto_mode_phase() is not None and stand_in and alive(stand_in):
        wait_for("EKS Auto Mode's load balancing to be off", lambda: auto_mode_settled(False), timeout=60)
    urllib.request.urlopen(urllib.request.Request(f"{env['AWS_ENDPOINT_URL']}/rig/reset", data=b""), timeout=60)


# --- status and down ------------------------------------------------------------------
def egress_refuses(socket_path):
    """True when the egress proxy answers a CONNECT outside the cluster, refusing it."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(socket_path))
        s.sendall(b"CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        while chunk := s.recv(4096):  # to the end, which the proxy closes
            answer += chunk
    status = answer.split(b" ")
    return status[0] == b"HTTP/1.1" and status[1] in (b"403", b"503")


def mirror_answers(env):
    """The pinned policy comes through the rig's proxy, trusted by the rig's CA, with the pinned sha256."""
    import hashlib
    url, sha256 = tools.pinned_policy()
    proxy = urllib.parse.urlsplit(env.get("HTTPS_PROXY", ""))
    if proxy.hostname != "127.0.0.1" or not Path(env.get("SSL_CERT_FILE", "")).is_file():
        return False
    conn = http.client.HTTPSConnection(proxy.hostname, proxy.port, timeout=5,
                                       context=ssl.create_default_context(cafile=env["SSL_CERT_FILE"]))
    target = urllib.parse.urlsplit(url)
    conn.set_tunnel(target.hostname, 443)
    try:
        conn.request("GET", target.path)
        body = conn.getresponse().read()
    finally:
        conn.close()
    return hashlib.sha256(body).hexdigest() == sha256


def problems(env):
    found = [f"{name} (pid {pid}) is not running" for name, pid in our_pids().items() if not alive(pid)]
    if urllib.parse.urlsplit(env.get("HTTPS_PROXY", "")).hostname != "127.0.0.1":
        found.append("HTTPS_PROXY is not the rig's policy mirror: a command could reach for the internet")
    kwok_pids = STATE / "kwok" / "clusters" / CLUSTER / "pids"
    for f in sorted(kwok_pids.glob("*.pid")) if kwok_pids.exists() else []:
        if f.read_text().strip().isdigit() and not alive(int(f.read_text())):
            found.append(f"{f.stem} (pid {f.read_text().strip()}) is not running")
    if not our_pids():
        found.append("no rig process is running")
    found += supervision_problems()
    checks = {
        "kube-apiserver": lambda: subprocess.run(
            [str(STATE / "bin" / "kubectl"), "get", "--raw", "/readyz"], env=child_env(env),
            capture_output=True, timeout=10).returncode == 0,
        "moto": lambda: http_ok(f"{env['AWS_ENDPOINT_URL']}/moto-api/"),
        "chart repository": lambda: http_ok(f"{env['RIG_CHART_REPO_URL']}/index.yaml"),
        "ALB data plane": lambda: http_ok(f"{env['RIG_ALB_URL']}/graphql?query=%7B__typename%7D"),
        "cluster egress proxy": lambda: egress_refuses(env["RIG_CLUSTER_EGRESS_SOCKET"]),
        "pod runner": lambda: http_ok(f"{env['RIG_POD_RUNNER_URL']}/status"),
        "policy mirror": lambda: mirror_answers(env),
    }
    for name, check in checks.items():
        try:
            if not check():
                found.append(f"{name} does not answer")
        except Exception as e:
            found.append(f"{name} does not answer ({e})")
    return found


def status():
    env = read_env()
    if not env:
        print("rig: down (no .rig/env); start it with `make rig-up`")
        raise SystemExit(1)
    for name, pid in our_pids().items():
        print(f"{name:22} pid {pid:<8} {'running' if alive(pid) else 'NOT RUNNING'}")
    kwok_pids = STATE / "kwok" / "clusters" / CLUSTER / "pids"
    for f in sorted(kwok_pids.glob("*.pid")) if kwok_pids.exists() else []:
        pid = int(f.read_text())
        print(f"{f.stem:22} pid {pid:<8} {'running' if alive(pid) else 'NOT RUNNING'}")
    pid = read_pid(SUPERVISOR_PID)
    print(f"{'supervisor':22} pid {pid or '-':<8} {'running' if pid and alive(pid) else 'NOT RUNNING'}")
    try:
        for name, c in sorted(json.loads(SUPERVISOR_STATE.read_text())["components"].items()):
            if c["restarts"] or c["state"] != "running":
                print(f"  {name:20} {c['state']}, restarted {c['restarts']}x, last {c['last_exit']}")
    except (OSError, ValueError, KeyError):
        pass  # problems() says it
    phase = auto_mode_phase() or {}
    print(f"{'eks auto-mode':22} {'on' if auto_mode_on() else 'off'}"
          + ("" if phase.get("settled", True) else " (its load balancing is catching up)"))
    try:
        with urllib.request.urlopen(f"{env['RIG_POD_RUNNER_URL']}/status", timeout=5) as r:
            for pod in json.loads(r.read())["pods"]:
                state = pod["state"] + (f" ({pod['reason']})" if pod["reason"] else "")
                pid = f"pid {pod['pid']}" if pod["pid"] else ""
                print(f"  pod {pod['namespace']}/{pod['name']:30} {state:28} {pid}")
    except Exception:
        pass  # problems() says it
    found = problems(env)
    for p in found:
        print(f"problem: {p}")
    print("rig: up" if not found else "rig: unhealthy (the supervisor restarts what exits; "
                                      "`make rig-down rig-up` starts over)")
    raise SystemExit(1 if found else 0)


def stop_pod_processes():
    """Pod processes the runner left (it kills them as it stops, and they die with it): none, normally."""
    for pid_file in (STATE / "pods").glob("*/pid") if (STATE / "pods").exists() else []:
        try:
            pid = int(pid_file.read_text())
            if Path(f"/proc/{pid}/cwd").resolve() == pid_file.parent / "work":
                os.killpg(pid, signal.SIGKILL)
        except (ValueError, OSError):
            pass


def down():
    stop_supervisor()  # first: nothing is to come back while the rest stops
    for name, pid in our_pids().items():
        stop(name, pid)
    stop_pod_processes()
    kwokctl = STATE / "bin" / "kwokctl"
    kwok_pids = [int(f.read_text()) for f in (STATE / "kwok" / "clusters" / CLUSTER / "pids").glob("*.pid")
                 if f.read_text().strip().isdigit()] if (STATE / "kwok").exists() else []
    if (STATE / "kwok").exists() and kwokctl.exists():
        subprocess.run([str(kwokctl), "delete", "cluster", "--name", CLUSTER,
                        "--kubeconfig", str(STATE / "kubeconfig")],
                       env=dict(os.environ, KWOK_WORKDIR=str(STATE / "kwok")), capture_output=True)
    # kwokctl signals the control plane and returns; down returns once it is gone.
    for pid in kwok_pids:
        for _ in range(100):
            if not alive(pid):
                break
            time.sleep(0.1)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for name in ("kwok", "env", "kubeconfig", "baseline.json", "charts", "helm", "krew", "egress-selector.yaml",
                 "cluster-egress.sock", "pods", AUTO_MODE_STATE, AUTO_MODE_PHASE):
        path = STATE / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    log("down")


def every_state():
    """The state directories of every rig of this checkout."""
    return sorted([ROOT / ".rig", *ROOT.glob(".rig.*")], key=str)


def down_all():
    """Stops every rig of this checkout, side by side."""
    procs = [subprocess.Popen([sys.executable, __file__, "down"], env=dict(os.environ, RIG_STATE=str(d)))
             for d in every_state() if d.is_dir()]
    if any(p.wait() for p in procs):
        raise SystemExit("rig: a rig did not go down")


def main():
    args = sys.argv[1:]
    if not args:
        raise SystemExit(__doc__)
    # Everything but `down` needs the rig's Python (boto3, the kubernetes client).
    if args[0] not in ("down", "down-all", "supervise") and "RIG_IN_VENV" not in os.environ:
        # `up` builds what the rig runs side by side here, before its venv is needed.
        venv_python = str((tools.ensure_rig() if args[0] == "up" else tools.ensure(["python"]))["python"])
        os.environ["RIG_IN_VENV"] = "1"
        os.execv(venv_python, [venv_python, __file__, *args])
    run(args)


def run(args):
    """One command, in this process (rig/shell.py calls this for the tests)."""
    command = {"up": up, "down": down, "down-all": down_all, "status": status, "reset": reset,
               "snapshot": lambda: print(json.dumps(snapshot(read_env()), indent=1, sort_keys=True)),
               "dataplane": lambda: dataplane(args[1:]),
               "aws-faults": lambda: aws_faults(args[1:]),
               "eks": lambda: eks(args[1:]),
               "supervise": supervise}.get(args[0])
    if command is None:
        raise SystemExit(__doc__)
    command()


if __name__ == "__main__":
    main()
