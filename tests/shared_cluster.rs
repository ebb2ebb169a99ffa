//! A shared cluster: several releases of this tool, other teams, a controller
//! someone else installed. Uninstall removes nothing another user still needs
//! (it counts them on the live cluster and says which one), the last release
//! to go removes what they shared, a namespace goes only when nothing but
//! this release's objects is left in it, and changing runs on the shared
//! pieces take turns cluster-wide.

mod common;

use std::process::{Output, Stdio};

use serde_json::json;

use common::{Rig, expect_code, rig, text};

const SECOND: &[&str] = &["--release", "second", "-n", "team2", "--no-dedicated-nodes"];

fn words(out: &Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

fn uninstall(rig: &Rig, extra: &[&str]) -> Output {
    rig.plugin().args(["uninstall", "-y", "--timeout", "120s"]).args(extra).output().expect("running uninstall")
}

fn status_code(rig: &Rig, extra: &[&str]) -> (Option<i32>, String) {
    let out = rig.status(&[&["--no-probe"], extra].concat());
    (out.status.code(), words(&out))
}

fn controller_release_there(rig: &Rig) -> bool {
    rig.cmd("helm")
        .args(["status", "aws-load-balancer-controller", "-n", "kube-system"])
        .output()
        .unwrap()
        .status
        .success()
}

fn namespace_gone_or_going(rig: &Rig, ns: &str) -> bool {
    let out = rig.kubectl(&["get", "namespace", ns, "-o", "json"]);
    !out.status.success()
        || serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["metadata"]["deletionTimestamp"]
            .is_string()
}

#[test]
fn two_releases_uninstalled_in_either_order_keep_what_the_other_uses_and_the_last_removes_it() {
    let rig = rig();
    rig.reset();
    let before = rig.snapshot();
    for first_goes in ["second", "default"] {
        rig.install_ok();
        let out = rig.install(SECOND);
        expect_code(&out, 0, "install of a second release in team2");
        let (first, first_args, other, other_args): (&str, &[&str], &str, &[&str]) = if first_goes == "second" {
            ("team2/second", SECOND, "default/scalardb-graphql", &[])
        } else {
            ("default/scalardb-graphql", &[], "team2/second", SECOND)
        };
        let first_args: Vec<&str> = first_args.iter().copied().filter(|a| *a != "--no-dedicated-nodes").collect();
        let other_args: Vec<&str> = other_args.iter().copied().filter(|a| *a != "--no-dedicated-nodes").collect();
        // The plan says so before anything happens.
        let dry = rig.plugin().args(["uninstall", "--dry-run"]).args(&first_args).output().unwrap();
        expect_code(&dry, 0, "uninstall --dry-run");
        let plan = text(&dry.stdout);
        let still = format!("release {other} still uses it");
        assert!(
            plan.contains(&format!("= helm release kube-system/aws-load-balancer-controller  ({still})")),
            "{first} first, plan:\n{plan}"
        );
        let out = uninstall(&rig, &first_args);
        expect_code(&out, 0, &format!("uninstall of {first}"));
        let said = words(&out);
        assert!(!said.contains("uninstalled release kube-system/aws-load-balancer-controller"), "{said}");
        assert!(!said.contains("deleted IAM role"), "{said}");
        assert!(said.contains(&format!("kept release kube-system/aws-load-balancer-controller: {still}")), "{said}");
        assert!(said.contains("kept iam:Role"), "{said}");
        // Kept because another release of this tool uses it: that release removes it; no record stays here.
        assert!(said.contains("and what install created"), "{said}");
        assert!(controller_release_there(&rig));
        let (code, report) = status_code(&rig, &other_args);
        assert_eq!(code, Some(0), "the other release lost what it needs:\n{report}");
        if first_goes == "second" {
            assert!(namespace_gone_or_going(&rig, "team2"), "install made team2 and nothing else is in it:\n{said}");
        }
        // The last one removes what they shared.
        let out = uninstall(&rig, &other_args);
        expect_code(&out, 0, &format!("uninstall of {other}"));
        let said = words(&out);
        for gone in [
            "uninstalled release kube-system/aws-load-balancer-controller",
            "deleted IAM role",
            "deleted IAM policy",
            "deleted IAM OIDC provider",
            "removed kubernetes.io/role/internal-elb",
            "deleted CRD",
        ] {
            assert!(said.contains(gone), "{gone:?} missing after {other} went last:\n{said}");
        }
        rig.eventually_same(&before, &format!("the snapshot after {first}, then {other}"));
    }
}

#[test]
fn an_ingress_of_another_ingressclass_of_the_controller_keeps_it() {
    let rig = rig();
    rig.reset();
    rig.install_ok();
    rig.kubectl_ok(&["create", "namespace", "team-b"]);
    rig.kubectl_apply(&json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "alb-internal"},
         "spec": {"controller": "ingress.k8s.aws/alb"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "team-b"},
         "spec": {"ports": [{"port": 80, "targetPort": 8080}], "selector": {"app": "web"}}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web", "namespace": "team-b",
            "annotations": {"alb.ingress.kubernetes.io/target-type": "ip"}},
         "spec": {"ingressClassName": "alb-internal",
                  "defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}},
    ]}));
    let out = rig.uninstall_ok();
    let said = words(&out);
    assert!(
        said.contains(
            "kept release kube-system/aws-load-balancer-controller: the controller still serves Ingress team-b/web"
        ),
        "{said}"
    );
    assert!(said.contains("class alb-internal"), "{said}");
    assert!(said.contains("the install record default/scalardb-graphql-install-record stays"), "{said}");
    assert!(controller_release_there(&rig));
    // Once that Ingress is gone, the record left behind lets uninstall finish the job.
    rig.kubectl_ok(&["delete", "namespace", "team-b", "--wait=true"]);
    let out = rig.uninstall_ok();
    assert!(said_contains(&out, "uninstalled release kube-system/aws-load-balancer-controller"), "{}", words(&out));
    assert!(!controller_release_there(&rig));
    rig.reset();
}

fn said_contains(out: &Output, needle: &str) -> bool {
    words(out).contains(needle)
}

#[test]
fn a_namespace_install_made_is_deleted_only_when_nothing_else_is_in_it() {
    let rig = rig();
    rig.reset();
    let args = ["--release", "second", "-n", "team2"];
    let out = rig.install(&[&args[..], &["--no-dedicated-nodes"]].concat());
    expect_code(&out, 0, "install into a new namespace");
    // Another team puts its own ConfigMap there.
    rig.kubectl_ok(&["-n", "team2", "create", "configmap", "team-settings", "--from-literal=a=b"]);
    let dry = rig.plugin().args(["uninstall", "--dry-run"]).args(args).output().unwrap();
    let plan = text(&dry.stdout);
    assert!(
        plan.contains("= kubernetes Namespace team2  (it still holds ConfigMap team-settings)"),
        "the plan shows what keeps it:\n{plan}"
    );
    let out = uninstall(&rig, &args);
    expect_code(&out, 0, "uninstall");
    assert!(said_contains(&out, "kept Namespace team2: it still holds ConfigMap team-settings"), "{}", words(&out));
    rig.kubectl_ok(&["-n", "team2", "get", "configmap", "team-settings"]);
    assert!(!namespace_gone_or_going(&rig, "team2"));
    // Without it, the plan deletes the namespace, and so does uninstall.
    rig.kubectl_ok(&["delete", "namespace", "team2", "--wait=true"]);
    expect_code(&rig.install(&[&args[..], &["--no-dedicated-nodes"]].concat()), 0, "install again");
    let dry = rig.plugin().args(["uninstall", "--dry-run"]).args(args).output().unwrap();
    assert!(text(&dry.stdout).contains("- kubernetes Namespace team2"), "{}", text(&dry.stdout));
    let out = uninstall(&rig, &args);
    expect_code(&out, 0, "uninstall");
    assert!(said_contains(&out, "deleted namespace team2, which install created"), "{}", words(&out));
    assert!(namespace_gone_or_going(&rig, "team2"));
    rig.reset();
}

#[test]
fn skip_lb_controller_leaves_the_service_account_of_a_controller_installed_by_hand_alone() {
    let rig = rig();
    rig.reset();
    let vpc = rig.vpc();
    // Their controller's IRSA, made by hand before their helm install.
    rig.controller_irsa();
    let theirs = format!("arn:aws:iam::123456789012:role/{}", common::HAND_LBC_ROLE);
    let helm = rig
        .cmd("helm")
        .args(["install", "aws-load-balancer-controller", "aws-load-balancer-controller", "-n", "kube-system"])
        .args(["--repo", rig.get("RIG_CHART_REPO_URL"), "--version", "3.5.0"])
        .args(["--set", &format!("clusterName={}", rig.get("RIG_CLUSTER_NAME")), "--set", "region=us-east-1"])
        .args(["--set", &format!("vpcId={vpc}")])
        .args(["--set-string", &format!("serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn={theirs}")])
        .output()
        .unwrap();
    expect_code(&helm, 0, "helm install of the controller by hand");
    rig.eventually("the hand-installed controller", 60, || {
        rig.kubectl(&[
            "-n",
            "kube-system",
            "rollout",
            "status",
            "deployment/aws-load-balancer-controller",
            "--timeout=1s",
        ])
        .status
        .success()
    });
    let sa = || rig.kubectl_json(&["-n", "kube-system", "get", "serviceaccount", "aws-load-balancer-controller"]);
    let generation = || {
        rig.kubectl_json(&["-n", "kube-system", "get", "deployment", "aws-load-balancer-controller"])["metadata"]
            ["generation"]
            .clone()
    };
    let (sa_before, generation_before) = (sa(), generation());
    let out = rig.install(&["--skip-lb-controller"]);
    expect_code(&out, 0, "install --skip-lb-controller");
    assert_eq!(
        sa()["metadata"]["annotations"],
        sa_before["metadata"]["annotations"],
        "install changed their ServiceAccount"
    );
    assert_eq!(generation(), generation_before, "install restarted their controller");
    let iam = rig.aws(&["iam", "list-roles"]);
    let roles: Vec<&str> = iam["Roles"].as_array().unwrap().iter().map(|r| r["RoleName"].as_str().unwrap()).collect();
    assert_eq!(roles, [common::HAND_LBC_ROLE], "install made IAM for a controller it does not manage: {iam}");
    let out = rig.uninstall_ok();
    assert_eq!(
        sa()["metadata"]["annotations"],
        sa_before["metadata"]["annotations"],
        "uninstall changed it:\n{}",
        words(&out)
    );
    assert!(controller_release_there(&rig), "{}", words(&out));
    rig.reset();
}

#[test]
fn an_install_and_an_uninstall_started_together_take_turns_and_both_end_consistent() {
    let rig = rig();
    rig.reset();
    let before = rig.snapshot();
    rig.install_ok();
    let mut remove_first = rig.plugin();
    remove_first.args(["uninstall", "-y", "--timeout", "120s"]);
    let mut add_second = rig.plugin();
    add_second.args(rig.install_args()).args(SECOND);
    let a = remove_first.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let b = add_second.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let (a_code, b_code) = (a.status.code(), b.status.code());
    eprintln!("uninstall of the first: {a_code:?}; install of the second: {b_code:?}");
    // One may have found the other holding the cluster's Lease: it stops, naming it, and changed nothing shared.
    for (out, code) in [(&a, a_code), (&b, b_code)] {
        assert!(matches!(code, Some(0) | Some(3)), "{}", words(out));
        if code == Some(3) {
            let err = text(&out.stderr);
            assert!(err.contains("another run is changing") && err.contains("kubectl scalardb-graphql"), "{err}");
        }
    }
    assert!(a_code == Some(0) || b_code == Some(0), "neither went ahead:\n{}\n{}", words(&a), words(&b));
    // Whoever stopped goes again; then both are where they asked to be.
    if a_code == Some(3) {
        expect_code(&uninstall(&rig, &[]), 0, "the uninstall again");
    }
    if b_code == Some(3) {
        expect_code(&rig.install(SECOND), 0, "the install again");
    }
    let (code, report) = status_code(&rig, &["--release", "second", "-n", "team2"]);
    assert_eq!(code, Some(0), "the second release is not whole:\n{report}");
    let out = rig.plugin().args(["status", "--no-probe"]).output().unwrap();
    assert!(text(&out.stdout).contains("is not installed"), "the first release is still there");
    expect_code(&uninstall(&rig, &["--release", "second", "-n", "team2"]), 0, "the last uninstall");
    rig.eventually_same(&before, "the snapshot after both");
}
