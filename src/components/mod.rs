//! One file per component of the deployment, in install order (see
//! `deployment.rs` for the list itself), plus what they share: AWS tags that
//! mark this tool's resources, and small kube helpers.

pub mod alb;
pub mod controller_crds;
pub mod database_secret;
pub mod dedicated_nodes;
pub mod graphql_release;
pub mod iam_policy;
pub mod iam_role;
pub mod ingress;
pub mod lb_controller;
pub mod lbc_service_account;
pub mod oidc_provider;
pub mod owned_secret;
pub mod preflight;
pub mod probe;
pub mod readiness_gates;
pub mod registry_secret;
pub mod schema_load;
pub mod subnet_tags;

use std::collections::BTreeMap;

use crate::pins::{CLUSTER_TAG_KEY, MANAGED_BY, MANAGED_BY_KEY};

/// Tags this tool puts on the AWS resources it creates.
pub fn ownership_tags(cluster: &str) -> Vec<(String, String)> {
    vec![(MANAGED_BY_KEY.to_string(), MANAGED_BY.to_string()), (CLUSTER_TAG_KEY.to_string(), cluster.to_string())]
}

pub fn iam_tags(cluster: &str, extra: &[(&str, &str)]) -> Vec<aws_sdk_iam::types::Tag> {
    ownership_tags(cluster)
        .into_iter()
        .chain(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .map(|(k, v)| aws_sdk_iam::types::Tag::builder().key(k).value(v).build().expect("key and value are set"))
        .collect()
}

/// Whether tags say this tool created the resource for this cluster.
pub fn tagged_ours<'a>(tags: impl IntoIterator<Item = (&'a str, &'a str)>, cluster: &str) -> bool {
    let tags: BTreeMap<_, _> = tags.into_iter().collect();
    tags.get(MANAGED_BY_KEY) == Some(&MANAGED_BY) && tags.get(CLUSTER_TAG_KEY) == Some(&cluster)
}

pub fn iam_tags_ours(tags: &[aws_sdk_iam::types::Tag], cluster: &str) -> bool {
    tagged_ours(tags.iter().map(|t| (t.key(), t.value())), cluster)
}

/// Labels this tool puts on the Kubernetes objects it creates.
/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

pub fn managed_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(MANAGED_BY_KEY.to_string(), MANAGED_BY.to_string())])
}

pub fn is_managed(meta: &kube::api::ObjectMeta) -> bool {
    meta.labels.as_ref().and_then(|l| l.get(MANAGED_BY_KEY)).is_some_and(|v| v == MANAGED_BY)
}
