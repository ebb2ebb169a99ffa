//! `--timeout` bounds the whole command even when a server hangs; helm and
//! whatever it started die with the command; the IAM policy download and the
//! local probe go through the proxy the environment names (and around it for
//! NO_PROXY), and a body beyond the limit is refused. Every server here is
//! on 127.0.0.1: a loopback server that accepts and never answers, a CONNECT
//! proxy that terminates the tunnel with a test CA (as a TLS-inspecting
//! proxy does) instead of dialling out, a forwarding proxy for plain http,
//! and a CONNECT proxy that relays to 127.0.0.1 (the kubeconfig's proxy-url).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::processes::{assert_group_gone, group_members, hanging_helm, wait_for_file};
use common::{Rig, expect_code, install_args_with_timeout, rig, text};
use serde_json::Value;

// --- servers ---------------------------------------------------------------------------

/// A server that accepts every connection and never answers a byte.
fn hanging_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = vec![];
        for conn in listener.incoming().map_while(Result::ok) {
            held.push(conn);
        }
    });
    port
}

/// What the proxy saw, one line per request: `CONNECT host:port`, then the
/// tunnelled `GET /path`; or `GET http://…` for plain http.
type Seen = Arc<Mutex<Vec<String>>>;

struct Proxy {
    url: String,
    seen: Seen,
}

impl Proxy {
    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// A proxy: CONNECT tunnels end here, in TLS with `tls` (their answer is
/// `body`, close-delimited); plain http in absolute form is forwarded, to
/// 127.0.0.1 only.
fn proxy(tls: Option<Arc<rustls::ServerConfig>>, body: Arc<Vec<u8>>) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let seen: Seen = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            let (tls, body, log) = (tls.clone(), body.clone(), log.clone());
            std::thread::spawn(move || {
                let _ = serve(conn, tls, &body, &log);
            });
        }
    });
    Proxy { url, seen }
}

/// The request line and headers, read without consuming what follows them.
fn read_head(reader: &mut impl BufRead) -> std::io::Result<Vec<String>> {
    let mut lines = vec![];
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(lines);
        }
        let line = line.trim_end().to_string();
        if line.is_empty() {
            return Ok(lines);
        }
        lines.push(line);
    }
}

fn serve(conn: TcpStream, tls: Option<Arc<rustls::ServerConfig>>, body: &[u8], log: &Seen) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let head = read_head(&mut reader)?;
    let Some(first) = head.first() else { return Ok(()) };
    let mut parts = first.split_whitespace();
    let (method, target) = (parts.next().unwrap_or_default().to_string(), parts.next().unwrap_or_default().to_string());
    log.lock().unwrap().push(format!("{method} {target}"));
    let mut conn = conn;
    if method == "CONNECT" {
        let Some(tls) = tls else {
            return conn.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
        };
        conn.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
        let mut stream = rustls::StreamOwned::new(rustls::ServerConnection::new(tls).unwrap(), conn);
        let inner = read_head(&mut BufReader::new(&mut stream))?;
        log.lock().unwrap().push(inner.first().cloned().unwrap_or_default());
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")?;
        stream.write_all(body)?;
        stream.conn.send_close_notify();
        return stream.flush();
    }
    // Plain http through the proxy: forward in origin form, to loopback only.
    let rest = target.strip_prefix("http://").unwrap_or_default();
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    assert!(authority.starts_with("127.0.0.1:"), "the proxy was asked to leave loopback: {target}");
    let length: usize = head
        .iter()
        .find_map(|h| h.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    let mut request_body = vec![0; length];
    reader.read_exact(&mut request_body)?;
    let mut upstream = TcpStream::connect(authority)?;
    let mut forwarded = format!("{method} {} HTTP/1.1\r\n", if path.is_empty() { "/" } else { path });
    for h in &head[1..] {
        let lower = h.to_ascii_lowercase();
        if !lower.starts_with("proxy-") && !lower.starts_with("connection:") {
            forwarded.push_str(&format!("{h}\r\n"));
        }
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    upstream.write_all(forwarded.as_bytes())?;
    upstream.write_all(&request_body)?;
    let mut answer = vec![];
    upstream.read_to_end(&mut answer)?;
    conn.write_all(&answer)
}

/// A test CA and a certificate it signs for `host`, made with openssl: the
/// server side of a TLS-inspecting proxy, and the bundle for SSL_CERT_FILE.
struct TestCa {
    _dir: tempfile::TempDir,
    bundle: PathBuf,
    server: Arc<rustls::ServerConfig>,
}

fn test_ca(host: &str) -> TestCa {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).display().to_string();
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().expect("running openssl");
        expect_code(&out, 0, &format!("openssl {}", args.join(" ")));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let (ca_key, ca_pem) = (p("ca.key"), p("ca.pem"));
    let mut ca =
        vec!["req", "-x509", "-days", "2", "-keyout", &ca_key, "-out", &ca_pem, "-subj", "/CN=deadlines test CA"];
    ca.extend(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"]);
    ca.extend(ec);
    run(&ca);
    let (leaf_key, leaf_csr, leaf_pem, leaf_ext) = (p("leaf.key"), p("leaf.csr"), p("leaf.pem"), p("leaf.ext"));
    let subject = format!("/CN={host}");
    let mut csr = vec!["req", "-keyout", &leaf_key, "-out", &leaf_csr, "-subj", &subject];
    csr.extend(ec);
    run(&csr);
    let ext = format!(
        "subjectAltName=DNS:{host}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
    );
    std::fs::write(&leaf_ext, ext).unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        &leaf_csr,
        "-CA",
        &ca_pem,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        &leaf_pem,
        "-days",
        "2",
        "-extfile",
        &leaf_ext,
    ]);
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(&leaf_pem).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(&leaf_key).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    TestCa { bundle: dir.path().join("ca.pem"), _dir: dir, server: Arc::new(server) }
}

/// The host of the pinned IAM policy's URL (what the CONNECT names).
const POLICY_HOST: &str = "raw.githubusercontent.com";

/// The install flags (the pinned document is downloaded), without the probe.
fn install_args_downloading_the_policy(rig: &Rig) -> Vec<String> {
    let mut args = rig.install_args();
    args.push("--no-probe".into());
    args
}

/// A CONNECT proxy that relays each tunnel to its target (127.0.0.1 only) and
/// logs `CONNECT host:port <Proxy-Authorization>`.
fn relay_proxy() -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            let log = log.clone();
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut reader = BufReader::new(conn.try_clone()?);
                let head = read_head(&mut reader)?;
                let target = head.first().and_then(|l| l.split_whitespace().nth(1)).unwrap_or_default().to_string();
                let auth = head
                    .iter()
                    .find_map(|h| {
                        h.strip_prefix("Proxy-Authorization: ").or_else(|| h.strip_prefix("proxy-authorization: "))
                    })
                    .unwrap_or("no Proxy-Authorization");
                log.lock().unwrap().push(format!("CONNECT {target} {auth}"));
                let mut conn = conn;
                assert!(target.starts_with("127.0.0.1:"), "the proxy was asked to leave loopback: {target}");
                let upstream = TcpStream::connect(&target)?;
                conn.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
                let (mut up_read, mut up_write) = (upstream.try_clone()?, upstream);
                let mut down_write = conn;
                let pump = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut reader, &mut up_write);
                    let _ = up_write.shutdown(std::net::Shutdown::Write);
                });
                let _ = std::io::copy(&mut up_read, &mut down_write);
                let _ = down_write.shutdown(std::net::Shutdown::Write);
                let _ = pump.join();
                Ok(())
            });
        }
    });
    Proxy { url: format!("http://127.0.0.1:{port}"), seen }
}

// --- tests -----------------------------------------------------------------------------

#[test]
fn the_api_server_is_reached_through_the_kubeconfigs_proxy_url_with_its_credentials() {
    let rig = rig();
    let proxy = relay_proxy();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::copy(rig.get("KUBECONFIG"), &kubeconfig).unwrap();
    let cluster = rig.kubectl_ok(&["config", "view", "--minify", "-o", "jsonpath={.clusters[0].name}"]);
    let server = rig.kubectl_ok(&["config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"]);
    // user:p@ss, written percent-encoded in the URL as it must be.
    let with_credentials = proxy.url.replace("http://", "http://user:p%40ss@");
    let set = rig
        .cmd("kubectl")
        .args(["config", "set-cluster", cluster.trim(), &format!("--proxy-url={with_credentials}")])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    expect_code(&set, 0, "kubectl config set-cluster --proxy-url");
    let out = rig.plugin().args(["status", "--timeout", "60s"]).env("KUBECONFIG", &kubeconfig).output().unwrap();
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Kubernetes v1.35"), "status did not reach the API server: {stdout}{}", text(&out.stderr));
    let authority = server.trim().trim_start_matches("https://").trim_end_matches('/').to_string();
    // Basic base64("user:p@ss")
    let expected = format!("CONNECT {authority} Basic dXNlcjpwQHNz");
    let seen = proxy.seen();
    assert!(!seen.is_empty() && seen.iter().all(|r| *r == expected), "{expected:?} expected, the proxy saw {seen:?}");

    // An https:// proxy is refused in one line that does not repeat its password.
    let set = rig
        .cmd("kubectl")
        .args(["config", "set-cluster", cluster.trim(), "--proxy-url=https://user:s3cret@127.0.0.1:9"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    expect_code(&set, 0, "kubectl config set-cluster --proxy-url=https://…");
    let out = rig.plugin().arg("status").env("KUBECONFIG", &kubeconfig).output().unwrap();
    expect_code(&out, 3, "status through an https:// proxy-url");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("the proxy https://127.0.0.1:9 for the API server is not an http:// proxy"), "{stderr}");
    assert!(!stderr.contains("s3cret") && stderr.trim().lines().count() == 1, "{stderr}");
}

#[test]
fn a_hung_aws_endpoint_ends_status_by_its_timeout_with_exit_4_naming_the_call() {
    let rig = rig();
    let port = hanging_server();
    let started = Instant::now();
    let out = rig
        .plugin()
        .args(["status", "--timeout", "5s"])
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .output()
        .unwrap();
    let took = started.elapsed();
    eprintln!("hung AWS endpoint: injection (start) → exit {took:?}");
    expect_code(&out, 4, "status against a hung AWS endpoint");
    let stderr = text(&out.stderr);
    assert!(took >= Duration::from_secs(5) && took < Duration::from_secs(5 + 8), "took {took:?}: {stderr}");
    assert!(stderr.contains("timed out after --timeout 5s"), "{stderr}");
    assert!(stderr.contains("no answer from AWS STS GetCallerIdentity"), "the hung call is not named: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "not one line: {stderr}");
}

#[test]
fn a_hung_api_server_ends_install_by_its_timeout_with_exit_4_naming_what_it_waited_for() {
    let rig = rig();
    let port = hanging_server();
    // The rig's kubeconfig with its server swapped for one that never answers.
    let dir = tempfile::tempdir().unwrap();
    let mut kubeconfig: Value =
        serde_json::from_str(&rig.kubectl_ok(&["config", "view", "--raw", "-o", "json"])).unwrap();
    for c in kubeconfig["clusters"].as_array_mut().unwrap() {
        c["cluster"]["server"] = format!("https://127.0.0.1:{port}").into();
    }
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, kubeconfig.to_string()).unwrap();
    let started = Instant::now();
    let out = rig.plugin().args(install_args_with_timeout(&rig, "5s")).arg("--kubeconfig").arg(&path).output().unwrap();
    let took = started.elapsed();
    eprintln!("hung API server: injection (start) → exit {took:?}");
    expect_code(&out, 4, "install against a hung API server");
    let stderr = text(&out.stderr);
    assert!(took >= Duration::from_secs(5) && took < Duration::from_secs(5 + 8), "took {took:?}: {stderr}");
    assert!(stderr.contains("timed out after --timeout 5s"), "{stderr}");
    // Preflight's GET /version and the install record's GET start together; the one waiting longest is named.
    let named = ["(GET /version)", "(GET /api/v1/namespaces/default/configmaps/scalardb-graphql-install-record)"];
    assert!(
        named.iter().any(|call| stderr.contains(&format!("no answer from the Kubernetes API server {call}"))),
        "not named: {stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "not one line: {stderr}");
    // `version` has a bound of its own, also with no per-request timeout.
    let started = Instant::now();
    let out = rig.plugin().args(["version", "--request-timeout", "0", "--kubeconfig"]).arg(&path).output().unwrap();
    let took = started.elapsed();
    expect_code(&out, 4, "version against a hung API server");
    assert!(took < Duration::from_secs(30 + 5), "version took {took:?}");
}

#[test]
fn helm_and_what_it_started_are_killed_at_the_deadline() {
    let rig = rig();
    rig.reset();
    let dir = tempfile::tempdir().unwrap();
    let (script, hung) = hanging_helm(&rig, dir.path());
    let timeout = 40;
    let started = Instant::now();
    let out = rig
        .plugin()
        .args(install_args_with_timeout(&rig, &format!("{timeout}s")))
        .arg("--no-probe")
        .env("HELM_BIN", &script)
        .output()
        .unwrap();
    let took = started.elapsed();
    let pgid: u32 = std::fs::read_to_string(&hung).expect("the hung helm's pid").trim().parse().unwrap();
    eprintln!("hung helm: deadline ({timeout}s) → exit {:?}", took.saturating_sub(Duration::from_secs(timeout)));
    expect_code(&out, 4, "install with a hung helm");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("no answer from helm to install release kube-system/aws-load-balancer-controller"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(timeout + 8), "took {took:?}");
    assert_group_gone(pgid);
    rig.reset();
}

#[test]
fn helm_and_what_it_started_are_killed_on_ctrl_c() {
    let rig = rig();
    rig.reset();
    let dir = tempfile::tempdir().unwrap();
    let (script, hung) = hanging_helm(&rig, dir.path());
    let child = rig
        .plugin()
        .args(rig.install_args())
        .arg("--no-probe")
        .env("HELM_BIN", &script)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pgid: u32 = wait_for_file(&hung, 90).trim().parse().unwrap();
    assert!(!group_members(pgid).is_empty(), "the hung helm is not running");
    let interrupted = Instant::now();
    // SAFETY: kill only sends a signal, to the plugin this test started.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    eprintln!("Ctrl-C during helm: signal → exit {:?}", interrupted.elapsed());
    expect_code(&out, 130, "install interrupted during helm");
    assert_group_gone(pgid);
    rig.reset();
}

#[test]
fn the_policy_download_goes_through_https_proxy_in_a_connect_tunnel() {
    let rig = rig();
    rig.reset();
    rig.install_ok();
    let ca = test_ca(POLICY_HOST);
    // Not the pinned document (one byte more): it arrives through the tunnel, and its digest says so.
    let mut served = std::fs::read(rig.get("RIG_IAM_POLICY_FILE")).unwrap();
    served.push(b'\n');
    let proxy = proxy(Some(ca.server.clone()), Arc::new(served));
    let (out, _) = rig.without_mutation("an install whose policy download is refused", || {
        rig.plugin()
            .args(install_args_downloading_the_policy(&rig))
            .env("HTTPS_PROXY", &proxy.url)
            .env("https_proxy", &proxy.url)
            .env("SSL_CERT_FILE", &ca.bundle)
            .output()
            .unwrap()
    });
    expect_code(&out, 3, "install with the policy from behind a proxy");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("does not match the pinned digest") && stderr.contains("HTTP 200"), "{stderr}");
    let seen = proxy.seen();
    assert_eq!(seen.first().map(String::as_str), Some(&*format!("CONNECT {POLICY_HOST}:443")), "{seen:?}");
    assert!(
        seen.get(1).is_some_and(|r| r.starts_with("GET /kubernetes-sigs/aws-load-balancer-controller/")),
        "{seen:?}"
    );
}

#[test]
fn a_policy_body_over_the_limit_is_refused_in_one_line_changing_nothing() {
    let rig = rig();
    rig.reset();
    rig.install_ok();
    let ca = test_ca(POLICY_HOST);
    let proxy = proxy(Some(ca.server.clone()), Arc::new(vec![b' '; 2 << 20]));
    let (out, _) = rig.without_mutation("an install whose policy download is too large", || {
        rig.plugin()
            .args(install_args_downloading_the_policy(&rig))
            .env("HTTPS_PROXY", &proxy.url)
            .env("https_proxy", &proxy.url)
            .env("SSL_CERT_FILE", &ca.bundle)
            .output()
            .unwrap()
    });
    expect_code(&out, 3, "install with a 2 MiB policy");
    let stderr = text(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "not one line: {stderr}");
    assert!(stderr.contains("cannot fetch the controller's IAM policy"), "{stderr}");
    assert!(stderr.contains("larger than 1024 KiB"), "{stderr}");
    assert!(proxy.seen().iter().any(|r| r == &format!("CONNECT {POLICY_HOST}:443")), "{:?}", proxy.seen());
}

/// status's local probe of the rig's data plane, with `env`; its probe.typename check and exit code.
fn local_probe(rig: &Rig, env: &[(&str, &str)]) -> (Option<i32>, Value) {
    let mut cmd = rig.plugin();
    cmd.args([
        "status",
        "-o",
        "json",
        "--category",
        "probe",
        "--probe-from",
        "local",
        "--probe-url",
        rig.get("RIG_ALB_URL"),
    ]);
    // Not the rig's own proxy settings: only what the case gives.
    for var in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)));
    let typename = report["checks"].as_array().unwrap().iter().find(|c| c["id"] == "probe.typename").cloned();
    (out.status.code(), typename.unwrap_or_else(|| panic!("no probe.typename in {report}")))
}

#[test]
fn no_proxy_covering_the_host_bypasses_the_proxy() {
    let rig = rig();
    let alb = rig.get("RIG_ALB_URL").to_string();
    // Through the proxy: it sees the probe's requests in absolute form and forwards them.
    let through = proxy(None, Arc::default());
    let (_, typename) = local_probe(&rig, &[("HTTP_PROXY", &through.url)]);
    assert_eq!(typename["result"], "pass", "{typename}");
    let seen = through.seen();
    assert!(seen.iter().any(|r| r.starts_with(&format!("GET {alb}/graphql?query="))), "{seen:?}");
    assert!(seen.iter().any(|r| r.starts_with(&format!("POST {alb}/graphql"))), "{seen:?}");
    // NO_PROXY names the host (as a range here, as an address in the second run): the proxy sees nothing.
    for no_proxy in ["127.0.0.0/8", "example.org, 127.0.0.1"] {
        let around = proxy(None, Arc::default());
        let (_, typename) = local_probe(&rig, &[("HTTP_PROXY", &around.url), ("NO_PROXY", no_proxy)]);
        assert_eq!(typename["result"], "pass", "{typename}");
        assert_eq!(around.seen(), Vec::<String>::new(), "NO_PROXY={no_proxy} did not bypass the proxy");
    }
}
