"""IAM policy evaluation for the rig's AWS account, as AWS evaluates identity and trust policies.

moto's own evaluation is too lenient to stand for AWS here: it checks EC2
and ELBv2 requests against resource `*` (so no statement with an ARN ever
matches), implements only `StringEquals` and ignores every condition of an
identity policy. This module evaluates what the rig's AWS server gives it:

- a request: an action (`elasticloadbalancing:CreateListener`), a
  resource ARN (`*` for actions that take none) and its context keys
  (`aws:RequestTag/K`, `aws:ResourceTag/K`, `aws:TagKeys`,
  `ec2:CreateAction`, `<issuer>:sub`, ...), single values or lists;
- policy documents (JSON text or dicts).

The result is "allow" (an Allow statement matches and no Deny does),
"deny" (an explicit Deny matches) or "implicit" (nothing allows it).

What is evaluated as AWS does: Effect; Action and NotAction (the service
prefix and action name case-insensitive, `*` and `?` wildcards); Resource and
NotResource (case-sensitive, wildcards, segment by segment as text);
Principal for trust policies (`Federated`, `AWS`, `Service`, `*`);
Condition operators `StringEquals`, `StringNotEquals`,
`StringEqualsIgnoreCase`, `StringNotEqualsIgnoreCase`, `StringLike`,
`StringNotLike`, `ArnEquals`, `ArnLike`, `ArnNotEquals`, `ArnNotLike`,
`Bool`, `Null`, `NumericEquals`/`NotEquals`/`LessThan`/`LessThanEquals`/
`GreaterThan`/`GreaterThanEquals`, each with `IfExists`, and the set
operators `ForAnyValue:` and `ForAllValues:`; condition keys are
case-insensitive, values of one key OR'ed, keys and operators AND'ed; a key
missing from the context fails its condition (except `Null`, `...IfExists`
and `ForAllValues:`). An operator this module does not know fails its
statement (stricter than AWS, never more lenient) and is printed.

Not evaluated (the rig has none of them): permissions boundaries, session
policies, service control policies, resource-based policies other than a
role's trust policy, and policy variables (`${aws:username}`).
"""

import json
import re
import sys


def documents(policies):
    """Policy documents as dicts, from JSON text or dicts."""
    for p in policies:
        yield json.loads(p) if isinstance(p, str) else p


def as_list(value):
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def wildcard(pattern, text, ignore_case):
    """`*` any run of characters, `?` any one; nothing else special."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text, re.IGNORECASE if ignore_case else 0) is not None


def action_matches(patterns, action):
    return any(wildcard(p, action, ignore_case=True) for p in as_list(patterns))


def resource_matches(patterns, resource):
    return any(p == "*" or wildcard(p, resource, ignore_case=False) for p in as_list(patterns))


def principal_matches(principal, who):
    """`who`: {"Federated": arn} or {"AWS": arn} or {"Service": name}."""
    if principal == "*" or principal is None and not who:
        return True
    if not isinstance(principal, dict):
        return False
    for kind, value in who.items():
        if any(p == "*" or p == value for p in as_list(principal.get(kind))):
            return True
    return False


def _number(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


# Each operator: (compare one context value with one policy value) and whether it is negated
# (a negated operator is true when no policy value matches).
STRING = {
    "StringEquals": (lambda c, p: c == p, False),
    "StringNotEquals": (lambda c, p: c == p, True),
    "StringEqualsIgnoreCase": (lambda c, p: c.lower() == p.lower(), False),
    "StringNotEqualsIgnoreCase": (lambda c, p: c.lower() == p.lower(), True),
    "StringLike": (lambda c, p: wildcard(p, c, ignore_case=False), False),
    "StringNotLike": (lambda c, p: wildcard(p, c, ignore_case=False), True),
    "ArnEquals": (lambda c, p: c == p, False),
    "ArnLike": (lambda c, p: wildcard(p, c, ignore_case=False), False),
    "ArnNotEquals": (lambda c, p: c == p, True),
    "ArnNotLike": (lambda c, p: wildcard(p, c, ignore_case=False), True),
    "Bool": (lambda c, p: str(c).lower() == str(p).lower(), False),
    "NumericEquals": (lambda c, p: _number(c) is not None and _number(c) == _number(p), False),
    "NumericNotEquals": (lambda c, p: _number(c) is not None and _number(c) == _number(p), True),
    "NumericLessThan": (lambda c, p: _number(c) is not None and _number(c) < _number(p), False),
    "NumericLessThanEquals": (lambda c, p: _number(c) is not None and _number(c) <= _number(p), False),
    "NumericGreaterThan": (lambda c, p: _number(c) is not None and _number(c) > _number(p), False),
    "NumericGreaterThanEquals": (lambda c, p: _number(c) is not None and _number(c) >= _number(p), False),
}


def condition_holds(operator, key, wanted, context):
    """One operator on one key, against the request's context (keys compared case-insensitively)."""
    present = {k.lower(): v for k, v in context.items()}
    values = as_list(present.get(key.lower()))
    wanted = [str(w) if not isinstance(w, str) else w for w in as_list(wanted)]
    if operator == "Null":
        # "true": the key must be absent; "false": present.
        return all((not values) == (w.lower() == "true") for w in wanted)
    qualifier = None
    if ":" in operator:
        qualifier, operator = operator.split(":", 1)
    if_exists = operator.endswith("IfExists")
    base = operator[:-len("IfExists")] if if_exists else operator
    if base not in STRING or qualifier not in (None, "ForAnyValue", "ForAllValues"):
        print(f"iam: condition operator {qualifier + ':' if qualifier else ''}{operator} is not evaluated; "
              "the statement does not apply", file=sys.stderr, flush=True)
        return False
    compare, negated = STRING[base]
    if not values:
        return if_exists or qualifier == "ForAllValues"

    def one(value):
        hit = any(compare(str(value), w) for w in wanted)
        return not hit if negated else hit

    if qualifier == "ForAllValues":
        return all(one(v) for v in values)
    if qualifier == "ForAnyValue" or len(values) == 1:
        return any(one(v) for v in values)
    # A multivalued key without a set operator: as AWS, the condition looks at it as one value.
    return any(one(v) for v in values)


def statement_applies(statement, action, resource, context, who=None):
    if "Action" in statement and not action_matches(statement["Action"], action):
        return False
    if "NotAction" in statement and action_matches(statement["NotAction"], action):
        return False
    if "Resource" in statement and not resource_matches(statement["Resource"], resource):
        return False
    if "NotResource" in statement and resource_matches(statement["NotResource"], resource):
        return False
    if who is not None and not principal_matches(statement.get("Principal"), who):
        return False
    for operator, keys in (statement.get("Condition") or {}).items():
        for key, wanted in keys.items():
            if not condition_holds(operator, key, wanted, context):
                return False
    return True


def evaluate(policies, action, resource, context, who=None):
    """"allow", "deny" (an explicit Deny) or "implicit" (no statement allows it). `who` is given
    for a trust policy: the principal asking."""
    allowed = False
    for doc in documents(policies):
        for statement in as_list(doc.get("Statement")):
            if not statement_applies(statement, action, resource, context, who):
                continue
            if statement.get("Effect") == "Deny":
                return "deny"
            if statement.get("Effect") == "Allow":
                allowed = True
    return "allow" if allowed else "implicit"


def tag_context(prefix, tags):
    """`aws:RequestTag/K` (or `aws:ResourceTag/K`) for each tag."""
    return {f"{prefix}/{k}": v for k, v in tags.items()}


if __name__ == "__main__":
    # Self-check of the rules above (`python3 rig/iam_policy.py`); the rig's tests exercise them through AWS calls.
    tagged = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": ["elasticloadbalancing:CreateTargetGroup"], "Resource": "*",
        "Condition": {"Null": {"aws:RequestTag/elbv2.k8s.aws/cluster": "false"}}}]}
    assert evaluate([tagged], "elasticloadbalancing:CreateTargetGroup", "*", {}) == "implicit"
    assert evaluate([tagged], "ElasticLoadBalancing:createTargetGroup", "*",
                    {"aws:RequestTag/elbv2.k8s.aws/cluster": "c"}) == "allow"
    arn_only = {"Statement": [{"Effect": "Allow", "Action": "elasticloadbalancing:RegisterTargets",
                               "Resource": "arn:aws:elasticloadbalancing:*:*:targetgroup/*/*"}]}
    assert evaluate([arn_only], "elasticloadbalancing:RegisterTargets",
                    "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/k8s-a/0123", {}) == "allow"
    assert evaluate([arn_only], "elasticloadbalancing:RegisterTargets",
                    "arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/a/1", {}) == "implicit"
    trust = {"Statement": [{"Effect": "Allow", "Action": "sts:AssumeRoleWithWebIdentity",
                            "Principal": {"Federated": "arn:aws:iam::1:oidc-provider/o/id/X"},
                            "Condition": {"StringEquals": {"o/id/X:sub": "system:serviceaccount:kube-system:lbc",
                                                           "o/id/X:aud": "sts.amazonaws.com"}}}]}
    good = {"o/id/X:sub": "system:serviceaccount:kube-system:lbc", "o/id/X:aud": "sts.amazonaws.com"}
    who = {"Federated": "arn:aws:iam::1:oidc-provider/o/id/X"}
    assert evaluate([trust], "sts:AssumeRoleWithWebIdentity", "*", good, who) == "allow"
    assert evaluate([trust], "sts:AssumeRoleWithWebIdentity", "*",
                    dict(good, **{"o/id/X:sub": "system:serviceaccount:team2:other"}), who) == "implicit"
    assert evaluate([trust], "sts:AssumeRoleWithWebIdentity", "*", good, {"Federated": "arn:other"}) == "implicit"
    deny = {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"},
                          {"Effect": "Deny", "Action": "ec2:Delete*", "Resource": "*"}]}
    assert evaluate([deny], "ec2:DeleteSecurityGroup", "*", {}) == "deny"
    assert condition_holds("ForAllValues:StringEquals", "aws:TagKeys", ["a"], {}) is True
    assert condition_holds("StringLikeIfExists", "k", "v*", {}) is True
    assert condition_holds("StringLike", "k", "v*", {"K": "value"}) is True
    print("iam_policy: ok")
