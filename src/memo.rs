//! Reads that several checks of one status round share: the release's pods,
//! the controller's Deployments, the Ingresses of a namespace are each asked
//! of the API server once a round, not once per check that looks at them.
//!
//! Only status turns it on, and it forgets everything at the start of each
//! round (`status --wait`): a command that changes the cluster, or waits for
//! it to change, reads afresh every time. A read that fails is not kept: the
//! next one asks again, and each asker sees its own error.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use crate::error::Result;

type Cell = Arc<OnceCell<Arc<dyn Any + Send + Sync>>>;

#[derive(Default)]
pub struct Memo {
    on: bool,
    cells: Mutex<HashMap<String, Cell>>,
}

impl Memo {
    /// A memo that keeps what it is given (status's); the default keeps nothing.
    pub fn keeping() -> Memo {
        Memo { on: true, ..Memo::default() }
    }

    /// `read()`'s value for `key`: read once while kept, each time otherwise. Concurrent
    /// askers of the same key wait for the one read. A key names one type of value.
    pub async fn once<T, F, Fut>(&self, key: String, read: F) -> Result<T>
    where
        T: Clone + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        if !self.on {
            return read().await;
        }
        let cell = self.cells.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default().clone();
        let value =
            cell.get_or_try_init(|| async { read().await.map(|v| Arc::new(v) as Arc<dyn Any + Send + Sync>) }).await?;
        Ok(value.downcast_ref::<T>().expect("a memo key names one type of value").clone())
    }

    /// Forgets every read: the start of a new round.
    pub fn forget(&self) {
        self.cells.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::error::Error;

    async fn counted(memo: &Memo, reads: &AtomicUsize, fail: bool) -> Result<Vec<u32>> {
        memo.once("pods".to_string(), || async {
            reads.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            if fail { Err(Error::failed("the API server refused")) } else { Ok(vec![1, 2]) }
        })
        .await
    }

    #[tokio::test]
    async fn a_kept_read_is_made_once_for_concurrent_askers_and_again_after_forget() {
        let (memo, reads) = (Memo::keeping(), AtomicUsize::new(0));
        let (a, b) = tokio::join!(counted(&memo, &reads, false), counted(&memo, &reads, false));
        assert_eq!((a.unwrap(), b.unwrap()), (vec![1, 2], vec![1, 2]));
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        memo.forget();
        counted(&memo, &reads, false).await.unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_default_memo_reads_every_time_and_a_failed_read_is_not_kept() {
        let (memo, reads) = (Memo::default(), AtomicUsize::new(0));
        counted(&memo, &reads, false).await.unwrap();
        counted(&memo, &reads, false).await.unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        let (kept, reads) = (Memo::keeping(), AtomicUsize::new(0));
        assert!(counted(&kept, &reads, true).await.is_err());
        assert_eq!(counted(&kept, &reads, false).await.unwrap(), vec![1, 2]);
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }
}
