//! A small HTTP(S) client for the two requests the plugin makes outside the
//! Kubernetes and AWS APIs: fetching the pinned IAM policy document, and
//! probing GraphQL through the ALB. Built on the hyper stack kube already
//! brings, with the same rustls/ring TLS.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::error::{Context, Error, Result};

/// How this tool names itself to every server it talks to.
pub const USER_AGENT: &str = concat!("kubectl-scalardb-graphql/", env!("CARGO_PKG_VERSION"));

pub struct Response {
    pub status: u16,
    pub set_cookies: Vec<String>,
    pub body: Vec<u8>,
}

pub struct HttpClient {
    client: Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl HttpClient {
    pub fn new(timeout: Duration) -> Result<HttpClient> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .context("setting up TLS")?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(HttpClient { client: Client::builder(TokioExecutor::new()).build(connector), timeout })
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
        let mut req = hyper::Request::builder().method(method).uri(url).header("user-agent", USER_AGENT);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let req = req.body(Full::new(Bytes::from(body))).map_err(|e| Error::usage(format!("bad URL {url:?}: {e}")))?;
        let send = async {
            let res = self.client.request(req).await.context(format!("{method} {url}"))?;
            let status = res.status().as_u16();
            let set_cookies = res
                .headers()
                .get_all("set-cookie")
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_string))
                .collect();
            let body =
                res.into_body().collect().await.context(format!("reading the response of {url}"))?.to_bytes().to_vec();
            Ok(Response { status, set_cookies, body })
        };
        tokio::time::timeout(self.timeout, send)
            .await
            .map_err(|_| Error::failed(format!("{method} {url}: no answer within {:?}", self.timeout)))?
    }

    pub async fn get(&self, url: &str) -> Result<Response> {
        self.send("GET", url, None, Vec::new(), None).await
    }
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
    use super::cookie;

    #[test]
    fn the_alb_cookie_is_picked_from_set_cookie_headers() {
        let headers = vec![
            "AWSALBCORS=abc; Path=/; SameSite=None; Secure".to_string(),
            "AWSALB=xyz==; Expires=Tue, 24 May 2022 07:24:06 GMT; Path=/".to_string(),
        ];
        assert_eq!(cookie(&headers, "AWSALB").as_deref(), Some("AWSALB=xyz=="));
        assert_eq!(cookie(&headers, "OTHER"), None);
    }
}
