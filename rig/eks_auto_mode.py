"""EKS Auto Mode's switch in the rig's AWS account: the cluster configuration `DescribeCluster`
reports, which moto 5.2.5 keeps no trace of.

EKS Auto Mode is three capabilities of a cluster that are turned on or off together
(`UpdateClusterConfig`; AWS's "Disable EKS Auto Mode" page: "The compute, block storage, and
load balancing capabilities must all be enabled or disabled in the same request"). While on,
`DescribeCluster` reports (shapes from botocore's `eks` model):

    computeConfig: {enabled: true, nodePools: ["general-purpose", "system"], nodeRoleArn: ...}
    kubernetesNetworkConfig: {..., elasticLoadBalancing: {enabled: true}}
    storageConfig: {blockStorage: {enabled: true}}

and while off `enabled: false` in each (a cluster that never had Auto Mode, the seed's,
reports none of them, as moto makes it).

The rig turns it on and off with `POST /rig/eks/auto-mode` `{"cluster": NAME, "enabled":
BOOL}` (`rig/rig eks auto-mode on|off`), with the built-in node pools and the node role
`arn:aws:iam::<account>:role/AmazonEKSAutoNodeRole` (the name AWS suggests). EKS's own API
does the same (the AWS server hands this module the requests before moto, whose
UpdateClusterConfig ignores these fields): `UpdateClusterConfig` with `computeConfig`,
`storageConfig` and `kubernetesNetworkConfig.elasticLoadBalancing` all enabled or all
disabled (InvalidParameterException otherwise, or when other settings ride along, or when
node pools other than the two built-in ones, or none with a node role missing, are
asked for), answered with an `AutoModeUpdate` update that `DescribeUpdate` reports
Successful. Simpler than EKS: the change is made at once (no UPDATING cluster), the node role
is not looked up in IAM, and enabling builds no nodes (kwok's nodes stay what they are).

Every change (and a reset of the account: the seed's cluster has Auto Mode off) is written to
`$RIG_STATE/eks-auto-mode.json` (STATE_FILE, `{"clusters": [names with Auto Mode on]}`):
the Pod Identity agent stand-in serves while it is on (Auto Mode's nodes run the agent
without the add-on), and EKS Auto Mode's load balancer stand-in (auto_mode_alb.py) acts
while it is on, reading it there rather than calling DescribeCluster each pass.

usage: imported by aws_server.py; `enabled(state_dir, cluster)` by the rig's other processes.
"""

import json
import os
import re
import threading
import time
import uuid

import eks_pod_identity

STATE_FILE = "eks-auto-mode.json"
NODE_POOLS = ["general-purpose", "system"]
NODE_ROLE = "AmazonEKSAutoNodeRole"


def read_state(state_dir):
    try:
        with open(os.path.join(state_dir, STATE_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"clusters": []}


def enabled(state_dir, cluster):
    """Whether the cluster has EKS Auto Mode on, as the AWS server last wrote it."""
    return cluster in read_state(state_dir).get("clusters", [])


UPDATE_CONFIG = re.compile(r"^/clusters/([^/]+)/update-config$")
DESCRIBE_UPDATE = re.compile(r"^/clusters/([^/]+)/updates/([^/]+)$")


class AutoMode:
    def __init__(self, account_id, region, state_dir):
        self.account_id, self.region, self.state_dir = account_id, region, state_dir
        self.lock = threading.RLock()
        self.updates = {}

    def reset(self):
        """After the account is seeded again: no cluster has Auto Mode."""
        with self.lock:
            self.updates = {}
            self.publish()

    def cluster(self, name):
        from moto.backends import get_backend
        return get_backend("eks")[self.account_id][self.region].clusters.get(name)

    def is_on(self, name):
        cluster = self.cluster(name)
        return bool(cluster is not None and (getattr(cluster, "compute_config", None) or {}).get("enabled"))

    def publish(self):
        if not self.state_dir:
            return
        from moto.backends import get_backend
        clusters = get_backend("eks")[self.account_id][self.region].clusters
        on = sorted(name for name in list(clusters) if self.is_on(name))
        path = os.path.join(self.state_dir, STATE_FILE)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump({"clusters": on}, f)
        os.replace(tmp, path)

    def apply(self, name, enabled, node_pools=None, node_role=None):
        """Auto Mode on or off for the cluster: its three capabilities together."""
        with self.lock:
            cluster = self.cluster(name)
            if cluster is None:
                raise eks_pod_identity.not_found(f"No cluster found for name: {name}.")
            if enabled:
                pools = NODE_POOLS if node_pools is None else node_pools
                role = node_role or f"arn:aws:iam::{self.account_id}:role/{NODE_ROLE}"
                cluster.compute_config = {"enabled": True, "nodePools": list(pools),
                                          **({"nodeRoleArn": role} if pools or node_role else {})}
            else:
                cluster.compute_config = {"enabled": False}
            cluster.storage_config = {"blockStorage": {"enabled": bool(enabled)}}
            cluster.kubernetes_network_config = dict(cluster.kubernetes_network_config or {},
                                                     elasticLoadBalancing={"enabled": bool(enabled)})
            self.publish()
            print(f"aws: EKS Auto Mode {'on' if enabled else 'off'} for cluster {name}", flush=True)

    # --- the rig's switch ----------------------------------------------------------------------
    def switch(self, body):
        """`POST /rig/eks/auto-mode`: (HTTP status, text)."""
        try:
            want = json.loads(body or b"{}")
            name, on = want["cluster"], want["enabled"]
            if not isinstance(on, bool) or not isinstance(name, str):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return 400, 'want {"cluster": NAME, "enabled": true|false}\n'
        try:
            self.apply(name, on)
        except eks_pod_identity.Refusal as r:
            return r.status, r.message + "\n"
        return 200, json.dumps({"cluster": name, "autoMode": on}) + "\n"

    # --- EKS's API -----------------------------------------------------------------------------
    def handle(self, environ, body):
        """The answer to UpdateClusterConfig with Auto Mode's settings or to DescribeUpdate of an
        update made here, or None to let moto serve the request."""
        method, path = environ.get("REQUEST_METHOD"), environ.get("PATH_INFO", "")
        match = UPDATE_CONFIG.match(path) if method == "POST" else None
        if match:
            try:
                request = json.loads(body) if body else {}
            except ValueError:
                return None  # moto answers what it cannot parse
            network = request.get("kubernetesNetworkConfig") if isinstance(request, dict) else None
            if not isinstance(request, dict) or not (
                    "computeConfig" in request or "storageConfig" in request
                    or (isinstance(network, dict) and "elasticLoadBalancing" in network)):
                return None
            eks_pod_identity.record(environ, body)
            if "Credential=" not in environ.get("HTTP_AUTHORIZATION", ""):
                return eks_pod_identity.answer(403, {"message": "Missing Authentication Token"},
                                               "MissingAuthenticationTokenException")
            try:
                return eks_pod_identity.answer(200, self.update_config(match.group(1), request))
            except eks_pod_identity.Refusal as r:
                print(f"aws: UpdateClusterConfig: {r.code}: {r.message}", flush=True)
                return eks_pod_identity.answer(r.status, {**r.extra, "message": r.message}, r.code)
        match = DESCRIBE_UPDATE.match(path) if method == "GET" else None
        if match:
            with self.lock:
                update = self.updates.get((match.group(1), match.group(2)))
            if update is not None:
                return eks_pod_identity.answer(200, {"update": dict(update, status="Successful")})
        return None

    def update_config(self, name, request):
        invalid = eks_pod_identity.invalid
        if self.cluster(name) is None:
            raise eks_pod_identity.not_found(f"No cluster found for name: {name}.", clusterName=name)
        compute = request.get("computeConfig") or {}
        storage = (request.get("storageConfig") or {}).get("blockStorage") or {}
        network = request.get("kubernetesNetworkConfig") or {}
        balancing = network.get("elasticLoadBalancing") or {}
        flags = [compute.get("enabled"), storage.get("enabled"), balancing.get("enabled")]
        if any(not isinstance(f, bool) for f in flags) or len(set(flags)) != 1:
            raise invalid("The compute, block storage, and load balancing capabilities of EKS Auto Mode must "
                          "all be enabled or all be disabled in the same request.", clusterName=name)
        others = sorted(k for k in request if k not in ("computeConfig", "storageConfig", "kubernetesNetworkConfig",
                                                       "clientRequestToken"))
        others += sorted(f"kubernetesNetworkConfig.{k}" for k in network if k != "elasticLoadBalancing")
        if others:
            raise invalid(f"Only one type of update can be allowed; {', '.join(others)} cannot be updated with "
                          "EKS Auto Mode's configuration.", clusterName=name)
        enabled = flags[0]
        pools = compute.get("nodePools")
        role = compute.get("nodeRoleArn")
        if enabled:
            if pools is not None and (not isinstance(pools, list) or not set(pools) <= set(NODE_POOLS)):
                raise invalid(f"nodePools must be a subset of {NODE_POOLS}.", clusterName=name)
            if (pools is None or pools) and not role:
                raise invalid("nodeRoleArn is required when the compute capability has node pools.",
                              clusterName=name)
            self.apply(name, True, NODE_POOLS if pools is None else pools, role)
        else:
            self.apply(name, False)
        params = [{"type": "ComputeConfig", "value": json.dumps(compute)},
                  {"type": "StorageConfig", "value": json.dumps(request.get("storageConfig"))},
                  {"type": "KubernetesNetworkConfig", "value": json.dumps({"elasticLoadBalancing": balancing})}]
        update = {"id": str(uuid.uuid4()), "status": "InProgress", "type": "AutoModeUpdate", "params": params,
                  "createdAt": round(time.time(), 3), "errors": []}
        with self.lock:
            self.updates[(name, update["id"])] = update
        return {"update": update}
