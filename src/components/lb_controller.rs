//! The AWS Load Balancer Controller's Helm release, in kube-system, with
//! `clusterName`, `region`, `vpcId` and the IRSA ServiceAccount; then a wait
//! until its Deployment is available and its webhook Service has ready
//! endpoints. With --skip-lb-controller, a controller already running is
//! verified instead. Uninstall keeps it while other Ingresses of class
//! `alb` remain (they need it to clean up their ALBs).

use async_trait::async_trait;
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::core::v1::Secret;
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
use crate::pins::{
    LBC_NAMESPACE, LBC_RELEASE, LBC_TLS_SECRET, LBC_WEBHOOK_CONFIG, LBC_WEBHOOK_SERVICE, WEBHOOK_CERT_MIN_DAYS,
};
use crate::record::{ControllerRecord, Recorder};
use crate::releases;
use crate::values;
use crate::wait;

pub const CRDS: &[&str] = &["targetgroupbindings.elbv2.k8s.aws", "ingressclassparams.elbv2.k8s.aws"];
/// The IngressClass the controller's chart makes (its `ingressClass` value, left at its default).

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
    /// Whether the webhooks' caBundles trust the certificate the webhook serves (None: no webhooks).
    webhook_tls: Option<WebhookTls>,
    /// The chart's IngressClass is gone (an upgrade makes it again).
    class_missing: bool,
}

/// The webhooks' trust in the certificate of the TLS Secret, now and for the next days.
#[derive(Clone, Default)]
struct WebhookTls {
    /// `what: why` for each group of webhooks that would refuse the certificate now.
    untrusted: Vec<String>,
    /// Trusted now, but not for `WEBHOOK_CERT_MIN_DAYS` more days.
    expiring: Vec<String>,
    webhooks: usize,
}

impl WebhookTls {
    /// Every webhook of the controller's two configurations, against the Secret's `tls.crt`.
    async fn read(env: &Env) -> Result<Option<WebhookTls>> {
        let ns = &env.spec.lb_controller.namespace;
        let mutating: Api<MutatingWebhookConfiguration> = Api::all(env.kube().clone());
        let validating: Api<ValidatingWebhookConfiguration> = Api::all(env.kube().clone());
        let secrets: Api<Secret> = Api::namespaced(env.kube().clone(), ns);
        let (m, v, secret) = tokio::join!(
            mutating.get_opt(LBC_WEBHOOK_CONFIG),
            validating.get_opt(LBC_WEBHOOK_CONFIG),
            secrets.get_opt(LBC_TLS_SECRET)
        );
        let (m, v) = (m.context("reading the controller's webhooks")?, v.context("reading the controller's webhooks")?);
        let secret = secret.context(format!("reading Secret {ns}/{LBC_TLS_SECRET}"))?;
        let mut bundles: Vec<(String, Vec<u8>)> = vec![];
        for w in m.into_iter().flat_map(|c| c.webhooks.unwrap_or_default()) {
            bundles.push((format!("mutating {}", w.name), w.client_config.ca_bundle.map(|b| b.0).unwrap_or_default()));
        }
        for w in v.into_iter().flat_map(|c| c.webhooks.unwrap_or_default()) {
            bundles
                .push((format!("validating {}", w.name), w.client_config.ca_bundle.map(|b| b.0).unwrap_or_default()));
        }
        if bundles.is_empty() {
            return Ok(None);
        }
        let mut tls = WebhookTls { webhooks: bundles.len(), ..Default::default() };
        let Some(cert) = secret.and_then(|s| s.data).and_then(|d| d.get("tls.crt").map(|b| b.0.clone())) else {
            tls.untrusted.push(format!(
                "Secret {ns}/{LBC_TLS_SECRET} holds no tls.crt: the webhook serves no certificate the bundles name"
            ));
            return Ok(Some(tls));
        };
        let name = format!("{LBC_WEBHOOK_SERVICE}.{ns}.svc");
        let now = std::time::SystemTime::now();
        let later = now + std::time::Duration::from_secs(WEBHOOK_CERT_MIN_DAYS * 86_400);
        let mut untrusted: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        let mut expiring: Vec<String> = vec![];
        for (what, bundle) in bundles {
            match crate::tls::untrusted_serving_certificate(&bundle, &cert, &name, now) {
                Some(why) => untrusted.entry(why).or_default().push(what),
                None => {
                    if crate::tls::untrusted_serving_certificate(&bundle, &cert, &name, later).is_some() {
                        expiring.push(what);
                    }
                }
            }
        }
        tls.untrusted = untrusted
            .into_iter()
            .map(|(why, webhooks)| {
                format!(
                    "the caBundle of {} does not trust the certificate in Secret {ns}/{LBC_TLS_SECRET}: {why}",
                    webhooks.join(", ")
                )
            })
            .collect();
        if !expiring.is_empty() {
            tls.expiring.push(format!(
                "the certificate in Secret {ns}/{LBC_TLS_SECRET} is not valid for {WEBHOOK_CERT_MIN_DAYS} more days (webhooks {})",
                expiring.join(", ")
            ));
        }
        Ok(Some(tls))
    }
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
            "spec": {"ingressClassName": env.spec.lb_controller.ingress_class, "defaultBackend": {"service": {"name": "admission-check", "port": {"number": 80}}}},
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
        let lbc = &env.spec.lb_controller;
        let uninstall = env.options.mode == crate::spec::Mode::Uninstall;
        // The IngressClass matters only when the release exists; it is read beside the release
        // (one round trip, not two) and its answer, an error too, dropped when there is none.
        let class = async {
            let classes: Api<k8s_openapi::api::networking::v1::IngressClass> = Api::all(env.kube().clone());
            classes.get_opt(&lbc.ingress_class).await.context("reading the controller's IngressClass")
        };
        let tls = async { if uninstall { Ok(None) } else { WebhookTls::read(env).await } };
        let class = async { if uninstall { None } else { Some(class.await) } };
        let (released, runtime, webhook_tls, class) =
            futures::join!(Self::release(env), Self::runtime(env, None, Value::Null, false), tls, class);
        let (release, values, marked) = released?;
        let mut seen = Seen { release, values, marked, webhook_tls: webhook_tls?, ..runtime? };
        if seen.release.is_some() && seen.marked && env.options.mode != crate::spec::Mode::Status {
            seen.strays =
                releases::strays(env.kube(), &lbc.namespace, &lbc.release, &releases::CONTROLLER_BOUNDS).await?;
        }
        if let Some(class) = class.filter(|_| seen.release.is_some()) {
            seen.class_missing = class?.is_none();
        }
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
        let slices: Api<EndpointSlice> = Api::namespaced(env.kube().clone(), &lbc.namespace);
        let crds: Api<CustomResourceDefinition> = Api::all(env.kube().clone());
        let webhook_endpoints =
            ListParams::default().labels(&format!("kubernetes.io/service-name={LBC_WEBHOOK_SERVICE}"));
        let (found, slices, crds) = futures::join!(
            lookups::controller_deployments(env),
            slices.list(&webhook_endpoints),
            futures::future::join_all(CRDS.iter().map(|name| crds.get_opt(name)))
        );
        let found = found?;
        let cluster_name = lookups::controller_cluster_name(&found);
        let deployments = found
            .into_iter()
            .map(|d| {
                let status = d.status.unwrap_or_default();
                let wanted = d.spec.and_then(|s| s.replicas).unwrap_or(1);
                (d.metadata.name.unwrap_or_default(), status.available_replicas.unwrap_or(0), wanted)
            })
            .collect();
        let webhook_ready = slices
            .context("listing the webhook's endpoints")?
            .into_iter()
            .flat_map(|s| s.endpoints)
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .count();
        let mut crds_missing = vec![];
        for (name, crd) in CRDS.iter().zip(crds) {
            if crd.context(format!("reading CRD {name}"))?.is_none() {
                crds_missing.push(name.to_string());
            }
        }
        Ok(Seen {
            release,
            values,
            marked,
            deployments,
            webhook_ready,
            crds_missing,
            cluster_name,
            strays: vec![],
            webhook_tls: None,
            class_missing: false,
        })
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
            // The chart renders every caBundle from the kept TLS Secret: an upgrade puts them back in step.
            Some(_) if seen.class_missing => {
                Some(format!("its IngressClass {} is missing", env.spec.lb_controller.ingress_class))
            }
            Some(_) if seen.webhook_tls.as_ref().is_some_and(|t| !t.untrusted.is_empty()) => {
                Some("the webhooks' caBundle does not trust the webhook's certificate".into())
            }
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
                        crate::redaction::masked(lbc.chart.repo.as_deref().unwrap_or("a local path"))
                    ))
                    .with_detail(crate::redaction::redacted(&Self::desired_values(env))),
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
            if env.facts.auto_mode {
                env.progress.warn(&format!(
                    "EKS Auto Mode runs its own ALB controller: the self-managed one serves IngressClass {} (not alb, which Auto Mode's may use) and its Service webhook is off (it would take new LoadBalancer Services from Auto Mode)",
                    lbc.ingress_class
                ));
            }
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
        let certificate = match &seen.webhook_tls {
            None => Check::skip(c, "lb-controller.webhook-certificate", "no webhook configuration of the controller"),
            Some(t) if !t.untrusted.is_empty() => {
                Check::fail(c, "lb-controller.webhook-certificate", t.untrusted.join("; ")).hint(if lbc.external {
                    "every Service and Ingress change fails with x509 errors: upgrade the controller's release with keepTLSSecret=true so its chart renders the caBundle from the Secret".to_string()
                } else {
                    "every Service and Ingress change fails with x509 errors: re-run install, which keeps the Secret and renders every caBundle from it".to_string()
                })
            }
            Some(t) if !t.expiring.is_empty() => Check::fail(c, "lb-controller.webhook-certificate", t.expiring.join("; "))
                .hint(format!(
                    "delete Secret {}/{LBC_TLS_SECRET} and re-run install: the chart makes a new certificate and caBundle",
                    lbc.namespace
                )),
            Some(t) => Check::pass(
                c,
                "lb-controller.webhook-certificate",
                format!(
                    "the caBundle of all {} webhooks trusts the webhook's certificate, valid for {WEBHOOK_CERT_MIN_DAYS} more days",
                    t.webhooks
                ),
            ),
        };
        vec![release, deployment, webhook, certificate, crds, cluster_name]
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
        Self::wait_backend_group_gone(env).await?;
        env.ctx.helm()?.uninstall(&lbc.release, &lbc.namespace).await?;
        env.progress.done(&format!("uninstalled release {}/{}", lbc.namespace, lbc.release));
        Ok(())
    }
}

impl LbController {
    /// The controller deletes the cluster's shared backend security group (`k8s-traffic-…`)
    /// once the last Ingress it serves is gone (nothing else uses it when it is removed):
    /// uninstalling it before would leave the group in AWS. Without a running controller,
    /// says what is left instead of waiting.
    async fn wait_backend_group_gone(env: &Env) -> Result<()> {
        let cluster = lookups::tagging_cluster_name(env).await?;
        let left = wait::until(env, "the controller's shared backend security group to be deleted", || async {
            let left = lookups::alb::security_groups(env, &cluster, None).await?;
            if left.is_empty() || !lookups::controller_up(env).await? {
                return Ok(Ok(left));
            }
            Ok(Err(format!("{} still in AWS (the controller deletes it after its last Ingress)", left.join(", "))))
        })
        .await?;
        if left.is_empty() {
            env.progress.done("the controller's shared backend security group is not left in AWS");
        } else {
            env.progress.warn(&format!(
                "left in AWS, with no controller to delete it (delete it yourself): {}",
                left.join(", ")
            ));
        }
        Ok(())
    }
}
