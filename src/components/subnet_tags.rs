//! Subnet tags for internal load balancers: the controller discovers the
//! subnets of an internal ALB by `kubernetes.io/role/internal-elb`. Install
//! tags the cluster VPC's private subnets (those without a route to an
//! internet gateway), or those given with --subnets, and records only the
//! tags it added; it refuses when fewer than two availability zones would
//! remain, or a subnet is tagged for another cluster.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use aws_sdk_ec2::types::{Filter, Tag};

use crate::component::{Action, Category, Check, Component, Verb};
use crate::context::Env;
use crate::error::{self, Context, Error, Result};
use crate::pins::INTERNAL_ELB_TAG;
use crate::record::{Recorder, SubnetTag};

#[derive(Default)]
pub struct SubnetTags {
    seen: Option<Vec<Subnet>>,
}

#[derive(Debug, Clone)]
pub struct Subnet {
    pub id: String,
    pub zone: String,
    pub vpc: String,
    pub private: bool,
    pub tags: BTreeMap<String, String>,
}

impl Subnet {
    fn has_role(&self) -> bool {
        matches!(self.tags.get(INTERNAL_ELB_TAG).map(String::as_str), Some("1") | Some(""))
    }
    /// `kubernetes.io/cluster/<other>` tags: the controller skips such subnets.
    fn other_clusters(&self, cluster: &str) -> Vec<String> {
        self.tags
            .keys()
            .filter_map(|k| k.strip_prefix("kubernetes.io/cluster/"))
            .filter(|c| *c != cluster)
            .map(str::to_string)
            .collect()
    }
}

/// Which subnets install tags: the chosen ones, or the private ones.
fn candidates<'a>(subnets: &'a [Subnet], chosen: &[String]) -> Vec<&'a Subnet> {
    subnets.iter().filter(|s| if chosen.is_empty() { s.private } else { chosen.contains(&s.id) }).collect()
}

/// Why tagging these subnets would not give a working internal ALB, if it would not.
pub fn refusal(candidates: &[&Subnet], cluster: &str) -> Option<String> {
    let foreign: Vec<_> = candidates
        .iter()
        .filter(|s| !s.other_clusters(cluster).is_empty())
        .map(|s| format!("{} (tagged for cluster {})", s.id, s.other_clusters(cluster).join(", ")))
        .collect();
    if !foreign.is_empty() {
        return Some(format!(
            "subnets tagged for another cluster, which the controller would skip: {}",
            foreign.join(", ")
        ));
    }
    let zones: BTreeSet<_> = candidates.iter().map(|s| s.zone.as_str()).collect();
    if zones.len() < 2 {
        return Some(format!(
            "an ALB needs subnets in at least two availability zones; these are in {}: {}",
            zones.len(),
            candidates.iter().map(|s| format!("{} ({})", s.id, s.zone)).collect::<Vec<_>>().join(", ")
        ));
    }
    None
}

impl SubnetTags {
    fn chosen(&self, env: &Env) -> Vec<Subnet> {
        candidates(self.seen.as_deref().unwrap_or_default(), &env.spec.subnets).into_iter().cloned().collect()
    }
}

#[async_trait]
impl Component for SubnetTags {
    fn name(&self) -> &'static str {
        "subnet tags"
    }

    fn category(&self) -> Category {
        Category::Subnets
    }

    async fn observe(&mut self, env: &Env) -> Result<()> {
        let ec2 = &env.aws().ec2;
        let mut ids = env.facts.subnet_ids.clone();
        for s in &env.spec.subnets {
            if !ids.contains(s) {
                ids.push(s.clone());
            }
        }
        let described = ec2
            .describe_subnets()
            .set_subnet_ids(Some(ids))
            .send()
            .await
            .map_err(error::aws)
            .context("describing the cluster's subnets")?;
        let tables = ec2
            .describe_route_tables()
            .filters(Filter::builder().name("vpc-id").values(&env.facts.vpc_id).build())
            .send()
            .await
            .map_err(error::aws)
            .context("describing the VPC's route tables")?;
        // A subnet uses its explicitly associated route table, else the VPC's main one.
        let mut public_subnets = BTreeSet::new();
        let mut main_is_public = false;
        for table in tables.route_tables() {
            let public = table.routes().iter().any(|r| r.gateway_id().is_some_and(|g| g.starts_with("igw-")));
            for assoc in table.associations() {
                if assoc.main() == Some(true) {
                    main_is_public = public;
                } else if let Some(subnet) = assoc.subnet_id()
                    && public
                {
                    public_subnets.insert(subnet.to_string());
                }
            }
        }
        let explicit: BTreeSet<String> = tables
            .route_tables()
            .iter()
            .flat_map(|t| t.associations())
            .filter_map(|a| a.subnet_id().map(str::to_string))
            .collect();
        self.seen = Some(
            described
                .subnets()
                .iter()
                .map(|s| {
                    let id = s.subnet_id().unwrap_or_default().to_string();
                    let public = public_subnets.contains(&id) || (!explicit.contains(&id) && main_is_public);
                    Subnet {
                        zone: s.availability_zone().unwrap_or_default().to_string(),
                        vpc: s.vpc_id().unwrap_or_default().to_string(),
                        private: !public,
                        tags: s
                            .tags()
                            .iter()
                            .map(|t| {
                                (t.key().unwrap_or_default().to_string(), t.value().unwrap_or_default().to_string())
                            })
                            .collect(),
                        id,
                    }
                })
                .collect(),
        );
        Ok(())
    }

    fn plan(&self, env: &Env) -> Result<Vec<Action>> {
        let subnets = self.seen.as_deref().expect("observed");
        if let Some(s) = env.spec.subnets.iter().find(|id| !subnets.iter().any(|s| &s.id == *id)) {
            return Err(Error::usage(format!("--subnets names {s}, which does not exist"))
                .hint("list them: aws ec2 describe-subnets"));
        }
        if let Some(s) = subnets.iter().find(|s| env.spec.subnets.contains(&s.id) && s.vpc != env.facts.vpc_id) {
            return Err(Error::usage(format!(
                "--subnets names {} in {}, not the cluster's VPC {}",
                s.id, s.vpc, env.facts.vpc_id
            )));
        }
        let chosen = candidates(subnets, &env.spec.subnets);
        if let Some(why) = refusal(&chosen, &env.facts.name) {
            return Err(Error::prerequisite(format!("cannot prepare subnets for an internal ALB: {why}"))
                .hint("choose subnets in two or more zones with --subnets"));
        }
        Ok(chosen
            .iter()
            .filter(|s| !s.has_role())
            .map(|s| {
                Action::aws(Verb::Create, "ec2:CreateTags", &s.id)
                    .because(format!("{INTERNAL_ELB_TAG}=1, zone {}", s.zone))
            })
            .collect())
    }

    async fn apply(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        let chosen = self.chosen(env);
        let previous = env.record.subnet_tags.clone();
        let entries: Vec<SubnetTag> = chosen
            .iter()
            .map(|s| {
                let ours_before = previous.iter().any(|t| t.subnet == s.id && t.created);
                SubnetTag {
                    subnet: s.id.clone(),
                    key: INTERNAL_ELB_TAG.into(),
                    value: "1".into(),
                    created: !s.has_role() || ours_before,
                }
            })
            .collect();
        record.update(|r| r.subnet_tags = entries).await?;
        let missing: Vec<_> = chosen.iter().filter(|s| !s.has_role()).map(|s| s.id.clone()).collect();
        if !missing.is_empty() {
            env.aws()
                .ec2
                .create_tags()
                .set_resources(Some(missing.clone()))
                .tags(Tag::builder().key(INTERNAL_ELB_TAG).value("1").build())
                .send()
                .await
                .map_err(error::aws)
                .context("tagging subnets")?;
            env.progress.done(&format!("tagged {} with {INTERNAL_ELB_TAG}=1", missing.join(", ")));
        }
        Ok(())
    }

    async fn checks(&self, env: &Env) -> Vec<Check> {
        let subnets = self.seen.as_deref().expect("observed");
        let c = Category::Subnets;
        let chosen = candidates(subnets, &env.spec.subnets);
        let tagged: Vec<_> =
            chosen.iter().filter(|s| s.has_role() && s.other_clusters(&env.facts.name).is_empty()).copied().collect();
        let zones: BTreeSet<_> = tagged.iter().map(|s| s.zone.as_str()).collect();
        let untagged: Vec<_> = chosen.iter().filter(|s| !s.has_role()).map(|s| s.id.as_str()).collect();
        let role = if zones.len() < 2 {
            Check::fail(c, "subnets.internal-elb", format!(
                "{} subnet(s) carry {INTERNAL_ELB_TAG} in {} zone(s); an internal ALB needs two or more{}",
                tagged.len(), zones.len(),
                if untagged.is_empty() { String::new() } else { format!(" (untagged: {})", untagged.join(", ")) }
            ))
            .hint("re-run install to tag the private subnets, or tag them: aws ec2 create-tags --tags Key=kubernetes.io/role/internal-elb,Value=1")
        } else if !untagged.is_empty() {
            Check::warn(
                c,
                "subnets.internal-elb",
                format!(
                    "{} subnet(s) tagged in {} zones; not tagged: {}",
                    tagged.len(),
                    zones.len(),
                    untagged.join(", ")
                ),
            )
        } else {
            Check::pass(
                c,
                "subnets.internal-elb",
                format!("{} private subnet(s) in {} zones carry {INTERNAL_ELB_TAG}", tagged.len(), zones.len()),
            )
        };
        let foreign: Vec<_> =
            chosen.iter().filter(|s| !s.other_clusters(&env.facts.name).is_empty()).map(|s| s.id.as_str()).collect();
        let foreign = Check::expect(
            c,
            "subnets.cluster-tag",
            foreign.is_empty(),
            "no subnet is tagged for another cluster",
            format!("subnets tagged for another cluster (the controller skips them): {}", foreign.join(", ")),
        )
        .hint("remove the other cluster's kubernetes.io/cluster/<name> tag, or choose other subnets");
        vec![role, foreign]
    }

    fn removal(&self, env: &Env) -> Result<Vec<Action>> {
        let subnets = self.seen.as_deref().expect("observed");
        Ok(env
            .record
            .subnet_tags
            .iter()
            .filter_map(|t| {
                let present = subnets.iter().any(|s| s.id == t.subnet && s.tags.get(&t.key) == Some(&t.value));
                if !t.created {
                    Some(Action::keep(
                        "aws",
                        "ec2:Tag",
                        &t.subnet,
                        format!("{}={} was there before install", t.key, t.value),
                    ))
                } else if let Some(why) = env.options.controller_kept() {
                    // The controller finds the subnets for internal ALBs by this tag.
                    present.then(|| Action::keep("aws", "ec2:Tag", &t.subnet, format!("{}={}: {why}", t.key, t.value)))
                } else {
                    present.then(|| {
                        Action::aws(Verb::Delete, "ec2:DeleteTags", &t.subnet).because(format!("{}={}", t.key, t.value))
                    })
                }
            })
            .collect())
    }

    async fn remove(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        let subnets = self.seen.as_deref().expect("observed");
        if env.options.controller_kept().is_some() {
            return Ok(());
        }
        for t in env.record.subnet_tags.iter().filter(|t| t.created) {
            if subnets.iter().any(|s| s.id == t.subnet && s.tags.get(&t.key) == Some(&t.value)) {
                env.aws()
                    .ec2
                    .delete_tags()
                    .resources(&t.subnet)
                    .tags(Tag::builder().key(&t.key).value(&t.value).build())
                    .send()
                    .await
                    .map_err(error::aws)
                    .context(format!("removing {} from {}", t.key, t.subnet))?;
                env.progress.done(&format!("removed {} from {}", t.key, t.subnet));
            }
        }
        record.update(|r| r.subnet_tags.clear()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(id: &str, zone: &str, private: bool, tags: &[(&str, &str)]) -> Subnet {
        Subnet {
            id: id.into(),
            zone: zone.into(),
            vpc: "vpc-1".into(),
            private,
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn private_subnets_in_two_zones_are_accepted() {
        let s = [subnet("a", "z1", true, &[]), subnet("b", "z2", true, &[]), subnet("c", "z1", false, &[])];
        let c = candidates(&s, &[]);
        assert_eq!(c.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(refusal(&c, "prod"), None);
    }

    #[test]
    fn one_zone_is_refused_with_the_reason() {
        let s = [subnet("a", "z1", true, &[]), subnet("b", "z1", true, &[])];
        let why = refusal(&candidates(&s, &[]), "prod").unwrap();
        assert!(why.contains("two availability zones"), "{why}");
    }

    #[test]
    fn a_subnet_of_another_cluster_is_refused() {
        let s = [
            subnet("a", "z1", true, &[("kubernetes.io/cluster/other", "owned")]),
            subnet("b", "z2", true, &[("kubernetes.io/cluster/prod", "shared")]),
        ];
        let why = refusal(&candidates(&s, &[]), "prod").unwrap();
        assert!(why.contains("a (tagged for cluster other)"), "{why}");
    }

    #[test]
    fn an_empty_role_value_counts_as_tagged() {
        assert!(subnet("a", "z", true, &[(INTERNAL_ELB_TAG, "")]).has_role());
        assert!(!subnet("a", "z", true, &[(INTERNAL_ELB_TAG, "0")]).has_role());
    }
}
