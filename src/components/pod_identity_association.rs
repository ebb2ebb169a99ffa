//! The controller's EKS Pod Identity association: the cluster, the
//! controller's namespace and ServiceAccount, and its IAM role, tagged as this
//! tool's. An association of that ServiceAccount this tool did not make is
//! taken over only with `--adopt`. With IRSA, an install that switches from
//! Pod Identity removes the association it made; uninstall does the same.

use std::collections::HashMap;

use async_trait::async_trait;

use crate::component::Env;
use crate::component::{Action, Category, Check, Component, Fate, Verb};
use crate::error::{self, Context, Error, Result};
use crate::ownership::{self, ownership_tags, tagged_ours};
use crate::record::{Owned, Recorder};
use crate::spec::Identity;

#[derive(Default)]
pub struct PodIdentityAssociation {
    seen: Option<Seen>,
}

struct Seen {
    /// The ServiceAccount's association, if it has one.
    found: Option<Found>,
}

struct Found {
    id: String,
    role_arn: String,
    tagged_ours: bool,
}

impl PodIdentityAssociation {
    fn wanted(env: &Env) -> bool {
        !env.spec.lb_controller.external && env.spec.lb_controller.identity == Identity::PodIdentity
    }

    fn subject(env: &Env) -> String {
        format!("{}/{}", env.spec.lb_controller.namespace, env.spec.lb_controller.service_account)
    }

    fn found(&self) -> Option<&Found> {
        self.seen.as_ref().and_then(|s| s.found.as_ref())
    }

    /// Uninstall's (and a switch to IRSA's) one decision: ours goes, unless the controller's IAM stays.
    fn fate(&self, env: &Env) -> Fate {
        let Some(found) = self.found() else {
            return Fate::Absent;
        };
        if let Some(why) =
            ownership::unproven(Owned::claimed(env.record.pod_identity_association.as_ref()), found.tagged_ours)
        {
            return Fate::Keep(why);
        }
        match &env.shared.iam {
            Some(kept) => Fate::kept(kept),
            None => Fate::Remove(()),
        }
    }

    async fn delete(env: &Env, id: &str) -> Result<()> {
        env.aws()
            .eks
            .delete_pod_identity_association()
            .cluster_name(&env.facts.name)
            .association_id(id)
            .send()
            .await
            .map_err(error::aws)
            .context(format!("deleting pod identity association {id}"))?;
        env.progress.done(&format!("deleted pod identity association {id} of {}", Self::subject(env)));
        Ok(())
    }
}

#[async_trait]
impl Component for PodIdentityAssociation {
    fn name(&self) -> &'static str {
        "EKS Pod Identity association"
    }

    fn category(&self) -> Category {
        Category::Iam
    }

    fn shared(&self) -> bool {
        true
    }

    async fn observe(&mut self, env: &Env) -> Result<()> {
        if env.options.mode == crate::spec::Mode::Status && !Self::wanted(env) {
            // IRSA (or a controller managed elsewhere): status checks nothing of Pod Identity's.
            self.seen = Some(Seen { found: None });
            return Ok(());
        }
        let lbc = &env.spec.lb_controller;
        let eks = &env.aws().eks;
        let listed = eks
            .list_pod_identity_associations()
            .cluster_name(&env.facts.name)
            .namespace(&lbc.namespace)
            .service_account(&lbc.service_account)
            .send()
            .await
            .map_err(error::aws)
            .context("listing the controller's pod identity associations")?;
        let id = listed.associations().iter().find_map(|a| a.association_id().map(str::to_string));
        let found = match id {
            None => None,
            Some(id) => {
                let out = eks
                    .describe_pod_identity_association()
                    .cluster_name(&env.facts.name)
                    .association_id(&id)
                    .send()
                    .await
                    .map_err(error::aws)
                    .context(format!("reading pod identity association {id}"))?;
                let a = out.association();
                let tags = a.and_then(|a| a.tags()).cloned().unwrap_or_default();
                Some(Found {
                    role_arn: a.and_then(|a| a.role_arn()).unwrap_or_default().to_string(),
                    tagged_ours: tagged_ours(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())), &env.facts.name),
                    id,
                })
            }
        };
        self.seen = Some(Seen { found });
        Ok(())
    }

    fn plan(&self, env: &Env) -> Result<Vec<Action>> {
        if env.spec.lb_controller.external {
            return Ok(vec![]); // --skip-lb-controller: the controller's identity is not this tool's
        }
        if !Self::wanted(env) {
            // Switched to IRSA: ours goes as uninstall would let it go; anything else stays.
            return Ok(match self.fate(env) {
                Fate::Remove(()) => self.removal(env)?,
                _ => vec![],
            });
        }
        let arn = env.role_arn();
        let subject = Self::subject(env);
        Ok(match self.found() {
            None => vec![
                Action::aws(Verb::Create, "eks:CreatePodIdentityAssociation", &subject).because(format!("role {arn}")),
            ],
            Some(f) if f.role_arn == arn => vec![],
            Some(f) if !f.tagged_ours && !env.options.adopt => {
                return Err(Error::prerequisite(format!(
                    "ServiceAccount {subject} already has pod identity association {} (role {}), not made by this tool",
                    f.id, f.role_arn
                ))
                .hint("pass --adopt to point it at this tool's role, or --identity irsa"));
            }
            Some(f) => vec![
                Action::aws(Verb::Update, "eks:UpdatePodIdentityAssociation", &f.id)
                    .because(format!("role {} → {arn}", f.role_arn)),
            ],
        })
    }

    async fn apply(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        if env.spec.lb_controller.external {
            return Ok(());
        }
        if !Self::wanted(env) {
            // Switched to IRSA: ours goes before the controller restarts, whose new pods would
            // otherwise get the association's environment, which EKS gives before IRSA's.
            return match self.fate(env) {
                Fate::Remove(()) => self.remove(env, record).await,
                _ => Ok(()),
            };
        }
        let lbc = &env.spec.lb_controller;
        let eks = &env.aws().eks;
        let arn = env.role_arn();
        let subject = Self::subject(env);
        match self.found() {
            None => {
                let tags: HashMap<String, String> = ownership_tags(&env.facts.name).into_iter().collect();
                let out = eks
                    .create_pod_identity_association()
                    .cluster_name(&env.facts.name)
                    .namespace(&lbc.namespace)
                    .service_account(&lbc.service_account)
                    .role_arn(&arn)
                    .set_tags(Some(tags))
                    .send()
                    .await
                    .map_err(error::aws)
                    .context(format!("associating {subject} with IAM role {arn}"))?;
                let id = out.association().and_then(|a| a.association_id()).unwrap_or_default().to_string();
                record.update(|r| r.pod_identity_association = Some(Owned { id: id.clone(), created: true })).await?;
                env.progress.done(&format!("associated {subject} with IAM role {arn} ({id})"));
            }
            Some(f) => {
                let (id, created) = (f.id.clone(), f.tagged_ours);
                record.update(|r| r.pod_identity_association = Some(Owned { id: id.clone(), created })).await?;
                if f.role_arn != arn {
                    eks.update_pod_identity_association()
                        .cluster_name(&env.facts.name)
                        .association_id(&id)
                        .role_arn(&arn)
                        .send()
                        .await
                        .map_err(error::aws)
                        .context(format!("pointing pod identity association {id} at {arn}"))?;
                    env.progress.done(&format!("pointed pod identity association {id} at IAM role {arn}"));
                }
            }
        }
        Ok(())
    }

    async fn checks(&self, env: &Env) -> Vec<Check> {
        let c = Category::Iam;
        if env.spec.lb_controller.external {
            return vec![Check::skip(
                c,
                "iam.pod-identity-association",
                "managed outside this tool (--skip-lb-controller)",
            )];
        }
        if !Self::wanted(env) {
            return vec![]; // IRSA: nothing of Pod Identity's to check
        }
        let subject = Self::subject(env);
        let arn = env.role_arn();
        vec![match self.found() {
            None => Check::fail(
                c,
                "iam.pod-identity-association",
                format!(
                    "ServiceAccount {subject} has no pod identity association: the controller gets no AWS credentials"
                ),
            )
            .hint("re-run install to create it (and restart the controller)"),
            Some(f) if f.role_arn != arn => Check::fail(
                c,
                "iam.pod-identity-association",
                format!("pod identity association {} gives {subject} role {}, not {arn}", f.id, f.role_arn),
            )
            .hint("re-run install (with --adopt for an association this tool did not make)"),
            Some(f) => Check::pass(
                c,
                "iam.pod-identity-association",
                format!("pod identity association {} gives {subject} role {arn}", f.id),
            ),
        }]
    }

    fn removal(&self, env: &Env) -> Result<Vec<Action>> {
        let id = self.found().map(|f| f.id.clone()).unwrap_or_default();
        Ok(match self.fate(env) {
            Fate::Remove(()) => {
                vec![Action::aws(Verb::Delete, "eks:DeletePodIdentityAssociation", &id).because(Self::subject(env))]
            }
            kept => Action::kept("aws", "eks:PodIdentityAssociation", id, &kept).into_iter().collect(),
        })
    }

    async fn remove(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        match self.fate(env) {
            Fate::Defer(_) => return Ok(()),
            Fate::Remove(()) => {
                let id = self.found().map(|f| f.id.clone()).unwrap_or_default();
                Self::delete(env, &id).await?;
            }
            Fate::Absent | Fate::Keep(_) => {}
        }
        record.update(|r| r.pod_identity_association = None).await
    }
}
