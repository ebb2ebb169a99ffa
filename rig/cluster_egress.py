"""The API server's only way into the cluster network: an HTTP CONNECT proxy on a Unix socket.

kube-apiserver runs with an EgressSelectorConfiguration whose `cluster` egress
is HTTPConnect to this proxy's socket. Whatever it would dial in the cluster
network (service-reference admission webhooks, kubelets for logs and exec, the
services and pods proxy) arrives here as `CONNECT <ip>:<port>`; the rig's
addresses there (10.0.0.0/24) are never dialled by anyone.

- A CONNECT to ClusterIP:443 of a Service `aws-load-balancer-webhook-service`
  is the AWS Load Balancer Controller's webhooks: answered while that Service
  has a ready endpoint (the controller Deployment has a ready pod), refused
  with 503 while it has none, as a real cluster's network refuses it. Once
  answered, the proxy terminates TLS itself with the certificate of the Secret
  `aws-load-balancer-tls` beside the Service (read again whenever it changes)
  and serves the admission reviews (rig/lbc_webhooks.py).
- Every other destination is refused with 403, nodes and pods included.

Each CONNECT is logged with its verdict, each review with its answer.

usage: cluster_egress.py SOCKET  (KUBECONFIG and the AWS_* variables set; the
cluster may come up after the proxy)
"""

import base64
import json
import ssl
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from socketserver import ThreadingUnixStreamServer

from kubernetes import client, config

from lbc_webhooks import Webhooks

WEBHOOK_SERVICE = "aws-load-balancer-webhook-service"
WEBHOOK_SECRET = "aws-load-balancer-tls"


def log(msg):
    print(f"cluster-egress: {msg}", flush=True)


class Cluster:
    """What the proxy reads from the API server: the webhook Service, its endpoints, its certificate."""

    def __init__(self):
        self.lock = threading.Lock()
        self.core = None
        self.webhooks = None
        self.tls = {}  # namespace -> (Secret resourceVersion, SSLContext)

    def connect(self):
        with self.lock:
            if self.core is None:
                config.load_kube_config()
                self.core = client.CoreV1Api()
                self.discovery = client.DiscoveryV1Api()
                self.webhooks = Webhooks()

    def route(self, host, port):
        """(the webhook Service or None, HTTP status, verdict) for a CONNECT to host:port."""
        self.connect()
        for svc in self.core.list_service_for_all_namespaces().items:
            if host in [svc.spec.cluster_ip, *(svc.spec.cluster_i_ps or [])] and any(p.port == port for p in svc.spec.ports or []):
                where = f"Service {svc.metadata.namespace}/{svc.metadata.name}"
                if svc.metadata.name != WEBHOOK_SERVICE:
                    return None, 403, f"refused: {where} is not the controller's webhook"
                if not self.ready(svc):
                    return None, 503, f"refused: {where} has no ready endpoints"
                return svc, 200, f"answered: {where} has ready endpoints"
        return None, 403, "refused: not a Service of the cluster"

    def ready(self, svc):
        # Raw JSON: the client's models refuse a slice whose endpoints are null (none ready yet).
        slices = json.loads(self.discovery.list_namespaced_endpoint_slice(
            svc.metadata.namespace, label_selector=f"kubernetes.io/service-name={svc.metadata.name}",
            _preload_content=False).data)["items"]
        return any(e.get("addresses") and (e.get("conditions") or {}).get("ready") is not False
                   for s in slices for e in s.get("endpoints") or [])

    def context(self, namespace):
        """The TLS server context with the Secret's certificate, rebuilt when the Secret changes."""
        secret = self.core.read_namespaced_secret(WEBHOOK_SECRET, namespace)
        with self.lock:
            cached = self.tls.get(namespace)
            if cached and cached[0] == secret.metadata.resource_version:
                return cached[1]
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            with tempfile.TemporaryDirectory() as d:
                cert, key = Path(d) / "tls.crt", Path(d) / "tls.key"
                cert.write_bytes(base64.b64decode(secret.data["tls.crt"]))
                key.write_bytes(base64.b64decode(secret.data["tls.key"]))
                ctx.load_cert_chain(cert, key)
            self.tls[namespace] = (secret.metadata.resource_version, ctx)
            log(f"loaded the webhook certificate of Secret {namespace}/{WEBHOOK_SECRET} "
                f"(resourceVersion {secret.metadata.resource_version})")
            return ctx


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    tunnel = None  # the webhook Service once a CONNECT to it was answered

    def log_message(self, fmt, *args):
        pass

    def do_CONNECT(self):
        host, _, port = self.path.rpartition(":")
        try:
            service, code, verdict = self.server.cluster.route(host.strip("[]"), int(port))
        except Exception as e:  # the API server is not answering yet, or a bad target
            service, code, verdict = None, 503, f"refused: {e}"
        log(f"CONNECT {self.path} {verdict}")
        if service is None:
            self.refuse(code, verdict.split(": ", 1)[1])
            return
        try:
            ctx = self.server.cluster.context(service.metadata.namespace)
        except Exception as e:
            log(f"CONNECT {self.path} refused: no usable certificate ({e})")
            self.refuse(503, "the webhook has no certificate")
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        try:
            self.connection = ctx.wrap_socket(self.connection, server_side=True)
        except (ssl.SSLError, OSError) as e:
            log(f"CONNECT {self.path} TLS handshake failed: {e}")
            self.close_connection = True
            return
        self.rfile = self.connection.makefile("rb")
        self.wfile = self.connection.makefile("wb")  # flushed after each request
        self.tunnel = service

    def refuse(self, code, reason):
        """A status line and nothing else: the API server reads it and hangs up."""
        self.send_response(code, reason.replace("\n", " "))
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def do_POST(self):
        if self.tunnel is None:
            self.send_error(405, "this is a CONNECT proxy")
            return
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if not self.server.cluster.ready(self.tunnel):
            # The pods behind this kept-alive connection are gone, and so is the connection.
            log(f"review {self.path} dropped: the webhook Service has no ready endpoints any more")
            self.close_connection = True
            return
        try:
            answer, summary = self.server.cluster.webhooks.review(self.path, review)
        except Exception as e:  # the webhook's own failure: the API server applies the failure policy
            log(f"review {self.path} failed: {e!r}")
            self.send_error(500, str(e))
            return
        log(f"review {summary}")
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    path = Path(sys.argv[1])
    path.unlink(missing_ok=True)
    server = ThreadingUnixStreamServer(str(path), Handler)
    server.daemon_threads = True
    server.cluster = Cluster()
    log(f"listening on {path}")
    server.serve_forever()


if __name__ == "__main__":
    main()
