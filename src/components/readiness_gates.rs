//! Zero-downtime rollouts: the release namespace carries
//! `elbv2.k8s.aws/pod-readiness-gate-inject=enabled`, so the controller's
//! webhook gives every new GraphQL pod a readiness gate
//! (`target-health.elbv2.k8s.aws/<binding>`) and a rolling update waits
//! until each new pod's target is healthy in the ALB. The webhook injects
//! gates only into pods created once the TargetGroupBinding exists, so pods
//! of a first install (made before the controller bound the Service) are
//! restarted once, after the Ingress got its ALB. The label is added with a
//! mark on the namespace; only a label the mark proves this tool added is
//! removed, and not while another release in the namespace is installed.
//! EKS Auto Mode's ALB controller supports no readiness gates: there, nothing
//! is labelled, and status says rollouts are not gated instead of failing.

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::component::Env;
use crate::component::{Action, Category, Check, Component, Fate, Verb};
use crate::error::{Context, Result};
use crate::lookups::{self, READINESS_GATE_PREFIX};
use crate::pins::NAMESPACE_LABEL_MARK;
use crate::record::Recorder;
use crate::wait;

pub const INJECT_LABEL: (&str, &str) = ("elbv2.k8s.aws/pod-readiness-gate-inject", "enabled");
/// Set once on the pod template to restart the pods that predate the binding;
/// a fixed value, so a re-run after an interruption renders the same template.
const RESTART_ANNOTATION: (&str, &str) = ("kubectl-scalardb-graphql/readiness-gates", "injected");

#[derive(Default)]
pub struct ReadinessGates {
    seen: Option<Seen>,
}

#[derive(Clone, Default)]
struct Seen {
    namespace_exists: bool,
    labelled: bool,
    /// This tool's mark on the namespace: it added the label.
    marked: bool,
    /// The release's Deployment, as helm named it.
    deployment: Option<String>,
    restarted: bool,
    pods: usize,
    without_gates: Vec<String>,
}

fn has_gate(p: &Pod) -> bool {
    p.spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_ref())
        .is_some_and(|g| g.iter().any(|g| g.condition_type.starts_with(READINESS_GATE_PREFIX)))
}

impl ReadinessGates {
    /// EKS Auto Mode's ALB controller injects and sets no readiness gates.
    fn unsupported(env: &Env) -> bool {
        env.spec.lb_controller.mode == crate::spec::LbControllerMode::AutoMode
    }

    /// Uninstall's one decision: the label goes only if the namespace's own mark
    /// says install added it, and no other release in the namespace needs it.
    fn fate(&self, env: &Env) -> Fate {
        let seen = self.seen.as_ref();
        if !seen.is_some_and(|s| s.labelled) {
            Fate::Absent
        } else if !seen.is_some_and(|s| s.marked) {
            Fate::Keep(format!("label {} carries no mark of this tool (it was there before install)", INJECT_LABEL.0))
        } else if let Some(kept) = &env.shared.namespace_label {
            Fate::kept(kept)
        } else {
            Fate::Remove(())
        }
    }

    async fn look(env: &Env) -> Result<Seen> {
        let ns = &env.spec.namespace;
        let namespaces: Api<Namespace> = Api::all(env.kube().clone());
        let Some(namespace) = namespaces.get_opt(ns).await.context(format!("reading namespace {ns}"))? else {
            return Ok(Seen::default());
        };
        let labelled = namespace.metadata.labels.as_ref().and_then(|l| l.get(INJECT_LABEL.0)).map(String::as_str)
            == Some(INJECT_LABEL.1);
        let marked = namespace.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(NAMESPACE_LABEL_MARK));
        let deployments: Api<Deployment> = Api::namespaced(env.kube().clone(), ns);
        let deployment = deployments
            .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={}", env.spec.release)))
            .await
            .context(format!("listing Deployments in {ns}"))?
            .into_iter()
            .find(|d| lookups::released_by(&d.metadata, &env.spec.release, ns));
        let restarted = deployment
            .as_ref()
            .and_then(|d| d.spec.as_ref()?.template.metadata.as_ref()?.annotations.as_ref())
            .and_then(|a| a.get(RESTART_ANNOTATION.0))
            .is_some();
        let pods = lookups::graphql_pods(env).await?;
        Ok(Seen {
            namespace_exists: true,
            labelled,
            marked,
            deployment: deployment.and_then(|d| d.metadata.name),
            restarted,
            pods: pods.len(),
            without_gates: pods.iter().filter(|p| !has_gate(p)).filter_map(|p| p.metadata.name.clone()).collect(),
        })
    }

    /// Whether install restarts the pods: some lack the gate, and a restart has not already been tried.
    fn restart_due(seen: &Seen, env: &Env) -> bool {
        env.options.wait && seen.deployment.is_some() && !seen.without_gates.is_empty() && !seen.restarted
    }
}

#[async_trait]
impl Component for ReadinessGates {
    fn name(&self) -> &'static str {
        "pod readiness gates"
    }

    fn category(&self) -> Category {
        Category::Graphql
    }

    async fn observe(&mut self, env: &Env) -> Result<()> {
        self.seen = Some(Self::look(env).await?);
        Ok(())
    }

    fn plan(&self, env: &Env) -> Result<Vec<Action>> {
        if Self::unsupported(env) {
            return Ok(vec![]);
        }
        let seen = self.seen.as_ref().expect("observed");
        let mut actions = vec![];
        if !seen.labelled {
            actions.push(
                Action::kube(Verb::Update, "Namespace", &env.spec.namespace)
                    .because(format!("label {}={}", INJECT_LABEL.0, INJECT_LABEL.1)),
            );
        }
        // Before the release exists its pods are made later, with the label already there.
        if Self::restart_due(seen, env) {
            actions.push(
                Action::kube(Verb::Update, "Deployment", seen.deployment.clone().unwrap_or_default())
                    .because("restart the pods that predate the controller's binding, so they get readiness gates"),
            );
        }
        Ok(actions)
    }

    async fn apply(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        if Self::unsupported(env) {
            return Ok(());
        }
        let seen = Self::look(env).await?;
        let ns = &env.spec.namespace;
        if !seen.labelled {
            record.update(|r| r.readiness_gate_label = true).await?;
            let namespaces: Api<Namespace> = Api::all(env.kube().clone());
            let patch = json!({"metadata": {"labels": {INJECT_LABEL.0: INJECT_LABEL.1},
                "annotations": {NAMESPACE_LABEL_MARK: "true"}}});
            namespaces
                .patch(ns, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .context(format!("labelling namespace {ns}"))?;
            env.progress.done(&format!("labelled namespace {ns} {}={}", INJECT_LABEL.0, INJECT_LABEL.1));
        }
        if Self::restart_due(&seen, env) {
            let name = seen.deployment.clone().unwrap_or_default();
            let deployments: Api<Deployment> = Api::namespaced(env.kube().clone(), ns);
            let patch = json!({"spec": {"template": {"metadata": {"annotations": {RESTART_ANNOTATION.0: RESTART_ANNOTATION.1}}}}});
            deployments
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .context(format!("restarting Deployment {ns}/{name}"))?;
            env.progress.done(&format!("restarted Deployment {ns}/{name} so its pods get readiness gates"));
        }
        if !env.options.wait || seen.deployment.is_none() {
            self.seen = Some(Self::look(env).await?);
            return Ok(());
        }
        let name = seen.deployment.clone().unwrap_or_default();
        let deployments: Api<Deployment> = Api::namespaced(env.kube().clone(), ns);
        let now = wait::until(env, &format!("Deployment {ns}/{name} to finish its rollout"), || async {
            let d = deployments.get(&name).await.context(format!("reading Deployment {ns}/{name}"))?;
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let st = d.status.clone().unwrap_or_default();
            let observed = st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
            // The old pods gone too, not only terminating.
            let pods: Api<Pod> = Api::namespaced(env.kube().clone(), ns);
            let listed = pods
                .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={}", env.spec.release)))
                .await
                .context("listing the GraphQL pods")?
                .items
                .len();
            let done = observed
                && st.updated_replicas.unwrap_or(0) == want
                && st.available_replicas.unwrap_or(0) == want
                && st.replicas.unwrap_or(0) == want
                && listed == want as usize;
            Ok(if done {
                Ok(Self::look(env).await?)
            } else {
                Err(format!(
                    "{}/{want} updated, {}/{want} available",
                    st.updated_replicas.unwrap_or(0),
                    st.available_replicas.unwrap_or(0)
                ))
            })
        })
        .await?;
        if !now.without_gates.is_empty() {
            env.progress.warn(&format!(
                "pods without the controller's readiness gates: {} (is the controller's pod webhook running?)",
                now.without_gates.join(", ")
            ));
        }
        self.seen = Some(now);
        Ok(())
    }

    async fn checks(&self, env: &Env) -> Vec<Check> {
        let seen = self.seen.as_ref().expect("observed");
        let c = Category::Graphql;
        if Self::unsupported(env) {
            return vec![Check::warn(
                c,
                "graphql.readiness-gates",
                "EKS Auto Mode's ALB controller supports no pod readiness gates: a rolling update does not wait for each new pod's ALB target to be healthy",
            )
            .hint("roll out slowly (maxUnavailable 0, minReadySeconds longer than the target group's health checks take)")];
        }
        let ns = &env.spec.namespace;
        let check = if !seen.namespace_exists {
            Check::skip(c, "graphql.readiness-gates", format!("namespace {ns} does not exist"))
        } else if !seen.labelled {
            Check::warn(
                c,
                "graphql.readiness-gates",
                format!(
                    "namespace {ns} lacks {}={}: rolling updates do not wait for the ALB",
                    INJECT_LABEL.0, INJECT_LABEL.1
                ),
            )
            .hint("re-run install (it labels the namespace and restarts the pods once)")
        } else if !seen.without_gates.is_empty() {
            Check::warn(
                c,
                "graphql.readiness-gates",
                format!("pods without the controller's readiness gate: {}", seen.without_gates.join(", ")),
            )
            .hint(format!(
                "pods made before the controller bound the Service get no gate: kubectl -n {ns} rollout restart deployment {}",
                seen.deployment.as_deref().unwrap_or("<release>")
            ))
        } else {
            Check::pass(
                c,
                "graphql.readiness-gates",
                format!("namespace labelled for readiness gates; {} pod(s) wait for a healthy ALB target", seen.pods),
            )
        };
        vec![check]
    }

    fn removal(&self, env: &Env) -> Result<Vec<Action>> {
        Ok(match self.fate(env) {
            Fate::Remove(()) => vec![
                Action::kube(Verb::Update, "Namespace", &env.spec.namespace)
                    .because(format!("remove label {}", INJECT_LABEL.0)),
            ],
            kept => Action::kept("kubernetes", "Namespace", &env.spec.namespace, &kept).into_iter().collect(),
        })
    }

    async fn remove(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        if self.fate(env) == Fate::Remove(()) {
            let ns = &env.spec.namespace;
            let namespaces: Api<Namespace> = Api::all(env.kube().clone());
            let patch =
                json!({"metadata": {"labels": {INJECT_LABEL.0: null}, "annotations": {NAMESPACE_LABEL_MARK: null}}});
            namespaces
                .patch(ns, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .context(format!("removing the label {} from namespace {ns}", INJECT_LABEL.0))?;
            env.progress.done(&format!("removed label {} from namespace {ns}", INJECT_LABEL.0));
        }
        record.update(|r| r.readiness_gate_label = false).await
    }
}
