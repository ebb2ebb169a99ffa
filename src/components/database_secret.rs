//! The database credentials, in a Secret with `db-username` and
//! `db-password` that the chart reads through `existingSecret`: made from
//! --db-properties or --db-username and a password from stdin, a file or the
//! environment; or an existing Secret named with --existing-db-secret.

use std::collections::BTreeMap;

use crate::component::Env;

use super::owned_secret::{Kind, Slot};

pub const KIND: Kind = Kind {
    name: "database Secret",
    what: "database",
    secret_type: "Opaque",
    keys: &["db-username", "db-password"],
    check_id: "graphql.db-secret",
    how_to_give: "give --db-properties (with scalar.db.username and scalar.db.password), or --db-username and --db-password-stdin/-file/-env, or --existing-db-secret NAME",
    slot: Slot::Database,
    desired,
};

fn desired(env: &Env) -> Option<BTreeMap<String, Vec<u8>>> {
    let (user, password) = env.secrets.database.as_ref()?;
    Some(BTreeMap::from([
        ("db-username".to_string(), user.as_bytes().to_vec()),
        ("db-password".to_string(), password.expose().as_bytes().to_vec()),
    ]))
}
