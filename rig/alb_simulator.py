"""Plays the AWS Load Balancer Controller toward Ingresses of class `alb`.

Nothing fills `status.loadBalancer` in the rig, so this process does, the way
the real controller does on EKS, against the rig's kube-apiserver and moto:

- only while the controller's Deployment in kube-system has available
  replicas (without it, a deleted Ingress stays stuck on its finalizer, as
  on EKS);
- subnets discovered by `kubernetes.io/role/internal-elb` (or `/elb` for
  internet-facing) in the cluster's VPC, skipping those tagged for another
  cluster, at least two availability zones or no load balancer;
- an ALB and one target group per backend, tagged `elbv2.k8s.aws/cluster`,
  `ingress.k8s.aws/stack` and `ingress.k8s.aws/resource`; the
  `target-group-attributes` annotation applied when it changes (an unknown
  key is refused, as ELBv2 refuses it); the Service's ready endpoints
  registered as `ip` targets; a TargetGroupBinding per target group; the
  Ingress hostname set to the ALB's DNS name; the finalizer
  `ingress.k8s.aws/resources`;
- on deletion, all of that removed, then the finalizer.

Problems are reported as Events on the Ingress, as the real controller does.

usage: alb_simulator.py CLUSTER_NAME  (KUBECONFIG and the AWS_* variables set)
"""

import hashlib
import json
import sys
import time
import traceback

import boto3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

FINALIZER = "ingress.k8s.aws/resources"
PREFIX = "alb.ingress.kubernetes.io/"
TGB_GROUP, TGB_VERSION, TGB_PLURAL = "elbv2.k8s.aws", "v1beta1", "targetgroupbindings"
KNOWN_TG_ATTRIBUTES = {
    "deregistration_delay.timeout_seconds", "slow_start.duration_seconds",
    "load_balancing.algorithm.type", "load_balancing.algorithm.anomaly_mitigation",
    "load_balancing.cross_zone.enabled", "stickiness.enabled", "stickiness.type",
    "stickiness.lb_cookie.duration_seconds", "stickiness.app_cookie.cookie_name",
    "stickiness.app_cookie.duration_seconds", "target_group_health.dns_failover.minimum_healthy_targets.count",
}


def short_hash(text):
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def aws_name(*parts):
    """k8s-<ns>-<name>-<hash>, within ELBv2's 32 characters."""
    return "k8s-" + "-".join(p[:8].strip("-") for p in parts[:-1]) + "-" + short_hash(parts[-1])


class Simulator:
    def __init__(self, cluster_name):
        config.load_kube_config()
        self.cluster = cluster_name
        self.core = client.CoreV1Api()
        self.apps = client.AppsV1Api()
        self.net = client.NetworkingV1Api()
        self.discovery = client.DiscoveryV1Api()
        self.custom = client.CustomObjectsApi()
        self.elb = boto3.client("elbv2")
        self.ec2 = boto3.client("ec2")
        self.eks = boto3.client("eks")
        self.applied_attributes = {}
        self.last_event = {}

    # --- the controller's own health -------------------------------------------------
    def controller_available(self):
        deployments = self.apps.list_namespaced_deployment(
            "kube-system", label_selector="app.kubernetes.io/name=aws-load-balancer-controller").items
        return any((d.status.available_replicas or 0) > 0 for d in deployments)

    # --- events ----------------------------------------------------------------------
    def event(self, ing, reason, message, kind="Warning"):
        key = (ing.metadata.namespace, ing.metadata.name)
        if self.last_event.get(key) == (reason, message):
            return
        self.last_event[key] = (reason, message)
        self.core.create_namespaced_event(ing.metadata.namespace, client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{ing.metadata.name}."),
            involved_object=client.V1ObjectReference(
                kind="Ingress", api_version="networking.k8s.io/v1", name=ing.metadata.name,
                namespace=ing.metadata.namespace, uid=ing.metadata.uid),
            reason=reason, message=message, type=kind,
            source=client.V1EventSource(component="ingress"),
            first_timestamp=None, event_time=None))

    # --- AWS lookups by the controller's tags ---------------------------------------------
    def tagged(self, arns, key, value):
        found = []
        for i in range(0, len(arns), 20):
            for desc in self.elb.describe_tags(ResourceArns=arns[i:i + 20])["TagDescriptions"]:
                tags = {t["Key"]: t["Value"] for t in desc["Tags"]}
                if tags.get(key) == value and tags.get("elbv2.k8s.aws/cluster") == self.cluster:
                    found.append((desc["ResourceArn"], tags))
        return found

    def stack_load_balancers(self, stack):
        arns = [lb["LoadBalancerArn"] for lb in self.elb.describe_load_balancers()["LoadBalancers"]]
        return [arn for arn, _ in self.tagged(arns, "ingress.k8s.aws/stack", stack)]

    def stack_target_groups(self, stack):
        arns = [tg["TargetGroupArn"] for tg in self.elb.describe_target_groups()["TargetGroups"]]
        return self.tagged(arns, "ingress.k8s.aws/stack", stack)

    def cluster_vpc(self):
        return self.eks.describe_cluster(name=self.cluster)["cluster"]["resourcesVpcConfig"]["vpcId"]

    def discover_subnets(self, vpc, scheme):
        role = "kubernetes.io/role/internal-elb" if scheme == "internal" else "kubernetes.io/role/elb"
        by_zone = {}
        for s in self.ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]:
            tags = {t["Key"]: t["Value"] for t in s.get("Tags", [])}
            if tags.get(role) not in ("1", ""):
                continue
            others = [k for k in tags if k.startswith("kubernetes.io/cluster/")
                      and k != f"kubernetes.io/cluster/{self.cluster}"]
            if others:
                continue
            by_zone.setdefault(s["AvailabilityZone"], s["SubnetId"])
        return sorted(by_zone.values())

    # --- reconcile ---------------------------------------------------------------------
    def backends(self, ing):
        found = []
        if ing.spec.default_backend and ing.spec.default_backend.service:
            found.append(ing.spec.default_backend.service)
        for rule in ing.spec.rules or []:
            for path in (rule.http.paths if rule.http else []):
                if path.backend.service:
                    found.append(path.backend.service)
        unique = {}
        for svc in found:
            unique[(svc.name, svc.port.number or svc.port.name)] = svc
        return list(unique.values())

    def ready_endpoints(self, ns, service, port):
        svc = self.core.read_namespaced_service(service, ns)
        target_port = next((p.target_port for p in svc.spec.ports
                            if p.port == port or p.name == port), None)
        ips = []
        # Raw JSON: the client's model refuses a slice with no endpoints (a Service without pods).
        raw = self.discovery.list_namespaced_endpoint_slice(
            ns, label_selector=f"kubernetes.io/service-name={service}", _preload_content=False)
        slices = json.loads(raw.data)["items"]
        numeric_port = None
        for sl in slices:
            for p in sl.get("ports") or []:
                if target_port in (p.get("port"), p.get("name")) or numeric_port is None:
                    numeric_port = p.get("port")
            for ep in sl.get("endpoints") or []:
                if (ep.get("conditions") or {}).get("ready", True):
                    ips.extend(ep["addresses"])
        if numeric_port is None:
            numeric_port = target_port if isinstance(target_port, int) else 8080
        return sorted(set(ips)), numeric_port, svc.spec.type

    def ensure_finalizer(self, ing):
        finalizers = ing.metadata.finalizers or []
        if FINALIZER not in finalizers:
            self.net.patch_namespaced_ingress(ing.metadata.name, ing.metadata.namespace,
                                              {"metadata": {"finalizers": finalizers + [FINALIZER]}})

    def reconcile(self, ing):
        ns, name = ing.metadata.namespace, ing.metadata.name
        stack = f"{ns}/{name}"
        annotations = ing.metadata.annotations or {}
        self.ensure_finalizer(ing)
        scheme = annotations.get(PREFIX + "scheme", "internal")
        target_type = annotations.get(PREFIX + "target-type", "instance")
        vpc = self.cluster_vpc()
        subnets = self.discover_subnets(vpc, scheme)
        if len(subnets) < 2:
            return self.event(ing, "FailedBuildModel",
                              "Failed build model due to couldn't auto-discover subnets: "
                              f"unable to resolve at least two subnets in distinct AZs ({len(subnets)} match)")
        base_tags = [{"Key": "elbv2.k8s.aws/cluster", "Value": self.cluster},
                     {"Key": "ingress.k8s.aws/stack", "Value": stack}]
        lbs = self.stack_load_balancers(stack)
        if lbs:
            lb = self.elb.describe_load_balancers(LoadBalancerArns=lbs[:1])["LoadBalancers"][0]
        else:
            lb = self.elb.create_load_balancer(
                Name=aws_name(ns, name, stack), Subnets=subnets, Scheme=scheme, Type="application",
                Tags=base_tags + [{"Key": "ingress.k8s.aws/resource", "Value": "LoadBalancer"}],
            )["LoadBalancers"][0]
        existing = {tags["ingress.k8s.aws/resource"]: arn for arn, tags in self.stack_target_groups(stack)}
        first_tg = None
        for backend in self.backends(ing):
            port = backend.port.number or backend.port.name
            resource = f"{stack}-{backend.name}:{port}"
            ips, target_port, svc_type = self.ready_endpoints(ns, backend.name, port)
            if target_type == "instance" and svc_type == "ClusterIP":
                self.event(ing, "FailedBuildModel",
                           f"Failed build model due to ingress: {stack}: service \"{backend.name}\" "
                           "must be of type NodePort or LoadBalancer for target-type instance")
                continue
            tg_arn = existing.get(resource)
            if tg_arn is None:
                tg_arn = self.elb.create_target_group(
                    Name=aws_name(ns, backend.name, resource), Protocol="HTTP", Port=target_port,
                    VpcId=vpc, TargetType=target_type,
                    HealthCheckPath=annotations.get(PREFIX + "healthcheck-path", "/"),
                    Tags=base_tags + [{"Key": "ingress.k8s.aws/resource", "Value": resource}],
                )["TargetGroups"][0]["TargetGroupArn"]
                # A new target group (identifiers repeat after a rig reset): nothing applied yet.
                self.applied_attributes.pop(tg_arn, None)
            first_tg = first_tg or tg_arn
            self.apply_attributes(ing, tg_arn, annotations.get(PREFIX + "target-group-attributes", ""))
            self.sync_targets(tg_arn, ips, target_port)
            self.ensure_binding(ns, aws_name(ns, backend.name, resource), tg_arn, backend.name, port, stack)
        if first_tg and not self.elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]:
            self.elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=80,
                                     DefaultActions=[{"Type": "forward", "TargetGroupArn": first_tg}])
        current = (ing.status.load_balancer.ingress or []) if ing.status and ing.status.load_balancer else []
        if [i.hostname for i in current] != [lb["DNSName"]]:
            self.net.patch_namespaced_ingress_status(
                name, ns, {"status": {"loadBalancer": {"ingress": [{"hostname": lb["DNSName"]}]}}})
            self.event(ing, "SuccessfullyReconciled", "Successfully reconciled", kind="Normal")

    def apply_attributes(self, ing, tg_arn, annotation):
        if self.applied_attributes.get(tg_arn) == annotation:
            return
        pairs = [kv.split("=", 1) for kv in annotation.split(",") if kv.strip()]
        unknown = [k.strip() for k, *_ in pairs if k.strip() not in KNOWN_TG_ATTRIBUTES]
        if unknown or any(len(p) != 2 for p in pairs):
            self.applied_attributes[tg_arn] = annotation
            return self.event(ing, "FailedDeployModel",
                              "Failed deploy model due to ValidationError: Target group attribute key "
                              f"'{(unknown or [annotation])[0]}' is not recognized")
        if pairs:
            self.elb.modify_target_group_attributes(
                TargetGroupArn=tg_arn, Attributes=[{"Key": k.strip(), "Value": v.strip()} for k, v in pairs])
        self.applied_attributes[tg_arn] = annotation

    def sync_targets(self, tg_arn, ips, port):
        health = self.elb.describe_target_health(TargetGroupArn=tg_arn)["TargetHealthDescriptions"]
        registered = {h["Target"]["Id"] for h in health}
        add = [{"Id": ip, "Port": port} for ip in ips if ip not in registered]
        gone = [{"Id": h["Target"]["Id"], "Port": h["Target"]["Port"]} for h in health
                if h["Target"]["Id"] not in ips]
        if add:
            self.elb.register_targets(TargetGroupArn=tg_arn, Targets=add)
        if gone:
            self.elb.deregister_targets(TargetGroupArn=tg_arn, Targets=gone)

    def ensure_binding(self, ns, name, tg_arn, service, port, stack):
        try:
            self.custom.get_namespaced_custom_object(TGB_GROUP, TGB_VERSION, ns, TGB_PLURAL, name)
            return
        except ApiException as e:
            if e.status != 404:
                raise
        self.custom.create_namespaced_custom_object(TGB_GROUP, TGB_VERSION, ns, TGB_PLURAL, {
            "apiVersion": f"{TGB_GROUP}/{TGB_VERSION}", "kind": "TargetGroupBinding",
            "metadata": {"name": name, "labels": {"ingress.k8s.aws/stack-namespace": ns,
                                                  "ingress.k8s.aws/stack-name": stack.split("/", 1)[1]}},
            "spec": {"targetGroupARN": tg_arn, "targetType": "ip",
                     "serviceRef": {"name": service, "port": port}},
        })

    # --- teardown ----------------------------------------------------------------------
    def teardown(self, ing):
        ns, name = ing.metadata.namespace, ing.metadata.name
        stack = f"{ns}/{name}"
        try:
            bindings = self.custom.list_namespaced_custom_object(
                TGB_GROUP, TGB_VERSION, ns, TGB_PLURAL,
                label_selector=f"ingress.k8s.aws/stack-name={name}")["items"]
        except ApiException as e:
            if e.status != 404:
                raise
            bindings = []
        for b in bindings:
            self.custom.delete_namespaced_custom_object(TGB_GROUP, TGB_VERSION, ns, TGB_PLURAL,
                                                        b["metadata"]["name"])
        for lb_arn in self.stack_load_balancers(stack):
            for listener in self.elb.describe_listeners(LoadBalancerArn=lb_arn)["Listeners"]:
                self.elb.delete_listener(ListenerArn=listener["ListenerArn"])
            self.elb.delete_load_balancer(LoadBalancerArn=lb_arn)
        for tg_arn, _ in self.stack_target_groups(stack):
            self.elb.delete_target_group(TargetGroupArn=tg_arn)
            self.applied_attributes.pop(tg_arn, None)
        finalizers = [f for f in (ing.metadata.finalizers or []) if f != FINALIZER]
        self.net.patch_namespaced_ingress(name, ns, {"metadata": {"finalizers": finalizers or None}})
        self.last_event.pop((ns, name), None)

    # --- loop --------------------------------------------------------------------------
    def tick(self):
        if not self.controller_available():
            return
        for ing in self.net.list_ingress_for_all_namespaces().items:
            annotations = ing.metadata.annotations or {}
            is_alb = (ing.spec.ingress_class_name == "alb"
                      or annotations.get("kubernetes.io/ingress.class") == "alb")
            ours = FINALIZER in (ing.metadata.finalizers or [])
            try:
                if ing.metadata.deletion_timestamp or (ours and not is_alb):
                    if ours:
                        self.teardown(ing)
                elif is_alb:
                    self.reconcile(ing)
            except ApiException as e:
                if e.status not in (404, 409):
                    traceback.print_exc()
            except Exception:  # one Ingress's trouble must not stop the others
                traceback.print_exc()


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
