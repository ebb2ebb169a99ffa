//! The end-to-end probe from inside the cluster: a Pod the rig's pod runner
//! really runs (its log served through the API server), reaching the data
//! plane by the Ingress hostname as a Pod in the VPC would; and the ways it
//! cannot run — no node it tolerates, no rights, an image that is not there,
//! Ctrl-C — each named, each leaving no Pod behind.

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{Rig, check, expect_code, rig, status_json_timed, text};
use serde_json::Value;

/// `kubectl get pods --watch -o json` into a file: every version of every Pod, as it happens.
fn watch_pods(rig: &Rig, file: &std::path::Path) -> Child {
    let child = rig
        .cmd("kubectl")
        .args(["get", "pods", "-A", "--watch", "-o", "json", "--output-watch-events"])
        .stdout(std::fs::File::create(file).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    rig.eventually("the Pod watch to list what exists", 10, || std::fs::metadata(file).is_ok_and(|m| m.len() > 0));
    child
}

fn events(file: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read(file).unwrap();
    serde_json::Deserializer::from_slice(&text).into_iter::<Value>().map_while(Result::ok).collect()
}

fn taint_every_node(rig: &Rig) {
    for n in ["graphql-1", "graphql-2", "graphql-3", "general-1", "general-2"] {
        rig.kubectl_ok(&["taint", "node", n, "test/hold=1:NoSchedule"]);
    }
}

#[test]
fn install_and_status_probe_from_a_pod_that_carries_nothing_secret_and_is_gone_afterwards() {
    let rig = rig();
    rig.reset();
    let install = rig.install_ok();
    let said = text(&install.stdout) + &text(&install.stderr);
    assert!(said.contains("sticky: 10/10 requests kept the transaction"), "{said}");
    assert!(said.contains("from Pod default/scalardb-graphql-probe-"), "install did not probe from a Pod: {said}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pods.json");
    let mut watch = watch_pods(&rig, &file);
    let (code, report, _) = status_json_timed(&rig, &[]);
    // The command deleted its Pod before it returned; the watch shows it once it has caught up.
    rig.eventually("the watch to see the probe Pod deleted", 10, || {
        events(&file).iter().any(|e| {
            e["type"] == "DELETED"
                && e["object"]["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("scalardb-graphql-probe-"))
        })
    });
    watch.kill().unwrap();
    watch.wait().unwrap();
    let events = events(&file);
    assert_eq!(code, Some(0), "{report}");
    let sticky = check(&report, "probe.sticky");
    assert_eq!(sticky["result"], "pass", "{sticky}");
    let message = sticky["message"].as_str().unwrap();
    assert!(message.contains("10/10") && message.contains("from Pod default/scalardb-graphql-probe-"), "{message}");
    assert!(message.contains(" on node general-") && message.contains("(us-east-1"), "no node or zone: {message}");
    let typename = check(&report, "probe.typename")["message"].as_str().unwrap().to_string();
    let host =
        rig.kubectl_json(&["get", "ingress", "scalardb-graphql"])["status"]["loadBalancer"]["ingress"][0]["hostname"]
            .as_str()
            .unwrap()
            .to_string();
    assert!(typename.contains(&format!("http://{host}/graphql")), "not through the Ingress hostname: {typename}");

    let probe: Vec<&Value> = events
        .iter()
        .map(|e| &e["object"])
        .filter(|p| p["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("scalardb-graphql-probe-")))
        .collect();
    assert!(!probe.is_empty(), "no probe Pod was seen");
    let last = probe.last().unwrap();
    assert_eq!(last["status"]["phase"], "Succeeded", "the Pod's last state: {last}");
    let pod = probe[0];
    assert_eq!(pod["metadata"]["labels"]["app.kubernetes.io/managed-by"], "kubectl-scalardb-graphql");
    assert_eq!(pod["metadata"]["labels"]["app.kubernetes.io/component"], "probe");
    let spec = &pod["spec"];
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert!(spec["nodeName"].as_str().is_none_or(|n| n.starts_with("general-")), "{spec}");
    let tolerations: Vec<&str> =
        spec["tolerations"].as_array().into_iter().flatten().filter_map(|t| t["key"].as_str()).collect();
    assert!(!tolerations.contains(&"dedicated") && !tolerations.iter().any(|k| k.contains("scalardb")), "{spec}");
    let image = spec["containers"][0]["image"].as_str().unwrap();
    assert!(image.starts_with("docker.io/library/python:3.13.7-alpine3.22@sha256:"), "{image}");
    let whole = pod.to_string();
    for secret in [common::DB_PASSWORD, common::REGISTRY_TOKEN, "secretKeyRef", "secretName"] {
        assert!(!whole.contains(secret), "the probe Pod carries {secret}: {whole}");
    }
    assert!(rig.probe_pods().is_empty(), "probe Pods left: {:?}", rig.probe_pods());

    // Stickiness off at the data plane: the Pod's probe loses the transaction and says so.
    rig.dataplane(&["sticky", "off"]);
    let (code, report, _) = status_json_timed(&rig, &["--category", "probe"]);
    assert_eq!(code, Some(1), "{report}");
    let sticky = check(&report, "probe.sticky");
    assert_eq!(sticky["result"], "fail", "{sticky}");
    let message = sticky["message"].as_str().unwrap();
    assert!(message.contains("from Pod default/scalardb-graphql-probe-") && message.contains("AWSALB"), "{message}");
    assert!(sticky["hint"].as_str().unwrap().contains("stickiness.enabled=true"), "{sticky}");
    assert!(rig.probe_pods().is_empty(), "probe Pods left: {:?}", rig.probe_pods());
    rig.reset();
}

#[test]
fn a_probe_pod_no_node_will_take_fails_with_the_schedulers_reason_within_the_timeout_and_is_deleted() {
    let rig = rig();
    rig.reset();
    rig.install_ok();
    taint_every_node(&rig);
    let (code, report, took) = status_json_timed(&rig, &["--category", "probe", "--timeout", "12s"]);
    assert_eq!(code, Some(1), "{report}");
    let typename = check(&report, "probe.typename");
    assert_eq!(typename["result"], "fail", "{typename}");
    let message = typename["message"].as_str().unwrap();
    assert!(message.contains("not scheduled") && message.contains("untolerated taint"), "{message}");
    assert!(typename["hint"].as_str().unwrap().contains("--probe-from local"), "{typename}");
    assert!(took < Duration::from_secs(20), "took {took:?} with --timeout 12s");
    assert!(rig.probe_pods().is_empty(), "probe Pods left: {:?}", rig.probe_pods());
    rig.reset();
}

#[test]
fn ctrl_c_while_the_probe_pod_waits_exits_130_and_deletes_it() {
    let rig = rig();
    rig.reset();
    rig.install_ok();
    taint_every_node(&rig);
    let child = rig
        .plugin()
        .args(["status", "--category", "probe", "--timeout", "120s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    rig.eventually("the probe Pod", 30, || !rig.probe_pods().is_empty());
    let sent = Instant::now();
    // SAFETY: signals only our own child.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    expect_code(&out, 130, "status interrupted");
    assert!(sent.elapsed() < Duration::from_secs(10), "took {:?} to stop", sent.elapsed());
    assert!(rig.probe_pods().is_empty(), "probe Pods left after Ctrl-C: {:?}", rig.probe_pods());
    rig.reset();
}

#[test]
fn a_user_who_may_not_create_pods_is_told_which_rights_are_missing_and_nothing_is_created() {
    let rig = rig();
    rig.reset();
    rig.install_ok();
    rig.kubectl_ok(&["create", "rolebinding", "probe-viewer", "--clusterrole=view", "--user=viewer", "-n", "default"]);
    let mark = rig.audit_mark();
    let out = rig.status(&["--as", "viewer", "--category", "probe", "-o", "json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stderr)));
    expect_code(&out, 1, "status as a viewer");
    let typename = check(&report, "probe.typename");
    let message = typename["message"].as_str().unwrap();
    assert!(message.contains("missing permission to create pods, delete pods"), "{message}");
    assert!(!message.contains("get pods/log"), "view may read logs: {message}");
    assert!(typename["hint"].as_str().unwrap().contains("--probe-from local --probe-url"), "{typename}");
    let changes = rig.kube_changes_since(mark);
    assert!(changes.iter().all(|c| !c.contains("/pods")), "{changes:#?}");
    assert!(rig.probe_pods().is_empty());
    rig.reset();
}

#[test]
fn an_image_the_nodes_cannot_pull_is_named_and_the_local_probe_still_works() {
    let rig = rig();
    rig.reset();
    rig.install_ok();
    let missing = "registry.example.com/library/python:0.0-missing";
    let (code, report, took) =
        status_json_timed(&rig, &["--category", "probe", "--probe-image", missing, "--timeout", "60s"]);
    assert_eq!(code, Some(1), "{report}");
    let message = check(&report, "probe.typename")["message"].as_str().unwrap().to_string();
    assert!(message.contains(&format!("cannot pull image {missing}")), "{message}");
    assert!(took < Duration::from_secs(30), "an image that is not there should not wait for the timeout: {took:?}");
    assert!(rig.probe_pods().is_empty());

    // A quota with no room left refuses the Pod at admission: named, nothing left behind.
    rig.kubectl_ok(&["create", "quota", "full", "--hard=pods=0", "-n", "default"]);
    rig.eventually("the quota to be counted", 30, || {
        rig.kubectl_json(&["get", "quota", "full", "-n", "default"])["status"]["hard"]["pods"] == "0"
    });
    let (code, report, _) = status_json_timed(&rig, &["--category", "probe"]);
    assert_eq!(code, Some(1), "{report}");
    let refused = check(&report, "probe.typename");
    let message = refused["message"].as_str().unwrap();
    assert!(message.contains("the cluster refused the probe Pod") && message.contains("exceeded quota"), "{message}");
    assert!(refused["hint"].as_str().unwrap().contains("quota"), "{refused}");
    rig.kubectl_ok(&["delete", "quota", "full", "-n", "default"]);
    assert!(rig.probe_pods().is_empty());

    let out =
        rig.plugin().args(["status", "--probe-from", "local", "--probe-url", rig.get("RIG_ALB_URL")]).output().unwrap();
    expect_code(&out, 0, "status --probe-from local --probe-url");
    assert!(
        text(&out.stdout).contains("kept the transaction (start, 8 continuations, commit) (from this machine)"),
        "{}",
        text(&out.stdout)
    );

    let (out, _) = rig.without_mutation("a contradictory probe", || {
        rig.plugin().args(["status", "--probe-from", "cluster", "--probe-url", "http://x"]).output().unwrap()
    });
    expect_code(&out, 2, "--probe-from cluster with --probe-url");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("--probe-url") && stderr.lines().count() <= 2, "{stderr}");
    rig.reset();
}
