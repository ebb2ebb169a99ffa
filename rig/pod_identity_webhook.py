"""A stand-in for EKS's pod identity webhook (IRSA and EKS Pod Identity), as a mutating
admission webhook.

On EKS, pods whose ServiceAccount carries `eks.amazonaws.com/role-arn` are
created with `AWS_ROLE_ARN`, `AWS_WEB_IDENTITY_TOKEN_FILE` and a projected
`aws-iam-token` volume. The rig's kube-apiserver calls this server (by URL on
127.0.0.1, TLS with the rig's own CA) for every pod it creates, so the
plugin's check "the controller pods carry the IRSA token env and volume" sees
what it would see on EKS, including the need to restart pods created before
the annotation. `failurePolicy: Ignore`: the cluster works without it.

EKS Pod Identity: a pod created while its namespace and ServiceAccount have
a Pod Identity association in the cluster gets, in every container and init
container (a variable the container already sets is left as it is, as EKS
leaves it), `AWS_STS_REGIONAL_ENDPOINTS=regional`, `AWS_DEFAULT_REGION` and
`AWS_REGION` (unless one of the two is set), `AWS_CONTAINER_CREDENTIALS_FULL_URI`
(the agent's URL: on EKS `http://169.254.170.23/v1/credentials`, on the rig
the agent stand-in's loopback URL) and
`AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token`,
the projected volume `eks-pod-identity-token` (audience
`pods.eks.amazonaws.com`, 86400 s) and its read-only mount. The
association takes precedence over the IRSA annotation, as with EKS's
webhook: such a pod gets no IRSA variables. A pod created before the
association is left as it is (which is why it must be restarted). The
associations are read from the file the AWS server writes on every change
(eks_pod_identity.STATE_FILE), as EKS's webhook reads the list it is given.

usage: pod_identity_webhook.py PORT CERT KEY AGENT_URL  (KUBECONFIG, RIG_STATE, RIG_CLUSTER_NAME, AWS_REGION set)
"""

import base64
import json
import os
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kubernetes import client, config
from kubernetes.client.rest import ApiException

import eks_pod_identity

ROLE_ANNOTATION = "eks.amazonaws.com/role-arn"
TOKEN_DIR = "/var/run/secrets/eks.amazonaws.com/serviceaccount"
POD_IDENTITY_VOLUME = "eks-pod-identity-token"
POD_IDENTITY_DIR = "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount"
POD_IDENTITY_EXPIRATION = 86400


def pod_identity_patch(pod, agent_url, region):
    """The JSON patch giving a pod EKS Pod Identity's container credentials."""
    spec = pod["spec"]
    ops = []
    if not any(v.get("name") == POD_IDENTITY_VOLUME for v in spec.get("volumes") or []):
        volume = {"name": POD_IDENTITY_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
            "audience": eks_pod_identity.AUDIENCE, "expirationSeconds": POD_IDENTITY_EXPIRATION,
            "path": POD_IDENTITY_VOLUME}}]}}
        ops.append({"op": "add", "path": "/spec/volumes", "value": [volume]} if not spec.get("volumes")
                   else {"op": "add", "path": "/spec/volumes/-", "value": volume})
    for kind in ("initContainers", "containers"):
        for i, container in enumerate(spec.get(kind) or []):
            present = {e.get("name") for e in container.get("env") or []}
            env = []
            if "AWS_STS_REGIONAL_ENDPOINTS" not in present:
                env.append({"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "regional"})
            if region and not present & {"AWS_REGION", "AWS_DEFAULT_REGION"}:
                env += [{"name": "AWS_DEFAULT_REGION", "value": region}, {"name": "AWS_REGION", "value": region}]
            token_file = f"{POD_IDENTITY_DIR}/{POD_IDENTITY_VOLUME}"
            for name, value in (("AWS_CONTAINER_CREDENTIALS_FULL_URI", agent_url),
                                ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token_file)):
                if name not in present:
                    env.append({"name": name, "value": value})
            if env:
                if not container.get("env"):
                    ops.append({"op": "add", "path": f"/spec/{kind}/{i}/env", "value": []})
                ops.extend({"op": "add", "path": f"/spec/{kind}/{i}/env/-", "value": e} for e in env)
            if not any(m.get("name") == POD_IDENTITY_VOLUME for m in container.get("volumeMounts") or []):
                if not container.get("volumeMounts"):
                    ops.append({"op": "add", "path": f"/spec/{kind}/{i}/volumeMounts", "value": []})
                ops.append({"op": "add", "path": f"/spec/{kind}/{i}/volumeMounts/-", "value": {
                    "name": POD_IDENTITY_VOLUME, "mountPath": POD_IDENTITY_DIR, "readOnly": True}})
    return ops


def patch_for(pod, namespace, core, agent_url=None):
    sa_name = pod.get("spec", {}).get("serviceAccountName") or "default"
    state = eks_pod_identity.read_state(os.environ.get("RIG_STATE", ""))
    if agent_url and eks_pod_identity.association_for(state, os.environ.get("RIG_CLUSTER_NAME", ""), namespace,
                                                      sa_name):
        return pod_identity_patch(pod, agent_url, os.environ.get("AWS_REGION", ""))
    try:
        sa = core.read_namespaced_service_account(sa_name, namespace)
    except ApiException:
        return []
    role = (sa.metadata.annotations or {}).get(ROLE_ANNOTATION)
    if not role:
        return []
    ops = []
    spec = pod["spec"]
    if not spec.get("volumes"):
        ops.append({"op": "add", "path": "/spec/volumes", "value": []})
    ops.append({"op": "add", "path": "/spec/volumes/-", "value": {
        "name": "aws-iam-token",
        "projected": {"sources": [{"serviceAccountToken": {
            "audience": "sts.amazonaws.com", "expirationSeconds": 86400, "path": "token"}}]}}})
    env = [{"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "regional"},
           {"name": "AWS_ROLE_ARN", "value": role},
           {"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": f"{TOKEN_DIR}/token"}]
    for i, container in enumerate(spec.get("containers", [])):
        if not container.get("env"):
            ops.append({"op": "add", "path": f"/spec/containers/{i}/env", "value": []})
        ops.extend({"op": "add", "path": f"/spec/containers/{i}/env/-", "value": e} for e in env)
        if not container.get("volumeMounts"):
            ops.append({"op": "add", "path": f"/spec/containers/{i}/volumeMounts", "value": []})
        ops.append({"op": "add", "path": f"/spec/containers/{i}/volumeMounts/-", "value": {
            "name": "aws-iam-token", "mountPath": TOKEN_DIR, "readOnly": True}})
    return ops


class Handler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        pass

    def do_POST(self):
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        request = review["request"]
        ops = patch_for(request["object"], request.get("namespace", "default"), self.server.core,
                        self.server.agent_url)
        response = {"uid": request["uid"], "allowed": True}
        if ops:
            response.update(patchType="JSONPatch", patch=base64.b64encode(json.dumps(ops).encode()).decode())
        body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                           "response": response}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    config.load_kube_config()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.core = client.CoreV1Api()
    server.agent_url = sys.argv[4] if len(sys.argv) > 4 else None
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
