//! Reads that several components share, below the components: the GraphQL
//! pods, the controller's Deployment and the cluster name it really runs
//! with, the release's Ingress under the name the chart rendered, and (in
//! `alb`) the ALB the controller made for it, found by the controller's tags.

pub mod alb;
pub mod users;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, ListParams};
use serde_json::Value;

use crate::component::Env;
use crate::error::{Context, Result};
use crate::pins::{
    ANNOTATION_PREFIX, AUTO_MODE_INGRESS_FINALIZER, CLUSTER_CHART, GRAPHQL_CHART, INGRESS_FINALIZER, MANAGED_BY,
    MANAGED_BY_KEY,
};
use crate::spec::{Spec, Target};

/// The label naming the release of the Ingress this tool owns (`--target cluster`).
pub const INGRESS_RELEASE_LABEL: &str = "kubectl-scalardb-graphql/release";

/// The label the controller's chart puts on its Deployment and pods.
pub const CONTROLLER_SELECTOR: &str = "app.kubernetes.io/name=aws-load-balancer-controller";

/// The readiness gates the controller's webhook injects are named with this prefix.
pub const READINESS_GATE_PREFIX: &str = "target-health.elbv2.k8s.aws/";

pub fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether the pod's containers are ready (its readiness gates aside).
pub fn pod_containers_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "ContainersReady" && c.status == "True"))
}

pub fn pod_ip(p: &Pod) -> Option<&str> {
    p.status.as_ref().and_then(|s| s.pod_ip.as_deref())
}

/// The release's pods, without those being deleted.
pub async fn graphql_pods(env: &Env) -> Result<Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(env.kube().clone(), &env.spec.namespace);
    let selector = format!("app.kubernetes.io/instance={}", env.spec.release);
    env.reads
        .once(format!("pods {}/{selector}", env.spec.namespace), || async {
            Ok(api
                .list(&ListParams::default().labels(&selector))
                .await
                .context("listing the GraphQL pods")?
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect())
        })
        .await
}

/// The controller's Deployments (found by the chart's labels).
pub async fn controller_deployments(env: &Env) -> Result<Vec<Deployment>> {
    let ns = &env.spec.lb_controller.namespace;
    let api: Api<Deployment> = Api::namespaced(env.kube().clone(), ns);
    env.reads
        .once(format!("deployments {ns}/{CONTROLLER_SELECTOR}"), || async {
            Ok(api
                .list(&ListParams::default().labels(CONTROLLER_SELECTOR))
                .await
                .context("listing the controller's Deployment")?
                .items)
        })
        .await
}

/// Whether the controller has an available replica.
pub fn controller_available(deployments: &[Deployment]) -> bool {
    deployments.iter().any(|d| d.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0) > 0)
}

pub async fn controller_up(env: &Env) -> Result<bool> {
    if env.spec.lb_controller.mode == crate::spec::LbControllerMode::AutoMode {
        return Ok(env.facts.auto_mode); // EKS runs it while the cluster is in Auto Mode
    }
    Ok(controller_available(&controller_deployments(env).await?))
}

/// The value of one of the controller's flags (`--name=value` or `--name value`).
pub fn controller_flag(deployments: &[Deployment], flag: &str) -> Option<String> {
    deployments.iter().find_map(|d| {
        let containers = &d.spec.as_ref()?.template.spec.as_ref()?.containers;
        containers.iter().find_map(|c| {
            let args = c.args.as_deref().unwrap_or_default();
            args.iter().enumerate().find_map(|(i, a)| match a.strip_prefix(flag) {
                Some(rest) if rest.starts_with('=') => Some(rest[1..].to_string()),
                Some("") => args.get(i + 1).cloned(),
                _ => None,
            })
        })
    })
}

/// The `--cluster-name` the controller runs with: it tags what it creates
/// with that name, whatever the EKS cluster is called.
pub fn controller_cluster_name(deployments: &[Deployment]) -> Option<String> {
    controller_flag(deployments, "--cluster-name")
}

/// The name the controller tags this cluster's load balancers with: the
/// running controller's own, else the EKS cluster's.
pub async fn tagging_cluster_name(env: &Env) -> Result<String> {
    if env.spec.lb_controller.mode == crate::spec::LbControllerMode::AutoMode {
        return Ok(env.facts.name.clone()); // EKS tags with the cluster's own name
    }
    Ok(controller_cluster_name(&controller_deployments(env).await?).unwrap_or_else(|| env.facts.name.clone()))
}

/// The chart's full name, as both charts' helpers compute it from the
/// release name and the values.
pub fn chart_fullname(spec: &Spec, values: &Value) -> String {
    let trim = |s: &str| s.chars().take(63).collect::<String>().trim_end_matches('-').to_string();
    if let Some(full) = values["fullnameOverride"].as_str().filter(|s| !s.is_empty()) {
        return trim(full);
    }
    let chart = match spec.target {
        Target::Graphql => GRAPHQL_CHART,
        Target::Cluster => CLUSTER_CHART,
    };
    let name = values["nameOverride"].as_str().filter(|s| !s.is_empty()).unwrap_or(chart);
    let release = &spec.release;
    if release.contains(name) { trim(release) } else { trim(&format!("{release}-{name}")) }
}

/// `--target cluster`: the chart's GraphQL Service, and the name of the
/// Ingress this tool makes for it, given the release's values.
pub fn cluster_graphql_service(spec: &Spec, values: &Value) -> String {
    format!("{}-graphql", chart_fullname(spec, values))
}

/// The labels of the Ingress this tool owns for a release.
pub fn owned_ingress_selector(release: &str) -> String {
    format!("{MANAGED_BY_KEY}={MANAGED_BY},{INGRESS_RELEASE_LABEL}={release}")
}

/// The release's Ingress: found by the release annotations helm puts on
/// every object it creates, so `nameOverride`/`fullnameOverride` are honoured.
#[derive(Debug, Clone)]
pub struct ReleaseIngress {
    pub namespace: String,
    /// The rendered name, or the chart's computed one while there is no Ingress.
    pub name: String,
    pub ingress: Option<Ingress>,
    /// Served by EKS Auto Mode's controller: no group annotation, its own finalizer.
    pub auto_mode: bool,
}

impl ReleaseIngress {
    fn annotation(&self, key: &str) -> Option<&str> {
        self.ingress.as_ref()?.metadata.annotations.as_ref()?.get(key).map(String::as_str)
    }
    /// The IngressGroup it belongs to, if any (Auto Mode ignores the annotation: its
    /// groups come from IngressClassParams, and this tool's parameters name none).
    pub fn group(&self) -> Option<&str> {
        if self.auto_mode {
            return None;
        }
        self.annotation(&format!("{ANNOTATION_PREFIX}group.name")).filter(|g| !g.is_empty())
    }
    /// The controller's stack: the group, else `namespace/name`.
    pub fn stack(&self) -> String {
        self.group().map(str::to_string).unwrap_or_else(|| format!("{}/{}", self.namespace, self.name))
    }
    /// The finalizer the controller puts on it.
    pub fn finalizer(&self) -> String {
        match self.group() {
            Some(g) => format!("group.ingress.k8s.aws/{g}"),
            None if self.auto_mode => AUTO_MODE_INGRESS_FINALIZER.to_string(),
            None => INGRESS_FINALIZER.to_string(),
        }
    }
    pub fn display(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The hostname the controller wrote into the Ingress status (the ALB's DNS name).
    pub fn hostname(&self) -> Option<String> {
        self.ingress
            .as_ref()?
            .status
            .clone()
            .and_then(|s| s.load_balancer)
            .and_then(|lb| lb.ingress)
            .and_then(|i| i.into_iter().find_map(|i| i.hostname))
    }
}

pub use crate::ownership::released_by;

/// The release's Ingress in the release namespace: the chart's (found by
/// helm's release annotations) or, for `--target cluster`, the one this tool
/// owns (found by its labels). `values` names it while it does not exist.
pub async fn release_ingress(env: &Env, values: &Value) -> Result<ReleaseIngress> {
    let ns = &env.spec.namespace;
    let api: Api<Ingress> = Api::namespaced(env.kube().clone(), ns);
    let selector = match env.spec.target {
        Target::Graphql => String::new(),
        Target::Cluster => owned_ingress_selector(&env.spec.release),
    };
    let listed: Vec<Ingress> = env
        .reads
        .once(format!("ingresses {ns}/{selector}"), || async {
            let params =
                if selector.is_empty() { ListParams::default() } else { ListParams::default().labels(&selector) };
            Ok(api.list(&params).await.context(format!("listing Ingresses in {ns}"))?.items)
        })
        .await?;
    let (found, name) = match env.spec.target {
        Target::Graphql => (
            listed.into_iter().find(|i| released_by(&i.metadata, &env.spec.release, ns)),
            chart_fullname(&env.spec, values),
        ),
        Target::Cluster => (listed.into_iter().next(), cluster_graphql_service(&env.spec, values)),
    };
    Ok(ReleaseIngress {
        namespace: ns.clone(),
        name: found.as_ref().and_then(|i| i.metadata.name.clone()).unwrap_or(name),
        ingress: found,
        auto_mode: env.spec.lb_controller.mode == crate::spec::LbControllerMode::AutoMode,
    })
}

/// The newest Warning event on an object, as `Reason: message`.
pub async fn last_warning(env: &Env, namespace: &str, kind: &str, name: &str) -> Result<Option<String>> {
    let api: Api<Event> = Api::namespaced(env.kube().clone(), namespace);
    let fields = format!("involvedObject.kind={kind},involvedObject.name={name},type=Warning");
    let events =
        api.list(&ListParams::default().fields(&fields)).await.context(format!("reading events of {kind} {name}"))?;
    Ok(events
        .items
        .into_iter()
        .max_by_key(|e| {
            e.last_timestamp.clone().or(e.first_timestamp.clone()).map(|t| t.0).or(e.event_time.clone().map(|t| t.0))
        })
        .map(|e| format!("{}: {}", e.reason.unwrap_or_default(), e.message.unwrap_or_default())))
}

/// The Warning reasons the controller records on an Ingress when a reconcile fails.
const CONTROLLER_FAILURES: &[&str] = &[
    "FailedBuildModel",
    "FailedDeployModel",
    "FailedAddFinalizer",
    "FailedRemoveFinalizer",
    "FailedUpdateStatus",
    "FailedLoadGroupID",
    "ConflictingIngressClass",
];

/// What the controller's events say of some Ingresses.
#[derive(Debug, Default)]
pub struct History {
    /// When it last reconciled them successfully.
    pub last_success: Option<String>,
    /// Its failures since then (all it recorded, when it never succeeded): `Reason: message (Ingress ns/name)`.
    pub failures_since_success: Vec<String>,
}

fn event_time(e: &Event) -> Option<k8s_openapi::jiff::Timestamp> {
    [
        e.series.as_ref().and_then(|s| s.last_observed_time.as_ref()).map(|t| t.0),
        e.last_timestamp.as_ref().map(|t| t.0),
        e.event_time.as_ref().map(|t| t.0),
        e.first_timestamp.as_ref().map(|t| t.0),
        e.metadata.creation_timestamp.as_ref().map(|t| t.0),
    ]
    .into_iter()
    .flatten()
    .max()
}

/// The controller's events on these Ingresses (`(namespace, name, uid)`: the release's and its
/// group's). By uid: events outlive their object, and an Ingress made anew under the same name
/// (a re-install) must not inherit its predecessor's failures.
pub async fn controller_history(env: &Env, ingresses: &[(String, String, String)]) -> Result<History> {
    let mut events = vec![];
    for (ns, name, uid) in ingresses {
        let api: Api<Event> = Api::namespaced(env.kube().clone(), ns);
        let fields = format!("involvedObject.kind=Ingress,involvedObject.name={name},involvedObject.uid={uid}");
        let listed = api
            .list(&ListParams::default().fields(&fields))
            .await
            .context(format!("reading events of Ingress {ns}/{name}"))?;
        events.extend(listed.items.into_iter().map(|e| (event_time(&e), format!("{ns}/{name}"), e)));
    }
    // Kubernetes writes these times in whole seconds: a failure and the success after it often
    // share one. The API server's resourceVersion (etcd's revision, rising with every write) orders
    // such ties as they were written.
    events.sort_by_key(|(t, _, e)| (*t, e.metadata.resource_version.as_deref().and_then(|v| v.parse::<u64>().ok())));
    let success = events.iter().rposition(|(_, _, e)| e.reason.as_deref() == Some("SuccessfullyReconciled"));
    let mut history = History {
        last_success: success.and_then(|i| events[i].0).map(|t| t.strftime("%H:%M:%S UTC").to_string()),
        ..Default::default()
    };
    let since = success.map_or(0, |i| i + 1);
    for (_, ingress, e) in &events[since..] {
        let reason = e.reason.as_deref().unwrap_or_default();
        if e.type_.as_deref() != Some("Warning") || !CONTROLLER_FAILURES.contains(&reason) {
            continue;
        }
        let line = format!("{reason}: {} (Ingress {ingress})", e.message.as_deref().unwrap_or_default());
        if !history.failures_since_success.contains(&line) {
            history.failures_since_success.push(line);
        }
    }
    Ok(history)
}

/// Now, as Kubernetes writes a time in an annotation (RFC 3339, whole seconds).
pub fn now_stamp() -> String {
    k8s_openapi::jiff::Timestamp::from_second(k8s_openapi::jiff::Timestamp::now().as_second())
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// How long ago a time was (zero for one in the future).
pub fn age(t: &k8s_openapi::jiff::Timestamp) -> std::time::Duration {
    let secs = k8s_openapi::jiff::Timestamp::now().as_second() - t.as_second();
    std::time::Duration::from_secs(secs.max(0) as u64)
}

/// `95s` → `1m35s`.
pub fn humane(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

/// A namespace being deleted: for how long, and what its status says is left in it.
pub async fn namespace_terminating(env: &Env, ns: &str) -> Result<Option<(std::time::Duration, String)>> {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(env.kube().clone());
    let Some(found) = api.get_opt(ns).await.context(format!("reading namespace {ns}"))? else { return Ok(None) };
    let Some(since) = found.metadata.deletion_timestamp.as_ref() else { return Ok(None) };
    let left: Vec<String> = found
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .filter(|c| {
            c.status == "True"
                && matches!(c.type_.as_str(), "NamespaceContentRemaining" | "NamespaceFinalizersRemaining")
        })
        .filter_map(|c| c.message)
        .collect();
    Ok(Some((age(&since.0), if left.is_empty() { "nothing said to remain".into() } else { left.join("; ") })))
}

/// Whether an object exists, found by its API group and kind (namespace: None for a cluster-scoped one).
pub async fn object_exists(env: &Env, group: &str, kind: &str, name: &str, namespace: Option<&str>) -> Result<bool> {
    let found = match kube::discovery::group(env.kube(), group).await {
        Ok(g) => g.recommended_kind(kind),
        Err(kube::Error::Api(e)) if e.code == 404 => None,
        Err(e) => return Err(e).context(format!("discovering API group {group}")),
    };
    let Some((resource, _)) = found else { return Ok(false) };
    let api: Api<kube::api::DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(env.kube().clone(), ns, &resource),
        None => Api::all_with(env.kube().clone(), &resource),
    };
    Ok(api.get_opt(name).await.context(format!("reading {kind} {name}"))?.is_some())
}

/// Other members of an IngressGroup than `ours`, in any namespace: `(namespace, name, uid)`.
pub async fn group_member_ids(env: &Env, group: &str, ours: &ReleaseIngress) -> Result<Vec<(String, String, String)>> {
    let api: Api<Ingress> = Api::all(env.kube().clone());
    let key = format!("{ANNOTATION_PREFIX}group.name");
    Ok(api
        .list(&ListParams::default())
        .await
        .context("listing Ingresses")?
        .into_iter()
        .filter(|i| i.metadata.annotations.as_ref().and_then(|a| a.get(&key)).map(String::as_str) == Some(group))
        .map(|i| {
            let m = i.metadata;
            (m.namespace.unwrap_or_default(), m.name.unwrap_or_default(), m.uid.unwrap_or_default())
        })
        .filter(|(ns, n, _)| format!("{ns}/{n}") != ours.display())
        .collect())
}

/// Other members of an IngressGroup than `ours`, in any namespace.
pub async fn group_members(env: &Env, group: &str, ours: &ReleaseIngress) -> Result<Vec<String>> {
    let api: Api<Ingress> = Api::all(env.kube().clone());
    let key = format!("{ANNOTATION_PREFIX}group.name");
    Ok(api
        .list(&ListParams::default())
        .await
        .context("listing Ingresses")?
        .into_iter()
        .filter(|i| i.metadata.annotations.as_ref().and_then(|a| a.get(&key)).map(String::as_str) == Some(group))
        .map(|i| format!("{}/{}", i.metadata.namespace.unwrap_or_default(), i.metadata.name.unwrap_or_default()))
        .filter(|n| *n != ours.display())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(release: &str, target: Target) -> Spec {
        let mut s = crate::spec::defaults(release, "prod", "default");
        s.target = target;
        s
    }

    #[test]
    fn fullname_follows_the_charts_helper() {
        let g = |release: &str| spec(release, Target::Graphql);
        assert_eq!(chart_fullname(&g("scalardb-graphql"), &json!({})), "scalardb-graphql");
        assert_eq!(chart_fullname(&g("my-release-scalardb-graphql"), &json!({})), "my-release-scalardb-graphql");
        assert_eq!(chart_fullname(&g("prod"), &json!(null)), "prod-scalardb-graphql");
        assert_eq!(chart_fullname(&g("prod"), &json!({"nameOverride": "gql"})), "prod-gql");
        assert_eq!(chart_fullname(&g("prod"), &json!({"fullnameOverride": "api"})), "api");
        let c = spec("prod", Target::Cluster);
        assert_eq!(chart_fullname(&c, &json!({})), "prod-scalardb-cluster");
        assert_eq!(cluster_graphql_service(&c, &crate::values::cluster(&c)), "prod-graphql");
    }

    #[test]
    fn the_controllers_cluster_name_comes_from_its_arguments() {
        let d = |args: &[&str]| -> Deployment {
            serde_json::from_value(json!({"spec": {"selector": {}, "template": {"spec": {"containers": [
                {"name": "c", "args": args}]}}}}))
            .unwrap()
        };
        assert_eq!(controller_cluster_name(&[d(&["--cluster-name=blue", "--x"])]).as_deref(), Some("blue"));
        assert_eq!(controller_cluster_name(&[d(&["--cluster-name", "green"])]).as_deref(), Some("green"));
        assert_eq!(controller_cluster_name(&[d(&["--ingress-class=alb"])]), None);
    }

    #[test]
    fn a_group_is_the_stack_and_names_the_finalizer() {
        let ing: Ingress = serde_json::from_value(json!({"metadata": {"name": "api", "namespace": "prod",
            "annotations": {"alb.ingress.kubernetes.io/group.name": "shared"}}}))
        .unwrap();
        let mut r =
            ReleaseIngress { namespace: "prod".into(), name: "api".into(), ingress: Some(ing), auto_mode: false };
        assert_eq!(r.stack(), "shared");
        assert_eq!(r.finalizer(), "group.ingress.k8s.aws/shared");
        r.ingress = None;
        assert_eq!(r.stack(), "prod/api");
        assert_eq!(r.finalizer(), "ingress.k8s.aws/resources");
    }
}
