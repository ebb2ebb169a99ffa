//! What a command cut short was waiting for: calls to servers and tools say
//! here that they are in flight, so that a command cut off at its deadline
//! names the one that did not answer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

/// With KUBECTL_SCALARDB_GRAPHQL_TRACE set, every call's start and end go to stderr,
/// in milliseconds since the first call: where a slow command spends its time.
static TRACE: LazyLock<Option<Instant>> =
    LazyLock::new(|| std::env::var_os("KUBECTL_SCALARDB_GRAPHQL_TRACE").map(|_| Instant::now()));

/// Whether calls are traced to stderr (then the printer draws no spinner over the lines).
pub fn tracing() -> bool {
    TRACE.is_some()
}

/// A trace line, its call's name masked as the printer masks what it shows.
fn trace(line: std::fmt::Arguments) {
    eprintln!("{}", crate::redaction::masked(&line.to_string()));
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
    let what = what.into();
    if let Some(first) = *TRACE {
        trace(format_args!("trace {:8.1} ms  #{id} {}", first.elapsed().as_secs_f64() * 1000.0, what.escape_debug()));
    }
    IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner()).insert(id, (what, Instant::now()));
    id
}

pub fn end(id: u64) {
    let call = IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    if let (Some(first), Some((_, since))) = (*TRACE, call) {
        let took = since.elapsed().as_secs_f64() * 1000.0;
        trace(format_args!("trace {:8.1} ms  #{id} done in {took:.1} ms", first.elapsed().as_secs_f64() * 1000.0));
    }
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
    use std::time::Duration;

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
