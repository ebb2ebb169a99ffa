"""Many simulated nodes on the rig, for `make bench` (bench/run.py).

The nodes are made as rig/rig.py `node_manifest()` makes the rig's own (kwok
nodes its controller makes Ready), named `scale-0001`… and without the pool
label, created through the API concurrently. `rig/rig reset` deletes them too
(every object `up` did not make), but one kubectl at a time: `delete_nodes`
deletes them concurrently first.
"""

import collections
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

from kubernetes import client, config
from kubernetes.client.rest import ApiException

REGION = "us-east-1"  # rig/rig.py REGION: the zones of the rig's nodes
WORKERS = 16
NOT_READY = "node.kubernetes.io/not-ready"
TTL = "node.alpha.kubernetes.io/ttl"


def core_api():
    config.load_kube_config()
    cfg = client.Configuration.get_default_copy()
    cfg.connection_pool_maxsize = WORKERS
    # The rig's HTTPS_PROXY is its policy mirror, which tunnels only to the pinned host: the API
    # server is on loopback and reached directly, as kubectl and the plugin reach it.
    cfg.proxy = None
    return client.CoreV1Api(client.ApiClient(cfg))


def names(count):
    return [f"scale-{i:04d}" for i in range(1, count + 1)]


def node_manifest(i, name):
    # The beta labels are the ones the controller manager adds to every node (at about ten
    # nodes a second on the rig), given here so that it has none to add.
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
              "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64",
              "type": "kwok", "topology.kubernetes.io/zone": f"{REGION}{'ab'[i % 2]}"}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels, "annotations": {"kwok.x-k8s.io/node": "fake"}},
            "spec": {},
            "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                       "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"}}}


def poll(what, check, timeout=300):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out after {timeout}s waiting for {what}")
        time.sleep(0.5)


def _ready(node):
    return any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))


def _list_all(api):
    items, token = [], None
    while True:
        page = api.list_node(limit=500, _continue=token) if token else api.list_node(limit=500)
        items.extend(n for n in page.items if n.metadata.name.startswith("scale-"))
        token = page.metadata._continue
        if not token:
            return items


# The controller manager's TTL controller annotates every node with a TTL for the
# cluster's size (kubernetes pkg/controller/ttl: a step up past each sizeMax).
TTL_STEPS = [(100, 0), (500, 15), (1000, 30), (2000, 60), (10000, 300), (2 ** 31, 600)]
QUIET = 3.0


def expected_ttl(total):
    return str(next(ttl for size_max, ttl in TTL_STEPS if total <= size_max))


def create_nodes(api, count, audit):
    """Creates `count` nodes concurrently and waits until the cluster has settled as a
    real one of that size would be: every node Ready, without the not-ready taint the
    API server gives a new node, with the TTL annotation the controller manager gives
    every node for the cluster's size, and no node written by anyone for QUIET seconds
    (by the audit log). On the rig the controller manager writes a few nodes a second
    (its client's rate limit): what it is still to write (the taint off, the annotation)
    is written here instead, guarded by resourceVersion as it guards its own."""
    wanted = names(count)
    with ThreadPoolExecutor(WORKERS) as ex:
        list(ex.map(lambda p: api.create_node(node_manifest(*p), _request_timeout=30), enumerate(wanted, 1)))
    poll(f"{count} nodes Ready", lambda: sum(_ready(n) for n in _list_all(api)) == count)
    ttl = expected_ttl(len(api.list_node().items))

    def settle(node):
        taints = [t for t in node.spec.taints or [] if t.key != NOT_READY]
        if len(taints) == len(node.spec.taints or []) and (node.metadata.annotations or {}).get(TTL) == ttl:
            return
        body = {"metadata": {"resourceVersion": node.metadata.resource_version, "annotations": {TTL: ttl}},
                "spec": {"taints": [api.api_client.sanitize_for_serialization(t) for t in taints] or None}}
        try:
            api.patch_node(node.metadata.name, body)
        except ApiException as e:
            if e.status != 409:  # changed meanwhile: the next round reads it again
                raise

    offset, last_write = os.path.getsize(audit), [time.monotonic()]

    def settled():
        nonlocal offset
        with ThreadPoolExecutor(WORKERS) as ex:
            list(ex.map(settle, _list_all(api)))
        with open(audit, "rb") as f:
            f.seek(offset)
            for line in f:
                if b'"resource":"nodes"' in line or b'"resource": "nodes"' in line:
                    last_write[0] = time.monotonic()
            offset = f.tell()
        return time.monotonic() - last_write[0] >= QUIET
    poll(f"the nodes to settle (no not-ready taint, TTL {ttl}, {QUIET:.0f} s without a node write)", settled)
    return wanted


def unlabel(api, nodes, key):
    with ThreadPoolExecutor(WORKERS) as ex:
        list(ex.map(lambda name: api.patch_node(name, {"metadata": {"labels": {key: None}}}), nodes))


def delete_nodes(api, count):
    def delete(name):
        try:
            api.delete_node(name, _request_timeout=30)
        except ApiException as e:
            if e.status != 404:
                raise
    with ThreadPoolExecutor(WORKERS) as ex:
        list(ex.map(delete, names(count)))
    poll("the scale nodes to be gone", lambda: not _list_all(api))


def audit_since(path, mark, agent="kubectl-scalardb-graphql"):
    """The plugin's requests recorded after byte `mark` of the audit log (which records
    mutating requests only): writes to nodes by node name (every patch or update, refused
    ones included), their response codes, and how many of all its requests got 429."""
    writes, codes, throttled = collections.Counter(), collections.Counter(), 0
    with open(path, "rb") as f:
        f.seek(mark)
        for line in f:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if not e.get("userAgent", "").startswith(agent):
                continue
            code = e.get("responseStatus", {}).get("code")
            throttled += code == 429
            ref = e.get("objectRef", {})
            if ref.get("resource") == "nodes" and e.get("verb") in ("patch", "update"):
                writes[ref.get("name")] += 1
                codes[code] += 1
    return writes, codes, throttled
