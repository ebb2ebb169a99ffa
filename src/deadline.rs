//! The command's deadline: one value, made once when the command starts (from
//! `--timeout`, or the command's own bound), and handed down to everything
//! that waits or runs something: the components (through `Env`), helm, the
//! kubeconfig's credential plugin. Clones share it: when a question was
//! answered, `restart` moves it for every holder at once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Deadline(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    timeout: Duration,
    at: Mutex<Instant>,
}

impl Deadline {
    /// `timeout` from now.
    pub fn start(timeout: Duration) -> Deadline {
        Deadline(Arc::new(Inner { timeout, at: Mutex::new(Instant::now() + timeout) }))
    }

    /// When every wait of the command gives up.
    pub fn at(&self) -> Instant {
        *self.0.at.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long the command may take, as it was given.
    pub fn timeout(&self) -> Duration {
        self.0.timeout
    }

    /// The whole timeout again from now: the time a person takes to answer a question is not the command's.
    pub fn restart(&self) {
        *self.0.at.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now() + self.0.timeout;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_moves_the_deadline_for_every_holder() {
        let deadline = Deadline::start(Duration::from_secs(60));
        let held = deadline.clone();
        let first = held.at();
        std::thread::sleep(Duration::from_millis(5));
        deadline.restart();
        assert!(held.at() > first);
        assert_eq!(held.at(), deadline.at());
        assert_eq!(held.timeout(), Duration::from_secs(60));
    }
}
