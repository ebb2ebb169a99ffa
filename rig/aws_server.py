"""The rig's AWS account: moto's server, seeded with an EKS cluster and its VPC.

One port serves every AWS service moto implements (IAM, EC2, ELBv2, EKS,
STS) plus moto's own API (`/moto-api/reset`, `/moto-api/recorder/...`). The
rig adds `POST /rig/reset`: reset moto, then seed again (with moto's random
generator seeded, so identifiers repeat), so a test starts from the same
account every time.

The seed is what an EKS cluster made by eksctl looks like: a VPC with two
private and two public subnets in two availability zones, the public ones
routed through an internet gateway and tagged for internet-facing load
balancers, the cluster's `resourcesVpcConfig` listing all four. The
cluster's endpoint and certificate authority are set to the rig's own
kube-apiserver, so "this kube context is that EKS cluster" holds.

ELBv2 is made to behave as ELBv2 does where moto is lenient:

- target health over time: a registered target is `initial`
  (Elb.RegistrationInProgress, then Elb.InitialHealthChecking) until it has
  passed the target group's healthy threshold of health checks, then
  `healthy`; it becomes `unhealthy` after the unhealthy threshold of failed
  checks, with the reason of the last failure. A deregistered target is
  `draining` (Target.DeregistrationInProgress) for the target group's
  `deregistration_delay.timeout_seconds`, at most MAX_DRAIN_SECONDS on the
  rig, and then disappears from DescribeTargetHealth.
- health checks are made: an HTTP GET of the target group's health-check
  path on its health-check port (the target's port for `traffic-port`),
  passed when the status is among the matcher's codes; a wrong code is
  Target.ResponseCodeMismatch ("Health checks failed with these codes:
  [404]"), no answer in the timeout Target.Timeout, a refused connection
  Target.FailedHealthChecks. The interval and timeout run on the rig's
  clock (CLOCK_SCALE). A check the target's security groups do not admit
  (the network interface holding its address has no rule for the port
  from one of the load balancer's groups or a CIDR) times out, as on AWS.
  What answers a pod IP is pod_network.py's map,
  which the ALB simulator (it sees the pods) posts to `POST /rig/pod-network`
  (`{"addresses": {...}}`); an address not in it answers nothing.
- ModifyTargetGroupAttributes refuses, atomically, an attribute key an
  HTTP target group does not have (ValidationError "... is not recognized"),
  one it has only on other load balancer types (InvalidConfigurationRequest)
  and a value outside the attribute's documented range or set.
- an internal load balancer's DNS name starts with `internal-`.
- DescribeTags refuses the whole request when one ARN in it names a load
  balancer, target group, listener or rule that does not exist
  (LoadBalancerNotFound, TargetGroupNotFound, ...), where moto answers it
  with empty tags.
- DeleteSecurityGroup refuses (DependencyViolation "resource sg-... has a
  dependent object") a group a load balancer, a network interface or
  another group's rule uses, and for LB_ENI_RELEASE_SECONDS after the
  deletion of the last load balancer that used it, while ELBv2 releases
  its network interfaces (minutes on AWS; seconds on the rig). moto
  deletes any group, and keeps a deleted group's tags.

The seed also has the cluster security group EKS makes (tagged
`kubernetes.io/cluster/<name>`, in `DescribeCluster` as
`clusterSecurityGroupId`) that the nodes' network interfaces carry.

`POST /rig/reset` clears the health state too.

Faults, for tests that prove a client survives them: `POST /rig/faults`
with `{"throttle": F, "seed": N}` answers the fraction F of AWS API
requests (a random draw per request from a generator seeded with N, so a
run repeats) with the throttling error the real service sends for its
protocol, before moto sees them: nothing is applied and moto's recorder
does not record them. IAM, STS and ELBv2 (query protocol) answer HTTP 400
`<ErrorResponse>` with Type Sender, Code Throttling, "Rate exceeded"; EC2
answers HTTP 503 `<Response><Errors>` with Code RequestLimitExceeded; EKS
(rest-json) answers HTTP 429 with `x-amzn-ErrorType: ThrottlingException`.
`{"throttle": 0}` turns it off; every POST zeroes the counters. `GET
/rig/faults` reads the setting and the counters (requests seen, throttled
answers, by service and by client, the client being the first word of the
User-Agent, e.g. `aws-sdk-rust`). `POST /rig/reset` turns faults off.
The pod runner's VPC (the ALB's DNS name and routing, User-Agent `rig-vpc`)
is never faulted: on AWS neither goes through the API.

`{"gone": [ARN, ...], "gone_client": "aws-sdk-rust"}` freezes the moment
between a listing and a read while the controller deletes: the listings
(DescribeLoadBalancers, DescribeTargetGroups) still show those resources,
and any other ELBv2 request naming one of them is answered with the
not-found error ELBv2 sends once it is deleted (TargetGroupNotFound,
LoadBalancerNotFound), to that client only when `gone_client` is given,
and only in the actions `gone_actions` lists when it is given (e.g.
`["DescribeTargetHealth"]`: deleted after its tags were read).
`GET /rig/faults` counts those answers by client (`gone_by_client`).

STS and IAM check what a caller with temporary credentials may do (IRSA, as
on EKS): see aws_identity.py.

EKS add-ons, EKS Pod Identity associations and EKS Auth's
AssumeRoleForPodIdentity, which moto lacks, are served before moto by
eks_pod_identity.py (after the faults: EKS and EKS Auth throttle as every
other service); `POST /rig/reset` clears them.

EKS Auto Mode's cluster configuration (`computeConfig`, `storageConfig`,
`kubernetesNetworkConfig.elasticLoadBalancing` in DescribeCluster), which moto
keeps no trace of, is eks_auto_mode.py's: `POST /rig/eks/auto-mode`
`{"cluster": NAME, "enabled": BOOL}` (the rig's switch) and EKS's own
UpdateClusterConfig with those settings; `POST /rig/reset` turns it off.

usage: aws_server.py PORT CLUSTER_NAME KUBE_SERVER_URL CA_FILE OIDC_ISSUER
"""

import base64
import contextlib
import hashlib
import http.client
import io
import json
import os
import random
import socket
import sys
import threading
import time
import uuid
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import boto3
import botocore.config
from moto.backends import get_backend
from moto.core import DEFAULT_ACCOUNT_ID
from moto.elbv2.exceptions import InvalidConfigurationRequest, ValidationError
from moto.elbv2.models import ELBv2Backend, FakeHealthStatus, FakeTargetGroup
from moto.moto_api._internal import mock_random, moto_api_backend
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Response

import aws_identity
import eks_auto_mode
import eks_pod_identity
import pod_network

REGION = "us-east-1"
ZONES = ["us-east-1a", "us-east-1b"]
# The rig's clock for health checks: a target group's interval and timeout divided by
# CLOCK_SCALE (15 s -> 1.5 s), an interval of at least HEALTH_CHECK_INTERVAL and a timeout of
# at least HEALTH_CHECK_MIN_TIMEOUT (a busy two-core machine answers loopback slowly too).
CLOCK_SCALE = 10
HEALTH_CHECK_INTERVAL = 1.5
HEALTH_CHECK_MIN_TIMEOUT = 2.0
MAX_DRAIN_SECONDS = 20
SEED_AGENT = "rig-aws-seed"
VPC_AGENT = "rig-vpc"  # the pod runner's VPC reads: what stands for DNS and the ALB's routing


# --- resets run alone ----------------------------------------------------------------------
class Gate:
    """A reset (moto's random generator seeded, the account made again) runs alone. Anything
    served meanwhile would draw from the generator and shift every identifier after it: a
    request (the VPC CNI stand-in making a network interface), or a first look at a backend
    (moto makes an account's default VPC when its EC2 backend is first read)."""

    def __init__(self):
        self.cond = threading.Condition()
        self.active, self.resetting = 0, False

    @contextlib.contextmanager
    def shared(self):
        with self.cond:
            self.cond.wait_for(lambda: not self.resetting)
            self.active += 1
        try:
            yield
        finally:
            with self.cond:
                self.active -= 1
                self.cond.notify_all()

    @contextlib.contextmanager
    def alone(self):
        with self.cond:
            self.cond.wait_for(lambda: not self.resetting)
            self.resetting = True
            self.cond.wait_for(lambda: self.active == 0)
        try:
            yield
        finally:
            with self.cond:
                self.resetting = False
                self.cond.notify_all()


GATE = Gate()


# --- target health over time ---------------------------------------------------------------
def matches(codes, status):
    """Whether an HTTP status is among a matcher's codes ("200", "200-299", "200,202")."""
    for part in codes.split(","):
        low, _, high = part.strip().partition("-")
        if low.isdigit() and int(low) <= status <= int(high or low):
            return True
    return False


def health_check(tg, pod_ip, dial, target_port):
    """One health check of a target as ELBv2 makes it: an HTTP GET of the target group's path on
    its health-check port (the traffic port by default), passed by the matcher's codes.
    (True, None, None) or (False, reason, description) with ELBv2's reason codes."""
    port = target_port if tg.health_check_port in (None, "traffic-port") else int(tg.health_check_port)
    try:
        admitted = security_groups_admit(tg, pod_ip, port)
    except RuntimeError:  # moto's state changed under the read: the next check reads it again
        admitted = False
    if not admitted:
        return False, "Target.Timeout", "Request timed out"
    where = dial(port)
    if where is None:
        return False, "Target.FailedHealthChecks", "Health checks failed"
    timeout = max(HEALTH_CHECK_MIN_TIMEOUT, int(tg.health_check_timeout_seconds) / CLOCK_SCALE)
    conn = http.client.HTTPConnection(where[0], where[1], timeout=timeout)
    try:
        conn.request("GET", tg.health_check_path or "/",
                     headers={"Host": f"{where[0]}:{port}", "User-Agent": "ELB-HealthChecker/2.0"})
        status = conn.getresponse().status
    except (socket.timeout, TimeoutError):
        return False, "Target.Timeout", "Request timed out"
    except OSError:
        return False, "Target.FailedHealthChecks", "Health checks failed"
    finally:
        conn.close()
    codes = (tg.matcher or {}).get("HttpCode") or "200"
    if matches(codes, status):
        return True, None, None
    return False, "Target.ResponseCodeMismatch", f"Health checks failed with these codes: [{status}]"


class TargetHealth:
    """The health of every registered or draining target, advanced by a checker thread that
    makes the target groups' health checks (pod_network.py says what answers a pod IP)."""

    def __init__(self):
        self.lock = threading.RLock()
        self.targets = {}  # (target group ARN, target id) -> state
        self.network = {}
        self.state_dir = os.environ.get("RIG_STATE", "")
        self.standins = [(h, int(p)) for h, _, p in (a.rpartition(":") for a in
                                                      os.environ.get("RIG_GRAPHQL_STANDINS", "").split(",") if a)]
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="health-check")

    def reset(self):
        with self.lock:
            self.targets.clear()
            self.network = {}

    def report(self, network):
        with self.lock:
            self.network = dict(network)

    def dial(self, network, pod_ip):
        return lambda port: pod_network.dial(network, self.state_dir, self.standins, pod_ip, port)

    def registered(self, tg_arn, target):
        with self.lock:
            current = self.targets.get((tg_arn, target["Id"]))
            if current is None or current["state"] == "draining":
                self.targets[(tg_arn, target["Id"])] = {
                    "state": "initial", "passes": 0, "fails": 0, "checks": 0, "port": target.get("Port"),
                    "reason": None, "next_check": time.monotonic() + HEALTH_CHECK_INTERVAL}

    def deregistered(self, tg_arn, target, delay_seconds):
        with self.lock:
            self.targets[(tg_arn, target["Id"])] = {
                "state": "draining", "target": target,
                "until": time.monotonic() + min(delay_seconds, MAX_DRAIN_SECONDS)}

    def draining(self, tg_arn):
        with self.lock:
            return [t["target"] for (arn, _), t in self.targets.items()
                    if arn == tg_arn and t["state"] == "draining"]

    def describe(self, tg_arn, target_id):
        """(state, reason, description) of a target this tracks, else None."""
        with self.lock:
            t = self.targets.get((tg_arn, target_id))
            if t is None:
                return None
            if t["state"] == "initial" and t["checks"] == 0:
                return "initial", "Elb.RegistrationInProgress", "Target registration is in progress"
            if t["state"] == "unhealthy":
                return ("unhealthy",) + (t["reason"] or ("Target.FailedHealthChecks", "Health checks failed"))
            return {
                "initial": ("initial", "Elb.InitialHealthChecking", "Initial health checks in progress"),
                "healthy": ("healthy", None, None),
                "draining": ("draining", "Target.DeregistrationInProgress", "Target deregistration is in progress"),
            }[t["state"]]

    def check(self, target_groups):
        """One pass: health checks that are due (made side by side), drains that are over, targets
        of deleted groups."""
        now = time.monotonic()
        due = []
        with self.lock:
            network = self.network
            for key, t in list(self.targets.items()):
                tg = target_groups.get(key[0])
                if tg is None or (t["state"] == "draining" and now >= t["until"]):
                    del self.targets[key]
                    continue
                if t["state"] == "draining" or now < t["next_check"]:
                    continue
                interval = int(tg.health_check_interval_seconds or 30) / CLOCK_SCALE
                t["next_check"] = now + max(interval, HEALTH_CHECK_INTERVAL)
                due.append((key, t, tg, self.pool.submit(health_check, tg, key[1], self.dial(network, key[1]),
                                                          t["port"] or tg.port)))
        for key, t, tg, future in due:
            passed, reason, description = future.result()
            with self.lock:
                if self.targets.get(key) is not t:
                    continue
                t["checks"] += 1
                if passed:
                    t["passes"], t["fails"] = t["passes"] + 1, 0
                else:
                    t["passes"], t["fails"], t["last_failure"] = 0, t["fails"] + 1, (reason, description)
                if t["state"] != "healthy" and t["passes"] >= int(tg.healthy_threshold_count):
                    t["state"], t["reason"] = "healthy", None
                elif t["state"] != "unhealthy" and t["fails"] >= int(tg.unhealthy_threshold_count):
                    t["state"], t["reason"] = "unhealthy", t["last_failure"]
                elif t["state"] == "unhealthy" and not passed:
                    t["reason"] = t["last_failure"]

    def run(self):
        while True:
            with GATE.shared():
                self.check(get_backend("elbv2")[DEFAULT_ACCOUNT_ID][REGION].target_groups)
            time.sleep(0.25)


HEALTH = TargetHealth()


def patch_target_health():
    register, deregister, health_for = FakeTargetGroup.register, FakeTargetGroup.deregister, FakeTargetGroup.health_for
    describe_target_health = ELBv2Backend.describe_target_health

    def registering(self, targets):
        register(self, targets)
        for target in targets:
            HEALTH.registered(self.arn, target)

    def deregistering(self, targets):
        found = [dict(self.targets[t["Id"]]) for t in targets if t["Id"] in self.targets]
        deregister(self, targets)
        for target in found:
            HEALTH.deregistered(self.arn, target, int(self.attributes["deregistration_delay.timeout_seconds"]))

    def tracked_health(self, target, ec2_backend):
        found = HEALTH.describe(self.arn, target["Id"])
        if found is None:
            return health_for(self, target, ec2_backend)
        port = self.targets.get(target["Id"], target).get("Port", self.port)
        return FakeHealthStatus(target["Id"], port, self.health_check_port, *found)

    def with_draining(self, target_group_arn, targets):
        if not targets and target_group_arn in self.target_groups:
            registered = list(self.target_groups[target_group_arn].targets.values())
            targets = registered + HEALTH.draining(target_group_arn)
        return describe_target_health(self, target_group_arn, targets)

    FakeTargetGroup.register = registering
    FakeTargetGroup.deregister = deregistering
    FakeTargetGroup.health_for = tracked_health
    ELBv2Backend.describe_target_health = with_draining


# --- target group attributes ----------------------------------------------------------------
def integer_in(low, high, *also):
    def check(value):
        if value in also or (value.lstrip("-").isdigit() and low <= int(value) <= high):
            return None
        return f"must be between '{low}-{high}' inclusive" + (f" or one of {list(also)}" if also else "")
    return check


def one_of(*allowed):
    return lambda value: None if value in allowed else f"must be one of [{', '.join(allowed)}]"


def cookie_name(value):
    if not value or value.startswith(("AWSALB", "AWSALBAPP", "AWSALBTG")):
        return "must not be empty or start with AWSALB, AWSALBAPP or AWSALBTG"
    return None


# The attributes of a target group of an Application Load Balancer (HTTP/HTTPS), with their values.
HTTP_TG_ATTRIBUTES = {
    "deregistration_delay.timeout_seconds": integer_in(0, 3600),
    "slow_start.duration_seconds": integer_in(30, 900, "0"),
    "load_balancing.algorithm.type": one_of("round_robin", "least_outstanding_requests", "weighted_random"),
    "load_balancing.algorithm.anomaly_mitigation": one_of("on", "off"),
    "load_balancing.cross_zone.enabled": one_of("true", "false", "use_load_balancer_configuration"),
    "stickiness.enabled": one_of("true", "false"),
    "stickiness.type": one_of("lb_cookie", "app_cookie"),
    "stickiness.lb_cookie.duration_seconds": integer_in(1, 604800),
    "stickiness.app_cookie.cookie_name": cookie_name,
    "stickiness.app_cookie.duration_seconds": integer_in(1, 604800),
    "target_group_health.dns_failover.minimum_healthy_targets.count": integer_in(1, 2 ** 31 - 1, "off"),
    "target_group_health.dns_failover.minimum_healthy_targets.percentage": integer_in(1, 100, "off"),
    "target_group_health.unhealthy_state_routing.minimum_healthy_targets.count": integer_in(1, 2 ** 31 - 1),
    "target_group_health.unhealthy_state_routing.minimum_healthy_targets.percentage": integer_in(1, 100, "off"),
    "waf.fail_open.enabled": one_of("true", "false"),
}
# Attributes of Network and Gateway Load Balancer or Lambda target groups.
OTHER_TG_ATTRIBUTES = {
    "deregistration_delay.connection_termination.enabled", "preserve_client_ip.enabled",
    "proxy_protocol_v2.enabled", "target_health_state.unhealthy.connection_termination.enabled",
    "target_health_state.unhealthy.draining_interval_seconds", "lambda.multi_value_headers.enabled",
    "target_failover.on_deregistration", "target_failover.on_unhealthy",
}


def patch_target_group_attributes():
    modify = ELBv2Backend.modify_target_group_attributes

    def validated(self, target_group_arn, attributes):
        tg = self.target_groups.get(target_group_arn)
        if tg is not None and tg.protocol in ("HTTP", "HTTPS"):
            for key, value in attributes.items():
                if key in OTHER_TG_ATTRIBUTES:
                    raise InvalidConfigurationRequest("The provided target group attribute is not supported")
                if key not in HTTP_TG_ATTRIBUTES:
                    raise ValidationError(f"Target group attribute key '{key}' is not recognized")
                if key == "stickiness.type" and value.startswith("source_ip"):
                    raise InvalidConfigurationRequest(
                        f"Stickiness type '{value}' is not supported for target groups with the {tg.protocol} protocol")
                problem = HTTP_TG_ATTRIBUTES[key](value)
                if problem:
                    raise ValidationError(f"'{key}' value '{value}' {problem}")
        modify(self, target_group_arn, attributes)

    ELBv2Backend.modify_target_group_attributes = validated


# --- load balancer DNS names ---------------------------------------------------------------
# --- security groups in use ------------------------------------------------------------------
LB_ENI_RELEASE_SECONDS = 5
LB_RELEASING = {}  # security group id -> when the last load balancer using it was deleted


def patch_security_group_dependencies():
    """DeleteSecurityGroup refuses a group something still uses, as EC2 does: a load balancer
    (and for a few seconds after its deletion, while ELBv2 releases its network interfaces), a
    network interface, or another group's rule that names it as its source."""
    from moto.ec2.exceptions import DependencyViolationError
    from moto.ec2.models.security_groups import SecurityGroupBackend
    delete_group, delete_lb = SecurityGroupBackend.delete_security_group, ELBv2Backend.delete_load_balancer

    def in_use(ec2, group_id):
        now = time.monotonic()
        if LB_RELEASING.get(group_id, 0) > now:
            return True
        for lb in get_backend("elbv2")[DEFAULT_ACCOUNT_ID][REGION].load_balancers.values():
            if group_id in (lb.security_groups or []):
                return True
        for eni in ec2.enis.values():
            if any(g.id == group_id for g in eni.group_set):
                return True
        for groups in ec2.groups.values():
            for other in groups.values():
                if other.id != group_id and any((r.source_group or {}).get("GroupId") == group_id
                                                for r in other.ingress_rules + other.egress_rules):
                    return True
        return False

    def deleting_group(self, name=None, group_id=None):
        group = self.get_security_group_from_id(group_id) if group_id else \
            self.get_security_group_by_name_or_id(name)
        if group is not None and in_use(self, group.id):
            raise DependencyViolationError(f"resource {group.id} has a dependent object")
        deleted = delete_group(self, name=name, group_id=group_id)
        if group is not None:
            self.tags.pop(group.id, None)  # a deleted resource's tags go with it; moto keeps them
        return deleted

    def deleting_lb(self, arn):
        lb = self.load_balancers.get(arn)
        delete_lb(self, arn)
        for group_id in (lb.security_groups or []) if lb is not None else []:
            LB_RELEASING[group_id] = time.monotonic() + LB_ENI_RELEASE_SECONDS

    SecurityGroupBackend.delete_security_group = deleting_group
    ELBv2Backend.delete_load_balancer = deleting_lb

    # EC2 finds a network interface by any of its private addresses (a pod's is a secondary
    # one) matching any of the filter's values; moto matches the primary address only.
    from moto.ec2.models.elastic_network_interfaces import NetworkInterfaceBackend
    all_enis = NetworkInterfaceBackend.get_all_network_interfaces

    def by_any_address(self, eni_ids=None, filters=None):
        filters = dict(filters or {})
        wanted = set()
        for name in ("addresses.private-ip-address", "private-ip-address"):
            wanted |= set(filters.pop(name, None) or [])
        found = all_enis(self, eni_ids, filters)
        if wanted:
            found = [e for e in found if wanted & {a["PrivateIpAddress"] for a in e.private_ip_addresses}]
        return found

    NetworkInterfaceBackend.get_all_network_interfaces = by_any_address


def security_groups_admit(tg, pod_ip, port):
    """Whether the security groups of the network interface that holds pod_ip let the target
    group's load balancers reach `port`: a rule for that TCP port from one of their groups, or
    from a CIDR. No interface holds the address: nothing routes to it."""
    ec2 = get_backend("ec2")[DEFAULT_ACCOUNT_ID][REGION]
    elb = get_backend("elbv2")[DEFAULT_ACCOUNT_ID][REGION]
    eni = next((e for e in list(ec2.enis.values())
                if any(a["PrivateIpAddress"] == pod_ip for a in e.private_ip_addresses)), None)
    if eni is None:
        return False
    sources = {g for arn in tg.load_balancer_arns if arn in elb.load_balancers
               for g in elb.load_balancers[arn].security_groups or []}
    for group in eni.group_set:
        for rule in group.ingress_rules:
            if rule.ip_protocol not in ("tcp", "-1"):
                continue
            if rule.ip_protocol == "tcp" and not (int(rule.from_port) <= port <= int(rule.to_port)):
                continue
            if (rule.source_group or {}).get("GroupId") in sources or (rule.ip_range or {}).get("CidrIp"):
                return True
    return False


class ErrorsLogged(WSGIRequestHandler):
    """Logs only the requests answered with an error. A line for every request (each says
    only `POST / 200`: the action is in the body) cost an eighth of this server's time."""

    def log_request(self, code="-", size="-"):
        if str(code).isdigit() and int(code) >= 400:
            super().log_request(code, size)


def patch_describe_tags():
    original = ELBv2Backend.describe_tags

    def strict(self, resource_arns):
        for arn in resource_arns:
            self._get_resource_by_arn(arn)  # raises the resource's not-found error
        return original(self, resource_arns)

    ELBv2Backend.describe_tags = strict


def patch_dns_names():
    create = ELBv2Backend.create_load_balancer

    def named(self, *args, **kwargs):
        lb = create(self, *args, **kwargs)
        number = int(hashlib.sha256(lb.arn.encode()).hexdigest(), 16) % 10 ** 10
        prefix = "internal-" if lb.scheme == "internal" else ""
        lb.dns_name = f"{prefix}{lb.name}-{number}.{self.region_name}.elb.amazonaws.com"
        return lb

    ELBv2Backend.create_load_balancer = named


# --- faults: throttling ------------------------------------------------------------------------
# The XML namespace of each query-protocol service's responses.
QUERY_NAMESPACES = {
    "iam": "https://iam.amazonaws.com/doc/2010-05-08/",
    "sts": "https://sts.amazonaws.com/doc/2011-06-15/",
    "elasticloadbalancing": "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/",
}
# STS calls that carry no signature (the web identity is the credential).
UNSIGNED_STS_ACTIONS = {"AssumeRoleWithWebIdentity", "AssumeRoleWithSAML"}


def request_body(environ):
    """The request's body, put back for moto to read again; empty without a Content-Length."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if not length:
        return b""
    body = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(body)
    return body


def signing_service(environ):
    """The service a request is for, from its SigV4 credential scope
    (`Credential=KEY/DATE/REGION/SERVICE/aws4_request`); an unsigned STS call by its Action."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if "Credential=" in auth:
        scope = auth.split("Credential=", 1)[1].split(",", 1)[0].split("/")
        return scope[3] if len(scope) > 3 else None
    if environ.get("REQUEST_METHOD") != "POST":
        return None
    body = request_body(environ)
    action = next((kv[len(b"Action="):].decode() for kv in body.split(b"&") if kv.startswith(b"Action=")), None)
    return "sts" if action in UNSIGNED_STS_ACTIONS else None


def throttled_answer(service):
    """(status, headers, body) of the throttling error `service` sends, or None for another service."""
    request_id = str(uuid.uuid4())
    if service in QUERY_NAMESPACES:
        body = (f'<ErrorResponse xmlns="{QUERY_NAMESPACES[service]}"><Error><Type>Sender</Type>'
                f'<Code>Throttling</Code><Message>Rate exceeded</Message></Error>'
                f'<RequestId>{request_id}</RequestId></ErrorResponse>')
        return 400, [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)], body
    if service == "ec2":
        body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>RequestLimitExceeded</Code>'
                f'<Message>Request limit exceeded.</Message></Error></Errors><RequestID>{request_id}</RequestID>'
                '</Response>')
        return 503, [("Content-Type", "text/xml;charset=UTF-8")], body
    if service in ("eks", "eks-auth"):
        return 429, [("Content-Type", "application/json"), ("x-amzn-ErrorType", "ThrottlingException"),
                     ("x-amzn-RequestId", request_id)], json.dumps({"message": "Rate exceeded"})
    return None


def not_found_answer(arn):
    """(status, headers, body) of ELBv2's answer to a request naming `arn` once it is deleted."""
    request_id = str(uuid.uuid4())
    code, message = next(((code, message) for kind, code, message in (
        (":targetgroup/", "TargetGroupNotFound", "One or more target groups not found"),
        (":listener-rule/", "RuleNotFound", "One or more rules not found"),
        (":listener/", "ListenerNotFound", "One or more listeners not found"),
    ) if kind in arn), ("LoadBalancerNotFound", "One or more load balancers not found"))
    body = (f'<ErrorResponse xmlns="{QUERY_NAMESPACES["elasticloadbalancing"]}"><Error><Type>Sender</Type>'
            f'<Code>{code}</Code><Message>{message}</Message></Error>'
            f'<RequestId>{request_id}</RequestId></ErrorResponse>')
    return 400, [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)], body


# ELBv2's listings, which still show a resource that is `gone`.
ELBV2_LISTINGS = {"DescribeLoadBalancers", "DescribeTargetGroups"}


class Faults:
    def __init__(self):
        self.lock = threading.Lock()
        self.set(0.0, 0)

    def set(self, throttle, seed, gone=(), gone_client=None, gone_actions=None):
        if not 0.0 <= throttle <= 1.0:
            raise ValueError(f"throttle {throttle} is not a fraction between 0 and 1")
        if isinstance(gone, str) or not all(isinstance(a, str) and a.startswith("arn:") for a in gone):
            raise ValueError(f"gone {gone!r} is not a list of ARNs")
        if gone_actions is not None and (isinstance(gone_actions, str)
                                         or not all(isinstance(a, str) for a in gone_actions)):
            raise ValueError(f"gone_actions {gone_actions!r} is not a list of ELBv2 actions")
        with self.lock:
            self.throttle, self.seed = throttle, seed
            self.gone, self.gone_client = set(gone), gone_client
            self.gone_actions = None if gone_actions is None else set(gone_actions)
            self.random = random.Random(seed)
            self.requests, self.throttled = 0, 0
            self.by_service, self.by_client, self.gone_by_client = Counter(), Counter(), Counter()

    def state(self):
        with self.lock:
            return {"throttle": self.throttle, "seed": self.seed, "requests": self.requests,
                    "throttled": self.throttled, "throttled_by_service": dict(self.by_service),
                    "throttled_by_client": dict(self.by_client), "gone": sorted(self.gone),
                    "gone_client": self.gone_client, "gone_by_client": dict(self.gone_by_client),
                    "gone_actions": None if self.gone_actions is None else sorted(self.gone_actions)}

    def intercept(self, environ):
        """The fault's answer to this AWS API request, or None to let moto serve it."""
        if self.throttle <= 0 and not self.gone:
            return None
        if VPC_AGENT in (environ.get("HTTP_USER_AGENT") or ""):
            return None  # the pod runner's VPC (DNS, the ALB's routing): no API client to fault
        service = signing_service(environ)
        client = (environ.get("HTTP_USER_AGENT") or "-").split("/", 1)[0].split(" ", 1)[0]
        return self.gone_answer(environ, service, client) or self.throttled_answer(environ, service, client)

    def gone_answer(self, environ, service, client):
        with self.lock:
            gone, only, actions = set(self.gone), self.gone_client, self.gone_actions
        if not gone or service != "elasticloadbalancing" or (only and client != only):
            return None
        params = urllib.parse.parse_qs(request_body(environ).decode())
        action = params.get("Action", [""])[0]
        if action in ELBV2_LISTINGS or (actions is not None and action not in actions):
            return None
        named = sorted({v for values in params.values() for v in values} & gone)
        if not named:
            return None
        with self.lock:
            self.gone_by_client[client] += 1
        print(f"aws: {named[0]} answered as gone to {client} ({action})", flush=True)
        return not_found_answer(named[0])

    def throttled_answer(self, environ, service, client):
        if self.throttle <= 0:
            return None
        answer = throttled_answer(service)
        if answer is None:
            return None
        with self.lock:
            self.requests += 1
            if self.random.random() >= self.throttle:
                return None
            self.throttled += 1
            self.by_service[service] += 1
            self.by_client[client] += 1
        # The SDKs say which attempt this is (`amz-sdk-request: attempt=2; max=3`).
        print(f"aws: throttled {service} {environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')} from {client} "
              f"({environ.get('HTTP_AMZ_SDK_REQUEST') or 'attempt unknown'})", flush=True)
        return answer


FAULTS = Faults()
IDENTITY = aws_identity.Identity(DEFAULT_ACCOUNT_ID, REGION)
POD_IDENTITY = eks_pod_identity.PodIdentity(DEFAULT_ACCOUNT_ID, REGION, IDENTITY, os.environ.get("RIG_STATE", ""))
AUTO_MODE = eks_auto_mode.AutoMode(DEFAULT_ACCOUNT_ID, REGION, os.environ.get("RIG_STATE", ""))


def seed(port, cluster_name, kube_server, ca_pem, issuer):
    def client(service):
        # SEED_AGENT: the seed's own requests are served while the reset holds every other one.
        return boto3.client(service, region_name=REGION, endpoint_url=f"http://127.0.0.1:{port}",
                            aws_access_key_id="testing", aws_secret_access_key="testing",
                            config=botocore.config.Config(user_agent_extra=SEED_AGENT))

    ec2 = client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    ec2.create_tags(Resources=[vpc], Tags=[{"Key": "Name", "Value": f"{cluster_name}-vpc"}])
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    public_rt = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    ec2.create_route(RouteTableId=public_rt, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    private_rt = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    subnets = []
    for i, zone in enumerate(ZONES):
        for kind, cidr, table in (("private", f"10.0.{i + 1}.0/24", private_rt),
                                  ("public", f"10.0.{101 + i}.0/24", public_rt)):
            subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=zone)["Subnet"]["SubnetId"]
            ec2.associate_route_table(RouteTableId=table, SubnetId=subnet)
            tags = [{"Key": "Name", "Value": f"{cluster_name}-{kind}-{zone}"},
                    {"Key": f"kubernetes.io/cluster/{cluster_name}", "Value": "shared"}]
            if kind == "public":
                tags.append({"Key": "kubernetes.io/role/elb", "Value": "1"})
            ec2.create_tags(Resources=[subnet], Tags=tags)
            subnets.append(subnet)
    client("eks").create_cluster(
        name=cluster_name, version="1.35",
        roleArn=f"arn:aws:iam::{DEFAULT_ACCOUNT_ID}:role/{cluster_name}-cluster-role",
        resourcesVpcConfig={"subnetIds": subnets})
    # Not settable through the API: point the cluster at the rig's kube-apiserver.
    cluster = get_backend("eks")[DEFAULT_ACCOUNT_ID][REGION].clusters[cluster_name]
    cluster.endpoint = kube_server
    cluster.certificate_authority = {"data": base64.b64encode(ca_pem).decode()}
    cluster.resources_vpc_config = dict(cluster.resources_vpc_config, vpcId=vpc)
    # As on EKS, the API server issues ServiceAccount tokens as the cluster's OIDC issuer.
    cluster.identity = {"oidc": {"issuer": issuer}}
    # EKS's cluster security group: on every node's network interface (vpc_cni.py), the one
    # the controller adds its rules to.
    cluster_sg = ec2.create_security_group(
        GroupName=f"eks-cluster-sg-{cluster_name}-{mock_random.randint(10 ** 9, 10 ** 10 - 1)}",
        Description="EKS created security group applied to ENI that is attached to EKS Control Plane master "
                    "nodes, as well as any managed workloads.", VpcId=vpc,
        TagSpecifications=[{"ResourceType": "security-group", "Tags": [
            {"Key": f"kubernetes.io/cluster/{cluster_name}", "Value": "owned"}]}])["GroupId"]
    cluster.resources_vpc_config = dict(cluster.resources_vpc_config, clusterSecurityGroupId=cluster_sg)


def main():
    port, cluster_name, kube_server, ca_file, issuer = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
    with open(ca_file, "rb") as f:
        ca_pem = f.read()
    moto_app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def reset():
        with GATE.alone():
            reset_alone()

    def reset_alone():
        with lock:
            moto_api_backend.reset()
            POD_IDENTITY.reset()
            HEALTH.reset()
            LB_RELEASING.clear()
            FAULTS.set(0.0, 0)
            # The same identifiers after every reset: subnets, VPC, the OIDC issuer.
            mock_random.seed(42)
            seed(port, cluster_name, kube_server, ca_pem, issuer)
            AUTO_MODE.reset()  # the seed's cluster has no Auto Mode

    def app(environ, start_response):
        route = (environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
        if route == ("POST", "/rig/reset"):
            reset()
            return Response("reset\n")(environ, start_response)
        if SEED_AGENT in environ.get("HTTP_USER_AGENT", ""):
            return served(environ, start_response, route)
        with GATE.shared():
            return served(environ, start_response, route)

    def served(environ, start_response, route):
        if route == ("POST", "/rig/pod-network"):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            HEALTH.report(json.loads(environ["wsgi.input"].read(length))["addresses"])
            return Response("ok\n")(environ, start_response)
        if route == ("POST", "/rig/eks/auto-mode"):
            status, text = AUTO_MODE.switch(request_body(environ))
            return Response(text, status=status)(environ, start_response)
        if route == ("GET", "/rig/faults"):
            return Response(json.dumps(FAULTS.state()) + "\n", mimetype="application/json")(environ, start_response)
        if route == ("POST", "/rig/faults"):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            try:
                want = json.loads(environ["wsgi.input"].read(length) or b"{}")
                FAULTS.set(float(want.get("throttle", 0)), int(want.get("seed", 0)), want.get("gone", []),
                           want.get("gone_client"), want.get("gone_actions"))
            except (ValueError, TypeError, AttributeError) as e:
                return Response(f"{e}\n", status=400)(environ, start_response)
            return Response(json.dumps(FAULTS.state()) + "\n", mimetype="application/json")(environ, start_response)
        if not environ.get("PATH_INFO", "").startswith(("/moto-api", "/rig/")):
            answer = (FAULTS.intercept(environ) or checked(environ)
                      or POD_IDENTITY.handle(environ, request_body(environ))
                      or AUTO_MODE.handle(environ, request_body(environ)))
            if answer is not None:
                status, headers, body = answer
                return Response(body, status=status, headers=headers)(environ, start_response)
        return moto_app(environ, start_response)

    def checked(environ):
        """STS's and IAM's refusal of this request (aws_identity.py), or None."""
        service = signing_service(environ)
        body = request_body(environ)
        if "Credential=" not in environ.get("HTTP_AUTHORIZATION", ""):
            params = aws_identity.params_of(body)
            if service == "sts" and params.get("Action") == "AssumeRoleWithWebIdentity":
                return IDENTITY.web_identity(params)
            return None
        return IDENTITY.authorize(environ, service, body)

    patch_target_health()
    patch_target_group_attributes()
    patch_dns_names()
    patch_describe_tags()
    patch_security_group_dependencies()
    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=ErrorsLogged)
    threading.Thread(target=reset, daemon=True).start()
    threading.Thread(target=HEALTH.run, daemon=True).start()
    print(f"aws: serving on 127.0.0.1:{port} (pid {os.getpid()})", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
