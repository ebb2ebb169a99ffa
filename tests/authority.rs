//! The install record is an index, never an authority: a forged record makes
//! uninstall delete nothing this tool did not create, and says why. One
//! changing run at a time: a Lease turns a second run away, a crashed run's
//! Lease expires, and a record changed under a run stops it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{RECORD, Rig, expect_code, one_line_error, record_in, recorded_spec, rig, text, write_record};

const LEASE: &str = "scalardb-graphql-scalardb-graphql-run";

/// A Helm release of a one-ConfigMap chart, installed by hand (so without this tool's mark).
fn helm_release(rig: &Rig, dir: &std::path::Path, namespace: &str, release: &str) {
    let chart = dir.join("tiny");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(chart.join("Chart.yaml"), "apiVersion: v2\nname: tiny\nversion: 0.1.0\n").unwrap();
    std::fs::write(
        chart.join("templates/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-tiny\ndata:\n  a: b\n",
    )
    .unwrap();
    let out = rig
        .cmd("helm")
        .args(["install", release, chart.to_str().unwrap(), "-n", namespace, "--create-namespace"])
        .output()
        .unwrap();
    expect_code(&out, 0, &format!("helm install {namespace}/{release}"));
}

fn helm_has(rig: &Rig, namespace: &str, release: &str) -> bool {
    rig.cmd("helm").args(["status", release, "-n", namespace]).output().unwrap().status.success()
}

#[test]
fn a_forged_record_makes_uninstall_delete_nothing_this_tool_did_not_create() {
    let rig = rig();
    rig.reset();
    let spec = recorded_spec(&rig);
    let dir = tempfile::tempdir().unwrap();
    // What belongs to someone else: an IAM role and policy, a CRD, a release, a namespace, a subnet tag.
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
    rig.aws(&[
        "iam",
        "create-role",
        "--role-name",
        "payments-app",
        "--assume-role-policy-document",
        &trust.to_string(),
    ]);
    let doc =
        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]});
    let policy =
        rig.aws(&["iam", "create-policy", "--policy-name", "PaymentsApp", "--policy-document", &doc.to_string()]);
    let policy_arn = policy["Policy"]["Arn"].as_str().unwrap().to_string();
    rig.kubectl_apply(&json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object"}}}]},
    }));
    helm_release(&rig, dir.path(), "payments", "scalardb-graphql");
    let subnet = rig.aws(&["ec2", "describe-subnets"])["Subnets"][0]["SubnetId"].as_str().unwrap().to_string();
    rig.aws(&["ec2", "create-tags", "--resources", &subnet, "--tags", "Key=team,Value=payments"]);

    let mut forged_spec = spec.clone();
    forged_spec["namespace"] = json!("payments");
    forged_spec["iam"]["roleName"] = json!("payments-app");
    forged_spec["iam"]["policyName"] = json!("PaymentsApp");
    write_record(
        &rig,
        "payments",
        &json!({
            "version": 1,
            "spec": forged_spec,
            "namespaceCreated": true,
            "iamRole": {"id": "payments-app", "created": true},
            "iamPolicy": {"id": policy_arn, "created": true},
            "graphqlRelease": {"id": "scalardb-graphql", "created": true},
            "lbController": {"release": "aws-load-balancer-controller", "namespace": "kube-system", "installed": true,
                             "crds": ["widgets.example.com"]},
            "subnetTags": [{"subnet": subnet, "key": "team", "value": "payments", "created": true}],
        }),
    );

    let out = rig.plugin().args(["uninstall", "-y", "-n", "payments", "--timeout", "120s"]).output().unwrap();
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{said}");
    // Nothing of theirs is gone.
    let role = rig.shell(&["aws", "iam", "get-role", "--role-name", "payments-app"]);
    assert!(role.status.success(), "the foreign role was deleted:\n{said}");
    let pol = rig.shell(&["aws", "iam", "get-policy", "--policy-arn", &policy_arn]);
    assert!(pol.status.success(), "the foreign policy was deleted:\n{said}");
    rig.kubectl_ok(&["get", "crd", "widgets.example.com"]);
    assert!(helm_has(&rig, "payments", "scalardb-graphql"), "the foreign release was uninstalled:\n{said}");
    rig.kubectl_ok(&["get", "namespace", "payments"]);
    let tags = rig.aws(&["ec2", "describe-tags", "--filters", &format!("Name=resource-id,Values={subnet}")]);
    assert!(tags["Tags"].as_array().unwrap().iter().any(|t| t["Key"] == "team"), "the subnet tag was removed");
    // And it said why.
    assert!(said.contains("carries no mark of this tool"), "{said}");
    assert!(said.contains("brings CRDs only in"), "{said}");
    assert!(said.contains("this tool only adds kubernetes.io/role/internal-elb"), "{said}");
}

#[test]
fn a_record_naming_another_release_or_namespace_is_refused_before_any_change() {
    let rig = rig();
    rig.reset();
    let spec = recorded_spec(&rig);
    let dir = tempfile::tempdir().unwrap();
    helm_release(&rig, dir.path(), "billing", "billing-api");
    let mut elsewhere = spec.clone();
    elsewhere["namespace"] = json!("billing");
    let mut controller_elsewhere = spec.clone();
    controller_elsewhere["lbController"]["namespace"] = json!("billing");
    controller_elsewhere["lbController"]["release"] = json!("billing-api");
    let records = [
        (
            "its spec names another namespace",
            json!({"version": 1, "spec": elsewhere,
            "graphqlRelease": {"id": "scalardb-graphql", "created": true}}),
        ),
        (
            "its spec names another controller release",
            json!({"version": 1, "spec": controller_elsewhere,
            "lbController": {"release": "aws-load-balancer-controller", "namespace": "kube-system", "installed": true, "crds": []}}),
        ),
        (
            "it names another controller release",
            json!({"version": 1, "spec": spec,
            "lbController": {"release": "billing-api", "namespace": "billing", "installed": true, "crds": []}}),
        ),
    ];
    for (what, record) in records {
        write_record(&rig, "default", &record);
        let mark = rig.audit_mark();
        rig.moto_record();
        let out = rig.plugin().args(["uninstall", "-y", "--timeout", "60s"]).output().unwrap();
        one_line_error(&out, 3, &["was not written by install for this release", "nothing was changed", "inspect it"]);
        assert_eq!(rig.kube_mutations_since(mark), Vec::<String>::new(), "{what}");
        let (_, mutating) = rig.moto_actions();
        assert!(mutating.is_empty(), "{what}: {mutating:?}");
        assert!(helm_has(&rig, "billing", "billing-api"), "{what}");
        // Status reads it no more than uninstall acts on it: it says so and checks the defaults.
        let status = rig.status(&["--no-probe"]);
        assert!(text(&status.stderr).contains("was not written by install"), "{what}: {}", text(&status.stderr));
    }
}

fn lease(rig: &Rig) -> Option<Value> {
    let out = rig.kubectl(&["get", "lease", LEASE, "-o", "json"]);
    out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// Kubernetes MicroTime, `secs_ago` seconds ago.
fn micro_time(secs_ago: i64) -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("{secs_ago} seconds ago"), "+%Y-%m-%dT%H:%M:%S.000000Z"])
        .output()
        .unwrap();
    text(&out.stdout).trim().to_string()
}

fn hold_lease(rig: &Rig, holder: &str, renewed_secs_ago: i64) {
    rig.kubectl_apply(&json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": LEASE, "namespace": "default"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 30,
                 "acquireTime": micro_time(renewed_secs_ago + 60), "renewTime": micro_time(renewed_secs_ago)},
    }));
}

#[test]
fn a_live_lease_turns_a_second_run_away_and_an_expired_one_is_taken_over() {
    let rig = rig();
    rig.reset();
    write_record(&rig, "default", &json!({"version": 1}));
    let holder = "kubectl scalardb-graphql install by alice@bastion-2, pid 4242";
    hold_lease(&rig, holder, 2);
    let mark = rig.audit_mark();
    rig.moto_record();
    let out = rig.plugin().args(["uninstall", "-y", "--timeout", "60s"]).output().unwrap();
    one_line_error(
        &out,
        3,
        &["another run is changing this release", "alice@bastion-2, pid 4242", "wait for it to end"],
    );
    let out = rig.install(&[]);
    one_line_error(&out, 3, &["another run is changing this release", "alice@bastion-2"]);
    assert_eq!(rig.kube_mutations_since(mark), Vec::<String>::new());
    let (_, mutating) = rig.moto_actions();
    assert!(mutating.is_empty(), "{mutating:?}");
    assert!(record_in(&rig, "default").is_some());
    // The holder stopped renewing a minute ago: its Lease has expired, and the next run takes it.
    hold_lease(&rig, holder, 60);
    rig.uninstall_ok();
    assert!(record_in(&rig, "default").is_none(), "uninstall did not run");
    assert!(lease(&rig).is_none(), "uninstall left its Lease behind");
}

#[test]
fn a_crashed_runs_lease_is_taken_over_here_at_once_and_elsewhere_once_it_expires() {
    let rig = rig();
    rig.reset();
    // Crashed on this machine: its pid is gone, so the next run takes the Lease at once.
    let seen = rig.killed_after(&rig.install_args(), 2);
    assert_eq!(seen.len(), 2, "{seen:?}");
    let held = lease(&rig).expect("the killed install's Lease");
    assert!(held["spec"]["holderIdentity"].as_str().unwrap().contains("kubectl scalardb-graphql install by"));
    let started = Instant::now();
    rig.install_ok();
    eprintln!("a crashed local run's Lease was taken over at once: re-run done in {:.0?}", started.elapsed());
    assert!(lease(&rig).is_none(), "install left its Lease behind");

    // Crashed on another machine: nobody here can tell, so it holds until DURATION (30 s) after its last
    // renewal. The run crashed a while ago: its last renewal 20 s back (whole seconds, so at most 21 s),
    // which leaves the Lease some 10 s to hold, not 30 of waiting.
    rig.reset();
    rig.killed_after(&rig.install_args(), 2);
    rig.kubectl_ok(&["annotate", "--overwrite", "lease", LEASE, "kubectl-scalardb-graphql/host=bastion-7"]);
    let renewed = Instant::now();
    let patch = json!({"spec": {"renewTime": micro_time(20)}}).to_string();
    rig.kubectl_ok(&["patch", "lease", LEASE, "--type=merge", "-p", &patch]);
    let holder = lease(&rig).unwrap()["spec"]["holderIdentity"].as_str().unwrap().to_string();
    let out = rig.install(&[]);
    one_line_error(&out, 3, &["another run is changing this release", &holder]);
    let started = Instant::now();
    loop {
        let out = rig.install(&[]);
        if out.status.success() {
            break;
        }
        one_line_error(&out, 3, &["another run is changing this release"]);
        assert!(started.elapsed() < Duration::from_secs(90), "the crashed run's Lease did not expire");
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!("another machine's crashed run's Lease was taken over {:.0?} after the first refusal", started.elapsed());
    // Not before it expired: 30 s after a renewal at most 21 s before `renewed` (a second's slack for
    // the API server's clock, read to the second).
    assert!(
        renewed.elapsed() >= Duration::from_secs(8),
        "the Lease was taken over {:.1?} after its renewal was set 20 s back, before it expired",
        renewed.elapsed()
    );
    assert!(lease(&rig).is_none(), "install left its Lease behind");
}

#[test]
fn a_record_changed_under_a_run_stops_it_and_a_rerun_finishes() {
    let rig = rig();
    rig.reset();
    rig.install_ok();
    // Uninstall, stopped after its first removal while someone edits the record, then let go.
    let mut cmd = rig.plugin();
    cmd.args(["uninstall", "-y", "--timeout", "120s"]);
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id() as i32;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.by_ref().map_while(Result::ok).find(|l| l.starts_with('√')).expect("a first removal");
    // SAFETY: kill only sends a signal, to the child this test spawned.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    rig.kubectl_ok(&["annotate", "configmap", RECORD, "edited-by=someone-else"]);
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "after {first:?} and {rest:?}:\n{stderr}");
    assert!(stderr.contains("was changed by someone else during this run"), "{stderr}");
    assert!(lease(&rig).is_none(), "the stopped uninstall left its Lease behind");
    rig.uninstall_ok();
    assert!(record_in(&rig, "default").is_none());
}
