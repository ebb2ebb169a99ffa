//! The plugin against what real clusters do, on the rig's strict stand-in
//! for the AWS Load Balancer Controller: subnets shared by several
//! clusters, an IngressGroup and renamed objects in the user's values,
//! targets that register, drain and fail their health checks, a controller
//! with no ready pod behind its admission webhooks, a controller running
//! with another `--cluster-name`, and dedicated nodes that stay dedicated.

mod common;

use std::time::{Duration, Instant};

use common::{Rig, check, expect_code, not_passing, rig, status_json, text};
use serde_json::{Value, json};

/// A values file for `-f`, kept for the test's lifetime.
fn values_file(values: &Value) -> tempfile::NamedTempFile {
    let f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(f.path(), serde_json::to_string_pretty(values).unwrap()).unwrap();
    f
}

/// Install, a green status, and an uninstall back to `before`.
fn converges_green_and_uninstalls_clean(rig: &Rig, extra: &[&str], before: &Value) -> Value {
    let out = rig.install(extra);
    expect_code(&out, 0, "install");
    let (code, report) = status_json(rig, &[]);
    assert_eq!(code, Some(0), "status: {:#?}", not_passing(&report));
    assert!(not_passing(&report).is_empty(), "{:#?}", not_passing(&report));
    rig.uninstall_ok();
    rig.eventually_same(before, "the snapshot after uninstall");
    report
}

fn private_subnet(rig: &Rig, zone: &str) -> String {
    let filter = format!("Name=tag:Name,Values=*private-{zone}");
    rig.aws(&["ec2", "describe-subnets", "--filters", &filter])["Subnets"][0]["SubnetId"].as_str().unwrap().to_string()
}

#[test]
fn a_subnet_shared_with_another_cluster_is_used_one_only_of_another_cluster_is_refused() {
    let rig = rig();
    rig.reset();
    let shared = private_subnet(&rig, "us-east-1a");
    rig.aws(&["ec2", "create-tags", "--resources", &shared, "--tags", "Key=kubernetes.io/cluster/team-b,Value=shared"]);
    let before = rig.snapshot();
    let report = converges_green_and_uninstalls_clean(&rig, &[], &before);
    let tag = check(&report, "subnets.cluster-tag");
    assert!(tag["message"].as_str().unwrap().contains(&format!("{shared} (also team-b)")), "{tag}");
    let picked = check(&report, "subnets.internal-elb");
    assert!(picked["message"].as_str().unwrap().contains(&shared), "the shared subnet is not picked: {picked}");

    // Tagged only for another cluster: the controller would skip it, so install refuses, changing nothing.
    let own = format!("Key=kubernetes.io/cluster/{}", rig.get("RIG_CLUSTER_NAME"));
    rig.aws(&["ec2", "delete-tags", "--resources", &shared, "--tags", &own]);
    let (out, _) = rig.without_mutation("install refused", || rig.install(&[]));
    expect_code(&out, 3, "install over a subnet of another cluster");
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&format!("{shared} (tagged only for cluster team-b)")), "{stderr}");
    rig.reset();
}

#[test]
fn an_ingress_group_in_the_users_values_works_end_to_end() {
    let rig = rig();
    rig.reset();
    let before = rig.snapshot();
    let values =
        values_file(&json!({"ingress": {"annotations": {"alb.ingress.kubernetes.io/group.name": "graphql-apis"}}}));
    let path = values.path().to_str().unwrap();
    let out = rig.install(&["-f", path]);
    expect_code(&out, 0, "install with a group");
    let ing = rig.kubectl_json(&["get", "ingress", "scalardb-graphql"]);
    assert_eq!(ing["metadata"]["finalizers"], json!(["group.ingress.k8s.aws/graphql-apis"]), "{ing}");
    let lb = rig.aws(&["elbv2", "describe-load-balancers"])["LoadBalancers"][0].clone();
    let tags = rig.aws(&["elbv2", "describe-tags", "--resource-arns", lb["LoadBalancerArn"].as_str().unwrap()]);
    assert!(tags.to_string().contains(r#""Key":"ingress.k8s.aws/stack","Value":"graphql-apis""#), "{tags}");
    let (code, report) = status_json(&rig, &[]);
    assert_eq!(code, Some(0), "{:#?}", not_passing(&report));
    assert!(not_passing(&report).is_empty(), "{:#?}", not_passing(&report));
    let re = rig.install(&["-f", path]);
    expect_code(&re, 0, "a re-run with the group");
    rig.uninstall_ok();
    rig.eventually_same(&before, "the snapshot after uninstalling a grouped Ingress");
}

#[test]
fn a_fullname_override_is_found_under_the_names_the_chart_rendered() {
    let rig = rig();
    rig.reset();
    let before = rig.snapshot();
    let values = values_file(&json!({"fullnameOverride": "orders-api"}));
    let out = rig.install(&["-f", values.path().to_str().unwrap()]);
    expect_code(&out, 0, "install with fullnameOverride");
    assert!(text(&out.stdout).contains("Ingress default/orders-api has ALB"), "{}", text(&out.stdout));
    rig.kubectl_ok(&["get", "ingress", "orders-api"]);
    rig.kubectl_ok(&["get", "service", "orders-api"]);
    let (code, report) = status_json(&rig, &[]);
    assert_eq!(code, Some(0), "{:#?}", not_passing(&report));
    assert!(check(&report, "ingress.hostname")["result"] == "pass");
    rig.uninstall_ok();
    rig.eventually_same(&before, "the snapshot after uninstalling a renamed release");
}

#[test]
fn status_reports_draining_targets_after_a_pod_goes_and_fails_an_unhealthy_one() {
    let rig = rig();
    rig.reset();
    rig.install_ok();
    let pod = rig.kubectl_ok(&["get", "pods", "-l", "app.kubernetes.io/instance=scalardb-graphql", "-o", "name"]);
    let pod = pod.lines().next().unwrap().to_string();
    rig.kubectl_ok(&["delete", &pod, "--wait=false"]);
    // The replacement registers (initial), then turns healthy; the old target drains meanwhile.
    let (code, report) = status_json(&rig, &["--wait", "--timeout", "60s"]);
    assert_eq!(code, Some(0), "{:#?}", not_passing(&report));
    let targets = check(&report, "alb.targets");
    assert!(targets["message"].as_str().unwrap().contains("draining"), "{targets}");

    // A pod whose server hangs while its container stays ready: its target fails the health checks.
    let pod = rig.kubectl_ok(&["get", "pods", "-l", "app.kubernetes.io/instance=scalardb-graphql", "-o", "name"]);
    let pod = pod.lines().next().unwrap().trim_start_matches("pod/").to_string();
    common::fail_health_checks(&rig, "default", &pod);
    rig.eventually("the target to be unhealthy", 60, || {
        let (_, report) = status_json(&rig, &["--category", "alb"]);
        check(&report, "alb.targets")["result"] == "fail"
    });
    let (code, report) = status_json(&rig, &[]);
    assert_eq!(code, Some(1));
    let targets = check(&report, "alb.targets");
    assert!(targets["message"].as_str().unwrap().contains("unhealthy"), "{targets}");
    assert!(targets["message"].as_str().unwrap().contains("Target."), "the reason is shown: {targets}");
    rig.reset();
}

#[test]
fn a_target_group_deleted_between_listing_and_reading_is_gone_for_status_and_uninstall_not_an_error() {
    let rig = rig();
    rig.reset();
    let before = rig.snapshot();
    rig.install_ok();
    let tg = rig.aws(&["elbv2", "describe-target-groups"])["TargetGroups"][0]["TargetGroupArn"]
        .as_str()
        .unwrap()
        .to_string();
    // Another cluster's target group deleted as the plugin reads: the DescribeTags batch it shares with
    // ours is refused, ours is read again alone and found whole.
    let other = rig.create_ip_target_group("another-cluster", 80);
    rig.aws_gone(&[&other], "aws-sdk-rust", None);
    let out = rig.status(&["-o", "json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{:#?}", not_passing(&report));
    assert_eq!(check(&report, "alb.stickiness")["result"], "pass", "{report}");
    let faults = rig.aws_faults();
    assert!(faults["gone_by_client"]["aws-sdk-rust"].as_u64().unwrap_or(0) > 0, "never read: {faults}");
    rig.aws(&["elbv2", "delete-target-group", "--target-group-arn", &other]);
    // The controller deleting ours as the plugin reads: listed, then TargetGroupNotFound for the reads by
    // ARN: from its tags on, then (tags read) from its attributes and health on.
    let tags_on: Option<&[&str]> = None;
    let details_on: Option<&[&str]> = Some(&["DescribeTargetGroupAttributes", "DescribeTargetHealth"]);
    for (when, actions) in [("from its tags on", tags_on), ("after its tags", details_on)] {
        rig.aws_gone(&[&tg], "aws-sdk-rust", actions);
        let out = rig.status(&["-o", "json"]);
        let stderr = text(&out.stderr);
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
        assert!(
            errors.iter().all(|l| l.ends_with("check(s) failed")) && !stderr.contains("NotFound"),
            "{when}: an error instead of a finding: {stderr}"
        );
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{when}: {e}: {stderr}"));
        assert_eq!(out.status.code(), Some(1), "{when}: {:#?}", not_passing(&report));
        assert_eq!(check(&report, "alb.stickiness")["message"], "the ALB has no target groups", "{when}: {report}");
        assert_eq!(check(&report, "alb.load-balancer")["result"], "pass", "{when}: {report}");
        let faults = rig.aws_faults();
        assert!(faults["gone_by_client"]["aws-sdk-rust"].as_u64().unwrap_or(0) > 0, "{when}: never read: {faults}");
    }
    // Uninstall reads the same way before and while it waits for the controller to delete the ALB.
    rig.aws_gone(&[&tg], "aws-sdk-rust", None);
    rig.uninstall_ok();
    assert!(rig.aws_faults()["gone_by_client"]["aws-sdk-rust"].as_u64().unwrap_or(0) > 0, "{}", rig.aws_faults());
    rig.aws_faults_off();
    rig.eventually_same(&before, "the snapshot after uninstall");
}

#[test]
fn force_finalizers_with_the_controller_at_zero_replicas_is_one_line_and_exit_3() {
    let rig = rig();
    rig.reset();
    let before = rig.snapshot();
    rig.install_ok();
    rig.kubectl_ok(&["-n", "kube-system", "scale", "deployment", "aws-load-balancer-controller", "--replicas=0"]);
    rig.eventually("the controller to have no ready pod", 60, || {
        let d = rig.kubectl_json(&["-n", "kube-system", "get", "deployment", "aws-load-balancer-controller"]);
        d["status"]["availableReplicas"].as_i64().unwrap_or(0) == 0
    });
    let started = Instant::now();
    let out = rig
        .plugin()
        .args(["uninstall", "-y", "--force-finalizers", "--timeout", "60s"])
        .output()
        .expect("running uninstall");
    assert!(started.elapsed() < Duration::from_secs(45), "it waited instead of explaining: {:?}", started.elapsed());
    expect_code(&out, 3, "uninstall --force-finalizers with the controller at 0 replicas");
    let stderr = text(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("refuses changes to Ingresses") && errors[0].contains("vingress.elbv2.k8s.aws"),
        "{stderr}"
    );
    assert!(stderr.contains("scale deployment aws-load-balancer-controller"), "the way out: {stderr}");
    assert!(!stderr.contains("failed to call webhook"), "the raw webhook error: {stderr}");
    // The way out works: the controller back, uninstall finishes the job.
    rig.kubectl_ok(&["-n", "kube-system", "scale", "deployment", "aws-load-balancer-controller", "--replicas=2"]);
    rig.uninstall_ok();
    rig.eventually_same(&before, "the snapshot after the finished uninstall");
}

#[test]
fn skip_lb_controller_with_another_cluster_name_warns_and_still_finds_the_alb() {
    let rig = rig();
    rig.reset();
    // A controller installed by someone else, running as "legacy-name"; the subnets are tagged for it too.
    let vpc = rig.aws(&["eks", "describe-cluster", "--name", rig.get("RIG_CLUSTER_NAME")])["cluster"]
        ["resourcesVpcConfig"]["vpcId"]
        .as_str()
        .unwrap()
        .to_string();
    rig.tag_subnets("*", "Key=kubernetes.io/cluster/legacy-name,Value=shared");
    let helm = rig
        .cmd("helm")
        .args(["install", "aws-load-balancer-controller", "aws-load-balancer-controller", "-n", "kube-system"])
        .args(["--repo", rig.get("RIG_CHART_REPO_URL"), "--version", "3.5.0"])
        .args(["--set", "clusterName=legacy-name", "--set", "region=us-east-1", "--set", &format!("vpcId={vpc}")])
        .args(rig.controller_irsa())
        .output()
        .unwrap();
    expect_code(&helm, 0, "helm install of the controller by hand");
    let out = rig.install(&["--skip-lb-controller"]);
    expect_code(&out, 0, "install --skip-lb-controller");
    assert!(text(&out.stderr).contains("--cluster-name=legacy-name"), "{}", text(&out.stderr));
    let (code, report) = status_json(&rig, &[]);
    assert_eq!(code, Some(0), "{:#?}", not_passing(&report));
    let name = check(&report, "lb-controller.cluster-name");
    assert_eq!(name["result"], "warn", "{name}");
    assert!(name["hint"].as_str().unwrap().contains("clusterName="), "{name}");
    assert_eq!(check(&report, "alb.load-balancer")["result"], "pass");
    assert_eq!(check(&report, "alb.targets")["result"], "pass");
    rig.uninstall_ok();
    rig.reset();
}

#[test]
fn no_controller_pod_runs_on_a_dedicated_node_and_a_foreign_pod_there_is_reported() {
    let rig = rig();
    rig.reset();
    rig.install_ok();
    let pods = rig.kubectl_json(&[
        "-n",
        "kube-system",
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=aws-load-balancer-controller",
    ]);
    let nodes: Vec<&str> =
        pods["items"].as_array().unwrap().iter().map(|p| p["spec"]["nodeName"].as_str().unwrap()).collect();
    assert!(!nodes.is_empty());
    assert!(nodes.iter().all(|n| n.starts_with("general-")), "controller pods on dedicated nodes: {nodes:?}");
    let (code, report) = status_json(&rig, &[]);
    assert_eq!(code, Some(0));
    assert_eq!(check(&report, "nodes.foreign-pods")["result"], "pass");

    // Someone pins a pod to a dedicated node by hand (the taint does not stop a direct binding).
    rig.kubectl_apply(
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "batch-job", "namespace": "default"},
        "spec": {"nodeName": "graphql-1", "containers": [{"name": "c", "image": "example"}]}}),
    );
    let (code, report) = status_json(&rig, &[]);
    assert_eq!(code, Some(0), "a warning, not a failure");
    let foreign = check(&report, "nodes.foreign-pods");
    assert_eq!(foreign["result"], "warn", "{foreign}");
    assert!(foreign["message"].as_str().unwrap().contains("default/batch-job on graphql-1"), "{foreign}");
    rig.reset();
}
