//! The one implementation of the two Secret components (registry, database):
//! a Secret that install either creates from credentials it was given (and
//! then owns, labels and keeps in step) or only uses (a Secret the user
//! made). The two differ only in their `Kind`: what they put in the Secret.
//! Values are compared, never printed.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};

use async_trait::async_trait;

use crate::component::Env;
use crate::component::{Action, Category, Check, Component, Fate, Verb};
use crate::error::{Context, Error, Result};
use crate::record::{Owned, Record, Recorder};
use crate::spec::{SecretRef, Spec};

use super::{delete_gone, is_managed, managed_labels};

/// A Secret's data, key by key.
pub type Data = BTreeMap<String, Vec<u8>>;

/// How a Secret component differs from the other.
pub struct Kind {
    /// The component's name in plans and progress.
    pub name: &'static str,
    pub what: &'static str,
    pub secret_type: &'static str,
    pub keys: &'static [&'static str],
    pub check_id: &'static str,
    /// How to give credentials, for the error when there are none.
    pub how_to_give: &'static str,
    /// Which of the spec's Secrets, and of the record's entries, it is.
    pub slot: Slot,
    /// What it would put in the Secret, from the credentials given (None: none given).
    pub desired: fn(&Env) -> Option<Data>,
}

#[derive(Clone, Copy)]
pub enum Slot {
    Registry,
    Database,
}

impl Slot {
    fn secret(self, spec: &Spec) -> &SecretRef {
        match self {
            Slot::Registry => &spec.registry_secret,
            Slot::Database => &spec.database_secret,
        }
    }
    fn recorded(self, record: &Record) -> Option<&Owned> {
        match self {
            Slot::Registry => record.registry_secret.as_ref(),
            Slot::Database => record.database_secret.as_ref(),
        }
    }
    fn record(self, record: &mut Record, entry: Option<Owned>) {
        match self {
            Slot::Registry => record.registry_secret = entry,
            Slot::Database => record.database_secret = entry,
        }
    }
}

/// A Secret component: one `Kind` and what it last saw.
pub struct OwnedSecret {
    kind: &'static Kind,
    seen: Seen,
}

impl OwnedSecret {
    pub fn new(kind: &'static Kind) -> OwnedSecret {
        OwnedSecret { kind, seen: Seen::default() }
    }

    /// Uninstall's one decision: only a Secret this tool manages, and that
    /// carries its label (the record alone proves nothing), goes.
    fn fate(&self, env: &Env) -> Fate {
        if !self.seen.exists {
            Fate::Absent
        } else if !self.kind.slot.secret(&env.spec).managed {
            Fate::Keep("not created by this tool".into())
        } else if let Some(why) =
            crate::ownership::unproven(Owned::claimed(self.kind.slot.recorded(&env.record)), self.seen.managed)
        {
            Fate::Keep(why)
        } else {
            Fate::Remove(())
        }
    }

    fn want<'a>(&'a self, env: &'a Env) -> Want<'a> {
        Want {
            kind: self.kind,
            r: self.kind.slot.secret(&env.spec),
            seen: &self.seen,
            desired: (self.kind.desired)(env),
            owned: self.seen.managed,
        }
    }
}

/// What install compares and writes: the Secret wanted, as seen, and whether it is ours.
struct Want<'a> {
    kind: &'a Kind,
    r: &'a SecretRef,
    seen: &'a Seen,
    desired: Option<Data>,
    owned: bool,
}

#[async_trait]
impl Component for OwnedSecret {
    fn name(&self) -> &'static str {
        self.kind.name
    }

    fn category(&self) -> Category {
        Category::Graphql
    }

    async fn observe(&mut self, env: &Env) -> Result<()> {
        self.seen = observe(env, self.kind.slot.secret(&env.spec)).await?;
        Ok(())
    }

    fn plan(&self, env: &Env) -> Result<Vec<Action>> {
        plan(env, self)
    }

    async fn apply(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        apply(env, self, record).await
    }

    async fn checks(&self, env: &Env) -> Vec<Check> {
        vec![check(env, self.kind, self.kind.slot.secret(&env.spec), &self.seen)]
    }

    fn removal(&self, env: &Env) -> Result<Vec<Action>> {
        let t = target(env, self.kind.slot.secret(&env.spec));
        Ok(match self.fate(env) {
            Fate::Remove(()) => vec![Action::kube(Verb::Delete, "Secret", t)],
            kept => Action::kept("kubernetes", "Secret", t, &kept).into_iter().collect(),
        })
    }

    async fn remove(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        if self.fate(env) == Fate::Remove(()) {
            let r = self.kind.slot.secret(&env.spec);
            let api: Api<Secret> = Api::namespaced(env.kube().clone(), &env.spec.namespace);
            let deleted = delete_gone(&api, &r.name, &DeleteParams::default(), &format!("Secret {}", r.name)).await?;
            let what = format!("Secret {}", target(env, r));
            env.progress.done(&if deleted { format!("deleted {what}") } else { format!("{what} was already gone") });
        }
        let slot = self.kind.slot;
        record.update(|r| slot.record(r, None)).await
    }
}

#[derive(Default)]
pub struct Seen {
    pub exists: bool,
    pub managed: bool,
    pub secret_type: String,
    pub data: BTreeMap<String, Vec<u8>>,
}

async fn observe(env: &Env, r: &SecretRef) -> Result<Seen> {
    let api: Api<Secret> = Api::namespaced(env.kube().clone(), &env.spec.namespace);
    let Some(s) = api.get_opt(&r.name).await.context(format!("reading Secret {}", r.name))? else {
        return Ok(Seen::default());
    };
    Ok(Seen {
        exists: true,
        managed: is_managed(&s.metadata),
        secret_type: s.type_.unwrap_or_default(),
        data: s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect(),
    })
}

fn target(env: &Env, r: &SecretRef) -> String {
    format!("{}/{}", env.spec.namespace, r.name)
}

/// What install does with the Secret, given what it would contain.
fn plan(env: &Env, s: &OwnedSecret) -> Result<Vec<Action>> {
    let Want { kind, r, seen, desired, owned } = s.want(env);
    let desired = desired.as_ref();
    let t = target(env, r);
    if !r.managed || (seen.exists && !owned && desired.is_none()) {
        // The user's own Secret: it must be there and usable.
        if !seen.exists {
            return Err(Error::prerequisite(format!("{} Secret {t} does not exist", kind.what)).hint(kind.how_to_give));
        }
        let missing: Vec<_> = kind.keys.iter().filter(|k| !seen.data.contains_key(**k)).collect();
        if seen.secret_type != kind.secret_type || !missing.is_empty() {
            return Err(Error::prerequisite(format!(
                "{} Secret {t} is not usable: type {:?}, expected {:?} with keys {}",
                kind.what,
                seen.secret_type,
                kind.secret_type,
                kind.keys.join(", ")
            ))
            .hint("fix the Secret, or let install create it from credentials"));
        }
        return Ok(vec![]);
    }
    let Some(desired) = desired else {
        if seen.exists {
            return Ok(vec![]); // ours, and no new credentials: keep it as it is
        }
        return Err(Error::prerequisite(format!("no {} credentials given and Secret {t} does not exist", kind.what))
            .hint(kind.how_to_give));
    };
    if seen.exists && !owned {
        return Err(Error::prerequisite(format!("{} Secret {t} exists and was not created by this tool", kind.what))
            .hint("use it as it is by giving no credentials, or choose another name"));
    }
    Ok(if !seen.exists {
        vec![Action::kube(Verb::Create, "Secret", t).because(format!(
            "type {}, keys {} (values redacted)",
            kind.secret_type,
            kind.keys.join(", ")
        ))]
    } else if &seen.data != desired || seen.secret_type != kind.secret_type {
        vec![Action::kube(Verb::Update, "Secret", t).because("new credentials (values redacted)")]
    } else {
        vec![]
    })
}

/// Creates or replaces the Secret; the record entry is written first.
async fn apply(env: &Env, s: &OwnedSecret, record: &mut Recorder) -> Result<()> {
    let Want { kind, r, seen, desired, owned } = s.want(env);
    let desired = desired.as_ref();
    let created = r.managed && (!seen.exists || owned);
    let entry = Owned { id: r.name.clone(), created };
    record.update(|rec| kind.slot.record(rec, Some(entry))).await?;
    let Some(desired) =
        desired.filter(|d| created && (!seen.exists || seen.data != **d || seen.secret_type != kind.secret_type))
    else {
        return Ok(());
    };
    let api: Api<Secret> = Api::namespaced(env.kube().clone(), &env.spec.namespace);
    let secret = Secret {
        metadata: ObjectMeta { name: Some(r.name.clone()), labels: Some(managed_labels()), ..Default::default() },
        type_: Some(kind.secret_type.to_string()),
        data: Some(desired.iter().map(|(k, v)| (k.clone(), ByteString(v.clone()))).collect()),
        ..Default::default()
    };
    if seen.exists {
        if seen.secret_type != kind.secret_type {
            // The type of a Secret cannot change in place.
            api.delete(&r.name, &DeleteParams::default()).await.context(format!("replacing Secret {}", r.name))?;
            api.create(&PostParams::default(), &secret).await.context(format!("creating Secret {}", r.name))?;
        } else {
            api.replace(&r.name, &PostParams::default(), &secret)
                .await
                .context(format!("updating Secret {}", r.name))?;
        }
        env.progress.done(&format!("updated {} Secret {}", kind.what, target(env, r)));
    } else {
        api.create(&PostParams::default(), &secret).await.context(format!("creating Secret {}", r.name))?;
        env.progress.done(&format!("created {} Secret {}", kind.what, target(env, r)));
    }
    Ok(())
}

fn check(env: &Env, kind: &Kind, r: &SecretRef, seen: &Seen) -> Check {
    let t = target(env, r);
    let c = Category::Graphql;
    if !seen.exists {
        return Check::fail(c, kind.check_id, format!("{} Secret {t} does not exist", kind.what))
            .hint(kind.how_to_give);
    }
    let missing: Vec<_> = kind.keys.iter().filter(|k| !seen.data.contains_key(**k)).copied().collect();
    if seen.secret_type != kind.secret_type {
        return Check::fail(
            c,
            kind.check_id,
            format!("Secret {t} is of type {:?}, not {:?}", seen.secret_type, kind.secret_type),
        )
        .hint("recreate it with the right type (re-run install with credentials)");
    }
    if !missing.is_empty() {
        return Check::fail(c, kind.check_id, format!("Secret {t} lacks key(s) {}", missing.join(", ")))
            .hint(kind.how_to_give);
    }
    Check::pass(c, kind.check_id, format!("{} Secret {t} exists ({})", kind.what, kind.secret_type))
}
