//! kubectl-scalardb_graphql: ScalarDB GraphQL on EKS behind an internal,
//! cookie-sticky ALB, as `kubectl scalardb-graphql install | status | uninstall`.
//!
//! Thin: parse, run, map the outcome to an exit code (see error.rs).

mod calls;
mod cleanup;
mod cli;
mod commands;
mod completion;
mod component;
mod components;
mod context;
mod controller;
mod credentials;
mod deadline;
mod deployment;
mod ec2;
mod error;
mod helm;
mod http;
mod inputs;
mod lease;
mod lookups;
mod memo;
mod output;
mod ownership;
mod pins;
mod policy;
mod preflight;
mod process;
mod properties;
mod record;
mod redaction;
mod releases;
mod schema;
mod spec;
mod support;
mod tls;
mod transport;
mod values;
mod wait;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

fn main() -> ExitCode {
    // Arguments need not be UTF-8: clap says so as a usage error; nothing here may panic on them.
    if std::env::args_os().nth(1).is_some_and(|a| a == "__complete") {
        let words: Vec<String> = std::env::args_os().skip(2).map(|a| a.to_string_lossy().into_owned()).collect();
        print!("{}", completion::answer(&words));
        return ExitCode::SUCCESS;
    }
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            eprintln!("{}", cli::one_line(&e));
            return ExitCode::from(error::Kind::Usage.exit_code());
        }
    };
    let printer = Arc::new(output::Printer::new(cli.global.color));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    let outcome = runtime.block_on(async {
        // Ctrl-C, SIGTERM and SIGHUP take one path: the command's future is dropped (helm's
        // process group killed, temporary files deleted), then what it left is cleaned up. A
        // panic (a bug) is caught the same way, so the clean-up runs after it too.
        let work = std::panic::AssertUnwindSafe(commands::run(cli, printer.clone()));
        let outcome = tokio::select! {
            result = futures::FutureExt::catch_unwind(work) => result.unwrap_or_else(|_| Err(error::Error::bug())),
            _ = tokio::signal::ctrl_c() => Err(error::Error::interrupted()),
            _ = signal::received(signal::Kind::Terminate) => Err(error::Error::terminated()),
            _ = signal::received(signal::Kind::HangUp) => Err(error::Error::hung_up()),
        };
        // What a cut-short command left to undo (a probe Pod); a second Ctrl-C abandons it.
        let unfinished = tokio::select! {
            left = cleanup::run_left(std::time::Duration::from_secs(10)) => left,
            _ = tokio::signal::ctrl_c() => vec!["(interrupted again)".to_string()],
        };
        for what in unfinished {
            printer.warn(&format!("not cleaned up: {what}"));
        }
        outcome
    });
    // A prompt still reading stdin on a blocking thread must not hold the exit; a secret's
    // read cut short gets the terminal's echo back.
    runtime.shutdown_background();
    inputs::restore_terminal();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            printer.error(&e);
            ExitCode::from(e.exit_code())
        }
    }
}

/// SIGTERM and SIGHUP (Windows has neither: there only Ctrl-C is heard).
mod signal {
    pub enum Kind {
        Terminate,
        HangUp,
    }

    #[cfg(unix)]
    pub async fn received(kind: Kind) {
        use tokio::signal::unix::{SignalKind, signal};
        let kind = match kind {
            Kind::Terminate => SignalKind::terminate(),
            Kind::HangUp => SignalKind::hangup(),
        };
        match signal(kind) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    }

    #[cfg(not(unix))]
    pub async fn received(_kind: Kind) {
        std::future::pending().await
    }
}
