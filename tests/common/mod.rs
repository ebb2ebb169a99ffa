//! What the tests share: the rig (read from its state directory's `env`), the real plugin
//! binary run with the rig's environment, and the rig's instruments (the
//! API server's audit log, moto's request recorder, snapshots).
//!
//! A test that needs the rig calls `rig()`. When the rig is not up it fails
//! at once with the command that starts it; it never passes by skipping.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod processes;

/// `kubectl proxy` on a free loopback port, stopped when dropped.
pub struct KubectlProxy(std::process::Child);

impl Drop for KubectlProxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every rig test changes the one cluster and the one AWS account: one at a time.
static RIG_LOCK: Mutex<()> = Mutex::new(());

/// The rig's Python kept running for this test binary (rig/shell.py): `rig/rig`
/// commands and AWS CLI command lines, run in it one after another, start no
/// interpreter and import nothing each. It ends when this binary exits (end of input).
struct Shell {
    env: BTreeMap<String, String>,
    input: std::process::ChildStdin,
    output: BufReader<std::process::ChildStdout>,
    _child: std::process::Child,
}

static SHELL: Mutex<Option<Shell>> = Mutex::new(None);

pub const BIN: &str = env!("CARGO_BIN_EXE_kubectl-scalardb_graphql");
pub const REGISTRY_TOKEN: &str = "ghp_RigRegistryToken0123456789abcdef";
/// The password of the rig's database account (rig.py's DATABASE; `rig()` checks they agree).
pub const DB_PASSWORD: &str = "rig-db-password-7e3f9a";
/// A ScalarDB Cluster license key and check certificate for the rig's nodes
/// (the stand-in checks that both are there and that the certificate is PEM).
pub const LICENSE_KEY: &str = "rig-license-key-5b1c";
pub const LICENSE_CERT_PEM: &str =
    "-----BEGIN CERTIFICATE-----\nUmlnTGljZW5zZUNoZWNrQ2VydGlmaWNhdGU=\n-----END CERTIFICATE-----";

/// The checkout under test: cargo sets this when it runs a test, and a test
/// binary shared by two checkouts through one target directory is still right.
pub fn root() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()))
}

/// The rig this test binary runs against: `RIG_STATE` (the test runner gives
/// each binary one of several rigs), else `.rig` in the checkout.
pub fn state() -> PathBuf {
    std::env::var_os("RIG_STATE").map(PathBuf::from).unwrap_or_else(|| root().join(".rig"))
}

/// Reads an env file of `export NAME="value"` lines.
pub fn read_env_file(path: &Path) -> Result<BTreeMap<String, String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!("the rig is not up ({}: {e}); start it with `make rig-up` (`make test` starts it too)", path.display())
    })?;
    let mut env = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("export ")
            && let Some((k, v)) = rest.split_once('=')
        {
            let v = v.trim_matches('"').replace("${PATH}", &std::env::var("PATH").unwrap_or_default());
            env.insert(k.to_string(), v);
        }
    }
    Ok(env)
}

pub struct Rig {
    pub env: BTreeMap<String, String>,
    _lock: MutexGuard<'static, ()>,
}

/// The rig, for this test alone; panics (fails the test) when the rig is down.
pub fn rig() -> Rig {
    let lock = RIG_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let env = match read_env_file(&state().join("env")) {
        Ok(env) => env,
        Err(e) => panic!("{e}"),
    };
    let rig = Rig { env, _lock: lock };
    assert_eq!(rig.get("RIG_DATABASE_PASSWORD"), DB_PASSWORD, "the tests' database password is not the rig's");
    // The plugin downloads the IAM policy: only ever through the rig's proxy, never the network.
    for var in ["HTTPS_PROXY", "https_proxy"] {
        assert!(
            rig.get(var).starts_with("http://127.0.0.1:"),
            "{var} in the rig's env is not its policy mirror: a test could reach for the internet"
        );
    }
    let status = rig.rig_status();
    assert!(
        status.status.success(),
        "the rig is not healthy; restart it with `make rig-down rig-up`:\n{}",
        String::from_utf8_lossy(&status.stdout)
    );
    rig
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Fails the test with the command's whole output unless it exited with `code`.
pub fn expect_code(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: expected exit {code}\n--- stdout\n{}\n--- stderr\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Fails the test unless the command exited with `code` and said why in exactly one line on
/// stderr, holding every one of `names`; that line.
pub fn one_line_error(out: &Output, code: i32, names: &[&str]) -> String {
    expect_code(out, code, &format!("a one-line error holding {names:?}"));
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected:\n{stderr}");
    for n in names {
        assert!(lines[0].contains(n), "{n:?} missing from:\n{stderr}");
    }
    lines[0].to_string()
}

impl Rig {
    pub fn get(&self, key: &str) -> &str {
        self.env.get(key).unwrap_or_else(|| panic!("{key} missing from .rig/env"))
    }

    /// A command with the rig's environment (kubeconfig, AWS endpoint, tools on PATH).
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.envs(&self.env).env("NO_COLOR", "1").env_remove("HELM_PLUGIN_DIR").env_remove("HELM_BIN");
        c
    }

    pub fn plugin(&self) -> Command {
        let mut c = self.cmd(BIN);
        c.env("RIG_REGISTRY_TOKEN", REGISTRY_TOKEN).env("RIG_DB_PASSWORD", DB_PASSWORD);
        c.env("RIG_LICENSE_KEY", LICENSE_KEY).env("RIG_LICENSE_CERT", LICENSE_CERT_PEM);
        c
    }

    /// The plugin on a pseudo-terminal of its own, run by `driver` (a Python
    /// script given `prompt`, then the plugin's argv), with TMPDIR at `tmp`.
    pub fn plugin_on_terminal(&self, driver: &str, prompt: &str, args: &[String], tmp: &Path) -> Output {
        let mut c = self.cmd("python3");
        c.env("RIG_REGISTRY_TOKEN", REGISTRY_TOKEN).env("RIG_DB_PASSWORD", DB_PASSWORD).env("TMPDIR", tmp);
        c.arg("-c").arg(driver).arg(prompt).arg(BIN).args(args);
        c.output().expect("running the terminal driver")
    }

    /// The install flags for the rig: local charts; the IAM policy downloaded from its pinned URL
    /// through the rig's policy mirror; the probe runs from a Pod, as by default.
    pub fn install_args(&self) -> Vec<String> {
        [
            "install",
            "-y",
            "--timeout",
            "120s",
            "--namespaces",
            "sample",
            "--registry-username",
            "rig-user",
            "--registry-password-env",
            "RIG_REGISTRY_TOKEN",
            "--db-username",
            "scalar",
            "--db-password-env",
            "RIG_DB_PASSWORD",
            "--lbc-chart-repo",
            self.get("RIG_CHART_REPO_URL"),
            "--chart-repo",
            self.get("RIG_CHART_REPO_URL"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// The install flags of `--target cluster` for the rig: no registry Secret, the license from the environment.
    pub fn cluster_install_args(&self) -> Vec<String> {
        let mut args = self.install_args();
        let at = args.iter().position(|a| a == "--registry-username").expect("registry flags");
        args.drain(at..at + 4);
        args.extend(
            ["--target", "cluster", "--license-key-env", "RIG_LICENSE_KEY", "--license-cert-env", "RIG_LICENSE_CERT"]
                .map(String::from),
        );
        args
    }

    /// A helm in `dir` that appends its command line to `dir/argv.log`, then runs the rig's helm:
    /// give it as HELM_BIN. Returns the shim and the log.
    pub fn helm_logging_argv(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let log = dir.join("argv.log");
        let real = self.get("PATH").split(':').next().map(|d| format!("{d}/helm")).expect("the rig's bin directory");
        let shim = dir.join("helm");
        std::fs::write(&shim, format!("#!/bin/sh\necho \"$@\" >> {}\nexec {real} \"$@\"\n", log.display())).unwrap();
        std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        (shim, log)
    }

    pub fn install(&self, extra: &[&str]) -> Output {
        self.plugin().args(self.install_args()).args(extra).output().expect("running install")
    }

    pub fn install_ok(&self) -> Output {
        let out = self.install(&[]);
        expect_code(&out, 0, "install");
        out
    }

    pub fn uninstall_ok(&self) -> Output {
        let out = self.plugin().args(["uninstall", "-y", "--timeout", "120s"]).output().expect("running uninstall");
        expect_code(&out, 0, "uninstall");
        out
    }

    /// `status`, its probe run from a Pod as by default.
    pub fn status(&self, extra: &[&str]) -> Output {
        self.plugin().arg("status").args(extra).output().expect("running status")
    }

    /// The probe Pods that exist now.
    pub fn probe_pods(&self) -> Vec<String> {
        self.kubectl_json(&["get", "pods", "-A", "-l", "app.kubernetes.io/component=probe"])["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                format!("{}/{}", p["metadata"]["namespace"].as_str().unwrap(), p["metadata"]["name"].as_str().unwrap())
            })
            .collect()
    }

    /// Runs `request`, `["rig", CMD, …]` or `["aws", ARG, …]`, in the rig's shell
    /// (started on first use, again if it died or the rig changed); its answer as an Output.
    pub fn shell(&self, request: &[&str]) -> Output {
        let mut shell = SHELL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if shell.as_ref().is_none_or(|s| s.env != self.env) {
            let mut child = self
                .cmd(self.get("RIG_PYTHON"))
                .arg(root().join("rig/shell.py"))
                .env("RIG_IN_VENV", "1")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("starting rig/shell.py");
            let input = child.stdin.take().unwrap();
            let output = BufReader::new(child.stdout.take().unwrap());
            *shell = Some(Shell { env: self.env.clone(), input, output, _child: child });
        }
        let s = shell.as_mut().unwrap();
        let mut line = String::new();
        let asked = writeln!(s.input, "{}", serde_json::to_string(request).unwrap()).and_then(|()| s.input.flush());
        let answered = asked.and_then(|()| s.output.read_line(&mut line));
        if !matches!(answered, Ok(n) if n > 0) {
            *shell = None;
            panic!("rig/shell.py ended without answering {request:?} ({answered:?}); its stderr is above");
        }
        let reply: Value = serde_json::from_str(&line).expect("rig/shell.py answers JSON");
        let code = reply["code"].as_i64().expect("an exit code") as i32;
        Output {
            status: std::os::unix::process::ExitStatusExt::from_raw((code & 0xff) << 8),
            stdout: reply["stdout"].as_str().unwrap_or_default().as_bytes().to_vec(),
            stderr: reply["stderr"].as_str().unwrap_or_default().as_bytes().to_vec(),
        }
    }

    /// Back to the state right after `rig up`.
    pub fn reset(&self) {
        expect_code(&self.shell(&["rig", "reset"]), 0, "rig reset");
    }

    pub fn snapshot(&self) -> Value {
        let out = self.shell(&["rig", "snapshot"]);
        expect_code(&out, 0, "rig snapshot");
        serde_json::from_slice(&out.stdout).expect("snapshot JSON")
    }

    pub fn dataplane(&self, args: &[&str]) {
        let request: Vec<&str> = ["rig", "dataplane"].into_iter().chain(args.iter().copied()).collect();
        expect_code(&self.shell(&request), 0, "rig dataplane");
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.cmd("kubectl").args(args).output().expect("running kubectl")
    }

    /// kube-rs reaching the rig's API server through `kubectl proxy` (plain
    /// http on 127.0.0.1, kubectl doing TLS and credentials): the crate's kube
    /// has no TLS of its own, the plugin gives it its connection
    /// (src/transport.rs). Keep the proxy while the client is used.
    pub fn kube_client(&self) -> (kube::Client, KubectlProxy) {
        let mut child = self
            .cmd("kubectl")
            .args(["proxy", "--port=0", "--address=127.0.0.1"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let proxy = KubectlProxy(child);
        // "Starting to serve on 127.0.0.1:PORT"
        let address = line.trim().rsplit(' ').next().unwrap_or_default();
        assert!(address.starts_with("127.0.0.1:"), "kubectl proxy said {line:?}");
        let config = kube::Config::new(format!("http://{address}").parse().unwrap());
        (kube::Client::try_from(config).unwrap(), proxy)
    }

    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        expect_code(&out, 0, &format!("kubectl {}", args.join(" ")));
        text(&out.stdout)
    }

    pub fn kubectl_json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl_ok(&a)).expect("kubectl JSON")
    }

    /// kubectl with `input` on its stdin (a manifest for `create -f -`), whatever its exit.
    pub fn kubectl_input(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .cmd("kubectl")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    pub fn kubectl_apply(&self, manifest: &Value) {
        let mut child = self
            .cmd("kubectl")
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(manifest.to_string().as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        expect_code(&out, 0, "kubectl apply");
    }

    pub fn aws(&self, args: &[&str]) -> Value {
        let request: Vec<&str> = ["aws"].into_iter().chain(args.iter().copied()).chain(["--output", "json"]).collect();
        let out = self.shell(&request);
        expect_code(&out, 0, &format!("aws {}", args.join(" ")));
        if out.stdout.is_empty() { Value::Null } else { serde_json::from_slice(&out.stdout).expect("aws JSON") }
    }

    // --- counting mutating calls -------------------------------------------------------

    /// Where the audit log ends now; `kube_mutations_since` reads what follows.
    pub fn audit_mark(&self) -> u64 {
        std::fs::metadata(self.get("RIG_AUDIT_LOG")).map(|m| m.len()).unwrap_or(0)
    }

    /// Mutating API requests made by the plugin or the helm it drives since `mark`.
    /// The plugin's and helm's requests since `mark` that change something. Two
    /// kinds persist nothing and are left out: server-side dry runs (the plugin
    /// proves admission with one) and access reviews. A probe Pod is created and
    /// deleted by the same command: each create of a Pod counts until a delete of a
    /// probe Pod pairs with it.
    pub fn kube_mutations_since(&self, mark: u64) -> Vec<String> {
        let found = self.kube_changes_since(mark);
        let path =
            |c: &String| c.split(' ').nth(1).unwrap_or_default().split('?').next().unwrap_or_default().to_string();
        let pod_create = |c: &String| c.starts_with("create ") && path(c).ends_with("/pods");
        let probe_delete = |c: &String| c.starts_with("delete ") && path(c).contains("/pods/scalardb-graphql-probe-");
        let created = found.iter().filter(|c| pod_create(c)).count();
        let deleted = found.iter().filter(|c| probe_delete(c)).count();
        assert_eq!(created, deleted, "Pods created and probe Pods deleted do not pair: {found:#?}");
        found.into_iter().filter(|c| !pod_create(c) && !probe_delete(c)).collect()
    }

    /// Every request since `mark` of the plugin or helm that would change something.
    pub fn kube_changes_since(&self, mark: u64) -> Vec<String> {
        let mut f = std::fs::File::open(self.get("RIG_AUDIT_LOG")).expect("the audit log");
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(mark)).unwrap();
        let mut found = vec![];
        for line in BufReader::new(f).lines().map_while(Result::ok) {
            let Ok(e) = serde_json::from_str::<Value>(&line) else { continue };
            let agent = e["userAgent"].as_str().unwrap_or_default();
            let verb = e["verb"].as_str().unwrap_or_default();
            let ours = agent.starts_with("kubectl-scalardb-graphql")
                || agent.starts_with("Helm/")
                || agent.starts_with("helm/");
            // A server-side dry run persists nothing (the plugin uses one to prove admission).
            let uri = e["requestURI"].as_str().unwrap_or_default();
            let dry_run = uri.contains("dryRun=All") || uri.contains("/selfsubjectaccessreviews");
            if ours && !dry_run && matches!(verb, "create" | "update" | "patch" | "delete" | "deletecollection") {
                found.push(format!("{verb} {} ({agent})", e["requestURI"].as_str().unwrap_or_default()));
            }
        }
        found
    }

    fn moto(&self, path: &str, post: bool) -> Vec<u8> {
        let url = format!("{}/moto-api/recorder/{path}", self.get("AWS_ENDPOINT_URL"));
        let mut c = Command::new("curl");
        c.args(["-sf", &url]);
        if post {
            c.args(["-X", "POST"]);
        }
        let out = c.output().expect("curl");
        expect_code(&out, 0, &format!("moto recorder {path}"));
        out.stdout
    }

    /// Starts a fresh recording of every AWS request.
    pub fn moto_record(&self) {
        self.moto("reset-recording", true);
        self.moto("start-recording", true);
    }

    /// The AWS actions the plugin (the Rust SDK) made since `moto_record`, and which of them mutate.
    pub fn moto_actions(&self) -> (Vec<String>, Vec<String>) {
        let raw = self.moto("download-recording", false);
        self.moto("stop-recording", true);
        let mut all = vec![];
        for line in text(&raw).lines() {
            let Ok(e) = serde_json::from_str::<Value>(line) else { continue };
            let agent = e["headers"]["User-Agent"].as_str().or(e["headers"]["user-agent"].as_str()).unwrap_or_default();
            if !agent.contains("aws-sdk-rust") {
                continue;
            }
            let body = e["body"].as_str().unwrap_or_default();
            let body = if e["body_encoded"].as_bool() == Some(true) {
                use base64::Engine;
                text(&base64::engine::general_purpose::STANDARD.decode(body).unwrap_or_default())
            } else {
                body.to_string()
            };
            let action = body.split('&').find_map(|kv| kv.strip_prefix("Action=")).map(str::to_string);
            let method = e["method"].as_str().unwrap_or_default();
            let url = e["url"].as_str().unwrap_or_default();
            all.push(action.unwrap_or_else(|| {
                format!(
                    "{method} {}",
                    url.split_once("://").map(|(_, r)| r.split_once('/').map(|x| x.1).unwrap_or("")).unwrap_or(url)
                )
            }));
        }
        let mutating = all
            .iter()
            .filter(|a| {
                let read = ["Describe", "Get", "List"].iter().any(|p| a.starts_with(p)) || a.starts_with("GET ");
                !read
            })
            .cloned()
            .collect();
        (all, mutating)
    }

    // --- processes ------------------------------------------------------------------------

    /// Runs the plugin in a process group of its own and SIGKILLs the group
    /// (it and the helm it runs) right after its `n`-th result line: a
    /// component boundary. Returns the lines seen.
    pub fn killed_after(&self, args: &[String], n: usize) -> Vec<String> {
        let mut cmd = self.plugin();
        cmd.args(args);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawning the plugin");
        let pid = child.id();
        let mut seen = vec![];
        for line in BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok) {
            if line.starts_with('√') {
                seen.push(line);
                if seen.len() == n {
                    kill_group(pid);
                    break;
                }
            }
        }
        let _ = child.wait();
        seen
    }

    /// Every boundary of a run, in one pass: runs the plugin again and again, each
    /// time SIGKILLing it (and the helm it runs) right after the first result line no
    /// earlier run printed (lines compared without their parenthesized details, which
    /// name durations and pods): a re-run starts from where the last was killed,
    /// observes afresh, and is killed after its next new step. Returns the steps killed
    /// at, in order, once a run ends without a new line.
    pub fn killed_at_every_step(&self, args: &[String]) -> Vec<String> {
        fn step(line: &str) -> String {
            line.split(" (").next().unwrap_or(line).to_string()
        }
        let mut done: Vec<String> = vec![];
        loop {
            let mut cmd = self.plugin();
            cmd.args(args);
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawning the plugin");
            let pid = child.id();
            let new = BufReader::new(child.stdout.take().unwrap())
                .lines()
                .map_while(Result::ok)
                .find(|l| l.starts_with('√') && !done.contains(&step(l)));
            match new {
                Some(line) => {
                    kill_group(pid);
                    let _ = child.wait();
                    done.push(step(&line));
                }
                None => {
                    let out = child.wait_with_output().expect("waiting for the plugin");
                    // A run that fails before its next step is no boundary: say why it failed.
                    assert!(
                        out.status.success(),
                        "after {done:#?}, a run failed before its next step: {}",
                        text(&out.stderr)
                    );
                    return done;
                }
            }
        }
    }

    /// The EKS cluster's OIDC issuer URL.
    pub fn issuer(&self) -> String {
        let c = self.aws(&["eks", "describe-cluster", "--name", self.get("RIG_CLUSTER_NAME")]);
        c["cluster"]["identity"]["oidc"]["issuer"].as_str().unwrap().to_string()
    }

    /// Creates the cluster's IAM OIDC provider by hand, as eksctl or a colleague would have.
    pub fn create_oidc_provider(&self) {
        let issuer = self.issuer();
        self.aws(&[
            "iam",
            "create-open-id-connect-provider",
            "--url",
            &issuer,
            "--client-id-list",
            "sts.amazonaws.com",
        ]);
    }

    /// What the guide has a user do before `helm install` of the controller on EKS (IRSA):
    /// the cluster's OIDC provider, the pinned controller policy, a role that trusts the
    /// controller's ServiceAccount (`kube-system/aws-load-balancer-controller`) with the policy
    /// attached. Returns the `--set` that annotates the chart's ServiceAccount with the role.
    pub fn controller_irsa(&self) -> [String; 2] {
        let issuer = self.issuer();
        let host = issuer.trim_start_matches("https://").to_string();
        let providers = self.aws(&["iam", "list-open-id-connect-providers"]);
        if !providers.to_string().contains(&host) {
            self.create_oidc_provider();
        }
        let name = HAND_LBC_ROLE;
        let policies = self.aws(&["iam", "list-policies", "--scope", "Local"]);
        let policy = match policies["Policies"].as_array().unwrap().iter().find(|p| p["PolicyName"] == name) {
            Some(p) => p["Arn"].as_str().unwrap().to_string(),
            None => {
                let document = format!("file://{}", self.get("RIG_IAM_POLICY_FILE"));
                let made = self.aws(&["iam", "create-policy", "--policy-name", name, "--policy-document", &document]);
                made["Policy"]["Arn"].as_str().unwrap().to_string()
            }
        };
        let roles = self.aws(&["iam", "list-roles"]);
        let role = match roles["Roles"].as_array().unwrap().iter().find(|r| r["RoleName"] == name) {
            Some(r) => r["Arn"].as_str().unwrap().to_string(),
            None => {
                let account = "123456789012";
                let trust = serde_json::json!({"Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow",
                    "Principal": {"Federated": format!("arn:aws:iam::{account}:oidc-provider/{host}")},
                    "Action": "sts:AssumeRoleWithWebIdentity",
                    "Condition": {"StringEquals": {
                        format!("{host}:sub"): "system:serviceaccount:kube-system:aws-load-balancer-controller",
                        format!("{host}:aud"): "sts.amazonaws.com"}}}]});
                let made = self.aws(&[
                    "iam",
                    "create-role",
                    "--role-name",
                    name,
                    "--assume-role-policy-document",
                    &trust.to_string(),
                ]);
                self.aws(&["iam", "attach-role-policy", "--role-name", name, "--policy-arn", &policy]);
                made["Role"]["Arn"].as_str().unwrap().to_string()
            }
        };
        ["--set".into(), format!("serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn={role}")]
    }

    /// Tags the VPC's private subnets for internal load balancers, as a user would by hand.
    pub fn tag_private_subnets(&self, zone_suffix: &str) -> Vec<String> {
        self.tag_subnets(&format!("*private*{zone_suffix}"), "Key=kubernetes.io/role/internal-elb,Value=1")
    }

    /// The ids of the subnets whose Name matches `pattern` (a wildcard pattern), as EC2 lists them.
    pub fn subnets_named(&self, pattern: &str) -> Vec<String> {
        let filter = format!("Name=tag:Name,Values={pattern}");
        self.aws(&["ec2", "describe-subnets", "--filters", &filter])["Subnets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["SubnetId"].as_str().unwrap().to_string())
            .collect()
    }

    /// Tags the subnets `ids` with each of `tags` (`Key=…,Value=…`), as a user would by hand.
    pub fn tag_subnet_ids(&self, ids: &[String], tags: &[&str]) {
        let mut args = vec!["ec2", "create-tags", "--resources"];
        args.extend(ids.iter().map(String::as_str));
        args.push("--tags");
        args.extend(tags);
        self.aws(&args);
    }

    /// Tags the subnets whose Name matches `name` (a wildcard pattern) with `tag` (`Key=…,Value=…`).
    pub fn tag_subnets(&self, name: &str, tag: &str) -> Vec<String> {
        let ids = self.subnets_named(name);
        self.tag_subnet_ids(&ids, &[tag]);
        ids
    }

    /// One attribute of a target group, as ELBv2 reports it.
    pub fn target_group_attribute(&self, arn: &str, key: &str) -> Option<String> {
        let attrs = self.aws(&["elbv2", "describe-target-group-attributes", "--target-group-arn", arn]);
        attrs["Attributes"]
            .as_array()?
            .iter()
            .find(|a| a["Key"] == key)
            .and_then(|a| a["Value"].as_str())
            .map(str::to_string)
    }

    /// Runs `f` with every request recorded and fails the test if it made a
    /// mutating call, to the Kubernetes API or to AWS. Returns what `f`
    /// returned and every AWS action it made (which shows the recorder saw it).
    pub fn without_mutation<T>(&self, what: &str, f: impl FnOnce() -> T) -> (T, Vec<String>) {
        let mark = self.audit_mark();
        self.moto_record();
        let value = f();
        let (calls, mutating) = self.moto_actions();
        let kube = self.kube_mutations_since(mark);
        assert!(kube.is_empty(), "{what}: mutating API requests {kube:#?}");
        assert!(mutating.is_empty(), "{what}: mutating AWS calls {mutating:?}");
        (value, calls)
    }

    /// Polls until the rig's snapshot equals `want`, or fails the test with the difference.
    pub fn eventually_same(&self, want: &Value, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let diff = snapshot_diff(want, &self.snapshot());
            if diff.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: still differs after 60s: {diff:#?}");
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Polls `f` until it is true, or fails the test after `secs`.
    pub fn eventually(&self, what: &str, secs: u64, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        panic!("timed out after {secs}s waiting for {what}");
    }
}

/// SIGKILL to a whole process group (the plugin and the helm it runs), as a
/// closed terminal or an OOM kill would hit them.
pub fn kill_group(pgid: u32) {
    // SAFETY: killpg only sends a signal; the group is the child's own (process_group(0)).
    let rc = unsafe { libc::killpg(pgid as libc::pid_t, libc::SIGKILL) };
    assert_eq!(rc, 0, "killpg({pgid})");
}

/// What differs between two snapshots, as readable lines (empty when equal).
pub fn snapshot_diff(want: &Value, got: &Value) -> Vec<String> {
    fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                    walk(
                        &format!("{path}.{k}"),
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                        out,
                    );
                }
            }
            (Value::Array(x), Value::Array(y)) if x.iter().chain(y).all(Value::is_string) => {
                let count = |v: &Vec<Value>, s: &Value| v.iter().filter(|e| *e == s).count();
                for s in x.iter().chain(y) {
                    let (cx, cy) = (count(x, s), count(y, s));
                    let line = format!("{path}: {s} expected {cx}x, found {cy}x");
                    if cx != cy && !out.contains(&line) {
                        out.push(line);
                    }
                }
            }
            (a, b) if a != b => out.push(format!("{path}: expected {a}, found {b}")),
            _ => {}
        }
    }
    let mut out = vec![];
    walk("", want, got, &mut out);
    out
}

/// Makes a pod stop answering the ALB's health checks, as a server that
/// hangs while its readiness probe still passes: its containers stay ready
/// and nothing answers its address (the rig's pod network, `pod_network.py`).
pub fn fail_health_checks(rig: &Rig, namespace: &str, pod: &str) {
    rig.kubectl_ok(&["-n", namespace, "annotate", "pod", pod, "rig.kubectl-scalardb-graphql/unresponsive=true"]);
}

// --- faults ---------------------------------------------------------------------------------

/// A process of the rig stopped with SIGSTOP; dropping the guard (also when
/// the test panics) sends SIGCONT. The pid is the one at the time of the
/// pause: a stopped process is alive, so the rig's supervisor leaves it be.
pub struct Paused {
    pub what: String,
    pub pid: i32,
    pub since: Instant,
}

impl Paused {
    fn new(what: &str, pid_file: PathBuf) -> Paused {
        let raw = std::fs::read_to_string(&pid_file).unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()));
        let pid: i32 = raw.trim().parse().unwrap_or_else(|e| panic!("{}: {raw:?}: {e}", pid_file.display()));
        // SAFETY: kill only sends a signal, to a process of the rig named by its pid file.
        let rc = unsafe { libc::kill(pid, libc::SIGSTOP) };
        assert_eq!(rc, 0, "SIGSTOP to {what} (pid {pid}): {}", std::io::Error::last_os_error());
        eprintln!("fault: {what} (pid {pid}) paused");
        Paused { what: what.to_string(), pid, since: Instant::now() }
    }

    /// SIGCONT now (dropping the guard does the same).
    pub fn resume(self) {}
}

impl Drop for Paused {
    fn drop(&mut self) {
        // SAFETY: as above; SIGCONT to a process that is not stopped does nothing.
        unsafe { libc::kill(self.pid, libc::SIGCONT) };
        eprintln!("fault: {} (pid {}) resumed after {:.1}s", self.what, self.pid, self.since.elapsed().as_secs_f64());
    }
}

impl Rig {
    /// The pid file of one of the rig's processes: its own (`aws`, `alb-simulator`, …) or the
    /// control plane's (`kube-apiserver`, `etcd`, `kube-controller-manager`, `kube-scheduler`,
    /// `kwok-controller`).
    pub fn pid_file(&self, component: &str) -> PathBuf {
        if component == "supervisor" {
            return state().join("supervisor.pid");
        }
        let own = state().join("pids").join(component);
        if own.exists() {
            return own;
        }
        PathBuf::from(self.get("KWOK_WORKDIR"))
            .join("clusters")
            .join(self.get("RIG_CLUSTER_NAME"))
            .join("pids")
            .join(format!("{component}.pid"))
    }

    /// The pid of a rig process now.
    pub fn pid_of(&self, component: &str) -> i32 {
        let path = self.pid_file(component);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Stops one of the rig's processes (SIGSTOP) until the guard is dropped.
    pub fn pause(&self, component: &str) -> Paused {
        Paused::new(component, self.pid_file(component))
    }

    /// Stops the AWS server (SIGSTOP) until the guard is dropped.
    pub fn pause_aws(&self) -> Paused {
        Paused::new("the AWS server", self.pid_file("aws"))
    }

    /// Stops the kube-apiserver (SIGSTOP) until the guard is dropped.
    pub fn pause_apiserver(&self) -> Paused {
        Paused::new("kube-apiserver", self.pid_file("kube-apiserver"))
    }

    /// Whether the process is running (not gone, not a zombie).
    pub fn running(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
            .unwrap_or(false)
    }

    /// `rig/rig status`, whatever its exit.
    pub fn rig_status(&self) -> Output {
        self.shell(&["rig", "status"])
    }

    fn faults_request(&self, body: Option<&str>) -> Value {
        let url = format!("{}/rig/faults", self.get("AWS_ENDPOINT_URL"));
        let mut c = Command::new("curl");
        c.args(["-sf", "--max-time", "10", &url]);
        if let Some(body) = body {
            c.args(["-X", "POST", "--data-binary", body]);
        }
        let out = c.output().expect("curl");
        expect_code(&out, 0, "the AWS server's faults endpoint");
        serde_json::from_slice(&out.stdout).expect("faults JSON")
    }

    /// Throttles the fraction `throttle` of AWS API requests (a generator seeded with `seed`);
    /// zeroes the counters.
    pub fn aws_throttle(&self, throttle: f64, seed: u64) -> Value {
        self.faults_request(Some(&serde_json::json!({"throttle": throttle, "seed": seed}).to_string()))
    }

    /// The rig VPC's id (its only VPC).
    /// The EKS cluster's VPC (the account also has moto's default VPC).
    pub fn vpc(&self) -> String {
        let cluster = self.aws(&["eks", "describe-cluster", "--name", self.get("RIG_CLUSTER_NAME")]);
        cluster["cluster"]["resourcesVpcConfig"]["vpcId"].as_str().unwrap().to_string()
    }

    /// Creates an HTTP target group of type `ip` in the rig's VPC, as someone else's; its ARN.
    pub fn create_ip_target_group(&self, name: &str, port: u16) -> String {
        let (vpc, port) = (self.vpc(), port.to_string());
        let args = ["elbv2", "create-target-group", "--name", name, "--protocol", "HTTP", "--port", &port];
        let tg = self.aws(&[&args[..], &["--vpc-id", &vpc, "--target-type", "ip"]].concat());
        tg["TargetGroups"][0]["TargetGroupArn"].as_str().unwrap().to_string()
    }

    /// ELBv2 answers `client`'s requests naming these ARNs as if they were just deleted, while
    /// its listings still show them (the moment between a listing and a read): in every action,
    /// or only in `actions`; zeroes the counters.
    pub fn aws_gone(&self, arns: &[&str], client: &str, actions: Option<&[&str]>) -> Value {
        let fault = serde_json::json!({"gone": arns, "gone_client": client, "gone_actions": actions});
        self.faults_request(Some(&fault.to_string()))
    }

    /// No more faults; zeroes the counters.
    pub fn aws_faults_off(&self) -> Value {
        self.faults_request(Some(r#"{"throttle": 0}"#))
    }

    /// The AWS server's fault setting and counters (`throttled`, `throttled_by_client`, …).
    pub fn aws_faults(&self) -> Value {
        self.faults_request(None)
    }

    /// Throttled answers given to the plugin since the counters were zeroed: to the AWS SDK for
    /// Rust's clients and to its own EC2 client (its User-Agent names the plugin).
    pub fn throttled_for_the_plugin(&self) -> u64 {
        let by_client = &self.aws_faults()["throttled_by_client"];
        ["aws-sdk-rust", "kubectl-scalardb-graphql"].iter().map(|c| by_client[c].as_u64().unwrap_or(0)).sum()
    }
}

// --- installs -----------------------------------------------------------------------------------

/// The rig's install flags (`Rig::install_args`) with `--timeout` set to `timeout`.
pub fn install_args_with_timeout(rig: &Rig, timeout: &str) -> Vec<String> {
    let mut args = rig.install_args();
    let at = args.iter().position(|a| a == "--timeout").expect("install_args sets --timeout") + 1;
    args[at] = timeout.to_string();
    args
}

/// The rig reset, then installed (without the probe) by a run that must succeed.
pub fn installed(rig: &Rig) {
    rig.reset();
    expect_code(&rig.install(&["--no-probe"]), 0, "install");
}

// --- the install record -----------------------------------------------------------------------

/// The ConfigMap install writes its record to, in the release's namespace.
pub const RECORD: &str = "scalardb-graphql-install-record";

/// The install record in `namespace`, if there is one.
pub fn record_in(rig: &Rig, namespace: &str) -> Option<Value> {
    let out = rig.kubectl(&["get", "configmap", RECORD, "-n", namespace, "-o", "json"]);
    if !out.status.success() {
        return None;
    }
    let cm: Value = serde_json::from_slice(&out.stdout).unwrap();
    Some(serde_json::from_str(cm["data"]["record.json"].as_str().unwrap()).unwrap())
}

/// The spec install records, from a real install (then the rig is reset).
pub fn recorded_spec(rig: &Rig) -> Value {
    rig.install_ok();
    let record = record_in(rig, "default").expect("install wrote its record");
    rig.reset();
    record["spec"].clone()
}

/// Writes `record` as the install record in `namespace`, as anyone allowed to write ConfigMaps there could.
pub fn write_record(rig: &Rig, namespace: &str, record: &Value) {
    rig.kubectl_apply(&serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": RECORD, "namespace": namespace,
                     "labels": {"app.kubernetes.io/managed-by": "kubectl-scalardb-graphql"}},
        "data": {"record.json": record.to_string()},
    }));
}

// --- status reports ---------------------------------------------------------------------------

impl Rig {
    /// `status -o json --no-probe`: its exit code and report (`status_json(rig, &["--no-probe"])`).
    pub fn status_json(&self) -> (Option<i32>, Value) {
        status_json(self, &["--no-probe"])
    }
}

/// `status -o json` and `extra` (the probe runs unless `extra` says `--no-probe`): its exit code
/// and report.
pub fn status_json(rig: &Rig, extra: &[&str]) -> (Option<i32>, Value) {
    let (code, report, _) = status_json_timed(rig, extra);
    (code, report)
}

/// `status -o json` and `extra`: its exit code, its report and how long the command ran.
pub fn status_json_timed(rig: &Rig, extra: &[&str]) -> (Option<i32>, Value, Duration) {
    let started = Instant::now();
    let out = rig.status(&[&["-o", "json"], extra].concat());
    let took = started.elapsed();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)));
    (out.status.code(), v, took)
}

/// Every check of a report that did not pass, as `"id" "result": "message"`, leaving out the
/// standalone chart's end-of-support warning.
pub fn not_passing(report: &Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["result"] != "pass" && !end_of_support_warning(c))
        .map(|c| format!("{} {}: {}", c["id"], c["result"], c["message"]))
        .collect()
}

/// The ids of the checks of a report that failed (a warning is no failure).
pub fn failing(report: &Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["result"] == "fail")
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

/// The warning `status` gives for the standalone server's chart (its ScalarDB is past its support).
pub fn end_of_support_warning(check: &Value) -> bool {
    check["id"] == "graphql.support"
        && check["result"] == "warn"
        && check["message"].as_str().is_some_and(|m| m.contains("support ended") && m.contains("--target cluster"))
}

/// One check of a `status -o json` report, by id.
pub fn check(report: &Value, id: &str) -> Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no {id}: {report}"))
}

// --- the controller -----------------------------------------------------------------------------

/// The rig's controller role (the plugin's default name for the rig's cluster).
/// The role (and policy) `controller_irsa` makes for a controller installed by hand.
pub const HAND_LBC_ROLE: &str = "platform-team-lbc";
pub const LBC_ROLE: &str = "scalardb-graphql-rig-aws-load-balancer-controller";

/// The controller installed by hand as the guide has a user do on EKS: `helm install` of the
/// upstream chart (the rig's repository) into kube-system for cluster `cluster_name`, with IRSA
/// (`controller_irsa`), waited for.
pub fn install_controller(rig: &Rig, cluster_name: &str) {
    let irsa = rig.controller_irsa();
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
            &format!("clusterName={cluster_name}"),
            "--wait",
        ])
        .args(&irsa)
        .output()
        .unwrap();
    expect_code(&out, 0, "helm install controller");
}

impl Rig {
    /// `kubectl rollout restart` of the controller, waited for: its pods start anew.
    pub fn restart_controller(&self) {
        // kubectl stamps a restart to the second: one right after another (install's) must wait for the next.
        let restart = ["rollout", "restart", "deployment/aws-load-balancer-controller", "-n", "kube-system"];
        let out = self.kubectl(&restart);
        if !out.status.success() && text(&out.stderr).contains("within the past second") {
            std::thread::sleep(std::time::Duration::from_millis(1100));
            self.kubectl_ok(&restart);
        } else {
            expect_code(&out, 0, "kubectl rollout restart");
        }
        self.kubectl_ok(&[
            "rollout",
            "status",
            "deployment/aws-load-balancer-controller",
            "-n",
            "kube-system",
            "--timeout",
            "90s",
        ]);
    }

    /// A second ALB Ingress (internal, ip targets) in `default`, in front of the release's Service.
    pub fn another_alb_ingress(&self, name: &str) {
        let port = self.kubectl_ok(&["get", "service", "scalardb-graphql", "-o", "jsonpath={.spec.ports[0].port}"]);
        self.kubectl_apply(&serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": "default", "annotations": {
                "alb.ingress.kubernetes.io/scheme": "internal", "alb.ingress.kubernetes.io/target-type": "ip",
                "alb.ingress.kubernetes.io/healthcheck-path": "/graphql?query=%7B__typename%7D"}},
            "spec": {"ingressClassName": "alb", "defaultBackend": {"service": {
                "name": "scalardb-graphql", "port": {"number": port.trim().parse::<u16>().unwrap()}}}},
        }));
    }

    /// The Warning events on Ingress `default/name`, as `Reason: message`.
    pub fn ingress_warnings(&self, name: &str) -> Vec<String> {
        let events = self.kubectl_json(&[
            "get",
            "events",
            "-n",
            "default",
            "--field-selector",
            &format!("involvedObject.kind=Ingress,involvedObject.name={name},type=Warning"),
            "-o",
            "json",
        ]);
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| format!("{}: {}", e["reason"].as_str().unwrap_or(""), e["message"].as_str().unwrap_or("")))
            .collect()
    }

    /// The hostname the controller gave Ingress `default/name`, if any.
    pub fn ingress_hostname(&self, name: &str) -> String {
        self.kubectl_ok(&["get", "ingress", name, "-o", "jsonpath={.status.loadBalancer.ingress[0].hostname}"])
            .trim()
            .to_string()
    }

    /// Waits until Ingress `default/name` has a Warning event holding `says`, and has no ALB.
    pub fn ingress_refused(&self, name: &str, says: &str) -> String {
        let mut found = String::new();
        self.eventually(&format!("a warning on Ingress {name} saying {says:?}"), 60, || {
            found = self.ingress_warnings(name).into_iter().find(|w| w.contains(says)).unwrap_or_default();
            !found.is_empty()
        });
        assert_eq!(self.ingress_hostname(name), "", "Ingress {name} got an ALB although: {found}");
        found
    }
}
