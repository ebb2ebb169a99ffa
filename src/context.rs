//! Resolved settings: flags and environment turned into a kube client, AWS
//! clients and a helm binary, the way kubectl, the AWS CLI and helm resolve
//! them. Also the `Env` every component receives.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};

use crate::cli::{GlobalArgs, parse_duration};
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::helm::{Helm, KubeFlags};

/// Settings from flags and environment, before anything is contacted.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Explicit kubeconfig files (a `--kubeconfig`, or helm's `KUBECONFIG`); None: kubectl's default chain.
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub namespace: Option<String>,
    pub as_user: Option<String>,
    pub as_groups: Vec<String>,
    /// `--request-timeout`: None when not given, Some(None) for `0` (no timeout).
    pub request_timeout: Option<Option<Duration>>,
    pub region: Option<String>,
    pub profile: Option<String>,
    pub cluster_name: Option<String>,
    pub helm_bin: Option<OsString>,
    /// Run by helm as a plugin (`HELM_PLUGIN_DIR` set).
    pub helm_plugin: bool,
}

impl Settings {
    /// The settings of a command that reaches AWS too: `--region` is checked first.
    pub fn resolve(args: &GlobalArgs) -> Result<Settings> {
        if let Some(region) = &args.region {
            crate::inputs::check_region(region)?;
        }
        Settings::resolve_kube(args)
    }

    /// The settings of a command that needs the cluster only (`schema`): the AWS flags are not its.
    /// Reads flags, then helm's plugin environment when helm runs this.
    pub fn resolve_kube(args: &GlobalArgs) -> Result<Settings> {
        let helm_plugin = std::env::var_os("HELM_PLUGIN_DIR").is_some();
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut s = Settings {
            kubeconfig: args.kubeconfig.clone(),
            context: args.context.clone(),
            namespace: args.namespace.clone(),
            as_user: args.as_user.clone(),
            as_groups: args.as_group.clone(),
            request_timeout: match &args.request_timeout {
                Some(t) => Some(parse_duration(t).map_err(|e| {
                    Error::usage(format!("--request-timeout {t:?}: {e}")).hint("give a duration such as 30s, 2m or 0")
                })?),
                None => None,
            },
            region: args.region.clone(),
            profile: args.profile.clone(),
            cluster_name: args.cluster_name.clone(),
            helm_bin: std::env::var_os("HELM_BIN"),
            helm_plugin,
        };
        if helm_plugin {
            // helm consumed its own global flags and hands them over in the environment.
            s.namespace = s.namespace.or_else(|| env("HELM_NAMESPACE"));
            s.context = s.context.or_else(|| env("HELM_KUBECONTEXT"));
        }
        if let Some(ns) = &s.namespace {
            crate::inputs::check_label("--namespace", ns)?;
        }
        Ok(s)
    }

    pub fn kube_flags(&self) -> KubeFlags {
        KubeFlags {
            context: self.context.clone(),
            kubeconfig: self.kubeconfig.clone(),
            as_user: self.as_user.clone(),
            as_groups: self.as_groups.clone(),
        }
    }
}

/// How long a Kubernetes read may wait for the next byte unless --request-timeout says otherwise.
pub const KUBE_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Names each Kubernetes request while its answer is awaited (see `calls::in_flight`).
#[derive(Clone, Copy)]
struct TrackRequests;

impl<S> tower::Layer<S> for TrackRequests {
    type Service = Tracked<S>;
    fn layer(&self, inner: S) -> Tracked<S> {
        Tracked(inner)
    }
}

#[derive(Clone)]
struct Tracked<S>(S);

impl<S, B> tower::Service<http::Request<B>> for Tracked<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = std::result::Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::result::Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let what = format!("the Kubernetes API server ({} {})", request.method(), request.uri().path());
        let answer = self.0.call(request);
        Box::pin(async move {
            let _waiting = crate::calls::call(what);
            answer.await
        })
    }
}

/// The kube side, resolved.
#[derive(Clone)]
pub struct Kube {
    pub client: kube::Client,
    pub context: String,
    pub server: String,
    /// `-n` (or helm's namespace) when given, else the context's namespace, else `default`.
    pub namespace: String,
    pub namespace_explicit: bool,
    /// The kubeconfig user's exec command line, for deriving the EKS cluster name.
    exec_args: Vec<String>,
    /// The kubeconfig's exec credential plugin, run by this tool (see `credentials`).
    exec: Option<std::sync::Arc<crate::credentials::ExecPlugin>>,
}

fn kubeconfig_error(e: KubeconfigError, s: &Settings) -> Error {
    match e {
        KubeconfigError::LoadContext(name) => {
            Error::prerequisite(format!("kube context {name:?} not found in the kubeconfig"))
                .hint("list contexts with `kubectl config get-contexts` and pass one with --context")
        }
        KubeconfigError::CurrentContextNotSet => Error::prerequisite("the kubeconfig has no current context")
            .hint("pass --context, or run `kubectl config use-context NAME`"),
        KubeconfigError::ReadConfig(err, path) => {
            Error::prerequisite(format!("cannot read kubeconfig {}: {err}", path.display()))
                .hint("check the path given to --kubeconfig or in KUBECONFIG")
        }
        KubeconfigError::Parse(err) => Error::prerequisite(format!("the kubeconfig is not valid YAML: {err}"))
            .hint("fix the file, or point --kubeconfig at another"),
        KubeconfigError::FindPath => {
            Error::prerequisite("no kubeconfig found (no --kubeconfig, no KUBECONFIG, no ~/.kube/config)")
                .hint("pass --kubeconfig PATH or set KUBECONFIG")
        }
        other => Error::prerequisite(format!(
            "cannot use the kubeconfig{}: {other}",
            s.context.as_ref().map(|c| format!(" context {c:?}")).unwrap_or_default()
        ))
        .hint("check it with `kubectl config view --minify`"),
    }
}

impl Kube {
    /// Builds a client from the kubeconfig without contacting the server.
    pub async fn connect(s: &Settings) -> Result<Kube> {
        let kubeconfig = match &s.kubeconfig {
            Some(path) => Kubeconfig::read_from(path),
            None => Kubeconfig::read(),
        }
        .map_err(|e| kubeconfig_error(e, s))?;
        let context = s.context.clone().or_else(|| kubeconfig.current_context.clone()).unwrap_or_default();
        let exec_args = kubeconfig_user_exec(&kubeconfig, &context);
        let proxy_url = kubeconfig_proxy(&kubeconfig, &context);
        let options = KubeConfigOptions { context: s.context.clone(), cluster: None, user: None };
        let mut config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(|e| kubeconfig_error(e, s))?;
        if let Some(user) = &s.as_user {
            config.auth_info.impersonate = Some(user.clone());
        }
        if !s.as_groups.is_empty() {
            config.auth_info.impersonate_groups = Some(s.as_groups.clone());
        }
        // No request may wait forever on a server that stopped answering: without
        // --request-timeout, a read that gets no byte for KUBE_READ_TIMEOUT fails
        // (the plugin makes no watches, so nothing here idles that long when well).
        match s.request_timeout {
            Some(t) => {
                config.read_timeout = t;
                config.connect_timeout = t;
            }
            None => config.read_timeout = Some(KUBE_READ_TIMEOUT),
        }
        config.proxy_url = match proxy_url {
            Some(url) => Some(url.parse().map_err(|e| {
                Error::prerequisite(format!(
                    "the kubeconfig's proxy-url {:?} is not a URL: {e}",
                    crate::redaction::without_credentials(&url)
                ))
                .hint("fix proxy-url in the kubeconfig's cluster")
            })?),
            None => api_server_proxy(&config.cluster_url)?,
        };
        config.headers.push((http::header::USER_AGENT, http::HeaderValue::from_static(crate::http::USER_AGENT)));
        let namespace_explicit = s.namespace.is_some();
        let namespace = s.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
        let server = config.cluster_url.to_string();
        // kube would run the plugin itself, blocking, out of the deadline's reach.
        let exec = match config.auth_info.exec.take() {
            Some(e) => Some(std::sync::Arc::new(crate::credentials::ExecPlugin::new(&e)?)),
            None => None,
        };
        let client = crate::transport::kube_client(config, exec.clone())?.with_layer(&TrackRequests).build();
        Ok(Kube { client, context, server, namespace, namespace_explicit, exec_args, exec })
    }

    /// From now on, a credential plugin still running at the command's deadline is killed.
    pub fn set_deadline(&self, deadline: &Deadline) {
        if let Some(exec) = &self.exec {
            exec.set_deadline(deadline);
        }
    }

    /// Why the kubeconfig's credential plugin gave no token, when that is why a request failed.
    pub fn credential_failure(&self) -> Option<Error> {
        self.exec.as_ref().and_then(|e| e.failure())
    }

    /// The EKS cluster this context points at, when its name or exec command says so.
    pub fn eks_cluster(&self) -> Option<EksRef> {
        eks_from_context(&self.context, &self.exec_args)
    }
}

/// The proxy-url of the context's cluster in the kubeconfig, if it names one.
fn kubeconfig_proxy(k: &Kubeconfig, context: &str) -> Option<String> {
    let cluster =
        k.contexts.iter().find(|c| c.name == context).and_then(|c| c.context.as_ref()).map(|c| c.cluster.clone())?;
    k.clusters
        .iter()
        .find(|c| c.name == cluster)
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.proxy_url.clone())
        .filter(|u| !u.is_empty())
}

/// The API server's proxy from the environment, as kubectl picks it:
/// HTTPS_PROXY, unless NO_PROXY names the server or it is a loopback address.
fn api_server_proxy(server: &http::Uri) -> Result<Option<http::Uri>> {
    let host = server.host().unwrap_or_default();
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let scheme = server.scheme_str().unwrap_or("https");
    match crate::http::ProxyEnv::from_env().for_target(scheme, host) {
        Some(proxy) if !loopback => {
            // A proxy given as host:port is http://host:port, as curl and kubectl take it.
            let url = if proxy.contains("://") { proxy.to_string() } else { format!("http://{proxy}") };
            Ok(Some(url.parse().map_err(|e| {
                Error::prerequisite(format!(
                    "the proxy {:?} for the API server is not a URL: {e}",
                    crate::redaction::without_credentials(proxy)
                ))
                .hint("fix or unset HTTPS_PROXY")
            })?))
        }
        _ => Ok(None),
    }
}

fn kubeconfig_user_exec(k: &Kubeconfig, context: &str) -> Vec<String> {
    let user =
        k.contexts.iter().find(|c| c.name == context).and_then(|c| c.context.as_ref()).and_then(|c| c.user.clone());
    let Some(user) = user else { return vec![] };
    k.auth_infos
        .iter()
        .find(|a| a.name == user)
        .and_then(|a| a.auth_info.as_ref())
        .and_then(|a| a.exec.as_ref())
        .and_then(|e| e.args.clone())
        .unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EksRef {
    pub name: String,
    pub region: Option<String>,
}

/// From `arn:aws:eks:REGION:ACCOUNT:cluster/NAME` contexts (as `aws eks update-kubeconfig`
/// names them), or from the exec arguments of `aws eks get-token --cluster-name NAME
/// [--region R]` or `aws-iam-authenticator token -i NAME`.
pub fn eks_from_context(context: &str, exec_args: &[String]) -> Option<EksRef> {
    if let Some(rest) = context.strip_prefix("arn:")
        && let [_partition, "eks", region, _account, resource] = rest.splitn(5, ':').collect::<Vec<_>>()[..]
        && let Some(name) = resource.strip_prefix("cluster/")
    {
        return Some(EksRef { name: name.to_string(), region: Some(region.to_string()) });
    }
    let value_of = |flags: &[&str]| {
        exec_args.iter().enumerate().find_map(|(i, a)| {
            flags.iter().find_map(|f| {
                if a == f {
                    exec_args.get(i + 1).cloned()
                } else {
                    a.strip_prefix(&format!("{f}=")).map(str::to_string)
                }
            })
        })
    };
    let name = value_of(&["--cluster-name", "-i", "--cluster-id"])?;
    Some(EksRef { name, region: value_of(&["--region"]) })
}

/// Bounds of one AWS call: each attempt, and the whole operation with its
/// retries. The command's deadline bounds them again from above.
const AWS_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const AWS_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
const AWS_OPERATION_TIMEOUT: Duration = Duration::from_secs(120);
/// Attempts per call: enough that an account throttling a third of the
/// requests (a busy account's IAM and EC2 APIs) still gets every call through.
const AWS_MAX_ATTEMPTS: u32 = 10;
const AWS_MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Names each AWS call while it is in flight (see `calls::in_flight`); the
/// guard lives in the call's config bag, so it goes when the call ends or is dropped.
#[derive(Debug)]
struct TrackCalls;

#[derive(Debug)]
struct InFlight(#[allow(dead_code)] crate::calls::Call);

impl aws_smithy_types::config_bag::Storable for InFlight {
    type Storer = aws_smithy_types::config_bag::StoreReplace<Self>;
}

impl aws_smithy_runtime_api::client::interceptors::Intercept for TrackCalls {
    fn name(&self) -> &'static str {
        "TrackCalls"
    }

    // Before serialization, not before execution: only then has the operation's name been configured.
    fn read_before_serialization(
        &self,
        _context: &aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> std::result::Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        use aws_smithy_runtime_api::client::orchestrator::Metadata;
        let what = match cfg.load::<Metadata>() {
            Some(m) => format!("AWS {} {}", m.service(), m.name()),
            None => "an AWS call".to_string(),
        };
        cfg.interceptor_state().store_put(InFlight(crate::calls::call(what)));
        Ok(())
    }

    fn read_after_execution(
        &self,
        _context: &aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef<'_>,
        _runtime_components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> std::result::Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        cfg.interceptor_state().unset::<InFlight>();
        Ok(())
    }
}

/// The AWS clients, from aws-config's default chain.
#[derive(Clone)]
pub struct Aws {
    pub region: Option<String>,
    pub iam: aws_sdk_iam::Client,
    pub ec2: crate::ec2::Ec2,
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    pub eks: aws_sdk_eks::Client,
    pub sts: aws_sdk_sts::Client,
}

impl Aws {
    /// Loads configuration (env, profile, SSO, process credentials); contacts nothing yet.
    pub async fn load(region: Option<String>, profile: Option<String>) -> Result<Aws> {
        let http = crate::transport::Aws::new()?;
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(AWS_CONNECT_TIMEOUT)
            .operation_attempt_timeout(AWS_ATTEMPT_TIMEOUT)
            .operation_timeout(AWS_OPERATION_TIMEOUT)
            .build();
        let retries = aws_config::retry::RetryConfig::standard()
            .with_max_attempts(AWS_MAX_ATTEMPTS)
            .with_max_backoff(AWS_MAX_BACKOFF);
        let bounds = crate::ec2::Bounds {
            attempt: AWS_ATTEMPT_TIMEOUT,
            operation: AWS_OPERATION_TIMEOUT,
            attempts: AWS_MAX_ATTEMPTS,
            max_backoff: AWS_MAX_BACKOFF,
        };
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http.clone())
            .timeout_config(timeouts)
            .retry_config(retries);
        if let Some(r) = region {
            loader = loader.region(Region::new(r));
        }
        if let Some(p) = profile {
            loader = loader.profile_name(p);
        }
        let sdk = loader.load().await;
        Ok(Aws {
            region: sdk.region().map(|r| r.to_string()),
            iam: aws_sdk_iam::Client::from_conf(
                aws_sdk_iam::config::Builder::from(&sdk).interceptor(TrackCalls).build(),
            ),
            ec2: crate::ec2::Ec2::new(&sdk, http.client(Some(AWS_CONNECT_TIMEOUT), None), bounds),
            elb: aws_sdk_elasticloadbalancingv2::Client::from_conf(
                aws_sdk_elasticloadbalancingv2::config::Builder::from(&sdk).interceptor(TrackCalls).build(),
            ),
            eks: aws_sdk_eks::Client::from_conf(
                aws_sdk_eks::config::Builder::from(&sdk).interceptor(TrackCalls).build(),
            ),
            sts: aws_sdk_sts::Client::from_conf(
                aws_sdk_sts::config::Builder::from(&sdk).interceptor(TrackCalls).build(),
            ),
        })
    }
}

/// Everything a command talks to.
pub struct Context {
    pub settings: Settings,
    pub kube: Kube,
    pub aws: Aws,
    /// helm, or why it cannot be used (a prerequisite for install and uninstall); None when
    /// the command does not run it (status, whose releases are read from helm's storage),
    /// and until `settle_helm`.
    pub helm: Option<std::result::Result<Helm, (String, Option<String>)>>,
    /// helm being found (its version read from a process) while preflight's calls are in flight.
    helm_finding: Option<tokio::task::JoinHandle<Result<Helm>>>,
    deadline: Option<Deadline>,
    /// The EKS cluster name: --cluster-name, else derived from the kube context.
    pub cluster_name: Option<String>,
}

impl Context {
    /// Connects; `with_helm`: the command runs helm, whose version is then read (from a
    /// process, started here and waited for by `settle_helm`).
    pub async fn connect(settings: Settings, with_helm: bool) -> Result<Context> {
        let kube = Kube::connect(&settings).await?;
        let derived = kube.eks_cluster();
        let cluster_name = settings.cluster_name.clone().or_else(|| derived.as_ref().map(|d| d.name.clone()));
        let region = settings.region.clone().or_else(|| derived.and_then(|d| d.region));
        let (bin, kube_flags) = (settings.helm_bin.clone(), settings.kube_flags());
        let helm_finding = with_helm.then(|| tokio::spawn(async move { Helm::find(bin, &kube_flags).await }));
        let aws = Aws::load(region, settings.profile.clone()).await?;
        Ok(Context { settings, kube, aws, helm: None, helm_finding, deadline: None, cluster_name })
    }

    /// Waits for helm to be found, when the command runs it (see `connect`).
    pub async fn settle_helm(&mut self) {
        let found = self.finding_helm().await;
        self.helm_found(found);
    }

    /// helm being found, as a future of its own (so that other calls can run beside it): give
    /// what it ends with to `helm_found`. Ends at once with None when the command runs no helm.
    pub fn finding_helm(&mut self) -> impl std::future::Future<Output = Option<Result<Helm>>> + 'static {
        let finding = self.helm_finding.take();
        async move {
            match finding {
                Some(f) => Some(f.await.unwrap_or_else(|e| Err(Error::Other(e.into())))),
                None => None,
            }
        }
    }

    pub fn helm_found(&mut self, found: Option<Result<Helm>>) {
        let Some(found) = found else { return };
        self.helm = Some(found.map_err(|e| (e.to_string(), e.hint_text().map(str::to_string))));
        if let Some(deadline) = self.deadline.clone() {
            self.set_deadline(&deadline);
        }
    }

    /// The command's deadline, for what does not take it from `Env`: a helm still running then is killed.
    pub fn set_deadline(&mut self, deadline: &Deadline) {
        self.deadline = Some(deadline.clone());
        self.kube.set_deadline(deadline);
        if let Some(Ok(helm)) = &mut self.helm {
            helm.set_deadline(deadline);
        }
    }

    pub fn helm(&self) -> Result<&Helm> {
        match &self.helm {
            None => Err(Error::prerequisite("this command does not run helm")
                .hint("helm's releases are read from its storage in the cluster; with HELM_DRIVER=sql or memory, use install or uninstall")),
            Some(Ok(h)) => Ok(h),
            Some(Err((message, hint))) => {
                let e = Error::prerequisite(message.clone());
                Err(match hint {
                    Some(h) => e.hint(h.clone()),
                    None => e,
                })
            }
        }
    }

    pub fn cluster_name(&self) -> Result<&str> {
        self.cluster_name.as_deref().ok_or_else(|| {
            Error::prerequisite(format!(
                "cannot tell which EKS cluster kube context {:?} belongs to",
                self.kube.context
            ))
            .hint("pass --cluster-name NAME")
        })
    }
}

/// The identity of the EKS cluster and the AWS account, established by preflight.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ClusterFacts {
    pub name: String,
    pub region: String,
    pub account: String,
    pub partition: String,
    pub caller_arn: String,
    pub endpoint: String,
    /// The OIDC issuer URL, `https://oidc.eks.REGION.amazonaws.com/id/ID`.
    pub issuer: String,
    pub vpc_id: String,
    pub subnet_ids: Vec<String>,
    pub kubernetes_version: String,
    /// EKS Auto Mode: `DescribeCluster` reports its compute and its load balancing enabled.
    pub auto_mode: bool,
}

impl ClusterFacts {
    /// The issuer without its scheme, as IAM names it.
    pub fn issuer_host_path(&self) -> &str {
        self.issuer.trim_start_matches("https://").trim_end_matches('/')
    }
    pub fn oidc_provider_arn(&self) -> String {
        format!("arn:{}:iam::{}:oidc-provider/{}", self.partition, self.account, self.issuer_host_path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eks_cluster_from_an_update_kubeconfig_context() {
        let r = eks_from_context("arn:aws:eks:us-west-1:123456789012:cluster/prod", &[]).unwrap();
        assert_eq!(r, EksRef { name: "prod".into(), region: Some("us-west-1".into()) });
    }

    #[test]
    fn eks_cluster_from_exec_arguments() {
        let args: Vec<String> =
            ["--region", "eu-west-1", "eks", "get-token", "--cluster-name", "blue"].map(String::from).into();
        let r = eks_from_context("blue-admin", &args).unwrap();
        assert_eq!(r, EksRef { name: "blue".into(), region: Some("eu-west-1".into()) });
        let args: Vec<String> = ["token", "-i", "green"].map(String::from).into();
        assert_eq!(eks_from_context("x", &args).unwrap().name, "green");
        assert_eq!(eks_from_context("kind-dev", &[]), None);
    }
}
