"""A stand-in for EKS's pod identity webhook (IRSA), as a mutating admission webhook.

On EKS, pods whose ServiceAccount carries `eks.amazonaws.com/role-arn` are
created with `AWS_ROLE_ARN`, `AWS_WEB_IDENTITY_TOKEN_FILE` and a projected
`aws-iam-token` volume. The rig's kube-apiserver calls this server (by URL on
127.0.0.1, TLS with the rig's own CA) for every pod it creates, so the
plugin's check "the controller pods carry the IRSA token env and volume" sees
what it would see on EKS, including the need to restart pods created before
the annotation. `failurePolicy: Ignore`: the cluster works without it.

usage: pod_identity_webhook.py PORT CERT KEY  (KUBECONFIG set)
"""

import base64
import json
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kubernetes import client, config
from kubernetes.client.rest import ApiException

ROLE_ANNOTATION = "eks.amazonaws.com/role-arn"
TOKEN_DIR = "/var/run/secrets/eks.amazonaws.com/serviceaccount"


def patch_for(pod, namespace, core):
    sa_name = pod.get("spec", {}).get("serviceAccountName") or "default"
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
        ops = patch_for(request["object"], request.get("namespace", "default"), self.server.core)
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
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
