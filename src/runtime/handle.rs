//! `Handle`: stop and spawn from anywhere; `Stopping`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use super::shared::Shared;
use super::Stats;

/// How long [`Handle::stats`] waits for the loop to answer from another thread.
const STATS_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
use crate::executor::{self, JoinHandle};

/// A handle to an event loop: `Send + Sync`, cheap to clone. Stops the loop and spawns onto it
/// from any thread.
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    pub(crate) fn new(shared: Arc<Shared>) -> Handle {
        shared.handles.fetch_add(1, Ordering::AcqRel);
        Handle { shared }
    }

    /// The handle of the loop running on this thread.
    ///
    /// # Panics
    ///
    /// Outside a running loop; use [`Handle::try_current`] to check.
    #[track_caller]
    pub fn current() -> Handle {
        Handle::try_current().unwrap_or_else(|| {
            panic!(
                "ringloop::Handle::current() called outside a running event loop; call it from \
                 a task or from the future given to EventLoop::block_on, or keep the handle \
                 from EventLoop::handle()"
            )
        })
    }

    /// The handle of the loop running on this thread, if any.
    pub fn try_current() -> Option<Handle> {
        super::context::shared().map(Handle::new)
    }

    /// Asks the loop to stop: `run_forever` returns when it sees the request (and clears it),
    /// and every [`Stopping`] future resolves. Idempotent; callable from a task, from another
    /// thread, or from a signal-handling task. It does not end a `block_on`: the future given to
    /// `block_on` can await [`Handle::stopping`].
    pub fn stop(&self) {
        self.shared.stop_epoch.fetch_add(1, Ordering::AcqRel);
        self.shared.stop.store(true, Ordering::Release);
        // Entries stay until their `Stopping` drops, so no key is reused under a live future.
        let wakers: Vec<Waker> = self
            .shared
            .waiters()
            .iter()
            .map(|(_, w)| w.clone())
            .collect();
        for w in wakers {
            w.wake();
        }
        self.shared.remote.notifier().notify();
    }

    /// Whether a stop was requested and not yet seen by `run_forever`.
    pub fn is_stopped(&self) -> bool {
        self.shared.stop_requested()
    }

    /// A future that resolves once [`stop`](Handle::stop) is called (at once if a stop is
    /// pending).
    pub fn stopping(&self) -> Stopping {
        Stopping {
            shared: self.shared.clone(),
            epoch: self.shared.stop_epoch.load(Ordering::Acquire),
            key: None,
        }
    }

    /// The loop's counters ([`EventLoop::stats`](super::EventLoop::stats)), from any thread.
    ///
    /// From one of the loop's own tasks they are read at once. From elsewhere, a task on the
    /// loop reads them and hands them back: the calling thread blocks until the loop runs it,
    /// at its next turn. A loop that does not run it within a second (it is not running, or
    /// a task is blocking its thread) gives no answer, and the result is then
    /// `Stats::default()` (all zero).
    pub fn stats(&self) -> Stats {
        if crate::driver::current_id() == Some(self.shared.remote.loop_id()) {
            return Stats::current().unwrap_or_default();
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        drop(self.spawn(async move {
            let _ = tx.send(Stats::current());
        }));
        rx.recv_timeout(STATS_WAIT)
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Spawns a task on the loop from any thread. If the loop has been closed, the task is
    /// dropped at once and its handle yields a cancellation error.
    pub fn spawn<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        if crate::driver::current().is_some_and(|d| d.id() == self.shared.remote.loop_id()) {
            return executor::spawn_current(fut);
        }
        self.shared.remote.spawn(fut)
    }
}

impl Clone for Handle {
    fn clone(&self) -> Handle {
        Handle::new(self.shared.clone())
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.handles.fetch_sub(1, Ordering::AcqRel);
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("loop", &self.shared.remote.loop_id())
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

/// Resolves once [`Handle::stop`] has been called on its loop. Made by [`Handle::stopping`].
#[must_use = "futures do nothing unless polled"]
pub struct Stopping {
    shared: Arc<Shared>,
    epoch: u64,
    key: Option<usize>,
}

impl Stopping {
    fn stopped(&self) -> bool {
        self.shared.stop_requested() || self.shared.stop_epoch.load(Ordering::Acquire) != self.epoch
    }
}

impl Future for Stopping {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.stopped() {
            return Poll::Ready(());
        }
        {
            let mut waiters = self.shared.waiters();
            match self.key {
                Some(k) if waiters.contains(k) => {
                    if !waiters[k].will_wake(cx.waker()) {
                        waiters[k] = cx.waker().clone();
                    }
                }
                _ => {
                    let k = waiters.insert(cx.waker().clone());
                    drop(waiters);
                    self.key = Some(k);
                }
            }
        }
        // Re-check: a stop between the first check and registering woke the old waker only.
        if self.stopped() {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for Stopping {
    fn drop(&mut self) {
        if let Some(k) = self.key {
            self.shared.waiters().try_remove(k);
        }
    }
}

impl fmt::Debug for Stopping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stopping").finish_non_exhaustive()
    }
}
