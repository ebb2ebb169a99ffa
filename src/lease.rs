//! One changing run at a time per release, and one at a time cluster-wide on
//! the pieces releases share. `install` and `uninstall` hold a Lease
//! (coordination.k8s.io) named after the release, in its namespace, from
//! their first change to their end; a run that changes (or starts to use)
//! the controller, its IAM, CRDs, subnet tags or nodes also holds the
//! cluster's Lease in kube-system, always taken second (one order: no
//! deadlock). A second run names the holder and stops with the prerequisite
//! exit code.
//!
//! The holder renews its Leases while it runs, and checks before each change
//! that it still holds them; one it lost (taken over, deleted, or not renewed
//! for `DURATION`) stops the run with nothing more changed. A Lease is taken
//! over only once it has expired by the API server's clock (the `Date` of
//! its answers), or when its holder provably died on this machine: the same
//! boot and pid namespace, and its pid gone.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams, Preconditions};

use crate::cleanup;
use crate::error::{Context, Error, Result};

/// How long a Lease outlives its holder's last renewal.
pub const DURATION: Duration = Duration::from_secs(30);
/// How often the holder renews it: three renewals per `DURATION`.
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// A holder that could not renew for this long no longer counts on its Lease
/// (another may take it over at `DURATION`, by a clock a little ahead).
const STILL_HELD: Duration = Duration::from_secs(25);
/// How long giving the Lease back may take: when the API server does not
/// answer, the Lease expires by itself, and the command's exit must not wait.
const GIVE_BACK: Duration = Duration::from_secs(1);

/// The cluster's Lease on the shared pieces, in kube-system.
pub const SHARED_NAMESPACE: &str = "kube-system";
pub const SHARED_LEASE: &str = "kubectl-scalardb-graphql-shared";

pub fn lease_name(release: &str) -> String {
    format!("{release}-scalardb-graphql-run")
}

/// Annotations naming the holder's machine and process, for a run on the same machine to tell a crash.
const HOST_KEY: &str = "kubectl-scalardb-graphql/host";
const PID_KEY: &str = "kubectl-scalardb-graphql/pid";
const BOOT_KEY: &str = "kubectl-scalardb-graphql/boot-id";
const PID_NAMESPACE_KEY: &str = "kubectl-scalardb-graphql/pid-namespace";

/// This machine's name, or none when it cannot be told.
fn host() -> Option<String> {
    #[cfg(unix)]
    let name = {
        let mut buf = [0u8; 256];
        // SAFETY: gethostname writes at most buf.len() bytes into buf.
        let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
        ok.then(|| String::from_utf8_lossy(buf.split(|b| *b == 0).next().unwrap_or_default()).into_owned())
    };
    #[cfg(not(unix))]
    let name = std::env::var("COMPUTERNAME").ok();
    name.map(|h| h.trim().to_string()).filter(|h| !h.is_empty())
}

/// This boot of this machine, and this pid namespace: with the host name, what
/// makes a pid mean one process. Only Linux tells them; elsewhere no holder is
/// ever judged dead by its pid.
fn boot_and_pid_namespace() -> Option<(String, String)> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?.trim().to_string();
    let pid_ns = std::fs::read_link("/proc/self/ns/pid").ok()?.to_string_lossy().into_owned();
    (!boot.is_empty() && !pid_ns.is_empty()).then_some((boot, pid_ns))
}

/// A random id for this run (the process's randomly seeded hasher, unique per run).
fn run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// Who this run is, as a second run will be told.
fn identity(command: &str, run: &str) -> String {
    let user = std::env::var(if cfg!(windows) { "USERNAME" } else { "USER" }).unwrap_or_else(|_| "unknown user".into());
    let host = host().unwrap_or_else(|| "unknown host".into());
    format!("kubectl scalardb-graphql {command} by {user}@{host}, pid {}, run {run}", std::process::id())
}

fn annotations() -> BTreeMap<String, String> {
    let mut a: BTreeMap<String, String> = host().map(|h| (HOST_KEY.to_string(), h)).into_iter().collect();
    a.insert(PID_KEY.into(), std::process::id().to_string());
    if let Some((boot, pid_ns)) = boot_and_pid_namespace() {
        a.insert(BOOT_KEY.into(), boot);
        a.insert(PID_NAMESPACE_KEY.into(), pid_ns);
    }
    a
}

/// Whether the process `pid` of this machine is gone; where that cannot be asked, it is not.
fn process_gone(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
        // SAFETY: signal 0 only asks whether the process exists.
        let alive =
            unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
        !alive
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        false
    }
}

/// Whether the holder ran in this boot of this machine, in this pid namespace,
/// and its process is gone: a crash, whatever the renewal time says.
fn holder_died_here(lease: &Lease) -> bool {
    let a = lease.metadata.annotations.clone().unwrap_or_default();
    let pid = a.get(PID_KEY).and_then(|p| p.parse::<u32>().ok());
    let (Some(here), Some((boot, pid_ns)), Some(pid)) = (host(), boot_and_pid_namespace(), pid) else {
        return false;
    };
    a.get(HOST_KEY) == Some(&here)
        && a.get(BOOT_KEY) == Some(&boot)
        && a.get(PID_NAMESPACE_KEY) == Some(&pid_ns)
        && pid > 0
        && pid != std::process::id()
        && process_gone(pid)
}

/// The API server's clock: the `Date` of its answer to a cheap request, as an
/// offset from this machine's (whole seconds; None when it sends none).
async fn server_offset(client: &kube::Client) -> Result<SignedDuration> {
    let request = http::Request::get("/version").body(Vec::new()).context("building a request")?;
    let before = Timestamp::now();
    let response = client.send(request.map(kube::client::Body::from)).await.context("asking the API server's time")?;
    let date = response.headers().get(http::header::DATE).and_then(|d| d.to_str().ok()).map(str::to_string);
    Ok(date.and_then(|d| parse_http_date(&d)).map(|server| server.duration_since(before)).unwrap_or_default())
}

/// An HTTP `Date` (RFC 9110's IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`).
fn parse_http_date(text: &str) -> Option<Timestamp> {
    let parsed = k8s_openapi::jiff::fmt::rfc2822::parse(text).ok()?;
    Some(parsed.timestamp())
}

fn micro(at: Timestamp) -> MicroTime {
    MicroTime(at)
}

/// Whether a Lease is still held at `now`: renewed (or acquired) less than its duration before.
fn live(lease: &Lease, now: Timestamp) -> bool {
    let Some(spec) = &lease.spec else { return false };
    let Some(last) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else { return false };
    let duration = SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(0).into());
    last.0.checked_add(duration).is_ok_and(|until| until > now)
}

fn held_by_other(namespace: &str, name: &str, lease: &Lease, what: &str) -> Error {
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.unwrap_or_else(|| "an unnamed holder".into());
    let since = spec.acquire_time.map(|t| format!(" since {}", t.0.strftime("%H:%M:%S UTC"))).unwrap_or_default();
    Error::prerequisite(format!("another run is changing {what}: {holder}{since} (Lease {namespace}/{name})")).hint(
        format!(
            "wait for it to end; a run that crashed gives the Lease up {}s after its last renewal",
            DURATION.as_secs()
        ),
    )
}

/// A held Lease; `release()` gives it back. Dropped without that (Ctrl-C, a
/// deadline), the cleanup registry deletes it before the program exits.
pub struct Held {
    api: Api<Lease>,
    namespace: String,
    name: String,
    uid: String,
    renewer: tokio::task::JoinHandle<()>,
    state: Arc<Mutex<State>>,
    guard: Option<cleanup::Guard>,
}

/// What the renewer knows of the Lease.
struct State {
    last_renewed: Instant,
    /// Taken over or deleted: no longer this run's.
    lost: bool,
}

/// Takes the release's Lease, or says who holds it.
pub async fn acquire(client: &kube::Client, namespace: &str, release: &str, command: &str) -> Result<Held> {
    take(client, namespace, &lease_name(release), command, "this release").await
}

/// Takes the cluster's Lease on the shared pieces (after the release's), or says who holds it.
pub async fn acquire_shared(client: &kube::Client, command: &str) -> Result<Held> {
    take(
        client,
        SHARED_NAMESPACE,
        SHARED_LEASE,
        command,
        "what releases on this cluster share (the controller, its IAM, nodes)",
    )
    .await
}

async fn take(client: &kube::Client, namespace: &str, name: &str, command: &str, what: &str) -> Result<Held> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let doing = format!("taking the Lease {namespace}/{name}");
    let offset = server_offset(client).await?;
    let server_now = || Timestamp::now().checked_add(offset).unwrap_or_else(|_| Timestamp::now());
    let spec = LeaseSpec {
        holder_identity: Some(identity(command, &run_id())),
        lease_duration_seconds: Some(DURATION.as_secs() as i32),
        acquire_time: Some(micro(server_now())),
        renew_time: Some(micro(server_now())),
        ..Default::default()
    };
    let mut lease = Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(crate::ownership::managed_labels()),
            annotations: Some(annotations()),
            ..Default::default()
        },
        spec: Some(spec),
    };
    let taken = match api.get_opt(name).await.context(&doing)? {
        Some(current) if live(&current, server_now()) && !holder_died_here(&current) => {
            return Err(held_by_other(namespace, name, &current, what));
        }
        // Expired, or its holder crashed on this machine: taken over, but only from the version just read.
        Some(current) => {
            lease.metadata.resource_version = current.metadata.resource_version.clone();
            api.replace(name, &PostParams::default(), &lease).await
        }
        None => api.create(&PostParams::default(), &lease).await,
    };
    let taken = match taken {
        Ok(l) => l,
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // Someone else took it between the read and the write.
            let current = api.get_opt(name).await.context(&doing)?.unwrap_or_default();
            return Err(held_by_other(namespace, name, &current, what));
        }
        Err(e) => return Err(e).context(&doing),
    };
    let uid = taken.metadata.uid.clone().unwrap_or_default();
    let state = Arc::new(Mutex::new(State { last_renewed: Instant::now(), lost: false }));
    let renewer = tokio::spawn(renew(api.clone(), name.to_string(), taken, offset, state.clone()));
    let guard = {
        let (api, name, uid) = (api.clone(), name.to_string(), uid.clone());
        cleanup::register(format!("delete Lease {namespace}/{name}"), move || async move {
            let _ = delete(&api, &name, &uid).await;
        })
    };
    Ok(Held { api, namespace: namespace.to_string(), name: name.to_string(), uid, renewer, state, guard: Some(guard) })
}

/// Renews the Lease until aborted; stops, marking it lost, when it is no longer ours.
async fn renew(api: Api<Lease>, name: String, mut lease: Lease, offset: SignedDuration, state: Arc<Mutex<State>>) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        if let Some(spec) = lease.spec.as_mut() {
            spec.renew_time = Some(micro(Timestamp::now().checked_add(offset).unwrap_or_else(|_| Timestamp::now())));
        }
        match api.replace(&name, &PostParams::default(), &lease).await {
            Ok(l) => {
                lease = l;
                state.lock().unwrap_or_else(|e| e.into_inner()).last_renewed = Instant::now();
            }
            // Taken over or deleted: nothing of ours left to renew.
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
                state.lock().unwrap_or_else(|e| e.into_inner()).lost = true;
                return;
            }
            // A slow or unreachable API server: try again at the next round.
            Err(_) => {}
        }
    }
}

async fn delete(api: &Api<Lease>, name: &str, uid: &str) -> Result<()> {
    let params = DeleteParams {
        preconditions: Some(Preconditions { uid: Some(uid.to_string()), resource_version: None }),
        ..Default::default()
    };
    let Ok(deleted) = tokio::time::timeout(GIVE_BACK, api.delete(name, &params)).await else {
        return Ok(()); // it expires DURATION after its last renewal
    };
    match deleted {
        Ok(_) => Ok(()),
        // Gone already (its namespace too), or no longer ours.
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e).context(format!("giving up the Lease {name}")),
    }
}

impl Held {
    /// Before a change: this run still holds the Lease, or it stops (exit 1) with nothing more changed.
    pub fn check(&self) -> Result<()> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let why = if state.lost {
            "another run took it over, or it was deleted"
        } else if state.last_renewed.elapsed() > STILL_HELD {
            "it could not be renewed in time (a slow or unreachable API server)"
        } else {
            return Ok(());
        };
        Err(Error::failed(format!(
            "this run no longer holds the Lease {}/{}: {why}; stopped, with nothing more changed",
            self.namespace, self.name
        ))
        .hint("run `kubectl scalardb-graphql status` to see the state, then run the command again"))
    }

    /// Gives the Lease back at the end of the run.
    pub async fn release(mut self) -> Result<()> {
        self.renewer.abort();
        let result = delete(&self.api, &self.name, &self.uid).await;
        if let Some(guard) = self.guard.take() {
            guard.disarm();
        }
        result
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_date_is_read_as_the_servers_time() {
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(t.to_string(), "1994-11-06T08:49:37Z");
        assert_eq!(parse_http_date("yesterday"), None);
    }

    #[test]
    fn a_lease_is_live_until_its_duration_after_the_last_renewal_by_the_given_clock() {
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let lease = Lease {
            spec: Some(LeaseSpec {
                lease_duration_seconds: Some(30),
                renew_time: Some(MicroTime(at("2026-12-07T10:00:00Z"))),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(live(&lease, at("2026-12-07T10:00:29Z")));
        assert!(!live(&lease, at("2026-12-07T10:00:31Z")));
    }

    #[test]
    fn a_holder_elsewhere_is_never_judged_dead_by_its_pid() {
        let mut a = annotations();
        a.insert(PID_KEY.into(), "999999".into());
        a.insert(BOOT_KEY.into(), "another-boot".into());
        let lease = Lease { metadata: ObjectMeta { annotations: Some(a), ..Default::default() }, ..Default::default() };
        assert!(!holder_died_here(&lease));
    }

    #[test]
    fn every_run_has_its_own_id() {
        assert_ne!(run_id(), run_id());
        assert!(identity("install", "abc").ends_with(", run abc"));
    }
}
