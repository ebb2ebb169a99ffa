//! One file per component of the deployment, in install order (see
//! `deployment.rs` for the list itself), plus what they share: AWS tags that
//! mark this tool's resources, and small kube helpers.

pub mod alb;
pub mod auto_mode_class;
pub mod cluster_secret;
pub mod controller_crds;
pub mod database_secret;
pub mod dedicated_nodes;
pub mod graphql_release;
pub mod iam_policy;
pub mod iam_role;
pub mod ingress;
pub mod ingress_teardown;
pub mod lb_controller;
pub mod lbc_service_account;
pub mod oidc_provider;
pub mod owned_ingress;
pub mod owned_secret;
pub mod pod_identity_agent;
pub mod pod_identity_association;
pub mod probe;
pub mod readiness_gates;
pub mod registry_secret;
pub mod release_namespace;
pub mod schema_load;
pub mod subnet_tags;

pub use crate::ownership::{iam_tags, iam_tags_ours, is_managed, managed_labels};
pub use crate::pins::sha256_hex;

use kube::api::{Api, DeleteParams};

use crate::component::{Env, Fate};
use crate::error::{Context, Result};

/// The fate of an IAM resource of the controller's (its policy, the OIDC
/// provider): absent, not proven this tool's (`unproven` says why), kept with
/// the controller's IAM (`env.shared.iam`), or removed.
pub fn owned_iam_fate(exists: bool, unproven: Option<String>, env: &Env) -> Fate {
    match (exists, unproven, &env.shared.iam) {
        (false, ..) => Fate::Absent,
        (true, Some(why), _) => Fate::Keep(why),
        (true, None, Some(kept)) => Fate::kept(kept),
        (true, None, None) => Fate::Remove(()),
    }
}

/// Deletes one object; one that is already gone (deleted by someone else
/// since it was read) is fine. Whether this call deleted it.
pub async fn delete_gone<K>(api: &Api<K>, name: &str, params: &DeleteParams, what: &str) -> Result<bool>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(e).context(format!("deleting {what}")),
    }
}
