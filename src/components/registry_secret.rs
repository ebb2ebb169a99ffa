//! The image pull Secret for the private ScalarDB GraphQL image on ghcr.io:
//! a `kubernetes.io/dockerconfigjson` Secret made from --registry-username
//! and a token read from stdin, a file or the environment (never a flag
//! value), or an existing Secret named with --image-pull-secret.

use std::collections::BTreeMap;

use base64::Engine;

use crate::component::Env;

use super::owned_secret::{Kind, Slot};

pub const KIND: Kind = Kind {
    name: "registry Secret",
    what: "image registry",
    secret_type: "kubernetes.io/dockerconfigjson",
    keys: &[".dockerconfigjson"],
    check_id: "graphql.registry-secret",
    how_to_give: "give --registry-username and the token (read:packages) with --registry-password-stdin, -file or -env; or --image-pull-secret NAME",
    slot: Slot::Registry,
    desired,
};

/// The `.dockerconfigjson` content `kubectl create secret docker-registry` writes.
pub fn docker_config(server: &str, user: &str, token: &str) -> Vec<u8> {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
    serde_json::to_vec(&serde_json::json!({"auths": {server: {"username": user, "password": token, "auth": auth}}}))
        .expect("JSON of strings")
}

fn desired(env: &Env) -> Option<BTreeMap<String, Vec<u8>>> {
    let (user, token) = env.secrets.registry.as_ref()?;
    let server = env.spec.registry_secret.server.as_deref().unwrap_or("ghcr.io");
    Some(BTreeMap::from([(".dockerconfigjson".to_string(), docker_config(server, user, token.expose()))]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_docker_config_matches_kubectls() {
        let v: serde_json::Value = serde_json::from_slice(&docker_config("ghcr.io", "me", "tok")).unwrap();
        assert_eq!(v["auths"]["ghcr.io"]["username"], "me");
        assert_eq!(v["auths"]["ghcr.io"]["auth"], "bWU6dG9r");
    }
}
