"""Plays the AWS Load Balancer Controller (v3.5.0) toward Ingresses of class `alb`.

Nothing fills `status.loadBalancer` in the rig, so this process does, the
way the real controller does on EKS, against the rig's kube-apiserver and
the rig's AWS account. The ALB-building reconciler (IngressGroups, names,
subnets, the deploy order, security groups, TargetGroupBindings, events,
back-off) is alb_controller.py's, which EKS Auto Mode's stand-in
(auto_mode_alb.py) shares; what is this controller's own:

- it acts only while the controller's Deployment in kube-system has an
  available replica (without it, a deleted Ingress stays stuck on its
  finalizer, as on EKS). Its container arguments are the controller's
  configuration: `--cluster-name` names the cluster in tags, subnet
  discovery and resource names, `--ingress-class` the class it serves,
  `--aws-vpc-id` its VPC;
- an Ingress is served when its IngressClass has the controller
  `ingress.k8s.aws/alb` or its `kubernetes.io/ingress.class` annotation
  names the controller's class (never an IngressClass of
  `eks.amazonaws.com/alb`, EKS Auto Mode's);
- `alb.ingress.kubernetes.io/group.name: G` puts an Ingress in group G
  (stack tag `G`, finalizer `group.ingress.k8s.aws/G`), any other Ingress
  is a group of its own (stack `<ns>/<name>`, finalizer
  `ingress.k8s.aws/resources`); the scheme is the `scheme` annotation
  (internal by default), the target type the `target-type` annotation
  (instance by default); subnets without the role tag are found by their
  routes;
- tags `elbv2.k8s.aws/cluster`, `ingress.k8s.aws/stack`,
  `ingress.k8s.aws/resource`; TargetGroupBindings `elbv2.k8s.aws/v1beta1`
  labelled `ingress.k8s.aws/stack…`; the shared backend group
  `k8s-traffic-<cluster, 15>-<hash>` tagged `elbv2.k8s.aws/resource:
  backend-sg`; readiness gates `target-health.elbv2.k8s.aws/<binding>` set
  from the target's health;
- it acts as the controller's leader pod: the Kubernetes API with its
  ServiceAccount's token (the chart's RBAC decides), AWS with the
  credentials its pod's SDK chain gets (lbc_credentials.py: IRSA or EKS Pod
  Identity, authorized against the role's policies);
- a group is reconciled again when the controller's flags change or it is
  restarted (a new leader).

The rig's own duties also run here, each pass, whether or not a controller is
installed: the VPC CNI stand-in gives new pods' addresses to their nodes'
network interfaces (vpc_cni.py), and this process tells the AWS server which
pod addresses answer the ALBs' health checks (pod_network.py), those of pods
whose ContainersReady condition is True — for both controllers' ALBs.

usage: alb_simulator.py EKS_CLUSTER_NAME  (KUBECONFIG and the AWS_* variables set)
The EKS cluster named here gives the VPC the controller runs in when its
Deployment has no `--aws-vpc-id`: the real controller reads it from the
instance metadata of its node, which the rig does not have.
"""

import json
import os
import sys
import time
import traceback
import urllib.request

import boto3
from kubernetes import client, config

import pod_network
from alb_controller import AlbController, Backoff
from lbc_credentials import Chain
from pod_status import condition
from vpc_cni import VpcCni


class Simulator(AlbController):
    def __init__(self, eks_cluster):
        config.load_kube_config()
        super().__init__(boto3.client("eks"), eks_cluster)
        # What the rig sees (is the controller's Deployment available, which pod leads) and the
        # kubelet's part (tokens for the pod); the controller's own calls go with its token.
        self.admin_core = client.CoreV1Api()
        self.apps = client.AppsV1Api()
        self.as_controller = {}  # leader pod uid -> (token expiry, clients)
        # The controller's own calls are signed as its pod's credential chain signs them (IRSA);
        # `eks` stands for what the controller reads from its node's instance metadata (the VPC).
        self.chain = Chain(self.admin_core)
        self.cni = VpcCni(boto3.client("ec2"), self.eks, eks_cluster)
        self.aws_url = os.environ["AWS_ENDPOINT_URL"]

    # --- the controller's own configuration ------------------------------------------------
    def controller_flags(self):
        """The flags of an available controller Deployment, or None when none is available."""
        deployments = self.apps.list_namespaced_deployment(
            "kube-system", label_selector="app.kubernetes.io/name=aws-load-balancer-controller").items
        for d in deployments:
            if (d.status.available_replicas or 0) == 0:
                continue
            flags = {}
            for container in d.spec.template.spec.containers:
                for arg in container.args or []:
                    key, _, value = arg.partition("=")
                    flags[key.lstrip("-")] = value
            if flags.get("cluster-name"):
                return flags
        return None

    def still_active(self):
        return self.controller_flags() is not None

    def act_as(self, pod):
        """The Kubernetes clients of the controller: its ServiceAccount's token (what the kubelet
        mounts in the pod), so the chart's RBAC decides what it may do, as on EKS."""
        uid = pod["metadata"]["uid"]
        held = self.as_controller.get(uid)
        if not held or held[0] - time.time() < 600:
            token = self.admin_core.create_namespaced_service_account_token(
                pod["spec"].get("serviceAccountName") or "default", pod["metadata"]["namespace"],
                client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
                    audiences=[], expiration_seconds=3600,
                    bound_object_ref=client.V1BoundObjectReference(
                        kind="Pod", api_version="v1", name=pod["metadata"]["name"], uid=uid)))).status.token
            admin = client.Configuration.get_default_copy()
            mine = client.Configuration()
            mine.host, mine.ssl_ca_cert, mine.verify_ssl = admin.host, admin.ssl_ca_cert, admin.verify_ssl
            mine.api_key = {"authorization": f"Bearer {token}"}
            api = client.ApiClient(mine)
            held = (time.time() + 3600, (client.CoreV1Api(api), client.NetworkingV1Api(api),
                                         client.DiscoveryV1Api(api), client.CustomObjectsApi(api)))
            self.as_controller = {uid: held}
        self.core, self.net, self.discovery, self.custom = held[1]

    @staticmethod
    def leader(pods):
        """The controller pod that acts (the leader): the oldest Ready one, not terminating."""
        ready = [p for (ns, _), p in pods.items()
                 if ns == "kube-system"
                 and (p["metadata"].get("labels") or {}).get("app.kubernetes.io/name") == "aws-load-balancer-controller"
                 and not p["metadata"].get("deletionTimestamp")
                 and (condition(p, "Ready") or {}).get("status") == "True"]
        return min(ready, key=lambda p: (p["metadata"]["creationTimestamp"], p["metadata"]["name"]), default=None)

    # --- the pod network the ALB's health checks reach ---------------------------------------
    def report_pod_network(self, pods):
        network = pod_network.addresses(
            pods.values(), lambda p: (condition(p, "ContainersReady") or {}).get("status") == "True")
        urllib.request.urlopen(urllib.request.Request(
            f"{self.aws_url}/rig/pod-network", data=json.dumps({"addresses": network}).encode(),
            headers={"Content-Type": "application/json"}), timeout=10).read()

    # --- loop ---------------------------------------------------------------------------------
    def tick(self):
        raw_pods = json.loads(self.admin_core.list_pod_for_all_namespaces(_preload_content=False).data)["items"]
        pods = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in raw_pods}
        try:
            self.cni.sync(raw_pods)
        except Exception:  # the pods' addresses, not the controller's business: the next pass
            traceback.print_exc()
        self.report_pod_network(pods)
        flags = self.controller_flags()
        leader = self.leader(pods)
        if flags is None or leader is None:
            self.reconciled.clear()  # a controller that starts again reconciles everything
            return
        clients = self.chain.clients(leader)
        self.elb, self.ec2 = clients["elbv2"], clients["ec2"]
        self.act_as(leader)
        # A new leader (a restart) reconciles everything, with its own credentials.
        flags = dict(flags, leader=leader["metadata"]["uid"])
        if self.backoff.leader != leader["metadata"]["uid"]:
            self.backoff = Backoff(leader["metadata"]["uid"])  # a new process: a new rate limiter
        if not self.reconcile_groups(flags):
            return
        raw_nodes = json.loads(self.core.list_node(_preload_content=False).data)["items"]
        nodes = {n["metadata"]["name"]: n for n in raw_nodes}
        self.reconcile_bindings(pods, nodes, flags)


def main():
    sim = Simulator(sys.argv[1])
    print("alb-simulator: watching Ingresses of class alb", flush=True)
    while True:
        try:
            sim.tick()
        except Exception:  # keep playing the controller whatever one pass hit
            traceback.print_exc()
        time.sleep(0.5)


if __name__ == "__main__":
    main()
