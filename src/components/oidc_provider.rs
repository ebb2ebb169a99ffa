//! The cluster's IAM OIDC provider, which lets IAM trust the cluster's
//! ServiceAccount tokens (IRSA). Created only when missing, and then tagged
//! as this tool's; a provider that was already there is used and never removed.
//! With EKS Pod Identity none is needed: an install that switches from IRSA
//! removes the one it created, as uninstall would (no other role trusting it).

use async_trait::async_trait;

use crate::component::Env;
use crate::component::{Action, Category, Check, Component, Fate, Verb};
use crate::error::{self, Context, Error, Result};
use crate::ownership;
use crate::policy::{self, AUDIENCE};
use crate::record::{Owned, Recorder};
use crate::spec::Identity;

use super::{iam_tags, iam_tags_ours, owned_iam_fate};

#[derive(Default)]
pub struct OidcProvider {
    seen: Option<Seen>,
}

struct Seen {
    arn: String,
    exists: bool,
    tagged_ours: bool,
    has_audience: bool,
    /// Uninstall: roles other than the controller's that trust the provider.
    trusted_by: Vec<String>,
}

impl OidcProvider {
    /// Uninstall's one decision: ours goes unless the controller's IAM stays or
    /// another role trusts it (IRSA roles of other workloads need it).
    fn fate(&self, env: &Env) -> Fate {
        let seen = self.seen.as_ref();
        match owned_iam_fate(seen.is_some_and(|s| s.exists), self.unproven(env), env) {
            Fate::Remove(()) if seen.is_some_and(|s| !s.trusted_by.is_empty()) => {
                Fate::Keep(format!("roles {} trust it", seen.map(|s| s.trusted_by.join(", ")).unwrap_or_default()))
            }
            fate => fate,
        }
    }

    /// Whether the controller's credentials need it (IRSA).
    fn wanted(env: &Env) -> bool {
        env.spec.lb_controller.identity == Identity::Irsa
    }

    /// Only this tool's tags (for this cluster) prove it created the provider.
    fn created_by_us(&self) -> bool {
        self.seen.as_ref().is_some_and(|s| s.tagged_ours)
    }

    fn unproven(&self, env: &Env) -> Option<String> {
        ownership::unproven(Owned::claimed(env.record.oidc_provider.as_ref()), self.created_by_us())
    }

    /// Roles, other than ours, whose trust policy names the provider.
    async fn other_trusting_roles(&self, env: &Env, arn: &str) -> Result<Vec<String>> {
        let mut found = Vec::new();
        let mut pages = env.aws().iam.list_roles().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(error::aws).context("listing IAM roles")?;
            for role in page.roles() {
                if role.role_name() == env.spec.iam.role_name {
                    continue;
                }
                let trusts = role
                    .assume_role_policy_document()
                    .and_then(|d| policy::decode_document(d).ok())
                    .is_some_and(|doc| policy::trusts_provider(&doc, arn));
                if trusts {
                    found.push(role.role_name().to_string());
                }
            }
        }
        Ok(found)
    }
}

#[async_trait]
impl Component for OidcProvider {
    fn name(&self) -> &'static str {
        "IAM OIDC provider"
    }

    fn category(&self) -> Category {
        Category::Iam
    }

    fn shared(&self) -> bool {
        true
    }

    async fn observe(&mut self, env: &Env) -> Result<()> {
        let arn = env.facts.oidc_provider_arn();
        if env.options.mode == crate::spec::Mode::Status && !Self::wanted(env) {
            // Status checks nothing of IRSA's under Pod Identity (nor of a controller managed elsewhere).
            self.seen = Some(Seen { arn, exists: false, tagged_ours: false, has_audience: false, trusted_by: vec![] });
            return Ok(());
        }
        let seen = match env.aws().iam.get_open_id_connect_provider().open_id_connect_provider_arn(&arn).send().await {
            Ok(out) => {
                let tagged_ours = iam_tags_ours(out.tags(), &env.facts.name);
                // Only what uninstall (or a switch to Pod Identity) may delete is worth listing every role for.
                let may_remove = env.options.mode == crate::spec::Mode::Uninstall
                    || (env.options.mode == crate::spec::Mode::Install && !Self::wanted(env));
                let trusted_by =
                    if tagged_ours && may_remove { self.other_trusting_roles(env, &arn).await? } else { vec![] };
                Seen {
                    exists: true,
                    tagged_ours,
                    has_audience: out.client_id_list().iter().any(|c| c == AUDIENCE),
                    trusted_by,
                    arn,
                }
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_entity_exception()) => {
                Seen { arn, exists: false, tagged_ours: false, has_audience: false, trusted_by: vec![] }
            }
            Err(e) => return Err(error::aws(e)).context("reading the IAM OIDC provider"),
        };
        self.seen = Some(seen);
        Ok(())
    }

    fn plan(&self, env: &Env) -> Result<Vec<Action>> {
        if env.spec.lb_controller.external {
            return Ok(vec![]); // --skip-lb-controller: the controller's IAM is not this tool's
        }
        if !Self::wanted(env) {
            // Switched to Pod Identity: ours goes as uninstall would let it go; anything else stays, silently.
            return Ok(match self.fate(env) {
                Fate::Remove(()) => self.removal(env)?,
                _ => vec![],
            });
        }
        if env.facts.issuer.is_empty() {
            return Err(Error::prerequisite(format!("EKS cluster {:?} has no OIDC issuer", env.facts.name))
                .hint("the cluster must have an OIDC issuer for IRSA (every EKS cluster since 1.13 does)"));
        }
        let seen = self.seen.as_ref().expect("observed");
        Ok(if !seen.exists {
            vec![
                Action::aws(Verb::Create, "iam:CreateOpenIDConnectProvider", &env.facts.issuer)
                    .because(format!("client id {AUDIENCE}")),
            ]
        } else if !seen.has_audience {
            vec![
                Action::aws(Verb::Update, "iam:AddClientIDToOpenIDConnectProvider", &seen.arn)
                    .because(format!("add client id {AUDIENCE}")),
            ]
        } else {
            vec![]
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
        let iam = &env.aws().iam;
        if !seen.exists {
            record.update(|r| r.oidc_provider = Some(Owned { id: seen.arn.clone(), created: true })).await?;
            iam.create_open_id_connect_provider()
                .url(&env.facts.issuer)
                .client_id_list(AUDIENCE)
                .set_tags(Some(iam_tags(&env.facts.name, &[])))
                .send()
                .await
                .map_err(error::aws)
                .context("creating the IAM OIDC provider")?;
            env.progress.done(&format!("created IAM OIDC provider {}", seen.arn));
        } else {
            let created = self.created_by_us();
            record.update(|r| r.oidc_provider = Some(Owned { id: seen.arn.clone(), created })).await?;
            if !seen.has_audience {
                iam.add_client_id_to_open_id_connect_provider()
                    .open_id_connect_provider_arn(&seen.arn)
                    .client_id(AUDIENCE)
                    .send()
                    .await
                    .map_err(error::aws)
                    .context("adding sts.amazonaws.com to the OIDC provider")?;
                env.progress.done(&format!("added client id {AUDIENCE} to {}", seen.arn));
            }
        }
        Ok(())
    }

    /// Switched to Pod Identity: ours goes, as uninstall would let it go, once the controller runs with the association.
    async fn retire(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        match self.fate(env) {
            Fate::Remove(()) if !Self::wanted(env) && !env.spec.lb_controller.external => {
                self.remove(env, record).await
            }
            _ => Ok(()),
        }
    }

    async fn checks(&self, env: &Env) -> Vec<Check> {
        let seen = self.seen.as_ref().expect("observed");
        if env.spec.lb_controller.external {
            return vec![Check::skip(
                Category::Iam,
                "iam.oidc-provider",
                "managed outside this tool (--skip-lb-controller)",
            )];
        }
        if !Self::wanted(env) {
            return vec![]; // EKS Pod Identity needs no OIDC provider
        }
        let owner = if self.created_by_us() { "created by this tool" } else { "pre-existing" };
        vec![if !seen.exists {
            Check::fail(
                Category::Iam,
                "iam.oidc-provider",
                format!("no IAM OIDC provider for issuer {}", env.facts.issuer),
            )
            .hint("run `kubectl scalardb-graphql install` (or eksctl utils associate-iam-oidc-provider)")
        } else if !seen.has_audience {
            Check::fail(
                Category::Iam,
                "iam.oidc-provider",
                format!("OIDC provider {} does not accept audience {AUDIENCE}", seen.arn),
            )
            .hint("re-run install to add the client id")
        } else {
            Check::pass(
                Category::Iam,
                "iam.oidc-provider",
                format!("OIDC provider for {} exists ({owner})", env.facts.issuer_host_path()),
            )
        }]
    }

    fn removal(&self, env: &Env) -> Result<Vec<Action>> {
        let seen = self.seen.as_ref().expect("observed");
        Ok(match self.fate(env) {
            Fate::Remove(()) => vec![Action::aws(Verb::Delete, "iam:DeleteOpenIDConnectProvider", &seen.arn)],
            kept => Action::kept("aws", "iam:OpenIDConnectProvider", &seen.arn, &kept).into_iter().collect(),
        })
    }

    async fn remove(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        let seen = self.seen.as_ref().expect("observed");
        match self.fate(env) {
            Fate::Defer(_) => return Ok(()),
            Fate::Remove(()) => {
                env.aws()
                    .iam
                    .delete_open_id_connect_provider()
                    .open_id_connect_provider_arn(&seen.arn)
                    .send()
                    .await
                    .map_err(error::aws)
                    .context("deleting the IAM OIDC provider")?;
                env.progress.done(&format!("deleted IAM OIDC provider {}", seen.arn));
            }
            Fate::Absent | Fate::Keep(_) => {}
        }
        record.update(|r| r.oidc_provider = None).await
    }
}
