//! Command-line definitions only: what the user can type, parsed without side
//! effects. `context.rs` turns these into settings that touch the system.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

const ABOUT: &str = "Deploy ScalarDB GraphQL on EKS behind an internal, cookie-sticky ALB, check it, and remove it.";

#[derive(Debug, Parser)]
#[command(
    name = "kubectl scalardb-graphql",
    bin_name = "kubectl scalardb-graphql",
    version,
    about = ABOUT,
    propagate_version = true,
    disable_help_subcommand = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Connection and output settings, resolved as kubectl resolves them.
#[derive(Debug, Args, Clone, Default)]
pub struct GlobalArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, a path list, else ~/.kube/config)
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Namespace of the GraphQL release (default: the context's namespace)
    #[arg(allow_hyphen_values = true, short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Username to impersonate for Kubernetes calls
    #[arg(long = "as", global = true, value_name = "USER")]
    pub as_user: Option<String>,
    /// Group to impersonate for Kubernetes calls; repeat for several
    #[arg(long = "as-group", global = true, value_name = "GROUP")]
    pub as_group: Vec<String>,
    /// Timeout for one Kubernetes request, e.g. 30s or 1m (0 means none)
    #[arg(allow_hyphen_values = true, long, global = true, value_name = "DURATION")]
    pub request_timeout: Option<String>,
    /// AWS region (default: the AWS SDK's chain, then the kube context's EKS ARN)
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,
    /// AWS shared-config profile
    #[arg(long, global = true, value_name = "PROFILE")]
    pub profile: Option<String>,
    /// EKS cluster name (default: derived from the kube context when it points at EKS)
    #[arg(long, global = true, value_name = "NAME")]
    pub cluster_name: Option<String>,
    /// When to color output
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub color: ColorChoice,
}

#[derive(Debug, Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
pub enum ColorChoice {
    #[default]
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
    Yaml,
}

/// Also the values of `status --category` (kebab-case, as in the output).
#[derive(Debug, Clone, Copy, serde::Serialize, ValueEnum, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    Cluster,
    Iam,
    LbController,
    Subnets,
    Nodes,
    Graphql,
    Ingress,
    Alb,
    Probe,
}

impl Category {
    pub fn title(self) -> &'static str {
        match self {
            Category::Cluster => "cluster",
            Category::Iam => "iam",
            Category::LbController => "lb-controller",
            Category::Subnets => "subnets",
            Category::Nodes => "nodes",
            Category::Graphql => "graphql release",
            Category::Ingress => "ingress",
            Category::Alb => "alb",
            Category::Probe => "probe",
        }
    }
}

/// What serves GraphQL: the standalone server's chart, or ScalarDB Cluster's nodes.
#[derive(Debug, Clone, Copy, ValueEnum, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The scalardb-graphql chart (the guide's standalone GraphQL server)
    #[default]
    Graphql,
    /// The scalardb-cluster chart with its nodes' GraphQL on, behind an Ingress this tool owns
    Cluster,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Graphql => "graphql",
            Target::Cluster => "cluster",
        }
    }
}

/// How the controller gets its AWS credentials.
#[derive(Debug, Clone, Copy, ValueEnum, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Identity {
    /// EKS Pod Identity: the eks-pod-identity-agent add-on and one association; no OIDC provider, no annotation
    PodIdentity,
    /// IAM roles for service accounts: the cluster's OIDC provider and the ServiceAccount's role annotation
    #[default]
    Irsa,
}

impl Identity {
    pub fn as_str(self) -> &'static str {
        match self {
            Identity::PodIdentity => "pod-identity",
            Identity::Irsa => "irsa",
        }
    }
}

/// Which ALB controller serves the release's Ingress.
#[derive(Debug, Clone, Copy, ValueEnum, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LbControllerMode {
    /// The AWS Load Balancer Controller, installed by this tool with its IAM
    #[default]
    SelfManaged,
    /// EKS Auto Mode's own ALB controller: no controller, IAM or webhook to install
    AutoMode,
}

impl LbControllerMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LbControllerMode::SelfManaged => "self-managed",
            LbControllerMode::AutoMode => "auto-mode",
        }
    }
}

/// Where the end-to-end probe runs.
#[derive(Debug, Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
pub enum ProbeFrom {
    /// A short-lived Pod in the release namespace, inside the VPC
    #[default]
    Cluster,
    /// This machine (a bastion, or a tunnel given with --probe-url)
    Local,
}

/// The end-to-end probe's flags, shared by install and status.
#[derive(Debug, Args, Clone)]
pub struct ProbeArgs {
    /// Where the probe runs: a Pod in the cluster, or this machine
    #[arg(long, value_enum, value_name = "WHERE")]
    pub probe_from: Option<ProbeFrom>,
    /// Probe the GraphQL endpoint at this base URL from this machine (a bastion, a tunnel); implies --probe-from local
    #[arg(long, value_name = "URL")]
    pub probe_url: Option<String>,
    /// The probe Pod's image (a mirror of the pinned python image)
    #[arg(long, value_name = "IMAGE")]
    pub probe_image: Option<String>,
    /// Skip the end-to-end probe
    #[arg(long, conflicts_with_all = ["probe_url", "probe_from", "probe_image"])]
    pub no_probe: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Converge everything the deployment needs, in order; safe to re-run
    Install(Box<InstallArgs>),
    /// Check the deployment end to end, including that the ALB keeps a transaction on one pod
    Status(StatusArgs),
    /// Remove exactly what install created, in the order that leaks nothing
    Uninstall(UninstallArgs),
    /// Load or delete the ScalarDB schema with the Schema Loader, run as a Job in the cluster
    #[command(subcommand)]
    Schema(SchemaCommand),
    /// Show the plugin's version, the helm it uses, the cluster's version and the pinned defaults
    Version(VersionArgs),
    /// Print a shell completion script (bash, zsh, fish) or kubectl's plugin completion shim
    Completion(CompletionArgs),
}

/// Which release, in which namespace (with -n).
#[derive(Debug, Args, Clone)]
pub struct ReleaseArgs {
    /// Name of the scalardb-graphql Helm release
    #[arg(allow_hyphen_values = true, long, default_value = "scalardb-graphql", value_name = "NAME")]
    pub release: String,
}

/// How a command that changes things is reviewed: shown, or asked.
#[derive(Debug, Args, Clone)]
pub struct ChangeArgs {
    /// Print every change the command would make, and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Output format of --dry-run
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Do not ask for confirmation
    #[arg(short = 'y', long)]
    pub yes: bool,
}

#[derive(Debug, Args, Clone)]
pub struct WaitArgs {
    /// How long the whole command may take, e.g. 90s, 10m (0 is refused: every command has a bound)
    #[arg(allow_hyphen_values = true, long, default_value = "10m", value_name = "DURATION")]
    pub timeout: String,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Install")]
pub struct InstallArgs {
    #[command(flatten)]
    pub release: ReleaseArgs,
    #[command(flatten)]
    pub change: ChangeArgs,
    /// Wait for the ALB and probe it (use --wait=false to stop after the releases)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", value_name = "BOOL")]
    pub wait: bool,
    #[command(flatten)]
    pub wait_args: WaitArgs,
    #[command(flatten)]
    pub probe: ProbeArgs,
    /// What serves GraphQL: graphql (the scalardb-graphql chart) or cluster (ScalarDB Cluster's nodes)
    #[arg(long, value_enum, default_value_t = Target::Graphql, value_name = "TARGET")]
    pub target: Target,

    #[command(flatten)]
    pub chart: ChartArgs,
    #[command(flatten)]
    pub scalardb: ScalarDbArgs,
    #[command(flatten)]
    pub iam: IamArgs,
    #[command(flatten)]
    pub lbc: LbcArgs,
    #[command(flatten)]
    pub network: NetworkArgs,
    #[command(flatten)]
    pub nodes: NodeArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub license: LicenseArgs,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "GraphQL chart")]
pub struct ChartArgs {
    /// Version of the chart (scalardb-graphql, or scalardb-cluster with --target cluster)
    #[arg(long, value_name = "VERSION")]
    pub chart_version: Option<String>,
    /// Chart repository URL (a mirror), or a local chart directory or .tgz
    #[arg(long, value_name = "URL|PATH")]
    pub chart_repo: Option<String>,
    /// Number of GraphQL server pods
    #[arg(allow_hyphen_values = true, long, default_value_t = 3, value_name = "N")]
    pub replicas: u32,
    /// A values file merged over the generated values, last wins; repeat for several
    #[arg(short = 'f', long = "values", value_name = "FILE")]
    pub values: Vec<PathBuf>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "ScalarDB")]
pub struct ScalarDbArgs {
    /// ScalarDB namespaces to serve, comma-separated (required unless --schema or --db-properties names them)
    #[arg(long, value_delimiter = ',', value_name = "NS,...")]
    pub namespaces: Vec<String>,
    /// ScalarDB schema file: loaded before the chart, and its namespaces served
    #[arg(long, value_name = "FILE")]
    pub schema: Option<PathBuf>,
    /// A ScalarDB database.properties file, mapped onto the chart's configuration and the database Secret
    #[arg(long, value_name = "FILE")]
    pub db_properties: Option<PathBuf>,
    /// Storage (cassandra, cosmos, dynamo, jdbc, grpc)
    #[arg(long, value_name = "STORAGE")]
    pub storage: Option<String>,
    /// Database contact points (a host, an endpoint URL, a JDBC URL or a region)
    #[arg(long, value_name = "POINTS")]
    pub contact_points: Option<String>,
    /// Database port
    #[arg(long, value_name = "PORT")]
    pub contact_port: Option<u16>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "IAM")]
pub struct IamArgs {
    /// The controller's IAM policy document, instead of fetching the pinned upstream one
    #[arg(long, value_name = "FILE")]
    pub iam_policy_file: Option<PathBuf>,
    /// Name of the controller's IAM policy
    #[arg(long, default_value = "AWSLoadBalancerControllerIAMPolicy", value_name = "NAME")]
    pub iam_policy_name: String,
    /// Name of the controller's IAM role (default: <cluster>-aws-load-balancer-controller)
    #[arg(long, value_name = "NAME")]
    pub iam_role_name: Option<String>,
    /// Take over an IAM role or policy of the same name that this tool did not create
    #[arg(long)]
    pub adopt: bool,
    /// How the controller gets its AWS credentials (default: what the release was installed with; else
    /// pod-identity when the cluster runs the eks-pod-identity-agent add-on and the controller is not on Fargate, else irsa)
    #[arg(long, value_enum, value_name = "IDENTITY")]
    pub identity: Option<Identity>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "AWS Load Balancer Controller")]
pub struct LbcArgs {
    /// Version of the aws-load-balancer-controller chart
    #[arg(long, value_name = "VERSION")]
    pub lbc_chart_version: Option<String>,
    /// Chart repository URL of the controller's chart (a mirror)
    #[arg(long, value_name = "URL")]
    pub lbc_chart_repo: Option<String>,
    /// The cluster already runs the controller: verify it, do not install it
    #[arg(long)]
    pub skip_lb_controller: bool,
    /// Which ALB controller serves the Ingress (default: what the release was installed with; else
    /// auto-mode on an EKS Auto Mode cluster, self-managed otherwise)
    #[arg(long, value_enum, value_name = "CONTROLLER")]
    pub lb_controller: Option<LbControllerMode>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Network")]
pub struct NetworkArgs {
    /// Subnets to tag for the internal ALB, comma-separated (default: the cluster VPC's private subnets)
    #[arg(long, value_delimiter = ',', value_name = "ID,...")]
    pub subnets: Vec<String>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Dedicated nodes")]
pub struct NodeArgs {
    /// Label that selects the GraphQL nodes
    #[arg(long, default_value = "agentpool=scalardbgraphqlpool", value_name = "KEY=VALUE")]
    pub node_selector: String,
    /// Taint put on the selected nodes
    #[arg(long, default_value = "kubernetes.io/app=scalardbgraphqlpool:NoSchedule", value_name = "KEY=VALUE:EFFECT")]
    pub taint: String,
    /// Nodes to label with --node-selector and dedicate, comma-separated (default: those already labelled)
    #[arg(long, value_delimiter = ',', value_name = "NODE,...")]
    pub nodes: Vec<String>,
    /// Do not dedicate nodes: no taint, no node affinity or tolerations
    #[arg(long, conflicts_with_all = ["nodes"])]
    pub no_dedicated_nodes: bool,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Image registry")]
pub struct RegistryArgs {
    /// Name of the docker-registry Secret for the private image
    #[arg(long, default_value = "reg-docker-secrets", value_name = "NAME")]
    pub registry_secret: String,
    /// Registry server
    #[arg(long, default_value = "ghcr.io", value_name = "HOST")]
    pub registry_server: String,
    /// Registry user (a GitHub user for ghcr.io)
    #[arg(long, value_name = "USER")]
    pub registry_username: Option<String>,
    /// Read the registry token (read:packages) from standard input
    #[arg(long)]
    pub registry_password_stdin: bool,
    /// Read the registry token from a file
    #[arg(long, value_name = "FILE")]
    pub registry_password_file: Option<PathBuf>,
    /// Read the registry token from this environment variable
    #[arg(long, value_name = "VAR")]
    pub registry_password_env: Option<String>,
    /// Use this existing image pull Secret instead of creating one
    #[arg(long, value_name = "NAME", conflicts_with_all = ["registry_username", "registry_password_stdin", "registry_password_file", "registry_password_env"])]
    pub image_pull_secret: Option<String>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Database credentials")]
pub struct DatabaseArgs {
    /// Name of the Secret holding db-username and db-password
    #[arg(long, value_name = "NAME")]
    pub db_secret: Option<String>,
    /// Use this existing Secret (keys db-username, db-password) instead of creating one
    #[arg(long, value_name = "NAME", conflicts_with = "db_secret")]
    pub existing_db_secret: Option<String>,
    /// Database user (else scalar.db.username from --db-properties)
    #[arg(long, value_name = "USER")]
    pub db_username: Option<String>,
    /// Read the database password from standard input
    #[arg(long)]
    pub db_password_stdin: bool,
    /// Read the database password from a file
    #[arg(long, value_name = "FILE")]
    pub db_password_file: Option<PathBuf>,
    /// Read the database password from this environment variable
    #[arg(long, value_name = "VAR")]
    pub db_password_env: Option<String>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "ScalarDB Cluster license (--target cluster)")]
pub struct LicenseArgs {
    /// Read the license key from standard input
    #[arg(long)]
    pub license_key_stdin: bool,
    /// Read the license key from a file
    #[arg(long, value_name = "FILE")]
    pub license_key_file: Option<PathBuf>,
    /// Read the license key from this environment variable
    #[arg(long, value_name = "VAR")]
    pub license_key_env: Option<String>,
    /// Read the license check certificate (PEM) from standard input
    #[arg(long)]
    pub license_cert_stdin: bool,
    /// Read the license check certificate (PEM) from a file
    #[arg(long, value_name = "FILE")]
    pub license_cert_file: Option<PathBuf>,
    /// Read the license check certificate (PEM) from this environment variable
    #[arg(long, value_name = "VAR")]
    pub license_cert_env: Option<String>,
    /// The node image (the Premium edition serves GraphQL)
    #[arg(long, value_name = "REPOSITORY")]
    pub node_image: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub release: ReleaseArgs,
    /// Output format
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Poll until every check passes, or until --timeout
    #[arg(long)]
    pub wait: bool,
    /// How long --wait polls, e.g. 90s, 10m
    #[arg(allow_hyphen_values = true, long, default_value = "5m", value_name = "DURATION")]
    pub timeout: String,
    /// Run only these categories, comma-separated
    #[arg(long, value_delimiter = ',', value_enum, value_name = "CATEGORY,...")]
    pub category: Vec<Category>,
    #[command(flatten)]
    pub probe: ProbeArgs,
    /// Continuations the transaction probe sends between start and commit
    #[arg(long, default_value_t = PROBE_REQUESTS, value_name = "N")]
    pub probe_requests: u32,
}

#[derive(Debug, Args)]
pub struct UninstallArgs {
    #[command(flatten)]
    pub release: ReleaseArgs,
    #[command(flatten)]
    pub change: ChangeArgs,
    #[command(flatten)]
    pub wait_args: WaitArgs,
    /// Leave the IAM role, policy and OIDC provider in place
    #[arg(long)]
    pub keep_iam: bool,
    /// Leave the AWS Load Balancer Controller working: its release, ServiceAccount, CRDs, subnet tags and IAM
    #[arg(long)]
    pub keep_lb_controller: bool,
    /// Remove the controller (and what it needs) even while other Ingresses of class alb remain
    #[arg(long)]
    pub force: bool,
    /// Remove the controller's finalizer from an Ingress it can no longer clean up (may leave the ALB in AWS)
    #[arg(long)]
    pub force_finalizers: bool,
}

#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Create the tables of a schema file, with the Schema Loader in a Job
    Load(SchemaArgs),
    /// Delete the tables of a schema file (the Schema Loader's -D)
    Delete(SchemaArgs),
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// The ScalarDB schema file (JSON)
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// The ScalarDB database.properties the loader connects with
    #[arg(long, value_name = "FILE")]
    pub db_properties: PathBuf,
    /// Also create (or delete) the Consensus Commit coordinator tables
    #[arg(long)]
    pub coordinator: bool,
    /// Schema Loader image version
    #[arg(long, value_name = "VERSION")]
    pub schema_loader_version: Option<String>,
    /// Print the Job it would run (secrets redacted), and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation
    #[arg(short = 'y', long)]
    pub yes: bool,
    #[command(flatten)]
    pub wait_args: WaitArgs,
}

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Print only the plugin's own version and pins; contact no cluster
    #[arg(long)]
    pub client: bool,
    /// Output format
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// bash, zsh, fish, or kubectl (the kubectl_complete-scalardb_graphql shim)
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
    Kubectl,
}

/// Continuations the transaction probe sends unless `status --probe-requests` says otherwise.
pub const PROBE_REQUESTS: u32 = 8;

/// The longest duration a flag takes: longer is a typo, and would overflow the clock.
const MAX_DURATION_SECS: f64 = 365.0 * 24.0 * 3600.0;

/// Parses kubectl-style durations: `90s`, `10m`, `1h30m`, `500ms`, or plain seconds.
/// Zero means no timeout (None).
pub fn parse_duration(text: &str) -> std::result::Result<Option<Duration>, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = t.parse::<u64>() {
        if secs as f64 > MAX_DURATION_SECS {
            return Err("longer than a year (8760h); give a shorter duration".into());
        }
        return Ok((secs > 0).then(|| Duration::from_secs(secs)));
    }
    let mut total_secs = 0.0_f64;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').ok_or("missing unit (s, m, h)")?;
        if digits == 0 {
            return Err(format!("expected a number at {rest:?}"));
        }
        let value: f64 = rest[..digits].parse().map_err(|_| format!("bad number {:?}", &rest[..digits]))?;
        let unit_len = rest[digits..].find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len() - digits);
        let unit = &rest[digits..digits + unit_len];
        let secs = match unit {
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            _ => return Err(format!("unknown unit {unit:?} (use ms, s, m or h)")),
        };
        total_secs += secs;
        if !total_secs.is_finite() || total_secs > MAX_DURATION_SECS {
            return Err("longer than a year (8760h); give a shorter duration".into());
        }
        rest = &rest[digits + unit_len..];
    }
    let total = Duration::from_secs_f64(total_secs);
    Ok((!total.is_zero()).then_some(total))
}

/// clap's usage error as one line: what is wrong (with the values it
/// accepts, when it lists them) and where to read the flags; the usage
/// block it prints after that is left out.
pub fn one_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let mut parts: Vec<String> = vec![];
    for line in rendered.lines() {
        let line = line.trim();
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if !line.is_empty() {
            parts.push(line.to_string());
        }
    }
    let text = parts.join(" ");
    let text = if text.starts_with("error:") { text } else { format!("error: {text}") };
    format!("{text}; run `kubectl scalardb-graphql --help` (or the subcommand's --help) for the flags")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn usage_reads_as_a_kubectl_plugin() {
        let help = Cli::command().render_usage().to_string();
        assert!(help.contains("kubectl scalardb-graphql"), "{help}");
    }

    #[test]
    fn install_waits_by_default_and_accepts_wait_false() {
        let cli = Cli::try_parse_from(["x", "install"]).unwrap();
        let Command::Install(a) = cli.command else { panic!() };
        assert!(a.wait);
        let cli = Cli::try_parse_from(["x", "install", "--wait=false"]).unwrap();
        let Command::Install(a) = cli.command else { panic!() };
        assert!(!a.wait);
    }

    #[test]
    fn the_commands_page_documents_every_subcommand_and_flag() {
        let readme = include_str!("../docs/commands.md");
        fn walk(cmd: &clap::Command, readme: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                if let Some(long) = arg.get_long()
                    && !["help", "version"].contains(&long)
                    && !readme.contains(&format!("--{long}"))
                {
                    missing.push(format!("{} --{long}", cmd.get_name()));
                }
            }
            for sub in cmd.get_subcommands() {
                let parent = format!("{} {}", cmd.get_name(), sub.get_name());
                if !readme.contains(&format!("`{}", sub.get_name())) && !readme.contains(&parent) {
                    missing.push(format!("subcommand {}", sub.get_name()));
                }
                walk(sub, readme, missing);
            }
        }
        let mut missing = vec![];
        walk(&Cli::command(), readme, &mut missing);
        assert!(missing.is_empty(), "docs/commands.md does not mention: {missing:?}");
    }

    #[test]
    fn namespace_is_global_and_short() {
        let cli = Cli::try_parse_from(["x", "status", "-n", "prod"]).unwrap();
        assert_eq!(cli.global.namespace.as_deref(), Some("prod"));
    }

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(parse_duration("90s").unwrap(), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m").unwrap(), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m").unwrap(), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms").unwrap(), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("45").unwrap(), Some(Duration::from_secs(45)));
        assert_eq!(parse_duration("0").unwrap(), None);
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("9999999999999999h").is_err());
        assert!(parse_duration("99999999999999999999").is_err());
        assert!(parse_duration("8760h").is_ok() && parse_duration("8761h").is_err());
    }
}
