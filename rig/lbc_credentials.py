"""The load balancer controller's AWS credentials, as its pod gets them on EKS, and its AWS errors,
as its SDK words them.

The controller (AWS SDK for Go v2) resolves credentials with the SDK's
default chain when it makes its first call, and again when they expire:

- with IRSA, its container has `AWS_ROLE_ARN` and
  `AWS_WEB_IDENTITY_TOKEN_FILE` (put there by EKS's pod identity webhook
  when the pod was created, from its ServiceAccount's
  `eks.amazonaws.com/role-arn`) and the kubelet keeps a ServiceAccount
  token in that file: a token for the pod's ServiceAccount, with the
  projected volume's audience and expiry, bound to the pod. The SDK sends it
  to STS (`AssumeRoleWithWebIdentity`, unsigned) and signs every call with
  the temporary credentials STS returns, until they are about to expire;
- with EKS Pod Identity, its container has `AWS_CONTAINER_CREDENTIALS_FULL_URI`
  and `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (put there by the webhook when
  the pod was created, its ServiceAccount having an association) and the
  kubelet keeps a token with the audience `pods.eks.amazonaws.com` in that
  file (the `eks-pod-identity-token` volume). The SDK's container provider
  GETs the URI with the token as the `Authorization` header and signs with
  the credentials the agent answers (pod_identity_agent.py), until 5
  minutes before they expire. With `http`, the SDK accepts only a loopback
  host, the ECS host 169.254.170.2 or the EKS agent's 169.254.170.23 /
  fd00:ec2::23 (`invalid endpoint host, "…", only loopback/ecs/eks hosts are
  allowed`); the rig dials only a loopback host: an ECS/EKS link-local host,
  or an `https` host that is not loopback, is the connection failure a pod
  meets when nothing answers there, and is never dialed;
- without either (a pod created before the annotation or the association),
  the chain ends at the node's instance metadata, which the rig's nodes, like
  EKS nodes whose instance metadata a pod cannot reach, do not answer.

The order is the SDK's default chain (aws-sdk-go-v2 config): keys in the
environment, then web identity (`AWS_WEB_IDENTITY_TOKEN_FILE`), then
container credentials (`AWS_CONTAINER_CREDENTIALS_FULL_URI`, then
`…_RELATIVE_URI`), then instance metadata: IRSA's variables win over Pod
Identity's when a container has both.

`Chain.clients(pod)` plays both: the rig's kubelet part (a TokenRequest
for the pod's ServiceAccount, as the kubelet makes for the projected
volume) and the SDK's part (STS or the agent, then clients signed with what
it gave).
A failure anywhere is the SDK's error for the call that needed the
credentials, e.g. `operation error Elastic Load Balancing v2:
DescribeLoadBalancers, get identity: get credentials: failed to refresh
cached credentials, failed to retrieve credentials, operation error STS:
AssumeRoleWithWebIdentity, https response error StatusCode: 403, RequestID:
…, api error AccessDenied: Not authorized to perform
sts:AssumeRoleWithWebIdentity`, or from the agent, `…, get identity: get
credentials: failed to refresh cached credentials, failed to load
credentials, : [<request id>]: (AccessDeniedException): …, fault: client`
(the SDK's endpoint error for a text answer has an empty code; the agent's
trailing newline is dropped), and with no agent listening `…, failed to load
credentials, exceeded maximum number of attempts, 10, request send failed,
Get "http://127.0.0.1:<port>/v1/credentials": dial tcp 127.0.0.1:<port>:
connect: connection refused`.
"""

import datetime
import http.client
import ipaddress
import json
import os
import re
import time
import urllib.parse

import boto3
from botocore.exceptions import ClientError
from kubernetes import client

# The SDK's service ids, as its errors name them.
SERVICE_IDS = {"elbv2": "Elastic Load Balancing v2", "ec2": "EC2", "sts": "STS"}
# STS errors the SDK's web identity provider retries (its retryer's attempts: --aws-max-retries).
RETRIED = {"InvalidIdentityToken", "IDPCommunicationError"}
MAX_ATTEMPTS = 10
NO_INSTANCE_ROLE = ("failed to refresh cached credentials, no EC2 IMDS role found, operation error ec2imds: "
                    "GetMetadata, canceled, context deadline exceeded")


class AwsCallError(Exception):
    """An AWS call that failed, worded as the controller's SDK words it; `code` is AWS's error code."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


def sdk_error(service, operation, e):
    """`operation error <ServiceID>: <Operation>, https response error StatusCode: …, api error …`."""
    err, meta = e.response.get("Error", {}), e.response.get("ResponseMetadata", {})
    return AwsCallError(
        f"operation error {SERVICE_IDS[service]}: {operation}, https response error StatusCode: "
        f"{meta.get('HTTPStatusCode', 400)}, RequestID: {meta.get('RequestId', '')}, "
        f"api error {err.get('Code')}: {err.get('Message')}", err.get("Code"))


class Sdk:
    """A boto3 client whose failures are AwsCallError, worded as the Go SDK's."""

    def __init__(self, service, boto):
        self.service, self.boto = service, boto

    def __getattr__(self, name):
        method = getattr(self.boto, name)

        def call(*args, **kwargs):
            try:
                return method(*args, **kwargs)
            except ClientError as e:
                raise sdk_error(self.service, e.operation_name, e) from None
        return call


class NoCredentials:
    """Every call fails for want of credentials, before it is sent."""

    def __init__(self, service, cause, code):
        self.service, self.cause, self.code = service, cause, code

    def __getattr__(self, name):
        operation = "".join(part.capitalize() for part in name.split("_"))

        def call(*args, **kwargs):
            raise AwsCallError(f"operation error {SERVICE_IDS[self.service]}: {operation}, get identity: "
                               f"get credentials: {self.cause}", self.code)
        return call


def container_env(pod):
    containers = pod["spec"].get("containers") or [{}]
    return {e["name"]: e.get("value", "") for e in containers[0].get("env") or []}


def projected_token(pod):
    """(audience, expirationSeconds) of the pod's web identity token volume."""
    for volume in pod["spec"].get("volumes") or []:
        for source in (volume.get("projected") or {}).get("sources") or []:
            token = source.get("serviceAccountToken")
            if token and volume["name"] == "aws-iam-token":
                return token.get("audience") or "sts.amazonaws.com", token.get("expirationSeconds") or 86400
    return None


# Hosts the SDK's container provider accepts over plain HTTP besides loopback: ECS's and EKS's agents.
ECS_EKS_HOSTS = {ipaddress.ip_address("169.254.170.2"), ipaddress.ip_address("169.254.170.23"),
                 ipaddress.ip_address("fd00:ec2::23")}
ECS_HOST = "http://169.254.170.2"
# Statuses the SDK's standard retryer retries (its attempts: --aws-max-retries).
RETRIED_STATUSES = {500, 502, 503, 504}


def projected_token_at(pod, token_file):
    """(audience, expirationSeconds) of the projected ServiceAccount token the first container
    finds at `token_file`, or None when nothing is mounted there."""
    container = (pod["spec"].get("containers") or [{}])[0]
    volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        prefix = mount["mountPath"].rstrip("/") + "/"
        if not token_file.startswith(prefix) or mount["name"] not in volumes:
            continue
        for source in (volumes[mount["name"]].get("projected") or {}).get("sources") or []:
            token = source.get("serviceAccountToken")
            if token and token.get("path") == token_file[len(prefix):]:
                return token.get("audience"), token.get("expirationSeconds") or 3600
    return None


def host_ip(host):
    """The address `host` stands for when it needs no lookup (an IP, `localhost`), else None."""
    if host == "localhost":
        return ipaddress.ip_address("127.0.0.1")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def parse_expiration(text):
    """An RFC 3339 time (`…Z`, `…+00:00`, with or without a fraction) as a timestamp."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", text or "")
    if not match:
        raise ValueError(f"parsing time {text!r} as RFC 3339")
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    moment = datetime.datetime.fromisoformat(match.group(1) + zone)
    return moment.timestamp() + float("0" + (match.group(2) or ""))


class Chain:
    def __init__(self, core):
        self.core = core  # the kubelet's view: it may request tokens for the pods it runs
        self.endpoint = os.environ["AWS_ENDPOINT_URL"]
        self.region = os.environ.get("AWS_REGION", "us-east-1")
        self.held = {}  # (pod uid, role) -> (expiry, {service: Sdk})

    def boto(self, service, **credentials):
        return boto3.client(service, endpoint_url=self.endpoint, region_name=self.region, **credentials)

    def failing(self, cause, code):
        return {s: NoCredentials(s, cause, code) for s in ("elbv2", "ec2")}

    def signed(self, access_key, secret_key, session_token=None):
        return {s: Sdk(s, self.boto(s, aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                                    aws_session_token=session_token)) for s in ("elbv2", "ec2")}

    def token_for(self, pod, audience, expiry):
        """A token for the pod's ServiceAccount, bound to the pod, as the kubelet writes into a projected volume."""
        return self.core.create_namespaced_service_account_token(
            pod["spec"].get("serviceAccountName") or "default", pod["metadata"]["namespace"],
            client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
                audiences=[audience], expiration_seconds=expiry,
                bound_object_ref=client.V1BoundObjectReference(
                    kind="Pod", api_version="v1", name=pod["metadata"]["name"],
                    uid=pod["metadata"]["uid"])))).status.token

    def clients(self, pod):
        """{"elbv2": …, "ec2": …}: clients signed as this controller pod's chain signs."""
        env = container_env(pod)
        if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
            return self.signed(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env.get("AWS_SESSION_TOKEN"))
        if env.get("AWS_WEB_IDENTITY_TOKEN_FILE"):
            return self.web_identity(pod, env)
        if env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI"):
            return self.container(pod, env, env["AWS_CONTAINER_CREDENTIALS_FULL_URI"], full=True)
        if env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
            return self.container(pod, env, ECS_HOST + env["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"], full=False)
        return self.failing(NO_INSTANCE_ROLE, "NoCredentialProviders")

    def web_identity(self, pod, env):
        """IRSA: STS's AssumeRoleWithWebIdentity with the projected token."""
        role, token_file = env.get("AWS_ROLE_ARN"), env.get("AWS_WEB_IDENTITY_TOKEN_FILE")
        projected = projected_token(pod)
        if not role or not token_file or projected is None:
            return {s: NoCredentials(s, NO_INSTANCE_ROLE, "NoCredentialProviders") for s in ("elbv2", "ec2")}
        key = (pod["metadata"]["uid"], role)
        held = self.held.get(key)
        if held and held[0] - time.time() > 300:
            return held[1]
        audience, expiry = projected
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        try:
            token = self.core.create_namespaced_service_account_token(
                pod["spec"].get("serviceAccountName") or "default", ns, client.AuthenticationV1TokenRequest(
                    spec=client.V1TokenRequestSpec(
                        audiences=[audience], expiration_seconds=expiry,
                        bound_object_ref=client.V1BoundObjectReference(
                            kind="Pod", api_version="v1", name=name, uid=pod["metadata"]["uid"])))).status.token
        except client.ApiException as e:
            cause = (f"failed to refresh cached credentials, failed to retrieve credentials, failed to read web "
                     f"identity token file: open {token_file}: no such file or directory ({e.status})")
            return {s: NoCredentials(s, cause, "WebIdentityErr") for s in ("elbv2", "ec2")}
        sts = self.boto("sts", aws_access_key_id="unused", aws_secret_access_key="unused")
        try:
            got = sts.assume_role_with_web_identity(RoleArn=role, RoleSessionName=str(time.time_ns()),
                                                    WebIdentityToken=token)["Credentials"]
        except ClientError as e:
            err, meta = e.response.get("Error", {}), e.response.get("ResponseMetadata", {})
            attempts = f"exceeded maximum number of attempts, {MAX_ATTEMPTS}, " if err.get("Code") in RETRIED else ""
            cause = (f"failed to refresh cached credentials, failed to retrieve credentials, operation error STS: "
                     f"AssumeRoleWithWebIdentity, {attempts}https response error StatusCode: "
                     f"{meta.get('HTTPStatusCode', 400)}, RequestID: {meta.get('RequestId', '')}, "
                     f"api error {err.get('Code')}: {err.get('Message')}")
            return {s: NoCredentials(s, cause, err.get("Code")) for s in ("elbv2", "ec2")}
        signed = {s: Sdk(s, self.boto(s, aws_access_key_id=got["AccessKeyId"],
                                      aws_secret_access_key=got["SecretAccessKey"],
                                      aws_session_token=got["SessionToken"])) for s in ("elbv2", "ec2")}
        expires = got["Expiration"]
        if isinstance(expires, datetime.datetime):
            expires = expires.timestamp()
        self.held = {key: (expires, signed)}
        return signed

    def container(self, pod, env, uri, full):
        """Container credentials (EKS Pod Identity's agent): GET the URI with the token, as the SDK's
        endpoint provider does, dialing nothing but loopback."""
        key = (pod["metadata"]["uid"], uri)
        held = self.held.get(key)
        if held and held[0] - time.time() > 300:
            return held[1]
        prefix = "failed to refresh cached credentials, failed to load credentials, "
        try:
            parsed = urllib.parse.urlsplit(uri)
            host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
        except ValueError as e:
            return self.failing(f"invalid URL, parse {uri!r}: {e}", "CredentialsEndpointError")
        if not host:
            return self.failing("unable to parse host from local HTTP cred provider URL", "CredentialsEndpointError")
        ip = host_ip(host)
        if full and parsed.scheme == "http":
            if ip is None:  # a name the SDK would look up: the rig resolves nothing beyond localhost
                return self.failing(f'failed to resolve host "{host}", lookup {host}: no such host',
                                    "CredentialsEndpointError")
            if not (ip.is_loopback or ip in ECS_EKS_HOSTS):
                return self.failing(f'invalid endpoint host, "{host}", only loopback/ecs/eks hosts are allowed',
                                    "CredentialsEndpointError")
        token = env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN", "")
        token_file = env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
        if token_file:
            projected = projected_token_at(pod, token_file)
            if projected is None or not projected[0]:
                return self.failing(f"{prefix}failed to read authorization token from {token_file}: open {token_file}: "
                                    "no such file or directory", "CredentialsEndpointError")
            try:
                token = self.token_for(pod, projected[0], projected[1])
            except client.ApiException as e:
                return self.failing(f"{prefix}failed to read authorization token from {token_file}: open "
                                    f"{token_file}: no such file or directory ({e.status})", "CredentialsEndpointError")
        attempts = f"exceeded maximum number of attempts, {MAX_ATTEMPTS}, "
        target = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        if ip is None or not ip.is_loopback or parsed.scheme != "http":
            # Not a loopback HTTP endpoint: the rig dials nothing else; nothing answers there.
            return self.failing(f'{prefix}{attempts}request send failed, Get "{uri}": dial tcp {target}: i/o timeout',
                                "RequestSendError")
        path = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
        # The SDK's HTTP client has no overall timeout; the agent gives up on EKS Auth within seconds.
        conn = http.client.HTTPConnection(str(ip) if ip.version == 4 else f"[{ip}]", port, timeout=15)
        try:
            conn.request("GET", path, headers={"Host": parsed.netloc, "Accept": "application/json",
                                               "Authorization": token, "User-Agent": "aws-sdk-go-v2"})
            response = conn.getresponse()
            status, content_type, body = response.status, response.getheader("Content-Type", ""), response.read()
        except ConnectionRefusedError:
            return self.failing(f'{prefix}{attempts}request send failed, Get "{uri}": dial tcp {target}: connect: '
                                "connection refused", "RequestSendError")
        except (TimeoutError, OSError, http.client.HTTPException):
            return self.failing(f'{prefix}{attempts}request send failed, Get "{uri}": EOF', "RequestSendError")
        finally:
            conn.close()
        if not 200 <= status < 300:
            text = body.decode(errors="replace")
            code = ""
            if content_type == "application/json":
                try:
                    shape = json.loads(text)
                    code, text = shape.get("code", ""), shape.get("message", "")
                except (ValueError, AttributeError):
                    return self.failing(f"{prefix}deserialization failed, failed to decode error message",
                                        "CredentialsEndpointError")
            else:
                text = text.removesuffix("\n")
            retried = attempts if status in RETRIED_STATUSES else ""
            found = re.search(r"\(([A-Za-z]+)\)", text)
            return self.failing(f"{prefix}{retried}{code}: {text}", code or (found.group(1) if found else "")
                                or "CredentialsEndpointError")
        try:
            got = json.loads(body)
            expires = parse_expiration(got["Expiration"]) if got.get("Expiration") else time.time() + 3600
            signed = self.signed(got["AccessKeyId"], got["SecretAccessKey"], got.get("Token"))
        except (ValueError, KeyError, TypeError) as e:
            return self.failing(f"{prefix}deserialization failed, failed to deserialize json response, {e}",
                                "CredentialsEndpointError")
        self.held = {key: (expires, signed)}
        return signed

