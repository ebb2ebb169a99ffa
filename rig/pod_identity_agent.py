"""A stand-in for the EKS Pod Identity Agent: what the `eks-pod-identity-agent` add-on's
DaemonSet runs on every node, here one process on a loopback port of the rig's.

On EKS the agent listens on the node's link-local address 169.254.170.23
(port 80); the pods of a ServiceAccount with a Pod Identity association
are given `AWS_CONTAINER_CREDENTIALS_FULL_URI=http://169.254.170.23/v1/credentials`
and a projected token (audience `pods.eks.amazonaws.com`) whose path is
`AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`; the SDKs send that token in the
`Authorization` header of a GET and read the container-credentials JSON.
On the rig the agent is bound to 127.0.0.1:PORT (RIG_POD_IDENTITY_AGENT_URL
in .rig/env), which the rig's webhook puts in that variable instead; nothing
here dials or binds anything but loopback.

As the agent does (read from aws/eks-pod-identity-agent):

- `/v1/credentials` only (any other path: Go's `404 page not found`);
- the request's target host must be the agent's own address (here
  127.0.0.1, on EKS 169.254.170.23 or fd00:ec2::23), else 403 `Access
  Denied. Called agent through invalid address, …`;
- the token must be there (400 `Service account token cannot be empty`),
  parse as a JWT (400 `Service account token cannot be parsed: token is
  malformed: …`) and pass the basic claim checks (400 `Service account
  token failed basic claim validations: token has invalid claims: token is
  expired`), before the agent calls EKS Auth's AssumeRoleForPodIdentity for
  its cluster (signed with the node's credentials: here the rig's
  administrator keys; the SDK's standard retries, 3 attempts);
- success: 200 `{"AccessKeyId", "SecretAccessKey", "Token", "AccountId",
  "Expiration"}` (RFC 3339); an EKS Auth error: EKS Auth's HTTP status and
  the text `[<request id>]: (<code>): <message>, fault: client` (Go's
  `http.Error`: text/plain); EKS Auth unreachable: 500.

It serves only while the cluster's `eks-pod-identity-agent` add-on is ACTIVE
(or UPDATING, or was deleted with `preserve`), as read from the state file
the AWS server writes (eks_pod_identity.STATE_FILE), or while the cluster has
EKS Auto Mode on (eks_auto_mode.STATE_FILE): Auto Mode's nodes run the agent
themselves, without the add-on. Otherwise the port is
held bound but not listening: a connection is refused, as a pod on a node
without the agent finds nothing at its address. Simpler than the agent: no
credential cache (every request calls EKS Auth), no rate limiting, no
health or metrics ports.

usage: pod_identity_agent.py PORT CLUSTER_NAME  (RIG_STATE, AWS_ENDPOINT_URL, AWS_REGION and the rig's keys set)
"""

import base64
import datetime
import json
import os
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import botocore.config
import botocore.exceptions
from botocore.exceptions import ClientError

import eks_auto_mode
import eks_pod_identity

HOST = "127.0.0.1"
PATH = "/v1/credentials"


def b64url_strict(text):
    """Base64url without padding, as the JWT library decodes a segment; ValueError otherwise."""
    if "=" in text:
        raise ValueError(f"illegal base64 data at input byte {text.index('=')}")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        bad = next((i for i, c in enumerate(text) if not (c.isalnum() or c in "-_")), len(text))
        raise ValueError(f"illegal base64 data at input byte {bad}") from None


def token_problem(token):
    """The agent's own check of a token (parseable, basic claims), worded as it words it, or None."""
    if not token:
        return "Service account token cannot be empty"
    segments = token.split(".")
    if len(segments) != 3:
        return ("Service account token cannot be parsed: token is malformed: token contained an invalid number of "
                "segments")
    for what, segment in (("header", segments[0]), ("claim", segments[1])):
        try:
            decoded = b64url_strict(segment)
        except ValueError as e:
            return f"Service account token cannot be parsed: token is malformed: could not base64 decode {what}: {e}"
        try:
            value = json.loads(decoded)
            if not isinstance(value, dict):
                raise ValueError("not an object")
        except ValueError as e:
            return f"Service account token cannot be parsed: token is malformed: could not JSON decode {what}: {e}"
        if what == "claim":
            claims = value
    now = time.time()
    for name, fails, why in (("exp", lambda v: now >= v, "token is expired"),
                             ("nbf", lambda v: now < v, "token is not valid yet"),
                             ("iat", lambda v: now < v, "token used before issued")):
        value = claims.get(name)
        if value is not None and (not isinstance(value, (int, float)) or fails(value)):
            return f"Service account token failed basic claim validations: token has invalid claims: {why}"
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = ""
    sys_version = ""

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        if not self.server.agent.serving:  # the add-on went while this connection was open
            self.close_connection = True
            return
        if urllib.parse.urlsplit(self.path).path != PATH:
            return self.text(404, "404 page not found")
        try:  # the target host without its port (and an IPv6 address without its brackets)
            hostname = urllib.parse.urlsplit("//" + self.headers.get("Host", "")).hostname or ""
        except ValueError:
            hostname = self.headers.get("Host", "")
        if hostname != HOST:
            return self.text(403, f"Access Denied. Called agent through invalid address, please use either [{HOST}] "
                                  f"address not {hostname}")
        token = self.headers.get("Authorization", "")
        problem = token_problem(token)
        if problem:
            print(f"agent: refused: {problem}", flush=True)
            return self.text(400, problem)
        status, body = self.server.agent.credentials(token)
        if status == 200:
            return self.reply(200, json.dumps(body).encode(), "application/json")
        return self.text(status, body)

    do_POST = do_PUT = do_DELETE = do_HEAD = do_GET

    def text(self, status, message):
        self.reply(status, (message + "\n").encode(), "text/plain; charset=utf-8", nosniff=True)

    def reply(self, status, body, content_type, nosniff=False):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if nosniff:
            self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Date", self.date_time_string())
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_response(self, code, message=None):  # no Server header, as Go's server sends none
        self.log_request(code)
        self.send_response_only(code, message)


class Agent:
    def __init__(self, port, cluster):
        self.port, self.cluster = port, cluster
        self.state_dir = os.environ["RIG_STATE"]
        self.endpoint = os.environ["AWS_ENDPOINT_URL"]
        self.eks_auth = boto3.client(
            "eks-auth", endpoint_url=self.endpoint, region_name=os.environ.get("AWS_REGION", "us-east-1"),
            # The agent's EKS Auth client: 3 attempts, a 0.5 s dial timeout and a 1 s request timeout
            # (2 s here: the rig's AWS server shares a busy two-core machine).
            config=botocore.config.Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=0.5,
                                          read_timeout=2, user_agent_extra="eks-pod-identity-agent"))
        self.serving = False
        self.server = None
        self.reserve = self.bind_reserve()

    def bind_reserve(self):
        """The port, bound and not listening: a connection is refused, and nothing else takes the port."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((HOST, self.port))
        return s

    def set_serving(self, serving):
        if serving == self.serving:
            return
        if serving:
            self.reserve.close()
            self.server = ThreadingHTTPServer((HOST, self.port), Handler)
            self.server.daemon_threads = True
            self.server.agent = self
            threading.Thread(target=self.server.serve_forever, daemon=True).start()
            self.serving = True
            print(f"agent: the {eks_pod_identity.AGENT_ADDON} add-on is active or EKS Auto Mode is on: serving "
                  f"http://{HOST}:{self.port}{PATH}", flush=True)
        else:
            self.serving = False
            self.server.shutdown()
            self.server.server_close()
            self.server = None
            self.reserve = self.bind_reserve()
            print(f"agent: no active {eks_pod_identity.AGENT_ADDON} add-on and no EKS Auto Mode: not serving",
                  flush=True)

    def credentials(self, token):
        """(200, the container-credentials JSON) or (status, the agent's error text)."""
        try:
            got = self.eks_auth.assume_role_for_pod_identity(clusterName=self.cluster, token=token)
        except ClientError as e:
            err, meta = e.response.get("Error", {}), e.response.get("ResponseMetadata", {})
            status = meta.get("HTTPStatusCode") or 500
            fault = "server" if status >= 500 else "client"
            print(f"agent: EKS Auth refused: {err.get('Code')}: {err.get('Message')}", flush=True)
            return status, f"[{meta.get('RequestId', '')}]: ({err.get('Code')}): {err.get('Message')}, fault: {fault}"
        except Exception as e:  # EKS Auth unreachable (the AWS server down or paused)
            print(f"agent: EKS Auth unreachable: {e!r}", flush=True)
            url = f"{self.endpoint}/clusters/{self.cluster}/assume-role-for-pod-identity"
            where = urllib.parse.urlsplit(self.endpoint).netloc
            if isinstance(e, botocore.exceptions.ReadTimeoutError):
                cause = f'Post "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting headers)'
            elif isinstance(e, botocore.exceptions.ConnectTimeoutError):
                cause = f'Post "{url}": dial tcp {where}: i/o timeout'
            else:
                cause = f'Post "{url}": dial tcp {where}: connect: connection refused'
            return 500, (f"error getting credentials to cache: unable to fetch credentials from EKS Auth: operation "
                         f"error EKS Auth: AssumeRoleForPodIdentity, exceeded maximum number of attempts, 3, https "
                         f"response error StatusCode: 0, RequestID: , request send failed, {cause}")
        creds = got["credentials"]
        expires = creds["expiration"]
        if isinstance(expires, datetime.datetime):
            expires = expires.astimezone(datetime.timezone.utc)
        account = got["assumedRoleUser"]["arn"].split(":")[4]
        print(f"agent: credentials for {got['subject']['namespace']}/{got['subject']['serviceAccount']} "
              f"({got['assumedRoleUser']['arn']})", flush=True)
        return 200, {"AccessKeyId": creds["accessKeyId"], "SecretAccessKey": creds["secretAccessKey"],
                     "Token": creds["sessionToken"], "AccountId": account,
                     "Expiration": eks_pod_identity.rfc3339(expires.timestamp(), nanos=True)}

    def run(self):
        while True:
            state = eks_pod_identity.read_state(self.state_dir)
            self.set_serving(eks_pod_identity.agent_serving(state, self.cluster)
                             or eks_auto_mode.enabled(self.state_dir, self.cluster))
            time.sleep(0.25)


def main():
    port, cluster = int(sys.argv[1]), sys.argv[2]
    agent = Agent(port, cluster)
    print(f"agent: for cluster {cluster} on {HOST}:{port} (pid {os.getpid()})", flush=True)
    agent.run()


if __name__ == "__main__":
    main()
