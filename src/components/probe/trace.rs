//! What a probe saw, and the one judgement of it. The exchanges are the same
//! wherever the probe ran — from this machine (`local`, below) or from a Pod
//! (`probe.py`, read back from its log) — and `judge` turns them into the
//! checks: `probe.typename`, `probe.sticky` and, for ScalarDB Cluster,
//! `probe.routing` (a transaction without the cookie, which the nodes route
//! to the node that holds it).

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::component::{Category, Check};
use crate::http::{self, HttpClient};

const C: Category = Category::Probe;

/// One request of the probe and what came back.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Exchange {
    /// `typename`, `start`, `continue-N` or `commit`.
    pub step: String,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub body: String,
    /// An AWSALB cookie was set.
    #[serde(default)]
    pub cookie: bool,
    /// No answer at all.
    #[serde(default)]
    pub error: Option<String>,
}

/// One attempt: the exchanges in order, stopped at the first wrong answer.
#[derive(Debug, Clone, Deserialize)]
pub struct Trace {
    pub url: String,
    pub continuations: u32,
    pub exchanges: Vec<Exchange>,
    /// The transaction sent without the cookie (start, continuations, commit), when asked for and reached.
    #[serde(default)]
    pub routing: Option<Vec<Exchange>>,
}

/// Where the probe ran, as the checks say it.
#[derive(Debug, Clone)]
pub enum Origin {
    Here,
    Pod { name: String, node: String, zone: Option<String> },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Here => f.write_str("from this machine"),
            Origin::Pod { name, node, zone: Some(zone) } => write!(f, "from Pod {name} on node {node} ({zone})"),
            Origin::Pod { name, node, zone: None } => write!(f, "from Pod {name} on node {node}"),
        }
    }
}

/// What the probe found, as the two checks report it.
#[derive(Debug)]
pub struct Outcome {
    pub typename: Check,
    pub sticky: Check,
    /// `probe.routing`, when the target routes transactions itself (ScalarDB Cluster).
    pub routing: Option<Check>,
    /// The endpoint could not be reached at all (not the same as a wrong answer).
    pub unreachable: bool,
    /// The probe ran (false: it could not even start, see `not_run`).
    pub ran: bool,
}

impl Outcome {
    /// The probe could not run at all: why, and what to do.
    pub fn not_run(message: String, hint: String) -> Outcome {
        Outcome {
            typename: Check::fail(C, "probe.typename", message).hint(hint),
            sticky: Check::skip(C, "probe.sticky", "transaction not probed: the probe did not run"),
            routing: None,
            unreachable: true,
            ran: false,
        }
    }

    /// Whether every check it holds passed.
    pub fn passed(&self) -> bool {
        self.typename.passed() && self.sticky.passed() && self.routing.as_ref().is_none_or(Check::passed)
    }

    /// With `routing` asked for, the routing check: skipped unless the sticky one passed.
    fn with_routing(mut self, routing: bool, judged: impl FnOnce() -> Check) -> Outcome {
        if routing {
            self.routing = Some(if self.sticky.passed() {
                judged()
            } else {
                Check::skip(C, "probe.routing", "not probed: the sticky transaction did not pass")
            });
        }
        self
    }
}

/// Where a transaction (start, `continuations`, commit) went wrong: how many
/// requests kept it, and what happened next; None when it committed.
fn lost_at(exchanges: &[Exchange], continuations: u32) -> Option<(u32, String)> {
    let total = continuations + 2;
    let mut rest = exchanges.iter();
    match rest.next() {
        None => return Some((0, "the probe stopped before starting it".into())),
        Some(Exchange { error: Some(e), .. }) => return Some((0, format!("starting it failed: {e}"))),
        Some(x) if x.status != Some(200) => {
            return Some((0, format!("starting it answered HTTP {}", x.status.unwrap_or(0))));
        }
        Some(x) => {
            let v: Value = serde_json::from_str(&x.body).unwrap_or(Value::Null);
            if transaction_id(&v).is_none() {
                return Some((
                    0,
                    format!("starting it returned no transaction id ({})", graphql_error(&v).unwrap_or_default()),
                ));
            }
        }
    }
    for i in 1..=total - 1 {
        let what = if i == total - 1 { "the commit".to_string() } else { format!("continuation {i}") };
        let kept = if i == total - 1 { total - 1 } else { i };
        match rest.next() {
            None => return Some((kept, format!("the probe stopped before {what}"))),
            Some(Exchange { error: Some(e), .. }) => return Some((kept, format!("{what} failed: {e}"))),
            Some(x) => {
                let v: Value = serde_json::from_str(&x.body).unwrap_or(Value::Null);
                if x.status != Some(200) || graphql_error(&v).is_some() {
                    return Some((
                        kept,
                        format!("{what} got HTTP {}: {}", x.status.unwrap_or(0), graphql_error(&v).unwrap_or_default()),
                    ));
                }
            }
        }
    }
    None
}

/// `probe.routing`: the transaction sent without the cookie committed.
fn judge_routing(trace: &Trace, from: &Origin) -> Check {
    let total = trace.continuations + 2;
    let Some(exchanges) = &trace.routing else {
        return Check::fail(C, "probe.routing", format!("the probe {from} sent no transaction without the cookie"))
            .hint("run status again; the probe stopped before it");
    };
    match lost_at(exchanges, trace.continuations) {
        None => Check::pass(
            C,
            "probe.routing",
            format!(
                "without the cookie: {total}/{total} requests of a transaction committed through the ALB's round robin, the nodes routing it ({from})"
            ),
        ),
        Some((kept, why)) => Check::fail(
            C,
            "probe.routing",
            format!("without the cookie: {kept}/{total} requests kept the transaction ({from}); then {why}"),
        )
        .hint("the nodes did not route the transaction to the node holding it: check their membership (the -headless Service's endpoints, the chart's Role on endpoints) in the nodes' logs"),
    }
}

fn graphql_error(body: &Value) -> Option<String> {
    body["errors"].as_array().and_then(|e| e.first()).map(|e| e["message"].as_str().unwrap_or("error").to_string())
}

fn expected() -> Value {
    json!({"data": {"__typename": "Query"}})
}

/// The transaction id a start answered with.
fn transaction_id(body: &Value) -> Option<&str> {
    body["extensions"]["transaction"]["id"].as_str()
}

/// Judges one attempt. `from` says where it ran; `unreachable_hint` what to do
/// when the endpoint did not answer from there.
pub fn judge(trace: &Trace, from: &Origin, unreachable_hint: &str, routing: bool) -> Outcome {
    judge_sticky(trace, from, unreachable_hint).with_routing(routing, || judge_routing(trace, from))
}

fn judge_sticky(trace: &Trace, from: &Origin, unreachable_hint: &str) -> Outcome {
    let url = &trace.url;
    let skip = |why: &str| Check::skip(C, "probe.sticky", format!("transaction not probed: {why}"));
    let Some(first) = trace.exchanges.first() else {
        return Outcome::not_run(format!("the probe {from} reported no request"), unreachable_hint.to_string());
    };
    if let Some(e) = &first.error {
        return Outcome {
            typename: Check::fail(C, "probe.typename", format!("cannot reach {url} {from}: {e}"))
                .hint(unreachable_hint),
            sticky: skip("endpoint unreachable"),
            routing: None,
            unreachable: true,
            ran: true,
        };
    }
    let body: Value = serde_json::from_str(&first.body).unwrap_or(Value::Null);
    if first.status != Some(200) || body != expected() {
        return Outcome {
            typename: Check::fail(
                C,
                "probe.typename",
                format!(
                    "GET {url}?query={{__typename}} {from} answered {} {}",
                    first.status.unwrap_or(0),
                    first.body.chars().take(120).collect::<String>()
                ),
            )
            .hint("check the GraphQL pods' logs and that the path matches scalarDbGraphQlConfiguration.path"),
            sticky: skip("the endpoint does not answer GraphQL"),
            routing: None,
            unreachable: false,
            ran: true,
        };
    }
    let typename = || {
        Check::pass(C, "probe.typename", format!("{{__typename}} through {url} answers 200 {} ({from})", expected()))
    };
    if !first.cookie {
        return Outcome {
            typename: typename(),
            sticky: Check::fail(
                C,
                "probe.sticky",
                format!("the ALB set no AWSALB cookie ({from}): its target group is not sticky"),
            )
            .hint("enable stickiness.enabled=true on the target group (the Ingress's target-group-attributes)"),
            routing: None,
            unreachable: false,
            ran: true,
        };
    }
    let total = trace.continuations + 2;
    if let Some((kept, why)) = lost_at(&trace.exchanges[1..], trace.continuations) {
        return Outcome {
            typename: typename(),
            sticky: Check::fail(C, "probe.sticky", format!("sticky: {kept}/{total} requests kept the transaction ({from}); then {why}"))
                .hint("the request reached another pod: the ALB is not routing by its AWSALB cookie (target-type ip and stickiness.enabled=true are both needed)"),
            routing: None,
            unreachable: false,
            ran: true,
        };
    }
    Outcome {
        typename: typename(),
        sticky: Check::pass(
            C,
            "probe.sticky",
            format!(
                "sticky: {total}/{total} requests kept the transaction (start, {} continuations, commit) ({from})",
                trace.continuations
            ),
        ),
        routing: None,
        unreachable: false,
        ran: true,
    }
}

/// The probe from this machine: the same exchanges `probe.py` makes in a Pod.
pub async fn local(url: &str, continuations: u32, routing: bool) -> Trace {
    let mut trace = Trace { url: url.to_string(), continuations, exchanges: vec![], routing: None };
    let client = match HttpClient::new(Duration::from_secs(10)) {
        Ok(c) => c,
        Err(e) => {
            trace.exchanges.push(failed("typename", e.to_string()));
            return trace;
        }
    };
    let (first, cookie) = match client.get(&format!("{url}?query=%7B__typename%7D")).await {
        Ok(res) => {
            let cookie = http::cookie(&res.set_cookies, "AWSALB");
            (answered("typename", res.status, &res.body, cookie.is_some()), cookie)
        }
        Err(e) => (failed("typename", e.to_string()), None),
    };
    let go_on = first.status == Some(200) && serde_json::from_str::<Value>(&first.body).ok() == Some(expected());
    trace.exchanges.push(first);
    let Some(cookie) = cookie.filter(|_| go_on) else {
        return trace;
    };
    let (sticky, committed) = transaction(&client, url, continuations, Some(&cookie)).await;
    trace.exchanges.extend(sticky);
    if committed && routing {
        trace.routing = Some(transaction(&client, url, continuations, None).await.0);
    }
    trace
}

/// One transaction through `url` (start, `continuations`, commit), each
/// request with `cookie` (None: no cookie), stopped at the first wrong
/// answer; and whether it committed.
async fn transaction(
    client: &HttpClient,
    url: &str,
    continuations: u32,
    cookie: Option<&str>,
) -> (Vec<Exchange>, bool) {
    let post = |step: String, query: String| async move {
        let body = serde_json::to_vec(&json!({"query": query})).expect("JSON");
        match client.send("POST", url, Some("application/json"), body, cookie).await {
            Ok(res) => answered(&step, res.status, &res.body, false),
            Err(e) => failed(&step, e.to_string()),
        }
    };
    let good = |x: &Exchange| {
        x.status == Some(200)
            && serde_json::from_str::<Value>(&x.body).ok().is_some_and(|v| graphql_error(&v).is_none())
    };
    let mut steps = vec![];
    let start = post("start".into(), "query @transaction { __typename }".into()).await;
    let id = serde_json::from_str::<Value>(&start.body).ok().and_then(|v| transaction_id(&v).map(str::to_string));
    let ok = good(&start);
    steps.push(start);
    let Some(id) = id.filter(|_| ok) else {
        return (steps, false);
    };
    for i in 1..=continuations {
        let x = post(format!("continue-{i}"), format!("query @transaction(id: \"{id}\") {{ __typename }}")).await;
        let ok = good(&x);
        steps.push(x);
        if !ok {
            return (steps, false);
        }
    }
    let commit =
        post("commit".into(), format!("query @transaction(id: \"{id}\", commit: true) {{ __typename }}")).await;
    let ok = good(&commit);
    steps.push(commit);
    (steps, ok)
}

fn answered(step: &str, status: u16, body: &[u8], cookie: bool) -> Exchange {
    Exchange {
        step: step.to_string(),
        status: Some(status),
        body: String::from_utf8_lossy(body).chars().take(2000).collect(),
        cookie,
        error: None,
    }
}

fn failed(step: &str, error: String) -> Exchange {
    Exchange { step: step.to_string(), status: None, body: String::new(), cookie: false, error: Some(error) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(exchanges: Vec<Exchange>) -> Trace {
        Trace { url: "http://alb/graphql".into(), continuations: 2, exchanges, routing: None }
    }
    fn ok(step: &str, body: &str, cookie: bool) -> Exchange {
        answered(step, 200, body.as_bytes(), cookie)
    }
    const TX: &str = r#"{"data":{"__typename":"Query"},"extensions":{"transaction":{"id":"t1"}}}"#;
    const TYPENAME: &str = r#"{"data":{"__typename":"Query"}}"#;

    #[test]
    fn a_whole_transaction_on_one_pod_passes_and_says_where_it_ran() {
        let t = trace(vec![
            ok("typename", TYPENAME, true),
            ok("start", TX, false),
            ok("continue-1", TX, false),
            ok("continue-2", TX, false),
            ok("commit", TYPENAME, false),
        ]);
        let from = Origin::Pod { name: "ns/p".into(), node: "n1".into(), zone: Some("z1".into()) };
        let o = judge(&t, &from, "", false);
        assert!(o.typename.passed() && o.sticky.passed(), "{o:?}");
        assert!(o.sticky.message.contains("4/4") && o.sticky.message.contains("from Pod ns/p on node n1 (z1)"));
    }

    #[test]
    fn a_lost_transaction_counts_what_was_kept() {
        let lost = r#"{"errors":[{"message":"transaction t1 not found"}]}"#;
        let t = trace(vec![ok("typename", TYPENAME, true), ok("start", TX, false), ok("continue-1", lost, false)]);
        let o = judge(&t, &Origin::Here, "", false);
        assert!(o.typename.passed() && !o.sticky.passed());
        assert!(o.sticky.message.contains("1/4") && o.sticky.message.contains("not found"), "{}", o.sticky.message);
    }

    #[test]
    fn no_cookie_unreachable_and_wrong_answers_fail_the_right_check() {
        let o = judge(&trace(vec![ok("typename", TYPENAME, false)]), &Origin::Here, "", false);
        assert!(o.typename.passed() && o.sticky.message.contains("no AWSALB cookie"));
        let o = judge(&trace(vec![failed("typename", "refused".into())]), &Origin::Here, "use a bastion", false);
        assert!(o.unreachable && !o.typename.passed() && o.typename.hint.as_deref() == Some("use a bastion"));
        let o = judge(&trace(vec![answered("typename", 400, b"bad", true)]), &Origin::Here, "", false);
        assert!(!o.unreachable && o.typename.message.contains("answered 400 bad"));
    }

    #[test]
    fn routing_is_judged_only_when_asked_and_only_after_the_sticky_transaction() {
        let sticky = vec![
            ok("typename", TYPENAME, true),
            ok("start", TX, false),
            ok("continue-1", TX, false),
            ok("continue-2", TX, false),
            ok("commit", TYPENAME, false),
        ];
        let whole = vec![
            ok("start", TX, false),
            ok("continue-1", TX, false),
            ok("continue-2", TX, false),
            ok("commit", TYPENAME, false),
        ];
        let mut t = trace(sticky.clone());
        assert!(judge(&t, &Origin::Here, "", false).routing.is_none());
        t.routing = Some(whole);
        let o = judge(&t, &Origin::Here, "", true);
        assert!(o.passed() && o.routing.as_ref().unwrap().message.contains("4/4"), "{o:?}");
        let lost = r#"{"errors":[{"message":"transaction t1 not found"}]}"#;
        t.routing = Some(vec![ok("start", TX, false), ok("continue-1", lost, false)]);
        let o = judge(&t, &Origin::Here, "", true);
        let routing = o.routing.as_ref().unwrap();
        assert!(!o.passed() && routing.message.contains("1/4") && routing.message.contains("not found"), "{o:?}");
        t.routing = None;
        assert!(!judge(&t, &Origin::Here, "", true).routing.unwrap().passed());
        let o = judge(&trace(sticky[..2].to_vec()), &Origin::Here, "", true);
        assert_eq!(o.routing.unwrap().result, crate::component::Outcome::Skip);
    }

    #[test]
    fn the_pod_scripts_output_parses_as_a_trace() {
        let line = r#"{"probe":"scalardb-graphql","url":"http://a/graphql","continuations":1,"attempt":1,
            "exchanges":[{"step":"typename","error":"URLError: refused"}]}"#;
        let t: Trace = serde_json::from_str(line).unwrap();
        assert_eq!(t.exchanges[0].error.as_deref(), Some("URLError: refused"));
        assert_eq!(t.exchanges[0].status, None);
    }
}
