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
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use crate::deadline::Deadline;
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
    deadline: Option<Deadline>,
}

/// What `helm version` may take, before any deadline is known.
const VERSION_TIMEOUT: Duration = Duration::from_secs(30);

/// Where helm takes a chart from, as its command line says it: the flags and the chart's name.
struct Source {
    flags: Vec<OsString>,
    name: OsString,
    /// A repository given with credentials: the temporary configuration helm reads them from.
    _config: Option<tempfile::TempDir>,
}

/// The repository name a repository with credentials gets in the temporary configuration.
const AUTH_REPO: &str = "kubectl-scalardb-graphql-auth";

/// A repository URL's `user:password@`, percent-decoded, and the URL without it.
fn repo_credentials(url: &str) -> Option<(String, String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find('/').unwrap_or(rest.len());
    let (userinfo, host) = rest[..end].rsplit_once('@')?;
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    Some((decode(user), decode(password), format!("{scheme}://{host}{}", &rest[end..])))
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

/// Runs helm with these arguments, bounded by `deadline` (see `process::run`).
async fn run_bounded(
    path: &Path,
    args: &[OsString],
    what: &str,
    deadline: Option<Instant>,
) -> Result<std::process::Output> {
    let what = format!("helm to {what}");
    crate::process::run(crate::process::Run { program: path, args, env: &[], what: &what }, deadline).await.map_err(
        |e| match e.exit_code() {
            4 => e.hint("raise --timeout; a re-run recovers a release helm left pending"),
            _ => e,
        },
    )
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

    /// From now on, a helm still running at the command's deadline is killed.
    pub fn set_deadline(&mut self, deadline: &Deadline) {
        self.deadline = Some(deadline.clone());
    }

    /// The command's deadline as it is now (it moves when a question was answered).
    fn deadline(&self) -> Option<Instant> {
        self.deadline.as_ref().map(Deadline::at)
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
            let out = run_bounded(&self.path, &line, what, self.deadline()).await?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.success() || !stderr.contains("Kubernetes cluster unreachable") {
                return Ok(out);
            }
            match self.deadline() {
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
            if self.deadline().is_some_and(|d| Instant::now() + pause > d) {
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
    /// How helm reaches `chart`. A repository given with credentials
    /// (`https://user:password@host/…`) goes into a temporary repository
    /// configuration (a private directory, mode 0600) that helm reads them
    /// from, brought up to date first: they never reach a command line.
    async fn source(&self, chart: &ChartRef) -> Result<Source> {
        let mut flags = vec![];
        if let Some(v) = &chart.version {
            flags.extend(["--version".into(), v.into()]);
        }
        let Some(repo) = &chart.repo else {
            return Ok(Source { flags, name: chart.name.clone().into(), _config: None });
        };
        let Some((user, password, url)) = repo_credentials(repo) else {
            flags.extend(["--repo".into(), repo.into()]);
            return Ok(Source { flags, name: chart.name.clone().into(), _config: None });
        };
        let dir = tempfile::Builder::new()
            .prefix("kubectl-scalardb-graphql-repo-")
            .tempdir()
            .context("making a temporary directory")?;
        let config = dir.path().join("repositories.yaml");
        let entry = serde_json::json!({"apiVersion": "", "generated": "0001-01-01T00:00:00Z", "repositories": [
            {"name": AUTH_REPO, "url": url, "username": user, "password": password}]});
        let mut file = private_file(&config)?;
        file.write_all(entry.to_string().as_bytes()).context("writing the temporary repository configuration")?;
        let repo_flags: Vec<OsString> = vec![
            "--repository-config".into(),
            config.into(),
            "--repository-cache".into(),
            dir.path().join("cache").into(),
        ];
        let mut update = os(&["repo", "update"]);
        update.extend(repo_flags.iter().cloned());
        let args = command_line(update, &[], &[AUTH_REPO.as_ref()]);
        let what = format!("read the index of chart repository {}", crate::redaction::masked(repo));
        let out = run_bounded(&self.path, &args, &what, self.deadline()).await?;
        if !out.status.success() {
            return Err(Error::failed(format!(
                "helm failed to {what}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        flags.extend(repo_flags);
        Ok(Source { flags, name: format!("{AUTH_REPO}/{}", chart.name).into(), _config: Some(dir) })
    }

    pub async fn upgrade_install(
        &self,
        release: &str,
        namespace: &str,
        chart: &ChartRef,
        values: &[&Path],
        mark: bool,
    ) -> Result<()> {
        self.settle(release, namespace).await?;
        let source = self.source(chart).await?;
        let mut flags = os(&["upgrade", "--install"]);
        flags.extend(source.flags.iter().cloned());
        flags.extend(["-n".into(), namespace.into()]);
        if mark {
            let (key, value) = crate::pins::RELEASE_MARK;
            flags.extend(["--labels".into(), format!("{key}={value}").into()]);
        }
        for v in values {
            flags.extend(["-f".into(), v.as_os_str().to_owned()]);
        }
        let positional = [release.as_ref(), source.name.as_os_str()];
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
        let source = self.source(chart).await?;
        let mut flags = os(&["show", "crds"]);
        flags.extend(source.flags.iter().cloned());
        // `show` takes no cluster flags.
        let args = command_line(flags, &[], &[source.name.as_os_str()]);
        let out =
            run_bounded(&self.path, &args, &format!("read the CRDs of chart {}", chart.name), self.deadline()).await?;
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
/// A file only this user can read or write (mode 0600), created anew.
fn private_file(path: &Path) -> Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).context(format!("creating {}", path.display()))
}

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
    fn a_repository_urls_credentials_are_taken_out_of_it() {
        assert_eq!(
            repo_credentials("https://me:p%40ss@charts.example.com/stable"),
            Some(("me".into(), "p@ss".into(), "https://charts.example.com/stable".into()))
        );
        assert_eq!(repo_credentials("https://charts.example.com/a@b"), None);
        assert_eq!(repo_credentials("https://charts.example.com"), None);
    }

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
    #[test]
    fn values_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let f = values_file(&serde_json::json!({"a": 1})).unwrap();
        let mode = std::fs::metadata(f.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
