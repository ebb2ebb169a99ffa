"""The AWS Load Balancer Controller's admission webhooks, as the rig serves them.

The stand-in chart registers the controller's webhooks (names, paths, rules,
selectors and failure policies as upstream); rig/cluster_egress.py answers the
API server's calls to them with `review` below, which applies the controller's
own rules, read from its source (v3.5.0), where they are cheap to reproduce:

- mpod: in a namespace labelled for it, a pod selected by the Service of an
  `ip` TargetGroupBinding in its namespace gets the readiness gate
  `target-health.elbv2.k8s.aws/<binding name>` (legacy gates dropped);
- mservice: a new Service of type LoadBalancer without a loadBalancerClass gets
  `service.k8s.aws/nlb`;
- mtargetgroupbinding: on create, targetGroupARN from targetGroupName, and
  targetType, ipAddressType, vpcID and targetGroupProtocol from the target
  group in ELBv2 (moto) when not given;
- vtargetgroupbinding: targetType required, one binding per target group,
  no nodeSelector for `ip`, IP address type and VPC as the target group's,
  and the immutable fields on update;
- vingress: an Ingress of another controller's class is left alone; else the
  IngressClass it names must exist (and only one may be the default), and its
  `conditions.<service>` annotations must be JSON;
- vingressclassparams: inboundCIDRs are CIDRs with no host bits, subnets
  name either ids or tags, without duplicates.

The opt-in pod webhooks (QUIC server ids, ALB target control agents) admit
unchanged: no rig workload opts in.
"""

import base64
import ipaddress
import json

import boto3
from kubernetes import client
from kubernetes.client.rest import ApiException

ALB_CONTROLLER = "ingress.k8s.aws/alb"
INGRESS_CLASS = "alb"  # the chart's ingressClass, the controller's --ingress-class
INGRESS_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
READINESS_GATE_PREFIX = "target-health.elbv2.k8s.aws"
LEGACY_READINESS_GATE_PREFIX = "target-health.alb.ingress.k8s.aws"
NLB_CLASS = "service.k8s.aws/nlb"
TGB = ("elbv2.k8s.aws", "v1beta1", "targetgroupbindings")


class Denied(Exception):
    """The webhook refuses the request; the message reaches the user."""


class Webhooks:
    def __init__(self):
        self.core = client.CoreV1Api()
        self.net = client.NetworkingV1Api()
        self.custom = client.CustomObjectsApi()
        self.elb = boto3.client("elbv2")
        self.paths = {
            "/mutate-v1-pod": ("mpod", self.mutate_pod),
            "/mutate-v1-pod-server-id": ("quicid", None),
            "/mutate-alb-target-control-namespace-v1-pod": ("alb-target-control.namespace", None),
            "/mutate-alb-target-control-object-v1-pod": ("alb-target-control.object", None),
            "/mutate-v1-service": ("mservice", self.mutate_service),
            "/mutate-elbv2-k8s-aws-v1beta1-targetgroupbinding": ("mtargetgroupbinding", self.mutate_binding),
            "/validate-elbv2-k8s-aws-v1beta1-targetgroupbinding": ("vtargetgroupbinding", self.validate_binding),
            "/validate-networking-v1-ingress": ("vingress", self.validate_ingress),
            "/validate-elbv2-k8s-aws-v1beta1-ingressclassparams": ("vingressclassparams", self.validate_params),
        }

    def review(self, path, review):
        """An AdmissionReview in, the AdmissionReview answering it out, with a one-line summary."""
        request = review["request"]
        name, handler = self.paths.get(path.split("?")[0], (None, None))
        response = {"uid": request["uid"], "allowed": True}
        verdict = "allowed"
        if name is None:
            response.update(allowed=False, status={"code": 404, "message": f"no webhook at {path}"})
            verdict = "no such webhook"
        elif handler is not None:
            try:
                ops = handler(request) or []
                if ops:
                    response.update(patchType="JSONPatch",
                                    patch=base64.b64encode(json.dumps(ops).encode()).decode())
                    verdict = f"allowed with {json.dumps(ops)}"
            except Denied as e:
                code = 400 if name.startswith("m") else 403
                response.update(allowed=False, status={"code": code, "message": str(e)})
                verdict = f"denied: {e}"
        what = f"{request['operation']} {request['resource']['resource']} " \
               f"{request.get('namespace', '')}/{request.get('name') or request['object']['metadata'].get('generateName', '')}"
        answer = {"apiVersion": review["apiVersion"], "kind": "AdmissionReview", "response": response}
        return answer, f"{name or path} {what}: {verdict}"

    # --- pods ------------------------------------------------------------------------
    def mutate_pod(self, request):
        pod, namespace = request["object"], request["namespace"]
        labels = pod["metadata"].get("labels") or {}
        wanted = []
        bindings = self.custom.list_namespaced_custom_object(*TGB[:2], namespace, TGB[2])["items"]
        for tgb in bindings:
            if tgb["spec"].get("targetType") != "ip":
                continue
            try:
                svc = self.core.read_namespaced_service(tgb["spec"]["serviceRef"]["name"], namespace)
            except ApiException as e:
                if e.status == 404:
                    continue
                raise
            selector = svc.spec.selector or {}
            if selector and all(labels.get(k) == v for k, v in selector.items()):
                wanted.append(f"{READINESS_GATE_PREFIX}/{tgb['metadata']['name']}")
        if not wanted:
            return []
        gates = [g for g in pod["spec"].get("readinessGates") or []
                 if not g["conditionType"].startswith(LEGACY_READINESS_GATE_PREFIX)]
        have = {g["conditionType"] for g in gates}
        gates += [{"conditionType": c} for c in wanted if c not in have]
        return [{"op": "add", "path": "/spec/readinessGates", "value": gates}]

    # --- services --------------------------------------------------------------------
    def mutate_service(self, request):
        spec = request["object"]["spec"]
        if request["operation"] != "CREATE" or spec.get("type") != "LoadBalancer" or spec.get("loadBalancerClass"):
            return []
        return [{"op": "add", "path": "/spec/loadBalancerClass", "value": NLB_CLASS}]

    # --- target group bindings -------------------------------------------------------
    def target_group(self, spec):
        if spec.get("targetGroupARN"):
            groups = self.elb.describe_target_groups(TargetGroupArns=[spec["targetGroupARN"]])["TargetGroups"]
        else:
            groups = self.elb.describe_target_groups(Names=[spec["targetGroupName"]])["TargetGroups"]
        if len(groups) != 1:
            raise Denied(f"expecting a single targetGroup but got {len(groups)}")
        return groups[0]

    def aws(self, what, call):
        try:
            return call()
        except Denied:
            raise
        except Exception as e:  # botocore's errors: the webhook answers with them
            raise Denied(f"{what}: {e}")

    def mutate_binding(self, request):
        if request["operation"] != "CREATE":
            return []
        spec = request["object"]["spec"]
        if not spec.get("targetGroupARN") and not spec.get("targetGroupName"):
            raise Denied("must provide either TargetGroupARN or TargetGroupName")
        missing = [k for k in ("targetGroupARN", "targetType", "ipAddressType", "vpcID", "targetGroupProtocol")
                   if not spec.get(k)]
        if not missing:
            return []
        tg = self.aws("unable to get target group", lambda: self.target_group(spec))
        defaults = {
            "targetGroupARN": tg["TargetGroupArn"],
            "targetType": {"instance": "instance", "ip": "ip"}.get(tg.get("TargetType")),
            "ipAddressType": {"ipv6": "ipv6", "ipv4": "ipv4", "": "ipv4"}.get(tg.get("IpAddressType", "")),
            "vpcID": tg.get("VpcId", ""),
            "targetGroupProtocol": tg.get("Protocol"),
        }
        if "targetType" in missing and defaults["targetType"] is None:
            raise Denied(f"couldn't determine TargetType: unsupported TargetType: {tg.get('TargetType')}")
        if "ipAddressType" in missing and defaults["ipAddressType"] is None:
            raise Denied(f"unable to get target group IP address type: "
                         f"unsupported IPAddressType: {tg.get('IpAddressType')}")
        return [{"op": "add", "path": f"/spec/{k}", "value": defaults[k]} for k in missing if defaults[k]]

    def validate_binding(self, request):
        spec = request["object"]["spec"]
        if not spec.get("targetType"):
            raise Denied("TargetGroupBinding must specify these fields: spec.targetType")
        if request["operation"] == "UPDATE":
            old = request["oldObject"]["spec"]
            changed = [f"spec.{k}" for k in ("targetGroupARN", "targetType") if spec.get(k) != old.get(k)]
            new_ip, old_ip = spec.get("ipAddressType"), old.get("ipAddressType")
            if (old_ip is None and new_ip not in (None, "ipv4")) or (new_ip is None and old_ip is not None) \
                    or (new_ip and old_ip and new_ip != old_ip):
                changed.append("spec.ipAddressType")
            if spec.get("vpcID", "") != old.get("vpcID", ""):
                changed.append("spec.vpcID")
            if changed:
                raise Denied(f"TargetGroupBinding update may not change these fields: {','.join(changed)}")
        if spec["targetType"] == "ip" and spec.get("nodeSelector") is not None:
            raise Denied("TargetGroupBinding cannot set NodeSelector when TargetType is ip")
        if request["operation"] != "CREATE":
            return []
        arn = spec.get("targetGroupARN", "")
        if not spec.get("multiClusterTargetGroup"):
            for other in self.custom.list_cluster_custom_object(*TGB)["items"]:
                if other["spec"].get("targetGroupARN") == arn:
                    raise Denied(f"TargetGroup {arn} is already bound to TargetGroupBinding "
                                 f"{other['metadata']['namespace']}/{other['metadata']['name']}")
        tg = self.aws("unable to get target group IP address type", lambda: self.target_group(spec))
        tg_ip = "ipv6" if tg.get("IpAddressType") == "ipv6" else "ipv4"
        if spec.get("ipAddressType", "ipv4") != tg_ip:
            raise Denied(f"invalid IP address type {tg_ip} for TargetGroup {arn}")
        if spec.get("vpcID") and spec["vpcID"] != tg.get("VpcId"):
            raise Denied(f"invalid vpc Id {spec['vpcID']} doesnt match VpcId from TargetGroup {arn}")
        return []

    # --- ingresses -------------------------------------------------------------------
    def load_class(self, class_name):
        """The IngressClass an Ingress names (or the default one); None when it names none."""
        if class_name is None:
            defaults = [c.metadata.name for c in self.net.list_ingress_class().items
                        if (c.metadata.annotations or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"]
            if len(defaults) > 1:
                raise Denied(f"invalid ingress class: multiple default IngressClasses found: {', '.join(defaults)}")
            if not defaults:
                return None
            class_name = defaults[0]
        try:
            return self.net.read_ingress_class(class_name)
        except ApiException as e:
            if e.status == 404:
                raise Denied(f'invalid ingress class: ingressclasses.networking.k8s.io "{class_name}" not found')
            raise

    def validate_ingress(self, request):
        ing = request["object"]
        annotations = ing["metadata"].get("annotations") or {}
        class_name = ing["spec"].get("ingressClassName")
        if INGRESS_CLASS_ANNOTATION in annotations:
            if annotations[INGRESS_CLASS_ANNOTATION] != INGRESS_CLASS:
                return []
            old = (request.get("oldObject") or {}).get("spec", {}).get("ingressClassName")
            if class_name is not None and (request["operation"] == "CREATE" or class_name != old):
                self.load_class(class_name)
        else:
            # Without the annotation, the class decides; an Ingress with no class is not
            # this controller's (it runs with --ingress-class).
            ingress_class = self.load_class(class_name)
            if ingress_class is None or ingress_class.spec.controller != ALB_CONTROLLER:
                return []
        for rule in ing["spec"].get("rules") or []:
            for path in (rule.get("http") or {}).get("paths") or []:
                service = (path.get("backend", {}).get("service") or {}).get("name")
                key = f"alb.ingress.kubernetes.io/conditions.{service}"
                if service and key in annotations:
                    try:
                        json.loads(annotations[key])
                    except ValueError as e:
                        raise Denied(f"failed to parse json annotation, {key}: {annotations[key]}: {e}")
        return []

    # --- ingress class params ----------------------------------------------------------
    def validate_params(self, request):
        spec = request["object"].get("spec") or {}
        errors = []
        for i, cidr in enumerate(spec.get("inboundCIDRs") or []):
            try:
                ipaddress.ip_network(cidr, strict=True)
            except ValueError:
                try:
                    net = ipaddress.ip_network(cidr, strict=False)
                    errors.append(f'spec.inboundCIDRs[{i}]: Invalid value: "{cidr}": Network contains bits '
                                  f'outside prefix (did you mean "{net}")')
                except ValueError:
                    errors.append(f'spec.inboundCIDRs[{i}]: Invalid value: "{cidr}": Could not be parsed as a CIDR')
        subnets = spec.get("subnets")
        if subnets is not None:
            ids, tags = subnets.get("ids"), subnets.get("tags")
            if ids is None and tags is None:
                errors.append("spec.subnets: Required value: must have either `ids` or `tags`")
            elif ids is not None and tags is not None:
                errors.append("spec.subnets.tags: Forbidden: may not have both `ids` and `tags` set")
            elif ids is not None:
                errors += [f'spec.subnets.ids[{i}]: Duplicate value: "{s}"' for i, s in enumerate(ids) if s in ids[:i]]
            else:
                if not tags:
                    errors.append("spec.subnets.tags: Required value: must have at least one tag key")
                for key, values in tags.items():
                    errors += [f'spec.subnets.tags[{key}][{i}]: Duplicate value: "{v}"'
                               for i, v in enumerate(values) if v in values[:i]]
        if errors:
            raise Denied(errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]")
        return []
