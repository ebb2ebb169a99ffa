//! The rig's stand-in for the AWS Load Balancer Controller behaves as the
//! real controller v3.5.0 does: subnet discovery, IngressGroups, deploy
//! order and failures, target health over time, names, the cluster name
//! from the controller's own Deployment, and pod readiness gates. Driven
//! from outside with helm, kubectl and the AWS CLI, as a user would.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Rig, install_controller, rig};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const NS: &str = "shop";

/// A Deployment `name` of `replicas` pods, its Service (port 80 → 8080) and an Ingress of class alb
/// with target-type ip and the given extra annotations.
fn app(rig: &Rig, name: &str, replicas: u32, annotations: Value) {
    rig.kubectl_apply(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}));
    rig.kubectl_apply(&json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "c", "image": "example", "ports": [{"containerPort": 8080}]}]}},
        },
    }));
    rig.kubectl_apply(&json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }));
    // The pods are served by the rig's GraphQL stand-ins: the health check asks what they answer.
    let mut all = json!({"alb.ingress.kubernetes.io/scheme": "internal", "alb.ingress.kubernetes.io/target-type": "ip",
                         "alb.ingress.kubernetes.io/healthcheck-path": "/graphql?query=%7B__typename%7D"});
    all.as_object_mut().unwrap().extend(annotations.as_object().unwrap().clone());
    rig.kubectl_apply(&json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": NS, "annotations": all},
        "spec": {"ingressClassName": "alb", "rules": [{"http": {"paths": [{
            "path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": name, "port": {"number": 80}}},
        }]}}]},
    }));
}

fn hostname(rig: &Rig, name: &str) -> String {
    let ing = rig.kubectl_json(&["-n", NS, "get", "ingress", name]);
    ing["status"]["loadBalancer"]["ingress"][0]["hostname"].as_str().unwrap_or_default().to_string()
}

fn wait_hostname(rig: &Rig, name: &str) -> String {
    let mut found = String::new();
    rig.eventually(&format!("Ingress {name} to get its hostname"), 60, || {
        found = hostname(rig, name);
        !found.is_empty()
    });
    found
}

fn load_balancers(rig: &Rig) -> Vec<Value> {
    rig.aws(&["elbv2", "describe-load-balancers"])["LoadBalancers"].as_array().unwrap().clone()
}

fn target_groups(rig: &Rig) -> Vec<Value> {
    rig.aws(&["elbv2", "describe-target-groups"])["TargetGroups"].as_array().unwrap().clone()
}

fn tags(rig: &Rig, arn: &str) -> Value {
    let d = rig.aws(&["elbv2", "describe-tags", "--resource-arns", arn]);
    let mut out = serde_json::Map::new();
    for t in d["TagDescriptions"][0]["Tags"].as_array().unwrap() {
        out.insert(t["Key"].as_str().unwrap().into(), t["Value"].clone());
    }
    Value::Object(out)
}

/// Target id → (state, reason) as `aws elbv2 describe-target-health` reports them.
fn target_health(rig: &Rig, tg_arn: &str) -> Vec<(String, String, String)> {
    rig.aws(&["elbv2", "describe-target-health", "--target-group-arn", tg_arn])["TargetHealthDescriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["Target"]["Id"].as_str().unwrap().to_string(),
                h["TargetHealth"]["State"].as_str().unwrap().to_string(),
                h["TargetHealth"]["Reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The Warning events on an Ingress, as "reason: message".
fn warnings(rig: &Rig, name: &str) -> Vec<String> {
    let selector = format!("involvedObject.kind=Ingress,involvedObject.name={name},type=Warning");
    let events = rig.kubectl_json(&["-n", NS, "get", "events", "--field-selector", &selector]);
    events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{}: {}", e["reason"].as_str().unwrap(), e["message"].as_str().unwrap()))
        .collect()
}

/// The ids of the subnets whose Name matches `name_filter`, sorted.
fn subnet_ids(rig: &Rig, name_filter: &str) -> Vec<String> {
    let mut ids = rig.subnets_named(name_filter);
    ids.sort();
    ids
}

fn lb_subnets(lb: &Value) -> BTreeSet<String> {
    lb["AvailabilityZones"].as_array().unwrap().iter().map(|z| z["SubnetId"].as_str().unwrap().to_string()).collect()
}

fn sha256_hex(parts: &[&str]) -> String {
    Sha256::digest(parts.concat().as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn pods(rig: &Rig, app: &str) -> Vec<Value> {
    rig.kubectl_json(&["-n", NS, "get", "pods", "-l", &format!("app={app}")])["items"].as_array().unwrap().clone()
}

fn pod_ip(pod: &Value) -> String {
    pod["status"]["podIP"].as_str().unwrap_or_default().to_string()
}

/// The only target group, once the controller has made it.
fn the_target_group(rig: &Rig) -> String {
    rig.eventually("a target group", 60, || target_groups(rig).len() == 1);
    target_groups(rig)[0]["TargetGroupArn"].as_str().unwrap().to_string()
}

#[test]
fn discovery_picks_a_subnet_tagged_for_this_and_another_cluster_and_skips_one_tagged_only_for_another() {
    let rig = rig();
    rig.reset();
    let cluster = rig.get("RIG_CLUSTER_NAME").to_string();
    let private = subnet_ids(&rig, "*private*");
    rig.tag_subnet_ids(&private, &["Key=kubernetes.io/role/internal-elb,Value=1"]);
    rig.tag_subnet_ids(&private[..1], &["Key=kubernetes.io/cluster/another-cluster,Value=shared"]);
    let vpc = rig.aws(&["eks", "describe-cluster", "--name", &cluster])["cluster"]["resourcesVpcConfig"]["vpcId"]
        .as_str()
        .unwrap()
        .to_string();
    // A third zone whose only subnet is another cluster's: it would make three zones if it were taken.
    let other = rig.aws(&[
        "ec2",
        "create-subnet",
        "--vpc-id",
        &vpc,
        "--cidr-block",
        "10.0.3.0/24",
        "--availability-zone",
        "us-east-1c",
    ])["Subnet"]["SubnetId"]
        .as_str()
        .unwrap()
        .to_string();
    rig.tag_subnet_ids(
        std::slice::from_ref(&other),
        &["Key=kubernetes.io/role/internal-elb,Value=", "Key=kubernetes.io/cluster/another-cluster,Value=owned"],
    );
    install_controller(&rig, &cluster);
    app(&rig, "web", 1, json!({}));
    wait_hostname(&rig, "web");
    let lbs = load_balancers(&rig);
    assert_eq!(lbs.len(), 1);
    assert_eq!(lb_subnets(&lbs[0]), private.iter().cloned().collect::<BTreeSet<_>>(), "{}", lbs[0]);
    rig.reset();
}

#[test]
fn without_role_tags_the_private_subnets_are_found_by_their_routes() {
    let rig = rig();
    rig.reset();
    install_controller(&rig, rig.get("RIG_CLUSTER_NAME"));
    app(&rig, "web", 1, json!({}));
    wait_hostname(&rig, "web");
    let private: BTreeSet<String> = subnet_ids(&rig, "*private*").into_iter().collect();
    assert_eq!(lb_subnets(&load_balancers(&rig)[0]), private);
    rig.reset();
}

#[test]
fn fewer_than_two_zones_is_a_warning_event_and_no_alb_nor_hostname() {
    let rig = rig();
    rig.reset();
    rig.tag_private_subnets("a");
    install_controller(&rig, rig.get("RIG_CLUSTER_NAME"));
    app(&rig, "web", 1, json!({}));
    let mut seen = vec![];
    rig.eventually("a FailedBuildModel event", 60, || {
        seen = warnings(&rig, "web");
        !seen.is_empty()
    });
    assert!(
        seen.iter()
            .any(|w| w.starts_with("FailedBuildModel: Failed build model due to couldn't auto-discover subnets")
                && w.contains("1 < 2")),
        "{seen:#?}"
    );
    std::thread::sleep(Duration::from_secs(2)); // several passes of the controller
    assert_eq!(hostname(&rig, "web"), "");
    assert!(load_balancers(&rig).is_empty());
    rig.reset();
}

#[test]
fn an_ingress_group_is_one_stack_one_alb_and_the_group_finalizer_until_its_last_member_goes() {
    let rig = rig();
    rig.reset();
    let cluster = rig.get("RIG_CLUSTER_NAME").to_string();
    rig.tag_private_subnets("");
    install_controller(&rig, &cluster);
    let group = json!({"alb.ingress.kubernetes.io/group.name": "storefront"});
    app(&rig, "cart", 1, group.clone());
    app(&rig, "catalog", 1, group);
    let (a, b) = (wait_hostname(&rig, "cart"), wait_hostname(&rig, "catalog"));
    assert_eq!(a, b);
    let lbs = load_balancers(&rig);
    assert_eq!(lbs.len(), 1);
    let lb_arn = lbs[0]["LoadBalancerArn"].as_str().unwrap();
    let lb_tags = tags(&rig, lb_arn);
    assert_eq!(lb_tags["ingress.k8s.aws/stack"], "storefront", "{lb_tags}");
    let expected = format!("k8s-storefront-{}", &sha256_hex(&[&cluster, "storefront", "internal"])[..10]);
    assert_eq!(lbs[0]["LoadBalancerName"], expected.as_str());
    rig.eventually("a target group per member", 30, || target_groups(&rig).len() == 2);
    for tg in target_groups(&rig) {
        assert_eq!(tags(&rig, tg["TargetGroupArn"].as_str().unwrap())["ingress.k8s.aws/stack"], "storefront");
    }
    for name in ["cart", "catalog"] {
        let ing = rig.kubectl_json(&["-n", NS, "get", "ingress", name]);
        assert_eq!(ing["metadata"]["finalizers"], json!(["group.ingress.k8s.aws/storefront"]), "{name}");
    }

    rig.kubectl_ok(&["-n", NS, "delete", "ingress", "cart", "--wait=false"]);
    rig.eventually("the departed member to be gone with its target group", 60, || {
        !rig.kubectl(&["-n", NS, "get", "ingress", "cart"]).status.success() && target_groups(&rig).len() == 1
    });
    assert_eq!(load_balancers(&rig).len(), 1, "the group still has a member");
    rig.kubectl_ok(&["-n", NS, "delete", "ingress", "catalog", "--wait=false"]);
    rig.eventually("the stack to be torn down with the last member", 60, || {
        !rig.kubectl(&["-n", NS, "get", "ingress", "catalog"]).status.success()
            && load_balancers(&rig).is_empty()
            && target_groups(&rig).is_empty()
    });
    rig.reset();
}

#[test]
fn an_invalid_attribute_value_is_no_alb_and_a_validation_error_event_until_it_is_fixed() {
    let rig = rig();
    rig.reset();
    rig.tag_private_subnets("");
    install_controller(&rig, rig.get("RIG_CLUSTER_NAME"));
    let attributes = "alb.ingress.kubernetes.io/target-group-attributes";
    app(&rig, "web", 1, json!({attributes: "stickiness.enabled=yes,stickiness.lb_cookie.duration_seconds=60"}));
    let mut seen = vec![];
    rig.eventually("a FailedDeployModel event", 60, || {
        seen = warnings(&rig, "web");
        !seen.is_empty()
    });
    assert!(
        seen.iter().any(|w| w.starts_with("FailedDeployModel: Failed deploy model due to operation error Elastic Load Balancing v2: ModifyTargetGroupAttributes")
            && w.contains("api error ValidationError: 'stickiness.enabled' value 'yes'")),
        "{seen:#?}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(load_balancers(&rig).is_empty(), "the ALB comes after the target groups");
    assert_eq!(hostname(&rig, "web"), "");

    rig.kubectl_ok(&[
        "-n",
        NS,
        "annotate",
        "--overwrite",
        "ingress",
        "web",
        &format!("{attributes}=stickiness.enabled=true,stickiness.lb_cookie.duration_seconds=60"),
    ]);
    wait_hostname(&rig, "web");
    let tg = the_target_group(&rig);
    assert_eq!(rig.target_group_attribute(&tg, "stickiness.enabled").as_deref(), Some("true"));
    rig.reset();
}

#[test]
fn an_unknown_attribute_key_is_refused_by_elbv2() {
    let rig = rig();
    rig.reset();
    rig.tag_private_subnets("");
    install_controller(&rig, rig.get("RIG_CLUSTER_NAME"));
    app(&rig, "web", 1, json!({"alb.ingress.kubernetes.io/target-group-attributes": "stickiness.cookie=x"}));
    let mut seen = vec![];
    rig.eventually("a FailedDeployModel event", 60, || {
        seen = warnings(&rig, "web");
        !seen.is_empty()
    });
    assert!(
        seen.iter().any(|w| w
            .contains("api error ValidationError: Target group attribute key 'stickiness.cookie' is not recognized")),
        "{seen:#?}"
    );
    assert!(load_balancers(&rig).is_empty());
    rig.reset();
}

#[test]
fn targets_are_initial_then_healthy_and_a_removed_pod_drains_then_disappears() {
    let rig = rig();
    rig.reset();
    rig.tag_private_subnets("");
    install_controller(&rig, rig.get("RIG_CLUSTER_NAME"));
    app(
        &rig,
        "web",
        2,
        json!({"alb.ingress.kubernetes.io/target-group-attributes": "deregistration_delay.timeout_seconds=4"}),
    );
    let tg = the_target_group(&rig);
    let mut states = BTreeSet::new();
    rig.eventually("two healthy targets", 60, || {
        let health = target_health(&rig, &tg);
        for (_, state, reason) in &health {
            states.insert(format!("{state} {reason}"));
        }
        health.len() == 2 && health.iter().all(|(_, s, _)| s == "healthy")
    });
    assert!(states.iter().any(|s| s.starts_with("initial Elb.")), "never initial: {states:?}");

    // Scaled down rather than deleted: kwok gives a replacement pod the freed address at once.
    let before: BTreeSet<String> = pods(&rig, "web").iter().map(pod_ip).collect();
    rig.kubectl_ok(&["-n", NS, "scale", "deployment", "web", "--replicas=1"]);
    let mut after = BTreeSet::new();
    rig.eventually("one pod left", 30, || {
        after = pods(&rig, "web").iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null()).map(pod_ip).collect();
        after.len() == 1
    });
    let ip = before.difference(&after).next().unwrap().clone();
    rig.eventually("the removed pod's target to be draining", 30, || {
        target_health(&rig, &tg)
            .iter()
            .any(|(id, s, r)| *id == ip && s == "draining" && r == "Target.DeregistrationInProgress")
    });
    let draining_since = Instant::now();
    rig.eventually("the drained target to disappear", 30, || {
        target_health(&rig, &tg).iter().all(|(id, _, _)| *id != ip)
    });
    assert!(draining_since.elapsed() >= Duration::from_secs(2), "drained after {:?}", draining_since.elapsed());
    rig.reset();
}

#[test]
fn a_pod_whose_containers_are_not_ready_is_an_unhealthy_target() {
    let rig = rig();
    rig.reset();
    rig.tag_private_subnets("");
    install_controller(&rig, rig.get("RIG_CLUSTER_NAME"));
    app(&rig, "web", 1, json!({}));
    let tg = the_target_group(&rig);
    rig.eventually("a healthy target", 60, || {
        let health = target_health(&rig, &tg);
        health.len() == 1 && health[0].1 == "healthy"
    });
    let pod = pods(&rig, "web")[0].clone();
    let name = pod["metadata"]["name"].as_str().unwrap();
    let patch = json!({"status": {"conditions": [{"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady"}]}});
    rig.kubectl_ok(&["-n", NS, "patch", "pod", name, "--subresource=status", "-p", &patch.to_string()]);
    rig.eventually("an unhealthy target", 30, || {
        target_health(&rig, &tg)
            .iter()
            .any(|(id, s, r)| *id == pod_ip(&pod) && s == "unhealthy" && r == "Target.FailedHealthChecks")
    });
    let now = rig.kubectl_json(&["-n", NS, "get", "pod", name]);
    let cond = now["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "ContainersReady").unwrap();
    assert_eq!(cond["status"], "False", "kwok put the condition back: {cond}");
    rig.reset();
}

#[test]
fn names_follow_the_controllers_and_an_internal_alb_dns_name_starts_with_internal() {
    let rig = rig();
    rig.reset();
    let cluster = rig.get("RIG_CLUSTER_NAME").to_string();
    rig.tag_private_subnets("");
    install_controller(&rig, &cluster);
    app(&rig, "web-frontend", 1, json!({}));
    let host = wait_hostname(&rig, "web-frontend");
    let lb = load_balancers(&rig)[0].clone();
    let expected =
        format!("k8s-{NS}-webfront-{}", &sha256_hex(&[&cluster, &format!("{NS}/web-frontend"), "internal"])[..10]);
    assert_eq!(lb["LoadBalancerName"], expected.as_str());
    let dns = lb["DNSName"].as_str().unwrap();
    assert!(dns.starts_with(&format!("internal-{expected}-")), "{dns}");
    assert_eq!(host, dns.to_lowercase());

    let uid = rig.kubectl_ok(&["-n", NS, "get", "service", "web-frontend", "-o", "jsonpath={.metadata.uid}"]);
    let hash = sha256_hex(&[
        &cluster,
        &format!("{NS}/web-frontend"),
        NS,
        "web-frontend",
        uid.trim(),
        "80",
        "8080",
        "ip",
        "HTTP",
        "HTTP1",
    ]);
    let tg_name = format!("k8s-{NS}-webfront-{}", &hash[..10]);
    let tg = target_groups(&rig)[0].clone();
    assert_eq!(tg["TargetGroupName"], tg_name.as_str());
    let tg_tags = tags(&rig, tg["TargetGroupArn"].as_str().unwrap());
    assert_eq!(tg_tags["ingress.k8s.aws/resource"], format!("{NS}/web-frontend-web-frontend:80").as_str());
    let tgb = rig.kubectl_json(&["-n", NS, "get", "targetgroupbinding", &tg_name]);
    assert_eq!(tgb["spec"]["targetGroupARN"], tg["TargetGroupArn"]);
    let ing = rig.kubectl_json(&["-n", NS, "get", "ingress", "web-frontend"]);
    assert_eq!(ing["metadata"]["finalizers"], json!(["ingress.k8s.aws/resources"]));
    rig.reset();
}

#[test]
fn the_controller_tags_and_discovers_with_the_cluster_name_of_its_deployment() {
    let rig = rig();
    rig.reset();
    let private = subnet_ids(&rig, "*private*");
    // Tagged for the rig's cluster and for "renamed": eligible for a controller that calls itself "renamed".
    rig.tag_subnet_ids(
        &private,
        &["Key=kubernetes.io/role/internal-elb,Value=1", "Key=kubernetes.io/cluster/renamed,Value=shared"],
    );
    install_controller(&rig, "renamed");
    app(&rig, "web", 1, json!({}));
    wait_hostname(&rig, "web");
    let lb = load_balancers(&rig)[0].clone();
    assert_eq!(tags(&rig, lb["LoadBalancerArn"].as_str().unwrap())["elbv2.k8s.aws/cluster"], "renamed");
    let expected = format!("k8s-{NS}-web-{}", &sha256_hex(&["renamed", &format!("{NS}/web"), "internal"])[..10]);
    assert_eq!(lb["LoadBalancerName"], expected.as_str());
    let tg = the_target_group(&rig);
    assert_eq!(tags(&rig, &tg)["elbv2.k8s.aws/cluster"], "renamed");
    rig.reset();
}

#[test]
fn a_pod_with_the_target_health_readiness_gate_gets_the_condition_once_its_target_is_healthy() {
    let rig = rig();
    rig.reset();
    rig.tag_private_subnets("");
    install_controller(&rig, rig.get("RIG_CLUSTER_NAME"));
    app(&rig, "web", 0, json!({}));
    let mut binding = String::new();
    rig.eventually("the TargetGroupBinding", 60, || {
        let items = rig.kubectl_json(&["-n", NS, "get", "targetgroupbindings"])["items"].as_array().unwrap().clone();
        binding = items.first().map(|b| b["metadata"]["name"].as_str().unwrap().to_string()).unwrap_or_default();
        !binding.is_empty()
    });
    let gate = format!("target-health.elbv2.k8s.aws/{binding}");
    rig.kubectl_apply(&json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "gated", "namespace": NS, "labels": {"app": "web"}},
        "spec": {"readinessGates": [{"conditionType": gate}],
                 "containers": [{"name": "c", "image": "example", "ports": [{"containerPort": 8080}]}]},
    }));
    let gate_condition = || -> Value {
        let pod = rig.kubectl_json(&["-n", NS, "get", "pod", "gated"]);
        pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == gate.as_str())
            .cloned()
            .unwrap_or(Value::Null)
    };
    let mut reasons = BTreeSet::new();
    rig.eventually("the gate condition False while the target is initial", 30, || {
        let c = gate_condition();
        if c["status"] == "False" {
            reasons.insert(c["reason"].as_str().unwrap_or_default().to_string());
        }
        !reasons.is_empty()
    });
    assert!(reasons.iter().all(|r| r.starts_with("Elb.")), "{reasons:?}");
    rig.eventually("the gate condition True once the target is healthy", 30, || gate_condition()["status"] == "True");
    let tg = the_target_group(&rig);
    let ip = pod_ip(&rig.kubectl_json(&["-n", NS, "get", "pod", "gated"]));
    assert!(target_health(&rig, &tg).iter().any(|(id, s, _)| *id == ip && s == "healthy"));
    rig.reset();
}

#[test]
fn a_hand_made_attribute_change_stays_until_the_ingress_changes_as_reconciles_are_event_driven() {
    let rig = rig();
    rig.reset();
    rig.tag_private_subnets("");
    install_controller(&rig, rig.get("RIG_CLUSTER_NAME"));
    let attributes = "alb.ingress.kubernetes.io/target-group-attributes";
    app(&rig, "web", 1, json!({attributes: "stickiness.enabled=true"}));
    wait_hostname(&rig, "web");
    let tg = the_target_group(&rig);
    let sticky = || {
        let attrs = rig.aws(&["elbv2", "describe-target-group-attributes", "--target-group-arn", &tg]);
        attrs["Attributes"].as_array().unwrap().iter().find(|a| a["Key"] == "stickiness.enabled").unwrap()["Value"]
            .as_str()
            .unwrap()
            .to_string()
    };
    rig.eventually("the annotation's attribute", 30, || sticky() == "true");
    rig.aws(&[
        "elbv2",
        "modify-target-group-attributes",
        "--target-group-arn",
        &tg,
        "--attributes",
        "Key=stickiness.enabled,Value=false",
    ]);
    std::thread::sleep(Duration::from_secs(3)); // several passes of the controller
    assert_eq!(sticky(), "false", "the controller reconciled without a change to reconcile");
    rig.kubectl_ok(&["-n", NS, "annotate", "ingress", "web", "touched=1"]);
    rig.eventually("the annotation's attribute again", 30, || sticky() == "true");
    rig.reset();
}
