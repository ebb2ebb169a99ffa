//! Release state is read from helm's own storage through the API server, not
//! by spawning helm: what `status` reports of a release (deployed, failed,
//! pending; chart, version, app version) is what helm 3 and helm 4 report.

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{Rig, expect_code, rig, text};

fn helm_metadata(rig: &Rig, helm: &str, namespace: &str, release: &str) -> Value {
    let out = rig.cmd(helm).args(["get", "metadata", release, "-n", namespace, "-o", "json"]).output().unwrap();
    expect_code(&out, 0, &format!("{helm} get metadata {release}"));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The messages of status's release checks, by id.
fn release_checks(rig: &Rig) -> (String, String) {
    let out = rig.status(&["--no-probe", "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out.stderr)));
    let find = |id: &str| {
        v["checks"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap()["message"].as_str().unwrap().to_string()
    };
    (find("graphql.release"), find("lb-controller.release"))
}

/// What status should say of a release helm describes with `meta`.
fn said_of(meta: &Value, target: &str) -> String {
    match meta["status"].as_str().unwrap() {
        "deployed" => format!(
            "release {target} deployed, chart {} {} (app {})",
            meta["chart"].as_str().unwrap(),
            meta["version"].as_str().unwrap(),
            meta["appVersion"].as_str().unwrap()
        ),
        other => format!("release {target} is {other}"),
    }
}

fn upgrade(rig: &Rig, helm: &str, extra: &[&str]) -> std::process::Command {
    let mut c = rig.cmd(helm);
    c.args(["upgrade", "scalardb-graphql", "scalardb-graphql", "--repo", rig.get("RIG_CHART_REPO_URL")])
        .args(["--version", "1.8.6", "--reuse-values", "-n", "default"])
        .args(extra);
    c
}

/// Starts an upgrade that waits for pods no node can take, and kills helm
/// once it has written the pending revision: the release stays pending, as
/// after a helm that crashed. Returns helm's view of it then.
fn pending_upgrade(rig: &Rig, helm: &str) -> Value {
    for _ in 0..3 {
        let mut waiting: Child =
            upgrade(rig, helm, &["--set-string", "nodeSelector.nowhere=yes", "--wait", "--timeout", "5m"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
        let started = Instant::now();
        while helm_metadata(rig, helm, "default", "scalardb-graphql")["status"] != "pending-upgrade" {
            assert!(started.elapsed() < Duration::from_secs(60), "{helm}: no pending upgrade");
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = waiting.kill();
        let _ = waiting.wait();
        let now = helm_metadata(rig, helm, "default", "scalardb-graphql");
        if now["status"] == "pending-upgrade" {
            return now;
        }
    }
    panic!("{helm} never stayed pending");
}

#[test]
fn release_state_read_from_storage_is_what_helm_3_and_helm_4_report() {
    let rig = rig();
    let bin_dir = rig.get("PATH").split(':').next().unwrap().to_string();
    for helm in [format!("{bin_dir}/helm"), format!("{bin_dir}/helm4")] {
        rig.reset();
        let out = rig.plugin().args(rig.install_args()).args(["--no-probe"]).env("HELM_BIN", &helm).output().unwrap();
        expect_code(&out, 0, &format!("install with {helm}"));

        // Deployed.
        let graphql = helm_metadata(&rig, &helm, "default", "scalardb-graphql");
        let controller = helm_metadata(&rig, &helm, "kube-system", "aws-load-balancer-controller");
        assert_eq!(graphql["status"], "deployed");
        assert_eq!(
            release_checks(&rig),
            (said_of(&graphql, "default/scalardb-graphql"), said_of(&controller, "aws-load-balancer-controller")),
            "{helm}: deployed"
        );

        // Failed: an upgrade the API server refuses.
        let out = upgrade(&rig, &helm, &["--set-string", "replicaCount=three"]).output().unwrap();
        assert!(!out.status.success(), "{helm}: the bad upgrade passed");
        let graphql = helm_metadata(&rig, &helm, "default", "scalardb-graphql");
        assert_eq!(graphql["status"], "failed", "{helm}");
        assert_eq!(release_checks(&rig).0, said_of(&graphql, "default/scalardb-graphql"), "{helm}: failed");

        // Pending: an upgrade killed while it waits for pods that no node can take.
        let graphql = pending_upgrade(&rig, &helm);
        assert_eq!(release_checks(&rig).0, said_of(&graphql, "default/scalardb-graphql"), "{helm}: pending");
    }
}
