//! The plugin against a rig that misbehaves as real services do: AWS
//! throttling a share of its requests, the AWS endpoint hanging for a while,
//! the Kubernetes API server hanging past the command's deadline. Each test
//! prints the time from the fault's injection to the command's exit
//! (`fault: …` lines, shown with `--nocapture`).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Rig, expect_code, install_args_with_timeout, rig};
use serde_json::Value;

/// The snapshot of an uninterrupted install from a reset rig, made once per run of this file.
static REFERENCE: OnceLock<Value> = OnceLock::new();

fn reference(rig: &Rig) -> &'static Value {
    REFERENCE.get_or_init(|| {
        rig.reset();
        rig.install_ok();
        let snapshot = rig.snapshot();
        rig.reset();
        snapshot
    })
}

/// A plugin command running in the background, its stdout read line by line as it comes.
struct Running {
    child: Child,
    started: Instant,
    lines: Receiver<String>,
    stdout: std::sync::Arc<Mutex<Vec<String>>>,
    stderr: Option<JoinHandle<String>>,
    reader: Option<JoinHandle<()>>,
}

struct Finished {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    started: Instant,
    /// When it exited.
    at: Instant,
}

impl Running {
    fn spawn(rig: &Rig, args: &[String]) -> Running {
        let mut child = rig
            .plugin()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the plugin");
        let started = Instant::now();
        let (tx, lines) = channel();
        let stdout = std::sync::Arc::new(Mutex::new(vec![]));
        let all = stdout.clone();
        let out = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                all.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Running { child, started, lines, stdout, stderr: Some(stderr), reader: Some(reader) }
    }

    /// Waits for a stdout line starting with `prefix`; fails the test (with the output) if the
    /// command ends or `secs` pass first.
    fn wait_for_line(&mut self, prefix: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(_) if Instant::now() >= deadline || self.child.try_wait().unwrap().is_some() => {
                    panic!(
                        "no line {prefix:?} within {secs}s; the command printed:\n{}",
                        self.stdout.lock().unwrap().join("\n")
                    )
                }
                Err(_) => {}
            }
        }
    }

    /// Whether it has exited, and when that was first seen.
    fn poll(&mut self, exited: &mut Option<Instant>) -> bool {
        if exited.is_none() && self.child.try_wait().unwrap().is_some() {
            *exited = Some(Instant::now());
        }
        exited.is_some()
    }

    /// Waits for the exit (polling, so its time is measured to ~50 ms); kills it after `secs`.
    fn finish(mut self, secs: u64, exited: Option<Instant>) -> Finished {
        let deadline = self.started + Duration::from_secs(secs);
        let mut exited = exited;
        while !self.poll(&mut exited) {
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let status = self.child.wait().unwrap();
        self.reader.take().unwrap().join().unwrap();
        let stderr = self.stderr.take().unwrap().join().unwrap();
        let stdout = self.stdout.lock().unwrap().join("\n");
        Finished { code: status.code(), stdout, stderr, started: self.started, at: exited.unwrap_or_else(Instant::now) }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

#[test]
fn install_status_and_uninstall_each_complete_with_30_percent_of_aws_requests_throttled() {
    let rig = rig();
    rig.reset();
    let before = rig.snapshot();
    rig.aws_throttle(0.3, 20261127);
    let install = rig.install_args();
    let status = ["status".to_string()];
    let uninstall = ["uninstall", "-y", "--timeout", "120s"].map(String::from);
    let commands: [(&str, &[String]); 3] = [("install", &install), ("status", &status), ("uninstall -y", &uninstall)];
    for (what, args) in commands {
        let throttled_before = rig.throttled_for_the_plugin();
        let started = Instant::now();
        let out = rig.plugin().args(args).output().expect("running the plugin");
        let took = started.elapsed();
        let throttled = rig.throttled_for_the_plugin() - throttled_before;
        eprintln!(
            "fault: 30% of AWS requests throttled: `{what}` exited {:?} after {} (fault on from its start), \
             {throttled} throttled answers to it",
            out.status.code(),
            secs(took)
        );
        expect_code(&out, 0, &format!("{what} with 30% of AWS requests throttled"));
        assert!(throttled > 0, "{what}: the AWS server throttled none of its requests: {}", rig.aws_faults());
    }
    eprintln!("fault: throttling off; the AWS server's counters were {}", rig.aws_faults());
    rig.aws_faults_off();
    rig.eventually_same(&before, "after install, status and uninstall under throttling, the rig as it was");
}

#[test]
fn with_the_aws_server_paused_20s_mid_install_the_install_ends_in_time_and_a_rerun_converges() {
    let rig = rig();
    let reference = reference(&rig);
    rig.reset();
    let timeout = 120;
    let mut run = Running::spawn(&rig, &install_args_with_timeout(&rig, &format!("{timeout}s")));
    // The policy is made: the next AWS calls (the role, its attachment) hang.
    run.wait_for_line("√ created IAM policy", 60);
    let paused = rig.pause_aws();
    let injected = paused.since;
    let mut exited = None;
    while injected.elapsed() < Duration::from_secs(20) && !run.poll(&mut exited) {
        std::thread::sleep(Duration::from_millis(50));
    }
    paused.resume();
    let done = run.finish(timeout + 60, exited);
    let (from_start, from_injection) = (done.at - done.started, done.at - injected);
    eprintln!(
        "fault: AWS server paused 20s after the IAM policy: install exited {:?} {} after the pause began \
         ({} after its start, --timeout {timeout}s)",
        done.code,
        secs(from_injection),
        secs(from_start)
    );
    match done.code {
        Some(0) => {}
        Some(4) => assert!(
            from_start <= Duration::from_secs(timeout + 10),
            "timed out only after {}: {}",
            secs(from_start),
            done.stderr
        ),
        other => panic!(
            "install neither succeeded nor timed out cleanly: exit {other:?}\n--- stdout\n{}\n--- stderr\n{}",
            done.stdout, done.stderr
        ),
    }
    rig.install_ok();
    rig.eventually_same(reference, "a re-run after the AWS server's pause, against an uninterrupted install");
}

#[test]
fn with_the_apiserver_paused_past_the_timeout_install_exits_4_by_its_deadline_and_the_rig_and_a_rerun_recover() {
    let rig = rig();
    let reference = reference(&rig);
    rig.reset();
    let (timeout, pause_for) = (40, Duration::from_secs(50));
    let mut run = Running::spawn(&rig, &install_args_with_timeout(&rig, &format!("{timeout}s")));
    // The IAM role's ServiceAccount is made: the controller's helm release comes next.
    run.wait_for_line("√ created ServiceAccount", 60);
    let paused = rig.pause_apiserver();
    let injected = paused.since;
    let mut exited = None;
    while injected.elapsed() < pause_for {
        run.poll(&mut exited);
        std::thread::sleep(Duration::from_millis(50));
    }
    paused.resume();
    let done = run.finish(timeout + 120, exited);
    let (from_start, from_injection) = (done.at - done.started, done.at - injected);
    eprintln!(
        "fault: kube-apiserver paused {} mid-install: install exited {:?} {} after the pause began, {} after its \
         start (--timeout {timeout}s)",
        secs(pause_for),
        done.code,
        secs(from_injection),
        secs(from_start)
    );
    // Checked last, so that a failure here still shows whether the rig and a re-run recover.
    let mut wrong = vec![];
    if done.code != Some(4) {
        wrong.push(format!("install exited {:?}, not 4 (timed out)", done.code));
    }
    if from_start > Duration::from_secs(timeout + 5) {
        wrong.push(format!("the deadline was {timeout}s; install exited after {}", secs(from_start)));
    }
    if !done.stderr.contains("timed out") {
        wrong.push("stderr does not show the timeout and the last state".to_string());
    }

    // The rig recovers by itself: healthy, and a pod is scheduled and made ready.
    let resumed = Instant::now();
    rig.eventually("`rig status` healthy after the API server's pause", 120, || rig.rig_status().status.success());
    eprintln!("fault: the rig was healthy again {} after the API server resumed", secs(resumed.elapsed()));
    schedulable(&rig);

    rig.install_ok();
    rig.eventually_same(reference, "a re-run after the API server's pause, against an uninterrupted install");
    eprintln!("fault: after the API server's pause, a re-run converged to the uninterrupted install's snapshot");
    assert!(
        wrong.is_empty(),
        "with the API server paused past --timeout:\n{}\n--- stdout\n{}\n--- stderr\n{}",
        wrong.join("\n"),
        done.stdout,
        done.stderr
    );
}

/// A pod is scheduled onto a node and becomes Ready, then is gone again.
fn schedulable(rig: &Rig) {
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "fault-recovery-check", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "example"}]}});
    rig.kubectl_apply(&pod);
    let out = rig.kubectl(&["wait", "--for=condition=Ready", "pod/fault-recovery-check", "--timeout=60s"]);
    let node = rig.kubectl_ok(&["get", "pod", "fault-recovery-check", "-o", "jsonpath={.spec.nodeName}"]);
    rig.kubectl_ok(&["delete", "pod", "fault-recovery-check", "--wait=true", "--timeout=60s"]);
    expect_code(&out, 0, "a new pod Ready after the pause");
    assert!(!node.is_empty(), "the pod was not scheduled");
}
