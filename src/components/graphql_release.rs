//! The scalardb-graphql Helm release with the generated values (ALB Ingress,
//! dedicated-node affinity, secrets by reference) and the user's -f files
//! merged last. Uninstall removes it while the controller still runs, then
//! waits until the Ingress and its ALB are gone, and explains an Ingress
//! stuck on the controller's finalizer instead of hanging.

use async_trait::async_trait;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::component::Env;
use crate::component::{Action, Category, Check, Component, Fate, Verb};
use crate::error::{Context, Error, Result};
use crate::helm::{self, ReleaseMetadata};
use crate::lookups::{self, ReleaseIngress, graphql_pods, pod_ready};
use crate::ownership;
use crate::record::{Owned, Recorder};
use crate::releases;
use crate::values;
use crate::wait;

#[derive(Default)]
pub struct GraphqlRelease {
    seen: Option<Seen>,
}

#[derive(Clone)]
struct Seen {
    release: Option<ReleaseMetadata>,
    /// The release carries this tool's mark (see `lookups::release_marked`).
    marked: bool,
    values: Value,
    pods: usize,
    ready: usize,
    /// The release's Ingress as the chart rendered it (read before it is deleted).
    ingress: ReleaseIngress,
}

impl GraphqlRelease {
    fn desired_values(env: &Env) -> Value {
        values::with_user_values(values::graphql(&env.spec), &env.options.user_values)
    }

    fn replicas(env: &Env) -> usize {
        Self::desired_values(env)["replicaCount"].as_u64().unwrap_or(env.spec.replicas as u64) as usize
    }

    async fn pods(env: &Env) -> Result<(usize, usize)> {
        let pods = graphql_pods(env).await?;
        Ok((pods.len(), pods.iter().filter(|p| pod_ready(p)).count()))
    }

    fn change(&self, env: &Env) -> Option<String> {
        let seen = self.seen.as_ref().expect("observed");
        match &seen.release {
            None => Some("not installed".into()),
            Some(r) if env.spec.chart.version.as_ref().is_some_and(|v| *v != r.version) => {
                Some(format!("chart {} → {}", r.version, env.spec.chart.version.as_deref().unwrap_or_default()))
            }
            Some(r) if r.status != "deployed" => Some(format!("release is {}", r.status)),
            Some(_) if seen.values != Self::desired_values(env) => Some("values differ".into()),
            Some(_) => None,
        }
    }

    /// Uninstall's one decision.
    fn fate(&self, env: &Env) -> Fate {
        if self.seen.as_ref().is_none_or(|s| s.release.is_none()) {
            Fate::Absent
        } else if let Some(why) =
            ownership::unproven(Owned::claimed(env.record.graphql_release.as_ref()), self.marked())
        {
            Fate::Keep(why)
        } else if !Owned::claimed(env.record.graphql_release.as_ref()) {
            Fate::Keep("the install record says install adopted it, not that it installed it".into())
        } else {
            Fate::Remove(())
        }
    }

    /// Only the release's own mark proves this tool installed it.
    fn marked(&self) -> bool {
        self.seen.as_ref().is_some_and(|s| s.marked)
    }

    /// Waits until the ALB the controller made for the Ingress is gone (in an
    /// IngressGroup: this Ingress's target groups, and the ALB once no other
    /// member is left); with no controller left to delete it, says so (and
    /// lists it) instead of waiting.
    async fn wait_alb_gone(env: &Env, ingress: &ReleaseIngress) -> Result<()> {
        let cluster = lookups::tagging_cluster_name(env).await?;
        let others = match ingress.group() {
            Some(g) => lookups::group_members(env, g, ingress).await?,
            None => vec![],
        };
        wait::until(env, "the ALB and its target groups to be deleted", || async {
            let mut now = lookups::alb::locate(env, ingress, &cluster).await?;
            if !others.is_empty() {
                now.load_balancers.clear(); // shared with the rest of the group: it stays
            }
            if now.is_empty() {
                return Ok(Ok(()));
            }
            if lookups::controller_up(env).await? {
                return Ok(Err(now.summary()));
            }
            let listed = now.load_balancer_arns().join(", ");
            if env.options.force_finalizers {
                env.progress
                    .warn(&format!("left in AWS, with no controller to delete it (delete it yourself): {listed}"));
                return Ok(Ok(()));
            }
            Err(Error::failed(format!(
                "the ALB of Ingress {} is still in AWS and no AWS Load Balancer Controller runs to delete it: {listed}",
                ingress.display()
            ))
            .hint(
                "install the controller again so it cleans up, or delete the ALB yourself and pass --force-finalizers",
            ))
        })
        .await
    }

    /// Waits until the release's Ingress is gone, explaining a stuck finalizer.
    async fn wait_ingress_gone(env: &Env, ingress: &ReleaseIngress) -> Result<()> {
        let (ns, name) = (&ingress.namespace, &ingress.name);
        let finalizer = ingress.finalizer();
        let cluster = lookups::tagging_cluster_name(env).await?;
        let ingresses: Api<Ingress> = Api::namespaced(env.kube().clone(), ns);
        wait::until(env, &format!("Ingress {ns}/{name} to be deleted"), || async {
            let Some(ing) = ingresses.get_opt(name).await.context("reading the Ingress")? else { return Ok(Ok(())) };
            let finalizers = ing.metadata.finalizers.clone().unwrap_or_default();
            if ing.metadata.deletion_timestamp.is_none() || !finalizers.contains(&finalizer) {
                return Ok(Err("still present".into()));
            }
            if lookups::controller_up(env).await? {
                return Ok(Err("the controller is removing its ALB".into()));
            }
            let arns = lookups::alb::locate(env, ingress, &cluster).await?.load_balancer_arns();
            let listed = if arns.is_empty() { "none found by its tags".to_string() } else { arns.join(", ") };
            if !env.options.force_finalizers {
                return Err(Error::failed(format!(
                    "Ingress {ns}/{name} is stuck on finalizer {finalizer}: the AWS Load Balancer Controller is not running, so nothing deletes its ALB ({listed})"
                ))
                .hint("install the controller again so it cleans up (kubectl scalardb-graphql install …), then re-run uninstall; or pass --force-finalizers to drop the finalizer and delete the ALB yourself"));
            }
            env.progress.warn(&format!("removing finalizer {finalizer} from Ingress {ns}/{name}; its ALB may be left in AWS: {listed}"));
            let rest: Vec<_> = finalizers.into_iter().filter(|f| *f != finalizer).collect();
            let patch = json!({"metadata": {"finalizers": rest}});
            if let Err(e) = ingresses.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                if let Some(refused) = crate::error::webhook_refusal(&e.to_string()) {
                    return Err(refused);
                }
                return Err(e).context("removing the Ingress finalizer");
            }
            Ok(Err("finalizer removed".into()))
        })
        .await
    }
}

#[async_trait]
impl Component for GraphqlRelease {
    fn name(&self) -> &'static str {
        "ScalarDB GraphQL release"
    }

    fn category(&self) -> Category {
        Category::Graphql
    }

    async fn observe(&mut self, env: &Env) -> Result<()> {
        let stored = releases::read(env.kube(), || env.ctx.helm(), &env.spec.namespace, &env.spec.release).await?;
        let (release, values, marked) = match stored {
            Some(r) => (Some(r.metadata), r.values, r.marked),
            None => (None, Value::Null, false),
        };
        let (pods, ready) = Self::pods(env).await?;
        let ingress = lookups::release_ingress(env, &Self::desired_values(env)).await?;
        self.seen = Some(Seen { release, marked, values, pods, ready, ingress });
        Ok(())
    }

    fn plan(&self, env: &Env) -> Result<Vec<Action>> {
        let seen = self.seen.as_ref().expect("observed");
        if seen.release.is_some() && !seen.marked && !env.options.adopt {
            return Err(Error::prerequisite(format!(
                "release {}/{} exists and was not installed by this tool",
                env.spec.namespace, env.spec.release
            ))
            .hint("pass --adopt to manage it, or choose another --release"));
        }
        let mut actions = vec![];
        if let Some(why) = self.change(env) {
            let (verb, op) = if seen.release.is_some() { (Verb::Update, "upgrade") } else { (Verb::Create, "install") };
            let chart = &env.spec.chart;
            actions.push(
                Action::helm(verb, op, format!("{}/{}", env.spec.namespace, env.spec.release))
                    .because(format!(
                        "chart {} {} from {}: {why}",
                        chart.name,
                        chart.version.as_deref().unwrap_or("(local)"),
                        chart.repo.as_deref().unwrap_or("a local path")
                    ))
                    .with_detail(values::redacted(&Self::desired_values(env))),
            );
        }
        if !actions.is_empty() || seen.ready < Self::replicas(env) {
            actions.push(Action::wait(format!("{} GraphQL pod(s) are Ready", Self::replicas(env))));
        }
        Ok(actions)
    }

    async fn apply(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        let seen = self.seen.clone().expect("observed");
        if let Some(why) = self.change(env) {
            let created = seen.release.is_none() || seen.marked;
            record.update(|r| r.graphql_release = Some(Owned { id: env.spec.release.clone(), created })).await?;
            // Everything helm gets goes through a private file, never the command line.
            let file = helm::values_file(&Self::desired_values(env))?;
            env.progress.waiting(&format!(
                "helm: {} {} ({why})",
                if seen.release.is_some() { "upgrading" } else { "installing" },
                env.spec.release
            ));
            env.ctx
                .helm()?
                .upgrade_install(
                    &env.spec.release,
                    &env.spec.namespace,
                    &env.spec.chart,
                    &[file.path()],
                    seen.release.is_none(),
                )
                .await?;
            env.progress.done(&format!(
                "{} release {}/{}",
                if seen.release.is_some() { "upgraded" } else { "installed" },
                env.spec.namespace,
                env.spec.release
            ));
        }
        let want = Self::replicas(env);
        wait::until(env, &format!("{want} GraphQL pod(s) to be Ready"), || async {
            let (pods, ready) = Self::pods(env).await?;
            Ok(if ready >= want { Ok(()) } else { Err(format!("{ready}/{want} Ready ({pods} pods)")) })
        })
        .await
    }

    async fn checks(&self, env: &Env) -> Vec<Check> {
        let seen = self.seen.as_ref().expect("observed");
        let c = Category::Graphql;
        let target = format!("{}/{}", env.spec.namespace, env.spec.release);
        let release = match &seen.release {
            None => Check::fail(c, "graphql.release", format!("release {target} is not installed"))
                .hint("run `kubectl scalardb-graphql install`"),
            Some(r) if r.status != "deployed" => {
                Check::fail(c, "graphql.release", format!("release {target} is {}", r.status))
                    .hint("re-run install; `helm history` shows what failed")
            }
            Some(r) => Check::pass(
                c,
                "graphql.release",
                format!("release {target} deployed, chart {} {} (app {})", r.chart, r.version, r.app_version),
            ),
        };
        let want = seen.values["replicaCount"].as_u64().map(|n| n as usize).unwrap_or(env.spec.replicas as usize);
        let pods = if seen.release.is_none() {
            Check::skip(c, "graphql.pods", "no release")
        } else {
            Check::expect(
                c,
                "graphql.pods",
                seen.ready >= want && seen.ready == seen.pods,
                format!("{}/{want} GraphQL pods Ready", seen.ready),
                format!("{}/{want} GraphQL pods Ready ({} pods)", seen.ready, seen.pods),
            )
            .hint(format!(
                "kubectl -n {} get pods -l app.kubernetes.io/instance={} and describe the ones not Ready",
                env.spec.namespace, env.spec.release
            ))
        };
        vec![release, pods]
    }

    fn removal(&self, env: &Env) -> Result<Vec<Action>> {
        let seen = self.seen.as_ref().expect("observed");
        let target = format!("{}/{}", env.spec.namespace, env.spec.release);
        let ingress = &seen.ingress;
        Ok(match self.fate(env) {
            Fate::Absent => vec![Action::wait(format!("Ingress {} and its ALB are gone", ingress.display()))],
            Fate::Keep(why) => vec![Action::keep("helm", "release", target, why)],
            Fate::Remove(()) => vec![
                Action::helm(Verb::Delete, "uninstall", target),
                Action::wait(format!(
                    "Ingress {} and its ALB are gone (while the controller still runs)",
                    ingress.display()
                )),
            ],
        })
    }

    async fn remove(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        let seen = self.seen.as_ref().expect("observed");
        let fate = self.fate(env);
        if matches!(fate, Fate::Keep(_)) {
            return Ok(());
        }
        if fate == Fate::Remove(()) {
            env.ctx.helm()?.uninstall(&env.spec.release, &env.spec.namespace).await?;
            env.progress.done(&format!("uninstalled release {}/{}", env.spec.namespace, env.spec.release));
        }
        let ingress = seen.ingress.clone();
        Self::wait_ingress_gone(env, &ingress).await?;
        Self::wait_alb_gone(env, &ingress).await?;
        record.update(|r| r.graphql_release = None).await
    }
}
