//! Subnet tags for internal load balancers: the controller discovers the
//! subnets of an internal ALB by `kubernetes.io/role/internal-elb`. Install
//! tags the cluster's private subnets (those without a route to an internet
//! gateway), or those given with --subnets, and records only the tags it
//! added. It refuses when the controller's own subnet resolver would then
//! not find two availability zones, or a subnet is tagged only for other
//! clusters. Status reports what that resolver would pick.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;

use crate::component::Env;
use crate::component::{Action, Category, Check, Component, Fate, Verb};
use crate::ec2::Filter;
use crate::error::{Context, Error, Result};
use crate::pins::{INTERNAL_ELB_TAG, SUBNET_MARK_KEY};
use crate::record::{Recorder, SubnetTag};

/// The controller skips subnets with fewer free addresses than this.
pub const MIN_FREE_ADDRESSES: i32 = 8;

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
    /// Listed in the EKS cluster's VPC configuration.
    pub in_cluster: bool,
    pub free: i32,
    pub tags: BTreeMap<String, String>,
}

impl Subnet {
    fn has_role(&self) -> bool {
        matches!(self.tags.get(INTERNAL_ELB_TAG).map(String::as_str), Some("1") | Some(""))
    }
    /// `kubernetes.io/cluster/<other>` tags.
    fn other_clusters(&self, cluster: &str) -> Vec<String> {
        self.tags
            .keys()
            .filter_map(|k| k.strip_prefix("kubernetes.io/cluster/"))
            .filter(|c| *c != cluster)
            .map(str::to_string)
            .collect()
    }
    /// This tool's mark: it added the role tag for `cluster`.
    fn marked_for(&self, cluster: &str) -> bool {
        self.tags.get(SUBNET_MARK_KEY).is_some_and(|c| c == cluster)
    }
    fn tagged_for(&self, cluster: &str) -> bool {
        self.tags.contains_key(&format!("kubernetes.io/cluster/{cluster}"))
    }
    /// Tagged for other clusters and not for this one: the controller skips it.
    /// A subnet shared by several clusters' tags, this one's among them, is eligible.
    fn foreign_only(&self, cluster: &str) -> bool {
        !self.tagged_for(cluster) && !self.other_clusters(cluster).is_empty()
    }
}

/// Which subnets install tags: the chosen ones, or the cluster's private ones.
fn candidates<'a>(subnets: &'a [Subnet], chosen: &[String]) -> Vec<&'a Subnet> {
    subnets
        .iter()
        .filter(|s| if chosen.is_empty() { s.in_cluster && s.private } else { chosen.contains(&s.id) })
        .collect()
}

/// What the controller's subnet resolver makes of the VPC's subnets for an
/// internal ALB: of those with the role tag (or about to get it), skip the
/// ones tagged only for other clusters and those short of free addresses;
/// then one per zone, this cluster's tag first, then the lowest id.
#[derive(Debug, Default)]
pub struct Resolution<'a> {
    pub picked: Vec<&'a Subnet>,
    pub skipped: Vec<String>,
    /// No subnet carries the role tag: found by their routes instead.
    pub fallback: bool,
}

impl Resolution<'_> {
    pub fn zones(&self) -> usize {
        self.picked.iter().map(|s| s.zone.as_str()).collect::<BTreeSet<_>>().len()
    }
    pub fn describe(&self) -> String {
        self.picked.iter().map(|s| format!("{} ({}, {} free)", s.id, s.zone, s.free)).collect::<Vec<_>>().join(", ")
    }
}

pub fn resolve<'a>(subnets: &'a [Subnet], cluster: &str, to_be_tagged: &[&str]) -> Resolution<'a> {
    let mut r = Resolution::default();
    let mut by_zone: BTreeMap<&str, &Subnet> = BTreeMap::new();
    let tagged = |s: &Subnet| s.has_role() || to_be_tagged.contains(&s.id.as_str());
    // With no role tag anywhere in the VPC, the controller falls back to the private subnets.
    r.fallback = !subnets.iter().any(tagged);
    for s in subnets.iter().filter(|s| if r.fallback { s.private } else { tagged(s) }) {
        if s.foreign_only(cluster) {
            r.skipped.push(format!("{} (tagged only for cluster {})", s.id, s.other_clusters(cluster).join(", ")));
            continue;
        }
        if s.free < MIN_FREE_ADDRESSES {
            r.skipped.push(format!("{} ({} free addresses, fewer than {MIN_FREE_ADDRESSES})", s.id, s.free));
            continue;
        }
        let better = |old: &Subnet| (!s.tagged_for(cluster), &s.id) < (!old.tagged_for(cluster), &old.id);
        match by_zone.get(s.zone.as_str()) {
            Some(old) if !better(old) => {}
            _ => {
                by_zone.insert(&s.zone, s);
            }
        }
    }
    r.picked = by_zone.into_values().collect();
    r
}

/// Why tagging these subnets would not give a working internal ALB, if it would not.
pub fn refusal(all: &[Subnet], candidates: &[&Subnet], cluster: &str) -> Option<String> {
    let foreign: Vec<_> = candidates
        .iter()
        .filter(|s| s.foreign_only(cluster))
        .map(|s| format!("{} (tagged only for cluster {})", s.id, s.other_clusters(cluster).join(", ")))
        .collect();
    if !foreign.is_empty() {
        return Some(format!(
            "subnets tagged only for other clusters, which the controller would skip: {}",
            foreign.join(", ")
        ));
    }
    let ids: Vec<&str> = candidates.iter().map(|s| s.id.as_str()).collect();
    let r = resolve(all, cluster, &ids);
    if r.zones() < 2 {
        return Some(format!(
            "an ALB needs subnets in at least two availability zones; the controller would find {} ({}){}",
            r.zones(),
            if r.picked.is_empty() { "none".to_string() } else { r.describe() },
            if r.skipped.is_empty() { String::new() } else { format!("; skipped: {}", r.skipped.join(", ")) }
        ));
    }
    None
}

impl SubnetTags {
    /// Uninstall's one decision, subnet by subnet. The role tag goes only where this
    /// tool's mark, on a subnet of the cluster's VPC, says it added it for this
    /// cluster; the record only says where to look (and a subnet marked by another
    /// release's install is found without it), and whoever uninstalls last removes it.
    fn fates(&self, env: &Env) -> Vec<(String, Fate)> {
        let subnets = self.seen.as_deref().expect("observed");
        let cluster = &env.facts.name;
        // The record only lists tags: this tool adds one key, on the cluster's subnets.
        let mut fates: Vec<(String, Fate)> = env
            .record
            .subnet_tags
            .iter()
            .filter(|t| t.key != INTERNAL_ELB_TAG)
            .map(|t| {
                let why = format!(
                    "the install record lists {}={}, but this tool only adds {INTERNAL_ELB_TAG} to the cluster's subnets",
                    t.key, t.value
                );
                (t.subnet.clone(), Fate::Keep(why))
            })
            .collect();
        let mut ids: Vec<String> =
            env.record.subnet_tags.iter().filter(|t| t.key == INTERNAL_ELB_TAG).map(|t| t.subnet.clone()).collect();
        ids.extend(subnets.iter().filter(|s| s.marked_for(cluster) && s.vpc == env.facts.vpc_id).map(|s| s.id.clone()));
        ids.sort();
        ids.dedup();
        fates.extend(ids.into_iter().map(|id| {
                let fate = match subnets.iter().find(|s| s.id == id) {
                    None => Fate::Keep(format!("the install record lists it, but it is not a subnet of the cluster's VPC {}", env.facts.vpc_id)),
                    Some(s) if s.vpc != env.facts.vpc_id => {
                        Fate::Keep(format!("in {}, not the cluster's VPC {}", s.vpc, env.facts.vpc_id))
                    }
                    Some(s) if !s.marked_for(cluster) => {
                        if s.has_role() {
                            Fate::Keep(format!(
                                "{INTERNAL_ELB_TAG} carries no mark of this tool for cluster {cluster} (it was there before install, or was added another way)"
                            ))
                        } else {
                            Fate::Absent
                        }
                    }
                    Some(_) => match &env.shared.controller {
                        // The controller finds the subnets for internal ALBs by this tag.
                        Some(kept) => Fate::kept(kept),
                        None => Fate::Remove(()),
                    },
                };
            (id, fate)
        }));
        fates
    }

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

    fn shared(&self) -> bool {
        true
    }

    async fn observe(&mut self, env: &Env) -> Result<()> {
        let ec2 = &env.aws().ec2;
        let vpc_filter = [Filter::new("vpc-id", [&env.facts.vpc_id])];
        // The subnets and the route tables that make them private or public, read together.
        let (described, tables) =
            futures::join!(ec2.describe_subnets(&vpc_filter, &[]), ec2.describe_route_tables(&vpc_filter));
        let mut described = described.context("describing the VPC's subnets")?;
        let tables = tables.context("describing the VPC's route tables")?;
        // --subnets outside the VPC are described too, to be refused by name.
        let outside: Vec<String> =
            env.spec.subnets.iter().filter(|id| !described.iter().any(|s| &s.id == *id)).cloned().collect();
        if !outside.is_empty() {
            // A subnet that does not exist is reported by plan; nothing more to read here.
            if let Ok(found) = ec2.describe_subnets(&[], &outside).await {
                described.extend(found);
            }
        }
        // A subnet uses its explicitly associated route table, else the VPC's main one.
        let mut public_subnets = BTreeSet::new();
        let mut main_is_public = false;
        for table in &tables {
            let public = table.gateways.iter().any(|g| g.starts_with("igw-"));
            for assoc in &table.associations {
                if assoc.main {
                    main_is_public = public;
                } else if let Some(subnet) = &assoc.subnet
                    && public
                {
                    public_subnets.insert(subnet.clone());
                }
            }
        }
        let explicit: BTreeSet<String> =
            tables.iter().flat_map(|t| &t.associations).filter_map(|a| a.subnet.clone()).collect();
        self.seen = Some(
            described
                .into_iter()
                .map(|s| {
                    let public = public_subnets.contains(&s.id) || (!explicit.contains(&s.id) && main_is_public);
                    Subnet {
                        zone: s.zone,
                        vpc: s.vpc,
                        private: !public,
                        in_cluster: env.facts.subnet_ids.contains(&s.id),
                        free: s.free,
                        tags: s.tags.into_iter().collect(),
                        id: s.id,
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
        if let Some(why) = refusal(subnets, &chosen, &env.facts.name) {
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
                .create_tags(&missing, &[(INTERNAL_ELB_TAG, "1"), (SUBNET_MARK_KEY, &env.facts.name)])
                .await
                .context("tagging subnets")?;
            env.progress.done(&format!("tagged {} with {INTERNAL_ELB_TAG}=1", missing.join(", ")));
        }
        Ok(())
    }

    async fn checks(&self, env: &Env) -> Vec<Check> {
        let subnets = self.seen.as_deref().expect("observed");
        let c = Category::Subnets;
        let cluster = &env.facts.name;
        let chosen = candidates(subnets, &env.spec.subnets);
        let resolved = resolve(subnets, cluster, &[]);
        let untagged: Vec<_> = chosen.iter().filter(|s| !s.has_role()).map(|s| s.id.as_str()).collect();
        let skipped = if resolved.skipped.is_empty() {
            String::new()
        } else {
            format!("; skipped: {}", resolved.skipped.join(", "))
        };
        let role = if resolved.zones() < 2 {
            Check::fail(c, "subnets.internal-elb", format!(
                "the controller would find subnets in {} zone(s) for an internal ALB ({}){skipped}; it needs two or more{}",
                resolved.zones(),
                if resolved.picked.is_empty() { "none".to_string() } else { resolved.describe() },
                if untagged.is_empty() { String::new() } else { format!(" (untagged: {})", untagged.join(", ")) }
            ))
            .hint("re-run install to tag the private subnets, or tag them: aws ec2 create-tags --tags Key=kubernetes.io/role/internal-elb,Value=1")
        } else if resolved.fallback {
            Check::warn(
                c,
                "subnets.internal-elb",
                format!(
                    "no subnet carries {INTERNAL_ELB_TAG}: the controller falls back to the private subnets by their routes and would pick {}{skipped}",
                    resolved.describe()
                ),
            )
            .hint("re-run install to tag the private subnets, so that the choice does not rest on the fallback")
        } else if !untagged.is_empty() {
            Check::warn(
                c,
                "subnets.internal-elb",
                format!(
                    "the controller would pick {}{skipped}; not tagged: {}",
                    resolved.describe(),
                    untagged.join(", ")
                ),
            )
        } else {
            Check::pass(
                c,
                "subnets.internal-elb",
                format!("the controller would pick {} in {} zones{skipped}", resolved.describe(), resolved.zones()),
            )
        };
        let foreign: Vec<_> = chosen.iter().filter(|s| s.foreign_only(cluster)).map(|s| s.id.as_str()).collect();
        let shared: Vec<_> = chosen
            .iter()
            .filter(|s| s.tagged_for(cluster) && !s.other_clusters(cluster).is_empty())
            .map(|s| format!("{} (also {})", s.id, s.other_clusters(cluster).join(", ")))
            .collect();
        let foreign = Check::expect(
            c,
            "subnets.cluster-tag",
            foreign.is_empty(),
            if shared.is_empty() {
                "no subnet is tagged only for another cluster".to_string()
            } else {
                format!("shared subnets carry this cluster's tag too: {}", shared.join(", "))
            },
            format!("subnets tagged only for other clusters (the controller skips them): {}", foreign.join(", ")),
        )
        .hint(format!(
            "tag them for this cluster too (kubernetes.io/cluster/{cluster}=shared), or choose other subnets"
        ));
        vec![role, foreign]
    }

    fn removal(&self, env: &Env) -> Result<Vec<Action>> {
        Ok(self
            .fates(env)
            .into_iter()
            .flat_map(|(subnet, fate)| match fate {
                Fate::Remove(()) => Some(
                    Action::aws(Verb::Delete, "ec2:DeleteTags", &subnet)
                        .because(format!("{INTERNAL_ELB_TAG}=1 and this tool's mark {SUBNET_MARK_KEY}")),
                ),
                kept => Action::kept("aws", "ec2:Tag", &subnet, &kept),
            })
            .collect())
    }

    async fn remove(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        let fates = self.fates(env);
        if fates.iter().any(|(_, f)| matches!(f, Fate::Defer(_))) {
            return Ok(()); // the record keeps listing them for a later uninstall
        }
        let gone: Vec<String> = fates.into_iter().filter(|(_, f)| *f == Fate::Remove(())).map(|(s, _)| s).collect();
        if !gone.is_empty() {
            env.aws()
                .ec2
                .delete_tags(&gone, &[(INTERNAL_ELB_TAG, "1"), (SUBNET_MARK_KEY, &env.facts.name)])
                .await
                .context(format!("removing {INTERNAL_ELB_TAG} from {}", gone.join(", ")))?;
            env.progress.done(&format!("removed {INTERNAL_ELB_TAG} from {}", gone.join(", ")));
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
            in_cluster: true,
            free: 250,
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn private_subnets_in_two_zones_are_accepted() {
        let s = [subnet("a", "z1", true, &[]), subnet("b", "z2", true, &[]), subnet("c", "z1", false, &[])];
        let c = candidates(&s, &[]);
        assert_eq!(c.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(refusal(&s, &c, "prod"), None);
    }

    #[test]
    fn one_zone_is_refused_with_the_reason() {
        let s = [subnet("a", "z1", true, &[]), subnet("b", "z1", true, &[])];
        let why = refusal(&s, &candidates(&s, &[]), "prod").unwrap();
        assert!(why.contains("two availability zones"), "{why}");
    }

    #[test]
    fn a_subnet_only_of_another_cluster_is_refused_a_shared_one_is_not() {
        let s = [
            subnet("a", "z1", true, &[("kubernetes.io/cluster/other", "owned")]),
            subnet("b", "z2", true, &[("kubernetes.io/cluster/prod", "shared")]),
        ];
        let why = refusal(&s, &candidates(&s, &[]), "prod").unwrap();
        assert!(why.contains("a (tagged only for cluster other)"), "{why}");
        let s = [
            subnet(
                "a",
                "z1",
                true,
                &[("kubernetes.io/cluster/other", "shared"), ("kubernetes.io/cluster/prod", "shared")],
            ),
            subnet("b", "z2", true, &[]),
        ];
        assert_eq!(refusal(&s, &candidates(&s, &[]), "prod"), None);
    }

    #[test]
    fn the_resolver_picks_one_per_zone_this_clusters_tag_first_then_the_lowest_id() {
        let role = (INTERNAL_ELB_TAG, "1");
        let mut short = subnet("subnet-0", "z2", true, &[role]);
        short.free = 7;
        let s = [
            subnet("subnet-3", "z1", true, &[role]),
            subnet("subnet-2", "z1", true, &[role]),
            subnet("subnet-9", "z2", true, &[role, ("kubernetes.io/cluster/prod", "owned")]),
            subnet("subnet-5", "z2", true, &[role]),
            short,
            subnet("subnet-1", "z3", true, &[role, ("kubernetes.io/cluster/other", "owned")]),
        ];
        let r = resolve(&s, "prod", &[]);
        assert_eq!(r.picked.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["subnet-2", "subnet-9"]);
        assert!(r.skipped.iter().any(|x| x.starts_with("subnet-0 (7 free")), "{:?}", r.skipped);
        assert!(r.skipped.iter().any(|x| x.starts_with("subnet-1 (tagged only")), "{:?}", r.skipped);
    }

    #[test]
    fn without_any_role_tag_the_private_subnets_are_the_fallback() {
        let s = [subnet("a", "z1", true, &[]), subnet("b", "z2", true, &[]), subnet("c", "z3", false, &[])];
        let r = resolve(&s, "prod", &[]);
        assert!(r.fallback);
        assert_eq!(r.picked.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        let tagged = [subnet("a", "z1", true, &[(INTERNAL_ELB_TAG, "1")]), subnet("b", "z2", true, &[])];
        let r = resolve(&tagged, "prod", &[]);
        assert!(!r.fallback);
        assert_eq!(r.zones(), 1);
    }

    #[test]
    fn an_empty_role_value_counts_as_tagged() {
        assert!(subnet("a", "z", true, &[(INTERNAL_ELB_TAG, "")]).has_role());
        assert!(!subnet("a", "z", true, &[(INTERNAL_ELB_TAG, "0")]).has_role());
    }
}
