//! `status` against the rig: all green after an install, each fault caught
//! by the check that names it and by no other, and never a mutating call.

mod common;

use common::{Rig, expect_code, failing, rig, status_json, text};
use serde_json::Value;

#[test]
fn after_an_install_every_check_passes_in_text_and_json() {
    let rig = rig();
    rig.reset();
    rig.install_ok();
    let out = rig.status(&[]);
    expect_code(&out, 0, "status");
    let stdout = text(&out.stdout);
    for heading in ["cluster", "iam", "lb-controller", "subnets", "nodes", "graphql release", "ingress", "alb", "probe"]
    {
        assert!(stdout.lines().any(|l| l == heading), "no {heading} section:\n{stdout}");
    }
    // Green but the standalone chart's end of support: its one warning, and nothing else.
    assert!(!stdout.contains('×'), "{stdout}");
    let warned: Vec<&str> = stdout.lines().filter(|l| l.starts_with('‼')).collect();
    assert_eq!(warned.len(), 1, "{stdout}");
    assert!(warned[0].contains("support ended on 2026-05-21") && warned[0].contains("--target cluster"), "{stdout}");
    assert!(stdout.contains("sticky: 10/10 requests kept the transaction"), "{stdout}");
    assert!(stdout.contains("Status check results are ‼ (1 warning)"), "{stdout}");

    let (code, report) = status_json(&rig, &[]);
    assert_eq!(code, Some(0));
    let checks = report["checks"].as_array().unwrap();
    assert!(checks.len() >= 30, "{report}");
    for c in checks {
        assert!(c["result"] == "pass" || common::end_of_support_warning(c), "{c}");
        for field in ["id", "category", "message"] {
            assert!(c[field].is_string(), "{c} lacks {field}");
        }
    }
    assert_eq!(report["summary"]["failed"], 0);
    rig.reset();
}

#[test]
fn status_runs_no_helm_and_passes_with_none_on_path() {
    let rig = rig();
    rig.reset();
    rig.install_ok();
    // Nothing but the system's directories on PATH: no helm anywhere (nor HELM_BIN).
    let out = rig.plugin().env("PATH", "/usr/bin:/bin").args(["status", "-o", "json"]).output().unwrap();
    assert!(!std::path::Path::new("/usr/bin/helm").exists() && !std::path::Path::new("/bin/helm").exists());
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{:?}", failing(&report));
    let checks = report["checks"].as_array().unwrap();
    // All green but the standalone server's end of support, which is a warning (exit 0).
    assert!(checks.iter().all(|c| c["result"] == "pass" || common::end_of_support_warning(c)), "{report}");
    assert!(!checks.iter().any(|c| c["id"] == "cluster.helm"), "status checked helm: {report}");
    // install, which runs helm, still checks it.
    let out = rig.plugin().env("PATH", "/usr/bin:/bin").args(rig.install_args()).output().unwrap();
    expect_code(&out, 3, "install without helm");
    assert!(text(&out.stderr).contains("helm not found on PATH"), "{}", text(&out.stderr));
    rig.reset();
}

#[test]
fn status_makes_no_mutating_call() {
    let rig = rig();
    rig.reset();
    rig.install_ok();
    let (out, calls) = rig.without_mutation("status", || rig.status(&[]));
    expect_code(&out, 0, "status");
    assert!(calls.iter().any(|c| c == "DescribeTargetGroupAttributes"), "{calls:?}");
    rig.reset();
}

/// The calls a traced status made (`KUBECTL_SCALARDB_GRAPHQL_TRACE`): each started call's name.
fn traced_calls(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.starts_with("trace ") && !l.contains(" done in "))
        .map(|l| {
            l.split_once(" #").and_then(|(_, rest)| rest.split_once(' ')).map(|(_, what)| what.to_string()).unwrap()
        })
        .collect()
}

#[test]
fn a_traced_status_names_each_call_and_reads_what_several_checks_share_once() {
    let rig = rig();
    rig.reset();
    rig.install_ok();
    let out = rig.plugin().env("KUBECTL_SCALARDB_GRAPHQL_TRACE", "1").args(["status", "-o", "json"]).output().unwrap();
    expect_code(&out, 0, "traced status");
    let stderr = text(&out.stderr);
    let calls = traced_calls(&stderr);
    let count = |what: &str| calls.iter().filter(|c| c.as_str() == what).count();
    // Every call that starts ends, and says how long it took.
    assert_eq!(
        stderr.lines().filter(|l| l.contains(" done in ") && l.ends_with(" ms")).count(),
        calls.len(),
        "{stderr}"
    );
    assert_eq!(count("AWS EKS DescribeCluster"), 1, "{calls:#?}");
    // Read by the GraphQL release, the ALB, the readiness gates and the nodes' checks: once.
    assert_eq!(count("the Kubernetes API server (GET /api/v1/namespaces/default/pods)"), 1, "{calls:#?}");
    assert_eq!(
        count("the Kubernetes API server (GET /apis/networking.k8s.io/v1/namespaces/default/ingresses)"),
        1,
        "{calls:#?}"
    );
    assert_eq!(
        count("the Kubernetes API server (GET /apis/apps/v1/namespaces/kube-system/deployments)"),
        1,
        "{calls:#?}"
    );
    // The ALB's and its target groups' tags in one call; nothing of Pod Identity's for an IRSA release.
    assert_eq!(count("AWS Elastic Load Balancing v2 DescribeTags"), 1, "{calls:#?}");
    assert!(!calls.iter().any(|c| c.contains("PodIdentity") || c.contains("DescribeAddon")), "{calls:#?}");
    rig.reset();
}

/// A fault in the GraphQL Ingress: one annotation set by hand.
fn annotate_ingress(rig: &Rig, annotation: &str) {
    rig.kubectl_ok(&["annotate", "--overwrite", "ingress", "scalardb-graphql", annotation]);
}

/// Changes the controller role's trust policy by hand.
fn edit_trust(rig: &Rig, edit: impl FnOnce(&mut Value)) {
    const ROLE: &str = "scalardb-graphql-rig-aws-load-balancer-controller";
    let mut doc = rig.aws(&["iam", "get-role", "--role-name", ROLE])["Role"]["AssumeRolePolicyDocument"].clone();
    edit(&mut doc);
    rig.aws(&["iam", "update-assume-role-policy", "--role-name", ROLE, "--policy-document", &doc.to_string()]);
}

/// Each fault, made by hand on an install that passes every check, and the one check
/// that must catch it; then undone, and every check passes again before the next.
#[test]
fn each_fault_is_caught_by_the_check_that_names_it_and_only_that_one() {
    let rig = rig();
    type Fault = Box<dyn Fn(&Rig)>;
    let faults: Vec<(&str, &str, Fault)> = vec![
        ("stickiness off at the data plane", "probe.sticky", Box::new(|r: &Rig| r.dataplane(&["sticky", "off"]))),
        (
            "stickiness.enabled=false on the target group",
            "alb.stickiness",
            Box::new(|r: &Rig| {
                let tg = r.aws(&["elbv2", "describe-target-groups"])["TargetGroups"][0]["TargetGroupArn"]
                    .as_str()
                    .unwrap()
                    .to_string();
                r.aws(&[
                    "elbv2",
                    "modify-target-group-attributes",
                    "--target-group-arn",
                    &tg,
                    "--attributes",
                    "Key=stickiness.enabled,Value=false",
                ]);
            }),
        ),
        (
            // The controller refuses it too (a ClusterIP Service cannot take instance targets).
            "target-type instance",
            "ingress.target-type ingress.controller-events",
            Box::new(|r: &Rig| {
                annotate_ingress(r, "alb.ingress.kubernetes.io/target-type=instance");
            }),
        ),
        (
            // ELBv2 refuses the key, and the controller says so.
            "a misspelled stickiness key",
            "ingress.stickiness ingress.controller-events",
            Box::new(|r: &Rig| {
                annotate_ingress(r, "alb.ingress.kubernetes.io/target-group-attributes=stickness.enabled=true");
            }),
        ),
        (
            "a trust policy with the wrong :sub",
            "iam.role-trust",
            Box::new(|r: &Rig| {
                edit_trust(r, |doc| {
                    *doc = serde_json::from_str(
                        &doc.to_string().replace("kube-system:aws-load-balancer-controller", "default:someone-else"),
                    )
                    .unwrap()
                })
            }),
        ),
        (
            "a trust policy that also trusts another account",
            "iam.role-trust",
            Box::new(|r: &Rig| {
                edit_trust(r, |doc| {
                    doc["Statement"][0]["Principal"]["AWS"] = Value::from("arn:aws:iam::210987654321:root")
                })
            }),
        ),
        (
            "the ServiceAccount annotation removed",
            "iam.service-account",
            Box::new(|r: &Rig| {
                r.kubectl_ok(&[
                    "-n",
                    "kube-system",
                    "annotate",
                    "serviceaccount",
                    "aws-load-balancer-controller",
                    "eks.amazonaws.com/role-arn-",
                ]);
            }),
        ),
        (
            "a subnet tag removed, leaving one zone",
            "subnets.internal-elb",
            Box::new(|r: &Rig| {
                let s = r.aws(&["ec2", "describe-subnets", "--filters", "Name=tag:Name,Values=*private-us-east-1a"]);
                let id = s["Subnets"][0]["SubnetId"].as_str().unwrap().to_string();
                r.aws(&["ec2", "delete-tags", "--resources", &id, "--tags", "Key=kubernetes.io/role/internal-elb"]);
            }),
        ),
        (
            "a taint removed from a dedicated node",
            "nodes.dedicated",
            Box::new(|r: &Rig| {
                r.kubectl_ok(&["taint", "node", "graphql-2", "kubernetes.io/app-"]);
            }),
        ),
        (
            "a GraphQL pod not Ready",
            "graphql.pods",
            Box::new(|r: &Rig| {
                let pods = r.kubectl_json(&["get", "pods", "-l", "app.kubernetes.io/instance=scalardb-graphql"]);
                let name = pods["items"][0]["metadata"]["name"].as_str().unwrap().to_string();
                let patch = r#"{"status":{"conditions":[{"type":"Ready","status":"False"},{"type":"ContainersReady","status":"False"}]}}"#;
                r.kubectl_ok(&["patch", "pod", &name, "--subresource=status", "--type=strategic", "-p", patch]);
            }),
        ),
        (
            "the controller scaled to zero",
            "lb-controller.deployment",
            Box::new(|r: &Rig| {
                r.kubectl_ok(&[
                    "-n",
                    "kube-system",
                    "scale",
                    "deployment",
                    "aws-load-balancer-controller",
                    "--replicas=0",
                ]);
                r.eventually("the controller's pods to go", 30, || {
                    r.kubectl_json(&["-n", "kube-system", "get", "pods"])["items"].as_array().unwrap().is_empty()
                });
            }),
        ),
        (
            "the registry Secret deleted",
            "graphql.registry-secret",
            Box::new(|r: &Rig| {
                r.kubectl_ok(&["delete", "secret", "reg-docker-secrets"]);
            }),
        ),
    ];
    rig.reset();
    rig.install_ok();
    let ingress_annotations =
        rig.kubectl_json(&["get", "ingress", "scalardb-graphql", "-o", "json"])["metadata"]["annotations"].clone();
    for (what, id, fault) in faults {
        let (code, report) = status_json(&rig, &[]);
        assert_eq!((code, failing(&report)), (Some(0), vec![]), "before {what}: {report:#}");
        fault(&rig);
        // Give the rig's controller a moment to react, as it would on EKS.
        std::thread::sleep(std::time::Duration::from_secs(2));
        let (code, report) = status_json(&rig, &[]);
        let ids: Vec<&str> = id.split(' ').collect();
        assert_eq!(failing(&report), ids, "{what}: {report:#}");
        assert_eq!(code, Some(1), "{what}");
        for id in &ids {
            let check = report["checks"].as_array().unwrap().iter().find(|c| c["id"] == *id).unwrap().clone();
            assert!(check["hint"].is_string(), "{what}: a failure without a hint: {check}");
        }
        undo(&rig, ids[0], &ingress_annotations);
    }
    rig.reset();
}

/// Takes back the fault `id` names: by hand where install leaves it (it does not touch
/// what only drifted from the chart, a pod's status, a replica count), else by re-running install.
fn undo(rig: &Rig, id: &str, ingress_annotations: &Value) {
    match id {
        "probe.sticky" => rig.dataplane(&["sticky", "on"]),
        "alb.stickiness" => {
            let tg = rig.aws(&["elbv2", "describe-target-groups"])["TargetGroups"][0]["TargetGroupArn"]
                .as_str()
                .unwrap()
                .to_string();
            let on = ["--attributes", "Key=stickiness.enabled,Value=true"];
            rig.aws(&[&["elbv2", "modify-target-group-attributes", "--target-group-arn", &tg][..], &on].concat());
        }
        "ingress.target-type" | "ingress.stickiness" => {
            let key = format!("alb.ingress.kubernetes.io/{}", id.trim_start_matches("ingress."));
            let key = if id == "ingress.stickiness" {
                "alb.ingress.kubernetes.io/target-group-attributes".to_string()
            } else {
                key
            };
            let value = ingress_annotations[&key].as_str().unwrap();
            annotate_ingress(rig, &format!("{key}={value}"));
        }
        "graphql.pods" => {
            let pods = rig.kubectl_json(&["get", "pods", "-l", "app.kubernetes.io/instance=scalardb-graphql"]);
            for p in pods["items"].as_array().unwrap() {
                let ready = p["status"]["conditions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
                if !ready {
                    rig.kubectl_ok(&["delete", "pod", p["metadata"]["name"].as_str().unwrap()]);
                }
            }
        }
        "lb-controller.deployment" => {
            rig.kubectl_ok(&[
                "-n",
                "kube-system",
                "scale",
                "deployment",
                "aws-load-balancer-controller",
                "--replicas=2",
            ]);
        }
        _ => {
            rig.install_ok();
        }
    }
    // Every check passes again (the controller and the probe may take a moment).
    let out = rig.status(&["--wait", "--timeout", "90s"]);
    expect_code(&out, 0, &format!("status after undoing the fault {id}"));
}

#[test]
fn wait_shows_the_last_state_and_exits_4_on_timeout_and_category_selects() {
    let rig = rig();
    rig.reset();
    rig.install_ok();
    rig.dataplane(&["sticky", "off"]);
    // Long enough for a whole round on a loaded machine: the state shown is the last whole round's.
    let out = rig.status(&["--wait", "--timeout", "20s"]);
    expect_code(&out, 4, "status --wait with a fault");
    assert!(
        text(&out.stdout).contains("× the ALB set no AWSALB cookie"),
        "the last state is shown: {}",
        text(&out.stdout)
    );
    let (code, report) = status_json(&rig, &["--category", "alb,ingress"]);
    assert_eq!(code, Some(0), "the fault is outside the chosen categories");
    let categories: std::collections::BTreeSet<&str> =
        report["checks"].as_array().unwrap().iter().map(|c| c["category"].as_str().unwrap()).collect();
    assert_eq!(categories.into_iter().collect::<Vec<_>>(), ["alb", "ingress"]);
    let out = rig.plugin().args(["status", "--no-probe"]).output().unwrap();
    assert!(text(&out.stdout).contains("‼ not probed (--no-probe)"), "{}", text(&out.stdout));
    rig.reset();
}

#[test]
fn pods_on_nodes_an_earlier_install_dedicated_pass_placement_after_nodes_are_named_anew() {
    let rig = rig();
    rig.reset();
    rig.install_ok();
    // Named anew: graphql-3 keeps the pool label and the taint, and the pods on it stay.
    expect_code(&rig.install(&["--nodes", "graphql-1,graphql-2"]), 0, "install --nodes graphql-1,graphql-2");
    let (code, report) = status_json(&rig, &["--category", "nodes"]);
    let placement = report["checks"].as_array().unwrap().iter().find(|c| c["id"] == "nodes.placement").unwrap();
    assert_eq!(placement["result"], "pass", "{report:#}");
    assert_eq!(code, Some(0), "{report:#}");
    // A node that has lost its taint is no longer dedicated in effect.
    rig.kubectl_ok(&["taint", "node", "graphql-3", "kubernetes.io/app-"]);
    let (code, report) = status_json(&rig, &["--category", "nodes"]);
    let placement = report["checks"].as_array().unwrap().iter().find(|c| c["id"] == "nodes.placement").unwrap();
    let hosts = rig.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/instance=scalardb-graphql",
        "-o",
        "jsonpath={.items[*].spec.nodeName}",
    ]);
    assert!(hosts.contains("graphql-3"), "no GraphQL pod on graphql-3 to prove the failure with: {hosts}");
    assert_eq!(placement["result"], "fail", "a pod on an untainted, unnamed node passed: {report:#}");
    assert!(placement["message"].as_str().unwrap().contains("on graphql-3"), "{placement}");
    assert_eq!(code, Some(1));
    rig.reset();
}

#[test]
fn before_any_install_status_fails_with_hints() {
    let rig = rig();
    rig.reset();
    let (code, report) = status_json(&rig, &[]);
    assert_eq!(code, Some(1));
    let fails = failing(&report);
    for id in ["iam.oidc-provider", "iam.role", "lb-controller.release", "graphql.release"] {
        assert!(fails.contains(&id.to_string()), "{id} should fail: {fails:?}");
    }
}
