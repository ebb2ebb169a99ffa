//! The rig proves each of its pieces is real: the control plane schedules and
//! runs pods, moto answers the AWS SDK, both helms install from the local
//! chart repository, the data plane is cookie-sticky, the ALB simulator
//! plays the controller, the controller's admission webhooks answer only while
//! its pods are ready, container logs come from the pod runner through the
//! egress proxy, and no control-plane process dials beyond loopback. It is
//! supervised: a killed component is reported down and started again, one
//! that keeps exiting is reported until it stays up. Its AWS server throttles
//! on request with each service's own error, applying and recording nothing.

mod common;

use std::process::{Command, Stdio};

use common::{expect_code, install_controller, read_env_file, rig, text};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

#[test]
fn a_missing_rig_is_a_failure_that_says_how_to_start_it() {
    let e = read_env_file(std::path::Path::new("/nonexistent/.rig/env")).unwrap_err();
    assert!(e.contains("make rig-up"), "{e}");
}

#[tokio::test]
async fn kube_rs_lists_the_five_nodes_three_of_them_in_the_graphql_pool() {
    let rig = rig();
    let (client, _proxy) = rig.kube_client();
    let nodes: Api<Node> = Api::all(client);
    let all = nodes.list(&ListParams::default()).await.unwrap();
    assert_eq!(all.items.len(), 5);
    let pool = nodes.list(&ListParams::default().labels("agentpool=scalardbgraphqlpool")).await.unwrap();
    assert_eq!(pool.items.len(), 3);
}

#[tokio::test]
async fn a_deployment_with_the_guides_affinity_lands_on_the_pool_and_becomes_ready_and_a_job_completes() {
    let rig = rig();
    rig.reset();
    let (client, _proxy) = rig.kube_client();
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
    let sdk =
        aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(PlainHttp::default()).load().await;
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

/// The SDK's HTTP client for the rig's AWS server (plain http on loopback): hyper's pooled client.
#[derive(Debug, Clone)]
struct PlainHttp(
    hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        aws_smithy_types::body::SdkBody,
    >,
);

impl Default for PlainHttp {
    fn default() -> Self {
        let builder = hyper_util::client::legacy::Builder::new(hyper_util::rt::TokioExecutor::new());
        PlainHttp(builder.build_http())
    }
}

impl aws_smithy_runtime_api::client::http::HttpClient for PlainHttp {
    fn http_connector(
        &self,
        _settings: &aws_smithy_runtime_api::client::http::HttpConnectorSettings,
        _components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
    ) -> aws_smithy_runtime_api::client::http::SharedHttpConnector {
        aws_smithy_runtime_api::client::http::SharedHttpConnector::new(self.clone())
    }
}

impl aws_smithy_runtime_api::client::http::HttpConnector for PlainHttp {
    fn call(
        &self,
        request: aws_smithy_runtime_api::client::orchestrator::HttpRequest,
    ) -> aws_smithy_runtime_api::client::http::HttpConnectorFuture {
        use aws_smithy_runtime_api::client::result::ConnectorError;
        let client = self.0.clone();
        aws_smithy_runtime_api::client::http::HttpConnectorFuture::new(async move {
            let request = request.try_into_http1x().map_err(|e| ConnectorError::user(e.into()))?;
            let response = client.request(request).await.map_err(|e| ConnectorError::io(e.into()))?;
            aws_smithy_runtime_api::client::orchestrator::HttpResponse::try_from(
                response.map(aws_smithy_types::body::SdkBody::from_body_1_x),
            )
            .map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
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
    install_controller(&rig, rig.get("RIG_CLUSTER_NAME"));
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
    let lb = lbs["LoadBalancers"][0]["LoadBalancerArn"].as_str().unwrap().to_string();
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
    // As ELBv2 does, DescribeTags refuses a request naming a deleted resource (moto alone answers empty tags).
    for (arn, code) in [(&tg, "TargetGroupNotFound"), (&lb, "LoadBalancerNotFound")] {
        let out = rig.shell(&["aws", "elbv2", "describe-tags", "--resource-arns", arn]);
        let stderr = text(&out.stderr);
        assert!(!out.status.success() && stderr.contains(&format!("({code})")), "describe-tags {arn}: {stderr}");
    }
    rig.reset();
}

// --- the controller's admission webhooks ------------------------------------------------

fn scale_controller(rig: &common::Rig, replicas: u32) {
    let replicas = format!("--replicas={replicas}");
    rig.kubectl_ok(&["-n", "kube-system", "scale", "deployment", "aws-load-balancer-controller", &replicas]);
}

fn ingress(name: &str, class: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name},
        "spec": {"ingressClassName": class, "rules": [{"http": {"paths": [{
            "path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "web", "port": {"number": 80}}},
        }]}}]},
    })
}

fn service(name: &str, kind: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"type": kind, "selector": {"app": "web"}, "ports": [{"port": 80}]},
    })
}

/// `kubectl create` of `manifest` in `ns`; with `dry`, a server-side dry run (the webhooks still answer).
fn create(rig: &common::Rig, ns: &str, manifest: &Value, dry: bool) -> std::process::Output {
    let mut args = vec!["-n", ns, "create", "-f", "-"];
    if dry {
        args.push("--dry-run=server");
    }
    rig.kubectl_input(&args, &manifest.to_string())
}

/// Scales the controller to zero and back, checking what the API server lets through meanwhile.
fn webhooks_follow_the_controller(rig: &common::Rig, ns: &str) {
    expect_code(&create(rig, ns, &ingress("before", "alb"), false), 0, "an Ingress while the controller runs");
    expect_code(&create(rig, ns, &service("web", "ClusterIP"), false), 0, "a Service while the controller runs");
    scale_controller(rig, 0);
    rig.eventually("the Ingress webhook to be unreachable", 60, || {
        !create(rig, ns, &ingress("probe", "alb"), true).status.success()
    });
    let out = create(rig, ns, &ingress("during", "alb"), false);
    expect_code(&out, 1, "an Ingress while the controller has no pod");
    assert!(text(&out.stderr).contains(r#"failed calling webhook "vingress.elbv2.k8s.aws""#), "{}", text(&out.stderr));
    let out = create(rig, ns, &service("other", "ClusterIP"), false);
    expect_code(&out, 1, "a Service while the controller has no pod");
    assert!(text(&out.stderr).contains(r#"failed calling webhook "mservice.elbv2.k8s.aws""#), "{}", text(&out.stderr));
    scale_controller(rig, 2);
    rig.eventually("the Ingress webhook to answer again", 60, || {
        create(rig, ns, &ingress("probe", "alb"), true).status.success()
    });
    expect_code(&create(rig, ns, &ingress("after", "alb"), false), 0, "an Ingress once the controller is back");
    expect_code(&create(rig, ns, &service("other", "ClusterIP"), false), 0, "a Service once the controller is back");
}

#[test]
fn the_controllers_webhooks_admit_while_it_has_ready_pods_and_cannot_be_reached_while_it_has_none() {
    let rig = rig();
    rig.reset();
    install_controller(&rig, rig.get("RIG_CLUSTER_NAME"));
    rig.kubectl_ok(&["create", "namespace", "hooks"]);
    webhooks_follow_the_controller(&rig, "hooks");
    rig.reset();
}

#[test]
fn the_controllers_webhooks_apply_its_rules_its_defaults_and_its_readiness_gates() {
    let rig = rig();
    rig.reset();
    install_controller(&rig, rig.get("RIG_CLUSTER_NAME"));
    rig.kubectl_ok(&["create", "namespace", "gates"]);
    rig.kubectl_ok(&["label", "namespace", "gates", "elbv2.k8s.aws/pod-readiness-gate-inject=enabled"]);

    let out = create(&rig, "gates", &ingress("lost", "no-such-class"), false);
    expect_code(&out, 1, "an Ingress of an unknown class");
    assert!(
        text(&out.stderr)
            .contains(r#"admission webhook "vingress.elbv2.k8s.aws" denied the request: invalid ingress class"#),
        "{}",
        text(&out.stderr)
    );
    let params = json!({"apiVersion": "elbv2.k8s.aws/v1beta1", "kind": "IngressClassParams",
                        "metadata": {"name": "rig-bad-cidr"}, "spec": {"inboundCIDRs": ["10.0.0.1/24"]}});
    let out = create(&rig, "gates", &params, false);
    expect_code(&out, 1, "IngressClassParams with host bits in a CIDR");
    assert!(text(&out.stderr).contains("vingressclassparams.elbv2.k8s.aws"), "{}", text(&out.stderr));

    expect_code(&create(&rig, "gates", &service("lb", "LoadBalancer"), false), 0, "a LoadBalancer Service");
    let lb = rig.kubectl_json(&["-n", "gates", "get", "service", "lb"]);
    assert_eq!(lb["spec"]["loadBalancerClass"], "service.k8s.aws/nlb");
    expect_code(&create(&rig, "gates", &service("web", "ClusterIP"), false), 0, "a ClusterIP Service");
    assert!(rig.kubectl_json(&["-n", "gates", "get", "service", "web"])["spec"]["loadBalancerClass"].is_null());

    let vpc = rig.vpc();
    let tg = rig.create_ip_target_group("rig-gates", 8080);
    let binding = |name: &str, target: Value| {
        let mut spec = json!({"serviceRef": {"name": "web", "port": 80}});
        spec.as_object_mut().unwrap().extend(target.as_object().unwrap().clone());
        json!({"apiVersion": "elbv2.k8s.aws/v1beta1", "kind": "TargetGroupBinding",
               "metadata": {"name": name}, "spec": spec})
    };
    let out = create(&rig, "gates", &binding("web-tgb", json!({"targetGroupName": "rig-gates"})), false);
    expect_code(&out, 0, "a TargetGroupBinding by target group name");
    let spec = rig.kubectl_json(&["-n", "gates", "get", "targetgroupbinding", "web-tgb"])["spec"].clone();
    assert_eq!(spec["targetGroupARN"], tg.as_str(), "{spec}");
    assert_eq!(spec["targetType"], "ip", "{spec}");
    assert_eq!(spec["ipAddressType"], "ipv4", "{spec}");
    assert_eq!(spec["vpcID"], vpc.as_str(), "{spec}");
    assert_eq!(spec["targetGroupProtocol"], "HTTP", "{spec}");
    let out = create(&rig, "gates", &binding("again", json!({"targetGroupARN": tg})), false);
    expect_code(&out, 1, "a second binding of the same target group");
    assert!(
        text(&out.stderr).contains("is already bound to TargetGroupBinding gates/web-tgb"),
        "{}",
        text(&out.stderr)
    );

    let pod = |name: &str, app: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": app}},
               "spec": {"containers": [{"name": "c", "image": "example"}]}})
    };
    expect_code(&create(&rig, "gates", &pod("selected", "web"), false), 0, "a pod behind the bound Service");
    expect_code(&create(&rig, "gates", &pod("elsewhere", "other"), false), 0, "a pod behind no binding");
    let gates = |name: &str| rig.kubectl_json(&["-n", "gates", "get", "pod", name])["spec"]["readinessGates"].clone();
    assert_eq!(gates("selected"), json!([{"conditionType": "target-health.elbv2.k8s.aws/web-tgb"}]));
    assert!(gates("elsewhere").is_null(), "{}", gates("elsewhere"));
    rig.reset();
}

#[test]
fn the_webhook_certificate_is_new_at_each_upgrade_unless_keep_tls_secret_and_the_webhooks_follow_it() {
    let rig = rig();
    rig.reset();
    install_controller(&rig, rig.get("RIG_CLUSTER_NAME"));
    let tls = || rig.kubectl_json(&["-n", "kube-system", "get", "secret", "aws-load-balancer-tls"])["data"].clone();
    let ca_bundles = || {
        ["mutatingwebhookconfiguration", "validatingwebhookconfiguration"].map(|kind| {
            let config = rig.kubectl_json(&["get", kind, "aws-load-balancer-webhook"]);
            let bundles: Vec<Value> =
                config["webhooks"].as_array().unwrap().iter().map(|w| w["clientConfig"]["caBundle"].clone()).collect();
            assert!(bundles.iter().all(|b| *b == bundles[0]), "{kind}: {bundles:?}");
            bundles[0].clone()
        })
    };
    let first = tls();
    assert_eq!(ca_bundles(), [first["ca.crt"].clone(), first["ca.crt"].clone()]);
    let upgrade = |keep: &str| {
        let out = rig
            .cmd("helm")
            .args(["upgrade", "aws-load-balancer-controller", "aws-load-balancer-controller", "--repo"])
            .args([rig.get("RIG_CHART_REPO_URL"), "-n", "kube-system", "--reuse-values", "--wait", "--set"])
            .arg(format!("keepTLSSecret={keep}"))
            .output()
            .unwrap();
        expect_code(&out, 0, &format!("helm upgrade with keepTLSSecret={keep}"));
    };
    upgrade("true");
    assert_eq!(tls(), first, "keepTLSSecret=true made a new certificate");
    upgrade("false");
    let second = tls();
    assert_ne!(second["tls.crt"], first["tls.crt"], "an upgrade without keepTLSSecret kept the certificate");
    assert_eq!(ca_bundles(), [second["ca.crt"].clone(), second["ca.crt"].clone()]);
    rig.kubectl_ok(&["create", "namespace", "hooks"]);
    rig.eventually("an Ingress admitted under the new certificate", 30, || {
        create(&rig, "hooks", &ingress("renewed", "alb"), true).status.success()
    });
    rig.reset();
}

// --- nothing leaves loopback ---------------------------------------------------------------

/// The addresses of every inet connect() in an strace log (`-e trace=connect`).
fn connect_targets(trace: &str) -> Vec<(String, String)> {
    let quoted = |line: &str, after: &str| {
        line.split_once(after).and_then(|(_, rest)| rest.split('"').next()).map(str::to_string)
    };
    trace
        .lines()
        .filter(|l| l.contains("connect(") && l.contains("sa_family=AF_INET"))
        .map(|l| {
            let addr = quoted(l, "inet_addr(\"")
                .or_else(|| quoted(l, "inet_pton(AF_INET6, \""))
                .unwrap_or_else(|| panic!("no address in {l}"));
            (addr, l.to_string())
        })
        .collect()
}

fn loopback(addr: &str) -> bool {
    addr.starts_with("127.") || addr == "::1" || addr.starts_with("::ffff:127.")
}

#[test]
fn no_control_plane_process_connects_to_anything_but_loopback_while_webhooks_logs_and_services_run() {
    let rig = rig();
    rig.reset();
    let pids_dir = common::state().join("kwok/clusters").join(rig.get("RIG_CLUSTER_NAME")).join("pids");
    let mut pids = vec![];
    for f in std::fs::read_dir(&pids_dir).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_some_and(|e| e == "pid") {
            pids.push(std::fs::read_to_string(&f).unwrap().trim().to_string());
        }
    }
    for component in ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok-controller"] {
        assert!(pids_dir.join(format!("{component}.pid")).exists(), "no pid file for {component} in {pids_dir:?}");
    }
    // The pod runner too: it talks to the API server, the AWS server and the data plane, and runs the pods.
    let runner_pid = common::state().join("pids/pod-runner");
    pids.push(std::fs::read_to_string(&runner_pid).expect("the pod runner's pid file").trim().to_string());
    let dir = tempfile::tempdir().unwrap();
    let (trace, attach_log) = (dir.path().join("connect.trace"), dir.path().join("strace.err"));
    let mut strace = rig.cmd("strace");
    strace.args(["-f", "-e", "trace=connect", "-e", "signal=none", "-o"]).arg(&trace);
    for pid in &pids {
        strace.args(["-p", pid]);
    }
    let mut strace =
        strace.stderr(std::fs::File::create(&attach_log).unwrap()).stdout(Stdio::null()).spawn().expect("strace");
    rig.eventually("strace to attach to the control plane", 30, || {
        let attached = std::fs::read_to_string(&attach_log).unwrap_or_default();
        pids.iter().all(|p| attached.contains(&format!("Process {p} attached")))
    });
    let egress_log = rig.get("RIG_CLUSTER_EGRESS_LOG");
    let mark = std::fs::metadata(egress_log).unwrap().len() as usize;

    install_controller(&rig, rig.get("RIG_CLUSTER_NAME"));
    rig.kubectl_ok(&["create", "namespace", "hooks"]);
    webhooks_follow_the_controller(&rig, "hooks");
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "talker"},
                     "spec": {"containers": [{"name": "c", "image": "example"}]}});
    expect_code(&create(&rig, "hooks", &pod, false), 0, "a pod kwok plays");
    let runner_pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "runner-talker"},
                            "spec": {"restartPolicy": "Never", "containers": [{"name": "c",
                                     "image": "python:3.13.7-alpine3.22",
                                     "command": ["python3", "-c", "print('said through the kubelet')"]}]}});
    expect_code(&create(&rig, "hooks", &runner_pod, false), 0, "a pod the pod runner runs");
    let mut node = String::new();
    rig.eventually("the pods to run", 60, || {
        let p = rig.kubectl_json(&["-n", "hooks", "get", "pod", "talker"]);
        node = p["spec"]["nodeName"].as_str().unwrap_or_default().to_string();
        p["status"]["phase"] == "Running"
            && rig.kubectl_json(&["-n", "hooks", "get", "pod", "runner-talker"])["status"]["phase"] == "Succeeded"
    });
    let node = rig.kubectl_json(&["get", "node", &node])["status"].clone();
    let kubelet = format!(
        "{}:{}",
        node["addresses"][0]["address"].as_str().unwrap(),
        node["daemonEndpoints"]["kubeletEndpoint"]["Port"]
    );
    let logs = rig.kubectl(&["-n", "hooks", "logs", "runner-talker"]);
    expect_code(&logs, 0, "kubectl logs of the runner's pod, which needs the API server to dial the node");
    assert_eq!(text(&logs.stdout), "said through the kubelet\n");
    let kwok_logs = rig.kubectl(&["-n", "hooks", "logs", "talker"]);
    expect_code(&kwok_logs, 1, "kubectl logs of a pod no kubelet runs");

    // SAFETY: kill only signals strace, our child; on SIGINT it detaches from the control plane.
    assert_eq!(unsafe { libc::kill(strace.id() as libc::pid_t, libc::SIGINT) }, 0);
    strace.wait().unwrap();

    let trace = std::fs::read_to_string(&trace).unwrap();
    let targets = connect_targets(&trace);
    let outside: Vec<&String> = targets.iter().filter(|(a, _)| !loopback(a)).map(|(_, l)| l).collect();
    assert!(outside.is_empty(), "connect() calls to non-loopback addresses:\n{outside:#?}");
    let socket = format!("sun_path=\"{}\"", rig.get("RIG_CLUSTER_EGRESS_SOCKET"));
    assert!(trace.contains(&socket), "the API server never connected to the egress proxy; traced:\n{trace}");

    let egress = std::fs::read_to_string(egress_log).unwrap()[mark..].to_string();
    let connects: Vec<&str> = egress.lines().filter(|l| l.contains(" CONNECT ")).collect();
    let service = "Service kube-system/aws-load-balancer-webhook-service";
    assert!(connects.iter().any(|l| l.contains(&format!("answered: {service} has ready endpoints"))), "{egress}");
    assert!(connects.iter().any(|l| l.contains(&format!("refused: {service} has no ready endpoints"))), "{egress}");
    assert!(
        connects.iter().any(|l| l.contains(&format!("CONNECT {kubelet} answered: kubelet"))),
        "kubectl logs did not reach the node's kubelet {kubelet} through the proxy: {egress}"
    );
    assert!(
        !connects.iter().any(|l| l.contains(" answered: ") && !l.contains("answered: kubelet") && !l.contains(service)),
        "the proxy answered something else: {egress}"
    );
    rig.reset();
}

/// SIGKILL to one process of the rig.
fn kill(pid: i32) {
    // SAFETY: kill only sends a signal, to a process of the rig named by its pid file.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "SIGKILL to {pid}");
}

/// Waits until the supervisor has started `component` again: a new pid, running.
fn restarted(rig: &common::Rig, component: &str, old: i32) -> i32 {
    let mut new = old;
    rig.eventually(&format!("{component} started again"), 60, || {
        new = rig.pid_of(component);
        new != old && common::Rig::running(new)
    });
    new
}

/// A pod is scheduled, made Ready by kwok, and deleted again.
fn a_pod_runs(rig: &common::Rig, name: &str) {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
                     "spec": {"containers": [{"name": "c", "image": "example"}]}});
    rig.kubectl_apply(&pod);
    let ready = rig.kubectl(&["wait", "--for=condition=Ready", &format!("pod/{name}"), "--timeout=60s"]);
    rig.kubectl_ok(&["delete", "pod", name, "--wait=true", "--timeout=60s"]);
    expect_code(&ready, 0, "a new pod scheduled and Ready");
}

#[test]
fn a_killed_control_plane_component_is_reported_down_and_started_again_by_the_supervisor() {
    let rig = rig();
    rig.reset();
    for component in ["kube-scheduler", "kube-controller-manager", "kube-apiserver", "kwok-controller", "aws"] {
        let old = rig.pid_of(component);
        // The supervisor held still, so that the moment between exit and restart lasts.
        let held = rig.pause("supervisor");
        kill(old);
        let gone = std::time::Instant::now();
        rig.eventually(&format!("{component} (pid {old}) gone"), 10, || !common::Rig::running(old));
        let status = rig.rig_status();
        let said = text(&status.stdout);
        assert!(!status.status.success(), "rig status passed with {component} killed:\n{said}");
        assert!(said.contains(&format!("problem: {component} (pid {old}) is not running")), "{said}");
        held.resume();
        let new = restarted(&rig, component, old);
        eprintln!(
            "rig: {component} killed (pid {old}), running again as pid {new} after {:.1}s (the supervisor held still meanwhile)",
            gone.elapsed().as_secs_f64()
        );
    }
    rig.eventually("rig status healthy again", 90, || rig.rig_status().status.success());
    let said = text(&rig.rig_status().stdout);
    for component in ["kube-scheduler", "kube-apiserver", "aws"] {
        assert!(said.contains(&format!("  {component:20} running, restarted ")), "{said}");
    }
    // The control plane works again: a new pod is scheduled and made Ready; the AWS account is seeded.
    a_pod_runs(&rig, "after-restarts");
    let clusters = rig.aws(&["eks", "list-clusters"]);
    assert_eq!(clusters["clusters"][0], rig.get("RIG_CLUSTER_NAME"));
    rig.reset();
}

#[test]
fn a_component_that_keeps_exiting_is_reported_as_restarting_repeatedly_until_it_stays_up() {
    let rig = rig();
    let mut pid = rig.pid_of("kube-scheduler");
    for _ in 0..3 {
        kill(pid);
        pid = restarted(&rig, "kube-scheduler", pid);
    }
    let status = rig.rig_status();
    let said = text(&status.stdout);
    assert!(!status.status.success(), "rig status passed with the scheduler restarted 3 times in a row:\n{said}");
    assert!(said.contains("problem: kube-scheduler is restarting repeatedly (3 exits"), "{said}");
    let since = std::time::Instant::now();
    rig.eventually("rig status healthy once the scheduler stays up", 60, || rig.rig_status().status.success());
    eprintln!("rig: healthy again {:.1}s after the third restart", since.elapsed().as_secs_f64());
    assert_eq!(rig.pid_of("kube-scheduler"), pid, "the scheduler was restarted again");
    a_pod_runs(&rig, "after-flapping");
}

fn post_signed(rig: &common::Rig, service: &str, body: &str) -> (String, String) {
    let auth = format!(
        "Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{service}/aws4_request, \
         SignedHeaders=host, Signature=0"
    );
    let out = Command::new("curl")
        .args(["-s", "-D", "-", "-X", "POST", "-H", &auth, "--data-binary", body, rig.get("AWS_ENDPOINT_URL")])
        .output()
        .expect("curl");
    let raw = text(&out.stdout);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    (head.to_string(), body.to_string())
}

#[test]
fn throttled_aws_requests_get_each_services_own_throttling_error_and_change_nothing() {
    let rig = rig();
    rig.reset();
    rig.aws_throttle(1.0, 1);
    rig.moto_record();
    let policy = "Action=CreatePolicy&Version=2010-05-08&PolicyName=throttled&PolicyDocument=%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%22s3%3AGetObject%22%2C%22Resource%22%3A%22%2A%22%7D%5D%7D";
    let (head, body) = post_signed(&rig, "iam", policy);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(
        body.starts_with("<ErrorResponse")
            && body.contains("<Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message>")
            && body.contains("<RequestId>"),
        "{body}"
    );
    let (head, body) = post_signed(
        &rig,
        "elasticloadbalancing",
        "Action=CreateTargetGroup&Version=2015-12-01&Name=throttled&Protocol=HTTP&Port=80&VpcId=vpc-1",
    );
    assert!(head.starts_with("HTTP/1.1 400") && body.contains("<Code>Throttling</Code>"), "{head}{body}");
    let (head, body) = post_signed(&rig, "sts", "Action=GetCallerIdentity&Version=2011-06-15");
    assert!(head.starts_with("HTTP/1.1 400") && body.contains("<Code>Throttling</Code>"), "{head}{body}");
    let (head, body) = post_signed(
        &rig,
        "ec2",
        "Action=CreateTags&Version=2016-11-15&ResourceId.1=vpc-1&Tag.1.Key=throttled&Tag.1.Value=1",
    );
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(
        body.contains("<Response><Errors><Error><Code>RequestLimitExceeded</Code>") && body.contains("<RequestID>"),
        "{body}"
    );
    let out = rig.cmd("aws").args(["eks", "list-clusters"]).env("AWS_MAX_ATTEMPTS", "1").output().unwrap();
    assert!(text(&out.stderr).contains("(ThrottlingException)"), "{}", text(&out.stderr));
    let eks = Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null", "-H",
               "Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/eks/aws4_request, SignedHeaders=host, Signature=0",
               &format!("{}/clusters", rig.get("AWS_ENDPOINT_URL"))])
        .output()
        .unwrap();
    let head = text(&eks.stdout).to_lowercase();
    assert!(head.starts_with("http/1.1 429") && head.contains("x-amzn-errortype: throttlingexception"), "{head}");

    let counters = rig.aws_faults();
    assert_eq!(counters["throttled_by_client"]["curl"], 5, "{counters}");
    assert_eq!(counters["throttled_by_client"]["aws-cli"], 1, "{counters}");
    assert_eq!(counters["throttled_by_service"]["eks"], 2, "{counters}");
    // Nothing was applied and nothing recorded: moto never saw these requests.
    let recording = |rig: &common::Rig| {
        let url = format!("{}/moto-api/recorder/download-recording", rig.get("AWS_ENDPOINT_URL"));
        let out = Command::new("curl").args(["-sf", &url]).output().unwrap();
        expect_code(&out, 0, "moto's recording");
        text(&out.stdout).lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect::<Vec<_>>()
    };
    assert_eq!(recording(&rig), Vec::<String>::new(), "throttled requests were recorded");
    rig.aws_faults_off();
    let policies = rig.aws(&["iam", "list-policies", "--scope", "Local"]);
    assert_eq!(policies["Policies"], json!([]), "a throttled CreatePolicy was applied");
    let tags = rig.aws(&["ec2", "describe-tags", "--filters", "Name=key,Values=throttled"]);
    assert_eq!(tags["Tags"], json!([]), "a throttled CreateTags was applied");
    // Off, the same request reaches moto and its recorder.
    rig.moto_record();
    let (head, _) = post_signed(&rig, "iam", policy);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let seen = recording(&rig);
    assert!(seen.iter().any(|l| l.contains("curl/")), "the recorder did not see an unthrottled request: {seen:?}");
    assert_eq!(rig.aws(&["iam", "list-policies", "--scope", "Local"])["Policies"][0]["PolicyName"], "throttled");
    rig.reset();
}

// --- the stand-in scalardb-cluster chart and its nodes -----------------------------------------

/// The node properties a `--target cluster` install gives: GraphQL on, the three membership
/// properties from the chart's env, and a value from the Secret (`envFrom`).
const CLUSTER_PROPERTIES: &str = "scalar.db.cluster.membership.type=KUBERNETES
scalar.db.cluster.membership.kubernetes.endpoint.namespace_name=${env:SCALAR_DB_CLUSTER_MEMBERSHIP_KUBERNETES_ENDPOINT_NAMESPACE_NAME}
scalar.db.cluster.membership.kubernetes.endpoint.name=${env:SCALAR_DB_CLUSTER_MEMBERSHIP_KUBERNETES_ENDPOINT_NAME}
scalar.db.cluster.node.licensing.license_key=${env:SCALAR_DB_CLUSTER_LICENSE_KEY}
scalar.db.cluster.node.licensing.license_check_cert_pem=${env:SCALAR_DB_CLUSTER_LICENSE_CHECK_CERT_PEM}
scalar.db.storage=jdbc
scalar.db.contact_points=jdbc:postgresql://db:5432/postgres
scalar.db.username=${env:SCALAR_DB_CLUSTER_POSTGRES_USERNAME}
scalar.db.password=${env:SCALAR_DB_CLUSTER_POSTGRES_PASSWORD}
scalar.db.graphql.enabled=true
";

/// The Secret the chart's `scalardbCluster.secretName` names.
fn cluster_secret(rig: &common::Rig, ns: &str) {
    rig.kubectl_ok(&[
        "-n",
        ns,
        "create",
        "secret",
        "generic",
        "scalardb-cluster-credentials",
        "--from-literal=SCALAR_DB_CLUSTER_LICENSE_KEY=rig-license",
        &format!("--from-literal=SCALAR_DB_CLUSTER_LICENSE_CHECK_CERT_PEM={}", common::LICENSE_CERT_PEM),
        "--from-literal=SCALAR_DB_CLUSTER_POSTGRES_USERNAME=scalar",
        &format!("--from-literal=SCALAR_DB_CLUSTER_POSTGRES_PASSWORD={}", common::DB_PASSWORD),
    ]);
}

/// `helm install` of the stand-in scalardb-cluster chart from the rig's repository, properties from a file.
fn install_cluster(
    rig: &common::Rig,
    helm: &str,
    ns: &str,
    release: &str,
    version: &str,
    properties: &str,
    extra: &[&str],
) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scalardb-cluster-node.properties");
    std::fs::write(&file, properties).unwrap();
    let set_file = format!("scalardbCluster.scalardbClusterNodeProperties={}", file.display());
    rig.cmd(helm)
        .args(["install", release, "scalardb-cluster", "--repo", rig.get("RIG_CHART_REPO_URL")])
        .args(["--version", version, "-n", ns, "--set-file", &set_file])
        .args(["--set", "scalardbCluster.secretName=scalardb-cluster-credentials"])
        .args(["--set", "scalardbCluster.image.repository=ghcr.io/scalar-labs/scalardb-cluster-node-byol-premium"])
        .args(extra)
        .output()
        .unwrap()
}

fn pods_of(rig: &common::Rig, ns: &str, release: &str) -> Vec<Value> {
    let selector = format!("app.kubernetes.io/app=scalardb-cluster,app.kubernetes.io/instance={release}");
    rig.kubectl_json(&["-n", ns, "get", "pods", "-l", &selector])["items"].as_array().unwrap().clone()
}

fn condition(pod: &Value, kind: &str) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c["type"] == kind && c["status"] == "True"))
}

#[test]
fn helm_3_and_helm_4_install_the_stand_in_cluster_chart_and_its_nodes_become_ready_behind_a_graphql_service() {
    let rig = rig();
    rig.reset();
    for helm in ["helm3", "helm4"] {
        for version in ["1.10.0", "1.11.0"] {
            let ns = format!("cluster-{helm}-{}", version.replace('.', "-"));
            rig.kubectl_ok(&["create", "namespace", &ns]);
            cluster_secret(&rig, &ns);
            let out = install_cluster(
                &rig,
                helm,
                &ns,
                "scalardb-cluster",
                version,
                CLUSTER_PROPERTIES,
                &["--set", "scalardbCluster.graphql.enabled=true", "--set", "scalardbCluster.replicaCount=2"],
            );
            expect_code(&out, 0, &format!("{helm} install scalardb-cluster {version}"));
            let list = rig.cmd(helm).args(["list", "-n", &ns, "-o", "json"]).output().unwrap();
            let v: Value = serde_json::from_slice(&list.stdout).unwrap();
            assert_eq!(v[0]["status"], "deployed", "{helm}");
            assert_eq!(v[0]["chart"], format!("scalardb-cluster-{version}"), "{helm}");
            // The release name contains the chart's name: the release name alone is the fullname.
            let svc = rig.kubectl_json(&["-n", &ns, "get", "service", "scalardb-cluster-graphql"]);
            assert_eq!(svc["spec"]["type"], "ClusterIP");
            assert_eq!(
                svc["spec"]["ports"],
                json!([{"name": "graphql", "port": 8080, "protocol": "TCP", "targetPort": 8080}])
            );
            assert_eq!(svc["spec"]["sessionAffinity"], "None", "{svc}");
            assert_eq!(svc["spec"]["selector"]["app.kubernetes.io/app"], "scalardb-cluster");
            let headless = rig.kubectl_json(&["-n", &ns, "get", "service", "scalardb-cluster-headless"]);
            assert_eq!(headless["spec"]["clusterIP"], "None");
            rig.kubectl_ok(&["-n", &ns, "get", "service", "scalardb-cluster-metrics"]);
            rig.kubectl_ok(&["-n", &ns, "get", "deployment", "scalardb-cluster-node"]);
            rig.kubectl_ok(&["-n", &ns, "get", "serviceaccount/scalardb-cluster-sa", "role/scalardb-cluster-role"]);
            let binding = rig.kubectl_json(&["-n", &ns, "get", "rolebinding", "scalardb-cluster-rolebinding"]);
            assert_eq!(binding["subjects"][0]["name"], "scalardb-cluster-sa");
            let since = std::time::Instant::now();
            rig.eventually(&format!("two Ready nodes ({helm}, {version})"), 90, || {
                let pods = pods_of(&rig, &ns, "scalardb-cluster");
                pods.len() == 2 && pods.iter().all(|p| condition(p, "Ready"))
            });
            eprintln!("{helm} {version}: 2 nodes Ready {:.1}s after the install", since.elapsed().as_secs_f64());
            let pod = &pods_of(&rig, &ns, "scalardb-cluster")[0];
            let name = pod["metadata"]["name"].as_str().unwrap();
            let logs = rig.kubectl_ok(&["-n", &ns, "logs", name]);
            assert!(logs.contains(&format!("member of {ns}_scalardb-cluster-headless")), "{logs}");
            assert!(logs.contains(":8080/graphql"), "{logs}");
            expect_code(
                &rig.cmd(helm).args(["uninstall", "scalardb-cluster", "-n", &ns, "--wait"]).output().unwrap(),
                0,
                "uninstall",
            );
        }
    }
    rig.reset();
}

#[test]
fn a_cluster_node_without_graphql_serves_none_and_one_without_the_membership_properties_or_license_never_starts() {
    let rig = rig();
    rig.reset();
    let ns = "cluster-misconfigured";
    rig.kubectl_ok(&["create", "namespace", ns]);
    cluster_secret(&rig, ns);
    let without_graphql = CLUSTER_PROPERTIES.replace("scalar.db.graphql.enabled=true\n", "");
    let without = |part: &str| -> String {
        CLUSTER_PROPERTIES.lines().filter(|l| !l.contains(part)).map(|l| format!("{l}\n")).collect()
    };
    let without_membership = without("scalar.db.cluster.membership.");
    // Neither switch: the chart value off (no -graphql Service) and the property missing.
    let out = install_cluster(
        &rig,
        "helm3",
        ns,
        "nogql",
        "1.11.0",
        &without_graphql,
        &["--set", "scalardbCluster.replicaCount=1"],
    );
    expect_code(&out, 0, "helm install without GraphQL");
    let services = rig.kubectl_ok(&["-n", ns, "get", "services", "-o", "name"]);
    assert!(!services.contains("nogql-scalardb-cluster-graphql"), "{services}");
    assert!(services.contains("nogql-scalardb-cluster-headless"), "{services}");
    let out = install_cluster(
        &rig,
        "helm3",
        ns,
        "nomember",
        "1.11.0",
        &without_membership,
        &["--set", "scalardbCluster.replicaCount=1", "--set", "scalardbCluster.graphql.enabled=true"],
    );
    expect_code(&out, 0, "helm install without membership");
    // Without the GraphQL property a node runs and is Ready (its probes look at gRPC only),
    // serving no GraphQL: nothing answers on its GraphQL port.
    let mut pod = Value::Null;
    rig.eventually("nogql's node to be Ready", 60, || {
        pod = pods_of(&rig, ns, "nogql").pop().unwrap_or(Value::Null);
        condition(&pod, "Ready")
    });
    let logs = rig.kubectl_ok(&["-n", ns, "logs", pod["metadata"]["name"].as_str().unwrap()]);
    assert!(logs.contains("scalar.db.graphql.enabled is not true: no GraphQL server"), "{logs}");
    let address = logs
        .split_once("gRPC on ")
        .and_then(|(_, rest)| rest.split_once(":60053"))
        .map(|(a, _)| a.to_string())
        .unwrap_or_else(|| panic!("no gRPC address in {logs}"));
    assert!(std::net::TcpStream::connect((address.as_str(), 60053)).is_ok(), "the node's gRPC port is closed");
    assert!(std::net::TcpStream::connect((address.as_str(), 8080)).is_err(), "a node without GraphQL serves 8080");
    // Without the membership properties a node cannot start.
    let logs = crashed(&rig, ns, "nomember");
    for key in [
        "scalar.db.cluster.membership.type",
        "scalar.db.cluster.membership.kubernetes.endpoint.namespace_name",
        "scalar.db.cluster.membership.kubernetes.endpoint.name",
    ] {
        assert!(logs.lines().any(|l| l.starts_with("ERROR") && l.contains(&format!("{key} is not"))), "{key}: {logs}");
    }
    assert!(logs.contains("refusing to start"), "{logs}");
    // Nor without its license: a key and a PEM certificate to check it with.
    let without_cert = without("license_check_cert_pem");
    let out = install_cluster(
        &rig,
        "helm3",
        ns,
        "nolicense",
        "1.11.0",
        &without_cert,
        &["--set", "scalardbCluster.replicaCount=1", "--set", "scalardbCluster.graphql.enabled=true"],
    );
    expect_code(&out, 0, "helm install without the license certificate");
    let logs = crashed(&rig, ns, "nolicense");
    let key = "scalar.db.cluster.node.licensing.license_check_cert_pem is not set";
    assert!(logs.lines().any(|l| l.starts_with("ERROR") && l.contains(key)), "{logs}");
    rig.reset();
}

/// Waits until the release's one node has exited 1 and is restarted with back-off, never Ready; its log.
fn crashed(rig: &common::Rig, ns: &str, release: &str) -> String {
    let mut pod = Value::Null;
    rig.eventually(&format!("{release}'s node to crash"), 60, || {
        pod = pods_of(rig, ns, release).pop().unwrap_or(Value::Null);
        pod["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 1
    });
    assert!(!condition(&pod, "Ready"), "{pod}");
    assert_eq!(pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"], "CrashLoopBackOff", "{pod}");
    rig.kubectl_ok(&["-n", ns, "logs", pod["metadata"]["name"].as_str().unwrap()])
}

/// POSTs `query` to `url` without a cookie; the backend that answered (X-Rig-Backend) and the body.
fn post_once(url: &str, query: &str) -> (String, Value) {
    let out = Command::new("curl")
        .args(["-s", "-D", "-", "-H", "Content-Type: application/json"])
        .args(["--data", &json!({"query": query}).to_string(), url])
        .output()
        .unwrap();
    let raw = text(&out.stdout);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP answer from {url}: {raw}"));
    let backend = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().starts_with("x-rig-backend:").then(|| l[14..].trim().to_string()))
        .unwrap_or_else(|| panic!("no X-Rig-Backend in {head}"));
    (backend, serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}")))
}

/// Begins a transaction through the round-robin data plane, then continues it until it has
/// reached `others` backends other than the one it began on; each continuation's backend and answer.
fn continue_elsewhere(url: &str, others: usize) -> (String, String, Vec<(String, Value)>) {
    let (first, start) = post_once(url, "query @transaction { __typename }");
    let id = start["extensions"]["transaction"]["id"].as_str().unwrap_or_else(|| panic!("{start}")).to_string();
    let mut seen = std::collections::BTreeSet::new();
    let mut answers = vec![];
    for _ in 0..20 {
        let (backend, r) = post_once(url, &format!("query @transaction(id: \"{id}\") {{ __typename }}"));
        if backend != first {
            seen.insert(backend.clone());
            answers.push((backend, r));
        }
        if seen.len() >= others {
            break;
        }
    }
    assert!(seen.len() >= others, "round robin reached only {seen:?} besides {first}");
    (first, id, answers)
}

#[test]
fn without_the_cookie_a_cluster_transaction_continues_and_commits_on_other_nodes_where_standalone_loses_it() {
    let rig = rig();
    rig.reset();
    let url = format!("{}/graphql", rig.get("RIG_ALB_URL"));
    rig.dataplane(&["sticky", "off"]);
    // Standalone: each server keeps its transactions in its own memory.
    let (first, id, answers) = continue_elsewhere(&url, 1);
    for (backend, r) in &answers {
        let message = r["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains("not found") && message.contains(&id), "{first} -> {backend}: {r}");
    }

    let ns = "cluster-routing";
    rig.kubectl_ok(&["create", "namespace", ns]);
    cluster_secret(&rig, ns);
    let out = install_cluster(
        &rig,
        "helm4",
        ns,
        "scalardb-cluster",
        "1.11.0",
        CLUSTER_PROPERTIES,
        &["--set", "scalardbCluster.graphql.enabled=true", "--set", "scalardbCluster.replicaCount=3"],
    );
    expect_code(&out, 0, "helm install scalardb-cluster");
    let names: Vec<String> = {
        rig.eventually("three Ready nodes", 90, || {
            let pods = pods_of(&rig, ns, "scalardb-cluster");
            pods.len() == 3 && pods.iter().all(|p| condition(p, "Ready"))
        });
        pods_of(&rig, ns, "scalardb-cluster")
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    // The ALB's targets are the cluster's nodes alone.
    rig.dataplane(&["backend", "graphql-a", "down"]);
    rig.dataplane(&["backend", "graphql-b", "down"]);
    rig.eventually("every node answering through the data plane", 30, || {
        let seen: std::collections::BTreeSet<String> = (0..6).map(|_| post_once(&url, "{ __typename }").0).collect();
        seen == names.iter().cloned().collect()
    });
    let (first, id, answers) = continue_elsewhere(&url, 2);
    assert!(names.contains(&first), "{first} is not a node of the release");
    for (backend, r) in &answers {
        assert!(r.get("errors").is_none(), "begun on {first}, continued on {backend}: {r}");
        assert_eq!(r["extensions"]["transaction"]["id"], id.as_str());
    }
    let commit = format!("query @transaction(id: \"{id}\", commit: true) {{ __typename }}");
    let (committed_on, r) = post_once(&url, &commit);
    assert!(r.get("errors").is_none(), "commit on {committed_on}: {r}");
    eprintln!(
        "begun on {first}, continued on {:?}, committed on {committed_on}",
        answers.iter().map(|a| &a.0).collect::<Vec<_>>()
    );
    // Committed is over, on every node.
    let (_, r) = post_once(&url, &format!("query @transaction(id: \"{id}\") {{ __typename }}"));
    assert!(r["errors"][0]["message"].as_str().is_some_and(|m| m.contains("not found")), "{r}");
    // A transaction lives in the memory of the node that began it: once that node is gone, none continues it.
    let (owner, r) = post_once(&url, "query @transaction { __typename }");
    let id = r["extensions"]["transaction"]["id"].as_str().unwrap_or_else(|| panic!("no transaction: {r}")).to_string();
    rig.kubectl_ok(&["-n", ns, "delete", "pod", &owner, "--wait=true"]);
    // In the rig the Pod object can go before its process ends (kwok deletes the object, the pod
    // runner kills the process on the watch event); a kubelet ends the containers first.
    rig.eventually("the deleted node's transaction to be gone everywhere", 30, || {
        let (_, r) = post_once(&url, &format!("query @transaction(id: \"{id}\") {{ __typename }}"));
        r["errors"][0]["message"].as_str().is_some_and(|m| m.contains("not found"))
    });
    for _ in 0..4 {
        let (node, r) = post_once(&url, &format!("query @transaction(id: \"{id}\") {{ __typename }}"));
        assert_ne!(node, owner, "the deleted node still answers");
        assert!(r["errors"][0]["message"].as_str().is_some_and(|m| m.contains("not found")), "{node}: {r}");
    }
    rig.reset();
}
