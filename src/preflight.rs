//! Preflight: the kube context reaches a cluster, that cluster is the named
//! EKS cluster (its API endpoint is the context's server), helm is usable,
//! and the AWS identity and region resolve. Owns nothing; establishes the
//! `ClusterFacts` every other component reads.

use crate::component::{Category, Check};
use crate::context::{ClusterFacts, Context};
use crate::error::{self, Error, Result};
use crate::pins::KUBERNETES_MINOR_RANGE;
use crate::spec::Target;
use crate::support;

const C: Category = Category::Cluster;

pub struct Preflight {
    pub facts: Option<ClusterFacts>,
    pub checks: Vec<Check>,
    /// The first failure, as the error install and uninstall stop with (exit 3).
    pub blocker: Option<Error>,
}

impl Preflight {
    /// Facts, or the first prerequisite that is missing.
    pub fn require(self) -> Result<ClusterFacts> {
        match (self.blocker, self.facts) {
            (Some(e), _) => Err(e),
            (None, Some(f)) => Ok(f),
            (None, None) => Err(Error::prerequisite("preflight established nothing")),
        }
    }

    /// Facts for an install of `target`, whose chart may need a newer Kubernetes.
    pub fn require_for(self, target: Target) -> Result<ClusterFacts> {
        let facts = self.require()?;
        match support::kubernetes_refusal(target, &facts.kubernetes_version) {
            Some(why) => Err(Error::prerequisite(why).hint("upgrade the cluster's Kubernetes version first")),
            None => Ok(facts),
        }
    }
}

/// `https://host:443/` and `https://HOST` are the same endpoint.
pub fn same_endpoint(a: &str, b: &str) -> bool {
    fn norm(s: &str) -> String {
        let s = s.trim().trim_end_matches('/').to_ascii_lowercase();
        s.strip_suffix(":443").map(str::to_string).unwrap_or(s)
    }
    norm(a) == norm(b)
}

pub async fn run(ctx: &mut Context) -> Preflight {
    let mut p = Preflight { facts: None, checks: Vec::new(), blocker: None };
    let block = |p: &mut Preflight, check: Check, error: Error| {
        p.checks.push(check);
        if p.blocker.is_none() {
            p.blocker = Some(error);
        }
    };
    let server = ctx.kube.server.clone();

    // Kubernetes, the AWS identity and the EKS cluster, concurrently: none needs another's
    // answer (the cluster's name comes from the context), and each is a round trip.
    // And helm's version, for install and uninstall (which run it), read by a process meanwhile.
    let helm = ctx.finding_helm();
    let describe = async {
        match ctx.cluster_name() {
            Ok(name) => Some(ctx.aws.eks.describe_cluster().name(name).send().await),
            Err(_) => None,
        }
    };
    let (version, identity, described, helm) =
        tokio::join!(ctx.kube.client.apiserver_version(), ctx.aws.sts.get_caller_identity().send(), describe, helm);
    ctx.helm_found(helm);
    let version = match version {
        Ok(v) => {
            p.checks.push(Check::pass(
                C,
                "cluster.reachable",
                format!("kube context {:?} reaches {server}", ctx.kube.context),
            ));
            v
        }
        Err(e) => {
            // The credential plugin's own failure (its exit code kept: 4 when it did not answer).
            if let Some(failure) = ctx.kube.credential_failure() {
                let hint = failure.hint_text().unwrap_or_default().to_string();
                block(&mut p, Check::fail(C, "cluster.reachable", failure.to_string()).hint(hint), failure);
                return p;
            }
            let msg = format!("cannot reach the API server of kube context {:?} at {server}: {e}", ctx.kube.context);
            let hint = "check the context (kubectl config current-context), the network path to the cluster, and your credentials";
            block(&mut p, Check::fail(C, "cluster.reachable", &msg).hint(hint), Error::prerequisite(msg).hint(hint));
            return p;
        }
    };
    let minor: u32 = version.minor.trim_end_matches('+').parse().unwrap_or(0);
    let (lo, hi) = KUBERNETES_MINOR_RANGE;
    p.checks.push(if (lo..=hi).contains(&minor) {
        Check::pass(C, "cluster.version", format!("Kubernetes {} is supported", version.git_version))
    } else {
        Check::warn(
            C,
            "cluster.version",
            format!("Kubernetes {} is outside the tested range 1.{lo}–1.{hi}", version.git_version),
        )
        .hint("the plugin may still work; report what fails")
    });

    // helm is checked only where it runs (install and uninstall); status reads helm's storage.
    if ctx.helm.is_some() {
        match ctx.helm().and_then(|h| h.check_version().map(|_| h)) {
            Ok(h) => {
                p.checks.push(Check::pass(C, "cluster.helm", format!("helm {} at {}", h.version, h.path.display())))
            }
            Err(e) => {
                let check =
                    Check::fail(C, "cluster.helm", e.to_string()).hint(e.hint_text().unwrap_or_default().to_string());
                block(&mut p, check, e);
            }
        }
    }

    let identity = match identity {
        Ok(i) => i,
        Err(e) => {
            let msg = format!("AWS credentials do not resolve: {}", error::aws(e));
            let hint = "configure credentials (AWS_PROFILE or --profile, aws sso login, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)";
            block(&mut p, Check::fail(C, "cluster.aws-identity", &msg).hint(hint), Error::prerequisite(msg).hint(hint));
            return p;
        }
    };
    let caller_arn = identity.arn().unwrap_or_default().to_string();
    let account = identity.account().unwrap_or_default().to_string();
    let partition = caller_arn.split(':').nth(1).unwrap_or("aws").to_string();
    let Some(region) = ctx.aws.region.clone() else {
        let msg = "no AWS region: none in --region, the kube context or the AWS configuration";
        let hint = "pass --region, or set AWS_REGION";
        block(&mut p, Check::fail(C, "cluster.aws-identity", msg).hint(hint), Error::prerequisite(msg).hint(hint));
        return p;
    };
    p.checks.push(Check::pass(C, "cluster.aws-identity", format!("AWS identity {caller_arn} in {region}")));

    let name = match ctx.cluster_name() {
        Ok(n) => n.to_string(),
        Err(e) => {
            let check =
                Check::fail(C, "cluster.eks", e.to_string()).hint(e.hint_text().unwrap_or_default().to_string());
            block(&mut p, check, e);
            return p;
        }
    };
    let described = match described.expect("described when the cluster's name is known") {
        Ok(out) => out.cluster,
        Err(e) => {
            let not_found = e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception());
            let (msg, hint) = if not_found {
                (
                    format!("EKS cluster {name:?} not found in account {account}, region {region}"),
                    "check --cluster-name and --region (aws eks list-clusters)".to_string(),
                )
            } else {
                (
                    format!("cannot describe EKS cluster {name:?}: {}", error::aws(e)),
                    "the identity needs eks:DescribeCluster".to_string(),
                )
            };
            block(&mut p, Check::fail(C, "cluster.eks", &msg).hint(&hint), Error::prerequisite(msg).hint(hint));
            return p;
        }
    };
    let Some(cluster) = described else {
        let msg = format!("EKS returned no cluster named {name:?}");
        block(&mut p, Check::fail(C, "cluster.eks", &msg), Error::prerequisite(msg));
        return p;
    };
    let endpoint = cluster.endpoint().unwrap_or_default().to_string();
    if !same_endpoint(&endpoint, &server) {
        let msg = format!(
            "kube context {:?} points at {server}, but EKS cluster {name:?} is at {endpoint}",
            ctx.kube.context
        );
        let hint = format!(
            "use the context of cluster {name:?} (aws eks update-kubeconfig --name {name}), or the right --cluster-name"
        );
        block(&mut p, Check::fail(C, "cluster.eks", &msg).hint(&hint), Error::prerequisite(msg).hint(hint));
        return p;
    }
    p.checks.push(Check::pass(C, "cluster.eks", format!("the context is EKS cluster {name:?} ({endpoint})")));
    let vpc = cluster.resources_vpc_config();
    p.facts = Some(ClusterFacts {
        name,
        region,
        account,
        partition,
        caller_arn,
        endpoint,
        issuer: cluster.identity().and_then(|i| i.oidc()).and_then(|o| o.issuer()).unwrap_or_default().to_string(),
        vpc_id: vpc.and_then(|v| v.vpc_id()).unwrap_or_default().to_string(),
        subnet_ids: vpc.map(|v| v.subnet_ids().to_vec()).unwrap_or_default(),
        kubernetes_version: version.git_version,
        auto_mode: cluster.compute_config().and_then(|c| c.enabled()).unwrap_or(false)
            && cluster
                .kubernetes_network_config()
                .and_then(|k| k.elastic_load_balancing())
                .and_then(|e| e.enabled())
                .unwrap_or(false),
    });
    p
}

#[cfg(test)]
mod tests {
    use super::same_endpoint;

    #[test]
    fn endpoints_compare_without_default_port_case_or_slash() {
        assert!(same_endpoint(
            "https://ABC.gr7.us-east-1.eks.amazonaws.com",
            "https://abc.gr7.us-east-1.eks.amazonaws.com:443/"
        ));
        assert!(!same_endpoint("https://a.eks.amazonaws.com", "https://b.eks.amazonaws.com"));
        assert!(!same_endpoint("https://127.0.0.1:6443", "https://127.0.0.1:6444"));
    }
}
