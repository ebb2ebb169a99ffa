//! At scale: with 1000 more nodes on the rig, `install --nodes` naming 600 of
//! them — some already labelled and tainted right, some with the label only,
//! some with the taint only, some with neither — writes each node that needs
//! a change exactly once and the others never, gets no 429, and a re-run
//! writes no node at all. Writes are counted by node name in the API server's
//! audit log.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::time::Instant;

use common::{Rig, expect_code, rig};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const NODES: usize = 1000;
/// scale-0001..=scale-0600 are named with --nodes.
const NAMED: usize = 600;
/// scale-0601..=scale-0650 are dedicated already, but not named: no write either.
const RIGHT_UNNAMED: std::ops::RangeInclusive<usize> = 601..=650;
const CONCURRENCY: usize = 16;
const LABEL: (&str, &str) = ("agentpool", "scalardbgraphqlpool");
const TAINT: (&str, &str, &str) = ("kubernetes.io/app", "scalardbgraphqlpool", "NoSchedule");
/// Another taint some nodes carry, which install must keep.
const OTHER_TAINT: (&str, &str, &str) = ("example.com/keep", "1", "PreferNoSchedule");
const NOT_READY: &str = "node.kubernetes.io/not-ready";
const TTL: &str = "node.alpha.kubernetes.io/ttl";
/// The TTL controller's steps (kubernetes pkg/controller/ttl): (size up to, TTL seconds).
const TTL_STEPS: [(usize, u32); 6] = [(100, 0), (500, 15), (1000, 30), (2000, 60), (10000, 300), (usize::MAX, 600)];
/// How long no node must be written before the cluster counts as settled.
const QUIET: std::time::Duration = std::time::Duration::from_secs(3);

/// The TTL annotation the controller manager gives every node of a cluster of `total` nodes.
fn expected_ttl(total: usize) -> String {
    TTL_STEPS.iter().find(|(max, _)| total <= *max).map(|(_, ttl)| ttl.to_string()).unwrap()
}

fn name(i: usize) -> String {
    format!("scale-{i:04}")
}

/// What node `i` carries when it is made: (pool label, pool taint, the other taint).
fn start(i: usize) -> (bool, bool, bool) {
    if i > NAMED {
        return (RIGHT_UNNAMED.contains(&i), RIGHT_UNNAMED.contains(&i), false);
    }
    match i % 4 {
        0 => (true, true, false),
        1 => (true, false, i % 8 == 1),
        2 => (false, true, false),
        _ => (false, false, i % 8 == 3),
    }
}

fn needs_write(i: usize) -> bool {
    let (label, taint, _) = start(i);
    i <= NAMED && !(label && taint)
}

fn taint(t: (&str, &str, &str)) -> Value {
    json!({"key": t.0, "value": t.1, "effect": t.2})
}

/// Node `i` as rig/rig.py `node_manifest()` makes the rig's own (a kwok node), named `scale-NNNN`.
fn manifest(i: usize) -> Node {
    let n = name(i);
    let (label, pool_taint, other) = start(i);
    let mut labels = json!({"kubernetes.io/hostname": n, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
        // The beta labels the controller manager adds to every node (at about ten nodes a
        // second on the rig), given here so that it has none to add.
        "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64",
        "type": "kwok", "topology.kubernetes.io/zone": if i % 2 == 0 { "us-east-1a" } else { "us-east-1b" }});
    if label {
        labels[LABEL.0] = json!(LABEL.1);
    }
    let taints: Vec<Value> =
        [pool_taint.then(|| taint(TAINT)), other.then(|| taint(OTHER_TAINT))].into_iter().flatten().collect();
    serde_json::from_value(json!({
        "metadata": {"name": n, "labels": labels, "annotations": {"kwok.x-k8s.io/node": "fake"}},
        "spec": {"taints": taints},
        "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                   "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"}},
    }))
    .unwrap()
}

fn has_taint(n: &Node, t: (&str, &str, &str)) -> bool {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|k| k.key == t.0 && k.value.as_deref() == Some(t.1) && k.effect == t.2))
}

fn taint_keys(n: &Node) -> Vec<String> {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|ts| ts.iter().map(|t| t.key.clone()).collect())
        .unwrap_or_default()
}

/// The scale nodes on the rig, deleted (concurrently) when dropped, also when the test fails.
struct ScaleNodes {
    rt: tokio::runtime::Runtime,
    api: Api<Node>,
    _proxy: common::KubectlProxy,
}

impl ScaleNodes {
    async fn list(api: &Api<Node>) -> Vec<Node> {
        let mut all = vec![];
        let mut params = ListParams::default().limit(500);
        loop {
            let page = api.list(&params).await.expect("listing nodes");
            all.extend(
                page.items.into_iter().filter(|n| n.metadata.name.as_deref().unwrap_or("").starts_with("scale-")),
            );
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(t) => params = params.continue_token(&t),
                None => return all,
            }
        }
    }

    fn nodes(&self) -> Vec<Node> {
        self.rt.block_on(Self::list(&self.api))
    }

    /// Creates the nodes concurrently, then waits until the cluster has settled as a real
    /// one of that size would be: every node Ready, without the not-ready taint the API
    /// server gives a new node, with the TTL annotation the controller manager gives every
    /// node for the cluster's size, and no node written by anyone for `QUIET` (by the
    /// audit log). On the rig the controller manager writes a few nodes a second (its
    /// client's rate limit): what it is still to write (the taint off, the annotation) is
    /// written here instead, guarded by resourceVersion as it guards its own.
    fn create(rig: &Rig) -> ScaleNodes {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (client, proxy) = {
            let _in_runtime = rt.enter();
            rig.kube_client()
        };
        let nodes = ScaleNodes { rt, api: Api::all(client), _proxy: proxy };
        let api = &nodes.api;
        nodes
            .rt
            .block_on(
                stream::iter(1..=NODES)
                    .map(|i| async move { api.create(&PostParams::default(), &manifest(i)).await.map(drop) })
                    .buffer_unordered(CONCURRENCY)
                    .try_collect::<Vec<_>>(),
            )
            .expect("creating the scale nodes");
        rig.eventually("the scale nodes to be Ready", 300, || {
            let all = nodes.nodes();
            all.len() == NODES
                && all.iter().all(|n| {
                    n.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                })
        });
        let total = nodes.rt.block_on(api.list_metadata(&ListParams::default())).unwrap().items.len();
        let ttl = expected_ttl(total);
        let mut offset = rig.audit_mark();
        let mut last_write = Instant::now();
        rig.eventually("the scale nodes to settle", 300, || {
            let all = nodes.nodes();
            let ttl = &ttl;
            nodes.rt.block_on(
                stream::iter(all.iter().filter(|n| {
                    taint_keys(n).iter().any(|k| k == NOT_READY)
                        || n.metadata.annotations.as_ref().and_then(|a| a.get(TTL)) != Some(ttl)
                }))
                .map(|n| async move {
                    let taints: Vec<_> = n
                        .spec
                        .as_ref()
                        .and_then(|s| s.taints.clone())
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|t| t.key != NOT_READY)
                        .collect();
                    let patch = json!({
                        "metadata": {"resourceVersion": n.metadata.resource_version, "annotations": {TTL: ttl}},
                        "spec": {"taints": if taints.is_empty() { Value::Null } else { json!(taints) }},
                    });
                    // A 409: the node changed meanwhile; the next round reads it again.
                    let _ = api
                        .patch(n.metadata.name.as_deref().unwrap(), &PatchParams::default(), &Patch::Merge(&patch))
                        .await;
                })
                .buffer_unordered(CONCURRENCY)
                .collect::<Vec<_>>(),
            );
            let mut f = std::fs::File::open(rig.get("RIG_AUDIT_LOG")).expect("the audit log");
            f.seek(SeekFrom::Start(offset)).unwrap();
            let mut fresh = String::new();
            std::io::Read::read_to_string(&mut f, &mut fresh).unwrap();
            offset += fresh.len() as u64;
            if fresh.contains(r#""resource":"nodes""#) {
                last_write = Instant::now();
            }
            last_write.elapsed() >= QUIET
        });
        nodes
    }
}

impl Drop for ScaleNodes {
    fn drop(&mut self) {
        let api = &self.api;
        let deleted: Vec<_> = self.rt.block_on(
            stream::iter(1..=NODES)
                .map(|i| async move { api.delete(&name(i), &DeleteParams::default()).await })
                .buffer_unordered(CONCURRENCY)
                .collect(),
        );
        let failed = deleted.iter().filter(|r| matches!(r, Err(kube::Error::Api(e)) if e.code != 404)).count();
        if failed > 0 {
            eprintln!("{failed} scale nodes could not be deleted; `rig/rig reset` deletes them");
        }
    }
}

/// The plugin's writes (patch or update) to nodes since `mark`, by node name, each with
/// its response code, and how many of its requests were answered 429. The audit log
/// records every mutating request.
fn node_writes_since(rig: &Rig, mark: u64) -> (BTreeMap<String, Vec<u64>>, Vec<String>) {
    let mut f = std::fs::File::open(rig.get("RIG_AUDIT_LOG")).expect("the audit log");
    f.seek(SeekFrom::Start(mark)).unwrap();
    let mut writes: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut throttled = vec![];
    for line in BufReader::new(f).lines().map_while(Result::ok) {
        let Ok(e) = serde_json::from_str::<Value>(&line) else { continue };
        if !e["userAgent"].as_str().unwrap_or_default().starts_with("kubectl-scalardb-graphql") {
            continue;
        }
        let code = e["responseStatus"]["code"].as_u64().unwrap_or_default();
        if code == 429 {
            throttled.push(format!("{} {}", e["verb"], e["requestURI"]));
        }
        let verb = e["verb"].as_str().unwrap_or_default();
        if e["objectRef"]["resource"] == "nodes" && matches!(verb, "patch" | "update") {
            writes.entry(e["objectRef"]["name"].as_str().unwrap_or_default().to_string()).or_default().push(code);
        }
    }
    (writes, throttled)
}

#[test]
fn install_at_1000_nodes_writes_each_node_that_needs_it_once_and_no_other() {
    let rig = rig();
    rig.reset();
    let started = Instant::now();
    let nodes = ScaleNodes::create(&rig);
    eprintln!("{NODES} nodes created and settled in {:.1}s", started.elapsed().as_secs_f64());
    let named: Vec<String> = (1..=NAMED).map(name).collect();
    let expected: BTreeSet<String> = (1..=NAMED).filter(|&i| needs_write(i)).map(name).collect();
    assert!(expected.len() > 100 && expected.len() < NAMED, "the named nodes mix right and wrong ones");

    let mut args = rig.install_args();
    args.extend(["--wait=false".to_string(), "--nodes".to_string(), named.join(",")]);
    let mark = rig.audit_mark();
    let started = Instant::now();
    let out = rig.plugin().args(&args).output().expect("running install");
    expect_code(&out, 0, "install --nodes");
    eprintln!("install --nodes ({NAMED} named) took {:.1}s", started.elapsed().as_secs_f64());
    let (writes, throttled) = node_writes_since(&rig, mark);
    assert!(throttled.is_empty(), "requests answered 429: {throttled:#?}");
    let written: BTreeSet<String> = writes.keys().cloned().collect();
    let unneeded: Vec<_> = written.difference(&expected).collect();
    let missed: Vec<_> = expected.difference(&written).collect();
    assert!(unneeded.is_empty(), "nodes written that needed no change: {unneeded:?}");
    assert!(missed.is_empty(), "nodes that needed a change and got no write: {missed:?}");
    let not_once: BTreeMap<_, _> = writes.iter().filter(|(_, codes)| codes.as_slice() != [200]).collect();
    assert!(not_once.is_empty(), "nodes not written exactly once, successfully (response codes): {not_once:?}");

    let mark = rig.audit_mark();
    let out = rig.plugin().args(&args).output().expect("running install again");
    expect_code(&out, 0, "install --nodes, again");
    let (writes, throttled) = node_writes_since(&rig, mark);
    assert!(writes.is_empty(), "the re-run wrote nodes: {writes:?}");
    assert!(throttled.is_empty(), "requests answered 429 on the re-run: {throttled:#?}");

    let all = nodes.nodes();
    assert_eq!(all.len(), NODES);
    for n in &all {
        let id = n.metadata.name.as_deref().unwrap();
        let i: usize = id.trim_start_matches("scale-").parse().unwrap();
        let (label, pool_taint, other) = start(i);
        let labelled = n.metadata.labels.as_ref().and_then(|l| l.get(LABEL.0)).map(String::as_str) == Some(LABEL.1);
        let keys = taint_keys(n);
        if i <= NAMED {
            assert!(labelled && has_taint(n, TAINT), "{id} is not dedicated: {:?} {keys:?}", n.metadata.labels);
            assert_eq!(keys.iter().filter(|k| *k == TAINT.0).count(), 1, "{id}: {keys:?}");
        } else {
            assert_eq!((labelled, has_taint(n, TAINT)), (label, pool_taint), "{id} changed though not named");
        }
        assert_eq!(has_taint(n, OTHER_TAINT), other, "{id}: another taint was not kept: {keys:?}");
    }
    drop(nodes);
    rig.reset();
}
