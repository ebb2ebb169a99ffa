//! A small HTTP(S) client for the two requests the plugin makes outside the
//! Kubernetes and AWS APIs: fetching the pinned IAM policy document, and
//! probing GraphQL through the ALB from this machine. Built on hyper's
//! one-connection client on the plugin's one TLS setup (`tls`).
//!
//! Like curl, it honours the proxy environment (`https_proxy`/`HTTPS_PROXY`,
//! `http_proxy`/`HTTP_PROXY`, `all_proxy`/`ALL_PROXY`, `no_proxy`/`NO_PROXY`):
//! https goes through a CONNECT tunnel, plain http in absolute form. Like
//! curl, `SSL_CERT_FILE` replaces the built-in CA roots (a TLS-inspecting
//! proxy's CA). A body is read up to `BODY_LIMIT` and refused beyond it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{Context, Error, Result};

/// How this tool names itself to every server it talks to.
pub const USER_AGENT: &str = concat!("kubectl-scalardb-graphql/", env!("CARGO_PKG_VERSION"));

/// The largest body read: the policy document is about 9 KB, a GraphQL answer
/// of the probe far less; anything beyond this is not what was asked for.
pub const BODY_LIMIT: usize = 1 << 20;

pub struct Response {
    pub status: u16,
    pub set_cookies: Vec<String>,
    pub body: Vec<u8>,
}

pub struct HttpClient {
    tls: tokio_rustls::TlsConnector,
    timeout: Duration,
    proxies: ProxyEnv,
}

/// The proxy settings from the environment, read once.
#[derive(Debug, Clone, Default)]
pub struct ProxyEnv {
    http: Option<String>,
    https: Option<String>,
    no_proxy: Option<String>,
}

impl ProxyEnv {
    /// curl's order: the lower-case name first, then the upper-case one, then `all_proxy`.
    pub fn from_env() -> ProxyEnv {
        Self::from(|name: &str| std::env::var(name).ok())
    }

    fn from(get: impl Fn(&str) -> Option<String>) -> ProxyEnv {
        let first = |names: &[&str]| names.iter().find_map(|n| get(n).filter(|v| !v.trim().is_empty()));
        let all = first(&["all_proxy", "ALL_PROXY"]);
        ProxyEnv {
            http: first(&["http_proxy", "HTTP_PROXY"]).or_else(|| all.clone()),
            https: first(&["https_proxy", "HTTPS_PROXY"]).or(all),
            no_proxy: first(&["no_proxy", "NO_PROXY"]),
        }
    }

    /// The proxy for a request to `host` by `scheme`, unless NO_PROXY exempts it.
    pub fn for_target(&self, scheme: &str, host: &str) -> Option<&str> {
        let proxy = if scheme == "https" { self.https.as_deref() } else { self.http.as_deref() }?;
        if self.no_proxy.as_deref().is_some_and(|list| no_proxy_matches(list, host)) {
            return None;
        }
        Some(proxy)
    }
}

/// Whether a NO_PROXY list exempts `host`, as curl reads it: entries
/// separated by commas (and spaces); `*` alone exempts every host; an entry
/// exempts the host equal to it and every host under it as a domain (a
/// leading dot changes nothing: `example.com` and `.example.com` both exempt
/// `api.example.com`, neither exempts `badexample.com`); names compare without
/// case; an IP address is matched by an equal address or a CIDR range
/// (`127.0.0.0/8`), never as a suffix (IPv6 with or without brackets); a
/// `:port` on an entry is ignored.
pub fn no_proxy_matches(list: &str, host: &str) -> bool {
    let host = normalise(host);
    if host.is_empty() {
        return false;
    }
    let address = host.parse::<IpAddr>().ok();
    list.split(|c: char| c == ',' || c.is_whitespace()).map(str::trim).filter(|e| !e.is_empty()).any(|entry| {
        if entry == "*" {
            return true;
        }
        let entry = normalise(strip_port(entry));
        if let Some(ip) = address {
            return in_range(ip, &entry);
        }
        let entry = entry.trim_start_matches('.');
        !entry.is_empty()
            && (host == entry
                || (host.len() > entry.len()
                    && host.ends_with(entry)
                    && host.as_bytes()[host.len() - entry.len() - 1] == b'.'))
    })
}

/// Whether `ip` is the address `entry`, or inside the range `entry` (`net/bits`).
fn in_range(ip: IpAddr, entry: &str) -> bool {
    let (net, bits) = match entry.split_once('/') {
        Some((net, bits)) => match bits.parse::<u32>() {
            Ok(bits) => (net, Some(bits)),
            Err(_) => return false,
        },
        None => (entry, None),
    };
    let Ok(net) = normalise(net).parse::<IpAddr>() else { return false };
    let prefix = |a: u128, b: u128, width: u32, bits: u32| {
        let bits = bits.min(width);
        bits == 0 || (a ^ b) >> (width - bits) == 0
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => prefix(u32::from(a).into(), u32::from(b).into(), 32, bits.unwrap_or(32)),
        (IpAddr::V6(a), IpAddr::V6(b)) => prefix(u128::from(a), u128::from(b), 128, bits.unwrap_or(128)),
        _ => false,
    }
}

/// Lower case, without IPv6 brackets or a trailing dot.
fn normalise(host: &str) -> String {
    host.trim().trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase()
}

/// `host:port` → `host`; a bare IPv6 address keeps its colons.
fn strip_port(entry: &str) -> &str {
    if let Some(rest) = entry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match entry.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => entry,
    }
}

/// A proxy URL as curl takes it: `http://[user:password@]host[:port]`, the scheme optional.
#[derive(Debug, PartialEq, Eq)]
struct Proxy {
    host: String,
    port: u16,
    /// `user:password`, percent-decoded, for Proxy-Authorization: Basic.
    credentials: Option<String>,
}

fn parse_proxy(text: &str) -> std::result::Result<Proxy, String> {
    let text = text.trim();
    let rest = match text.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) => {
            return Err(format!("proxy {text:?}: only http:// proxies are supported, not {scheme}://"));
        }
        None => text,
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let (credentials, hostport) = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => {
            let decoded = percent_encoding::percent_decode_str(userinfo).decode_utf8_lossy().into_owned();
            (Some(decoded), hostport)
        }
        None => (None, authority),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| format!("proxy {text:?}: unclosed '['"))?;
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostport.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(format!("proxy {text:?} names no host"));
    }
    // curl's default proxy port.
    let port = match port {
        Some(p) => p.parse().map_err(|_| format!("proxy {text:?}: bad port {p:?}"))?,
        None => 1080,
    };
    Ok(Proxy { host, port, credentials })
}

/// Anything the request can run over: plain TCP or TLS over TCP (through a tunnel or not).
trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

impl HttpClient {
    pub fn new(timeout: Duration) -> Result<HttpClient> {
        let config = crate::tls::client_config(crate::tls::roots()?, None)?;
        Ok(HttpClient {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            timeout,
            proxies: ProxyEnv::from_env(),
        })
    }

    /// One request; `cookie` is sent as the Cookie header when given.
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
        cookie: Option<&str>,
    ) -> Result<Response> {
        let uri: Uri = url.parse().map_err(|e| Error::usage(format!("bad URL {url:?}: {e}")))?;
        let _waiting = crate::calls::call(format!("{} ({method})", crate::redaction::without_credentials(url)));
        let scheme = uri.scheme_str().unwrap_or("http").to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(Error::usage(format!("bad URL {url:?}: only http and https are supported")));
        }
        let host = uri.host().ok_or_else(|| Error::usage(format!("bad URL {url:?}: no host")))?.to_string();
        let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
        let proxy = match self.proxies.for_target(&scheme, &host) {
            Some(p) => Some(parse_proxy(p).map_err(|e| Error::usage(e).hint("fix or unset the proxy variable"))?),
            None => None,
        };
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
        // Through a proxy, plain http is asked in absolute form; everything else in origin form.
        let target = if proxy.is_some() && scheme == "http" { url.to_string() } else { path };
        let authority = uri.authority().map(|a| a.as_str().to_string()).unwrap_or_else(|| host.clone());
        let mut req =
            Request::builder().method(method).uri(target).header("host", authority).header("user-agent", USER_AGENT);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        if let (Some(p), "http") = (&proxy, scheme.as_str())
            && let Some(creds) = &p.credentials
        {
            req = req.header("proxy-authorization", basic(creds));
        }
        let req = req.body(Full::new(Bytes::from(body))).map_err(|e| Error::usage(format!("bad URL {url:?}: {e}")))?;
        let exchange = async {
            let stream = self.connect(&scheme, &host, port, proxy.as_ref()).await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.context(format!("{method} {url}"))?;
            let driver = tokio::spawn(conn);
            let res = sender.send_request(req).await.context(format!("{method} {url}"));
            let result = match res {
                Ok(res) => read_response(res, method, url).await,
                Err(e) => Err(e),
            };
            driver.abort();
            result
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| Error::failed(format!("{method} {url}: no answer within {:?}", self.timeout)))?
    }

    /// A connection to the target: directly, or to the proxy (tunnelled for https).
    async fn connect(&self, scheme: &str, host: &str, port: u16, proxy: Option<&Proxy>) -> Result<Box<dyn Stream>> {
        let tcp = match proxy {
            Some(p) => TcpStream::connect((p.host.as_str(), p.port))
                .await
                .context(format!("connecting to the proxy {}:{}", p.host, p.port))?,
            None => TcpStream::connect((host, port)).await.context(format!("connecting to {host}:{port}"))?,
        };
        let _ = tcp.set_nodelay(true);
        if scheme != "https" {
            return Ok(Box::new(tcp));
        }
        let tcp = match proxy {
            Some(p) => tunnel(tcp, p, host, port).await?,
            None => tcp,
        };
        let name = rustls::pki_types::ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
            .map_err(|e| Error::usage(format!("bad TLS server name {host:?}: {e}")))?
            .to_owned();
        let tls = self.tls.connect(name, tcp).await.context(format!("TLS with {host}:{port}"))?;
        Ok(Box::new(tls))
    }

    pub async fn get(&self, url: &str) -> Result<Response> {
        self.send("GET", url, None, Vec::new(), None).await
    }
}

fn basic(credentials: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(credentials))
}

/// Asks the proxy for a tunnel to `host:port` (HTTP CONNECT); the stream then carries TLS end to end.
async fn tunnel(mut tcp: TcpStream, proxy: &Proxy, host: &str, port: u16) -> Result<TcpStream> {
    let target = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut ask = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: {USER_AGENT}\r\n");
    if let Some(creds) = &proxy.credentials {
        ask.push_str(&format!("Proxy-Authorization: {}\r\n", basic(creds)));
    }
    ask.push_str("\r\n");
    let via = format!("the proxy {}:{}", proxy.host, proxy.port);
    tcp.write_all(ask.as_bytes()).await.context(format!("asking {via} for a tunnel to {target}"))?;
    // The proxy's answer, read a byte at a time so that nothing of the tunnel is consumed.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tcp.read(&mut byte).await.context(format!("reading the answer of {via}"))?;
        if n == 0 {
            return Err(Error::failed(format!("{via} closed the connection instead of a tunnel to {target}")));
        }
        head.push(byte[0]);
        if head.len() > 16 * 1024 {
            return Err(Error::failed(format!("{via} answered CONNECT {target} with an endless header")));
        }
    }
    let head = String::from_utf8_lossy(&head);
    let status_line = head.lines().next().unwrap_or_default().trim().to_string();
    let code = status_line.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok());
    match code {
        Some(200..=299) => Ok(tcp),
        _ => Err(Error::failed(format!("{via} refused a tunnel to {target}: {status_line}"))),
    }
}

async fn read_response(res: hyper::Response<hyper::body::Incoming>, method: &str, url: &str) -> Result<Response> {
    let status = res.status().as_u16();
    let set_cookies =
        res.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok().map(str::to_string)).collect();
    let too_large = || {
        Error::failed(format!(
            "{method} {url}: the response body is larger than {} KiB, more than this tool reads; refused",
            BODY_LIMIT / 1024
        ))
    };
    // Refused at once when the server says how much it will send.
    let announced = res.headers().get("content-length").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Err(too_large());
    }
    let body = match Limited::new(res.into_body(), BODY_LIMIT).collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(e) => return Err(Error::Other(anyhow::anyhow!("reading the response of {url}: {e}"))),
    };
    Ok(Response { status, set_cookies, body })
}

/// `NAME=value` of the first Set-Cookie with that name.
pub fn cookie(set_cookies: &[String], name: &str) -> Option<String> {
    set_cookies.iter().find_map(|c| {
        let pair = c.split(';').next()?.trim();
        let (n, _) = pair.split_once('=')?;
        (n == name).then(|| pair.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alb_cookie_is_picked_from_set_cookie_headers() {
        let headers = vec![
            "AWSALBCORS=abc; Path=/; SameSite=None; Secure".to_string(),
            "AWSALB=xyz==; Expires=Tue, 24 May 2022 07:24:06 GMT; Path=/".to_string(),
        ];
        assert_eq!(cookie(&headers, "AWSALB").as_deref(), Some("AWSALB=xyz=="));
        assert_eq!(cookie(&headers, "OTHER"), None);
    }

    #[test]
    fn no_proxy_exempts_a_host_and_the_domain_under_it() {
        for list in ["example.com", ".example.com", "EXAMPLE.com", "other.org, example.com", "other.org example.com"] {
            assert!(no_proxy_matches(list, "example.com"), "{list}");
            assert!(no_proxy_matches(list, "api.example.com"), "{list}");
            assert!(no_proxy_matches(list, "Deep.API.example.com."), "{list}");
            assert!(!no_proxy_matches(list, "badexample.com"), "{list}");
            assert!(!no_proxy_matches(list, "example.com.evil.org"), "{list}");
            assert!(!no_proxy_matches(list, "com"), "{list}");
        }
    }

    #[test]
    fn no_proxy_star_exempts_everything_and_an_empty_list_nothing() {
        assert!(no_proxy_matches("*", "raw.githubusercontent.com"));
        assert!(no_proxy_matches("a.org, *", "127.0.0.1"));
        assert!(!no_proxy_matches("", "example.com"));
        assert!(!no_proxy_matches(" , ,", "example.com"));
        // A star inside an entry is not a wildcard, as in curl.
        assert!(!no_proxy_matches("*.example.com", "api.example.com"));
    }

    #[test]
    fn no_proxy_matches_addresses_as_written_and_ignores_ports() {
        assert!(no_proxy_matches("127.0.0.1", "127.0.0.1"));
        assert!(!no_proxy_matches("127.0.0.1", "127.0.0.2"));
        assert!(!no_proxy_matches("0.0.1", "127.0.0.1"), "an address is not a domain suffix");
        assert!(no_proxy_matches("::1", "[::1]"));
        assert!(no_proxy_matches("[::1]", "::1"));
        assert!(no_proxy_matches("[::1]:8080", "[::1]"));
        assert!(no_proxy_matches("example.com:443", "api.example.com"));
        assert!(no_proxy_matches("localhost", "LOCALHOST"));
    }

    #[test]
    fn no_proxy_ranges_exempt_the_addresses_inside_them() {
        assert!(no_proxy_matches("127.0.0.0/8", "127.1.2.3"));
        assert!(!no_proxy_matches("127.0.0.0/8", "128.0.0.1"));
        assert!(no_proxy_matches("10.0.0.0/8, 192.168.0.0/16", "192.168.7.7"));
        assert!(no_proxy_matches("0.0.0.0/0", "8.8.8.8"));
        assert!(no_proxy_matches("fd00::/8", "[fd12::1]"));
        assert!(!no_proxy_matches("fd00::/8", "fe80::1"));
        assert!(!no_proxy_matches("127.0.0.0/8", "localhost"), "a range exempts addresses, not names");
        assert!(!no_proxy_matches("127.0.0.0/x", "127.0.0.1"));
    }

    #[test]
    fn proxies_come_from_the_environment_in_curls_order() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            ProxyEnv::from(move |n: &str| pairs.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_string()))
        };
        let e = env(&[("HTTPS_PROXY", "http://upper:1"), ("https_proxy", "http://lower:2"), ("HTTP_PROXY", "h:3")]);
        assert_eq!(e.for_target("https", "example.com"), Some("http://lower:2"));
        assert_eq!(e.for_target("http", "example.com"), Some("h:3"));
        let e = env(&[("ALL_PROXY", "http://all:4"), ("NO_PROXY", ".internal")]);
        assert_eq!(e.for_target("https", "a.example.com"), Some("http://all:4"));
        assert_eq!(e.for_target("https", "db.internal"), None);
        let e = env(&[("HTTPS_PROXY", "http://p:5"), ("no_proxy", "*"), ("NO_PROXY", "other")]);
        assert_eq!(e.for_target("https", "example.com"), None, "no_proxy wins over NO_PROXY");
        assert_eq!(env(&[("HTTPS_PROXY", " ")]).for_target("https", "example.com"), None);
        assert_eq!(env(&[]).for_target("http", "example.com"), None);
    }

    #[test]
    fn proxy_urls_parse_as_curl_takes_them() {
        assert_eq!(
            parse_proxy("http://proxy.corp:3128").unwrap(),
            Proxy { host: "proxy.corp".into(), port: 3128, credentials: None }
        );
        assert_eq!(parse_proxy("proxy.corp").unwrap().port, 1080);
        assert_eq!(
            parse_proxy("HTTP://[::1]:8080/").unwrap(),
            Proxy { host: "::1".into(), port: 8080, credentials: None }
        );
        assert_eq!(parse_proxy("http://u%40x:p%3Aw@h:1").unwrap().credentials.as_deref(), Some("u@x:p:w"));
        assert!(parse_proxy("socks5://h:1").unwrap_err().contains("only http://"));
        assert!(parse_proxy("http://h:port").is_err());
        assert!(parse_proxy("http://:8080").is_err());
    }
}
