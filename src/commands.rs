//! Each subcommand: flags → settings → environment → a traversal of the
//! deployment → what the printer shows and the exit status.
//!
//! `--timeout` bounds the whole command: every wait ends at the deadline by
//! itself, and on top of that the command's work is cut off a few seconds
//! later (`bounded`), so that a server or a helm that stopped answering
//! cannot hold it; it then names the call it was waiting for (exit 4).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::cli::{
    ChangeArgs, Cli, Command, CompletionArgs, GlobalArgs, InstallArgs, OutputFormat, SchemaArgs, SchemaCommand,
    StatusArgs, UninstallArgs, VersionArgs,
};
use crate::component::{Check, Component, Env, Outcome, Plan, Progress};
use crate::context::{Context, Kube, Settings};
use crate::deadline::Deadline;
use crate::deployment::{self, LoaderJob, Start};
use crate::error::{Error, Result};
use crate::output::{Mark, Printer};
use crate::preflight;
use crate::record::{self, Recorder};
use crate::spec::{self, Mode, Options, Secrets};
use crate::support;
use crate::wait::Standalone;
use crate::{completion, pins};

/// The printer, seen by components as a progress channel; it keeps the
/// last thing waited for, for a command cut off at its deadline.
struct Shown {
    printer: Arc<Printer>,
    last: Mutex<String>,
}

impl Shown {
    fn new(printer: Arc<Printer>) -> Arc<Shown> {
        Arc::new(Shown { printer, last: Mutex::new(String::new()) })
    }

    /// What the command does now, for the message if it is cut off.
    fn stage(&self, what: &str) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = what.to_string();
    }

    fn last(&self) -> String {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Progress for Shown {
    fn waiting(&self, what: &str) {
        self.stage(what);
        self.printer.spin(what);
    }
    fn warn(&self, what: &str) {
        self.printer.warn(what);
    }
    fn done(&self, what: &str) {
        let _ = self.printer.line(Mark::Pass, what);
    }
    fn stage(&self, what: &str) {
        Shown::stage(self, what);
    }
}

/// How long `version` may take to reach helm and the API server.
const VERSION_TIMEOUT: Duration = Duration::from_secs(30);

/// How long past the deadline the work may go on: what ends at the deadline
/// by itself (a wait, a probe Pod deleted, the last state shown) finishes in it.
const GRACE: Duration = Duration::from_secs(3);

/// Runs `work`, cut off GRACE after the deadline with a timeout (exit 4) that
/// names what it was waiting for: the call in flight longest, and the last
/// step shown. Dropping `work` kills a running helm and leaves a probe Pod
/// to main's clean-up, as Ctrl-C does.
async fn bounded<T>(deadline: &Deadline, shown: &Shown, work: impl Future<Output = Result<T>>) -> Result<T> {
    // The work stays alive until the message is made: its calls in flight say what it waits for.
    tokio::pin!(work);
    tokio::select! {
        result = &mut work => result,
        _ = tokio::time::sleep_until((deadline.at() + GRACE).into()) => {
            let mut message = format!("timed out after --timeout {}", humane(deadline.timeout()));
            if let Some(call) = crate::calls::in_flight() {
                message.push_str(&format!(": no answer from {call}"));
            }
            let last = shown.last();
            if !last.is_empty() {
                message.push_str(&format!("; last step: {last}"));
            }
            Err(Error::timeout(message).hint(
                "check that the kube API server, the AWS endpoint and helm answer from here, or raise --timeout",
            ))
        }
    }
}

/// Runs blocking `work` (reading files, stdin, a terminal) off the runtime's threads, under
/// the deadline: a FIFO, a stdin that never ends or a terminal waiting for a secret ends with
/// the command (at the deadline, or at once on Ctrl-C).
async fn read_under<T: Send + 'static>(
    deadline: &Deadline,
    shown: &Shown,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let read =
        bounded(
            deadline,
            shown,
            async move { tokio::task::spawn_blocking(work).await.map_err(|e| Error::Other(e.into())) },
        )
        .await;
    shown.printer.stop_spinner();
    read
}

/// `90s` → `1m30s`, as the flag is written.
fn humane(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs / 3600, secs % 3600 / 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
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

/// `with_helm`: the command runs helm (install, uninstall, `version` reporting it).
async fn connect(global: &GlobalArgs, with_helm: bool) -> Result<Context> {
    Context::connect(Settings::resolve(global)?, with_helm).await
}

/// What install, status and uninstall each start with: connect, then preflight and the
/// release's install record, read together (neither needs the other). The record is
/// left for the command to judge: install and uninstall stop on an error, status warns.
async fn connect_and_read(
    global: &GlobalArgs,
    deadline: &Deadline,
    shown: &Shown,
    release: &str,
    with_helm: bool,
) -> Result<(Context, preflight::Preflight, Result<Option<record::Stored>>)> {
    shown.stage(if with_helm {
        "connecting (kubeconfig, AWS configuration, helm)"
    } else {
        "connecting (kubeconfig, AWS configuration)"
    });
    let mut ctx = connect(global, with_helm).await?;
    ctx.set_deadline(deadline);
    shown.stage("preflight (the API server, the AWS identity, the EKS cluster) and the install record");
    let (namespace, client) = (ctx.kube.namespace.clone(), ctx.kube.client.clone());
    let (pre, existing) = tokio::join!(preflight::run(&mut ctx), record::load(&client, &namespace, release));
    Ok((ctx, pre, existing))
}

fn print_plan(printer: &Printer, format: OutputFormat, plan: &Plan, verb: &str) -> Result<()> {
    match format {
        OutputFormat::Text => printer.plan(plan, verb)?,
        f => printer.document(f, plan)?,
    }
    Ok(())
}

/// On a terminal and without -y: shows the plan and asks once, before the
/// first change. Returns whether it asked: the time a person takes to answer
/// is not the command's, and the deadline starts again after the answer.
async fn confirm_plan(printer: &Arc<Printer>, yes: bool, plan: &Plan, verb: &str, question: &str) -> Result<bool> {
    if yes || !printer.interactive() {
        return Ok(false);
    }
    printer.plan(plan, verb)?;
    confirm(printer, question).await?;
    Ok(true)
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

/// A changing command made ready: its environment, its list, its plan, and the install record as read.
struct Ready {
    env: Env,
    components: Vec<Box<dyn Component>>,
    plan: Plan,
    existing: Option<record::Stored>,
}

/// The skeleton install and uninstall share: `prepare` (connect, read, plan) under the
/// deadline, or a line saying there is nothing to do; the plan shown for --dry-run, or
/// asked about (the deadline starts again after the answer); the one traversal the
/// command is (`env.options.mode`) under the deadline; what it did.
async fn change(
    printer: &Arc<Printer>,
    shown: &Arc<Shown>,
    deadline: &Deadline,
    flags: &ChangeArgs,
    prepare: impl Future<Output = Result<std::result::Result<Ready, String>>>,
) -> Result<()> {
    let prepared = bounded(deadline, shown, prepare).await;
    printer.stop_spinner();
    let Ready { mut env, mut components, plan, existing } = match prepared? {
        Ok(ready) => ready,
        Err(nothing) => {
            printer.line(Mark::Pass, &nothing)?;
            return Ok(());
        }
    };
    let install = env.options.mode == Mode::Install;
    let verb = if install { "install" } else { "uninstall" };
    // Said where the user decides, and only for an install that can go ahead (an error stays one line).
    let end_of_support = if install { support::install_warning(&env.spec) } else { None };
    if flags.dry_run {
        print_plan(printer, flags.output, &plan, verb)?;
        end_of_support.iter().for_each(|w| printer.warn(w));
        return Ok(());
    }
    // Install asks only when it would change something; removing is always asked about.
    let question = format!(
        "{} kube context {:?} (EKS cluster {})?",
        if install { "Install into" } else { "Uninstall from" },
        env.ctx.kube.context,
        env.facts.name
    );
    let asked = (!install || plan.mutations() > 0) && confirm_plan(printer, flags.yes, &plan, verb, &question).await?;
    if asked {
        deadline.restart();
    }
    let mut recorder = Recorder::new(env.kube().clone(), &env.spec.namespace, &env.spec.release, existing);
    let started = Instant::now();
    let run = deployment::change(&mut components, &mut env, &mut recorder, &plan, asked);
    let result = bounded(deadline, shown, run).await;
    printer.stop_spinner();
    match result? {
        None => installed(printer, &env, &plan, end_of_support, started),
        Some(done) => uninstalled(printer, &env, &done, started),
    }
}

fn installed(printer: &Printer, env: &Env, plan: &Plan, warning: Option<String>, started: Instant) -> Result<()> {
    if plan.mutations() == 0 {
        printer.line(Mark::Pass, "nothing to change: everything was already installed")?;
    }
    warning.iter().for_each(|w| printer.warn(w));
    printer.line(Mark::Pass, &format!(
        "ScalarDB GraphQL release {}/{} is installed ({:.0?}); check it any time with `kubectl scalardb-graphql status`",
        env.spec.namespace, env.spec.release, started.elapsed()
    ))?;
    Ok(())
}

fn uninstalled(printer: &Printer, env: &Env, done: &Plan, started: Instant) -> Result<()> {
    // What stayed, and why: also what a forged or stale record named but this tool may not delete.
    for action in done.actions().filter(|a| a.verb == crate::component::Verb::Keep) {
        printer.warn(&format!(
            "kept {} {}: {}",
            action.operation,
            action.target,
            action.reason.as_deref().unwrap_or("left in place")
        ));
    }
    let (ns, release) = (&env.spec.namespace, &env.spec.release);
    if done.record_stays() {
        printer.line(
            Mark::Warn,
            &format!(
                "uninstalled release {ns}/{release}; the install record {ns}/{} stays, listing what was kept \
                 (a later `kubectl scalardb-graphql uninstall` removes them) ({:.0?})",
                crate::record::configmap_name(release),
                started.elapsed()
            ),
        )?;
        return Ok(());
    }
    printer.line(
        Mark::Pass,
        &format!("uninstalled release {ns}/{release} and what install created ({:.0?})", started.elapsed()),
    )?;
    Ok(())
}

async fn install(global: &GlobalArgs, a: InstallArgs, printer: Arc<Printer>) -> Result<()> {
    // The deadline starts first: every file and secret the flags name is read under it.
    let deadline = Deadline::start(spec::parse_timeout(&a.wait_args.timeout)?);
    let shown = Shown::new(printer.clone());
    shown.stage("reading the files and secrets the flags name");
    let (a, parsed) = read_under(&deadline, &shown, move || {
        let parsed = spec::for_install(&a);
        (a, parsed)
    })
    .await?;
    let (spec, options, secrets) = parsed?;
    spec.require_namespaces()?;
    let flags = (a.lbc.lb_controller, a.iam.identity);
    change(&printer, &shown, &deadline, &a.change, async {
        let (ctx, pre, existing) = connect_and_read(global, &deadline, &shown, &spec.release, true).await?;
        let facts = pre.require_for(spec.target)?;
        let existing = existing?;
        let start = Start { ctx, facts, options, secrets, deadline: deadline.clone(), progress: shown.clone() };
        let (env, mut components) = deployment::for_install(start, spec, existing.as_ref(), flags).await?;
        shown.stage("observing what is installed");
        let plan = deployment::plan_install(&mut components, &env).await?;
        Ok(Ok(Ready { env, components, plan, existing }))
    })
    .await
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
    let (options, timeout) = spec::for_status(&a)?;
    // One deadline for the whole command, so that every round of --wait (and its probe Pod) fits in it.
    let deadline = Deadline::start(timeout);
    let shown = Shown::new(printer.clone());
    let result = bounded(&deadline, &shown, status_until(global, &a, options, &deadline, &printer, &shown)).await;
    printer.stop_spinner();
    result
}

async fn status_until(
    global: &GlobalArgs,
    a: &StatusArgs,
    options: Options,
    deadline: &Deadline,
    printer: &Arc<Printer>,
    shown: &Arc<Shown>,
) -> Result<()> {
    // Releases are read from helm's storage: status runs no helm, unless helm keeps them elsewhere.
    let with_helm = !crate::releases::driver_is_api();
    let (ctx, pre, existing) = connect_and_read(global, deadline, shown, &a.release.release, with_helm).await?;
    let wanted = &a.category;
    let keep = |c: &Check| wanted.is_empty() || wanted.contains(&c.category);
    let Some(facts) = pre.facts.clone() else {
        let checks: Vec<Check> = pre.checks.into_iter().filter(keep).collect();
        report(printer, a.output, &checks)?;
        // Out of time (a credential plugin that did not answer) is said as such, exit 4.
        return Err(match pre.blocker {
            Some(e) if e.exit_code() == crate::error::Kind::Timeout.exit_code() => e,
            _ => Error::failed("the cluster checks failed; the rest could not run"),
        });
    };
    let secrets = Secrets::default();
    let start = Start { ctx, facts, options, secrets, deadline: deadline.clone(), progress: shown.clone() };
    let (env, mut components) = deployment::for_status(start, &a.release.release, existing);
    shown.stage("the checks");
    let until = a.wait.then(|| deadline.at());
    let (rest, timed_out) = deployment::checks_until(&mut components, &env, keep, until).await;
    printer.stop_spinner();
    let checks: Vec<Check> = pre.checks.into_iter().filter(keep).chain(rest).collect();
    report(printer, a.output, &checks)?;
    if timed_out {
        return Err(Error::timeout(format!("not every check passed within {}", a.timeout))
            .hint("the last state is shown above"));
    }
    deployment::verdict(&checks)
}

async fn uninstall(global: &GlobalArgs, a: UninstallArgs, printer: Arc<Printer>) -> Result<()> {
    let (options, timeout) = spec::for_uninstall(&a)?;
    // Removing is asked about; with nobody to ask, it is not done.
    if !a.change.yes && !a.change.dry_run && !printer.interactive() {
        return Err(Error::usage("uninstall removes things and asks first, but there is no terminal to confirm on")
            .hint("pass -y to uninstall without asking, or --dry-run to see what it would remove"));
    }
    let deadline = Deadline::start(timeout);
    let shown = Shown::new(printer.clone());
    let release = &a.release.release;
    change(&printer, &shown, &deadline, &a.change, async {
        let (ctx, pre, existing) = connect_and_read(global, &deadline, &shown, release, true).await?;
        let facts = pre.require()?;
        let Some(existing) = existing? else {
            return Ok(Err(format!(
                "nothing to uninstall: no install record for release {release} in namespace {} (kube context {:?})",
                ctx.kube.namespace, ctx.kube.context
            )));
        };
        let secrets = Secrets::default();
        let start = Start { ctx, facts, options, secrets, deadline: deadline.clone(), progress: shown.clone() };
        let (mut env, mut components) = deployment::for_uninstall(start, release, &existing)?;
        shown.stage("observing what is installed, and who else uses what releases share");
        let plan = deployment::plan_uninstall(&mut components, &mut env).await?;
        Ok(Ok(Ready { env, components, plan, existing: Some(existing) }))
    })
    .await
}

async fn schema(global: &GlobalArgs, command: SchemaCommand, printer: Arc<Printer>) -> Result<()> {
    let (args, delete): (SchemaArgs, bool) = match command {
        SchemaCommand::Load(a) => (a, false),
        SchemaCommand::Delete(a) => (a, true),
    };
    // Everything local is checked before the cluster is touched, under the deadline and
    // off the runtime's threads (see `install`).
    let deadline = Deadline::start(spec::parse_timeout(&args.wait_args.timeout)?);
    let shown = Shown::new(printer.clone());
    let (args, read) = read_under(&deadline, &shown, move || {
        let read = spec::for_schema(&args);
        (args, read)
    })
    .await?;
    let (schema, properties) = read?;
    // The loader needs the cluster only: neither helm nor the AWS configuration.
    let kube = Kube::connect(&Settings::resolve_kube(global)?).await?;
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
    // The Job gets the whole --timeout: reading, connecting and a question were not its.
    deadline.restart();
    let clock = Standalone { deadline: deadline.clone(), progress: shown.clone() };
    let result = bounded(&deadline, &shown, job.run(&kube.client, &clock)).await;
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
        "clusterChart": format!("{} {} (app {}, {})", pins::CLUSTER_CHART, pins::CLUSTER_CHART_VERSION, pins::CLUSTER_APP_VERSION, pins::CLUSTER_NODE_IMAGE),
        "lbControllerChart": format!("{} {}", pins::LBC_CHART, pins::LBC_CHART_VERSION),
        "iamPolicy": format!("{} (sha256 {})", pins::IAM_POLICY.version, pins::IAM_POLICY.sha256),
        "schemaLoader": format!("{}:{}", pins::SCHEMA_LOADER_IMAGE, pins::SCHEMA_LOADER_VERSION),
    });
    let mut info =
        VersionInfo { plugin: env!("CARGO_PKG_VERSION").into(), helm: None, kubernetes: None, context: None, defaults };
    if !a.client {
        // Bounded like every command: a server that accepts and never answers ends it (exit 4).
        let deadline = Deadline::start(VERSION_TIMEOUT);
        let shown = Shown::new(Arc::new(Printer::new(global.color)));
        let mut ctx = bounded(&deadline, &shown, connect(global, true)).await?;
        ctx.set_deadline(&deadline);
        bounded(&deadline, &shown, async { Ok(ctx.settle_helm().await) }).await?;
        let ctx = ctx;
        let helm = ctx.helm()?;
        info.helm = Some(json!({
            "path": helm.path.display().to_string(),
            "version": helm.version,
            "major": helm.major_minor().map(|(m, _)| m),
        }));
        let asked = async {
            ctx.kube.client.apiserver_version().await.map_err(|e| {
                Error::prerequisite(format!("cannot reach the API server of kube context {:?}: {e}", ctx.kube.context))
                    .hint("check the context and the network, or use `version --client`")
            })
        };
        let server = bounded(&deadline, &shown, asked).await?;
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
