//! The ALB the controller made for the release's Ingress (found through
//! `lookups::alb` by the controller's tags): `active`, `internal`, every
//! target group sticky with `lb_cookie`, and a healthy target for every
//! Ready pod. Targets still `initial` or `draining` are reported as what
//! they are; `unhealthy` ones fail with ELBv2's reason. Owns nothing;
//! install waits until all of that holds.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;

use crate::component::Env;
use crate::component::{Action, Category, Check, Component, Outcome};
use crate::error::Result;
use crate::lookups::alb::{AlbState, PodInterface, TargetGroup};
use crate::lookups::{self, pod_containers_ready, pod_ip, pod_ready};
use crate::record::Recorder;
use crate::wait;

fn sticky(tg: &TargetGroup) -> bool {
    tg.attributes.get("stickiness.enabled").map(String::as_str) == Some("true")
        && tg.attributes.get("stickiness.type").map(String::as_str) == Some("lb_cookie")
}

/// The GraphQL pods' addresses as the targets' checks need them: `serving`, those whose
/// containers are ready (the controller registers them, Ready or not: with a readiness gate a
/// pod is Ready only once its target is healthy), and `ready`, those that are Ready.
#[derive(Clone, Default)]
struct Pods {
    serving: BTreeSet<String>,
    ready: BTreeSet<String>,
}

/// What status checks about targets: a healthy target for every pod whose containers are
/// ready, and those pods Ready (a gate turns once its target is healthy).
fn targets_check(state: &AlbState, pods: &Pods) -> Check {
    let c = Category::Alb;
    let targets: Vec<_> = state.target_groups.iter().flat_map(|t| &t.targets).collect();
    let failing = |t: &crate::lookups::alb::Target| !matches!(t.state.as_str(), "healthy" | "initial" | "draining");
    let unhealthy: Vec<_> = targets
        .iter()
        .filter(|t| failing(t))
        .map(|t| format!("{} {} ({})", t.id, t.state, if t.reason.is_empty() { "no reason given" } else { &t.reason }))
        .collect();
    if !unhealthy.is_empty() {
        let checks: BTreeSet<&str> = state
            .target_groups
            .iter()
            .filter(|tg| tg.targets.iter().any(failing))
            .map(|tg| tg.health_check.as_str())
            .collect();
        let checks = checks.into_iter().collect::<Vec<_>>().join("; ");
        return Check::fail(c, "alb.targets", format!("targets failing: {}; the health check: {checks}", unhealthy.join(", ")))
            .hint("the ALB's health check does not pass on these pods: check their readiness and the health-check path, port and success codes (alb.ingress.kubernetes.io/healthcheck-path, healthcheck-port, success-codes)");
    }
    let in_state =
        |s: &str| -> BTreeSet<&str> { targets.iter().filter(|t| t.state == s).map(|t| t.id.as_str()).collect() };
    let healthy = in_state("healthy");
    let initial = in_state("initial");
    let draining = targets.iter().filter(|t| t.state == "draining").count();
    let serving = || pods.serving.iter().map(String::as_str);
    let missing: Vec<&str> = serving().filter(|ip| !healthy.contains(ip) && !initial.contains(ip)).collect();
    let registering: Vec<&str> = serving().filter(|ip| initial.contains(ip)).collect();
    let gated: Vec<&str> = serving().filter(|ip| healthy.contains(ip) && !pods.ready.contains(*ip)).collect();
    let draining_note = if draining > 0 {
        format!("; {draining} draining (pods that went, kept for the deregistration delay)")
    } else {
        String::new()
    };
    if !missing.is_empty() {
        Check::fail(
            c,
            "alb.targets",
            format!("pod(s) with ready containers but no target: {}{draining_note}", missing.join(", ")),
        )
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
    } else if !gated.is_empty() {
        Check::warn(
            c,
            "alb.targets",
            format!(
                "{} healthy target(s); the pods of {} not Ready yet (their readiness gate turns next)",
                healthy.len(),
                gated.join(", ")
            ),
        )
        .hint("wait a moment (status --wait)")
    } else {
        Check::pass(
            c,
            "alb.targets",
            format!("{} healthy target(s), one per ready pod{draining_note}", pods.serving.len()),
        )
    }
}

#[derive(Clone)]
struct Seen {
    state: AlbState,
    pods: Pods,
    /// Where the controller was looked for, for the message when there is no ALB.
    stack: String,
    cluster: String,
    /// The network interfaces of targets that are not healthy (read only then), by pod address.
    interfaces: BTreeMap<String, PodInterface>,
    /// `namespace/name` of each GraphQL pod, by address.
    names: BTreeMap<String, String>,
}

/// Whether a target pod's network interface lets the controller open it to the ALB: the
/// controller adds its rule to the interface's only security group, or to the one tagged
/// `kubernetes.io/cluster/<cluster>`; with none or several tagged, it cannot.
fn security_groups_check(seen: &Seen) -> Check {
    let c = Category::Alb;
    let id = "alb.pod-security-groups";
    let stuck: Vec<String> = seen
        .interfaces
        .iter()
        .filter(|(_, eni)| eni.groups.len() != 1 && eni.groups.iter().filter(|(_, tagged)| *tagged).count() != 1)
        .map(|(ip, eni)| {
            let groups: Vec<&str> = eni.groups.iter().map(|(g, _)| g.as_str()).collect();
            let pod = seen.names.get(ip).map(String::as_str).unwrap_or("a pod");
            format!("{pod} ({ip}) on {} with [{}]", eni.id, groups.join(", "))
        })
        .collect();
    if !stuck.is_empty() {
        return Check::fail(
            c,
            id,
            format!(
                "no single security group tagged kubernetes.io/cluster/{} on the network interface of: {}; the controller cannot let the ALB reach these pods",
                seen.cluster,
                stuck.join("; ")
            ),
        )
        .hint(format!("tag exactly one of the interface's security groups kubernetes.io/cluster/{}=owned (or give the pods' nodes one security group)", seen.cluster));
    }
    if seen.interfaces.is_empty() {
        Check::pass(c, id, "not read: every target is healthy")
    } else {
        Check::pass(
            c,
            id,
            format!("{} target pod(s) each with a security group the controller can open", seen.interfaces.len()),
        )
    }
}

#[derive(Default)]
pub struct Alb {
    seen: Option<Seen>,
}

impl Alb {
    async fn look(env: &Env) -> Result<Seen> {
        // The account's load balancers are listed beside the reads that tell which are the Ingress's.
        let (ingress, cluster, listed, graphql_pods) = futures::try_join!(
            lookups::release_ingress(env, &env.options.user_values),
            lookups::tagging_cluster_name(env),
            lookups::alb::listing(env),
            lookups::graphql_pods(env),
        )?;
        let state = lookups::alb::find(env, listed, &ingress, &cluster).await?;
        let ips = |pick: fn(&k8s_openapi::api::core::v1::Pod) -> bool| -> BTreeSet<String> {
            graphql_pods.iter().filter(|p| pick(p)).filter_map(|p| pod_ip(p).map(str::to_string)).collect()
        };
        let pods = Pods { serving: ips(pod_containers_ready), ready: ips(pod_ready) };
        let names = graphql_pods
            .iter()
            .filter_map(|p| {
                let name = format!("{}/{}", p.metadata.namespace.as_deref()?, p.metadata.name.as_deref()?);
                Some((pod_ip(p)?.to_string(), name))
            })
            .collect();
        // Only a target that is not healthy makes its network interface worth a read.
        let unhealthy: Vec<String> = state
            .target_groups
            .iter()
            .flat_map(|tg| &tg.targets)
            .filter(|t| !matches!(t.state.as_str(), "healthy" | "draining"))
            .map(|t| t.id.clone())
            .collect();
        let interfaces = lookups::alb::pod_interfaces(env, &cluster, &unhealthy).await?;
        Ok(Seen {
            state,
            pods,
            stack: format!("stack {}, cluster {cluster}", ingress.stack()),
            cluster,
            interfaces,
            names,
        })
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
                Check::skip(c, "alb.pod-security-groups", "no ALB"),
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
        vec![lb_check, sticky, targets_check(state, &seen.pods), security_groups_check(seen)]
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
            seen.pods.serving.len()
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

    /// Pods whose containers are ready, and Ready.
    fn ips(ips: &[&str]) -> Pods {
        let set: BTreeSet<String> = ips.iter().map(|s| s.to_string()).collect();
        Pods { serving: set.clone(), ready: set }
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

    #[test]
    fn a_gated_pod_counts_before_it_is_ready_and_warns_until_its_gate_turns() {
        // Registered, first checks pending, not Ready (its gate waits for the target): a warning.
        let waiting = Pods { serving: ips(&["10.0.0.1"]).serving, ready: BTreeSet::new() };
        let c = targets_check(&state(&[("10.0.0.1", "initial")]), &waiting);
        assert_eq!(c.result, Outcome::Warn, "{}", c.message);
        // Healthy, the gate not yet turned: still a warning, not a pass with nothing to count.
        let c = targets_check(&state(&[("10.0.0.1", "healthy")]), &waiting);
        assert_eq!(c.result, Outcome::Warn, "{}", c.message);
        assert!(c.message.contains("not Ready yet"), "{}", c.message);
        let c = targets_check(&state(&[]), &waiting);
        assert_eq!(c.result, Outcome::Fail, "{}", c.message);
    }
}
