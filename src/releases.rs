//! Helm's release state, read where helm keeps it instead of by spawning
//! helm: Helm 3 and 4 store each revision of a release as a Secret (the
//! default driver) or a ConfigMap, labelled `owner=helm,name=<release>,
//! version=<n>,status=<s>`, holding the release as base64 of gzipped JSON.
//! The newest revision is what `helm get` reports. With another storage
//! driver (`HELM_DRIVER=sql` or `memory`) the API server holds nothing, and
//! helm itself is asked.

use base64::Engine;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams, ObjectMeta};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Context, Error, Result};
use crate::helm::{Helm, ReleaseMetadata};
use crate::pins::RELEASE_MARK;

/// A release's newest revision: what `helm get metadata` and `helm get
/// values` report, and whether it carries this tool's mark (`--labels`).
#[derive(Debug, Clone)]
pub struct Release {
    pub metadata: ReleaseMetadata,
    /// The values the user supplied (`helm get values`), an object.
    pub values: Value,
    /// The revision carries `RELEASE_MARK`: the live proof that this tool installed it.
    pub marked: bool,
}

/// The part of helm's stored release this tool reads.
#[derive(Deserialize)]
struct Stored {
    info: StoredInfo,
    chart: StoredChart,
    #[serde(default)]
    config: Value,
}

#[derive(Deserialize)]
struct StoredInfo {
    status: String,
}

#[derive(Deserialize)]
struct StoredChart {
    metadata: StoredChartMetadata,
}

#[derive(Deserialize)]
struct StoredChartMetadata {
    name: String,
    version: String,
    #[serde(rename = "appVersion", default)]
    app_version: String,
}

/// Which driver helm uses, as helm reads `HELM_DRIVER`: whether its storage is the API server's.
pub fn driver_is_api() -> bool {
    matches!(
        std::env::var("HELM_DRIVER").unwrap_or_default().as_str(),
        "" | "secret" | "secrets" | "configmap" | "configmaps"
    )
}

/// helm's encoding of a stored release: base64, usually of gzip, of JSON. Parsed as it is
/// inflated, into the few fields read: a release also holds its chart's every template and
/// file and the rendered manifest (megabytes for a chart with CRDs), none of it kept.
fn decode<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(payload.trim_ascii())
        .context("decoding a stored helm release (base64)")?;
    let parsed = if raw.starts_with(&[0x1f, 0x8b, 0x08]) {
        serde_json::from_reader(std::io::BufReader::new(flate2::read::GzDecoder::new(&raw[..])))
    } else {
        serde_json::from_slice(&raw)
    };
    parsed.context("decoding a stored helm release (gzipped JSON)")
}

fn revision(meta: &ObjectMeta) -> u64 {
    meta.labels.as_ref().and_then(|l| l.get("version")).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn marked(meta: &ObjectMeta) -> bool {
    meta.labels.as_ref().and_then(|l| l.get(RELEASE_MARK.0)).is_some_and(|v| v == RELEASE_MARK.1)
}

fn release_of(meta: &ObjectMeta, payload: &[u8]) -> Result<Release> {
    let stored: Stored = decode(payload)?;
    let values = if stored.config.is_object() { stored.config } else { Value::Object(Default::default()) };
    Ok(Release {
        metadata: ReleaseMetadata {
            chart: stored.chart.metadata.name,
            version: stored.chart.metadata.version,
            app_version: stored.chart.metadata.app_version,
            status: stored.info.status,
        },
        values,
        marked: marked(meta),
    })
}

/// The newest revision of `release` in `namespace`, or None when there is none.
pub async fn read<'a>(
    client: &kube::Client,
    helm: impl FnOnce() -> Result<&'a Helm>,
    namespace: &str,
    release: &str,
) -> Result<Option<Release>> {
    if !driver_is_api() {
        let helm = helm()?;
        let Some(metadata) = helm.metadata(release, namespace).await? else { return Ok(None) };
        let values = helm.user_values(release, namespace).await?;
        return Ok(Some(Release { metadata, values, marked: false }));
    }
    let what = format!("reading release {namespace}/{release} from helm's storage");
    let selector = ListParams::default().labels(&format!("owner=helm,name={release}"));
    // Labels first (cheap), then the one newest revision whole.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    if let Some(newest) =
        secrets.list_metadata(&selector).await.context(&what)?.items.into_iter().max_by_key(|o| revision(&o.metadata))
    {
        let name = newest.metadata.name.unwrap_or_default();
        let Some(secret) = secrets.get_opt(&name).await.context(&what)? else { return Ok(None) };
        let payload = secret.data.as_ref().and_then(|d| d.get("release")).map(|b| b.0.clone()).unwrap_or_default();
        return release_of(&secret.metadata, &payload).map(Some).map_err(|e| broken(namespace, &name, e));
    }
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    if let Some(newest) =
        maps.list_metadata(&selector).await.context(&what)?.items.into_iter().max_by_key(|o| revision(&o.metadata))
    {
        let name = newest.metadata.name.unwrap_or_default();
        let Some(map) = maps.get_opt(&name).await.context(&what)? else { return Ok(None) };
        let payload = map.data.as_ref().and_then(|d| d.get("release")).cloned().unwrap_or_default();
        return release_of(&map.metadata, payload.as_bytes()).map(Some).map_err(|e| broken(namespace, &name, e));
    }
    Ok(None)
}

/// What a chart's release may name in its stored manifest: objects of these
/// kinds in the release's own namespace, and cluster-scoped objects of these
/// kinds that the live cluster shows helm made for this very release.
pub struct Bounds {
    pub namespaced: &'static [&'static str],
    /// Cluster-scoped kinds: (kind, API group/version, plural).
    pub cluster: &'static [(&'static str, &'static str, &'static str)],
}

/// The kinds the charts this tool installs render into their own namespace.
const CHART_KINDS: &[&str] = &[
    "ConfigMap",
    "Secret",
    "Service",
    "ServiceAccount",
    "Deployment",
    "Ingress",
    "Role",
    "RoleBinding",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
    "NetworkPolicy",
    "ServiceMonitor",
    "PodMonitor",
    "PrometheusRule",
    "Certificate",
    "Issuer",
];

/// The GraphQL and ScalarDB Cluster charts: namespaced objects only.
pub const RELEASE_BOUNDS: Bounds = Bounds { namespaced: CHART_KINDS, cluster: &[] };

/// The controller's chart: its namespaced objects, its RBAC, webhooks and IngressClass.
pub const CONTROLLER_BOUNDS: Bounds = Bounds {
    namespaced: CHART_KINDS,
    cluster: &[
        ("ClusterRole", "rbac.authorization.k8s.io/v1", "clusterroles"),
        ("ClusterRoleBinding", "rbac.authorization.k8s.io/v1", "clusterrolebindings"),
        ("MutatingWebhookConfiguration", "admissionregistration.k8s.io/v1", "mutatingwebhookconfigurations"),
        ("ValidatingWebhookConfiguration", "admissionregistration.k8s.io/v1", "validatingwebhookconfigurations"),
        ("IngressClass", "networking.k8s.io/v1", "ingressclasses"),
        ("IngressClassParams", "elbv2.k8s.aws/v1beta1", "ingressclassparams"),
    ],
};

/// One object a stored manifest names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub kind: String,
    pub name: String,
    /// As written; empty when the manifest leaves it to helm's `-n`.
    pub namespace: String,
}

impl std::fmt::Display for Named {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.namespace.as_str() {
            "" => write!(f, "{} {}", self.kind, self.name),
            ns => write!(f, "{} {ns}/{}", self.kind, self.name),
        }
    }
}

/// The objects of a helm manifest (YAML documents separated by `---`).
pub fn manifest_objects(manifest: &str) -> Result<Vec<Named>> {
    let mut found = vec![];
    for doc in manifest.split("\n---").flat_map(|d| d.strip_prefix("---").or(Some(d))) {
        if doc.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
            continue;
        }
        let v: Value = serde_saphyr::from_str(doc).context("parsing a stored helm manifest")?;
        let field = |path: &[&str]| path.iter().fold(&v, |v, k| &v[*k]).as_str().unwrap_or_default().to_string();
        found.push(Named {
            kind: field(&["kind"]),
            name: field(&["metadata", "name"]),
            namespace: field(&["metadata", "namespace"]),
        });
    }
    Ok(found)
}

/// The manifest of every stored revision of a release (helm deletes what the
/// newest names on uninstall, and what the last deployed names but the new
/// one does not on upgrade: any revision may be the one that counts).
async fn manifests(client: &kube::Client, namespace: &str, release: &str) -> Result<Vec<(String, String)>> {
    #[derive(Deserialize)]
    struct WithManifest {
        #[serde(default)]
        manifest: String,
    }
    let what = format!("reading release {namespace}/{release} from helm's storage");
    let selector = ListParams::default().labels(&format!("owner=helm,name={release}"));
    let mut found = vec![];
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for s in secrets.list(&selector).await.context(&what)? {
        let name = s.metadata.name.clone().unwrap_or_default();
        let payload = s.data.as_ref().and_then(|d| d.get("release")).map(|b| b.0.clone()).unwrap_or_default();
        let stored: WithManifest = decode(&payload).map_err(|e| broken(namespace, &name, e))?;
        found.push((name, stored.manifest));
    }
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    for m in maps.list(&selector).await.context(&what)? {
        let name = m.metadata.name.clone().unwrap_or_default();
        let payload = m.data.as_ref().and_then(|d| d.get("release")).cloned().unwrap_or_default();
        let stored: WithManifest = decode(payload.as_bytes()).map_err(|e| broken(namespace, &name, e))?;
        found.push((name, stored.manifest));
    }
    Ok(found)
}

/// Before helm uninstalls or upgrades a release: every object its stored
/// revisions name is one its chart makes, in the release's own namespace, or
/// a cluster-scoped object helm made for this release. Anyone who can write
/// Secrets in the namespace can write a revision; one naming anything else
/// (another team's objects, `ClusterRole cluster-admin`) is refused before
/// helm runs, naming the stray objects.
/// Returns the stray objects (none: helm may act); `refusal` says why it may not.
pub async fn strays(client: &kube::Client, namespace: &str, release: &str, bounds: &Bounds) -> Result<Vec<String>> {
    if !driver_is_api() {
        return Ok(vec![]); // helm's storage is not in the cluster: not writable by a namespace's users
    }
    let mut objects = vec![];
    for (revision, manifest) in manifests(client, namespace, release).await? {
        objects.extend(manifest_objects(&manifest).map_err(|e| broken(namespace, &revision, e))?);
    }
    let mut named = std::collections::BTreeSet::new();
    objects.retain(|o| named.insert(o.to_string())); // each revision names most of them again
    // The cluster-scoped objects' annotations are read eight at a time, side by side: a no-op
    // install waits for a round trip or two, not one per object.
    let mut stray = vec![];
    for chunk in objects.chunks(8) {
        let verdicts =
            futures::future::try_join_all(chunk.iter().map(|o| kept_in_bounds(client, o, namespace, release, bounds)))
                .await?;
        stray.extend(chunk.iter().zip(verdicts).filter(|(_, ok)| !ok).map(|(o, _)| o.to_string()));
    }
    Ok(stray)
}

/// Whether one object a revision names is one the chart makes here.
async fn kept_in_bounds(
    client: &kube::Client,
    o: &Named,
    namespace: &str,
    release: &str,
    bounds: &Bounds,
) -> Result<bool> {
    if bounds.namespaced.contains(&o.kind.as_str()) {
        Ok(o.namespace.is_empty() || o.namespace == namespace)
    } else if let Some((kind, api_version, plural)) = bounds.cluster.iter().find(|(k, ..)| *k == o.kind) {
        made_for(client, kind, api_version, plural, &o.name, namespace, release).await
    } else {
        Ok(false)
    }
}

/// Why helm may not act on a release whose stored revisions name `stray` objects.
pub fn refusal(namespace: &str, release: &str, stray: &[String]) -> Error {
    Error::prerequisite(format!(
        "release {namespace}/{release} as helm stores it names objects its chart does not make here: {}; nothing was changed",
        stray.join(", ")
    ))
    .hint(format!(
        "helm's storage Secrets in {namespace} were edited; inspect them (`kubectl -n {namespace} get secret -l owner=helm,name={release}`) and delete the forged revision"
    ))
}

/// Refuses, before helm runs, a release whose stored revisions name stray objects.
pub async fn vet(client: &kube::Client, namespace: &str, release: &str, bounds: &Bounds) -> Result<()> {
    let stray = strays(client, namespace, release, bounds).await?;
    if stray.is_empty() { Ok(()) } else { Err(refusal(namespace, release, &stray)) }
}

/// Whether a cluster-scoped object is absent (nothing to delete) or carries helm's annotations for this release.
async fn made_for(
    client: &kube::Client,
    kind: &str,
    api_version: &str,
    plural: &str,
    name: &str,
    namespace: &str,
    release: &str,
) -> Result<bool> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let resource = kube::discovery::ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: api_version.into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    let api: Api<kube::api::DynamicObject> = Api::all_with(client.clone(), &resource);
    match api.get_opt(name).await {
        Ok(None) => Ok(true),
        Ok(Some(o)) => Ok(crate::ownership::released_by(&o.metadata, release, namespace)),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(true), // no such kind here
        Err(e) => Err(e).context(format!("reading {kind} {name}")),
    }
}

fn broken(namespace: &str, name: &str, e: Error) -> Error {
    Error::failed(format!("helm's record {namespace}/{name} cannot be read: {e}"))
        .hint(format!("check it with `helm history -n {namespace}`; helm itself may have written it in a newer format"))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn encode(json: &str, gzip: bool) -> Vec<u8> {
        let body = if gzip {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(json.as_bytes()).unwrap();
            e.finish().unwrap()
        } else {
            json.as_bytes().to_vec()
        };
        base64::engine::general_purpose::STANDARD.encode(body).into_bytes()
    }

    #[test]
    fn a_manifest_names_its_objects_with_the_namespace_as_written() {
        let manifest = "---\n# Source: c/templates/a.yaml\napiVersion: v1\nkind: Service\nmetadata:\n  name: api\n---\n# Source: c/templates/b.yaml\nkind: ClusterRole\nmetadata:\n  name: cluster-admin\n---\n# Source: empty\n---\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: other\n";
        let objects = manifest_objects(manifest).unwrap();
        let shown: Vec<String> = objects.iter().map(|o| o.to_string()).collect();
        assert_eq!(shown, ["Service api", "ClusterRole cluster-admin", "ConfigMap other/x"]);
    }

    #[test]
    fn a_stored_release_decodes_gzipped_or_not() {
        let json = r#"{"name":"r","info":{"status":"pending-upgrade"},"chart":{"metadata":{"name":"c","version":"1.2.3","appVersion":"4.5"}},"config":{"a":1},"version":3}"#;
        for gzip in [true, false] {
            let meta = ObjectMeta {
                labels: Some([(RELEASE_MARK.0.to_string(), RELEASE_MARK.1.to_string())].into()),
                ..Default::default()
            };
            let r = release_of(&meta, &encode(json, gzip)).unwrap();
            assert_eq!(
                (r.metadata.chart.as_str(), r.metadata.version.as_str(), r.metadata.app_version.as_str()),
                ("c", "1.2.3", "4.5")
            );
            assert_eq!(r.metadata.status, "pending-upgrade");
            assert_eq!(r.values, serde_json::json!({"a": 1}));
            assert!(r.marked);
        }
        let no_config = r#"{"info":{"status":"deployed"},"chart":{"metadata":{"name":"c","version":"1"}}}"#;
        let r = release_of(&ObjectMeta::default(), &encode(no_config, true)).unwrap();
        assert_eq!(r.values, serde_json::json!({}));
        assert!(!r.marked);
        assert!(release_of(&ObjectMeta::default(), b"not base64!").is_err());
    }
}
