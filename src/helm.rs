//! The helm CLI, driven as a user would drive it: `HELM_BIN` (set when helm
//! runs this as a plugin) or `helm` on PATH, with the same kube context,
//! kubeconfig and impersonation as every other call. JSON output is parsed;
//! values reach helm only as files (mode 0600), never as `--set` arguments.
//! Positional arguments (release, chart) follow `--`, so that no name is
//! ever read as a flag. Each helm runs in a process group of its own, killed
//! as a whole (helm and whatever it started) at the command's deadline or
//! when the command is dropped (Ctrl-C).

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use tokio::process::Command;

use crate::error::{Context, Error, Result};
use crate::spec::ChartRef;

/// The oldest helm this plugin drives (`helm get metadata` arrived in 3.13).
pub const MIN_VERSION: (u64, u64) = (3, 13);

#[derive(Debug, Clone)]
pub struct Helm {
    pub path: PathBuf,
    pub version: String,
    /// Arguments every call carries: context, kubeconfig, impersonation.
    global: Vec<OsString>,
    /// When a helm still running is killed: the command's deadline.
    deadline: Option<Instant>,
}

/// What `helm version` may take, before any deadline is known.
const VERSION_TIMEOUT: Duration = Duration::from_secs(30);

/// The chart's flags on a helm command line (its name is positional).
fn chart_flags(chart: &ChartRef) -> Vec<OsString> {
    let mut args = vec![];
    if let Some(repo) = &chart.repo {
        args.extend(["--repo".into(), repo.into()]);
    }
    if let Some(v) = &chart.version {
        args.extend(["--version".into(), v.into()]);
    }
    args
}

/// A command line: the verb and flags, then `--`, then the positional arguments.
fn command_line(flags: Vec<OsString>, global: &[OsString], positional: &[&std::ffi::OsStr]) -> Vec<OsString> {
    let mut args = flags;
    args.extend(global.iter().cloned());
    if !positional.is_empty() {
        args.push("--".into());
        args.extend(positional.iter().map(|p| p.to_os_string()));
    }
    args
}

fn os(items: &[&str]) -> Vec<OsString> {
    items.iter().map(OsString::from).collect()
}

/// The process group of a running helm; SIGKILLed as a whole when dropped armed.
/// Windows has no such group: there `kill_on_drop` ends helm itself (not what helm started).
struct Group(Option<u32>);

impl Group {
    /// helm ended by itself: nothing to kill (and its group id may be reused).
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(pgid) = self.0.take() {
            // SAFETY: killpg only sends a signal, to the group this process made for helm
            // (process_group(0)); helm is not yet reaped, so the id is still that group's.
            unsafe {
                libc::killpg(pgid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}

/// Runs `path args` in a process group of its own until it ends or `deadline`
/// passes; then the whole group is killed, as it is when this future is dropped.
async fn run_bounded(
    path: &Path,
    args: &[OsString],
    what: &str,
    deadline: Option<Instant>,
) -> Result<std::process::Output> {
    let mut cmd = Command::new(path);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    #[cfg(unix)]
    cmd.process_group(0);
    let child = cmd.spawn().context(format!("running helm to {what}"))?;
    let mut group = Group(child.id());
    let _waiting = crate::cleanup::call(format!("helm to {what}"));
    let finished = match deadline {
        Some(at) => tokio::time::timeout_at(at.into(), child.wait_with_output()).await.ok(),
        None => Some(child.wait_with_output().await),
    };
    match finished {
        Some(out) => {
            group.disarm();
            out.context(format!("running helm to {what}"))
        }
        None => {
            drop(group);
            Err(Error::timeout(format!("timed out: helm did not finish to {what} by the deadline; it was stopped"))
                .hint("raise --timeout; a re-run recovers a release helm left pending"))
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ReleaseMetadata {
    pub chart: String,
    pub version: String,
    #[serde(rename = "appVersion", default)]
    pub app_version: String,
    pub status: String,
}

/// How to reach the cluster, as helm spells it.
#[derive(Debug, Clone, Default)]
pub struct KubeFlags {
    pub context: Option<String>,
    pub kubeconfig: Option<PathBuf>,
    pub as_user: Option<String>,
    pub as_groups: Vec<String>,
}

impl Helm {
    /// Finds helm (HELM_BIN, else PATH) and reads its version.
    pub async fn find(helm_bin: Option<OsString>, kube: &KubeFlags) -> Result<Helm> {
        let path = match helm_bin {
            Some(bin) if !bin.is_empty() => which::which(&bin).map_err(|_| {
                Error::prerequisite(format!("helm not found at HELM_BIN={}", bin.to_string_lossy()))
                    .hint("point HELM_BIN at a helm 3 or 4 binary, or unset it to use helm from PATH")
            })?,
            _ => which::which("helm").map_err(|_| {
                Error::prerequisite("helm not found on PATH").hint(format!(
                    "install helm {}.{} or newer (3 or 4), or set HELM_BIN to its path",
                    MIN_VERSION.0, MIN_VERSION.1
                ))
            })?,
        };
        let out = run_bounded(
            &path,
            &os(&["version", "--short"]),
            "read its version",
            Some(Instant::now() + VERSION_TIMEOUT),
        )
        .await?;
        let version = String::from_utf8_lossy(&out.stdout).trim().split('+').next().unwrap_or("").to_string();
        let mut global = Vec::new();
        if let Some(c) = &kube.context {
            global.extend(["--kube-context".into(), c.into()]);
        }
        if let Some(k) = &kube.kubeconfig {
            global.extend(["--kubeconfig".into(), k.into()]);
        }
        if let Some(u) = &kube.as_user {
            global.extend(["--kube-as-user".into(), u.into()]);
        }
        for g in &kube.as_groups {
            global.extend(["--kube-as-group".into(), g.into()]);
        }
        Ok(Helm { path, version, global, deadline: None })
    }

    /// From now on, a helm still running at `at` is killed.
    pub fn set_deadline(&mut self, at: Instant) {
        self.deadline = Some(at);
    }

    /// (major, minor) of the version, when it parses.
    pub fn major_minor(&self) -> Option<(u64, u64)> {
        parse_version(&self.version)
    }

    pub fn check_version(&self) -> Result<()> {
        match self.major_minor() {
            Some(v) if v >= MIN_VERSION => Ok(()),
            _ => Err(Error::prerequisite(format!(
                "helm {} at {} is too old or unrecognised; {}.{} or newer is needed",
                self.version,
                self.path.display(),
                MIN_VERSION.0,
                MIN_VERSION.1
            ))
            .hint("install a newer helm, or set HELM_BIN to one")),
        }
    }

    /// Runs helm with `flags`, the connection flags, then `--` and `positional`;
    /// its output, whatever the exit status. helm checks that it reaches the
    /// cluster before it changes anything: while it cannot (an API server
    /// paused or restarting), it is run again until the command's deadline,
    /// and then the command times out rather than fails.
    async fn output(
        &self,
        flags: Vec<OsString>,
        positional: &[&std::ffi::OsStr],
        what: &str,
    ) -> Result<std::process::Output> {
        const AGAIN: std::time::Duration = std::time::Duration::from_secs(1);
        let line = command_line(flags, &self.global, positional);
        loop {
            let out = run_bounded(&self.path, &line, what, self.deadline).await?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.success() || !stderr.contains("Kubernetes cluster unreachable") {
                return Ok(out);
            }
            match self.deadline {
                None => return Ok(out),
                Some(d) if Instant::now() + AGAIN < d => tokio::time::sleep(AGAIN).await,
                Some(_) => {
                    return Err(Error::timeout(format!(
                        "timed out: helm could not reach the cluster to {what} by the deadline: {}",
                        stderr.trim()
                    ))
                    .hint("check that the API server answers, then run the command again"));
                }
            }
        }
    }

    async fn run(&self, flags: Vec<OsString>, positional: &[&std::ffi::OsStr], what: &str) -> Result<String> {
        let out = self.output(flags, positional, what).await?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if let Some(refused) = crate::error::webhook_refusal(&stderr) {
                return Err(refused);
            }
            return Err(Error::failed(format!("helm failed to {what}: {}", stderr.trim())));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The release's metadata, or None when there is no such release.
    pub async fn metadata(&self, release: &str, namespace: &str) -> Result<Option<ReleaseMetadata>> {
        let flags = os(&["get", "metadata", "-n", namespace, "-o", "json"]);
        let out = self.output(flags, &[release.as_ref()], "read release metadata").await?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("not found") {
                return Ok(None);
            }
            return Err(Error::failed(format!("helm failed to read release {namespace}/{release}: {}", stderr.trim())));
        }
        Ok(Some(serde_json::from_slice(&out.stdout).context("parsing helm get metadata output")?))
    }

    /// The values the user supplied at install (what `-f` files merged to), nulls kept.
    pub async fn user_values(&self, release: &str, namespace: &str) -> Result<Value> {
        let out = self
            .run(os(&["get", "values", "-n", namespace, "-o", "json"]), &[release.as_ref()], "read release values")
            .await?;
        let v: Value = serde_json::from_str(&out).context("parsing helm get values output")?;
        Ok(if v.is_null() { Value::Object(Default::default()) } else { v })
    }

    /// A release left `pending-*` by an interrupted helm blocks every later
    /// operation. Give a helm that is still running a moment to finish; then
    /// undo what it left half done: an install that never completed is
    /// uninstalled, a half-done upgrade or rollback rolled back.
    async fn settle(&self, release: &str, namespace: &str) -> Result<()> {
        let mut status = String::new();
        for _ in 0..20 {
            status = match self.metadata(release, namespace).await? {
                Some(m) => m.status,
                None => return Ok(()),
            };
            if !status.starts_with("pending-") {
                return Ok(());
            }
            let pause = Duration::from_millis(500);
            if self.deadline.is_some_and(|d| Instant::now() + pause > d) {
                return Err(Error::timeout(format!(
                    "timed out waiting for release {namespace}/{release} to leave {status}"
                ))
                .hint("raise --timeout; a re-run recovers the release"));
            }
            tokio::time::sleep(pause).await;
        }
        let what = format!("recover release {namespace}/{release} from {status}");
        let verb = if status == "pending-install" { "uninstall" } else { "rollback" };
        self.run(os(&[verb, "-n", namespace]), &[release.as_ref()], &what).await.map(drop)
    }

    /// `helm upgrade --install` with values given as files, in order. `mark`:
    /// label the release as this tool's (helm keeps it on later revisions).
    pub async fn upgrade_install(
        &self,
        release: &str,
        namespace: &str,
        chart: &ChartRef,
        values: &[&Path],
        mark: bool,
    ) -> Result<()> {
        self.settle(release, namespace).await?;
        let mut flags = os(&["upgrade", "--install"]);
        flags.extend(chart_flags(chart));
        flags.extend(["-n".into(), namespace.into()]);
        if mark {
            let (key, value) = crate::pins::RELEASE_MARK;
            flags.extend(["--labels".into(), format!("{key}={value}").into()]);
        }
        for v in values {
            flags.extend(["-f".into(), v.as_os_str().to_owned()]);
        }
        let positional = [release.as_ref(), chart.name.as_ref()];
        self.run(flags, &positional, &format!("install release {namespace}/{release}")).await.map(drop)
    }

    pub async fn uninstall(&self, release: &str, namespace: &str) -> Result<()> {
        self.run(
            os(&["uninstall", "-n", namespace]),
            &[release.as_ref()],
            &format!("uninstall release {namespace}/{release}"),
        )
        .await
        .map(drop)
    }

    /// The CRDs a chart carries (its `crds/` directory), as YAML documents.
    pub async fn show_crds(&self, chart: &ChartRef) -> Result<String> {
        let mut flags = os(&["show", "crds"]);
        flags.extend(chart_flags(chart));
        // `show` takes no cluster flags.
        let args = command_line(flags, &[], &[chart.name.as_ref()]);
        let out =
            run_bounded(&self.path, &args, &format!("read the CRDs of chart {}", chart.name), self.deadline).await?;
        if !out.status.success() {
            return Err(Error::failed(format!(
                "helm failed to read the CRDs of chart {}: {}",
                chart.name,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

pub fn parse_version(v: &str) -> Option<(u64, u64)> {
    let mut parts = v.trim().trim_start_matches('v').split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()?;
    Some((major, minor))
}

/// A values file only this user can read; removed when dropped.
pub fn values_file(values: &Value) -> Result<tempfile::NamedTempFile> {
    // tempfile creates files with mode 0600.
    let mut file = tempfile::Builder::new()
        .prefix("scalardb-graphql-values-")
        .suffix(".json")
        .tempfile()
        .context("creating a values file")?;
    file.write_all(serde_json::to_string(values).context("rendering values")?.as_bytes())
        .context("writing a values file")?;
    file.flush().context("writing a values file")?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_from_short_output() {
        assert_eq!(parse_version("v3.22.0"), Some((3, 22)));
        assert_eq!(parse_version("v4.3.1"), Some((4, 3)));
        assert_eq!(parse_version("v3.13.0-rc.1"), Some((3, 13)));
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn positional_arguments_follow_a_double_dash_after_every_flag() {
        let global = os(&["--kube-context", "ctx"]);
        let line =
            command_line(os(&["upgrade", "--install", "-n", "ns"]), &global, &["-rel".as_ref(), "--chart".as_ref()]);
        assert_eq!(line, os(&["upgrade", "--install", "-n", "ns", "--kube-context", "ctx", "--", "-rel", "--chart"]));
        assert_eq!(command_line(os(&["version", "--short"]), &[], &[]), os(&["version", "--short"]));
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_helm_past_its_deadline_is_killed_with_its_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("child.pid");
        let script = dir.path().join("helm");
        std::fs::write(&script, format!("#!/bin/sh\nsleep 600 &\necho $! > {}\nexec sleep 600\n", pid_file.display()))
            .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let started = Instant::now();
        let e = run_bounded(&script, &[], "hang", Some(Instant::now() + Duration::from_millis(500))).await.unwrap_err();
        assert_eq!(e.exit_code(), 4, "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let child: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        // The grandchild got SIGKILL with the group; once its parent is gone, init reaps it.
        let gone = (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            !Path::new(&format!("/proc/{child}")).exists()
                || std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|s| s.contains(") Z "))
        });
        assert!(gone, "the background child {child} of helm survived");
    }

    #[cfg(unix)]
    #[test]
    fn values_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let f = values_file(&serde_json::json!({"a": 1})).unwrap();
        let mode = std::fs::metadata(f.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
