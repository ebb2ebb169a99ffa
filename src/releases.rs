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

/// Which driver helm uses, as helm reads `HELM_DRIVER`.
fn driver_is_api() -> bool {
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
