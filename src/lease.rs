//! One changing run at a time per release. `install` and `uninstall` hold a
//! Lease (coordination.k8s.io) named after the release, in its namespace,
//! from their first change to their end; a second run names the holder and
//! stops with the prerequisite exit code. The holder renews the Lease while
//! it runs, so a run that crashed loses it `DURATION` after its last renewal;
//! one that crashed on this machine (its host, and a pid no longer running)
//! is taken over at once.

use std::time::Duration;

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
/// How long giving the Lease back may take: when the API server does not
/// answer, the Lease expires by itself, and the command's exit must not wait.
const GIVE_BACK: Duration = Duration::from_secs(1);

pub fn lease_name(release: &str) -> String {
    format!("{release}-scalardb-graphql-run")
}

/// A held Lease; `release()` gives it back. Dropped without that (Ctrl-C, a
/// deadline), the cleanup registry deletes it before the program exits.
pub struct Held {
    api: Api<Lease>,
    name: String,
    uid: String,
    renewer: tokio::task::JoinHandle<()>,
    guard: Option<cleanup::Guard>,
}

/// Annotations naming the holder's machine and process, for a run on the same machine to tell a crash.
const HOST_KEY: &str = "kubectl-scalardb-graphql/host";
const PID_KEY: &str = "kubectl-scalardb-graphql/pid";

/// This machine's name, or none when it cannot be told (then no holder is judged dead by its pid).
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

/// Who this run is, as a second run will be told.
fn identity(command: &str) -> String {
    let user = std::env::var(if cfg!(windows) { "USERNAME" } else { "USER" }).unwrap_or_else(|_| "unknown user".into());
    let host = host().unwrap_or_else(|| "unknown host".into());
    format!("kubectl scalardb-graphql {command} by {user}@{host}, pid {}", std::process::id())
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

/// Whether the holder ran on this machine and its process is gone: a crash, whatever the renewal time says.
fn holder_died_here(lease: &Lease) -> bool {
    let annotations = lease.metadata.annotations.clone().unwrap_or_default();
    let pid = annotations.get(PID_KEY).and_then(|p| p.parse::<u32>().ok());
    match (annotations.get(HOST_KEY), host(), pid) {
        (Some(h), Some(here), Some(pid)) if *h == here && pid > 0 && pid != std::process::id() => process_gone(pid),
        _ => false,
    }
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// Whether a Lease is still held: renewed (or acquired) less than its duration ago.
fn live(lease: &Lease) -> bool {
    let Some(spec) = &lease.spec else { return false };
    let Some(last) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else { return false };
    let duration = SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(0).into());
    last.0.checked_add(duration).is_ok_and(|until| until > Timestamp::now())
}

fn held_by_other(namespace: &str, name: &str, lease: &Lease) -> Error {
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.unwrap_or_else(|| "an unnamed holder".into());
    let since = spec.acquire_time.map(|t| format!(" since {}", t.0.strftime("%H:%M:%S UTC"))).unwrap_or_default();
    Error::prerequisite(format!("another run is changing this release: {holder}{since} (Lease {namespace}/{name})"))
        .hint(format!(
            "wait for it to end; a run that crashed gives the Lease up {}s after its last renewal",
            DURATION.as_secs()
        ))
}

/// Takes the release's Lease, or says who holds it.
pub async fn acquire(client: &kube::Client, namespace: &str, release: &str, command: &str) -> Result<Held> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let name = lease_name(release);
    let what = format!("taking the Lease {namespace}/{name}");
    let spec = LeaseSpec {
        holder_identity: Some(identity(command)),
        lease_duration_seconds: Some(DURATION.as_secs() as i32),
        acquire_time: Some(now()),
        renew_time: Some(now()),
        ..Default::default()
    };
    let mut lease = Lease {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(crate::ownership::managed_labels()),
            annotations: Some(
                host()
                    .map(|h| (HOST_KEY.to_string(), h))
                    .into_iter()
                    .chain([(PID_KEY.to_string(), std::process::id().to_string())])
                    .collect(),
            ),
            ..Default::default()
        },
        spec: Some(spec),
    };
    let taken = match api.get_opt(&name).await.context(&what)? {
        Some(current) if live(&current) && !holder_died_here(&current) => {
            return Err(held_by_other(namespace, &name, &current));
        }
        // Expired, or its holder crashed on this machine: taken over, but only from the version just read.
        Some(current) => {
            lease.metadata.resource_version = current.metadata.resource_version.clone();
            api.replace(&name, &PostParams::default(), &lease).await
        }
        None => api.create(&PostParams::default(), &lease).await,
    };
    let taken = match taken {
        Ok(l) => l,
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // Someone else took it between the read and the write.
            let current = api.get_opt(&name).await.context(&what)?.unwrap_or_default();
            return Err(held_by_other(namespace, &name, &current));
        }
        Err(e) => return Err(e).context(&what),
    };
    let uid = taken.metadata.uid.clone().unwrap_or_default();
    let renewer = tokio::spawn(renew(api.clone(), name.clone(), taken));
    let guard = {
        let (api, name, uid) = (api.clone(), name.clone(), uid.clone());
        cleanup::register(format!("delete Lease {namespace}/{name}"), move || async move {
            let _ = delete(&api, &name, &uid).await;
        })
    };
    Ok(Held { api, name, uid, renewer, guard: Some(guard) })
}

/// Renews the Lease until aborted; stops if it is no longer ours.
async fn renew(api: Api<Lease>, name: String, mut lease: Lease) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        if let Some(spec) = lease.spec.as_mut() {
            spec.renew_time = Some(now());
        }
        match api.replace(&name, &PostParams::default(), &lease).await {
            Ok(l) => lease = l,
            // Taken over or deleted: nothing of ours left to renew.
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => return,
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
