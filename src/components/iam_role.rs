//! The controller's IAM role: with IRSA trusted only by the cluster's OIDC
//! provider, only for the controller's ServiceAccount and only for STS; with
//! EKS Pod Identity only by the agent's service principal (the association
//! names the ServiceAccount); the controller's policy attached, tagged as this
//! tool's. Switching `--identity` sets the trust of the other way. A role taken over
//! with `--adopt` is given back on uninstall as install found it, as far as
//! its own tags (written with each change) prove the change was install's:
//! the trust policy install replaced (the record holds it; the tag holds its
//! digest) and the controller's policy install attached.

use async_trait::async_trait;

use crate::component::Env;
use crate::component::{Action, Category, Check, Component, Fate, Verb};
use crate::error::{self, Context, Error, Result};
use crate::ownership;
use crate::pins::{ADOPTED_POLICY_TAG_KEY, ADOPTED_TRUST_TAG_KEY, POD_IDENTITY_ACTIONS, POD_IDENTITY_PRINCIPAL};
use crate::policy;
use crate::record::{AdoptedRole, Owned, Recorder};
use crate::spec::Identity;

use super::{iam_tags, iam_tags_ours, sha256_hex};

#[derive(Default)]
pub struct IamRole {
    seen: Option<Seen>,
}

struct Seen {
    exists: bool,
    tagged_ours: bool,
    trust_problems: Vec<String>,
    /// The trust policy as IAM holds it (percent-decoded text).
    trust_text: Option<String>,
    attached: Vec<String>,
    /// This tool's adoption marks: the digest of the trust policy it replaced, and
    /// whether it attached the controller's policy.
    adopted_trust: Option<String>,
    adopted_policy: bool,
}

impl IamRole {
    fn subject(env: &Env) -> String {
        policy::service_account_subject(&env.spec.lb_controller.namespace, &env.spec.lb_controller.service_account)
    }

    fn trust(env: &Env) -> serde_json::Value {
        match env.spec.lb_controller.identity {
            Identity::Irsa => {
                policy::trust_policy(&env.facts.oidc_provider_arn(), env.facts.issuer_host_path(), &Self::subject(env))
            }
            Identity::PodIdentity => policy::pod_identity_trust_policy(),
        }
    }

    fn trust_problems(env: &Env, doc: &serde_json::Value) -> Vec<String> {
        let lbc = &env.spec.lb_controller;
        match lbc.identity {
            Identity::Irsa => policy::trust_problems(
                doc,
                &env.facts.oidc_provider_arn(),
                env.facts.issuer_host_path(),
                &Self::subject(env),
            ),
            Identity::PodIdentity => {
                policy::pod_identity_trust_problems(doc, &env.facts.name, &lbc.namespace, &lbc.service_account)
            }
        }
    }

    /// Who may assume the role, in words.
    fn trusted_by(env: &Env) -> String {
        match env.spec.lb_controller.identity {
            Identity::Irsa => {
                format!("{} for {} (aud {})", env.facts.issuer_host_path(), Self::subject(env), policy::AUDIENCE)
            }
            Identity::PodIdentity => format!("{POD_IDENTITY_PRINCIPAL} ({})", POD_IDENTITY_ACTIONS.join(", ")),
        }
    }

    async fn set_trust(env: &Env, document: &str) -> Result<()> {
        let name = &env.spec.iam.role_name;
        env.aws()
            .iam
            .update_assume_role_policy()
            .role_name(name)
            .policy_document(document)
            .send()
            .await
            .map_err(error::aws)
            .context(format!("setting the trust policy of IAM role {name}"))?;
        Ok(())
    }

    async fn detach(env: &Env, policy_arn: &str) -> Result<()> {
        let name = &env.spec.iam.role_name;
        env.aws()
            .iam
            .detach_role_policy()
            .role_name(name)
            .policy_arn(policy_arn)
            .send()
            .await
            .map_err(error::aws)
            .context(format!("detaching {policy_arn} from IAM role {name}"))?;
        Ok(())
    }

    async fn tag(env: &Env, key: &str, value: &str) -> Result<()> {
        let name = &env.spec.iam.role_name;
        let tag = aws_sdk_iam::types::Tag::builder().key(key).value(value).build().expect("key and value are set");
        env.aws()
            .iam
            .tag_role()
            .role_name(name)
            .tags(tag)
            .send()
            .await
            .map_err(error::aws)
            .context(format!("tagging IAM role {name}"))
            .map(drop)
    }

    async fn untag(env: &Env, keys: &[&str]) -> Result<()> {
        let name = &env.spec.iam.role_name;
        env.aws()
            .iam
            .untag_role()
            .role_name(name)
            .set_tag_keys(Some(keys.iter().map(|k| k.to_string()).collect()))
            .send()
            .await
            .map_err(error::aws)
            .context(format!("untagging IAM role {name}"))
            .map(drop)
    }

    /// What an adopting install changes on a role it did not create, kept
    /// from the first run that changed it (a re-run sees it already changed).
    fn adoption(seen: &Seen, env: &Env, before: Option<&AdoptedRole>) -> AdoptedRole {
        let trust_before = match before.and_then(|b| b.trust_before.clone()) {
            Some(t) => Some(t),
            None if !seen.trust_problems.is_empty() => seen.trust_text.clone(),
            None => None,
        };
        AdoptedRole {
            trust_before,
            attached_policy: before.is_some_and(|b| b.attached_policy) || !seen.attached.contains(&env.policy_arn()),
        }
    }

    /// The adopted role's changes to undo, as far as its own tags prove them install's:
    /// (the trust policy to restore, the policy to detach). The trust goes back only
    /// while it is still the one install set, and only to a document whose digest the
    /// role's tag holds; the policy only when the tag says install attached it.
    fn to_give_back(&self, env: &Env) -> (Option<String>, Option<String>) {
        let seen = self.seen.as_ref().expect("observed");
        let recorded = env.record.adopted_role.as_ref();
        let restore = recorded
            .and_then(|a| a.trust_before.clone())
            .filter(|t| seen.trust_problems.is_empty() && seen.trust_text.as_ref() != Some(t))
            .filter(|t| seen.adopted_trust.as_deref() == Some(sha256_hex(t.as_bytes()).as_str()));
        let policy_arn = env.policy_arn();
        let detach = (seen.adopted_policy && seen.attached.contains(&policy_arn)).then_some(policy_arn);
        (restore, detach)
    }

    /// Uninstall's one decision: delete ours; give an adopted role back what its own
    /// tags prove install changed; leave anything else; keep them while the controller stays.
    fn fate(&self, env: &Env) -> Fate<Undo> {
        let Some(seen) = self.seen.as_ref().filter(|s| s.exists) else {
            return Fate::Absent;
        };
        let undo = if self.created_by_us() {
            Undo::Delete
        } else if seen.adopted_trust.is_some() || seen.adopted_policy {
            Undo::GiveBack
        } else if Owned::claimed(env.record.iam_role.as_ref()) || env.record.adopted_role.is_some() {
            return Fate::Keep(ownership::unproven(true, false).unwrap_or_default());
        } else {
            return Fate::Keep("not created by this tool".into());
        };
        match &env.shared.iam {
            Some(kept) => Fate::kept(kept),
            None => Fate::Remove(undo),
        }
    }

    /// Only this tool's tags (for this cluster) prove it created the role.
    fn created_by_us(&self) -> bool {
        self.seen.as_ref().is_some_and(|s| s.tagged_ours)
    }
}

/// What removing the role takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undo {
    Delete,
    /// Adopted: the role stays; the policy install attached and the trust it replaced go back.
    GiveBack,
}

#[async_trait]
impl Component for IamRole {
    fn name(&self) -> &'static str {
        "IAM role"
    }

    fn category(&self) -> Category {
        Category::Iam
    }

    fn shared(&self) -> bool {
        true
    }

    async fn observe(&mut self, env: &Env) -> Result<()> {
        let iam = &env.aws().iam;
        let name = &env.spec.iam.role_name;
        let seen = match iam.get_role().role_name(name).send().await {
            Ok(out) => {
                let role = out.role();
                let raw = role.and_then(|r| r.assume_role_policy_document());
                let doc = raw.map(policy::decode_document);
                let trust_problems = match doc {
                    Some(Ok(doc)) => Self::trust_problems(env, &doc),
                    Some(Err(e)) => vec![e],
                    None => vec!["no trust policy".into()],
                };
                let attached = iam
                    .list_attached_role_policies()
                    .role_name(name)
                    .send()
                    .await
                    .map_err(error::aws)
                    .context("listing the role's policies")?
                    .attached_policies()
                    .iter()
                    .filter_map(|p| p.policy_arn().map(str::to_string))
                    .collect();
                let tags = role.map(|r| r.tags()).unwrap_or_default();
                let tag = |key: &str| tags.iter().find(|t| t.key() == key).map(|t| t.value().to_string());
                Seen {
                    exists: true,
                    tagged_ours: iam_tags_ours(tags, &env.facts.name),
                    trust_problems,
                    trust_text: raw.and_then(|t| policy::decode_text(t).ok()),
                    attached,
                    adopted_trust: tag(ADOPTED_TRUST_TAG_KEY),
                    adopted_policy: tag(ADOPTED_POLICY_TAG_KEY).as_deref() == Some("true"),
                }
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_entity_exception()) => Seen {
                exists: false,
                tagged_ours: false,
                trust_problems: vec![],
                trust_text: None,
                attached: vec![],
                adopted_trust: None,
                adopted_policy: false,
            },
            Err(e) => return Err(error::aws(e)).context(format!("reading IAM role {name}")),
        };
        self.seen = Some(seen);
        Ok(())
    }

    fn plan(&self, env: &Env) -> Result<Vec<Action>> {
        if env.spec.lb_controller.external {
            return Ok(vec![]); // --skip-lb-controller: the controller's IAM is not this tool's
        }
        let seen = self.seen.as_ref().expect("observed");
        let name = &env.spec.iam.role_name;
        let policy_arn = env.policy_arn();
        if !seen.exists {
            return Ok(vec![
                Action::aws(Verb::Create, "iam:CreateRole", name)
                    .because(format!("trusted by {}", Self::trusted_by(env)))
                    .with_detail(Self::trust(env)),
                Action::aws(Verb::Update, "iam:AttachRolePolicy", name).because(policy_arn),
            ]);
        }
        if !self.created_by_us() && !env.options.adopt {
            return Err(Error::prerequisite(format!(
                "IAM role {name} already exists and was not created by this tool"
            ))
            .hint(
                "pass --adopt to take it over (its trust policy will be set), or --iam-role-name to create another",
            ));
        }
        let mut actions = vec![];
        if !seen.trust_problems.is_empty() {
            actions.push(
                Action::aws(Verb::Update, "iam:UpdateAssumeRolePolicy", name)
                    .because(seen.trust_problems.join("; "))
                    .with_detail(Self::trust(env)),
            );
        }
        if !seen.attached.contains(&policy_arn) {
            actions.push(Action::aws(Verb::Update, "iam:AttachRolePolicy", name).because(policy_arn));
        }
        Ok(actions)
    }

    async fn apply(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        if env.spec.lb_controller.external {
            return Ok(());
        }
        let seen = self.seen.as_ref().expect("observed");
        let iam = &env.aws().iam;
        let name = &env.spec.iam.role_name;
        let trust = serde_json::to_string(&Self::trust(env)).context("rendering the trust policy")?;
        let created = !seen.exists || self.created_by_us();
        let adopted = (!created).then(|| Self::adoption(seen, env, record.record.adopted_role.as_ref()));
        record
            .update(|r| {
                r.iam_role = Some(Owned { id: name.clone(), created });
                r.adopted_role = adopted.clone();
            })
            .await?;
        if !seen.exists {
            iam.create_role()
                .role_name(name)
                .assume_role_policy_document(&trust)
                .description(format!(
                    "AWS Load Balancer Controller ({}, kubectl scalardb-graphql)",
                    env.spec.lb_controller.identity.as_str()
                ))
                .set_tags(Some(iam_tags(&env.facts.name, &[])))
                .send()
                .await
                .map_err(error::aws)
                .context(format!("creating IAM role {name}"))?;
            env.progress.done(&format!("created IAM role {name}"));
        } else if !seen.trust_problems.is_empty() {
            // The mark first: the trust it replaces can then always be given back.
            if !created && seen.adopted_trust.is_none() {
                let before = adopted.as_ref().and_then(|a| a.trust_before.clone()).unwrap_or_default();
                Self::tag(env, ADOPTED_TRUST_TAG_KEY, &sha256_hex(before.as_bytes())).await?;
            }
            Self::set_trust(env, &trust).await?;
            env.progress.done(&format!("set the trust policy of IAM role {name}"));
        }
        let policy_arn = env.policy_arn();
        if !seen.attached.contains(&policy_arn) {
            if !created && !seen.adopted_policy {
                Self::tag(env, ADOPTED_POLICY_TAG_KEY, "true").await?;
            }
            iam.attach_role_policy()
                .role_name(name)
                .policy_arn(&policy_arn)
                .send()
                .await
                .map_err(error::aws)
                .context(format!("attaching {policy_arn} to IAM role {name}"))?;
            env.progress.done(&format!("attached {} to IAM role {name}", env.spec.iam.policy_name));
        }
        Ok(())
    }

    async fn checks(&self, env: &Env) -> Vec<Check> {
        let seen = self.seen.as_ref().expect("observed");
        let c = Category::Iam;
        if env.spec.lb_controller.external {
            return vec![
                Check::skip(c, "iam.role", "managed outside this tool (--skip-lb-controller)"),
                Check::skip(c, "iam.role-trust", "managed outside this tool (--skip-lb-controller)"),
                Check::skip(c, "iam.policy-attached", "managed outside this tool (--skip-lb-controller)"),
            ];
        }
        let name = &env.spec.iam.role_name;
        if !seen.exists {
            return vec![
                Check::fail(c, "iam.role", format!("IAM role {name} does not exist"))
                    .hint("run `kubectl scalardb-graphql install`"),
                Check::skip(c, "iam.role-trust", "trust policy not checked: no role"),
                Check::skip(c, "iam.policy-attached", "attachment not checked: no role"),
            ];
        }
        let policy_arn = env.policy_arn();
        vec![
            Check::pass(c, "iam.role", format!("IAM role {name} exists")),
            if seen.trust_problems.is_empty() {
                Check::pass(c, "iam.role-trust", format!("trust is limited to {}", Self::trusted_by(env)))
            } else {
                Check::fail(
                    c,
                    "iam.role-trust",
                    format!("IAM role {name} trust policy is wrong: {}", seen.trust_problems.join("; ")),
                )
                .hint("re-run install to set the exact trust policy")
            },
            Check::expect(
                c,
                "iam.policy-attached",
                seen.attached.contains(&policy_arn),
                format!("policy {} is attached", env.spec.iam.policy_name),
                format!("policy {policy_arn} is not attached to IAM role {name}"),
            )
            .hint("re-run install to attach it"),
        ]
    }

    fn removal(&self, env: &Env) -> Result<Vec<Action>> {
        let seen = self.seen.as_ref().expect("observed");
        let name = &env.spec.iam.role_name;
        Ok(match self.fate(env) {
            Fate::Remove(Undo::GiveBack) => {
                let (restore, detach) = self.to_give_back(env);
                let mut a: Vec<_> = detach
                    .map(|p| {
                        Action::aws(Verb::Delete, "iam:DetachRolePolicy", name)
                            .because(format!("attached by install: {p}"))
                    })
                    .into_iter()
                    .collect();
                if restore.is_some() {
                    a.push(
                        Action::aws(Verb::Update, "iam:UpdateAssumeRolePolicy", name)
                            .because("restore the trust policy it had before --adopt"),
                    );
                }
                a.push(Action::keep("aws", "iam:Role", name, "not created by this tool"));
                a
            }
            Fate::Remove(Undo::Delete) => {
                let mut a: Vec<_> = seen
                    .attached
                    .iter()
                    .map(|p| Action::aws(Verb::Delete, "iam:DetachRolePolicy", name).because(p.clone()))
                    .collect();
                a.push(Action::aws(Verb::Delete, "iam:DeleteRole", name));
                a
            }
            kept => Action::kept("aws", "iam:Role", name, &kept).into_iter().collect(),
        })
    }

    async fn remove(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        let seen = self.seen.as_ref().expect("observed");
        let iam = &env.aws().iam;
        let name = &env.spec.iam.role_name;
        let fate = self.fate(env);
        if matches!(fate, Fate::Defer(_)) {
            return Ok(());
        }
        if fate == Fate::Remove(Undo::GiveBack) {
            let (restore, detach) = self.to_give_back(env);
            if let Some(p) = &detach {
                Self::detach(env, p).await?;
                env.progress.done(&format!("detached {} from IAM role {name}", env.spec.iam.policy_name));
            }
            if let Some(trust) = &restore {
                Self::set_trust(env, trust).await?;
                env.progress.done(&format!("restored the trust policy IAM role {name} had before --adopt"));
            }
            Self::untag(env, &[ADOPTED_TRUST_TAG_KEY, ADOPTED_POLICY_TAG_KEY]).await?;
        } else if fate == Fate::Remove(Undo::Delete) {
            for p in &seen.attached {
                Self::detach(env, p).await?;
            }
            iam.delete_role()
                .role_name(name)
                .send()
                .await
                .map_err(error::aws)
                .context(format!("deleting IAM role {name}"))?;
            env.progress.done(&format!("deleted IAM role {name}"));
        }
        record
            .update(|r| {
                r.iam_role = None;
                r.adopted_role = None;
            })
            .await
    }
}
