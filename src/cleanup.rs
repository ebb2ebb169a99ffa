//! Work that must happen even when a command is cut short: a probe Pod to
//! delete, say. Whoever creates such a thing registers how to undo it and
//! gets a guard; doing the undo itself, it disarms the guard. When the
//! command's future is dropped instead (Ctrl-C, a panic unwinding), the guard
//! leaves the undo behind, and `main` runs what is left before it exits.
//!
//! Also what a command cut short was waiting for: calls to servers and tools
//! say here that they are in flight, so that a command cut off at its
//! deadline names the one that did not answer.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

type Undo = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

static PENDING: Mutex<BTreeMap<u64, (String, Undo)>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicU64 = AtomicU64::new(0);

/// Holds one registered undo until it is disarmed.
#[must_use = "dropping the guard without disarm() leaves the undo for main to run"]
pub struct Guard(u64);

/// Registers `undo` (described by `what`) to run if the command ends before
/// the guard is disarmed.
pub fn register<F, Fut>(what: impl Into<String>, undo: F) -> Guard
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let undo: Undo = Box::new(move || Box::pin(undo()));
    PENDING.lock().unwrap_or_else(|e| e.into_inner()).insert(id, (what.into(), undo));
    Guard(id)
}

impl Guard {
    /// The caller did the undo itself (or it is no longer needed).
    pub fn disarm(self) {
        PENDING.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.0);
    }
}

/// Runs every undo left behind, each bounded by `limit`; returns what could
/// not be done in time, for the user to finish by hand.
pub async fn run_left(limit: Duration) -> Vec<String> {
    let left: Vec<(String, Undo)> =
        std::mem::take(&mut *PENDING.lock().unwrap_or_else(|e| e.into_inner())).into_values().collect();
    let mut unfinished = vec![];
    for (what, undo) in left {
        if tokio::time::timeout(limit, undo()).await.is_err() {
            unfinished.push(what);
        }
    }
    unfinished
}

/// Calls in flight, by when they started.
static IN_FLIGHT: Mutex<BTreeMap<u64, (String, Instant)>> = Mutex::new(BTreeMap::new());
static NEXT_CALL: AtomicU64 = AtomicU64::new(0);

/// A call to a server or a tool, in flight until it is dropped.
#[derive(Debug)]
pub struct Call(u64);

/// Says that `what` (say, "AWS STS GetCallerIdentity") is being waited for.
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
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[tokio::test]
    async fn a_dropped_guard_leaves_its_undo_and_a_disarmed_one_does_not() {
        let ran = Arc::new(AtomicUsize::new(0));
        let (a, b) = (ran.clone(), ran.clone());
        let kept = register("kept", move || async move {
            a.fetch_add(1, Ordering::SeqCst);
        });
        let done = register("done", move || async move {
            b.fetch_add(10, Ordering::SeqCst);
        });
        done.disarm();
        drop(kept);
        assert!(run_left(Duration::from_secs(1)).await.is_empty());
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        let stuck = register("stuck", std::future::pending::<()>);
        drop(stuck);
        assert_eq!(run_left(Duration::from_millis(20)).await, vec!["stuck".to_string()]);
    }

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
