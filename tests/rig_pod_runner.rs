//! The rig's pod runner, seen only through kubectl as the plugin sees it:
//! python and Schema Loader pods really run, their status is a kubelet's,
//! their logs come through the API server, unknown images do not pull, the
//! rig's VPC resolves only load balancer names, and a deleted pod's process
//! dies at once.

mod common;

use std::time::{Duration, Instant};

use common::{Rig, expect_code, rig, text};
use serde_json::{Value, json};

const PYTHON: &str = "docker.io/library/python:3.13.7-alpine3.22@sha256:9ba6d8cbebf0fb6546ae71f2a1c14f6ffd2fdab83af7fa5669734ef30ad48844";
const LOADER: &str = "ghcr.io/scalar-labs/scalardb-schema-loader:3.13.6";

fn python_pod(name: &str, image: &str, script: &str, args: &[&str]) -> Value {
    let mut command = vec!["python3", "-c", script];
    command.extend(args);
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"restartPolicy": "Never", "containers": [{"name": "probe", "image": image, "command": command,
                    "env": [{"name": "GREETING", "value": "from the pod"}]}]}})
}

fn create(rig: &Rig, ns: &str, manifest: &Value) {
    let out = rig.kubectl_input(&["-n", ns, "create", "-f", "-"], &manifest.to_string());
    expect_code(&out, 0, "kubectl create");
}

/// The pod, once `done` holds for it (or the test fails after `secs`).
fn pod_when(rig: &Rig, ns: &str, name: &str, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        last = rig.kubectl_json(&["-n", ns, "get", "pod", name]);
        if done(&last) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("pod {ns}/{name} did not get there in {secs}s; last seen:\n{:#}", last["status"]);
}

fn finished(p: &Value) -> bool {
    matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
}

fn logs(rig: &Rig, ns: &str, what: &str) -> String {
    rig.kubectl_ok(&["-n", ns, "logs", what])
}

#[test]
fn a_python_pod_runs_its_command_and_its_log_and_exit_code_come_through_the_api_server() {
    let rig = rig();
    rig.reset();
    rig.kubectl_ok(&["create", "namespace", "runner"]);
    let script =
        "import os, sys; print('hello', os.environ['GREETING'], sys.argv[1:]); print('to stderr', file=sys.stderr)";
    create(&rig, "runner", &python_pod("hello", PYTHON, script, &["--url", "http://x/graphql"]));
    let running = pod_when(&rig, "runner", "hello", 30, |p| p["status"]["phase"] != "Pending");
    assert!(running["status"]["podIP"].as_str().is_some_and(|ip| ip.starts_with("10.0.1.")), "{}", running["status"]);
    let p = pod_when(&rig, "runner", "hello", 30, finished);
    assert_eq!(p["status"]["phase"], "Succeeded", "{:#}", p["status"]);
    let c = &p["status"]["containerStatuses"][0];
    assert_eq!(c["state"]["terminated"]["exitCode"], 0, "{c:#}");
    assert_eq!(c["state"]["terminated"]["reason"], "Completed", "{c:#}");
    assert!(
        c["imageID"]
            .as_str()
            .unwrap()
            .ends_with("@sha256:9ba6d8cbebf0fb6546ae71f2a1c14f6ffd2fdab83af7fa5669734ef30ad48844")
    );
    assert!(p["status"]["startTime"].is_string() && p["status"]["hostIP"].is_string(), "{:#}", p["status"]);
    let ready = p["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap().clone();
    assert_eq!(ready["status"], "False", "{ready}");
    let log = logs(&rig, "runner", "hello");
    assert!(log.contains("hello from the pod ['--url', 'http://x/graphql']"), "{log}");
    assert!(log.contains("to stderr"), "{log}");
    let tail = rig.kubectl_ok(&["-n", "runner", "logs", "hello", "--tail=1", "--timestamps"]);
    assert_eq!(tail.lines().count(), 1, "{tail}");
    let stamp = tail.split_whitespace().next().unwrap_or_default();
    assert!(stamp.contains('T') && stamp.ends_with('Z'), "no timestamp: {tail}");
    rig.reset();
}

#[test]
fn a_failing_command_fails_the_pod_with_its_exit_code_and_an_unknown_image_backs_off_pending() {
    let rig = rig();
    rig.reset();
    rig.kubectl_ok(&["create", "namespace", "runner"]);
    create(
        &rig,
        "runner",
        &python_pod("fails", "python:3.13.7-alpine3.22", "print('giving up'); raise SystemExit(3)", &[]),
    );
    create(&rig, "runner", &python_pod("unknown", "python:3.12", "print('never')", &[]));
    create(&rig, "runner", &python_pod("digest", &PYTHON.replace("9ba6", "0000"), "print('never')", &[]));
    let p = pod_when(&rig, "runner", "fails", 30, finished);
    assert_eq!(p["status"]["phase"], "Failed", "{:#}", p["status"]);
    let term = &p["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!((term["exitCode"].clone(), term["reason"].clone()), (json!(3), json!("Error")), "{term:#}");
    assert!(logs(&rig, "runner", "fails").contains("giving up"));
    for name in ["unknown", "digest"] {
        let p = pod_when(&rig, "runner", name, 30, |p| {
            p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ImagePullBackOff"
        });
        assert_eq!(p["status"]["phase"], "Pending");
        let message = p["status"]["containerStatuses"][0]["state"]["waiting"]["message"].as_str().unwrap();
        assert!(message.contains("failed to pull image") && message.contains("not found"), "{message}");
        let out = rig.kubectl(&["-n", "runner", "logs", name]);
        expect_code(&out, 1, "kubectl logs of a container that never started");
        assert!(text(&out.stderr).contains("is waiting to start"), "{}", text(&out.stderr));
    }
    rig.reset();
}

#[test]
fn the_vpc_resolves_a_load_balancers_name_to_the_sticky_data_plane_and_nothing_else() {
    let rig = rig();
    rig.reset();
    let subnets = rig.aws(&["ec2", "describe-subnets", "--filters", "Name=tag:Name,Values=*private*"]);
    let subnets: Vec<&str> =
        subnets["Subnets"].as_array().unwrap().iter().map(|s| s["SubnetId"].as_str().unwrap()).collect();
    let mut args = vec!["elbv2", "create-load-balancer", "--name", "rig-vpc", "--scheme", "internal", "--subnets"];
    args.extend(&subnets);
    let lb = rig.aws(&args);
    let host = lb["LoadBalancers"][0]["DNSName"].as_str().unwrap().to_lowercase();
    assert!(host.starts_with("internal-rig-vpc-"), "{host}");
    rig.kubectl_ok(&["create", "namespace", "runner"]);
    let script = r#"
import json, sys, urllib.error, urllib.request
for url in sys.argv[1:]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            print(json.dumps({"url": url, "status": r.status, "cookies": r.headers.get_all("Set-Cookie"), "body": r.read().decode()}))
    except urllib.error.HTTPError as e:
        print(json.dumps({"url": url, "status": e.code, "body": e.read().decode()}))
"#;
    let good = format!("http://{host}/graphql?query=%7B__typename%7D");
    create(&rig, "runner", &python_pod("fetch", PYTHON, script, &[&good, "http://db.example.internal/graphql"]));
    let p = pod_when(&rig, "runner", "fetch", 30, finished);
    assert_eq!(p["status"]["phase"], "Succeeded", "{}", logs(&rig, "runner", "fetch"));
    let lines: Vec<Value> =
        logs(&rig, "runner", "fetch").lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(lines[0]["status"], 200, "{:#}", lines[0]);
    assert!(lines[0]["body"].as_str().unwrap().contains("__typename"), "{:#}", lines[0]);
    let cookies = lines[0]["cookies"].to_string();
    assert!(cookies.contains("AWSALB="), "no stickiness cookie: {cookies}");
    assert_eq!(lines[1]["status"], 502, "{:#}", lines[1]);
    assert!(
        lines[1]["body"].as_str().unwrap().contains("db.example.internal does not resolve in the rig's VPC"),
        "{:#}",
        lines[1]
    );
    rig.reset();
}

fn loader_job(rig: &Rig, name: &str, host: &str, extra: &[&str]) {
    let props = format!(
        "scalar.db.contact_points=jdbc:postgresql://{host}:5432/scalardb\nscalar.db.username=scalar\n\
         scalar.db.password={}\nscalar.db.storage=jdbc\n",
        common::DB_PASSWORD
    );
    let schema = json!({"emoney.account": {"transaction": true, "partition-key": ["id"], "clustering-key": ["ts DESC"],
                        "columns": {"id": "TEXT", "ts": "BIGINT", "balance": "INT"}}});
    let mut args = vec!["-c", "/scalardb/config/database.properties", "-f", "/scalardb/schema/schema.json"];
    args.extend(extra);
    let list = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {"database.properties": props}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"schema.json": schema.to_string()}},
        {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "schema-loader", "image": LOADER, "args": args, "volumeMounts": [
                {"name": "properties", "mountPath": "/scalardb/config", "readOnly": true},
                {"name": "schema", "mountPath": "/scalardb/schema", "readOnly": true}]}],
            "volumes": [{"name": "properties", "secret": {"secretName": name}},
                        {"name": "schema", "configMap": {"name": name}}]}}}},
    ]});
    create(rig, "runner", &list);
}

fn job_outcome(rig: &Rig, name: &str) -> &'static str {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let status = rig.kubectl_json(&["-n", "runner", "get", "job", name])["status"].clone();
        if status["succeeded"] == 1 {
            return "succeeded";
        }
        if status["failed"] == 1 {
            return "failed";
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("Job {name} did not finish in 60s");
}

#[test]
fn a_schema_loader_job_creates_the_tables_in_the_vpcs_database_and_fails_on_any_other_host() {
    let rig = rig();
    rig.reset();
    rig.kubectl_ok(&["create", "namespace", "runner"]);
    loader_job(&rig, "load", "db", &["--coordinator"]);
    loader_job(&rig, "elsewhere", "postgres.example.com", &[]);
    loader_job(&rig, "drop", "db", &["-D"]);
    assert_eq!(job_outcome(&rig, "load"), "succeeded", "{}", logs(&rig, "runner", "job/load"));
    let log = logs(&rig, "runner", "job/load");
    assert!(log.contains("Creating the table account in the namespace emoney succeeded."), "{log}");
    assert!(log.contains("Creating the coordinator tables succeeded."), "{log}");
    assert_eq!(job_outcome(&rig, "drop"), "succeeded");
    assert!(logs(&rig, "runner", "job/drop").contains("Deleting the table account in the namespace emoney succeeded."));
    assert_eq!(job_outcome(&rig, "elsewhere"), "failed");
    let log = logs(&rig, "runner", "job/elsewhere");
    assert!(log.contains("postgres.example.com") && log.contains("ERROR"), "{log}");
    for job in ["load", "drop", "elsewhere"] {
        assert!(!logs(&rig, "runner", &format!("job/{job}")).contains(common::DB_PASSWORD), "the password in a log");
    }
    rig.reset();
}

#[test]
fn deleting_a_running_pod_kills_its_process_at_once_and_a_deadline_fails_it() {
    let rig = rig();
    rig.reset();
    rig.kubectl_ok(&["create", "namespace", "runner"]);
    let script = "import os, time; print(os.getpid(), flush=True); time.sleep(600)";
    create(&rig, "runner", &python_pod("sleeper", PYTHON, script, &[]));
    let mut deadline_pod = python_pod("late", PYTHON, script, &[]);
    deadline_pod["spec"]["activeDeadlineSeconds"] = json!(2);
    create(&rig, "runner", &deadline_pod);
    pod_when(&rig, "runner", "sleeper", 30, |p| p["status"]["phase"] == "Running");
    let mut pid = String::new();
    rig.eventually("the sleeper's pid in its log", 10, || {
        pid = logs(&rig, "runner", "sleeper").trim().to_string();
        !pid.is_empty()
    });
    let proc = std::path::PathBuf::from(format!("/proc/{pid}"));
    assert!(proc.exists(), "the pod's process {pid} is not running");
    rig.kubectl_ok(&["-n", "runner", "delete", "pod", "sleeper", "--wait=false"]);
    rig.eventually("the deleted pod's process to die", 3, || !proc.exists());

    let p = pod_when(&rig, "runner", "late", 30, finished);
    assert_eq!(p["status"]["phase"], "Failed", "{:#}", p["status"]);
    assert_eq!(p["status"]["reason"], "DeadlineExceeded", "{:#}", p["status"]);
    assert_eq!(p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 137);
    rig.reset();
}
