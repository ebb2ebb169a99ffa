//! The end-to-end probe, the guide's curl and what it leaves open: through
//! the ALB, `{__typename}` answers 200 with `{"data":{"__typename":"Query"}}`
//! and sets the `AWSALB` cookie; then one transaction (start, N
//! continuations carrying the cookie, commit) stays on one pod. For
//! ScalarDB Cluster (`--target cluster`) one more transaction without the
//! cookie commits too: the ALB spreads it over the nodes, and they route
//! each request to the node that holds the transaction.
//!
//! An internal ALB answers only inside the VPC, so by default the probe runs
//! from a Pod in the cluster (`pod.rs`) against the Ingress hostname;
//! `--probe-from local` (implied by `--probe-url`) runs it from this machine.
//! Both report the same exchanges, judged once (`trace.rs`).

mod pod;
mod trace;

use async_trait::async_trait;

use crate::component::Env;
use crate::component::{Action, Category, Check, Component};
use crate::error::{Error, Result};
use crate::record::Recorder;
use crate::spec::{ProbeFrom, Target};

use crate::lookups;
use trace::{Origin, Outcome};

const C: Category = Category::Probe;

#[derive(Default)]
pub struct Probe {
    url: Option<String>,
}

/// What to do when the endpoint did not answer from where the probe ran.
fn unreachable_hint(from: &Origin) -> &'static str {
    match from {
        Origin::Here => {
            "an internal ALB answers only inside the VPC: probe from the cluster (the default, --probe-from cluster), from a bastion, or pass --probe-url through a tunnel; --no-probe skips this"
        }
        Origin::Pod { .. } => {
            "the ALB's name did not answer inside the VPC: check that its security group admits the nodes and that the cluster's DNS resolves it"
        }
    }
}

/// One probe of `url` from where the options say, judged.
async fn probe(env: &Env, url: &str, keep_trying: bool) -> Outcome {
    let requests = env.options.probe_requests;
    let routing = env.spec.target == Target::Cluster;
    match env.options.probe_from {
        ProbeFrom::Local => {
            let trace = trace::local(url, requests, routing).await;
            trace::judge(&trace, &Origin::Here, unreachable_hint(&Origin::Here), routing)
        }
        ProbeFrom::Cluster => match pod::run(env, &env.options.probe_image, url, requests, keep_trying).await {
            Ok((trace, from)) => trace::judge(&trace, &from, unreachable_hint(&from), routing),
            Err(not_run) => Outcome::not_run(not_run.message, not_run.hint),
        },
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
        let hostname = match env.options.probe_url {
            Some(_) => None,
            None => lookups::release_ingress(env, &env.options.user_values).await?.hostname(),
        };
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
            env.progress
                .warn("not probed (--no-probe): run `kubectl scalardb-graphql status` to check stickiness end to end");
            return Ok(());
        }
        self.observe(env).await?;
        let Some(url) = self.url.clone() else {
            return Ok(());
        };
        env.progress.waiting(&format!("waiting for a sticky transaction through {url}"));
        let outcome = match env.options.probe_from {
            // The Pod retries by itself until the deadline nears.
            ProbeFrom::Cluster => probe(env, &url, true).await,
            ProbeFrom::Local => {
                crate::wait::until(env, &format!("a sticky transaction through {url}"), || async {
                    let outcome = probe(env, &url, false).await;
                    Ok(if outcome.unreachable || outcome.passed() {
                        Ok(outcome)
                    } else {
                        Err(outcome.sticky.message.clone())
                    })
                })
                .await?
            }
        };
        // From this machine an internal ALB may well not answer; from inside the VPC it must.
        if !outcome.ran || (outcome.unreachable && env.options.probe_from == ProbeFrom::Local) {
            env.progress.warn(&format!(
                "not probed: {}; {}",
                outcome.typename.message,
                outcome.typename.hint.as_deref().unwrap_or("check with `kubectl scalardb-graphql status`")
            ));
        } else if outcome.passed() {
            env.progress.done(&outcome.sticky.message);
            if let Some(routing) = &outcome.routing {
                env.progress.done(&routing.message);
            }
        } else {
            let failed = [Some(&outcome.typename), Some(&outcome.sticky), outcome.routing.as_ref()]
                .into_iter()
                .flatten()
                .find(|c| !c.passed())
                .expect("a check failed");
            return Err(Error::timeout(format!(
                "timed out waiting for a sticky transaction through {url}; last seen: {}",
                failed.message
            ))
            .hint("run `kubectl scalardb-graphql status` to see what is missing, or raise --timeout"));
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
        let outcome = probe(env, url, false).await;
        [Some(outcome.typename), Some(outcome.sticky), outcome.routing].into_iter().flatten().collect()
    }

    fn removal(&self, _env: &Env) -> Result<Vec<Action>> {
        Ok(vec![])
    }

    async fn remove(&mut self, _env: &Env, _record: &mut Recorder) -> Result<()> {
        Ok(())
    }
}
