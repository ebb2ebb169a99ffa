//! IAM documents: the IRSA trust policy the controller's role needs, what is
//! wrong with an observed one, and decoding IAM's URL-encoded documents.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::pins::{KNOWN_POLICIES, POD_IDENTITY_ACTIONS, POD_IDENTITY_PRINCIPAL};

/// A policy document and what it is.
#[derive(Debug, Clone)]
pub struct PolicyDocument {
    pub text: String,
    /// The controller version it belongs to, or `sha256:<digest>` for a document this plugin does not know.
    pub label: String,
}

pub fn label_of(bytes: &[u8]) -> String {
    let digest = crate::pins::sha256_hex(bytes);
    KNOWN_POLICIES
        .iter()
        .find(|p| p.sha256 == digest)
        .map(|p| p.version.to_string())
        .unwrap_or_else(|| format!("sha256:{}", &digest[..16]))
}

/// Reads and validates --iam-policy-file (bad input: exit 2, before any change).
pub fn read_policy_file(path: &Path) -> Result<PolicyFile> {
    let text = crate::inputs::read_input("--iam-policy-file", path)?;
    let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        Error::usage(format!("--iam-policy-file {} is not JSON: {e}", path.display()))
            .hint("give the controller's iam_policy.json")
    })?;
    if doc.get("Statement").is_none() {
        return Err(Error::usage(format!(
            "--iam-policy-file {} has no Statement: not an IAM policy document",
            path.display()
        )));
    }
    Ok(PolicyFile { path: path.to_path_buf(), document: PolicyDocument { label: label_of(text.as_bytes()), text } })
}

/// --iam-policy-file, read and validated once.
#[derive(Debug, Clone)]
pub struct PolicyFile {
    pub path: PathBuf,
    pub document: PolicyDocument,
}

pub const AUDIENCE: &str = "sts.amazonaws.com";
pub const WEB_IDENTITY_ACTION: &str = "sts:AssumeRoleWithWebIdentity";

pub fn service_account_subject(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// The trust policy eksctl writes for an IRSA role: only this provider, only
/// this ServiceAccount (`:sub`), only tokens for STS (`:aud`).
pub fn trust_policy(provider_arn: &str, issuer_host_path: &str, subject: &str) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Federated": provider_arn},
            "Action": WEB_IDENTITY_ACTION,
            "Condition": {"StringEquals": {
                format!("{issuer_host_path}:sub"): subject,
                format!("{issuer_host_path}:aud"): AUDIENCE,
            }}
        }]
    })
}

/// IAM returns policy documents URL-encoded (RFC 3986).
pub fn decode_document(text: &str) -> Result<Value, String> {
    serde_json::from_str(&decode_text(text)?).map_err(|e| format!("not a JSON policy document: {e}"))
}

/// A policy document as IAM returns it (percent-encoded), as text.
pub fn decode_text(text: &str) -> Result<String, String> {
    Ok(percent_encoding::percent_decode_str(text).decode_utf8().map_err(|e| e.to_string())?.into_owned())
}

fn as_list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::Null => vec![],
        other => vec![other.clone()],
    }
}

/// A trust policy's one statement, and what is wrong with it whatever it trusts: an Effect
/// other than Allow, or a negation (`NotPrincipal`, `NotAction`, `NotResource`), which widens
/// who may assume the role. Err: not exactly one statement.
fn one_statement(doc: &Value) -> Result<(Value, Vec<String>), Vec<String>> {
    let statements = as_list(&doc["Statement"]);
    if statements.len() != 1 {
        return Err(vec![format!("{} statements instead of exactly one", statements.len())]);
    }
    let s = statements[0].clone();
    let mut problems = Vec::new();
    if s["Effect"] != "Allow" {
        problems.push(format!("Effect is {} instead of Allow", s["Effect"]));
    }
    for negation in ["NotPrincipal", "NotAction", "NotResource"] {
        if !s[negation].is_null() {
            problems.push(format!("{negation} is set ({})", s[negation]));
        }
    }
    Ok((s, problems))
}

/// What differs from the trust policy above; empty when it is exactly right.
pub fn trust_problems(doc: &Value, provider_arn: &str, issuer_host_path: &str, subject: &str) -> Vec<String> {
    let (s, mut problems) = match one_statement(doc) {
        Ok(found) => found,
        Err(problems) => return problems,
    };
    let actions = as_list(&s["Action"]);
    if actions != [Value::from(WEB_IDENTITY_ACTION)] {
        problems.push(format!("Action is {} instead of {WEB_IDENTITY_ACTION}", s["Action"]));
    }
    // Anything that widens who may assume the role: another principal, or the negations.
    let other_principals: Vec<String> = match &s["Principal"] {
        Value::Object(p) => p.keys().filter(|k| *k != "Federated").cloned().collect(),
        Value::Null => vec![],
        other => vec![other.to_string()],
    };
    if !other_principals.is_empty() {
        problems.push(format!("Principal also names {}", other_principals.join(", ")));
    }
    let federated = as_list(&s["Principal"]["Federated"]);
    if federated != [Value::from(provider_arn)] {
        problems.push(format!("Principal.Federated is {} instead of {provider_arn}", s["Principal"]["Federated"]));
    }
    let conditions = s["Condition"].as_object().cloned().unwrap_or_default();
    let equals = conditions.get("StringEquals").and_then(Value::as_object).cloned().unwrap_or_default();
    for (suffix, want) in [("sub", subject), ("aud", AUDIENCE)] {
        let key = format!("{issuer_host_path}:{suffix}");
        match equals.get(&key) {
            Some(v) if as_list(v) == [Value::from(want)] => {}
            Some(v) => problems.push(format!("{key} is {v} instead of {want:?}")),
            None => problems.push(format!("no StringEquals condition on {key}")),
        }
    }
    let extra: Vec<_> = equals.keys().filter(|k| !k.ends_with(":sub") && !k.ends_with(":aud")).cloned().collect();
    let other_operators: Vec<_> = conditions.keys().filter(|k| *k != "StringEquals").cloned().collect();
    if !extra.is_empty() || !other_operators.is_empty() {
        problems.push(format!("unexpected conditions: {}", [extra, other_operators].concat().join(", ")));
    }
    problems
}

/// The trust EKS Pod Identity needs: the agent's service principal, for both
/// actions (the credentials carry session tags), on any of the cluster's associations.
pub fn pod_identity_trust_policy() -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": POD_IDENTITY_PRINCIPAL},
            "Action": POD_IDENTITY_ACTIONS,
        }]
    })
}

/// How a role's trust differs from what EKS Pod Identity needs, or nothing.
/// Conditions are allowed only on the session tags EKS sets, and only with this
/// cluster's and ServiceAccount's values (they narrow the trust, never widen it).
pub fn pod_identity_trust_problems(doc: &Value, cluster: &str, namespace: &str, service_account: &str) -> Vec<String> {
    let (s, mut problems) = match one_statement(doc) {
        Ok(found) => found,
        Err(problems) => return problems,
    };
    let mut actions: Vec<String> =
        as_list(&s["Action"]).iter().filter_map(|a| a.as_str().map(str::to_string)).collect();
    actions.sort();
    if actions != POD_IDENTITY_ACTIONS {
        problems.push(format!("Action is {} instead of {}", s["Action"], POD_IDENTITY_ACTIONS.join(" and ")));
    }
    let principal = s["Principal"].as_object().cloned().unwrap_or_default();
    let others: Vec<String> = principal.keys().filter(|k| *k != "Service").cloned().collect();
    if !others.is_empty() || !s["Principal"].is_object() {
        problems
            .push(format!("Principal names {} instead of only the service {POD_IDENTITY_PRINCIPAL}", s["Principal"]));
    } else if as_list(&s["Principal"]["Service"]) != [Value::from(POD_IDENTITY_PRINCIPAL)] {
        problems
            .push(format!("Principal.Service is {} instead of {POD_IDENTITY_PRINCIPAL}", s["Principal"]["Service"]));
    }
    let tags = [
        ("aws:RequestTag/eks-cluster-name", cluster),
        ("aws:RequestTag/kubernetes-namespace", namespace),
        ("aws:RequestTag/kubernetes-service-account", service_account),
    ];
    for (operator, conditions) in s["Condition"].as_object().cloned().unwrap_or_default() {
        if operator != "StringEquals" {
            problems.push(format!("unexpected condition operator {operator}"));
            continue;
        }
        for (key, value) in conditions.as_object().cloned().unwrap_or_default() {
            match tags.iter().find(|(k, _)| k.eq_ignore_ascii_case(&key)) {
                Some((_, want)) if as_list(&value) == [Value::from(*want)] => {}
                Some((_, want)) => problems.push(format!("{key} is {value} instead of {want:?}")),
                None => problems.push(format!("unexpected condition on {key}")),
            }
        }
    }
    problems
}

/// Does a role's trust policy name this provider at all (for "does another role trust it")?
pub fn trusts_provider(doc: &Value, provider_arn: &str) -> bool {
    as_list(&doc["Statement"])
        .iter()
        .any(|s| as_list(&s["Principal"]["Federated"]).contains(&Value::from(provider_arn)))
}

/// The actions a policy document allows, for spotting a document short of permissions.
pub fn allowed_actions(doc: &Value) -> Vec<String> {
    as_list(&doc["Statement"])
        .iter()
        .filter(|s| s["Effect"] == "Allow")
        .flat_map(|s| as_list(&s["Action"]))
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect()
}

/// The actions of the pinned document (what the controller calls) that no Allow statement of
/// `doc` names, `*` and `?` patterns and case aside (conditions and resources are not weighed).
pub fn missing_actions(doc: &Value) -> Vec<&'static str> {
    let allowed = allowed_actions(doc);
    crate::pins::IAM_POLICY_ACTIONS
        .iter()
        .copied()
        .filter(|action| !allowed.iter().any(|p| matches(p, action)))
        .collect()
}

/// IAM's action pattern match: `*` any run, `?` one character, case-insensitive.
fn matches(pattern: &str, action: &str) -> bool {
    let (p, a): (Vec<char>, Vec<char>) =
        (pattern.to_ascii_lowercase().chars().collect(), action.to_ascii_lowercase().chars().collect());
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < a.len() {
        if i < p.len() && (p[i] == '?' || p[i] == a[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC";
    const HOST: &str = "oidc.eks.us-east-1.amazonaws.com/id/ABC";

    fn subject() -> String {
        service_account_subject("kube-system", "aws-load-balancer-controller")
    }

    #[test]
    fn missing_actions_are_what_no_allow_statement_names_wildcards_and_case_aside() {
        let full = json!({"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]});
        assert!(missing_actions(&full).is_empty());
        let elb = json!({"Statement": [
            {"Effect": "Allow", "Action": ["ElasticLoadBalancing:*", "ec2:*", "iam:*", "cognito-idp:*", "acm:*",
                                           "waf-regional:*", "wafv2:*", "shield:*"], "Resource": "*"},
            {"Effect": "Deny", "Action": "elasticloadbalancing:CreateListener", "Resource": "*"}]});
        assert!(missing_actions(&elb).is_empty(), "a Deny is not weighed: {:?}", missing_actions(&elb));
        let short = json!({"Statement": [{"Effect": "Allow", "Action": ["elasticloadbalancing:Describe*", "ec2:Describe?ubnets"]}]});
        let missing = missing_actions(&short);
        assert!(missing.contains(&"elasticloadbalancing:CreateListener"));
        assert!(!missing.contains(&"elasticloadbalancing:DescribeTargetHealth"));
        assert!(!missing.contains(&"ec2:DescribeSubnets"));
    }

    #[test]
    fn the_generated_trust_policy_has_no_problems() {
        let doc = trust_policy(ARN, HOST, &subject());
        assert_eq!(trust_problems(&doc, ARN, HOST, &subject()), Vec::<String>::new());
        assert_eq!(
            doc["Statement"][0]["Condition"]["StringEquals"][format!("{HOST}:sub")],
            "system:serviceaccount:kube-system:aws-load-balancer-controller"
        );
        assert_eq!(doc["Statement"][0]["Condition"]["StringEquals"][format!("{HOST}:aud")], "sts.amazonaws.com");
    }

    #[test]
    fn a_wrong_subject_is_named() {
        let doc = trust_policy(ARN, HOST, "system:serviceaccount:default:other");
        let p = trust_problems(&doc, ARN, HOST, &subject());
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains(":sub") && p[0].contains("default:other"), "{p:?}");
    }

    #[test]
    fn a_missing_audience_and_another_provider_are_named() {
        let mut doc = trust_policy("arn:aws:iam::1:oidc-provider/x", HOST, &subject());
        doc["Statement"][0]["Condition"]["StringEquals"].as_object_mut().unwrap().remove(&format!("{HOST}:aud"));
        let p = trust_problems(&doc, ARN, HOST, &subject());
        assert!(p.iter().any(|m| m.contains("Principal.Federated")), "{p:?}");
        assert!(p.iter().any(|m| m.contains(":aud")), "{p:?}");
    }

    #[test]
    fn wildcards_are_not_exact() {
        let mut doc = trust_policy(ARN, HOST, &subject());
        doc["Statement"][0]["Condition"] = json!({"StringLike": {format!("{HOST}:sub"): "system:serviceaccount:*"}});
        assert!(!trust_problems(&doc, ARN, HOST, &subject()).is_empty());
    }

    #[test]
    fn another_principal_a_negation_or_a_second_statement_is_named() {
        let mut doc = trust_policy(ARN, HOST, &subject());
        doc["Statement"][0]["Principal"]["AWS"] = json!("arn:aws:iam::1:root");
        let p = trust_problems(&doc, ARN, HOST, &subject());
        assert_eq!(p, vec!["Principal also names AWS".to_string()]);
        let mut doc = trust_policy(ARN, HOST, &subject());
        doc["Statement"][0]["NotPrincipal"] = json!({"AWS": "arn:aws:iam::1:user/x"});
        assert!(trust_problems(&doc, ARN, HOST, &subject()).iter().any(|m| m.starts_with("NotPrincipal is set")));
        let mut doc = trust_policy(ARN, HOST, &subject());
        doc["Statement"][0]["Principal"] = json!("*");
        assert!(trust_problems(&doc, ARN, HOST, &subject()).iter().any(|m| m.contains("Principal also names \"*\"")));
        let mut doc = trust_policy(ARN, HOST, &subject());
        let extra = doc["Statement"][0].clone();
        doc["Statement"].as_array_mut().unwrap().push(extra);
        assert_eq!(
            trust_problems(&doc, ARN, HOST, &subject()),
            vec!["2 statements instead of exactly one".to_string()]
        );
    }

    #[test]
    fn iam_documents_are_url_decoded() {
        let encoded = "%7B%22Statement%22%3A%5B%5D%7D";
        assert_eq!(decode_document(encoded).unwrap(), json!({"Statement": []}));
    }

    #[test]
    fn trust_in_a_provider_is_found_in_any_statement() {
        let doc = trust_policy(ARN, HOST, &subject());
        assert!(trusts_provider(&doc, ARN));
        assert!(!trusts_provider(&doc, "arn:aws:iam::1:oidc-provider/other"));
    }

    #[test]
    fn unknown_documents_are_labelled_by_digest() {
        assert_eq!(label_of(b"{}"), "sha256:44136fa355b3678a");
    }

    #[test]
    fn a_file_without_statements_is_refused_as_usage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.json");
        std::fs::write(&p, "{\"Version\": \"2012-10-17\"}").unwrap();
        assert_eq!(read_policy_file(&p).err().unwrap().exit_code(), 2);
        std::fs::write(&p, "not json").unwrap();
        assert_eq!(read_policy_file(&p).err().unwrap().exit_code(), 2);
    }

    #[test]
    fn pod_identity_trust_is_exactly_the_agents_principal_for_both_actions() {
        let ok = pod_identity_trust_policy();
        assert!(pod_identity_trust_problems(&ok, "c", "kube-system", "sa").is_empty());
        let mut narrowed = ok.clone();
        narrowed["Statement"][0]["Condition"] = json!({"StringEquals": {"aws:RequestTag/kubernetes-service-account": "sa", "aws:RequestTag/eks-cluster-name": "c"}});
        assert!(pod_identity_trust_problems(&narrowed, "c", "kube-system", "sa").is_empty());
        let mut other = ok.clone();
        other["Statement"][0]["Principal"] = json!({"Service": "ec2.amazonaws.com"});
        assert_eq!(pod_identity_trust_problems(&other, "c", "kube-system", "sa").len(), 1);
        let mut one_action = ok.clone();
        one_action["Statement"][0]["Action"] = json!("sts:AssumeRole");
        assert_eq!(pod_identity_trust_problems(&one_action, "c", "kube-system", "sa").len(), 1);
        let mut wrong_tag = narrowed.clone();
        wrong_tag["Statement"][0]["Condition"]["StringEquals"]["aws:RequestTag/eks-cluster-name"] = json!("other");
        assert_eq!(pod_identity_trust_problems(&wrong_tag, "c", "kube-system", "sa").len(), 1);
        let mut widened = ok.clone();
        widened["Statement"][0]["Principal"] = json!({"Service": "pods.eks.amazonaws.com", "AWS": "*"});
        assert_eq!(pod_identity_trust_problems(&widened, "c", "kube-system", "sa").len(), 1);
    }
}
