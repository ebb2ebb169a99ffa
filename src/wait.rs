//! Bounded polling: every wait in the plugin goes through `until`, so each
//! shows what it waits for and ends at the command's deadline with the last
//! state it saw.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::context::Env;
use crate::error::{Error, Result};

pub const INTERVAL: Duration = Duration::from_millis(1000);

/// Polls `check` until it returns `Ok(Ok(value))`. `Ok(Err(state))` means
/// "not yet" and describes what was seen; `Err` stops at once.
pub async fn until<T, F, Fut>(env: &Env, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<std::result::Result<T, String>>>,
{
    let deadline = env.options.deadline.unwrap_or_else(|| Instant::now() + env.options.timeout);
    loop {
        let state = match check().await? {
            Ok(v) => return Ok(v),
            Err(state) => state,
        };
        env.progress.waiting(&format!("waiting for {what}: {state}"));
        if Instant::now() + INTERVAL > deadline {
            return Err(Error::timeout(format!("timed out waiting for {what}; last seen: {state}"))
                .hint("run `kubectl scalardb-graphql status` to see what is missing, or raise --timeout"));
        }
        tokio::time::sleep(INTERVAL).await;
    }
}
