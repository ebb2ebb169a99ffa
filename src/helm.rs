//! The helm CLI, driven as a user would drive it: `HELM_BIN` (set when helm
//! runs this as a plugin) or `helm` on PATH, with the same kube context,
//! kubeconfig and impersonation as every other call. JSON output is parsed;
//! values reach helm only as files (mode 0600), never as `--set` arguments.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

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
}

/// The chart's part of a helm command line.
fn chart_args(chart: &ChartRef) -> Vec<OsString> {
    let mut args = vec![OsString::from(&chart.name)];
    if let Some(repo) = &chart.repo {
        args.extend(["--repo".into(), repo.into()]);
    }
    if let Some(v) = &chart.version {
        args.extend(["--version".into(), v.into()]);
    }
    args
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
        let out = Command::new(&path)
            .args(["version", "--short"])
            .output()
            .await
            .context(format!("running {} version", path.display()))?;
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
        Ok(Helm { path, version, global })
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

    /// Runs helm with the connection flags; its output, whatever the exit status.
    async fn output(&self, args: &[OsString], what: &str) -> Result<std::process::Output> {
        Command::new(&self.path)
            .args(args)
            .args(&self.global)
            .stdin(Stdio::null())
            .output()
            .await
            .context(format!("running helm to {what}"))
    }

    async fn run(&self, args: Vec<OsString>, what: &str) -> Result<String> {
        let out = self.output(&args, what).await?;
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
        let args: Vec<OsString> = ["get", "metadata", release, "-n", namespace, "-o", "json"].map(Into::into).into();
        let out = self.output(&args, "read release metadata").await?;
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
            .run(
                ["get", "values", release, "-n", namespace, "-o", "json"].map(Into::into).into(),
                "read release values",
            )
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
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        let what = format!("recover release {namespace}/{release} from {status}");
        let verb = if status == "pending-install" { "uninstall" } else { "rollback" };
        self.run([verb, release, "-n", namespace].map(Into::into).into(), &what).await.map(drop)
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
        let mut args: Vec<OsString> = ["upgrade", "--install", release].map(Into::into).into();
        args.extend(chart_args(chart));
        args.extend(["-n".into(), namespace.into()]);
        if mark {
            let (key, value) = crate::pins::RELEASE_MARK;
            args.extend(["--labels".into(), format!("{key}={value}").into()]);
        }
        for v in values {
            args.extend(["-f".into(), v.as_os_str().to_owned()]);
        }
        self.run(args, &format!("install release {namespace}/{release}")).await.map(drop)
    }

    pub async fn uninstall(&self, release: &str, namespace: &str) -> Result<()> {
        self.run(
            ["uninstall", release, "-n", namespace].map(Into::into).into(),
            &format!("uninstall release {namespace}/{release}"),
        )
        .await
        .map(drop)
    }

    /// The CRDs a chart carries (its `crds/` directory), as YAML documents.
    pub async fn show_crds(&self, chart: &ChartRef) -> Result<String> {
        let mut args: Vec<OsString> = vec!["show".into(), "crds".into()];
        args.extend(chart_args(chart));
        // `show` takes no cluster flags.
        let out = Command::new(&self.path)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .await
            .context("running helm show crds")?;
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
    fn values_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let f = values_file(&serde_json::json!({"a": 1})).unwrap();
        let mode = std::fs::metadata(f.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
