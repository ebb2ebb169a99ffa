//! How the controller really fails, and `status` naming each: webhook
//! certificates out of step with their caBundle (replaced, rotated, expired),
//! the controller's warnings after its ALB exists, an IngressClass gone or a
//! second default one, and an Ingress held by its finalizer. Each fails its
//! named check in one line with exit 1, and is green again once fixed.

mod common;

use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use common::{Rig, check, expect_code, rig, text};

/// Fails `id` (exit 1, a one-line message holding every word of `says`), and only it of its category's checks.
fn fails(rig: &Rig, id: &str, says: &[&str]) -> Value {
    let (code, report) = rig.status_json();
    let c = check(&report, id);
    assert_eq!(c["result"], "fail", "{id} should fail: {c}");
    assert_eq!(code, Some(1), "{report}");
    let message = c["message"].as_str().unwrap();
    assert!(!message.contains('\n'), "one line: {message}");
    for word in says {
        assert!(message.contains(word), "{word:?} missing from {id}: {message}");
    }
    assert!(c["hint"].is_string(), "{c}");
    c
}

fn green(rig: &Rig, id: &str) {
    let (code, report) = rig.status_json();
    assert_eq!(check(&report, id)["result"], "pass", "{report}");
    assert_eq!(code, Some(0), "{report}");
}

/// A CA and a webhook certificate it signed, valid from `from` to `to` days from now (PEM).
fn certificates(rig: &Rig, from: i64, to: i64) -> Value {
    let script = r#"
import datetime, json, sys
from cryptography import x509
from cryptography.x509.oid import NameOID, ExtendedKeyUsageOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
now = datetime.datetime.now(datetime.timezone.utc)
days = lambda d: now + datetime.timedelta(days=d)
ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "another-ca")])
ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
      .serial_number(x509.random_serial_number()).not_valid_before(days(-1)).not_valid_after(days(3650))
      .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
      .sign(ca_key, hashes.SHA256()))
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
svc = "aws-load-balancer-webhook-service.kube-system"
leaf = (x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aws-load-balancer-controller")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(days(int(sys.argv[1]))).not_valid_after(days(int(sys.argv[2])))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in (svc, svc + ".svc", svc + ".svc.cluster.local")]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256()))
pem = lambda c: c.public_bytes(serialization.Encoding.PEM).decode()
print(json.dumps({"ca": pem(ca), "crt": pem(leaf), "key": key.private_bytes(serialization.Encoding.PEM,
      serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()).decode()}))
"#;
    let out = rig.cmd(rig.get("RIG_PYTHON")).args(["-c", script, &from.to_string(), &to.to_string()]).output().unwrap();
    expect_code(&out, 0, "making certificates");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Sets every webhook's caBundle in the controller's configurations of these kinds.
fn set_ca_bundles(rig: &Rig, kinds: &[&str], ca_pem: &str) {
    for kind in kinds {
        let mut config = rig.kubectl_json(&["get", kind, "aws-load-balancer-webhook", "-o", "json"]);
        for w in config["webhooks"].as_array_mut().unwrap() {
            w["clientConfig"]["caBundle"] = json!(b64(ca_pem));
        }
        config["metadata"].as_object_mut().unwrap().remove("managedFields");
        rig.kubectl_apply(&config);
    }
}

/// Replaces what the webhook serves: the TLS Secret's certificate, key and CA.
fn set_tls_secret(rig: &Rig, certs: &Value) {
    let patch = json!({"data": {
        "tls.crt": b64(certs["crt"].as_str().unwrap()),
        "tls.key": b64(certs["key"].as_str().unwrap()),
        "ca.crt": b64(certs["ca"].as_str().unwrap()),
    }});
    rig.kubectl_ok(&["-n", "kube-system", "patch", "secret", "aws-load-balancer-tls", "-p", &patch.to_string()]);
}

#[test]
fn a_ca_bundle_of_another_ca_fails_the_webhook_certificate_check_and_install_puts_it_back() {
    let rig = rig();
    rig.reset();
    rig.install_ok();
    green(&rig, "lb-controller.webhook-certificate");
    let other = certificates(&rig, -1, 365);
    set_ca_bundles(&rig, &["validatingwebhookconfiguration"], other["ca"].as_str().unwrap());
    // What a user meets: the API server no longer trusts the webhook.
    let refused = rig.kubectl(&["annotate", "--overwrite", "ingress", "scalardb-graphql", "touched=1"]);
    assert!(!refused.status.success() && text(&refused.stderr).contains("x509"), "{}", text(&refused.stderr));
    fails(
        &rig,
        "lb-controller.webhook-certificate",
        &["validating vingress.elbv2.k8s.aws", "not signed by the caBundle's CA"],
    );
    rig.install_ok();
    green(&rig, "lb-controller.webhook-certificate");
    rig.reset();
}

#[test]
fn a_tls_secret_rotated_under_an_unchanged_bundle_fails_it_and_install_puts_it_back() {
    let rig = rig();
    rig.reset();
    rig.install_ok();
    set_tls_secret(&rig, &certificates(&rig, -1, 365));
    fails(
        &rig,
        "lb-controller.webhook-certificate",
        &["mutating mservice.elbv2.k8s.aws", "Secret kube-system/aws-load-balancer-tls"],
    );
    rig.install_ok();
    green(&rig, "lb-controller.webhook-certificate");
    rig.reset();
}

#[test]
fn an_expired_or_expiring_webhook_certificate_fails_it() {
    let rig = rig();
    rig.reset();
    rig.install_ok();
    let expired = certificates(&rig, -400, -10);
    set_tls_secret(&rig, &expired);
    set_ca_bundles(
        &rig,
        &["mutatingwebhookconfiguration", "validatingwebhookconfiguration"],
        expired["ca"].as_str().unwrap(),
    );
    fails(&rig, "lb-controller.webhook-certificate", &["it has expired"]);
    let expiring = certificates(&rig, -1, 10);
    set_tls_secret(&rig, &expiring);
    set_ca_bundles(
        &rig,
        &["mutatingwebhookconfiguration", "validatingwebhookconfiguration"],
        expiring["ca"].as_str().unwrap(),
    );
    fails(&rig, "lb-controller.webhook-certificate", &["not valid for 30 more days"]);
    // The way out the hint gives: a new Secret, made by the chart.
    rig.kubectl_ok(&["-n", "kube-system", "delete", "secret", "aws-load-balancer-tls"]);
    rig.install_ok();
    green(&rig, "lb-controller.webhook-certificate");
    rig.reset();
}

#[test]
fn a_controller_warning_after_its_last_success_fails_controller_events_while_the_alb_exists() {
    let rig = rig();
    rig.reset();
    rig.install_ok();
    green(&rig, "ingress.controller-events");
    std::thread::sleep(Duration::from_secs(1)); // a second later than the success, as the API server's times go
    let uid = rig.kubectl_json(&["get", "ingress", "scalardb-graphql", "-o", "json"])["metadata"]["uid"].clone();
    let now = text(&rig.cmd("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]).output().unwrap().stdout).trim().to_string();
    rig.kubectl_apply(&json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "scalardb-graphql.denied", "namespace": "default"},
        "involvedObject": {"kind": "Ingress", "apiVersion": "networking.k8s.io/v1", "name": "scalardb-graphql",
                           "namespace": "default", "uid": uid},
        "reason": "FailedDeployModel", "type": "Warning", "source": {"component": "ingress"},
        "message": "Failed deploy model due to operation error Elastic Load Balancing v2: ModifyListener, https response error StatusCode: 403, api error AccessDenied: User is not authorized to perform: elasticloadbalancing:ModifyListener",
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    }));
    let c =
        fails(&rig, "ingress.controller-events", &["FailedDeployModel", "ModifyListener", "since its last success"]);
    let (_, report) = rig.status_json();
    assert_eq!(check(&report, "alb.load-balancer")["result"], "pass", "the ALB exists: {c}");
    assert_eq!(check(&report, "ingress.hostname")["result"], "pass");
    // The controller reconciles again (the Ingress changed) and succeeds: green.
    std::thread::sleep(Duration::from_secs(1));
    rig.kubectl_ok(&["annotate", "--overwrite", "ingress", "scalardb-graphql", "touched=1"]);
    rig.eventually("a newer successful reconcile", 60, || {
        let (_, report) = rig.status_json();
        check(&report, "ingress.controller-events")["result"] == "pass"
    });
    rig.reset();
}

#[test]
fn the_release_class_deleted_beside_a_second_default_class_fails_ingress_class_and_install_puts_it_back() {
    let rig = rig();
    rig.reset();
    rig.install_ok();
    green(&rig, "ingress.class");
    rig.kubectl_apply(&json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "alb2", "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": "ingress.k8s.aws/alb"}}));
    rig.kubectl_ok(&["delete", "ingressclass", "alb"]);
    fails(&rig, "ingress.class", &["IngressClass alb", "does not exist"]);
    rig.install_ok();
    green(&rig, "ingress.class");
    rig.reset();
}

#[test]
fn an_ingress_held_by_its_finalizer_with_the_controller_at_zero_fails_ingress_deletion() {
    let rig = rig();
    rig.reset();
    rig.install_ok();
    green(&rig, "ingress.deletion");
    rig.kubectl_ok(&["-n", "kube-system", "scale", "deployment", "aws-load-balancer-controller", "--replicas=0"]);
    rig.eventually("the controller at zero", 60, || {
        rig.kubectl_json(&["-n", "kube-system", "get", "deployment", "aws-load-balancer-controller", "-o", "json"])
            ["status"]["availableReplicas"]
            .as_i64()
            .unwrap_or(0)
            == 0
    });
    rig.kubectl_ok(&["delete", "ingress", "scalardb-graphql", "--wait=false"]);
    std::thread::sleep(Duration::from_secs(62));
    fails(
        &rig,
        "ingress.deletion",
        &["terminating for 1m", "finalizer ingress.k8s.aws/resources", "no controller pod is available"],
    );
    rig.kubectl_ok(&["-n", "kube-system", "scale", "deployment", "aws-load-balancer-controller", "--replicas=2"]);
    rig.eventually("the Ingress gone", 120, || !rig.kubectl(&["get", "ingress", "scalardb-graphql"]).status.success());
    rig.install_ok();
    green(&rig, "ingress.deletion");
    rig.reset();
}
