//! The one printer: every byte the plugin shows goes through here, with
//! control characters from the cluster escaped and credentials in URLs and
//! connection strings masked.
//!
//! Results go to stdout (checklists, plans, `-o json|yaml` documents);
//! progress spinners, warnings, questions and errors go to stderr, and
//! spinners only when stderr is a terminal. Color follows `--color`, then a
//! non-empty `NO_COLOR`, then whether the stream is a terminal.

use std::io::{self, IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::cli::{ColorChoice, OutputFormat};
use crate::component::{Check, Outcome, Plan};
use crate::error::Error;

pub struct Printer {
    color_out: bool,
    color_err: bool,
    progress: bool,
    spinner: Mutex<Option<ProgressBar>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    Pass,
    Warn,
    Fail,
    Skip,
}

impl From<Outcome> for Mark {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Pass => Mark::Pass,
            Outcome::Warn => Mark::Warn,
            Outcome::Fail => Mark::Fail,
            Outcome::Skip => Mark::Skip,
        }
    }
}

const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const DIM: &str = "\x1b[2m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// One line as shown: every control character (an escape sequence, a
/// carriage return, a newline) as `\u{…}`, so that text read from the
/// cluster or AWS cannot redraw the terminal or fake a line of a plan.
fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    text.chars()
        .map(|c| if c.is_control() { c.escape_unicode().to_string() } else { c.to_string() })
        .collect::<String>()
        .into()
}

fn use_color(choice: ColorChoice, terminal: bool) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
            let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
            !no_color && !dumb && terminal
        }
    }
}

impl Printer {
    pub fn new(choice: ColorChoice) -> Self {
        Printer {
            color_out: use_color(choice, io::stdout().is_terminal()),
            color_err: use_color(choice, io::stderr().is_terminal()),
            // No spinner over the trace's lines (KUBECTL_SCALARDB_GRAPHQL_TRACE).
            progress: io::stderr().is_terminal() && !crate::calls::tracing(),
            spinner: Mutex::new(None),
        }
    }

    /// Whether questions can be asked: both ends of the conversation are a terminal.
    pub fn interactive(&self) -> bool {
        io::stdin().is_terminal() && io::stderr().is_terminal()
    }

    fn paint(&self, on: bool, color: &str, text: &str) -> String {
        if on { format!("{color}{text}{RESET}") } else { text.to_string() }
    }

    fn symbol(&self, on: bool, mark: Mark) -> String {
        match mark {
            Mark::Pass => self.paint(on, GREEN, "√"),
            Mark::Warn => self.paint(on, YELLOW, "‼"),
            Mark::Fail => self.paint(on, RED, "×"),
            Mark::Skip => self.paint(on, DIM, "-"),
        }
    }

    /// Writes to stdout, with any spinner out of the way. A reader that went away
    /// (`status | head -1`) is no error: the command goes on to its own exit status.
    fn out(&self, text: &str) -> io::Result<()> {
        // No credential in a URL or connection string is ever shown, whoever wrote it.
        let text = crate::redaction::masked(text);
        let spinner = self.spinner.lock().unwrap().clone();
        let write = || {
            let mut out = io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()
        };
        let written = match spinner {
            Some(bar) => bar.suspend(write),
            None => write(),
        };
        match written {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        }
    }

    fn err(&self, text: &str) {
        let text = crate::redaction::masked(text);
        let spinner = self.spinner.lock().unwrap().clone();
        let write = || {
            let _ = io::stderr().lock().write_all(text.as_bytes());
        };
        match spinner {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }

    /// One result line: `√ text`, `‼ text`, `× text`, `- text`.
    pub fn line(&self, mark: Mark, text: &str) -> io::Result<()> {
        self.out(&format!("{} {}\n", self.symbol(self.color_out, mark), one_line(text)))
    }

    pub fn hint(&self, text: &str) -> io::Result<()> {
        self.out(&format!("    {}\n", self.paint(self.color_out, DIM, &format!("hint: {}", one_line(text)))))
    }

    pub fn heading(&self, text: &str) -> io::Result<()> {
        let text = one_line(text);
        self.out(&format!("{}\n{}\n", self.paint(self.color_out, BOLD, &text), "-".repeat(text.chars().count())))
    }

    /// Text of this tool's own (it may be painted, or span lines).
    pub fn text(&self, text: &str) -> io::Result<()> {
        self.out(&format!("{text}\n"))
    }

    /// A document in the chosen machine format (`text` is handled by the caller).
    pub fn document<T: Serialize>(&self, format: OutputFormat, value: &T) -> io::Result<()> {
        let text = match format {
            OutputFormat::Json => serde_json::to_string_pretty(value).map_err(io::Error::other)? + "\n",
            OutputFormat::Yaml => serde_saphyr::to_string(value).map_err(io::Error::other)?,
            OutputFormat::Text => unreachable!("text is printed by the caller"),
        };
        self.out(&text)
    }

    pub fn warn(&self, text: &str) {
        self.err(&format!("{} {}\n", self.symbol(self.color_err, Mark::Warn), one_line(text)));
    }

    /// One line: what went wrong, then what to do about it.
    pub fn error(&self, e: &Error) {
        self.stop_spinner();
        let hint = e.hint_text().map(|h| format!("; {h}")).unwrap_or_default();
        self.err(&format!("{} {}\n", self.paint(self.color_err, RED, "error:"), one_line(&format!("{e}{hint}"))));
    }

    /// Shows what is being waited for, on a terminal only.
    pub fn spin(&self, message: &str) {
        let mut slot = self.spinner.lock().unwrap();
        if let Some(bar) = slot.as_ref() {
            bar.set_message(crate::redaction::masked(&one_line(message)).into_owned());
            return;
        }
        if !self.progress {
            return;
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("valid template"));
        bar.set_message(crate::redaction::masked(&one_line(message)).into_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        *slot = Some(bar);
    }

    pub fn stop_spinner(&self) {
        if let Some(bar) = self.spinner.lock().unwrap().take() {
            bar.finish_and_clear();
        }
    }

    /// Asks once on the terminal; anything but y/yes is no.
    pub fn confirm(&self, question: &str) -> io::Result<bool> {
        self.err(&format!("{} [y/N] ", one_line(question)));
        let mut answer = String::new();
        io::stdin().read_line(&mut answer)?;
        Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
    }

    /// A status report: categories in order, a line per check, a hint under each failure.
    pub fn checklist(&self, checks: &[Check]) -> io::Result<()> {
        let mut category = None;
        for check in checks {
            if category != Some(check.category) {
                if category.is_some() {
                    self.text("")?;
                }
                self.heading(check.category.title())?;
                category = Some(check.category);
            }
            self.line(check.result.into(), &check.message)?;
            if check.result != Outcome::Pass
                && let Some(hint) = &check.hint
            {
                self.hint(hint)?;
            }
        }
        let failed = checks.iter().filter(|c| c.result == Outcome::Fail).count();
        let warned = checks.iter().filter(|c| c.result == Outcome::Warn).count();
        self.text("")?;
        let summary = match (failed, warned) {
            (0, 0) => format!("Status check results are {}", self.symbol(self.color_out, Mark::Pass)),
            (0, w) => format!(
                "Status check results are {} ({w} warning{})",
                self.symbol(self.color_out, Mark::Warn),
                plural(w)
            ),
            (f, _) => format!("Status check results are {} ({f} failed)", self.symbol(self.color_out, Mark::Fail)),
        };
        self.text(&summary)
    }

    /// A plan: each component's actions, in the order they would run.
    pub fn plan(&self, plan: &Plan, verb: &str) -> io::Result<()> {
        let total: usize = plan.steps.iter().map(|s| s.actions.len()).sum();
        if total == 0 {
            return self.line(Mark::Pass, &format!("nothing to {verb}: everything is as it should be"));
        }
        for step in plan.steps.iter().filter(|s| !s.actions.is_empty()) {
            self.text(&self.paint(self.color_out, BOLD, step.component))?;
            for action in &step.actions {
                self.out(&format!("  {}\n", one_line(&action.to_string())))?;
                if let Some(detail) = &action.detail {
                    let yaml = serde_saphyr::to_string(detail).map_err(io::Error::other)?;
                    for l in yaml.lines() {
                        self.out(&format!("      {}\n", one_line(l)))?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_from_the_cluster_are_shown_escaped() {
        assert_eq!(one_line("kept x: \u{1b}[2K\u{1b}[1Aok"), "kept x: \\u{1b}[2K\\u{1b}[1Aok");
        assert_eq!(one_line("a\rb\nc"), "a\\u{d}b\\u{a}c");
        assert_eq!(one_line("plain — ünïcode"), "plain — ünïcode");
    }

    #[test]
    fn never_means_no_color_even_on_a_terminal() {
        assert!(!use_color(ColorChoice::Never, true));
        assert!(use_color(ColorChoice::Always, false));
    }
}
