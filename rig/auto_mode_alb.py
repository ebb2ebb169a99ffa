"""Plays EKS Auto Mode's load balancing capability toward Ingresses of the class controller
`eks.amazonaws.com/alb`, while the cluster has Auto Mode on (eks_auto_mode.py's state file).

On EKS, Auto Mode runs the load balancer controller itself (no Deployment, no chart, no
webhooks in the cluster), from the same code base as the self-managed AWS Load Balancer
Controller: this stand-in is alb_controller.py's reconciler (IngressGroups, names, subnets,
the deploy order, security groups, TargetGroupBindings, events, back-off) with what AWS's
EKS Auto Mode documentation and managed policies say differs (docs/rig.md, "EKS Auto Mode",
lists the sources):

- it serves an Ingress whose `spec.ingressClassName` names an IngressClass with the
  controller `eks.amazonaws.com/alb`, never one of `ingress.k8s.aws/alb` (the self-managed
  controller's) nor one named only by the `kubernetes.io/ingress.class` annotation (not
  supported on Auto Mode);
- the IngressClass's `spec.parameters`, when set, must name a cluster-scoped
  `IngressClassParams` of API group `eks.amazonaws.com` (v1), which configures every Ingress
  of the class and wins over its annotations: `scheme`, `ipAddressType`, `group.name`,
  `subnets` (`ids`, or `tags`/`matchTags` to match in the VPC), `certificateARNs` (an HTTPS:443
  listener, the first the default certificate), `tags` (on every resource), `inboundCIDRs`,
  `loadBalancerAttributes`, `targetType`, `namespaceSelector` (an Ingress in another
  namespace: FailedBuildModel `namespaceSelector of IngressClassParams <name> mismatch`). A
  field the stand-in does not apply (`sslPolicy`, `wafv2AclArn`, `listeners`,
  `ipamConfiguration`, `minimumLoadBalancerCapacity`, `prefixListsIDs`) fails the build
  (stricter than EKS, never silently ignored); so does `ipAddressType` other than ipv4 (the
  rig's VPC has no IPv6). A missing IngressClassParams, or parameters of another kind or
  group: FailedBuildModel;
- IngressGroups come from `group.name` of the IngressClassParams only: the
  `alb.ingress.kubernetes.io/group.name` annotation is not supported and is ignored (AWS's
  comparison table; an Auto Mode ALB of an Ingress carrying it is observed tagged with the
  Ingress's own stack). Explicit group: finalizer `group.ingress.eks.amazonaws.com/<group>`;
  an Ingress of its own: `ingress.eks.amazonaws.com/resources`;
- the target type is `ip` by default; subnets are discovered only by the role tags
  (`kubernetes.io/role/internal-elb` or `kubernetes.io/role/elb`, value `1` or empty): without
  them there is no fall-back to routing, so an internal ALB needs its private subnets tagged
  (or the IngressClassParams' `subnets`);
- no readiness gates: it never injects nor sets `target-health.elbv2.k8s.aws/…` conditions;
- tags `eks:eks-cluster-name`, `ingress.eks.amazonaws.com/stack`,
  `ingress.eks.amazonaws.com/resource` (`LoadBalancer`, the target group's
  `<ns>/<ingress>-<svc>:<port>`, `ManagedLBSecurityGroup`); TargetGroupBindings of
  `eks.amazonaws.com/v1` labelled `ingress.eks.amazonaws.com/stack-namespace` and
  `…/stack-name` (or `…/stack`); the shared backend group `k8s-traffic-<cluster>-<hash>`
  tagged `eks:eks-cluster-name` and `ingress.eks.amazonaws.com/resource` /
  `service.eks.amazonaws.com/resource: ManagedBackendSecurityGroup`;
- it acts as EKS does, with the cluster's IAM role and the EKS service-linked role, not a
  pod's: on the rig the account's administrator keys (the role AWS suggests carries
  AmazonEKSClusterPolicy, which alone allows every ELBv2 and security-group action used here
  on any resource) and the cluster-admin kubeconfig;
- events as the controller's: SuccessfullyReconciled (Normal), FailedBuildModel,
  FailedDeployModel, FailedNetworkReconcile (Warning).

When Auto Mode turns on, EKS installs the CRDs `ingressclassparams.eks.amazonaws.com` and
`targetgroupbindings.eks.amazonaws.com` (v1); this process creates them (again, if they are
deleted while it is on). When it turns off, as AWS documents ("Disable EKS Auto Mode": EKS
deletes all load balancers operated by Auto Mode), this process deletes every load balancer,
target group and security group it tagged for the cluster (its rules on the pods' groups
revoked first), its TargetGroupBindings and its finalizers, then each CRD of which no
object remains. It writes how far it got to `$RIG_STATE/auto-mode-alb.json`
(`{"enabled": BOOL, "settled": BOOL}`), which `rig/rig eks auto-mode on|off` waits for.

usage: auto_mode_alb.py EKS_CLUSTER_NAME  (KUBECONFIG, RIG_STATE and the AWS_* variables set)
"""

import json
import os
import sys
import time
import traceback

import boto3
import botocore.config
from kubernetes import client, config
from kubernetes.client.rest import ApiException

import eks_auto_mode
from alb_controller import (
    MANAGED_LB_SG, PREFIX, AlbController, Backoff, BuildError, digest, sanitized, sha256_hex, string_map)
from lbc_credentials import AwsCallError, Sdk

PARAMS_GROUP, PARAMS_VERSION, PARAMS_PLURAL = "eks.amazonaws.com", "v1", "ingressclassparams"
PHASE_FILE = "auto-mode-alb.json"
# IngressClassParams fields this stand-in does not apply: a build that needs one fails.
NOT_APPLIED = ("sslPolicy", "wafv2AclArn", "listeners", "ipamConfiguration", "minimumLoadBalancerCapacity",
               "prefixListsIDs", "PrefixListsIDs")
BACKEND_SG = "ManagedBackendSecurityGroup"


def _key_values():
    return {"type": "array", "items": {"type": "object", "required": ["key", "value"], "properties": {
        "key": {"type": "string"}, "value": {"type": "string"}}}}


def _label_selector():
    return {"type": "object", "x-kubernetes-map-type": "atomic", "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {"type": "array", "items": {"type": "object", "required": ["key", "operator"],
                                                        "properties": {
            "key": {"type": "string"}, "operator": {"type": "string", "enum": ["In", "NotIn", "Exists",
                                                                              "DoesNotExist"]},
            "values": {"type": "array", "items": {"type": "string"}}}}}}}


def _tag_selector():
    return {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}}


def crd(plural, kind, scope, spec_schema, required=()):
    spec = dict(spec_schema, **({"required": list(required)} if required else {}))
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{PARAMS_GROUP}"},
        "spec": {"group": PARAMS_GROUP, "scope": scope,
                 "names": {"plural": plural, "singular": plural if plural.endswith("params") else kind.lower(),
                           "kind": kind, "listKind": f"{kind}List"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                               "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                   "apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                   "metadata": {"type": "object"}, "spec": spec,
                                   "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}]}}


# The two CRDs EKS installs with Auto Mode's load balancing, their fields from AWS's
# IngressClassParams reference and comparison tables and the controller's own CRDs.
INGRESS_CLASS_PARAMS_CRD = crd("ingressclassparams", "IngressClassParams", "Cluster", {
    "type": "object", "properties": {
        "scheme": {"type": "string", "enum": ["internal", "internet-facing"]},
        "ipAddressType": {"type": "string", "enum": ["ipv4", "dualstack", "dualstack-without-public-ipv4"]},
        "group": {"type": "object", "required": ["name"], "properties": {"name": {
            "type": "string", "maxLength": 63, "pattern": "^([a-z0-9][-a-z0-9.]*)?[a-z0-9]$"}}},
        "namespaceSelector": _label_selector(),
        "subnets": {"type": "object", "properties": {
            "ids": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": "^subnet-[0-9a-f]+$"}},
            "tags": _tag_selector(), "matchTags": _tag_selector()},
            "x-kubernetes-validations": [{"rule": "(has(self.ids) ? 1 : 0) + (has(self.tags) ? 1 : 0) + "
                                                  "(has(self.matchTags) ? 1 : 0) == 1",
                                          "message": "exactly one of ids, tags or matchTags must be specified"}]},
        "certificateARNs": {"type": "array", "items": {"type": "string"}},
        "tags": _key_values(),
        "loadBalancerAttributes": _key_values(),
        "inboundCIDRs": {"type": "array", "items": {"type": "string"}},
        "targetType": {"type": "string", "enum": ["instance", "ip"]},
        "sslPolicy": {"type": "string"},
        "wafv2AclArn": {"type": "string"},
        "prefixListsIDs": {"type": "array", "items": {"type": "string"}},
        "ipamConfiguration": {"type": "object", "properties": {"ipv4IPAMPoolId": {"type": "string"}}},
        "minimumLoadBalancerCapacity": {"type": "object", "required": ["capacityUnits"], "properties": {
            "capacityUnits": {"type": "integer", "format": "int32"}}},
        "listeners": {"type": "array", "items": {"type": "object", "properties": {
            "protocol": {"type": "string"}, "port": {"type": "integer", "format": "int32"},
            "attributes": _key_values()}}},
    }})
INGRESS_CLASS_PARAMS_CRD["spec"]["versions"][0].pop("subresources")
TARGET_GROUP_BINDINGS_CRD = crd("targetgroupbindings", "TargetGroupBinding", "Namespaced", {
    "type": "object", "properties": {
        "targetGroupARN": {"type": "string"}, "targetGroupName": {"type": "string"},
        "targetType": {"type": "string", "enum": ["instance", "ip"]},
        "serviceRef": {"type": "object", "required": ["name", "port"], "properties": {
            "name": {"type": "string"}, "port": {"x-kubernetes-int-or-string": True}}},
        "ipAddressType": {"type": "string", "enum": ["ipv4", "ipv6"]},
        "vpcID": {"type": "string"},
        "nodeSelector": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "networking": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "multiClusterTargetGroup": {"type": "boolean"},
    }}, required=["serviceRef", "targetType"])
CRDS = [INGRESS_CLASS_PARAMS_CRD, TARGET_GROUP_BINDINGS_CRD]


def selector_matches(selector, labels):
    """A label selector (matchLabels, matchExpressions) against a namespace's labels."""
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


class AutoModeAlb(AlbController):
    CONTROLLER = "eks.amazonaws.com/alb"
    CLUSTER_TAG = "eks:eks-cluster-name"
    STACK_TAG = "ingress.eks.amazonaws.com/stack"
    RESOURCE_TAG = "ingress.eks.amazonaws.com/resource"
    STACK_LABEL_PREFIX = "ingress.eks.amazonaws.com/"
    IMPLICIT_FINALIZER = "ingress.eks.amazonaws.com/resources"
    GROUP_FINALIZER_PREFIX = "group.ingress.eks.amazonaws.com/"
    TGB_GROUP, TGB_VERSION, TGB_PLURAL = PARAMS_GROUP, "v1", "targetgroupbindings"
    SHARED_RULE = "eks.amazonaws.com/targetGroupBinding=shared"
    READINESS_GATES = False
    DEFAULT_TARGET_TYPE = "ip"
    DISCOVER_BY_ROUTES = False
    NAME = "auto-mode-alb"

    def __init__(self, eks_cluster):
        config.load_kube_config()
        agent = botocore.config.Config(user_agent_extra="eks-auto-mode")
        super().__init__(boto3.client("eks", config=agent), eks_cluster)
        self.state_dir = os.environ["RIG_STATE"]
        # EKS's own access: the cluster's administrator in Kubernetes, its roles in AWS (above).
        self.core, self.net = client.CoreV1Api(), client.NetworkingV1Api()
        self.discovery, self.custom = client.DiscoveryV1Api(), client.CustomObjectsApi()
        self.extensions = client.ApiextensionsV1Api()
        self.elb = Sdk("elbv2", boto3.client("elbv2", config=agent))
        self.ec2 = Sdk("ec2", boto3.client("ec2", config=agent))
        self.on = None  # unknown until the first pass
        self.settled = False
        self.context = {}
        self.cached_vpc = None

    def vpc(self, flags):
        if self.cached_vpc is None:
            self.cached_vpc = super().vpc(flags)
        return self.cached_vpc

    def still_active(self):
        return eks_auto_mode.enabled(self.state_dir, self.eks_cluster)

    # --- configuration: IngressClasses and their IngressClassParams ---------------------------
    def load_context(self):
        classes = {c.metadata.name: c for c in self.net.list_ingress_class().items
                   if c.spec.controller == self.CONTROLLER}
        try:
            params = {p["metadata"]["name"]: p for p in self.custom.list_cluster_custom_object(
                PARAMS_GROUP, PARAMS_VERSION, PARAMS_PLURAL)["items"]}
        except ApiException as e:
            if e.status != 404:
                raise
            params = {}
        namespaces = {}
        if any((p.get("spec") or {}).get("namespaceSelector") for p in params.values()):
            namespaces = {n.metadata.name: n.metadata.labels or {} for n in self.core.list_namespace().items}
        return {"classes": classes, "params": params, "namespaces": namespaces}

    def ingress_classes(self):
        return self.context

    def class_config(self, ing, context):
        """The IngressClassParams spec that configures the Ingress ({} without parameters)."""
        cls = context["classes"][ing.spec.ingress_class_name]
        ref = cls.spec.parameters
        if ref is None:
            return {}
        if ref.api_group != PARAMS_GROUP or ref.kind != "IngressClassParams":
            raise BuildError(f"IngressClass {cls.metadata.name} parameters must be IngressClassParams of "
                             f"{PARAMS_GROUP}, not {ref.kind} of {ref.api_group or 'core'}")
        if ref.scope and ref.scope != "Cluster":
            raise BuildError(f"IngressClass {cls.metadata.name} parameters must be cluster-scoped IngressClassParams")
        params = context["params"].get(ref.name)
        if params is None:
            raise BuildError(f"{PARAMS_PLURAL}.{PARAMS_GROUP} \"{ref.name}\" not found")
        spec = params.get("spec") or {}
        selector = spec.get("namespaceSelector")
        if selector and not selector_matches(selector, context["namespaces"].get(ing.metadata.namespace, {})):
            raise BuildError(f"namespaceSelector of IngressClassParams {ref.name} mismatch")
        return dict(spec, _name=ref.name)

    def classify(self, ing, context, flags):
        own = (ing.metadata.namespace, ing.metadata.name)
        if not ing.spec.ingress_class_name or ing.spec.ingress_class_name not in context["classes"]:
            return False, own, None
        try:
            spec = self.class_config(ing, context)
        except BuildError as e:
            return True, own, str(e)
        group = (spec.get("group") or {}).get("name")
        return True, ("", group) if group else own, None

    def settings(self, group, flags):
        specs = [self.class_config(m, self.context) for m in group.members]
        names = {s.get("_name") for s in specs}
        if len(names) > 1:
            raise BuildError(f"conflicting IngressClassParams for IngressGroup {group.stack}: "
                             f"{sorted(n or '' for n in names)}")
        spec = specs[0] if specs else {}
        for field in NOT_APPLIED:
            if spec.get(field):
                raise BuildError(f"IngressClassParams {spec['_name']}: spec.{field} is not applied by the rig's "
                                 "EKS Auto Mode")
        annotations = [m.metadata.annotations or {} for m in group.members]

        def one(field, suffix, default, allowed):
            if spec.get(field):
                value = spec[field]
            else:
                found = {a.get(PREFIX + suffix) for a in annotations} - {None}
                if len(found) > 1:
                    raise BuildError(f"conflicting {suffix}: {sorted(found)}")
                value = found.pop() if found else default
            if value not in allowed:
                raise BuildError(f"unknown {suffix}: {value}")
            return value
        scheme = one("scheme", "scheme", "internal", ("internal", "internet-facing"))
        ip_type = one("ipAddressType", "ip-address-type", "ipv4", ("ipv4", "dualstack",
                                                                  "dualstack-without-public-ipv4"))
        if ip_type != "ipv4":
            raise BuildError(f"ipAddressType {ip_type}: the rig's VPC and subnets have no IPv6 CIDR block")
        subnets = None
        if spec.get("subnets"):
            s = spec["subnets"]
            subnets = {"ids": s["ids"]} if s.get("ids") else {"tags": s.get("matchTags") or s.get("tags") or {}}
        tags = {}
        for a in annotations:
            tags.update(string_map(a, "tags"))
        tags.update({t["key"]: t["value"] for t in spec.get("tags") or []})
        reserved = sorted(k for k in tags if k in (self.CLUSTER_TAG, self.STACK_TAG, self.RESOURCE_TAG)
                          or k.startswith(("eks:", "aws:")))
        if reserved:
            raise BuildError(f"user tags must not use the reserved key {reserved[0]}")
        if spec.get("loadBalancerAttributes") is not None:
            lb_attributes = {a["key"]: a["value"] for a in spec["loadBalancerAttributes"]}
        else:
            found = [string_map(a, "load-balancer-attributes") for a in annotations if
                     PREFIX + "load-balancer-attributes" in a]
            lb_attributes = found[0] if found else None
        certificates = list(spec.get("certificateARNs") or [])
        if not certificates:
            for a in annotations:
                certificates += [c.strip() for c in (a.get(PREFIX + "certificate-arn") or "").split(",") if c.strip()]
        listener = ("HTTPS", 443, certificates) if certificates else ("HTTP", 80, [])
        cidrs = list(spec.get("inboundCIDRs") or [])
        if not cidrs:
            for a in annotations:
                cidrs += [c.strip() for c in (a.get(PREFIX + "inbound-cidrs") or "").split(",") if c.strip()]
        return {"scheme": scheme, "subnets": subnets, "target_type": spec.get("targetType"), "tags": tags,
                "lb_attributes": lb_attributes, "listener": listener, "inbound_cidrs": cidrs or ["0.0.0.0/0"],
                "ip_address_type": ip_type}

    def backend_sg_spec(self, cluster):
        return (f"k8s-traffic-{sanitized(cluster)[:32]}-{sha256_hex('eks-auto-mode/', cluster)[:10]}",
                "[k8s] Shared Backend SecurityGroup for LoadBalancers",
                {self.CLUSTER_TAG: cluster, self.RESOURCE_TAG: BACKEND_SG,
                 "service.eks.amazonaws.com/resource": BACKEND_SG})

    # --- the CRDs EKS installs ----------------------------------------------------------------
    def ensure_crds(self):
        """Creates a missing CRD; True once both are Established."""
        established = True
        for manifest in CRDS:
            name = manifest["metadata"]["name"]
            try:
                found = self.extensions.read_custom_resource_definition(name)
            except ApiException as e:
                if e.status != 404:
                    raise
                self.extensions.create_custom_resource_definition(manifest)
                print(f"{self.NAME}: installed CRD {name}", flush=True)
                established = False
                continue
            conditions = (found.status.conditions or []) if found.status else []
            established &= any(c.type == "Established" and c.status == "True" for c in conditions)
        return established

    def remove_unused_crds(self):
        for manifest in CRDS:
            name = manifest["metadata"]["name"]
            plural = manifest["spec"]["names"]["plural"]
            try:
                left = self.custom.list_cluster_custom_object(PARAMS_GROUP, "v1", plural, limit=1)["items"]
            except ApiException as e:
                if e.status == 404:
                    continue
                raise
            if left:
                print(f"{self.NAME}: CRD {name} kept: {plural} remain", flush=True)
                continue
            try:
                self.extensions.delete_custom_resource_definition(name)
                print(f"{self.NAME}: removed CRD {name}", flush=True)
            except ApiException as e:
                if e.status != 404:
                    raise

    # --- Auto Mode turned off: EKS deletes what it operated ----------------------------------
    def ours(self, arns):
        found = []
        for i in range(0, len(arns), 20):
            for desc in self.elb.describe_tags(ResourceArns=arns[i:i + 20])["TagDescriptions"]:
                tags = {t["Key"]: t["Value"] for t in desc["Tags"]}
                if tags.get(self.CLUSTER_TAG) == self.eks_cluster and self.RESOURCE_TAG in tags:
                    found.append(desc["ResourceArn"])
        return found

    def disable(self):
        flags = {"cluster-name": self.eks_cluster}
        try:
            for tgb in self.custom.list_cluster_custom_object(self.TGB_GROUP, self.TGB_VERSION,
                                                             self.TGB_PLURAL)["items"]:
                labels = tgb["metadata"].get("labels") or {}
                if any(k.startswith(self.STACK_LABEL_PREFIX) for k in labels):
                    try:
                        self.custom.delete_namespaced_custom_object(
                            self.TGB_GROUP, self.TGB_VERSION, tgb["metadata"]["namespace"], self.TGB_PLURAL,
                            tgb["metadata"]["name"])
                    except ApiException as e:
                        if e.status != 404:
                            raise
        except ApiException as e:
            if e.status != 404:
                raise
        lbs = [lb["LoadBalancerArn"] for lb in self.elb.describe_load_balancers()["LoadBalancers"]]
        for arn in self.ours(lbs):
            self.delete_load_balancer(arn)
            print(f"{self.NAME}: Auto Mode off: deleted {arn}", flush=True)
        tgs = [tg["TargetGroupArn"] for tg in self.elb.describe_target_groups()["TargetGroups"]]
        for arn in self.ours(tgs):
            self.elb.delete_target_group(TargetGroupArn=arn)
        for sg in self.ec2.describe_security_groups(Filters=[
                {"Name": f"tag:{self.CLUSTER_TAG}", "Values": [self.eks_cluster]},
                {"Name": f"tag:{self.RESOURCE_TAG}", "Values": [MANAGED_LB_SG]}])["SecurityGroups"]:
            self.delete_security_group(sg["GroupId"])
        self.release_backend_sg(flags)
        for ing in self.net.list_ingress_for_all_namespaces().items:
            mine = [f for f in ing.metadata.finalizers or [] if f == self.IMPLICIT_FINALIZER
                    or f.startswith(self.GROUP_FINALIZER_PREFIX)]
            if mine:
                try:
                    self.set_finalizers(ing, [f for f in ing.metadata.finalizers if f not in mine])
                except ApiException as e:
                    if e.status != 404:
                        raise
        self.remove_unused_crds()

    # --- loop ---------------------------------------------------------------------------------
    def publish(self):
        path = os.path.join(self.state_dir, PHASE_FILE)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump({"enabled": bool(self.on), "settled": self.settled}, f)
        os.replace(tmp, path)

    def traces(self):
        """Whether Kubernetes shows anything of Auto Mode's load balancing: its CRDs or its finalizers."""
        for manifest in CRDS:
            try:
                self.extensions.read_custom_resource_definition(manifest["metadata"]["name"])
                return True
            except ApiException as e:
                if e.status != 404:
                    raise
        return any(f == self.IMPLICIT_FINALIZER or f.startswith(self.GROUP_FINALIZER_PREFIX)
                   for ing in self.net.list_ingress_for_all_namespaces().items for f in ing.metadata.finalizers or [])

    def tick(self):
        on = eks_auto_mode.enabled(self.state_dir, self.eks_cluster)
        if self.on is None and not on and not self.traces():
            self.on, self.settled = False, True  # a rig without Auto Mode: nothing to clean up
            self.publish()
            return
        if on != self.on:
            print(f"{self.NAME}: EKS Auto Mode {'on' if on else 'off'} for {self.eks_cluster}", flush=True)
            self.on, self.settled = on, False
            self.reconciled.clear()
            self.backoff = Backoff()
            self.last_event.clear()
            self.cached_vpc = None
            self.publish()
        if not on:
            if not self.settled:
                self.disable()
                self.settled = True
                self.publish()
            return
        if self.ensure_crds() and not self.settled:
            self.settled = True
            self.publish()
        self.context = self.load_context()
        flags = {"cluster-name": self.eks_cluster, "config": digest(
            {n: (c.spec.parameters, c.metadata.annotations) for n, c in self.context["classes"].items()},
            {n: p.get("spec") for n, p in self.context["params"].items()}, self.context["namespaces"])}
        self.reconcile_groups(flags)
        raw_pods = json.loads(self.core.list_pod_for_all_namespaces(_preload_content=False).data)["items"]
        pods = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in raw_pods}
        raw_nodes = json.loads(self.core.list_node(_preload_content=False).data)["items"]
        nodes = {n["metadata"]["name"]: n for n in raw_nodes}
        try:
            self.reconcile_bindings(pods, nodes, flags)
        except ApiException as e:
            if e.status != 404:  # the TargetGroupBinding CRD not there (yet)
                raise


def main():
    ctl = AutoModeAlb(sys.argv[1])
    print(f"auto-mode-alb: EKS Auto Mode's load balancing for cluster {sys.argv[1]} (Ingresses of "
          f"{AutoModeAlb.CONTROLLER}, while Auto Mode is on)", flush=True)
    while True:
        try:
            ctl.tick()
        except AwsCallError as e:  # throttled, or the AWS server restarting: the next pass
            print(f"auto-mode-alb: {e}", flush=True)
        except Exception:  # keep playing EKS whatever one pass hit
            traceback.print_exc()
        time.sleep(0.5)


if __name__ == "__main__":
    main()
