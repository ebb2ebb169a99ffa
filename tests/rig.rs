//! The rig proves each of its pieces is real: the control plane schedules and
//! runs pods, moto answers the AWS SDK, both helms install from the local
//! chart repository, the data plane is cookie-sticky, and the ALB simulator
//! plays the controller.

mod common;

use std::process::Command;

use common::{expect_code, read_env_file, rig, text};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

async fn kube_client(rig: &common::Rig) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(rig.get("KUBECONFIG")).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    kube::Client::try_from(config).unwrap()
}

#[test]
fn a_missing_rig_is_a_failure_that_says_how_to_start_it() {
    let e = read_env_file(std::path::Path::new("/nonexistent/.rig/env")).unwrap_err();
    assert!(e.contains("make rig-up"), "{e}");
}

#[tokio::test]
async fn kube_rs_lists_the_five_nodes_three_of_them_in_the_graphql_pool() {
    let rig = rig();
    let nodes: Api<Node> = Api::all(kube_client(&rig).await);
    let all = nodes.list(&ListParams::default()).await.unwrap();
    assert_eq!(all.items.len(), 5);
    let pool = nodes.list(&ListParams::default().labels("agentpool=scalardbgraphqlpool")).await.unwrap();
    assert_eq!(pool.items.len(), 3);
}

#[tokio::test]
async fn a_deployment_with_the_guides_affinity_lands_on_the_pool_and_becomes_ready_and_a_job_completes() {
    let rig = rig();
    rig.reset();
    let client = kube_client(&rig).await;
    rig.kubectl_ok(&["create", "namespace", "rig-smoke"]);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "rig-smoke");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "pinned"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "pinned"}},
            "template": {
                "metadata": {"labels": {"app": "pinned"}},
                "spec": {
                    "containers": [{"name": "c", "image": "example"}],
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "agentpool", "operator": "In", "values": ["scalardbgraphqlpool"]}]}
                    ]}}},
                    "tolerations": [{"key": "kubernetes.io/app", "operator": "Equal", "value": "scalardbgraphqlpool", "effect": "NoSchedule"}],
                },
            },
        },
    }))
    .unwrap();
    deployments.create(&PostParams::default(), &d).await.unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "rig-smoke");
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "once"},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "example"}]}}},
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "rig-smoke");
    let mut ready = false;
    for _ in 0..60 {
        let list = pods.list(&ListParams::default().labels("app=pinned")).await.unwrap();
        let ready_pods: Vec<&Pod> = list
            .items
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .collect();
        if ready_pods.len() == 3 {
            for p in ready_pods {
                let node = p.spec.as_ref().unwrap().node_name.clone().unwrap();
                assert!(node.starts_with("graphql-"), "pod {:?} landed on {node}", p.metadata.name);
            }
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(ready, "the Deployment's pods did not become Ready");
    let mut completed = false;
    for _ in 0..60 {
        if jobs.get("once").await.unwrap().status.and_then(|s| s.succeeded).unwrap_or(0) == 1 {
            completed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(completed, "the Job's pod did not complete");
    rig.reset();
}

#[tokio::test]
async fn the_aws_sdk_for_rust_reads_the_caller_and_the_eks_issuer_from_moto() {
    let rig = rig();
    for (k, v) in &rig.env {
        if k.starts_with("AWS_") {
            // SAFETY: the tests of this binary run one at a time under the rig lock.
            unsafe { std::env::set_var(k, v) };
        }
    }
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    let http = aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http).load().await;
    let who = aws_sdk_sts::Client::new(&sdk).get_caller_identity().send().await.unwrap();
    assert_eq!(who.account(), Some("123456789012"));
    let cluster =
        aws_sdk_eks::Client::new(&sdk).describe_cluster().name(rig.get("RIG_CLUSTER_NAME")).send().await.unwrap();
    let cluster = cluster.cluster().unwrap();
    let issuer = cluster.identity().and_then(|i| i.oidc()).and_then(|o| o.issuer()).unwrap();
    assert!(issuer.starts_with("https://oidc.eks.us-east-1.amazonaws.com/id/"), "{issuer}");
    assert_eq!(cluster.resources_vpc_config().unwrap().subnet_ids().len(), 4);
    let server = rig.kubectl_ok(&["config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"]);
    assert_eq!(cluster.endpoint().unwrap().trim_end_matches('/'), server.trim().trim_end_matches('/'));
}

#[test]
fn helm_3_and_helm_4_each_install_the_test_chart_from_the_local_repository() {
    let rig = rig();
    rig.reset();
    for helm in ["helm3", "helm4"] {
        let ns = format!("smoke-{helm}");
        let out = rig
            .cmd(helm)
            .args([
                "install",
                "g",
                "scalardb-graphql",
                "--repo",
                rig.get("RIG_CHART_REPO_URL"),
                "--version",
                "1.8.5",
                "-n",
                &ns,
                "--create-namespace",
                "--set",
                "ingress.className=alb",
            ])
            .output()
            .unwrap();
        expect_code(&out, 0, &format!("{helm} install"));
        let list = rig.cmd(helm).args(["list", "-n", &ns, "-o", "json"]).output().unwrap();
        let v: Value = serde_json::from_slice(&list.stdout).unwrap();
        assert_eq!(v[0]["status"], "deployed", "{helm}");
        assert_eq!(v[0]["chart"], "scalardb-graphql-1.8.5", "{helm}");
        let ingress = rig.kubectl_json(&["-n", &ns, "get", "ingress", "g-scalardb-graphql"]);
        assert_eq!(ingress["spec"]["ingressClassName"], "alb");
    }
    rig.reset();
}

fn post(url: &str, query: &str, cookie: Option<&str>) -> Value {
    let mut c = Command::new("curl");
    c.args(["-sf", "-H", "Content-Type: application/json", "--data", &json!({"query": query}).to_string(), url]);
    if let Some(cookie) = cookie {
        c.args(["-H", &format!("Cookie: {cookie}")]);
    }
    serde_json::from_slice(&c.output().unwrap().stdout).unwrap()
}

#[test]
fn through_haproxy_a_transaction_with_the_cookie_stays_and_without_it_is_lost() {
    let rig = rig();
    rig.reset();
    let url = format!("{}/graphql", rig.get("RIG_ALB_URL"));
    let head = Command::new("curl").args(["-si", &format!("{url}?query=%7B__typename%7D")]).output().unwrap();
    let head = text(&head.stdout);
    let cookie = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie: awsalb=")
                .then(|| l[12..].split(';').next().unwrap().trim().to_string())
        })
        .unwrap_or_else(|| panic!("no AWSALB cookie in {head}"));
    let start = post(&url, "query @transaction { __typename }", Some(&cookie));
    let id = start["extensions"]["transaction"]["id"].as_str().unwrap().to_string();
    for _ in 0..9 {
        let r = post(&url, &format!("query @transaction(id: \"{id}\") {{ __typename }}"), Some(&cookie));
        assert!(r.get("errors").is_none(), "{r}");
    }
    let r = post(&url, &format!("query @transaction(id: \"{id}\", commit: true) {{ __typename }}"), Some(&cookie));
    assert!(r.get("errors").is_none(), "{r}");

    let start = post(&url, "query @transaction { __typename }", None);
    let id = start["extensions"]["transaction"]["id"].as_str().unwrap().to_string();
    let lost = (0..10)
        .map(|_| post(&url, &format!("query @transaction(id: \"{id}\") {{ __typename }}"), None))
        .filter(|r| r["errors"][0]["message"].as_str().is_some_and(|m| m.contains("not found")))
        .count();
    assert!(lost >= 1, "without the cookie every request reached the same backend");

    rig.dataplane(&["sticky", "off"]);
    let r = Command::new("curl").args(["-sfi", &format!("{url}?query=%7B__typename%7D")]).output().unwrap();
    expect_code(&r, 0, "a query through the data plane with stickiness off");
    assert!(
        !text(&r.stdout).to_ascii_lowercase().contains("set-cookie: awsalb"),
        "stickiness off still sets the cookie"
    );
    rig.dataplane(&["sticky", "on"]);
}

#[test]
fn the_simulator_gives_an_alb_ingress_a_hostname_and_a_sticky_target_group_and_removes_both() {
    let rig = rig();
    rig.reset();
    rig.tag_private_subnets("");
    let out = rig
        .cmd("helm")
        .args([
            "install",
            "aws-load-balancer-controller",
            "aws-load-balancer-controller",
            "--repo",
            rig.get("RIG_CHART_REPO_URL"),
            "-n",
            "kube-system",
            "--set",
            &format!("clusterName={}", rig.get("RIG_CLUSTER_NAME")),
            "--wait",
        ])
        .output()
        .unwrap();
    expect_code(&out, 0, "helm install controller");
    let out = rig
        .cmd("helm")
        .args([
            "install",
            "g",
            "scalardb-graphql",
            "--repo",
            rig.get("RIG_CHART_REPO_URL"),
            "--set",
            "ingress.className=alb",
            "--set",
            "replicaCount=2",
        ])
        .output()
        .unwrap();
    expect_code(&out, 0, "helm install graphql");
    let mut hostname = String::new();
    rig.eventually("the Ingress hostname", 60, || {
        let ing = rig.kubectl_json(&["get", "ingress", "g-scalardb-graphql"]);
        hostname = ing["status"]["loadBalancer"]["ingress"][0]["hostname"].as_str().unwrap_or_default().to_string();
        !hostname.is_empty()
    });
    let lbs = rig.aws(&["elbv2", "describe-load-balancers"]);
    assert_eq!(lbs["LoadBalancers"][0]["DNSName"], hostname.as_str());
    assert_eq!(lbs["LoadBalancers"][0]["Scheme"], "internal");
    let tg = rig.aws(&["elbv2", "describe-target-groups"])["TargetGroups"][0]["TargetGroupArn"]
        .as_str()
        .unwrap()
        .to_string();
    let attrs = rig.aws(&["elbv2", "describe-target-group-attributes", "--target-group-arn", &tg]);
    let sticky = attrs["Attributes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["Key"] == "stickiness.enabled" && a["Value"] == "true");
    assert!(sticky, "{attrs}");
    rig.eventually("two ip targets", 30, || {
        rig.aws(&["elbv2", "describe-target-health", "--target-group-arn", &tg])["TargetHealthDescriptions"]
            .as_array()
            .unwrap()
            .len()
            == 2
    });
    let ing = rig.kubectl_json(&["get", "ingress", "g-scalardb-graphql"]);
    assert_eq!(ing["metadata"]["finalizers"], json!(["ingress.k8s.aws/resources"]));
    assert_eq!(rig.kubectl_json(&["get", "targetgroupbindings"])["items"].as_array().unwrap().len(), 1);

    expect_code(&rig.cmd("helm").args(["uninstall", "g"]).output().unwrap(), 0, "helm uninstall");
    rig.eventually("the ALB and target group to be deleted", 60, || {
        rig.aws(&["elbv2", "describe-load-balancers"])["LoadBalancers"].as_array().unwrap().is_empty()
            && rig.aws(&["elbv2", "describe-target-groups"])["TargetGroups"].as_array().unwrap().is_empty()
    });
    rig.eventually("the Ingress to be gone", 30, || {
        !rig.kubectl(&["get", "ingress", "g-scalardb-graphql"]).status.success()
    });
    rig.reset();
}
