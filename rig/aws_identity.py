"""Who is asking the rig's AWS account, and whether they may: IRSA as AWS checks it.

moto answers `AssumeRoleWithWebIdentity` for any token and any role, and
with its authorization off lets every caller do everything. On EKS the
load balancer controller gets its credentials from STS for its
ServiceAccount's token, and IAM decides each of its calls. This module
stands between the rig's clients and moto for both:

- `web_identity(params)`: an `AssumeRoleWithWebIdentity` request (unsigned,
  the token is the credential) is checked as STS checks it before moto
  makes the credentials: the JWT's signature (RS256) against the keys its
  issuer publishes (the rig's kube-apiserver issues ServiceAccount tokens as
  the EKS cluster's OIDC issuer and serves that issuer's discovery document
  and JWKS; STS reads them there), its expiry, an IAM OIDC provider whose
  URL is the token's `iss`, the token's `aud` among that provider's client
  ids, the role's existence and its trust policy (Principal `Federated` the
  provider's ARN, the conditions on `<provider>:sub` and `<provider>:aud`,
  evaluated by iam_policy.py). Refusals are STS's: InvalidIdentityToken
  (400: no provider for the issuer, wrong audience, a signature the keys do
  not verify), ExpiredTokenException (400), AccessDenied (403: no such role,
  or its trust policy does not allow this token).
- `authorize(environ, service, body)`: a request signed with temporary
  credentials (`ASIA…` keys, what STS returned) is checked: the key and its
  session token are ones STS gave (else InvalidClientTokenId, EC2
  AuthFailure), not expired (ExpiredToken), the SigV4 signature computed
  with its secret (else SignatureDoesNotMatch, EC2 AuthFailure), and then
  every action the request performs is evaluated against the role's inline
  and attached policies, with the resource ARN and the context keys the
  service gives IAM (`aws:RequestTag/…`, `aws:ResourceTag/…`,
  `aws:TagKeys`, `ec2:CreateAction`, `elasticloadbalancing:CreateAction`),
  including the implicit tag-on-create authorization (a create with tags
  also needs `…:CreateTags`/`…:AddTags` on the new resource). A denied
  call fails as the service fails it: ELBv2, IAM and STS with 403
  AccessDenied ("User: <assumed-role ARN> is not authorized to perform:
  <action> [on resource: <arn>] because no identity-based policy allows
  the <action> action"), EC2 with 403 UnauthorizedOperation (that message,
  "You are not authorized to perform this operation." before it and an
  encoded authorization failure message after).

Sessions EKS Pod Identity makes (eks_pod_identity.py, AssumeRoleForPodIdentity)
are moto STS sessions of the association's role like IRSA's, authorized the
same way, with their session tags (`session_tags`) as `aws:PrincipalTag/…`.

The rig's own administrator keys (`testing`, what the tests and the plugin
use) are not checked, as moto does not check them: they stand for an
account administrator. Only query-protocol services (EC2, ELBv2, IAM, STS)
are authorized for temporary credentials; any other service refuses them.
"""

import base64
import datetime
import hashlib
import json
import threading
import time
import urllib.parse
import uuid

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from moto.iam.models import iam_backends
from moto.sts.models import sts_backends
from moto.backends import get_backend

import iam_policy

NAMESPACES = {
    "iam": "https://iam.amazonaws.com/doc/2010-05-08/",
    "sts": "https://sts.amazonaws.com/doc/2011-06-15/",
    "elasticloadbalancing": "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/",
}


def error_answer(service, status, code, message):
    """(status, headers, body) of an error the way `service` sends it."""
    request_id = str(uuid.uuid4())
    if service == "ec2":
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}</Code>'
                f'<Message>{_xml(message)}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>')
        return status, [("Content-Type", "text/xml;charset=UTF-8")], body
    body = (f'<ErrorResponse xmlns="{NAMESPACES.get(service, NAMESPACES["sts"])}"><Error><Type>Sender</Type>'
            f'<Code>{code}</Code><Message>{_xml(message)}</Message></Error>'
            f'<RequestId>{request_id}</RequestId></ErrorResponse>')
    return status, [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)], body


def _document(doc):
    """A policy document as moto keeps it: JSON text, URL-encoded when the client sent it so."""
    return urllib.parse.unquote(doc) if isinstance(doc, str) and doc.lstrip().startswith("%7B") else doc


def _xml(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def b64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def params_of(body):
    return {k: v[0] for k, v in urllib.parse.parse_qs(body.decode(), keep_blank_values=True).items()}


def members(params, prefix):
    """`Prefix.member.1`, `Prefix.member.2`, … (or `Prefix.1`, … for EC2) in order."""
    found = []
    for style in (f"{prefix}.member.", f"{prefix}."):
        i = 1
        while f"{style}{i}" in params:
            found.append(params[f"{style}{i}"])
            i += 1
        if found:
            return found
    return found


def tag_list(params, prefix):
    """{key: value} of `Prefix.member.N.Key/Value` (ELBv2) or `Prefix.N.Key/Value` (EC2)."""
    tags = {}
    for style in (f"{prefix}.member.", f"{prefix}."):
        i = 1
        while f"{style}{i}.Key" in params:
            tags[params[f"{style}{i}.Key"]] = params.get(f"{style}{i}.Value", "")
            i += 1
        if tags:
            return tags
    return tags


class Keys:
    """The JWKS (and the discovery document) of the rig's issuer, read from the API server that
    serves them, as STS reads them from the issuer; read again when a token names a key not held."""

    def __init__(self):
        self.lock = threading.Lock()
        self.issuer, self.keys, self.read_at = None, {}, 0.0

    def get(self, kid):
        with self.lock:
            if kid not in self.keys and time.monotonic() - self.read_at > 2:
                self._read()
            return self.issuer, self.keys.get(kid)

    def _read(self):
        from kubernetes import client, config
        config.load_kube_config()
        api = client.ApiClient()
        self.read_at = time.monotonic()
        try:
            discovery = api.call_api("/.well-known/openid-configuration", "GET", auth_settings=["BearerToken"],
                                     _preload_content=False)[0]
            jwks = api.call_api("/openid/v1/jwks", "GET", auth_settings=["BearerToken"], _preload_content=False)[0]
        except Exception as e:  # the issuer cannot be read: no key verifies
            print(f"aws: reading the issuer's keys failed: {e}", flush=True)
            return
        self.issuer = json.loads(discovery.data)["issuer"]
        self.keys = {k["kid"]: k for k in json.loads(jwks.data)["keys"]}


def decode_jwt(token):
    """(header, claims, signed part, signature) of a compact JWS, unverified; ValueError when malformed."""
    head, payload, signature = token.split(".")
    header, claims = json.loads(b64url(head)), json.loads(b64url(payload))
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ValueError("not a JSON object")
    return header, claims, f"{head}.{payload}".encode(), b64url(signature)


def rs256_valid(key, signed, signature):
    """Whether `signature` is `signed`'s RS256 signature by the JWK `key`."""
    try:
        public = rsa.RSAPublicNumbers(int.from_bytes(b64url(key["e"]), "big"),
                                      int.from_bytes(b64url(key["n"]), "big")).public_key()
        public.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
        return True
    except (InvalidSignature, ValueError, KeyError, TypeError):
        return False


class Identity:
    def __init__(self, account_id, region):
        self.account_id, self.region = account_id, region
        self.keys = Keys()
        # Session tags of the temporary credentials that carry them (EKS Pod Identity's), by access
        # key id: IAM sees them as `aws:PrincipalTag/<key>` in every request the session signs.
        self.session_tags = {}

    @property
    def iam(self):
        return iam_backends[self.account_id]["aws"]

    @property
    def sts(self):
        return sts_backends[self.account_id]["aws"]

    # --- STS: AssumeRoleWithWebIdentity -----------------------------------------------------
    def web_identity(self, params):
        """None when STS would give credentials for this request (moto then makes them), else
        STS's refusal."""
        def refuse(status, code, message):
            print(f"aws: AssumeRoleWithWebIdentity refused: {code}: {message}", flush=True)
            return error_answer("sts", status, code, message)

        token = params.get("WebIdentityToken", "")
        try:
            header, claims, signed, signature = decode_jwt(token)
        except ValueError:
            return refuse(400, "InvalidIdentityToken", "The web identity token that was passed could not be validated by AWS. Get a new identity token from the identity provider and then retry the request.")
        issuer = claims.get("iss", "")
        provider = next((p for p in self.iam.open_id_providers.values() if f"https://{p.url}" == issuer), None)
        if provider is None:
            return refuse(400, "InvalidIdentityToken", f"No OpenIDConnect provider found in your account for {issuer}")
        known_issuer, key = self.keys.get(header.get("kid"))
        if known_issuer != issuer or key is None:
            return refuse(400, "InvalidIdentityToken", "Couldn't retrieve verification key from your identity provider,  please reference AssumeRoleWithWebIdentity documentation for requirements")
        if not rs256_valid(key, signed, signature):
            return refuse(400, "InvalidIdentityToken", "The web identity token that was passed could not be validated by AWS. Get a new identity token from the identity provider and then retry the request.")
        now = datetime.datetime.now(datetime.timezone.utc)
        if "exp" not in claims:
            return refuse(400, "InvalidIdentityToken", "Missing a required claim: exp")
        expires = datetime.datetime.fromtimestamp(claims["exp"], datetime.timezone.utc)
        if now >= expires:
            stamp = "%a %b %d %H:%M:%S UTC %Y"
            return refuse(400, "ExpiredTokenException",
                          f"Token expired: current date/time {now.strftime(stamp)} must be before the expiration "
                          f"date/time {expires.strftime(stamp)}")
        audiences = iam_policy.as_list(claims.get("aud"))
        if not audiences:
            return refuse(400, "InvalidIdentityToken", "Missing a required claim: aud")
        if not set(audiences) & set(provider.client_id_list):
            return refuse(400, "InvalidIdentityToken", "Incorrect token audience")
        denied = (403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")
        role_arn = params.get("RoleArn", "")
        try:
            role = self.iam.get_role_by_arn(role_arn)
        except Exception:
            return refuse(*denied)
        context = {f"{provider.url}:sub": claims.get("sub", ""), f"{provider.url}:aud": audiences,
                   f"{provider.url}:oaud": audiences, "aws:FederatedProvider": provider.arn}
        if iam_policy.evaluate([_document(role.assume_role_policy_document)], "sts:AssumeRoleWithWebIdentity", role_arn,
                               context, who={"Federated": provider.arn}) != "allow":
            return refuse(*denied)
        return None

    # --- requests signed with temporary credentials ---------------------------------------------
    def authorize(self, environ, service, body):
        """None to let moto serve the request, else the service's refusal."""
        auth = environ.get("HTTP_AUTHORIZATION", "")
        if "Credential=" not in auth:
            return None
        scope = auth.split("Credential=", 1)[1].split(",", 1)[0].split("/")
        key_id = scope[0]
        if not key_id.startswith("ASIA"):
            return None  # the rig's administrator
        invalid = (401, "AuthFailure", "AWS was not able to validate the provided access credentials") \
            if service == "ec2" else (403, "InvalidClientTokenId", "The security token included in the request is invalid.")
        session = next((r for r in self.sts.assumed_roles if r.access_key_id == key_id), None)
        if session is None or environ.get("HTTP_X_AMZ_SECURITY_TOKEN") != session.session_token:
            return error_answer(service, *invalid)
        if session.expiration.replace(tzinfo=datetime.timezone.utc) <= datetime.datetime.now(datetime.timezone.utc):
            return error_answer(service, 400, "ExpiredToken", "The security token included in the request is expired")
        if not self._signature_ok(environ, body, session, scope):
            return error_answer(service, *(invalid if service == "ec2" else (
                403, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you "
                "provided. Check your AWS Secret Access Key and signing method. Consult the service documentation "
                "for details.")))
        params = params_of(body)
        action = params.get("Action")
        who = f"arn:aws:sts::{self.account_id}:assumed-role/{session.role_arn.split('/')[-1]}/{session.session_name}"
        if service not in ("ec2", "elasticloadbalancing", "iam", "sts") or not action:
            return error_answer(service, 403, "AccessDenied", f"User: {who} is not authorized to perform this request")
        if service == "sts" and action == "GetCallerIdentity":
            return None
        policies = self._policies(session.role_arn.split("/")[-1])
        principal_tags = iam_policy.tag_context("aws:PrincipalTag", self.session_tags.get(key_id, {}))
        for act, resource, context in self.requests(service, action, params):
            verdict = iam_policy.evaluate(policies, act, resource, {**principal_tags, **context})
            if verdict == "allow":
                continue
            why = ("with an explicit deny in an identity-based policy" if verdict == "deny"
                   else f"because no identity-based policy allows the {act} action")
            on = "" if resource == "*" else f" on resource: {resource}"
            message = f"User: {who} is not authorized to perform: {act}{on} {why}"
            print(f"aws: denied {act} on {resource} to {who}", flush=True)
            if service == "ec2":
                encoded = base64.b64encode(hashlib.sha256(message.encode()).digest() * 4).decode()
                return error_answer("ec2", 403, "UnauthorizedOperation",
                                    f"You are not authorized to perform this operation. {message}. "
                                    f"Encoded authorization failure message: {encoded}")
            return error_answer(service, 403, "AccessDenied", message)
        return None

    def _signature_ok(self, environ, body, session, scope):
        auth = environ["HTTP_AUTHORIZATION"]
        signed = auth.split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")
        given = auth.split("Signature=", 1)[1].split(",", 1)[0].strip()
        headers = {}
        for name in signed:
            key = "CONTENT_TYPE" if name == "content-type" else "CONTENT_LENGTH" if name == "content-length" \
                else "HTTP_" + name.upper().replace("-", "_")
            if key in environ:
                headers[name] = environ[key]
        path = environ.get("PATH_INFO", "/")
        if environ.get("QUERY_STRING"):
            path += "?" + environ["QUERY_STRING"]
        request = AWSRequest(method=environ["REQUEST_METHOD"], url=f"http://{headers.get('host', 'localhost')}{path}",
                             data=body, headers=headers)
        request.context["timestamp"] = headers.get("x-amz-date", "")
        signer = SigV4Auth(Credentials(session.access_key_id, session.secret_access_key, session.session_token),
                           scope[3], scope[2])
        canonical = signer.canonical_request(request)
        return signer.signature(signer.string_to_sign(request, canonical), request) == given

    def _policies(self, role_name):
        docs = []
        for name in self.iam.list_role_policies(role_name):
            docs.append(self.iam.get_role_policy(role_name, name)[1])
        attached, _ = self.iam.list_attached_role_policies(role_name)
        for p in attached:
            docs.extend(v.document for v in p.versions if v.version_id == p.default_version_id)
        return [_document(d) for d in docs]

    # --- what a request asks IAM --------------------------------------------------------------
    def arn(self, service, resource):
        return f"arn:aws:{service}:{self.region}:{self.account_id}:{resource}"

    def elbv2_tags(self, arn):
        try:
            return get_backend("elbv2")[self.account_id][self.region].describe_tags([arn]).get(arn, {})
        except Exception:
            return {}

    def ec2_tags(self, resource_id):
        return dict(get_backend("ec2")[self.account_id][self.region].tags.get(resource_id, {}))

    def requests(self, service, action, params):
        """[(action, resource ARN, context)] that IAM evaluates for this request."""
        act = f"{service}:{action}"
        if service == "elasticloadbalancing":
            return self.elbv2_requests(act, action, params)
        if service == "ec2":
            return self.ec2_requests(act, action, params)
        return [(act, "*", {})]

    def elbv2_requests(self, act, action, params):
        tags = tag_list(params, "Tags")
        request_tags = {**iam_policy.tag_context("aws:RequestTag", tags), "aws:TagKeys": list(tags)} if tags else {}
        new = None
        if action == "CreateLoadBalancer":
            kind = "net" if params.get("Type") == "network" else "app"
            new = self.arn("elasticloadbalancing", f"loadbalancer/{kind}/{params.get('Name')}/*")
        elif action == "CreateTargetGroup":
            new = self.arn("elasticloadbalancing", f"targetgroup/{params.get('Name')}/*")
        elif action == "CreateListener":
            new = params.get("LoadBalancerArn", "").replace(":loadbalancer/", ":listener/") + "/*"
        elif action == "CreateRule":
            new = params.get("ListenerArn", "").replace(":listener/", ":listener-rule/") + "/*"
        if new:
            found = [(act, new, request_tags)]
            if tags:  # tagging on create is authorized as AddTags on the new resource
                found.append(("elasticloadbalancing:AddTags", new,
                              {**request_tags, "elasticloadbalancing:CreateAction": action}))
            return found
        if action in ("AddTags", "RemoveTags"):
            keys = members(params, "TagKeys") if action == "RemoveTags" else list(tags)
            context = {**iam_policy.tag_context("aws:RequestTag", tags), "aws:TagKeys": keys}
            return [(act, arn, {**context, **iam_policy.tag_context("aws:ResourceTag", self.elbv2_tags(arn))})
                    for arn in members(params, "ResourceArns")]
        if action.startswith("Describe"):
            return [(act, "*", {})]
        for name in ("RuleArn", "ListenerArn", "TargetGroupArn", "LoadBalancerArn"):
            if params.get(name):
                arn = params[name]
                return [(act, arn, iam_policy.tag_context("aws:ResourceTag", self.elbv2_tags(arn)))]
        return [(act, "*", {})]

    def ec2_arn(self, resource_id):
        kinds = {"sg-": "security-group", "subnet-": "subnet", "vpc-": "vpc", "eni-": "network-interface",
                 "i-": "instance", "rtb-": "route-table", "igw-": "internet-gateway"}
        kind = next((k for p, k in kinds.items() if resource_id.startswith(p)), "resource")
        return self.arn("ec2", f"{kind}/{resource_id}")

    def ec2_requests(self, act, action, params):
        if action.startswith("Describe") or action.startswith("Get"):
            return [(act, "*", {})]
        if action == "CreateSecurityGroup":
            tags = {}
            i = 1
            while f"TagSpecification.{i}.ResourceType" in params:
                tags.update(tag_list(params, f"TagSpecification.{i}.Tag"))
                i += 1
            request_tags = {**iam_policy.tag_context("aws:RequestTag", tags), "aws:TagKeys": list(tags)} if tags else {}
            new = self.arn("ec2", "security-group/*")
            found = [(act, new, request_tags), (act, self.arn("ec2", f"vpc/{params.get('VpcId')}"), request_tags)]
            if tags:
                found.append(("ec2:CreateTags", new, {**request_tags, "ec2:CreateAction": action}))
            return found
        if action in ("CreateTags", "DeleteTags"):
            tags = tag_list(params, "Tag")
            context = {**iam_policy.tag_context("aws:RequestTag", tags), "aws:TagKeys": list(tags)}
            return [(act, self.ec2_arn(rid), {**context, **iam_policy.tag_context("aws:ResourceTag", self.ec2_tags(rid))})
                    for rid in members(params, "ResourceId")]
        group = params.get("GroupId")
        if group:
            return [(act, self.ec2_arn(group), iam_policy.tag_context("aws:ResourceTag", self.ec2_tags(group)))]
        return [(act, "*", {})]
