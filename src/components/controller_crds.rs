//! The controller chart's CRDs. `helm upgrade` does not apply a chart's CRDs
//! (and `helm install` skips those already there), so before the controller
//! is installed or upgraded install applies them itself (server-side): those
//! that were not there are created with this tool's mark. Uninstall removes
//! the marked ones last, and only while the controller release is this
//! tool's, nothing else uses the controller, and no custom resource of them
//! remains (helm itself never removes CRDs).
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
use crate::pins::{LBC_CRD_GROUPS, MANAGED_BY, MANAGED_BY_KEY};
use crate::record::{ControllerRecord, Recorder};
use crate::spec::Mode;

pub const FIELD_MANAGER: &str = "kubectl-scalardb-graphql";

#[derive(Default)]
pub struct ControllerCrds {
    /// The chart's CRDs, when an install or upgrade of the chart is coming.
    chart: Vec<ChartCrd>,
    upgrade: bool,
    /// Uninstall: the CRDs of the controller's groups that carry this tool's mark.
    marked: Vec<String>,
    /// Uninstall: the controller release exists and is not this tool's.
    foreign_release: bool,
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
    /// The chart's CRDs install applies itself: those missing, and on an upgrade those out of date.
    fn to_apply(&self) -> impl Iterator<Item = &ChartCrd> {
        self.chart.iter().filter(|c| !c.exists || (self.upgrade && !c.current))
    }

    /// Uninstall's one decision, CRD by CRD (each still only if no custom
    /// resource of it remains): the CRDs the record lists and those carrying
    /// this tool's mark; only marked ones of the controller's own API groups go,
    /// and only while the controller release is this tool's (or gone).
    fn fates(&self, env: &Env) -> Vec<(String, Fate)> {
        let recorded = env.record.lb_controller.as_ref().map(|c| c.crds.clone()).unwrap_or_default();
        let mut names: Vec<String> = recorded.into_iter().chain(self.marked.iter().cloned()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|name| {
                let fate = if !LBC_CRD_GROUPS.iter().any(|g| name.strip_suffix(g).is_some_and(|p| p.ends_with('.'))) {
                    Fate::Keep(format!(
                        "the install record lists it, but the controller's chart brings CRDs only in {}",
                        LBC_CRD_GROUPS.join(", ")
                    ))
                } else if !self.marked.contains(&name) {
                    Fate::Keep("the install record lists it, but it carries no mark of this tool (or is gone)".into())
                } else if self.foreign_release {
                    Fate::Keep("the controller's release is not this tool's".into())
                } else if let Some(kept) = &env.shared.controller {
                    Fate::kept(kept)
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

    fn shared(&self) -> bool {
        true
    }

    async fn observe(&mut self, env: &Env) -> Result<()> {
        self.chart.clear();
        let lbc = &env.spec.lb_controller;
        let api: Api<CustomResourceDefinition> = Api::all(env.kube().clone());
        if env.options.mode == Mode::Uninstall {
            let marked = api
                .list_metadata(&ListParams::default().labels(&format!("{MANAGED_BY_KEY}={MANAGED_BY}")))
                .await
                .context("listing the CRDs this tool made")?;
            self.marked = marked.items.into_iter().filter_map(|c| c.metadata.name).collect();
            let release = crate::releases::read(env.kube(), || env.ctx.helm(), &lbc.namespace, &lbc.release).await?;
            self.foreign_release = release.is_some_and(|r| !r.marked);
            return Ok(());
        }
        // Only install looks at the chart (status never fetches it).
        if lbc.external || env.options.mode != Mode::Install {
            return Ok(());
        }
        let helm = env.ctx.helm()?;
        // From helm's storage, as status reads it (helm runs only for the chart's CRDs).
        let release =
            crate::releases::read(env.kube(), || Ok(helm), &lbc.namespace, &lbc.release).await?.map(|r| r.metadata);
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
        for doc in crds_of(&helm.show_crds(&lbc.chart).await?)? {
            let name = doc["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let existing = api.get_opt(&name).await.context(format!("reading CRD {name}"))?;
            let current = existing
                .as_ref()
                .is_some_and(|e| serde_json::to_value(&e.spec).is_ok_and(|have| is_subset(&doc["spec"], &have)));
            self.chart.push(ChartCrd { name, exists: existing.is_some(), current, doc });
        }
        Ok(())
    }

    fn plan(&self, _env: &Env) -> Result<Vec<Action>> {
        Ok(self
            .to_apply()
            .map(|c| {
                if c.exists {
                    Action::kube(Verb::Update, "CustomResourceDefinition", &c.name)
                        .because("server-side apply before the controller's upgrade (helm upgrade skips CRDs)")
                } else {
                    Action::kube(Verb::Create, "CustomResourceDefinition", &c.name)
                        .because("server-side apply, with this tool's mark, before the controller's chart")
                }
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
        let api: Api<CustomResourceDefinition> = Api::all(env.kube().clone());
        for crd in self.to_apply() {
            let mut doc = crd.doc.clone();
            if !crd.exists {
                doc["metadata"]["labels"][MANAGED_BY_KEY] = MANAGED_BY.into();
            }
            api.patch(&crd.name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&doc))
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
        Ok(self
            .fates(env)
            .into_iter()
            .filter_map(|(name, fate)| match fate {
                Fate::Remove(()) => Some(
                    Action::kube(Verb::Delete, "CustomResourceDefinition", name)
                        .because("if no custom resource of it remains"),
                ),
                kept => Action::kept("kubernetes", "CustomResourceDefinition", name, &kept),
            })
            .collect())
    }

    async fn remove(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        let fates = self.fates(env);
        if fates.iter().any(|(_, f)| matches!(f, Fate::Defer(_))) {
            return Ok(());
        }
        let api: Api<CustomResourceDefinition> = Api::all(env.kube().clone());
        for (name, fate) in fates {
            if fate != Fate::Remove(()) {
                continue;
            }
            let Some(crd) = api.get_opt(&name).await.context(format!("reading CRD {name}"))? else {
                continue;
            };
            let count = custom_resource_count(env.kube(), &crd).await?;
            if count > 0 {
                env.progress.warn(&format!("kept CRD {name}: {count} custom resource(s) of it remain"));
                continue;
            }
            api.delete(&name, &DeleteParams::default()).await.context(format!("deleting CRD {name}"))?;
            // A CRD goes only once its custom resources are cleaned up: said deleted when it is gone.
            crate::wait::until(env, &format!("CRD {name} to be gone"), || async {
                Ok(match api.get_opt(&name).await.context(format!("reading CRD {name}"))? {
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
