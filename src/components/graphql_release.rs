//! The GraphQL Helm release: the scalardb-graphql chart, or with `--target
//! cluster` the scalardb-cluster chart, with the generated values
//! (dedicated-node affinity, secrets by reference, the chart's ALB Ingress
//! or the nodes' GraphQL switch) and the user's -f files merged last; a
//! release of the other target's chart is refused. Uninstall removes it
//! while the controller still runs; the chart's Ingress goes with it, and
//! uninstall waits until that Ingress and its ALB are gone, explaining an
//! Ingress stuck on the controller's finalizer instead of hanging.

use async_trait::async_trait;
use serde_json::Value;

use crate::component::Env;
use crate::component::{Action, Category, Check, Component, Fate, Verb};
use crate::error::{Error, Result};
use crate::helm::{self, ReleaseMetadata};
use crate::lookups::{self, ReleaseIngress, graphql_pods, pod_ready};
use crate::ownership;
use crate::record::{Owned, Recorder};
use crate::releases;
use crate::spec::Target;
use crate::support::{self, Support};
use crate::values;
use crate::wait;

use super::ingress_teardown as teardown;

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
    /// The ScalarDB version the pods' image tags name (the first pod's), if any.
    image_version: Option<String>,
    /// The release's Ingress as the chart rendered it (read before it is deleted).
    ingress: ReleaseIngress,
    /// What its stored revisions name beyond its chart's objects (install and uninstall only).
    strays: Vec<String>,
}

impl GraphqlRelease {
    fn desired_values(env: &Env) -> Value {
        values::release(&env.spec, &env.options.user_values)
    }

    fn replicas(env: &Env) -> usize {
        Self::replicas_in(env, &Self::desired_values(env))
    }

    /// The replica count in a release's values, where the target's chart keeps it.
    fn replicas_in(env: &Env, values: &Value) -> usize {
        let at = match env.spec.target {
            Target::Graphql => &values["replicaCount"],
            Target::Cluster => &values["scalardbCluster"]["replicaCount"],
        };
        at.as_u64().unwrap_or(env.spec.replicas as u64) as usize
    }

    async fn pods(env: &Env) -> Result<(usize, usize)> {
        let pods = graphql_pods(env).await?;
        Ok((pods.len(), pods.iter().filter(|p| pod_ready(p)).count()))
    }

    /// The tag of the first GraphQL pod's first container's image (`repo:3.18.0`, not a digest).
    fn image_version(pods: &[k8s_openapi::api::core::v1::Pod]) -> Option<String> {
        let image = pods.iter().find_map(|p| p.spec.as_ref()?.containers.first()?.image.clone())?;
        let name = image.split('@').next().unwrap_or_default();
        let tag = name.rsplit_once(':').map(|(_, t)| t).filter(|t| !t.contains('/'))?;
        Some(tag.to_string())
    }

    /// Whether the ScalarDB the release runs is still supported: the pods' image, else the chart's app version.
    fn support_check(&self) -> Check {
        let seen = self.seen.as_ref().expect("observed");
        let c = Category::Graphql;
        let version = seen.image_version.clone().or_else(|| seen.release.as_ref().map(|r| r.app_version.clone()));
        let Some(version) = version else {
            return Check::skip(c, "graphql.support", "no release");
        };
        match support::of(&version, &support::today()) {
            Support::Ended { version, on } => Check::warn(c, "graphql.support", support::ended_warning(&version, on))
                .hint("plan the move to ScalarDB Cluster: kubectl scalardb-graphql install --target cluster"),
            Support::Until { version, on } => {
                Check::pass(c, "graphql.support", format!("ScalarDB {version} is supported until {on}"))
            }
            Support::Current { version } => Check::pass(
                c,
                "graphql.support",
                format!("ScalarDB {version} is supported (no end of support published)"),
            ),
            Support::Unknown { version } => Check::warn(
                c,
                "graphql.support",
                format!("cannot tell whether ScalarDB {version:?} is supported: not a version"),
            )
            .hint("run an image tagged with its ScalarDB version"),
        }
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
            // The chart's Ingress deleted by hand: an upgrade makes it again.
            Some(_) if env.spec.target == Target::Graphql && seen.ingress.ingress.is_none() => {
                Some(format!("its Ingress {} is missing", seen.ingress.display()))
            }
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

    /// Before anything changes: helm would act on stray objects a forged revision names.
    fn refuse_strays(&self, env: &Env) -> Result<()> {
        let seen = self.seen.as_ref().expect("observed");
        if seen.strays.is_empty() {
            Ok(())
        } else {
            Err(releases::refusal(&env.spec.namespace, &env.spec.release, &seen.strays))
        }
    }

    /// helm acts on what its stored revisions name: only objects of the chart's kinds in the release namespace.
    async fn vet(env: &Env) -> Result<()> {
        releases::vet(env.kube(), &env.spec.namespace, &env.spec.release, &releases::RELEASE_BOUNDS).await
    }

    /// Only the release's own mark proves this tool installed it.
    fn marked(&self) -> bool {
        self.seen.as_ref().is_some_and(|s| s.marked)
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
        let listed = graphql_pods(env).await?;
        let (pods, ready) = (listed.len(), listed.iter().filter(|p| pod_ready(p)).count());
        let image_version = Self::image_version(&listed);
        let ingress = lookups::release_ingress(env, &Self::desired_values(env)).await?;
        let strays = if release.is_some() && env.options.mode != crate::spec::Mode::Status {
            releases::strays(env.kube(), &env.spec.namespace, &env.spec.release, &releases::RELEASE_BOUNDS).await?
        } else {
            vec![]
        };
        self.seen = Some(Seen { release, marked, values, pods, ready, image_version, ingress, strays });
        Ok(())
    }

    fn plan(&self, env: &Env) -> Result<Vec<Action>> {
        let seen = self.seen.as_ref().expect("observed");
        if seen.release.is_some() && self.change(env).is_some() {
            self.refuse_strays(env)?;
        }
        if let Some(r) = &seen.release
            && env.spec.chart.repo.is_some()
            && r.chart != env.spec.chart.name
        {
            let other = if env.spec.target == Target::Cluster { "graphql" } else { "cluster" };
            return Err(Error::prerequisite(format!(
                "release {}/{} is a {} release, and --target {} installs chart {}",
                env.spec.namespace,
                env.spec.release,
                r.chart,
                env.spec.target.as_str(),
                env.spec.chart.name
            ))
            .hint(format!(
                "to switch targets, remove it first (kubectl scalardb-graphql uninstall --release {} --keep-lb-controller --keep-iam), or keep it with --target {other}",
                env.spec.release
            )));
        }
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
                        crate::redaction::masked(chart.repo.as_deref().unwrap_or("a local path"))
                    ))
                    .with_detail(crate::redaction::redacted(&Self::desired_values(env))),
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
            if seen.release.is_some() {
                Self::vet(env).await?;
            }
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
        let want = Self::replicas_in(env, &seen.values);
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
        vec![release, pods, self.support_check()]
    }

    fn removal(&self, env: &Env) -> Result<Vec<Action>> {
        let seen = self.seen.as_ref().expect("observed");
        if self.fate(env) == Fate::Remove(()) {
            self.refuse_strays(env)?;
        }
        let target = format!("{}/{}", env.spec.namespace, env.spec.release);
        let ingress = &seen.ingress;
        if env.spec.target == Target::Cluster {
            return Ok(match self.fate(env) {
                Fate::Remove(()) => vec![Action::helm(Verb::Delete, "uninstall", target)],
                kept => Action::kept("helm", "release", target, &kept).into_iter().collect(),
            });
        }
        Ok(match self.fate(env) {
            Fate::Absent => vec![Action::wait(format!("Ingress {} and its ALB are gone", ingress.display()))],
            kept @ (Fate::Keep(_) | Fate::Defer(_)) => {
                Action::kept("helm", "release", target, &kept).into_iter().collect()
            }
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
        if matches!(fate, Fate::Keep(_) | Fate::Defer(_)) {
            return Ok(());
        }
        if fate == Fate::Remove(()) {
            Self::vet(env).await?;
            env.ctx.helm()?.uninstall(&env.spec.release, &env.spec.namespace).await?;
            env.progress.done(&format!("uninstalled release {}/{}", env.spec.namespace, env.spec.release));
        }
        if env.spec.target == Target::Graphql {
            // The chart's Ingress goes with the release (`owned_ingress` waits for its own).
            let ingress = seen.ingress.clone();
            teardown::wait_ingress_gone(env, &ingress).await?;
            teardown::wait_alb_gone(env, &ingress).await?;
        }
        record.update(|r| r.graphql_release = None).await
    }
}
