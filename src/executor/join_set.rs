//! `JoinSet`: a group of tasks on the current loop, awaited in the order they finish.
//!
//! Each task is spawned wrapped with a guard that, when the task's future is dropped
//! (finished, panicked or aborted), queues the task's key on the set and wakes whoever waits
//! in `join_next`. So `join_next` takes the next finished task at once, without polling the
//! others: draining ten thousand connections costs ten thousand steps, not a scan per step.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use slab::Slab;

use super::{JoinError, JoinHandle};

/// A set of tasks spawned on the current loop, whose outputs are taken in the order the
/// tasks finish (tokio's `JoinSet`, for a thread-per-core loop: the tasks need not be
/// `Send`, and the set stays on the loop's thread).
///
/// Dropping the set aborts every task still in it. [`shutdown`](JoinSet::shutdown) aborts
/// them and waits until each has ended, which is how a server drains its connections on stop.
///
/// ```
/// use std::time::Duration;
/// use ringloop::{time, EventLoop, JoinSet};
///
/// EventLoop::new()?.block_on(async {
///     let mut set = JoinSet::new();
///     for ms in [30u64, 10, 20] {
///         set.spawn(async move {
///             time::sleep(Duration::from_millis(ms)).await;
///             ms
///         });
///     }
///     let mut order = Vec::new();
///     while let Some(done) = set.join_next().await {
///         order.push(done.unwrap());
///     }
///     assert_eq!(order, [10, 20, 30]);
/// });
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct JoinSet<T> {
    tasks: Slab<JoinHandle<T>>,
    done: Rc<Finished>,
}

/// The keys of tasks whose futures were dropped, and who waits for one.
#[derive(Default)]
struct Finished {
    keys: RefCell<VecDeque<usize>>,
    waiter: RefCell<Option<Waker>>,
}

/// A waker that does nothing, for [`JoinSet::try_join_next`]'s poll: a task found not yet
/// finished stays queued, to be seen by the next call.
struct Noop;

impl std::task::Wake for Noop {
    fn wake(self: std::sync::Arc<Self>) {}
}

thread_local! {
    static NOOP_WAKER: Waker = Waker::from(std::sync::Arc::new(Noop));
}

/// Moved into a task with its future: dropped with it, it tells the set the task ended.
struct Notify {
    done: Rc<Finished>,
    key: usize,
}

impl Drop for Notify {
    fn drop(&mut self) {
        self.done.keys.borrow_mut().push_back(self.key);
        let waiter = self.done.waiter.borrow_mut().take();
        if let Some(w) = waiter {
            w.wake();
        }
    }
}

impl<T: 'static> JoinSet<T> {
    /// An empty set.
    pub fn new() -> JoinSet<T> {
        JoinSet {
            tasks: Slab::new(),
            done: Rc::new(Finished::default()),
        }
    }

    /// Spawns `fut` on the current loop as a task of this set.
    ///
    /// # Panics
    ///
    /// Outside a running loop, as [`spawn`](crate::spawn).
    #[track_caller]
    pub fn spawn<F: Future<Output = T> + 'static>(&mut self, fut: F) {
        let entry = self.tasks.vacant_entry();
        let notify = Notify {
            done: self.done.clone(),
            key: entry.key(),
        };
        entry.insert(crate::spawn(async move {
            // Dropped with the future, however the task ends.
            let _notify = notify;
            fut.await
        }));
    }

    /// Waits for the next task to finish and returns its output, or its [`JoinError`] if it
    /// panicked or was aborted; `None` once the set is empty. Cancel-safe: a task's output
    /// is taken only when it is returned.
    pub async fn join_next(&mut self) -> Option<Result<T, JoinError>> {
        std::future::poll_fn(|cx| self.poll_join_next(cx)).await
    }

    fn poll_join_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, JoinError>>> {
        loop {
            if self.tasks.is_empty() {
                return Poll::Ready(None);
            }
            let next = self.done.keys.borrow_mut().pop_front();
            let Some(key) = next else {
                *self.done.waiter.borrow_mut() = Some(cx.waker().clone());
                return Poll::Pending;
            };
            let Some(task) = self.tasks.get_mut(key) else {
                continue; // its handle left the set already
            };
            match Pin::new(task).poll(cx) {
                Poll::Ready(out) => {
                    self.tasks.remove(key);
                    return Poll::Ready(Some(out));
                }
                // Its future is dropped but its output not yet stored: the handle wakes this
                // task once it is, and the key is looked at again then.
                Poll::Pending => {
                    self.done.keys.borrow_mut().push_back(key);
                    return Poll::Pending;
                }
            }
        }
    }

    /// Takes a finished task's output if one is ready, without waiting: what a long-lived
    /// owner (an accept loop) calls now and then so that finished tasks do not pile up in
    /// the set. `None` if no task has finished.
    pub fn try_join_next(&mut self) -> Option<Result<T, JoinError>> {
        NOOP_WAKER.with(
            |waker| match self.poll_join_next(&mut Context::from_waker(waker)) {
                Poll::Ready(out) => out,
                Poll::Pending => None,
            },
        )
    }

    /// Aborts every task in the set; each then ends with a cancellation error at
    /// [`join_next`](JoinSet::join_next) (or with its output, had it finished).
    pub fn abort_all(&mut self) {
        for (_, task) in &self.tasks {
            task.abort();
        }
    }

    /// Aborts every task and waits until each has ended; the set is then empty.
    pub async fn shutdown(&mut self) {
        self.abort_all();
        while self.join_next().await.is_some() {}
    }

    /// How many tasks are in the set (finished ones not yet taken included).
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether the set holds no task.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

impl<T: 'static> Default for JoinSet<T> {
    fn default() -> JoinSet<T> {
        JoinSet::new()
    }
}

impl<T> Drop for JoinSet<T> {
    fn drop(&mut self) {
        for (_, task) in &self.tasks {
            task.abort();
        }
    }
}

impl<T> fmt::Debug for JoinSet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinSet")
            .field("len", &self.tasks.len())
            .finish()
    }
}
