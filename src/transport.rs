//! The connections under kube's client and the AWS SDK: hyper's pooled
//! client over the plugin's one TLS setup (`tls`), instead of the connectors
//! those crates bring, which read (and link) the platform's certificate store.
//!
//! kube: the kubeconfig's CA (else `tls::roots`), client certificate and
//! `insecure-skip-tls-verify`, `tls-server-name`, a `proxy-url` (or the
//! HTTPS_PROXY `context` picked) as an `http://` CONNECT tunnel, the connect
//! and read timeouts, and kube's own layers for the base URL, retries of
//! 429/503/504, credentials (tokens, exec plugins) and headers; HTTP/2 when
//! the API server offers it, so that a command's concurrent reads share one
//! connection and one TLS handshake, as kubectl's do. AWS: the
//! SDK's connect and read timeouts, with failures classed as the SDK classes
//! them for its retries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_timeout::TimeoutConnector;
use hyper_util::client::legacy::connect::HttpConnector as TcpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::{Body, ConfigExt};

use crate::error::{Error, Result};

fn tcp() -> TcpConnector {
    let mut tcp = TcpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp
}

/// kube's client builder for `config`, over the plugin's TLS; the caller adds its layers and builds.
pub fn kube_client(
    config: kube::Config,
    exec: Option<std::sync::Arc<crate::credentials::ExecPlugin>>,
) -> Result<kube::client::ClientBuilder<Stack>> {
    let roots = match &config.root_cert {
        Some(ders) => crate::tls::roots_from_der(ders).map_err(|e| {
            Error::prerequisite(format!("the kubeconfig's certificate-authority cannot be used: {e}"))
                .hint("check certificate-authority(-data) of the cluster in the kubeconfig")
        })?,
        None => crate::tls::roots()?,
    };
    let mut tls = crate::tls::client_config(roots, identity(&config.auth_info)?)?;
    if config.accept_invalid_certs {
        crate::tls::skip_verification(&mut tls);
    }
    let mut https = HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http();
    if let Some(name) = &config.tls_server_name {
        let name = rustls::pki_types::ServerName::try_from(name.clone()).map_err(|e| {
            Error::prerequisite(format!("the kubeconfig's tls-server-name {name:?} is not a server name: {e}"))
                .hint("fix tls-server-name of the cluster in the kubeconfig")
        })?;
        https = https.with_server_name_resolver(FixedServerNameResolver::new(name));
    }
    let https = https.enable_all_versions();
    match config.proxy_url.clone() {
        None => Ok(stack(https.wrap_connector(MaybeTunnel::Direct(tcp())), &config, exec)?),
        Some(proxy) if proxy.scheme_str() == Some("http") => {
            let mut tunnel = Tunnel::new(proxy.clone(), tcp());
            if let Some(auth) = proxy_authorization(&proxy) {
                tunnel = tunnel.with_auth(auth);
            }
            Ok(stack(https.wrap_connector(MaybeTunnel::Tunnel(tunnel)), &config, exec)?)
        }
        Some(proxy) => Err(Error::prerequisite(format!(
            "the proxy {} for the API server is not an http:// proxy, the only kind supported",
            crate::redaction::without_credentials(proxy.to_string().trim_end_matches('/'))
        ))
        .hint("use an http:// proxy (a CONNECT tunnel) in proxy-url or HTTPS_PROXY")),
    }
}

/// The service kube's layers wrap: hyper's client with the kubeconfig's timeouts.
pub type Stack = tower::util::BoxService<http::Request<Body>, http::Response<hyper::body::Incoming>, tower::BoxError>;

fn stack(
    connector: HttpsConnector<MaybeTunnel>,
    config: &kube::Config,
    exec: Option<std::sync::Arc<crate::credentials::ExecPlugin>>,
) -> Result<kube::client::ClientBuilder<Stack>> {
    use tower::ServiceExt;
    let mut connector = TimeoutConnector::new(connector);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    // A pooled connection idle longer than the read timeout is not a timeout
    // when it is used again: a request's write starts the read clock anew.
    connector.set_reset_reader_on_write(true);
    let client: hyper_util::client::legacy::Client<_, Body> =
        hyper_util::client::legacy::Builder::new(TokioExecutor::new()).build(connector);
    let unusable = |e: kube::Error| {
        Error::prerequisite(format!("cannot use the kubeconfig's credentials: {e}"))
            .hint("check the user of the context with `kubectl config view --minify`")
    };
    // kube's own order: the base URL, then its retries of 429/503/504 (with
    // backoff, re-sending the credentials), then credentials and headers.
    let retry =
        config.default_retry.then(|| tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry()));
    // An exec plugin's token comes from `credentials` (run under the deadline), the rest from kube.
    let auth = config.auth_layer().map_err(unusable)?;
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(retry)
        .option_layer(auth)
        .option_layer(exec.map(crate::credentials::ExecAuthLayer))
        .layer(config.extra_headers_layer().map_err(unusable)?)
        .map_err(tower::BoxError::from)
        .service(client)
        .boxed();
    Ok(kube::client::ClientBuilder::new(service, config.default_namespace.clone()))
}

/// The kubeconfig user's client certificate and key, from data or files; none when it names neither.
fn identity(user: &kube::config::AuthInfo) -> Result<Option<crate::tls::Identity>> {
    let read = |data: Option<String>, file: &Option<String>, what: &str| -> Result<Option<Vec<u8>>> {
        let unusable = |e: String| {
            Error::prerequisite(format!("the kubeconfig's {what} cannot be read: {e}"))
                .hint(format!("fix {what}(-data) of the user in the kubeconfig"))
        };
        match (data.filter(|d| !d.is_empty()), file.as_ref().filter(|f| !f.is_empty())) {
            (Some(data), _) => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .map(Some)
                    .map_err(|e| unusable(e.to_string()))
            }
            (None, Some(file)) => std::fs::read(file).map(Some).map_err(|e| unusable(format!("{file}: {e}"))),
            (None, None) => Ok(None),
        }
    };
    let certificate = read(user.client_certificate_data.clone(), &user.client_certificate, "client-certificate")?;
    let key = read(
        user.client_key_data.as_ref().map(|k| secrecy::ExposeSecret::expose_secret(k).to_string()),
        &user.client_key,
        "client-key",
    )?;
    match (certificate, key) {
        (None, None) => Ok(None),
        (Some(certificate), Some(key)) => crate::tls::Identity::from_pem(&certificate, &key).map(Some).map_err(|e| {
            Error::prerequisite(format!("the kubeconfig's client certificate cannot be used: {e}"))
                .hint("check client-certificate and client-key of the user in the kubeconfig")
        }),
        (Some(_), None) | (None, Some(_)) => {
            Err(Error::prerequisite("the kubeconfig's user has a client certificate or a client key, not both")
                .hint("give the user both client-certificate(-data) and client-key(-data)"))
        }
    }
}

/// `Proxy-Authorization: Basic …` from a proxy URL's `user:password@`, percent-decoded.
fn proxy_authorization(proxy: &http::Uri) -> Option<http::HeaderValue> {
    use base64::Engine;
    let (userinfo, _) = proxy.authority()?.as_str().rsplit_once('@')?;
    let plain: Vec<u8> = percent_encoding::percent_decode_str(userinfo).collect();
    let mut value =
        http::HeaderValue::from_str(&format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(plain)))
            .ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// TCP to the server, or through an http:// proxy's CONNECT tunnel.
#[derive(Clone)]
pub enum MaybeTunnel {
    Direct(TcpConnector),
    Tunnel(Tunnel<TcpConnector>),
}

type Tcp = hyper_util::rt::TokioIo<tokio::net::TcpStream>;

impl tower::Service<http::Uri> for MaybeTunnel {
    type Response = Tcp;
    type Error = tower::BoxError;
    type Future = std::pin::Pin<Box<dyn Future<Output = std::result::Result<Tcp, tower::BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::result::Result<(), Self::Error>> {
        match self {
            MaybeTunnel::Direct(c) => c.poll_ready(cx).map_err(Into::into),
            MaybeTunnel::Tunnel(c) => c.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, dst: http::Uri) -> Self::Future {
        match self {
            MaybeTunnel::Direct(c) => {
                let f = c.call(dst);
                Box::pin(async move { f.await.map_err(Into::into) })
            }
            MaybeTunnel::Tunnel(c) => {
                let f = c.call(dst);
                Box::pin(async move { f.await.map_err(Into::into) })
            }
        }
    }
}

/// A connect and a read timeout, as the SDK asks for a connector.
type Timeouts = (Option<Duration>, Option<Duration>);

/// A pooled hyper client for AWS requests (the SDK's clients' and `ec2`'s).
pub type AwsHttp = hyper_util::client::legacy::Client<TimeoutConnector<HttpsConnector<TcpConnector>>, SdkBody>;

/// The AWS clients' HTTP: one pooled hyper client per distinct timeout settings.
#[derive(Debug, Clone)]
pub struct Aws {
    tls: Arc<rustls::ClientConfig>,
    clients: Arc<Mutex<HashMap<Timeouts, AwsHttp>>>,
}

impl Aws {
    pub fn new() -> Result<Aws> {
        let tls = crate::tls::client_config(crate::tls::roots()?, None)?;
        Ok(Aws { tls: Arc::new(tls), clients: Arc::default() })
    }

    /// The client with these connect and read timeouts (clones share its connections).
    pub fn client(&self, connect: Option<Duration>, read: Option<Duration>) -> AwsHttp {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .entry((connect, read))
            .or_insert_with(|| {
                let https = HttpsConnectorBuilder::new()
                    .with_tls_config((*self.tls).clone())
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(tcp());
                let mut connector = TimeoutConnector::new(https);
                connector.set_connect_timeout(connect);
                connector.set_read_timeout(read);
                hyper_util::client::legacy::Builder::new(TokioExecutor::new())
                    .pool_timer(TokioTimer::new())
                    .build(connector)
            })
            .clone()
    }
}

impl HttpClient for Aws {
    fn http_connector(&self, settings: &HttpConnectorSettings, _components: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(AwsConnector {
            client: self.client(settings.connect_timeout(), settings.read_timeout()),
        })
    }
}

#[derive(Debug, Clone)]
struct AwsConnector {
    client: AwsHttp,
}

impl HttpConnector for AwsConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let request = match request.try_into_http1x() {
            Ok(r) => r,
            Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::user(e.into()))),
        };
        let client = self.client.clone();
        HttpConnectorFuture::new(async move {
            let response = client.request(request).await.map_err(failure_class)?;
            HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                .map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// How retries see a failed request (the SDK's and `ec2`'s): a timeout, an I/O failure
/// (refused, reset, closed early: retried as transient), or something else.
pub fn failure_class(error: hyper_util::client::legacy::Error) -> ConnectorError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    let mut timed_out = false;
    let mut io = error.is_connect();
    while let Some(e) = source {
        if let Some(e) = e.downcast_ref::<std::io::Error>() {
            timed_out |= e.kind() == std::io::ErrorKind::TimedOut;
            io = true;
        }
        if let Some(e) = e.downcast_ref::<hyper::Error>() {
            timed_out |= e.is_timeout();
            io |= e.is_closed() || e.is_incomplete_message() || e.is_canceled();
        }
        source = e.source();
    }
    if timed_out {
        ConnectorError::timeout(error.into())
    } else if io {
        ConnectorError::io(error.into())
    } else {
        ConnectorError::other(error.into(), None)
    }
}
