//! One file per component of the deployment, in install order (see
//! `deployment.rs` for the list itself), plus what they share: AWS tags that
//! mark this tool's resources, and small kube helpers.

pub mod alb;
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
pub mod preflight;
pub mod probe;
pub mod readiness_gates;
pub mod registry_secret;
pub mod schema_load;
pub mod subnet_tags;

pub use crate::ownership::{iam_tags, iam_tags_ours, is_managed, managed_labels};
pub use crate::pins::sha256_hex;
