//! The controller's ServiceAccount, annotated with the IAM role's ARN (IRSA),
//! or with no annotation (EKS Pod Identity: the association names it, and an
//! annotation's web identity would come first in the SDK's credential chain).
//! Pods get IRSA's or the agent's token and environment only when they are
//! created, so a change of either restarts the controller's pods. A ServiceAccount this
//! tool did not create keeps, in an annotation of its own, the value install
//! replaced, and uninstall gives that back. With --skip-lb-controller the
//! controller's identity is not this tool's: its ServiceAccount is only checked.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::component::Env;
use crate::component::{Action, Category, Check, Component, Fate, Verb};
use crate::error::Error;
use crate::error::{Context, Result};
use crate::ownership;
use crate::pins::{POD_IDENTITY_ENV, ROLE_ANNOTATION, ROLE_BEFORE_ANNOTATION};
use crate::record::{Owned, Recorder};
use crate::spec::Identity;

use super::{is_managed, managed_labels};
use crate::lookups::{self, CONTROLLER_SELECTOR};

#[derive(Default)]
pub struct ControllerServiceAccount {
    seen: Option<Seen>,
}

struct Seen {
    exists: bool,
    managed: bool,
    annotation: Option<String>,
    /// This tool's mark on a ServiceAccount it did not create: the role annotation before install set it.
    before: Option<String>,
    /// Controller pods, and whether each carries the IRSA env and token volume for the role it should have.
    pods: Vec<(String, bool)>,
}

/// Whether a pod was created with EKS Pod Identity's environment (the agent's URI and
/// token), and without IRSA's, whose web identity the SDK would use first.
pub fn has_pod_identity(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else { return false };
    spec.containers.iter().any(|c| {
        let env = c.env.as_deref().unwrap_or_default();
        POD_IDENTITY_ENV.iter().all(|name| env.iter().any(|e| e.name == *name))
            && !env.iter().any(|e| e.name == "AWS_ROLE_ARN")
    })
}

/// Whether a pod was created with IRSA for `role_arn`.
pub fn has_irsa(pod: &Pod, role_arn: &str) -> bool {
    let Some(spec) = &pod.spec else { return false };
    let env_ok = spec.containers.iter().any(|c| {
        let env = c.env.as_deref().unwrap_or_default();
        env.iter().any(|e| e.name == "AWS_ROLE_ARN" && e.value.as_deref() == Some(role_arn))
            && env.iter().any(|e| e.name == "AWS_WEB_IDENTITY_TOKEN_FILE")
    });
    let volume_ok = spec.volumes.as_deref().unwrap_or_default().iter().any(|v| v.name == "aws-iam-token");
    env_ok && volume_ok
}

impl ControllerServiceAccount {
    fn api(env: &Env) -> Api<ServiceAccount> {
        Api::namespaced(env.kube().clone(), &env.spec.lb_controller.namespace)
    }

    /// Uninstall's one decision: delete ours; give one install only annotated the value its
    /// own mark says it had (the record alone changes nothing); keep it while the controller stays.
    fn fate(&self, env: &Env) -> Fate<Undo> {
        let Some(seen) = self.seen.as_ref().filter(|s| s.exists) else {
            return Fate::Absent;
        };
        let undo = if seen.managed {
            Undo::Delete
        } else if let Some(before) = &seen.before {
            Undo::GiveBack(before.clone())
        } else {
            return Fate::Keep(
                ownership::unproven(Owned::claimed(env.record.service_account.as_ref()), false).unwrap_or_default(),
            );
        };
        match &env.shared.service_account {
            Some(kept) => Fate::kept(kept),
            None => Fate::Remove(undo),
        }
    }

    /// The role the controller's pods should carry: this tool's, or with
    /// --skip-lb-controller whatever the ServiceAccount names.
    fn wanted_role(env: &Env, annotation: Option<&str>) -> Option<String> {
        if env.spec.lb_controller.external { annotation.map(str::to_string) } else { Some(env.role_arn()) }
    }

    /// The role annotation install wants on it: the role with IRSA, none with Pod Identity.
    fn wanted_annotation(env: &Env) -> Option<String> {
        (env.spec.lb_controller.identity == Identity::Irsa).then(|| env.role_arn())
    }

    /// Whether a pod carries the credentials' environment this install gives it.
    fn pod_ok(env: &Env, pod: &Pod, annotation: Option<&str>) -> bool {
        if !env.spec.lb_controller.external && env.spec.lb_controller.identity == Identity::PodIdentity {
            return has_pod_identity(pod);
        }
        Self::wanted_role(env, annotation).is_some_and(|r| has_irsa(pod, &r))
    }

    /// Only this tool's label proves it created the ServiceAccount.
    fn created_by_us(&self) -> bool {
        self.seen.as_ref().is_some_and(|s| s.managed)
    }

    /// With Pod Identity, an annotation naming a role this install did not set is someone's
    /// IRSA: removing it would change that role's users, keeping it would shadow the association.
    fn refuse_foreign_role(&self, env: &Env) -> Result<()> {
        let seen = self.seen.as_ref().expect("observed");
        match &seen.annotation {
            Some(a) if Self::wanted_annotation(env).is_none() && !seen.managed && *a != env.role_arn() => {
                let name = format!("{}/{}", env.spec.lb_controller.namespace, env.spec.lb_controller.service_account);
                Err(Error::prerequisite(format!(
                    "ServiceAccount {name} names IAM role {a} ({ROLE_ANNOTATION}); with EKS Pod Identity its IRSA credentials would come first"
                ))
                .hint(format!("remove the annotation (kubectl -n {} annotate serviceaccount {} {ROLE_ANNOTATION}-), or pass --identity irsa", env.spec.lb_controller.namespace, env.spec.lb_controller.service_account)))
            }
            _ => Ok(()),
        }
    }

    async fn restart_controller(env: &Env) -> Result<()> {
        let deployments: Api<Deployment> = Api::namespaced(env.kube().clone(), &env.spec.lb_controller.namespace);
        for d in lookups::controller_deployments(env).await? {
            let name = d.metadata.name.unwrap_or_default();
            let patch = json!({"spec": {"template": {"metadata": {"annotations": {
                "kubectl.kubernetes.io/restartedAt": crate::lookups::now_stamp(),
            }}}}});
            deployments
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .context(format!("restarting Deployment {name} for the new IAM role"))?;
            env.progress.done(&format!("restarted Deployment {name} so its pods get the role"));
        }
        // Until no pod of the old credentials runs: what the other way needed may go after this.
        crate::wait::until(env, "the controller's restarted pods", || async {
            let rolled = lookups::controller_deployments(env).await?.iter().all(|d| {
                let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let s = d.status.clone().unwrap_or_default();
                s.observed_generation >= d.metadata.generation
                    && s.updated_replicas.unwrap_or(0) == want
                    && s.replicas.unwrap_or(0) == want
                    && s.available_replicas.unwrap_or(0) == want
            });
            Ok(if rolled { Ok(()) } else { Err("old pods still run".to_string()) })
        })
        .await
    }
}

/// What removing the ServiceAccount takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undo {
    Delete,
    /// Not this tool's: the role annotation goes back to the value its mark holds ("" for none).
    GiveBack(String),
}

#[async_trait]
impl Component for ControllerServiceAccount {
    fn name(&self) -> &'static str {
        "controller ServiceAccount"
    }

    fn category(&self) -> Category {
        Category::Iam
    }

    fn shared(&self) -> bool {
        true
    }

    async fn observe(&mut self, env: &Env) -> Result<()> {
        let name = &env.spec.lb_controller.service_account;
        let sa = Self::api(env).get_opt(name).await.context(format!("reading ServiceAccount {name}"))?;
        let pods: Api<Pod> = Api::namespaced(env.kube().clone(), &env.spec.lb_controller.namespace);
        let annotations = sa.as_ref().and_then(|s| s.metadata.annotations.clone()).unwrap_or_default();
        let annotation = annotations.get(ROLE_ANNOTATION).cloned();
        let pods = pods
            .list(&ListParams::default().labels(CONTROLLER_SELECTOR))
            .await
            .context("listing the controller's pods")?
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| (p.metadata.name.clone().unwrap_or_default(), Self::pod_ok(env, &p, annotation.as_deref())))
            .collect();
        self.seen = Some(Seen {
            exists: sa.is_some(),
            managed: sa.as_ref().is_some_and(|s| is_managed(&s.metadata)),
            annotation,
            before: annotations.get(ROLE_BEFORE_ANNOTATION).cloned(),
            pods,
        });
        Ok(())
    }

    fn plan(&self, env: &Env) -> Result<Vec<Action>> {
        let seen = self.seen.as_ref().expect("observed");
        let target = format!("{}/{}", env.spec.lb_controller.namespace, env.spec.lb_controller.service_account);
        let mut actions = vec![];
        if env.spec.lb_controller.external {
            return Ok(actions); // --skip-lb-controller: the controller's identity is not this tool's
        }
        let wanted = Self::wanted_annotation(env);
        let why = match &wanted {
            Some(arn) => format!("{ROLE_ANNOTATION}={arn}"),
            None => format!("no {ROLE_ANNOTATION}: EKS Pod Identity gives the credentials"),
        };
        if !seen.exists {
            actions.push(Action::kube(Verb::Create, "ServiceAccount", &target).because(why));
        } else if seen.annotation != wanted {
            self.refuse_foreign_role(env)?;
            actions.push(Action::kube(Verb::Update, "ServiceAccount", &target).because(why));
        }
        if seen.pods.iter().any(|(_, ok)| !ok) {
            actions.push(
                Action::kube(
                    Verb::Update,
                    "Deployment",
                    format!("{}/aws-load-balancer-controller", env.spec.lb_controller.namespace),
                )
                .because("restart, so the controller's pods get the IAM role"),
            );
        }
        Ok(actions)
    }

    async fn apply(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        let seen = self.seen.as_ref().expect("observed");
        if env.spec.lb_controller.external {
            return Ok(());
        }
        let name = &env.spec.lb_controller.service_account;
        let wanted = Self::wanted_annotation(env);
        let api = Self::api(env);
        let created = !seen.exists || self.created_by_us();
        record.update(|r| r.service_account = Some(Owned { id: name.clone(), created })).await?;
        if !seen.exists {
            let sa = ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some(managed_labels()),
                    annotations: wanted.clone().map(|arn| BTreeMap::from([(ROLE_ANNOTATION.to_string(), arn)])),
                    ..Default::default()
                },
                ..Default::default()
            };
            api.create(&PostParams::default(), &sa).await.context(format!("creating ServiceAccount {name}"))?;
            env.progress.done(&format!("created ServiceAccount {}/{name}", env.spec.lb_controller.namespace));
        } else if seen.annotation != wanted {
            // On one it did not create, the value it replaces goes with the change, once.
            let mark = (!seen.managed && seen.before.is_none()).then(|| seen.annotation.clone().unwrap_or_default());
            let value = wanted.clone().map(serde_json::Value::from).unwrap_or(serde_json::Value::Null);
            let patch = match mark {
                Some(before) => {
                    json!({"metadata": {"annotations": {ROLE_ANNOTATION: value, ROLE_BEFORE_ANNOTATION: before}}})
                }
                None => json!({"metadata": {"annotations": {ROLE_ANNOTATION: value}}}),
            };
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .context(format!("annotating ServiceAccount {name}"))?;
            let ns = &env.spec.lb_controller.namespace;
            env.progress.done(&match &wanted {
                Some(arn) => format!("annotated ServiceAccount {ns}/{name} with {arn}"),
                None => format!("removed {ROLE_ANNOTATION} from ServiceAccount {ns}/{name} (EKS Pod Identity)"),
            });
        }
        if seen.pods.iter().any(|(_, ok)| !ok) {
            Self::restart_controller(env).await?;
        }
        Ok(())
    }

    async fn checks(&self, env: &Env) -> Vec<Check> {
        let seen = self.seen.as_ref().expect("observed");
        let c = Category::Iam;
        let name = format!("{}/{}", env.spec.lb_controller.namespace, env.spec.lb_controller.service_account);
        let arn = env.role_arn();
        let pod_identity = !env.spec.lb_controller.external && env.spec.lb_controller.identity == Identity::PodIdentity;
        let sa = if !seen.exists {
            Check::fail(c, "iam.service-account", format!("ServiceAccount {name} does not exist"))
                .hint("run `kubectl scalardb-graphql install`")
        } else if env.spec.lb_controller.external {
            match &seen.annotation {
                Some(a) => Check::pass(
                    c,
                    "iam.service-account",
                    format!("ServiceAccount {name} names role {a} (managed outside this tool: --skip-lb-controller)"),
                ),
                None => Check::warn(
                    c,
                    "iam.service-account",
                    format!("ServiceAccount {name} has no {ROLE_ANNOTATION} annotation: the controller's AWS credentials come from elsewhere, or it has none"),
                )
                .hint("with IRSA, annotate it with the controller's role and restart the controller"),
            }
        } else if pod_identity {
            match &seen.annotation {
                None => Check::pass(
                    c,
                    "iam.service-account",
                    format!("ServiceAccount {name} has no {ROLE_ANNOTATION}: its credentials are the association's"),
                ),
                Some(a) => Check::fail(
                    c,
                    "iam.service-account",
                    format!("ServiceAccount {name} names role {a} (IRSA), whose credentials the SDK takes before EKS Pod Identity's"),
                )
                .hint("re-run install to remove the annotation, which also restarts the controller"),
            }
        } else {
            match &seen.annotation {
                Some(a) if *a == arn => {
                    Check::pass(c, "iam.service-account", format!("ServiceAccount {name} is annotated with the role"))
                }
                Some(a) => {
                    Check::fail(c, "iam.service-account", format!("ServiceAccount {name} names role {a}, not {arn}"))
                        .hint("re-run install to set the annotation")
                }
                None => Check::fail(
                    c,
                    "iam.service-account",
                    format!("ServiceAccount {name} has no {ROLE_ANNOTATION} annotation"),
                )
                .hint("re-run install to set the annotation, which also restarts the controller"),
            }
        };
        let missing: Vec<_> = seen.pods.iter().filter(|(_, ok)| !ok).map(|(n, _)| n.as_str()).collect();
        let (what, fix) = if pod_identity {
            ("EKS Pod Identity's agent URI and token (and no IRSA)", "the association's credentials")
        } else {
            ("the IRSA token env and volume", "the role's token")
        };
        let pods = if seen.pods.is_empty() {
            Check::skip(c, "iam.pod-identity", "no controller pods to check for their AWS credentials")
        } else if !pod_identity && Self::wanted_role(env, seen.annotation.as_deref()).is_none() {
            Check::skip(c, "iam.pod-identity", "no IRSA role to check the controller's pods for")
        } else if missing.is_empty() {
            Check::pass(c, "iam.pod-identity", format!("{} controller pod(s) carry {what}", seen.pods.len()))
        } else {
            Check::fail(c, "iam.pod-identity", format!("controller pods without {fix}: {}", missing.join(", "))).hint(
                format!(
                    "restart them: kubectl -n {} rollout restart deployment aws-load-balancer-controller",
                    env.spec.lb_controller.namespace
                ),
            )
        };
        vec![sa, pods]
    }

    fn removal(&self, env: &Env) -> Result<Vec<Action>> {
        let target = format!("{}/{}", env.spec.lb_controller.namespace, env.spec.lb_controller.service_account);
        Ok(match self.fate(env) {
            Fate::Remove(Undo::Delete) => vec![Action::kube(Verb::Delete, "ServiceAccount", target)],
            Fate::Remove(Undo::GiveBack(before)) => {
                vec![Action::kube(Verb::Update, "ServiceAccount", target).because(if before.is_empty() {
                    format!("remove {ROLE_ANNOTATION}, which install added")
                } else {
                    format!("give back {ROLE_ANNOTATION}={before}, which install replaced")
                })]
            }
            kept => Action::kept("kubernetes", "ServiceAccount", target, &kept).into_iter().collect(),
        })
    }

    async fn remove(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        let name = &env.spec.lb_controller.service_account;
        let ns = &env.spec.lb_controller.namespace;
        let api = Self::api(env);
        match self.fate(env) {
            Fate::Remove(Undo::Delete) => {
                super::delete_gone(&api, name, &DeleteParams::default(), &format!("ServiceAccount {name}")).await?;
                env.progress.done(&format!("deleted ServiceAccount {ns}/{name}"));
            }
            Fate::Remove(Undo::GiveBack(before)) => {
                let value = if before.is_empty() { serde_json::Value::Null } else { before.clone().into() };
                let patch =
                    json!({"metadata": {"annotations": {ROLE_ANNOTATION: value, ROLE_BEFORE_ANNOTATION: null}}});
                api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .context(format!("giving back the role annotation of {name}"))?;
                env.progress.done(&format!("gave ServiceAccount {ns}/{name} back the role annotation it had"));
            }
            Fate::Defer(_) => return Ok(()),
            Fate::Absent | Fate::Keep(_) => {}
        }
        record.update(|r| r.service_account = None).await
    }
}
