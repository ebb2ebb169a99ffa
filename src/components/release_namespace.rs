//! The release namespace. Install creates it when it is missing (with this
//! tool's label, before the run's Lease and the install record, which live
//! in it). Uninstall deletes it only when install created it and nothing is
//! left in it but this tool's objects and this release's: another team's
//! ConfigMap, another release's helm storage, anything this tool cannot
//! account for keeps it, and the plan says what.

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, ObjectMeta};
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope, verbs};

use crate::component::Env;
use crate::component::{Action, Category, Check, Component, Fate, Verb};
use crate::error::{Context, Result};
use crate::ownership::{is_managed, released_by};
use crate::record::Recorder;
use crate::spec::Mode;

/// How many kinds are listed at once.
const CONCURRENCY: usize = 8;
/// How many leftover objects a reason names.
const NAMED: usize = 5;

#[derive(Default)]
pub struct ReleaseNamespace {
    seen: Option<Seen>,
}

#[derive(Default)]
struct Seen {
    exists: bool,
    managed: bool,
    terminating: bool,
    /// Uninstall: what is in it that is neither this tool's nor this release's.
    others: Vec<String>,
}

/// Kinds whose objects are made from others and go with them, or are not objects of anyone's.
fn derived(resource: &ApiResource) -> bool {
    matches!(
        (resource.group.as_str(), resource.plural.as_str()),
        ("", "events") | ("events.k8s.io", "events") | ("", "endpoints") | ("metrics.k8s.io", _)
    )
}

/// Whether an object is this tool's, this release's, made from another (it goes with it),
/// going already, or one every namespace has.
fn accounted_for(kind: &str, meta: &ObjectMeta, namespace: &str, release: &str) -> bool {
    let labels = meta.labels.clone().unwrap_or_default();
    let helm_storage = labels.get("owner").map(String::as_str) == Some("helm")
        && labels.get("name").map(String::as_str) == Some(release);
    let default = match kind {
        "ConfigMap" => meta.name.as_deref() == Some("kube-root-ca.crt"),
        "ServiceAccount" => meta.name.as_deref() == Some("default"),
        "Secret" => meta
            .annotations
            .as_ref()
            .and_then(|a| a.get("kubernetes.io/service-account.name"))
            .is_some_and(|sa| sa == "default"),
        _ => false,
    };
    // TargetGroupBindings the controller makes for an Ingress's or a Service's stack go with it.
    let stack = labels.keys().any(|k| k.starts_with("ingress.k8s.aws/stack") || k.starts_with("service.k8s.aws/stack"));
    is_managed(meta)
        || helm_storage
        || stack
        || released_by(meta, release, namespace)
        || meta.owner_references.as_ref().is_some_and(|o| !o.is_empty())
        || meta.deletion_timestamp.is_some()
        || default
}

impl ReleaseNamespace {
    /// What the namespace holds besides this tool's objects and this release's.
    async fn others(env: &Env) -> Result<Vec<String>> {
        let ns = &env.spec.namespace;
        let discovery = Discovery::new(env.kube().clone()).run().await.context("discovering the API's kinds")?;
        let kinds: Vec<(ApiResource, ApiCapabilities)> = discovery
            .groups()
            .flat_map(|g| g.recommended_resources())
            .filter(|(r, caps)| caps.scope == Scope::Namespaced && caps.supports_operation(verbs::LIST) && !derived(r))
            .collect();
        let found: Vec<Vec<String>> = stream::iter(kinds)
            .map(|(resource, _)| async move {
                let api: Api<DynamicObject> = Api::namespaced_with(env.kube().clone(), ns, &resource);
                let listed = match api.list_metadata(&ListParams::default()).await {
                    Ok(l) => l.items,
                    Err(kube::Error::Api(e)) if e.code == 404 || e.code == 405 => return Ok(vec![]),
                    Err(kube::Error::Api(e)) if e.code == 403 => {
                        return Ok(vec![format!("{} (cannot be listed: {})", resource.plural, e.message)]);
                    }
                    Err(e) => return Err(e).context(format!("listing {} in {ns}", resource.plural)),
                };
                Ok::<_, crate::error::Error>(
                    listed
                        .into_iter()
                        .filter(|o| !accounted_for(&resource.kind, &o.metadata, ns, &env.spec.release))
                        .map(|o| format!("{} {}", resource.kind, o.metadata.name.unwrap_or_default()))
                        .collect(),
                )
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        let mut others: Vec<String> = found.into_iter().flatten().collect();
        others.sort();
        Ok(others)
    }

    fn listing(others: &[String]) -> String {
        let shown = others.iter().take(NAMED).cloned().collect::<Vec<_>>().join(", ");
        match others.len().saturating_sub(NAMED) {
            0 => shown,
            more => format!("{shown} and {more} more"),
        }
    }

    /// Uninstall's one decision.
    fn fate(&self, env: &Env) -> Fate {
        let seen = self.seen.as_ref().expect("observed");
        if !seen.exists || seen.terminating || !env.record.namespace_created {
            Fate::Absent
        } else if !seen.managed {
            Fate::Keep("the install record says install created it, but it carries no mark of this tool".into())
        } else if !seen.others.is_empty() {
            Fate::Keep(format!("it still holds {}", Self::listing(&seen.others)))
        } else {
            Fate::Remove(())
        }
    }
}

#[async_trait]
impl Component for ReleaseNamespace {
    fn name(&self) -> &'static str {
        "release namespace"
    }

    fn category(&self) -> Category {
        Category::Graphql
    }

    async fn observe(&mut self, env: &Env) -> Result<()> {
        let ns = &env.spec.namespace;
        let api: Api<Namespace> = Api::all(env.kube().clone());
        let found = api.get_opt(ns).await.context(format!("reading namespace {ns}"))?;
        let mut seen = Seen {
            exists: found.is_some(),
            managed: found.as_ref().is_some_and(|n| is_managed(&n.metadata)),
            terminating: found.as_ref().is_some_and(|n| n.metadata.deletion_timestamp.is_some()),
            others: vec![],
        };
        if env.options.mode == Mode::Uninstall && seen.managed && env.record.namespace_created {
            seen.others = Self::others(env).await?;
        }
        self.seen = Some(seen);
        Ok(())
    }

    fn plan(&self, env: &Env) -> Result<Vec<Action>> {
        let seen = self.seen.as_ref().expect("observed");
        Ok(if seen.exists {
            vec![]
        } else {
            vec![
                Action::kube(Verb::Create, "Namespace", &env.spec.namespace)
                    .because("the release, the install record and the run's Lease live in it"),
            ]
        })
    }

    async fn apply(&mut self, _env: &Env, record: &mut Recorder) -> Result<()> {
        record.ensure_namespace().await // made before the run's Lease; at once here otherwise
    }

    async fn checks(&self, _env: &Env) -> Vec<Check> {
        vec![]
    }

    fn removal(&self, env: &Env) -> Result<Vec<Action>> {
        Ok(match self.fate(env) {
            Fate::Remove(()) => vec![
                Action::kube(Verb::Delete, "Namespace", &env.spec.namespace)
                    .because("install created it; only if nothing but this release's objects remain in it"),
            ],
            kept => Action::kept("kubernetes", "Namespace", &env.spec.namespace, &kept).into_iter().collect(),
        })
    }

    /// Last of all: what is in it now is read again, as what another team
    /// created meanwhile must keep it.
    async fn remove(&mut self, env: &Env, _record: &mut Recorder) -> Result<()> {
        if self.fate(env) != Fate::Remove(()) {
            return Ok(());
        }
        let ns = &env.spec.namespace;
        let others = Self::others(env).await?;
        if !others.is_empty() {
            env.progress.warn(&format!("kept namespace {ns}: it now holds {}", Self::listing(&others)));
            return Ok(());
        }
        let api: Api<Namespace> = Api::all(env.kube().clone());
        match api.delete(ns, &DeleteParams::default()).await {
            // Gone, or already being deleted (an earlier run, or someone else).
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e).context(format!("deleting namespace {ns}")),
        }
        env.progress.done(&format!("deleted namespace {ns}, which install created"));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            annotations: Some(annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn only_this_tools_and_this_releases_objects_are_accounted_for() {
        let (ns, rel) = ("team2", "second");
        let ours = meta("second-install-record", &[(crate::pins::MANAGED_BY_KEY, crate::pins::MANAGED_BY)], &[]);
        assert!(accounted_for("ConfigMap", &ours, ns, rel));
        let storage = meta("sh.helm.release.v1.second.v1", &[("owner", "helm"), ("name", rel)], &[]);
        assert!(accounted_for("Secret", &storage, ns, rel));
        let other_release = meta("sh.helm.release.v1.web.v1", &[("owner", "helm"), ("name", "web")], &[]);
        assert!(!accounted_for("Secret", &other_release, ns, rel));
        let chart = meta(
            "second-scalardb-graphql",
            &[],
            &[("meta.helm.sh/release-name", rel), ("meta.helm.sh/release-namespace", ns)],
        );
        assert!(accounted_for("Service", &chart, ns, rel));
        assert!(accounted_for("ConfigMap", &meta("kube-root-ca.crt", &[], &[]), ns, rel));
        assert!(!accounted_for("ConfigMap", &meta("team-settings", &[], &[]), ns, rel));
        assert!(!accounted_for("Secret", &meta("kube-root-ca.crt", &[], &[]), ns, rel), "only the ConfigMap");
    }
}
