//! Shell completion: static scripts for bash, zsh and fish (from the clap
//! definitions), and the `__complete` protocol kubectl (≥ 1.26) speaks to a
//! plugin's `kubectl_complete-<name>` executable, which `completion kubectl`
//! prints.

use clap::{Arg, Command, CommandFactory};

use crate::cli::{Cli, CompletionShell};

pub const BINARY: &str = "kubectl-scalardb_graphql";
pub const SHIM: &str = "kubectl_complete-scalardb_graphql";

/// cobra's ShellCompDirectiveNoFileComp: offer no file names.
const NO_FILE_COMPLETION: u8 = 4;

pub fn script(shell: CompletionShell) -> String {
    let mut out = Vec::new();
    let mut cmd = Cli::command();
    let generator = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
        CompletionShell::Kubectl => return shim(),
    };
    clap_complete::generate(generator, &mut cmd, BINARY, &mut out);
    String::from_utf8(out).expect("completion scripts are UTF-8")
}

fn shim() -> String {
    format!(
        "#!/bin/sh\n\
         # kubectl (1.26 or newer) runs this to complete `kubectl scalardb-graphql …`.\n\
         # Install: save as an executable named {SHIM} on your PATH, e.g.\n\
         #   kubectl scalardb-graphql completion kubectl > ~/.krew/bin/{SHIM} && chmod +x ~/.krew/bin/{SHIM}\n\
         exec {BINARY} __complete \"$@\"\n"
    )
}

fn long_flags(cmd: &Command) -> impl Iterator<Item = &Arg> {
    cmd.get_arguments().filter(|a| a.get_long().is_some() && !a.is_hide_set())
}

fn find_flag<'a>(cmd: &'a Command, root: &'a Command, word: &str) -> Option<&'a Arg> {
    let name = word.trim_start_matches('-').split('=').next().unwrap_or_default();
    let matches = |a: &&Arg| {
        if word.starts_with("--") {
            a.get_long() == Some(name)
        } else {
            name.len() == 1 && a.get_short() == name.chars().next()
        }
    };
    cmd.get_arguments().find(matches).or_else(|| root.get_arguments().find(matches))
}

fn values_of(a: &Arg) -> Vec<(String, String)> {
    a.get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| (v.get_name().to_string(), v.get_help().map(|h| h.to_string()).unwrap_or_default()))
        .collect()
}

/// Candidates for the last word, given the words before it (those after `kubectl scalardb-graphql`).
pub fn candidates(words: &[String]) -> Vec<(String, String)> {
    let root = Cli::command();
    let (partial, before) = match words.split_last() {
        Some((last, before)) => (last.as_str(), before),
        None => ("", &[][..]),
    };
    let mut cmd = &root;
    let mut pending: Option<&Arg> = None;
    for w in before {
        if pending.take().is_some() {
            continue;
        }
        if w.starts_with('-') {
            if let Some(a) = find_flag(cmd, &root, w)
                && !w.contains('=')
                && a.get_action().takes_values()
            {
                pending = Some(a);
            }
        } else if let Some(sub) = cmd.find_subcommand(w) {
            cmd = sub;
        }
    }
    let all: Vec<(String, String)> = if let Some(a) = pending {
        values_of(a)
    } else if partial.starts_with('-') {
        long_flags(cmd)
            .chain(
                if std::ptr::eq(cmd, &root) { None } else { Some(long_flags(&root).filter(|a| a.is_global_set())) }
                    .into_iter()
                    .flatten(),
            )
            .map(|a| {
                (
                    format!("--{}", a.get_long().unwrap_or_default()),
                    a.get_help().map(|h| h.to_string()).unwrap_or_default(),
                )
            })
            .collect()
    } else {
        let subs = cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| (s.get_name().to_string(), s.get_about().map(|h| h.to_string()).unwrap_or_default()));
        let positional = cmd.get_positionals().flat_map(values_of);
        subs.chain(positional).collect()
    };
    all.into_iter().filter(|(c, _)| c.starts_with(partial)).collect()
}

/// The `__complete` answer: one candidate a line (`name<TAB>help`), then `:<directive>`.
pub fn answer(words: &[String]) -> String {
    let mut out = String::new();
    for (c, help) in candidates(words) {
        if help.is_empty() {
            out.push_str(&format!("{c}\n"));
        } else {
            out.push_str(&format!("{c}\t{}\n", help.lines().next().unwrap_or_default()));
        }
    }
    out.push_str(&format!(":{NO_FILE_COMPLETION}\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(words: &[&str]) -> Vec<String> {
        candidates(&words.iter().map(|s| s.to_string()).collect::<Vec<_>>()).into_iter().map(|(c, _)| c).collect()
    }

    #[test]
    fn subcommands_complete_at_the_top() {
        let n = names(&[""]);
        for s in ["install", "status", "uninstall", "version", "completion", "schema"] {
            assert!(n.contains(&s.to_string()), "{n:?}");
        }
        assert_eq!(names(&["st"]), ["status"]);
    }

    #[test]
    fn flags_and_their_values_complete() {
        assert!(names(&["status", "--cat"]).contains(&"--category".to_string()));
        assert!(names(&["status", "--context"]).contains(&"--context".to_string()), "globals are offered too");
        assert_eq!(names(&["status", "-o", "j"]), ["json"]);
        assert_eq!(names(&["completion", "k"]), ["kubectl"]);
    }

    #[test]
    fn the_answer_ends_with_a_directive() {
        assert!(answer(&["".into()]).ends_with(":4\n"));
    }

    #[test]
    fn the_shim_calls_back_the_plugin() {
        assert!(script(CompletionShell::Kubectl).contains("exec kubectl-scalardb_graphql __complete \"$@\""));
    }
}
