//! The controller with EKS Pod Identity, as AWS's EKS User Guide installs it
//! now: the `eks-pod-identity-agent` add-on, a role trusting
//! `pods.eks.amazonaws.com`, one association, and no OIDC provider and no
//! ServiceAccount annotation. The rig's agent gives a pod the association's
//! credentials only while the association exists and the role's trust allows
//! the agent; the controller stand-in acts with them, as it does with IRSA's.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::{Value, json};

use common::{LBC_ROLE, Rig, check, expect_code, not_passing, rig, text};

const AGENT: &str = "eks-pod-identity-agent";
const SA: [&str; 4] = ["-n", "kube-system", "serviceaccount", "aws-load-balancer-controller"];

fn cluster(rig: &Rig) -> String {
    rig.get("RIG_CLUSTER_NAME").to_string()
}

/// The agent add-on as a platform team adds it (not tagged as this tool's), waited for until ACTIVE.
fn add_agent_by_hand(rig: &Rig) {
    let cluster = cluster(rig);
    rig.aws(&["eks", "create-addon", "--cluster-name", &cluster, "--addon-name", AGENT]);
    rig.eventually("the agent add-on to be ACTIVE", 30, || agent_status(rig).as_deref() == Some("ACTIVE"));
}

fn agent_status(rig: &Rig) -> Option<String> {
    let out = rig.shell(&["aws", "eks", "list-addons", "--cluster-name", &cluster(rig), "--output", "json"]);
    expect_code(&out, 0, "aws eks list-addons");
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    if !listed["addons"].as_array().unwrap().iter().any(|a| a == AGENT) {
        return None;
    }
    let addon = rig.aws(&["eks", "describe-addon", "--cluster-name", &cluster(rig), "--addon-name", AGENT]);
    addon["addon"]["status"].as_str().map(str::to_string)
}

fn associations(rig: &Rig) -> Vec<Value> {
    let listed = rig.aws(&["eks", "list-pod-identity-associations", "--cluster-name", &cluster(rig)]);
    listed["associations"].as_array().cloned().unwrap_or_default()
}

fn oidc_providers(rig: &Rig) -> Vec<Value> {
    rig.aws(&["iam", "list-open-id-connect-providers"])["OpenIDConnectProviderList"].as_array().cloned().unwrap()
}

fn role_annotation(rig: &Rig) -> String {
    rig.kubectl_ok(&[
        "get",
        SA[0],
        SA[1],
        SA[2],
        SA[3],
        "-o",
        "jsonpath={.metadata.annotations.eks\\.amazonaws\\.com/role-arn}",
    ])
    .trim()
    .to_string()
}

/// The names of the environment variables of the controller's pods' first containers.
fn controller_env(rig: &Rig) -> Vec<Vec<String>> {
    let pods = rig.kubectl_json(&[
        "get",
        "pods",
        "-n",
        "kube-system",
        "-l",
        "app.kubernetes.io/name=aws-load-balancer-controller",
        "-o",
        "json",
    ]);
    pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            p["spec"]["containers"][0]["env"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|e| e["name"].as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

/// Everything green, the probe's transaction through the ALB included, but the standalone
/// chart's end-of-support warning.
fn green(rig: &Rig) -> Value {
    let out = rig.status(&["-o", "json"]);
    let code = out.status.code();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stderr)));
    let not_passing = not_passing(&report);
    assert_eq!(code, Some(0), "{not_passing:#?}");
    assert!(not_passing.is_empty(), "{not_passing:#?}");
    report
}

fn fails(rig: &Rig, id: &str, says: &str) -> Value {
    let (code, report) = rig.status_json();
    assert_eq!(code, Some(1), "{report}");
    let failed = check(&report, id);
    assert_eq!(failed["result"], "fail", "{id}: {failed}");
    assert!(failed["message"].as_str().unwrap().contains(says), "{id}: {failed}");
    report
}

#[test]
fn on_a_cluster_with_the_agent_install_uses_pod_identity_with_no_oidc_provider_no_annotation_and_one_association() {
    let rig = rig();
    rig.reset();
    add_agent_by_hand(&rig);
    // No --identity: the agent makes Pod Identity the default.
    let out = rig.install(&[]);
    expect_code(&out, 0, "install");
    assert!(oidc_providers(&rig).is_empty(), "an OIDC provider was made: {:?}", oidc_providers(&rig));
    assert_eq!(role_annotation(&rig), "", "the ServiceAccount has a role annotation");
    let found = associations(&rig);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0]["namespace"].as_str(), found[0]["serviceAccount"].as_str()),
        (Some("kube-system"), Some("aws-load-balancer-controller"))
    );
    let id = found[0]["associationId"].as_str().unwrap();
    let association = rig.aws(&[
        "eks",
        "describe-pod-identity-association",
        "--cluster-name",
        &cluster(&rig),
        "--association-id",
        id,
    ]);
    assert!(association["association"]["roleArn"].as_str().unwrap().ends_with(&format!("role/{LBC_ROLE}")));
    let role = rig.aws(&["iam", "get-role", "--role-name", LBC_ROLE]);
    let trust = &role["Role"]["AssumeRolePolicyDocument"]["Statement"][0];
    assert_eq!(trust["Principal"], json!({"Service": "pods.eks.amazonaws.com"}), "{trust}");
    // Every controller pod has the agent's environment and not IRSA's; the ALB was built with it.
    for env in controller_env(&rig) {
        assert!(env.iter().any(|e| e == "AWS_CONTAINER_CREDENTIALS_FULL_URI"), "{env:?}");
        assert!(!env.iter().any(|e| e == "AWS_ROLE_ARN"), "{env:?}");
    }
    assert!(!rig.ingress_hostname("scalardb-graphql").is_empty());
    let report = green(&rig);
    for id in ["iam.pod-identity-agent", "iam.pod-identity-association", "iam.role-trust", "iam.pod-identity"] {
        assert_eq!(check(&report, id)["result"], "pass", "{id}");
    }
    assert!(report["checks"].as_array().unwrap().iter().all(|c| c["id"] != "iam.oidc-provider"), "{report}");

    // Without the association, a restarted controller gets no credentials from the agent.
    rig.aws(&["eks", "delete-pod-identity-association", "--cluster-name", &cluster(&rig), "--association-id", id]);
    fails(&rig, "iam.pod-identity-association", "has no pod identity association");
    rig.restart_controller();
    rig.another_alb_ingress("second");
    let warning = rig.ingress_refused("second", "failed to refresh cached credentials");
    assert!(warning.starts_with("FailedBuildModel: ") || warning.starts_with("FailedDeployModel: "), "{warning}");
    // install makes the association again and restarts the pods that predate it.
    let out = rig.install(&["--no-probe"]);
    expect_code(&out, 0, "install after the association was deleted");
    assert!(text(&out.stdout).contains("associated kube-system/aws-load-balancer-controller"), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("restarted Deployment aws-load-balancer-controller"), "{}", text(&out.stdout));
    rig.eventually("the second Ingress's ALB", 90, || !rig.ingress_hostname("second").is_empty());
    // Gone before uninstall: an Ingress of the controller's class keeps the controller and its IAM.
    rig.kubectl_ok(&["delete", "ingress", "second"]);

    // Uninstall: the association and the role go; the add-on the platform team added stays, and the plan says why.
    let plan = rig.plugin().args(["uninstall", "--dry-run"]).output().unwrap();
    assert!(
        text(&plan.stdout).contains(&format!("eks:Addon {AGENT}  (not added by this tool)")),
        "{}",
        text(&plan.stdout)
    );
    let out = rig.uninstall_ok();
    assert!(associations(&rig).is_empty(), "{:?} {}", associations(&rig), text(&out.stdout));
    assert_eq!(agent_status(&rig).as_deref(), Some("ACTIVE"), "the hand-added agent was removed");
    let out = rig.shell(&["aws", "iam", "get-role", "--role-name", LBC_ROLE]);
    assert_ne!(out.status.code(), Some(0), "the role was kept");
    rig.reset();
}

#[test]
fn status_fails_a_trust_naming_another_principal_and_pods_older_than_the_association_and_install_fixes_both() {
    let rig = rig();
    rig.reset();
    // No agent on the cluster: --identity pod-identity adds it, and uninstall removes it again.
    let out = rig.install(&["--identity", "pod-identity", "--no-probe"]);
    expect_code(&out, 0, "install --identity pod-identity");
    assert!(text(&out.stdout).contains(&format!("added add-on {AGENT}")), "{}", text(&out.stdout));
    assert_eq!(agent_status(&rig).as_deref(), Some("ACTIVE"));
    green(&rig);

    // A trust naming another service: the agent is refused the role.
    let other = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": "ec2.amazonaws.com"}, "Action": ["sts:AssumeRole", "sts:TagSession"]}]});
    rig.aws(&["iam", "update-assume-role-policy", "--role-name", LBC_ROLE, "--policy-document", &other.to_string()]);
    fails(&rig, "iam.role-trust", "Principal.Service is");
    rig.restart_controller();
    rig.another_alb_ingress("second");
    rig.ingress_refused("second", "failed to refresh cached credentials");
    let out = rig.install(&["--no-probe"]);
    expect_code(&out, 0, "install after the trust was changed");
    rig.restart_controller();
    rig.eventually("the second Ingress's ALB", 90, || !rig.ingress_hostname("second").is_empty());

    // Pods that started while there was no association keep no credentials when it comes back by hand.
    let id = associations(&rig)[0]["associationId"].as_str().unwrap().to_string();
    let role_arn = rig.aws(&["iam", "get-role", "--role-name", LBC_ROLE])["Role"]["Arn"].as_str().unwrap().to_string();
    rig.aws(&["eks", "delete-pod-identity-association", "--cluster-name", &cluster(&rig), "--association-id", &id]);
    rig.restart_controller();
    rig.aws(&[
        "eks",
        "create-pod-identity-association",
        "--cluster-name",
        &cluster(&rig),
        "--namespace",
        "kube-system",
        "--service-account",
        "aws-load-balancer-controller",
        "--role-arn",
        &role_arn,
    ]);
    fails(&rig, "iam.pod-identity", "controller pods without the association's credentials");
    rig.another_alb_ingress("third");
    rig.ingress_refused("third", "failed to refresh cached credentials");
    // The association is not this tool's now (no tags): install uses it only with --adopt.
    let out = rig.install(&["--no-probe"]);
    expect_code(&out, 0, "install over pods older than the association");
    assert!(text(&out.stdout).contains("restarted Deployment aws-load-balancer-controller"), "{}", text(&out.stdout));
    rig.eventually("the third Ingress's ALB", 90, || !rig.ingress_hostname("third").is_empty());
    for name in ["second", "third"] {
        rig.kubectl_ok(&["delete", "ingress", name]);
    }

    // The association made by hand stays, and so does the agent it needs, although install added it.
    let plan = rig.plugin().args(["uninstall", "--dry-run"]).output().unwrap();
    let plan = text(&plan.stdout);
    assert!(plan.contains("(not created by this tool)") && plan.contains("eks:PodIdentityAssociation"), "{plan}");
    assert!(plan.contains("(pod identity associations kube-system/aws-load-balancer-controller use it)"), "{plan}");
    let out = rig.uninstall_ok();
    assert_eq!(associations(&rig).len(), 1, "{}", text(&out.stdout));
    assert_eq!(agent_status(&rig).as_deref(), Some("ACTIVE"), "{}", text(&out.stdout));
    rig.reset();
}

#[test]
fn switching_an_irsa_release_to_pod_identity_and_back_keeps_the_alb_serving_and_leaves_nothing_of_the_other() {
    let rig = rig();
    rig.reset();
    let out = rig.install(&[]);
    expect_code(&out, 0, "install (IRSA: no agent on the cluster)");
    assert_eq!(oidc_providers(&rig).len(), 1);
    assert!(role_annotation(&rig).ends_with(LBC_ROLE));
    let hostname = rig.ingress_hostname("scalardb-graphql");

    // Requests through the ALB all along the two switches.
    let url = format!("{}/graphql?query=%7B__typename%7D", rig.get("RIG_ALB_URL"));
    let (stop, sent, failed) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let prober = {
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let ok = std::process::Command::new("curl")
                    .args(["-sf", "-o", "/dev/null", "--max-time", "5", &url])
                    .status()
                    .is_ok_and(|s| s.success());
                sent.fetch_add(1, Ordering::SeqCst);
                if !ok {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        })
    };

    let out = rig.install(&["--identity", "pod-identity"]);
    expect_code(&out, 0, "install --identity pod-identity over IRSA");
    assert_eq!(agent_status(&rig).as_deref(), Some("ACTIVE"));
    assert!(oidc_providers(&rig).is_empty(), "the OIDC provider install made stayed");
    assert_eq!(role_annotation(&rig), "");
    assert_eq!(associations(&rig).len(), 1);
    for env in controller_env(&rig) {
        assert!(
            env.iter().any(|e| e == "AWS_CONTAINER_CREDENTIALS_FULL_URI") && !env.iter().any(|e| e == "AWS_ROLE_ARN"),
            "{env:?}"
        );
    }
    assert_eq!(rig.ingress_hostname("scalardb-graphql"), hostname, "the ALB changed");
    green(&rig);
    // A re-run without the flag keeps the release's way and changes nothing.
    let out = rig.install(&["--dry-run"]);
    assert!(!text(&out.stdout).contains("OpenIDConnectProvider"), "{}", text(&out.stdout));

    let out = rig.install(&["--identity", "irsa"]);
    expect_code(&out, 0, "install --identity irsa over Pod Identity");
    assert!(associations(&rig).is_empty(), "the association install made stayed");
    assert_eq!(agent_status(&rig), None, "the agent install added stayed");
    assert_eq!(oidc_providers(&rig).len(), 1);
    assert!(role_annotation(&rig).ends_with(LBC_ROLE));
    assert_eq!(rig.ingress_hostname("scalardb-graphql"), hostname, "the ALB changed");
    green(&rig);

    stop.store(true, Ordering::SeqCst);
    prober.join().unwrap();
    let (sent, failed) = (sent.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    assert!(sent > 20, "only {sent} requests were sent");
    assert_eq!(failed, 0, "{failed} of {sent} requests through the ALB failed during the switches");
    rig.uninstall_ok();
    assert!(oidc_providers(&rig).is_empty() && associations(&rig).is_empty());
    rig.reset();
}

#[test]
fn pod_identity_is_refused_where_fargate_would_run_the_controller_and_bad_identity_is_bad_input() {
    let rig = rig();
    rig.reset();
    let out = rig.install(&["--identity", "kiam"]);
    expect_code(&out, 2, "install --identity kiam");
    let cluster = cluster(&rig);
    let role = rig.aws(&["iam", "create-role", "--role-name", "fargate-pods", "--assume-role-policy-document",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"eks-fargate-pods.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#]);
    let subnets = rig.aws(&["ec2", "describe-subnets"])["Subnets"].as_array().unwrap()[0]["SubnetId"]
        .as_str()
        .unwrap()
        .to_string();
    rig.aws(&[
        "eks",
        "create-fargate-profile",
        "--cluster-name",
        &cluster,
        "--fargate-profile-name",
        "kube-system",
        "--pod-execution-role-arn",
        role["Role"]["Arn"].as_str().unwrap(),
        "--subnets",
        &subnets,
        "--selectors",
        "namespace=kube-system",
    ]);
    let mark = rig.audit_mark();
    let out = rig.install(&["--identity", "pod-identity"]);
    expect_code(&out, 3, "install --identity pod-identity with Fargate running kube-system");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("Fargate profile kube-system") && stderr.contains("--identity irsa"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(rig.kube_mutations_since(mark).is_empty(), "{:?}", rig.kube_mutations_since(mark));
    // With the agent there too, the default is still IRSA: Fargate runs the controller.
    add_agent_by_hand(&rig);
    let out = rig.install(&["--dry-run", "-o", "json"]);
    expect_code(&out, 0, "install --dry-run");
    assert!(text(&out.stdout).contains("iam:CreateOpenIDConnectProvider"), "{}", text(&out.stdout));
    assert!(!text(&out.stdout).contains("eks:CreatePodIdentityAssociation"), "{}", text(&out.stdout));
    rig.reset();
}
