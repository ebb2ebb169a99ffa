//! The ALB the controller made for an Ingress, found by the controller's own
//! tags (`elbv2.k8s.aws/cluster` with the controller's cluster name,
//! `ingress.k8s.aws/stack` with the Ingress or its group; EKS Auto Mode's
//! controller writes `eks:eks-cluster-name` and `ingress.eks.amazonaws.com/…`),
//! not by parsing the hostname. In an IngressGroup the ALB is shared: the
//! target groups of this Ingress are told apart by their resource tag.

use std::collections::BTreeMap;

use aws_sdk_elasticloadbalancingv2::Client as Elb;
use aws_sdk_elasticloadbalancingv2::error::{ProvideErrorMetadata, SdkError};

use crate::component::Env;
use crate::error::{self, Context, Result};
use crate::spec::LbControllerMode;

use super::ReleaseIngress;

#[derive(Debug, Clone, Default)]
pub struct LoadBalancer {
    pub arn: String,
    pub name: String,
    pub state: String,
    pub scheme: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Target {
    pub id: String,
    /// `initial`, `healthy`, `unhealthy`, `unused`, `draining`, `unavailable`.
    pub state: String,
    /// ELBv2's reason code and description, when not healthy.
    pub reason: String,
}

#[derive(Debug, Clone, Default)]
pub struct TargetGroup {
    pub arn: String,
    pub name: String,
    pub attributes: BTreeMap<String, String>,
    pub targets: Vec<Target>,
    /// The health check ELBv2 makes, as a sentence: `HTTP GET /path on port traffic-port,
    /// success codes 200`.
    pub health_check: String,
}

#[derive(Debug, Clone, Default)]
pub struct AlbState {
    pub load_balancers: Vec<LoadBalancer>,
    pub target_groups: Vec<TargetGroup>,
}

impl AlbState {
    pub fn is_empty(&self) -> bool {
        self.load_balancers.is_empty() && self.target_groups.is_empty()
    }
    pub fn load_balancer_arns(&self) -> Vec<String> {
        self.load_balancers.iter().map(|l| l.arn.clone()).collect()
    }
    pub fn summary(&self) -> String {
        format!("{} load balancer(s), {} target group(s) left", self.load_balancers.len(), self.target_groups.len())
    }
}

/// Whether an ELBv2 read failed because the load balancer or target group it
/// names is gone: the controller deleted it between our listing and this
/// read. That is an answer (it no longer exists), not an error.
/// The tag keys a controller marks its AWS resources with.
pub struct Tagging {
    pub cluster: &'static str,
    pub stack: &'static str,
    pub resource: &'static str,
    /// The cluster's shared backend security group: its tag and value.
    pub backend: (&'static str, &'static str),
}

pub fn tagging(mode: LbControllerMode) -> &'static Tagging {
    match mode {
        LbControllerMode::SelfManaged => &Tagging {
            cluster: "elbv2.k8s.aws/cluster",
            stack: "ingress.k8s.aws/stack",
            resource: "ingress.k8s.aws/resource",
            backend: ("elbv2.k8s.aws/resource", "backend-sg"),
        },
        LbControllerMode::AutoMode => &Tagging {
            cluster: "eks:eks-cluster-name",
            stack: "ingress.eks.amazonaws.com/stack",
            resource: "ingress.eks.amazonaws.com/resource",
            backend: ("service.eks.amazonaws.com/resource", "ManagedBackendSecurityGroup"),
        },
    }
}

fn vanished<E: ProvideErrorMetadata>(e: &SdkError<E>) -> bool {
    e.as_service_error()
        .and_then(|s| s.code())
        .is_some_and(|c| c == "TargetGroupNotFound" || c == "LoadBalancerNotFound")
}

/// Tags of each resource (by ARN) that carries this cluster's and stack's tags.
/// DescribeTags refuses a whole batch when one ARN in it is gone: that batch
/// is read again one ARN at a time and the gone ones are left out.
async fn tagged(
    elb: &Elb,
    arns: Vec<String>,
    keys: &Tagging,
    cluster: &str,
    stack: &str,
) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
    let describe = |arns: &[String]| elb.describe_tags().set_resource_arns(Some(arns.to_vec())).send();
    let mut descriptions = vec![];
    for chunk in arns.chunks(20) {
        match describe(chunk).await {
            Ok(out) => descriptions.extend(out.tag_descriptions().to_vec()),
            Err(e) if vanished(&e) => {
                for arn in chunk {
                    match describe(std::slice::from_ref(arn)).await {
                        Ok(out) => descriptions.extend(out.tag_descriptions().to_vec()),
                        Err(e) if vanished(&e) => {}
                        Err(e) => return Err(error::aws(e)).context("reading ELBv2 tags"),
                    }
                }
            }
            Err(e) => return Err(error::aws(e)).context("reading ELBv2 tags"),
        }
    }
    let mut found = BTreeMap::new();
    for d in descriptions {
        let tags: BTreeMap<String, String> = d
            .tags()
            .iter()
            .map(|t| (t.key().unwrap_or_default().to_string(), t.value().unwrap_or_default().to_string()))
            .collect();
        if tags.get(keys.cluster).map(String::as_str) == Some(cluster)
            && tags.get(keys.stack).map(String::as_str) == Some(stack)
        {
            found.insert(d.resource_arn().unwrap_or_default().to_string(), tags);
        }
    }
    Ok(found)
}

/// Every load balancer and target group in the account and region, listed side by
/// side: what `locate` picks the Ingress's from, read before the Ingress is known.
pub struct Listing {
    load_balancers: Vec<aws_sdk_elasticloadbalancingv2::types::LoadBalancer>,
    target_groups: Vec<aws_sdk_elasticloadbalancingv2::types::TargetGroup>,
}

pub async fn listing(env: &Env) -> Result<Listing> {
    let elb = &env.aws().elb;
    let (load_balancers, target_groups) = futures::try_join!(
        async {
            let mut all = vec![];
            let mut pages = elb.describe_load_balancers().into_paginator().send();
            while let Some(page) = pages.next().await {
                all.extend(page.map_err(error::aws).context("listing load balancers")?.load_balancers().to_vec());
            }
            Ok::<_, crate::error::Error>(all)
        },
        async {
            let mut all = vec![];
            let mut pages = elb.describe_target_groups().into_paginator().send();
            while let Some(page) = pages.next().await {
                all.extend(page.map_err(error::aws).context("listing target groups")?.target_groups().to_vec());
            }
            Ok(all)
        },
    )?;
    Ok(Listing { load_balancers, target_groups })
}

/// Which ALB and target groups exist for the Ingress, without their
/// details: enough to wait for them to be gone. `cluster` is the name the
/// controller tags with.
pub async fn locate(env: &Env, ingress: &ReleaseIngress, cluster: &str) -> Result<AlbState> {
    located(env, listing(env).await?, ingress, cluster).await
}

/// The Ingress's ALB and target groups among those listed: the listing, then the tags of
/// both, three calls in two round trips.
async fn located(env: &Env, listed: Listing, ingress: &ReleaseIngress, cluster: &str) -> Result<AlbState> {
    let elb = &env.aws().elb;
    let stack = ingress.stack();
    let keys = tagging(env.spec.lb_controller.mode);
    let Listing { load_balancers: all_lbs, target_groups: all_tgs } = listed;
    // The tags of both in one DescribeTags (twenty ARNs a call): one map, as no ARN is both.
    let arns = all_lbs.iter().map(|l| l.load_balancer_arn()).chain(all_tgs.iter().map(|t| t.target_group_arn()));
    let ours = tagged(elb, arns.flatten().map(str::to_string).collect(), keys, cluster, &stack).await?;
    let ours_lbs = &ours;
    let load_balancers = all_lbs
        .iter()
        .filter(|l| l.load_balancer_arn().is_some_and(|a| ours_lbs.contains_key(a)))
        .map(|l| LoadBalancer {
            arn: l.load_balancer_arn().unwrap_or_default().into(),
            name: l.load_balancer_name().unwrap_or_default().into(),
            state: l.state().and_then(|s| s.code()).map(|c| c.as_str().to_string()).unwrap_or_default(),
            scheme: l.scheme().map(|s| s.as_str().to_string()).unwrap_or_default(),
        })
        .collect();
    // `<namespace>/<ingress>-<service>:<port>`: this Ingress's own, also inside a group.
    let own_prefix = format!("{}-", ingress.display());
    let target_groups = all_tgs
        .iter()
        .filter(|t| {
            t.target_group_arn()
                .and_then(|a| ours.get(a))
                .is_some_and(|tags| tags.get(keys.resource).is_none_or(|r| r.starts_with(&own_prefix)))
        })
        .map(|tg| TargetGroup {
            arn: tg.target_group_arn().unwrap_or_default().to_string(),
            name: tg.target_group_name().unwrap_or_default().to_string(),
            health_check: format!(
                "{} GET {} on port {}, success codes {}",
                tg.health_check_protocol().map(|p| p.as_str()).unwrap_or("HTTP"),
                tg.health_check_path().unwrap_or("/"),
                tg.health_check_port().unwrap_or("traffic-port"),
                tg.matcher().and_then(|m| m.http_code()).unwrap_or("200"),
            ),
            ..Default::default()
        })
        .collect();
    Ok(AlbState { load_balancers, target_groups })
}

/// The ALB and target groups with each target group's attributes and target
/// health. A target group deleted while it is read is left out, as it would
/// be from a listing made a moment later.
pub async fn find(env: &Env, listed: Listing, ingress: &ReleaseIngress, cluster: &str) -> Result<AlbState> {
    let mut state = located(env, listed, ingress, cluster).await?;
    let elb = &env.aws().elb;
    // Each target group's attributes and health, all side by side.
    let read = std::mem::take(&mut state.target_groups).into_iter().map(|mut tg| async move {
        let (attributes, health) = futures::join!(
            elb.describe_target_group_attributes().target_group_arn(&tg.arn).send(),
            elb.describe_target_health().target_group_arn(&tg.arn).send(),
        );
        let attributes = match attributes {
            Ok(out) => out,
            Err(e) if vanished(&e) => return Ok(None),
            Err(e) => return Err(error::aws(e)).context("reading target group attributes"),
        };
        let health = match health {
            Ok(out) => out,
            Err(e) if vanished(&e) => return Ok(None),
            Err(e) => return Err(error::aws(e)).context("reading target health"),
        };
        tg.attributes = attributes
            .attributes()
            .iter()
            .map(|a| (a.key().unwrap_or_default().to_string(), a.value().unwrap_or_default().to_string()))
            .collect();
        tg.targets = health
            .target_health_descriptions()
            .iter()
            .map(|h| {
                let health = h.target_health();
                let reason = [
                    health.and_then(|t| t.reason()).map(|r| r.as_str().to_string()),
                    health.and_then(|t| t.description()).map(str::to_string),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(": ");
                Target {
                    id: h.target().and_then(|t| t.id()).unwrap_or_default().to_string(),
                    state: health.and_then(|t| t.state()).map(|s| s.as_str().to_string()).unwrap_or_default(),
                    reason,
                }
            })
            .collect();
        Ok(Some(tg))
    });
    let present: Vec<TargetGroup> = futures::future::try_join_all(read).await?.into_iter().flatten().collect();
    state.target_groups = present;
    Ok(state)
}

/// The security groups the controller made, found by its tags: the ALB's own
/// (`ingress.k8s.aws/stack` of the Ingress or its group) with `Some(stack)`,
/// else the cluster's shared backend group (`k8s-traffic-…`). `id (name)`.
pub async fn security_groups(env: &Env, cluster: &str, stack: Option<&str>) -> Result<Vec<String>> {
    use crate::ec2::Filter;
    let keys = tagging(env.spec.lb_controller.mode);
    let tag = |key: &str, value: &str| Filter::new(format!("tag:{key}"), [value]);
    let mut filters = vec![tag(keys.cluster, cluster)];
    match stack {
        Some(stack) => {
            filters.push(tag(keys.stack, stack));
            filters.push(tag(keys.resource, "ManagedLBSecurityGroup"));
        }
        None => filters.push(tag(keys.backend.0, keys.backend.1)),
    }
    let groups = env
        .aws()
        .ec2
        .describe_security_groups(&filters, &[])
        .await
        .context("listing the controller's security groups")?;
    Ok(groups.iter().map(|g| format!("{} ({})", g.id, g.name)).collect())
}

/// A pod address's network interface and its security groups, as EC2 has them.
#[derive(Debug, Clone, Default)]
pub struct PodInterface {
    pub id: String,
    /// Each group's id and whether it carries `kubernetes.io/cluster/<cluster>`.
    pub groups: Vec<(String, bool)>,
}

/// The network interface holding each of `ips` (a pod's address is a
/// secondary address of its node's interface), with its groups' cluster tag.
pub async fn pod_interfaces(env: &Env, cluster: &str, ips: &[String]) -> Result<BTreeMap<String, PodInterface>> {
    use crate::ec2::Filter;
    let mut found = BTreeMap::new();
    if ips.is_empty() {
        return Ok(found);
    }
    let ec2 = &env.aws().ec2;
    let interfaces = ec2
        .describe_network_interfaces(&[Filter::new("addresses.private-ip-address", ips)])
        .await
        .context("reading the pods' network interfaces")?;
    let group_ids: Vec<String> = interfaces
        .iter()
        .flat_map(|e| e.groups.iter().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let tag = format!("kubernetes.io/cluster/{cluster}");
    let mut tagged = std::collections::BTreeSet::new();
    if !group_ids.is_empty() {
        let groups =
            ec2.describe_security_groups(&[], &group_ids).await.context("reading the pods' security groups")?;
        for g in groups {
            if g.tags.iter().any(|(k, _)| *k == tag) {
                tagged.insert(g.id);
            }
        }
    }
    for eni in interfaces {
        let interface = PodInterface {
            id: eni.id.clone(),
            groups: eni.groups.iter().map(|g| (g.clone(), tagged.contains(g))).collect(),
        };
        for ip in eni.addresses.iter().filter(|ip| ips.contains(ip)) {
            found.insert(ip.clone(), interface.clone());
        }
    }
    Ok(found)
}
