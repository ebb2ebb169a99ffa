//! The Component trait and the facts it trades in: actions (what install or
//! uninstall would change) and checks (what status reports).
//!
//! A component owns one piece of the deployment. It observes its piece
//! (read-only), says what differs from the spec, converges it, reports checks
//! on it, and removes what the install record says it created. It never
//! talks to the terminal: it returns facts and the printer shows them.

use async_trait::async_trait;
use serde::Serialize;

use crate::context::{Aws, ClusterFacts, Context};
use crate::deadline::Deadline;
use crate::error::Result;
use crate::record::{Record, Recorder};
use crate::spec::{Options, Secrets, Spec};
pub use crate::wait::Progress;

#[async_trait]
pub trait Component: Send + Sync {
    /// Name as shown in plans and progress, e.g. "IAM role".
    fn name(&self) -> &'static str;

    /// Where its checks appear in `status`.
    fn category(&self) -> Category;

    /// Whether it is one of the pieces several releases share (the controller and
    /// what it needs, the dedicated nodes): changed only under the cluster's Lease.
    fn shared(&self) -> bool {
        false
    }

    /// Reads the world; never changes it. Called again before each retry of a wait.
    async fn observe(&mut self, env: &Env) -> Result<()>;

    /// What install would change, given the last observation. Empty when converged.
    /// An error here is a prerequisite that install cannot meet (nothing is changed yet).
    fn plan(&self, env: &Env) -> Result<Vec<Action>>;

    /// Makes the planned changes, recording what it creates before creating it.
    async fn apply(&mut self, env: &Env, record: &mut Recorder) -> Result<()>;

    /// After every shared piece was applied (the controller runs with its new credentials):
    /// takes away what a switch of `--identity` left of the other way, as its plan said.
    async fn retire(&mut self, _env: &Env, _record: &mut Recorder) -> Result<()> {
        Ok(())
    }

    /// Status checks on the last observation.
    async fn checks(&self, env: &Env) -> Vec<Check>;

    /// What uninstall would remove: only what the record says this tool created.
    fn removal(&self, env: &Env) -> Result<Vec<Action>>;

    /// Removes it, and forgets it in the record once it is gone.
    async fn remove(&mut self, env: &Env, record: &mut Recorder) -> Result<()>;
}

/// What each component gets: the clients, the cluster's facts, what to deploy,
/// the install record as it was read, and the command's options.
pub struct Env {
    pub ctx: Context,
    pub progress: std::sync::Arc<dyn Progress>,
    pub facts: ClusterFacts,
    pub spec: Spec,
    pub record: Record,
    pub options: Options,
    /// The command's one deadline: every wait ends at it.
    pub deadline: Deadline,
    pub secrets: Secrets,
    /// Uninstall's decision about the shared pieces.
    pub shared: Shared,
    /// Reads the checks of one status round share (status's only: see `memo`).
    pub reads: crate::memo::Memo,
}

impl crate::wait::Clock for Env {
    fn deadline(&self) -> std::time::Instant {
        self.deadline.at()
    }
    fn progress(&self) -> &dyn Progress {
        self.progress.as_ref()
    }
}

impl Env {
    /// The controller's IAM policy, by the name the spec gives it.
    pub fn policy_arn(&self) -> String {
        format!("arn:{}:iam::{}:policy/{}", self.facts.partition, self.facts.account, self.spec.iam.policy_name)
    }
    /// The controller's IAM role, by the name the spec gives it.
    pub fn role_arn(&self) -> String {
        format!("arn:{}:iam::{}:role/{}", self.facts.partition, self.facts.account, self.spec.iam.role_name)
    }
    pub fn kube(&self) -> &kube::Client {
        &self.ctx.kube.client
    }
    pub fn aws(&self) -> &Aws {
        &self.ctx.aws
    }
}

// --- uninstall's one decision -------------------------------------------------------------

/// What uninstall does with what a component owns. Each component decides it
/// once (its `fate`, a pure function of its observation and `Env`);
/// `removal()` shows that decision and `remove()` carries it out, so what is
/// listed is what is done.
#[derive(Debug, Clone, PartialEq)]
pub enum Fate<T = ()> {
    /// Nothing there.
    Absent,
    /// Left in place, and why; nothing for a later uninstall of this release to do.
    Keep(String),
    /// This tool's, left in place for now (a --keep flag, or something outside
    /// this tool still needs it): a later uninstall of this release removes it,
    /// so the install record stays.
    Defer(String),
    /// Removed; `T` says what removing it takes.
    Remove(T),
}

impl<T> Fate<T> {
    /// The fate of a piece of this tool's that the shared-pieces decision keeps.
    pub fn kept(kept: &Kept) -> Fate<T> {
        if kept.later { Fate::Defer(kept.reason.clone()) } else { Fate::Keep(kept.reason.clone()) }
    }
}

/// Why uninstall leaves one of the shared pieces in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub reason: String,
    /// Only a later uninstall of this release can remove it (another release
    /// of this tool that still uses it removes it itself when it goes last).
    pub later: bool,
}

/// Uninstall's one decision about the pieces that several releases and other
/// users share, made once from what the live cluster shows (see
/// `lookups::users`): None removes (what this tool's own marks prove is its),
/// Some keeps. Install and status leave it empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shared {
    /// The controller's release, CRDs and the subnet tags it finds subnets by.
    pub controller: Option<Kept>,
    /// The controller's ServiceAccount: kept with the controller, or for a controller this tool did not install.
    pub service_account: Option<Kept>,
    /// The controller's IAM role, policy and the OIDC provider.
    pub iam: Option<Kept>,
    /// The label and taint of the dedicated nodes.
    pub nodes: Option<Kept>,
    /// The readiness-gate label of the release namespace.
    pub namespace_label: Option<Kept>,
}

// --- actions ------------------------------------------------------------------------------

/// One change a command would make, described well enough to review before it happens.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Action {
    /// `aws`, `kubernetes`, `helm` or `wait`.
    pub system: &'static str,
    pub verb: Verb,
    /// The API call or object kind, e.g. `iam:CreateRole`, `Secret`, `release`.
    pub operation: String,
    /// What it acts on, e.g. a name, `namespace/name`, an ARN.
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Rendered values or documents, secrets redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
    /// A keep that a later uninstall of this release must finish: the install record stays.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub later: bool,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    Create,
    Update,
    Delete,
    /// Left in place on purpose; the reason says why.
    Keep,
    Wait,
}

impl Verb {
    pub fn sign(self) -> &'static str {
        match self {
            Verb::Create => "+",
            Verb::Update => "~",
            Verb::Delete => "-",
            Verb::Keep => "=",
            Verb::Wait => "…",
        }
    }
}

impl Action {
    fn new(system: &'static str, verb: Verb, operation: impl Into<String>, target: impl Into<String>) -> Self {
        Action {
            system,
            verb,
            operation: operation.into(),
            target: target.into(),
            reason: None,
            detail: None,
            later: false,
        }
    }
    pub fn aws(verb: Verb, call: &str, target: impl Into<String>) -> Self {
        Self::new("aws", verb, call, target)
    }
    pub fn kube(verb: Verb, kind: &str, target: impl Into<String>) -> Self {
        Self::new("kubernetes", verb, kind, target)
    }
    pub fn helm(verb: Verb, operation: &str, release: impl Into<String>) -> Self {
        Self::new("helm", verb, operation, release)
    }
    pub fn wait(what: impl Into<String>) -> Self {
        Self::new("wait", Verb::Wait, "until", what)
    }
    pub fn because(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }
    /// Something deliberately left alone, and why.
    pub fn keep(system: &'static str, what: &str, target: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::new(system, Verb::Keep, what, target).because(reason)
    }
    /// What a fate that keeps says: `Keep` or `Defer` (the record stays for a later uninstall); None otherwise.
    pub fn kept<T>(system: &'static str, what: &str, target: impl Into<String>, fate: &Fate<T>) -> Option<Self> {
        match fate {
            Fate::Keep(why) => Some(Self::keep(system, what, target, why.clone())),
            Fate::Defer(why) => {
                let mut a = Self::keep(system, what, target, why.clone());
                a.later = true;
                Some(a)
            }
            Fate::Absent | Fate::Remove(_) => None,
        }
    }
    /// Whether it changes anything (a wait or a keep does not).
    pub fn mutates(&self) -> bool {
        !matches!(self.verb, Verb::Wait | Verb::Keep)
    }
}

/// `+ aws iam:CreateRole my-role  (why)`
impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {} {}", self.verb.sign(), self.system, self.operation, self.target)?;
        match &self.reason {
            Some(why) => write!(f, "  ({why})"),
            None => Ok(()),
        }
    }
}

/// Every component's actions, in the order they would run.
#[derive(Debug, Default, Serialize)]
pub struct Plan {
    pub steps: Vec<PlanStep>,
}

#[derive(Debug, Serialize)]
pub struct PlanStep {
    pub component: &'static str,
    pub actions: Vec<Action>,
}

impl Plan {
    pub fn mutations(&self) -> usize {
        self.actions().filter(|a| a.mutates()).count()
    }
    pub fn actions(&self) -> impl Iterator<Item = &Action> {
        self.steps.iter().flat_map(|s| &s.actions)
    }
    /// Uninstall keeps something of this tool's for a later uninstall of this release: the record stays.
    pub fn record_stays(&self) -> bool {
        self.actions().any(|a| a.later)
    }
}

// --- checks -------------------------------------------------------------------------------
pub use crate::cli::Category;

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Warn,
    Fail,
    /// Not run, because a check it depends on failed.
    Skip,
}

/// One line of the checklist. `id` is stable across releases: scripts may key on it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Check {
    pub id: &'static str,
    pub category: Category,
    pub result: Outcome,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Check {
    fn new(category: Category, id: &'static str, result: Outcome, message: impl Into<String>) -> Self {
        Check { id, category, result, message: message.into(), hint: None }
    }
    pub fn pass(category: Category, id: &'static str, message: impl Into<String>) -> Self {
        Self::new(category, id, Outcome::Pass, message)
    }
    pub fn warn(category: Category, id: &'static str, message: impl Into<String>) -> Self {
        Self::new(category, id, Outcome::Warn, message)
    }
    pub fn fail(category: Category, id: &'static str, message: impl Into<String>) -> Self {
        Self::new(category, id, Outcome::Fail, message)
    }
    pub fn skip(category: Category, id: &'static str, message: impl Into<String>) -> Self {
        Self::new(category, id, Outcome::Skip, message)
    }
    /// Passes or fails on `ok`, with the failure's own message.
    pub fn expect(
        category: Category,
        id: &'static str,
        ok: bool,
        pass: impl Into<String>,
        fail: impl Into<String>,
    ) -> Self {
        if ok { Self::pass(category, id, pass) } else { Self::fail(category, id, fail) }
    }
    pub fn hint(mut self, text: impl Into<String>) -> Self {
        self.hint = Some(text.into());
        self
    }
    pub fn passed(&self) -> bool {
        matches!(self.result, Outcome::Pass | Outcome::Warn)
    }
}
