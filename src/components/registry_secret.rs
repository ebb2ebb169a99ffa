//! The image pull Secret for the private ScalarDB GraphQL image on ghcr.io:
//! a `kubernetes.io/dockerconfigjson` Secret made from --registry-username
//! and a token read from stdin, a file or the environment (never a flag
//! value), or an existing Secret named with --image-pull-secret.

use std::collections::BTreeMap;

use async_trait::async_trait;
use base64::Engine;

use crate::component::{Action, Category, Check, Component};
use crate::context::Env;
use crate::error::Result;
use crate::record::Recorder;

use super::owned_secret::{self as secret, Kind, Seen};

const KIND: Kind = Kind {
    what: "image registry",
    secret_type: "kubernetes.io/dockerconfigjson",
    keys: &[".dockerconfigjson"],
    check_id: "graphql.registry-secret",
    how_to_give: "give --registry-username and the token (read:packages) with --registry-password-stdin, -file or -env; or --image-pull-secret NAME",
    record: |r, o| r.registry_secret = o,
};

/// The `.dockerconfigjson` content `kubectl create secret docker-registry` writes.
pub fn docker_config(server: &str, user: &str, token: &str) -> Vec<u8> {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
    serde_json::to_vec(&serde_json::json!({"auths": {server: {"username": user, "password": token, "auth": auth}}}))
        .expect("JSON of strings")
}

#[derive(Default)]
pub struct RegistrySecret {
    seen: Seen,
}

impl RegistrySecret {
    fn desired(env: &Env) -> Option<BTreeMap<String, Vec<u8>>> {
        let (user, token) = env.secrets.registry.as_ref()?;
        let server = env.spec.registry_secret.server.as_deref().unwrap_or("ghcr.io");
        Some(BTreeMap::from([(".dockerconfigjson".to_string(), docker_config(server, user, token.expose()))]))
    }
    fn owned(&self, env: &Env) -> bool {
        secret::owned(env.record.registry_secret.as_ref(), &self.seen)
    }
}

#[async_trait]
impl Component for RegistrySecret {
    fn name(&self) -> &'static str {
        "registry Secret"
    }

    fn category(&self) -> Category {
        Category::Graphql
    }

    async fn observe(&mut self, env: &Env) -> Result<()> {
        self.seen = secret::observe(env, &env.spec.registry_secret).await?;
        Ok(())
    }

    fn plan(&self, env: &Env) -> Result<Vec<Action>> {
        secret::plan(env, &KIND, &env.spec.registry_secret, &self.seen, Self::desired(env).as_ref(), self.owned(env))
    }

    async fn apply(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        let owned = self.owned(env);
        secret::apply(env, &KIND, &env.spec.registry_secret, &self.seen, Self::desired(env).as_ref(), owned, record)
            .await
    }

    async fn checks(&self, env: &Env) -> Vec<Check> {
        vec![secret::check(env, &KIND, &env.spec.registry_secret, &self.seen)]
    }

    fn removal(&self, env: &Env) -> Result<Vec<Action>> {
        Ok(secret::removal(env, &env.spec.registry_secret, &self.seen, self.owned(env)))
    }

    async fn remove(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        secret::remove(env, &env.spec.registry_secret, &self.seen, self.owned(env)).await?;
        record.update(|r| (KIND.record)(r, None)).await
    }
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
