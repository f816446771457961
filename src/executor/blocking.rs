//! `spawn_blocking`: blocking work on a bounded pool of plain threads, its result delivered to
//! the calling loop as a task's output.
//!
//! The pool is process-wide. It starts threads as jobs come, up to its bound (64 by default,
//! [`set_blocking_threads`]), and a thread with no job for 10 s ends. A job waits in the pool's
//! queue while every thread is busy. The task that awaits a job is woken through its waker
//! from the pool thread, the loop's cross-thread wake path: no polling.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::Duration;

use super::JoinHandle;

/// The bound on the pool's threads unless set otherwise.
const DEFAULT_THREADS: usize = 64;

/// How long a pool thread waits for a job before it ends.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

static MAX_THREADS: AtomicUsize = AtomicUsize::new(DEFAULT_THREADS);

type Job = Box<dyn FnOnce() + Send>;

struct Pool {
    state: Mutex<PoolState>,
    ready: Condvar,
}

#[derive(Default)]
struct PoolState {
    jobs: VecDeque<Job>,
    /// Threads alive, and of those the ones waiting for a job.
    threads: usize,
    idle: usize,
}

static POOL: Pool = Pool {
    state: Mutex::new(PoolState {
        jobs: VecDeque::new(),
        threads: 0,
        idle: 0,
    }),
    ready: Condvar::new(),
};

/// Sets how many threads the blocking pool may run at once (at least 1; 64 by default). Jobs
/// beyond that wait for a thread. Threads already running are not stopped; a lower bound
/// takes effect as they end.
pub fn set_blocking_threads(n: usize) {
    MAX_THREADS.store(n.max(1), Ordering::Relaxed);
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        // Jobs run outside the lock and their panics are caught: it is never poisoned by
        // them, and a poisoned queue would still be consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn submit(&'static self, job: Job) {
        let mut st = self.lock();
        st.jobs.push_back(job);
        // More jobs waiting than threads waiting for one: a new thread, within the bound.
        let start = st.jobs.len() > st.idle && st.threads < MAX_THREADS.load(Ordering::Relaxed);
        if start {
            st.threads += 1;
        }
        let wake_one = st.idle > 0;
        drop(st);
        if wake_one {
            self.ready.notify_one();
        }
        if !start {
            return; // an idle thread takes it, or it waits for a busy one
        }
        let started = thread::Builder::new()
            .name("ringloop-blocking".into())
            .spawn(move || self.work());
        if started.is_err() {
            // No thread could be made: the job waits for a running thread, or, with none,
            // runs here rather than never.
            let mut st = self.lock();
            st.threads -= 1;
            if st.threads == 0 {
                let job = st.jobs.pop_back();
                drop(st);
                if let Some(job) = job {
                    job();
                }
            }
        }
    }

    fn work(&'static self) {
        let mut st = self.lock();
        loop {
            if let Some(job) = st.jobs.pop_front() {
                drop(st);
                job();
                st = self.lock();
                continue;
            }
            st.idle += 1;
            let (next, timed_out) = self
                .ready
                .wait_timeout(st, KEEP_ALIVE)
                .unwrap_or_else(|e| e.into_inner());
            st = next;
            st.idle -= 1;
            if timed_out.timed_out() && st.jobs.is_empty() {
                st.threads -= 1;
                return;
            }
        }
    }
}

/// What a job hands back to the task awaiting it.
struct Slot<T> {
    out: Option<thread::Result<T>>,
    waker: Option<Waker>,
}

/// The slot, locked. Only the job's result and a waker are stored: a poisoned slot (a
/// panic while it was held, which nothing here does) is still consistent.
fn lock<T>(slot: &Mutex<Slot<T>>) -> std::sync::MutexGuard<'_, Slot<T>> {
    slot.lock().unwrap_or_else(|e| e.into_inner())
}

/// The future of a blocking job: submits it on first poll, then waits for its result.
struct Blocking<F, T> {
    job: Option<F>,
    slot: Arc<Mutex<Slot<T>>>,
}

impl<F, T> Unpin for Blocking<F, T> {}

impl<F, T> Future for Blocking<F, T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        if let Some(f) = self.job.take() {
            lock(&self.slot).waker = Some(cx.waker().clone());
            let slot = self.slot.clone();
            POOL.submit(Box::new(move || {
                let out = catch_unwind(AssertUnwindSafe(f));
                let waker = {
                    let mut s = lock(&slot);
                    s.out = Some(out);
                    s.waker.take()
                };
                // Woken outside the lock: a waker may run code of its own.
                if let Some(w) = waker {
                    w.wake();
                }
            }));
            return Poll::Pending;
        }
        let mut s = lock(&self.slot);
        match s.out.take() {
            Some(Ok(v)) => Poll::Ready(v),
            // The job's panic becomes the task's: its JoinHandle reports it.
            Some(Err(p)) => {
                drop(s);
                resume_unwind(p)
            }
            None => {
                if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    s.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

/// Runs `f` on the blocking pool and returns a handle to its result, as a task of the current
/// loop: a DNS lookup, a blocking library call or heavy computation that would otherwise
/// stall every connection and timer on the loop's thread.
///
/// The job starts once the task is first polled, and runs to its end on a pool thread: it
/// cannot be interrupted. Aborting the handle, or closing the loop, ends the task at once
/// (the handle reports a cancellation) and the job's result is dropped when it comes. The
/// loop's close does not wait for running jobs. A job that panics makes the task panic, and
/// the handle reports it.
///
/// # Panics
///
/// Outside a running loop, as [`spawn`](crate::spawn).
///
/// ```
/// ringloop::EventLoop::new()?.block_on(async {
///     let sum = ringloop::spawn_blocking(|| (1..=100u64).sum::<u64>()).await.unwrap();
///     assert_eq!(sum, 5050);
/// });
/// # Ok::<(), std::io::Error>(())
/// ```
#[track_caller]
pub fn spawn_blocking<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    crate::spawn(Blocking {
        job: Some(f),
        slot: Arc::new(Mutex::new(Slot {
            out: None,
            waker: None,
        })),
    })
}
