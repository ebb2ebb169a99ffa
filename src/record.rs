//! The install record: a ConfigMap in the release namespace saying what
//! install used and what it created, written as components complete (intent
//! first, so an interrupted install is still known), read by status and
//! uninstall. It never holds a secret value.
//!
//! AWS resources this tool creates also carry tags saying so; the record is
//! the index, the tags are the proof on the resource itself.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ObjectMeta, PostParams};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};
use crate::spec::Spec;

const DATA_KEY: &str = "record.json";

/// Something install found or made; `created` says whether this tool made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owned {
    pub id: String,
    pub created: bool,
}

impl Owned {
    /// Whether the record claims this tool created it (see `ownership::unproven`).
    pub fn claimed(owned: Option<&Owned>) -> bool {
        owned.is_some_and(|o| o.created)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetTag {
    pub subnet: String,
    pub key: String,
    pub value: String,
    /// false: the tag was there before install (used, never removed).
    pub created: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeChange {
    pub node: String,
    /// `key=value:Effect` this tool added, if any.
    pub taint: Option<String>,
    /// `key=value` this tool added, if any.
    pub label: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControllerRecord {
    pub release: String,
    pub namespace: String,
    /// false: a controller was already there (or --skip-lb-controller); never removed.
    pub installed: bool,
    /// CRDs the chart brought that were not there before.
    pub crds: Vec<String>,
}

/// What `--adopt` changed on an IAM role this tool did not create, so that
/// uninstall can give the role back as install found it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdoptedRole {
    /// The trust policy before install replaced it; None when install left it alone.
    pub trust_before: Option<String>,
    /// Whether install attached the controller's policy (it was not attached before).
    pub attached_policy: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub version: u32,
    pub spec: Option<Spec>,
    #[serde(default)]
    pub namespace_created: bool,
    pub oidc_provider: Option<Owned>,
    pub iam_policy: Option<Owned>,
    pub iam_role: Option<Owned>,
    #[serde(default)]
    pub adopted_role: Option<AdoptedRole>,
    pub service_account: Option<Owned>,
    /// EKS Pod Identity: the agent add-on (created: install added it) and the controller's association (its id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_identity_agent: Option<Owned>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_identity_association: Option<Owned>,
    /// EKS Auto Mode: the IngressClass and IngressClassParams (one name), when install made them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_mode_class: Option<Owned>,
    #[serde(default)]
    pub subnet_tags: Vec<SubnetTag>,
    pub lb_controller: Option<ControllerRecord>,
    #[serde(default)]
    pub nodes: Vec<NodeChange>,
    pub registry_secret: Option<Owned>,
    pub database_secret: Option<Owned>,
    pub schema: Option<Owned>,
    /// The Schema Loader's Job, Secret and ConfigMap (one name), from before they
    /// are created until they are cleaned up.
    #[serde(default)]
    pub schema_loader: Option<Owned>,
    pub graphql_release: Option<Owned>,
    /// `--target cluster`: the ALB Ingress this tool made for the release.
    #[serde(default)]
    pub owned_ingress: Option<Owned>,
    /// Whether install added the pod-readiness-gate label to the release namespace.
    #[serde(default)]
    pub readiness_gate_label: bool,
    /// Uninstall ran and kept this record only for what it had to leave in place
    /// (the release is gone): it no longer makes the release a user of the shared pieces.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub uninstalled: bool,
}

impl Record {
    /// Refuses an install of the other target over a release that is there: an uninstall that
    /// kept the controller and IAM keeps the record of them, and then either target installs
    /// over what both share.
    pub fn refuse_target_switch(&self, spec: &Spec) -> Result<()> {
        let release_there = self.graphql_release.is_some() || self.owned_ingress.is_some();
        let Some(installed) = self.spec.as_ref().map(|r| r.target).filter(|t| *t != spec.target && release_there)
        else {
            return Ok(());
        };
        Err(Error::prerequisite(format!(
            "release {}/{} is installed with --target {}; this install is --target {}",
            spec.namespace,
            spec.release,
            installed.as_str(),
            spec.target.as_str()
        ))
        .hint(format!(
            "to switch, remove it first and keep what both share: kubectl scalardb-graphql uninstall --release {} --keep-lb-controller --keep-iam; or install under another --release",
            spec.release
        )))
    }

    /// Refuses a record that install could not have written where it was
    /// found: one naming another release or namespace than its own, or a
    /// controller release elsewhere than where this tool installs it. Such a
    /// record was edited, and nothing it names is acted on.
    pub fn vet(&self, namespace: &str, release: &str) -> Result<()> {
        let cm = format!("{namespace}/{}", configmap_name(release));
        let mut wrong = vec![];
        let controller = (crate::pins::LBC_NAMESPACE, crate::pins::LBC_RELEASE);
        if let Some(spec) = &self.spec {
            if spec.namespace != namespace || spec.release != release {
                wrong.push(format!("it names release {}/{}", spec.namespace, spec.release));
            }
            let lbc = &spec.lb_controller;
            if (lbc.namespace.as_str(), lbc.release.as_str()) != controller {
                wrong.push(format!("it names controller release {}/{}", lbc.namespace, lbc.release));
            }
        }
        if let Some(c) = &self.lb_controller
            && (c.namespace.as_str(), c.release.as_str()) != controller
        {
            wrong.push(format!("it names controller release {}/{}", c.namespace, c.release));
        }
        if wrong.is_empty() {
            return Ok(());
        }
        Err(Error::prerequisite(format!(
            "the install record {cm} was not written by install for this release ({}): nothing was changed",
            wrong.join("; ")
        ))
        .hint(format!(
            "inspect it with `kubectl get configmap -n {namespace} {} -o yaml`; if it is not yours, delete it",
            configmap_name(release)
        )))
    }
}

/// A record's ConfigMap is named after its release, with this suffix.
pub const NAME_SUFFIX: &str = "-install-record";

pub fn configmap_name(release: &str) -> String {
    format!("{release}{NAME_SUFFIX}")
}

/// The record a ConfigMap holds.
pub fn parse(cm: &ConfigMap) -> serde_json::Result<Record> {
    let text = cm.data.as_ref().and_then(|d| d.get(DATA_KEY)).map(String::as_str).unwrap_or_default();
    serde_json::from_str(text)
}

/// The record as read, with the version of the ConfigMap that held it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub record: Record,
    /// The ConfigMap's resourceVersion: a write succeeds only over this one.
    pub version: String,
}

/// Reads the record; None when there is none (or no such namespace).
pub async fn load(client: &kube::Client, namespace: &str, release: &str) -> Result<Option<Stored>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let name = configmap_name(release);
    let Some(cm) = api.get_opt(&name).await.context(format!("reading the install record {namespace}/{name}"))? else {
        return Ok(None);
    };
    let record = parse(&cm).context(format!("parsing the install record {namespace}/{name}"))?;
    Ok(Some(Stored { record, version: cm.metadata.resource_version.unwrap_or_default() }))
}

/// The record as install and uninstall change it; saves only when it changed.
pub struct Recorder {
    client: kube::Client,
    namespace: String,
    name: String,
    pub record: Record,
    /// What the ConfigMap holds, and its resourceVersion; None while there is none.
    saved: Option<Stored>,
}

impl Recorder {
    pub fn new(client: kube::Client, namespace: &str, release: &str, existing: Option<Stored>) -> Recorder {
        Recorder {
            client,
            namespace: namespace.to_string(),
            name: configmap_name(release),
            record: existing.as_ref().map(|s| s.record.clone()).unwrap_or(Record { version: 1, ..Default::default() }),
            saved: existing,
        }
    }

    /// Changes the record and writes it through at once.
    pub async fn update(&mut self, change: impl FnOnce(&mut Record)) -> Result<()> {
        change(&mut self.record);
        self.save().await
    }

    /// Writes the record over exactly the version this run last read or
    /// wrote: a record changed by anyone else meanwhile stops the run.
    pub async fn save(&mut self) -> Result<()> {
        if self.saved.as_ref().map(|s| &s.record) == Some(&self.record) {
            return Ok(());
        }
        self.ensure_namespace().await?;
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(crate::ownership::managed_labels()),
                resource_version: self.saved.as_ref().map(|s| s.version.clone()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                DATA_KEY.to_string(),
                serde_json::to_string_pretty(&self.record).context("rendering the install record")?,
            )])),
            ..Default::default()
        };
        let what = format!("writing the install record {}/{}", self.namespace, self.name);
        let written = if self.saved.is_some() {
            api.replace(&self.name, &PostParams::default(), &cm).await
        } else {
            api.create(&PostParams::default(), &cm).await
        };
        let written = match written {
            Err(kube::Error::Api(e)) if e.code == 409 => {
                return Err(Error::failed(format!(
                    "the install record {}/{} was changed by someone else during this run; stopped",
                    self.namespace, self.name
                ))
                .hint("run `kubectl scalardb-graphql status` to see the state, then run the command again"));
            }
            other => other.context(&what)?,
        };
        self.saved = Some(Stored {
            record: self.record.clone(),
            version: written.metadata.resource_version.unwrap_or_default(),
        });
        Ok(())
    }

    /// The record lives in the release namespace; create it (and say so) if missing.
    pub async fn ensure_namespace(&mut self) -> Result<()> {
        if self.saved.is_some() {
            return Ok(());
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        if api.get_opt(&self.namespace).await.context(format!("reading namespace {}", self.namespace))?.is_none() {
            self.record.namespace_created = true;
            let ns = Namespace {
                metadata: ObjectMeta {
                    name: Some(self.namespace.clone()),
                    labels: Some(crate::ownership::managed_labels()),
                    ..Default::default()
                },
                ..Default::default()
            };
            api.create(&PostParams::default(), &ns).await.context(format!("creating namespace {}", self.namespace))?;
        }
        Ok(())
    }

    /// Deletes the record itself (the last step of uninstall).
    pub async fn delete(&mut self) -> Result<()> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        match api.delete(&self.name, &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e).context("deleting the install record"),
        }
        self.saved = None;
        Ok(())
    }
}
