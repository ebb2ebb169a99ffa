//! The child processes the plugin runs (helm, the kubeconfig's credential
//! plugin), each bounded by the command's deadline: it runs in a process
//! group of its own, and at the deadline, or when the command is dropped
//! (Ctrl-C, SIGTERM, SIGHUP), the whole group (it and whatever it started)
//! is killed. None inherits the variables the plugin read secrets from.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Instant;

use tokio::process::Command;

use crate::error::{Context, Error, Result};

/// Environment variables that held a secret this run read (`--db-password-env`, …):
/// no child gets them.
static SCRUBBED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// From now on, no child process inherits `var`.
pub fn scrub(var: &str) {
    let mut vars = SCRUBBED.lock().unwrap_or_else(|e| e.into_inner());
    if !vars.iter().any(|v| v == var) {
        vars.push(var.to_string());
    }
}

/// The process group of a running child; SIGKILLed as a whole when dropped armed.
/// Windows has no such group: there `kill_on_drop` ends the child itself (not what it started).
struct Group(Option<u32>);

impl Group {
    /// The child ended by itself: nothing to kill (and its group id may be reused).
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(pgid) = self.0.take() {
            // SAFETY: killpg only sends a signal, to the group this process made for the
            // child (process_group(0)); it is not yet reaped, so the id is still that group's.
            unsafe {
                libc::killpg(pgid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}

/// What to run: a program, its arguments, variables set for it.
pub struct Run<'a> {
    pub program: &'a Path,
    pub args: &'a [OsString],
    pub env: &'a [(String, String)],
    /// Says what the child does, for messages: `helm to install release …`.
    pub what: &'a str,
}

/// Runs a child in a process group of its own until it ends or `deadline`
/// passes; then the whole group is killed, as it is when this future is
/// dropped. Its output, whatever its exit status; a timeout (exit 4) names it.
pub async fn run(run: Run<'_>, deadline: Option<Instant>) -> Result<std::process::Output> {
    let mut cmd = Command::new(run.program);
    cmd.args(run.args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    for var in SCRUBBED.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        cmd.env_remove(var);
    }
    cmd.envs(run.env.iter().map(|(k, v)| (k, v)));
    #[cfg(unix)]
    cmd.process_group(0);
    let what = run.what;
    let child = cmd.spawn().context(format!("running {what}"))?;
    let mut group = Group(child.id());
    let _waiting = crate::calls::call(what.to_string());
    let finished = match deadline {
        Some(at) => tokio::time::timeout_at(at.into(), child.wait_with_output()).await.ok(),
        None => Some(child.wait_with_output().await),
    };
    match finished {
        Some(out) => {
            group.disarm();
            out.context(format!("running {what}"))
        }
        None => {
            drop(group);
            Err(Error::timeout(format!("timed out: no answer from {what} by the deadline; it was stopped")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[cfg(unix)]
    #[tokio::test]
    async fn a_child_past_its_deadline_is_killed_with_its_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("child.pid");
        let script = dir.path().join("helm");
        std::fs::write(&script, format!("#!/bin/sh\nsleep 600 &\necho $! > {}\nexec sleep 600\n", pid_file.display()))
            .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let started = Instant::now();
        let job = Run { program: &script, args: &[], env: &[], what: "a hanging helm" };
        let e = run(job, Some(Instant::now() + Duration::from_millis(500))).await.unwrap_err();
        assert_eq!(e.exit_code(), 4, "{e}");
        assert!(e.to_string().contains("no answer from a hanging helm"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let child: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        // The grandchild got SIGKILL with the group; once its parent is gone, init reaps it.
        let gone = (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            !Path::new(&format!("/proc/{child}")).exists()
                || std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|s| s.contains(") Z "))
        });
        assert!(gone, "the background child {child} survived");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_scrubbed_variable_does_not_reach_a_child() {
        // SAFETY: a test of its own process's environment; no other thread reads this variable.
        unsafe { std::env::set_var("PROCESS_TEST_SECRET", "hunter2") };
        scrub("PROCESS_TEST_SECRET");
        let sh = Path::new("/bin/sh");
        let args = [OsString::from("-c"), OsString::from("echo \"[$PROCESS_TEST_SECRET]\"")];
        let out = run(Run { program: sh, args: &args, env: &[], what: "sh" }, None).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    }
}
