"""The pod's Ready condition as the kubelet's status manager writes it, shared by the rig's two
kubelets: the pod runner (its pods) and the ALB simulator (kwok's pods, whose Ready kwok's
stages do not keep up to date once a readiness gate changes)."""


def condition(pod, kind):
    return next((c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") == kind), None)


def ready(pod, containers_ready, gates=None):
    """Ready: the containers ready and every readiness gate's condition True, else False with the
    kubelet's reason and message. `gates` overrides the gate conditions the pod object shows."""
    if not containers_ready:
        return {"status": "False", "reason": "ContainersNotReady"}
    statuses = {g["conditionType"]: (condition(pod, g["conditionType"]) or {}).get("status")
                for g in pod["spec"].get("readinessGates") or []}
    statuses.update(gates or {})
    missing = [f'corresponding condition of pod readiness gate "{g}" does not exist.' if s is None else
               f'the status of pod readiness gate "{g}" is not "True", but {s}' for g, s in statuses.items()
               if s != "True"]
    if missing:
        return {"status": "False", "reason": "ReadinessGatesNotReady", "message": ", ".join(missing)}
    return {"status": "True", "reason": None, "message": None}
