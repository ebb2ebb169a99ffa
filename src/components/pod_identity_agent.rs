//! The `eks-pod-identity-agent` add-on, which serves EKS Pod Identity's
//! credentials to pods on each node. With `--identity pod-identity` on a
//! cluster without it, install adds it (tagged as this tool's) and waits until
//! it is active; uninstall (and an install that switches to IRSA) removes it
//! only when its own tags prove install added it and no association of the
//! cluster remains to need it (the controller's counts unless its own tags
//! prove it this tool's, so that it goes first).

use std::collections::HashMap;

use async_trait::async_trait;

use crate::component::Env;
use crate::component::{Action, Category, Check, Component, Fate, Verb};
use crate::error::{self, Context, Error, Result};
use crate::ownership::{self, ownership_tags, tagged_ours};
use crate::pins::POD_IDENTITY_AGENT_ADDON as ADDON;
use crate::record::{Owned, Recorder};
use crate::spec::Identity;
use crate::wait;

#[derive(Default)]
pub struct PodIdentityAgent {
    seen: Option<Seen>,
}

struct Seen {
    /// The add-on's status, or None when the cluster does not have it.
    status: Option<String>,
    tagged_ours: bool,
    /// Uninstall, or a switch to IRSA: the cluster's associations that stay.
    others: Vec<String>,
}

impl PodIdentityAgent {
    fn wanted(env: &Env) -> bool {
        !env.spec.lb_controller.external && env.spec.lb_controller.identity == Identity::PodIdentity
    }

    async fn look(env: &Env) -> Result<(Option<String>, bool)> {
        let eks = &env.aws().eks;
        match eks.describe_addon().cluster_name(&env.facts.name).addon_name(ADDON).send().await {
            Ok(out) => {
                let addon = out.addon();
                let status = addon.and_then(|a| a.status()).map(|s| s.as_str().to_string()).unwrap_or_default();
                let tags = addon.and_then(|a| a.tags()).cloned().unwrap_or_default();
                Ok((Some(status), tagged_ours(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())), &env.facts.name)))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok((None, false)),
            Err(e) => Err(error::aws(e)).context(format!("reading add-on {ADDON}")),
        }
    }

    /// The cluster's associations that stay when this release's go: all but the
    /// controller's, and that one too unless its own tags prove it this tool's.
    async fn staying_associations(env: &Env) -> Result<Vec<String>> {
        let lbc = &env.spec.lb_controller;
        let eks = &env.aws().eks;
        let mut found = Vec::new();
        let mut pages = eks.list_pod_identity_associations().cluster_name(&env.facts.name).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(error::aws).context("listing the cluster's pod identity associations")?;
            for a in page.associations() {
                let (ns, sa) = (a.namespace().unwrap_or_default(), a.service_account().unwrap_or_default());
                let controllers = (ns, sa) == (lbc.namespace.as_str(), lbc.service_account.as_str());
                let ours = controllers && {
                    let id = a.association_id().unwrap_or_default();
                    let out = eks
                        .describe_pod_identity_association()
                        .cluster_name(&env.facts.name)
                        .association_id(id)
                        .send()
                        .await
                        .map_err(error::aws)
                        .context(format!("reading pod identity association {id}"))?;
                    let tags = out.association().and_then(|a| a.tags()).cloned().unwrap_or_default();
                    tagged_ours(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())), &env.facts.name)
                };
                if !ours {
                    found.push(format!("{ns}/{sa}"));
                }
            }
        }
        Ok(found)
    }

    /// Uninstall's one decision: the add-on goes only when its tags prove install added
    /// it, the controller's IAM goes too, and no other association needs it.
    fn fate(&self, env: &Env) -> Fate {
        let Some(seen) = self.seen.as_ref().filter(|s| s.status.is_some()) else {
            return Fate::Absent;
        };
        let claimed = Owned::claimed(env.record.pod_identity_agent.as_ref());
        if !claimed && !seen.tagged_ours {
            return Fate::Keep("not added by this tool".into());
        }
        if let Some(why) = ownership::unproven(claimed, seen.tagged_ours) {
            return Fate::Keep(why);
        }
        if !seen.others.is_empty() {
            return Fate::Keep(format!("pod identity associations {} use it", seen.others.join(", ")));
        }
        match &env.shared.iam {
            Some(kept) => Fate::kept(kept),
            None => Fate::Remove(()),
        }
    }

    async fn wait_active(env: &Env) -> Result<()> {
        wait::until(env, &format!("add-on {ADDON} to be ACTIVE"), || async {
            Ok(match Self::look(env).await?.0.as_deref() {
                Some("ACTIVE") => Ok(()),
                Some(s @ ("CREATE_FAILED" | "DEGRADED" | "DELETE_FAILED")) => {
                    return Err(Error::failed(format!("add-on {ADDON} is {s}")).hint(format!(
                        "aws eks describe-addon --cluster-name {} --addon-name {ADDON} shows its health issues",
                        env.facts.name
                    )));
                }
                Some(s) => Err(format!("it is {s}")),
                None => Err("it is not there".to_string()),
            })
        })
        .await
    }
}

#[async_trait]
impl Component for PodIdentityAgent {
    fn name(&self) -> &'static str {
        "EKS Pod Identity agent"
    }

    fn category(&self) -> Category {
        Category::Iam
    }

    fn shared(&self) -> bool {
        true
    }

    async fn observe(&mut self, env: &Env) -> Result<()> {
        if env.options.mode == crate::spec::Mode::Status && !Self::wanted(env) {
            return Ok(()); // IRSA (or a controller managed elsewhere): status checks nothing of Pod Identity's
        }
        let (status, tagged_ours) = Self::look(env).await?;
        let may_remove = env.options.mode == crate::spec::Mode::Uninstall
            || (env.options.mode == crate::spec::Mode::Install && !Self::wanted(env) && tagged_ours);
        let others = if may_remove && status.is_some() { Self::staying_associations(env).await? } else { vec![] };
        self.seen = Some(Seen { status, tagged_ours, others });
        Ok(())
    }

    fn plan(&self, env: &Env) -> Result<Vec<Action>> {
        if env.spec.lb_controller.external {
            return Ok(vec![]);
        }
        if !Self::wanted(env) {
            // Switched to IRSA: the add-on install added goes as uninstall would let it go.
            let claimed = Owned::claimed(env.record.pod_identity_agent.as_ref());
            return Ok(match self.fate(env) {
                Fate::Remove(()) if claimed => self.removal(env)?,
                _ => vec![],
            });
        }
        let seen = self.seen.as_ref().expect("observed");
        Ok(match seen.status.as_deref() {
            None => vec![
                Action::aws(Verb::Create, "eks:CreateAddon", ADDON)
                    .because("EKS Pod Identity's credentials come from its agent on each node"),
            ],
            Some("ACTIVE") => vec![],
            Some(status) => {
                vec![Action::wait(format!("add-on {ADDON} to be ACTIVE")).because(format!("it is {status}"))]
            }
        })
    }

    async fn apply(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        if env.spec.lb_controller.external {
            return Ok(());
        }
        if !Self::wanted(env) {
            return Ok(()); // what the other way left goes in `retire`
        }
        let seen = self.seen.as_ref().expect("observed");
        if seen.status.is_none() {
            record.update(|r| r.pod_identity_agent = Some(Owned { id: ADDON.into(), created: true })).await?;
            let tags: HashMap<String, String> = ownership_tags(&env.facts.name).into_iter().collect();
            env.aws()
                .eks
                .create_addon()
                .cluster_name(&env.facts.name)
                .addon_name(ADDON)
                .set_tags(Some(tags))
                .send()
                .await
                .map_err(error::aws)
                .context(format!("adding add-on {ADDON} to EKS cluster {}", env.facts.name))?;
            env.progress.done(&format!("added add-on {ADDON}"));
        }
        Self::wait_active(env).await
    }

    /// Switched to IRSA: the add-on install added goes, as uninstall would let it go, once the
    /// controller runs with IRSA's credentials.
    async fn retire(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        let claimed = Owned::claimed(env.record.pod_identity_agent.as_ref());
        match self.fate(env) {
            Fate::Remove(()) if claimed && !Self::wanted(env) && !env.spec.lb_controller.external => {
                self.remove(env, record).await
            }
            _ => Ok(()),
        }
    }

    async fn checks(&self, env: &Env) -> Vec<Check> {
        let c = Category::Iam;
        if !Self::wanted(env) {
            return vec![]; // IRSA: nothing of Pod Identity's to check
        }
        let seen = self.seen.as_ref().expect("observed");
        vec![match seen.status.as_deref() {
            Some("ACTIVE") => Check::pass(c, "iam.pod-identity-agent", format!("add-on {ADDON} is ACTIVE")),
            Some(s) => Check::fail(c, "iam.pod-identity-agent", format!("add-on {ADDON} is {s}"))
                .hint(format!("aws eks describe-addon --cluster-name {} --addon-name {ADDON}", env.facts.name)),
            None => Check::fail(
                c,
                "iam.pod-identity-agent",
                format!(
                    "EKS cluster {} has no {ADDON} add-on: no pod gets EKS Pod Identity's credentials",
                    env.facts.name
                ),
            )
            .hint("re-run install, which adds it"),
        }]
    }

    fn removal(&self, env: &Env) -> Result<Vec<Action>> {
        Ok(match self.fate(env) {
            Fate::Remove(()) => vec![Action::aws(Verb::Delete, "eks:DeleteAddon", ADDON)],
            kept => Action::kept("aws", "eks:Addon", ADDON, &kept).into_iter().collect(),
        })
    }

    async fn remove(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        match self.fate(env) {
            Fate::Defer(_) => return Ok(()),
            Fate::Remove(()) => {
                env.aws()
                    .eks
                    .delete_addon()
                    .cluster_name(&env.facts.name)
                    .addon_name(ADDON)
                    .send()
                    .await
                    .map_err(error::aws)
                    .context(format!("removing add-on {ADDON}"))?;
                wait::until(env, &format!("add-on {ADDON} to be gone"), || async {
                    Ok(match Self::look(env).await?.0 {
                        None => Ok(()),
                        Some(status) => Err(format!("it is {status}")),
                    })
                })
                .await?;
                env.progress.done(&format!("removed add-on {ADDON}"));
            }
            Fate::Absent | Fate::Keep(_) => {}
        }
        record.update(|r| r.pod_identity_agent = None).await
    }
}
