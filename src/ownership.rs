//! How this tool marks what it creates, and recognises it again: AWS tags
//! (this tool and the cluster), the Kubernetes managed-by label, and the same
//! label on its Helm releases.
//!
//! The mark on the live resource is the only proof of ownership. The install
//! record is an index of where to look: anyone who can write a ConfigMap in
//! the release namespace can write one, so it never decides a deletion alone.

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

/// Why uninstall must leave a resource alone, or None when its own mark
/// proves this tool created it. `recorded`: the install record claims it.
pub fn unproven(recorded: bool, marked: bool) -> Option<String> {
    match (marked, recorded) {
        (true, _) => None,
        (false, true) => Some(
            "the install record says this tool created it, but it carries no mark of this tool \
             (the record may have been edited)"
                .into(),
        ),
        (false, false) => Some("not created by this tool".into()),
    }
}

/// Whether helm's release annotations name this release (helm puts them on every object it creates).
pub fn released_by(meta: &kube::api::ObjectMeta, release: &str, namespace: &str) -> bool {
    let a = meta.annotations.as_ref();
    a.and_then(|a| a.get("meta.helm.sh/release-name")).map(String::as_str) == Some(release)
        && a.and_then(|a| a.get("meta.helm.sh/release-namespace")).map(String::as_str) == Some(namespace)
}
