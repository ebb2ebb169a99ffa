//! The AWS Load Balancer Controller's Helm release, in kube-system, with
//! `clusterName`, `region`, `vpcId` and the IRSA ServiceAccount; then a wait
//! until its Deployment is available and its webhook Service has ready
//! endpoints. With --skip-lb-controller, a controller already running is
//! verified instead. Uninstall keeps it while other Ingresses of class
//! `alb` remain (they need it to clean up their ALBs).

use async_trait::async_trait;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

use crate::component::Env;
use crate::component::{Action, Category, Check, Component, Fate, Verb};
use crate::error::{Context, Error, Result};
use crate::helm::{self, ReleaseMetadata};
use crate::lookups::{self, CONTROLLER_SELECTOR};
use crate::ownership;
use crate::pins::{LBC_NAMESPACE, LBC_RELEASE, LBC_WEBHOOK_SERVICE};
use crate::record::{ControllerRecord, Recorder};
use crate::releases;
use crate::values;
use crate::wait;

pub const CRDS: &[&str] = &["targetgroupbindings.elbv2.k8s.aws", "ingressclassparams.elbv2.k8s.aws"];

#[derive(Default)]
pub struct LbController {
    seen: Option<Seen>,
}

#[derive(Clone)]
struct Seen {
    release: Option<ReleaseMetadata>,
    values: Value,
    /// The release carries this tool's mark (see `lookups::release_marked`).
    marked: bool,
    deployments: Vec<(String, i32, i32)>,
    webhook_ready: usize,
    crds_missing: Vec<String>,
    /// The `--cluster-name` the running controller tags its resources with.
    cluster_name: Option<String>,
    /// What its stored revisions name beyond its chart's objects (install and uninstall only).
    strays: Vec<String>,
}

impl Seen {
    fn available(&self) -> bool {
        !self.deployments.is_empty() && self.deployments.iter().all(|(_, available, _)| *available > 0)
    }
    fn ready(&self) -> bool {
        self.available() && self.webhook_ready > 0
    }
    fn state(&self) -> String {
        let d: Vec<_> = self.deployments.iter().map(|(n, a, w)| format!("{n} {a}/{w} available")).collect();
        format!(
            "{}; webhook endpoints ready: {}",
            if d.is_empty() { "no Deployment".into() } else { d.join(", ") },
            self.webhook_ready
        )
    }
}

impl LbController {
    /// Uninstall's one decision: only a release this tool's mark proves is its
    /// goes, and only when nothing else uses it (`env.shared`). It may have been
    /// installed for another release of this tool: whichever uninstall finds
    /// no other user removes it.
    fn fate(&self, env: &Env) -> Fate {
        if self.seen.as_ref().is_none_or(|s| s.release.is_none()) {
            Fate::Absent
        } else if let Some(why) = self.unproven(env) {
            Fate::Keep(why)
        } else if let Some(kept) = &env.shared.controller {
            Fate::kept(kept)
        } else {
            Fate::Remove(())
        }
    }

    /// Endpoints are not yet admission: waits until the controller's Ingress
    /// webhook answers a server-side dry run (which persists nothing), so
    /// that the GraphQL release is not refused half-way. A dry run refused
    /// by RBAC cannot prove anything and is not waited on.
    async fn wait_admission(env: &Env) -> Result<()> {
        let api: Api<Ingress> = Api::namespaced(env.kube().clone(), &env.spec.lb_controller.namespace);
        let probe: Ingress = serde_json::from_value(json!({
            "metadata": {"name": "kubectl-scalardb-graphql-admission-check", "labels": crate::ownership::managed_labels()},
            "spec": {"ingressClassName": "alb", "defaultBackend": {"service": {"name": "admission-check", "port": {"number": 80}}}},
        }))
        .context("building the admission check")?;
        let params = PostParams { dry_run: true, ..Default::default() };
        wait::until(env, "the controller's webhooks to admit requests", || async {
            Ok(match api.create(&params, &probe).await {
                Ok(_) => Ok(()),
                Err(e) => match crate::error::webhook_refusal(&e.to_string()) {
                    Some(refused) => Err(refused.to_string()),
                    None => {
                        env.progress.warn(&format!("could not prove the controller's webhooks admit requests: {e}"));
                        Ok(())
                    }
                },
            })
        })
        .await
    }

    fn cluster_name_mismatch(seen: &Seen, env: &Env) -> Option<String> {
        let name = seen.cluster_name.as_deref()?;
        (name != env.facts.name).then(|| {
            format!(
                "the running controller has --cluster-name={name}, not the EKS cluster's name {}: it tags ALBs with {name} (they are found by it) and looks for subnets tagged kubernetes.io/cluster/{name}",
                env.facts.name
            )
        })
    }

    async fn look(env: &Env) -> Result<Seen> {
        let (release, values, marked) = Self::release(env).await?;
        let strays = if release.is_some() && marked && env.options.mode != crate::spec::Mode::Status {
            let lbc = &env.spec.lb_controller;
            releases::strays(env.kube(), &lbc.namespace, &lbc.release, &releases::CONTROLLER_BOUNDS).await?
        } else {
            vec![]
        };
        let mut seen = Self::runtime(env, release, values, marked).await?;
        seen.strays = strays;
        Ok(seen)
    }

    /// Before anything changes: helm would act on stray objects a forged revision names.
    fn refuse_strays(&self, env: &Env) -> Result<()> {
        let seen = self.seen.as_ref().expect("observed");
        let lbc = &env.spec.lb_controller;
        if seen.strays.is_empty() { Ok(()) } else { Err(releases::refusal(&lbc.namespace, &lbc.release, &seen.strays)) }
    }

    /// The release and its values, from helm, and whether it carries this tool's mark.
    /// With --skip-lb-controller install and status leave it alone; uninstall still
    /// looks, for a release this tool installed (for another release of its own).
    async fn release(env: &Env) -> Result<(Option<ReleaseMetadata>, Value, bool)> {
        let lbc = &env.spec.lb_controller;
        if lbc.external && env.options.mode != crate::spec::Mode::Uninstall {
            return Ok((None, Value::Null, false));
        }
        Ok(match releases::read(env.kube(), || env.ctx.helm(), &lbc.namespace, &lbc.release).await? {
            Some(r) => (Some(r.metadata), r.values, r.marked),
            None => (None, Value::Null, false),
        })
    }

    /// The Deployment, the webhook's endpoints and the CRDs, with release facts already read.
    async fn runtime(env: &Env, release: Option<ReleaseMetadata>, values: Value, marked: bool) -> Result<Seen> {
        let lbc = &env.spec.lb_controller;
        let found = lookups::controller_deployments(env).await?;
        let cluster_name = lookups::controller_cluster_name(&found);
        let deployments = found
            .into_iter()
            .map(|d| {
                let status = d.status.unwrap_or_default();
                let wanted = d.spec.and_then(|s| s.replicas).unwrap_or(1);
                (d.metadata.name.unwrap_or_default(), status.available_replicas.unwrap_or(0), wanted)
            })
            .collect();
        let slices: Api<EndpointSlice> = Api::namespaced(env.kube().clone(), &lbc.namespace);
        let webhook_ready = slices
            .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={LBC_WEBHOOK_SERVICE}")))
            .await
            .context("listing the webhook's endpoints")?
            .into_iter()
            .flat_map(|s| s.endpoints)
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .count();
        let crds: Api<CustomResourceDefinition> = Api::all(env.kube().clone());
        let mut crds_missing = vec![];
        for name in CRDS {
            if crds.get_opt(name).await.context(format!("reading CRD {name}"))?.is_none() {
                crds_missing.push(name.to_string());
            }
        }
        Ok(Seen { release, values, marked, deployments, webhook_ready, crds_missing, cluster_name, strays: vec![] })
    }

    /// Only the release's own mark, under the name and namespace this tool
    /// always gives it, proves this tool installed it.
    fn installed_by_us(&self, env: &Env) -> bool {
        let lbc = &env.spec.lb_controller;
        self.seen.as_ref().is_some_and(|s| s.marked) && lbc.release == LBC_RELEASE && lbc.namespace == LBC_NAMESPACE
    }

    fn unproven(&self, env: &Env) -> Option<String> {
        let claimed = env.record.lb_controller.as_ref().is_some_and(|c| c.installed);
        ownership::unproven(claimed, self.installed_by_us(env))
    }

    /// helm acts on what its stored revisions name: only what the controller's chart makes.
    async fn vet(env: &Env) -> Result<()> {
        let lbc = &env.spec.lb_controller;
        releases::vet(env.kube(), &lbc.namespace, &lbc.release, &releases::CONTROLLER_BOUNDS).await
    }

    fn desired_values(env: &Env) -> Value {
        values::lb_controller(&env.spec, &env.facts)
    }

    fn needs_release_change(seen: &Seen, env: &Env) -> Option<String> {
        let lbc = &env.spec.lb_controller;
        match &seen.release {
            None => Some("not installed".into()),
            Some(r) if Some(&r.version) != lbc.chart.version.as_ref() => {
                Some(format!("chart {} → {}", r.version, lbc.chart.version.as_deref().unwrap_or("latest")))
            }
            Some(r) if r.status != "deployed" => Some(format!("release is {}", r.status)),
            Some(_) if seen.values != Self::desired_values(env) => Some("values differ".into()),
            Some(_) => None,
        }
    }
}

#[async_trait]
impl Component for LbController {
    fn name(&self) -> &'static str {
        "AWS Load Balancer Controller"
    }

    fn category(&self) -> Category {
        Category::LbController
    }

    fn shared(&self) -> bool {
        true
    }

    async fn observe(&mut self, env: &Env) -> Result<()> {
        self.seen = Some(Self::look(env).await?);
        Ok(())
    }

    fn plan(&self, env: &Env) -> Result<Vec<Action>> {
        let seen = self.seen.as_ref().expect("observed");
        let lbc = &env.spec.lb_controller;
        let wait = Action::wait(format!(
            "Deployment {}/aws-load-balancer-controller is available and {LBC_WEBHOOK_SERVICE} has ready endpoints",
            lbc.namespace
        ));
        if lbc.external {
            if seen.deployments.is_empty() {
                return Err(Error::prerequisite(format!(
                    "--skip-lb-controller: no AWS Load Balancer Controller Deployment in {} (label {CONTROLLER_SELECTOR})",
                    lbc.namespace
                ))
                .hint("install the controller first, or drop --skip-lb-controller to let install do it"));
            }
            return Ok(if seen.ready() { vec![] } else { vec![wait] });
        }
        if seen.release.is_none() && !seen.deployments.is_empty() {
            return Err(Error::prerequisite(format!(
                "an AWS Load Balancer Controller already runs in {} but not as release {}",
                lbc.namespace, lbc.release
            ))
            .hint("pass --skip-lb-controller to use it as it is"));
        }
        if seen.release.is_some() && !self.installed_by_us(env) && !env.options.adopt {
            return Err(Error::prerequisite(format!(
                "release {}/{} exists and was not installed by this tool",
                lbc.namespace, lbc.release
            ))
            .hint("pass --skip-lb-controller to use it as it is, or --adopt to manage it"));
        }
        let mut actions = vec![];
        if seen.release.is_some() && Self::needs_release_change(seen, env).is_some() {
            self.refuse_strays(env)?;
        }
        if let Some(why) = Self::needs_release_change(seen, env) {
            let verb = if seen.release.is_some() { Verb::Update } else { Verb::Create };
            let op = if seen.release.is_some() { "upgrade" } else { "install" };
            actions.push(
                Action::helm(verb, op, format!("{}/{}", lbc.namespace, lbc.release))
                    .because(format!(
                        "chart {} {} from {}: {why}",
                        lbc.chart.name,
                        lbc.chart.version.as_deref().unwrap_or("latest"),
                        lbc.chart.repo.as_deref().unwrap_or("a local path")
                    ))
                    .with_detail(values::redacted(&Self::desired_values(env))),
            );
        }
        if !actions.is_empty() || !seen.ready() {
            actions.push(wait);
        }
        Ok(actions)
    }

    async fn apply(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        let seen = self.seen.clone().expect("observed");
        let lbc = &env.spec.lb_controller;
        if !lbc.external && Self::needs_release_change(&seen, env).is_some() {
            let installed = seen.release.is_none() || self.installed_by_us(env);
            record
                .update(|r| {
                    let entry = r.lb_controller.get_or_insert_with(|| ControllerRecord {
                        release: lbc.release.clone(),
                        namespace: lbc.namespace.clone(),
                        installed,
                        crds: vec![],
                    });
                    entry.installed = installed;
                })
                .await?;
            if seen.release.is_some() {
                Self::vet(env).await?;
            }
            let file = helm::values_file(&Self::desired_values(env))?;
            env.progress.waiting(&format!(
                "helm: installing {} {}",
                lbc.chart.name,
                lbc.chart.version.as_deref().unwrap_or("")
            ));
            env.ctx
                .helm()?
                .upgrade_install(&lbc.release, &lbc.namespace, &lbc.chart, &[file.path()], seen.release.is_none())
                .await?;
            env.progress.done(&format!(
                "{} release {}/{} ({} {})",
                if seen.release.is_some() { "upgraded" } else { "installed" },
                lbc.namespace,
                lbc.release,
                lbc.chart.name,
                lbc.chart.version.as_deref().unwrap_or("latest")
            ));
        } else if !lbc.external && seen.release.is_some() && env.record.lb_controller.is_none() {
            record
                .update(|r| {
                    r.lb_controller = Some(ControllerRecord {
                        release: lbc.release.clone(),
                        namespace: lbc.namespace.clone(),
                        installed: false,
                        crds: vec![],
                    })
                })
                .await?;
        }
        // helm is asked once; the wait polls only the Kubernetes side.
        let (release, values, marked) = Self::release(env).await?;
        let ready = wait::until(env, "the AWS Load Balancer Controller", || {
            let (release, values) = (release.clone(), values.clone());
            async move {
                let now = Self::runtime(env, release, values, marked).await?;
                Ok(if now.ready() { Ok(now) } else { Err(now.state()) })
            }
        })
        .await?;
        Self::wait_admission(env).await?;
        if let Some(warning) = Self::cluster_name_mismatch(&ready, env) {
            env.progress.warn(&warning);
        }
        self.seen = Some(ready);
        Ok(())
    }

    async fn checks(&self, env: &Env) -> Vec<Check> {
        let seen = self.seen.as_ref().expect("observed");
        let c = Category::LbController;
        let lbc = &env.spec.lb_controller;
        let release = if lbc.external {
            Check::pass(c, "lb-controller.release", "controller managed outside this tool (--skip-lb-controller)")
        } else {
            match &seen.release {
                None => Check::fail(
                    c,
                    "lb-controller.release",
                    format!("release {}/{} is not installed", lbc.namespace, lbc.release),
                )
                .hint("run `kubectl scalardb-graphql install`"),
                Some(r) if r.status != "deployed" => Check::fail(
                    c,
                    "lb-controller.release",
                    format!("release {}/{} is {}", lbc.namespace, lbc.release, r.status),
                )
                .hint("re-run install; `helm history` shows what failed"),
                Some(r) => Check::pass(
                    c,
                    "lb-controller.release",
                    format!(
                        "release {} deployed, chart {} {} (app {})",
                        lbc.release, r.chart, r.version, r.app_version
                    ),
                ),
            }
        };
        let deployment = if seen.available() {
            Check::pass(
                c,
                "lb-controller.deployment",
                format!("Deployment available: {}", seen.state().split(';').next().unwrap_or_default()),
            )
        } else {
            Check::fail(c, "lb-controller.deployment", format!("the controller is not available: {}", seen.state()))
                .hint(format!("kubectl -n {} describe deployment aws-load-balancer-controller", lbc.namespace))
        };
        let webhook = if !seen.available() {
            Check::skip(c, "lb-controller.webhook", "webhook not checked: the controller is not available")
        } else {
            Check::expect(
                c,
                "lb-controller.webhook",
                seen.webhook_ready > 0,
                format!("webhook Service {LBC_WEBHOOK_SERVICE} has {} ready endpoint(s)", seen.webhook_ready),
                format!("webhook Service {LBC_WEBHOOK_SERVICE} has no ready endpoints"),
            )
            .hint("Ingress and Service changes fail while the webhook is down; check the controller's pods")
        };
        let crds = Check::expect(
            c,
            "lb-controller.crds",
            seen.crds_missing.is_empty(),
            format!("CRDs present: {}", CRDS.join(", ")),
            format!("CRDs missing: {}", seen.crds_missing.join(", ")),
        )
        .hint("re-run install (it applies the chart's CRDs)");
        let cluster_name = match (&seen.cluster_name, Self::cluster_name_mismatch(seen, env)) {
            (None, _) => Check::skip(c, "lb-controller.cluster-name", "no controller Deployment to read --cluster-name from"),
            (Some(_), Some(warning)) => Check::warn(c, "lb-controller.cluster-name", warning).hint(format!(
                "set the controller's clusterName to {} (helm upgrade … --set clusterName={}) unless the name is meant to differ",
                env.facts.name, env.facts.name
            )),
            (Some(name), None) => {
                Check::pass(c, "lb-controller.cluster-name", format!("the controller runs with --cluster-name={name}"))
            }
        };
        vec![release, deployment, webhook, crds, cluster_name]
    }

    fn removal(&self, env: &Env) -> Result<Vec<Action>> {
        let lbc = &env.spec.lb_controller;
        let target = format!("{}/{}", lbc.namespace, lbc.release);
        if self.fate(env) == Fate::Remove(()) {
            self.refuse_strays(env)?;
        }
        Ok(match self.fate(env) {
            Fate::Remove(()) => vec![Action::helm(Verb::Delete, "uninstall", target)],
            kept => Action::kept("helm", "release", target, &kept).into_iter().collect(),
        })
    }

    async fn remove(&mut self, env: &Env, _record: &mut Recorder) -> Result<()> {
        let lbc = &env.spec.lb_controller;
        if self.fate(env) != Fate::Remove(()) {
            return Ok(());
        }
        Self::vet(env).await?;
        env.ctx.helm()?.uninstall(&lbc.release, &lbc.namespace).await?;
        env.progress.done(&format!("uninstalled release {}/{}", lbc.namespace, lbc.release));
        Ok(())
    }
}
