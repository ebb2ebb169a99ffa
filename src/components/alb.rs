//! The ALB the controller made for the release's Ingress (found through
//! `lookups::alb` by the controller's tags): `active`, `internal`, every
//! target group sticky with `lb_cookie`, and a healthy target for every
//! Ready pod. Targets still `initial` or `draining` are reported as what
//! they are; `unhealthy` ones fail with ELBv2's reason. Owns nothing;
//! install waits until all of that holds.

use std::collections::BTreeSet;

use async_trait::async_trait;

use crate::component::Env;
use crate::component::{Action, Category, Check, Component, Outcome};
use crate::error::Result;
use crate::lookups::alb::{AlbState, TargetGroup};
use crate::lookups::{self, pod_ip, pod_ready};
use crate::record::Recorder;
use crate::wait;

fn sticky(tg: &TargetGroup) -> bool {
    tg.attributes.get("stickiness.enabled").map(String::as_str) == Some("true")
        && tg.attributes.get("stickiness.type").map(String::as_str) == Some("lb_cookie")
}

/// What status checks about targets: the Ready pods' addresses against the targets' health.
fn targets_check(state: &AlbState, ready_ips: &BTreeSet<String>) -> Check {
    let c = Category::Alb;
    let targets: Vec<_> = state.target_groups.iter().flat_map(|t| &t.targets).collect();
    let unhealthy: Vec<_> = targets
        .iter()
        .filter(|t| !matches!(t.state.as_str(), "healthy" | "initial" | "draining"))
        .map(|t| format!("{} {} ({})", t.id, t.state, if t.reason.is_empty() { "no reason given" } else { &t.reason }))
        .collect();
    if !unhealthy.is_empty() {
        return Check::fail(c, "alb.targets", format!("targets failing: {}", unhealthy.join(", ")))
            .hint("the ALB's health check does not pass on these pods: check their readiness and the health-check path (alb.ingress.kubernetes.io/healthcheck-path)");
    }
    let in_state =
        |s: &str| -> BTreeSet<&str> { targets.iter().filter(|t| t.state == s).map(|t| t.id.as_str()).collect() };
    let healthy = in_state("healthy");
    let initial = in_state("initial");
    let draining = targets.iter().filter(|t| t.state == "draining").count();
    let missing: Vec<&str> =
        ready_ips.iter().map(String::as_str).filter(|ip| !healthy.contains(ip) && !initial.contains(ip)).collect();
    let registering: Vec<&str> = ready_ips.iter().map(String::as_str).filter(|ip| initial.contains(ip)).collect();
    let draining_note = if draining > 0 {
        format!("; {draining} draining (pods that went, kept for the deregistration delay)")
    } else {
        String::new()
    };
    if !missing.is_empty() {
        Check::fail(c, "alb.targets", format!("Ready pod(s) without a target: {}{draining_note}", missing.join(", ")))
            .hint("the controller registers the Service's ready endpoints; check its logs and the TargetGroupBinding")
    } else if !registering.is_empty() {
        Check::warn(
            c,
            "alb.targets",
            format!(
                "{} healthy target(s); {} still initial (registering, first health checks pending): {}{draining_note}",
                healthy.len(),
                registering.len(),
                registering.join(", ")
            ),
        )
        .hint("wait a few health-check intervals (status --wait)")
    } else {
        Check::pass(
            c,
            "alb.targets",
            format!("{} healthy target(s), one per Ready pod{draining_note}", ready_ips.len()),
        )
    }
}

#[derive(Clone)]
struct Seen {
    state: AlbState,
    ready_ips: BTreeSet<String>,
    /// Where the controller was looked for, for the message when there is no ALB.
    stack: String,
}

#[derive(Default)]
pub struct Alb {
    seen: Option<Seen>,
}

impl Alb {
    async fn look(env: &Env) -> Result<Seen> {
        let ingress = lookups::release_ingress(env, &env.options.user_values).await?;
        let cluster = lookups::tagging_cluster_name(env).await?;
        let state = lookups::alb::find(env, &ingress, &cluster).await?;
        let ready_ips = lookups::graphql_pods(env)
            .await?
            .iter()
            .filter(|p| pod_ready(p))
            .filter_map(|p| pod_ip(p).map(str::to_string))
            .collect();
        Ok(Seen { state, ready_ips, stack: format!("stack {}, cluster {cluster}", ingress.stack()) })
    }

    fn evaluate(seen: &Seen) -> Vec<Check> {
        let c = Category::Alb;
        let state = &seen.state;
        let Some(lb) = state.load_balancers.first() else {
            return vec![
                Check::fail(c, "alb.load-balancer", format!("no ALB carries the controller's tags for this Ingress ({})", seen.stack))
                    .hint("check the Ingress events (kubectl describe ingress); the controller may lack subnets or permissions"),
                Check::skip(c, "alb.stickiness", "no ALB"),
                Check::skip(c, "alb.targets", "no ALB"),
            ];
        };
        let lb_check = if lb.state != "active" {
            Check::fail(c, "alb.load-balancer", format!("ALB {} is {}", lb.name, lb.state))
                .hint("wait for it to become active")
        } else if lb.scheme != "internal" {
            Check::fail(c, "alb.load-balancer", format!("ALB {} is {}, not internal", lb.name, lb.scheme))
                .hint("annotate alb.ingress.kubernetes.io/scheme: internal (re-run install); the controller recreates the ALB")
        } else {
            Check::pass(c, "alb.load-balancer", format!("ALB {} is active and internal", lb.name))
        };
        let not_sticky: Vec<_> = state
            .target_groups
            .iter()
            .filter(|t| !sticky(t))
            .map(|t| {
                format!(
                    "{} (stickiness.enabled={}, type={})",
                    t.name,
                    t.attributes.get("stickiness.enabled").map(String::as_str).unwrap_or("?"),
                    t.attributes.get("stickiness.type").map(String::as_str).unwrap_or("?")
                )
            })
            .collect();
        let sticky = if state.target_groups.is_empty() {
            Check::fail(c, "alb.stickiness", "the ALB has no target groups")
                .hint("check the Ingress backend and the controller's events")
        } else {
            Check::expect(c, "alb.stickiness", not_sticky.is_empty(),
                format!("{} target group(s) sticky with lb_cookie", state.target_groups.len()),
                format!("target groups not sticky: {}", not_sticky.join(", ")))
                .hint("the controller applies target-group-attributes when the Ingress changes: fix the annotation, or set the attribute with aws elbv2 modify-target-group-attributes")
        };
        vec![lb_check, sticky, targets_check(state, &seen.ready_ips)]
    }
}

#[async_trait]
impl Component for Alb {
    fn name(&self) -> &'static str {
        "ALB"
    }

    fn category(&self) -> Category {
        Category::Alb
    }

    async fn observe(&mut self, env: &Env) -> Result<()> {
        self.seen = Some(Self::look(env).await?);
        Ok(())
    }

    fn plan(&self, env: &Env) -> Result<Vec<Action>> {
        let seen = self.seen.as_ref().expect("observed");
        let all_pass = Self::evaluate(seen).iter().all(|c| c.result == Outcome::Pass);
        Ok(if env.options.wait && !all_pass {
            vec![Action::wait("the ALB is active, its target groups sticky and every Ready pod's target healthy")]
        } else {
            vec![]
        })
    }

    async fn apply(&mut self, env: &Env, _record: &mut Recorder) -> Result<()> {
        if !env.options.wait {
            return Ok(());
        }
        // Through `initial`: done when every check passes outright.
        let seen = wait::until(env, "the ALB", || async {
            let seen = Self::look(env).await?;
            let checks = Self::evaluate(&seen);
            Ok(match checks.iter().find(|c| c.result != Outcome::Pass) {
                None => Ok(seen),
                Some(failing) => Err(failing.message.clone()),
            })
        })
        .await?;
        env.progress.done(&format!(
            "ALB {} is active, sticky, with {} healthy target(s)",
            seen.state.load_balancers[0].name,
            seen.ready_ips.len()
        ));
        self.seen = Some(seen);
        Ok(())
    }

    async fn checks(&self, _env: &Env) -> Vec<Check> {
        Self::evaluate(self.seen.as_ref().expect("observed"))
    }

    fn removal(&self, _env: &Env) -> Result<Vec<Action>> {
        Ok(vec![]) // the controller owns the ALB; the release's removal waits for it to go
    }

    async fn remove(&mut self, _env: &Env, _record: &mut Recorder) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookups::alb::Target;

    fn state(targets: &[(&str, &str)]) -> AlbState {
        AlbState {
            load_balancers: vec![],
            target_groups: vec![TargetGroup {
                targets: targets
                    .iter()
                    .map(|(id, s)| Target {
                        id: id.to_string(),
                        state: s.to_string(),
                        reason: "Target.FailedHealthChecks".into(),
                    })
                    .collect(),
                ..Default::default()
            }],
        }
    }

    fn ips(ips: &[&str]) -> BTreeSet<String> {
        ips.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_ready_pod_healthy_passes_and_draining_is_only_mentioned() {
        let c = targets_check(
            &state(&[("10.0.0.1", "healthy"), ("10.0.0.2", "healthy"), ("10.0.0.9", "draining")]),
            &ips(&["10.0.0.1", "10.0.0.2"]),
        );
        assert_eq!(c.result, Outcome::Pass, "{}", c.message);
        assert!(c.message.contains("1 draining"), "{}", c.message);
    }

    #[test]
    fn initial_targets_are_a_warning_not_a_failure() {
        let c =
            targets_check(&state(&[("10.0.0.1", "healthy"), ("10.0.0.2", "initial")]), &ips(&["10.0.0.1", "10.0.0.2"]));
        assert_eq!(c.result, Outcome::Warn, "{}", c.message);
        assert!(c.message.contains("initial") && c.message.contains("10.0.0.2"), "{}", c.message);
    }

    #[test]
    fn unhealthy_fails_with_the_reason_and_a_missing_target_fails() {
        let c = targets_check(&state(&[("10.0.0.1", "unhealthy")]), &ips(&["10.0.0.1"]));
        assert_eq!(c.result, Outcome::Fail);
        assert!(c.message.contains("Target.FailedHealthChecks"), "{}", c.message);
        let c = targets_check(&state(&[("10.0.0.1", "healthy")]), &ips(&["10.0.0.1", "10.0.0.3"]));
        assert_eq!(c.result, Outcome::Fail);
        assert!(c.message.contains("10.0.0.3"), "{}", c.message);
    }
}
