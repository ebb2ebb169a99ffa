//! Bad input across the commands: one line naming the problem and the fix,
//! the documented exit code, no panic, and not one mutating call; what the
//! user's own values hold stays out of plans and prompts; Ctrl-C at the
//! confirmation prompt ends the command at once.

mod common;

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use common::{DB_PASSWORD, expect_code, rig, text};

/// One kind of bad input: the arguments, the exit code, a phrase naming the
/// problem and a phrase naming the fix.
struct Row {
    args: Vec<OsString>,
    code: i32,
    problem: &'static str,
    fix: &'static str,
}

fn row(args: &[&str], code: i32, problem: &'static str, fix: &'static str) -> Row {
    Row { args: args.iter().map(OsString::from).collect(), code, problem, fix }
}

#[test]
fn every_kind_of_bad_input_gets_one_line_its_exit_code_and_changes_nothing() {
    let rig = rig();
    rig.reset();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.to_str().unwrap().to_string()
    };
    let bad_yaml = file("bad.yaml", "replicaCount: [3\n");
    let bad_policy = file("policy.json", "{\"Version\": ");
    let bad_schema = file("schema.json", "{\"sample.t\": {\"columns\": {\"id\": \"INT\"}}}");
    let props =
        file("database.properties", "scalar.db.storage=jdbc\nscalar.db.contact_points=jdbc:postgresql://db:5432/x\n");
    let long_release = "r".repeat(54);
    let install = ["install", "-y", "--namespaces", "sample"];
    fn with<'a>(install: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        install.iter().chain(extra).copied().collect()
    }
    let mut rows = vec![
        row(&with(&install, &["--timeout", "99999999999h"]), 2, "longer than a year", "shorter duration"),
        row(&with(&install, &["--timeout", "-5s"]), 2, "--timeout \"-5s\"", "give a duration"),
        row(&["status", "--timeout", "3x"], 2, "unknown unit \"x\"", "give a duration"),
        row(&with(&install, &["--release", "-rf"]), 2, "--release \"-rf\" is not a valid name", "pass --release"),
        row(&with(&install, &["--release", &long_release]), 2, "at most 53 characters", "pass --release"),
        row(&["uninstall", "-y", "-n", "Team_A"], 2, "--namespace \"Team_A\" is not a valid name", "pass --namespace"),
        row(
            &with(&install, &["--registry-secret", "reg secret"]),
            2,
            "--registry-secret \"reg secret\"",
            "pass --registry-secret",
        ),
        row(&with(&install, &["-f", "/nonexistent/values.yaml"]), 2, "cannot read values file", "check the path"),
        row(&with(&install, &["-f", &bad_yaml]), 2, "is not valid YAML", "fix the YAML"),
        row(
            &with(&install, &["--iam-policy-file", "/nonexistent/policy.json"]),
            2,
            "cannot read --iam-policy-file",
            "check the path",
        ),
        row(&with(&install, &["--iam-policy-file", &bad_policy]), 2, "is not JSON", "iam_policy.json"),
        row(
            &["install", "-y", "--schema", &bad_schema, "--db-properties", &props],
            2,
            "no \"partition-key\"",
            "fix it there",
        ),
        row(&["status", "--category", "nonsense"], 2, "invalid value 'nonsense'", "--help"),
        row(
            &with(&install, &["--probe-from", "cluster", "--probe-url", "http://alb"]),
            2,
            "--probe-url probes from this machine",
            "drop one of them",
        ),
        row(&with(&install, &["--probe-from", "nowhere"]), 2, "invalid value 'nowhere'", "--help"),
        row(&["status", "--probe-url", "ftp://alb/graphql"], 2, "is not an http(s) URL", "give the ALB's address"),
        row(&with(&install, &["--probe-image", "Python:3"]), 2, "is not an image reference", "in lower case"),
        row(&with(&install, &["--replicas", "0"]), 2, "--replicas 0", "at least 1"),
        row(&with(&install, &["--replicas", "-1"]), 2, "invalid value '-1'", "--help"),
        row(&with(&install, &["--contact-port", "70000"]), 2, "70000 is not in 0..=65535", "--help"),
        row(&with(&install, &["--taint", "a=b"]), 2, "is not KEY=VALUE:EFFECT", "e.g. --taint"),
        row(&with(&install, &["--node-selector", "pool"]), 2, "is not KEY=VALUE", "e.g. --node-selector"),
        row(
            &with(&install, &["--db-username", "scalar", "--db-password-env", "NO_SUCH_VAR_1"]),
            2,
            "NO_SUCH_VAR_1",
            "export NO_SUCH_VAR_1",
        ),
        row(
            &with(&install, &["--registry-username", "u", "--registry-password-file", "/nonexistent/token"]),
            2,
            "cannot read the registry-password",
            "check the file's path",
        ),
        row(&with(&install, &["--namespaces", "a b"]), 2, "not a ScalarDB namespace", "pass --namespaces"),
        row(&with(&install, &["--chart-version", "newest"]), 2, "is not a chart version", "such as 1.8.6"),
        row(&with(&install, &["--iam-role-name", "lb role!"]), 2, "is not an IAM name", "pass --iam-role-name"),
        row(&with(&install, &["--region", "us east 1"]), 2, "is not an AWS region code", "such as us-east-1"),
        row(&with(&install, &["--request-timeout", "forever"]), 2, "--request-timeout \"forever\"", "give a duration"),
        row(&with(&install, &["--bogus"]), 2, "unexpected argument '--bogus'", "--help"),
        row(&["schema", "load", "-f", &bad_schema], 2, "--db-properties <FILE>", "--help"),
        row(
            &["schema", "delete", "-f", &file("ok.json", SCHEMA), "--db-properties", &props],
            2,
            "refusing without confirmation",
            "pass -y",
        ),
        row(&["status", "--context", "nope"], 3, "kube context \"nope\" not found", "--context"),
        row(&with(&install, &["--target", "nodes"]), 2, "invalid value 'nodes'", "--help"),
        row(
            &with(&install, &["--license-key-env", "RIG_LICENSE_KEY", "--license-cert-env", "RIG_LICENSE_CERT"]),
            2,
            "are for ScalarDB Cluster's nodes",
            "add --target cluster",
        ),
        row(
            &with(
                &install,
                &["--target", "cluster", "--registry-username", "u", "--registry-password-env", "RIG_DB_PASSWORD"],
            ),
            2,
            "pulls ScalarDB Cluster's public node images",
            "drop the --registry-",
        ),
        row(
            &with(&install, &["--target", "cluster", "--license-key-env", "RIG_LICENSE_KEY"]),
            2,
            "license key was given without its check certificate",
            "--license-cert-file",
        ),
        row(
            &with(
                &install,
                &[
                    "--target",
                    "cluster",
                    "--license-key-env",
                    "RIG_LICENSE_KEY",
                    "--license-cert-env",
                    "RIG_LICENSE_CERT",
                ],
            ),
            2,
            "the license was given without database credentials",
            "--existing-db-secret",
        ),
        row(
            &with(&install, &["--target", "cluster", "--node-image", "ghcr.io/Scalar/node"]),
            2,
            "is not an image reference",
            "in lower case",
        ),
        row(
            &with(&install, &["--target", "cluster", "--node-image", "ghcr.io/scalar/node:3.18.0"]),
            2,
            "names a tag or digest",
            "drop the tag",
        ),
    ];
    // An argument that is not UTF-8.
    let mut not_utf8: Vec<OsString> = ["status", "--release"].iter().map(OsString::from).collect();
    not_utf8.push(OsString::from_vec(b"rel\xffease".to_vec()));
    rows.push(Row { args: not_utf8, code: 2, problem: "invalid UTF-8", fix: "--help" });
    assert!(rows.len() >= 20);

    let mark = rig.audit_mark();
    rig.moto_record();
    let mut wrong = vec![];
    for r in &rows {
        let out = rig.plugin().args(&r.args).stdin(std::process::Stdio::null()).output().unwrap();
        let stderr = text(&out.stderr);
        let shown: Vec<String> = r.args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        let lines: Vec<&str> = stderr.lines().collect();
        let ok = out.status.code() == Some(r.code)
            && lines.len() == 1
            && lines[0].starts_with("error: ")
            && lines[0].contains(r.problem)
            && lines[0].contains(r.fix)
            && !stderr.contains("panicked")
            && out.stdout.is_empty();
        if !ok {
            wrong.push(format!("{}\n  exit {:?}, stderr:\n{stderr}", shown.join(" "), out.status.code()));
        }
    }
    assert!(wrong.is_empty(), "{} of {} rows are wrong:\n{}", wrong.len(), rows.len(), wrong.join("\n"));
    assert_eq!(rig.kube_mutations_since(mark), Vec::<String>::new(), "bad input changed the cluster");
    let (_, mutating) = rig.moto_actions();
    assert!(mutating.is_empty(), "bad input changed AWS: {mutating:?}");
}

const SCHEMA: &str = r#"{"sample.t": {"transaction": true, "partition-key": ["id"], "columns": {"id": "INT"}}}"#;

#[test]
fn values_naming_credentials_are_redacted_in_the_dry_run() {
    let rig = rig();
    rig.reset();
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        format!(
            "scalarDbGraphQlConfiguration:\n  apiKey: key-3f9a\nextraEnv:\n  credentials: cred-77a1\n\
             scalardbGraphql:\n  env:\n    - name: SCALAR_DB_PASSWORD\n      value: {DB_PASSWORD}\n    \
             - name: LOG_LEVEL\n      value: info-level-9\n    - name: API_TOKEN\n      value: tok-51c2\n"
        ),
    )
    .unwrap();
    let mut args = rig.install_args();
    args.extend(["--dry-run".into(), "-f".into(), values.to_str().unwrap().into()]);
    for format in ["text", "json"] {
        let out = rig.plugin().args(&args).args(["-o", format]).output().unwrap();
        expect_code(&out, 0, &format!("install --dry-run -o {format}"));
        let shown = text(&out.stdout);
        for secret in ["key-3f9a", "cred-77a1", DB_PASSWORD, "tok-51c2"] {
            assert!(!shown.contains(secret), "{secret} shown in -o {format}:\n{shown}");
        }
        assert!(shown.contains("<redacted>") && shown.contains("info-level-9"), "-o {format}:\n{shown}");
    }
}

/// Runs `args` on a terminal of its own, types Ctrl-C once `prompt` shows,
/// and returns (exit code, seconds from Ctrl-C to exit, everything shown).
fn interrupted_at_prompt(
    rig: &common::Rig,
    args: &[String],
    prompt: &str,
    tmp: &std::path::Path,
) -> (i32, f64, String) {
    const DRIVER: &str = r#"
import json, os, pty, select, sys, time
prompt = sys.argv[1].encode()
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
seen, start = b"", time.time()
while prompt not in seen:
    if time.time() - start > 120:
        os.kill(pid, 9)
        print(json.dumps({"code": -1, "secs": 0, "shown": seen.decode(errors="replace")}))
        sys.exit(0)
    ready, _, _ = select.select([fd], [], [], 1)
    if ready:
        try:
            seen += os.read(fd, 4096)
        except OSError:
            break
os.write(fd, b"\x03")
typed = time.time()
while True:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    seen += chunk
_, status = os.waitpid(pid, 0)
print(json.dumps({"code": os.waitstatus_to_exitcode(status), "secs": time.time() - typed, "shown": seen.decode(errors="replace")}))
"#;
    let out = rig.plugin_on_terminal(DRIVER, prompt, args, tmp);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("driver output: {}\n{}", text(&out.stdout), text(&out.stderr)));
    (v["code"].as_i64().unwrap() as i32, v["secs"].as_f64().unwrap(), v["shown"].as_str().unwrap().to_string())
}

#[test]
fn ctrl_c_at_the_confirmation_prompt_exits_130_at_once_and_changes_nothing() {
    let rig = rig();
    rig.reset();
    let args: Vec<String> = rig.install_args().into_iter().filter(|a| a != "-y").collect();
    let mark = rig.audit_mark();
    rig.moto_record();
    let tmp = tempfile::tempdir().unwrap();
    let (code, secs, shown) = interrupted_at_prompt(&rig, &args, "[y/N]", tmp.path());
    eprintln!("Ctrl-C at the prompt → exit in {secs:.2}s");
    assert_eq!(code, 130, "{shown}");
    assert!(secs < 2.0, "took {secs:.2}s to exit after Ctrl-C:\n{shown}");
    assert!(shown.contains("interrupted"), "{shown}");
    assert_eq!(rig.kube_mutations_since(mark), Vec::<String>::new());
    let (_, mutating) = rig.moto_actions();
    assert!(mutating.is_empty(), "{mutating:?}");
    let leftovers: Vec<_> =
        std::fs::read_dir(tmp.path()).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    assert!(leftovers.is_empty(), "files left behind in TMPDIR: {leftovers:?}");
}
