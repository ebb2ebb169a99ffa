//! What a probe saw, and the one judgement of it. The exchanges are the same
//! wherever the probe ran — from this machine (`local`, below) or from a Pod
//! (`probe.py`, read back from its log) — and `judge` turns them into the two
//! checks.

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
            unreachable: true,
            ran: false,
        }
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
pub fn judge(trace: &Trace, from: &Origin, unreachable_hint: &str) -> Outcome {
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
            unreachable: false,
            ran: true,
        };
    }
    let total = trace.continuations + 2;
    let lost = |n: u32, why: String| {
        Outcome {
        typename: typename(),
        sticky: Check::fail(C, "probe.sticky", format!("sticky: {n}/{total} requests kept the transaction ({from}); then {why}"))
            .hint("the request reached another pod: the ALB is not routing by its AWSALB cookie (target-type ip and stickiness.enabled=true are both needed)"),
        unreachable: false,
        ran: true,
    }
    };
    let mut rest = trace.exchanges[1..].iter();
    let start = rest.next();
    match start {
        None => return lost(0, "the probe stopped before starting it".into()),
        Some(Exchange { error: Some(e), .. }) => return lost(0, format!("starting it failed: {e}")),
        Some(x) if x.status != Some(200) => {
            return lost(0, format!("starting it answered HTTP {}", x.status.unwrap_or(0)));
        }
        Some(x) => {
            let v: Value = serde_json::from_str(&x.body).unwrap_or(Value::Null);
            if transaction_id(&v).is_none() {
                return lost(
                    0,
                    format!("starting it returned no transaction id ({})", graphql_error(&v).unwrap_or_default()),
                );
            }
        }
    }
    for i in 1..=total - 1 {
        let what = if i == total - 1 { "the commit".to_string() } else { format!("continuation {i}") };
        let kept = if i == total - 1 { total - 1 } else { i };
        match rest.next() {
            None => return lost(kept, format!("the probe stopped before {what}")),
            Some(Exchange { error: Some(e), .. }) => return lost(kept, format!("{what} failed: {e}")),
            Some(x) => {
                let v: Value = serde_json::from_str(&x.body).unwrap_or(Value::Null);
                if x.status != Some(200) || graphql_error(&v).is_some() {
                    return lost(
                        kept,
                        format!("{what} got HTTP {}: {}", x.status.unwrap_or(0), graphql_error(&v).unwrap_or_default()),
                    );
                }
            }
        }
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
        unreachable: false,
        ran: true,
    }
}

/// The probe from this machine: the same exchanges `probe.py` makes in a Pod.
pub async fn local(url: &str, continuations: u32) -> Trace {
    let mut trace = Trace { url: url.to_string(), continuations, exchanges: vec![] };
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
    let post = |step: String, query: String| {
        let (client, cookie) = (&client, cookie.clone());
        async move {
            let body = serde_json::to_vec(&json!({"query": query})).expect("JSON");
            match client.send("POST", url, Some("application/json"), body, Some(&cookie)).await {
                Ok(res) => answered(&step, res.status, &res.body, false),
                Err(e) => failed(&step, e.to_string()),
            }
        }
    };
    let good = |x: &Exchange| {
        x.status == Some(200)
            && serde_json::from_str::<Value>(&x.body).ok().is_some_and(|v| graphql_error(&v).is_none())
    };
    let start = post("start".into(), "query @transaction { __typename }".into()).await;
    let id = serde_json::from_str::<Value>(&start.body).ok().and_then(|v| transaction_id(&v).map(str::to_string));
    let ok = good(&start);
    trace.exchanges.push(start);
    let Some(id) = id.filter(|_| ok) else {
        return trace;
    };
    for i in 1..=continuations {
        let x = post(format!("continue-{i}"), format!("query @transaction(id: \"{id}\") {{ __typename }}")).await;
        let ok = good(&x);
        trace.exchanges.push(x);
        if !ok {
            return trace;
        }
    }
    trace
        .exchanges
        .push(post("commit".into(), format!("query @transaction(id: \"{id}\", commit: true) {{ __typename }}")).await);
    trace
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
        Trace { url: "http://alb/graphql".into(), continuations: 2, exchanges }
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
        let o = judge(&t, &from, "");
        assert!(o.typename.passed() && o.sticky.passed(), "{o:?}");
        assert!(o.sticky.message.contains("4/4") && o.sticky.message.contains("from Pod ns/p on node n1 (z1)"));
    }

    #[test]
    fn a_lost_transaction_counts_what_was_kept() {
        let lost = r#"{"errors":[{"message":"transaction t1 not found"}]}"#;
        let t = trace(vec![ok("typename", TYPENAME, true), ok("start", TX, false), ok("continue-1", lost, false)]);
        let o = judge(&t, &Origin::Here, "");
        assert!(o.typename.passed() && !o.sticky.passed());
        assert!(o.sticky.message.contains("1/4") && o.sticky.message.contains("not found"), "{}", o.sticky.message);
    }

    #[test]
    fn no_cookie_unreachable_and_wrong_answers_fail_the_right_check() {
        let o = judge(&trace(vec![ok("typename", TYPENAME, false)]), &Origin::Here, "");
        assert!(o.typename.passed() && o.sticky.message.contains("no AWSALB cookie"));
        let o = judge(&trace(vec![failed("typename", "refused".into())]), &Origin::Here, "use a bastion");
        assert!(o.unreachable && !o.typename.passed() && o.typename.hint.as_deref() == Some("use a bastion"));
        let o = judge(&trace(vec![answered("typename", 400, b"bad", true)]), &Origin::Here, "");
        assert!(!o.unreachable && o.typename.message.contains("answered 400 bad"));
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
