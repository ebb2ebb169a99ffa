//! `uninstall` against the rig: back to the state before install, nothing
//! touched that install did not create, resumable at every step, the wrong
//! order explained rather than waited on, and a dry run that changes nothing.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;

use common::{expect_code, rig, text};
use serde_json::json;

#[test]
fn install_then_uninstall_leaves_the_rig_as_it_was() {
    let rig = rig();
    rig.reset();
    let before = rig.snapshot();
    rig.install_ok();
    let out = rig.uninstall_ok();
    let stdout = text(&out.stdout);
    // The safe order: the release and its ALB first, the controller after, IAM after that.
    let pos = |needle: &str| stdout.find(needle).unwrap_or_else(|| panic!("{needle} missing:\n{stdout}"));
    assert!(
        pos("uninstalled release default/scalardb-graphql")
            < pos("uninstalled release kube-system/aws-load-balancer-controller")
    );
    assert!(pos("uninstalled release kube-system/aws-load-balancer-controller") < pos("deleted IAM role"));
    assert!(pos("deleted IAM role") < pos("deleted IAM policy"));
    assert!(pos("deleted IAM policy") < pos("deleted IAM OIDC provider"));
    assert!(pos("deleted IAM OIDC provider") < pos("removed kubernetes.io/role/internal-elb"));
    assert!(pos("removed kubernetes.io/role/internal-elb") < pos("deleted CRD"));
    // What it said it deleted is gone when it returns: no CRD left terminating.
    let crds = rig.kubectl_json(&["get", "crd"]);
    let left: Vec<&str> = crds["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["metadata"]["name"].as_str())
        .filter(|n| stdout.contains(&format!("deleted CRD {n}")))
        .collect();
    assert!(left.is_empty(), "said deleted, still there: {left:?}");
    rig.eventually_same(&before, "the snapshot after uninstall");
    let again = rig.uninstall_ok();
    assert!(text(&again.stdout).contains("nothing to uninstall"), "{}", text(&again.stdout));
}

#[test]
fn what_install_did_not_create_survives_and_the_controller_stays_for_a_foreign_ingress() {
    let rig = rig();
    rig.reset();
    rig.create_oidc_provider();
    let tagged = rig.tag_private_subnets("us-east-1a").remove(0);
    let before = rig.snapshot();
    rig.install_ok();
    // Another team's Ingress of class alb, served by the same controller.
    rig.kubectl_ok(&["create", "namespace", "team-b"]);
    rig.kubectl_apply(&json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "team-b"},
         "spec": {"ports": [{"port": 80, "targetPort": 8080}], "selector": {"app": "web"}}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web", "namespace": "team-b",
            "annotations": {"alb.ingress.kubernetes.io/target-type": "ip"}},
         "spec": {"ingressClassName": "alb", "defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}},
    ]}));
    rig.eventually("the foreign Ingress's ALB", 60, || {
        rig.kubectl_json(&["-n", "team-b", "get", "ingress", "web"])["status"]["loadBalancer"]["ingress"][0]["hostname"]
            .is_string()
    });
    let out = rig.uninstall_ok();
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("kept release kube-system/aws-load-balancer-controller") && stderr.contains("team-b/web"),
        "{stderr}"
    );
    assert!(text(&out.stdout).contains("the install record default/scalardb-graphql-install-record stays"));
    // The controller stays working: the release, and what it needs to delete the foreign ALB later.
    let releases = text(&rig.cmd("helm").args(["list", "-n", "kube-system", "-q"]).output().unwrap().stdout);
    assert!(releases.contains("aws-load-balancer-controller"), "the controller was removed under a foreign Ingress");
    assert!(
        rig.kubectl(&["-n", "kube-system", "get", "serviceaccount", "aws-load-balancer-controller"]).status.success()
    );
    let roles = rig.aws(&["iam", "list-roles"]);
    assert_eq!(roles["Roles"].as_array().unwrap().len(), 1, "the controller's IAM role was removed: {roles}");
    assert_eq!(
        rig.aws(&["iam", "list-open-id-connect-providers"])["OpenIDConnectProviderList"].as_array().unwrap().len(),
        1
    );
    let tags = rig.aws(&["ec2", "describe-tags", "--filters", "Name=key,Values=kubernetes.io/role/internal-elb"]);
    assert_eq!(tags["Tags"].as_array().unwrap().len(), 2, "the controller's subnet tags were removed: {tags}");
    assert!(rig.kubectl_ok(&["get", "crd", "-o", "name"]).contains("targetgroupbindings.elbv2.k8s.aws"));
    let ing = rig.kubectl_json(&["-n", "team-b", "get", "ingress", "web"]);
    assert!(ing["status"]["loadBalancer"]["ingress"][0]["hostname"].is_string());
    assert!(!rig.kubectl(&["-n", "default", "get", "ingress", "scalardb-graphql"]).status.success());
    // Once the other team is gone, uninstall finishes: only what install created goes,
    // the provider and the subnet tag that were there before stay.
    rig.kubectl_ok(&["delete", "namespace", "team-b", "--wait"]);
    rig.eventually("the foreign ALB to be deleted", 60, || {
        rig.aws(&["elbv2", "describe-load-balancers"])["LoadBalancers"].as_array().unwrap().is_empty()
    });
    let out = rig.uninstall_ok();
    assert!(text(&out.stdout).contains("uninstalled release kube-system/aws-load-balancer-controller"));
    rig.eventually_same(&before, "the snapshot after the second uninstall");
    let tags = rig.aws(&[
        "ec2",
        "describe-tags",
        "--filters",
        &format!("Name=resource-id,Values={tagged}"),
        "Name=key,Values=kubernetes.io/role/internal-elb",
    ]);
    assert_eq!(tags["Tags"].as_array().unwrap().len(), 1, "the pre-existing subnet tag was removed");
    rig.reset();
}

#[test]
fn a_dedicated_node_deleted_while_uninstall_runs_is_named_and_skipped_and_the_others_are_given_back() {
    let rig = rig();
    rig.reset();
    rig.install_ok();
    let mut child = rig
        .plugin()
        .args(["uninstall", "-y", "--timeout", "180s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running uninstall");
    let mut stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).map(|_| s).unwrap_or_default()
    });
    // The nodes were read at its start and are given back last: an autoscaler takes one in between.
    let mut stdout = vec![];
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok);
    for line in lines.by_ref() {
        let released = line.contains("uninstalled release default/scalardb-graphql");
        stdout.push(line);
        if released {
            break;
        }
    }
    assert!(stdout.last().is_some_and(|l| l.contains("uninstalled release")), "{stdout:#?}");
    let deleted = rig.kubectl(&["delete", "node", "graphql-3", "--wait=true"]);
    if !deleted.status.success() {
        let _ = child.kill(); // not into the next test
    }
    expect_code(&deleted, 0, "kubectl delete node graphql-3");
    stdout.extend(lines);
    let code = child.wait().expect("uninstall").code();
    let (stdout, stderr) = (stdout.join("\n"), stderr.join().unwrap());
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stderr.contains("node graphql-3 was deleted since it was read: nothing to change on it"), "{stderr}");
    assert!(stdout.contains("removed this tool's taints and labels from 2 node(s)"), "{stdout}");
    for node in ["graphql-1", "graphql-2"] {
        let n = rig.kubectl_json(&["get", "node", node]);
        assert!(n["spec"]["taints"].as_array().is_none_or(|t| t.is_empty()), "{node} keeps a taint: {n}");
    }
    // The node group replaces the node; the next test starts from the rig as it was.
    rig.reset();
    rig.kubectl_ok(&["get", "node", "graphql-3"]);
}

#[test]
fn keep_flags_leave_a_working_controller_and_a_later_uninstall_finishes() {
    let rig = rig();
    rig.reset();
    let clean = rig.snapshot();
    rig.install_ok();
    let out = rig.plugin().args(["uninstall", "-y", "--keep-lb-controller", "--timeout", "120s"]).output().unwrap();
    expect_code(&out, 0, "uninstall --keep-lb-controller");
    assert!(text(&out.stderr).contains("--keep-lb-controller"), "{}", text(&out.stderr));
    assert!(rig.aws(&["elbv2", "describe-load-balancers"])["LoadBalancers"].as_array().unwrap().is_empty());
    assert!(!rig.kubectl(&["-n", "default", "get", "secret", "reg-docker-secrets"]).status.success());
    let releases = text(&rig.cmd("helm").args(["list", "-A", "-q"]).output().unwrap().stdout);
    assert_eq!(releases.trim(), "aws-load-balancer-controller", "{releases}");
    assert!(
        rig.kubectl(&["-n", "kube-system", "get", "serviceaccount", "aws-load-balancer-controller"]).status.success()
    );
    assert_eq!(rig.aws(&["iam", "list-roles"])["Roles"].as_array().unwrap().len(), 1);
    let tags = rig.aws(&["ec2", "describe-tags", "--filters", "Name=key,Values=kubernetes.io/role/internal-elb"]);
    assert_eq!(tags["Tags"].as_array().unwrap().len(), 2, "{tags}");
    // The record still says the controller is this tool's: install takes it up again without --adopt.
    rig.install_ok();
    let out = rig.plugin().args(["uninstall", "-y", "--keep-iam", "--timeout", "120s"]).output().unwrap();
    expect_code(&out, 0, "uninstall --keep-iam");
    assert!(text(&out.stdout).contains("uninstalled release kube-system/aws-load-balancer-controller"));
    let snap = rig.snapshot();
    assert_eq!(snap["aws"]["iam_roles"].as_object().unwrap().len(), 1, "--keep-iam removed the role");
    assert_eq!(snap["aws"]["iam_policies"].as_array().unwrap().len(), 1);
    assert_eq!(snap["aws"]["iam_oidc_providers"].as_array().unwrap().len(), 1);
    let out = rig.uninstall_ok();
    assert!(text(&out.stdout).contains("deleted IAM role"), "{}", text(&out.stdout));
    rig.eventually_same(&clean, "the snapshot after the kept parts are removed");
    rig.reset();
}

#[test]
fn killed_at_each_step_a_rerun_ends_in_the_clean_state() {
    let rig = rig();
    rig.reset();
    let clean = rig.snapshot();
    rig.install_ok();
    let steps = text(&rig.uninstall_ok().stdout).lines().filter(|l| l.starts_with('√')).count() - 1;
    assert!(steps >= 10, "{steps} steps");
    // Every step boundary in one pass: each re-run starts from where the last was killed,
    // observes afresh, and is killed after its next step; the last one runs to its end.
    rig.reset();
    rig.install_ok();
    let killed = rig.killed_at_every_step(&["uninstall", "-y", "--timeout", "120s"].map(String::from));
    assert!(killed.len() > steps, "killed at fewer steps than an uninstall makes: {killed:#?}");
    rig.uninstall_ok();
    rig.eventually_same(&clean, &format!("the state after kills at every step ({killed:#?}) and a re-run"));
    rig.reset();
}

#[test]
fn the_wrong_order_by_hand_is_reported_with_the_stuck_ingress_and_the_alb_arn() {
    let rig = rig();
    rig.reset();
    rig.install_ok();
    let arn = rig.aws(&["elbv2", "describe-load-balancers"])["LoadBalancers"][0]["LoadBalancerArn"]
        .as_str()
        .unwrap()
        .to_string();
    expect_code(
        &rig.cmd("helm")
            .args(["uninstall", "aws-load-balancer-controller", "-n", "kube-system", "--wait"])
            .output()
            .unwrap(),
        0,
        "removing the controller first",
    );
    let started = std::time::Instant::now();
    let out = rig.plugin().args(["uninstall", "-y", "--timeout", "120s"]).output().unwrap();
    expect_code(&out, 1, "uninstall after the controller was removed");
    assert!(started.elapsed().as_secs() < 60, "it waited instead of explaining");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("Ingress default/scalardb-graphql is stuck on finalizer ingress.k8s.aws/resources"),
        "{stderr}"
    );
    assert!(stderr.contains(&arn), "the ALB's ARN is named: {stderr}");
    assert!(stderr.contains("--force-finalizers"), "{stderr}");
    let out = rig.plugin().args(["uninstall", "-y", "--force-finalizers", "--timeout", "120s"]).output().unwrap();
    expect_code(&out, 0, "uninstall --force-finalizers");
    assert!(text(&out.stderr).contains(&arn), "the left ALB is listed: {}", text(&out.stderr));
    assert!(!rig.kubectl(&["get", "ingress", "scalardb-graphql"]).status.success());
    rig.reset();
}

#[test]
fn dry_run_lists_every_deletion_and_without_y_or_a_terminal_nothing_is_removed() {
    let rig = rig();
    rig.reset();
    rig.install_ok();
    let (out, calls) =
        rig.without_mutation("uninstall --dry-run", || rig.plugin().args(["uninstall", "--dry-run"]).output().unwrap());
    expect_code(&out, 0, "uninstall --dry-run");
    assert!(!calls.is_empty(), "the recorder saw the plugin's reads, so it would have seen writes");
    let stdout = text(&out.stdout);
    for line in [
        "- helm uninstall default/scalardb-graphql",
        "- kubernetes Secret default/reg-docker-secrets",
        "~ kubernetes Node graphql-1",
        "- helm uninstall kube-system/aws-load-balancer-controller",
        "- aws iam:DeleteRole",
        "- aws iam:DeletePolicy",
        "- aws iam:DeleteOpenIDConnectProvider",
        "- aws ec2:DeleteTags",
        "- kubernetes CustomResourceDefinition targetgroupbindings.elbv2.k8s.aws",
    ] {
        assert!(stdout.contains(line), "{line:?} missing:\n{stdout}");
    }
    // Without -y and with nobody at a terminal to ask, nothing is removed.
    let (out, _) = rig.without_mutation("uninstall without -y or a terminal", || {
        rig.plugin().args(["uninstall", "--timeout", "60s"]).stdin(std::process::Stdio::null()).output().unwrap()
    });
    expect_code(&out, 2, "uninstall without -y or a terminal");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("no terminal to confirm on") && stderr.contains("pass -y"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(rig.kubectl(&["get", "ingress", "scalardb-graphql"]).status.success(), "the release was removed");
    rig.reset();
}
