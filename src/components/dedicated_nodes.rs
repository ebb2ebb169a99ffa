//! Dedicated nodes: the nodes that carry the pool label (or are named with
//! --nodes, and then get the label) receive the `NoSchedule` taint, so only
//! GraphQL pods (which tolerate it) run there. Only the labels and taints
//! this tool added are recorded, and only those are removed. Changes to many
//! nodes go out concurrently, a bounded number at a time. Each patch is
//! guarded by the node's resourceVersion; a node changed meanwhile (the
//! controller manager writes nodes too: the not-ready taint, the TTL
//! annotation for the cluster's size, the beta labels) is read again and its
//! patch decided again.

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
/// Named (or recorded) nodes without the pool label, up to this many, are read
/// one by one; beyond it, one paged list of every node is cheaper.
const NODE_GETS: usize = 16;
/// How many times one node's patch is decided again after a conflict.
const CONFLICT_ATTEMPTS: usize = 5;

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

/// A node as listed here: only the fields this component uses are decoded
/// (status and managed fields, most of a node's size, are skipped).
#[derive(serde::Deserialize)]
struct ListedNode {
    metadata: ListedMeta,
    spec: Option<ListedSpec>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListedMeta {
    name: Option<String>,
    resource_version: Option<String>,
    labels: Option<BTreeMap<String, String>>,
}

#[derive(serde::Deserialize)]
struct ListedSpec {
    taints: Option<Vec<KubeTaint>>,
}

#[derive(serde::Deserialize)]
struct NodePage {
    items: Vec<ListedNode>,
    metadata: PageMeta,
}

#[derive(serde::Deserialize)]
struct PageMeta {
    #[serde(rename = "continue")]
    continue_: Option<String>,
}

/// Every node a list matches, a page at a time, decoded as `ListedNode`.
async fn list_nodes(env: &Env, params: ListParams) -> Result<Vec<NodeState>> {
    let mut nodes = vec![];
    let mut params = params.limit(PAGE);
    loop {
        let request = kube::core::Request::new("/api/v1/nodes")
            .list(&params)
            .map_err(|e| Error::failed(format!("listing nodes: {e}")))?;
        let page: NodePage = env.kube().request(request).await.context("listing nodes")?;
        nodes.extend(page.items.into_iter().map(|n| NodeState {
            name: n.metadata.name.unwrap_or_default(),
            resource_version: n.metadata.resource_version.unwrap_or_default(),
            labels: n.metadata.labels.unwrap_or_default(),
            taints: n.spec.and_then(|s| s.taints).unwrap_or_default(),
        }));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(nodes),
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
    fn from_node(n: Node) -> NodeState {
        NodeState {
            name: n.metadata.name.unwrap_or_default(),
            resource_version: n.metadata.resource_version.unwrap_or_default(),
            labels: n.metadata.labels.unwrap_or_default(),
            taints: n.spec.and_then(|s| s.taints).unwrap_or_default(),
        }
    }
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

/// A node as read, and the patch to send it.
type NodePatch = (NodeState, serde_json::Value);

/// The patch that dedicates `node` (label and taint), or None when it already is.
fn dedication(node: &NodeState, spec: &NodeSpec) -> Option<serde_json::Value> {
    let add_label = !node.has_label(spec);
    let add_taint = !node.has_taint(&spec.taint);
    if !add_label && !add_taint {
        return None;
    }
    let mut taints = node.taints.clone();
    if add_taint {
        taints.push(kube_taint(&spec.taint));
    }
    let label = add_label.then_some((spec.label_key.as_str(), Some(spec.label_value.as_str())));
    Some(patch_for(node, label, taints))
}

/// The patch that takes back what install added to `node` (the recorded
/// `change`), or None when the node no longer carries any of it.
fn undoing(node: &NodeState, change: &NodeChange) -> Result<Option<serde_json::Value>> {
    let taints: Vec<KubeTaint> = match &change.taint {
        Some(t) => {
            let t = crate::spec::parse_taint(t)
                .map_err(|_| Error::failed(format!("the install record has a bad taint {t:?}")))?;
            node.taints.iter().filter(|k| !(k.key == t.key && k.effect == t.effect)).cloned().collect()
        }
        None => node.taints.clone(),
    };
    let label = change.label.as_ref().and_then(|l| l.split_once('=')).map(|(k, _)| (k, None));
    let ours_left = taints.len() != node.taints.len() || label.is_some_and(|(k, _)| node.labels.contains_key(k));
    Ok(ours_left.then(|| patch_for(node, label, taints)))
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
    fn fates<'a>(&self, env: &'a Env) -> Result<Vec<(&'a NodeChange, Fate<NodePatch>)>> {
        let mut fates = vec![];
        for change in &env.record.nodes {
            let fate = match self.nodes.iter().find(|n| n.name == change.node) {
                Some(node) => match undoing(node, change)? {
                    Some(patch) => Fate::Remove((node.clone(), patch)),
                    None => Fate::Absent,
                },
                None => Fate::Absent,
            };
            fates.push((change, fate));
        }
        Ok(fates)
    }

    /// Sends each node's patch, a bounded number at a time. A patch refused
    /// because the node changed since it was read (409) is decided again by
    /// `decide` on the node as it is now: sent with its new resourceVersion, or
    /// dropped when the node no longer needs it. A node deleted since it was
    /// read (404: an autoscaler or a spot reclaim took it) has nothing left to
    /// change: it is named and skipped. Returns how many nodes were patched.
    async fn patch_all<F>(env: &Env, patches: Vec<NodePatch>, decide: F) -> Result<usize>
    where
        F: Fn(&NodeState) -> Result<Option<serde_json::Value>> + Sync,
    {
        let api: Api<Node> = Api::all(env.kube().clone());
        let decide = &decide;
        stream::iter(patches)
            .map(|(node, patch)| {
                let api = api.clone();
                async move {
                    let name = node.name;
                    let gone = || {
                        env.progress
                            .warn(&format!("node {name} was deleted since it was read: nothing to change on it"));
                        Ok(false)
                    };
                    let mut patch = patch;
                    for _ in 0..CONFLICT_ATTEMPTS {
                        match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                            Err(kube::Error::Api(e)) if e.code == 404 => return gone(),
                            Err(kube::Error::Api(e)) if e.code == 409 => {
                                let Some(now) =
                                    api.get_opt(&name).await.context(format!("reading node {name} again"))?
                                else {
                                    return gone();
                                };
                                match decide(&NodeState::from_node(now))? {
                                    Some(again) => patch = again,
                                    None => return Ok(false),
                                }
                            }
                            done => return done.map(|_| true).context(format!("patching node {name}")),
                        }
                    }
                    Err(Error::failed(format!(
                        "patching node {name}: it changed under every one of {CONFLICT_ATTEMPTS} attempts"
                    ))
                    .hint("something keeps rewriting the node; re-run install"))
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<bool>>()
            .await
            .map(|patched| patched.into_iter().filter(|p| *p).count())
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
        // The labelled nodes, filtered by the API server; then the named nodes (and,
        // unless only labelled nodes matter, the recorded ones) that lack the label:
        // read one by one when they are few (a status after install: none), else
        // found in one list of every node (an install naming many new nodes).
        let selector = format!("{}={}", spec.label_key, spec.label_value);
        let mut nodes = list_nodes(env, ListParams::default().labels(&selector)).await?;
        let labelled_only = spec.names.is_empty() && env.options.mode != crate::spec::Mode::Uninstall;
        let mut missing = std::collections::BTreeSet::new();
        if !labelled_only {
            let recorded = env.record.nodes.iter().map(|n| n.node.as_str());
            missing.extend(spec.names.iter().map(String::as_str).chain(recorded));
            for n in &nodes {
                missing.remove(n.name.as_str());
            }
        }
        if missing.len() > NODE_GETS {
            let all = list_nodes(env, ListParams::default()).await?;
            nodes.extend(all.into_iter().filter(|n| missing.contains(n.name.as_str())));
        } else {
            let missing: Vec<String> = missing.into_iter().map(str::to_string).collect();
            let found: Vec<Option<Node>> = stream::iter(missing)
                .map(|name: String| {
                    let api = api.clone();
                    async move { api.get_opt(&name).await.context(format!("reading node {name}")) }
                })
                .buffer_unordered(CONCURRENCY)
                .try_collect()
                .await?;
            nodes.extend(found.into_iter().flatten().map(NodeState::from_node));
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        self.nodes = nodes;
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
            let Some(patch) = dedication(n, spec) else { continue };
            let entry = match changes.iter_mut().find(|c| c.node == n.name) {
                Some(e) => e,
                None => {
                    changes.push(NodeChange { node: n.name.clone(), taint: None, label: None });
                    changes.last_mut().expect("just pushed")
                }
            };
            if !n.has_taint(&spec.taint) {
                entry.taint = Some(spec.taint.to_string());
            }
            if !n.has_label(spec) {
                entry.label = Some(format!("{}={}", spec.label_key, spec.label_value));
            }
            patches.push(((*n).clone(), patch));
        }
        if patches.is_empty() {
            return Ok(());
        }
        // Intent first: an interrupted run still knows which nodes it may have changed.
        record.update(|r| r.nodes = changes).await?;
        let count = Self::patch_all(env, patches, |now| Ok(dedication(now, spec))).await?;
        if count > 0 {
            env.progress.done(&format!("dedicated {count} node(s) to GraphQL ({})", spec.taint));
        }
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
        // Dedicated in effect: the nodes named (or labelled) now, and any other that carries
        // both the pool label and the taint, as one named by an earlier `install --nodes` does:
        // the release's affinity and toleration admit its pods there.
        let names: Vec<&str> = self
            .nodes
            .iter()
            .filter(|n| targets.iter().any(|t| t.name == n.name) || (n.has_label(spec) && n.has_taint(&spec.taint)))
            .map(|n| n.name.as_str())
            .collect();
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
            .filter_map(|(_, fate)| match fate {
                Fate::Remove(patch) => Some(patch),
                _ => None,
            })
            .collect();
        let changes = &env.record.nodes;
        let count = Self::patch_all(env, patches, |now| match changes.iter().find(|c| c.node == now.name) {
            Some(change) => undoing(now, change),
            None => Ok(None),
        })
        .await?;
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

    #[test]
    fn a_patch_is_decided_on_the_node_as_it_is_now() {
        let t = Taint { key: "k".into(), value: "v".into(), effect: "NoSchedule".into() };
        let spec =
            NodeSpec { label_key: "pool".into(), label_value: "x".into(), taint: t.clone(), names: vec!["n".into()] };
        let other = KubeTaint { key: "o".into(), value: None, effect: "PreferNoSchedule".into(), time_added: None };
        let bare = NodeState {
            name: "n".into(),
            resource_version: "7".into(),
            labels: BTreeMap::new(),
            taints: vec![other.clone()],
        };
        let p = dedication(&bare, &spec).expect("a bare node needs both");
        assert_eq!(p["metadata"]["labels"]["pool"], "x");
        assert_eq!(p["spec"]["taints"].as_array().unwrap().len(), 2, "the other taint is kept");
        let done = NodeState {
            labels: [("pool".to_string(), "x".to_string())].into(),
            taints: vec![other, kube_taint(&t)],
            ..bare.clone()
        };
        assert_eq!(dedication(&done, &spec), None);
        let change = NodeChange { node: "n".into(), taint: Some(t.to_string()), label: Some("pool=x".into()) };
        assert_eq!(undoing(&bare, &change).unwrap(), None, "nothing of ours is left");
        let undo = undoing(&done, &change).unwrap().expect("ours is there");
        assert_eq!(undo["spec"]["taints"].as_array().unwrap().len(), 1);
        assert_eq!(undo["metadata"]["labels"]["pool"], serde_json::Value::Null);
    }
}
