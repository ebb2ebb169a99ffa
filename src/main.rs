//! kubectl-scalardb_graphql: ScalarDB GraphQL on EKS behind an internal,
//! cookie-sticky ALB, as `kubectl scalardb-graphql install | status | uninstall`.
//!
//! Thin: parse, run, map the outcome to an exit code (see error.rs).

mod cleanup;
mod cli;
mod commands;
mod completion;
mod component;
mod components;
mod context;
mod deployment;
mod error;
mod helm;
mod http;
mod inputs;
mod lease;
mod lookups;
mod output;
mod ownership;
mod pins;
mod policy;
mod properties;
mod record;
mod releases;
mod schema;
mod spec;
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
        let outcome = tokio::select! {
            result = commands::run(cli, printer.clone()) => result,
            _ = tokio::signal::ctrl_c() => Err(error::Error::interrupted()),
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
    // A prompt still reading stdin on a blocking thread must not hold the exit.
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error::Error::Other(e))
            if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            printer.error(&e);
            ExitCode::from(e.exit_code())
        }
    }
}
