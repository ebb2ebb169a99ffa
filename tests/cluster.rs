//! `--target cluster` against the rig: the scalardb-cluster chart with its
//! nodes' GraphQL on, credentials and license through one Secret of
//! environment variables, and an ALB Ingress the plugin owns. Status all
//! green, a re-run changes nothing, uninstall reaches the clean snapshot; a
//! kill at each of the target's own steps converges on a re-run; switching
//! targets without uninstalling is refused and changes nothing.

mod common;

use base64::Engine;
use serde_json::Value;

use common::{DB_PASSWORD, LICENSE_CERT_PEM, LICENSE_KEY, Rig, expect_code, rig, text};

const RELEASE: &str = "scalardb-graphql";
const INGRESS: &str = "scalardb-graphql-graphql";
const SECRET: &str = "scalardb-graphql-cluster-env";

/// Sends 6 requests through the rig's VPC to the ALB `host` with the cookie the first one got, then 6
/// without a cookie; returns the targets each group reached, as the ALB stand-in logged them.
fn targets_through_the_alb(rig: &Rig, host: &str) -> (Vec<String>, Vec<String>) {
    const CLIENT: &str = r#"
import sys, urllib.request
proxy, host = sys.argv[1], sys.argv[2]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
def get(cookie):
    req = urllib.request.Request(f"http://{host}/graphql?query=%7B__typename%7D", headers={"Cookie": cookie} if cookie else {})
    with opener.open(req, timeout=10) as r:
        assert r.status == 200, r.status
        return [c.split(";")[0] for c in r.headers.get_all("Set-Cookie") or []]
alb = next(c for c in get(None) if c.startswith("AWSALB="))
for _ in range(5):
    assert any(c.startswith("AWSALB=") for c in get(alb)), "the ALB re-issues its cookie on every answer"
for _ in range(6):
    get(None)
"#;
    let log = rig.get("RIG_POD_RUNNER_LOG").to_string();
    let from = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) as usize;
    let out = rig.cmd("python3").args(["-c", CLIENT, rig.get("RIG_VPC_PROXY_URL"), host]).output().unwrap();
    expect_code(&out, 0, &format!("requests through the ALB: {}", text(&out.stderr)));
    let text_after = String::from_utf8_lossy(&std::fs::read(&log).unwrap()[from..]).to_string();
    let targets: Vec<String> = text_after
        .lines()
        .filter(|l| l.contains(&format!("http://{host}/graphql")))
        .filter_map(|l| l.split("-> target ").nth(1).and_then(|t| t.split(' ').next()).map(str::to_string))
        .collect();
    assert_eq!(targets.len(), 12, "the stand-in did not log every request:\n{text_after}");
    (targets[..6].to_vec(), targets[6..].to_vec())
}

fn install_cluster(rig: &Rig) -> std::process::Output {
    rig.plugin().args(rig.cluster_install_args()).output().expect("running install --target cluster")
}

/// The values the release was installed with (helm's view).
fn release_values(rig: &Rig) -> Value {
    let out = rig.cmd("helm").args(["get", "values", RELEASE, "-n", "default", "-o", "json"]).output().unwrap();
    expect_code(&out, 0, "helm get values");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every ConfigMap in the cluster, as one text.
fn all_configmaps(rig: &Rig) -> String {
    rig.kubectl_ok(&["get", "configmaps", "-A", "-o", "json"])
}

#[test]
fn install_target_cluster_owns_its_ingress_keeps_secrets_out_passes_status_reruns_unchanged_and_uninstalls_clean() {
    let rig = rig();
    rig.reset();
    let clean = rig.snapshot();
    // A helm that logs its command line, then runs the real one.
    let dir = tempfile::tempdir().unwrap();
    let (shim, argv_log) = rig.helm_logging_argv(dir.path());
    let out = rig.plugin().args(rig.cluster_install_args()).env("HELM_BIN", &shim).output().unwrap();
    expect_code(&out, 0, "install --target cluster");
    let dry = rig.plugin().args(rig.cluster_install_args()).args(["--dry-run", "-o", "yaml"]).output().unwrap();
    expect_code(&dry, 0, "install --target cluster --dry-run -o yaml");
    let argv = std::fs::read_to_string(&argv_log).unwrap();
    assert!(argv.contains("upgrade --install") && argv.contains("scalardb-cluster"), "helm's installs: {argv}");
    let shown = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(shown.contains(&format!("created Ingress default/{INGRESS}")), "{shown}");
    // ScalarDB Cluster is the supported home of GraphQL: no end-of-support warning.
    assert!(!shown.contains("support ended"), "{shown}");

    // The Ingress is the plugin's: its labels, class alb, the guide's annotations, the chart's GraphQL Service.
    let ing = rig.kubectl_json(&["-n", "default", "get", "ingress", INGRESS]);
    assert_eq!(ing["metadata"]["labels"]["app.kubernetes.io/managed-by"], "kubectl-scalardb-graphql", "{ing}");
    assert_eq!(ing["metadata"]["labels"]["kubectl-scalardb-graphql/release"], RELEASE, "{ing}");
    assert!(ing["metadata"]["annotations"].get("meta.helm.sh/release-name").is_none(), "helm's, not ours: {ing}");
    assert_eq!(ing["spec"]["ingressClassName"], "alb");
    let a = &ing["metadata"]["annotations"];
    assert_eq!(a["alb.ingress.kubernetes.io/scheme"], "internal");
    assert_eq!(a["alb.ingress.kubernetes.io/target-type"], "ip");
    assert!(
        a["alb.ingress.kubernetes.io/target-group-attributes"].as_str().unwrap().contains("stickiness.enabled=true")
    );
    let path = &ing["spec"]["rules"][0]["http"]["paths"][0];
    assert_eq!((path["path"].as_str(), path["pathType"].as_str()), (Some("/graphql"), Some("Exact")), "{ing}");
    assert_eq!(path["backend"]["service"]["name"], INGRESS, "the chart's <fullname>-graphql Service");
    assert_eq!(path["backend"]["service"]["port"]["number"], 8080);
    assert!(
        ing["status"]["loadBalancer"]["ingress"][0]["hostname"].as_str().is_some_and(|h| h.starts_with("internal-"))
    );
    let svc = rig.kubectl_json(&["-n", "default", "get", "service", INGRESS]);
    assert_eq!(svc["spec"]["ports"][0]["port"], 8080, "{svc}");

    // The chart's values: GraphQL on, membership, secrets only by reference, placement.
    let v = release_values(&rig);
    let node = &v["scalardbCluster"];
    assert_eq!(node["graphql"]["enabled"], true, "{v}");
    assert_eq!(node["secretName"], SECRET);
    assert_eq!(v["fullnameOverride"], RELEASE);
    assert_eq!(node["image"]["repository"], "ghcr.io/scalar-labs/scalardb-cluster-node-byol-premium");
    let props = node["scalardbClusterNodeProperties"].as_str().unwrap();
    for line in [
        "scalar.db.cluster.membership.type=KUBERNETES",
        "scalar.db.cluster.membership.kubernetes.endpoint.namespace_name=${env:SCALAR_DB_CLUSTER_MEMBERSHIP_KUBERNETES_ENDPOINT_NAMESPACE_NAME}",
        "scalar.db.cluster.membership.kubernetes.endpoint.name=${env:SCALAR_DB_CLUSTER_MEMBERSHIP_KUBERNETES_ENDPOINT_NAME}",
        "scalar.db.graphql.enabled=true",
        "scalar.db.graphql.port=8080",
        "scalar.db.graphql.path=/graphql",
        "scalar.db.graphql.namespaces=sample",
        "scalar.db.username=${env:SCALAR_DB_CLUSTER_DB_USERNAME}",
        "scalar.db.password=${env:SCALAR_DB_CLUSTER_DB_PASSWORD}",
        "scalar.db.cluster.node.licensing.license_key=${env:SCALAR_DB_CLUSTER_LICENSE_KEY}",
        "scalar.db.cluster.node.licensing.license_check_cert_pem=${env:SCALAR_DB_CLUSTER_LICENSE_CHECK_CERT_PEM}",
    ] {
        assert!(props.lines().any(|l| l == line), "{line:?} not in the node properties:\n{props}");
    }
    let term = &node["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        [0]["matchExpressions"][0];
    assert_eq!((term["key"].as_str(), term["values"][0].as_str()), (Some("agentpool"), Some("scalardbgraphqlpool")));
    assert_eq!(node["tolerations"][0]["key"], "kubernetes.io/app");
    let anti = &node["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(anti["podAffinityTerm"]["labelSelector"]["matchExpressions"][0]["values"][0], "scalardb-cluster");

    // The Secret holds the four variables; no secret value is in a ConfigMap, the values or the output.
    let secret = rig.kubectl_json(&["-n", "default", "get", "secret", SECRET]);
    let data = |k: &str| {
        let b = secret["data"][k].as_str().unwrap_or_else(|| panic!("no key {k} in {SECRET}"));
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b).unwrap()).unwrap()
    };
    assert_eq!(data("SCALAR_DB_CLUSTER_DB_USERNAME"), "scalar");
    assert_eq!(data("SCALAR_DB_CLUSTER_DB_PASSWORD"), DB_PASSWORD);
    assert_eq!(data("SCALAR_DB_CLUSTER_LICENSE_KEY"), LICENSE_KEY);
    assert_eq!(data("SCALAR_DB_CLUSTER_LICENSE_CHECK_CERT_PEM"), LICENSE_CERT_PEM);
    assert_eq!(secret["metadata"]["labels"]["app.kubernetes.io/managed-by"], "kubectl-scalardb-graphql");
    let configmaps = all_configmaps(&rig);
    let values = v.to_string();
    for (what, secret) in [("password", DB_PASSWORD), ("license key", LICENSE_KEY), ("certificate", "UmlnTGljZW5zZUNo")]
    {
        assert!(!configmaps.contains(secret), "the {what} is in a ConfigMap");
        assert!(!values.contains(secret), "the {what} is in the release's values");
        assert!(!shown.contains(secret), "the {what} is in install's output");
        assert!(!argv.contains(secret), "the {what} is in helm's argv");
        assert!(
            !text(&dry.stdout).contains(secret) && !text(&dry.stderr).contains(secret),
            "the {what} is in --dry-run"
        );
    }

    // The nodes run with it: Ready on the dedicated nodes, status all green.
    let status = rig.status(&[]);
    let report = text(&status.stdout);
    expect_code(&status, 0, &format!("status after install --target cluster:\n{report}"));
    assert!(!report.contains('×') && !report.contains("support ended"), "{report}");
    for seen in [
        "chart scalardb-cluster 1.11.0",
        "ScalarDB 3.18.0 is supported",
        "3/3 GraphQL pods Ready",
        &format!("Ingress default/{INGRESS} is this tool's"),
        &format!("Service default/{INGRESS} serves port 8080"),
        "all 3 GraphQL pod(s) run on dedicated nodes",
        "sticky: 10/10 requests kept the transaction",
        "without the cookie: 10/10 requests of a transaction committed",
    ] {
        assert!(report.contains(seen), "{seen:?} not in:\n{report}");
    }

    // The ALB stand-in sends the nodes' traffic to the nodes: by the cookie to one, without it to each in turn.
    let host = ing["status"]["loadBalancer"]["ingress"][0]["hostname"].as_str().unwrap();
    let (sticky, spread) = targets_through_the_alb(&rig, host);
    assert_eq!(sticky.iter().collect::<std::collections::BTreeSet<_>>().len(), 1, "with the cookie: {sticky:?}");
    assert_eq!(spread.iter().collect::<std::collections::BTreeSet<_>>().len(), 3, "without it: {spread:?}");
    // Stickiness turned off in AWS by hand: no cookie, and the probe says so (the routing is not probed then).
    let tgs = rig.aws(&["elbv2", "describe-target-groups"]);
    let arn = tgs["TargetGroups"][0]["TargetGroupArn"].as_str().unwrap();
    let sticky = |on: &str| {
        let attribute = format!("Key=stickiness.enabled,Value={on}");
        rig.aws(&["elbv2", "modify-target-group-attributes", "--target-group-arn", arn, "--attributes", &attribute]);
    };
    sticky("false");
    std::thread::sleep(std::time::Duration::from_secs(2)); // the stand-in reads the ALB at most 1.5 s old
    let off = rig.status(&["--category", "probe"]);
    let report = text(&off.stdout);
    expect_code(&off, 1, &format!("status with stickiness off:\n{report}"));
    assert!(report.contains("the ALB set no AWSALB cookie"), "{report}");
    assert!(report.contains("not probed: the sticky transaction did not pass"), "{report}");
    sticky("true");

    // A re-run changes nothing.
    let revisions = |r: &Rig| text(&r.cmd("helm").args(["list", "-A", "-o", "json"]).output().unwrap().stdout);
    let before = revisions(&rig);
    let (again, calls) = rig.without_mutation("a re-run of install --target cluster", || install_cluster(&rig));
    expect_code(&again, 0, "the re-run");
    assert!(!calls.is_empty(), "the recorder saw the plugin's reads");
    assert_eq!(revisions(&rig), before, "a new helm revision");
    assert!(text(&again.stdout).contains("nothing to change"), "{}", text(&again.stdout));

    // Uninstall removes the Ingress first (its ALB with it), then the release and the Secret.
    let gone = rig.uninstall_ok();
    let lines: Vec<String> = text(&gone.stdout).lines().map(str::to_string).collect();
    let at = |what: &str| lines.iter().position(|l| l.contains(what)).unwrap_or_else(|| panic!("{what}: {lines:#?}"));
    assert!(at(&format!("deleted Ingress default/{INGRESS}")) < at(&format!("uninstalled release default/{RELEASE}")));
    assert!(at(&format!("uninstalled release default/{RELEASE}")) < at(&format!("deleted Secret default/{SECRET}")));
    assert!(
        at(&format!("deleted Secret default/{SECRET}"))
            < at("uninstalled release kube-system/aws-load-balancer-controller")
    );
    rig.eventually_same(&clean, "after uninstall of --target cluster");
}

#[test]
fn killed_at_each_of_the_targets_own_steps_a_rerun_ends_where_an_uninterrupted_install_does() {
    let rig = rig();
    rig.reset();
    let reference = install_cluster(&rig);
    expect_code(&reference, 0, "the uninterrupted install");
    let expected = rig.snapshot();
    let lines: Vec<String> =
        text(&reference.stdout).lines().filter(|l| l.starts_with('√')).map(str::to_string).collect();
    // The shared steps are killed at in tests/install.rs; here, after each of the target's own:
    // its Secret, its release and its Ingress.
    let first = lines.iter().position(|l| l.contains("ScalarDB Cluster Secret")).expect("the Secret's line") + 1;
    let last = lines.iter().position(|l| l.contains("created Ingress")).expect("the Ingress's line") + 1;
    assert_eq!(last - first, 2, "{lines:#?}");
    for n in first..=last {
        rig.reset();
        let seen = rig.killed_after(&rig.cluster_install_args(), n);
        assert_eq!(seen.len(), n, "the install ended before boundary {n}");
        let rerun = install_cluster(&rig);
        expect_code(&rerun, 0, &format!("the re-run after a kill at boundary {n} ({})", seen.last().unwrap()));
        let diff = common::snapshot_diff(&expected, &rig.snapshot());
        assert!(diff.is_empty(), "killed after {:?}, the re-run ended elsewhere: {diff:#?}", seen.last().unwrap());
    }
    rig.reset();
}

#[test]
fn switching_targets_without_uninstalling_is_refused_in_one_line_and_changes_nothing() {
    let rig = rig();
    rig.reset();
    // The default target's install ends with the one end-of-support warning, naming the way on.
    let out = rig.install_ok();
    let stderr = text(&out.stderr);
    let warned: Vec<_> = stderr.lines().filter(|l| l.contains("support ended")).collect();
    assert_eq!(warned.len(), 1, "{stderr}");
    assert!(
        warned[0].contains("ScalarDB 3.13.6")
            && warned[0].contains("2026-05-21")
            && warned[0].contains("--target cluster"),
        "{stderr}"
    );
    let (code, report) = rig.status_json();
    assert_eq!(code, Some(0), "{report}");
    assert!(common::end_of_support_warning(&common::check(&report, "graphql.support")), "{report}");
    let (out, _) = rig.without_mutation("install --target cluster over the graphql target", || install_cluster(&rig));
    expect_code(&out, 3, "install --target cluster over --target graphql");
    let stderr = text(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("is installed with --target graphql; this install is --target cluster"), "{stderr}");
    assert!(
        stderr
            .contains("kubectl scalardb-graphql uninstall --release scalardb-graphql --keep-lb-controller --keep-iam"),
        "{stderr}"
    );
    // After that uninstall, the other target installs over what both share.
    let out = rig
        .plugin()
        .args(["uninstall", "-y", "--timeout", "120s", "--keep-lb-controller", "--keep-iam"])
        .output()
        .unwrap();
    expect_code(&out, 0, "uninstall keeping the controller and IAM");
    let out = install_cluster(&rig);
    expect_code(&out, 0, "install --target cluster after the switch");
    let (out, _) = rig.without_mutation("install --target graphql over the cluster target", || rig.install(&[]));
    expect_code(&out, 3, "install --target graphql over --target cluster");
    let stderr = text(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("is installed with --target cluster; this install is --target graphql"), "{stderr}");
    rig.reset();
}
