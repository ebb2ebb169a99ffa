//! The database credentials, in a Secret with `db-username` and
//! `db-password` that the chart reads through `existingSecret`: made from
//! --db-properties or --db-username and a password from stdin, a file or the
//! environment; or an existing Secret named with --existing-db-secret.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::component::{Action, Category, Check, Component};
use crate::context::Env;
use crate::error::Result;
use crate::record::Recorder;

use super::owned_secret::{self as secret, Kind, Seen};

const KIND: Kind = Kind {
    what: "database",
    secret_type: "Opaque",
    keys: &["db-username", "db-password"],
    check_id: "graphql.db-secret",
    how_to_give: "give --db-properties (with scalar.db.username and scalar.db.password), or --db-username and --db-password-stdin/-file/-env, or --existing-db-secret NAME",
    record: |r, o| r.database_secret = o,
};

#[derive(Default)]
pub struct DatabaseSecret {
    seen: Seen,
}

impl DatabaseSecret {
    fn desired(env: &Env) -> Option<BTreeMap<String, Vec<u8>>> {
        let (user, password) = env.secrets.database.as_ref()?;
        Some(BTreeMap::from([
            ("db-username".to_string(), user.as_bytes().to_vec()),
            ("db-password".to_string(), password.expose().as_bytes().to_vec()),
        ]))
    }
    fn owned(&self, env: &Env) -> bool {
        secret::owned(env.record.database_secret.as_ref(), &self.seen)
    }
}

#[async_trait]
impl Component for DatabaseSecret {
    fn name(&self) -> &'static str {
        "database Secret"
    }

    fn category(&self) -> Category {
        Category::Graphql
    }

    async fn observe(&mut self, env: &Env) -> Result<()> {
        self.seen = secret::observe(env, &env.spec.database_secret).await?;
        Ok(())
    }

    fn plan(&self, env: &Env) -> Result<Vec<Action>> {
        secret::plan(env, &KIND, &env.spec.database_secret, &self.seen, Self::desired(env).as_ref(), self.owned(env))
    }

    async fn apply(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        let owned = self.owned(env);
        secret::apply(env, &KIND, &env.spec.database_secret, &self.seen, Self::desired(env).as_ref(), owned, record)
            .await
    }

    async fn checks(&self, env: &Env) -> Vec<Check> {
        vec![secret::check(env, &KIND, &env.spec.database_secret, &self.seen)]
    }

    fn removal(&self, env: &Env) -> Result<Vec<Action>> {
        Ok(secret::removal(env, &env.spec.database_secret, &self.seen, self.owned(env)))
    }

    async fn remove(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        secret::remove(env, &env.spec.database_secret, &self.seen, self.owned(env)).await?;
        record.update(|r| (KIND.record)(r, None)).await
    }
}
