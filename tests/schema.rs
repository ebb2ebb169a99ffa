//! `schema load` / `schema delete` against the rig (its pod runner runs the
//! loader's Job pod with a stand-in that accepts the VPC's database,
//! db:5432), and `install --schema`.

mod common;

use std::process::{Child, Stdio};

use common::{DB_PASSWORD, Rig, expect_code, rig, text};
use serde_json::Value;

const SCHEMA: &str = r#"{
  "emoney.account": {"transaction": true, "partition-key": ["id"], "columns": {"id": "TEXT", "balance": "INT"}},
  "shop.orders": {"transaction": true, "partition-key": ["order_id"], "clustering-key": ["ts DESC"], "columns": {"order_id": "TEXT", "ts": "BIGINT"}}
}"#;

fn files() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.json");
    let props = dir.path().join("database.properties");
    std::fs::write(&schema, SCHEMA).unwrap();
    std::fs::write(&props, format!("scalar.db.contact_points=jdbc:postgresql://db:5432/scalardb\nscalar.db.username=scalar\nscalar.db.password={DB_PASSWORD}\nscalar.db.storage=jdbc\n")).unwrap();
    let (s, p) = (schema.display().to_string(), props.display().to_string());
    (dir, s, p)
}

/// `kubectl get KIND --watch -o json`: every version of every object, as it happens.
fn watch(rig: &Rig, kind: &str) -> Child {
    let child = rig
        .cmd("kubectl")
        .args(["get", kind, "--watch", "-o", "json", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    child
}

fn seen(mut child: Child) -> Vec<Value> {
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    serde_json::Deserializer::from_slice(&out.stdout).into_iter::<Value>().filter_map(Result::ok).collect()
}

#[test]
fn schema_load_runs_the_loader_as_a_job_with_no_secret_in_its_spec_and_cleans_up() {
    let rig = rig();
    rig.reset();
    let (_dir, schema, props) = files();
    let (jobs, secrets, maps) = (watch(&rig, "jobs"), watch(&rig, "secrets"), watch(&rig, "configmaps"));
    let out = rig
        .plugin()
        .args(["schema", "load", "-f", &schema, "--db-properties", &props, "--coordinator", "--timeout", "60s"])
        .output()
        .unwrap();
    expect_code(&out, 0, "schema load");
    let (jobs, secrets, maps) = (seen(jobs), seen(secrets), seen(maps));
    let job = jobs
        .iter()
        .find(|e| {
            e["type"] == "ADDED"
                && e["object"]["metadata"]["name"].as_str().unwrap_or_default().starts_with("scalardb-schema-loader-")
        })
        .expect("the Job was created");
    let job = &job["object"];
    let name = job["metadata"]["name"].as_str().unwrap();
    let c = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "ghcr.io/scalar-labs/scalardb-schema-loader:3.13.6");
    assert_eq!(
        c["args"],
        serde_json::json!([
            "-c",
            "/scalardb/config/database.properties",
            "-f",
            "/scalardb/schema/schema.json",
            "--coordinator"
        ])
    );
    let mounts: Vec<&str> =
        c["volumeMounts"].as_array().unwrap().iter().map(|m| m["mountPath"].as_str().unwrap()).collect();
    assert_eq!(mounts, ["/scalardb/config", "/scalardb/schema"]);
    assert!(!job.to_string().contains(DB_PASSWORD), "a secret in the Job spec");
    assert!(jobs.iter().any(|e| e["object"]["status"]["succeeded"] == 1), "the Job did not complete");
    let cm = maps.iter().find(|e| e["object"]["metadata"]["name"] == name).expect("the schema ConfigMap was created");
    assert!(cm["object"]["data"]["schema.json"].as_str().unwrap().contains("emoney.account"));
    assert!(!maps.iter().any(|e| e.to_string().contains(DB_PASSWORD)), "a secret in a ConfigMap");
    assert!(secrets.iter().any(|e| e["object"]["metadata"]["name"] == name), "the properties went to a Secret");
    let job_uid = jobs.iter().find_map(|e| e["object"]["metadata"]["uid"].as_str()).unwrap();
    assert!(
        secrets.iter().any(|e| e["object"]["metadata"]["name"] == name
            && e["object"]["metadata"]["ownerReferences"][0]["kind"] == "Job"
            && e["object"]["metadata"]["ownerReferences"][0]["uid"] == job_uid),
        "the Secret was never owned by its Job: {secrets:#?}"
    );
    for kind in ["job", "secret", "configmap"] {
        assert!(!rig.kubectl(&["get", kind, name]).status.success(), "the {kind} was not removed");
    }
    for s in [text(&out.stdout), text(&out.stderr)] {
        assert!(!s.contains(DB_PASSWORD));
    }
    rig.reset();
}

#[test]
fn a_failed_loader_shows_its_log_deletes_its_secret_keeps_its_job_and_configmap_and_exits_1_with_the_hint() {
    let rig = rig();
    rig.reset();
    let (dir, schema, props) = files();
    // The rig's VPC has one database, db:5432; the loader cannot reach this one.
    let text_props = std::fs::read_to_string(&props).unwrap().replace("//db:5432", "//nosuchdb:5432");
    std::fs::write(&props, text_props).unwrap();
    let out = rig
        .plugin()
        .args(["schema", "load", "-f", &schema, "--db-properties", &props, "--timeout", "60s"])
        .output()
        .unwrap();
    drop(dir);
    expect_code(&out, 1, "schema load against a database it cannot reach");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    let all = format!("{stdout}{stderr}");
    let log = all.split("Schema Loader log:").nth(1).unwrap_or_else(|| panic!("the loader's log was not shown: {all}"));
    assert!(log.contains("nosuchdb"), "the log does not name the database it could not reach: {all}");
    assert!(!all.contains(DB_PASSWORD), "{all}");
    let job = stderr
        .split("Job default/")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("{stderr}"))
        .to_string();
    assert!(stderr.contains(&format!("kubectl -n default logs job/{job}")), "{stderr}");
    let logs = rig.kubectl_ok(&["logs", &format!("job/{job}")]);
    assert!(logs.contains("nosuchdb"), "kubectl logs job/{job}: {logs}");
    for kind in ["job", "configmap"] {
        rig.kubectl_ok(&["get", kind, &job]);
    }
    assert!(!rig.kubectl(&["get", "secret", &job]).status.success(), "the properties outlived a failed load");

    // The right database with the wrong password: PostgreSQL's refusal, in the loader's log.
    let (_dir, schema, props) = files();
    let wrong = std::fs::read_to_string(&props).unwrap().replace(DB_PASSWORD, "not-the-password");
    std::fs::write(&props, wrong).unwrap();
    let out = rig
        .plugin()
        .args(["schema", "load", "-f", &schema, "--db-properties", &props, "--timeout", "60s"])
        .output()
        .unwrap();
    expect_code(&out, 1, "schema load with the wrong password");
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(all.contains("password authentication failed for user \"scalar\""), "{all}");
    assert!(!all.contains("not-the-password"), "{all}");
    rig.reset();
}

#[test]
fn schema_delete_asks_unless_yes_and_dry_run_redacts() {
    let rig = rig();
    rig.reset();
    let (_dir, schema, props) = files();
    let out = rig
        .plugin()
        .args(["schema", "delete", "-f", &schema, "--db-properties", &props])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    expect_code(&out, 2, "schema delete without -y and without a terminal");
    let out = rig
        .plugin()
        .args(["schema", "delete", "-f", &schema, "--db-properties", &props, "--dry-run"])
        .output()
        .unwrap();
    expect_code(&out, 0, "schema delete --dry-run");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("- -D") && stdout.contains("<redacted>") && !stdout.contains(DB_PASSWORD), "{stdout}");
    // The run is named by the schema and the properties' public part: another password, the same name.
    let name_of = |text: &str| {
        text.lines().find(|l| l.contains("name: scalardb-schema-loader-")).map(str::trim).map(str::to_string)
    };
    let other = std::fs::read_to_string(&props).unwrap().replace(DB_PASSWORD, "another-password");
    let other_props = _dir.path().join("other.properties");
    std::fs::write(&other_props, other).unwrap();
    let again = rig
        .plugin()
        .args(["schema", "delete", "-f", &schema, "--db-properties", other_props.to_str().unwrap(), "--dry-run"])
        .output()
        .unwrap();
    expect_code(&again, 0, "schema delete --dry-run with another password");
    assert!(name_of(&stdout).is_some(), "{stdout}");
    assert_eq!(name_of(&stdout), name_of(&text(&again.stdout)));
    assert!(rig.kubectl_ok(&["get", "jobs", "-o", "name"]).trim().is_empty());
    let out = rig
        .plugin()
        .args(["schema", "delete", "-f", &schema, "--db-properties", &props, "-y", "--timeout", "60s"])
        .output()
        .unwrap();
    expect_code(&out, 0, "schema delete -y");
    rig.reset();
}

#[test]
fn a_malformed_schema_is_refused_before_the_cluster_is_touched() {
    let rig = rig();
    let (dir, _, props) = files();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"customers": {"partition-key": [], "columns": {"id": "VARCHAR"}, "transaction": "yes"}}"#)
        .unwrap();
    let (out, _) = rig.without_mutation("a malformed schema", || {
        rig.plugin().args(["schema", "load", "-f", bad.to_str().unwrap(), "--db-properties", &props]).output().unwrap()
    });
    expect_code(&out, 2, "a malformed schema");
    let stderr = text(&out.stderr);
    for place in ["$[\"customers\"]", "[\"partition-key\"]", "columns[\"id\"]", ".transaction"] {
        assert!(stderr.contains(place), "{place} not named:\n{stderr}");
    }
}

#[test]
fn install_with_a_schema_loads_it_first_and_serves_its_namespaces() {
    let rig = rig();
    rig.reset();
    let (_dir, schema, props) = files();
    let mut args = rig.install_args();
    let i = args.iter().position(|a| a == "--namespaces").unwrap();
    args.drain(i..i + 2);
    args.extend(["--schema".into(), schema, "--db-properties".into(), props]);
    let out = rig.plugin().args(&args).output().unwrap();
    expect_code(&out, 0, "install --schema");
    let stdout = text(&out.stdout);
    assert!(
        stdout.find("Schema Loader created the tables").unwrap()
            < stdout.find("installed release default/scalardb-graphql").unwrap(),
        "{stdout}"
    );
    let values: Value = serde_json::from_slice(
        &rig.cmd("helm").args(["get", "values", "scalardb-graphql", "-o", "json"]).output().unwrap().stdout,
    )
    .unwrap();
    assert_eq!(values["scalarDbGraphQlConfiguration"]["namespaces"], "emoney,shop");
    assert_eq!(values["scalarDbGraphQlConfiguration"]["storage"], "jdbc");
    // Loaded once: the re-run does not run the loader again.
    let again = rig.plugin().args(&args).output().unwrap();
    expect_code(&again, 0, "install --schema again");
    assert!(!text(&again.stdout).contains("Schema Loader"), "{}", text(&again.stdout));
    rig.reset();
}
