//! The end-to-end probe, the guide's curl and what it leaves open: through
//! the ALB, `{__typename}` answers 200 with `{"data":{"__typename":"Query"}}`
//! and sets the `AWSALB` cookie; then one transaction (start, N
//! continuations carrying the cookie, commit) stays on one pod. The URL is
//! the Ingress hostname unless --probe-url says otherwise.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::component::{Action, Category, Check, Component};
use crate::context::Env;
use crate::error::{Error, Result};
use crate::http::{self, HttpClient};
use crate::record::Recorder;
use crate::wait;

use super::ingress::Ingress;

const C: Category = Category::Probe;

#[derive(Default)]
pub struct Probe {
    url: Option<String>,
}

/// What the probe found, as the two checks report it.
#[derive(Debug)]
pub struct Outcome {
    pub typename: Check,
    pub sticky: Check,
    /// The endpoint could not be reached at all (not the same as a wrong answer).
    pub unreachable: bool,
}

fn graphql_error(body: &Value) -> Option<String> {
    body["errors"].as_array().and_then(|e| e.first()).map(|e| e["message"].as_str().unwrap_or("error").to_string())
}

/// Runs the probe against `url` (…/graphql).
pub async fn run(url: &str, continuations: u32) -> Outcome {
    let skip = |why: &str| Check::skip(C, "probe.sticky", format!("transaction not probed: {why}"));
    let client = match HttpClient::new(Duration::from_secs(10)) {
        Ok(c) => c,
        Err(e) => {
            return Outcome {
                typename: Check::fail(C, "probe.typename", e.to_string()),
                sticky: skip("no HTTP client"),
                unreachable: true,
            };
        }
    };
    let get = client.get(&format!("{url}?query=%7B__typename%7D")).await;
    let res = match get {
        Ok(r) => r,
        Err(e) => {
            return Outcome {
                typename: Check::fail(C, "probe.typename", format!("cannot reach {url}: {e}"))
                    .hint("an internal ALB answers only inside the VPC: run from a bastion, or pass --probe-url through a tunnel; --no-probe skips this"),
                sticky: skip("endpoint unreachable"),
                unreachable: true,
            };
        }
    };
    let body: Value = serde_json::from_slice(&res.body).unwrap_or(Value::Null);
    let expected = json!({"data": {"__typename": "Query"}});
    if res.status != 200 || body != expected {
        return Outcome {
            typename: Check::fail(
                C,
                "probe.typename",
                format!(
                    "GET {url}?query={{__typename}} answered {} {}",
                    res.status,
                    String::from_utf8_lossy(&res.body).chars().take(120).collect::<String>()
                ),
            )
            .hint("check the GraphQL pods' logs and that the path matches scalarDbGraphQlConfiguration.path"),
            sticky: skip("the endpoint does not answer GraphQL"),
            unreachable: false,
        };
    }
    let typename = Check::pass(C, "probe.typename", format!("{{__typename}} through {url} answers 200 {expected}"));
    let Some(cookie) = http::cookie(&res.set_cookies, "AWSALB") else {
        return Outcome {
            typename,
            sticky: Check::fail(C, "probe.sticky", "the ALB set no AWSALB cookie: its target group is not sticky")
                .hint("enable stickiness.enabled=true on the target group (the Ingress's target-group-attributes)"),
            unreachable: false,
        };
    };
    let post = |query: String| {
        let client = &client;
        let cookie = cookie.clone();
        async move {
            let body = serde_json::to_vec(&json!({"query": query})).expect("JSON");
            let res = client.send("POST", url, Some("application/json"), body, Some(&cookie)).await?;
            let v: Value = serde_json::from_slice(&res.body).unwrap_or(Value::Null);
            Ok::<_, Error>((res.status, v))
        }
    };
    let total = continuations + 2;
    let lost = |n: u32, why: String| {
        Outcome {
        typename: Check::pass(C, "probe.typename", format!("{{__typename}} through {url} answers 200 {expected}")),
        sticky: Check::fail(C, "probe.sticky", format!("sticky: {n}/{total} requests kept the transaction; then {why}"))
            .hint("the request reached another pod: the ALB is not routing by its AWSALB cookie (target-type ip and stickiness.enabled=true are both needed)"),
        unreachable: false,
    }
    };
    let id = match post("query @transaction { __typename }".into()).await {
        Ok((200, v)) => match v["extensions"]["transaction"]["id"].as_str() {
            Some(id) => id.to_string(),
            None => {
                return lost(
                    0,
                    format!("starting it returned no transaction id ({})", graphql_error(&v).unwrap_or_default()),
                );
            }
        },
        Ok((s, _)) => return lost(0, format!("starting it answered HTTP {s}")),
        Err(e) => return lost(0, format!("starting it failed: {e}")),
    };
    for i in 1..=continuations {
        match post(format!("query @transaction(id: \"{id}\") {{ __typename }}")).await {
            Ok((200, v)) if graphql_error(&v).is_none() => {}
            Ok((s, v)) => {
                return lost(i, format!("continuation {i} got HTTP {s}: {}", graphql_error(&v).unwrap_or_default()));
            }
            Err(e) => return lost(i, format!("continuation {i} failed: {e}")),
        }
    }
    match post(format!("query @transaction(id: \"{id}\", commit: true) {{ __typename }}")).await {
        Ok((200, v)) if graphql_error(&v).is_none() => {}
        Ok((s, v)) => {
            return lost(total - 1, format!("the commit got HTTP {s}: {}", graphql_error(&v).unwrap_or_default()));
        }
        Err(e) => return lost(total - 1, format!("the commit failed: {e}")),
    }
    Outcome {
        typename,
        sticky: Check::pass(
            C,
            "probe.sticky",
            format!(
                "sticky: {total}/{total} requests kept the transaction (start, {continuations} continuations, commit)"
            ),
        ),
        unreachable: false,
    }
}

impl Probe {
    fn url(env: &Env, hostname: Option<&str>) -> Option<String> {
        let path = &env.spec.scalardb.path;
        match (&env.options.probe_url, hostname) {
            (Some(base), _) => Some(format!("{}{path}", base.trim_end_matches('/'))),
            (None, Some(h)) => Some(format!("http://{h}{path}")),
            (None, None) => None,
        }
    }
}

#[async_trait]
impl Component for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }

    fn category(&self) -> Category {
        Category::Probe
    }

    async fn observe(&mut self, env: &Env) -> Result<()> {
        if env.options.no_probe {
            return Ok(());
        }
        let hostname = if env.options.probe_url.is_some() { None } else { Ingress::look(env).await?.hostname };
        self.url = Self::url(env, hostname.as_deref());
        Ok(())
    }

    fn plan(&self, env: &Env) -> Result<Vec<Action>> {
        Ok(if env.options.wait && !env.options.no_probe {
            vec![Action::wait(format!(
                "a transaction through {} stays on one pod",
                self.url.as_deref().unwrap_or("the ALB")
            ))]
        } else {
            vec![]
        })
    }

    async fn apply(&mut self, env: &Env, _record: &mut Recorder) -> Result<()> {
        if !env.options.wait {
            return Ok(());
        }
        if env.options.no_probe {
            env.progress.warn("not probed (--no-probe): run `kubectl scalardb-graphql status` from inside the VPC to check stickiness end to end");
            return Ok(());
        }
        self.observe(env).await?;
        let Some(url) = self.url.clone() else {
            return Ok(());
        };
        let requests = env.options.probe_requests;
        let result = wait::until(env, &format!("a sticky transaction through {url}"), || async {
            let outcome = run(&url, requests).await;
            Ok(if outcome.unreachable || outcome.sticky.passed() {
                Ok(outcome)
            } else {
                Err(outcome.sticky.message.clone())
            })
        })
        .await?;
        if result.unreachable {
            env.progress.warn(&format!(
                "could not reach {url} from here ({}); an internal ALB answers only inside the VPC: check from a bastion with `kubectl scalardb-graphql status --probe-url …`",
                result.typename.message
            ));
        } else {
            env.progress.done(&result.sticky.message);
        }
        Ok(())
    }

    async fn checks(&self, env: &Env) -> Vec<Check> {
        if env.options.no_probe {
            return vec![Check::warn(
                C,
                "probe.typename",
                "not probed (--no-probe): stickiness is not proven end to end",
            )];
        }
        let Some(url) = &self.url else {
            return vec![
                Check::fail(C, "probe.typename", "nothing to probe: the Ingress has no hostname")
                    .hint("fix the ingress checks first, or pass --probe-url"),
                Check::skip(C, "probe.sticky", "nothing to probe"),
            ];
        };
        let outcome = run(url, env.options.probe_requests).await;
        vec![outcome.typename, outcome.sticky]
    }

    fn removal(&self, _env: &Env) -> Result<Vec<Action>> {
        Ok(vec![])
    }

    async fn remove(&mut self, _env: &Env, _record: &mut Recorder) -> Result<()> {
        Ok(())
    }
}
