//! The controller chart's CRDs. `helm install` applies a chart's CRDs but
//! `helm upgrade` does not, so before an upgrade of the controller install
//! applies them (server-side). It records the CRDs the chart brought that
//! were not there before; uninstall removes those last, and only when no
//! custom resource of them remains (helm itself never removes CRDs).
//!
//! This is first in the install order so that it is last in uninstall's.

use async_trait::async_trait;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::discovery::ApiResource;
use serde_json::Value;

use crate::component::Env;
use crate::component::{Action, Category, Check, Component, Fate, Verb};
use crate::error::{Context, Result};
use crate::pins::LBC_CRD_GROUPS;
use crate::record::{ControllerRecord, Recorder};
use crate::spec::Mode;

pub const FIELD_MANAGER: &str = "kubectl-scalardb-graphql";

#[derive(Default)]
pub struct ControllerCrds {
    /// The chart's CRDs, when an install or upgrade of the chart is coming.
    chart: Vec<ChartCrd>,
    upgrade: bool,
}

struct ChartCrd {
    name: String,
    doc: Value,
    exists: bool,
    current: bool,
}

/// Whether every field of `want` is in `have` with the same value (the API
/// server adds defaults, so equality would be too strict).
pub fn is_subset(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => {
            w.iter().all(|(k, v)| h.get(k).is_some_and(|hv| is_subset(v, hv)) || v.is_null())
        }
        (Value::Array(w), Value::Array(h)) => w.len() == h.len() && w.iter().zip(h).all(|(a, b)| is_subset(a, b)),
        (w, h) => w == h,
    }
}

/// Helm 3's `show crds` concatenates the chart's CRD files without `---`
/// between them; a top-level key seen twice starts the next document.
fn split_documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    let mut keys = std::collections::BTreeSet::new();
    for line in text.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
            keys.clear();
            continue;
        }
        let top_level_key =
            line.split_once(':').map(|(k, _)| k).filter(|k| !k.is_empty() && !k.starts_with([' ', '#', '-']));
        if let Some(key) = top_level_key
            && !keys.insert(key.to_string())
        {
            docs.push(String::new());
            keys.clear();
            keys.insert(key.to_string());
        }
        let doc = docs.last_mut().expect("never empty");
        doc.push_str(line);
        doc.push('\n');
    }
    docs.retain(|d| d.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')));
    docs
}

fn crds_of(yaml: &str) -> Result<Vec<Value>> {
    let mut crds = vec![];
    for doc in split_documents(yaml) {
        let v: Value = serde_saphyr::from_str(&doc).context("parsing the chart's CRDs")?;
        if v["kind"] == "CustomResourceDefinition" {
            crds.push(v);
        }
    }
    Ok(crds)
}

/// How many custom resources of a CRD exist, across namespaces (0 when it is gone).
pub async fn custom_resource_count(client: &kube::Client, crd: &CustomResourceDefinition) -> Result<usize> {
    let spec = &crd.spec;
    let Some(version) = spec.versions.iter().find(|v| v.storage).or(spec.versions.first()) else {
        return Ok(0);
    };
    let ar = ApiResource {
        group: spec.group.clone(),
        version: version.name.clone(),
        api_version: format!("{}/{}", spec.group, version.name),
        kind: spec.names.kind.clone(),
        plural: spec.names.plural.clone(),
    };
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let list = api.list(&ListParams::default()).await.context(format!("listing {}", spec.names.plural))?;
    Ok(list.items.len())
}

impl ControllerCrds {
    fn recorded(env: &Env) -> &[String] {
        env.record.lb_controller.as_ref().filter(|c| c.installed).map(|c| c.crds.as_slice()).unwrap_or_default()
    }

    /// Uninstall's one decision, CRD by CRD (each still only if no custom
    /// resource of it remains). The record only lists names: a CRD outside the
    /// controller's own API groups is never this tool's to delete.
    fn fates<'a>(env: &Env, recorded: &'a [String]) -> Vec<(&'a String, Fate)> {
        let kept = env.options.controller_kept();
        recorded
            .iter()
            .map(|name| {
                let fate = if !LBC_CRD_GROUPS.iter().any(|g| name.strip_suffix(g).is_some_and(|p| p.ends_with('.'))) {
                    Fate::Keep(format!(
                        "the install record lists it, but the controller's chart brings CRDs only in {}",
                        LBC_CRD_GROUPS.join(", ")
                    ))
                } else if let Some(why) = &kept {
                    Fate::Keep(why.clone())
                } else {
                    Fate::Remove(())
                };
                (name, fate)
            })
            .collect()
    }
}

#[async_trait]
impl Component for ControllerCrds {
    fn name(&self) -> &'static str {
        "controller CRDs"
    }

    fn category(&self) -> Category {
        Category::LbController
    }

    async fn observe(&mut self, env: &Env) -> Result<()> {
        self.chart.clear();
        let lbc = &env.spec.lb_controller;
        // Only install looks at the chart (status and uninstall never fetch it).
        if lbc.external || env.options.mode != Mode::Install {
            return Ok(());
        }
        let helm = env.ctx.helm()?;
        let release = helm.metadata(&lbc.release, &lbc.namespace).await?;
        let coming = match &release {
            None => true,
            Some(r) => Some(&r.version) != lbc.chart.version.as_ref(),
        };
        // Only when it is about to be installed or upgraded.
        if !coming {
            return Ok(());
        }
        if env.record.lb_controller.as_ref().is_some_and(|c| !c.installed) && release.is_some() {
            return Ok(()); // a controller this tool does not manage
        }
        self.upgrade = release.is_some();
        let crds: Api<CustomResourceDefinition> = Api::all(env.kube().clone());
        for doc in crds_of(&helm.show_crds(&lbc.chart).await?)? {
            let name = doc["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let existing = crds.get_opt(&name).await.context(format!("reading CRD {name}"))?;
            let current = existing
                .as_ref()
                .is_some_and(|e| serde_json::to_value(&e.spec).is_ok_and(|have| is_subset(&doc["spec"], &have)));
            self.chart.push(ChartCrd { name, exists: existing.is_some(), current, doc });
        }
        Ok(())
    }

    fn plan(&self, _env: &Env) -> Result<Vec<Action>> {
        if !self.upgrade {
            return Ok(vec![]); // helm install applies them itself
        }
        Ok(self
            .chart
            .iter()
            .filter(|c| !c.current)
            .map(|c| {
                Action::kube(if c.exists { Verb::Update } else { Verb::Create }, "CustomResourceDefinition", &c.name)
                    .because("server-side apply before the controller's upgrade (helm upgrade skips CRDs)")
            })
            .collect())
    }

    async fn apply(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        let new: Vec<String> = self.chart.iter().filter(|c| !c.exists).map(|c| c.name.clone()).collect();
        if !new.is_empty() {
            let lbc = &env.spec.lb_controller;
            record
                .update(|r| {
                    let entry = r.lb_controller.get_or_insert_with(|| ControllerRecord {
                        release: lbc.release.clone(),
                        namespace: lbc.namespace.clone(),
                        installed: true,
                        crds: vec![],
                    });
                    for n in &new {
                        if !entry.crds.contains(n) {
                            entry.crds.push(n.clone());
                        }
                    }
                })
                .await?;
        }
        if !self.upgrade {
            return Ok(());
        }
        let api: Api<CustomResourceDefinition> = Api::all(env.kube().clone());
        for crd in self.chart.iter().filter(|c| !c.current) {
            api.patch(&crd.name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&crd.doc))
                .await
                .context(format!("applying CRD {}", crd.name))?;
            env.progress.done(&format!("applied CRD {}", crd.name));
        }
        Ok(())
    }

    /// The controller component checks that its CRDs are present.
    async fn checks(&self, _env: &Env) -> Vec<Check> {
        vec![]
    }

    fn removal(&self, env: &Env) -> Result<Vec<Action>> {
        Ok(Self::fates(env, Self::recorded(env))
            .into_iter()
            .filter_map(|(name, fate)| match fate {
                Fate::Absent => None,
                Fate::Keep(why) => Some(Action::keep("kubernetes", "CustomResourceDefinition", name, why)),
                Fate::Remove(()) => Some(
                    Action::kube(Verb::Delete, "CustomResourceDefinition", name)
                        .because("if no custom resource of it remains"),
                ),
            })
            .collect())
    }

    async fn remove(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        if env.options.controller_kept().is_some() {
            return Ok(());
        }
        let api: Api<CustomResourceDefinition> = Api::all(env.kube().clone());
        // The live record: the controller's removal may have kept it (and with it, its CRDs).
        let recorded: Vec<String> =
            record.record.lb_controller.as_ref().filter(|c| c.installed).map(|c| c.crds.clone()).unwrap_or_default();
        for (name, fate) in Self::fates(env, &recorded) {
            if fate != Fate::Remove(()) {
                continue;
            }
            let Some(crd) = api.get_opt(name).await.context(format!("reading CRD {name}"))? else {
                continue;
            };
            let count = custom_resource_count(env.kube(), &crd).await?;
            if count > 0 {
                env.progress.warn(&format!("kept CRD {name}: {count} custom resource(s) of it remain"));
                continue;
            }
            api.delete(name, &DeleteParams::default()).await.context(format!("deleting CRD {name}"))?;
            // A CRD goes only once its custom resources are cleaned up: said deleted when it is gone.
            crate::wait::until(env, &format!("CRD {name} to be gone"), || async {
                Ok(match api.get_opt(name).await.context(format!("reading CRD {name}"))? {
                    None => Ok(()),
                    Some(_) => Err("terminating".to_string()),
                })
            })
            .await?;
            env.progress.done(&format!("deleted CRD {name}"));
        }
        record.update(|r| r.lb_controller = None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_added_by_the_server_do_not_count_as_drift() {
        let want = json!({"group": "g", "versions": [{"name": "v1", "served": true}]});
        let have = json!({"group": "g", "conversion": {"strategy": "None"}, "versions": [{"name": "v1", "served": true, "storage": true}]});
        assert!(is_subset(&want, &have));
        assert!(!is_subset(&json!({"group": "h"}), &have));
        assert!(!is_subset(&json!({"versions": []}), &have));
    }

    #[test]
    fn concatenated_files_without_separators_are_split() {
        let yaml = "apiVersion: v1\nkind: CustomResourceDefinition\nmetadata:\n  name: a\n# next file\napiVersion: v1\nkind: CustomResourceDefinition\nmetadata:\n  name: b\n";
        let names: Vec<_> =
            crds_of(yaml).unwrap().iter().map(|c| c["metadata"]["name"].as_str().unwrap().to_string()).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn only_crd_documents_are_taken() {
        let yaml = "---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: a.b\n---\nkind: ConfigMap\n";
        let crds = crds_of(yaml).unwrap();
        assert_eq!(crds.len(), 1);
        assert_eq!(crds[0]["metadata"]["name"], "a.b");
    }
}
