//! EKS Auto Mode's ALB: no controller, IAM or webhook to install. Its
//! controller (`eks.amazonaws.com/alb`) serves Ingresses of an IngressClass
//! whose parameters are an `IngressClassParams` of `eks.amazonaws.com/v1`.
//! Install makes both, named `scalardb-graphql-alb`, labelled as this tool's:
//! the parameters with `scheme: internal` (and the `--subnets` given); a
//! class of that name that is not this tool's is used only when it is Auto
//! Mode's with internal parameters. Uninstall removes them only when they are
//! this tool's and no other Ingress names the class.

use async_trait::async_trait;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass, IngressClassParametersReference, IngressClassSpec};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};

use crate::component::Env;
use crate::component::{Action, Category, Check, Component, Fate, Verb};
use crate::error::{Context, Error, Result};
use crate::lookups::INGRESS_RELEASE_LABEL;
use crate::ownership;
use crate::pins::{AUTO_MODE_CLASS_CONTROLLER, AUTO_MODE_PARAMS_GROUP, AUTO_MODE_PARAMS_VERSION};
use crate::record::{Owned, Recorder};

use super::{delete_gone, is_managed, managed_labels};

const KIND: &str = "IngressClassParams";
const PLURAL: &str = "ingressclassparams";

#[derive(Default)]
pub struct AutoModeClass {
    seen: Option<Seen>,
}

struct Seen {
    /// Auto Mode's IngressClassParams CRD is served.
    crd: bool,
    class: Option<IngressClass>,
    params: Option<DynamicObject>,
    /// Uninstall: Ingresses, other than the release's, that name the class.
    users: Vec<String>,
}

fn resource() -> ApiResource {
    ApiResource {
        group: AUTO_MODE_PARAMS_GROUP.into(),
        version: AUTO_MODE_PARAMS_VERSION.into(),
        api_version: format!("{AUTO_MODE_PARAMS_GROUP}/{AUTO_MODE_PARAMS_VERSION}"),
        kind: KIND.into(),
        plural: PLURAL.into(),
    }
}

impl AutoModeClass {
    fn name(env: &Env) -> &str {
        &env.spec.lb_controller.ingress_class
    }

    fn params_api(env: &Env) -> Api<DynamicObject> {
        Api::all_with(env.kube().clone(), &resource())
    }

    /// The parameters install gives the class: an internal ALB, in the subnets asked for.
    fn desired_params(env: &Env) -> Value {
        let mut spec = json!({"scheme": "internal"});
        if !env.spec.subnets.is_empty() {
            spec["subnets"] = json!({"ids": env.spec.subnets});
        }
        spec
    }

    fn class_controller(class: &IngressClass) -> Option<&str> {
        class.spec.as_ref().and_then(|s| s.controller.as_deref())
    }

    fn class_params(class: &IngressClass) -> Option<&IngressClassParametersReference> {
        class.spec.as_ref().and_then(|s| s.parameters.as_ref())
    }

    /// What is wrong with the class and its parameters for an internal Auto Mode ALB, or None.
    fn problem(&self, env: &Env) -> Option<String> {
        let seen = self.seen.as_ref().expect("observed");
        let name = Self::name(env);
        if !seen.crd {
            return Some(format!(
                "the cluster serves no {KIND} of {AUTO_MODE_PARAMS_GROUP}: EKS Auto Mode's load balancing is not on"
            ));
        }
        let Some(class) = &seen.class else {
            return Some(format!("IngressClass {name} does not exist"));
        };
        if Self::class_controller(class) != Some(AUTO_MODE_CLASS_CONTROLLER) {
            return Some(format!(
                "IngressClass {name} belongs to controller {:?}, not {AUTO_MODE_CLASS_CONTROLLER}",
                Self::class_controller(class).unwrap_or_default()
            ));
        }
        let reference = Self::class_params(class);
        if reference.is_none_or(|p| p.kind != KIND || p.name != name) {
            return Some(format!("IngressClass {name} does not name {KIND} {name} as its parameters"));
        }
        let Some(params) = &seen.params else {
            return Some(format!("{KIND} {name} does not exist"));
        };
        let scheme = params.data["spec"]["scheme"].as_str().unwrap_or("internet-facing");
        if scheme != "internal" {
            return Some(format!("{KIND} {name} has scheme {scheme}, not internal"));
        }
        None
    }

    fn ours(&self) -> bool {
        self.seen.as_ref().and_then(|s| s.class.as_ref()).is_some_and(|c| is_managed(&c.metadata))
    }

    /// Uninstall's one decision: ours goes when no other Ingress names the class.
    fn fate(&self, env: &Env) -> Fate {
        let Some(seen) = self.seen.as_ref().filter(|s| s.class.is_some() || s.params.is_some()) else {
            return Fate::Absent;
        };
        if let Some(why) = ownership::unproven(Owned::claimed(env.record.auto_mode_class.as_ref()), self.ours()) {
            return Fate::Keep(why);
        }
        if !seen.users.is_empty() {
            return Fate::Keep(format!("Ingresses {} use it", seen.users.join(", ")));
        }
        Fate::Remove(())
    }

    /// Other Ingresses that name the class (the release's own goes before this).
    async fn users(env: &Env) -> Result<Vec<String>> {
        let all: Api<Ingress> = Api::all(env.kube().clone());
        let release = Some(env.spec.release.as_str());
        let own = |i: &Ingress| {
            let labels = i.metadata.labels.as_ref();
            let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
            i.metadata.namespace.as_deref() == Some(env.spec.namespace.as_str())
                && (label("app.kubernetes.io/instance") == release || label(INGRESS_RELEASE_LABEL) == release)
        };
        Ok(all
            .list(&ListParams::default())
            .await
            .context("listing Ingresses")?
            .into_iter()
            .filter(|i| i.spec.as_ref().and_then(|s| s.ingress_class_name.as_deref()) == Some(Self::name(env)))
            .filter(|i| !own(i))
            .map(|i| format!("{}/{}", i.metadata.namespace.unwrap_or_default(), i.metadata.name.unwrap_or_default()))
            .collect())
    }
}

#[async_trait]
impl Component for AutoModeClass {
    fn name(&self) -> &'static str {
        "EKS Auto Mode IngressClass"
    }

    fn category(&self) -> Category {
        Category::LbController
    }

    fn shared(&self) -> bool {
        true
    }

    async fn observe(&mut self, env: &Env) -> Result<()> {
        let name = Self::name(env).to_string();
        let crds: Api<CustomResourceDefinition> = Api::all(env.kube().clone());
        let crd = crds
            .get_opt(&format!("{PLURAL}.{AUTO_MODE_PARAMS_GROUP}"))
            .await
            .context("reading Auto Mode's IngressClassParams CRD")?
            .is_some();
        let classes: Api<IngressClass> = Api::all(env.kube().clone());
        let class = classes.get_opt(&name).await.context(format!("reading IngressClass {name}"))?;
        let params = if crd {
            Self::params_api(env).get_opt(&name).await.context(format!("reading {KIND} {name}"))?
        } else {
            None
        };
        let users = if env.options.mode == crate::spec::Mode::Uninstall { Self::users(env).await? } else { vec![] };
        self.seen = Some(Seen { crd, class, params, users });
        Ok(())
    }

    fn plan(&self, env: &Env) -> Result<Vec<Action>> {
        let seen = self.seen.as_ref().expect("observed");
        let name = Self::name(env);
        if !env.facts.auto_mode || !seen.crd {
            return Err(Error::prerequisite(format!(
                "EKS cluster {} is not in EKS Auto Mode with its load balancing on (no {KIND} of {AUTO_MODE_PARAMS_GROUP})",
                env.facts.name
            ))
            .hint("install with --lb-controller self-managed, or turn Auto Mode on for the cluster"));
        }
        let desired = Self::desired_params(env);
        match &seen.class {
            Some(_) if !self.ours() => {
                return match self.problem(env) {
                    None => Ok(vec![]), // Auto Mode's, internal: used as it is
                    Some(p) => Err(Error::prerequisite(format!("{p}, and it is not this tool's"))
                        .hint("delete or fix that IngressClass, or let this tool make its own")),
                };
            }
            _ => {}
        }
        let mut actions = vec![];
        match &seen.params {
            None => actions.push(Action::kube(Verb::Create, KIND, name).because("scheme internal")),
            Some(p) if p.data["spec"] != desired => {
                actions.push(Action::kube(Verb::Update, KIND, name).because(format!("spec {desired}")))
            }
            Some(_) => {}
        }
        if seen.class.is_none() {
            actions.push(
                Action::kube(Verb::Create, "IngressClass", name)
                    .because(format!("controller {AUTO_MODE_CLASS_CONTROLLER}, parameters {KIND} {name}")),
            );
        }
        Ok(actions)
    }

    async fn apply(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        let seen = self.seen.as_ref().expect("observed");
        let name = Self::name(env).to_string();
        if seen.class.is_some() && !self.ours() {
            return record.update(|r| r.auto_mode_class = Some(Owned { id: name.clone(), created: false })).await;
        }
        record.update(|r| r.auto_mode_class = Some(Owned { id: name.clone(), created: true })).await?;
        let desired = Self::desired_params(env);
        if seen.params.as_ref().is_none_or(|p| p.data["spec"] != desired) {
            let params = json!({
                "apiVersion": format!("{AUTO_MODE_PARAMS_GROUP}/{AUTO_MODE_PARAMS_VERSION}"),
                "kind": KIND,
                "metadata": {"name": name, "labels": managed_labels()},
                "spec": desired,
            });
            Self::params_api(env)
                .patch(&name, &PatchParams::apply(crate::pins::MANAGED_BY).force(), &Patch::Apply(&params))
                .await
                .context(format!("applying {KIND} {name}"))?;
            env.progress.done(&format!("applied {KIND} {name} (scheme internal)"));
        }
        if seen.class.is_none() {
            let class = IngressClass {
                metadata: ObjectMeta { name: Some(name.clone()), labels: Some(managed_labels()), ..Default::default() },
                spec: Some(IngressClassSpec {
                    controller: Some(AUTO_MODE_CLASS_CONTROLLER.into()),
                    parameters: Some(IngressClassParametersReference {
                        api_group: Some(AUTO_MODE_PARAMS_GROUP.into()),
                        kind: KIND.into(),
                        name: name.clone(),
                        scope: Some("Cluster".into()),
                        namespace: None,
                    }),
                }),
            };
            let classes: Api<IngressClass> = Api::all(env.kube().clone());
            classes.create(&PostParams::default(), &class).await.context(format!("creating IngressClass {name}"))?;
            env.progress.done(&format!("created IngressClass {name} of {AUTO_MODE_CLASS_CONTROLLER}"));
        }
        Ok(())
    }

    async fn checks(&self, env: &Env) -> Vec<Check> {
        let c = Category::LbController;
        let controller = if env.facts.auto_mode {
            Check::pass(
                c,
                "lb-controller.auto-mode",
                "EKS Auto Mode runs the ALB controller (no controller, IAM or webhook to install)",
            )
        } else {
            Check::fail(
                c,
                "lb-controller.auto-mode",
                format!(
                    "EKS cluster {} is no longer in EKS Auto Mode: nothing serves IngressClass {}",
                    env.facts.name,
                    Self::name(env)
                ),
            )
            .hint("turn Auto Mode on again, or uninstall and install with --lb-controller self-managed")
        };
        let class = match self.problem(env) {
            None => Check::pass(
                c,
                "lb-controller.ingress-class",
                format!("IngressClass {} of {AUTO_MODE_CLASS_CONTROLLER}, internal", Self::name(env)),
            ),
            Some(p) => Check::fail(c, "lb-controller.ingress-class", p).hint("re-run install to make them again"),
        };
        vec![controller, class]
    }

    fn removal(&self, env: &Env) -> Result<Vec<Action>> {
        let name = Self::name(env);
        Ok(match self.fate(env) {
            Fate::Remove(()) => {
                vec![Action::kube(Verb::Delete, "IngressClass", name), Action::kube(Verb::Delete, KIND, name)]
            }
            kept => Action::kept("kubernetes", "IngressClass", name, &kept).into_iter().collect(),
        })
    }

    async fn remove(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        let name = Self::name(env).to_string();
        if let Fate::Remove(()) = self.fate(env) {
            let classes: Api<IngressClass> = Api::all(env.kube().clone());
            delete_gone(&classes, &name, &DeleteParams::default(), &format!("IngressClass {name}")).await?;
            if self.seen.as_ref().is_some_and(|s| s.crd) {
                delete_gone(&Self::params_api(env), &name, &DeleteParams::default(), &format!("{KIND} {name}")).await?;
            }
            env.progress.done(&format!("deleted IngressClass {name} and its {KIND}"));
        }
        record.update(|r| r.auto_mode_class = None).await
    }
}
