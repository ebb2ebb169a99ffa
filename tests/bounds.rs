//! Hard bounds and clean exits: the kubeconfig's credential plugin runs under
//! the deadline; SIGTERM and SIGHUP end a command as Ctrl-C does (helm's
//! process group killed, the values file and the Schema Loader's Secret
//! deleted, the Leases given back); a closed pipe keeps the exit code; and
//! the secrets a user gives reach no output, no record, no event and neither
//! helm's command line nor its environment.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::processes::{assert_group_gone, group_members, hanging_helm, wait_for_file};
use common::{DB_PASSWORD, REGISTRY_TOKEN, Rig, expect_code, rig, text};
use serde_json::{Value, json};

// --- the credential plugin -------------------------------------------------------------

/// A copy of the rig's kubeconfig whose user is an exec credential plugin: `script`, named
/// `aws` and given `eks get-token` as EKS kubeconfigs do.
fn kubeconfig_with_plugin(rig: &Rig, dir: &Path, script: &str) -> PathBuf {
    let plugin = dir.join("aws");
    std::fs::write(&plugin, script).unwrap();
    std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut config: Value = serde_json::from_str(&rig.kubectl_ok(&["config", "view", "--raw", "-o", "json"])).unwrap();
    let user = config["contexts"][0]["context"]["user"].as_str().unwrap().to_string();
    config["users"] = json!([{"name": user, "user": {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "command": plugin,
        "args": ["eks", "get-token", "--cluster-name", "scalardb-graphql-rig"],
        "interactiveMode": "Never",
    }}}]);
    let path = dir.join("kubeconfig");
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

#[test]
fn a_hanging_credential_plugin_ends_the_command_at_its_deadline_naming_it() {
    let rig = rig();
    let dir = tempfile::tempdir().unwrap();
    let hung = dir.path().join("hung");
    let kubeconfig = kubeconfig_with_plugin(
        &rig,
        dir.path(),
        &format!("#!/bin/sh\nsleep 600 &\necho $$ > {0}.tmp; mv {0}.tmp {0}\nexec sleep 600\n", hung.display()),
    );
    let started = Instant::now();
    let out = rig.plugin().args(["status", "--timeout", "5s"]).env("KUBECONFIG", &kubeconfig).output().unwrap();
    let took = started.elapsed();
    eprintln!("a hanging credential plugin → exit after {took:?}");
    expect_code(&out, 4, "status with a hanging credential plugin");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("no answer from the kubeconfig's credential plugin (aws eks get-token)"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "not one line:\n{stderr}");
    assert!(took < Duration::from_secs(8), "took {took:?}");
    let pgid: u32 = wait_for_file(&hung, 1).trim().parse().unwrap();
    assert_group_gone(pgid);
}

#[test]
fn a_credential_plugins_token_is_used_and_the_plugin_is_run_once_per_command() {
    let rig = rig();
    rig.reset();
    rig.kubectl_ok(&["create", "serviceaccount", "exec-tester", "-n", "default"]);
    rig.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "exec-tester",
        "--clusterrole",
        "cluster-admin",
        "--serviceaccount",
        "default:exec-tester",
    ]);
    let token = rig.kubectl_ok(&["create", "token", "exec-tester", "-n", "default", "--duration", "1h"]);
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let credential = json!({
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "kind": "ExecCredential",
        "status": {"token": token.trim(), "expirationTimestamp": "2099-01-01T00:00:00Z"},
    });
    let kubeconfig = kubeconfig_with_plugin(
        &rig,
        dir.path(),
        &format!(
            "#!/bin/sh\necho \"$* | $KUBERNETES_EXEC_INFO\" >> {}\ncat <<'EOF'\n{credential}\nEOF\n",
            runs.display()
        ),
    );
    // status runs no helm (helm would run the plugin itself): every run seen is the plugin's own.
    let out = rig.status(&["--no-probe", "--timeout", "60s", "--kubeconfig", kubeconfig.to_str().unwrap()]);
    rig.kubectl_ok(&["delete", "clusterrolebinding", "exec-tester"]);
    rig.kubectl_ok(&["delete", "serviceaccount", "exec-tester", "-n", "default"]);
    let shown = text(&out.stdout);
    assert!(shown.contains("reaches https://127.0.0.1:"), "the cluster was not reached with the token:\n{shown}");
    assert!(shown.contains("\niam\n---\n"), "status stopped at the cluster checks:\n{shown}");
    let runs = std::fs::read_to_string(&runs).unwrap();
    assert_eq!(runs.lines().count(), 1, "the plugin ran more than once for one command:\n{runs}");
    assert!(runs.starts_with("eks get-token --cluster-name scalardb-graphql-rig | "), "{runs}");
    assert!(runs.contains(r#""kind":"ExecCredential""#), "no KUBERNETES_EXEC_INFO:\n{runs}");
    assert!(!text(&out.stdout).contains(token.trim()) && !text(&out.stderr).contains(token.trim()), "token shown");
}

// --- signals ---------------------------------------------------------------------------

/// The plugin started in the background with TMPDIR at `tmp`.
fn spawn(rig: &Rig, args: &[String], tmp: &Path, helm: Option<&Path>) -> Child {
    let mut c = rig.plugin();
    c.args(args).env("TMPDIR", tmp).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(helm) = helm {
        c.env("HELM_BIN", helm);
    }
    c.spawn().unwrap()
}

fn signal(child: &Child, sig: libc::c_int) -> Instant {
    // SAFETY: kill only sends a signal, to the plugin this test started.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
    Instant::now()
}

fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map_while(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The Leases this tool holds: the release's and the shared one.
fn leases(rig: &Rig) -> Vec<String> {
    let all = rig.kubectl_json(&["get", "leases", "-A", "-o", "json"]);
    all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            format!("{}/{}", l["metadata"]["namespace"].as_str().unwrap(), l["metadata"]["name"].as_str().unwrap())
        })
        .filter(|n| n.contains("scalardb-graphql"))
        .collect()
}

#[test]
fn sigterm_and_sighup_during_helm_leave_no_helm_no_values_file_no_lease_and_a_rerun_converges() {
    let rig = rig();
    rig.reset();
    let dir = tempfile::tempdir().unwrap();
    let (script, hung) = hanging_helm(&rig, dir.path());
    let values = dir.path().join("values.yaml");
    std::fs::write(&values, "podAnnotations:\n  team: graphql\n").unwrap();
    let mut args = rig.install_args();
    args.extend(["--no-probe".into(), "-f".into(), values.to_str().unwrap().into()]);
    for (sig, code, word) in [(libc::SIGTERM, 143, "terminated"), (libc::SIGHUP, 129, "hung up")] {
        let tmp = tempfile::tempdir().unwrap();
        let child = spawn(&rig, &args, tmp.path(), Some(&script));
        let pgid: u32 = wait_for_file(&hung, 90).trim().parse().unwrap();
        assert!(!group_members(pgid).is_empty(), "the hung helm is not running");
        assert!(!files_in(tmp.path()).is_empty(), "no values file while helm runs: the test would prove nothing");
        assert_eq!(leases(&rig).len(), 2, "the Leases are not held while helm runs");
        let sent = signal(&child, sig);
        let out = child.wait_with_output().unwrap();
        eprintln!("signal {sig} during helm → exit {:?} after {:?}", out.status.code(), sent.elapsed());
        expect_code(&out, code, &format!("install given signal {sig} during helm"));
        assert!(sent.elapsed() < Duration::from_secs(12), "took {:?}", sent.elapsed());
        let stderr = text(&out.stderr);
        assert!(stderr.contains(word), "{stderr}");
        assert_group_gone(pgid);
        assert_eq!(files_in(tmp.path()), Vec::<String>::new(), "left in TMPDIR");
        assert_eq!(leases(&rig), Vec::<String>::new(), "Leases not given back");
        std::fs::remove_file(&hung).unwrap();
    }
    let out = rig.plugin().args(&args).output().unwrap();
    expect_code(&out, 0, "install after the signals");
    rig.reset();
}

#[test]
fn sigterm_while_the_schema_loads_deletes_its_secret() {
    let rig = rig();
    rig.reset();
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.json");
    let props = dir.path().join("database.properties");
    std::fs::write(
        &schema,
        r#"{"sample.t": {"transaction": true, "partition-key": ["id"], "columns": {"id": "INT"}}}"#,
    )
    .unwrap();
    std::fs::write(
        &props,
        format!("scalar.db.contact_points=jdbc:postgresql://db:5432/x\nscalar.db.username=scalar\nscalar.db.password={DB_PASSWORD}\nscalar.db.storage=jdbc\n"),
    )
    .unwrap();
    // The loader's Pod is never run: the Job stays active.
    let held = rig.pause("pod-runner");
    let args: Vec<String> = ["schema", "load", "-y", "-f", schema.to_str().unwrap(), "--db-properties"]
        .iter()
        .map(|s| s.to_string())
        .chain([props.to_str().unwrap().to_string(), "--timeout".into(), "120s".into()])
        .collect();
    let child = spawn(&rig, &args, dir.path(), None);
    let secrets = || -> Vec<String> {
        let all = rig.kubectl_json(&["get", "secrets", "-n", "default", "-o", "json"]);
        all["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["data"].get("database.properties").is_some())
            .map(|s| s["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    rig.eventually("the loader's Job", 60, || {
        !rig.kubectl_ok(&["get", "jobs", "-n", "default", "-o", "name"]).trim().is_empty()
    });
    assert!(!secrets().is_empty(), "no Secret while the Job runs: the test would prove nothing");
    let sent = signal(&child, libc::SIGTERM);
    let out = child.wait_with_output().unwrap();
    expect_code(&out, 143, "schema load given SIGTERM");
    assert!(sent.elapsed() < Duration::from_secs(12), "took {:?}", sent.elapsed());
    assert_eq!(secrets(), Vec::<String>::new(), "the Secret holding database.properties outlived the command");
    drop(held);
    rig.reset();
}

// --- pipes -----------------------------------------------------------------------------

#[test]
fn a_closed_pipe_keeps_the_exit_code_of_the_checks() {
    let rig = rig();
    rig.reset();
    // Nothing is installed: checks fail.
    let alone = rig.status(&["--no-probe", "--timeout", "60s"]);
    assert_eq!(alone.status.code(), Some(1), "status alone: {}", text(&alone.stdout));
    let many = text(&alone.stdout).lines().count();
    assert!(many > 5, "status printed {many} lines: the pipe would not close on it");
    let script = format!("set -o pipefail; '{}' status --no-probe --timeout 60s | head -1", common::BIN);
    let out = rig.cmd("bash").args(["-c", &script]).output().unwrap();
    assert_eq!(text(&out.stdout).lines().count(), 1);
    assert_eq!(out.status.code(), Some(1), "status | head -1:\n{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("panicked"), "{}", text(&out.stderr));
}

// --- secrets ---------------------------------------------------------------------------

const URL_SECRET: &str = "url-secret-9d3a";
const JDBC_SECRET: &str = "jdbc-secret-27fe";
const PROBE_SECRET: &str = "probe-secret-c4e1";

/// A helm that appends its command line and its environment to `log`, then runs the rig's helm.
fn helm_logging_everything(rig: &Rig, dir: &Path) -> (PathBuf, PathBuf) {
    let log = dir.join("helm.log");
    let real = format!("{}/helm", rig.get("PATH").split(':').next().unwrap());
    let shim = dir.join("helm");
    std::fs::write(
        &shim,
        format!("#!/bin/sh\n{{ echo \"argv: $*\"; env; }} >> {}\nexec {real} \"$@\"\n", log.display()),
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (shim, log)
}

fn everything_said(outs: &[&Output]) -> String {
    outs.iter().map(|o| format!("{}{}", text(&o.stdout), text(&o.stderr))).collect()
}

#[test]
fn secrets_in_urls_and_connection_strings_reach_no_output_record_event_argv_or_environment() {
    let rig = rig();
    rig.reset();
    let dir = tempfile::tempdir().unwrap();
    let (shim, log) = helm_logging_everything(&rig, dir.path());
    let repo = rig.get("RIG_CHART_REPO_URL").replace("http://", &format!("http://chart-user:{URL_SECRET}@"));
    let contact = format!("jdbc:postgresql://db:5432/scalardb?user=scalar&password={JDBC_SECRET}");
    let mut args = rig.install_args();
    for flag in ["--chart-repo", "--lbc-chart-repo"] {
        let at = args.iter().position(|a| a == flag).unwrap();
        args[at + 1] = repo.clone();
    }
    args.extend(["--no-probe".into(), "--contact-points".into(), contact.clone()]);
    // The rig's own copy of the database's password (for its stand-ins) is not the plugin's to pass on.
    let plugin = || {
        let mut c = rig.plugin();
        c.env("HELM_BIN", &shim).env_remove("RIG_DATABASE_PASSWORD");
        c
    };
    let plan = plugin().args(&args).args(["--dry-run", "-o", "json"]).output().unwrap();
    expect_code(&plan, 0, "install --dry-run");
    let install = plugin().args(&args).output().unwrap();
    expect_code(&install, 0, "install with credentials in URLs");
    let probe_url = format!("http://probe-user:{PROBE_SECRET}@127.0.0.1:9/graphql");
    let status = rig.status(&["--probe-url", &probe_url, "--timeout", "20s"]);
    let records = rig.kubectl_ok(&["get", "configmap", "scalardb-graphql-install-record", "-o", "json"]);
    let events = rig.kubectl_ok(&["get", "events", "-A", "-o", "json"]);
    let helm = std::fs::read_to_string(&log).unwrap();
    assert!(helm.contains("argv: ") && helm.contains("upgrade"), "the shim saw no helm upgrade:\n{helm}");
    let said = everything_said(&[&plan, &install, &status]);
    assert!(said.contains("***@127.0.0.1"), "the masked URL is not shown:\n{said}");
    for (place, body) in
        [("output", &said), ("records", &records), ("events", &events), ("helm's argv and environment", &helm)]
    {
        for secret in [URL_SECRET, JDBC_SECRET, PROBE_SECRET, DB_PASSWORD, REGISTRY_TOKEN] {
            assert!(!body.contains(secret), "{secret} in {place}");
        }
    }
    for var in ["RIG_DB_PASSWORD", "RIG_REGISTRY_TOKEN"] {
        assert!(!helm.contains(&format!("\n{var}=")), "helm inherited {var}");
    }
    rig.reset();
}
