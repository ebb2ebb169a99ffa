//! Which credentials the controller runs with (`--identity`), decided once,
//! before the plan: the flag; else what the release was installed with; else
//! EKS Pod Identity when the cluster runs the `eks-pod-identity-agent` add-on
//! and the controller would not run on Fargate (where only IRSA works); else IRSA.

use aws_sdk_eks::Client;

use crate::error::{self, Context as _, Error, Result};
use crate::pins::{LBC_CHART_LABELS, LBC_NAMESPACE, POD_IDENTITY_AGENT_ADDON};
use crate::spec::{Identity, Spec};

/// What the cluster says about the two ways.
pub struct ClusterIdentity {
    /// The agent add-on's status (`ACTIVE`, `CREATING`, …), or None when it is not installed.
    pub agent: Option<String>,
    /// The Fargate profile that would run the controller's pods, if one does.
    pub fargate_profile: Option<String>,
}

/// The add-on's status, or None when the cluster does not have it.
pub async fn agent_status(eks: &Client, cluster: &str) -> Result<Option<String>> {
    match eks.describe_addon().cluster_name(cluster).addon_name(POD_IDENTITY_AGENT_ADDON).send().await {
        Ok(out) => Ok(Some(out.addon().and_then(|a| a.status()).map(|s| s.as_str().to_string()).unwrap_or_default())),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(None),
        Err(e) => Err(error::aws(e)).context(format!("reading add-on {POD_IDENTITY_AGENT_ADDON} of EKS cluster {cluster}")),
    }
}

/// The Fargate profile whose selectors take the controller's pods (namespace
/// and labels, as Fargate's scheduler matches them), if any.
async fn fargate_profile(eks: &Client, cluster: &str) -> Result<Option<String>> {
    let names = eks
        .list_fargate_profiles()
        .cluster_name(cluster)
        .send()
        .await
        .map_err(error::aws)
        .context(format!("listing the Fargate profiles of EKS cluster {cluster}"))?
        .fargate_profile_names()
        .to_vec();
    for name in names {
        let out = eks
            .describe_fargate_profile()
            .cluster_name(cluster)
            .fargate_profile_name(&name)
            .send()
            .await
            .map_err(error::aws)
            .context(format!("reading Fargate profile {name}"))?;
        let selects = out.fargate_profile().map(|p| p.selectors()).unwrap_or_default().iter().any(|s| {
            s.namespace() == Some(LBC_NAMESPACE)
                && s.labels().is_none_or(|labels| {
                    labels.iter().all(|(k, v)| LBC_CHART_LABELS.iter().any(|(lk, lv)| lk == k && lv == v))
                })
        });
        if selects {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

pub async fn read(eks: &Client, cluster: &str) -> Result<ClusterIdentity> {
    let (agent, fargate_profile) = tokio::join!(agent_status(eks, cluster), fargate_profile(eks, cluster));
    Ok(ClusterIdentity { agent: agent?, fargate_profile: fargate_profile? })
}

/// The one decision. `flag`: `--identity`; `installed`: the install record's spec.
pub fn choose(flag: Option<Identity>, installed: Option<&Spec>, cluster: &ClusterIdentity) -> Result<Identity> {
    if let (Some(Identity::PodIdentity), Some(profile)) = (flag, &cluster.fargate_profile) {
        return Err(Error::prerequisite(format!(
            "--identity pod-identity: Fargate profile {profile} would run the controller's pods, and EKS Pod Identity does not work on Fargate"
        ))
        .hint("use --identity irsa, or change the profile's selectors so the controller runs on EC2 nodes"));
    }
    if let Some(chosen) = flag {
        return Ok(chosen);
    }
    if let Some(spec) = installed.filter(|s| !s.lb_controller.external) {
        return Ok(spec.lb_controller.identity);
    }
    Ok(if cluster.agent.as_deref() == Some("ACTIVE") && cluster.fargate_profile.is_none() {
        Identity::PodIdentity
    } else {
        Identity::Irsa
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(agent: Option<&str>, fargate: Option<&str>) -> ClusterIdentity {
        ClusterIdentity { agent: agent.map(str::to_string), fargate_profile: fargate.map(str::to_string) }
    }

    #[test]
    fn the_agent_makes_pod_identity_the_default_unless_fargate_runs_the_controller() {
        assert_eq!(choose(None, None, &cluster(Some("ACTIVE"), None)).unwrap(), Identity::PodIdentity);
        assert_eq!(choose(None, None, &cluster(Some("CREATING"), None)).unwrap(), Identity::Irsa);
        assert_eq!(choose(None, None, &cluster(None, None)).unwrap(), Identity::Irsa);
        assert_eq!(choose(None, None, &cluster(Some("ACTIVE"), Some("fp"))).unwrap(), Identity::Irsa);
        assert_eq!(choose(Some(Identity::Irsa), None, &cluster(Some("ACTIVE"), None)).unwrap(), Identity::Irsa);
        assert_eq!(choose(Some(Identity::PodIdentity), None, &cluster(None, None)).unwrap(), Identity::PodIdentity);
        assert!(choose(Some(Identity::PodIdentity), None, &cluster(None, Some("fp"))).is_err());
    }
}
