"""Where the rig's pod addresses answer, for the ALB's health checks.

There is no pod network on the rig. A pod IP stands for a process on loopback:

- a pod the pod runner runs (its IPs are in RUNNER_POD_NETWORK) binds its own
  loopback address, `127.A.B.<last octet of the pod IP>`, A.B from the rig's state
  directory (two rigs on one machine do not meet), on its real ports;
- a pod only kwok holds (the GraphQL chart's) has no process: while its containers are
  ready, its declared container ports are served by one of the data plane's GraphQL
  stand-ins (chosen by the pod IP), and nothing answers on any other port.

A test stands for a server that hangs while its container stays ready (its readiness
probe still passing) with the pod annotation UNRESPONSIVE: nothing answers its address.

The ALB simulator, which sees the pods, reports the map (`addresses`) to the AWS server;
the AWS server's health checker dials what it says (`dial`).
"""

import hashlib
import ipaddress

RUNNER_POD_NETWORK = ipaddress.ip_network("10.0.1.0/24")
UNRESPONSIVE = "rig.kubectl-scalardb-graphql/unresponsive"


def loopback(state, pod_ip):
    """The loopback address of a pod the pod runner runs."""
    digest = hashlib.sha256(str(state).encode()).digest()
    return f"127.{1 + digest[0] % 254}.{digest[1]}.{pod_ip.rsplit('.', 1)[1]}"


def runs_on_runner(pod_ip):
    try:
        return ipaddress.ip_address(pod_ip) in RUNNER_POD_NETWORK
    except ValueError:
        return False


def addresses(pods, containers_ready):
    """{pod IP: {"runner": bool, "serving": bool, "ports": [container ports]}} of running pods."""
    found = {}
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP")
        if not ip or (pod.get("status") or {}).get("phase") != "Running":
            continue
        ports = sorted({p["containerPort"] for c in pod["spec"].get("containers") or []
                        for p in c.get("ports") or [] if p.get("containerPort")})
        hung = (pod["metadata"].get("annotations") or {}).get(UNRESPONSIVE) == "true"
        found[ip] = {"runner": runs_on_runner(ip), "serving": containers_ready(pod) and not hung, "ports": ports,
                     "hung": hung}
    return found


def dial(network, state, standins, pod_ip, port):
    """(host, port) that stands for pod_ip:port, or None when nothing listens there."""
    entry = network.get(pod_ip)
    if entry is None:
        return None
    if entry.get("hung"):
        return None
    if entry["runner"]:
        return loopback(state, pod_ip), port
    if not entry["serving"] or port not in entry["ports"] or not standins:
        return None
    pick = int.from_bytes(hashlib.sha256(pod_ip.encode()).digest()[:4], "big") % len(standins)
    return standins[pick]
