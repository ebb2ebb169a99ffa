//! Bad input across the commands: one line naming the problem and the fix,
//! the documented exit code, no panic, and not one mutating call; what the
//! user's own values hold stays out of plans and prompts; Ctrl-C at the
//! confirmation prompt ends the command at once.

mod common;

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use common::{DB_PASSWORD, REGISTRY_TOKEN, expect_code, rig, text};

/// One kind of bad input: the arguments, the exit code, a phrase naming the
/// problem and a phrase naming the fix.
struct Row {
    args: Vec<OsString>,
    code: i32,
    problem: &'static str,
    fix: &'static str,
    /// What standard input is (nothing when `None`).
    stdin: Option<String>,
}

fn row(args: &[&str], code: i32, problem: &'static str, fix: &'static str) -> Row {
    Row { args: args.iter().map(OsString::from).collect(), code, problem, fix, stdin: None }
}

/// A secret in a hostile input: it must appear in no output.
const YAML_SECRET: &str = "yaml-secret-61d0";
const URL_SECRET: &str = "url-secret-4b2e";

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
    let fifo = dir.path().join("values.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path this test owns.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let fifo = fifo.to_str().unwrap().to_string();
    let big = file("big.yaml", &format!("# {}\n", "x".repeat(1 << 20)));
    let secret_yaml = file("secret.yaml", &format!("db:\n  password: {YAML_SECRET}\n  user: [scalar\n"));
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
        row(
            &with(&install, &["-f", "/nonexistent/values.yaml"]),
            2,
            "cannot read -f /nonexistent/values.yaml",
            "check the file's path",
        ),
        row(&with(&install, &["-f", &bad_yaml]), 2, "is not valid YAML", "fix the YAML"),
        row(
            &with(&install, &["--iam-policy-file", "/nonexistent/policy.json"]),
            2,
            "cannot read --iam-policy-file",
            "check the file's path",
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
            "cannot read --registry-password-file",
            "check the file's path",
        ),
        row(&with(&install, &["--namespaces", "a b"]), 2, "not a ScalarDB namespace", "give --namespaces as"),
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
        // Checked before the first call, not by a server after changes were made.
        row(&with(&install, &["--replicas", "3000000000"]), 2, "--replicas 3000000000", "from 1 to 1000"),
        row(
            &with(&install, &["--taint", "bad key=v:NoSchedule"]),
            2,
            "\"bad key\" is not a valid label key",
            "pass --taint",
        ),
        row(
            &with(&install, &["--node-selector", "a b=c"]),
            2,
            "\"a b\" is not a valid label key",
            "pass --node-selector",
        ),
        row(
            &with(&install, &["--node-selector", "pool=-x"]),
            2,
            "\"-x\" is not a valid label value",
            "pass --node-selector",
        ),
        row(
            &with(&install, &["--chart-repo", "not-a-url"]),
            2,
            "is neither a chart repository URL",
            "pass --chart-repo",
        ),
        row(
            &with(&install, &["--chart-repo", &format!("https://u:{URL_SECRET}@charts example.com")]),
            2,
            "is neither a chart repository URL",
            "pass --chart-repo",
        ),
        row(
            &with(&install, &["--db-properties", &file("rel.properties", "scalar.db.graphql.path=graphql\n")]),
            2,
            "\"graphql\" is not an absolute path",
            "such as /graphql",
        ),
        row(
            &["install", "-y", "--db-properties", &file("ns.properties", "scalar.db.graphql.namespaces=ns one\n")],
            2,
            "\"ns one\", which is not a ScalarDB namespace",
            "ns1,ns2",
        ),
        row(&["status", "--probe-requests", "4294967295"], 2, "--probe-requests 4294967295", "from 1 to 1000"),
        row(&["status", "--probe-requests", "0"], 2, "--probe-requests 0", "from 1 to 1000"),
        row(
            &[
                "schema",
                "load",
                "-y",
                "-f",
                &file("s.json", SCHEMA),
                "--db-properties",
                &props,
                "--schema-loader-version",
                "1.0 x",
            ],
            2,
            "\"1.0 x\" is not an image tag",
            "pass --schema-loader-version",
        ),
        row(&with(&install, &["--timeout", "0"]), 2, "0 is none", "such as 10m"),
        row(&["status", "--timeout", "0s"], 2, "0 is none", "such as 10m"),
        // Input files: only regular files of at most 1 MiB, read under the deadline.
        row(&with(&install, &["-f", &fifo]), 2, "is a FIFO, not a regular file", "give a file"),
        row(&with(&install, &["-f", "/dev/zero"]), 2, "is a device, not a regular file", "give a file"),
        row(
            &with(&install, &["-f", dir.path().to_str().unwrap()]),
            2,
            "is a directory, not a regular file",
            "give a file",
        ),
        row(&with(&install, &["-f", &big]), 2, "holds more than 1048576 bytes", "right file"),
        row(
            &["schema", "load", "-y", "-f", &fifo, "--db-properties", &props],
            2,
            "a FIFO, not a regular file",
            "give a file",
        ),
        row(&with(&install, &["--db-properties", &fifo]), 2, "a FIFO, not a regular file", "give a file"),
        row(&with(&install, &["--iam-policy-file", &fifo]), 2, "a FIFO, not a regular file", "give a file"),
        row(
            &with(&install, &["--registry-username", "u", "--registry-password-file", "/dev/zero"]),
            2,
            "a device, not a regular file",
            "give a file",
        ),
        Row {
            stdin: Some("/dev/zero".into()),
            ..row(
                &with(&install, &["--registry-username", "u", "--registry-password-stdin"]),
                2,
                "holds more than 1048576 bytes",
                "right file",
            )
        },
        Row {
            stdin: Some("/dev/zero".into()),
            ..row(&with(&install, &["-f", "-"]), 2, "holds more than 1048576 bytes", "right file")
        },
        // A YAML error shows where, never the lines around it: a password is above.
        row(&with(&install, &["-f", &secret_yaml]), 2, "line 3", "fix the YAML"),
    ];
    // An argument that is not UTF-8.
    let mut not_utf8: Vec<OsString> = ["status", "--release"].iter().map(OsString::from).collect();
    not_utf8.push(OsString::from_vec(b"rel\xffease".to_vec()));
    rows.push(Row { args: not_utf8, code: 2, problem: "invalid UTF-8", fix: "--help", stdin: None });
    assert!(rows.len() >= 60, "{} rows", rows.len());

    let mark = rig.audit_mark();
    rig.moto_record();
    let tmp = tempfile::tempdir().unwrap();
    let mut wrong = vec![];
    for r in &rows {
        let stdin = match &r.stdin {
            Some(path) => std::process::Stdio::from(std::fs::File::open(path).unwrap()),
            None => std::process::Stdio::null(),
        };
        let started = std::time::Instant::now();
        let out = rig.plugin().args(&r.args).env("TMPDIR", tmp.path()).stdin(stdin).output().unwrap();
        let took = started.elapsed();
        let stderr = text(&out.stderr);
        let leaked: Vec<&str> = [DB_PASSWORD, REGISTRY_TOKEN, YAML_SECRET, URL_SECRET]
            .into_iter()
            .filter(|s| stderr.contains(s) || text(&out.stdout).contains(s))
            .collect();
        let left: Vec<_> =
            std::fs::read_dir(tmp.path()).unwrap().map_while(Result::ok).map(|e| e.file_name()).collect();
        let shown: Vec<String> = r.args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        let lines: Vec<&str> = stderr.lines().collect();
        let ok = out.status.code() == Some(r.code)
            && lines.len() == 1
            && lines[0].starts_with("error: ")
            && lines[0].contains(r.problem)
            && lines[0].contains(r.fix)
            && !stderr.contains("panicked")
            && out.stdout.is_empty()
            && leaked.is_empty()
            && left.is_empty()
            && took < std::time::Duration::from_secs(10);
        if !ok {
            wrong.push(format!(
                "{}\n  exit {:?} after {took:?}, secrets shown {leaked:?}, left in TMPDIR {left:?}, stderr:\n{stderr}",
                shown.join(" "),
                out.status.code()
            ));
        }
    }
    assert!(wrong.is_empty(), "{} of {} rows are wrong:\n{}", wrong.len(), rows.len(), wrong.join("\n"));
    assert_eq!(rig.kube_mutations_since(mark), Vec::<String>::new(), "bad input changed the cluster");
    let (_, mutating) = rig.moto_actions();
    assert!(mutating.is_empty(), "bad input changed AWS: {mutating:?}");
}

const SCHEMA: &str = r#"{"sample.t": {"transaction": true, "partition-key": ["id"], "columns": {"id": "INT"}}}"#;

#[test]
fn values_that_are_credentials_are_redacted_in_the_dry_run_and_values_that_mention_one_are_shown() {
    let rig = rig();
    rig.reset();
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        format!(
            "scalarDbGraphQlConfiguration:\n  apiKey: key-3f9a\nextraEnv:\n  credentials: cred-77a1\n\
             scalardbGraphql:\n  env:\n    - name: SCALAR_DB_PASSWORD\n      value: {DB_PASSWORD}\n    \
             - name: LOG_LEVEL\n      value: info-level-9\n    - name: API_TOKEN\n      value: tok-51c2\n    \
             - name: DB_PASS\n      value: pass-0d4e\n\
             credentials:\n  aws:\n    accessKey: nested-6a0b\n\
             affinity:\n  podAntiAffinity:\n    topologyKey: kubernetes.io/hostname\n\
             tls:\n  keepTLSSecret: true\n  existingSecret: graphql-tls-secret-name\n"
        ),
    )
    .unwrap();
    let mut args = rig.install_args();
    args.extend(["--dry-run".into(), "-f".into(), values.to_str().unwrap().into()]);
    for format in ["text", "json"] {
        let out = rig.plugin().args(&args).args(["-o", format]).output().unwrap();
        expect_code(&out, 0, &format!("install --dry-run -o {format}"));
        let shown = text(&out.stdout);
        for secret in ["key-3f9a", "cred-77a1", DB_PASSWORD, "tok-51c2", "pass-0d4e", "nested-6a0b"] {
            assert!(!shown.contains(secret), "{secret} shown in -o {format}:\n{shown}");
        }
        assert!(shown.contains("<redacted>") && shown.contains("info-level-9"), "-o {format}:\n{shown}");
        // What only mentions a credential is what will be deployed: shown.
        for plain in ["kubernetes.io/hostname", "graphql-tls-secret-name", "keepTLSSecret"] {
            assert!(shown.contains(plain), "{plain} hidden in -o {format}:\n{shown}");
        }
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

#[test]
fn a_secret_typed_on_a_terminal_is_not_echoed_and_ctrl_c_ends_its_read_at_once() {
    const DRIVER: &str = r#"
import json, os, pty, select, sys, termios, time
prompt = sys.argv[1].encode()
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
seen, start = b"", time.time()
while prompt not in seen and time.time() - start < 60:
    ready, _, _ = select.select([fd], [], [], 1)
    if ready:
        try:
            seen += os.read(fd, 4096)
        except OSError:
            break
os.write(fd, b"typed-secret-1f")
time.sleep(0.5)
os.write(fd, b"\x03")
typed = time.time()
while True:
    ready, _, _ = select.select([fd], [], [], 10)
    if not ready:
        break
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    seen += chunk
_, status = os.waitpid(pid, 0)
secs = time.time() - typed
echo = bool(termios.tcgetattr(fd)[3] & termios.ECHO)
print(json.dumps({"code": os.waitstatus_to_exitcode(status), "secs": secs, "echo": echo, "shown": seen.decode(errors="replace")}))
"#;
    let rig = rig();
    rig.reset();
    let mut args = rig.install_args();
    let at = args.iter().position(|a| a == "--db-password-env").unwrap();
    args.splice(at..at + 2, ["--db-password-stdin".to_string()]);
    let mark = rig.audit_mark();
    rig.moto_record();
    let tmp = tempfile::tempdir().unwrap();
    let out = rig.plugin_on_terminal(DRIVER, "typed input is hidden", &args, tmp.path());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("driver output: {}\n{}", text(&out.stdout), text(&out.stderr)));
    let shown = v["shown"].as_str().unwrap();
    eprintln!("Ctrl-C while a secret is read → exit {} in {:.2}s", v["code"], v["secs"]);
    assert!(shown.contains("typed input is hidden"), "no prompt:\n{shown}");
    assert!(!shown.contains("typed-secret-1f"), "the typed secret was echoed:\n{shown}");
    assert_eq!(v["code"], 130, "{shown}");
    assert!(v["secs"].as_f64().unwrap() < 2.0, "took {}s after Ctrl-C:\n{shown}", v["secs"]);
    assert_eq!(v["echo"], true, "the terminal's echo was left off");
    assert_eq!(rig.kube_mutations_since(mark), Vec::<String>::new());
    let (_, mutating) = rig.moto_actions();
    assert!(mutating.is_empty(), "{mutating:?}");
}
