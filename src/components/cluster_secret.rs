//! `--target cluster`: the one Secret ScalarDB Cluster's nodes read every
//! credential from. The chart's `scalardbCluster.secretName` turns each of
//! its keys into an environment variable, and the node properties refer to
//! them as `${env:NAME}`, so no credential is in the properties ConfigMap,
//! the values or the release. Made from the database credentials and the
//! license, or an existing Secret named with --existing-db-secret.

use std::collections::BTreeMap;

use crate::component::Env;

use super::owned_secret::{Kind, Slot};

use crate::values::cluster_env::{DB_PASSWORD, DB_USERNAME, LICENSE_CHECK_CERT_PEM, LICENSE_KEY};

pub const KIND: Kind = Kind {
    name: "cluster Secret",
    what: "ScalarDB Cluster",
    secret_type: "Opaque",
    keys: &[DB_USERNAME, DB_PASSWORD, LICENSE_KEY, LICENSE_CHECK_CERT_PEM],
    check_id: "graphql.db-secret",
    how_to_give: "give the database credentials (--db-properties, or --db-username and --db-password-stdin/-file/-env) and the license (--license-key-… and --license-cert-…), or --existing-db-secret NAME",
    slot: Slot::Database,
    desired,
};

fn desired(env: &Env) -> Option<BTreeMap<String, Vec<u8>>> {
    let (user, password) = env.secrets.database.as_ref()?;
    let (key, cert) = env.secrets.license.as_ref()?;
    Some(BTreeMap::from([
        (DB_USERNAME.to_string(), user.as_bytes().to_vec()),
        (DB_PASSWORD.to_string(), password.expose().as_bytes().to_vec()),
        (LICENSE_KEY.to_string(), key.expose().as_bytes().to_vec()),
        (LICENSE_CHECK_CERT_PEM.to_string(), cert.expose().as_bytes().to_vec()),
    ]))
}
