//! The deployment as one ordered list of components, and the three commands
//! as traversals of it: install (observe → plan → apply, in order), status
//! (observe → checks, concurrently), uninstall (observe → remove, in reverse).

use std::time::Instant;

use futures::future::join_all;

use crate::component::Env;
use crate::component::{Check, Component, Outcome, Plan, PlanStep};
use crate::components::{
    alb::Alb, cluster_secret, controller_crds::ControllerCrds, database_secret, dedicated_nodes::DedicatedNodes,
    graphql_release::GraphqlRelease, iam_policy::IamPolicy, iam_role::IamRole, ingress::Ingress,
    lb_controller::LbController, lbc_service_account::ControllerServiceAccount, oidc_provider::OidcProvider,
    owned_ingress::OwnedIngress, owned_secret::OwnedSecret, probe::Probe, readiness_gates::ReadinessGates,
    registry_secret, schema_load::SchemaLoad, subnet_tags::SubnetTags,
};
use crate::error::{Error, Result};
use crate::record::Recorder;
use crate::spec::Target;

/// Install order; uninstall walks it backwards. The dedicated nodes are
/// tainted first, before anything else is scheduled (the controller's pods
/// must not land there). The controller's CRDs come next and the subnet
/// tags before IAM so that uninstall removes the CRDs after the subnet
/// tags, when nothing can use them any more.
///
/// The two targets share all but the GraphQL part: the standalone server
/// pulls a private image (registry Secret) and its chart makes the Ingress;
/// ScalarDB Cluster's nodes read one Secret of environment variables, and
/// the Ingress is this tool's, after the release (so it goes first).
pub fn components(target: Target) -> Vec<Box<dyn Component>> {
    let mut list: Vec<Box<dyn Component>> = vec![
        Box::new(DedicatedNodes::default()),
        Box::new(ControllerCrds::default()),
        Box::new(SubnetTags::default()),
        Box::new(OidcProvider::default()),
        Box::new(IamPolicy::default()),
        Box::new(IamRole::default()),
        Box::new(ControllerServiceAccount::default()),
        Box::new(LbController::default()),
    ];
    match target {
        Target::Graphql => {
            list.push(Box::new(OwnedSecret::new(&registry_secret::KIND)));
            list.push(Box::new(OwnedSecret::new(&database_secret::KIND)));
            list.push(Box::new(SchemaLoad::default()));
            list.push(Box::new(GraphqlRelease::default()));
        }
        Target::Cluster => {
            list.push(Box::new(OwnedSecret::new(&cluster_secret::KIND)));
            list.push(Box::new(SchemaLoad::default()));
            list.push(Box::new(GraphqlRelease::default()));
            list.push(Box::new(OwnedIngress::default()));
        }
    }
    list.extend([
        Box::new(Ingress::default()) as Box<dyn Component>,
        Box::new(ReadinessGates::default()),
        Box::new(Alb::default()),
        Box::new(Probe::default()),
    ]);
    list
}

/// Observes every component; they only read, so they run concurrently.
async fn observe_all(components: &mut [Box<dyn Component>], env: &Env) -> Vec<Result<()>> {
    join_all(components.iter_mut().map(|c| c.observe(env))).await
}

/// Install's plan: what each component would change, in order.
pub async fn plan_install(components: &mut [Box<dyn Component>], env: &Env) -> Result<Plan> {
    for result in observe_all(components, env).await {
        result?;
    }
    let mut plan = Plan::default();
    for c in components.iter() {
        plan.steps.push(PlanStep { component: c.name(), actions: c.plan(env)? });
    }
    Ok(plan)
}

/// Applies, in order. Every component's apply runs: a converged one changes
/// nothing and its waits return at once.
pub async fn install(components: &mut [Box<dyn Component>], env: &Env, recorder: &mut Recorder) -> Result<()> {
    recorder.update(|r| r.spec = Some(env.spec.clone())).await?;
    for c in components.iter_mut() {
        c.apply(env, recorder).await?;
    }
    Ok(())
}

/// Uninstall's plan: what each component would remove, in reverse order.
pub async fn plan_uninstall(components: &mut [Box<dyn Component>], env: &Env) -> Result<Plan> {
    for result in observe_all(components, env).await {
        result?;
    }
    let mut plan = Plan::default();
    for c in components.iter().rev() {
        plan.steps.push(PlanStep { component: c.name(), actions: c.removal(env)? });
    }
    Ok(plan)
}

/// Removes, in reverse order. When something this tool created stays (a
/// --keep flag, or the controller still needed by another Ingress), the record
/// stays too, so that a later uninstall can still remove it; returns whether it did.
pub async fn uninstall(components: &mut [Box<dyn Component>], env: &Env, recorder: &mut Recorder) -> Result<bool> {
    for c in components.iter_mut().rev() {
        c.remove(env, recorder).await?;
    }
    let r = &recorder.record;
    let created = |o: &Option<crate::record::Owned>| o.as_ref().is_some_and(|o| o.created);
    let keeps_ours = (env.options.controller_kept().is_some() && r.lb_controller.as_ref().is_some_and(|c| c.installed))
        || (env.options.iam_kept().is_some()
            && (created(&r.oidc_provider) || created(&r.iam_policy) || created(&r.iam_role)));
    if keeps_ours {
        recorder.save().await?;
    } else {
        recorder.delete().await?;
    }
    Ok(keeps_ours)
}

/// One round of status: observe everything, then every component's checks.
/// A component that cannot be observed fails in its own category.
pub async fn checks(components: &mut [Box<dyn Component>], env: &Env) -> Vec<Check> {
    let observed = observe_all(components, env).await;
    let checks = join_all(components.iter().zip(observed).map(|(c, observed)| async move {
        match observed {
            Ok(()) => c.checks(env).await,
            Err(e) => vec![
                Check::fail(c.category(), "observe", format!("cannot read the {}: {e}", c.name()))
                    .hint(e.hint_text().unwrap_or("check permissions and connectivity").to_string()),
            ],
        }
    }))
    .await;
    let mut all: Vec<Check> = checks.into_iter().flatten().collect();
    all.sort_by_key(|c| c.category);
    all
}

/// Status with --wait: poll until every check passes or the deadline; the last round either way.
/// A round starts only when one as long as the last still fits before the deadline, so the
/// state shown is a whole round's, not one cut short (a probe Pod stopped half-way).
pub async fn checks_until(
    components: &mut [Box<dyn Component>],
    env: &Env,
    keep: impl Fn(&Check) -> bool,
    deadline: Option<Instant>,
) -> (Vec<Check>, bool) {
    loop {
        let started = Instant::now();
        let round: Vec<Check> = checks(components, env).await.into_iter().filter(&keep).collect();
        let took = started.elapsed();
        let failing: Vec<&Check> = round.iter().filter(|c| c.result == Outcome::Fail).collect();
        let Some(deadline) = deadline else {
            return (round, false);
        };
        if failing.is_empty() {
            return (round, false);
        }
        if Instant::now() + crate::wait::INTERVAL + took > deadline {
            return (round, true);
        }
        env.progress.waiting(&format!("{} check(s) failing, first: {}", failing.len(), failing[0].message));
        tokio::time::sleep(crate::wait::INTERVAL).await;
    }
}

/// The exit status a set of checks means: 0 when all pass (warnings allowed), 1 otherwise.
pub fn verdict(checks: &[Check]) -> Result<()> {
    let failed = checks.iter().filter(|c| c.result == Outcome::Fail).count();
    if failed == 0 { Ok(()) } else { Err(Error::failed(format!("{failed} check(s) failed"))) }
}
