//! EC2's query API, for the six calls this tool makes: subnets, route
//! tables, their tags, security groups and network interfaces. Each request
//! is a form POST signed with SigV4 from aws-config's credential chain, sent
//! on the AWS transport, bounded and retried as the SDK's other clients are
//! (`Bounds`), and named in flight as they are (`AWS EC2 <Action>`); each
//! answer is read from EC2's XML.
//!
//! Why not the SDK's EC2 crate: for these six operations it was the largest
//! crate of the build, compiled alone on one core for minutes.
//!
//! The endpoint is the SDK's: `AWS_ENDPOINT_URL_EC2`, the profile's `ec2`
//! `endpoint_url`, `AWS_ENDPOINT_URL`, else EC2's regional endpoint of the
//! region's partition (FIPS and dual-stack as configured).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_smithy_types::body::SdkBody;
use http_body_util::BodyExt;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::transport::{AwsHttp, failure_class};

/// The API version every request names.
const VERSION: &str = "2016-11-15";

/// What a query parameter's key and value keep unescaped (RFC 3986's unreserved characters).
const QUERY: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Codes EC2 (and AWS generally) answers when a request is throttled, or failed
/// for a reason a retry can clear: retried, as the SDK's standard strategy retries them.
const RETRIED_CODES: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestThrottled",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
];

/// Bounds of a call: each attempt, the whole call with its retries, how many
/// attempts, and the longest wait between two.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub attempt: Duration,
    pub operation: Duration,
    pub attempts: u32,
    pub max_backoff: Duration,
}

/// Codes of a request refused for its signature, which a clock off by minutes also causes.
const SKEW_CODES: &[&str] =
    &["InvalidSignatureException", "SignatureDoesNotMatch", "AuthFailure", "RequestTimeTooSkewed", "RequestExpired"];
/// A clock this far from EC2's is corrected (requests signed on EC2's time) and the request retried.
const SKEW_THRESHOLD: Duration = Duration::from_secs(4 * 60);

/// Credentials are fetched again this long before they expire (the SDK's identity cache: 10 s).
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(10);

/// An EC2 client; clones share credentials and connections.
#[derive(Clone)]
pub struct Ec2 {
    inner: Arc<Inner>,
}

struct Inner {
    /// The endpoint, or why there is none (no region).
    endpoint: std::result::Result<String, String>,
    region: String,
    provider: Option<SharedCredentialsProvider>,
    credentials: tokio::sync::Mutex<Option<Credentials>>,
    http: AwsHttp,
    bounds: Bounds,
    /// EC2's clock minus this machine's, in milliseconds, as its last answer's `Date` said.
    skew_ms: std::sync::atomic::AtomicI64,
}

/// An EC2 filter: a name (`vpc-id`, `tag:KEY`, …) and the values any of which matches.
#[derive(Debug, Clone)]
pub struct Filter {
    name: String,
    values: Vec<String>,
}

impl Filter {
    pub fn new(name: impl Into<String>, values: impl IntoIterator<Item = impl Into<String>>) -> Filter {
        Filter { name: name.into(), values: values.into_iter().map(Into::into).collect() }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Subnet {
    pub id: String,
    pub zone: String,
    pub vpc: String,
    pub free: i32,
    pub tags: Vec<(String, String)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteTable {
    /// Each route's gateway id, where it has one.
    pub gateways: Vec<String>,
    pub associations: Vec<Association>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Association {
    pub main: bool,
    pub subnet: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SecurityGroup {
    pub id: String,
    pub name: String,
    pub tags: Vec<(String, String)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetworkInterface {
    pub id: String,
    pub groups: Vec<String>,
    pub addresses: Vec<String>,
}

impl Ec2 {
    pub fn new(sdk: &aws_types::SdkConfig, http: AwsHttp, bounds: Bounds) -> Ec2 {
        let region = sdk.region().map(|r| r.to_string()).unwrap_or_default();
        Ec2 {
            inner: Arc::new(Inner {
                endpoint: endpoint(sdk, &region),
                region,
                provider: sdk.credentials_provider(),
                credentials: tokio::sync::Mutex::new(None),
                http,
                bounds,
                skew_ms: std::sync::atomic::AtomicI64::new(0),
            }),
        }
    }

    pub async fn describe_subnets(&self, filters: &[Filter], ids: &[String]) -> anyhow::Result<Vec<Subnet>> {
        let mut params = filter_params(filters);
        params.extend(list_params("SubnetId", ids));
        let items = self.paged("DescribeSubnets", params, "subnetSet").await?;
        Ok(items
            .iter()
            .map(|s| Subnet {
                id: s.text("subnetId"),
                zone: s.text("availabilityZone"),
                vpc: s.text("vpcId"),
                free: s.text("availableIpAddressCount").parse().unwrap_or(0),
                tags: tags(s),
            })
            .collect())
    }

    pub async fn describe_route_tables(&self, filters: &[Filter]) -> anyhow::Result<Vec<RouteTable>> {
        let items = self.paged("DescribeRouteTables", filter_params(filters), "routeTableSet").await?;
        Ok(items
            .iter()
            .map(|t| RouteTable {
                gateways: t.items("routeSet").filter_map(|r| r.child("gatewayId").map(|g| g.text.clone())).collect(),
                associations: t
                    .items("associationSet")
                    .map(|a| Association {
                        main: a.text("main") == "true",
                        subnet: a.child("subnetId").map(|s| s.text.clone()),
                    })
                    .collect(),
            })
            .collect())
    }

    pub async fn describe_security_groups(
        &self,
        filters: &[Filter],
        ids: &[String],
    ) -> anyhow::Result<Vec<SecurityGroup>> {
        let mut params = filter_params(filters);
        params.extend(list_params("GroupId", ids));
        let items = self.paged("DescribeSecurityGroups", params, "securityGroupInfo").await?;
        Ok(items
            .iter()
            .map(|g| SecurityGroup { id: g.text("groupId"), name: g.text("groupName"), tags: tags(g) })
            .collect())
    }

    pub async fn describe_network_interfaces(&self, filters: &[Filter]) -> anyhow::Result<Vec<NetworkInterface>> {
        let items = self.paged("DescribeNetworkInterfaces", filter_params(filters), "networkInterfaceSet").await?;
        Ok(items
            .iter()
            .map(|e| NetworkInterface {
                id: e.text("networkInterfaceId"),
                groups: e.items("groupSet").filter_map(|g| g.child("groupId")).map(|g| g.text.clone()).collect(),
                addresses: e
                    .items("privateIpAddressesSet")
                    .filter_map(|a| a.child("privateIpAddress"))
                    .map(|a| a.text.clone())
                    .collect(),
            })
            .collect())
    }

    /// Adds `tags` (key, value) to each of `resources`.
    pub async fn create_tags(&self, resources: &[String], tags: &[(&str, &str)]) -> anyhow::Result<()> {
        self.call("CreateTags", tag_params(resources, tags)).await.map(drop)
    }

    /// Removes `tags` from each of `resources` (a tag only where its value matches too).
    pub async fn delete_tags(&self, resources: &[String], tags: &[(&str, &str)]) -> anyhow::Result<()> {
        self.call("DeleteTags", tag_params(resources, tags)).await.map(drop)
    }

    /// Every page's items of the set `set`, following `nextToken`.
    async fn paged(&self, action: &str, params: Vec<(String, String)>, set: &str) -> anyhow::Result<Vec<Node>> {
        let mut items = vec![];
        let mut token: Option<String> = None;
        loop {
            let mut page = params.clone();
            if let Some(t) = &token {
                page.push(("NextToken".into(), t.clone()));
            }
            let answer = self.call(action, page).await?;
            items.extend(answer.items(set).cloned());
            // The token just sent, given again, would page forever (the SDK's paginators stop too).
            match answer.child("nextToken").map(|t| t.text.clone()).filter(|t| !t.is_empty()) {
                Some(next) if token.as_ref() != Some(&next) => token = Some(next),
                _ => return Ok(items),
            }
        }
    }

    /// One action, retried within the bounds; its answer's root element.
    async fn call(&self, action: &str, params: Vec<(String, String)>) -> anyhow::Result<Node> {
        let _call = crate::calls::call(format!("AWS EC2 {action}"));
        let bounds = self.inner.bounds;
        let body = query_body(action, &params);
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            let left = bounds.operation.saturating_sub(started.elapsed());
            let outcome = match tokio::time::timeout(left.min(bounds.attempt), self.attempt(&body)).await {
                Ok(outcome) => outcome,
                Err(_) if left <= bounds.attempt => {
                    return Err(anyhow::anyhow!(
                        "EC2 {action} timed out: no answer within {}s, retries included",
                        bounds.operation.as_secs()
                    ));
                }
                Err(_) => Err(Failure::retried(format!("no answer within {}s", bounds.attempt.as_secs()))),
            };
            match outcome {
                Ok(node) => return Ok(node),
                Err(f) if f.retry && attempt < bounds.attempts => {
                    let wait = backoff(attempt, bounds.max_backoff);
                    if started.elapsed() + wait >= bounds.operation {
                        return Err(anyhow::anyhow!(f.line));
                    }
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(f) => return Err(anyhow::anyhow!(f.line)),
            }
        }
    }

    /// One signed request and its answer.
    async fn attempt(&self, body: &str) -> std::result::Result<Node, Failure> {
        let inner = &self.inner;
        let endpoint = inner.endpoint.as_ref().map_err(|why| Failure::fatal(why.clone()))?;
        let credentials = self.credentials().await?;
        let mut request = http::Request::post(endpoint.as_str())
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded; charset=utf-8")
            .header(http::header::USER_AGENT, concat!("kubectl-scalardb-graphql/", env!("CARGO_PKG_VERSION")))
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(SdkBody::from(body.to_string()))
            .map_err(|e| Failure::fatal(format!("the EC2 endpoint {endpoint} cannot be used: {e}")))?;
        if let Some(host) = request.uri().authority().map(|a| a.to_string()) {
            let value = http::HeaderValue::from_str(&host).map_err(|e| Failure::fatal(e.to_string()))?;
            request.headers_mut().insert(http::header::HOST, value);
        }
        let used_skew = inner.skew_ms.load(std::sync::atomic::Ordering::Relaxed);
        let sent = SystemTime::now();
        sign(&mut request, body, &credentials, &inner.region, shifted(sent, used_skew))?;
        let response = inner.http.request(request).await.map_err(|e| {
            let class = failure_class(e);
            let retry = class.is_timeout() || class.is_io();
            Failure { line: crate::error::causes(&class), retry }
        })?;
        let status = response.status();
        let skew = server_skew(response.headers(), sent);
        if let Some(ms) = skew {
            inner.skew_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
        }
        let request_id = response
            .headers()
            .get("x-amzn-requestid")
            .or_else(|| response.headers().get("x-amz-request-id"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| Failure::retried(format!("reading EC2's answer: {e}")))?
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        if status.is_success() {
            return parse(&text).map_err(|e| Failure::fatal(format!("EC2's answer cannot be read: {e}")));
        }
        let mut failure = Failure::of_answer(status.as_u16(), &text, request_id);
        // Refused for a clock off by minutes: signed again on EC2's time.
        if let Some(ms) = skew
            && SKEW_CODES.iter().any(|c| failure.line.starts_with(&format!("{c}:")) || failure.line == *c)
            && Duration::from_millis(ms.unsigned_abs()) >= SKEW_THRESHOLD
            && Duration::from_millis(ms.abs_diff(used_skew)) >= SKEW_THRESHOLD
        {
            failure.retry = true;
        }
        Err(failure)
    }

    /// The credentials, from the chain once and again when they near their expiry.
    async fn credentials(&self) -> std::result::Result<Credentials, Failure> {
        let mut cached = self.inner.credentials.lock().await;
        if let Some(c) = cached.as_ref()
            && c.expiry().is_none_or(|at| at > SystemTime::now() + REFRESH_BEFORE_EXPIRY)
        {
            return Ok(c.clone());
        }
        let provider = self.inner.provider.as_ref().ok_or_else(|| {
            Failure::fatal("no AWS credentials: none of the environment, the profile or SSO gives any".to_string())
        })?;
        let fresh = provider
            .provide_credentials()
            .await
            .map_err(|e| Failure::fatal(format!("no AWS credentials: {}", crate::error::causes(&e))))?;
        *cached = Some(fresh.clone());
        Ok(fresh)
    }
}

/// Why an attempt failed: one line, and whether another attempt may succeed.
#[derive(Debug)]
struct Failure {
    line: String,
    retry: bool,
}

impl Failure {
    fn fatal(line: String) -> Failure {
        Failure { line, retry: false }
    }
    fn retried(line: String) -> Failure {
        Failure { line, retry: true }
    }

    /// An error answer: EC2's code, message and request id, as the SDK's errors are shown
    /// (`error::aws`); an answer with no code (a proxy's page) by its status.
    fn of_answer(status: u16, body: &str, header_id: Option<String>) -> Failure {
        let doc = parse(body).ok();
        let error = doc.as_ref().and_then(|d| d.child("Errors")).and_then(|e| e.child("Error"));
        let request_id = doc.as_ref().and_then(|d| d.child("RequestID")).map(|n| n.text.clone()).or(header_id);
        let transient_status = matches!(status, 500 | 502 | 503 | 504);
        match error.map(|e| (e.text("Code"), e.text("Message"))) {
            Some((code, message)) if !code.is_empty() => {
                let mut line = if message.is_empty() { code.clone() } else { format!("{code}: {message}") };
                if let Some(id) = request_id {
                    line.push_str(&format!(" (request id {id})"));
                }
                Failure { line, retry: transient_status || RETRIED_CODES.contains(&code.as_str()) }
            }
            _ => {
                let id = request_id.map(|id| format!(", request id {id}")).unwrap_or_default();
                Failure {
                    line: format!("EC2 answered without an error code (HTTP {status}{id})"),
                    retry: transient_status,
                }
            }
        }
    }
}

/// The wait before attempt `attempt + 1`: exponential from one second, capped at
/// `max`, then with full jitter (the SDK's standard strategy).
fn backoff(attempt: u32, max: Duration) -> Duration {
    let exponential = Duration::from_secs(1).saturating_mul(1u32 << (attempt - 1).min(16));
    exponential.min(max).mul_f64(fastrand::f64())
}

/// `time` moved by `skew_ms` milliseconds.
fn shifted(time: SystemTime, skew_ms: i64) -> SystemTime {
    let by = Duration::from_millis(skew_ms.unsigned_abs());
    if skew_ms >= 0 { time + by } else { time.checked_sub(by).unwrap_or(time) }
}

/// EC2's clock minus this machine's (ms), from an answer's `Date` to a request sent at `sent`
/// (the answer dated at the round trip's midpoint); None without a usable `Date`.
fn server_skew(headers: &http::HeaderMap, sent: SystemTime) -> Option<i64> {
    use aws_smithy_types::date_time::{DateTime, Format};
    let date = DateTime::from_str(headers.get(http::header::DATE)?.to_str().ok()?, Format::HttpDate).ok()?;
    let server = SystemTime::try_from(date).ok()?;
    let midpoint = sent + SystemTime::now().duration_since(sent).unwrap_or_default() / 2;
    Some(match server.duration_since(midpoint) {
        Ok(ahead) => i64::try_from(ahead.as_millis()).ok()?,
        Err(behind) => -i64::try_from(behind.duration().as_millis()).ok()?,
    })
}

/// Signs `request` (its method, URI, Host and body) for EC2 in `region`, at `time`.
fn sign(
    request: &mut http::Request<SdkBody>,
    body: &str,
    credentials: &Credentials,
    region: &str,
    time: SystemTime,
) -> std::result::Result<(), Failure> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let identity = credentials.clone().into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("ec2")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| Failure::fatal(format!("signing the EC2 request: {e}")))?
        .into();
    let headers: Vec<(&str, &str)> =
        request.headers().iter().filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))).collect();
    let uri = request.uri().to_string();
    let signable = SignableRequest::new("POST", uri, headers.into_iter(), SignableBody::Bytes(body.as_bytes()))
        .map_err(|e| Failure::fatal(format!("signing the EC2 request: {e}")))?;
    let (instructions, _) =
        sign(signable, &params).map_err(|e| Failure::fatal(format!("signing the EC2 request: {e}")))?.into_parts();
    instructions.apply_to_request_http1x(request);
    Ok(())
}

/// The endpoint the SDK would use for EC2, or why there is none.
fn endpoint(sdk: &aws_types::SdkConfig, region: &str) -> std::result::Result<String, String> {
    let configured = sdk
        .service_config()
        .and_then(|c| {
            let key = aws_types::service_config::ServiceConfigKey::builder()
                .service_id("EC2")
                .env("AWS_ENDPOINT_URL")
                .profile("endpoint_url")
                .build()
                .ok()?;
            c.load_config(key)
        })
        .or_else(|| sdk.endpoint_url().map(str::to_string));
    let (fips, dual_stack) = (sdk.use_fips() == Some(true), sdk.use_dual_stack() == Some(true));
    if region.is_empty() {
        return Err("no AWS region: pass --region or set AWS_REGION".to_string());
    }
    match configured {
        Some(_) if fips => Err("FIPS endpoints and a configured endpoint URL cannot be used together: \
            unset AWS_USE_FIPS_ENDPOINT or the endpoint URL"
            .to_string()),
        Some(_) if dual_stack => Err("dual-stack endpoints and a configured endpoint URL cannot be used \
            together: unset AWS_USE_DUALSTACK_ENDPOINT or the endpoint URL"
            .to_string()),
        Some(url) => Ok(if url.ends_with('/') { url } else { format!("{url}/") }),
        None => Ok(regional(region, fips, dual_stack)),
    }
}

/// EC2's regional endpoint in the region's partition (GovCloud's plain endpoint is its FIPS one).
fn regional(region: &str, fips: bool, dual_stack: bool) -> String {
    let govcloud_plain = region.starts_with("us-gov-") && !dual_stack;
    let fips = fips && !govcloud_plain;
    let (suffix, dual_suffix) = if region.starts_with("cn-") {
        ("amazonaws.com.cn", "api.amazonwebservices.com.cn")
    } else if region.starts_with("us-isob-") {
        ("sc2s.sgov.gov", "sc2s.sgov.gov")
    } else if region.starts_with("us-iso-") {
        ("c2s.ic.gov", "c2s.ic.gov")
    } else {
        ("amazonaws.com", "api.aws")
    };
    let service = if fips { "ec2-fips" } else { "ec2" };
    let domain = if dual_stack { dual_suffix } else { suffix };
    format!("https://{service}.{region}.{domain}/")
}

fn query_body(action: &str, params: &[(String, String)]) -> String {
    let mut body = format!("Action={action}&Version={VERSION}");
    for (k, v) in params {
        body.push('&');
        body.extend(utf8_percent_encode(k, QUERY));
        body.push('=');
        body.extend(utf8_percent_encode(v, QUERY));
    }
    body
}

fn filter_params(filters: &[Filter]) -> Vec<(String, String)> {
    let mut out = vec![];
    for (i, f) in filters.iter().enumerate() {
        out.push((format!("Filter.{}.Name", i + 1), f.name.clone()));
        for (j, v) in f.values.iter().enumerate() {
            out.push((format!("Filter.{}.Value.{}", i + 1, j + 1), v.clone()));
        }
    }
    out
}

fn list_params(name: &str, values: &[String]) -> Vec<(String, String)> {
    values.iter().enumerate().map(|(i, v)| (format!("{name}.{}", i + 1), v.clone())).collect()
}

fn tag_params(resources: &[String], tags: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out = list_params("ResourceId", resources);
    for (i, (k, v)) in tags.iter().enumerate() {
        out.push((format!("Tag.{}.Key", i + 1), k.to_string()));
        out.push((format!("Tag.{}.Value", i + 1), v.to_string()));
    }
    out
}

fn tags(node: &Node) -> Vec<(String, String)> {
    node.items("tagSet").map(|t| (t.text("key"), t.text("value"))).collect()
}

/// An XML element: its local name, its text, its child elements.
#[derive(Debug, Clone, Default)]
struct Node {
    name: String,
    text: String,
    children: Vec<Node>,
}

impl Node {
    fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }
    /// The text of child `name`, empty when there is none.
    fn text(&self, name: &str) -> String {
        self.child(name).map(|c| c.text.clone()).unwrap_or_default()
    }
    /// The `item`s of the set `name`.
    fn items<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a Node> + 'a {
        self.child(name).into_iter().flat_map(|s| s.children.iter().filter(|c| c.name == "item"))
    }
}

/// The root element of an XML document (declarations, comments and attributes skipped).
fn parse(text: &str) -> std::result::Result<Node, String> {
    let mut stack: Vec<Node> = vec![Node::default()];
    let mut rest = text;
    while let Some(at) = rest.find('<') {
        let between = &rest[..at];
        if stack.len() > 1 {
            let text = unescape(between)?;
            stack.last_mut().expect("an open element").text.push_str(&text);
        }
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.split_once("-->").ok_or("an unterminated comment")?.1;
        } else if let Some(after) = rest.strip_prefix("<![CDATA[") {
            let (data, after) = after.split_once("]]>").ok_or("an unterminated CDATA section")?;
            if let Some(top) = stack.last_mut() {
                top.text.push_str(data);
            }
            rest = after;
        } else if rest.starts_with("<?") || rest.starts_with("<!") {
            rest = rest.split_once('>').ok_or("an unterminated declaration")?.1;
        } else if let Some(after) = rest.strip_prefix("</") {
            let (name, after) = after.split_once('>').ok_or("an unterminated end tag")?;
            let node = stack.pop().filter(|_| !stack.is_empty()).ok_or("an end tag with no start")?;
            if local(name.trim()) != node.name {
                return Err(format!("</{}> ends <{}>", name.trim(), node.name));
            }
            stack.last_mut().expect("the document").children.push(node);
            rest = after;
        } else {
            let (tag, after) = rest[1..].split_once('>').ok_or("an unterminated start tag")?;
            let empty = tag.ends_with('/');
            let name = local(tag.trim_end_matches('/').split_whitespace().next().unwrap_or_default()).to_string();
            let node = Node { name, ..Node::default() };
            if empty {
                stack.last_mut().expect("the document").children.push(node);
            } else {
                stack.push(node);
            }
            rest = after;
        }
    }
    if stack.len() != 1 {
        return Err("the document ends inside an element".to_string());
    }
    stack.pop().and_then(|d| d.children.into_iter().next()).ok_or_else(|| "no element".to_string())
}

/// A name without its namespace prefix.
fn local(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

/// Text with XML's character references resolved.
fn unescape(text: &str) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let (entity, after) = rest[at + 1..].split_once(';').ok_or("an unterminated character reference")?;
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = match entity.strip_prefix("#x").or_else(|| entity.strip_prefix("#X")) {
                    Some(hex) => u32::from_str_radix(hex, 16).ok(),
                    None => entity.strip_prefix('#').and_then(|d| d.parse().ok()),
                };
                code.and_then(char::from_u32).ok_or_else(|| format!("an unknown character reference &{entity};"))?
            }
        };
        out.push(c);
        rest = after;
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_body_escapes_keys_and_values_and_numbers_lists_from_one() {
        let mut params = filter_params(&[Filter::new("tag:elbv2.k8s.aws/cluster", ["a b", "c&d"])]);
        params.extend(list_params("SubnetId", &["subnet-1".into(), "subnet-2".into()]));
        assert_eq!(
            query_body("DescribeSubnets", &params),
            "Action=DescribeSubnets&Version=2016-11-15&Filter.1.Name=tag%3Aelbv2.k8s.aws%2Fcluster\
             &Filter.1.Value.1=a%20b&Filter.1.Value.2=c%26d&SubnetId.1=subnet-1&SubnetId.2=subnet-2"
        );
        let tags = tag_params(&["subnet-1".into()], &[("kubernetes.io/role/internal-elb", "1")]);
        assert_eq!(tags[1], ("Tag.1.Key".to_string(), "kubernetes.io/role/internal-elb".to_string()));
        assert_eq!(tags[2], ("Tag.1.Value".to_string(), "1".to_string()));
    }

    #[test]
    fn an_answer_is_read_by_its_sets_items_and_escapes() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeSubnetsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>r-1</requestId>
  <subnetSet>
    <item><subnetId>subnet-1</subnetId><availabilityZone>us-east-1a</availabilityZone>
      <availableIpAddressCount>250</availableIpAddressCount><vpcId>vpc-1</vpcId>
      <tagSet><item><key>Name</key><value>a &amp; b &#x41;</value></item></tagSet><ipv6CidrBlockAssociationSet/>
    </item>
    <!-- a comment -->
    <item><subnetId>subnet-2</subnetId><tagSet/></item>
  </subnetSet>
  <nextToken>t2</nextToken>
</DescribeSubnetsResponse>"#;
        let root = parse(xml).unwrap();
        assert_eq!(root.name, "DescribeSubnetsResponse");
        let items: Vec<_> = root.items("subnetSet").collect();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].text("availableIpAddressCount"), "250");
        assert_eq!(tags(items[0]), vec![("Name".to_string(), "a & b A".to_string())]);
        assert_eq!(tags(items[1]), vec![]);
        assert_eq!(root.text("nextToken"), "t2");
        assert!(parse("<a><b></a>").is_err());
        assert!(parse("<a>").is_err());
    }

    #[test]
    fn an_error_answer_is_one_line_and_retried_only_when_a_retry_can_clear_it() {
        let throttled = "<?xml version=\"1.0\"?>\n<Response><Errors><Error><Code>RequestLimitExceeded</Code>\
            <Message>Request limit exceeded.</Message></Error></Errors><RequestID>id-1</RequestID></Response>";
        let f = Failure::of_answer(503, throttled, None);
        assert_eq!(f.line, "RequestLimitExceeded: Request limit exceeded. (request id id-1)");
        assert!(f.retry);
        let refused = "<Response><Errors><Error><Code>UnauthorizedOperation</Code><Message>You are not \
            authorized to perform this operation.</Message></Error></Errors><RequestID>id-2</RequestID></Response>";
        let f = Failure::of_answer(403, refused, None);
        assert!(f.line.starts_with("UnauthorizedOperation: You are not authorized") && !f.retry, "{f:?}");
        let f = Failure::of_answer(502, "<html>bad gateway</html>", Some("h-1".into()));
        assert_eq!(f.line, "EC2 answered without an error code (HTTP 502, request id h-1)");
        assert!(f.retry);
        assert!(!Failure::of_answer(400, "not xml <", None).retry);
    }

    #[test]
    fn the_endpoint_is_the_regions_partitions_with_fips_and_dual_stack() {
        assert_eq!(regional("eu-west-1", false, false), "https://ec2.eu-west-1.amazonaws.com/");
        assert_eq!(regional("us-gov-west-1", true, false), "https://ec2.us-gov-west-1.amazonaws.com/");
        assert_eq!(regional("us-gov-east-1", true, true), "https://ec2-fips.us-gov-east-1.api.aws/");
        assert_eq!(regional("us-iso-east-1", true, false), "https://ec2-fips.us-iso-east-1.c2s.ic.gov/");
        assert_eq!(regional("cn-north-1", false, false), "https://ec2.cn-north-1.amazonaws.com.cn/");
        assert_eq!(regional("us-east-2", true, true), "https://ec2-fips.us-east-2.api.aws/");
    }

    #[test]
    fn a_skewed_clock_is_measured_from_the_answers_date_and_corrected_by_it() {
        let mut headers = http::HeaderMap::new();
        let sent = SystemTime::now();
        assert_eq!(server_skew(&headers, sent), None);
        // An answer dated ten minutes after it was sent (the round trip here: about nothing).
        use aws_smithy_types::date_time::{DateTime, Format};
        let ahead = DateTime::from(sent + Duration::from_secs(600)).fmt(Format::HttpDate).unwrap();
        headers.insert(http::header::DATE, ahead.parse().unwrap());
        let skew = server_skew(&headers, sent).unwrap();
        // The Date header has whole seconds.
        assert!((599_000..=600_500).contains(&skew), "{skew}");
        assert_eq!(shifted(sent, 600_000), sent + Duration::from_secs(600));
        assert_eq!(shifted(sent, -600_000), sent - Duration::from_secs(600));
    }

    #[test]
    fn backoff_grows_from_one_second_within_its_cap() {
        for attempt in 1..12 {
            let wait = backoff(attempt, Duration::from_secs(10));
            assert!(wait <= Duration::from_secs(10).min(Duration::from_secs(1 << (attempt - 1))), "{wait:?}");
        }
    }
}
