//! Bounded polling: every wait in the plugin goes through `until`, so each
//! shows what it waits for and ends at the command's deadline with the last
//! state it saw. A wait needs only a `Clock`: the deadline, and where to say
//! what it waits for. Calls to servers and tools say here that they are in
//! flight, so that a command cut short at its deadline names the one it was
//! waiting for.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

pub const INTERVAL: Duration = Duration::from_millis(1000);
/// What a check begun at (or past) the deadline may still take.
const CHECK_ALLOWANCE: Duration = Duration::from_secs(2);

/// How a component tells what it is waiting for or warns about, without
/// touching the terminal (the printer implements it).
pub trait Progress: Send + Sync {
    /// Replaces the current "waiting for …" line.
    fn waiting(&self, what: &str);
    /// Something the user should know that does not stop the command.
    fn warn(&self, what: &str);
    /// A change was made.
    fn done(&self, what: &str);
}

/// What a wait needs: when to give up, and where to tell what it waits for.
pub trait Clock {
    fn deadline(&self) -> Instant;
    fn progress(&self) -> &dyn Progress;
}

/// A clock of its own, for a command that has no deployment to act on (`schema`).
pub struct Deadline {
    pub at: Instant,
    pub progress: std::sync::Arc<dyn Progress>,
}

impl Clock for Deadline {
    fn deadline(&self) -> Instant {
        self.at
    }
    fn progress(&self) -> &dyn Progress {
        self.progress.as_ref()
    }
}

/// Polls `check` until it returns `Ok(Ok(value))`. `Ok(Err(state))` means
/// "not yet" and describes what was seen; `Err` stops at once.
pub async fn until<T, C, F, Fut>(clock: &C, what: &str, mut check: F) -> Result<T>
where
    C: Clock + ?Sized,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<std::result::Result<T, String>>>,
{
    let deadline = clock.deadline();
    let mut last = String::from("nothing yet");
    loop {
        // A check that hangs (a server that stopped answering) ends at the deadline too;
        // one begun at the deadline still gets a moment, so that a converged state is seen.
        let cut = deadline.max(Instant::now() + CHECK_ALLOWANCE);
        let checking = check();
        tokio::pin!(checking);
        let state = tokio::select! {
            biased;
            checked = &mut checking => match checked? {
                Ok(v) => return Ok(v),
                Err(state) => state,
            },
            _ = tokio::time::sleep_until(cut.into()) => {
                let pending = in_flight().map(|c| format!("; no answer from {c}")).unwrap_or_default();
                return Err(Error::timeout(format!("timed out waiting for {what}; last seen: {last}{pending}"))
                    .hint("check that the servers answer, or raise --timeout"));
            }
        };
        clock.progress().waiting(&format!("waiting for {what}: {state}"));
        if Instant::now() + INTERVAL > deadline {
            return Err(Error::timeout(format!("timed out waiting for {what}; last seen: {state}"))
                .hint("run `kubectl scalardb-graphql status` to see what is missing, or raise --timeout"));
        }
        tokio::time::sleep(INTERVAL).await;
        last = state;
    }
}

/// Calls in flight, by when they started.
static IN_FLIGHT: Mutex<BTreeMap<u64, (String, Instant)>> = Mutex::new(BTreeMap::new());
static NEXT_CALL: AtomicU64 = AtomicU64::new(0);

/// A call to a server or a tool, in flight until it is dropped.
#[derive(Debug)]
pub struct Call(u64);

/// Says that `what` (say, "AWS sts GetCallerIdentity") is being waited for.
pub fn call(what: impl Into<String>) -> Call {
    Call(begin(what))
}

/// For callers that cannot hold a guard (an SDK interceptor): `end` it with the id.
pub fn begin(what: impl Into<String>) -> u64 {
    let id = NEXT_CALL.fetch_add(1, Ordering::Relaxed);
    IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner()).insert(id, (what.into(), Instant::now()));
    id
}

pub fn end(id: u64) {
    IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
}

impl Drop for Call {
    fn drop(&mut self) {
        end(self.0);
    }
}

/// The call that has waited longest, and for how long: what a hung command waits for.
pub fn in_flight() -> Option<String> {
    calls_in_flight().into_iter().next()
}

/// Every call in flight, the longest waiting first.
fn calls_in_flight() -> Vec<String> {
    let calls = IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner());
    let mut calls: Vec<&(String, Instant)> = calls.values().collect();
    calls.sort_by_key(|(_, since)| *since);
    calls.iter().map(|(what, since)| format!("{what} (for {}s)", since.elapsed().as_secs())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_call_in_flight_is_named_until_it_ends() {
        let first = call("the first call");
        std::thread::sleep(Duration::from_millis(5));
        let second = call("the second call");
        // Other tests may have calls of their own in flight: only the order of these two counts.
        let position = |name: &str| calls_in_flight().iter().position(|c| c.starts_with(name));
        assert!(position("the first call (for 0s)").unwrap() < position("the second call").unwrap());
        drop(first);
        assert_eq!(position("the first call"), None);
        assert!(position("the second call").is_some());
        drop(second);
        assert_eq!(position("the second call"), None);
    }
}
