//! The controller acts with the credentials IRSA gives it, as on EKS: its
//! ServiceAccount's token, exchanged at STS for its role (the role's trust
//! checked against the token), and every AWS call authorized against the
//! role's policies. A role that trusts another ServiceAccount, a policy
//! detached or short of one action, pods that predate the ServiceAccount's
//! annotation: each leaves a new Ingress without an ALB, with the
//! controller's warning naming the refusal, and `status` points at the IAM
//! check that explains it.

mod common;

use serde_json::{Value, json};

use common::{LBC_ROLE, Rig, check, expect_code, installed, rig, text};

/// `status` fails `id`; when the release's own Ingress was reconciled since (and failed), its
/// controller-events check points at `id` too.
fn status_points_at(rig: &Rig, id: &str, says: &str, release_reconciled: bool) -> Value {
    if release_reconciled {
        // The restarted controller reconciles every Ingress, in no set order: the release's may
        // come after the one the test waited on.
        rig.eventually("the controller's failure on the release's Ingress", 60, || {
            check(&rig.status_json().1, "ingress.controller-events")["result"] == "fail"
        });
    }
    let (code, report) = rig.status_json();
    assert_eq!(code, Some(1), "{report}");
    let failed = check(&report, id);
    assert_eq!(failed["result"], "fail", "{id}: {failed}");
    assert!(failed["message"].as_str().unwrap().contains(says), "{id}: {failed}");
    if release_reconciled {
        let events = check(&report, "ingress.controller-events");
        assert_eq!(events["result"], "fail", "{events}");
        assert!(events["hint"].as_str().unwrap_or_default().contains(id), "the events' hint names no {id}: {events}");
    }
    report
}

#[test]
fn a_role_that_trusts_another_service_account_gets_no_alb_and_status_names_the_trust() {
    let rig = rig();
    installed(&rig);
    let role = rig.aws(&["iam", "get-role", "--role-name", LBC_ROLE]);
    let mut trust = role["Role"]["AssumeRolePolicyDocument"].clone();
    let conditions = trust["Statement"][0]["Condition"]["StringEquals"].as_object_mut().unwrap();
    let sub = conditions.keys().find(|k| k.ends_with(":sub")).unwrap().clone();
    conditions.insert(sub, json!("system:serviceaccount:team2:another-controller"));
    rig.aws(&["iam", "update-assume-role-policy", "--role-name", LBC_ROLE, "--policy-document", &trust.to_string()]);
    // Credentials last until they expire: a new pod asks STS again.
    rig.restart_controller();
    rig.another_alb_ingress("second");
    let warning = rig.ingress_refused("second", "Not authorized to perform sts:AssumeRoleWithWebIdentity");
    assert!(warning.contains("operation error STS: AssumeRoleWithWebIdentity"), "{warning}");
    // The restarted controller reconciled the release's Ingress too, and failed there.
    status_points_at(&rig, "iam.role-trust", "trust policy is wrong", true);
    // install puts the trust back; the controller's next credentials work.
    let out = rig.install(&["--no-probe"]);
    expect_code(&out, 0, "install after the trust was changed");
    rig.restart_controller();
    rig.eventually("the second Ingress's ALB", 60, || !rig.ingress_hostname("second").is_empty());
    rig.reset();
}

#[test]
fn a_detached_policy_or_one_without_create_listener_leaves_a_new_ingress_without_an_alb() {
    let rig = rig();
    installed(&rig);
    let policy = "arn:aws:iam::123456789012:policy/AWSLoadBalancerControllerIAMPolicy";
    rig.aws(&["iam", "detach-role-policy", "--role-name", LBC_ROLE, "--policy-arn", policy]);
    rig.another_alb_ingress("second");
    let warning = rig.ingress_refused("second", "is not authorized to perform: elasticloadbalancing:");
    assert!(warning.contains(&format!("assumed-role/{LBC_ROLE}/")), "{warning}");
    status_points_at(&rig, "iam.policy-attached", "is not attached", false);

    // The pinned document without elasticloadbalancing:CreateListener, given as the policy file.
    let mut doc: Value =
        serde_json::from_str(&std::fs::read_to_string(rig.get("RIG_IAM_POLICY_FILE")).unwrap()).unwrap();
    for statement in doc["Statement"].as_array_mut().unwrap() {
        if let Some(actions) = statement["Action"].as_array_mut() {
            actions.retain(|a| a != "elasticloadbalancing:CreateListener");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("short-policy.json");
    std::fs::write(&file, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    rig.kubectl_ok(&["delete", "ingress", "second", "--wait=false"]);
    let out = rig.install(&["--no-probe", "--wait=false", "--iam-policy-file", file.to_str().unwrap()]);
    expect_code(&out, 0, "install with a policy short of CreateListener");
    rig.another_alb_ingress("third");
    let warning = rig.ingress_refused("third", "elasticloadbalancing:CreateListener");
    assert!(warning.starts_with("FailedDeployModel: ") && warning.contains("api error AccessDenied"), "{warning}");
    status_points_at(&rig, "iam.policy", "elasticloadbalancing:CreateListener", false);
    rig.reset();
}

#[test]
fn pods_older_than_the_role_annotation_get_credentials_only_because_install_restarts_them() {
    let rig = rig();
    installed(&rig);
    let sa = ["-n", "kube-system", "serviceaccount", "aws-load-balancer-controller"];
    let arn = rig.kubectl_ok(&[
        "get",
        sa[0],
        sa[1],
        sa[2],
        sa[3],
        "-o",
        "jsonpath={.metadata.annotations.eks\\.amazonaws\\.com/role-arn}",
    ]);
    assert!(arn.contains(LBC_ROLE), "{arn}");
    // Pods started while the ServiceAccount had no role: no IRSA env, no token.
    rig.kubectl_ok(&["annotate", sa[0], sa[1], sa[2], sa[3], "eks.amazonaws.com/role-arn-"]);
    rig.restart_controller();
    // The annotation comes back by hand; the running pods do not get it.
    rig.kubectl_ok(&["annotate", sa[0], sa[1], sa[2], sa[3], &format!("eks.amazonaws.com/role-arn={}", arn.trim())]);
    rig.another_alb_ingress("second");
    rig.ingress_refused("second", "no EC2 IMDS role found");
    status_points_at(&rig, "iam.pod-identity", "controller pods without the role's token", true);
    let out = rig.install(&["--no-probe"]);
    expect_code(&out, 0, "install over pods without the role");
    assert!(
        text(&out.stdout).contains("restarted Deployment aws-load-balancer-controller so its pods get the role"),
        "{}",
        text(&out.stdout)
    );
    rig.eventually("the second Ingress's ALB", 90, || !rig.ingress_hostname("second").is_empty());
    rig.reset();
}

#[test]
fn an_install_that_gives_a_permission_back_makes_the_backed_off_controller_try_again_at_once() {
    let rig = rig();
    installed(&rig);
    let policy = "arn:aws:iam::123456789012:policy/AWSLoadBalancerControllerIAMPolicy";
    rig.aws(&["iam", "detach-role-policy", "--role-name", LBC_ROLE, "--policy-arn", policy]);
    // The controller's log from here on: a line for each failed try, with its next try's time.
    let log = common::state().join("logs/alb-simulator.log");
    let mark = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) as usize;
    // A change to the release's Ingress: the controller reconciles it, is refused, and backs off,
    // retrying less and less often (5 ms doubling, up to a tenth of 1000 s on the rig).
    rig.kubectl_ok(&["annotate", "ingress", "scalardb-graphql", "example.com/changed=1"]);
    rig.eventually("the controller's refusal on the release's Ingress", 60, || {
        let (_, report) = rig.status_json();
        check(&report, "ingress.controller-events")["result"] == "fail"
    });
    // Until its back-off has grown past 20 s: its next try (the wall-clock time it logged) is
    // then further away than the install and the try it asks for take.
    let mut next_try = 0.0;
    rig.eventually("the controller's back-off on the release's Ingress to pass 20 s", 90, || {
        let bytes = std::fs::read(&log).unwrap_or_default();
        let lines = text(&bytes[mark.min(bytes.len())..]);
        let last = lines.lines().filter(|l| l.contains("group default/scalardb-graphql failed")).last();
        let Some((delay, at)) = last.and_then(|l| {
            let (_, rest) = l.split_once("next try in ")?;
            let (delay, at) = rest.split_once(" s, at ")?;
            Some((delay.parse::<f64>().ok()?, at.trim().parse::<f64>().ok()?))
        }) else {
            return false;
        };
        next_try = at;
        delay >= 20.0
    });
    // install attaches the policy again; nothing the controller watches changed, so without a
    // nudge its next try would be that far away.
    let out = rig.install(&["--no-probe", "--wait=false"]);
    expect_code(&out, 0, "install after the policy was detached");
    assert!(
        text(&out.stdout).contains("asked the controller to reconcile Ingress default/scalardb-graphql again"),
        "{}",
        text(&out.stdout)
    );
    let since = std::time::Instant::now();
    rig.eventually("the controller's success on the release's Ingress", 60, || {
        let (_, report) = rig.status_json();
        check(&report, "ingress.controller-events")["result"] == "pass"
    });
    assert!(since.elapsed().as_secs() < 10, "the controller took {:?} to try again", since.elapsed());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(now < next_try, "the controller succeeded {:.1} s after its own next try, not before it", now - next_try);
    // The install after it has nothing to ask.
    let out = rig.install(&["--no-probe", "--dry-run"]);
    assert!(!text(&out.stdout).contains("reconcile-requested"), "{}", text(&out.stdout));
    rig.reset();
}
