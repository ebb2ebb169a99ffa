//! The kubeconfig's exec credential plugin (`aws eks get-token` in every EKS
//! kubeconfig), run by this tool rather than inside kube's client: kube runs
//! it as a blocking process on the thread that also drives the command's
//! deadline, so a plugin that hangs (STS unreachable, an SSO prompt) would
//! outlive `--timeout`. Here it is a child process like helm: bounded by the
//! deadline, killed with its whole group, and named when it is what the
//! command waited for. Its token is kept until shortly before it expires,
//! then the plugin runs again; every request of kube's client carries it.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::jiff::Timestamp;
use kube::config::ExecConfig;

use crate::deadline::Deadline;
use crate::error::{Error, Result};

/// A token is run for again this long before it expires.
const REFRESH_BEFORE: Duration = Duration::from_secs(60);
/// What one run of the plugin may take when the command set no deadline.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// The plugin as the kubeconfig names it, and the token it last gave.
pub struct ExecPlugin {
    command: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    api_version: String,
    token: tokio::sync::Mutex<Option<(String, Option<Timestamp>)>>,
    deadline: std::sync::Mutex<Option<Deadline>>,
    /// Why the last run gave no token: what a request that failed for want of one stops with.
    failure: std::sync::Mutex<Option<Error>>,
}

/// What the plugin prints: an ExecCredential.
#[derive(serde::Deserialize)]
struct ExecCredential {
    #[serde(default)]
    status: Option<CredentialStatus>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct CredentialStatus {
    token: Option<String>,
    expiration_timestamp: Option<String>,
    client_certificate_data: Option<String>,
}

impl ExecPlugin {
    pub fn new(exec: &ExecConfig) -> Result<ExecPlugin> {
        let command = exec.command.clone().filter(|c| !c.is_empty()).ok_or_else(|| {
            Error::prerequisite("the kubeconfig's exec credential plugin names no command")
                .hint("fix the user's exec.command in the kubeconfig")
        })?;
        let env = exec
            .env
            .iter()
            .flatten()
            .filter_map(|e: &HashMap<String, String>| Some((e.get("name")?.clone(), e.get("value")?.clone())))
            .collect();
        Ok(ExecPlugin {
            command,
            args: exec.args.clone().unwrap_or_default(),
            env,
            api_version: exec.api_version.clone().unwrap_or_else(|| "client.authentication.k8s.io/v1beta1".into()),
            token: tokio::sync::Mutex::new(None),
            failure: std::sync::Mutex::new(None),
            deadline: std::sync::Mutex::new(None),
        })
    }

    /// `aws eks get-token`: the command and its first argument, as a user knows it.
    pub fn describe(&self) -> String {
        let program = std::path::Path::new(&self.command).file_name().map(|f| f.to_string_lossy().into_owned());
        let mut words = vec![program.unwrap_or_else(|| self.command.clone())];
        words.extend(self.args.iter().take_while(|a| !a.starts_with('-')).take(2).cloned());
        format!("the kubeconfig's credential plugin ({})", words.join(" "))
    }

    /// From now on, a run of the plugin still going at the command's deadline is killed.
    pub fn set_deadline(&self, deadline: &Deadline) {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = Some(deadline.clone());
    }

    /// The token, run for when there is none or it is about to expire.
    pub async fn token(&self) -> Result<String> {
        let mut held = self.token.lock().await;
        let fresh = |expiry: &Option<Timestamp>| {
            expiry.is_none_or(|at| {
                at.checked_sub(k8s_openapi::jiff::SignedDuration::try_from(REFRESH_BEFORE).unwrap_or_default())
                    .is_ok_and(|t| t > Timestamp::now())
            })
        };
        if let Some((token, expiry)) = held.as_ref()
            && fresh(expiry)
        {
            return Ok(token.clone());
        }
        let (token, expiry) = self.run().await.inspect_err(|e| {
            *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.copy());
        })?;
        *held = Some((token.clone(), expiry));
        Ok(token)
    }

    /// Why the plugin last failed to give a token, if it did: kube's client reports such a
    /// failure only as a string, and this keeps its exit code (4 when it did not answer in time).
    pub fn failure(&self) -> Option<Error> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(Error::copy)
    }

    async fn run(&self) -> Result<(String, Option<Timestamp>)> {
        let what = self.describe();
        let info = serde_json::json!({"apiVersion": self.api_version, "kind": "ExecCredential", "spec": {"interactive": false}});
        let mut env = self.env.clone();
        env.push(("KUBERNETES_EXEC_INFO".into(), info.to_string()));
        let args: Vec<OsString> = self.args.iter().map(OsString::from).collect();
        let program = PathBuf::from(&self.command);
        let deadline = self.deadline.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(Deadline::at);
        let deadline = deadline.unwrap_or_else(|| Instant::now() + RUN_LIMIT);
        let out = crate::process::run(
            crate::process::Run { program: &program, args: &args, env: &env, what: &what },
            Some(deadline),
        )
        .await
        .map_err(|e| match e.exit_code() {
            4 => e.hint(
                "check that the credential plugin answers (its network path to AWS, an SSO login), or raise --timeout",
            ),
            _ => Error::prerequisite(format!("cannot run {what}: {e}"))
                .hint("check the user's exec.command in the kubeconfig (is the AWS CLI installed?)"),
        })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(Error::prerequisite(format!(
                "{what} failed ({}): {}",
                out.status,
                stderr.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("no message")
            ))
            .hint("run the plugin's command yourself to see why (credentials, region, an SSO login)"));
        }
        let credential: ExecCredential = serde_json::from_slice(&out.stdout).map_err(|e| {
            Error::prerequisite(format!("{what} printed no ExecCredential: {e}"))
                .hint("check the user's exec.command in the kubeconfig")
        })?;
        let status = credential.status.unwrap_or(CredentialStatus {
            token: None,
            expiration_timestamp: None,
            client_certificate_data: None,
        });
        match (status.token.filter(|t| !t.is_empty()), status.client_certificate_data) {
            (Some(token), _) => {
                let expiry = status.expiration_timestamp.and_then(|t| t.parse::<Timestamp>().ok());
                Ok((token, expiry))
            }
            (None, Some(_)) => {
                Err(Error::prerequisite(format!("{what} gives a client certificate, which this plugin does not use"))
                    .hint("use a context whose credential plugin gives a token (as `aws eks get-token` does)"))
            }
            (None, None) => Err(Error::prerequisite(format!("{what} gave no token"))
                .hint("run the plugin's command yourself to see why")),
        }
    }
}

/// The tower layer that puts the plugin's token on every request.
#[derive(Clone)]
pub struct ExecAuthLayer(pub Arc<ExecPlugin>);

impl<S> tower::Layer<S> for ExecAuthLayer {
    type Service = ExecAuth<S>;
    fn layer(&self, inner: S) -> ExecAuth<S> {
        ExecAuth { inner, plugin: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct ExecAuth<S> {
    inner: S,
    plugin: Arc<ExecPlugin>,
}

impl<S, B> tower::Service<http::Request<B>> for ExecAuth<S>
where
    S: tower::Service<http::Request<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<tower::BoxError>,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = tower::BoxError;
    type Future = BoxFuture<'static, std::result::Result<S::Response, tower::BoxError>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<std::result::Result<(), tower::BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The ready service goes with the call; a clone takes its place for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let plugin = self.plugin.clone();
        Box::pin(async move {
            let token = plugin.token().await.map_err(|e| -> tower::BoxError { e.to_string().into() })?;
            let value = http::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| -> tower::BoxError { "the credential plugin's token is not a header value".into() })?;
            let mut value = value;
            value.set_sensitive(true);
            request.headers_mut().insert(http::header::AUTHORIZATION, value);
            inner.call(request).await.map_err(Into::into)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(command: &str, args: &[&str]) -> ExecPlugin {
        let exec = ExecConfig {
            api_version: Some("client.authentication.k8s.io/v1beta1".into()),
            command: Some(command.into()),
            args: Some(args.iter().map(|a| a.to_string()).collect()),
            env: None,
            drop_env: None,
            install_hint: None,
            interactive_mode: None,
            provide_cluster_info: false,
            cluster: None,
            other: Default::default(),
        };
        ExecPlugin::new(&exec).unwrap()
    }

    #[test]
    fn the_plugin_is_named_as_a_user_knows_it() {
        let p = plugin("/usr/local/bin/aws", &["--region", "us-east-1", "eks", "get-token", "--cluster-name", "prod"]);
        assert_eq!(p.describe(), "the kubeconfig's credential plugin (aws)");
        let p = plugin("aws", &["eks", "get-token", "--cluster-name", "prod"]);
        assert_eq!(p.describe(), "the kubeconfig's credential plugin (aws eks get-token)");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_token_is_kept_until_it_nears_its_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let count = dir.path().join("count");
        let script = dir.path().join("plugin");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho x >> {}\necho '{{\"apiVersion\":\"client.authentication.k8s.io/v1beta1\",\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"t-'$(wc -l < {})'\",\"expirationTimestamp\":\"'$1'\"}}}}'\n",
                count.display(),
                count.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let later = plugin(script.to_str().unwrap(), &["2099-01-01T00:00:00Z"]);
        assert_eq!(later.token().await.unwrap(), "t-1");
        assert_eq!(later.token().await.unwrap(), "t-1", "kept");
        let soon = plugin(script.to_str().unwrap(), &["2000-01-01T00:00:00Z"]);
        assert_eq!(soon.token().await.unwrap(), "t-2");
        assert_eq!(soon.token().await.unwrap(), "t-3", "run again: it has expired");
    }
}
