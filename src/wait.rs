//! Bounded polling: every wait in the plugin goes through `until`, so each
//! shows what it waits for and ends at the command's deadline with the last
//! state it saw. A wait needs only a `Clock`: the deadline, and where to say
//! what it waits for.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::calls::in_flight;
use crate::deadline::Deadline;
use crate::error::{Error, Result};

/// The longest pause between two checks of a wait (and between two rounds of `status --wait`).
pub const INTERVAL: Duration = Duration::from_millis(1000);
/// The first pause: most waits a command ends with (a CRD gone, a rollout already done, an object
/// deleted) are over in a fraction of a second, so a wait starts checking often and backs off,
/// doubling, to INTERVAL.
const FIRST_INTERVAL: Duration = Duration::from_millis(100);
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
    /// What the command does now, said only if it is cut off at its deadline.
    fn stage(&self, _what: &str) {}
}

/// What a wait needs: when to give up, and where to tell what it waits for.
pub trait Clock {
    fn deadline(&self) -> Instant;
    fn progress(&self) -> &dyn Progress;
}

/// A clock of its own, for a command that has no deployment to act on (`schema`).
pub struct Standalone {
    pub deadline: Deadline,
    pub progress: std::sync::Arc<dyn Progress>,
}

impl Clock for Standalone {
    fn deadline(&self) -> Instant {
        self.deadline.at()
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
    let mut pause = FIRST_INTERVAL;
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
        if Instant::now() + pause > deadline {
            return Err(Error::timeout(format!("timed out waiting for {what}; last seen: {state}"))
                .hint("run `kubectl scalardb-graphql status` to see what is missing, or raise --timeout"));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(INTERVAL);
        last = state;
    }
}
