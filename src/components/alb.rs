//! The ALB the controller made for the release's Ingress, found by the
//! controller's own tags (`elbv2.k8s.aws/cluster`, `ingress.k8s.aws/stack`),
//! not by parsing the hostname: `active`, `internal`, every target group
//! sticky with `lb_cookie`, and as many healthy targets as Ready pods.
//! Owns nothing; install waits until all of that holds.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_elasticloadbalancingv2::Client as Elb;

use crate::component::{Action, Category, Check, Component};
use crate::context::Env;
use crate::error::{self, Context, Result};
use crate::record::Recorder;
use crate::wait;

use super::graphql_release::{self, fullname};

#[derive(Debug, Clone, Default)]
pub struct LoadBalancer {
    pub arn: String,
    pub name: String,
    pub state: String,
    pub scheme: String,
}

#[derive(Debug, Clone, Default)]
pub struct TargetGroup {
    pub arn: String,
    pub name: String,
    pub attributes: BTreeMap<String, String>,
    /// Target id → health state.
    pub targets: Vec<(String, String)>,
}

#[derive(Debug, Clone, Default)]
pub struct AlbState {
    pub load_balancers: Vec<LoadBalancer>,
    pub target_groups: Vec<TargetGroup>,
}

impl AlbState {
    pub fn is_empty(&self) -> bool {
        self.load_balancers.is_empty() && self.target_groups.is_empty()
    }
    pub fn load_balancer_arns(&self) -> Vec<String> {
        self.load_balancers.iter().map(|l| l.arn.clone()).collect()
    }
    pub fn summary(&self) -> String {
        format!("{} load balancer(s), {} target group(s) left", self.load_balancers.len(), self.target_groups.len())
    }
    fn sticky(tg: &TargetGroup) -> bool {
        tg.attributes.get("stickiness.enabled").map(String::as_str) == Some("true")
            && tg.attributes.get("stickiness.type").map(String::as_str) == Some("lb_cookie")
    }
}

/// ARNs of the resources tagged for this cluster and stack.
async fn tagged(elb: &Elb, arns: Vec<String>, cluster: &str, stack: &str) -> Result<Vec<String>> {
    let mut found = vec![];
    for chunk in arns.chunks(20) {
        let out = elb
            .describe_tags()
            .set_resource_arns(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(error::aws)
            .context("reading ELBv2 tags")?;
        for d in out.tag_descriptions() {
            let tags: BTreeMap<_, _> =
                d.tags().iter().map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default())).collect();
            if tags.get("elbv2.k8s.aws/cluster") == Some(&cluster) && tags.get("ingress.k8s.aws/stack") == Some(&stack)
            {
                found.push(d.resource_arn().unwrap_or_default().to_string());
            }
        }
    }
    Ok(found)
}

/// The ALB and target groups the controller made for `namespace/ingress`,
/// with each target group's attributes and target health.
pub async fn find(env: &Env, ingress: &str) -> Result<AlbState> {
    let mut state = locate(env, ingress).await?;
    let elb = &env.aws().elb;
    for tg in &mut state.target_groups {
        tg.attributes = elb
            .describe_target_group_attributes()
            .target_group_arn(&tg.arn)
            .send()
            .await
            .map_err(error::aws)
            .context("reading target group attributes")?
            .attributes()
            .iter()
            .map(|a| (a.key().unwrap_or_default().to_string(), a.value().unwrap_or_default().to_string()))
            .collect();
        tg.targets = elb
            .describe_target_health()
            .target_group_arn(&tg.arn)
            .send()
            .await
            .map_err(error::aws)
            .context("reading target health")?
            .target_health_descriptions()
            .iter()
            .map(|h| {
                (
                    h.target().and_then(|t| t.id()).unwrap_or_default().to_string(),
                    h.target_health().and_then(|t| t.state()).map(|s| s.as_str().to_string()).unwrap_or_default(),
                )
            })
            .collect();
    }
    Ok(state)
}

/// Which ALB and target groups exist for `namespace/ingress`, without their
/// details: enough to wait for them to be gone.
pub async fn locate(env: &Env, ingress: &str) -> Result<AlbState> {
    let elb = &env.aws().elb;
    let stack = format!("{}/{ingress}", env.spec.namespace);
    let mut all_lbs = vec![];
    let mut pages = elb.describe_load_balancers().into_paginator().send();
    while let Some(page) = pages.next().await {
        all_lbs.extend(page.map_err(error::aws).context("listing load balancers")?.load_balancers().to_vec());
    }
    let ours = tagged(
        elb,
        all_lbs.iter().filter_map(|l| l.load_balancer_arn().map(str::to_string)).collect(),
        &env.facts.name,
        &stack,
    )
    .await?;
    let load_balancers = all_lbs
        .iter()
        .filter(|l| l.load_balancer_arn().is_some_and(|a| ours.iter().any(|o| o == a)))
        .map(|l| LoadBalancer {
            arn: l.load_balancer_arn().unwrap_or_default().into(),
            name: l.load_balancer_name().unwrap_or_default().into(),
            state: l.state().and_then(|s| s.code()).map(|c| c.as_str().to_string()).unwrap_or_default(),
            scheme: l.scheme().map(|s| s.as_str().to_string()).unwrap_or_default(),
        })
        .collect();
    let mut all_tgs = vec![];
    let mut pages = elb.describe_target_groups().into_paginator().send();
    while let Some(page) = pages.next().await {
        all_tgs.extend(page.map_err(error::aws).context("listing target groups")?.target_groups().to_vec());
    }
    let ours = tagged(
        elb,
        all_tgs.iter().filter_map(|t| t.target_group_arn().map(str::to_string)).collect(),
        &env.facts.name,
        &stack,
    )
    .await?;
    let target_groups = all_tgs
        .iter()
        .filter(|t| t.target_group_arn().is_some_and(|a| ours.iter().any(|o| o == a)))
        .map(|tg| TargetGroup {
            arn: tg.target_group_arn().unwrap_or_default().to_string(),
            name: tg.target_group_name().unwrap_or_default().to_string(),
            ..Default::default()
        })
        .collect();
    Ok(AlbState { load_balancers, target_groups })
}

#[derive(Default)]
pub struct Alb {
    seen: Option<(AlbState, usize)>,
}

impl Alb {
    async fn look(env: &Env) -> Result<(AlbState, usize)> {
        let state = find(env, &fullname(&env.spec.release)).await?;
        let ready = graphql_release::graphql_pods(env).await?.iter().filter(|p| graphql_release::pod_ready(p)).count();
        Ok((state, ready))
    }

    fn evaluate(state: &AlbState, ready: usize) -> Vec<Check> {
        let c = Category::Alb;
        let Some(lb) = state.load_balancers.first() else {
            return vec![
                Check::fail(c, "alb.load-balancer", "no ALB carries the controller's tags for this Ingress")
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
            .filter(|t| !AlbState::sticky(t))
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
        let targets: Vec<_> = state.target_groups.iter().flat_map(|t| &t.targets).collect();
        let unhealthy: Vec<_> =
            targets.iter().filter(|(_, h)| h != "healthy").map(|(id, h)| format!("{id} {h}")).collect();
        let healthy = targets.len() - unhealthy.len();
        let targets_check = if !unhealthy.is_empty() {
            Check::fail(c, "alb.targets", format!("unhealthy targets: {}", unhealthy.join(", ")))
                .hint("check the pods' readiness and the health check path")
        } else if healthy != ready {
            Check::fail(c, "alb.targets", format!("{healthy} healthy target(s) for {ready} Ready pod(s)"))
                .hint("the controller registers Ready pods; check its logs and the TargetGroupBinding")
        } else {
            Check::pass(c, "alb.targets", format!("{healthy} healthy target(s), one per Ready pod"))
        };
        vec![lb_check, sticky, targets_check]
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
        let (state, ready) = self.seen.as_ref().expect("observed");
        let all_pass = Self::evaluate(state, *ready).iter().all(Check::passed);
        Ok(if env.options.wait && !all_pass {
            vec![Action::wait("the ALB is active, its target groups sticky and its targets healthy")]
        } else {
            vec![]
        })
    }

    async fn apply(&mut self, env: &Env, _record: &mut Recorder) -> Result<()> {
        if !env.options.wait {
            return Ok(());
        }
        let seen = wait::until(env, "the ALB", || async {
            let (state, ready) = Self::look(env).await?;
            let checks = Self::evaluate(&state, ready);
            Ok(match checks.iter().find(|c| !c.passed()) {
                None => Ok((state, ready)),
                Some(failing) => Err(failing.message.clone()),
            })
        })
        .await?;
        env.progress.done(&format!(
            "ALB {} is active, sticky, with {} healthy target(s)",
            seen.0.load_balancers[0].name, seen.1
        ));
        self.seen = Some(seen);
        Ok(())
    }

    async fn checks(&self, _env: &Env) -> Vec<Check> {
        let (state, ready) = self.seen.as_ref().expect("observed");
        Self::evaluate(state, *ready)
    }

    fn removal(&self, _env: &Env) -> Result<Vec<Action>> {
        Ok(vec![]) // the controller owns the ALB; the release's removal waits for it to go
    }

    async fn remove(&mut self, _env: &Env, _record: &mut Recorder) -> Result<()> {
        Ok(())
    }
}
