//! Dedicated nodes: the nodes that carry the pool label (or are named with
//! --nodes, and then get the label) receive the `NoSchedule` taint, so only
//! GraphQL pods (which tolerate it) run there. Only the labels and taints
//! this tool added are recorded, and only those are removed. Changes to many
//! nodes go out concurrently, a bounded number at a time. Each patch is
//! guarded by the node's resourceVersion; a node changed meanwhile (the
//! controller manager writes nodes too: the not-ready taint, the TTL
//! annotation for the cluster's size, the beta labels) is read again and its
//! patch decided again.
//!
//! Each patch that adds the label or taint also writes this tool's mark on the
//! node (an annotation naming what it added); uninstall takes back only what
//! the node's own mark names. The install record only says which nodes to look at.

use std::collections::BTreeMap;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Node, Pod, Taint as KubeTaint};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::component::Env;
use crate::component::{Action, Category, Check, Component, Fate, Verb};
use crate::error::{Context, Error, Result};
use crate::pins::NODE_MARK;
use crate::record::{NodeChange, Recorder};
use crate::spec::{NodeSpec, Taint};

/// This tool's mark on a node: the label and the taint it added.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Mark {
    /// `key=value`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    /// `key=value:Effect`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    taint: Option<String>,
}

impl Mark {
    /// The mark a node carries, if any (an unreadable one marks nothing).
    fn of(node: &NodeState) -> Option<Mark> {
        node.annotations.get(NODE_MARK).map(|m| serde_json::from_str(m).unwrap_or_default())
    }
    fn text(&self) -> String {
        serde_json::to_string(self).expect("a mark serializes")
    }
}

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
    annotations: Option<BTreeMap<String, String>>,
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
            annotations: n.metadata.annotations.unwrap_or_default(),
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
    annotations: BTreeMap<String, String>,
    taints: Vec<KubeTaint>,
}

impl NodeState {
    fn from_node(n: Node) -> NodeState {
        NodeState {
            name: n.metadata.name.unwrap_or_default(),
            resource_version: n.metadata.resource_version.unwrap_or_default(),
            labels: n.metadata.labels.unwrap_or_default(),
            annotations: n.metadata.annotations.unwrap_or_default(),
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

/// The patch that sets (or removes, with None) a label, the taints and this
/// tool's mark, guarded by the node's resourceVersion so that a concurrent
/// change is not overwritten.
fn patch_for(
    node: &NodeState,
    label: Option<(&str, Option<&str>)>,
    taints: Vec<KubeTaint>,
    mark: Option<&Mark>,
) -> serde_json::Value {
    let mut patch = json!({"metadata": {"resourceVersion": node.resource_version}, "spec": {"taints": taints}});
    if let Some((k, v)) = label {
        patch["metadata"]["labels"] = json!({ k: v });
    }
    patch["metadata"]["annotations"] = json!({ NODE_MARK: mark.map(Mark::text) });
    patch
}

/// A node as read, and the patch to send it.
type NodePatch = (NodeState, serde_json::Value);

/// The patch that dedicates `node` (label and taint, and the mark naming what it
/// added besides what the mark named before), or None when it already is.
fn dedication(node: &NodeState, spec: &NodeSpec) -> Option<serde_json::Value> {
    let add_label = !node.has_label(spec);
    let add_taint = !node.has_taint(&spec.taint);
    if !add_label && !add_taint {
        return None;
    }
    let mut taints = node.taints.clone();
    let mut mark = Mark::of(node).unwrap_or_default();
    if add_taint {
        taints.push(kube_taint(&spec.taint));
        mark.taint = Some(spec.taint.to_string());
    }
    if add_label {
        mark.label = Some(format!("{}={}", spec.label_key, spec.label_value));
    }
    let label = add_label.then_some((spec.label_key.as_str(), Some(spec.label_value.as_str())));
    Some(patch_for(node, label, taints, Some(&mark)))
}

/// The patch that takes back what the node's own mark says this tool added
/// (and the mark), or None when it carries no mark.
fn undoing(node: &NodeState) -> Result<Option<serde_json::Value>> {
    let Some(mark) = Mark::of(node) else { return Ok(None) };
    let taints: Vec<KubeTaint> = match &mark.taint {
        Some(t) => {
            let t = crate::spec::parse_taint(t).map_err(|_| {
                Error::failed(format!("node {} carries a bad mark {NODE_MARK}: taint {t:?}", node.name))
            })?;
            node.taints
                .iter()
                .filter(|k| !(k.key == t.key && k.effect == t.effect && k.value.as_deref().unwrap_or("") == t.value))
                .cloned()
                .collect()
        }
        None => node.taints.clone(),
    };
    // The label goes only while it still has the value this tool gave it.
    let label = mark
        .label
        .as_ref()
        .and_then(|l| l.split_once('='))
        .filter(|(k, v)| node.labels.get(*k).map(String::as_str) == Some(*v))
        .map(|(k, _)| (k, None));
    Ok(Some(patch_for(node, label, taints, None)))
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

    /// Uninstall's one decision, node by node: the nodes the record lists and the
    /// pool's nodes that carry this tool's mark; a patch taking back what each
    /// node's own mark names, unless another release uses the pool.
    fn fates(&self, env: &Env) -> Result<Vec<(String, Fate<NodePatch>)>> {
        let recorded: Vec<&str> = env.record.nodes.iter().map(|n| n.node.as_str()).collect();
        let mut fates = vec![];
        for name in recorded.iter().copied() {
            if !self.nodes.iter().any(|n| n.name == name) {
                fates.push((name.to_string(), Fate::Absent));
            }
        }
        for node in &self.nodes {
            let listed = recorded.contains(&node.name.as_str());
            let fate = match undoing(node)? {
                None if listed => Fate::Keep("the install record lists it, but it carries no mark of this tool".into()),
                None => continue,
                Some(patch) => match &env.shared.nodes {
                    Some(kept) => Fate::kept(kept),
                    None => Fate::Remove((node.clone(), patch)),
                },
            };
            fates.push((node.name.clone(), fate));
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
    /// The labelled nodes, filtered by the API server; then the named nodes (and,
    /// unless only labelled nodes matter, the recorded ones) that lack the label:
    /// read one by one when they are few (a status after install: none), else
    /// found in one list of every node (an install naming many new nodes). By name.
    async fn read_nodes(env: &Env, spec: &NodeSpec) -> Result<Vec<NodeState>> {
        let api: Api<Node> = Api::all(env.kube().clone());
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
        Ok(nodes)
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

    fn shared(&self) -> bool {
        true
    }

    async fn observe(&mut self, env: &Env) -> Result<()> {
        let Some(spec) = Self::spec(env) else {
            return Ok(());
        };
        let status = env.options.mode == crate::spec::Mode::Status;
        // Status's placement check also needs the release's pods: read beside the nodes.
        let pods = async {
            if !status {
                return Ok(vec![]);
            }
            Ok(crate::lookups::graphql_pods(env)
                .await?
                .into_iter()
                .map(|p| (p.metadata.name.unwrap_or_default(), p.spec.and_then(|s| s.node_name).unwrap_or_default()))
                .collect())
        };
        let (nodes, pods) = futures::try_join!(Self::read_nodes(env, spec), pods)?;
        self.nodes = nodes;
        if status {
            self.pods = pods;
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
            .filter_map(|(name, fate)| match &fate {
                Fate::Remove((node, _)) => {
                    let mark = Mark::of(node).unwrap_or_default();
                    let what: Vec<_> = [
                        mark.taint.as_ref().map(|t| format!("taint {t}")),
                        mark.label.as_ref().map(|l| format!("label {l}")),
                    ]
                    .into_iter()
                    .flatten()
                    .collect();
                    Some(Action::kube(Verb::Update, "Node", &name).because(format!(
                        "remove what this tool's mark says it added: {}",
                        if what.is_empty() { "nothing but the mark".to_string() } else { what.join(", ") }
                    )))
                }
                kept => Action::kept("kubernetes", "Node", &name, kept),
            })
            .collect())
    }

    async fn remove(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        let fates = self.fates(env)?;
        if fates.iter().any(|(_, f)| matches!(f, Fate::Defer(_))) {
            return Ok(());
        }
        let patches: Vec<_> = fates
            .into_iter()
            .filter_map(|(_, fate)| match fate {
                Fate::Remove(patch) => Some(patch),
                _ => None,
            })
            .collect();
        let count = Self::patch_all(env, patches, undoing).await?;
        if count > 0 {
            env.progress.done(&format!("removed this tool's taints and labels from {count} node(s)"));
        }
        record.update(|r| r.nodes.clear()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(labels: &[(&str, &str)], taints: Vec<KubeTaint>, mark: Option<&str>) -> NodeState {
        NodeState {
            name: "n".into(),
            resource_version: "7".into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            annotations: mark.map(|m| (NODE_MARK.to_string(), m.to_string())).into_iter().collect(),
            taints,
        }
    }

    #[test]
    fn a_node_patch_is_guarded_by_its_resource_version_and_carries_the_mark() {
        let n = node(&[], vec![], None);
        let t = Taint { key: "k".into(), value: "v".into(), effect: "NoSchedule".into() };
        let mark = Mark { label: Some("agentpool=x".into()), taint: Some(t.to_string()) };
        let p = patch_for(&n, Some(("agentpool", Some("x"))), vec![kube_taint(&t)], Some(&mark));
        assert_eq!(p["metadata"]["resourceVersion"], "7");
        assert_eq!(p["metadata"]["labels"]["agentpool"], "x");
        assert_eq!(p["spec"]["taints"][0]["effect"], "NoSchedule");
        assert_eq!(p["metadata"]["annotations"][NODE_MARK], r#"{"label":"agentpool=x","taint":"k=v:NoSchedule"}"#);
        let removal = patch_for(&n, Some(("agentpool", None)), vec![], None);
        assert_eq!(removal["metadata"]["labels"]["agentpool"], serde_json::Value::Null);
        assert_eq!(removal["metadata"]["annotations"][NODE_MARK], serde_json::Value::Null);
    }

    #[test]
    fn only_what_the_nodes_own_mark_names_is_taken_back() {
        let t = Taint { key: "k".into(), value: "v".into(), effect: "NoSchedule".into() };
        let spec =
            NodeSpec { label_key: "pool".into(), label_value: "x".into(), taint: t.clone(), names: vec!["n".into()] };
        let other = KubeTaint { key: "o".into(), value: None, effect: "PreferNoSchedule".into(), time_added: None };
        // The label was there before: install adds (and marks) only the taint.
        let labelled = node(&[("pool", "x")], vec![other.clone()], None);
        let p = dedication(&labelled, &spec).expect("the taint is missing");
        assert_eq!(p["spec"]["taints"].as_array().unwrap().len(), 2, "the other taint is kept");
        assert_eq!(p["metadata"]["annotations"][NODE_MARK], r#"{"taint":"k=v:NoSchedule"}"#);
        let mark = p["metadata"]["annotations"][NODE_MARK].as_str().unwrap().to_string();
        let done = node(&[("pool", "x")], vec![other.clone(), kube_taint(&t)], Some(&mark));
        assert_eq!(dedication(&done, &spec), None);
        let undo = undoing(&done).unwrap().expect("marked");
        assert_eq!(undo["spec"]["taints"].as_array().unwrap().len(), 1, "only the marked taint goes");
        assert!(undo["metadata"].get("labels").is_none(), "the label was not this tool's");
        // Without a mark, nothing is taken back, whatever the record says.
        assert_eq!(undoing(&node(&[("pool", "x")], vec![kube_taint(&t)], None)).unwrap(), None);
        // A label since given another value is not taken.
        let relabelled = node(&[("pool", "y")], vec![], Some(r#"{"label":"pool=x"}"#));
        assert!(undoing(&relabelled).unwrap().unwrap()["metadata"].get("labels").is_none());
    }
}
