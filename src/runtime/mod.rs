//! The event loop's lifecycle: create, run, stop, close.

mod builder;
mod cluster;
pub(crate) mod context;
mod handle;
mod shared;
mod signal_watcher;
mod stats;

pub use builder::Builder;
pub use cluster::{Cluster, ClusterBuilder, ClusterHandle, CoreResult};
pub use handle::{Handle, Stopping};
pub use stats::{RecvPoolStats, Stats};

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use crate::driver::{self, Driver, Released};
use crate::executor::{JoinHandle, Remote, Scheduler};
use crate::sys::{self, EventFd, Features, RingConfig};
use crate::time::Timers;
use shared::Shared;

/// Tasks polled per loop turn before completions are reaped again, so a busy task cannot
/// starve I/O.
const TASK_BUDGET: usize = 128;

static NEXT_LOOP_ID: AtomicU64 = AtomicU64::new(1);

/// An io_uring event loop: one ring, its op table, its tasks and timers, on one thread.
///
/// `!Send` and `!Sync`: a loop belongs to the thread that made it. See the
/// [crate documentation](crate) for the model.
///
/// ```compile_fail
/// fn must_be_send<T: Send>(_: T) {}
/// must_be_send(ringloop::EventLoop::new().unwrap()); // a loop cannot move threads
/// ```
///
/// ```
/// let mut lp = ringloop::EventLoop::new()?;
/// let jh = lp.spawn(async { 6 * 7 });
/// assert_eq!(lp.block_on(jh).unwrap(), 42);
/// lp.close()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct EventLoop {
    core: Rc<Core>,
}

pub(crate) struct Core {
    id: u64,
    pub(crate) driver: Driver,
    pub(crate) sched: Scheduler,
    pub(crate) timers: Rc<Timers>,
    pub(crate) shared: Arc<Shared>,
    features: Features,
    close_timeout: Duration,
    closed: Cell<bool>,
    /// Wake-ups and orphans taken from the driver, run with no borrow held.
    released: RefCell<Released>,
    timer_wakers: RefCell<Vec<Waker>>,
    /// Kept until close: the doorbell the driver reads.
    _eventfd_owner: Arc<Remote>,
}

impl EventLoop {
    /// A loop with the default settings; the same as `EventLoop::builder().build()`.
    ///
    /// # Errors
    ///
    /// Where io_uring cannot be used, an error whose message names the cause (kernel too old,
    /// `kernel.io_uring_disabled`, a seccomp profile such as a container's, the locked-memory
    /// limit) and what to do about it.
    pub fn new() -> io::Result<EventLoop> {
        Builder::default().build()
    }

    /// A [`Builder`] to configure a loop.
    pub fn builder() -> Builder {
        Builder::default()
    }

    fn from_builder(b: Builder) -> io::Result<EventLoop> {
        let id = NEXT_LOOP_ID.fetch_add(1, Ordering::Relaxed);
        let cfg = RingConfig {
            entries: b.entries,
            cq_entries: b.entries.next_power_of_two().saturating_mul(4).min(65536),
            mode: b.setup_mode,
            taskrun_flag: b.driver.spin.is_some(),
        };
        let (ring, features) = sys::setup(&cfg)?;
        let eventfd = EventFd::new()?;
        let wake_fd = eventfd.as_raw_fd();
        let remote = Arc::new(Remote::new(id, eventfd));
        let wake_remote = remote.clone();
        let driver = Driver::new(
            id,
            ring,
            wake_fd,
            &b.driver,
            driver::RuntimeHooks {
                wake_loop: std::sync::Arc::new(move || wake_remote.notifier().notify()),
                wake_inline: crate::executor::wake_inline,
                wake_inline_ref: crate::executor::wake_inline_ref,
            },
        )?;
        let mut features = features;
        features.set_recv_buffer_ring(driver.pool().is_some());
        features.set_multishot_recv(driver.multishot_recv());
        features.set_multishot_accept(driver.multishot_accept());
        features.set_iowait(driver.iowait());
        features.set_batch_wait(driver.batch_wait());
        features.set_ring_registered(driver.ring_registered());
        let sched = Scheduler::new(remote.clone());
        let timers = Timers::new(id, Instant::now());
        let shared = Arc::new(Shared::new(remote.clone()));
        Ok(EventLoop {
            core: Rc::new(Core {
                id,
                driver,
                sched,
                timers,
                shared,
                features,
                close_timeout: b.close_timeout,
                closed: Cell::new(false),
                released: RefCell::new(Released::default()),
                timer_wakers: RefCell::new(Vec::new()),
                _eventfd_owner: remote,
            }),
        })
    }

    /// Runs `fut` to completion on this thread, running spawned tasks meanwhile, and returns
    /// its output.
    ///
    /// # Panics
    ///
    /// If this thread is already running a loop (called from a task or from inside another
    /// `block_on`); if `fut` panics (the panic propagates); if the ring fails in a way the loop
    /// cannot recover from (`io_uring_enter` returning an error other than a transient one).
    #[track_caller]
    pub fn block_on<F: Future>(&mut self, fut: F) -> F::Output {
        let core = &*self.core;
        assert!(!core.closed.get(), "EventLoop::block_on on a closed loop");
        let _enter = context::enter(core, true);
        let main = Arc::new(MainWaker {
            woken: AtomicBool::new(true),
            remote: core.shared.remote.clone(),
        });
        let waker = Waker::from(main.clone());
        let mut cx = Context::from_waker(&waker);
        let mut fut = pin!(fut);
        loop {
            if main.woken.load(Ordering::Acquire) && main.woken.swap(false, Ordering::AcqRel) {
                if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                    return out;
                }
            }
            if let Err(e) = core.turn(|| main.woken.load(Ordering::Acquire)) {
                panic!("ringloop: the event loop's ring failed and it cannot continue: {e}");
            }
        }
    }

    /// Runs spawned tasks until [`Handle::stop`] is called, then returns (clearing the stop
    /// request, so the loop can be run again).
    ///
    /// # Errors
    ///
    /// If nothing could ever stop the loop — no task alive, no operation in flight and no
    /// [`Handle`] held anywhere — it returns an error at once instead of hanging. Also if the
    /// ring fails in a way the loop cannot recover from.
    ///
    /// # Panics
    ///
    /// If this thread is already running a loop.
    #[track_caller]
    pub fn run_forever(&mut self) -> io::Result<()> {
        let core = &*self.core;
        assert!(
            !core.closed.get(),
            "EventLoop::run_forever on a closed loop"
        );
        let _enter = context::enter(core, true);
        loop {
            if core.shared.take_stop() {
                return Ok(());
            }
            core.sched.drain_remote();
            if core.unstoppable() {
                return Err(io::Error::new(
                    io::ErrorKind::Deadlock,
                    "EventLoop::run_forever: nothing could ever stop this loop (no task is alive, \
                     no operation is in flight and no Handle exists); keep a Handle from \
                     EventLoop::handle() to stop it, or spawn the tasks it should run first",
                ));
            }
            // Never park when nothing could wake us: the check above then reports it.
            core.turn(|| core.shared.stop_requested() || core.unstoppable())?;
        }
    }

    /// Spawns a task on this loop. It runs while the loop runs (`block_on` or `run_forever`).
    pub fn spawn<F: Future + 'static>(&self, fut: F) -> JoinHandle<F::Output> {
        self.core.sched.spawn(fut)
    }

    /// A [`Handle`] to stop this loop or spawn onto it from anywhere.
    pub fn handle(&self) -> Handle {
        Handle::new(self.core.shared.clone())
    }

    /// What the ring set-up chose and what the kernel supports.
    pub fn features(&self) -> &Features {
        &self.core.features
    }

    /// Closes the loop: drops every task, cancels every operation in flight, waits for the
    /// kernel to give back every buffer, then releases the ring. `Drop` does the same,
    /// ignoring the error.
    ///
    /// # Errors
    ///
    /// If the kernel has not finished the cancelled operations within the close timeout
    /// ([`Builder::close_timeout`]): their memory is then leaked, never freed.
    pub fn close(self) -> io::Result<()> {
        self.core.close()
    }

    /// The loop's counters: tasks, operations in the kernel, completions, timers, the
    /// receive pool. A few loads; cheap enough to read every second for a service's metrics.
    ///
    /// ```
    /// let lp = ringloop::EventLoop::new()?;
    /// let stats = lp.stats();
    /// assert_eq!(stats.tasks, 0);
    /// assert_eq!(stats.stray_completions, 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn stats(&self) -> Stats {
        Stats::of(
            &self.core.driver,
            self.core.sched.counts(),
            self.core.timers.wheel.borrow().pending(),
        )
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        let _ = self.core.close();
    }
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop")
            .field("id", &self.core.id)
            .field("features", &self.core.features)
            .finish_non_exhaustive()
    }
}

impl Core {
    /// Nothing could ever stop `run_forever`: no task, no op with a waiting future, no
    /// `Handle`, and no stop pending.
    fn unstoppable(&self) -> bool {
        self.sched.live_tasks() == 0
            && self.driver.owned_ops() == 0
            && self.shared.handles() == 0
            && !self.sched.has_ready()
            && !self.shared.stop_requested()
    }

    /// One turn: take in remote work, poll ready tasks, fire timers, then one
    /// `io_uring_enter` — blocking only if nothing is ready (the loop's timer ends the wait when
    /// a timer is due).
    fn turn(&self, extra_ready: impl Fn() -> bool) -> io::Result<()> {
        self.sched.drain_remote();
        self.driver.drain_foreign();
        self.sched.run(TASK_BUDGET);
        self.fire_timers()?;
        self.run_released();
        let idle = !self.sched.has_ready() && !extra_ready();
        if idle {
            self.driver.arm_wake()?;
            let notifier = self.shared.remote.notifier();
            if notifier.prepare_park() {
                let r = self.park(&extra_ready);
                notifier.unparked();
                r?;
            }
        } else if self.driver.needs_enter() {
            self.driver.submit()?;
        }
        self.run_released();
        Ok(())
    }

    /// Blocks until a completion arrives or the next timer is due. Completions of queued
    /// writes alone wake no task (a server's replies, one per request): their owners are told
    /// here and the loop waits again without a turn. Anything else ends the park — a task
    /// woken, a remote wake-up (it rings the doorbell read, which is not a detached op), a
    /// timer due — and the turn handles it.
    #[inline]
    fn park(&self, extra_ready: &impl Fn() -> bool) -> io::Result<()> {
        let mut again = false;
        loop {
            // The loop's kernel timer ends the wait when a timer is due (see `fire_timers`).
            // Only a batch wait is also given the next deadline (its min-wait must not pass
            // it), and every wait where that timer is not used.
            let timeout = if self.driver.waits_need_deadline() {
                self.timers
                    .wheel
                    .borrow()
                    .next_deadline()
                    .map(|d| d.saturating_duration_since(Instant::now()))
            } else {
                None
            };
            if again && timeout == Some(Duration::ZERO) {
                return Ok(()); // a timer is due: the turn fires it
            }
            self.driver.park(timeout)?;
            if !self.driver.woke_only_detached() {
                return Ok(());
            }
            self.driver.run_detached();
            if self.sched.has_ready() || extra_ready() || self.driver.has_released() {
                return Ok(());
            }
            again = true;
        }
    }

    /// Fires the timers that are due once the loop's kernel timer expired, and keeps that
    /// timer armed no later than the earliest tick the wheel needs. Neither reads the clock
    /// otherwise: a turn with timers pending and none due costs a check of the wheel's
    /// earliest new deadline, and a wait no timer of its own.
    // Always, as `Driver::drain_foreign`: one call site, once per turn (+31 instructions a
    // turn when outlined).
    #[inline(always)]
    fn fire_timers(&self) -> io::Result<()> {
        let fired = self.driver.take_timer_fired();
        let new = self.timers.earliest_new.replace(u64::MAX);
        let arm_at = if fired {
            let mut wheel = self.timers.wheel.borrow_mut();
            let mut wakers = self.timer_wakers.borrow_mut();
            if wheel.pending() > 0 {
                wheel.process(Instant::now(), &mut wakers);
            }
            // Covers the new timers too. Not needed where each wait takes the deadline.
            let next = if self.driver.waits_need_deadline() {
                None
            } else {
                wheel.next_expiry_ns()
            };
            drop(wheel);
            // Wake with no borrow of the wheel held; `wakers` is this loop's own scratch
            // vector and wakers only push onto run queues.
            for w in wakers.drain(..) {
                w.wake();
            }
            next
        } else if new != u64::MAX {
            Some(new)
        } else {
            return Ok(());
        };
        match arm_at {
            Some(ns) => self.driver.arm_timer(ns),
            None => Ok(()),
        }
    }

    /// Runs what the driver released (foreign wakers, orphans) once its borrow has ended. The
    /// check is inline and the work out of line: nearly every turn has nothing to run, and the
    /// work's stack frame would otherwise be paid on each of them.
    #[inline(always)]
    fn run_released(&self) {
        if self.driver.has_released() {
            self.run_released_slow();
        }
        // Queued writes' completions: per request in a server, so not cold.
        if self.driver.has_detached() {
            self.driver.run_detached();
        }
    }

    #[cold]
    #[inline(never)]
    fn run_released_slow(&self) {
        let mut released = self.released.take();
        self.driver.take_released(&mut released);
        released.run();
        *self.released.borrow_mut() = released;
    }

    fn close(&self) -> io::Result<()> {
        if self.closed.replace(true) {
            return Ok(());
        }
        let result = {
            let _enter = context::enter(self, false);
            // Dropping the futures orphans their ops, which queues their cancels.
            self.sched.shutdown();
            self.run_released();
            self.driver.close(self.close_timeout)
        };
        driver::unregister(self.id);
        Timers::unregister(self.id);
        result
    }
}

/// The waker of the future given to `block_on`.
struct MainWaker {
    woken: AtomicBool,
    remote: Arc<Remote>,
}

impl Wake for MainWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        // On the loop's own thread while it runs, the flag is enough: the loop checks it
        // before it parks. From anywhere else, ring the doorbell.
        if driver::current().is_none_or(|d| d.id() != self.remote.loop_id()) {
            self.remote.notifier().notify();
        }
    }
}

/// Yields to the loop once: the task goes to the back of the run queue.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// Spawns a task on the loop running on this thread.
///
/// # Panics
///
/// Outside a running loop (use [`EventLoop::spawn`] or [`Handle::spawn`] there).
#[track_caller]
pub fn spawn<F: Future + 'static>(fut: F) -> JoinHandle<F::Output> {
    crate::executor::spawn_current(fut)
}

#[cfg(test)]
mod tests;
