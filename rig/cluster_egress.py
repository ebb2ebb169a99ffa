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
- A CONNECT to a node's kubelet (an address of the Node with its
  daemonEndpoints.kubeletEndpoint port: kwok's nodes are all `localhost`
  at kwok's port) is the API server reading container logs: tunnelled,
  TLS untouched, to the kubelet API of the rig's pod runner
  (rig/pod_runner.py) on 127.0.0.1, which answers for the pods it runs and
  says it has no such pod for the others. Refused with 503 while the
  runner does not answer.
- Every other destination is refused with 403, pods included.

Each CONNECT is logged with its verdict, each review with its answer.

usage: cluster_egress.py SOCKET [KUBELET_PORT]  (KUBECONFIG and the AWS_*
variables set; the cluster and the pod runner may come up after the proxy)
"""

import base64
import json
import select
import socket
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
        self.kubelet_port = None

    def connect(self):
        with self.lock:
            if self.core is None:
                config.load_kube_config()
                self.core = client.CoreV1Api()
                self.discovery = client.DiscoveryV1Api()
                self.webhooks = Webhooks()

    def kubelet(self, host, port):
        """The names of the nodes whose kubelet endpoint is host:port."""
        nodes = json.loads(self.core.list_node(_preload_content=False).data)["items"]
        return [n["metadata"]["name"] for n in nodes
                if ((n.get("status") or {}).get("daemonEndpoints") or {}).get("kubeletEndpoint", {}).get("Port") == port
                and host in [a.get("address") for a in (n.get("status") or {}).get("addresses") or []]]

    def route(self, host, port):
        """(the webhook Service, "kubelet" or None, HTTP status, verdict) for a CONNECT to host:port."""
        self.connect()
        nodes = self.kubelet(host, port)
        if nodes:
            where = f"kubelet of node{'s' if len(nodes) > 1 else ''} {', '.join(nodes)}"
            if self.kubelet_port is None:
                return None, 403, f"refused: {where}: the rig runs no kubelet API"
            return "kubelet", 200, f"answered: {where} (the rig's pod runner, 127.0.0.1:{self.kubelet_port})"
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
        if service == "kubelet":
            self.splice(verdict)
            return
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

    def splice(self, verdict):
        """A tunnel to the pod runner's kubelet API: bytes both ways until either side closes."""
        try:
            upstream = socket.create_connection(("127.0.0.1", self.server.cluster.kubelet_port), timeout=5)
        except OSError as e:
            log(f"CONNECT {self.path} refused: the kubelet (the rig's pod runner) does not answer ({e})")
            self.refuse(503, "the kubelet does not answer")
            return
        log(f"CONNECT {self.path} {verdict}")
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        upstream.settimeout(None)
        sockets = [self.connection, upstream]
        try:
            pending = self.rfile.peek() if hasattr(self.rfile, "peek") else b""
            if pending:  # bytes the request parser read ahead
                upstream.sendall(self.rfile.read(len(pending)))
            while True:
                readable, _, _ = select.select(sockets, [], [], 300)
                if not readable:
                    return
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        return
                    (upstream if s is self.connection else self.connection).sendall(data)
        except OSError:
            return
        finally:
            upstream.close()

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
    if len(sys.argv) > 2:
        server.cluster.kubelet_port = int(sys.argv[2])
    log(f"listening on {path}")
    server.serve_forever()


if __name__ == "__main__":
    main()
