//! What to deploy (`Spec`, kept in the install record so status and
//! uninstall act on what install did), the options of the command at hand,
//! and the secrets, which are never recorded or printed.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::cli::{Identity, LbControllerMode, ProbeFrom, Target};
use crate::cli::{InstallArgs, ProbeArgs, SchemaArgs, StatusArgs, UninstallArgs};
use crate::error::{Error, Result};
use crate::inputs::{self, RELEASE_NAME_MAX, check_name};
use crate::pins;
use crate::properties::{DatabaseProperties, STORAGES};

/// Where a chart comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChartRef {
    pub name: String,
    /// A repository URL, or None for a local chart path in `name`.
    pub repo: Option<String>,
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    /// What serves GraphQL; records written before targets existed are `graphql`.
    #[serde(default)]
    pub target: Target,
    pub release: String,
    pub namespace: String,
    pub chart: ChartRef,
    /// The node image repository (`--target cluster`); the chart's appVersion is its tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_image: Option<String>,
    pub replicas: u32,
    pub scalardb: ScalarDbConfig,
    pub iam: IamSpec,
    pub lb_controller: LbcSpec,
    /// Subnets chosen with --subnets; empty: the cluster VPC's private subnets.
    pub subnets: Vec<String>,
    /// None: no dedicated nodes.
    pub nodes: Option<NodeSpec>,
    pub registry_secret: SecretRef,
    pub database_secret: SecretRef,
}

impl Spec {
    /// An install must name what the GraphQL server serves (the defaults status and uninstall use need not).
    pub fn require_namespaces(&self) -> Result<()> {
        if self.scalardb.namespaces.is_empty() {
            return Err(Error::prerequisite(
                "no ScalarDB namespaces given: the GraphQL server must know which to serve",
            )
            .hint("pass --namespaces ns1,ns2 (the namespaces of your schema), or --schema schema.json"));
        }
        Ok(())
    }

    /// What the install record keeps of it, and compares with: credentials in
    /// URLs and connection strings masked (`https://***@host`, `password=***`);
    /// the values file helm gets has them whole.
    pub fn recorded(&self) -> Spec {
        let mask = |s: &Option<String>| s.as_deref().map(|t| crate::redaction::masked(t).into_owned());
        let mut s = self.clone();
        s.scalardb.contact_points = mask(&self.scalardb.contact_points);
        s.chart.repo = mask(&self.chart.repo);
        s.lb_controller.chart.repo = mask(&self.lb_controller.chart.repo);
        s
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScalarDbConfig {
    pub storage: Option<String>,
    pub contact_points: Option<String>,
    pub contact_port: Option<u16>,
    pub namespaces: Vec<String>,
    pub transaction_manager: Option<String>,
    pub isolation_level: Option<String>,
    pub serializable_strategy: Option<String>,
    pub path: String,
    pub graphiql: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IamSpec {
    pub policy_name: String,
    pub role_name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LbcSpec {
    /// The cluster already runs a controller; verify it, do not install it.
    pub external: bool,
    pub release: String,
    pub namespace: String,
    pub chart: ChartRef,
    pub service_account: String,
    /// How the controller gets its AWS credentials; records written before Pod Identity are IRSA's.
    #[serde(default)]
    pub identity: Identity,
    /// Which controller serves the Ingress; records written before Auto Mode are self-managed.
    #[serde(default)]
    pub mode: LbControllerMode,
    /// The IngressClass the release's Ingress names (`alb`, the chart's, unless on Auto Mode).
    #[serde(default = "chart_ingress_class")]
    pub ingress_class: String,
}

fn chart_ingress_class() -> String {
    pins::LBC_INGRESS_CLASS.into()
}

impl LbcSpec {
    /// The `spec.controller` of the IngressClass the release's Ingress names.
    pub fn class_controller(&self) -> &'static str {
        match self.mode {
            LbControllerMode::SelfManaged => pins::LBC_CLASS_CONTROLLER,
            LbControllerMode::AutoMode => pins::AUTO_MODE_CLASS_CONTROLLER,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSpec {
    pub label_key: String,
    pub label_value: String,
    pub taint: Taint,
    /// Nodes named with --nodes (labelled by install); empty: those already labelled.
    pub names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: String,
}

impl fmt::Display for Taint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}:{}", self.key, self.value, self.effect)
    }
}

/// A Secret by name, and whether this tool manages it (false: the user's own, only used).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    pub name: String,
    pub managed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
}

/// Which traversal is running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Install,
    Status,
    Uninstall,
}

/// Options of the command at hand; not recorded.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub mode: Mode,
    pub wait: bool,
    pub adopt: bool,
    /// --iam-policy-file, read once.
    pub iam_policy: Option<crate::policy::PolicyFile>,
    /// The user's -f files, merged in order.
    pub user_values: Value,
    /// --schema, read and validated once.
    pub schema: Option<crate::schema::Schema>,
    /// The text of --db-properties (for the Schema Loader's Secret only).
    pub db_properties: Option<String>,
    pub probe_url: Option<String>,
    pub probe_from: ProbeFrom,
    /// The image of the in-cluster probe Pod.
    pub probe_image: String,
    pub no_probe: bool,
    pub probe_requests: u32,
    pub keep_iam: bool,
    pub keep_lb_controller: bool,
    pub force: bool,
    pub force_finalizers: bool,
}

/// A value that must not be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, Default)]
pub struct Secrets {
    pub registry: Option<(String, Secret)>,
    pub database: Option<(String, Secret)>,
    /// ScalarDB Cluster's license key and its check certificate (PEM).
    pub license: Option<(Secret, Secret)>,
}

pub fn default_role_name(cluster: &str) -> String {
    let name = format!("{cluster}-aws-load-balancer-controller");
    name.chars().take(64).collect()
}

/// More GraphQL pods than this is no deployment this plugin makes (the chart takes an int32).
pub const MAX_REPLICAS: u64 = 1000;
/// Continuations a transaction probe may send.
pub const MAX_PROBE_REQUESTS: u64 = 1000;

pub fn parse_label(text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains(',') => {
            inputs::check_label_key("--node-selector", "key", k)?;
            inputs::check_label_value("--node-selector", "value", v)?;
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(Error::usage(format!("--node-selector {text:?} is not KEY=VALUE"))
            .hint("give one label, e.g. --node-selector agentpool=scalardbgraphqlpool")),
    }
}

pub fn parse_taint(text: &str) -> Result<Taint> {
    let bad = || {
        Error::usage(format!("--taint {text:?} is not KEY=VALUE:EFFECT"))
            .hint("e.g. --taint kubernetes.io/app=scalardbgraphqlpool:NoSchedule (EFFECT: NoSchedule, PreferNoSchedule, NoExecute)")
    };
    let (kv, effect) = text.rsplit_once(':').ok_or_else(bad)?;
    let (key, value) = kv.split_once('=').ok_or_else(bad)?;
    if key.is_empty() || !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
        return Err(bad());
    }
    inputs::check_label_key("--taint", "key", key)?;
    inputs::check_label_value("--taint", "value", value)?;
    Ok(Taint { key: key.into(), value: value.into(), effect: effect.into() })
}

/// Reads a secret from exactly one of stdin, a file or an environment variable.
fn read_secret(
    what: &str,
    stdin: bool,
    file: &Option<PathBuf>,
    env: &Option<String>,
    stdin_used: &mut bool,
) -> Result<Option<Secret>> {
    let given = usize::from(stdin) + usize::from(file.is_some()) + usize::from(env.is_some());
    if given > 1 {
        return Err(Error::usage(format!("the {what} is given more than one way"))
            .hint(format!("use one of --{what}-stdin, --{what}-file, --{what}-env")));
    }
    let value = if stdin {
        if *stdin_used {
            return Err(Error::usage("standard input can carry only one secret")
                .hint("give the other one with a --…-file or --…-env flag"));
        }
        *stdin_used = true;
        inputs::read_stdin(&format!("the {what}"), true)?
    } else if let Some(path) = file {
        inputs::read_input(&format!("--{what}-file"), path)?
    } else if let Some(var) = env {
        // helm, and any other child, must not inherit it.
        crate::process::scrub(var);
        std::env::var(var).map_err(|_| {
            Error::usage(format!("environment variable {var} (named by --{what}-env) is not set"))
                .hint(format!("export {var}, or use --{what}-file"))
        })?
    } else {
        return Ok(None);
    };
    let value = value.trim_end_matches(['\n', '\r']).to_string();
    if value.is_empty() {
        return Err(Error::usage(format!("the {what} is empty")));
    }
    Ok(Some(Secret::new(value)))
}

/// Reads the user's values files and merges them, later files winning (as helm does).
pub fn read_values_files(files: &[PathBuf]) -> Result<Value> {
    let mut merged = Value::Object(Default::default());
    for path in files {
        let text = inputs::read_input("-f", path)?;
        // Where, never what: a values file may hold passwords, and a YAML error's
        // snippet would show the lines around it.
        let v: Value = serde_saphyr::from_str(&text).map_err(|e| {
            let at = e.location().map(|l| format!(" at line {}, column {}", l.line(), l.column())).unwrap_or_default();
            Error::usage(format!("values file {} is not valid YAML{at}", path.display()))
                .hint("fix the YAML at that position (nothing of the file is shown: it may hold secrets)")
        })?;
        match v {
            Value::Object(_) => merge(&mut merged, v),
            Value::Null => {}
            _ => {
                return Err(Error::usage(format!("values file {} must hold a map of values", path.display())));
            }
        }
    }
    Ok(merged)
}

/// Helm's merge of values files: maps merge key by key, anything else is
/// replaced by the later file; a null is kept (it deletes a chart default).
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing @ Value::Object(_)) if v.is_object() => merge(existing, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Builds the spec, options and secrets of `install` from its flags; reads
/// the files it names. Bad input fails here, before anything is contacted.
/// `Spec::resolve` then adds what depends on the cluster.
pub fn for_install(a: &InstallArgs) -> Result<(Spec, Options, Secrets)> {
    check_name("--release", &a.release.release, RELEASE_NAME_MAX)?;
    if a.chart.replicas == 0 {
        return Err(Error::usage("--replicas 0: nothing would serve GraphQL behind the ALB")
            .hint("give at least 1 (the guide runs 3)"));
    }
    inputs::check_count("--replicas", a.chart.replicas.into(), MAX_REPLICAS, "the GraphQL pods")?;
    for (flag, repo) in [("--chart-repo", &a.chart.chart_repo), ("--lbc-chart-repo", &a.lbc.lbc_chart_repo)] {
        if let Some(repo) = repo
            && !std::path::Path::new(repo).exists()
        {
            inputs::check_chart_repo(flag, repo)?;
        }
    }
    if let Some(v) = &a.chart.chart_version {
        inputs::check_chart_version("--chart-version", v)?;
    }
    if let Some(v) = &a.lbc.lbc_chart_version {
        inputs::check_chart_version("--lbc-chart-version", v)?;
    }
    inputs::check_iam_name("--iam-policy-name", &a.iam.iam_policy_name, 128, "AWSLoadBalancerControllerIAMPolicy")?;
    if let Some(role) = &a.iam.iam_role_name {
        inputs::check_iam_name("--iam-role-name", role, 64, "scalardb-graphql-lb-controller")?;
    }
    if !a.scalardb.namespaces.is_empty() {
        inputs::check_scalardb_namespaces("--namespaces", &a.scalardb.namespaces)?;
    }
    for (flag, name) in [
        ("--registry-secret", Some(&a.registry.registry_secret)),
        ("--image-pull-secret", a.registry.image_pull_secret.as_ref()),
        ("--db-secret", a.database.db_secret.as_ref()),
        ("--existing-db-secret", a.database.existing_db_secret.as_ref()),
    ] {
        if let Some(name) = name {
            check_name(flag, name, 253)?;
        }
    }
    let (probe_from, probe_image) = probe_from(&a.probe)?;
    let (props, props_text) = match &a.scalardb.db_properties {
        Some(path) => {
            let text = inputs::read_input("--db-properties", path)?;
            let props = DatabaseProperties::parse(&text)
                .map_err(|e| Error::usage(format!("--db-properties {}: {e}", path.display())).hint("fix the file"))?;
            if let Some(p) = &props.path {
                inputs::check_graphql_path("--db-properties", p)?;
            }
            inputs::check_scalardb_namespaces("--db-properties' scalar.db.graphql.namespaces", &props.namespaces)?;
            (props, Some(text))
        }
        None => (DatabaseProperties::default(), None),
    };
    if let Some(storage) = &a.scalardb.storage
        && !STORAGES.contains(&storage.as_str())
    {
        return Err(Error::usage(format!("--storage {storage:?} is not a storage the chart accepts"))
            .hint(format!("use one of: {}", STORAGES.join(", "))));
    }
    let mut namespaces = a.scalardb.namespaces.clone();
    if namespaces.is_empty() {
        namespaces = props.namespaces.clone();
    }
    let schema = match &a.scalardb.schema {
        Some(path) => Some(crate::schema::Schema::read(path)?),
        None => None,
    };
    if let Some(schema) = &schema {
        if props_text.is_none() {
            return Err(Error::usage("--schema needs --db-properties: the Schema Loader connects with it")
                .hint("pass --db-properties database.properties (the guide's file)"));
        }
        if namespaces.is_empty() {
            namespaces = schema.namespaces();
        }
    }
    let mut stdin_used = false;
    let r = &a.registry;
    let registry_password = read_secret(
        "registry-password",
        r.registry_password_stdin,
        &r.registry_password_file,
        &r.registry_password_env,
        &mut stdin_used,
    )?;
    let registry = match (&r.registry_username, registry_password) {
        (Some(u), Some(p)) => Some((u.clone(), p)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(Error::usage("--registry-username needs a token")
                .hint("give it with --registry-password-stdin, --registry-password-file or --registry-password-env"));
        }
        (None, Some(_)) => return Err(Error::usage("a registry token was given without --registry-username")),
    };
    if a.target == Target::Cluster && (registry.is_some() || r.image_pull_secret.is_some()) {
        return Err(Error::usage("--target cluster pulls ScalarDB Cluster's public node images: no registry Secret")
            .hint("drop the --registry-… and --image-pull-secret flags (a private mirror goes in with -f values)"));
    }
    let d = &a.database;
    let db_password =
        read_secret("db-password", d.db_password_stdin, &d.db_password_file, &d.db_password_env, &mut stdin_used)?
            .or(props.password.clone().map(Secret::new));
    let db_username = d.db_username.clone().or(props.username.clone());
    let database = match (db_username, db_password) {
        (Some(u), Some(p)) => Some((u, p)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(Error::usage("a database user was given without a password")
                .hint("give it with --db-password-stdin/-file/-env, or scalar.db.password in --db-properties"));
        }
        (None, Some(_)) => {
            return Err(Error::usage("a database password was given without a user")
                .hint("pass --db-username, or scalar.db.username in --db-properties"));
        }
    };
    if database.is_some() && d.existing_db_secret.is_some() {
        return Err(Error::usage("database credentials were given together with --existing-db-secret")
            .hint("either let install create the Secret from the credentials, or name an existing one"));
    }
    let user_values = read_values_files(&a.chart.values)?;
    let iam_policy = match &a.iam.iam_policy_file {
        Some(path) => Some(crate::policy::read_policy_file(path)?),
        None => None,
    };
    let nodes = if a.nodes.no_dedicated_nodes {
        None
    } else {
        let (label_key, label_value) = parse_label(&a.nodes.node_selector)?;
        Some(NodeSpec { label_key, label_value, taint: parse_taint(&a.nodes.taint)?, names: a.nodes.nodes.clone() })
    };
    let (chart_name, chart_version) = match a.target {
        Target::Graphql => (pins::GRAPHQL_CHART, pins::GRAPHQL_CHART_VERSION),
        Target::Cluster => (pins::CLUSTER_CHART, pins::CLUSTER_CHART_VERSION),
    };
    let chart = match &a.chart.chart_repo {
        Some(repo) if std::path::Path::new(repo).exists() => ChartRef { name: repo.clone(), repo: None, version: None },
        repo => ChartRef {
            name: chart_name.into(),
            repo: Some(repo.clone().unwrap_or_else(|| pins::GRAPHQL_CHART_REPO.into())),
            version: Some(a.chart.chart_version.clone().unwrap_or_else(|| chart_version.into())),
        },
    };
    let license = read_license(a, &mut stdin_used)?;
    if a.target == Target::Cluster && database.is_some() != license.is_some() {
        return Err(Error::usage(if database.is_some() {
            "--target cluster: database credentials were given without the license"
        } else {
            "--target cluster: the license was given without database credentials"
        })
        .hint("the nodes' Secret holds both: give --license-key-… and --license-cert-… with the database credentials, or name a Secret with --existing-db-secret"));
    }
    if license.is_some() && d.existing_db_secret.is_some() {
        return Err(Error::usage("the license was given together with --existing-db-secret").hint(
            "either let install create the Secret from the credentials and the license, or name an existing one",
        ));
    }
    let db_secret_default = match a.target {
        Target::Graphql => format!("{}-db", a.release.release),
        Target::Cluster => format!("{}-cluster-env", a.release.release),
    };
    let db_secret_name = d.existing_db_secret.clone().or(d.db_secret.clone()).unwrap_or(db_secret_default);
    let spec = Spec {
        target: a.target,
        release: a.release.release.clone(),
        namespace: String::new(),
        chart,
        node_image: (a.target == Target::Cluster)
            .then(|| a.license.node_image.clone().unwrap_or_else(|| pins::CLUSTER_NODE_IMAGE.into())),
        replicas: a.chart.replicas,
        scalardb: ScalarDbConfig {
            storage: a.scalardb.storage.clone().or(props.storage),
            contact_points: a.scalardb.contact_points.clone().or(props.contact_points),
            contact_port: a.scalardb.contact_port.or(props.contact_port),
            namespaces,
            transaction_manager: props.transaction_manager,
            isolation_level: props.isolation_level,
            serializable_strategy: props.serializable_strategy,
            path: props.path.unwrap_or_else(|| "/graphql".into()),
            graphiql: props.graphiql,
        },
        iam: IamSpec {
            policy_name: a.iam.iam_policy_name.clone(),
            role_name: a.iam.iam_role_name.clone().unwrap_or_default(),
        },
        lb_controller: LbcSpec {
            external: a.lbc.skip_lb_controller,
            release: pins::LBC_RELEASE.into(),
            namespace: pins::LBC_NAMESPACE.into(),
            chart: ChartRef {
                name: pins::LBC_CHART.into(),
                repo: Some(a.lbc.lbc_chart_repo.clone().unwrap_or_else(|| pins::LBC_CHART_REPO.into())),
                version: Some(a.lbc.lbc_chart_version.clone().unwrap_or_else(|| pins::LBC_CHART_VERSION.into())),
            },
            service_account: pins::LBC_SERVICE_ACCOUNT.into(),
            // Chosen once the cluster is known (`controller::choose`), unless the flags name them.
            identity: a.iam.identity.unwrap_or_default(),
            mode: a.lbc.lb_controller.unwrap_or_default(),
            ingress_class: pins::LBC_INGRESS_CLASS.into(),
        },
        subnets: a.network.subnets.clone(),
        nodes,
        registry_secret: SecretRef {
            name: r.image_pull_secret.clone().unwrap_or_else(|| r.registry_secret.clone()),
            managed: r.image_pull_secret.is_none(),
            server: Some(r.registry_server.clone()),
        },
        database_secret: SecretRef { name: db_secret_name, managed: d.existing_db_secret.is_none(), server: None },
    };
    let options = Options {
        wait: a.wait,
        adopt: a.iam.adopt,
        iam_policy,
        user_values,
        schema,
        db_properties: props_text,
        probe_url: a.probe.probe_url.clone(),
        probe_from,
        probe_image,
        no_probe: a.probe.no_probe,
        probe_requests: crate::cli::PROBE_REQUESTS,
        ..Options::default()
    };
    Ok((spec, options, Secrets { registry, database, license }))
}

/// `--license-key-…` and `--license-cert-…`: both or neither, and only for `--target cluster`.
fn read_license(a: &InstallArgs, stdin_used: &mut bool) -> Result<Option<(Secret, Secret)>> {
    let l = &a.license;
    let key = read_secret("license-key", l.license_key_stdin, &l.license_key_file, &l.license_key_env, stdin_used)?;
    let cert =
        read_secret("license-cert", l.license_cert_stdin, &l.license_cert_file, &l.license_cert_env, stdin_used)?;
    if a.target != Target::Cluster && (key.is_some() || cert.is_some() || l.node_image.is_some()) {
        return Err(Error::usage("the license and --node-image are for ScalarDB Cluster's nodes")
            .hint("add --target cluster, or drop the --license-… and --node-image flags"));
    }
    if let Some(image) = &l.node_image {
        inputs::check_image("--node-image", image)?;
        if image.contains('@') || image.rsplit('/').next().is_some_and(|last| last.contains(':')) {
            return Err(Error::usage(format!("--node-image {image:?} names a tag or digest; it takes a repository"))
                .hint("drop the tag: the chart's version picks it (or set scalardbCluster.image.tag with -f)"));
        }
    }
    match (key, cert) {
        (Some(k), Some(c)) => Ok(Some((k, c))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(Error::usage("a license key was given without its check certificate")
            .hint("give the PEM with --license-cert-file, --license-cert-env or --license-cert-stdin")),
        (None, Some(_)) => Err(Error::usage("a license check certificate was given without the license key")
            .hint("give the key with --license-key-file, --license-key-env or --license-key-stdin")),
    }
}

/// The spec status and uninstall act on when there is no install record: the defaults.
pub fn defaults(release: &str, cluster: &str, namespace: &str) -> Spec {
    let args = <crate::cli::Cli as clap::Parser>::try_parse_from(["x", "install", "--release", release])
        .expect("the defaults parse");
    let crate::cli::Command::Install(a) = args.command else { unreachable!() };
    for_install(&a).expect("the defaults are valid").0.resolve(cluster, namespace)
}

impl Spec {
    /// Fills in what depends on the cluster: the release namespace and the default role name.
    pub fn resolve(mut self, cluster: &str, namespace: &str) -> Spec {
        self.namespace = namespace.to_string();
        if self.iam.role_name.is_empty() {
            self.iam.role_name = default_role_name(cluster);
        }
        self
    }
}

/// `--timeout`: a duration such as `90s` or `10m` (its default is the flag's, in
/// cli.rs). Every command has a bound: 0 is refused, not taken as none.
pub fn parse_timeout(text: &str) -> Result<Duration> {
    crate::cli::parse_duration(text)
        .map_err(|e| Error::usage(format!("--timeout {text:?}: {e}")).hint("give a duration such as 90s, 10m or 1h"))?
        .ok_or_else(|| {
            Error::usage(format!("--timeout {text:?}: every command has a bound, and 0 is none"))
                .hint("give how long the command may take, such as 10m")
        })
}

/// Where the probe runs and with which image: `--probe-url` means this
/// machine; otherwise a Pod in the cluster unless `--probe-from local`.
pub fn probe_from(a: &ProbeArgs) -> Result<(ProbeFrom, String)> {
    let from = match (a.probe_from, &a.probe_url) {
        (Some(ProbeFrom::Cluster), Some(_)) => {
            return Err(Error::usage("--probe-url probes from this machine, --probe-from cluster from a Pod")
                .hint("drop one of them: --probe-url URL alone implies --probe-from local"));
        }
        (Some(from), _) => from,
        (None, Some(_)) => ProbeFrom::Local,
        (None, None) => ProbeFrom::Cluster,
    };
    if from == ProbeFrom::Local && a.probe_image.is_some() {
        return Err(Error::usage("--probe-image sets the probe Pod's image, but this probe runs from this machine")
            .hint("drop --probe-image, or probe from the cluster (no --probe-url, no --probe-from local)"));
    }
    if let Some(image) = &a.probe_image {
        inputs::check_image("--probe-image", image)?;
    }
    if let Some(url) = &a.probe_url {
        inputs::check_probe_url(url)?;
    }
    Ok((from, a.probe_image.clone().unwrap_or_else(|| crate::pins::PROBE_IMAGE.to_string())))
}

/// Status's options, and its `--timeout`.
pub fn for_status(a: &StatusArgs) -> Result<(Options, Duration)> {
    check_name("--release", &a.release.release, RELEASE_NAME_MAX)?;
    let timeout = parse_timeout(&a.timeout)?;
    let (probe_from, probe_image) = probe_from(&a.probe)?;
    inputs::check_count(
        "--probe-requests",
        a.probe_requests.into(),
        MAX_PROBE_REQUESTS,
        "the continuations of the transaction probe",
    )?;
    let options = Options {
        mode: Mode::Status,
        wait: a.wait,
        probe_url: a.probe.probe_url.clone(),
        probe_from,
        probe_image,
        no_probe: a.probe.no_probe,
        probe_requests: a.probe_requests,
        ..Options::default()
    };
    Ok((options, timeout))
}

/// Uninstall's options, and its `--timeout`.
pub fn for_uninstall(a: &UninstallArgs) -> Result<(Options, Duration)> {
    check_name("--release", &a.release.release, RELEASE_NAME_MAX)?;
    let timeout = parse_timeout(&a.wait_args.timeout)?;
    let options = Options {
        mode: Mode::Uninstall,
        wait: true,
        keep_iam: a.keep_iam,
        keep_lb_controller: a.keep_lb_controller,
        force: a.force,
        force_finalizers: a.force_finalizers,
        ..Options::default()
    };
    Ok((options, timeout))
}

/// What `schema load|delete` runs the Schema Loader with: the schema file, read and checked,
/// and the text of `--db-properties`, checked to parse.
pub fn for_schema(a: &SchemaArgs) -> Result<(crate::schema::Schema, String)> {
    if let Some(v) = &a.schema_loader_version {
        inputs::check_image_tag("--schema-loader-version", v)?;
    }
    let schema = crate::schema::Schema::read(&a.file)?;
    let properties = inputs::read_input("--db-properties", &a.db_properties)?;
    DatabaseProperties::parse(&properties)
        .map_err(|e| Error::usage(format!("--db-properties {}: {e}", a.db_properties.display())))?;
    Ok((schema, properties))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guides_taint_parses() {
        let t = parse_taint("kubernetes.io/app=scalardbgraphqlpool:NoSchedule").unwrap();
        assert_eq!(
            (t.key.as_str(), t.value.as_str(), t.effect.as_str()),
            ("kubernetes.io/app", "scalardbgraphqlpool", "NoSchedule")
        );
        assert_eq!(t.to_string(), "kubernetes.io/app=scalardbgraphqlpool:NoSchedule");
    }

    #[test]
    fn a_taint_without_a_known_effect_is_refused() {
        assert!(parse_taint("a=b").is_err());
        assert!(parse_taint("a=b:Sometimes").is_err());
        assert_eq!(parse_taint("a=b:Never").unwrap_err().exit_code(), 2);
    }

    #[test]
    fn role_names_fit_iam() {
        assert!(default_role_name(&"c".repeat(80)).len() <= 64);
        assert_eq!(default_role_name("prod"), "prod-aws-load-balancer-controller");
    }

    #[test]
    fn secrets_do_not_debug_print() {
        assert_eq!(format!("{:?}", Secret::new("hunter2".into())), "<redacted>");
    }

    #[test]
    fn defaults_follow_the_guide() {
        let s = defaults("scalardb-graphql", "prod", "default");
        let n = s.nodes.unwrap();
        assert_eq!((n.label_key.as_str(), n.label_value.as_str()), ("agentpool", "scalardbgraphqlpool"));
        assert_eq!(n.taint.to_string(), "kubernetes.io/app=scalardbgraphqlpool:NoSchedule");
        assert_eq!(s.registry_secret.name, "reg-docker-secrets");
        assert_eq!(s.iam.policy_name, "AWSLoadBalancerControllerIAMPolicy");
        assert_eq!(s.chart.version.as_deref(), Some(pins::GRAPHQL_CHART_VERSION));
    }
}
