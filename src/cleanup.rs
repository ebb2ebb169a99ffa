//! Work that must happen even when a command is cut short: a probe Pod to
//! delete, say. Whoever creates such a thing registers how to undo it and
//! gets a guard; doing the undo itself, it disarms the guard. When the
//! command's future is dropped instead (Ctrl-C, a panic unwinding), the guard
//! leaves the undo behind, and `main` runs what is left before it exits.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
}
