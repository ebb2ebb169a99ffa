"""The rig's container runtime and kubelet for a few images: it really runs their pods, on the host.

kwok's nodes run nothing; this process runs the pods that the plugin itself
creates, as a kubelet with a container runtime would, and leaves every
other pod to kwok:

- Its pods: scheduled (spec.nodeName set) pods whose first container's
  image repository ends in `python`, `scalardb-schema-loader` or one of
  CLUSTER_IMAGES (registry host, path and tag or digest aside). kwok's pod-ready and pod-complete
  stages skip them (rig.py adds that selector to kwok's stages).
- A registry: `python` is known by tag `3.13.7-alpine3.22` and by digest
  PYTHON_DIGEST (a digest decides when both are given),
  `scalardb-schema-loader` and CLUSTER_IMAGES by any tag `3.<n>.<n>`, under any registry host
  (a mirror keeps the path). Anything else stays Waiting, ErrImagePull then
  ImagePullBackOff with the kubelet's back-off, the pod Pending.
- The python image: the container's command and args run as a host
  process (`python3`/`python` is the rig's Python, RIG_PYTHON), with the
  pod's plain `env` values, in a fresh working directory, stdout and stderr
  interleaved into the container's log. The schema loader image runs
  rig/schema_loader_standin.py with the container's args, its `secret` and
  `configMap` volumes materialised from the API and the args that point
  into a mount rewritten to the materialised files. A ScalarDB Cluster node
  runs rig/graphql_standin.py in cluster mode; see Run.run_cluster_node.
- Status as a kubelet writes it (status subresource): Running with
  startTime, hostIP, a made-up podIP (10.0.1.0/24, never dialled; given
  round the range as host-local IPAM does, so a replacement pod does not
  get its predecessor's address at once) and the
  Ready conditions; then Succeeded or Failed with the container's exit
  code. `activeDeadlineSeconds` kills the process (Failed,
  DeadlineExceeded). A pod being deleted, or gone, has its process killed
  at once. restartPolicy is honoured for cluster nodes only (Never for the rest).
- The rig's VPC: each process gets `http_proxy` pointing at this process's
  forward proxy, which serves a request only when its host is the DNS name
  of a load balancer in the rig's AWS account (port 80); any other name
  gets 502 saying it does not resolve in the rig's VPC. It then acts as
  that ALB does: its listener's target group, the targets registered there
  and their health, its stickiness attributes, all read from the AWS
  server. Targets that are pods this process runs (ScalarDB Cluster's
  nodes) get the request themselves: healthy ones only (all registered ones
  when none is healthy, as an ALB fails open), round robin, and with
  `stickiness.enabled=true,stickiness.type=lb_cookie` by the `AWSALB`
  cookie, which the response sets (with `AWSALBCORS`) on every answer, an
  opaque value naming the target, expiring after
  `stickiness.lb_cookie.duration_seconds`; a cookie naming a target that is
  gone or unhealthy is routed anew. A load balancer with no such target
  (the GraphQL chart's pods, which kwok only pretends to run) goes on to
  the rig's fixed data plane (HAProxy and its two stand-ins), Host, Cookie
  and Set-Cookie untouched.
- A kubelet API (HTTPS, self-signed) for the API server, reached only
  through the cluster egress proxy: `GET /containerLogs/NS/POD/CONTAINER`
  with tailLines, limitBytes, timestamps, sinceSeconds, sinceTime and
  follow. Pods it does not run get the kubelet's 404.
- An admin port on 127.0.0.1: `GET /status` (JSON), `POST /reset` (kill
  every process, forget every pod, remove their logs).

State lives in STATE_DIR/pods/<ns>_<pod>_<uid>/ (log, working directory,
volumes), one log per container in the kubelet's CRI format.

usage: pod_runner.py STATE_DIR KUBELET_PORT PROXY_PORT ADMIN_PORT CERT KEY
(KUBECONFIG, AWS_ENDPOINT_URL and the AWS_* variables, RIG_ALB_URL set)
"""

import base64
import ctypes
import datetime
import hashlib
import http.client
import json
import os
import queue
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import botocore.config
from kubernetes import client, config
from kubernetes.client.rest import ApiException

import pod_network
import pod_status

RIG = Path(__file__).resolve().parent
PYTHON_TAG = "3.13.7-alpine3.22"
PYTHON_DIGEST = "sha256:9ba6d8cbebf0fb6546ae71f2a1c14f6ffd2fdab83af7fa5669734ef30ad48844"
LOADER_TAG = re.compile(r"^3\.\d+\.\d+$")
# ScalarDB Cluster's node image, as the docs name its editions (rig.py's RUNNER_IMAGES lists these too).
CLUSTER_IMAGES = ("scalardb-cluster-node", "scalardb-cluster-node-byol-premium", "scalardb-cluster-node-byol-standard")
IMAGES = ("python", "scalardb-schema-loader", *CLUSTER_IMAGES)
NODE_PROPERTIES = "/scalardb-cluster/node/scalardb-cluster-node.properties"
DATAPLANE_BACKEND = "roundrobin"  # the ALB without stickiness; cluster nodes join it while ready
POD_NETWORK = pod_network.RUNNER_POD_NETWORK
BACKOFF_START, BACKOFF_MAX = 10.0, 300.0  # the kubelet's image pull back-off
LB_CACHE_SECONDS = 1.5
VPC_AGENT = "rig-vpc"  # aws_server.py's faults leave requests with this in their User-Agent alone
HOP_BY_HOP = {"connection", "proxy-connection", "keep-alive", "proxy-authorization", "proxy-authenticate", "te",
              "trailer", "transfer-encoding", "upgrade", "content-length"}


def log(msg):
    print(f"pod-runner: {msg}", flush=True)


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def stamp(t=None):
    return (t or now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def nano(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


# --- images -------------------------------------------------------------------------------
def parse_image(ref):
    """(registry host or "", repository path, tag or None, digest or None) of an image reference."""
    name, _, digest = ref.partition("@")
    tag = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, _, tag = name.rpartition(":")
    host, _, rest = name.partition("/")
    if rest and ("." in host or ":" in host or host == "localhost"):
        return host, rest, tag, digest or None
    return "", name, tag, digest or None


def repository_name(ref):
    """The last path segment of the image's repository: what this runtime knows images by."""
    return parse_image(ref)[1].rsplit("/", 1)[-1]


def canonical(ref):
    """The reference as containerd spells it (docker.io/library/..., :latest by default)."""
    host, path, tag, digest = parse_image(ref)
    if not host:
        host = "docker.io"
        if "/" not in path:
            path = f"library/{path}"
    out = f"{host}/{path}"
    if tag or not digest:
        out += f":{tag or 'latest'}"
    return out + (f"@{digest}" if digest else "")


def pull(ref):
    """(image ID, None) when the rig's registry has the reference, else (None, the kubelet's message)."""
    host, path, tag, digest = parse_image(ref)
    repo = path.rsplit("/", 1)[-1]
    repo_ref = f"{host or 'docker.io'}/{path if host or '/' in path else 'library/' + path}"
    if repo == "python" and (digest == PYTHON_DIGEST if digest else tag == PYTHON_TAG):
        return f"{repo_ref}@{PYTHON_DIGEST}", None
    if repo in ("scalardb-schema-loader", *CLUSTER_IMAGES) and not digest and tag and LOADER_TAG.match(tag):
        return f"{repo_ref}@sha256:{hashlib.sha256(f'{repo}:{tag}'.encode()).hexdigest()}", None
    full = canonical(ref)
    return None, (f'failed to pull image "{ref}": rpc error: code = NotFound desc = failed to pull and unpack image '
                  f'"{full}": failed to resolve reference "{full}": {full}: not found')


def ours(pod):
    spec = pod.get("spec") or {}
    containers = spec.get("containers") or []
    return bool(spec.get("nodeName")) and bool(containers) and repository_name(containers[0].get("image", "")) in IMAGES


# --- one pod ----------------------------------------------------------------------------
class Run:
    """A pod this runtime took on: its latest object, its process, its log."""

    def __init__(self, runner, pod):
        meta = pod["metadata"]
        self.runner = runner
        self.pod = pod
        self.namespace, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.container = pod["spec"]["containers"][0]
        self.dir = runner.state / "pods" / f"{self.namespace}_{self.name}_{self.uid}"
        self.log_path = self.dir / self.container["name"] / "0.log"
        self.wake = threading.Event()
        self.deleted = False
        self.gone = False
        self.proc = None
        self.log_closed = threading.Event()
        self.state = "waiting"  # waiting | running | terminated
        self.waiting_reason = "ContainerCreating"
        self.pod_ip = runner.allocate_ip(self.uid)
        self.host_ip = runner.host_ip(pod["spec"]["nodeName"])
        self.started_at = None
        self.restart_count, self.last_state = 0, {}
        self.thread = threading.Thread(target=self.main, name=f"pod {self.namespace}/{self.name}", daemon=True)

    # -- what the watch tells
    def update(self, pod, gone=False):
        self.pod = pod
        if gone or pod["metadata"].get("deletionTimestamp"):
            if not self.deleted:
                log(f"{self.namespace}/{self.name}: deleted, stopping its container")
            self.deleted = True
            self.gone = self.gone or gone
            self.kill()
            self.wake.set()

    def kill(self, sig=signal.SIGKILL):
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    # -- status
    def patch(self, status):
        """A status patch, retried while the API server is away; False once the pod is gone."""
        delay = 0.1
        while not self.gone:
            try:
                self.runner.core.patch_namespaced_pod_status(self.name, self.namespace, {"status": status},
                                                             _preload_content=False)
                return True
            except ApiException as e:
                if e.status == 404:
                    self.gone = True
                    return False
                if e.status == 422:
                    log(f"{self.namespace}/{self.name}: status refused: {e.body}")
                    return False
            except Exception as e:  # the API server restarting
                log(f"{self.namespace}/{self.name}: status patch failed ({e.__class__.__name__}), retrying")
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
        return False

    def conditions(self, ready, reason=None, message=None, sandbox=True):
        """The kubelet's conditions; Ready also waits for every readiness gate (pod_status.py)."""
        t = stamp()
        extra = {"reason": reason, "message": message} if reason else {}
        gated = pod_status.ready(self.pod, True) if ready else {"status": "False", **extra}
        return [
            {"type": "PodReadyToStartContainers", "status": "True" if sandbox else "False", "lastProbeTime": None,
             "lastTransitionTime": t},
            {"type": "Initialized", "status": "True", "lastProbeTime": None, "lastTransitionTime": t},
            {"type": "Ready", "lastProbeTime": None, "lastTransitionTime": t, **gated},
            {"type": "ContainersReady", "status": "True" if ready else "False", "lastProbeTime": None,
             "lastTransitionTime": t, **extra},
        ]

    def ready_is_stale(self):
        have = pod_status.condition(self.pod, "Ready") or {}
        return have.get("status") != pod_status.ready(self.pod, True)["status"]

    def base_status(self):
        return {"hostIP": self.host_ip, "hostIPs": [{"ip": self.host_ip}], "podIP": self.pod_ip,
                "podIPs": [{"ip": self.pod_ip}], "startTime": stamp(self.start_time)}

    def container_status(self, state, image_id="", ready=False, started=False):
        return [{"name": self.container["name"], "image": self.container["image"], "imageID": image_id,
                 "containerID": self.container_id if state.get("running") or state.get("terminated") else None,
                 "ready": ready, "started": started, "restartCount": self.restart_count,
                 "lastState": self.last_state, "state": state}]

    def waiting(self, reason, message=None):
        self.state, self.waiting_reason = "waiting", reason
        unready = f"containers with unready status: [{self.container['name']}]"
        return self.patch({**self.base_status(), "phase": "Pending",
                           "conditions": self.conditions(False, "ContainersNotReady", unready),
                           "containerStatuses": self.container_status(
                               {"waiting": {"reason": reason, **({"message": message} if message else {})}})})

    def terminated(self, code, reason, message=None, pod_reason=None, pod_message=None):
        self.state = "terminated"
        finished = now()
        term = {"exitCode": code, "reason": reason, "startedAt": stamp(self.started_at or finished),
                "finishedAt": stamp(finished), "containerID": self.container_id}
        if message:
            term["message"] = message
        status = {**self.base_status(), "phase": "Succeeded" if code == 0 else "Failed",
                  "conditions": self.conditions(False, "PodCompleted", sandbox=False),
                  "containerStatuses": self.container_status({"terminated": term}, self.image_id)}
        if pod_reason:
            status.update(reason=pod_reason, message=pod_message)
        log(f"{self.namespace}/{self.name}: {status['phase']} (exit {code}, {reason})")
        self.patch(status)

    def event(self, reason, message, kind="Normal"):
        self.runner.events.put((self, reason, message, kind))

    # -- the lifecycle
    def sleep(self, seconds):
        """Waits, waking at once when the pod is deleted; True while the pod still stands."""
        if not self.deleted:
            self.wake.wait(seconds)
            self.wake.clear()
        return not self.deleted

    def main(self):
        try:
            self.lifecycle()
        except Exception:
            traceback.print_exc()
        finally:
            self.kill()
            self.runner.finished(self)

    def lifecycle(self):
        self.start_time = now()
        self.container_id = f"rig://{hashlib.sha256(self.uid.encode()).hexdigest()[:32]}"
        self.image_id = ""
        spec = self.pod["spec"]
        if len(spec.get("containers") or []) != 1 or spec.get("initContainers"):
            self.waiting("CreateContainerConfigError", "the rig's pod runner runs pods of exactly one container")
            while self.sleep(60):
                pass
            return
        image = self.container["image"]
        backoff = BACKOFF_START
        while True:
            self.event("Pulling", f'Pulling image "{image}"')
            image_id, error = pull(image)
            if image_id:
                break
            self.event("Failed", f'Failed to pull image "{image}": {error.split(": ", 1)[1]}', "Warning")
            self.event("Failed", "Error: ErrImagePull", "Warning")
            log(f"{self.namespace}/{self.name}: image {image} not found")
            self.waiting("ErrImagePull", error)
            if not self.sleep(1.0):
                return
            self.event("BackOff", f'Back-off pulling image "{image}"')
            self.waiting("ImagePullBackOff", f'Back-off pulling image "{image}": ErrImagePull: {error}')
            if not self.sleep(backoff):
                return
            backoff = min(backoff * 2, BACKOFF_MAX)
        self.image_id = image_id
        self.event("Pulled", f'Container image "{image}" already present on machine')
        shutil.rmtree(self.dir, ignore_errors=True)
        (self.dir / self.container["name"]).mkdir(parents=True)
        work = self.dir / "work"
        work.mkdir()
        if repository_name(image) in CLUSTER_IMAGES:
            try:
                self.run_cluster_node(work)
            finally:
                self.runner.dataplane_leave(self)
            return
        if repository_name(image) == "scalardb-schema-loader":
            mounts = self.materialise_volumes()
            if mounts is None:
                return
            argv = [self.runner.python, str(RIG / "schema_loader_standin.py"),
                    *[rewrite(a, mounts) for a in self.expand(self.container.get("args") or [])]]
            rig_only = {"RIG_DATABASE_ACCOUNT": str(self.runner.state / "database.json")}
        else:
            argv = self.expand((self.container.get("command") or []) + (self.container.get("args") or [])) \
                or ["python3"]
            program = os.path.basename(argv[0])
            if program not in ("python3", "python") or argv[0] not in (
                    program, f"/usr/local/bin/{program}", f"/usr/bin/{program}"):
                message = (f'failed to create containerd task: failed to create shim task: OCI runtime create failed: '
                           f'runc create failed: unable to start container process: exec: "{argv[0]}": executable '
                           f'file not found in $PATH: unknown')
                self.event("Failed", f"Error: {message}", "Warning")
                self.terminated(128, "StartError", message)
                return
            argv[0] = self.runner.python
            rig_only = {}
        # The stand-in's own input (where this rig keeps its database's account) comes first: the pod's env overrides.
        self.start(argv, work, rig_only)
        self.event("Created", f"Created container: {self.container['name']}")
        self.event("Started", f"Started container {self.container['name']}")
        if not self.patch({**self.base_status(), "phase": "Running", "conditions": self.conditions(True),
                           "containerStatuses": self.container_status(
                               {"running": {"startedAt": stamp(self.started_at)}}, image_id, True, True)}):
            return
        deadline = self.pod["spec"].get("activeDeadlineSeconds")
        deadline = time.monotonic() + deadline - (now() - self.start_time).total_seconds() if deadline else None
        while self.proc.poll() is None:
            if self.deleted:
                return
            if deadline is not None and time.monotonic() >= deadline:
                self.event("DeadlineExceeded", "Pod was active on the node longer than the specified deadline",
                           "Warning")
                self.kill()
                self.proc.wait()
                self.log_closed.wait(5)
                self.terminated(137, "Error", pod_reason="DeadlineExceeded",
                                pod_message="Pod was active on the node longer than the specified deadline")
                return
            self.wake.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
            self.wake.clear()
        if self.deleted:
            return
        self.log_closed.wait(5)
        code = self.proc.returncode
        code = 128 - code if code < 0 else code  # killed by a signal: 128 + its number, as runtimes report
        self.terminated(code, "Completed" if code == 0 else "Error")

    # -- a ScalarDB Cluster node: restarted as restartPolicy says, Ready once its startup probe passes
    def run_cluster_node(self, work):
        """rig/graphql_standin.py in cluster mode on the mounted properties and the container's environment
        (envFrom first, env over it), bound to the pod's loopback address. The exec probes
        `grpc_health_probe -addr=HOST:PORT` are a TCP connect to that port of the pod's address; the
        startup probe (or readiness probe) gates Ready, once a second up to its failureThreshold x
        periodSeconds, then the container is killed. An exit is restarted with the kubelet's back-off
        (CrashLoopBackOff, 10 s doubling to 300 s) under restartPolicy Always; the log of the last
        attempt stays readable. While Ready, the node is a server of the data plane's round-robin backend."""
        mounts = self.materialise_volumes()
        if mounts is None:
            return
        env_from = self.env_from()
        if env_from is None:
            return
        address = self.runner.loopback(self.pod_ip)
        properties = mounts.get(NODE_PROPERTIES, Path(NODE_PROPERTIES))
        argv = [self.runner.python, str(RIG / "graphql_standin.py"), "--cluster", str(properties), address,
                self.name, str(self.runner.state / "cluster-transactions")]
        probe = self.container.get("startupProbe") or self.container.get("readinessProbe")
        probe_port, probe_budget = None, 0.0
        if probe:
            command = (probe.get("exec") or {}).get("command") or []
            addr = next((a.split("=", 1)[1] for a in command if a.startswith("-addr=")), "localhost:60053")
            probe_port = int(addr.rsplit(":", 1)[1])
            probe_budget = probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)
        graphql_port = None
        backoff = BACKOFF_START
        while True:
            self.log_path = self.dir / self.container["name"] / f"{self.restart_count}.log"
            self.log_closed = threading.Event()
            self.start(argv, work, env_from)
            self.event("Created", f"Created container: {self.container['name']}")
            self.event("Started", f"Started container {self.container['name']}")
            running = {"running": {"startedAt": stamp(self.started_at)}}
            unready = f"containers with unready status: [{self.container['name']}]"
            ready = probe_port is None
            if not self.patch({**self.base_status(), "phase": "Running",
                               "conditions": self.conditions(ready, None if ready else "ContainersNotReady",
                                                             None if ready else unready),
                               "containerStatuses": self.container_status(running, self.image_id, ready, ready)}):
                return
            since = time.monotonic()
            while self.proc.poll() is None and not self.deleted:
                if not ready:
                    try:
                        socket.create_connection((address, probe_port), timeout=1).close()
                        ready = True
                    except OSError:
                        if time.monotonic() - since > probe_budget:
                            self.event("Unhealthy", f"Startup probe failed: no answer on {probe_port}", "Warning")
                            self.event("Killing", f"Container {self.container['name']} failed startup probe, "
                                                  "will be restarted")
                            self.kill()
                            break
                    if ready:
                        self.patch({**self.base_status(), "phase": "Running", "conditions": self.conditions(True),
                                    "containerStatuses": self.container_status(running, self.image_id, True, True)})
                        graphql_port = graphql_port or self.graphql_port(properties)
                        self.runner.dataplane_join(self, address, graphql_port)
                elif self.ready_is_stale():  # a readiness gate changed: Ready follows it
                    self.patch({"conditions": self.conditions(True)})
                self.wake.wait(1.0)
                self.wake.clear()
            if self.deleted:
                return
            self.runner.dataplane_leave(self)
            self.proc.wait()
            self.log_closed.wait(5)
            code = self.proc.returncode
            code = 128 - code if code < 0 else code
            policy = self.pod["spec"].get("restartPolicy", "Always")
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                self.terminated(code, "Completed" if code == 0 else "Error")
                return
            self.last_state = {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                              "startedAt": stamp(self.started_at), "finishedAt": stamp(),
                                              "containerID": self.container_id}}
            self.restart_count += 1
            self.state = "backoff"
            message = f"back-off {backoff:g}s restarting failed container={self.container['name']} pod={self.name}"
            log(f"{self.namespace}/{self.name}: exited {code}; {message}")
            self.event("BackOff", "Back-off restarting failed container", "Warning")
            if not self.patch({**self.base_status(), "phase": "Running",
                               "conditions": self.conditions(False, "ContainersNotReady", unready),
                               "containerStatuses": self.container_status(
                                   {"waiting": {"reason": "CrashLoopBackOff", "message": message}})}):
                return
            if not self.sleep(backoff):
                return
            backoff = min(backoff * 2, BACKOFF_MAX)

    def graphql_port(self, properties):
        """The node's GraphQL port as its properties set it (the stand-in checked them before it listened)."""
        try:
            for line in Path(properties).read_text().splitlines():
                key, _, value = line.partition("=")
                if key.strip() == "scalar.db.graphql.port":
                    return int(value.strip())
        except (OSError, ValueError):
            pass
        return 8080

    def env_from(self):
        """The variables of the container's envFrom Secrets and ConfigMaps; waits (CreateContainerConfigError)
        while one is missing, as the kubelet does; None once the pod is deleted."""
        while True:
            values, missing = {}, None
            for source in self.container.get("envFrom") or []:
                ref = source.get("secretRef") or source.get("configMapRef")
                kind = "secret" if source.get("secretRef") else "configmap"
                read = (self.runner.core.read_namespaced_secret if kind == "secret"
                        else self.runner.core.read_namespaced_config_map)
                try:
                    raw = json.loads(read(ref["name"], self.namespace, _preload_content=False).data)
                except ApiException as e:
                    if e.status == 404 and ref.get("optional"):
                        continue
                    missing = f'{kind} "{ref["name"]}" not found' if e.status == 404 else str(e)
                    break
                data = raw.get("data") or {}
                for k, v in data.items():
                    values[source.get("prefix", "") + k] = base64.b64decode(v).decode() if kind == "secret" else v
            if missing is None:
                return values
            self.event("Failed", f"Error: {missing}", "Warning")
            self.waiting("CreateContainerConfigError", missing)
            if not self.sleep(2.0):
                return None

    def expand(self, words):
        """$(VAR) references to the container's env, as the kubelet expands them in command and args."""
        env = self.env_values()
        return [re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)",
                       lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), w) for w in words]

    def env_values(self):
        values = {}
        for e in self.container.get("env") or []:
            if "value" in e and "valueFrom" not in e:
                values[e["name"]] = re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)",
                                           lambda m: "$" if m.group(0) == "$$" else values.get(m.group(1), m.group(0)),
                                           e.get("value") or "")
        return values

    def materialise_volumes(self):
        """{mountPath: host directory} of the container's secret and configMap mounts; None if deleted first."""
        volumes = {v["name"]: v for v in self.pod["spec"].get("volumes") or []}
        while True:
            try:
                mounts = {}
                for m in self.container.get("volumeMounts") or []:
                    v = volumes.get(m["name"])
                    if v is None or not (v.get("secret") or v.get("configMap")):
                        continue
                    target = self.dir / "volumes" / m["name"]
                    if not target.exists():
                        self.write_volume(v, target)
                    mounts[m["mountPath"].rstrip("/") or "/"] = target / m.get("subPath", "")
                return mounts
            except MountError as e:
                self.event("FailedMount", f'MountVolume.SetUp failed for volume "{e.volume}" : {e}', "Warning")
                self.waiting("ContainerCreating")
                if not self.sleep(2.0):
                    return None

    def write_volume(self, v, target):
        if v.get("secret"):
            src, kind, name, read = v["secret"], "secret", v["secret"]["secretName"], self.runner.core.read_namespaced_secret
        else:
            src, kind, name = v["configMap"], "configmap", v["configMap"]["name"]
            read = self.runner.core.read_namespaced_config_map
        try:
            raw = json.loads(read(name, self.namespace, _preload_content=False).data)
        except ApiException as e:
            if e.status == 404 and src.get("optional"):
                target.mkdir(parents=True)
                return
            raise MountError(v["name"], f'{kind} "{name}" not found' if e.status == 404 else str(e))
        if kind == "secret":
            data = {k: base64.b64decode(x) for k, x in (raw.get("data") or {}).items()}
        else:
            data = {k: x.encode() for k, x in (raw.get("data") or {}).items()}
            data.update({k: base64.b64decode(x) for k, x in (raw.get("binaryData") or {}).items()})
        items = src.get("items")
        files = {i["path"]: data[i["key"]] for i in items if i["key"] in data} if items else data
        target.mkdir(parents=True)
        for rel, content in files.items():
            path = target / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)

    def start(self, argv, work, env_from=None):
        env = {"PATH": f"{Path(self.runner.python).parent}:/usr/local/bin:/usr/bin:/bin", "HOSTNAME": self.name,
               "HOME": str(work), "LANG": "C.UTF-8"}
        env.update(env_from or {})
        env.update(self.env_values())
        env.update(http_proxy=self.runner.proxy_url, HTTP_PROXY=self.runner.proxy_url)
        self.started_at = now()
        self.proc = subprocess.Popen(argv, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)
        self.state = "running"
        (self.dir / "pid").write_text(str(self.proc.pid))
        log(f"{self.namespace}/{self.name}: started pid {self.proc.pid}: {' '.join(argv[1:])[:200]}")
        threading.Thread(target=self.copy_log, daemon=True).start()
        threading.Thread(target=self.reap, daemon=True).start()

    def copy_log(self):
        """The process's output, line by line, into the container log (CRI format, nanosecond stamps)."""
        with open(self.log_path, "ab", buffering=0) as out:
            for line in iter(self.proc.stdout.readline, b""):
                tag = b"F" if line.endswith(b"\n") else b"P"
                out.write(nano(now()).encode() + b" stdout " + tag + b" " + line.rstrip(b"\n") + b"\n")
        self.log_closed.set()

    def reap(self):
        self.proc.wait()
        self.wake.set()

    # -- the log, for the kubelet API
    def log_lines(self):
        """[(datetime, text bytes including its newline)] of the container log so far."""
        try:
            raw = self.log_path.read_bytes()
        except FileNotFoundError:
            return []
        lines = []
        for line in raw.splitlines():
            ts, _, rest = line.partition(b" ")
            _, _, rest = rest.partition(b" ")
            tag, _, content = rest.partition(b" ")
            when = datetime.datetime.strptime(ts[:26].decode() + "Z", "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=datetime.timezone.utc)
            lines.append((ts, when, content + (b"\n" if tag == b"F" else b"")))
        return lines


class MountError(Exception):
    def __init__(self, volume, message):
        super().__init__(message)
        self.volume = volume


def rewrite(arg, mounts):
    """An argument naming a file under a mount, pointed at the materialised volume instead."""
    for path in sorted(mounts, key=len, reverse=True):
        if arg == path or arg.startswith(path.rstrip("/") + "/"):
            return str(mounts[path]) + arg[len(path):]
    return arg


def die_with_parent():
    """In the child: SIGKILL when the runner dies, however it dies (PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except OSError:
        pass


# --- the runner ---------------------------------------------------------------------------
class Runner:
    def __init__(self, state, proxy_port):
        config.load_kube_config()
        self.core = client.CoreV1Api()
        self.state = state
        self.python = os.environ.get("RIG_PYTHON") or shutil.which("python3")
        self.proxy_url = f"http://127.0.0.1:{proxy_port}"
        self.lock = threading.RLock()
        self.runs = {}  # uid -> Run
        self.done = set()  # uids finished here: not taken on again
        self.ips = {}
        self.last_ip = -1  # index in POD_NETWORK's hosts of the address given last
        self.events = queue.Queue()
        self.nodes = {}
        self.serving = {}  # pod IP -> (loopback address, GraphQL port) of a Ready cluster node

    def allocate_ip(self, uid):
        """The next free address after the last one given, round the pool, as the host-local IPAM
        plugin allocates (and EKS's VPC CNI keeps a freed address cooling down): an address freed by
        a deleted pod is not given to its replacement at once."""
        hosts = list(POD_NETWORK.hosts())
        with self.lock:
            used = set(self.ips.values())
            for step in range(1, len(hosts) + 1):
                at = (self.last_ip + step) % len(hosts)
                if str(hosts[at]) not in used:
                    self.last_ip = at
                    self.ips[uid] = str(hosts[at])
                    return str(hosts[at])
        return str(hosts[0])

    def host_ip(self, node_name):
        """The node's InternalIP as a kubelet reports it; kwok's nodes have none, and their kubelet is here."""
        try:
            node = json.loads(self.core.read_node(node_name, _preload_content=False).data)
            for a in (node.get("status") or {}).get("addresses") or []:
                if a["type"] == "InternalIP" and a["address"]:
                    return a["address"]
        except Exception:
            pass
        return "127.0.0.1"

    def finished(self, run):
        with self.lock:
            self.done.add(run.uid)
            if run.gone:
                self.forget(run)

    def forget(self, run):
        self.runs.pop(run.uid, None)
        self.ips.pop(run.uid, None)
        shutil.rmtree(run.dir, ignore_errors=True)

    def find(self, namespace, name):
        with self.lock:
            found = [r for r in self.runs.values() if (r.namespace, r.name) == (namespace, name) and not r.gone]
        return found[-1] if found else None

    def handle(self, kind, pod):
        uid = pod["metadata"].get("uid")
        with self.lock:
            run = self.runs.get(uid)
        if run is None:
            if kind == "DELETED" or uid in self.done or not ours(pod) or pod["metadata"].get("deletionTimestamp"):
                return
            phase = (pod.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                return
            statuses = (pod.get("status") or {}).get("containerStatuses") or []
            if phase == "Running" and statuses and (statuses[0].get("containerID") or "").startswith("rig://"):
                # Started by an earlier runner, whose processes died with it.
                self.done.add(uid)
                threading.Thread(target=self.lost, args=(pod,), daemon=True).start()
                return
            run = Run(self, pod)  # only the watch thread takes pods on: no race for the uid
            with self.lock:
                self.runs[uid] = run
            log(f"{run.namespace}/{run.name}: scheduled to {pod['spec']['nodeName']}, image "
                f"{run.container['image']}")
            run.thread.start()
            return
        run.update(pod, gone=kind == "DELETED")
        if kind == "DELETED":
            with self.lock:
                if not run.thread.is_alive():
                    self.forget(run)

    def lost(self, pod):
        meta, status = pod["metadata"], pod["status"]
        cs = status["containerStatuses"][0]
        t = stamp()
        try:
            self.core.patch_namespaced_pod_status(meta["name"], meta["namespace"], {"status": {
                "phase": "Failed",
                "conditions": [{"type": k, "status": "False", "reason": "PodCompleted", "lastProbeTime": None,
                                "lastTransitionTime": t} for k in ("Ready", "ContainersReady")],
                "containerStatuses": [{**cs, "ready": False, "started": False, "state": {"terminated": {
                    "exitCode": 137, "reason": "Error", "message": "the rig's pod runner restarted",
                    "startedAt": (cs.get("state", {}).get("running") or {}).get("startedAt", t), "finishedAt": t,
                    "containerID": cs.get("containerID")}}}]}}, _preload_content=False)
            log(f"{meta['namespace']}/{meta['name']}: lost with an earlier runner, marked Failed")
        except Exception as e:
            log(f"{meta['namespace']}/{meta['name']}: could not mark it lost: {e}")

    def watch(self):
        """List, then watch, pods of every namespace; again after any error, with back-off."""
        delay = 0.1
        while True:
            try:
                listing = json.loads(self.core.list_pod_for_all_namespaces(
                    _preload_content=False, _request_timeout=(5, 30)).data)
                seen = set()
                for pod in listing["items"]:
                    seen.add(pod["metadata"]["uid"])
                    self.handle("ADDED", pod)
                with self.lock:
                    vanished = [r for uid, r in self.runs.items() if uid not in seen]
                for r in vanished:
                    self.handle("DELETED", r.pod)
                rv = listing["metadata"]["resourceVersion"]
                delay = 0.1
                while True:
                    rv = self.stream(rv)
                    if rv is None:
                        break  # expired: list again
            except Exception as e:
                log(f"watching pods: {e.__class__.__name__}: {str(e)[:200]}; again in {delay:.1f}s")
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def stream(self, rv):
        resp = self.core.list_pod_for_all_namespaces(
            watch=True, resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=240,
            _preload_content=False, _request_timeout=(5, 300))
        buf = b""
        try:
            for chunk in resp.stream(65536, decode_content=True):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        if obj.get("code") == 410:
                            return None
                        raise RuntimeError(f"watch error: {obj.get('message')}")
                    rv = obj["metadata"].get("resourceVersion", rv)
                    if event["type"] != "BOOKMARK":
                        self.handle(event["type"], obj)
        finally:
            resp.release_conn()
        return rv

    def post_events(self):
        """Events as the kubelet records them, off the pods' critical path."""
        while True:
            run, reason, message, kind = self.events.get()
            t = now()
            try:
                self.core.create_namespaced_event(run.namespace, {
                    "metadata": {"generateName": f"{run.name}."},
                    "involvedObject": {"kind": "Pod", "apiVersion": "v1", "namespace": run.namespace,
                                       "name": run.name, "uid": run.uid,
                                       "fieldPath": f"spec.containers{{{run.container['name']}}}"},
                    "reason": reason, "message": message, "type": kind,
                    "source": {"component": "kubelet", "host": run.pod["spec"]["nodeName"]},
                    "firstTimestamp": stamp(t), "lastTimestamp": stamp(t), "count": 1,
                    "reportingComponent": "kubelet", "reportingInstance": run.pod["spec"]["nodeName"]},
                    _preload_content=False)
            except Exception:
                pass  # events are best effort, for a kubelet too

    # -- the data plane: ready cluster nodes are servers of HAProxy's round-robin backend
    def haproxy(self, command):
        sock = os.environ.get("RIG_DATAPLANE_SOCKET")
        if not sock:
            return ""
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(sock)
                s.sendall(command.encode() + b"\n")
                chunks = []
                while chunk := s.recv(65536):
                    chunks.append(chunk)
            return b"".join(chunks).decode()
        except OSError as e:
            log(f"data plane: {command}: {e}")
            return ""

    @staticmethod
    def server_name(run):
        return f"pod.{run.namespace}.{run.name}"

    def dataplane_join(self, run, address, port):
        with self.lock:
            self.serving[run.pod_ip] = (address, port)
        name = f"{DATAPLANE_BACKEND}/{self.server_name(run)}"
        said = self.haproxy(f"add server {name} {address}:{port} check inter 1s").strip()
        self.haproxy(f"enable health {name}")
        self.haproxy(f"enable server {name}")
        log(f"data plane: {name} at {address}:{port}: {said}")

    def dataplane_leave(self, run):
        with self.lock:
            self.serving.pop(run.pod_ip, None)
        self.remove_server(self.server_name(run))

    def endpoint(self, pod_ip):
        """Where a Ready cluster node with this pod IP serves GraphQL, or None."""
        with self.lock:
            return self.serving.get(pod_ip)

    def remove_server(self, server):
        name = f"{DATAPLANE_BACKEND}/{server}"
        if "No such server" in self.haproxy(f"set server {name} state maint") or \
                not self.haproxy(f"show servers state {DATAPLANE_BACKEND}").count(f" {server} "):
            return
        self.haproxy(f"shutdown sessions server {name}")
        for _ in range(20):
            said = self.haproxy(f"del server {name}").strip()
            if said.startswith("Server deleted") or "No such server" in said:
                log(f"data plane: {name} removed")
                return
            time.sleep(0.25)
        log(f"data plane: {name} left in maintenance ({said})")

    def sweep_dataplane(self):
        """Servers an earlier runner (or a lost pod) left in the data plane."""
        for line in self.haproxy(f"show servers state {DATAPLANE_BACKEND}").splitlines():
            fields = line.split()
            if len(fields) > 3 and fields[3].startswith("pod."):
                self.remove_server(fields[3])

    def loopback(self, pod_ip):
        """The pod's own loopback address, 127.A.B.<last octet of its pod IP>, A.B from this rig's state
        directory: the node binds its real ports there, and two rigs on one machine do not meet."""
        return pod_network.loopback(self.state.resolve(), pod_ip)

    def reset(self):
        with self.lock:
            runs = list(self.runs.values())
        for r in runs:
            r.deleted = r.gone = True
            r.kill()
            r.wake.set()
        for r in runs:
            r.thread.join(5)
        with self.lock:
            self.runs.clear()
            self.ips.clear()
            self.last_ip = -1
        shutil.rmtree(self.state / "pods", ignore_errors=True)
        shutil.rmtree(self.state / "cluster-transactions", ignore_errors=True)
        self.sweep_dataplane()
        log(f"reset: stopped {len(runs)} pod(s), removed their logs")
        return len(runs)

    def shutdown(self, *_):
        log("stopping: killing every pod process")
        for r in list(self.runs.values()):  # no lock: the signal may have interrupted its holder
            r.kill()
        os._exit(0)

    def summary(self):
        with self.lock:
            return [{"namespace": r.namespace, "name": r.name, "uid": r.uid, "state": r.state,
                     "reason": r.waiting_reason if r.state == "waiting" else None,
                     "pid": r.proc.pid if r.proc else None, "deleted": r.deleted}
                    for r in self.runs.values()]


# --- the kubelet API ----------------------------------------------------------------------
class KubeletHandler(BaseHTTPRequestHandler):
    """The kubelet's container log endpoint, as the API server calls it for `kubectl logs`."""

    def log_message(self, fmt, *args):
        pass

    def text(self, code, body):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        if len(parts) != 4 or parts[0] != "containerLogs":
            log(f"kubelet API: {self.command} {url.path}: not served")
            self.text(404, "404 page not found: the rig's kubelet serves container logs only\n")
            return
        _, namespace, name, container = parts
        q = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        run = self.server.runner.find(namespace, name)
        if run is None:
            log(f"kubelet API: logs of {namespace}/{name}/{container}: not a pod of this kubelet")
            self.text(404, f'pod "{name}" does not exist\n')
            return
        if container != run.container["name"]:
            self.text(404, f'container "{container}" not found in pod "{name}"\n')
            return
        if q.get("previous") in ("true", "1"):
            self.text(400, f'previous terminated container "{container}" in pod "{name}" not found\n')
            return
        if run.state == "waiting":
            why = ("trying and failing to pull image" if run.waiting_reason in ("ErrImagePull", "ImagePullBackOff")
                   else run.waiting_reason)
            self.text(400, f'container "{container}" in pod "{name}" is waiting to start: {why}\n')
            return
        log(f"kubelet API: logs of {namespace}/{name}/{container} ({url.query or 'no options'})")
        self.stream_log(run, q)

    def stream_log(self, run, q):
        timestamps = q.get("timestamps") in ("true", "1")
        follow = q.get("follow") in ("true", "1")
        limit = int(q["limitBytes"]) if q.get("limitBytes") else None
        since = None
        if q.get("sinceSeconds"):
            since = now() - datetime.timedelta(seconds=int(q["sinceSeconds"]))
        elif q.get("sinceTime"):
            since = datetime.datetime.fromisoformat(q["sinceTime"].replace("Z", "+00:00"))
        lines = [l for l in run.log_lines() if since is None or l[1] >= since]
        if q.get("tailLines") not in (None, ""):
            tail = int(q["tailLines"])
            lines = lines[-tail:] if tail > 0 else []
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        sent = 0

        def emit(batch):
            nonlocal sent
            for ts, _, content in batch:
                data = (ts + b" " if timestamps else b"") + content
                if limit is not None:
                    data = data[:max(0, limit - sent)]
                if data:
                    self.wfile.write(data)
                    sent += len(data)
                if limit is not None and sent >= limit:
                    return False
            self.wfile.flush()
            return True

        if not emit(lines) or not follow:
            return
        count = len(run.log_lines())
        try:
            while True:
                done = run.log_closed.is_set() or run.deleted or (run.state == "terminated")
                current = run.log_lines()
                if not emit(current[count:]):
                    return
                count = len(current)
                if done:
                    return
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            return


class TLSServer(ThreadingHTTPServer):
    daemon_threads = True

    def finish_request(self, request, client_address):
        try:  # the handshake in the request's thread, not the accept loop
            request = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            log(f"kubelet API: TLS handshake from {client_address} failed: {e}")
            return
        super().finish_request(request, client_address)


# --- the VPC --------------------------------------------------------------------------------
class Route:
    """What an ALB's listener forwards to: its target group's targets and stickiness, as read."""

    def __init__(self, arn, targets, sticky, duration):
        self.arn, self.targets, self.sticky, self.duration = arn, targets, sticky, duration


class LoadBalancers:
    """The account's load balancers, read from the AWS server, cached briefly: which DNS names resolve,
    and where each one's listener forwards."""

    def __init__(self):
        # The VPC's DNS and the ALB's routing are not AWS API clients: the AWS server's faults spare them.
        self.elb = boto3.client("elbv2", config=botocore.config.Config(user_agent_extra=VPC_AGENT))
        self.lock = threading.Lock()
        self.names, self.read_at = {}, 0.0
        self.routes = {}  # DNS name -> (read at, Route)
        self.turn = {}  # target group ARN -> requests routed (round robin)

    def resolves(self, host):
        with self.lock:
            if time.monotonic() - self.read_at > LB_CACHE_SECONDS:
                names = {}
                for page in self.elb.get_paginator("describe_load_balancers").paginate():
                    names.update({lb["DNSName"].lower(): lb["LoadBalancerArn"] for lb in page["LoadBalancers"]})
                self.names, self.read_at = names, time.monotonic()
            return host.lower().rstrip(".") in self.names

    def route(self, host):
        """The Route of the load balancer named `host` (its listener's default forward), or None."""
        host = host.lower().rstrip(".")
        with self.lock:
            cached = self.routes.get(host)
            if cached and time.monotonic() - cached[0] <= LB_CACHE_SECONDS:
                return cached[1]
            arn = self.names.get(host)
        route = None
        if arn:
            listeners = self.elb.describe_listeners(LoadBalancerArn=arn)["Listeners"]
            forward = next((a for l in listeners for a in l["DefaultActions"] if a.get("TargetGroupArn")), None)
            if forward:
                tg = forward["TargetGroupArn"]
                health = self.elb.describe_target_health(TargetGroupArn=tg)["TargetHealthDescriptions"]
                targets = [(h["Target"]["Id"], h["Target"].get("Port"), h["TargetHealth"]["State"]) for h in health]
                attrs = {a["Key"]: a["Value"] for a in
                         self.elb.describe_target_group_attributes(TargetGroupArn=tg)["Attributes"]}
                sticky = attrs.get("stickiness.enabled") == "true" and attrs.get("stickiness.type", "lb_cookie") == \
                    "lb_cookie"
                route = Route(tg, targets, sticky, int(attrs.get("stickiness.lb_cookie.duration_seconds") or 86400))
        with self.lock:
            self.routes[host] = (time.monotonic(), route)
        return route

    def next_turn(self, tg_arn):
        with self.lock:
            n = self.turn.get(tg_arn, 0)
            self.turn[tg_arn] = n + 1
            return n


def alb_cookie(target):
    """An AWSALB value naming the target: opaque to the client, as the ALB's encrypted one is."""
    raw = json.dumps({"t": target, "n": os.urandom(6).hex()}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cookie_target(value):
    try:
        return json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))["t"]
    except (ValueError, KeyError, TypeError):
        return None


def request_cookie(headers, name):
    for header in headers.get_all("Cookie") or []:
        for pair in header.split(";"):
            key, _, value = pair.strip().partition("=")
            if key == name:
                return value
    return None


class ProxyHandler(BaseHTTPRequestHandler):
    """An HTTP forward proxy standing for the VPC's DNS and routing: load balancer names reach the ALB."""

    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def refuse(self, code, message):
        body = (message + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    def forward(self):
        self.close_connection = True
        url = urllib.parse.urlsplit(self.path)
        if url.scheme == "http" and url.hostname:
            host, port = url.hostname, url.port or 80
            path = urllib.parse.urlunsplit(("", "", url.path or "/", url.query, ""))
        else:
            host_header = self.headers.get("Host", "")
            host, _, port = host_header.rpartition(":") if host_header.count(":") == 1 else (host_header, "", "80")
            port, path = int(port or 80), self.path
        body = self.body()
        try:
            known = self.server.load_balancers.resolves(host)
        except Exception as e:
            log(f"vpc: {self.command} http://{host}{path}: cannot read the load balancers ({e})")
            self.refuse(502, f"{host}: the rig's VPC cannot resolve names right now (the AWS server does not answer)")
            return
        if not known:
            log(f"vpc: {self.command} http://{host}:{port}{path}: refused, not a load balancer")
            self.refuse(502, f"{host} does not resolve in the rig's VPC (no load balancer has that DNS name)")
            return
        if port != 80:
            log(f"vpc: {self.command} http://{host}:{port}{path}: refused, no listener")
            self.refuse(502, f"{host}:{port}: the load balancer has no listener on port {port} in the rig's VPC")
            return
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP]
        try:
            route = self.server.load_balancers.route(host)
        except Exception as e:
            log(f"vpc: {self.command} http://{host}{path}: cannot read the load balancer ({e})")
            self.refuse(502, f"{host}: the rig's VPC cannot read the load balancer right now ({e})")
            return
        runner = self.server.runner
        served = [t for t in (route.targets if route else []) if t[2] != "draining" and runner.endpoint(t[0])]
        if served:
            self.to_target(host, path, headers, body, route, served)
            return
        alb = urllib.parse.urlsplit(self.server.alb_url)
        self.relay(host, path, headers, body, (alb.hostname, alb.port), "the ALB data plane")

    def relay(self, host, path, headers, body, to, what, set_cookies=()):
        """Sends the request on to `to` (address, port) and its answer back, with `set_cookies` added."""
        conn = http.client.HTTPConnection(*to, timeout=60)
        try:
            conn.putrequest(self.command, path, skip_host=True, skip_accept_encoding=True)
            for k, v in headers:
                conn.putheader(k, v)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            data = resp.read()
        except OSError as e:
            log(f"vpc: {self.command} http://{host}{path}: {what} failed ({e})")
            self.refuse(502, f"{host}: the load balancer did not answer ({e})")
            return
        finally:
            conn.close()
        log(f"vpc: {self.command} http://{host}{path} -> {what} -> {resp.status}")
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP_BY_HOP:
                self.send_header(k, v)
        for cookie in set_cookies:
            self.send_header("Set-Cookie", cookie)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def to_target(self, host, path, headers, body, route, served):
        """As the ALB: a healthy target (any registered one when none is), by the AWSALB cookie when sticky."""
        healthy = [t for t in served if t[2] == "healthy"] or served
        target = None
        if route.sticky:
            named = cookie_target(request_cookie(self.headers, "AWSALB") or "")
            target = next((t for t in healthy if t[0] == named), None)
        if target is None:
            target = healthy[self.server.load_balancers.next_turn(route.arn) % len(healthy)]
        endpoint = self.server.runner.endpoint(target[0])
        if endpoint is None:
            self.refuse(502, f"{host}: the target {target[0]} went away")
            return
        cookies = []
        if route.sticky:
            value = alb_cookie(target[0])
            expires = (now() + datetime.timedelta(seconds=route.duration)).strftime("%a, %d %b %Y %H:%M:%S GMT")
            cookies = [f"AWSALB={value}; Expires={expires}; Path=/",
                       f"AWSALBCORS={value}; Expires={expires}; Path=/; SameSite=None"]
        self.relay(host, path, headers, body, endpoint, f"target {target[0]}", cookies)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = forward

    def do_CONNECT(self):
        self.refuse(405, "the rig's VPC proxy carries plain HTTP only (the ALB listens on port 80)")


# --- admin ---------------------------------------------------------------------------------
class AdminHandler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        pass

    def reply(self, value):
        body = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/status":
            self.reply({"pods": self.server.runner.summary()})
        else:
            self.send_error(404)

    def do_POST(self):
        if self.path == "/reset":
            self.reply({"stopped": self.server.runner.reset()})
        else:
            self.send_error(404)


def serve(server, name):
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()


def main():
    state, kubelet_port, proxy_port, admin_port, cert, key = sys.argv[1:7]
    runner = Runner(Path(state), int(proxy_port))
    signal.signal(signal.SIGTERM, runner.shutdown)
    signal.signal(signal.SIGINT, runner.shutdown)

    kubelet = TLSServer(("127.0.0.1", int(kubelet_port)), KubeletHandler)
    kubelet.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    kubelet.context.load_cert_chain(cert, key)
    kubelet.runner = runner
    proxy = ThreadingHTTPServer(("127.0.0.1", int(proxy_port)), ProxyHandler)
    proxy.daemon_threads = True
    proxy.load_balancers = LoadBalancers()
    proxy.alb_url = os.environ["RIG_ALB_URL"]
    proxy.runner = runner
    admin = ThreadingHTTPServer(("127.0.0.1", int(admin_port)), AdminHandler)
    admin.daemon_threads = True
    admin.runner = runner
    for server, name in ((kubelet, "kubelet"), (proxy, "vpc-proxy"), (admin, "admin")):
        serve(server, name)
    threading.Thread(target=runner.post_events, name="events", daemon=True).start()
    log(f"kubelet API on 127.0.0.1:{kubelet_port}, VPC proxy on 127.0.0.1:{proxy_port}, "
        f"admin on 127.0.0.1:{admin_port}; running images {', '.join(IMAGES)}")
    runner.sweep_dataplane()
    runner.watch()


if __name__ == "__main__":
    main()
