//! Each subcommand: flags → settings → environment → a traversal of the
//! deployment → what the printer shows and the exit status.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use serde_json::json;

use crate::cli::{
    Cli, Command, CompletionArgs, GlobalArgs, InstallArgs, OutputFormat, SchemaArgs, SchemaCommand, StatusArgs,
    UninstallArgs, VersionArgs,
};
use crate::component::Env;
use crate::component::{Check, Outcome, Progress};
use crate::components::preflight;
use crate::components::schema_load::LoaderJob;
use crate::context::{Context, Kube, Settings};
use crate::deployment;
use crate::error::{Error, Result};
use crate::output::{Mark, Printer};
use crate::record::{self, Recorder};
use crate::schema::Schema;
use crate::spec::{self, Options, Secrets};
use crate::wait::Deadline;
use crate::{completion, lease, pins};

/// The printer, seen by components as a progress channel.
struct Shown(Arc<Printer>);

impl Progress for Shown {
    fn waiting(&self, what: &str) {
        self.0.spin(what);
    }
    fn warn(&self, what: &str) {
        self.0.warn(what);
    }
    fn done(&self, what: &str) {
        let _ = self.0.line(Mark::Pass, what);
    }
}

pub async fn run(cli: Cli, printer: Arc<Printer>) -> Result<()> {
    let global = cli.global;
    match cli.command {
        Command::Install(a) => install(&global, *a, printer).await,
        Command::Status(a) => status(&global, a, printer).await,
        Command::Uninstall(a) => uninstall(&global, a, printer).await,
        Command::Schema(s) => schema(&global, s, printer).await,
        Command::Version(a) => version(&global, a, &printer).await,
        Command::Completion(CompletionArgs { shell }) => Ok(printer.text(completion::script(shell).trim_end())?),
    }
}

async fn connect(global: &GlobalArgs) -> Result<Context> {
    if let Some(region) = &global.region {
        crate::inputs::check_region(region)?;
    }
    Context::connect(Settings::resolve(global)?).await
}

fn env(
    ctx: Context,
    facts: crate::context::ClusterFacts,
    spec: spec::Spec,
    record: record::Record,
    options: Options,
    secrets: Secrets,
    printer: &Arc<Printer>,
) -> Env {
    Env { ctx, progress: Arc::new(Shown(printer.clone())), facts, spec, record, options, secrets }
}

fn print_plan(printer: &Printer, format: OutputFormat, plan: &crate::component::Plan, verb: &str) -> Result<()> {
    match format {
        OutputFormat::Text => printer.plan(plan, verb)?,
        f => printer.document(f, plan)?,
    }
    Ok(())
}

/// On a terminal and without -y: shows the plan and asks once, before the first change.
async fn confirm_plan(
    printer: &Arc<Printer>,
    yes: bool,
    plan: &crate::component::Plan,
    verb: &str,
    question: &str,
) -> Result<()> {
    if yes || !printer.interactive() {
        return Ok(());
    }
    printer.plan(plan, verb)?;
    confirm(printer, question).await
}

/// Asks; anything but yes stops the command with nothing changed. The
/// answer is read off the runtime's threads, so that Ctrl-C at the prompt
/// ends the command at once (exit 130).
async fn confirm(printer: &Arc<Printer>, question: &str) -> Result<()> {
    let (printer, question) = (printer.clone(), question.to_string());
    let answer =
        tokio::task::spawn_blocking(move || printer.confirm(&question)).await.map_err(|e| Error::Other(e.into()))??;
    if answer { Ok(()) } else { Err(Error::failed("nothing was changed").hint("answer y to proceed, or pass -y")) }
}

async fn install(global: &GlobalArgs, a: InstallArgs, printer: Arc<Printer>) -> Result<()> {
    let (spec, mut options, secrets) = spec::for_install(&a)?;
    if spec.scalardb.namespaces.is_empty() {
        return Err(Error::prerequisite("no ScalarDB namespaces given: the GraphQL server must know which to serve")
            .hint("pass --namespaces ns1,ns2 (the namespaces of your schema), or --schema schema.json"));
    }
    let ctx = connect(global).await?;
    let spec = spec.resolve(ctx.cluster_name()?, &ctx.kube.namespace);
    options.deadline = Some(Instant::now() + options.timeout);
    let facts = preflight::run(&ctx).await.require()?;
    let existing = record::load(&ctx.kube.client, &spec.namespace, &spec.release).await?;
    if let Some(s) = &existing {
        s.record.vet(&spec.namespace, &spec.release)?;
    }
    let record = existing.as_ref().map(|s| s.record.clone()).unwrap_or_default();
    let env = env(ctx, facts, spec, record, options, secrets, &printer);
    let mut components = deployment::components();
    let plan = deployment::plan_install(&mut components, &env).await?;
    if a.change.dry_run {
        return print_plan(&printer, a.change.output, &plan, "install");
    }
    if plan.mutations() > 0 {
        confirm_plan(
            &printer,
            a.change.yes,
            &plan,
            "install",
            &format!("Install into kube context {:?} (EKS cluster {})?", env.ctx.kube.context, env.facts.name),
        )
        .await?;
    }
    let mut recorder = Recorder::new(env.kube().clone(), &env.spec.namespace, &env.spec.release, existing);
    let started = Instant::now();
    // One changing run at a time; the Lease lives in the release namespace.
    let held = if plan.mutations() > 0 {
        recorder.ensure_namespace().await?;
        Some(lease::acquire(env.kube(), &env.spec.namespace, &env.spec.release, "install").await?)
    } else {
        None
    };
    let result = deployment::install(&mut components, &env, &mut recorder).await;
    printer.stop_spinner();
    let released = match held {
        Some(h) => h.release().await,
        None => Ok(()),
    };
    result?;
    released?;
    if plan.mutations() == 0 {
        printer.line(Mark::Pass, "nothing to change: everything was already installed")?;
    }
    printer.line(Mark::Pass, &format!(
        "ScalarDB GraphQL release {}/{} is installed ({:.0?}); check it any time with `kubectl scalardb-graphql status`",
        env.spec.namespace, env.spec.release, started.elapsed()
    ))?;
    Ok(())
}

#[derive(Serialize)]
struct Report<'a> {
    checks: &'a [Check],
    summary: Summary,
}

#[derive(Serialize)]
struct Summary {
    passed: usize,
    warnings: usize,
    failed: usize,
    skipped: usize,
}

fn report(printer: &Printer, format: OutputFormat, checks: &[Check]) -> Result<()> {
    let count = |o: Outcome| checks.iter().filter(|c| c.result == o).count();
    match format {
        OutputFormat::Text => printer.checklist(checks)?,
        f => printer.document(
            f,
            &Report {
                checks,
                summary: Summary {
                    passed: count(Outcome::Pass),
                    warnings: count(Outcome::Warn),
                    failed: count(Outcome::Fail),
                    skipped: count(Outcome::Skip),
                },
            },
        )?,
    }
    Ok(())
}

async fn status(global: &GlobalArgs, a: StatusArgs, printer: Arc<Printer>) -> Result<()> {
    let options = spec::for_status(&a)?;
    let ctx = connect(global).await?;
    let wanted = &a.category;
    let keep = |c: &Check| wanted.is_empty() || wanted.contains(&c.category);
    let pre = preflight::run(&ctx).await;
    let Some(facts) = pre.facts.clone() else {
        let checks: Vec<Check> = pre.checks.into_iter().filter(keep).collect();
        report(&printer, a.output, &checks)?;
        return Err(Error::failed("the cluster checks failed; the rest could not run"));
    };
    let namespace = ctx.kube.namespace.clone();
    let existing = match record::load(&ctx.kube.client, &namespace, &a.release.release).await.ok().flatten() {
        Some(s) => match s.record.vet(&namespace, &a.release.release) {
            Ok(()) => Some(s.record),
            Err(e) => {
                printer.warn(&format!("{e}; checking the defaults instead"));
                None
            }
        },
        None => None,
    };
    let spec = existing
        .as_ref()
        .and_then(|r| r.spec.clone())
        .unwrap_or_else(|| spec::defaults(&a.release.release, &facts.name, &namespace));
    let env = env(ctx, facts, spec, existing.unwrap_or_default(), options, Secrets::default(), &printer);
    let mut components = deployment::components();
    let timeout = a.wait.then_some(env.options.timeout);
    let (rest, timed_out) = deployment::checks_until(&mut components, &env, keep, timeout).await;
    printer.stop_spinner();
    let checks: Vec<Check> = pre.checks.into_iter().filter(keep).chain(rest).collect();
    report(&printer, a.output, &checks)?;
    if timed_out {
        return Err(Error::timeout(format!("not every check passed within {}", a.timeout))
            .hint("the last state is shown above"));
    }
    deployment::verdict(&checks)
}

async fn uninstall(global: &GlobalArgs, a: UninstallArgs, printer: Arc<Printer>) -> Result<()> {
    let mut options = spec::for_uninstall(&a)?;
    let ctx = connect(global).await?;
    options.deadline = Some(Instant::now() + options.timeout);
    let facts = preflight::run(&ctx).await.require()?;
    let namespace = ctx.kube.namespace.clone();
    let Some(existing) = record::load(&ctx.kube.client, &namespace, &a.release.release).await? else {
        printer.line(
            Mark::Pass,
            &format!(
                "nothing to uninstall: no install record for release {} in namespace {namespace} (kube context {:?})",
                a.release.release, ctx.kube.context
            ),
        )?;
        return Ok(());
    };
    existing.record.vet(&namespace, &a.release.release)?;
    let spec =
        existing.record.spec.clone().unwrap_or_else(|| spec::defaults(&a.release.release, &facts.name, &namespace));
    let mut env = env(ctx, facts, spec, existing.record.clone(), options, Secrets::default(), &printer);
    if existing.record.lb_controller.as_ref().is_some_and(|c| c.installed) && !env.options.keep_lb_controller {
        let ours = crate::lookups::release_ingress(&env, &env.options.user_values).await?.display();
        env.options.controller_needed_by = crate::lookups::other_alb_ingresses(&env, &ours).await?;
    }
    let mut components = deployment::components();
    let plan = deployment::plan_uninstall(&mut components, &env).await?;
    if a.change.dry_run {
        return print_plan(&printer, a.change.output, &plan, "uninstall");
    }
    confirm_plan(
        &printer,
        a.change.yes,
        &plan,
        "uninstall",
        &format!("Uninstall from kube context {:?} (EKS cluster {})?", env.ctx.kube.context, env.facts.name),
    )
    .await?;
    let mut recorder = Recorder::new(env.kube().clone(), &env.spec.namespace, &env.spec.release, Some(existing));
    let started = Instant::now();
    let held = lease::acquire(env.kube(), &env.spec.namespace, &env.spec.release, "uninstall").await?;
    let result = deployment::uninstall(&mut components, &env, &mut recorder).await;
    printer.stop_spinner();
    let released = held.release().await;
    let kept = result?;
    released?;
    // What stayed, and why: also what a forged or stale record named but this tool may not delete.
    for action in plan.steps.iter().flat_map(|s| &s.actions).filter(|a| a.verb == crate::component::Verb::Keep) {
        printer.warn(&format!(
            "kept {} {}: {}",
            action.operation,
            action.target,
            action.reason.as_deref().unwrap_or("left in place")
        ));
    }
    if kept {
        if let Some(why) = env.options.controller_kept() {
            printer.warn(&format!(
                "kept release {}/{} and what it needs (its ServiceAccount, IAM role, policy and OIDC provider, CRDs, subnet tags): {why}",
                env.spec.lb_controller.namespace, env.spec.lb_controller.release
            ));
        } else if let Some(why) = env.options.iam_kept() {
            printer.warn(&format!("kept the IAM role, policy and OIDC provider: {why}"));
        }
        printer.line(
            Mark::Warn,
            &format!(
                "uninstalled release {}/{}; the install record {}/{} stays, listing what was kept \
                 (a later `kubectl scalardb-graphql uninstall` removes them) ({:.0?})",
                env.spec.namespace,
                env.spec.release,
                env.spec.namespace,
                crate::record::configmap_name(&env.spec.release),
                started.elapsed()
            ),
        )?;
        return Ok(());
    }
    printer.line(
        Mark::Pass,
        &format!(
            "uninstalled release {}/{} and what install created ({:.0?})",
            env.spec.namespace,
            env.spec.release,
            started.elapsed()
        ),
    )?;
    Ok(())
}

async fn schema(global: &GlobalArgs, command: SchemaCommand, printer: Arc<Printer>) -> Result<()> {
    let (args, delete): (SchemaArgs, bool) = match command {
        SchemaCommand::Load(a) => (a, false),
        SchemaCommand::Delete(a) => (a, true),
    };
    // Everything local is checked before the cluster is touched.
    let schema = Schema::read(&args.file)?;
    let properties = std::fs::read_to_string(&args.db_properties).map_err(|e| {
        Error::usage(format!("cannot read --db-properties {}: {e}", args.db_properties.display()))
            .hint("check the path")
    })?;
    crate::properties::DatabaseProperties::parse(&properties)
        .map_err(|e| Error::usage(format!("--db-properties {}: {e}", args.db_properties.display())))?;
    let timeout = spec::parse_timeout(&args.wait_args.timeout, std::time::Duration::from_secs(600))?;
    // The loader needs the cluster only: neither helm nor the AWS configuration.
    let kube = Kube::connect(&Settings::resolve(global)?).await?;
    let job = LoaderJob::new(
        &kube.namespace,
        &schema,
        properties,
        args.schema_loader_version.as_deref(),
        args.coordinator,
        delete,
    );
    if args.dry_run {
        printer.text(&format!(
            "# the Schema Loader Job that `schema {}` would run (secret values redacted)",
            if delete { "delete" } else { "load" }
        ))?;
        printer.document(OutputFormat::Yaml, &job.preview())?;
        return Ok(());
    }
    if delete && !args.yes {
        if !printer.interactive() {
            return Err(
                Error::usage("schema delete drops tables; refusing without confirmation").hint("pass -y to confirm")
            );
        }
        confirm(&printer, &format!("Delete the tables {} (and their data)?", schema.tables.join(", "))).await?;
    }
    let clock = Deadline { at: Instant::now() + timeout, progress: Arc::new(Shown(printer.clone())) };
    let result = job.run(&kube.client, &clock).await;
    printer.stop_spinner();
    result
}

#[derive(Serialize)]
struct VersionInfo {
    plugin: String,
    helm: Option<serde_json::Value>,
    kubernetes: Option<String>,
    context: Option<serde_json::Value>,
    defaults: serde_json::Value,
}

async fn version(global: &GlobalArgs, a: VersionArgs, printer: &Printer) -> Result<()> {
    let defaults = json!({
        "graphqlChart": format!("{} {} (app {})", pins::GRAPHQL_CHART, pins::GRAPHQL_CHART_VERSION, pins::GRAPHQL_APP_VERSION),
        "lbControllerChart": format!("{} {}", pins::LBC_CHART, pins::LBC_CHART_VERSION),
        "iamPolicy": format!("{} (sha256 {})", pins::IAM_POLICY.version, pins::IAM_POLICY.sha256),
        "schemaLoader": format!("{}:{}", pins::SCHEMA_LOADER_IMAGE, pins::SCHEMA_LOADER_VERSION),
    });
    let mut info =
        VersionInfo { plugin: env!("CARGO_PKG_VERSION").into(), helm: None, kubernetes: None, context: None, defaults };
    if !a.client {
        let ctx = connect(global).await?;
        let helm = ctx.helm()?;
        info.helm = Some(json!({
            "path": helm.path.display().to_string(),
            "version": helm.version,
            "major": helm.major_minor().map(|(m, _)| m),
        }));
        let server = ctx.kube.client.apiserver_version().await.map_err(|e| {
            Error::prerequisite(format!("cannot reach the API server of kube context {:?}: {e}", ctx.kube.context))
                .hint("check the context and the network, or use `version --client`")
        })?;
        info.kubernetes = Some(server.git_version);
        info.context = Some(json!({
            "name": ctx.kube.context,
            "namespace": ctx.kube.namespace,
            "namespaceFrom": if ctx.kube.namespace_explicit { "flag" } else { "context" },
            "server": ctx.kube.server,
            "helmPlugin": ctx.settings.helm_plugin,
        }));
    }
    match a.output {
        OutputFormat::Text => {
            printer.text(&format!("kubectl-scalardb-graphql {}", info.plugin))?;
            if let Some(h) = &info.helm {
                printer.text(&format!(
                    "helm: {} (major {}) at {}",
                    h["version"].as_str().unwrap_or("?"),
                    h["major"],
                    h["path"].as_str().unwrap_or("?")
                ))?;
            }
            if let Some(k) = &info.kubernetes {
                printer.text(&format!("kubernetes server: {k}"))?;
            }
            if let Some(c) = &info.context {
                printer.text(&format!(
                    "kube context: {} (namespace {}){}",
                    c["name"].as_str().unwrap_or_default(),
                    c["namespace"].as_str().unwrap_or_default(),
                    if c["helmPlugin"] == true { ", run as a helm plugin" } else { "" }
                ))?;
            }
            printer.text("installs by default:")?;
            for (k, v) in info.defaults.as_object().expect("an object") {
                printer.text(&format!("  {k}: {}", v.as_str().unwrap_or_default()))?;
            }
        }
        f => printer.document(f, &info)?,
    }
    Ok(())
}
