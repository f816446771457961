//! Timers: [`sleep`], [`sleep_until`], [`timeout`], [`interval`].
//!
//! Timers cost no SQE each. Each loop keeps a timer wheel (O(1) insert and cancel, 1 ms
//! resolution, never early) and one kernel timeout (an absolute `IORING_OP_TIMEOUT`) armed no
//! later than the earliest deadline: moved earlier when an earlier timer is registered, never
//! later, re-armed after it expires. So a million pending sleeps cost memory (about 50 bytes
//! each in the wheel) and nothing per loop iteration: no clock read, and no timer armed in the
//! kernel for each wait, as a wait bounded by a timeout would. A server's per-request timeout
//! (registered, then cancelled when the request comes in) costs a wheel insert and removal.
//!
//! A timer future belongs to the loop that first polls it; it can be created anywhere.
//!
//! ```
//! use std::time::Duration;
//! let mut lp = ringloop::EventLoop::new()?;
//! lp.block_on(ringloop::time::sleep(Duration::from_millis(5)));
//! let r = lp.block_on(ringloop::time::timeout(
//!     Duration::from_millis(5),
//!     std::future::pending::<()>(),
//! ));
//! assert!(r.is_err());
//! # Ok::<(), std::io::Error>(())
//! ```

mod wheel;

pub(crate) use wheel::Wheel;

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::util::loop_parts::{Current, Entered, LoopPart, Registry};

/// A loop's timers, registered per thread like its driver.
pub(crate) struct Timers {
    id: u64,
    pub(crate) wheel: RefCell<Wheel>,
    /// The earliest deadline (`CLOCK_MONOTONIC` ns, from `Wheel::insert`) of the timers
    /// registered since the loop last looked, `u64::MAX` if none: checked on every turn
    /// without borrowing the wheel.
    pub(crate) earliest_new: Cell<u64>,
}

impl LoopPart for Timers {
    fn loop_id(&self) -> u64 {
        self.id
    }
}

thread_local! {
    static TIMERS: Registry<Timers> = const { Registry::new() };
    static CURRENT: Current<Timers> = const { Current::new() };
}

impl Timers {
    pub(crate) fn new(id: u64, start: Instant) -> Rc<Timers> {
        let t = Rc::new(Timers {
            id,
            wheel: RefCell::new(Wheel::new(start)),
            earliest_new: Cell::new(u64::MAX),
        });
        TIMERS.with(|r| r.register(&t));
        t
    }

    pub(crate) fn enter(self: &Rc<Self>) -> TimersGuard {
        TimersGuard(Some(CURRENT.with(|c| c.enter(self))))
    }

    pub(crate) fn unregister(id: u64) {
        TIMERS.with(|r| r.unregister(id));
    }
}

/// Keeps a loop's timers current until dropped.
/// Timers pending on the loop current on this thread; `None` outside a loop.
pub(crate) fn current_pending() -> Option<usize> {
    CURRENT.with(|c| c.with_current(|t| t.wheel.borrow().pending()))
}

pub(crate) struct TimersGuard(Option<Entered<Timers>>);

impl Drop for TimersGuard {
    fn drop(&mut self) {
        if let Some(e) = self.0.take() {
            CURRENT.with(|c| c.leave(e));
        }
    }
}

/// Waits until `duration` has passed.
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(Instant::now() + duration)
}

/// Waits until `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        timer: None,
    }
}

/// The future of [`sleep`] and [`sleep_until`]. Resolves at or after its deadline, never
/// before; dropping it cancels the timer.
#[must_use = "futures do nothing unless polled"]
pub struct Sleep {
    deadline: Instant,
    /// (loop id, wheel key) once registered.
    timer: Option<(u64, usize)>,
}

impl Sleep {
    /// The instant this sleep resolves at.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the deadline has passed.
    pub fn is_elapsed(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Moves the deadline; the sleep can be polled again after it resolved.
    pub fn reset(&mut self, deadline: Instant) {
        self.unregister();
        self.deadline = deadline;
    }

    fn unregister(&mut self) {
        if let Some((id, key)) = self.timer.take() {
            let removed = CURRENT.with(|c| {
                c.with_current(|t| (t.id == id).then(|| t.wheel.borrow_mut().remove(key)))
                    .flatten()
            });
            if removed.is_none() {
                if let Some(t) = TIMERS.with(|r| r.lookup(id)) {
                    t.wheel.borrow_mut().remove(key);
                }
            }
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let ready = CURRENT.with(|c| {
            c.with_current(|t| {
                let mut wheel = t.wheel.borrow_mut();
                match this.timer {
                    None => match wheel.insert(this.deadline, cx.waker().clone()) {
                        None => true,
                        Some((key, ns)) => {
                            this.timer = Some((t.id, key));
                            t.earliest_new.set(t.earliest_new.get().min(ns));
                            false
                        }
                    },
                    Some((id, key)) => {
                        assert!(
                            id == t.id,
                            "ringloop: a timer registered on one event loop was polled on \
                             another; a timer belongs to the loop that first polls it"
                        );
                        if wheel.poll(key, cx.waker()) {
                            wheel.remove(key);
                            this.timer = None;
                            // Resolved: later polls see the deadline as passed.
                            true
                        } else {
                            false
                        }
                    }
                }
            })
        });
        match ready {
            Some(true) => Poll::Ready(()),
            Some(false) => Poll::Pending,
            None => panic!(
                "ringloop: a timer was polled outside a running event loop; run it with \
                 EventLoop::block_on or spawn it on a loop"
            ),
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.unregister();
    }
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .finish()
    }
}

/// Runs `fut` for at most `duration`: yields `Ok(output)`, or `Err(Elapsed)` if time ran out
/// first (the future is then dropped when the `Timeout` is, cancelling its work).
pub fn timeout<F: Future>(duration: Duration, fut: F) -> Timeout<F> {
    Timeout {
        fut,
        sleep: sleep(duration),
    }
}

/// The future of [`timeout`].
#[must_use = "futures do nothing unless polled"]
pub struct Timeout<F> {
    fut: F,
    sleep: Sleep,
}

impl<F> Timeout<F> {
    /// Gives the inner future back.
    pub fn into_inner(self) -> F {
        self.fut
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `fut` is structurally pinned: it is never moved out of a pinned `Timeout`
        // (`into_inner` takes `self` by value, which requires `Timeout: Unpin` once pinned).
        // `sleep` is `Unpin` and not structurally pinned.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: see above.
        let fut = unsafe { Pin::new_unchecked(&mut this.fut) };
        if let Poll::Ready(out) = fut.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        match Pin::new(&mut this.sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed(()))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The error of a [`timeout`] whose time ran out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elapsed(());

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for std::io::Error {
    fn from(e: Elapsed) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::TimedOut, e)
    }
}

/// Ticks every `period`; the first tick completes at once.
///
/// If ticks are missed (the loop was busy for longer than a period), the next tick completes
/// at once and later ticks are spaced a full period from it: missed ticks do not burst.
///
/// # Panics
///
/// If `period` is zero.
#[track_caller]
pub fn interval(period: Duration) -> Interval {
    assert!(!period.is_zero(), "interval period must be non-zero");
    Interval {
        period,
        sleep: sleep_until(Instant::now()),
    }
}

/// The stream of [`interval`].
#[derive(Debug)]
pub struct Interval {
    period: Duration,
    sleep: Sleep,
}

impl Interval {
    /// Waits for the next tick and returns the instant it was scheduled for.
    pub async fn tick(&mut self) -> Instant {
        std::future::poll_fn(|cx| self.poll_tick(cx)).await
    }

    /// Polls for the next tick.
    pub fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<Instant> {
        if Pin::new(&mut self.sleep).poll(cx).is_pending() {
            return Poll::Pending;
        }
        let scheduled = self.sleep.deadline();
        let now = Instant::now();
        let mut next = scheduled + self.period;
        if next <= now {
            next = now + self.period;
        }
        self.sleep.reset(next);
        Poll::Ready(scheduled)
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }
}
