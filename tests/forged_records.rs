//! What someone who can only write ConfigMaps or Secrets in one namespace can
//! steer: nothing. Each row forges one field of an install record that could
//! point uninstall at something (in the release's own namespace, and in a
//! namespace of the writer's), and `uninstall -y` then changes nothing the
//! live cluster does not prove is this tool's, and says what it kept and why.
//! A forged helm revision is refused before helm runs; text from a record is
//! shown escaped.

mod common;

use std::process::Output;

use serde_json::{Value, json};

use common::{RECORD, Rig, expect_code, one_line_error, recorded_spec, rig, text, write_record};

fn said(out: &Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

fn role_trust(rig: &Rig, role: &str) -> Value {
    rig.aws(&["iam", "get-role", "--role-name", role])["Role"]["AssumeRolePolicyDocument"].clone()
}

fn attached(rig: &Rig, role: &str) -> Value {
    rig.aws(&["iam", "list-attached-role-policies", "--role-name", role])["AttachedPolicies"].clone()
}

fn subnet_tags(rig: &Rig, subnet: &str) -> Value {
    let tags = rig.aws(&["ec2", "describe-tags", "--filters", &format!("Name=resource-id,Values={subnet}")]);
    let mut t: Vec<(String, String)> = tags["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["Key"].as_str().unwrap().to_string(), t["Value"].as_str().unwrap().to_string()))
        .collect();
    t.sort();
    json!(t)
}

/// One forged field: what it points at (made first, as someone else's), the
/// record that points there, what must be unchanged afterwards, and a word of
/// the reason uninstall gives for keeping it.
struct Row {
    name: &'static str,
    setup: fn(&Rig, &str) -> Value,
    forge: fn(&Value, &str, &Value) -> Value,
    observe: fn(&Rig, &str, &Value) -> Value,
    reason: &'static str,
}

fn base(spec: &Value, ns: &str) -> Value {
    let mut spec = spec.clone();
    spec["namespace"] = json!(ns);
    json!({"version": 1, "spec": spec})
}

fn with(mut record: Value, key: &str, value: Value) -> Value {
    record[key] = value;
    record
}

fn helm_plain_controller(rig: &Rig) {
    let vpc = rig.vpc();
    let out = rig
        .cmd("helm")
        .args(["install", "aws-load-balancer-controller", "aws-load-balancer-controller", "-n", "kube-system"])
        .args(["--repo", rig.get("RIG_CHART_REPO_URL"), "--version", "3.5.0"])
        .args(["--set", &format!("clusterName={}", rig.get("RIG_CLUSTER_NAME")), "--set", "region=us-east-1"])
        .args(["--set", &format!("vpcId={vpc}")])
        .output()
        .unwrap();
    expect_code(&out, 0, "helm install of the controller by hand");
}

fn rows() -> Vec<Row> {
    vec![
        Row {
            name: "an adopted role's trust and attachment, on another tool's controller role",
            setup: |rig, _| {
                rig.create_oidc_provider();
                let issuer = rig.issuer().trim_start_matches("https://").to_string();
                let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                    "Principal": {"Federated": format!("arn:aws:iam::123456789012:oidc-provider/{issuer}")},
                    "Action": "sts:AssumeRoleWithWebIdentity",
                    "Condition": {"StringEquals": {
                        format!("{issuer}:sub"): "system:serviceaccount:kube-system:aws-load-balancer-controller"}}}]});
                rig.aws(&[
                    "iam",
                    "create-role",
                    "--role-name",
                    "other-tool-lbc",
                    "--assume-role-policy-document",
                    &trust.to_string(),
                ]);
                let doc = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "elasticloadbalancing:*", "Resource": "*"}]});
                let p = rig.aws(&[
                    "iam",
                    "create-policy",
                    "--policy-name",
                    "OtherToolLbc",
                    "--policy-document",
                    &doc.to_string(),
                ]);
                let arn = p["Policy"]["Arn"].as_str().unwrap().to_string();
                rig.aws(&["iam", "attach-role-policy", "--role-name", "other-tool-lbc", "--policy-arn", &arn]);
                json!(null)
            },
            forge: |spec, ns, _| {
                let mut r = base(spec, ns);
                r["spec"]["iam"]["roleName"] = json!("other-tool-lbc");
                r["spec"]["iam"]["policyName"] = json!("OtherToolLbc");
                r["iamRole"] = json!({"id": "other-tool-lbc", "created": false});
                let attacker = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                    "Principal": {"AWS": "arn:aws:iam::999999999999:root"}, "Action": "sts:AssumeRole"}]});
                r["adoptedRole"] = json!({"trustBefore": attacker.to_string(), "attachedPolicy": true});
                r
            },
            observe: |rig, _, _| json!([role_trust(rig, "other-tool-lbc"), attached(rig, "other-tool-lbc")]),
            reason: "other-tool-lbc",
        },
        Row {
            name: "a node entry naming a taint and label someone else put on a node",
            setup: |rig, _| {
                rig.kubectl_ok(&["taint", "node", "general-1", "team=infra:NoSchedule"]);
                rig.kubectl_ok(&["label", "node", "general-1", "team=infra"]);
                json!(null)
            },
            forge: |spec, ns, _| {
                let mut r = base(spec, ns);
                r["spec"]["nodes"] = json!({"labelKey": "team", "labelValue": "infra",
                    "taint": {"key": "team", "value": "infra", "effect": "NoSchedule"}, "names": ["general-1"]});
                with(
                    r,
                    "nodes",
                    json!([{"node": "general-1", "taint": "team=infra:NoSchedule", "label": "team=infra"}]),
                )
            },
            observe: |rig, _, _| {
                let n = rig.kubectl_json(&["get", "node", "general-1", "-o", "json"]);
                json!([n["spec"]["taints"], n["metadata"]["labels"]["team"]])
            },
            reason: "carries no mark of this tool",
        },
        Row {
            name: "subnet tag entries: a subnet of another VPC, and a role tag that was there before",
            setup: |rig, _| {
                let vpc = rig.aws(&["ec2", "create-vpc", "--cidr-block", "10.99.0.0/16"])["Vpc"]["VpcId"].clone();
                let other = rig.aws(&[
                    "ec2",
                    "create-subnet",
                    "--vpc-id",
                    vpc.as_str().unwrap(),
                    "--cidr-block",
                    "10.99.1.0/24",
                ])["Subnet"]["SubnetId"]
                    .as_str()
                    .unwrap()
                    .to_string();
                rig.aws(&[
                    "ec2",
                    "create-tags",
                    "--resources",
                    &other,
                    "--tags",
                    "Key=kubernetes.io/role/internal-elb,Value=1",
                ]);
                let ours = rig.subnets_named("*private*").remove(0);
                rig.aws(&[
                    "ec2",
                    "create-tags",
                    "--resources",
                    &ours,
                    "--tags",
                    "Key=kubernetes.io/role/internal-elb,Value=1",
                ]);
                json!([other, ours])
            },
            forge: |spec, ns, made| {
                let tag = |s: &Value| json!({"subnet": s, "key": "kubernetes.io/role/internal-elb", "value": "1", "created": true});
                with(base(spec, ns), "subnetTags", json!([tag(&made[0]), tag(&made[1])]))
            },
            observe: |rig, _, made| {
                json!([subnet_tags(rig, made[0].as_str().unwrap()), subnet_tags(rig, made[1].as_str().unwrap())])
            },
            reason: "kubernetes.io/role/internal-elb",
        },
        Row {
            name: "the controller's CRDs and release, installed with plain helm",
            setup: |rig, _| {
                helm_plain_controller(rig);
                json!(null)
            },
            forge: |spec, ns, _| {
                with(
                    base(spec, ns),
                    "lbController",
                    json!({"release": "aws-load-balancer-controller",
                    "namespace": "kube-system", "installed": true,
                    "crds": ["targetgroupbindings.elbv2.k8s.aws", "ingressclassparams.elbv2.k8s.aws"]}),
                )
            },
            observe: |rig, _, _| {
                let crds = rig.kubectl(&[
                    "get",
                    "crd",
                    "targetgroupbindings.elbv2.k8s.aws",
                    "ingressclassparams.elbv2.k8s.aws",
                ]);
                let release = rig
                    .cmd("helm")
                    .args(["status", "aws-load-balancer-controller", "-n", "kube-system"])
                    .output()
                    .unwrap();
                json!([crds.status.success(), release.status.success()])
            },
            reason: "carries no mark of this tool",
        },
        Row {
            name: "a Schema Loader name naming someone's Secret and ConfigMap",
            setup: |rig, ns| {
                rig.kubectl_ok(&["-n", ns, "create", "secret", "generic", "team-db", "--from-literal=p=x"]);
                rig.kubectl_ok(&["-n", ns, "create", "configmap", "team-db", "--from-literal=a=b"]);
                json!(null)
            },
            forge: |spec, ns, _| with(base(spec, ns), "schemaLoader", json!({"id": "team-db", "created": true})),
            observe: |rig, ns, _| {
                json!([
                    rig.kubectl(&["-n", ns, "get", "secret", "team-db"]).status.success(),
                    rig.kubectl(&["-n", ns, "get", "configmap", "team-db"]).status.success()
                ])
            },
            reason: "carry no mark of this tool",
        },
        Row {
            name: "the controller's ServiceAccount name, pointing at another annotated ServiceAccount",
            setup: |rig, _| {
                rig.kubectl_ok(&["-n", "kube-system", "create", "serviceaccount", "ebs-csi-controller-sa"]);
                rig.kubectl_ok(&[
                    "-n",
                    "kube-system",
                    "annotate",
                    "serviceaccount",
                    "ebs-csi-controller-sa",
                    "eks.amazonaws.com/role-arn=arn:aws:iam::123456789012:role/ebs-csi",
                ]);
                json!(null)
            },
            forge: |spec, ns, _| {
                let mut r = base(spec, ns);
                r["spec"]["lbController"]["serviceAccount"] = json!("ebs-csi-controller-sa");
                with(r, "serviceAccount", json!({"id": "ebs-csi-controller-sa", "created": true}))
            },
            observe: |rig, _, _| {
                rig.kubectl_json(&["-n", "kube-system", "get", "serviceaccount", "ebs-csi-controller-sa"])["metadata"]
                    ["annotations"]
                    .clone()
            },
            reason: "carries no mark of this tool",
        },
        Row {
            name: "namespaceCreated and the readiness-gate label, on a namespace install did not make",
            setup: |rig, ns| {
                rig.kubectl_ok(&["label", "namespace", ns, "elbv2.k8s.aws/pod-readiness-gate-inject=enabled"]);
                json!(null)
            },
            forge: |spec, ns, _| {
                let r = with(base(spec, ns), "namespaceCreated", json!(true));
                with(r, "readinessGateLabel", json!(true))
            },
            observe: |rig, ns, _| {
                let n = rig.kubectl_json(&["get", "namespace", ns, "-o", "json"]);
                json!([
                    n["metadata"]["labels"]["elbv2.k8s.aws/pod-readiness-gate-inject"],
                    n["metadata"]["deletionTimestamp"]
                ])
            },
            reason: "carries no mark of this tool",
        },
        Row {
            name: "IAM the record says install created: an OIDC provider, a policy and a role made by hand",
            setup: |rig, _| {
                rig.create_oidc_provider();
                let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                    "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
                rig.aws(&[
                    "iam",
                    "create-role",
                    "--role-name",
                    "hand-made",
                    "--assume-role-policy-document",
                    &trust.to_string(),
                ]);
                let doc = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]});
                rig.aws(&["iam", "create-policy", "--policy-name", "HandMade", "--policy-document", &doc.to_string()]);
                json!(null)
            },
            forge: |spec, ns, _| {
                let mut r = base(spec, ns);
                r["spec"]["iam"]["roleName"] = json!("hand-made");
                r["spec"]["iam"]["policyName"] = json!("HandMade");
                r["iamRole"] = json!({"id": "hand-made", "created": true});
                r["iamPolicy"] = json!({"id": "arn:aws:iam::123456789012:policy/HandMade", "created": true});
                r["oidcProvider"] = json!({"id": "any", "created": true});
                r
            },
            observe: |rig, _, _| {
                json!([
                    rig.shell(&["aws", "iam", "get-role", "--role-name", "hand-made"]).status.success(),
                    rig.shell(&[
                        "aws",
                        "iam",
                        "get-policy",
                        "--policy-arn",
                        "arn:aws:iam::123456789012:policy/HandMade"
                    ])
                    .status
                    .success(),
                    rig.aws(&["iam", "list-open-id-connect-providers"])
                ])
            },
            reason: "carries no mark of this tool",
        },
        Row {
            name: "the GraphQL release and the Secrets, made by someone else under the names the spec gives",
            setup: |rig, ns| {
                rig.kubectl_ok(&[
                    "-n",
                    ns,
                    "create",
                    "secret",
                    "generic",
                    "scalardb-graphql-credentials",
                    "--from-literal=p=x",
                ]);
                rig.kubectl_ok(&[
                    "-n",
                    ns,
                    "create",
                    "secret",
                    "generic",
                    "scalardb-graphql-registry",
                    "--from-literal=p=x",
                ]);
                json!(null)
            },
            forge: |spec, ns, _| {
                let mut r = base(spec, ns);
                r["spec"]["databaseSecret"] = json!({"name": "scalardb-graphql-credentials", "managed": true});
                r["spec"]["registrySecret"] =
                    json!({"name": "scalardb-graphql-registry", "managed": true, "server": "ghcr.io"});
                r["databaseSecret"] = json!({"id": "scalardb-graphql-credentials", "created": true});
                r["registrySecret"] = json!({"id": "scalardb-graphql-registry", "created": true});
                with(r, "graphqlRelease", json!({"id": "scalardb-graphql", "created": true}))
            },
            observe: |rig, ns, _| {
                json!([
                    rig.kubectl(&["-n", ns, "get", "secret", "scalardb-graphql-credentials"]).status.success(),
                    rig.kubectl(&["-n", ns, "get", "secret", "scalardb-graphql-registry"]).status.success()
                ])
            },
            reason: "carries no mark of this tool",
        },
    ]
}

#[test]
fn a_forged_record_field_changes_nothing_the_live_cluster_does_not_prove_is_this_tools() {
    let rig = rig();
    rig.reset();
    let spec = recorded_spec(&rig);
    let mut failures = vec![];
    for row in rows() {
        for ns in ["default", "writer"] {
            rig.reset();
            if ns == "writer" {
                rig.kubectl_ok(&["create", "namespace", "writer"]);
            }
            let made = (row.setup)(&rig, ns);
            let before = (row.observe)(&rig, ns, &made);
            let snapshot = rig.snapshot();
            write_record(&rig, ns, &(row.forge)(&spec, ns, &made));
            let out = rig.plugin().args(["uninstall", "-y", "-n", ns, "--timeout", "120s"]).output().unwrap();
            let said = said(&out);
            let after = (row.observe)(&rig, ns, &made);
            if out.status.code() != Some(0) {
                failures.push(format!("{} (in {ns}): exit {:?}\n{said}", row.name, out.status.code()));
            } else if after != before {
                failures.push(format!("{} (in {ns}): changed\nbefore {before}\nafter  {after}\n{said}", row.name));
            } else if !said.contains(row.reason) || !said.contains("kept") {
                failures.push(format!(
                    "{} (in {ns}): did not say what it kept and why ({:?})\n{said}",
                    row.name, row.reason
                ));
            } else {
                // Nothing else changed either: only the forged record is gone.
                rig.kubectl(&["-n", ns, "delete", "configmap", RECORD, "--ignore-not-found"]);
                let diff = common::snapshot_diff(&snapshot, &rig.snapshot());
                if !diff.is_empty() {
                    failures.push(format!("{} (in {ns}): the rig changed: {diff:#?}\n{said}", row.name));
                }
            }
        }
    }
    rig.reset();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_forged_helm_revision_naming_objects_outside_its_namespace_is_refused_before_helm_runs() {
    let rig = rig();
    rig.reset();
    rig.install_ok();
    // A Secret writer in the release namespace adds a revision whose manifest names a cluster role and another namespace's object.
    let list = rig.kubectl_json(&["get", "secret", "-l", "owner=helm,name=scalardb-graphql", "-o", "json"]);
    let newest = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|s| s["metadata"]["labels"]["version"].as_str().unwrap().parse::<u32>().unwrap())
        .unwrap()
        .clone();
    let script = r#"
import base64, gzip, json, sys
s = json.load(sys.stdin)
rel = json.loads(gzip.decompress(base64.b64decode(base64.b64decode(s["data"]["release"]))))
rel["version"] += 1
rel["manifest"] += "\n---\n# Source: forged\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: cluster-admin\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: coredns\n  namespace: kube-system\n"
v = str(rel["version"])
out = {"apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
       "metadata": {"name": "sh.helm.release.v1.scalardb-graphql.v" + v, "namespace": "default",
                    "labels": dict(s["metadata"]["labels"], version=v, status="deployed")},
       "data": {"release": base64.b64encode(base64.b64encode(gzip.compress(json.dumps(rel).encode()))).decode()}}
print(json.dumps(out))
"#;
    let forged = rig
        .cmd("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    forged.stdin.as_ref().unwrap().write_all(newest.to_string().as_bytes()).unwrap();
    let forged = forged.wait_with_output().unwrap();
    expect_code(&forged, 0, "forging a revision");
    let forged: Value = serde_json::from_slice(&forged.stdout).unwrap();
    rig.kubectl_apply(&forged);
    let dir = tempfile::tempdir().unwrap();
    let (helm, argv) = rig.helm_logging_argv(dir.path());
    let mark = rig.audit_mark();
    let out = rig.plugin().env("HELM_BIN", &helm).args(["uninstall", "-y", "--timeout", "120s"]).output().unwrap();
    one_line_error(&out, 3, &["ClusterRole cluster-admin", "ConfigMap kube-system/coredns"]);
    assert!(!std::fs::read_to_string(&argv).unwrap_or_default().contains("uninstall"), "helm ran");
    let changes: Vec<String> = rig.kube_mutations_since(mark).into_iter().filter(|m| !m.contains("leases")).collect();
    assert!(changes.is_empty(), "changed before refusing: {changes:#?}");
    rig.kubectl_ok(&["get", "clusterrole", "cluster-admin"]);
    // Once the forged revision is gone, uninstall goes ahead.
    rig.kubectl_ok(&["delete", "secret", forged["metadata"]["name"].as_str().unwrap()]);
    rig.uninstall_ok();
    rig.reset();
}

#[test]
fn an_escape_sequence_in_a_record_field_is_shown_escaped_in_the_plan() {
    let rig = rig();
    rig.reset();
    let spec = recorded_spec(&rig);
    let subnet = rig.subnets_named("*private*").remove(0);
    let record = with(
        base(&spec, "default"),
        "subnetTags",
        json!([
        {"subnet": subnet, "key": "x\u{1b}[2K\u{1b}[1A\rall good", "value": "1", "created": true}]),
    );
    write_record(&rig, "default", &record);
    let out = rig.plugin().args(["uninstall", "--dry-run"]).output().unwrap();
    expect_code(&out, 0, "uninstall --dry-run");
    let plan = text(&out.stdout);
    assert!(!plan.contains('\u{1b}') && !plan.contains('\r'), "raw control characters in the plan:\n{plan:?}");
    assert!(plan.contains("x\\u{1b}[2K\\u{1b}[1A\\u{d}all good"), "{plan}");
    rig.reset();
}
