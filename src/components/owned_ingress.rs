//! `--target cluster`: the ALB Ingress this tool makes and owns, because
//! the scalardb-cluster chart has none. Class `alb` (or the release's class), the guide's annotations
//! (internal, ip targets, cookie stickiness, the GraphQL health check), one
//! Exact path to the chart's `<fullname>-graphql` Service on port 8080.
//! Labelled as this tool's and with its release, recorded before it is
//! created. Install order puts it after the release, so uninstall removes
//! it first and waits until the controller has deleted its ALB, while the
//! nodes and the controller still run.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule, IngressServiceBackend, IngressSpec,
    ServiceBackendPort,
};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};

use crate::component::Env;
use crate::component::{Action, Category, Check, Component, Fate, Verb};
use crate::error::{Context, Error, Result};
use crate::lookups::{self, INGRESS_RELEASE_LABEL, ReleaseIngress};
use crate::pins::CLUSTER_GRAPHQL_PORT;
use crate::record::{Owned, Recorder};
use crate::values;

use super::ingress_teardown as teardown;
use super::{delete_gone, is_managed, managed_labels};

#[derive(Default)]
pub struct OwnedIngress {
    seen: Option<Seen>,
}

#[derive(Clone)]
struct Seen {
    found: ReleaseIngress,
    /// The Ingress of that name, whoever made it (the label finds only ours).
    named: Option<Ingress>,
    /// The Service the Ingress points at, and whether it has the GraphQL port.
    service: Option<bool>,
}

impl OwnedIngress {
    /// The chart's GraphQL Service, as named by the release's values.
    fn service_name(env: &Env) -> String {
        lookups::cluster_graphql_service(&env.spec, &values::release(&env.spec, &env.options.user_values))
    }

    /// The Ingress as install makes it.
    pub fn desired(env: &Env) -> Ingress {
        let service = Self::service_name(env);
        let path = env.spec.scalardb.path.clone();
        let mut labels = managed_labels();
        labels.insert(INGRESS_RELEASE_LABEL.into(), env.spec.release.clone());
        let annotations: BTreeMap<String, String> = values::alb_annotations(&path).into_iter().collect();
        Ingress {
            metadata: ObjectMeta {
                name: Some(service.clone()),
                namespace: Some(env.spec.namespace.clone()),
                labels: Some(labels),
                annotations: Some(annotations),
                ..Default::default()
            },
            spec: Some(IngressSpec {
                ingress_class_name: Some(env.spec.lb_controller.ingress_class.clone()),
                rules: Some(vec![IngressRule {
                    host: None,
                    http: Some(HTTPIngressRuleValue {
                        paths: vec![HTTPIngressPath {
                            path: Some(path),
                            path_type: "Exact".into(),
                            backend: IngressBackend {
                                service: Some(IngressServiceBackend {
                                    name: service,
                                    port: Some(ServiceBackendPort {
                                        number: Some(CLUSTER_GRAPHQL_PORT.into()),
                                        name: None,
                                    }),
                                }),
                                resource: None,
                            },
                        }],
                    }),
                }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// What differs between the Ingress as found and as wanted; None when the same.
    fn change(&self, env: &Env) -> Option<String> {
        let seen = self.seen.as_ref().expect("observed");
        let Some(now) = &seen.found.ingress else { return Some("not there".into()) };
        let want = Self::desired(env);
        if now.metadata.name != want.metadata.name {
            return Some(format!("renamed to {}", want.metadata.name.unwrap_or_default()));
        }
        if now.spec != want.spec {
            return Some("class or rules differ".into());
        }
        if now.metadata.annotations != want.metadata.annotations {
            return Some("annotations differ".into());
        }
        let labels = now.metadata.labels.clone().unwrap_or_default();
        if want.metadata.labels.unwrap_or_default().iter().any(|(k, v)| labels.get(k) != Some(v)) {
            return Some("labels differ".into());
        }
        None
    }

    /// Uninstall's one decision: only an Ingress carrying this tool's labels
    /// and recorded as created by it goes.
    fn fate(&self, env: &Env) -> Fate {
        let seen = self.seen.as_ref().expect("observed");
        let Some(ing) = &seen.found.ingress else { return Fate::Absent };
        let recorded = Owned::claimed(env.record.owned_ingress.as_ref());
        match crate::ownership::unproven(recorded, is_managed(&ing.metadata)) {
            Some(why) => Fate::Keep(why),
            None if !recorded => Fate::Keep("the install record does not say install created it".into()),
            None => Fate::Remove(()),
        }
    }
}

#[async_trait]
impl Component for OwnedIngress {
    fn name(&self) -> &'static str {
        "cluster Ingress"
    }

    fn category(&self) -> Category {
        Category::Ingress
    }

    async fn observe(&mut self, env: &Env) -> Result<()> {
        let ns = &env.spec.namespace;
        let name = Self::service_name(env);
        let values = values::release(&env.spec, &env.options.user_values);
        let ingresses: Api<Ingress> = Api::namespaced(env.kube().clone(), ns);
        let services: Api<Service> = Api::namespaced(env.kube().clone(), ns);
        let (found, named, service) =
            tokio::join!(lookups::release_ingress(env, &values), ingresses.get_opt(&name), services.get_opt(&name));
        let service = service.context(format!("reading Service {ns}/{name}"))?.map(|s| {
            s.spec.and_then(|s| s.ports).unwrap_or_default().iter().any(|p| p.port == i32::from(CLUSTER_GRAPHQL_PORT))
        });
        self.seen =
            Some(Seen { found: found?, named: named.context(format!("reading Ingress {ns}/{name}"))?, service });
        Ok(())
    }

    fn plan(&self, env: &Env) -> Result<Vec<Action>> {
        let seen = self.seen.as_ref().expect("observed");
        let target = format!("{}/{}", env.spec.namespace, Self::service_name(env));
        if seen.found.ingress.is_none() && seen.named.is_some() {
            return Err(Error::prerequisite(format!("Ingress {target} exists and was not created by this tool"))
                .hint("delete it or rename it, or install under another --release"));
        }
        Ok(match self.change(env) {
            None => vec![],
            Some(why) if seen.found.ingress.is_none() => {
                vec![Action::kube(Verb::Create, "Ingress", target).because(format!(
                    "class alb to Service {}:{CLUSTER_GRAPHQL_PORT} ({why})",
                    Self::service_name(env)
                ))]
            }
            Some(why) => vec![Action::kube(Verb::Update, "Ingress", target).because(why)],
        })
    }

    async fn apply(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        let Some(why) = self.change(env) else { return Ok(()) };
        let seen = self.seen.clone().expect("observed");
        let want = Self::desired(env);
        let name = want.metadata.name.clone().unwrap_or_default();
        let ns = &env.spec.namespace;
        record.update(|r| r.owned_ingress = Some(Owned { id: name.clone(), created: true })).await?;
        let api: Api<Ingress> = Api::namespaced(env.kube().clone(), ns);
        match &seen.found.ingress {
            Some(now) if now.metadata.name.as_deref() == Some(name.as_str()) => {
                let mut next = want;
                next.metadata.resource_version = now.metadata.resource_version.clone();
                // The controller's finalizer and status stay as they are.
                next.metadata.finalizers = now.metadata.finalizers.clone();
                api.replace(&name, &PostParams::default(), &next).await.context(format!("updating Ingress {name}"))?;
                env.progress.done(&format!("updated Ingress {ns}/{name} ({why})"));
            }
            _ => {
                if let Err(e) = api.create(&PostParams::default(), &want).await {
                    if let Some(refused) = crate::error::webhook_refusal(&e.to_string()) {
                        return Err(refused);
                    }
                    return Err(e).context(format!("creating Ingress {name}"));
                }
                env.progress.done(&format!("created Ingress {ns}/{name}"));
            }
        }
        Ok(())
    }

    async fn checks(&self, env: &Env) -> Vec<Check> {
        let seen = self.seen.as_ref().expect("observed");
        let c = Category::Ingress;
        let service = Self::service_name(env);
        let owned = match &seen.found.ingress {
            Some(_) => Check::pass(c, "ingress.owned", format!("Ingress {} is this tool's", seen.found.display())),
            None => {
                Check::fail(c, "ingress.owned", format!("no Ingress of this tool for release {}", env.spec.release))
                    .hint("run `kubectl scalardb-graphql install --target cluster`")
            }
        };
        let backend = match seen.service {
            Some(true) => Check::pass(
                c,
                "ingress.backend",
                format!("Service {}/{service} serves port {CLUSTER_GRAPHQL_PORT}", env.spec.namespace),
            ),
            Some(false) => Check::fail(
                c,
                "ingress.backend",
                format!("Service {}/{service} has no port {CLUSTER_GRAPHQL_PORT}", env.spec.namespace),
            )
            .hint("the chart's scalardbCluster.graphql.service.ports must keep port 8080; re-run install"),
            None => {
                Check::fail(c, "ingress.backend", format!("Service {}/{service} does not exist", env.spec.namespace))
                    .hint("the chart makes it with scalardbCluster.graphql.enabled=true; re-run install")
            }
        };
        vec![owned, backend]
    }

    fn removal(&self, _env: &Env) -> Result<Vec<Action>> {
        let seen = self.seen.as_ref().expect("observed");
        let target = seen.found.display();
        Ok(match self.fate(_env) {
            Fate::Absent => vec![Action::wait(format!("the ALB of Ingress {target} is gone"))],
            kept @ (Fate::Keep(_) | Fate::Defer(_)) => {
                Action::kept("kubernetes", "Ingress", target, &kept).into_iter().collect()
            }
            Fate::Remove(()) => vec![
                Action::kube(Verb::Delete, "Ingress", target.clone()),
                Action::wait(format!("Ingress {target} and its ALB are gone (while the controller still runs)")),
            ],
        })
    }

    async fn remove(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        let seen = self.seen.clone().expect("observed");
        match self.fate(env) {
            Fate::Keep(_) | Fate::Defer(_) => return Ok(()),
            Fate::Remove(()) => {
                let api: Api<Ingress> = Api::namespaced(env.kube().clone(), &seen.found.namespace);
                let what = format!("Ingress {}", seen.found.display());
                let deleted = delete_gone(&api, &seen.found.name, &DeleteParams::default(), &what).await?;
                env.progress.done(&if deleted {
                    format!("deleted {what}")
                } else {
                    format!("{what} was already gone")
                });
                teardown::wait_ingress_gone(env, &seen.found).await?;
            }
            Fate::Absent => {}
        }
        teardown::wait_alb_gone(env, &seen.found).await?;
        record.update(|r| r.owned_ingress = None).await
    }
}
