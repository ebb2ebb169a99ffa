# The in-cluster probe of kubectl-scalardb-graphql. It runs in a short-lived
# Pod and does what the plugin does from a bastion: GET {__typename} through
# the ALB, keep the AWSALB cookie, then start a transaction, continue it N
# times and commit it, each request carrying the cookie. With --routing
# (ScalarDB Cluster), one more transaction without any cookie: the nodes
# route it to the node that holds it. It stops at the first answer that is
# not right and prints one JSON line per attempt (the last line is the
# result); the plugin reads the log and judges it. Only the URL, the
# parameters and what came back are printed: no secret is known here.
import argparse
import json
import time
import urllib.error
import urllib.request

parser = argparse.ArgumentParser()
parser.add_argument("--url", required=True)
parser.add_argument("--continuations", type=int, default=8)
parser.add_argument("--retry-for", type=float, default=0.0)
parser.add_argument("--request-timeout", type=float, default=10.0)
parser.add_argument("--routing", action="store_true")
args = parser.parse_args()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_):
        return None


opener = urllib.request.build_opener(NoRedirect)
TYPENAME = {"data": {"__typename": "Query"}}


def exchange(step, url, query=None, cookie=None):
    """One request: (what is reported, the AWSALB cookie pair or None, the parsed body or None)."""
    headers = {"User-Agent": "kubectl-scalardb-graphql-probe"}
    data = None
    if query is not None:
        data = json.dumps({"query": query}).encode()
        headers["Content-Type"] = "application/json"
    if cookie:
        headers["Cookie"] = cookie
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    try:
        try:
            response = opener.open(request, timeout=args.request_timeout)
        except urllib.error.HTTPError as e:
            response = e
        status, body, set_cookies = response.status, response.read(), response.headers.get_all("Set-Cookie") or []
    except Exception as e:  # noqa: BLE001 - every failure to get an answer is reported as such
        return {"step": step, "error": f"{type(e).__name__}: {e}"}, None, None
    pairs = [c.split(";")[0].strip() for c in set_cookies]
    alb = next((p for p in pairs if p.split("=", 1)[0] == "AWSALB"), None)
    text = body.decode("utf-8", "replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    return {"step": step, "status": status, "body": text[:2000], "cookie": alb is not None}, alb, parsed


def good(seen, parsed):
    return seen.get("status") == 200 and isinstance(parsed, dict) and not parsed.get("errors")


def transaction_id(parsed):
    try:
        tx = parsed["extensions"]["transaction"]["id"]
    except (TypeError, KeyError):
        return None
    return tx if isinstance(tx, str) else None


def transaction(cookie):
    """Start, the continuations and the commit, each with `cookie` (None: none); and whether all were right."""
    seen, _, parsed = exchange("start", args.url, "query @transaction { __typename }", cookie)
    steps = [seen]
    tx = transaction_id(parsed)
    if not good(seen, parsed) or tx is None:
        return steps, False
    for i in range(1, args.continuations + 1):
        seen, _, parsed = exchange(f"continue-{i}", args.url, f'query @transaction(id: "{tx}") {{ __typename }}', cookie)
        steps.append(seen)
        if not good(seen, parsed):
            return steps, False
    seen, _, parsed = exchange("commit", args.url, f'query @transaction(id: "{tx}", commit: true) {{ __typename }}', cookie)
    steps.append(seen)
    return steps, good(seen, parsed)


def attempt():
    """The exchanges of one attempt, those of the routing transaction (None: not run), and whether all were right."""
    seen, cookie, parsed = exchange("typename", args.url + "?query=%7B__typename%7D")
    steps = [seen]
    if seen.get("status") != 200 or parsed != TYPENAME or cookie is None:
        return steps, None, False
    more, done = transaction(cookie)
    steps += more
    if not done or not args.routing:
        return steps, None, done
    routing, done = transaction(None)
    return steps, routing, done


deadline = time.monotonic() + args.retry_for
number = 0
while True:
    number += 1
    steps, routing, done = attempt()
    line = {"probe": "scalardb-graphql", "url": args.url, "continuations": args.continuations,
            "attempt": number, "exchanges": steps}
    if routing is not None:
        line["routing"] = routing
    print(json.dumps(line), flush=True)
    if done or time.monotonic() + 2 > deadline:
        break
    time.sleep(2)
