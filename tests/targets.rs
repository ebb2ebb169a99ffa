//! The ALB's targets as on EKS: health checks are made (the target group's
//! path, port and success codes, requested from what stands for the pod),
//! a changed health-check annotation is applied, and a pod with the
//! controller's readiness gate is Ready only while its target is healthy.

mod common;

use serde_json::Value;

use common::{Rig, check, installed, rig};

const GATE_PREFIX: &str = "target-health.elbv2.k8s.aws/";
const RELEASE_PODS: &str = "app.kubernetes.io/instance=scalardb-graphql";

fn condition(pod: &Value, kind: &str) -> Value {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind)
        .cloned()
        .unwrap_or_default()
}

fn release_pods(rig: &Rig) -> Vec<Value> {
    rig.kubectl_json(&["get", "pods", "-l", RELEASE_PODS, "-o", "json"])["items"].as_array().unwrap().clone()
}

/// The release's target group, as DescribeTargetGroups shows it.
fn target_group(rig: &Rig) -> Value {
    let groups = rig.aws(&["elbv2", "describe-target-groups"])["TargetGroups"].clone();
    let groups = groups.as_array().unwrap();
    assert_eq!(groups.len(), 1, "one target group expected: {groups:?}");
    groups[0].clone()
}

fn target_health(rig: &Rig, tg_arn: &str, ip: &str) -> Value {
    let health = rig.aws(&["elbv2", "describe-target-health", "--target-group-arn", tg_arn]);
    health["TargetHealthDescriptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["Target"]["Id"] == ip)
        .map(|h| h["TargetHealth"].clone())
        .unwrap_or_default()
}

#[test]
fn a_pod_with_a_readiness_gate_is_not_ready_until_its_target_is_healthy() {
    let rig = rig();
    installed(&rig);
    let old: Vec<String> =
        release_pods(&rig).iter().map(|p| p["metadata"]["name"].as_str().unwrap().to_string()).collect();
    rig.kubectl_ok(&["delete", "pod", &old[0], "--wait=false"]);
    // The replacement, as soon as it has an address.
    let mut fresh = Value::Null;
    rig.eventually("the replacement pod to have an address", 60, || {
        fresh = release_pods(&rig)
            .into_iter()
            .find(|p| !old.iter().any(|o| p["metadata"]["name"] == o.as_str()) && p["status"]["podIP"].is_string())
            .unwrap_or_default();
        !fresh.is_null()
    });
    let name = fresh["metadata"]["name"].as_str().unwrap().to_string();
    let gates: Vec<String> = fresh["spec"]["readinessGates"]
        .as_array()
        .unwrap_or_else(|| panic!("no readiness gate on {name}: {fresh}"))
        .iter()
        .map(|g| g["conditionType"].as_str().unwrap().to_string())
        .collect();
    assert!(gates.iter().all(|g| g.starts_with(GATE_PREFIX)) && !gates.is_empty(), "{gates:?}");
    let ready = condition(&fresh, "Ready");
    assert_ne!(ready["status"], "True", "{name} is Ready before its target was ever checked: {fresh}");
    assert_eq!(ready["reason"], "ReadinessGatesNotReady", "{ready}");
    assert!(ready["message"].as_str().unwrap().contains(&gates[0]), "{ready}");

    let ip = fresh["status"]["podIP"].as_str().unwrap().to_string();
    let tg = target_group(&rig)["TargetGroupArn"].as_str().unwrap().to_string();
    let mut pod = Value::Null;
    rig.eventually(&format!("{name} to be Ready"), 90, || {
        pod = rig.kubectl_json(&["get", "pod", &name, "-o", "json"]);
        condition(&pod, "Ready")["status"] == "True"
    });
    // Ready came with the gate, and the gate with a healthy target.
    let gate = condition(&pod, &gates[0]);
    assert_eq!(gate["status"], "True", "{pod}");
    assert!(
        condition(&pod, "Ready")["lastTransitionTime"].as_str() >= gate["lastTransitionTime"].as_str(),
        "Ready before its gate: {pod}"
    );
    assert_eq!(target_health(&rig, &tg, &ip)["State"], "healthy");
    rig.reset();
}

#[test]
fn a_health_check_the_server_does_not_answer_makes_the_targets_unhealthy_and_status_says_which_check() {
    let rig = rig();
    installed(&rig);
    let ingress = "ingress/scalardb-graphql";
    let served = target_group(&rig)["HealthCheckPath"].as_str().unwrap().to_string();
    assert_eq!(served, "/graphql?query=%7B__typename%7D");

    // A path the GraphQL server does not serve: the controller applies it, the checks get 404.
    rig.kubectl_ok(&["annotate", ingress, "--overwrite", "alb.ingress.kubernetes.io/healthcheck-path=/healthz"]);
    rig.eventually("the target group's new health-check path", 60, || {
        target_group(&rig)["HealthCheckPath"] == "/healthz"
    });
    let failing = |says: &[&str]| {
        let mut last = Value::Null;
        rig.eventually(&format!("status to fail alb.targets with {says:?}"), 90, || {
            let (code, report) = rig.status_json();
            last = check(&report, "alb.targets");
            code == Some(1) && says.iter().all(|s| last["message"].as_str().unwrap_or_default().contains(s))
        });
        last
    };
    let targets = failing(&["unhealthy", "Target.ResponseCodeMismatch", "[404]", "GET /healthz"]);
    assert!(targets["hint"].as_str().unwrap().contains("healthcheck-path"), "{targets}");
    // Their readiness gates go False, and the pods are no longer Ready.
    rig.eventually("the pods to be NotReady by their gates", 60, || {
        release_pods(&rig).iter().all(|p| condition(p, "Ready")["reason"] == "ReadinessGatesNotReady")
    });

    // The right path on a port the pods do not listen on: refused.
    rig.kubectl_ok(&[
        "annotate",
        ingress,
        "--overwrite",
        &format!("alb.ingress.kubernetes.io/healthcheck-path={served}"),
        "alb.ingress.kubernetes.io/healthcheck-port=9999",
    ]);
    failing(&["Target.FailedHealthChecks", "port 9999"]);

    // Back to the traffic port: healthy again, and status is green.
    rig.kubectl_ok(&["annotate", ingress, "alb.ingress.kubernetes.io/healthcheck-port-"]);
    rig.eventually("status to pass again", 90, || rig.status_json().0 == Some(0));
    assert!(release_pods(&rig).iter().all(|p| condition(p, "Ready")["status"] == "True"));
    rig.reset();
}

/// The security groups the controller made (tagged with the rig's cluster), as `GroupName`.
fn controller_groups(rig: &Rig) -> Vec<String> {
    let groups = rig.aws(&[
        "ec2",
        "describe-security-groups",
        "--filters",
        &format!("Name=tag:elbv2.k8s.aws/cluster,Values={}", rig.get("RIG_CLUSTER_NAME")),
    ]);
    groups["SecurityGroups"].as_array().unwrap().iter().map(|g| g["GroupName"].as_str().unwrap().to_string()).collect()
}

/// The cluster security group's rules from another group (the controller's backend group).
fn rules_from_groups(rig: &Rig) -> Vec<Value> {
    let cluster = rig.aws(&["eks", "describe-cluster", "--name", rig.get("RIG_CLUSTER_NAME")]);
    let sg = cluster["cluster"]["resourcesVpcConfig"]["clusterSecurityGroupId"].as_str().unwrap().to_string();
    let found = rig.aws(&["ec2", "describe-security-groups", "--group-ids", &sg]);
    found["SecurityGroups"][0]["IpPermissions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| !p["UserIdGroupPairs"].as_array().unwrap().is_empty())
        .cloned()
        .collect()
}

#[test]
fn the_controller_opens_the_pods_group_to_the_alb_and_uninstall_leaves_no_group_it_made() {
    let rig = rig();
    installed(&rig);
    let mut made = controller_groups(&rig);
    made.sort();
    assert_eq!(made.len(), 2, "the ALB's group and the backend group: {made:?}");
    assert!(made.iter().any(|n| n.starts_with("k8s-traffic-")), "{made:?}");
    assert!(made.iter().any(|n| n.starts_with("k8s-default-scalardb-")), "{made:?}");
    let rules = rules_from_groups(&rig);
    assert_eq!(rules.len(), 1, "one rule from the backend group on the pods' group: {rules:?}");
    assert_eq!(rules[0]["FromPort"], 8080, "{rules:?}");
    assert_eq!(rules[0]["UserIdGroupPairs"][0]["Description"], "elbv2.k8s.aws/targetGroupBinding=shared");

    let out = rig.uninstall_ok();
    let said = common::text(&out.stdout);
    assert!(
        said.contains(
            "no load balancer, target group or security group of Ingress default/scalardb-graphql is left in AWS"
        ),
        "{said}"
    );
    assert!(said.contains("the controller's shared backend security group is not left in AWS"), "{said}");
    assert_eq!(controller_groups(&rig), Vec::<String>::new(), "{said}");
    assert_eq!(rules_from_groups(&rig), Vec::<Value>::new(), "the controller's rule is left: {said}");
    rig.reset();
}

#[test]
fn a_pod_whose_network_interface_has_no_group_tagged_for_the_cluster_is_named_by_status() {
    let rig = rig();
    installed(&rig);
    let pod = release_pods(&rig).into_iter().next().unwrap();
    let (name, ip) = (pod["metadata"]["name"].as_str().unwrap(), pod["status"]["podIP"].as_str().unwrap());
    let enis = rig.aws(&[
        "ec2",
        "describe-network-interfaces",
        "--filters",
        &format!("Name=addresses.private-ip-address,Values={ip}"),
    ]);
    let eni = enis["NetworkInterfaces"][0]["NetworkInterfaceId"].as_str().unwrap().to_string();
    // Someone gives the node's interface two groups of their own, none tagged for the cluster.
    let vpc = rig.vpc();
    let group = |name: &str| {
        let made = rig.aws(&[
            "ec2",
            "create-security-group",
            "--group-name",
            name,
            "--description",
            "node group",
            "--vpc-id",
            &vpc,
        ]);
        made["GroupId"].as_str().unwrap().to_string()
    };
    let (a, b) = (group("nodes-a"), group("nodes-b"));
    rig.aws(&["ec2", "modify-network-interface-attribute", "--network-interface-id", &eni, "--groups", &a, &b]);

    let mut last = Value::Null;
    rig.eventually("status to name the pod's interface", 90, || {
        let (code, report) = rig.status_json();
        last = check(&report, "alb.pod-security-groups");
        code == Some(1) && last["result"] == "fail"
    });
    let message = last["message"].as_str().unwrap();
    assert!(message.contains(&format!("default/{name} ({ip}) on {eni}")), "{last}");
    assert!(message.contains(&a) && message.contains(&b), "{last}");
    assert!(last["hint"].as_str().unwrap().contains("kubernetes.io/cluster/"), "{last}");
    // The controller says so on the binding, with its own words.
    let events = rig.kubectl_json(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=TargetGroupBinding,reason=FailedNetworkReconcile",
        "-o",
        "json",
    ]);
    let said = events["items"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap()).collect::<Vec<_>>();
    assert!(
        said.iter().any(|m| m.starts_with("expected exactly one securityGroup tagged with kubernetes.io/cluster/")),
        "{said:?}"
    );

    // One of them tagged for the cluster: the controller opens it, the target turns healthy.
    let tag = format!("Key=kubernetes.io/cluster/{},Value=owned", rig.get("RIG_CLUSTER_NAME"));
    rig.aws(&["ec2", "create-tags", "--resources", &a, "--tags", &tag]);
    rig.eventually("status to pass again", 90, || rig.status_json().0 == Some(0));
    rig.reset();
}
