//! The deployment as one ordered list of components, and the three commands
//! as traversals of it: install (observe → plan → apply, in order), status
//! (observe → checks, each component's concurrently), uninstall (observe → remove, in reverse).

use std::time::Instant;

use futures::future::join_all;

use crate::component::Env;
use crate::component::{Action, Check, Component, Outcome, Plan, PlanStep};
use crate::components::{
    alb::Alb, auto_mode_class::AutoModeClass, cluster_secret, controller_crds::ControllerCrds, database_secret,
    dedicated_nodes::DedicatedNodes, graphql_release::GraphqlRelease, iam_policy::IamPolicy, iam_role::IamRole,
    ingress::Ingress, lb_controller::LbController, lbc_service_account::ControllerServiceAccount,
    oidc_provider::OidcProvider, owned_ingress::OwnedIngress, owned_secret::OwnedSecret,
    pod_identity_agent::PodIdentityAgent, pod_identity_association::PodIdentityAssociation, probe::Probe,
    readiness_gates::ReadinessGates, registry_secret, release_namespace::ReleaseNamespace, schema_load::SchemaLoad,
    subnet_tags::SubnetTags,
};
use crate::context::{ClusterFacts, Context};
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::lease::{self, Held};
use crate::record::{Recorder, Stored};
use crate::spec::{Identity, LbControllerMode, Mode, Options, Secrets, Spec, Target};
use crate::wait::Progress;

/// The Schema Loader's Job, which `schema load|delete` also run outside the list.
pub use crate::components::schema_load::LoaderJob;

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
///
/// On EKS Auto Mode (`--lb-controller auto-mode`) the cluster runs the ALB
/// controller: none of the self-managed controller's pieces, only the subnet
/// tags it finds subnets by and the IngressClass (with its parameters) it serves.
pub fn components(target: Target, controller: LbControllerMode) -> Vec<Box<dyn Component>> {
    let mut list: Vec<Box<dyn Component>> =
        vec![Box::new(ReleaseNamespace::default()), Box::new(DedicatedNodes::default())];
    match controller {
        LbControllerMode::SelfManaged => list.extend([
            Box::new(ControllerCrds::default()) as Box<dyn Component>,
            Box::new(SubnetTags::default()),
            Box::new(OidcProvider::default()),
            Box::new(PodIdentityAgent::default()),
            Box::new(IamPolicy::default()),
            Box::new(IamRole::default()),
            Box::new(PodIdentityAssociation::default()),
            Box::new(ControllerServiceAccount::default()),
            Box::new(LbController::default()),
        ]),
        LbControllerMode::AutoMode => {
            list.extend([Box::new(SubnetTags::default()) as Box<dyn Component>, Box::new(AutoModeClass::default())])
        }
    }
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

/// What a command brings to its traversal: the clients and the cluster's facts, what the
/// user asked for, the command's one deadline, and where progress is shown.
pub struct Start {
    pub ctx: Context,
    pub facts: ClusterFacts,
    pub options: Options,
    pub secrets: Secrets,
    pub deadline: Deadline,
    pub progress: std::sync::Arc<dyn Progress>,
}

impl Start {
    /// The environment every component gets, and the list for its spec.
    fn env(self, spec: Spec, record: crate::record::Record) -> (Env, Vec<Box<dyn Component>>) {
        let Start { ctx, facts, options, secrets, deadline, progress } = self;
        let components = components(spec.target, spec.lb_controller.mode);
        let reads = match options.mode {
            Mode::Status => crate::memo::Memo::keeping(),
            _ => crate::memo::Memo::default(),
        };
        let env =
            Env { ctx, progress, facts, spec, record, options, deadline, secrets, shared: Default::default(), reads };
        (env, components)
    }
}

/// Install's environment: the spec completed for this cluster and checked against the install
/// record (the same release, no switch of target), and the controller's way chosen (`flags`:
/// `--lb-controller` and `--identity` as given).
pub async fn for_install(
    start: Start,
    spec: Spec,
    existing: Option<&Stored>,
    flags: (Option<LbControllerMode>, Option<Identity>),
) -> Result<(Env, Vec<Box<dyn Component>>)> {
    let mut spec = spec.resolve(&start.facts.name, &start.ctx.kube.namespace);
    if let Some(s) = existing {
        s.record.vet(&spec.namespace, &spec.release)?;
        s.record.refuse_target_switch(&spec)?;
    }
    let record = existing.map(|s| s.record.clone()).unwrap_or_default();
    let installed = record.spec.as_ref().filter(|_| existing.is_some_and(|s| !s.record.uninstalled));
    let (eks, facts) = (&start.ctx.aws.eks, &start.facts);
    crate::controller::resolve(&mut spec.lb_controller, flags, installed, eks, &facts.name, facts.auto_mode).await?;
    Ok(start.env(spec, record))
}

/// Uninstall's environment: what the install record says was installed (the defaults for a
/// record without a spec), once the record is found to be this release's.
pub fn for_uninstall(start: Start, release: &str, existing: &Stored) -> Result<(Env, Vec<Box<dyn Component>>)> {
    let namespace = start.ctx.kube.namespace.clone();
    existing.record.vet(&namespace, release)?;
    let spec =
        existing.record.spec.clone().unwrap_or_else(|| crate::spec::defaults(release, &start.facts.name, &namespace));
    Ok(start.env(spec, existing.record.clone()))
}

/// Status's environment: what the install record says was installed, or the defaults when
/// there is no record, it cannot be read, or it is not this release's (said as a warning).
pub fn for_status(start: Start, release: &str, existing: Result<Option<Stored>>) -> (Env, Vec<Box<dyn Component>>) {
    let namespace = start.ctx.kube.namespace.clone();
    let existing = match existing.ok().flatten() {
        Some(s) => match s.record.vet(&namespace, release) {
            Ok(()) => Some(s.record),
            Err(e) => {
                start.progress.warn(&format!("{e}; checking the defaults instead"));
                None
            }
        },
        None => None,
    };
    let spec = existing
        .as_ref()
        .and_then(|r| r.spec.clone())
        .unwrap_or_else(|| crate::spec::defaults(release, &start.facts.name, &namespace));
    start.env(spec, existing.unwrap_or_default())
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

/// The Leases a changing run holds: its release's, and while it changes (or
/// starts to use) the shared pieces, the cluster's. Checked before each change.
struct Leases {
    release: Held,
    shared: Option<Held>,
}

impl Leases {
    /// The release's Lease, then the cluster's (one order everywhere: no deadlock).
    async fn take(env: &Env, command: &str) -> Result<Leases> {
        let release = lease::acquire(env.kube(), &env.spec.namespace, &env.spec.release, command).await?;
        let what = format!("{command} of {}/{}", env.spec.namespace, env.spec.release);
        match lease::acquire_shared(env.kube(), &what).await {
            Ok(shared) => Ok(Leases { release, shared: Some(shared) }),
            Err(e) => {
                let _ = release.release().await;
                Err(e)
            }
        }
    }

    fn check(&self) -> Result<()> {
        self.release.check()?;
        self.shared.as_ref().map_or(Ok(()), Held::check)
    }

    async fn release_shared(&mut self) -> Result<()> {
        match self.shared.take() {
            Some(shared) => shared.release().await,
            None => Ok(()),
        }
    }

    async fn release(mut self) -> Result<()> {
        let shared = self.release_shared().await;
        self.release.release().await.and(shared)
    }
}

/// Runs `work` under the Leases, giving them back whatever it returns.
async fn holding<T>(leases: Leases, work: impl AsyncFnOnce(&mut Leases) -> Result<T>) -> Result<T> {
    let mut leases = leases;
    let result = work(&mut leases).await;
    let released = leases.release().await;
    let value = result?;
    released.map(|()| value)
}

/// Applies, in order, under the Leases. The release is first written down as
/// one of the cluster's (so that a concurrent uninstall counts it among the
/// shared pieces' users), then everything is observed again and planned
/// anew, as another run may have changed the shared pieces meanwhile. The
/// cluster's Lease is given back after the last shared piece. Every
/// component's apply runs: a converged one changes nothing and its waits
/// return at once.
pub async fn install(components: &mut [Box<dyn Component>], env: &Env, recorder: &mut Recorder) -> Result<()> {
    recorder.ensure_namespace().await?;
    let release = lease::acquire(env.kube(), &env.spec.namespace, &env.spec.release, "install").await?;
    let registered = recorder
        .update(|r| {
            r.spec = Some(env.spec.recorded());
            r.uninstalled = false;
        })
        .await;
    let shared = match registered {
        Ok(()) => {
            lease::acquire_shared(env.kube(), &format!("install of {}/{}", env.spec.namespace, env.spec.release)).await
        }
        Err(e) => Err(e),
    };
    let leases = match shared {
        Ok(shared) => Leases { release, shared: Some(shared) },
        Err(e) => {
            let _ = release.release().await;
            return Err(e);
        }
    };
    holding(leases, async |leases: &mut Leases| {
        plan_install(components, env).await?;
        let last_shared = components.iter().rposition(|c| c.shared());
        for i in 0..components.len() {
            leases.check()?;
            components[i].apply(env, recorder).await?;
            if Some(i) == last_shared {
                // What a switch left of the other way goes once the controller runs the new one, in reverse.
                for j in (0..=i).rev() {
                    leases.check()?;
                    components[j].retire(env, recorder).await?;
                }
                leases.release_shared().await?;
            }
        }
        Ok(())
    })
    .await
}

/// Install with nothing to change: every component's apply still runs (a
/// converged one changes nothing, and its waits return at once, or wait for
/// what is still coming: the ALB, the probe), without Leases. The record's
/// spec is written only when it differs (the same pieces, named anew: `--nodes`).
pub async fn converged(components: &mut [Box<dyn Component>], env: &Env, recorder: &mut Recorder) -> Result<()> {
    let recorded = env.spec.recorded();
    if recorder.record.spec.as_ref() != Some(&recorded) {
        recorder.update(|r| r.spec = Some(recorded)).await?;
    }
    for c in components.iter_mut() {
        c.apply(env, recorder).await?;
    }
    Ok(())
}

/// Uninstall's plan: who else uses the shared pieces (the one decision about
/// them, in `env.shared`), then what each component would remove, in reverse order.
pub async fn plan_uninstall(components: &mut [Box<dyn Component>], env: &mut Env) -> Result<Plan> {
    let values = crate::values::release(&env.spec, &env.options.user_values);
    let ours = crate::lookups::release_ingress(env, &values).await?;
    env.shared = crate::lookups::users::shared(env, &ours).await?;
    for result in observe_all(components, env).await {
        result?;
    }
    let mut plan = Plan::default();
    for c in components.iter().rev() {
        plan.steps.push(PlanStep { component: c.name(), actions: c.removal(env)? });
    }
    Ok(plan)
}

/// The changes of `now` that `shown` did not list.
fn unconfirmed(shown: &Plan, now: &Plan) -> Vec<String> {
    let key = |a: &Action| (a.verb, a.operation.clone(), a.target.clone());
    let confirmed: Vec<_> = shown.actions().filter(|a| a.mutates()).map(key).collect();
    now.actions().filter(|a| a.mutates() && !confirmed.contains(&key(a))).map(|a| a.to_string()).collect()
}

/// Removes, in reverse order, under both Leases. Who else uses the shared
/// pieces, and so every fate, is observed again once the Leases are held; a
/// change the plan shown to the user did not list stops the run before
/// anything is removed. When something this tool created stays for a later
/// uninstall of this release (a --keep flag, something outside this tool
/// still needing it), the record stays, marked uninstalled. Returns the plan
/// carried out.
pub async fn uninstall(
    components: &mut [Box<dyn Component>],
    env: &mut Env,
    recorder: &mut Recorder,
    shown: Option<&Plan>,
) -> Result<Plan> {
    let leases = Leases::take(env, "uninstall").await?;
    holding(leases, async |leases: &mut Leases| {
        let plan = plan_uninstall(components, env).await?;
        if let Some(shown) = shown {
            let new = unconfirmed(shown, &plan);
            if !new.is_empty() {
                return Err(Error::failed(format!(
                    "the cluster changed while the plan was shown: uninstall would now also {}; nothing was changed",
                    new.join("; ")
                ))
                .hint("run uninstall again to see the new plan"));
            }
        }
        for c in components.iter_mut().rev() {
            leases.check()?;
            c.remove(env, recorder).await?;
        }
        leases.check()?;
        if plan.record_stays() {
            recorder.update(|r| r.uninstalled = true).await?;
        } else {
            recorder.delete().await?;
        }
        Ok(plan)
    })
    .await
}

/// Runs the changing traversal the command is (`env.options.mode`), after its plan: install
/// applies it, or with nothing to change waits for what is still coming; uninstall removes,
/// refusing anything the plan `confirmed` by the user did not list. Returns the plan
/// uninstall carried out (install: none).
pub async fn change(
    components: &mut [Box<dyn Component>],
    env: &mut Env,
    recorder: &mut Recorder,
    plan: &Plan,
    confirmed: bool,
) -> Result<Option<Plan>> {
    match env.options.mode {
        Mode::Install if plan.mutations() > 0 => install(components, env, recorder).await.map(|()| None),
        // Nothing to change, nothing held: only what install waits for (the ALB, the probe).
        Mode::Install => converged(components, env, recorder).await.map(|()| None),
        Mode::Uninstall => {
            env.progress.stage("taking the Leases, and observing again");
            uninstall(components, env, recorder, confirmed.then_some(plan)).await.map(Some)
        }
        Mode::Status => unreachable!("status changes nothing"),
    }
}

/// One round of status: every component observed and checked, all side by side, each
/// checked as soon as its own observation is in (a check reads only its own component's
/// state: the probe, given its URL, need not wait for the slowest read of another).
/// A component that cannot be observed fails in its own category.
pub async fn checks(components: &mut [Box<dyn Component>], env: &Env) -> Vec<Check> {
    let checks = join_all(components.iter_mut().map(|c| async move {
        match c.observe(env).await {
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
        env.reads.forget(); // each round reads the cluster afresh
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
