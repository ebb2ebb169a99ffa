"""A stand-in for one ScalarDB GraphQL server process (the real image is private).

It honours the HTTP contract the plugin relies on: `{__typename}` over GET
and POST (application/json and application/graphql), the operation directive
`@transaction(id, commit)` that starts, continues and commits a transaction,
`mutation @transaction(id: ...) { abort }`, a 60 s expiry, and HTTP 200 with
an `errors[]` entry saying the transaction is not found when a request
carries an id this process never started. Each process keeps its
transactions in its own memory, which is exactly why an ALB in front of
several of them must be sticky.

usage: graphql_standin.py PORT NAME
"""

import json
import re
import sys
import threading
import time
import uuid
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
        if url.path != "/graphql":
            return self.reply(404, {"errors": [{"message": "not found"}]})
        params = parse_qs(url.query)
        if "query" not in params:
            return self.reply(400, {"errors": [{"message": "missing query"}]})
        variables = json.loads(params.get("variables", ["{}"])[0] or "{}")
        self.reply(200, execute(params["query"][0], variables))

    def do_POST(self):
        if urlsplit(self.path).path != "/graphql":
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


def main():
    port, name = int(sys.argv[1]), sys.argv[2]
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.name = name
    server.serve_forever()


if __name__ == "__main__":
    main()
