//! Dedicated nodes: the nodes that carry the pool label (or are named with
//! --nodes, and then get the label) receive the `NoSchedule` taint, so only
//! GraphQL pods (which tolerate it) run there. Only the labels and taints
//! this tool added are recorded, and only those are removed. Changes to many
//! nodes go out concurrently, a bounded number at a time.

use std::collections::BTreeMap;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Node, Pod, Taint as KubeTaint};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::component::Env;
use crate::component::{Action, Category, Check, Component, Fate, Verb};
use crate::error::{Context, Error, Result};
use crate::record::{NodeChange, Recorder};
use crate::spec::{NodeSpec, Taint};

/// How many nodes are patched (or their pods listed) at once.
pub const CONCURRENCY: usize = 8;
/// Objects per page of a list: a large cluster is read a page at a time.
const PAGE: u32 = 500;
/// Up to this many dedicated nodes, their pods are listed node by node;
/// beyond it, one paged list of the cluster's running pods is cheaper.
const PER_NODE_POD_LISTS: usize = 16;

/// Every object a list matches, a page at a time.
async fn list_paged<K>(api: &Api<K>, params: ListParams, what: &str) -> Result<Vec<K>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut items = vec![];
    let mut params = params.limit(PAGE);
    loop {
        let page = api.list(&params).await.context(what.to_string())?;
        items.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(items),
        }
    }
}

#[derive(Default)]
pub struct DedicatedNodes {
    nodes: Vec<NodeState>,
    /// GraphQL pods: (pod, node).
    pods: Vec<(String, String)>,
    /// Other pods on the dedicated nodes, DaemonSet pods aside: `namespace/pod on node`.
    foreign: Vec<String>,
}

#[derive(Clone)]
struct NodeState {
    name: String,
    resource_version: String,
    labels: BTreeMap<String, String>,
    taints: Vec<KubeTaint>,
}

impl NodeState {
    fn has_label(&self, spec: &NodeSpec) -> bool {
        self.labels.get(&spec.label_key) == Some(&spec.label_value)
    }
    fn has_taint(&self, t: &Taint) -> bool {
        self.taints
            .iter()
            .any(|k| k.key == t.key && k.value.as_deref().unwrap_or("") == t.value && k.effect == t.effect)
    }
}

fn kube_taint(t: &Taint) -> KubeTaint {
    KubeTaint { key: t.key.clone(), value: Some(t.value.clone()), effect: t.effect.clone(), time_added: None }
}

/// The patch that adds (or removes) a label and a taint, guarded by the
/// node's resourceVersion so that a concurrent change is not overwritten.
fn patch_for(node: &NodeState, label: Option<(&str, Option<&str>)>, taints: Vec<KubeTaint>) -> serde_json::Value {
    let mut patch = json!({"metadata": {"resourceVersion": node.resource_version}, "spec": {"taints": taints}});
    if let Some((k, v)) = label {
        patch["metadata"]["labels"] = json!({ k: v });
    }
    patch
}

impl DedicatedNodes {
    fn spec(env: &Env) -> Option<&NodeSpec> {
        env.spec.nodes.as_ref()
    }

    /// The nodes to dedicate: those named, else those labelled.
    fn targets<'a>(&'a self, spec: &NodeSpec) -> Vec<&'a NodeState> {
        self.nodes
            .iter()
            .filter(|n| if spec.names.is_empty() { n.has_label(spec) } else { spec.names.contains(&n.name) })
            .collect()
    }

    /// Pods on these nodes that are neither the release's nor a DaemonSet's
    /// (those run on every node by design), listed node by node by the API server.
    async fn foreign_pods(env: &Env, nodes: &[String]) -> Result<Vec<String>> {
        let api: Api<Pod> = Api::all(env.kube().clone());
        let running = "status.phase!=Succeeded,status.phase!=Failed";
        let pods: Vec<Pod> = if nodes.len() <= PER_NODE_POD_LISTS {
            stream::iter(nodes.iter().cloned())
                .map(|node| {
                    let api = api.clone();
                    async move {
                        let params = ListParams::default().fields(&format!("spec.nodeName={node},{running}"));
                        list_paged(&api, params, &format!("listing the pods on node {node}")).await
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .try_collect::<Vec<_>>()
                .await?
                .into_iter()
                .flatten()
                .collect()
        } else {
            let on: std::collections::BTreeSet<&str> = nodes.iter().map(String::as_str).collect();
            list_paged(&api, ListParams::default().fields(running), "listing the running pods")
                .await?
                .into_iter()
                .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| on.contains(n)))
                .collect()
        };
        let mut found: Vec<String> = pods
            .into_iter()
            .filter(|p| {
                let ns = p.metadata.namespace.as_deref().unwrap_or_default();
                let instance = p.metadata.labels.as_ref().and_then(|l| l.get("app.kubernetes.io/instance"));
                let ours = ns == env.spec.namespace && instance == Some(&env.spec.release);
                let daemon = p.metadata.owner_references.iter().flatten().any(|o| o.kind == "DaemonSet");
                !ours && !daemon && p.metadata.deletion_timestamp.is_none()
            })
            .map(|p| {
                format!(
                    "{}/{} on {}",
                    p.metadata.namespace.unwrap_or_default(),
                    p.metadata.name.unwrap_or_default(),
                    p.spec.and_then(|s| s.node_name).unwrap_or_default()
                )
            })
            .collect();
        found.sort();
        Ok(found)
    }

    /// Uninstall's one decision, node by node: a patch taking back what install
    /// added, for the nodes that still carry it.
    fn fates<'a>(&self, env: &'a Env) -> Result<Vec<(&'a NodeChange, Fate<serde_json::Value>)>> {
        let mut fates = vec![];
        for change in &env.record.nodes {
            let Some(node) = self.nodes.iter().find(|n| n.name == change.node) else {
                fates.push((change, Fate::Absent));
                continue;
            };
            let taints: Vec<KubeTaint> = match &change.taint {
                Some(t) => {
                    let t = crate::spec::parse_taint(t)
                        .map_err(|_| Error::failed(format!("the install record has a bad taint {t:?}")))?;
                    node.taints.iter().filter(|k| !(k.key == t.key && k.effect == t.effect)).cloned().collect()
                }
                None => node.taints.clone(),
            };
            let label = change.label.as_ref().and_then(|l| l.split_once('=')).map(|(k, _)| (k, None));
            let ours_left =
                taints.len() != node.taints.len() || label.is_some_and(|(k, _)| node.labels.contains_key(k));
            fates.push((change, if ours_left { Fate::Remove(patch_for(node, label, taints)) } else { Fate::Absent }));
        }
        Ok(fates)
    }

    async fn patch_all(env: &Env, patches: Vec<(String, serde_json::Value)>) -> Result<()> {
        let api: Api<Node> = Api::all(env.kube().clone());
        stream::iter(patches)
            .map(|(name, patch)| {
                let api = api.clone();
                async move {
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .context(format!("patching node {name}"))
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await
            .map(drop)
    }
}

#[async_trait]
impl Component for DedicatedNodes {
    fn name(&self) -> &'static str {
        "dedicated nodes"
    }

    fn category(&self) -> Category {
        Category::Nodes
    }

    async fn observe(&mut self, env: &Env) -> Result<()> {
        let Some(spec) = Self::spec(env) else {
            return Ok(());
        };
        let api: Api<Node> = Api::all(env.kube().clone());
        let recorded: Vec<&str> = env.record.nodes.iter().map(|n| n.node.as_str()).collect();
        // Only the labelled nodes matter unless nodes are named or recorded
        // changes are to be undone: then the API server filters, not this process.
        let labelled_only = spec.names.is_empty() && env.options.mode != crate::spec::Mode::Uninstall;
        let params = if labelled_only {
            ListParams::default().labels(&format!("{}={}", spec.label_key, spec.label_value))
        } else {
            ListParams::default()
        };
        self.nodes = list_paged(&api, params, "listing nodes")
            .await?
            .into_iter()
            .filter(|n| {
                let name = n.metadata.name.as_deref().unwrap_or_default();
                let labelled =
                    n.metadata.labels.as_ref().and_then(|l| l.get(&spec.label_key)) == Some(&spec.label_value);
                labelled || spec.names.iter().any(|x| x == name) || recorded.contains(&name)
            })
            .map(|n| NodeState {
                name: n.metadata.name.unwrap_or_default(),
                resource_version: n.metadata.resource_version.unwrap_or_default(),
                labels: n.metadata.labels.unwrap_or_default(),
                taints: n.spec.and_then(|s| s.taints).unwrap_or_default(),
            })
            .collect();
        if env.options.mode == crate::spec::Mode::Status {
            self.pods = crate::lookups::graphql_pods(env)
                .await?
                .into_iter()
                .map(|p| (p.metadata.name.unwrap_or_default(), p.spec.and_then(|s| s.node_name).unwrap_or_default()))
                .collect();
            let targets: Vec<String> = self.targets(spec).iter().map(|n| n.name.clone()).collect();
            self.foreign = Self::foreign_pods(env, &targets).await?;
        }
        Ok(())
    }

    fn plan(&self, env: &Env) -> Result<Vec<Action>> {
        let Some(spec) = Self::spec(env) else {
            return Ok(vec![]);
        };
        let selector = format!("{}={}", spec.label_key, spec.label_value);
        if let Some(missing) = spec.names.iter().find(|n| !self.nodes.iter().any(|x| &x.name == *n)) {
            return Err(Error::prerequisite(format!("--nodes names {missing}, which is not a node of this cluster"))
                .hint("list them with `kubectl get nodes`"));
        }
        let targets = self.targets(spec);
        if targets.is_empty() {
            return Err(Error::prerequisite(format!(
                "no node carries {selector}: there is nothing to dedicate to GraphQL"
            ))
            .hint(format!(
                "label the GraphQL node group {selector}, name nodes with --nodes, or pass --no-dedicated-nodes"
            )));
        }
        Ok(targets
            .iter()
            .filter_map(|n| {
                let mut what = vec![];
                if !n.has_label(spec) {
                    what.push(format!("label {selector}"));
                }
                if !n.has_taint(&spec.taint) {
                    what.push(format!("taint {}", spec.taint));
                }
                (!what.is_empty()).then(|| Action::kube(Verb::Update, "Node", &n.name).because(what.join(", ")))
            })
            .collect())
    }

    async fn apply(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        let Some(spec) = Self::spec(env) else {
            return Ok(());
        };
        let targets: Vec<NodeState> = self.targets(spec).into_iter().cloned().collect();
        let mut changes: Vec<NodeChange> = env.record.nodes.clone();
        let mut patches = vec![];
        for n in &targets {
            let add_label = !n.has_label(spec);
            let add_taint = !n.has_taint(&spec.taint);
            if !add_label && !add_taint {
                continue;
            }
            let entry = match changes.iter_mut().find(|c| c.node == n.name) {
                Some(e) => e,
                None => {
                    changes.push(NodeChange { node: n.name.clone(), taint: None, label: None });
                    changes.last_mut().expect("just pushed")
                }
            };
            if add_taint {
                entry.taint = Some(spec.taint.to_string());
            }
            if add_label {
                entry.label = Some(format!("{}={}", spec.label_key, spec.label_value));
            }
            let mut taints = n.taints.clone();
            if add_taint {
                taints.push(kube_taint(&spec.taint));
            }
            let label = add_label.then_some((spec.label_key.as_str(), Some(spec.label_value.as_str())));
            patches.push((n.name.clone(), patch_for(n, label, taints)));
        }
        if patches.is_empty() {
            return Ok(());
        }
        // Intent first: an interrupted run still knows which nodes it may have changed.
        record.update(|r| r.nodes = changes).await?;
        let count = patches.len();
        Self::patch_all(env, patches).await?;
        env.progress.done(&format!("dedicated {count} node(s) to GraphQL ({})", spec.taint));
        Ok(())
    }

    async fn checks(&self, env: &Env) -> Vec<Check> {
        let c = Category::Nodes;
        let Some(spec) = Self::spec(env) else {
            return vec![Check::pass(c, "nodes.dedicated", "no dedicated nodes (installed with --no-dedicated-nodes)")];
        };
        let targets = self.targets(spec);
        let untainted: Vec<_> = targets.iter().filter(|n| !n.has_taint(&spec.taint)).map(|n| n.name.as_str()).collect();
        let selector = format!("{}={}", spec.label_key, spec.label_value);
        let dedicated = if targets.is_empty() {
            Check::fail(c, "nodes.dedicated", format!("no node carries {selector}"))
                .hint("label the GraphQL node group, then re-run install")
        } else if !untainted.is_empty() {
            Check::fail(c, "nodes.dedicated", format!("node(s) {} lack the taint {}", untainted.join(", "), spec.taint))
                .hint("re-run install to taint them; other workloads may be scheduled there meanwhile")
        } else {
            Check::pass(c, "nodes.dedicated", format!("{} node(s) carry {selector} and {}", targets.len(), spec.taint))
        };
        let names: Vec<&str> = targets.iter().map(|n| n.name.as_str()).collect();
        let elsewhere: Vec<_> = self
            .pods
            .iter()
            .filter(|(_, node)| !node.is_empty() && !names.contains(&node.as_str()))
            .map(|(p, n)| format!("{p} on {n}"))
            .collect();
        let placement = if self.pods.is_empty() {
            Check::skip(c, "nodes.placement", "no GraphQL pods to check")
        } else {
            Check::expect(
                c,
                "nodes.placement",
                elsewhere.is_empty(),
                format!("all {} GraphQL pod(s) run on dedicated nodes", self.pods.len()),
                format!("GraphQL pods outside the dedicated nodes: {}", elsewhere.join(", ")),
            )
            .hint("the release's affinity must require the pool label; re-run install")
        };
        let hosts: std::collections::BTreeSet<_> =
            self.pods.iter().filter(|(_, n)| !n.is_empty()).map(|(_, n)| n.as_str()).collect();
        let want = self.pods.len().min(targets.len().max(1));
        let spread = if self.pods.is_empty() {
            Check::skip(c, "nodes.spread", "no GraphQL pods to check")
        } else if hosts.len() >= want {
            Check::pass(c, "nodes.spread", format!("GraphQL pods spread over {} host(s)", hosts.len()))
        } else {
            Check::warn(
                c,
                "nodes.spread",
                format!(
                    "{} GraphQL pods share {} host(s); one node failure takes several",
                    self.pods.len(),
                    hosts.len()
                ),
            )
            .hint("add dedicated nodes, or check the pod anti-affinity")
        };
        let foreign = if self.foreign.is_empty() {
            Check::pass(c, "nodes.foreign-pods", "no other workload runs on the dedicated nodes (DaemonSets aside)")
        } else {
            Check::warn(
                c,
                "nodes.foreign-pods",
                format!("pods of other workloads on the dedicated nodes: {}", self.foreign.join(", ")),
            )
            .hint("they were scheduled before the taint, or tolerate it: delete them so they are scheduled elsewhere (or restart their Deployment), and drop any toleration of the taint")
        };
        vec![dedicated, placement, spread, foreign]
    }

    fn removal(&self, env: &Env) -> Result<Vec<Action>> {
        Ok(self
            .fates(env)?
            .into_iter()
            .filter_map(|(c, fate)| match fate {
                Fate::Remove(_) => {
                    let what: Vec<_> = [
                        c.taint.as_ref().map(|t| format!("taint {t}")),
                        c.label.as_ref().map(|l| format!("label {l}")),
                    ]
                    .into_iter()
                    .flatten()
                    .collect();
                    Some(Action::kube(Verb::Update, "Node", &c.node).because(format!("remove {}", what.join(", "))))
                }
                _ => None,
            })
            .collect())
    }

    async fn remove(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        let patches: Vec<_> = self
            .fates(env)?
            .into_iter()
            .filter_map(|(c, fate)| match fate {
                Fate::Remove(patch) => Some((c.node.clone(), patch)),
                _ => None,
            })
            .collect();
        let count = patches.len();
        Self::patch_all(env, patches).await?;
        if count > 0 {
            env.progress.done(&format!("removed this tool's taints and labels from {count} node(s)"));
        }
        record.update(|r| r.nodes.clear()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_patch_is_guarded_by_its_resource_version() {
        let node =
            NodeState { name: "n".into(), resource_version: "42".into(), labels: BTreeMap::new(), taints: vec![] };
        let t = Taint { key: "k".into(), value: "v".into(), effect: "NoSchedule".into() };
        let p = patch_for(&node, Some(("agentpool", Some("x"))), vec![kube_taint(&t)]);
        assert_eq!(p["metadata"]["resourceVersion"], "42");
        assert_eq!(p["metadata"]["labels"]["agentpool"], "x");
        assert_eq!(p["spec"]["taints"][0]["effect"], "NoSchedule");
        let removal = patch_for(&node, Some(("agentpool", None)), vec![]);
        assert_eq!(removal["metadata"]["labels"]["agentpool"], serde_json::Value::Null);
    }
}
