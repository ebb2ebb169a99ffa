"""The ALB-building reconciler the rig's two load balancer controllers share: the self-managed AWS
Load Balancer Controller (alb_simulator.py) and EKS Auto Mode's load balancing capability
(auto_mode_alb.py), which on EKS are the same code base with different names, tags and inputs.

A subclass says what it is (class attributes: its IngressClass controller, tag keys,
finalizers, TargetGroupBinding API, readiness gates, default target type, whether subnet
discovery falls back to routing) and where its configuration comes from (`ingress_classes`,
`classify`, `settings`, `backend_sg_spec`); it sets `core`, `net`, `discovery`, `custom`
(Kubernetes) and `elb`, `ec2` (AWS, errors as lbc_credentials.AwsCallError) before a pass.
What is shared, as the controller does it (v3.5.0, read from its source):

- Ingresses are reconciled by IngressGroup: an explicit group (its name: the stack tag,
  the finalizer `<group finalizer prefix><name>`, the ALB `k8s-<name, 17>-<hash>`) or an
  Ingress of its own (stack `<ns>/<name>`, the implicit finalizer, ALB
  `k8s-<ns, 8>-<name, 8>-<hash>`); one ALB per group, one target group per member Ingress and
  backend (`k8s-<ns, 8>-<svc, 8>-<hash>`), names and hashes from the same inputs as the
  controller's model builder;
- subnets discovered as the controller's resolver does: the role tag
  (`kubernetes.io/role/internal-elb`, or `/elb` for internet-facing) with value `1` or empty
  in the VPC, or (where the subclass allows it) when no subnet has it the subnets whose
  routing matches the scheme; a subnet tagged `kubernetes.io/cluster/<x>` only for other
  clusters is skipped, one tagged for this cluster is eligible; fewer than 8 free addresses,
  skipped; one per zone (this cluster's tag first, then the lowest id); an ALB needs two
  zones; an existing ALB of the same scheme keeps its subnets; or the subnets a
  configuration names (ids, or tags to match), one per zone, two zones at least;
- deployed in the controller's order: target groups with their attributes (only the
  annotation's, and only those that differ), the ALB (and its attributes, where configured),
  its listener, TargetGroupBindings (named as their target group, in the Service's
  namespace); then the Ingress hostname (the ALB's DNS name, lower-cased) and the finalizer
  removed from Ingresses that left the group. Any error stops the deploy there, leaves the
  status alone and becomes a Warning event (FailedBuildModel, FailedDeployModel) with the
  controller's wording; the next pass tries again. Resources no longer in the model are
  deleted, the whole stack when the group has no member left;
- a group is reconciled when something it is built from changes (its Ingresses, their
  Services, the controller's configuration), and after a failure, with the controller's
  per-object back-off, until it succeeds: a change made in AWS by hand stays until then;
- TargetGroupBindings are reconciled on their own: the Service's endpoints registered as `ip`
  targets (ready endpoints, and not-ready ones whose pod has ContainersReady on a Ready node
  and is not terminating), the others deregistered; where the controller has readiness gates,
  a pod with the gate `target-health.elbv2.k8s.aws/<binding>` gets that condition True once
  its target is healthy, False with the target's reason before;
- security groups: the ALB's managed group (`k8s-<ns>-<name>-<hash>`, open on its listener's
  port), the cluster's shared backend group, made while the model is built, and a rule from
  the backend group to the one group of each target's interface (or the one tagged
  `kubernetes.io/cluster/<name>`); a group is deleted with the controller's retries while
  EC2 says it is in use; the backend group goes after the controller's last Ingress.

Problems are reported as Events on the Ingress; one group's trouble does not stop the others.
"""

import hashlib
import json
import re
import time
import traceback
from types import SimpleNamespace

from kubernetes import client
from kubernetes.client.rest import ApiException

import pod_network
import pod_status
from pod_status import condition
from lbc_credentials import AwsCallError

PREFIX = "alb.ingress.kubernetes.io/"
READINESS_GATE_PREFIX = "target-health.elbv2.k8s.aws/"
MIN_FREE_ADDRESSES = 8
BACKOFF_START, BACKOFF_MAX = 0.005, 100.0
SG_DELETE_INTERVAL, SG_DELETE_TIMEOUT = 0.2, 12.0  # the controller's 2 s and 2 min, scaled
MANAGED_LB_SG = "ManagedLBSecurityGroup"
# The controller's health-check annotations and its defaults for them (HTTP on the traffic
# port, "/", every 15 s, 5 s timeout, 2 to pass, 2 to fail, 200), as CreateTargetGroup's fields.
HEALTH_CHECK = [
    ("healthcheck-protocol", "HealthCheckProtocol", "HTTP", str),
    ("healthcheck-port", "HealthCheckPort", "traffic-port", str),
    ("healthcheck-path", "HealthCheckPath", "/", str),
    ("healthcheck-interval-seconds", "HealthCheckIntervalSeconds", 15, int),
    ("healthcheck-timeout-seconds", "HealthCheckTimeoutSeconds", 5, int),
    ("healthy-threshold-count", "HealthyThresholdCount", 2, int),
    ("unhealthy-threshold-count", "UnhealthyThresholdCount", 2, int),
    ("success-codes", "Matcher", "200", str),
]


class BuildError(Exception):
    """The model cannot be built (FailedBuildModel)."""


def now_utc():
    import datetime
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def sanitized(text):
    return re.sub(r"[^A-Za-z0-9]", "", text)


SERIALIZER = client.ApiClient()


def digest(*parts):
    """A stable fingerprint of API objects' parts (client models or plain values)."""
    plain = SERIALIZER.sanitize_for_serialization(list(parts))
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()


def sha256_hex(*parts):
    return hashlib.sha256("".join(parts).encode()).hexdigest()


def api_message(e):
    """The API server's message of a refused request, as client-go's error says it."""
    try:
        return json.loads(e.body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(e.reason)


def string_map(annotations, suffix):
    """A `k1=v1,k2=v2` annotation, as the controller's stringMap parser reads it."""
    raw = annotations.get(PREFIX + suffix)
    if raw is None:
        return {}
    parsed = {}
    for pair in (p.strip() for p in raw.split(",")):
        if not pair:
            continue
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise BuildError(f"failed to parse stringMap annotation, {PREFIX}{suffix}: {raw}")
        parsed[key.strip()] = value.strip()
    return parsed


class Backoff:
    """The controller's per-object rate limiter for a reconcile that failed: retried after
    BACKOFF_START doubling with each failure up to BACKOFF_MAX (client-go's exponential
    failure limiter, 5 ms to 1000 s; the rig caps it at a tenth). A change to what the object
    is built from (an event) queues it at once, but only a success resets the count."""

    def __init__(self, leader=None):
        self.leader = leader
        self.failures = {}  # key -> (count, retry at, inputs then)

    def due(self, key, inputs):
        found = self.failures.get(key)
        return found is None or found[2] != inputs or time.monotonic() >= found[1]

    def failed(self, key, inputs):
        """Counts a failure; returns (failures in a row, seconds until the next try)."""
        count = self.failures.get(key, (0, 0, None))[0] + 1
        delay = min(BACKOFF_START * 2 ** (count - 1), BACKOFF_MAX)
        self.failures[key] = (count, time.monotonic() + delay, inputs)
        return count, delay

    def forget(self, key):
        self.failures.pop(key, None)


class Group:
    """An IngressGroup: its id (namespace "" for an explicit group), members and inactive members;
    `error`, when its members' IngressClass configuration cannot be loaded."""

    def __init__(self, namespace, name, implicit_finalizer, group_finalizer_prefix):
        self.namespace, self.name = namespace, name
        self.implicit_finalizer, self.group_finalizer_prefix = implicit_finalizer, group_finalizer_prefix
        self.members, self.inactive = [], []
        self.error = None

    @property
    def explicit(self):
        return self.namespace == ""

    @property
    def stack(self):
        return self.name if self.explicit else f"{self.namespace}/{self.name}"

    @property
    def finalizer(self):
        return self.group_finalizer_prefix + self.name if self.explicit else self.implicit_finalizer

    def holds_finalizer(self, ing):
        if self.finalizer not in (ing.metadata.finalizers or []):
            return False
        return self.explicit or (ing.metadata.namespace, ing.metadata.name) == (self.namespace, self.name)


class AlbController:
    # --- what the controller is: the self-managed AWS Load Balancer Controller's values ------
    CONTROLLER = "ingress.k8s.aws/alb"
    CLUSTER_TAG = "elbv2.k8s.aws/cluster"
    STACK_TAG = "ingress.k8s.aws/stack"
    RESOURCE_TAG = "ingress.k8s.aws/resource"
    STACK_LABEL_PREFIX = "ingress.k8s.aws/"
    IMPLICIT_FINALIZER = "ingress.k8s.aws/resources"
    GROUP_FINALIZER_PREFIX = "group.ingress.k8s.aws/"
    TGB_GROUP, TGB_VERSION, TGB_PLURAL = "elbv2.k8s.aws", "v1beta1", "targetgroupbindings"
    SHARED_RULE = "elbv2.k8s.aws/targetGroupBinding=shared"
    READINESS_GATES = True
    DEFAULT_TARGET_TYPE = "instance"
    DISCOVER_BY_ROUTES = True  # no subnet with the role tag: the subnets routed as the scheme needs
    EVENT_COMPONENT = "ingress"
    NAME = "alb-simulator"  # in its log lines

    def __init__(self, eks, eks_cluster):
        self.eks, self.eks_cluster = eks, eks_cluster
        self.core = self.net = self.discovery = self.custom = None
        self.elb = self.ec2 = None
        self.last_event = {}
        self.reconciled = {}  # group id -> what it was last reconciled from, successfully
        self.backoff = Backoff()
        self.active_groups = set()  # groups with a member, as the last pass found them

    # --- what a subclass says -------------------------------------------------------------------
    def ingress_classes(self):
        """What `classify` needs of the cluster's IngressClasses: here the names of this controller's."""
        return {c.metadata.name for c in self.net.list_ingress_class().items if c.spec.controller == self.CONTROLLER}

    def classify(self, ing, classes, flags):
        """(served, group id, a configuration error or None) of an Ingress."""
        return self.served(ing, classes, flags), self.group_id(ing), None

    def served(self, ing, alb_classes, flags):
        annotations = ing.metadata.annotations or {}
        results = []
        if "kubernetes.io/ingress.class" in annotations:
            results.append(annotations["kubernetes.io/ingress.class"] == (flags.get("ingress-class") or "alb"))
        if ing.spec.ingress_class_name:
            results.append(ing.spec.ingress_class_name in alb_classes)
        return results[0] if results else flags.get("ingress-class", "alb") == ""

    @staticmethod
    def group_id(ing):
        name = (ing.metadata.annotations or {}).get(PREFIX + "group.name")
        return ("", name) if name else (ing.metadata.namespace, ing.metadata.name)

    def settings(self, group, flags):
        """What configures the group's ALB beyond its backends. The self-managed controller here:
        the members' scheme annotation (one scheme, internal by default); HTTP:80 open to all."""
        schemes = {(m.metadata.annotations or {}).get(PREFIX + "scheme") for m in group.members} - {None}
        if len(schemes) > 1:
            raise BuildError(f"conflicting scheme: {sorted(schemes)}")
        scheme = schemes.pop() if schemes else "internal"
        if scheme not in ("internal", "internet-facing"):
            raise BuildError(f"unknown scheme: {scheme}")
        return {"scheme": scheme, "subnets": None, "target_type": None, "tags": {}, "lb_attributes": None,
                "listener": ("HTTP", 80, []), "inbound_cidrs": ["0.0.0.0/0"], "ip_address_type": "ipv4"}

    def backend_sg_spec(self, cluster):
        """(name, description, tags) of the cluster's shared backend security group."""
        return (f"k8s-traffic-{sanitized(cluster)[:15]}-{sha256_hex(cluster)[:10]}",
                "[k8s] Shared Backend SecurityGroup for LoadBalancer",
                {self.CLUSTER_TAG: cluster, "elbv2.k8s.aws/resource": "backend-sg"})

    def still_active(self):
        """False once the controller has gone (a pass takes a while on a busy machine)."""
        return True

    # --- events ----------------------------------------------------------------------------
    def event(self, ing, reason, message, kind="Warning", involved=("Ingress", "networking.k8s.io/v1"),
              component=None):
        component = component or self.EVENT_COMPONENT
        # As client-go's correlator, per object: an Ingress made anew under the same name is another.
        key = (ing.metadata.namespace, ing.metadata.name, ing.metadata.uid)
        # A retried AWS call fails with a new request id (the Pod Identity agent's errors carry
        # EKS Auth's as `[<id>]`): the same problem, one event. As
        # client-go's recorder aggregates a repeat of the last one, its count goes up and its
        # lastTimestamp moves (here at most every 5 s: the recorder's spam filter limits it too).
        seen = (reason, re.sub(r"RequestID: [^,]*|\[[0-9a-f]{8}-[0-9a-f-]{27}\]", "", message))
        last = self.last_event.get(key)
        if last and last[0] == seen:
            name, count, at = last[1], last[2], last[3]
            if time.monotonic() - at >= 5:
                try:
                    self.core.patch_namespaced_event(name, ing.metadata.namespace, {
                        "count": count + 1, "lastTimestamp": now_utc().isoformat().replace("+00:00", "Z")})
                    self.last_event[key] = (seen, name, count + 1, time.monotonic())
                except client.exceptions.ApiException:
                    pass
            return
        made = self.core.create_namespaced_event(ing.metadata.namespace, client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{ing.metadata.name}."),
            involved_object=client.V1ObjectReference(
                kind=involved[0], api_version=involved[1], name=ing.metadata.name,
                namespace=ing.metadata.namespace, uid=ing.metadata.uid),
            reason=reason, message=message, type=kind,
            source=client.V1EventSource(component=component),
            # As client-go's recorder writes a new event: first and last seen now, once.
            first_timestamp=now_utc(), last_timestamp=now_utc(), count=1, event_time=None))
        self.last_event[key] = (seen, made.metadata.name, 1, time.monotonic())

    # --- which Ingresses, in which groups ----------------------------------------------------
    def new_group(self, namespace, name):
        return Group(namespace, name, self.IMPLICIT_FINALIZER, self.GROUP_FINALIZER_PREFIX)

    def load_groups(self, flags):
        ingresses = self.net.list_ingress_for_all_namespaces().items
        classes = self.ingress_classes()
        seen = {i.metadata.uid: self.classify(i, classes, flags) for i in ingresses}
        groups = {}
        for ing in ingresses:
            served, gid, _ = seen[ing.metadata.uid]
            if served:
                groups.setdefault(gid, self.new_group(*gid))
            for f in ing.metadata.finalizers or []:
                if f == self.IMPLICIT_FINALIZER:
                    groups.setdefault((ing.metadata.namespace, ing.metadata.name),
                                      self.new_group(ing.metadata.namespace, ing.metadata.name))
                elif f.startswith(self.GROUP_FINALIZER_PREFIX):
                    name = f[len(self.GROUP_FINALIZER_PREFIX):]
                    groups.setdefault(("", name), self.new_group("", name))
        for (namespace, name), group in groups.items():
            for ing in ingresses:
                served, gid, error = seen[ing.metadata.uid]
                member = served and gid == (namespace, name) and not ing.metadata.deletion_timestamp
                if member:
                    group.members.append(ing)
                    group.error = group.error or error
                elif group.holds_finalizer(ing):
                    group.inactive.append(ing)
            group.members.sort(key=lambda i: f"{i.metadata.namespace}/{i.metadata.name}")
        return groups.values()

    # --- AWS lookups by the controller's tags ---------------------------------------------------
    def tagged(self, arns, cluster, stack):
        found = []
        for i in range(0, len(arns), 20):
            # As the controller's tagging manager: a batch ELBv2 refuses (one ARN in it deleted since
            # the listing) fails this pass, which is tried again, as the controller requeues.
            for desc in self.elb.describe_tags(ResourceArns=arns[i:i + 20])["TagDescriptions"]:
                tags = {t["Key"]: t["Value"] for t in desc["Tags"]}
                if tags.get(self.CLUSTER_TAG) == cluster and tags.get(self.STACK_TAG) == stack:
                    found.append((desc["ResourceArn"], tags))
        return found

    def stack_load_balancers(self, cluster, stack):
        lbs = {lb["LoadBalancerArn"]: lb for lb in self.elb.describe_load_balancers()["LoadBalancers"]}
        return [lbs[arn] for arn, _ in self.tagged(list(lbs), cluster, stack)]

    def stack_target_groups(self, cluster, stack):
        """resource id -> target group of the stack."""
        tgs = {tg["TargetGroupArn"]: tg for tg in self.elb.describe_target_groups()["TargetGroups"]}
        return {tags.get(self.RESOURCE_TAG): tgs[arn] for arn, tags in self.tagged(list(tgs), cluster, stack)}

    def vpc(self, flags):
        return flags.get("aws-vpc-id") or \
            self.eks.describe_cluster(name=self.eks_cluster)["cluster"]["resourcesVpcConfig"]["vpcId"]

    # --- subnets ------------------------------------------------------------------------------
    @staticmethod
    def public(subnet_id, route_tables):
        main = subnet_table = None
        for rt in route_tables:
            for assoc in rt.get("Associations", []):
                if assoc.get("Main"):
                    main = rt
                if assoc.get("SubnetId") == subnet_id:
                    subnet_table = rt
        table = subnet_table or main or {}
        return any((r.get("GatewayId") or "").startswith("igw") for r in table.get("Routes", []))

    def discover_subnets(self, vpc, scheme, cluster):
        role = "kubernetes.io/role/internal-elb" if scheme == "internal" else "kubernetes.io/role/elb"
        in_vpc = self.ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
        tags = {s["SubnetId"]: {t["Key"]: t["Value"] for t in s.get("Tags", [])} for s in in_vpc}
        candidates = [s for s in in_vpc if tags[s["SubnetId"]].get(role) in ("", "1")]
        if not candidates and self.DISCOVER_BY_ROUTES:
            route_tables = self.ec2.describe_route_tables(
                Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"]
            candidates = [s for s in in_vpc
                          if self.public(s["SubnetId"], route_tables) == (scheme == "internet-facing")]
        ours = f"kubernetes.io/cluster/{cluster}"
        eligible, other_cluster, few_addresses = [], 0, 0
        for s in candidates:
            cluster_tags = [k for k in tags[s["SubnetId"]] if k.startswith("kubernetes.io/cluster")]
            if cluster_tags and ours not in cluster_tags:
                other_cluster += 1
            elif s["AvailableIpAddressCount"] < MIN_FREE_ADDRESSES:
                few_addresses += 1
            else:
                eligible.append(s)
        by_zone = {}
        for s in sorted(eligible, key=lambda s: (ours not in tags[s["SubnetId"]], s["SubnetId"])):
            by_zone.setdefault(s["AvailabilityZone"], s["SubnetId"])
        chosen = sorted(by_zone.values())
        if not chosen:
            raise BuildError(
                "couldn't auto-discover subnets: unable to resolve at least one subnet. Evaluated "
                f"{len(candidates)} subnets: {other_cluster} are tagged for other clusters, and "
                f"{few_addresses} have insufficient available IP addresses")
        if len(chosen) < 2:
            raise BuildError("couldn't auto-discover subnets: subnets count less than minimal required count: "
                             f"{len(chosen)} < 2")
        return chosen

    def selected_subnets(self, vpc, selector):
        """The subnets a configuration names: `{"ids": [...]}` or `{"tags": {key: [values]}}` (in
        the VPC), one per zone, at least two zones, as the controller's subnet resolver checks them."""
        if selector.get("ids"):
            found = self.ec2.describe_subnets(SubnetIds=list(selector["ids"]))["Subnets"]
        else:
            filters = [{"Name": "vpc-id", "Values": [vpc]}] + [
                {"Name": f"tag:{k}", "Values": list(v)} for k, v in sorted((selector.get("tags") or {}).items())]
            found = self.ec2.describe_subnets(Filters=filters)["Subnets"]
        if not found:
            raise BuildError("couldn't find all subnets, want: "
                             f"{json.dumps(selector, sort_keys=True)}, found: 0")
        by_zone = {}
        for s in sorted(found, key=lambda s: s["SubnetId"]):
            if s["AvailabilityZone"] in by_zone and selector.get("ids"):
                raise BuildError(f"multiple subnets in same Availability Zone {s['AvailabilityZone']}: "
                                 f"[{by_zone[s['AvailabilityZone']]} {s['SubnetId']}]")
            by_zone.setdefault(s["AvailabilityZone"], s["SubnetId"])
        chosen = sorted(by_zone.values())
        if len(chosen) < 2:
            raise BuildError(f"subnets count less than minimal required count: {len(chosen)} < 2")
        return chosen

    # --- the model ------------------------------------------------------------------------------
    @staticmethod
    def backends(ing):
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

    string_map = staticmethod(string_map)

    def build_target_group(self, group, ing, backend, cluster, settings):
        ns = ing.metadata.namespace
        port = backend.port.number or backend.port.name
        try:
            svc = self.core.read_namespaced_service(backend.name, ns)
        except ApiException as e:
            if e.status == 404:
                raise BuildError(f"ingress: {ns}/{ing.metadata.name}: services \"{backend.name}\" not found")
            raise
        svc_port = next((p for p in svc.spec.ports if p.port == port or p.name == port), None)
        if svc_port is None:
            raise BuildError(f"unable to find port {port} on service {ns}/{backend.name}")
        # The Service's annotations win over the Ingress's; the IngressClass's configuration over both.
        annotations = {**(ing.metadata.annotations or {}), **(svc.metadata.annotations or {})}
        target_type = settings.get("target_type") or annotations.get(PREFIX + "target-type",
                                                                     self.DEFAULT_TARGET_TYPE)
        if target_type not in ("instance", "ip"):
            raise BuildError(f"unknown targetType: {target_type}")
        if target_type == "instance" and svc.spec.type not in ("NodePort", "LoadBalancer"):
            raise BuildError(f"ingress: {ns}/{ing.metadata.name}: service \"{backend.name}\" must be of type "
                             "NodePort or LoadBalancer for target-type instance")
        if target_type == "instance":
            tg_port = svc_port.node_port
        else:
            tg_port = svc_port.target_port if isinstance(svc_port.target_port, int) else 1
        resource = f"{ns}/{ing.metadata.name}-{backend.name}:{port}"
        uuid = sha256_hex(cluster, group.stack, ns, ing.metadata.name, svc.metadata.uid, str(port), str(tg_port),
                          target_type, "HTTP", "HTTP1")
        return {
            "resource": resource,
            "name": f"k8s-{sanitized(ns)[:8]}-{sanitized(backend.name)[:8]}-{uuid[:10]}",
            "port": tg_port, "target_type": target_type, "service": backend.name, "service_port": port,
            "namespace": ns, "health_check": self.health_check(annotations),
            "attributes": self.string_map(annotations, "target-group-attributes"),
        }

    @staticmethod
    def health_check(annotations):
        """The target group's health check from the annotations, as CreateTargetGroup's fields."""
        found = {}
        for suffix, field, default, kind in HEALTH_CHECK:
            raw = annotations.get(PREFIX + suffix)
            if raw is None:
                value = default
            elif kind is int:
                if not raw.strip().lstrip("-").isdigit():
                    raise BuildError(f"failed to parse int64 annotation, {PREFIX}{suffix}: {raw}: "
                                     f"strconv.ParseInt: parsing \"{raw}\": invalid syntax")
                value = int(raw)
            else:
                value = raw.strip()
            found[field] = {"HttpCode": value} if field == "Matcher" else value
        return found

    def build_model(self, group, flags):
        cluster = flags["cluster-name"]
        model = {"target_groups": [], "load_balancer": None}
        if not group.members:
            return model
        settings = self.settings(group, flags)
        scheme = settings["scheme"]
        for ing in group.members:
            for backend in self.backends(ing):
                model["target_groups"].append(self.build_target_group(group, ing, backend, cluster, settings))
        existing = self.stack_load_balancers(cluster, group.stack)
        if settings["subnets"] is not None:
            subnets = self.selected_subnets(self.vpc(flags), settings["subnets"])
        elif existing and existing[0]["Scheme"] == scheme:
            subnets = sorted(z["SubnetId"] for z in existing[0]["AvailabilityZones"])
        else:
            subnets = self.discover_subnets(self.vpc(flags), scheme, cluster)
        uuid = sha256_hex(cluster, group.stack, scheme)
        if group.explicit:
            name = f"k8s-{sanitized(group.name)[:17]}-{uuid[:10]}"
        else:
            name = f"k8s-{sanitized(group.namespace)[:8]}-{sanitized(group.name)[:8]}-{uuid[:10]}"
        model["load_balancer"] = {"name": name, "scheme": scheme, "subnets": subnets,
                                  "ip_address_type": settings["ip_address_type"]}
        model["settings"] = settings
        if group.explicit:
            sg_name = f"k8s-{sanitized(group.name)[:17]}-{sha256_hex(cluster, group.stack)[:10]}"
        else:
            sg_name = f"k8s-{sanitized(group.namespace)[:8]}-{sanitized(group.name)[:8]}-" \
                      f"{sha256_hex(cluster, group.stack)[:10]}"
        model["frontend_sg"] = sg_name
        # The shared backend group is resolved (made on first use) while the model is built.
        model["backend_sg"] = self.backend_sg(flags, create=True)
        return model

    # --- deploy ---------------------------------------------------------------------------------
    def stack_tags(self, cluster, stack, extra=None):
        return [{"Key": self.CLUSTER_TAG, "Value": cluster}, {"Key": self.STACK_TAG, "Value": stack}] + \
            [{"Key": k, "Value": v} for k, v in sorted((extra or {}).items())]

    def deploy(self, group, model, flags):
        """Target groups, the ALB, its listener, the bindings; then whatever the model no longer has."""
        cluster = flags["cluster-name"]
        settings = model.get("settings") or {}
        stack_tags = self.stack_tags(cluster, group.stack, settings.get("tags"))
        existing_tgs = self.stack_target_groups(cluster, group.stack)
        arns = {}
        for tg in model["target_groups"]:
            found = existing_tgs.get(tg["resource"])
            if found is None:
                found = self.elb.create_target_group(
                    Name=tg["name"], Protocol="HTTP", ProtocolVersion="HTTP1", Port=tg["port"],
                    VpcId=self.vpc(flags), TargetType=tg["target_type"], HealthCheckEnabled=True,
                    **tg["health_check"],
                    Tags=stack_tags + [{"Key": self.RESOURCE_TAG, "Value": tg["resource"]}],
                )["TargetGroups"][0]
            else:
                self.reconcile_health_check(found, tg["health_check"])
            arns[tg["resource"]] = found["TargetGroupArn"]
            self.reconcile_attributes(found["TargetGroupArn"], tg["attributes"])
        frontend = self.ensure_frontend_sg(group, model, flags, stack_tags) if model["load_balancer"] else None
        load_balancers = self.stack_load_balancers(cluster, group.stack)
        lb = None
        for existing in load_balancers:
            if model["load_balancer"] and existing["Scheme"] == model["load_balancer"]["scheme"] and lb is None:
                lb = existing
            else:
                self.delete_load_balancer(existing["LoadBalancerArn"])
        if model["load_balancer"] and lb is None:
            spec = model["load_balancer"]
            lb = self.elb.create_load_balancer(
                Name=spec["name"], Subnets=spec["subnets"], Scheme=spec["scheme"], Type="application",
                SecurityGroups=[frontend, model["backend_sg"]],
                Tags=stack_tags + [{"Key": self.RESOURCE_TAG, "Value": "LoadBalancer"}],
            )["LoadBalancers"][0]
        elif lb:
            if sorted(lb.get("SecurityGroups") or []) != sorted([frontend, model["backend_sg"]]):
                self.elb.set_security_groups(LoadBalancerArn=lb["LoadBalancerArn"],
                                             SecurityGroups=[frontend, model["backend_sg"]])
            if settings.get("subnets") is not None and \
                    sorted(z["SubnetId"] for z in lb["AvailabilityZones"]) != model["load_balancer"]["subnets"]:
                self.elb.set_subnets(LoadBalancerArn=lb["LoadBalancerArn"], Subnets=model["load_balancer"]["subnets"])
        if lb and settings.get("lb_attributes") is not None:
            self.reconcile_lb_attributes(lb["LoadBalancerArn"], settings["lb_attributes"])
        if lb and model["target_groups"]:
            self.reconcile_listener(lb["LoadBalancerArn"], arns[model["target_groups"][0]["resource"]],
                                    settings.get("listener") or ("HTTP", 80, []))
        wanted_bindings = set()
        for tg in model["target_groups"]:
            self.ensure_binding(group, tg, arns[tg["resource"]])
            wanted_bindings.add((tg["namespace"], tg["name"]))
        for b in self.stack_bindings(group):
            if (b["metadata"]["namespace"], b["metadata"]["name"]) not in wanted_bindings:
                self.custom.delete_namespaced_custom_object(self.TGB_GROUP, self.TGB_VERSION,
                                                            b["metadata"]["namespace"], self.TGB_PLURAL,
                                                            b["metadata"]["name"])
        for resource, tg in existing_tgs.items():
            if resource not in arns:
                self.elb.delete_target_group(TargetGroupArn=tg["TargetGroupArn"])
        for sg in self.stack_security_groups(cluster, group.stack):
            if sg["GroupId"] != frontend:
                self.delete_security_group(sg["GroupId"])
        return lb

    # --- security groups ------------------------------------------------------------------------
    def stack_security_groups(self, cluster, stack):
        return self.ec2.describe_security_groups(Filters=[
            {"Name": f"tag:{self.CLUSTER_TAG}", "Values": [cluster]},
            {"Name": f"tag:{self.STACK_TAG}", "Values": [stack]},
            {"Name": f"tag:{self.RESOURCE_TAG}", "Values": [MANAGED_LB_SG]}])["SecurityGroups"]

    def ensure_frontend_sg(self, group, model, flags, stack_tags):
        """The ALB's managed security group, open on its listener's port to the inbound CIDRs
        (0.0.0.0/0 unless configured); rules of its own for anything else revoked."""
        settings = model.get("settings") or {}
        port = (settings.get("listener") or ("HTTP", 80, []))[1]
        cidrs = settings.get("inbound_cidrs") or ["0.0.0.0/0"]
        found = self.stack_security_groups(flags["cluster-name"], group.stack)
        if found:
            sg = found[0]
        else:
            tags = stack_tags + [{"Key": self.RESOURCE_TAG, "Value": MANAGED_LB_SG}]
            made = self.ec2.create_security_group(
                GroupName=model["frontend_sg"], Description="[k8s] Managed SecurityGroup for LoadBalancer",
                VpcId=self.vpc(flags), TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}])
            sg = {"GroupId": made["GroupId"], "IpPermissions": []}
        have = {(p.get("FromPort"), r.get("CidrIp")) for p in sg.get("IpPermissions") or []
                if p.get("IpProtocol") == "tcp" for r in p.get("IpRanges") or []}
        want = {(port, cidr) for cidr in cidrs}
        missing = sorted(want - have)
        if missing:
            self.ec2.authorize_security_group_ingress(GroupId=sg["GroupId"], IpPermissions=[
                {"IpProtocol": "tcp", "FromPort": p, "ToPort": p, "IpRanges": [{"CidrIp": c}]} for p, c in missing])
        stale = sorted(have - want)
        if stale:
            self.ec2.revoke_security_group_ingress(GroupId=sg["GroupId"], IpPermissions=[
                {"IpProtocol": "tcp", "FromPort": p, "ToPort": p, "IpRanges": [{"CidrIp": c}]} for p, c in stale])
        return sg["GroupId"]

    def backend_sg(self, flags, create):
        """The cluster's shared backend security group, made on first use when `create`; None
        when there is none."""
        cluster = flags["cluster-name"]
        name, description, tags = self.backend_sg_spec(cluster)
        found = self.ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [self.vpc(flags)]}] + [
            {"Name": f"tag:{k}", "Values": [v]} for k, v in tags.items()])["SecurityGroups"]
        if found or not create:
            return found[0]["GroupId"] if found else None
        return self.ec2.create_security_group(
            GroupName=name, Description=description, VpcId=self.vpc(flags),
            TagSpecifications=[{"ResourceType": "security-group", "Tags": [
                {"Key": k, "Value": v} for k, v in tags.items()]}])["GroupId"]

    def delete_security_group(self, group_id):
        """DeleteSecurityGroup, retried while EC2 says it is still in use (an ALB's interfaces
        are released a while after the ALB), as the controller does: every 2 s for 2 minutes,
        on the rig's clock a tenth of that."""
        deadline = time.monotonic() + SG_DELETE_TIMEOUT
        while True:
            try:
                self.ec2.delete_security_group(GroupId=group_id)
                return
            except AwsCallError as e:
                if e.code == "InvalidGroup.NotFound":
                    return
                if e.code != "DependencyViolation" or time.monotonic() >= deadline:
                    raise
            time.sleep(SG_DELETE_INTERVAL)

    def release_backend_sg(self, flags):
        """The backend group goes when no Ingress of this controller needs it any more: its rules
        on the pods' groups revoked first, then the group."""
        group_id = self.backend_sg(flags, create=False)
        if group_id is None:
            return
        self.reconcile_networking(group_id, {})
        self.delete_security_group(group_id)

    def eni_groups(self, ips, cluster):
        """{pod IP: (ENI id, the security group the controller's rule goes to, or an error)}."""
        found = {}
        if not ips:
            return found
        enis = self.ec2.describe_network_interfaces(
            Filters=[{"Name": "addresses.private-ip-address", "Values": sorted(ips)}])["NetworkInterfaces"]
        tag = f"kubernetes.io/cluster/{cluster}"
        for eni in enis:
            groups = [g["GroupId"] for g in eni.get("Groups") or []]
            if len(groups) == 1:
                picked = groups[0], None
            else:
                described = self.ec2.describe_security_groups(GroupIds=groups)["SecurityGroups"] if groups else []
                tagged = sorted(g["GroupId"] for g in described if any(t["Key"] == tag for t in g.get("Tags") or []))
                picked = (tagged[0], None) if len(tagged) == 1 else (
                    None, f"expected exactly one securityGroup tagged with {tag} for eni {eni['NetworkInterfaceId']}, "
                          f"got: [{' '.join(tagged)}] (clusterName: {cluster})")
            for address in eni.get("PrivateIpAddresses") or []:
                if address["PrivateIpAddress"] in ips:
                    found[address["PrivateIpAddress"]] = (eni["NetworkInterfaceId"], *picked)
        return found

    def reconcile_networking(self, backend, wanted, revoke=True):
        """The backend group's rules on the pods' groups: `wanted` {group: {port}} added, every
        other rule from the backend group with the shared description revoked."""
        current = {}
        for sg in self.ec2.describe_security_groups()["SecurityGroups"]:
            for p in sg.get("IpPermissions") or []:
                if any(pair.get("GroupId") == backend and pair.get("Description") == self.SHARED_RULE
                       for pair in p.get("UserIdGroupPairs") or []):
                    current.setdefault(sg["GroupId"], set()).add(p.get("FromPort"))

        def rule(port):
            return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port,
                    "UserIdGroupPairs": [{"GroupId": backend, "Description": self.SHARED_RULE}]}
        for sg, ports in wanted.items():
            for port in sorted(ports - current.get(sg, set())):
                self.ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[rule(port)])
        for sg, ports in current.items() if revoke else ():
            for port in sorted(ports - wanted.get(sg, set())):
                self.ec2.revoke_security_group_ingress(GroupId=sg, IpPermissions=[rule(port)])

    def reconcile_health_check(self, found, desired):
        """ModifyTargetGroup with the health check's fields that differ, as the controller's
        target group manager does when an annotation changes."""
        changed = {k: v for k, v in desired.items() if found.get(k) != v}
        if changed:
            self.elb.modify_target_group(TargetGroupArn=found["TargetGroupArn"], **changed)

    def reconcile_attributes(self, tg_arn, desired):
        current = {a["Key"]: a["Value"] for a in
                   self.elb.describe_target_group_attributes(TargetGroupArn=tg_arn)["Attributes"]}
        changed = [{"Key": k, "Value": v} for k, v in desired.items() if current.get(k) != v]
        if changed:
            self.elb.modify_target_group_attributes(TargetGroupArn=tg_arn, Attributes=changed)

    def reconcile_lb_attributes(self, lb_arn, desired):
        current = {a["Key"]: a["Value"] for a in
                   self.elb.describe_load_balancer_attributes(LoadBalancerArn=lb_arn)["Attributes"]}
        changed = [{"Key": k, "Value": v} for k, v in sorted(desired.items()) if current.get(k) != v]
        if changed:
            self.elb.modify_load_balancer_attributes(LoadBalancerArn=lb_arn, Attributes=changed)

    def reconcile_listener(self, lb_arn, tg_arn, listener=("HTTP", 80, [])):
        """The ALB's one listener (protocol, port, certificates: the first the default one), its
        default action forwarding to the target group; a listener on another port goes."""
        protocol, port, certificates = listener
        action = [{"Type": "forward", "TargetGroupArn": tg_arn}]
        listeners = self.elb.describe_listeners(LoadBalancerArn=lb_arn)["Listeners"]
        mine = next((l for l in listeners if l["Port"] == port and l["Protocol"] == protocol), None)
        default_cert = [{"CertificateArn": certificates[0]}] if certificates else []
        if mine is None:
            mine = self.elb.create_listener(LoadBalancerArn=lb_arn, Protocol=protocol, Port=port,
                                            DefaultActions=action,
                                            **({"Certificates": default_cert} if default_cert else {}))["Listeners"][0]
        else:
            change = {}
            if mine["DefaultActions"][0].get("TargetGroupArn") != tg_arn:
                change["DefaultActions"] = action
            if default_cert and [c.get("CertificateArn") for c in mine.get("Certificates") or []][:1] != \
                    certificates[:1]:
                change["Certificates"] = default_cert
            if change:
                self.elb.modify_listener(ListenerArn=mine["ListenerArn"], **change)
        for other in listeners:
            if other["ListenerArn"] != mine["ListenerArn"]:
                self.elb.delete_listener(ListenerArn=other["ListenerArn"])
        if protocol == "HTTPS":
            extra = {c["CertificateArn"] for c in self.elb.describe_listener_certificates(
                ListenerArn=mine["ListenerArn"])["Certificates"] if not c.get("IsDefault")}
            want = set(certificates[1:])
            if want - extra:
                self.elb.add_listener_certificates(ListenerArn=mine["ListenerArn"], Certificates=[
                    {"CertificateArn": c} for c in sorted(want - extra)])
            if extra - want:
                self.elb.remove_listener_certificates(ListenerArn=mine["ListenerArn"], Certificates=[
                    {"CertificateArn": c} for c in sorted(extra - want)])

    def delete_load_balancer(self, lb_arn):
        for listener in self.elb.describe_listeners(LoadBalancerArn=lb_arn)["Listeners"]:
            self.elb.delete_listener(ListenerArn=listener["ListenerArn"])
        self.elb.delete_load_balancer(LoadBalancerArn=lb_arn)

    def stack_labels(self, group):
        if group.explicit:
            return {self.STACK_LABEL_PREFIX + "stack": group.name}
        return {self.STACK_LABEL_PREFIX + "stack-namespace": group.namespace,
                self.STACK_LABEL_PREFIX + "stack-name": group.name}

    def stack_bindings(self, group):
        selector = ",".join(f"{k}={v}" for k, v in self.stack_labels(group).items())
        return self.custom.list_cluster_custom_object(self.TGB_GROUP, self.TGB_VERSION, self.TGB_PLURAL,
                                                      label_selector=selector)["items"]

    def ensure_binding(self, group, tg, tg_arn):
        spec = {"targetGroupARN": tg_arn, "targetType": tg["target_type"], "ipAddressType": "ipv4",
                "serviceRef": {"name": tg["service"], "port": tg["service_port"]}}
        try:
            found = self.custom.get_namespaced_custom_object(self.TGB_GROUP, self.TGB_VERSION, tg["namespace"],
                                                             self.TGB_PLURAL, tg["name"])
        except ApiException as e:
            if e.status != 404:
                raise
            self.custom.create_namespaced_custom_object(self.TGB_GROUP, self.TGB_VERSION, tg["namespace"],
                                                        self.TGB_PLURAL, {
                "apiVersion": f"{self.TGB_GROUP}/{self.TGB_VERSION}", "kind": "TargetGroupBinding",
                "metadata": {"name": tg["name"], "labels": self.stack_labels(group)}, "spec": spec})
            return
        if {k: found["spec"].get(k) for k in spec} != spec:
            self.custom.patch_namespaced_custom_object(self.TGB_GROUP, self.TGB_VERSION, tg["namespace"],
                                                       self.TGB_PLURAL, tg["name"], {"spec": spec})

    # --- a group, end to end ------------------------------------------------------------------
    def set_finalizers(self, ing, finalizers):
        """The Ingress's finalizers, as the controller's finalizer manager patches them: a JSON merge
        patch (the list replaced: a strategic merge patch, the Python client's default for a
        dict, would merge it and never drop one of two finalizers) with its optimistic lock (the
        resourceVersion it was computed from, so a change made since, such as another group's
        finalizer added in this pass, is a conflict (409) and the group is tried again)."""
        self.net.api_client.call_api(
            f"/apis/networking.k8s.io/v1/namespaces/{ing.metadata.namespace}/ingresses/{ing.metadata.name}",
            "PATCH", header_params={"Content-Type": "application/merge-patch+json", "Accept": "application/json"},
            body={"metadata": {"finalizers": finalizers or None, "resourceVersion": ing.metadata.resource_version}},
            auth_settings=["BearerToken"], response_type="object", _return_http_data_only=True)

    def reconcile_group(self, group, flags):
        if group.error:
            for ing in group.members:
                self.event(ing, "FailedBuildModel", f"Failed build model due to {group.error}")
            return False
        for ing in group.members:
            if group.finalizer not in (ing.metadata.finalizers or []):
                try:
                    self.set_finalizers(ing, (ing.metadata.finalizers or []) + [group.finalizer])
                except ApiException as e:
                    if e.status != 403:
                        raise
                    self.event(ing, "FailedAddFinalizer", f"Failed add finalizer due to {api_message(e)}")
                    return False
        try:
            model = self.build_model(group, flags)
        except (BuildError, AwsCallError) as e:
            for ing in group.members:
                self.event(ing, "FailedBuildModel", f"Failed build model due to {e}")
            return False
        try:
            lb = self.deploy(group, model, flags)
            if not group.members and not self.active_groups - {(group.namespace, group.name)}:
                self.release_backend_sg(flags)  # the last Ingress of this controller went
        except AwsCallError as e:
            for ing in group.members or group.inactive:
                self.event(ing, "FailedDeployModel", f"Failed deploy model due to {e}")
            return False
        if lb:
            hostname = lb["DNSName"].lower()
            for ing in group.members:
                current = (ing.status.load_balancer.ingress or []) if ing.status and ing.status.load_balancer else []
                if [(i.hostname, i.ip) for i in current] != [(hostname, None)]:
                    try:
                        self.net.patch_namespaced_ingress_status(
                            ing.metadata.name, ing.metadata.namespace,
                            {"status": {"loadBalancer": {"ingress": [{"hostname": hostname}]}}})
                    except ApiException as e:
                        if e.status != 403:
                            raise
                        self.event(ing, "FailedUpdateStatus", f"Failed update status due to {api_message(e)}")
                        return False
        for ing in group.inactive:
            self.set_finalizers(ing, [f for f in ing.metadata.finalizers if f != group.finalizer])
            self.last_event.pop((ing.metadata.namespace, ing.metadata.name, ing.metadata.uid), None)
        for ing in group.members:
            self.event(ing, "SuccessfullyReconciled", "Successfully reconciled", kind="Normal")
        return True

    def inputs(self, group, flags, services):
        """What a group is built from, as the controller's watches see it. Its event handlers
        queue an Ingress again only when its annotations, spec or deletion timestamp change,
        and a Service only when its annotations or spec do: a status or finalizer update (this
        controller's own writes among them) is no reason to reconcile."""
        ingresses = sorted((i.metadata.uid, digest(i.metadata.annotations, i.spec, i.metadata.deletion_timestamp))
                           for i in group.members + group.inactive)
        backends = sorted({(i.metadata.namespace, b.name) for i in group.members for b in self.backends(i)})
        return ingresses, [services.get(b) for b in backends], sorted(flags.items())

    def reconcile_groups(self, flags):
        """One pass over every group whose inputs changed (or whose back-off is over). False when
        the controller went meanwhile."""
        services = {(s.metadata.namespace, s.metadata.name): digest(s.metadata.annotations, s.spec)
                    for s in self.core.list_service_for_all_namespaces().items}
        groups = self.load_groups(flags)
        self.active_groups = {(g.namespace, g.name) for g in groups if g.members}
        for group in groups:
            key, inputs = (group.namespace, group.name), self.inputs(group, flags, services)
            if self.reconciled.get(key) == inputs:
                continue
            self.reconciled.pop(key, None)
            if not self.backoff.due(key, inputs):
                continue
            # A pass takes a while on a busy machine: the controller may have gone since it began
            # (helm uninstall --wait returns once its pods are gone), and a gone controller does nothing.
            if not self.still_active():
                self.reconciled.clear()
                return False
            done = False
            try:
                done = self.reconcile_group(group, flags)
            except ApiException as e:
                if e.status not in (404, 409):
                    traceback.print_exc()
            except Exception:  # one group's trouble must not stop the others
                traceback.print_exc()
            if done:
                self.reconciled[key] = inputs
                self.backoff.forget(key)
            else:
                count, delay = self.backoff.failed(key, inputs)
                # For the tests, which wait on the back-off: the next try's wall-clock time.
                print(f"{self.NAME}: group {group.stack} failed {count} time(s) in a row: next try in "
                      f"{delay:.3f} s, at {time.time() + delay:.3f}", flush=True)
        return True

    # --- TargetGroupBindings -------------------------------------------------------------------
    def pod_endpoints(self, namespace, service, port, pods, nodes):
        """(ip, port, pod) of the endpoints the controller registers, as its endpoint resolver chooses them."""
        svc = self.core.read_namespaced_service(service, namespace)
        svc_port = next((p for p in svc.spec.ports if p.port == port or p.name == port), None)
        if svc_port is None:
            return []
        # Raw JSON: the client's model refuses a slice with no endpoints (a Service without pods).
        raw = self.discovery.list_namespaced_endpoint_slice(
            namespace, label_selector=f"kubernetes.io/service-name={service}", _preload_content=False)
        found = []
        for sl in json.loads(raw.data)["items"]:
            for p in sl.get("ports") or []:
                if svc_port.name and p.get("name") and p["name"] != svc_port.name:
                    continue
                for ep in sl.get("endpoints") or []:
                    ref = ep.get("targetRef") or {}
                    pod = pods.get((ref.get("namespace") or namespace, ref.get("name")))
                    if not ep.get("addresses") or ref.get("kind") != "Pod" or pod is None:
                        continue
                    conditions = ep.get("conditions") or {}
                    if conditions.get("ready", True):
                        found.append((ep["addresses"][0], p["port"], pod))
                        continue
                    containers_ready = (condition(pod, "ContainersReady") or {}).get("status") == "True"
                    node_ready = (condition(nodes.get(pod["spec"].get("nodeName"), {}), "Ready") or {}).get("status")
                    if containers_ready and node_ready == "True" and not conditions.get("terminating"):
                        found.append((ep["addresses"][0], p["port"], pod))
        return found

    def reconcile_binding(self, tgb, pods, nodes):
        ns, name, spec = tgb["metadata"]["namespace"], tgb["metadata"]["name"], tgb["spec"]
        tg_arn = spec["targetGroupARN"]
        endpoints = self.pod_endpoints(ns, spec["serviceRef"]["name"], spec["serviceRef"]["port"], pods, nodes)
        health = self.elb.describe_target_health(TargetGroupArn=tg_arn)["TargetHealthDescriptions"]
        registered = {h["Target"]["Id"] for h in health if h["TargetHealth"]["State"] != "draining"}
        wanted = {ip for ip, _, _ in endpoints}
        add = [{"Id": ip, "Port": port} for ip, port, _ in endpoints if ip not in registered]
        gone = [{"Id": h["Target"]["Id"], "Port": h["Target"]["Port"]} for h in health
                if h["Target"]["Id"] in registered - wanted]
        if add:
            self.elb.register_targets(TargetGroupArn=tg_arn, Targets=add)
        if gone:
            self.elb.deregister_targets(TargetGroupArn=tg_arn, Targets=gone)
        if not self.READINESS_GATES:
            return endpoints
        if add:
            health = self.elb.describe_target_health(TargetGroupArn=tg_arn)["TargetHealthDescriptions"]
        by_ip = {h["Target"]["Id"]: h["TargetHealth"] for h in health}
        gate = READINESS_GATE_PREFIX + name
        for ip, _, pod in endpoints:
            if any(g.get("conditionType") == gate for g in pod["spec"].get("readinessGates") or []):
                self.set_gate(pod, gate, by_ip.get(ip) or {"State": "initial", "Reason": "Elb.RegistrationInProgress",
                                                           "Description": "Target registration is in progress"})
        return endpoints

    def set_gate(self, pod, gate, target_health):
        status = "True" if target_health["State"] == "healthy" else "False"
        reason, message = target_health.get("Reason") or "", target_health.get("Description") or ""
        current = condition(pod, gate) or {}
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        conditions = []
        if (current.get("status"), current.get("reason") or "", current.get("message") or "") != (status, reason,
                                                                                                  message):
            conditions.append({"type": gate, "status": status, "reason": reason, "message": message,
                               "lastProbeTime": None, "lastTransitionTime": now})
        ip = (pod.get("status") or {}).get("podIP") or ""
        if not pod_network.runs_on_runner(ip):
            # kwok keeps no pod's Ready up to date: as the kubelet does, Ready follows the readiness
            # gates (the pod runner does this for its own pods).
            containers = (condition(pod, "ContainersReady") or {}).get("status") == "True"
            want = pod_status.ready(pod, containers, {gate: status})
            have = condition(pod, "Ready") or {}
            if (have.get("status"), have.get("reason")) != (want["status"], want["reason"]):
                conditions.append({"type": "Ready", **want, "lastProbeTime": None, "lastTransitionTime": now})
        if conditions:
            self.core.patch_namespaced_pod_status(pod["metadata"]["name"], pod["metadata"]["namespace"], {
                "status": {"conditions": conditions}})

    def reconcile_bindings(self, pods, nodes, flags):
        """Each binding's targets, then the backend group's rules on the groups of the targets'
        network interfaces (the controller's networking manager)."""
        bound = []
        for tgb in self.custom.list_cluster_custom_object(self.TGB_GROUP, self.TGB_VERSION, self.TGB_PLURAL)["items"]:
            try:
                bound.append((tgb, self.reconcile_binding(tgb, pods, nodes)))
            except ApiException as e:
                if e.status not in (404, 409):
                    traceback.print_exc()
            except AwsCallError as e:
                if e.code != "TargetGroupNotFound":
                    print(f"{self.NAME}: TargetGroupBinding {tgb['metadata']['name']}: {e}", flush=True)
        backend = self.backend_sg(flags, create=False)
        if backend is None:
            return
        cluster = flags["cluster-name"]
        groups = self.eni_groups({ip for _, endpoints in bound for ip, _, _ in endpoints}, cluster)
        # The rule opens the traffic port, and a numeric health-check port too (the binding's networking).
        health_ports = {tg["TargetGroupArn"]: tg.get("HealthCheckPort") for tg in
                        self.elb.describe_target_groups()["TargetGroups"]} if bound else {}
        wanted, failed = {}, []
        for tgb, endpoints in bound:
            problems = sorted({groups[ip][2] for ip, _, _ in endpoints if ip in groups and groups[ip][2]})
            if problems:
                failed.append((tgb, problems[0]))
                continue
            health_port = health_ports.get(tgb["spec"]["targetGroupARN"]) or "traffic-port"
            for ip, port, _ in endpoints:
                if ip in groups:
                    wanted.setdefault(groups[ip][1], set()).add(port)
                    if health_port.isdigit():
                        wanted[groups[ip][1]].add(int(health_port))
        if failed:  # nothing is revoked while a binding cannot say what it needs
            for sg, ports in wanted.items():
                self.reconcile_networking(backend, {sg: ports}, revoke=False)
        else:
            self.reconcile_networking(backend, wanted)
        for tgb, problem in failed:
            meta = tgb["metadata"]
            ref = SimpleNamespace(metadata=SimpleNamespace(namespace=meta["namespace"], name=meta["name"],
                                                           uid=meta["uid"]))
            self.event(ref, "FailedNetworkReconcile", problem,
                       involved=("TargetGroupBinding", f"{self.TGB_GROUP}/{self.TGB_VERSION}"),
                       component="targetGroupBinding")
