//! Loading the ScalarDB schema from inside the cluster (the guide's step 2):
//! the properties in a Secret, the schema in a ConfigMap, and a Job running
//! the public Schema Loader image on the mounted files. A laptop rarely
//! reaches a database inside the VPC; the cluster does. On success the Job,
//! Secret and ConfigMap are removed; on failure they stay for inspection.
//!
//! As a component (install --schema) it runs before the GraphQL chart and
//! only when the schema or properties changed since the last load. Uninstall
//! never drops tables: they are data.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{
    Api, DeleteParams, ListParams, LogParams, ObjectMeta, Patch, PatchParams, PostParams, PropagationPolicy,
};
use serde_json::{Value, json};

use crate::cleanup;
use crate::component::Env;
use crate::component::{Action, Category, Check, Component, Verb};
use crate::error::{Context, Error, Result};
use crate::pins::{SCHEMA_LOADER_IMAGE, SCHEMA_LOADER_VERSION};
use crate::record::{Owned, Recorder};
use crate::schema::Schema;
use crate::wait::{self, Clock, Progress};

use super::{delete_gone, managed_labels};

const PROPERTIES_DIR: &str = "/scalardb/config";
const SCHEMA_DIR: &str = "/scalardb/schema";

/// One run of the Schema Loader.
#[derive(Clone)]
pub struct LoaderJob {
    pub name: String,
    pub namespace: String,
    pub image: String,
    pub schema: String,
    /// The database.properties text: goes only into the Secret.
    pub properties: String,
    pub coordinator: bool,
    pub delete: bool,
}

impl LoaderJob {
    pub fn new(
        namespace: &str,
        schema: &Schema,
        properties: String,
        version: Option<&str>,
        coordinator: bool,
        delete: bool,
    ) -> LoaderJob {
        LoaderJob {
            name: format!("scalardb-schema-loader-{}", &digest(&schema.text, &properties, coordinator, delete)[..10]),
            namespace: namespace.to_string(),
            image: format!("{SCHEMA_LOADER_IMAGE}:{}", version.unwrap_or(SCHEMA_LOADER_VERSION)),
            schema: schema.text.clone(),
            properties,
            coordinator,
            delete,
        }
    }

    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "-c".to_string(),
            format!("{PROPERTIES_DIR}/database.properties"),
            "-f".into(),
            format!("{SCHEMA_DIR}/schema.json"),
        ];
        if self.coordinator {
            args.push("--coordinator".into());
        }
        if self.delete {
            args.push("-D".into());
        }
        args
    }

    pub fn secret(&self) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(managed_labels()),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([(
                "database.properties".into(),
                ByteString(self.properties.clone().into_bytes()),
            )])),
            ..Default::default()
        }
    }

    pub fn config_map(&self) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(managed_labels()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([("schema.json".into(), self.schema.clone())])),
            ..Default::default()
        }
    }

    pub fn job(&self) -> Job {
        serde_json::from_value(json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": self.name, "labels": managed_labels()},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "metadata": {"labels": managed_labels()},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{
                            "name": "schema-loader",
                            "image": self.image,
                            "args": self.args(),
                            "volumeMounts": [
                                {"name": "properties", "mountPath": PROPERTIES_DIR, "readOnly": true},
                                {"name": "schema", "mountPath": SCHEMA_DIR, "readOnly": true},
                            ],
                        }],
                        "volumes": [
                            {"name": "properties", "secret": {"secretName": self.name}},
                            {"name": "schema", "configMap": {"name": self.name}},
                        ],
                    },
                },
            },
        }))
        .expect("a valid Job")
    }

    /// What --dry-run prints: the three objects, the properties redacted.
    pub fn preview(&self) -> Value {
        let mut secret = serde_json::to_value(self.secret()).expect("serializable");
        secret["data"] = json!({"database.properties": "<redacted>"});
        json!([
            secret,
            serde_json::to_value(self.config_map()).expect("serializable"),
            serde_json::to_value(self.job()).expect("serializable")
        ])
    }

    /// Creates the objects, waits for the Job, shows its log. The Secret (the
    /// whole database.properties) is owned by the Job and deleted whatever the
    /// outcome, also at the deadline and on Ctrl-C; the Job and ConfigMap are
    /// deleted on success and kept for inspection otherwise.
    pub async fn run(&self, client: &kube::Client, clock: &(impl Clock + ?Sized)) -> Result<()> {
        let client = client.clone();
        let ns = &self.namespace;
        let pp = PostParams::default();
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
        // A leftover of the same run (same digest) is replaced.
        if jobs.get_opt(&self.name).await.context("reading the loader Job")?.is_some() {
            self.cleanup(&client).await?;
        }
        let undo = {
            let (this, client) = (self.clone(), client.clone());
            cleanup::register(
                format!("the Schema Loader's Job, Secret and ConfigMap {ns}/{}", self.name),
                move || async move {
                    let _ = this.cleanup(&client).await;
                },
            )
        };
        secrets.create(&pp, &self.secret()).await.context(format!("creating Secret {}", self.name))?;
        maps.create(&pp, &self.config_map()).await.context(format!("creating ConfigMap {}", self.name))?;
        let job = jobs.create(&pp, &self.job()).await.context(format!("creating Job {}", self.name))?;
        // The Secret belongs to the Job: deleting the Job deletes it.
        let owner = json!({"metadata": {"ownerReferences": [{
            "apiVersion": "batch/v1", "kind": "Job", "name": self.name, "uid": job.metadata.uid,
        }]}});
        secrets
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&owner))
            .await
            .context(format!("making Job {} the owner of its Secret", self.name))?;
        let what = if self.delete {
            "the Schema Loader to delete the tables"
        } else {
            "the Schema Loader to create the tables"
        };
        let failed = wait::until(clock, what, || async {
            let job = jobs.get(&self.name).await.context("reading the loader Job")?;
            let status = job.status.unwrap_or_default();
            let failed_condition =
                status.conditions.unwrap_or_default().iter().any(|c| c.type_ == "Failed" && c.status == "True");
            Ok(if status.succeeded.unwrap_or(0) > 0 {
                Ok(false)
            } else if status.failed.unwrap_or(0) > 0 || failed_condition {
                Ok(true)
            } else {
                Err(format!("Job {} active: {}", self.name, status.active.unwrap_or(0)))
            })
        })
        .await;
        let log = match &failed {
            Err(_) => None,
            Ok(_) => self.log(&client, clock.progress()).await,
        };
        if failed.as_ref().is_ok_and(|f| !f) {
            self.cleanup(&client).await?;
            undo.disarm();
            if let Some(log) = log {
                clock.progress().done(&format!("Schema Loader log:\n{}", log.trim_end()));
            }
            clock.progress().done(&format!(
                "Schema Loader {} ({} table(s)); removed its Job, Secret and ConfigMap",
                if self.delete { "deleted the tables" } else { "created the tables" },
                Schema::parse(&self.schema).map(|s| s.tables.len()).unwrap_or(0)
            ));
            return Ok(());
        }
        // Failed or timed out: the properties go; the Job and the schema stay to be read.
        self.delete_secret(&client).await?;
        undo.disarm();
        if let Some(log) = log {
            clock.progress().done(&format!("Schema Loader log:\n{}", log.trim_end()));
        }
        let read = format!(
            "read its log: kubectl -n {ns} logs job/{}; delete them with kubectl -n {ns} delete job,configmap {}",
            self.name, self.name
        );
        Err(match failed {
            Err(e) => {
                Error::timeout(format!("{e}; Job {ns}/{} and its ConfigMap were kept, its Secret deleted", self.name))
            }
            Ok(_) => Error::failed(format!(
                "the Schema Loader failed; Job {ns}/{} and its ConfigMap were kept, its Secret deleted",
                self.name
            )),
        }
        .hint(read))
    }

    async fn delete_secret(&self, client: &kube::Client) -> Result<()> {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &self.namespace);
        delete_gone(&secrets, &self.name, &DeleteParams::default(), "the loader Secret").await.map(drop)
    }

    async fn log(&self, client: &kube::Client, progress: &dyn Progress) -> Option<String> {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &self.namespace);
        let pod = pods
            .list(&ListParams::default().labels(&format!("job-name={}", self.name)))
            .await
            .ok()?
            .items
            .into_iter()
            .next()?;
        match pods.logs(pod.metadata.name.as_deref()?, &LogParams::default()).await {
            Ok(log) => Some(log),
            Err(e) => {
                progress.warn(&format!("the cluster cannot give the loader's log ({e})"));
                None
            }
        }
    }

    async fn cleanup(&self, client: &kube::Client) -> Result<()> {
        delete_objects(client, &self.namespace, &self.name).await.map(drop)
    }
}

/// Deletes the Job, Secret and ConfigMap of one run, known by its name (also
/// what an earlier, interrupted run left), each only if it carries this
/// tool's label: a name in the record proves nothing. Returns what was kept.
async fn delete_objects(client: &kube::Client, ns: &str, name: &str) -> Result<Vec<String>> {
    let background = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
    let mut kept = vec![];
    // Deleting the Job lets the garbage collector take its Secret too: gone either way.
    if !delete_marked(&Api::<Job>::namespaced(client.clone(), ns), name, &background, "the loader Job").await? {
        kept.push(format!("Job {ns}/{name}"));
    }
    let plain = DeleteParams::default();
    if !delete_marked(&Api::<Secret>::namespaced(client.clone(), ns), name, &plain, "the loader Secret").await? {
        kept.push(format!("Secret {ns}/{name}"));
    }
    if !delete_marked(&Api::<ConfigMap>::namespaced(client.clone(), ns), name, &plain, "the loader ConfigMap").await? {
        kept.push(format!("ConfigMap {ns}/{name}"));
    }
    Ok(kept)
}

/// Deletes an object that carries this tool's label (the very one read: a uid
/// precondition); false when one is there without the label.
async fn delete_marked<K>(api: &Api<K>, name: &str, params: &DeleteParams, what: &str) -> Result<bool>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(found) = api.get_opt(name).await.context(format!("reading {what}"))? else { return Ok(true) };
    if !super::is_managed(found.meta()) {
        return Ok(false);
    }
    let params = DeleteParams {
        preconditions: Some(kube::api::Preconditions { uid: found.meta().uid.clone(), resource_version: None }),
        ..params.clone()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(true), // gone, or replaced since
        Err(e) => Err(e).context(format!("deleting {what}")),
    }
}

/// Names the run by what it does: the schema, the properties without their
/// secret values (no hash over a password ever names an object or a record
/// entry), and the flags.
fn digest(schema: &str, properties: &str, coordinator: bool, delete: bool) -> String {
    let public = non_secret_lines(properties);
    let parts = [schema, "\0", &public, "\0", if coordinator { "c" } else { "" }, if delete { "D" } else { "" }];
    super::sha256_hex(parts.concat().as_bytes())
}

/// The properties' lines whose key names no secret (password, secret, token, key, credential).
fn non_secret_lines(properties: &str) -> String {
    properties
        .lines()
        .map(str::trim)
        .filter(|l| {
            let key = l.split(['=', ':']).next().unwrap_or_default().to_ascii_lowercase();
            !["password", "secret", "token", "key", "credential"].iter().any(|w| key.contains(w))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// install --schema: load before the GraphQL chart, once per schema and properties.
#[derive(Default)]
pub struct SchemaLoad {
    job: Option<LoaderJob>,
}

#[async_trait]
impl Component for SchemaLoad {
    fn name(&self) -> &'static str {
        "ScalarDB schema"
    }

    fn category(&self) -> Category {
        Category::Graphql
    }

    async fn observe(&mut self, env: &Env) -> Result<()> {
        self.job = None;
        // Both were read and validated before the cluster was contacted (spec::for_install).
        let (Some(schema), Some(properties)) = (&env.options.schema, &env.options.db_properties) else {
            return Ok(());
        };
        // The loader of the ScalarDB version the target's chart runs.
        let version = (env.spec.target == crate::spec::Target::Cluster).then_some(crate::pins::CLUSTER_APP_VERSION);
        self.job = Some(LoaderJob::new(&env.spec.namespace, schema, properties.clone(), version, true, false));
        Ok(())
    }

    fn plan(&self, env: &Env) -> Result<Vec<Action>> {
        let Some(job) = &self.job else {
            return Ok(vec![]);
        };
        if env.record.schema.as_ref().is_some_and(|s| s.id == job.name) {
            return Ok(vec![]); // this schema was loaded with these properties already
        }
        Ok(vec![
            Action::kube(Verb::Create, "Job", format!("{}/{}", job.namespace, job.name))
                .because(format!("{} {}", job.image, job.args().join(" ")))
                .with_detail(job.preview()),
        ])
    }

    async fn apply(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        let Some(job) = &self.job else { return Ok(()) };
        if env.record.schema.as_ref().is_some_and(|s| s.id == job.name) {
            return Ok(());
        }
        // Recorded before anything is created: an interrupted load leaves objects uninstall can find.
        record.update(|r| r.schema_loader = Some(Owned { id: job.name.clone(), created: true })).await?;
        job.run(env.kube(), env).await?;
        record
            .update(|r| {
                r.schema = Some(Owned { id: job.name.clone(), created: true });
                r.schema_loader = None;
            })
            .await
    }

    async fn checks(&self, _env: &Env) -> Vec<Check> {
        vec![]
    }

    fn removal(&self, env: &Env) -> Result<Vec<Action>> {
        let mut actions = vec![];
        if let Some(left) = &env.record.schema_loader {
            actions.push(
                Action::kube(Verb::Delete, "Job", format!("{}/{}", env.spec.namespace, left.id))
                    .because("left by an interrupted or failed load, with its Secret and ConfigMap"),
            );
        }
        if env.record.schema.is_some() {
            actions.push(Action::keep(
                "scalardb",
                "tables",
                "the loaded schema",
                "tables are data; `kubectl scalardb-graphql schema delete` drops them",
            ));
        }
        Ok(actions)
    }

    async fn remove(&mut self, env: &Env, record: &mut Recorder) -> Result<()> {
        if let Some(left) = &env.record.schema_loader {
            // The record only names them: what does not carry this tool's label stays.
            let kept = delete_objects(env.kube(), &env.spec.namespace, &left.id).await?;
            if kept.is_empty() {
                env.progress.done(&format!("deleted the Schema Loader's Job, Secret and ConfigMap {}", left.id));
            } else {
                env.progress.warn(&format!(
                    "kept {}: the install record names them, but they carry no mark of this tool",
                    kept.join(", ")
                ));
            }
        }
        record
            .update(|r| {
                r.schema = None;
                r.schema_loader = None;
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> LoaderJob {
        let schema = Schema::parse(r#"{"s.t": {"partition-key": ["id"], "columns": {"id": "INT"}}}"#).unwrap();
        LoaderJob::new("ns", &schema, "scalar.db.password=hunter2\n".into(), None, true, false)
    }

    #[test]
    fn the_job_runs_the_public_loader_on_mounted_files() {
        let j = job();
        let spec = serde_json::to_value(j.job()).unwrap();
        let c = &spec["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], format!("ghcr.io/scalar-labs/scalardb-schema-loader:{SCHEMA_LOADER_VERSION}"));
        assert_eq!(
            c["args"],
            json!([
                "-c",
                "/scalardb/config/database.properties",
                "-f",
                "/scalardb/schema/schema.json",
                "--coordinator"
            ])
        );
        assert_eq!(spec["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"], j.name);
    }

    #[test]
    fn no_secret_in_the_job_the_config_map_or_the_preview() {
        let j = job();
        for text in [
            serde_json::to_string(&j.job()).unwrap(),
            serde_json::to_string(&j.config_map()).unwrap(),
            j.preview().to_string(),
        ] {
            assert!(!text.contains("hunter2"), "{text}");
        }
    }

    #[test]
    fn delete_adds_the_loaders_delete_flag() {
        let mut j = job();
        j.delete = true;
        assert!(j.args().contains(&"-D".to_string()));
    }
}
