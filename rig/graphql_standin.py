"""A stand-in for one ScalarDB GraphQL server process (the real image is private).

It honours the HTTP contract the plugin relies on: `{__typename}` over GET
and POST (application/json and application/graphql), the operation directive
`@transaction(id, commit)` that starts, continues and commits a transaction,
`mutation @transaction(id: ...) { abort }`, a 60 s expiry, and HTTP 200 with
an `errors[]` entry saying the transaction is not found when a request
carries an id this process never started. Each process keeps its
transactions in its own memory, which is exactly why an ALB in front of
several of them must be sticky.

Cluster mode stands for one ScalarDB Cluster node with GraphQL on (the pod
runner starts it for a `scalardb-cluster-node` container). It reads the
node's properties file, `${env:NAME}` and `${env:NAME:-default}` resolved
from its environment, and refuses to start (exit 1, one log line per
problem) without any of the three membership properties the chart's docs
require. It listens on the gRPC port (60053), which is all the chart's
probes look at; with `scalar.db.graphql.enabled=true` it also serves GraphQL
on `scalar.db.graphql.port` (8080) at `scalar.db.graphql.path` (/graphql) of
its own loopback address. Without it the node runs and goes Ready serving no
GraphQL, as a node does (GraphQL is off by default): only a health check of
the GraphQL port shows it. The nodes of one membership (the endpoint's namespace
and name) share their transactions through a file under STORE_DIR, locked
for every change, so any node continues a transaction begun on another, as
the Cluster's routing lets it: the routing reaches the node that began it,
which holds the transaction in its memory, so once that node has stopped
(its gRPC port no longer answers) no node can continue it.

usage: graphql_standin.py PORT NAME
       graphql_standin.py --cluster PROPERTIES ADDRESS NAME STORE_DIR
"""

import fcntl
import json
import os
import re
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

TRANSACTION_TTL = 60.0
DIRECTIVE = re.compile(r"@transaction\s*(?:\(([^)]*)\))?")
ID_ARG = re.compile(r'\bid\s*:\s*(?:"([^"]*)"|\$(\w+))')
COMMIT_ARG = re.compile(r"\bcommit\s*:\s*(true|false|\$\w+)")


class Transactions:
    def __init__(self):
        self._lock = threading.Lock()
        self._deadline = {}

    def begin(self):
        tx = str(uuid.uuid4())
        with self._lock:
            self._deadline[tx] = time.monotonic() + TRANSACTION_TTL
        return tx

    def known(self, tx):
        with self._lock:
            deadline = self._deadline.get(tx)
            if deadline is None or deadline < time.monotonic():
                self._deadline.pop(tx, None)
                return False
            return True

    def end(self, tx):
        with self._lock:
            self._deadline.pop(tx, None)


class SharedTransactions:
    """The transactions of every node of one cluster, in one JSON file ({id: [deadline, wall clock; the
    address of the node that began it]})."""

    def __init__(self, path, me):
        self._path, self._me = path, me
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def _change(self, change):
        with self._lock, open(self._path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                table = json.loads(self._path.read_text() or "{}")
            except (FileNotFoundError, ValueError):
                table = {}
            now = time.time()
            table = {tx: e for tx, e in table.items() if isinstance(e, list) and e[0] >= now}
            result = change(table, now)
            tmp = self._path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(table))
            tmp.replace(self._path)
            return result

    def begin(self):
        tx = str(uuid.uuid4())
        self._change(lambda table, now: table.__setitem__(tx, [now + TRANSACTION_TTL, self._me]))
        return tx

    def known(self, tx):
        owner = self._change(lambda table, now: table[tx][1] if tx in table else None)
        if owner is None or owner == self._me:
            return owner is not None
        try:  # routed to the node that holds it: that node must still run
            socket.create_connection((owner, GRPC_PORT), timeout=1).close()
            return True
        except OSError:
            self.end(tx)
            return False

    def end(self, tx):
        self._change(lambda table, now: table.pop(tx, None))


TRANSACTIONS = Transactions()


def execute(query, variables):
    """Runs one GraphQL request; returns the response body as a dict."""
    head, _, body = query.partition("{")
    is_mutation = head.strip().startswith("mutation")
    fields = set(re.findall(r"[A-Za-z_]\w*", body))
    data = {}
    if "__typename" in fields:
        data["__typename"] = "Mutation" if is_mutation else "Query"
    directive = DIRECTIVE.search(head)
    if not directive:
        return {"data": data}
    args = directive.group(1) or ""
    tx = None
    id_match = ID_ARG.search(args)
    if id_match:
        tx = id_match.group(1) if id_match.group(1) is not None else variables.get(id_match.group(2))
    commit_match = COMMIT_ARG.search(args)
    commit = False
    if commit_match:
        value = commit_match.group(1)
        commit = variables.get(value[1:]) is True if value.startswith("$") else value == "true"
    if tx is None:
        tx = TRANSACTIONS.begin()
    elif not TRANSACTIONS.known(tx):
        return {"data": None, "errors": [{"message": f"Transaction not found: {tx}",
                                          "extensions": {"exception": "TransactionNotFoundException"}}]}
    if is_mutation and "abort" in fields:
        TRANSACTIONS.end(tx)
        data["abort"] = True
        return {"data": data}
    if commit:
        TRANSACTIONS.end(tx)
        return {"data": data}
    return {"data": data, "extensions": {"transaction": {"id": tx}}}


class Handler(BaseHTTPRequestHandler):
    server_version = "graphql-standin"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, body):
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Rig-Backend", self.server.name)
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path != self.server.path:
            return self.reply(404, {"errors": [{"message": "not found"}]})
        params = parse_qs(url.query)
        if "query" not in params:
            return self.reply(400, {"errors": [{"message": "missing query"}]})
        variables = json.loads(params.get("variables", ["{}"])[0] or "{}")
        self.reply(200, execute(params["query"][0], variables))

    def do_POST(self):
        if urlsplit(self.path).path != self.server.path:
            return self.reply(404, {"errors": [{"message": "not found"}]})
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
        kind = self.headers.get("Content-Type", "").split(";")[0].strip()
        if kind == "application/graphql":
            query, variables = raw, {}
        elif kind == "application/json":
            try:
                request = json.loads(raw)
            except ValueError as e:
                return self.reply(400, {"errors": [{"message": f"invalid JSON: {e}"}]})
            query, variables = request.get("query", ""), request.get("variables") or {}
        else:
            return self.reply(415, {"errors": [{"message": f"unsupported content type {kind!r}"}]})
        self.reply(200, execute(query, variables))


MEMBERSHIP = ("scalar.db.cluster.membership.type", "scalar.db.cluster.membership.kubernetes.endpoint.namespace_name",
              "scalar.db.cluster.membership.kubernetes.endpoint.name")
LICENSE = ("scalar.db.cluster.node.licensing.license_key", "scalar.db.cluster.node.licensing.license_check_cert_pem")
ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
GRPC_PORT = 60053


def read_properties(path, environ, problems):
    """key -> value of a Java properties file (the forms the chart's text uses), env references resolved."""
    props = {}
    lines = Path(path).read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        while line.endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line[:-1] + lines[i].strip()
        i += 1
        if not line or line[0] in "#!":
            continue
        m = re.match(r"([^=:\s]+)\s*[=:\s]?\s*(.*)", line)
        key, value = m.group(1), m.group(2)

        def resolve(m, key=key):
            if m.group(1) in environ:
                return environ[m.group(1)]
            if m.group(2) is not None:
                return m.group(2)
            problems.append(f"{key}: the environment variable {m.group(1)} is not set")
            return ""
        props[key] = ENV_REF.sub(resolve, value)
    return props


def cluster_node(properties, address, name, store_dir):
    """Checks the node's properties as a node starting would; None (and a log line each) if it cannot start."""
    problems = []
    try:
        props = read_properties(properties, os.environ, problems)
    except OSError as e:
        print(f"ERROR node {name}: cannot read the node properties {properties}: {e}", flush=True)
        return None
    for key in MEMBERSHIP:
        if not props.get(key):
            problems.append(f"{key} is not set (required for membership on Kubernetes)")
    if props.get(MEMBERSHIP[0]) and props[MEMBERSHIP[0]] != "KUBERNETES":
        problems.append(f"{MEMBERSHIP[0]}={props[MEMBERSHIP[0]]}: only KUBERNETES is supported")
    # A node checks its license before it serves: the key, and the certificate it checks the key with.
    if not props.get(LICENSE[0], "").strip():
        problems.append(f"{LICENSE[0]} is not set (a node needs a license)")
    cert = props.get(LICENSE[1], "")
    if not cert.strip():
        problems.append(f"{LICENSE[1]} is not set (the license is checked with it)")
    elif "-----BEGIN CERTIFICATE-----" not in cert or "-----END CERTIFICATE-----" not in cert:
        problems.append(f"{LICENSE[1]}: not a PEM certificate")
    graphql = props.get("scalar.db.graphql.enabled", "").strip().lower() == "true"
    port = props.get("scalar.db.graphql.port", "8080").strip()
    if not port.isdigit():
        problems.append(f"scalar.db.graphql.port={port}: not a port number")
    path = props.get("scalar.db.graphql.path", "/graphql").strip() or "/graphql"
    for p in problems:
        print(f"ERROR node {name}: {p}", flush=True)
    if problems:
        print(f"ERROR node {name}: refusing to start ({len(problems)} problem(s) in {properties})", flush=True)
        return None
    members = f"{props[MEMBERSHIP[1]]}_{props[MEMBERSHIP[2]]}"
    if not graphql:
        print(f"INFO node {name}: scalar.db.graphql.enabled is not true: no GraphQL server", flush=True)
    store = Path(store_dir) / f"{re.sub(r'[^A-Za-z0-9_.-]', '-', members)}.json"
    return int(port) if graphql else None, path, store, members


def listen_grpc(address):
    """The gRPC port, accepting and closing: what the startup probe sees of a node that serves."""
    sock = socket.create_server((address, GRPC_PORT))

    def accept():
        while True:
            conn, _ = sock.accept()
            conn.close()
    threading.Thread(target=accept, daemon=True).start()


class NodeServer(ThreadingHTTPServer):
    """A node's GraphQL server, whose log shows what a node logs: the health checker hanging up is not news."""

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


def main():
    global TRANSACTIONS
    if sys.argv[1:2] == ["--cluster"]:
        properties, address, name, store_dir = sys.argv[2:6]
        node = cluster_node(properties, address, name, store_dir)
        if node is None:
            sys.exit(1)
        port, path, store, members = node
        listen_grpc(address)
        if port is None:
            print(f"INFO node {name}: member of {members}; gRPC on {address}:{GRPC_PORT}", flush=True)
            threading.Event().wait()  # a node serving gRPC only, until it is stopped
        TRANSACTIONS = SharedTransactions(store, address)
        server = NodeServer((address, port), Handler)
        print(f"INFO node {name}: member of {members}; GraphQL on http://{address}:{port}{path}, "
              f"gRPC on {address}:{GRPC_PORT}", flush=True)
    else:
        port, name, path = int(sys.argv[1]), sys.argv[2], "/graphql"
        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.name = name
    server.path = path
    server.serve_forever()


if __name__ == "__main__":
    main()
