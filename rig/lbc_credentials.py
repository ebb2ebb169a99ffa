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
- without it (a pod created before the annotation), the chain ends at the
  node's instance metadata, which the rig's nodes, like EKS nodes whose
  instance metadata a pod cannot reach, do not answer.

`Chain.clients(pod)` plays both: the rig's kubelet part (a TokenRequest
for the pod's ServiceAccount, as the kubelet makes for the projected
volume) and the SDK's part (STS, then clients signed with what it gave).
A failure anywhere is the SDK's error for the call that needed the
credentials, e.g. `operation error Elastic Load Balancing v2:
DescribeLoadBalancers, get identity: get credentials: failed to refresh
cached credentials, failed to retrieve credentials, operation error STS:
AssumeRoleWithWebIdentity, https response error StatusCode: 403, RequestID:
…, api error AccessDenied: Not authorized to perform
sts:AssumeRoleWithWebIdentity`.
"""

import datetime
import os
import time

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


class Chain:
    def __init__(self, core):
        self.core = core  # the kubelet's view: it may request tokens for the pods it runs
        self.endpoint = os.environ["AWS_ENDPOINT_URL"]
        self.region = os.environ.get("AWS_REGION", "us-east-1")
        self.held = {}  # (pod uid, role) -> (expiry, {service: Sdk})

    def boto(self, service, **credentials):
        return boto3.client(service, endpoint_url=self.endpoint, region_name=self.region, **credentials)

    def clients(self, pod):
        """{"elbv2": …, "ec2": …}: clients signed as this controller pod's chain signs."""
        env = container_env(pod)
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
