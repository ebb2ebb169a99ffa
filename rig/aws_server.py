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
  `healthy`; it becomes `unhealthy` (Target.FailedHealthChecks) after the
  unhealthy threshold of failed checks. Checks run every
  HEALTH_CHECK_INTERVAL seconds whatever the target group says (the rig's
  time scale). A deregistered target is `draining`
  (Target.DeregistrationInProgress) for the target group's
  `deregistration_delay.timeout_seconds`, at most MAX_DRAIN_SECONDS on the
  rig, and then disappears from DescribeTargetHealth.
- which targets pass a health check: those whose address answers it. There
  is no network to probe on the rig, so the ALB simulator, which sees the
  pods, reports the addresses that answer with `POST /rig/health-checks`
  (`{"answering": [ip, ...]}`); any other address fails its checks.
- ModifyTargetGroupAttributes refuses, atomically, an attribute key an
  HTTP target group does not have (ValidationError "... is not recognized"),
  one it has only on other load balancer types (InvalidConfigurationRequest)
  and a value outside the attribute's documented range or set.
- an internal load balancer's DNS name starts with `internal-`.
- DescribeTags refuses the whole request when one ARN in it names a load
  balancer, target group, listener or rule that does not exist
  (LoadBalancerNotFound, TargetGroupNotFound, ...), where moto answers it
  with empty tags.

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

`{"gone": [ARN, ...], "gone_client": "aws-sdk-rust"}` freezes the moment
between a listing and a read while the controller deletes: the listings
(DescribeLoadBalancers, DescribeTargetGroups) still show those resources,
and any other ELBv2 request naming one of them is answered with the
not-found error ELBv2 sends once it is deleted (TargetGroupNotFound,
LoadBalancerNotFound), to that client only when `gone_client` is given,
and only in the actions `gone_actions` lists when it is given (e.g.
`["DescribeTargetHealth"]`: deleted after its tags were read).
`GET /rig/faults` counts those answers by client (`gone_by_client`).

usage: aws_server.py PORT CLUSTER_NAME KUBE_SERVER_URL CA_FILE
"""

import base64
import hashlib
import io
import json
import os
import random
import sys
import threading
import time
import uuid
import urllib.parse
from collections import Counter

import boto3
from moto.backends import get_backend
from moto.core import DEFAULT_ACCOUNT_ID
from moto.elbv2.exceptions import InvalidConfigurationRequest, ValidationError
from moto.elbv2.models import ELBv2Backend, FakeHealthStatus, FakeTargetGroup
from moto.moto_api._internal import mock_random, moto_api_backend
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server
from werkzeug.wrappers import Response

REGION = "us-east-1"
ZONES = ["us-east-1a", "us-east-1b"]
HEALTH_CHECK_INTERVAL = 1.5
MAX_DRAIN_SECONDS = 20


# --- target health over time ---------------------------------------------------------------
class TargetHealth:
    """The health of every registered or draining target, advanced by a checker thread."""

    def __init__(self):
        self.lock = threading.RLock()
        self.targets = {}  # (target group ARN, target id) -> state
        self.answering = set()

    def reset(self):
        with self.lock:
            self.targets.clear()
            self.answering.clear()

    def report(self, answering):
        with self.lock:
            self.answering = set(answering)

    def registered(self, tg_arn, target):
        with self.lock:
            current = self.targets.get((tg_arn, target["Id"]))
            if current is None or current["state"] == "draining":
                self.targets[(tg_arn, target["Id"])] = {
                    "state": "initial", "passes": 0, "fails": 0, "checks": 0,
                    "next_check": time.monotonic() + HEALTH_CHECK_INTERVAL}

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
            return {
                "initial": ("initial", "Elb.InitialHealthChecking", "Initial health checks in progress"),
                "healthy": ("healthy", None, None),
                "unhealthy": ("unhealthy", "Target.FailedHealthChecks", "Health checks failed"),
                "draining": ("draining", "Target.DeregistrationInProgress", "Target deregistration is in progress"),
            }[t["state"]]

    def check(self, target_groups):
        """One pass: health checks that are due, drains that are over, targets of deleted groups."""
        now = time.monotonic()
        with self.lock:
            for key, t in list(self.targets.items()):
                tg = target_groups.get(key[0])
                if tg is None or (t["state"] == "draining" and now >= t["until"]):
                    del self.targets[key]
                    continue
                if t["state"] == "draining" or now < t["next_check"]:
                    continue
                t["next_check"] = now + HEALTH_CHECK_INTERVAL
                t["checks"] += 1
                if key[1] in self.answering:
                    t["passes"], t["fails"] = t["passes"] + 1, 0
                else:
                    t["passes"], t["fails"] = 0, t["fails"] + 1
                if t["state"] != "healthy" and t["passes"] >= int(tg.healthy_threshold_count):
                    t["state"] = "healthy"
                elif t["state"] != "unhealthy" and t["fails"] >= int(tg.unhealthy_threshold_count):
                    t["state"] = "unhealthy"

    def run(self):
        while True:
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
    if service == "eks":
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


def seed(port, cluster_name, kube_server, ca_pem):
    def client(service):
        return boto3.client(service, region_name=REGION, endpoint_url=f"http://127.0.0.1:{port}",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

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


def main():
    port, cluster_name, kube_server, ca_file = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    with open(ca_file, "rb") as f:
        ca_pem = f.read()
    moto_app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def reset():
        with lock:
            moto_api_backend.reset()
            HEALTH.reset()
            FAULTS.set(0.0, 0)
            # The same identifiers after every reset: subnets, VPC, the OIDC issuer.
            mock_random.seed(42)
            seed(port, cluster_name, kube_server, ca_pem)

    def app(environ, start_response):
        route = (environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
        if route == ("POST", "/rig/reset"):
            reset()
            return Response("reset\n")(environ, start_response)
        if route == ("POST", "/rig/health-checks"):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            HEALTH.report(json.loads(environ["wsgi.input"].read(length))["answering"])
            return Response("ok\n")(environ, start_response)
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
            answer = FAULTS.intercept(environ)
            if answer is not None:
                status, headers, body = answer
                return Response(body, status=status, headers=headers)(environ, start_response)
        return moto_app(environ, start_response)

    patch_target_health()
    patch_target_group_attributes()
    patch_dns_names()
    patch_describe_tags()
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=reset, daemon=True).start()
    threading.Thread(target=HEALTH.run, daemon=True).start()
    print(f"aws: serving on 127.0.0.1:{port} (pid {os.getpid()})", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
