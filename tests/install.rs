//! `install` against the rig, with the real binary: the end state, the
//! no-op re-run, interruption at every component boundary, what already
//! existed, --dry-run, secrets, and bad input.

mod common;

use std::process::Command;

use common::{BIN, DB_PASSWORD, REGISTRY_TOKEN, Rig, expect_code, one_line_error, rig, text};
use serde_json::{Value, json};

fn record(rig: &Rig) -> Value {
    let raw = rig.kubectl_ok(&[
        "get",
        "configmap",
        "scalardb-graphql-install-record",
        "-o",
        "jsonpath={.data.record\\.json}",
    ]);
    serde_json::from_str(&raw).expect("the install record is JSON")
}

fn issuer_host(rig: &Rig) -> String {
    rig.issuer().trim_start_matches("https://").to_string()
}

#[test]
fn a_fresh_install_converges_every_component() {
    let rig = rig();
    rig.reset();
    let out = rig.install_ok();
    assert!(text(&out.stdout).contains("sticky: 10/10 requests kept the transaction"), "{}", text(&out.stdout));

    let host = issuer_host(&rig);
    let providers = rig.aws(&["iam", "list-open-id-connect-providers"]);
    let provider_arn = format!("arn:aws:iam::123456789012:oidc-provider/{host}");
    assert_eq!(providers["OpenIDConnectProviderList"][0]["Arn"], provider_arn.as_str());
    let role = rig.aws(&["iam", "get-role", "--role-name", "scalardb-graphql-rig-aws-load-balancer-controller"]);
    let trust = &role["Role"]["AssumeRolePolicyDocument"];
    let statement = &trust["Statement"][0];
    assert_eq!(trust["Statement"].as_array().unwrap().len(), 1);
    assert_eq!(statement["Effect"], "Allow");
    assert_eq!(statement["Action"], "sts:AssumeRoleWithWebIdentity");
    assert_eq!(statement["Principal"]["Federated"], provider_arn.as_str());
    let equals = statement["Condition"]["StringEquals"].as_object().unwrap();
    assert_eq!(equals.len(), 2);
    assert_eq!(equals[&format!("{host}:sub")], "system:serviceaccount:kube-system:aws-load-balancer-controller");
    assert_eq!(equals[&format!("{host}:aud")], "sts.amazonaws.com");
    let attached = rig.aws(&[
        "iam",
        "list-attached-role-policies",
        "--role-name",
        "scalardb-graphql-rig-aws-load-balancer-controller",
    ]);
    assert_eq!(attached["AttachedPolicies"][0]["PolicyName"], "AWSLoadBalancerControllerIAMPolicy");

    let sa = rig.kubectl_json(&["-n", "kube-system", "get", "serviceaccount", "aws-load-balancer-controller"]);
    assert_eq!(sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"], role["Role"]["Arn"]);

    let releases: Value =
        serde_json::from_slice(&rig.cmd("helm").args(["list", "-A", "-o", "json"]).output().unwrap().stdout).unwrap();
    let deployed: Vec<&str> = releases
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "deployed")
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(deployed.contains(&"aws-load-balancer-controller") && deployed.contains(&"scalardb-graphql"), "{releases}");

    let nodes = rig.kubectl_json(&["get", "nodes"]);
    let tainted: Vec<String> = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| {
            n["spec"]["taints"].as_array().is_some_and(|t| {
                t.iter().any(|t| {
                    t["key"] == "kubernetes.io/app"
                        && t["value"] == "scalardbgraphqlpool"
                        && t["effect"] == "NoSchedule"
                })
            })
        })
        .map(|n| n["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(tainted, ["graphql-1", "graphql-2", "graphql-3"]);
    let pods = rig.kubectl_json(&["get", "pods", "-l", "app.kubernetes.io/instance=scalardb-graphql"]);
    let pods = pods["items"].as_array().unwrap();
    assert_eq!(pods.len(), 3);
    for p in pods {
        assert!(
            tainted.contains(&p["spec"]["nodeName"].as_str().unwrap().to_string()),
            "{} on an undedicated node",
            p["metadata"]["name"]
        );
        assert!(
            p["status"]["conditions"].as_array().unwrap().iter().any(|c| c["type"] == "Ready" && c["status"] == "True")
        );
    }

    let ing = rig.kubectl_json(&["get", "ingress", "scalardb-graphql"]);
    assert_eq!(ing["spec"]["ingressClassName"], "alb");
    let a = &ing["metadata"]["annotations"];
    assert_eq!(a["alb.ingress.kubernetes.io/scheme"], "internal");
    assert_eq!(a["alb.ingress.kubernetes.io/target-type"], "ip");
    assert_eq!(
        a["alb.ingress.kubernetes.io/target-group-attributes"],
        "stickiness.enabled=true,stickiness.type=lb_cookie,stickiness.lb_cookie.duration_seconds=60"
    );
    assert_eq!(a["alb.ingress.kubernetes.io/healthcheck-path"], "/graphql?query=%7B__typename%7D");
    assert!(a.get("nginx.ingress.kubernetes.io/affinity").is_none(), "the nginx defaults are nulled");

    let tg = rig.aws(&["elbv2", "describe-target-groups"]);
    let arn = tg["TargetGroups"][0]["TargetGroupArn"].as_str().unwrap();
    assert_eq!(rig.target_group_attribute(arn, "stickiness.enabled").as_deref(), Some("true"));
    rig.reset();
}

#[test]
fn a_second_install_with_the_same_inputs_makes_no_mutating_call() {
    let rig = rig();
    rig.reset();
    rig.install_ok();
    let revisions = |r: &Rig| text(&r.cmd("helm").args(["list", "-A", "-o", "json"]).output().unwrap().stdout);
    let before = revisions(&rig);
    let (out, calls) = rig.without_mutation("a re-run", || rig.install_ok());
    assert!(!calls.is_empty(), "the recorder saw the plugin's reads, so it would have seen writes");
    assert_eq!(revisions(&rig), before, "a new helm revision");
    assert!(text(&out.stdout).contains("nothing to change"), "{}", text(&out.stdout));
    rig.reset();
}

#[test]
fn killed_at_each_component_boundary_a_rerun_ends_where_an_uninterrupted_install_does() {
    let rig = rig();
    rig.reset();
    let reference = rig.install_ok();
    let boundaries = text(&reference.stdout).lines().filter(|l| l.starts_with('√')).count() - 1;
    let expected = rig.snapshot();
    assert!(boundaries >= 12, "{}", text(&reference.stdout));
    // Every component boundary in one pass: each re-run starts from where the last was
    // killed, observes afresh, and is killed after its next step; the last one runs to its end.
    rig.reset();
    let killed = rig.killed_at_every_step(&rig.install_args());
    assert!(killed.len() > boundaries, "killed at fewer boundaries than an install has: {killed:#?}");
    let rerun = rig.install(&[]);
    expect_code(&rerun, 0, &format!("the re-run after kills at every boundary ({killed:#?})"));
    let diff = common::snapshot_diff(&expected, &rig.snapshot());
    assert!(diff.is_empty(), "after kills at every boundary ({killed:#?}), the end state differs: {diff:#?}");
    rig.reset();
}

#[test]
fn a_pre_existing_oidc_provider_and_subnet_tags_are_used_and_recorded_as_not_ours() {
    let rig = rig();
    rig.reset();
    rig.create_oidc_provider();
    rig.tag_private_subnets("");
    rig.install_ok();
    assert_eq!(
        rig.aws(&["iam", "list-open-id-connect-providers"])["OpenIDConnectProviderList"].as_array().unwrap().len(),
        1
    );
    let r = record(&rig);
    assert_eq!(r["oidcProvider"]["created"], false, "{r}");
    let tags = r["subnetTags"].as_array().unwrap();
    assert_eq!(tags.len(), 2);
    assert!(tags.iter().all(|t| t["created"] == false), "{r}");
    rig.reset();
}

#[test]
fn dry_run_on_an_empty_rig_changes_nothing_and_lists_every_action() {
    let rig = rig();
    rig.reset();
    let (out, calls) = rig.without_mutation("install --dry-run", || rig.install(&["--dry-run", "-o", "json"]));
    expect_code(&out, 0, "install --dry-run");
    assert!(!calls.is_empty(), "the recorder saw the plugin's reads, so it would have seen writes");
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let actions: Vec<String> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["actions"].as_array().unwrap().iter())
        .map(|a| {
            format!(
                "{} {} {} {}",
                a["system"].as_str().unwrap(),
                a["verb"].as_str().unwrap(),
                a["operation"].as_str().unwrap(),
                a["target"].as_str().unwrap()
            )
        })
        .collect();
    let expect = [
        "aws create ec2:CreateTags",
        "aws create iam:CreateOpenIDConnectProvider",
        "aws create iam:CreatePolicy AWSLoadBalancerControllerIAMPolicy",
        "aws create iam:CreateRole scalardb-graphql-rig-aws-load-balancer-controller",
        "aws update iam:AttachRolePolicy",
        "kubernetes create ServiceAccount kube-system/aws-load-balancer-controller",
        "helm create install kube-system/aws-load-balancer-controller",
        "kubernetes update Node graphql-1",
        "kubernetes update Node graphql-3",
        "kubernetes create Secret default/reg-docker-secrets",
        "kubernetes create Secret default/scalardb-graphql-db",
        "helm create install default/scalardb-graphql",
        "wait wait until Ingress",
        "wait wait until the ALB",
        "wait wait until a transaction",
    ];
    for e in expect {
        assert!(actions.iter().any(|a| a.starts_with(e)), "no action {e:?} in {actions:#?}");
    }
    // The text plan shows the same, with the rendered values.
    let text_plan = rig.install(&["--dry-run"]);
    assert!(text(&text_plan.stdout).contains("className: alb"), "{}", text(&text_plan.stdout));
    assert_eq!(
        rig.kubectl(&["get", "configmap", "scalardb-graphql-install-record"]).status.code(),
        Some(1),
        "dry-run wrote a record"
    );
}

#[test]
fn no_secret_reaches_output_argv_configmaps_or_the_record() {
    let rig = rig();
    rig.reset();
    // A helm that logs its command line, then runs the real one.
    let dir = tempfile::tempdir().unwrap();
    let (shim, log) = rig.helm_logging_argv(dir.path());
    let out = rig.plugin().args(rig.install_args()).env("HELM_BIN", &shim).output().unwrap();
    expect_code(&out, 0, "install");
    let dry = rig
        .plugin()
        .args(rig.install_args())
        .args(["--dry-run", "-o", "yaml"])
        .env("HELM_BIN", &shim)
        .output()
        .unwrap();
    expect_code(&dry, 0, "install --dry-run -o yaml");
    let argv = std::fs::read_to_string(&log).unwrap();
    assert!(argv.contains("upgrade --install"), "the shim saw helm's installs: {argv}");
    let configmaps = rig.kubectl_ok(&["get", "configmaps", "-A", "-o", "json"]);
    let secrets_seen =
        text(&rig.kubectl(&["get", "secret", "scalardb-graphql-db", "-o", "jsonpath={.data.db-password}"]).stdout);
    assert!(!secrets_seen.is_empty(), "the database Secret holds the password");
    for (place, content) in [
        ("stdout", text(&out.stdout)),
        ("stderr", text(&out.stderr)),
        ("dry-run output", text(&dry.stdout) + &text(&dry.stderr)),
        ("helm's argv", argv),
        ("ConfigMaps (the record among them)", configmaps),
    ] {
        for secret in [REGISTRY_TOKEN, DB_PASSWORD] {
            assert!(!content.contains(secret), "a secret reached {place}");
        }
    }
    rig.reset();
}

/// What `run` does: one line on stderr, a non-zero exit, and no mutating call.
fn refused(rig: &Rig, code: i32, names: &str, run: impl FnOnce() -> std::process::Output) {
    let (out, _) = rig.without_mutation(names, run);
    one_line_error(&out, code, &[names]);
}

#[test]
fn bad_input_gets_one_line_a_nonzero_exit_and_no_mutating_call() {
    let rig = rig();
    rig.reset();
    let dir = tempfile::tempdir().unwrap();
    let bad_yaml = dir.path().join("bad.yaml");
    std::fs::write(&bad_yaml, "ingress:\n  annotations: [unclosed\n").unwrap();
    // A context naming the same API server by another address: not the EKS cluster's endpoint.
    let kubeconfig = dir.path().join("kubeconfig");
    let original = std::fs::read_to_string(rig.get("KUBECONFIG")).unwrap();
    std::fs::write(&kubeconfig, original.replace("https://127.0.0.1:", "https://localhost:")).unwrap();
    let cases: Vec<(Vec<String>, Option<&std::path::Path>, i32, &str)> = vec![
        (vec!["--cluster-name".into(), "other-cluster".into()], None, 3, "EKS cluster \"other-cluster\" not found"),
        (vec![], Some(&kubeconfig), 3, "but EKS cluster \"scalardb-graphql-rig\" is at"),
        (vec!["-f".into(), "/nonexistent/values.yaml".into()], None, 2, "cannot read -f /nonexistent/values.yaml"),
        (vec!["-f".into(), bad_yaml.display().to_string()], None, 2, "is not valid YAML"),
        (vec!["--storage".into(), "mongo".into()], None, 2, "--storage \"mongo\""),
        (vec!["--node-selector".into(), "agentpool=nothing".into()], None, 3, "no node carries agentpool=nothing"),
    ];
    for (extra, kube, code, names) in cases {
        let mut cmd = rig.plugin();
        cmd.args(rig.install_args()).args(&extra);
        if let Some(k) = kube {
            cmd.env("KUBECONFIG", k);
        }
        refused(&rig, code, names, || cmd.output().unwrap());
    }
    let without_namespaces: Vec<String> = {
        let args = rig.install_args();
        let i = args.iter().position(|a| a == "--namespaces").unwrap();
        [&args[..i], &args[i + 2..]].concat()
    };
    refused(&rig, 3, "no ScalarDB namespaces given", || rig.plugin().args(without_namespaces).output().unwrap());
}

#[test]
fn an_upgrade_of_the_controller_applies_the_charts_crds_first() {
    let rig = rig();
    rig.reset();
    let out = rig.install(&["--lbc-chart-version", "3.4.0"]);
    expect_code(&out, 0, "install with the older controller chart");
    let crd = "loadbalancerconfigurations.gateway.k8s.aws";
    assert!(!rig.kubectl(&["get", "crd", crd]).status.success(), "3.4.0 does not carry {crd}");
    let out = rig.install_ok();
    assert!(text(&out.stdout).contains(&format!("applied CRD {crd}")), "{}", text(&out.stdout));
    rig.kubectl_ok(&["get", "crd", crd]);
    let r = record(&rig);
    assert!(r["lbController"]["crds"].as_array().unwrap().iter().any(|c| c == crd), "{r}");
    rig.reset();
}

#[test]
fn helm_4_drives_the_same_install() {
    let rig = rig();
    rig.reset();
    let helm4 = format!("{}/helm4", rig.get("PATH").split(':').next().unwrap());
    let out = rig.plugin().args(rig.install_args()).env("HELM_BIN", &helm4).output().unwrap();
    expect_code(&out, 0, "install with helm 4");
    let list: Value =
        serde_json::from_slice(&rig.cmd(&helm4).args(["list", "-A", "-o", "json"]).output().unwrap().stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let version = Command::new(BIN).args(["version"]).envs(&rig.env).env("HELM_BIN", &helm4).output().unwrap();
    assert!(text(&version.stdout).contains("(major 4)"), "{}", text(&version.stdout));
    rig.reset();
}

#[test]
fn an_adopted_role_is_refused_without_adopt_and_given_back_as_found_on_uninstall() {
    let rig = rig();
    rig.reset();
    let role = "scalardb-graphql-rig-aws-load-balancer-controller";
    let ec2_trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
    rig.aws(&["iam", "create-role", "--role-name", role, "--assume-role-policy-document", &ec2_trust.to_string()]);
    let before = rig.snapshot();
    refused(&rig, 3, "--adopt", || rig.install(&[]));
    // Taken over: its trust policy set to the controller's, the policy attached; twice, as a re-run would.
    for _ in 0..2 {
        expect_code(&rig.install(&["--adopt"]), 0, "install --adopt");
    }
    let got = rig.aws(&["iam", "get-role", "--role-name", role]);
    let trust = got["Role"]["AssumeRolePolicyDocument"].to_string();
    assert!(trust.contains("system:serviceaccount:kube-system:aws-load-balancer-controller"), "{trust}");
    let attached = rig.aws(&["iam", "list-attached-role-policies", "--role-name", role]);
    assert_eq!(attached["AttachedPolicies"].as_array().unwrap().len(), 1, "{attached}");
    // Uninstall keeps the role (not created here) but undoes what install did to it.
    let out = rig.uninstall_ok();
    let stdout = text(&out.stdout);
    assert!(stdout.contains(&format!("restored the trust policy IAM role {role} had before --adopt")), "{stdout}");
    assert!(stdout.contains("deleted IAM policy"), "the policy leaked: {stdout}");
    rig.eventually_same(&before, "the snapshot after uninstall");
    rig.reset();
}
