"""EKS add-ons and EKS Pod Identity in the rig's AWS account, which moto 5.2.5 lacks.

The AWS server (aws_server.py) hands this module, before moto, the requests
for these REST-JSON operations (shapes, URIs and error codes from botocore's
`eks` 2017-11-01 and `eks-auth` 2023-11-26 models), for the clusters moto
holds:

- EKS (signing name `eks`): CreateAddon `POST /clusters/{name}/addons`,
  ListAddons `GET …/addons`, DescribeAddon `GET …/addons/{addonName}`,
  DeleteAddon `DELETE …/addons/{addonName}`, UpdateAddon
  `POST …/addons/{addonName}/update`, DescribeAddonVersions
  `GET /addons/supported-versions`; CreatePodIdentityAssociation
  `POST /clusters/{name}/pod-identity-associations`,
  ListPodIdentityAssociations `GET …/pod-identity-associations` (filters
  `namespace`, `serviceAccount`; `maxResults`, `nextToken`),
  DescribePodIdentityAssociation `GET …/pod-identity-associations/{id}`,
  UpdatePodIdentityAssociation `POST …/{id}`, DeletePodIdentityAssociation
  `DELETE …/{id}`.
- EKS Auth (signing name `eks-auth`): AssumeRoleForPodIdentity
  `POST /clusters/{clusterName}/assume-role-for-pod-identity`.

As EKS does:

- an add-on is CREATING, then ACTIVE (after TRANSITION_SECONDS); DeleteAddon
  makes it DELETING, then it is gone; UpdateAddon makes it UPDATING for as
  long. Only `eks-pod-identity-agent` is offered (DescribeAddonVersions);
  another name is InvalidParameterException, a second CreateAddon
  ResourceInUseException (409, "Addon already exists."), a missing add-on or
  cluster ResourceNotFoundException (404);
- one association per (namespace, service account) in a cluster (a second
  is ResourceInUseException "Association already exists: a-…"); ids are
  `a-` and 17 lower-case letters and digits, ARNs
  `arn:aws:eks:<region>:<account>:podidentityassociation/<cluster>/<id>`.
  Creating or updating one checks the role as EKS does: it must exist
  (InvalidParameterException "Role provided in the request does not exist")
  and its trust policy must let the service principal
  `pods.eks.amazonaws.com` perform `sts:AssumeRole`
  (InvalidParameterException "Trust policy of the role provided is
  invalid"). An id that is not 19 characters long is InvalidParameterException;
- AssumeRoleForPodIdentity checks the ServiceAccount token as EKS Auth
  does: the RS256 signature against the keys of the cluster's issuer
  (aws_identity.Keys: the rig's API server is the issuer), the issuer being
  the cluster's OIDC issuer, the expiry (ExpiredTokenException), the
  audience `pods.eks.amazonaws.com` and a `system:serviceaccount:…` subject
  (InvalidTokenException otherwise); an association for the subject's
  namespace and service account (ResourceNotFoundException); the role, and
  its trust policy evaluated by iam_policy.py for both `sts:AssumeRole` and
  `sts:TagSession` (only the first with `disableSessionTags`) with the
  principal `Service: pods.eks.amazonaws.com` and the session tags as
  `aws:RequestTag/…` (`eks-cluster-arn`, `eks-cluster-name`,
  `kubernetes-namespace`, `kubernetes-service-account`,
  `kubernetes-pod-name`, `kubernetes-pod-uid`), `aws:TagKeys`,
  `aws:SourceAccount` and `aws:SourceArn` (the cluster) — AccessDeniedException
  when it does not allow them. The credentials are a session of that role
  made by moto's STS (six hours), which aws_identity.authorize then
  authorizes against the role's policies as any other session, with the
  session tags as `aws:PrincipalTag/…`.

Every change (and `POST /rig/reset`) writes the add-ons and associations to
`$RIG_STATE/pod-identity.json` (STATE_FILE): the pod identity webhook reads
the associations there when a pod is created, as EKS's webhook reads the
association list it is given, and the agent stand-in reads whether its
add-on is active. Requests served here are written to moto's recorder as
moto's own are.
"""

import base64
import datetime
import json
import os
import random
import re
import string
import threading
import time
import uuid
import urllib.parse

import iam_policy

TRANSITION_SECONDS = 1.5
AUDIENCE = "pods.eks.amazonaws.com"
SERVICE_PRINCIPAL = "pods.eks.amazonaws.com"
CREDENTIAL_SECONDS = 6 * 3600
STATE_FILE = "pod-identity.json"
AGENT_ADDON = "eks-pod-identity-agent"
# The add-ons the rig offers, as DescribeAddonVersions lists them (the newest version first; the
# default one is what CreateAddon installs without addonVersion).
ADDONS = {
    AGENT_ADDON: {"type": "security", "publisher": "eks", "owner": "aws", "defaultNamespace": "kube-system",
                  "versions": ["v1.3.8-eksbuild.2", "v1.3.4-eksbuild.1", "v1.2.0-eksbuild.1"],
                  "default": "v1.3.8-eksbuild.2"},
}
SESSION_TAG_KEYS = ["eks-cluster-arn", "eks-cluster-name", "kubernetes-namespace", "kubernetes-service-account",
                    "kubernetes-pod-name", "kubernetes-pod-uid"]


# --- shared with the webhook and the agent stand-in -----------------------------------------
def addon_status(addon, now=None):
    """An add-on's status at `now` (wall clock), or None once a deletion has finished."""
    now = time.time() if now is None else now
    if addon.get("deletingAt") is not None:
        return "DELETING" if now < addon["deletingAt"] + TRANSITION_SECONDS else None
    if now < addon["activeAt"]:
        return "CREATING"
    if addon.get("updatingUntil") and now < addon["updatingUntil"]:
        return "UPDATING"
    return "ACTIVE"


def read_state(state_dir):
    """What the AWS server last wrote (empty when it has written nothing yet)."""
    try:
        return json.loads((open(os.path.join(state_dir, STATE_FILE)).read()))
    except (OSError, ValueError):
        return {"addons": [], "associations": []}


def association_for(state, cluster, namespace, service_account):
    return next((a for a in state.get("associations", []) if a["clusterName"] == cluster
                 and a["namespace"] == namespace and a["serviceAccount"] == service_account), None)


def agent_serving(state, cluster, now=None):
    """Whether the cluster's nodes run the agent: its add-on is active (or being updated, a rolling
    update), or it was deleted with `preserve` (the DaemonSet stays)."""
    for addon in state.get("addons", []):
        if addon["clusterName"] == cluster and addon["addonName"] == AGENT_ADDON:
            if addon_status(addon, now) in ("ACTIVE", "UPDATING"):
                return True
            if addon.get("preserve") and addon.get("deletingAt") is not None:
                return True
    return cluster in state.get("preservedAgents", [])


# --- answers -------------------------------------------------------------------------------------
def rfc3339(ts, nanos=False):
    moment = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
    if nanos and moment.microsecond:  # Go's RFC3339Nano: the fraction without trailing zeros
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond * 1000:09d}".rstrip("0") + "Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class Refusal(Exception):
    def __init__(self, status, code, message, **extra):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def not_found(message, **extra):
    return Refusal(404, "ResourceNotFoundException", message, **extra)


def invalid(message, **extra):
    return Refusal(400, "InvalidParameterException", message, **extra)


def answer(status, body, code=None):
    request_id = str(uuid.uuid4())
    headers = [("Content-Type", "application/json"), ("x-amzn-RequestId", request_id)]
    if code:
        headers.append(("x-amzn-ErrorType", code))
    return status, headers, json.dumps(body)


def timestamp(value):
    return round(value, 3)


ROUTES = [
    ("GET", re.compile(r"^/addons/supported-versions$"), "describe_addon_versions"),
    ("POST", re.compile(r"^/clusters/([^/]+)/addons$"), "create_addon"),
    ("GET", re.compile(r"^/clusters/([^/]+)/addons$"), "list_addons"),
    ("GET", re.compile(r"^/clusters/([^/]+)/addons/([^/]+)$"), "describe_addon"),
    ("DELETE", re.compile(r"^/clusters/([^/]+)/addons/([^/]+)$"), "delete_addon"),
    ("POST", re.compile(r"^/clusters/([^/]+)/addons/([^/]+)/update$"), "update_addon"),
    ("POST", re.compile(r"^/clusters/([^/]+)/pod-identity-associations$"), "create_association"),
    ("GET", re.compile(r"^/clusters/([^/]+)/pod-identity-associations$"), "list_associations"),
    ("GET", re.compile(r"^/clusters/([^/]+)/pod-identity-associations/([^/]+)$"), "describe_association"),
    ("POST", re.compile(r"^/clusters/([^/]+)/pod-identity-associations/([^/]+)$"), "update_association"),
    ("DELETE", re.compile(r"^/clusters/([^/]+)/pod-identity-associations/([^/]+)$"), "delete_association"),
    ("POST", re.compile(r"^/clusters/([^/]+)/assume-role-for-pod-identity$"), "assume_role_for_pod_identity"),
]


class PodIdentity:
    def __init__(self, account_id, region, identity, state_dir):
        self.account_id, self.region, self.identity = account_id, region, identity
        self.state_dir = state_dir
        self.lock = threading.RLock()
        self.reset()

    # --- state ---------------------------------------------------------------------------
    def reset(self):
        with self.lock:
            self.addons = {}        # (cluster, add-on name) -> record
            self.associations = {}  # id -> record
            self.request_tokens = {}  # clientRequestToken -> (kind, key, request)
            self.preserved_agents = set()  # clusters whose agent add-on was deleted with preserve
            self.random = random.Random(42)  # the same ids after every reset, without drawing on moto's
            self.identity.session_tags.clear()
            self.publish()

    def publish(self):
        """The state file the webhook and the agent stand-in read (written atomically)."""
        if not self.state_dir:
            return
        self._purge()
        state = {"addons": list(self.addons.values()), "preservedAgents": sorted(self.preserved_agents),
                 "associations": [{k: a[k] for k in ("clusterName", "namespace", "serviceAccount", "roleArn",
                                                     "associationId")} for a in self.associations.values()]}
        path = os.path.join(self.state_dir, STATE_FILE)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(state, f, indent=1)
        os.replace(tmp, path)

    def _purge(self):
        now = time.time()
        for key, addon in list(self.addons.items()):
            if addon_status(addon, now) is None:
                del self.addons[key]
                if addon.get("preserve"):
                    self.preserved_agents.add(addon["clusterName"])

    def snapshot(self):
        with self.lock:
            self._purge()
            return {"addons": sorted(f"{c}/{n}" for c, n in self.addons),
                    "associations": sorted(f"{a['clusterName']}/{a['namespace']}/{a['serviceAccount']} {a['roleArn']}"
                                           for a in self.associations.values())}

    def cluster(self, name):
        from moto.backends import get_backend
        cluster = get_backend("eks")[self.account_id][self.region].clusters.get(name)
        if cluster is None:
            raise not_found(f"No cluster found for name: {name}.", clusterName=name)
        return cluster

    # --- dispatch ------------------------------------------------------------------------
    def handle(self, environ, body):
        """This module's answer to the request, or None when it is not one of its operations."""
        method, path = environ.get("REQUEST_METHOD"), environ.get("PATH_INFO", "")
        for want, pattern, name in ROUTES:
            match = pattern.match(path) if method == want else None
            if match:
                break
        else:
            return None
        record(environ, body)
        if "Credential=" not in environ.get("HTTP_AUTHORIZATION", ""):
            return answer(403, {"message": "Missing Authentication Token"}, "MissingAuthenticationTokenException")
        query = {k: v for k, v in urllib.parse.parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)}
        try:
            request = json.loads(body) if body else {}
            if not isinstance(request, dict):
                raise ValueError
        except ValueError:
            return answer(400, {"message": "Could not parse request body into json"}, "SerializationException")
        try:
            with self.lock:
                self._purge()
                status, result = getattr(self, name)(*[urllib.parse.unquote(g) for g in match.groups()],
                                                     request=request, query=query)
        except Refusal as r:
            print(f"aws: {name}: {r.code}: {r.message}", flush=True)
            return answer(r.status, {**r.extra, "message": r.message}, r.code)
        return answer(status, result)

    # --- add-ons -------------------------------------------------------------------------
    def addon_view(self, addon, now=None):
        view = {k: v for k, v in addon.items() if k in (
            "addonName", "clusterName", "addonVersion", "addonArn", "serviceAccountRoleArn", "tags",
            "configurationValues", "publisher", "owner")}
        view.update(status=addon_status(addon, now) or "DELETING", health={"issues": []},
                    createdAt=timestamp(addon["createdAt"]), modifiedAt=timestamp(addon["modifiedAt"]),
                    podIdentityAssociations=[],
                    namespaceConfig={"namespace": ADDONS[addon["addonName"]]["defaultNamespace"]})
        return view

    def find_addon(self, cluster_name, addon_name):
        self.cluster(cluster_name)
        addon = self.addons.get((cluster_name, addon_name))
        if addon is None:
            raise not_found(f"No addon: {addon_name} found in cluster: {cluster_name}",
                            clusterName=cluster_name, addonName=addon_name)
        return addon

    def checked_version(self, cluster, addon_name, version):
        offered = ADDONS.get(addon_name)
        if offered is None:
            raise invalid(f"Addon {addon_name} specified is not supported in {cluster.version} cluster version",
                          clusterName=cluster.name, addonName=addon_name)
        if version is None:
            return offered["default"]
        if version not in offered["versions"]:
            raise invalid(f"Addon version specified is not supported", clusterName=cluster.name, addonName=addon_name)
        return version

    def idempotent(self, token, kind, key, request):
        """The earlier result of a request with the same clientRequestToken, or None."""
        if not token or token not in self.request_tokens:
            return None
        seen_kind, seen_key, seen_request = self.request_tokens[token]
        if (seen_kind, seen_request) != (kind, request):
            raise Refusal(400, "InvalidRequestException",
                          "The client request token was already used with different request parameters")
        return seen_key

    def create_addon(self, cluster_name, request, query):
        cluster = self.cluster(cluster_name)
        name = request.get("addonName")
        if not name:
            raise invalid("addonName must not be empty", clusterName=cluster_name)
        earlier = self.idempotent(request.get("clientRequestToken"), "addon", (cluster_name, name), request)
        if earlier is not None and earlier in self.addons:
            return 200, {"addon": self.addon_view(self.addons[earlier])}
        version = self.checked_version(cluster, name, request.get("addonVersion"))
        if (cluster_name, name) in self.addons:
            raise Refusal(409, "ResourceInUseException", "Addon already exists.", clusterName=cluster_name,
                          addonName=name)
        if request.get("podIdentityAssociations"):
            raise invalid(f"Addon {name} does not support Pod Identity associations", clusterName=cluster_name,
                          addonName=name)
        role = request.get("serviceAccountRoleArn")
        if role is not None:
            self.existing_role(role)
        now = time.time()
        addon = {"addonName": name, "clusterName": cluster_name, "addonVersion": version,
                 "addonArn": f"arn:aws:eks:{self.region}:{self.account_id}:addon/{cluster_name}/{name}/"
                             f"{uuid.UUID(int=self.random.getrandbits(128), version=4)}",
                 "tags": dict(request.get("tags") or {}), "publisher": ADDONS[name]["publisher"],
                 "owner": ADDONS[name]["owner"], "createdAt": now, "modifiedAt": now,
                 "activeAt": now + TRANSITION_SECONDS, "deletingAt": None, "updatingUntil": None}
        if role is not None:
            addon["serviceAccountRoleArn"] = role
        if request.get("configurationValues") is not None:
            addon["configurationValues"] = request["configurationValues"]
        self.addons[(cluster_name, name)] = addon
        self.preserved_agents.discard(cluster_name)
        if request.get("clientRequestToken"):
            self.request_tokens[request["clientRequestToken"]] = ("addon", (cluster_name, name), request)
        self.publish()
        return 200, {"addon": self.addon_view(addon, now)}

    def list_addons(self, cluster_name, request, query):
        self.cluster(cluster_name)
        names = sorted(n for c, n in self.addons if c == cluster_name)
        page, token = paginate(names, query)
        return 200, dict({"addons": page}, **({"nextToken": token} if token else {}))

    def describe_addon(self, cluster_name, addon_name, request, query):
        return 200, {"addon": self.addon_view(self.find_addon(cluster_name, addon_name))}

    def delete_addon(self, cluster_name, addon_name, request, query):
        addon = self.find_addon(cluster_name, addon_name)
        if addon["deletingAt"] is None:
            now = time.time()
            addon.update(deletingAt=now, modifiedAt=now, preserve=query.get("preserve", "").lower() == "true")
            self.publish()
        return 200, {"addon": self.addon_view(addon)}

    def update_addon(self, cluster_name, addon_name, request, query):
        cluster = self.cluster(cluster_name)
        addon = self.find_addon(cluster_name, addon_name)
        status = addon_status(addon)
        if status != "ACTIVE":
            raise Refusal(409, "ResourceInUseException", f"Addon {addon_name} is in {status} state and cannot be "
                          "updated", clusterName=cluster_name, addonName=addon_name)
        if request.get("podIdentityAssociations"):
            raise invalid(f"Addon {addon_name} does not support Pod Identity associations",
                          clusterName=cluster_name, addonName=addon_name)
        params = []
        if request.get("addonVersion") is not None:
            addon["addonVersion"] = self.checked_version(cluster, addon_name, request["addonVersion"])
            params.append({"type": "AddonVersion", "value": addon["addonVersion"]})
        if request.get("serviceAccountRoleArn") is not None:
            self.existing_role(request["serviceAccountRoleArn"])
            addon["serviceAccountRoleArn"] = request["serviceAccountRoleArn"]
            params.append({"type": "ServiceAccountRoleArn", "value": request["serviceAccountRoleArn"]})
        if request.get("configurationValues") is not None:
            addon["configurationValues"] = request["configurationValues"]
            params.append({"type": "ConfigurationValues", "value": request["configurationValues"]})
        if request.get("resolveConflicts") is not None:
            params.append({"type": "ResolveConflicts", "value": request["resolveConflicts"]})
        now = time.time()
        addon.update(modifiedAt=now, updatingUntil=now + TRANSITION_SECONDS)
        self.publish()
        return 200, {"update": {"id": str(uuid.UUID(int=self.random.getrandbits(128), version=4)),
                                "status": "InProgress", "type": "AddonUpdate", "params": params,
                                "createdAt": timestamp(now), "errors": []}}

    def describe_addon_versions(self, request, query):
        version = query.get("kubernetesVersion")
        found = []
        for name, offered in sorted(ADDONS.items()):
            if query.get("addonName") and query["addonName"] != name:
                continue
            found.append({"addonName": name, "type": offered["type"], "publisher": offered["publisher"],
                          "owner": offered["owner"], "defaultNamespace": offered["defaultNamespace"],
                          "addonVersions": [{
                              "addonVersion": v, "architecture": ["amd64", "arm64"], "computeTypes": ["ec2", "hybrid"],
                              "compatibilities": [{"clusterVersion": version or "1.35", "platformVersions": ["*"],
                                                   "defaultVersion": v == offered["default"]}],
                              "requiresConfiguration": False, "requiresIamPermissions": False}
                              for v in offered["versions"]]})
        page, token = paginate(found, query)
        return 200, dict({"addons": page}, **({"nextToken": token} if token else {}))

    # --- associations ----------------------------------------------------------------------
    def existing_role(self, role_arn):
        try:
            return self.identity.iam.get_role_by_arn(role_arn)
        except Exception:
            raise invalid("Role provided in the request does not exist") from None

    def checked_role(self, role_arn):
        """The role an association may name: it exists and trusts EKS Pod Identity to assume it."""
        if not isinstance(role_arn, str) or not role_arn.startswith(f"arn:aws:iam::{self.account_id}:role/"):
            if isinstance(role_arn, str) and re.match(r"^arn:aws:iam::\d{12}:role/", role_arn):
                raise invalid("Role provided in the request does not exist")
            raise invalid(f"Invalid role ARN: {role_arn}")
        role = self.existing_role(role_arn)
        trust = iam_policy.documents([_document(role.assume_role_policy_document)])
        if not any(s.get("Effect") == "Allow" and iam_policy.principal_matches(s.get("Principal"),
                                                                              {"Service": SERVICE_PRINCIPAL})
                   and "Action" in s and iam_policy.action_matches(s["Action"], "sts:AssumeRole")
                   for doc in trust for s in iam_policy.as_list(doc.get("Statement"))):
            raise invalid("Trust policy of the role provided is invalid")
        return role

    def association_view(self, a, summary=False):
        if summary:
            return {k: a[k] for k in ("clusterName", "namespace", "serviceAccount", "associationArn",
                                      "associationId", "ownerArn") if a.get(k) is not None}
        view = {k: a[k] for k in ("clusterName", "namespace", "serviceAccount", "roleArn", "associationArn",
                                  "associationId", "tags", "ownerArn", "disableSessionTags") if a.get(k) is not None}
        view.update(createdAt=timestamp(a["createdAt"]), modifiedAt=timestamp(a["modifiedAt"]))
        return view

    def new_association_id(self):
        alphabet = string.ascii_lowercase + string.digits
        while True:
            candidate = "a-" + "".join(self.random.choice(alphabet) for _ in range(17))
            if candidate not in self.associations:
                return candidate

    def unsupported(self, request, cluster_name):
        for field in ("targetRoleArn", "policy", "workloadIdentityConfig"):
            if request.get(field) is not None:
                raise invalid(f"{field} is not supported by the rig's EKS", clusterName=cluster_name)

    def create_association(self, cluster_name, request, query):
        self.cluster(cluster_name)
        for field in ("namespace", "serviceAccount", "roleArn"):
            if not isinstance(request.get(field), str) or not request[field]:
                raise invalid(f"{field} must not be empty", clusterName=cluster_name)
        earlier = self.idempotent(request.get("clientRequestToken"), "association", None, request)
        if earlier is not None and earlier in self.associations:
            return 200, {"association": self.association_view(self.associations[earlier])}
        self.unsupported(request, cluster_name)
        tags = request.get("tags") or {}
        if not isinstance(tags, dict) or len(tags) > 50:
            raise invalid("tags must be a map of at most 50 tags", clusterName=cluster_name)
        existing = next((a for a in self.associations.values() if (a["clusterName"], a["namespace"],
                         a["serviceAccount"]) == (cluster_name, request["namespace"], request["serviceAccount"])), None)
        if existing is not None:
            raise Refusal(409, "ResourceInUseException", f"Association already exists: {existing['associationId']}",
                          clusterName=cluster_name)
        self.checked_role(request["roleArn"])
        now = time.time()
        association_id = self.new_association_id()
        association = {
            "clusterName": cluster_name, "namespace": request["namespace"],
            "serviceAccount": request["serviceAccount"], "roleArn": request["roleArn"],
            "associationArn": f"arn:aws:eks:{self.region}:{self.account_id}:podidentityassociation/"
                              f"{cluster_name}/{association_id}",
            "associationId": association_id, "tags": dict(tags), "createdAt": now, "modifiedAt": now,
            "disableSessionTags": bool(request.get("disableSessionTags", False))}
        self.associations[association_id] = association
        if request.get("clientRequestToken"):
            self.request_tokens[request["clientRequestToken"]] = ("association", association_id, request)
        self.publish()
        return 200, {"association": self.association_view(association)}

    def find_association(self, cluster_name, association_id):
        self.cluster(cluster_name)
        if len(association_id) != 19:
            raise invalid("The parameter associationId should be 19 characters long.", clusterName=cluster_name)
        association = self.associations.get(association_id)
        if association is None or association["clusterName"] != cluster_name:
            raise not_found(f"Pod Identity association {association_id} not found in cluster {cluster_name}",
                            clusterName=cluster_name)
        return association

    def list_associations(self, cluster_name, request, query):
        self.cluster(cluster_name)
        found = sorted((a for a in self.associations.values() if a["clusterName"] == cluster_name
                        and query.get("namespace") in (None, a["namespace"])
                        and query.get("serviceAccount") in (None, a["serviceAccount"])),
                       key=lambda a: (a["createdAt"], a["associationId"]))
        page, token = paginate([self.association_view(a, summary=True) for a in found], query)
        return 200, dict({"associations": page}, **({"nextToken": token} if token else {}))

    def describe_association(self, cluster_name, association_id, request, query):
        return 200, {"association": self.association_view(self.find_association(cluster_name, association_id))}

    def update_association(self, cluster_name, association_id, request, query):
        association = self.find_association(cluster_name, association_id)
        self.unsupported(request, cluster_name)
        if request.get("roleArn") is None and request.get("disableSessionTags") is None:
            raise invalid("At least one of roleArn, targetRoleArn, disableSessionTags, policy or "
                          "workloadIdentityConfig must be given", clusterName=cluster_name)
        if request.get("roleArn") is not None:
            self.checked_role(request["roleArn"])
            association["roleArn"] = request["roleArn"]
        if request.get("disableSessionTags") is not None:
            association["disableSessionTags"] = bool(request["disableSessionTags"])
        association["modifiedAt"] = time.time()
        self.publish()
        return 200, {"association": self.association_view(association)}

    def delete_association(self, cluster_name, association_id, request, query):
        association = self.find_association(cluster_name, association_id)
        if association.get("ownerArn"):
            raise Refusal(400, "InvalidRequestException", "Association is owned by an addon and cannot be deleted "
                          "directly", clusterName=cluster_name)
        del self.associations[association_id]
        self.publish()
        return 200, {"association": self.association_view(association)}

    # --- EKS Auth --------------------------------------------------------------------------
    def assume_role_for_pod_identity(self, cluster_name, request, query):
        cluster = self.cluster(cluster_name)
        token = request.get("token")
        if not isinstance(token, str) or not token:
            raise invalid("token must not be empty")
        import aws_identity
        bad = Refusal(400, "InvalidTokenException", "The specified Kubernetes service account token is invalid.")
        try:
            header, claims, signed, signature = aws_identity.decode_jwt(token)
        except ValueError:
            raise bad from None
        issuer = (cluster.identity or {}).get("oidc", {}).get("issuer")
        known_issuer, key = self.identity.keys.get(header.get("kid"))
        if header.get("alg") != "RS256" or key is None or claims.get("iss") != issuer or known_issuer != issuer \
                or not aws_identity.rs256_valid(key, signed, signature):
            raise bad
        now = time.time()
        if not isinstance(claims.get("exp"), (int, float)):
            raise Refusal(400, "InvalidTokenException", "The specified Kubernetes service account token is invalid: "
                          "missing a required claim: exp")
        if now >= claims["exp"]:
            raise Refusal(400, "ExpiredTokenException", f"The token included in the request is expired: current "
                          f"date/time {rfc3339(now, nanos=True)} must be before the expiration date/time "
                          f"{rfc3339(claims['exp'])}.")
        if AUDIENCE not in iam_policy.as_list(claims.get("aud")):
            raise Refusal(400, "InvalidTokenException", f"The specified Kubernetes service account token is invalid: "
                          f"its audience is not {AUDIENCE}")
        parts = str(claims.get("sub", "")).split(":")
        if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"]:
            raise Refusal(400, "InvalidTokenException", "The specified Kubernetes service account token is invalid: "
                          "its subject is not a service account")
        namespace, service_account = parts[2], parts[3]
        association = next((a for a in self.associations.values() if (a["clusterName"], a["namespace"],
                            a["serviceAccount"]) == (cluster_name, namespace, service_account)), None)
        if association is None:
            raise not_found(f"No Pod Identity association found for service account {service_account} in namespace "
                            f"{namespace} of cluster {cluster_name}")
        role_arn = association["roleArn"]
        denied = Refusal(400, "AccessDeniedException", f"Unable to assume role {role_arn}: not authorized to perform "
                         "sts:AssumeRole")
        try:
            role = self.identity.iam.get_role_by_arn(role_arn)
        except Exception:
            raise denied from None
        pod = ((claims.get("kubernetes.io") or {}).get("pod") or {})
        tags = {} if association.get("disableSessionTags") else {
            "eks-cluster-arn": cluster.arn, "eks-cluster-name": cluster_name, "kubernetes-namespace": namespace,
            "kubernetes-service-account": service_account, "kubernetes-pod-name": pod.get("name", ""),
            "kubernetes-pod-uid": pod.get("uid", "")}
        context = {**iam_policy.tag_context("aws:RequestTag", tags), "aws:SourceAccount": self.account_id,
                   "aws:SourceArn": cluster.arn}
        if tags:
            context["aws:TagKeys"] = list(tags)
        trust = [_document(role.assume_role_policy_document)]
        for action in ["sts:AssumeRole"] + (["sts:TagSession"] if tags else []):
            if iam_policy.evaluate(trust, action, role_arn, context, who={"Service": SERVICE_PRINCIPAL}) != "allow":
                raise Refusal(400, "AccessDeniedException", f"Unable to assume role {role_arn}: not authorized to "
                              f"perform {action}")
        session_name = f"eks-{cluster_name}-{pod.get('name', service_account)}-{uuid.uuid4()}"[:64]
        session = self.identity.sts.assume_role(region_name=self.region, role_session_name=session_name,
                                                role_arn=role_arn, policy=None, duration=CREDENTIAL_SECONDS,
                                                external_id=None)
        if tags:
            self.identity.session_tags[session.access_key_id] = tags
        print(f"aws: AssumeRoleForPodIdentity: {namespace}/{service_account} as {role_arn} ({session.access_key_id})",
              flush=True)
        return 200, {
            "subject": {"namespace": namespace, "serviceAccount": service_account},
            "audience": AUDIENCE,
            "podIdentityAssociation": {"associationArn": association["associationArn"],
                                       "associationId": association["associationId"]},
            "assumedRoleUser": {"arn": session.arn, "assumeRoleId": f"{role.id}:{session_name}"},
            "credentials": {"sessionToken": session.session_token, "secretAccessKey": session.secret_access_key,
                            "accessKeyId": session.access_key_id,
                            "expiration": int(session.expiration.replace(tzinfo=datetime.timezone.utc).timestamp())},
        }


def paginate(items, query):
    """A page of `items` by `maxResults` (1-100) and `nextToken` (an opaque offset)."""
    try:
        size = int(query.get("maxResults", 100))
        start = int(base64.urlsafe_b64decode(query["nextToken"]).decode()) if query.get("nextToken") else 0
    except ValueError:
        raise invalid("The nextToken or maxResults parameter is not valid") from None
    if not 1 <= size <= 100:
        raise invalid("maxResults must be between 1 and 100")
    page = items[start:start + size]
    more = start + size < len(items)
    return page, base64.urlsafe_b64encode(str(start + size).encode()).decode() if more else None


def _document(doc):
    """A policy document as moto keeps it: JSON text, URL-encoded when the client sent it so."""
    return urllib.parse.unquote(doc) if isinstance(doc, str) and doc.lstrip().startswith("%7B") else doc


def record(environ, body):
    """Writes the request to moto's recorder, as moto records the requests it serves."""
    from moto.core.request import Request
    from moto.moto_api import recorder
    try:
        recorder._record_request(Request(environ), body)
    except Exception as e:  # the recording is a test aid; never the reason a request fails
        print(f"aws: recording failed: {e}", flush=True)
