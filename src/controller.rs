//! Which ALB controller serves the release (`--lb-controller`) and which
//! credentials the self-managed one runs with (`--identity`), decided once,
//! before the plan. Each: the flag; else what the release was installed
//! with; else what the cluster runs — EKS Auto Mode's own ALB controller on
//! an Auto Mode cluster, and EKS Pod Identity when the cluster runs the
//! `eks-pod-identity-agent` add-on (or is in Auto Mode, whose nodes run the
//! agent) and the controller would not run on Fargate (where only IRSA works).

use aws_sdk_eks::Client;

use crate::error::{self, Context as _, Error, Result};
use crate::pins::{
    AUTO_MODE_INGRESS_CLASS, LBC_CHART_LABELS, LBC_INGRESS_CLASS, LBC_INGRESS_CLASS_ON_AUTO_MODE, LBC_NAMESPACE,
    POD_IDENTITY_AGENT_ADDON,
};
use crate::spec::{Identity, LbControllerMode, LbcSpec, Spec};

/// What the cluster says about the two ways.
pub struct ClusterIdentity {
    /// EKS Auto Mode (its nodes run the agent without the add-on).
    pub auto_mode: bool,
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
        Err(e) => {
            Err(error::aws(e)).context(format!("reading add-on {POD_IDENTITY_AGENT_ADDON} of EKS cluster {cluster}"))
        }
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

pub async fn read(eks: &Client, cluster: &str, auto_mode: bool) -> Result<ClusterIdentity> {
    let (agent, fargate_profile) = tokio::join!(agent_status(eks, cluster), fargate_profile(eks, cluster));
    Ok(ClusterIdentity { auto_mode, agent: agent?, fargate_profile: fargate_profile? })
}

/// The controller: `flag`, else the install record's, else Auto Mode's on an Auto Mode
/// cluster; and the IngressClass the release's Ingress names with it.
pub fn choose_controller(
    flag: Option<LbControllerMode>,
    installed: Option<&Spec>,
    cluster: &str,
    auto_mode: bool,
) -> Result<(LbControllerMode, String)> {
    let installed = installed.map(|s| &s.lb_controller).filter(|l| !l.external);
    if let (Some(LbControllerMode::AutoMode), false) = (flag, auto_mode) {
        return Err(Error::prerequisite(format!(
            "--lb-controller auto-mode: EKS cluster {cluster} is not in EKS Auto Mode (DescribeCluster reports no elasticLoadBalancing)"
        ))
        .hint("drop --lb-controller, or enable Auto Mode on the cluster first"));
    }
    let mode = flag.or(installed.map(|l| l.mode)).unwrap_or(if auto_mode {
        LbControllerMode::AutoMode
    } else {
        LbControllerMode::SelfManaged
    });
    if let Some(was) = installed.map(|l| l.mode).filter(|m| *m != mode) {
        return Err(Error::prerequisite(format!(
            "the release is served by the {} ALB controller; this install asks for the {} one",
            was.as_str(),
            mode.as_str()
        ))
        .hint("to switch, uninstall the release first (its ALB goes with it), then install with the other --lb-controller"));
    }
    let class = match (mode, installed) {
        (LbControllerMode::AutoMode, _) => AUTO_MODE_INGRESS_CLASS.to_string(),
        // An installed release keeps the class it was installed with.
        (LbControllerMode::SelfManaged, Some(l)) => l.ingress_class.clone(),
        (LbControllerMode::SelfManaged, None) if auto_mode => LBC_INGRESS_CLASS_ON_AUTO_MODE.to_string(),
        (LbControllerMode::SelfManaged, None) => LBC_INGRESS_CLASS.to_string(),
    };
    Ok((mode, class))
}

/// The whole choice for install: the controller, its class, and (self-managed) its credentials.
pub async fn resolve(
    lbc: &mut LbcSpec,
    flags: (Option<LbControllerMode>, Option<Identity>),
    installed: Option<&Spec>,
    eks: &Client,
    cluster: &str,
    auto_mode: bool,
) -> Result<()> {
    if lbc.external {
        return Ok(());
    }
    (lbc.mode, lbc.ingress_class) = choose_controller(flags.0, installed, cluster, auto_mode)?;
    if lbc.mode == LbControllerMode::SelfManaged {
        let seen = read(eks, cluster, auto_mode).await?;
        lbc.identity = choose(flags.1, installed, &seen)?;
    }
    Ok(())
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
    let agent = cluster.auto_mode || cluster.agent.as_deref() == Some("ACTIVE");
    Ok(if agent && cluster.fargate_profile.is_none() { Identity::PodIdentity } else { Identity::Irsa })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(agent: Option<&str>, fargate: Option<&str>) -> ClusterIdentity {
        ClusterIdentity {
            auto_mode: false,
            agent: agent.map(str::to_string),
            fargate_profile: fargate.map(str::to_string),
        }
    }

    #[test]
    fn auto_mode_clusters_get_their_own_controller_and_a_self_managed_one_another_class() {
        use LbControllerMode::*;
        assert_eq!(choose_controller(None, None, "c", true).unwrap(), (AutoMode, AUTO_MODE_INGRESS_CLASS.into()));
        assert_eq!(choose_controller(None, None, "c", false).unwrap(), (SelfManaged, "alb".into()));
        assert_eq!(
            choose_controller(Some(SelfManaged), None, "c", true).unwrap(),
            (SelfManaged, LBC_INGRESS_CLASS_ON_AUTO_MODE.into())
        );
        assert!(choose_controller(Some(AutoMode), None, "c", false).is_err());
        let mut installed = crate::spec::defaults("r", "c", "default");
        installed.lb_controller.mode = SelfManaged;
        // The cluster turned to Auto Mode under an installed release: it keeps its controller and class.
        assert_eq!(choose_controller(None, Some(&installed), "c", true).unwrap(), (SelfManaged, "alb".into()));
        assert!(choose_controller(Some(AutoMode), Some(&installed), "c", true).is_err());
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
