//! EKS Auto Mode runs its own ALB controller: on such a cluster install makes
//! no controller, IAM or webhook, only the IngressClass (controller
//! `eks.amazonaws.com/alb`) and its internal `IngressClassParams`, and the
//! ALB, stickiness and probe are checked as anywhere. `--lb-controller
//! self-managed` there installs the controller beside Auto Mode's, with
//! another IngressClass name and no Service webhook.

mod common;

use serde_json::Value;

use common::{LBC_ROLE, Rig, check, end_of_support_warning, expect_code, rig, text};

const CLASS: &str = "scalardb-graphql-alb";

fn auto_mode(rig: &Rig, on: bool) {
    let out = rig.shell(&["rig", "eks", "auto-mode", if on { "on" } else { "off" }]);
    expect_code(&out, 0, "rig eks auto-mode");
}

fn exists(rig: &Rig, args: &[&str]) -> bool {
    rig.kubectl(&[&["get"], args].concat()).status.success()
}

/// The non-passing checks of a full status (the probe's transaction included), with its exit code.
fn status(rig: &Rig) -> (Option<i32>, Value, Vec<String>) {
    let out = rig.status(&["-o", "json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stderr)));
    let not_passing = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["result"] != "pass" && !end_of_support_warning(c))
        .map(|c| format!("{} {}", c["id"].as_str().unwrap(), c["result"].as_str().unwrap()))
        .collect();
    (out.status.code(), report, not_passing)
}

#[test]
fn on_auto_mode_install_makes_no_controller_iam_or_webhook_and_status_is_green_through_its_alb() {
    let rig = rig();
    rig.reset();
    auto_mode(&rig, true);
    let clean = rig.snapshot();
    let out = rig.install(&[]);
    expect_code(&out, 0, "install on Auto Mode");

    // Nothing of the self-managed controller: no release, IAM, OIDC provider, webhook or readiness label.
    assert!(!exists(&rig, &["deployment", "-n", "kube-system", "aws-load-balancer-controller"]));
    assert!(!exists(&rig, &["mutatingwebhookconfiguration", "aws-load-balancer-webhook"]));
    assert!(!rig.shell(&["aws", "iam", "get-role", "--role-name", LBC_ROLE]).status.success());
    let providers = rig.aws(&["iam", "list-open-id-connect-providers"]);
    assert_eq!(providers["OpenIDConnectProviderList"], serde_json::json!([]), "{providers}");
    let ns = rig.kubectl_json(&["get", "namespace", "default"]);
    assert!(ns["metadata"]["labels"].get("elbv2.k8s.aws/pod-readiness-gate-inject").is_none(), "{ns}");

    // The class and its internal parameters, and the Ingress on them.
    let class = rig.kubectl_json(&["get", "ingressclass", CLASS]);
    assert_eq!(class["spec"]["controller"], "eks.amazonaws.com/alb", "{class}");
    assert_eq!(class["spec"]["parameters"]["kind"], "IngressClassParams", "{class}");
    let params = rig.kubectl_json(&["get", "ingressclassparams.eks.amazonaws.com", CLASS]);
    assert_eq!(params["spec"]["scheme"], "internal", "{params}");
    let ing = rig.kubectl_json(&["get", "ingress", "scalardb-graphql"]);
    assert_eq!(ing["spec"]["ingressClassName"], CLASS, "{ing}");
    assert!(!rig.ingress_hostname("scalardb-graphql").is_empty());
    let lbs = rig.aws(&["elbv2", "describe-load-balancers"])["LoadBalancers"].clone();
    assert_eq!(lbs.as_array().unwrap().len(), 1, "{lbs}");
    assert_eq!(lbs[0]["Scheme"], "internal", "{lbs}");

    // status: green through Auto Mode's ALB, with one warning: rollouts are not gated.
    let (code, report, not_passing) = status(&rig);
    assert_eq!(code, Some(0), "{not_passing:?}");
    assert_eq!(not_passing, vec!["graphql.readiness-gates warn".to_string()], "{report}");
    for id in
        ["lb-controller.auto-mode", "lb-controller.ingress-class", "ingress.class", "alb.stickiness", "probe.sticky"]
    {
        assert_eq!(check(&report, id)["result"], "pass", "{id}: {report}");
    }
    assert!(report["checks"].as_array().unwrap().iter().all(|c| !c["id"].as_str().unwrap().starts_with("iam.")));

    // A re-run changes nothing; uninstall leaves the cluster as it found it.
    let out = rig.install(&["--dry-run", "-o", "json"]);
    expect_code(&out, 0, "install --dry-run");
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mutating: Vec<_> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["actions"].as_array().unwrap().iter())
        .filter(|a| a["system"] != "wait" && a["verb"] != "keep")
        .collect();
    assert!(mutating.is_empty(), "{mutating:?}");
    rig.uninstall_ok();
    assert!(!exists(&rig, &["ingressclass", CLASS]) && !exists(&rig, &["ingressclassparams.eks.amazonaws.com", CLASS]));
    rig.eventually_same(&clean, "the cluster as before install");
    rig.reset();
    let described = rig.aws(&["eks", "describe-cluster", "--name", rig.get("RIG_CLUSTER_NAME")]);
    assert_ne!(described["cluster"]["computeConfig"]["enabled"], true, "reset left Auto Mode on");
}

#[test]
fn self_managed_beside_auto_mode_serves_another_class_without_its_service_webhook() {
    let rig = rig();
    rig.reset();
    auto_mode(&rig, true);
    let out = rig.install(&["--lb-controller", "self-managed"]);
    expect_code(&out, 0, "install --lb-controller self-managed on Auto Mode");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("EKS Auto Mode runs its own ALB controller") && stderr.contains("alb-self-managed"),
        "{stderr}"
    );
    let class = rig.kubectl_json(&["get", "ingressclass", "alb-self-managed"]);
    assert_eq!(class["spec"]["controller"], "ingress.k8s.aws/alb", "{class}");
    let ing = rig.kubectl_json(&["get", "ingress", "scalardb-graphql"]);
    assert_eq!(ing["spec"]["ingressClassName"], "alb-self-managed", "{ing}");
    let webhook = rig.kubectl_json(&["get", "mutatingwebhookconfiguration", "aws-load-balancer-webhook"]);
    let names: Vec<&str> =
        webhook["webhooks"].as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap()).collect();
    assert!(!names.iter().any(|n| n.contains("mservice")), "the Service webhook is on: {names:?}");
    let (code, report, not_passing) = status(&rig);
    assert_eq!(code, Some(0), "{not_passing:?}");
    assert!(not_passing.is_empty(), "{not_passing:?}");
    assert_eq!(check(&report, "ingress.class")["result"], "pass");
    // The release keeps its controller: asking for Auto Mode's now is refused, in one line, changing nothing.
    let (out, _) = rig.without_mutation("install --lb-controller auto-mode over self-managed", || {
        rig.install(&["--lb-controller", "auto-mode"])
    });
    expect_code(&out, 3, "switching controllers");
    assert_eq!(text(&out.stderr).trim().lines().count(), 1, "{}", text(&out.stderr));
    rig.uninstall_ok();
    assert!(!exists(&rig, &["ingressclass", "alb-self-managed"]));
    rig.reset();
}

#[test]
fn auto_mode_asked_of_a_cluster_without_it_is_refused_in_one_line_changing_nothing() {
    let rig = rig();
    rig.reset();
    let (out, _) =
        rig.without_mutation("install --lb-controller auto-mode", || rig.install(&["--lb-controller", "auto-mode"]));
    expect_code(&out, 3, "install --lb-controller auto-mode without Auto Mode");
    let stderr = text(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("is not in EKS Auto Mode") && stderr.contains("drop --lb-controller"), "{stderr}");
    let out = rig.install(&["--lb-controller", "manual"]);
    expect_code(&out, 2, "install --lb-controller manual");
    rig.reset();
}
