//! How this tool marks what it creates, and recognises it again: AWS tags
//! (this tool and the cluster) and the Kubernetes managed-by label.

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
pub fn managed_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(MANAGED_BY_KEY.to_string(), MANAGED_BY.to_string())])
}

pub fn is_managed(meta: &kube::api::ObjectMeta) -> bool {
    meta.labels.as_ref().and_then(|l| l.get(MANAGED_BY_KEY)).is_some_and(|v| v == MANAGED_BY)
}
