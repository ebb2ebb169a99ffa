//! The AWS Load Balancer Controller's IAM policy: the upstream document of
//! the pinned controller version, fetched at install time and checked
//! against its pinned sha256 (or a document from --iam-policy-file), created
//! under the guide's name and tagged with the document's version.

use std::time::Duration;

use async_trait::async_trait;

use crate::component::Env;
use crate::component::{Action, Category, Check, Component, Fate, Verb};
use crate::error::{self, Context, Error, Result};
use crate::ownership;
use crate::pins::{IAM_POLICY, POLICY_VERSION_TAG_KEY};
use crate::policy::{self, PolicyDocument};
use crate::record::{Owned, Recorder};

use super::{iam_tags, iam_tags_ours, owned_iam_fate, sha256_hex};

/// The pinned upstream document, verified byte for byte by its digest.
async fn fetch_pinned() -> Result<PolicyDocument> {
    let client = crate::http::HttpClient::new(Duration::from_secs(30))?;
    let res = client.get(IAM_POLICY.url).await.map_err(|e| {
        Error::prerequisite(format!("cannot fetch the controller's IAM policy from {}: {e}", IAM_POLICY.url))
            .hint("without internet access, download it elsewhere and pass --iam-policy-file")
    })?;
    let digest = sha256_hex(&res.body);
    if res.status != 200 || digest != IAM_POLICY.sha256 {
        return Err(Error::prerequisite(format!(
            "the IAM policy at {} does not match the pinned digest (HTTP {}, {} bytes, sha256 {digest}; expected {} bytes, sha256 {})",
            IAM_POLICY.url, res.status, res.body.len(), IAM_POLICY.bytes, IAM_POLICY.sha256
        ))
        .hint("check for a proxy rewriting the download, or pass --iam-policy-file"));
    }
    Ok(PolicyDocument { text: String::from_utf8_lossy(&res.body).into_owned(), label: IAM_POLICY.version.to_string() })
}

/// The versions of a policy other than its default one.
async fn old_versions(iam: &aws_sdk_iam::Client, arn: &str) -> Result<Vec<aws_sdk_iam::types::PolicyVersion>> {
    let out = iam
        .list_policy_versions()
        .policy_arn(arn)
        .send()
        .await
        .map_err(error::aws)
        .context("listing policy versions")?;
    Ok(out.versions().iter().filter(|v| !v.is_default_version()).cloned().collect())
}

async fn delete_version(iam: &aws_sdk_iam::Client, arn: &str, v: &aws_sdk_iam::types::PolicyVersion) -> Result<()> {
    iam.delete_policy_version()
        .policy_arn(arn)
        .version_id(v.version_id().unwrap_or_default())
        .send()
        .await
        .map_err(error::aws)
        .context("deleting an old policy version")
        .map(drop)
}

#[derive(Default)]
pub struct IamPolicy {
    seen: Option<Seen>,
}

struct Seen {
    arn: String,
    exists: bool,
    tagged_ours: bool,
    /// The version tag, when this tool created it.
    label: Option<String>,
    /// What the default version does not allow of what the pinned document allows (the controller's calls).
    missing: Vec<&'static str>,
}

impl IamPolicy {
    fn desired_label(env: &Env) -> Result<String> {
        Ok(match &env.options.iam_policy {
            Some(file) => file.document.label.clone(),
            None => IAM_POLICY.version.to_string(),
        })
    }

    async fn document(env: &Env) -> Result<PolicyDocument> {
        match &env.options.iam_policy {
            Some(file) => Ok(file.document.clone()),
            None => fetch_pinned().await,
        }
    }

    /// Uninstall's one decision.
    fn fate(&self, env: &Env) -> Fate {
        owned_iam_fate(self.seen.as_ref().is_some_and(|s| s.exists), self.unproven(env), env)
    }

    /// Only this tool's tags (for this cluster) prove it created the policy.
    fn created_by_us(&self) -> bool {
        self.seen.as_ref().is_some_and(|s| s.tagged_ours)
    }

    fn unproven(&self, env: &Env) -> Option<String> {
        ownership::unproven(Owned::claimed(env.record.iam_policy.as_ref()), self.created_by_us())
    }
}

#[async_trait]
impl Component for IamPolicy {
    fn name(&self) -> &'static str {
        "IAM policy"
    }

    fn category(&self) -> Category {
        Category::Iam
    }

    fn shared(&self) -> bool {
        true
    }

    async fn observe(&mut self, env: &Env) -> Result<()> {
        let arn = env.policy_arn();
        let iam = &env.aws().iam;
        let seen = match iam.get_policy().policy_arn(&arn).send().await {
            Ok(out) => {
                let p = out.policy();
                let tags = p.map(|p| p.tags()).unwrap_or_default();
                let label = tags.iter().find(|t| t.key() == POLICY_VERSION_TAG_KEY).map(|t| t.value().to_string());
                let mut missing = vec![];
                if let Some(version) = p.and_then(|p| p.default_version_id()) {
                    let doc = iam
                        .get_policy_version()
                        .policy_arn(&arn)
                        .version_id(version)
                        .send()
                        .await
                        .map_err(error::aws)
                        .context("reading the IAM policy document")?;
                    if let Some(doc) =
                        doc.policy_version().and_then(|v| v.document()).and_then(|d| policy::decode_document(d).ok())
                    {
                        missing = policy::missing_actions(&doc);
                    }
                }
                Seen { tagged_ours: iam_tags_ours(tags, &env.facts.name), label, missing, exists: true, arn }
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_entity_exception()) => {
                Seen { arn, exists: false, tagged_ours: false, label: None, missing: vec![] }
            }
            Err(e) => return Err(error::aws(e)).context("reading the IAM policy"),
        };
        self.seen = Some(seen);
        Ok(())
    }

    fn plan(&self, env: &Env) -> Result<Vec<Action>> {
        if env.spec.lb_controller.external {
            return Ok(vec![]); // --skip-lb-controller: the controller's IAM is not this tool's
        }
        let seen = self.seen.as_ref().expect("observed");
        let desired = Self::desired_label(env)?;
        let source = match &env.options.iam_policy {
            Some(file) => format!("document {desired} from {}", file.path.display()),
            None => format!("document {desired} from {} (sha256 {})", IAM_POLICY.url, &IAM_POLICY.sha256[..16]),
        };
        if !seen.exists {
            return Ok(vec![Action::aws(Verb::Create, "iam:CreatePolicy", &env.spec.iam.policy_name).because(source)]);
        }
        if !self.created_by_us() {
            if !env.options.adopt {
                return Err(Error::prerequisite(format!(
                    "IAM policy {} already exists and was not created by this tool",
                    seen.arn
                ))
                .hint("pass --adopt to use it as it is, or --iam-policy-name to create another"));
            }
            return Ok(vec![]);
        }
        Ok(if seen.label.as_deref() != Some(desired.as_str()) {
            vec![
                Action::aws(Verb::Update, "iam:CreatePolicyVersion", &seen.arn)
                    .because(format!("{} → {source}", seen.label.as_deref().unwrap_or("unknown version"))),
            ]
        } else {
            vec![]
        })
    }

    async fn apply(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        if env.spec.lb_controller.external {
            return Ok(());
        }
        let seen = self.seen.as_ref().expect("observed");
        let iam = &env.aws().iam;
        let created = !seen.exists || self.created_by_us();
        record.update(|r| r.iam_policy = Some(Owned { id: seen.arn.clone(), created })).await?;
        if !created {
            return Ok(()); // adopted: used as it is
        }
        let doc = Self::document(env).await?;
        if !seen.exists {
            iam.create_policy()
                .policy_name(&env.spec.iam.policy_name)
                .policy_document(&doc.text)
                .description("AWS Load Balancer Controller (kubectl scalardb-graphql)")
                .set_tags(Some(iam_tags(&env.facts.name, &[(POLICY_VERSION_TAG_KEY, &doc.label)])))
                .send()
                .await
                .map_err(error::aws)
                .context("creating the IAM policy")?;
            env.progress.done(&format!("created IAM policy {} ({})", seen.arn, doc.label));
        } else if seen.label.as_deref() != Some(doc.label.as_str()) {
            // IAM keeps at most five versions: drop the oldest non-default one first.
            let old = old_versions(iam, &seen.arn).await?;
            if old.len() >= 4
                && let Some(oldest) = old.iter().min_by_key(|v| v.create_date().map(|d| d.secs()))
            {
                delete_version(iam, &seen.arn, oldest).await?;
            }
            iam.create_policy_version()
                .policy_arn(&seen.arn)
                .policy_document(&doc.text)
                .set_as_default(true)
                .send()
                .await
                .map_err(error::aws)
                .context("updating the IAM policy")?;
            iam.tag_policy()
                .policy_arn(&seen.arn)
                .set_tags(Some(iam_tags(&env.facts.name, &[(POLICY_VERSION_TAG_KEY, &doc.label)])))
                .send()
                .await
                .map_err(error::aws)
                .context("tagging the IAM policy")?;
            env.progress.done(&format!("updated IAM policy {} to {}", seen.arn, doc.label));
        }
        Ok(())
    }

    async fn checks(&self, env: &Env) -> Vec<Check> {
        let seen = self.seen.as_ref().expect("observed");
        let c = Category::Iam;
        if env.spec.lb_controller.external {
            return vec![Check::skip(c, "iam.policy", "managed outside this tool (--skip-lb-controller)")];
        }
        if !seen.exists {
            return vec![
                Check::fail(c, "iam.policy", format!("IAM policy {} does not exist", seen.arn))
                    .hint("run `kubectl scalardb-graphql install`"),
            ];
        }
        let version = seen.label.clone().unwrap_or_else(|| "not created by this tool, version unknown".into());
        let check = if !seen.missing.is_empty() {
            let shown: Vec<&str> = seen.missing.iter().take(6).copied().collect();
            let more = seen.missing.len().saturating_sub(shown.len());
            Check::fail(
                c,
                "iam.policy",
                format!(
                    "IAM policy {} ({version}) does not allow {}{}, which the controller {} calls",
                    env.spec.iam.policy_name,
                    shown.join(", "),
                    if more > 0 { format!(" and {more} more") } else { String::new() },
                    IAM_POLICY.version
                ),
            )
            .hint(format!(
                "the controller's calls fail with AccessDenied (see ingress.controller-events); re-run install with the pinned {} document (no --iam-policy-file)",
                IAM_POLICY.version
            ))
        } else if seen.label.as_deref() == Some(IAM_POLICY.version) {
            Check::pass(
                c,
                "iam.policy",
                format!("IAM policy {} is the pinned {} document", env.spec.iam.policy_name, IAM_POLICY.version),
            )
        } else {
            Check::pass(c, "iam.policy", format!("IAM policy {} ({version})", env.spec.iam.policy_name))
        };
        vec![check]
    }

    fn removal(&self, env: &Env) -> Result<Vec<Action>> {
        let seen = self.seen.as_ref().expect("observed");
        Ok(match self.fate(env) {
            Fate::Remove(()) => vec![
                Action::aws(Verb::Delete, "iam:DeletePolicy", &seen.arn).because("unless something else still uses it"),
            ],
            kept => Action::kept("aws", "iam:Policy", &seen.arn, &kept).into_iter().collect(),
        })
    }

    async fn remove(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        let seen = self.seen.as_ref().expect("observed");
        let fate = self.fate(env);
        if matches!(fate, Fate::Defer(_)) {
            return Ok(());
        }
        if fate == Fate::Remove(()) {
            let iam = &env.aws().iam;
            // Our role was detached just before; read the count now, not from the observation.
            let now = iam
                .get_policy()
                .policy_arn(&seen.arn)
                .send()
                .await
                .map_err(error::aws)
                .context("reading the IAM policy")?;
            let attachments = now.policy().and_then(|p| p.attachment_count()).unwrap_or(0);
            if attachments > 0 {
                env.progress.warn(&format!(
                    "kept IAM policy {}: still attached to {attachments} other entit{}",
                    seen.arn,
                    if attachments == 1 { "y" } else { "ies" }
                ));
            } else {
                for v in old_versions(iam, &seen.arn).await? {
                    delete_version(iam, &seen.arn, &v).await?;
                }
                iam.delete_policy()
                    .policy_arn(&seen.arn)
                    .send()
                    .await
                    .map_err(error::aws)
                    .context("deleting the IAM policy")?;
                env.progress.done(&format!("deleted IAM policy {}", seen.arn));
            }
        }
        record.update(|r| r.iam_policy = None).await
    }
}
