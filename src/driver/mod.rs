//! The ring driver: one io_uring, its op table, submission and reaping.
//!
//! Contract with the layers above:
//! - An op's `user_data` is its slot index in the op table. A slot is freed only when its
//!   **final** CQE has been reaped (for multishot ops, the CQE without `IORING_CQE_F_MORE`), so
//!   a `user_data` is never reused while the kernel still knows it.
//! - Everything the kernel may read or write for an op is owned by its [`Op`] future while the
//!   future lives, and by the slot once the future is dropped ([`slot::Lifecycle::Orphaned`]),
//!   until the final CQE. Dropping, leaking or panicking never frees that memory early. An op
//!   no future waits on ([`Driver::submit_detached`]) is owned by its [`slot::Detached`] owner,
//!   which the slot keeps alive until the final CQE.
//! - Cancel SQEs carry [`CANCEL_USER_DATA`]; their CQEs are ignored.
//! - Closes of dropped streams' descriptors carry [`CLOSE_USER_DATA`] (see `close`); the
//!   descriptor is the kernel's from the moment the SQE is queued.
//! - The loop's one timer is a TIMEOUT carrying [`TIMER_USER_DATA`] (see
//!   [`Driver::arm_timer`]), moved earlier by updates carrying [`TIMER_UPDATE_USER_DATA`];
//!   neither holds memory of ours once submitted.
//! - Wakers are never woken, and user values never dropped, while the driver is borrowed:
//!   the reaper collects them into [`Released`], which the runtime drains after the borrow ends.
//!   The one exception is a waker the runtime's `wake_inline` hooks vouch for (its own task
//!   wakers, whose wake is a push onto the run queue).
//! - A stream's waker stays in its slot after a wake, with a flag saying whether it still
//!   waits: a busy connection's every receive would otherwise clone the waker and release it
//!   again, two atomic read-modify-writes per chunk received.
//! - A full SQ is submitted and the push retried; an SQE is never dropped.
//!
//! The driver knows nothing of tasks beyond a `Waker`, and nothing of sockets.
//!
//! Here: the driver, its set-up and close, and the lifecycle of single ops ([`Op`]'s
//! submit, poll and drop). `slot` holds a slot's state machine; `ring` the SQ/CQ mechanics
//! (push, enter, reap); `stream` the multishot ops that I/O objects arm; `bufring` the
//! receive-buffer pool; `registry` the thread's current driver.

pub(crate) mod bufring;
mod close;
pub(crate) mod loop_cell;
pub(crate) mod op;
pub(crate) mod ops;
mod registry;
mod ring;
mod room;
pub(crate) mod slot;
mod stream;
mod table;

pub(crate) use op::{Op, OpCode};
pub(crate) use registry::{current, current_id, lookup, unregister, with_current, EnterGuard};
pub(crate) use stream::{ForeignDrops, StreamKeep};

use ring::{Batch, Spun};

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types, IoUring};

use crate::sys::EnterFd;

use bufring::BufPool;
use close::DeferredCloses;
use slot::{Completion, Detached, Lifecycle, Orphan};
use table::OpTable;

/// `user_data` of cancel SQEs; their CQEs are ignored. Never a slot index: the table cannot
/// hold `u64::MAX` entries.
pub(crate) const CANCEL_USER_DATA: u64 = u64::MAX;

/// `user_data` of the loop's timer (see [`Driver::arm_timer`]). Never a slot index either.
pub(crate) const TIMER_USER_DATA: u64 = u64::MAX - 1;

/// `user_data` of the updates that move the loop's timer earlier. Their CQEs matter only
/// when the kernel refuses the update (see `Inner::reap`). Never a slot index either.
pub(crate) const TIMER_UPDATE_USER_DATA: u64 = u64::MAX - 2;

/// `user_data` of the closes of dropped streams' descriptors (see `close`). Their CQEs only
/// count down the closes in flight. Never a slot index either; the lowest of the four.
pub(crate) const CLOSE_USER_DATA: u64 = u64::MAX - 3;

/// A loop's driver: cheap to clone, `!Send`.
#[derive(Clone)]
pub(crate) struct Driver(Rc<DriverCell>);

pub(crate) struct DriverCell {
    pub(crate) id: u64,
    inner: RefCell<Inner>,
    /// The receive-buffer pool; `None` where the kernel has no provided-buffer rings.
    pool: Option<BufPool>,
    /// Streams released from other threads, for the next turn.
    foreign_drops: Arc<ForeignDrops>,
    /// Size of one receive buffer (pooled or, without a pool, allocated per receive).
    recv_size: usize,
    /// Receives use multishot RECV (Linux 6.0+, and a pool).
    multishot_recv: bool,
    /// Listeners keep one multishot ACCEPT armed (Linux 5.19+).
    multishot_accept: bool,
    /// Writes of at least this many bytes use SEND_ZC (`None`: never).
    send_zc_threshold: Option<usize>,
    /// The loop's timer, readable without borrowing the driver (shared with `Inner`).
    timer: Rc<TimerState>,
    /// Descriptors of dropped streams, closed by the next enter (see `close`). Outside
    /// `inner`: a reap, with the driver borrowed, may drop the last clone of one.
    closes: DeferredCloses,
}

/// The loop's timer (see [`Driver::arm_timer`]), shared by the reaper, which ends it, and
/// the turn, which checks it on every pass without borrowing the driver.
pub(crate) struct TimerState {
    /// It expired (its CQE was reaped) and the turn has not yet looked.
    fired: Cell<bool>,
    /// Its deadline (`CLOCK_MONOTONIC` ns) while it is in the kernel; `NOT_ARMED` otherwise.
    armed: Cell<u64>,
    /// Not used: each wait is given the next deadline instead, and the turn looks at the
    /// wheel every time. So with batch waits (whose min-wait must be bounded by that deadline
    /// anyway), with `Builder::kernel_timer(false)`, and once the kernel refused the timer or
    /// an update of it (a CQE with an error that does not mean "already ended").
    per_wait: Cell<bool>,
    /// Tests: make the kernel refuse every update (an invalid deadline).
    #[cfg(test)]
    refuse_updates: Cell<bool>,
}

const NOT_ARMED: u64 = u64::MAX;

/// How the receive-buffer pool is set up.
pub(crate) struct PoolConfig {
    /// False: do not register a pool (the older kernels' path).
    pub(crate) enabled: bool,
    /// Use multishot receives where the kernel has them.
    pub(crate) multishot: bool,
    /// Use multishot accepts where the kernel has them.
    pub(crate) multishot_accept: bool,
    /// Use SEND_ZC for writes of at least this many bytes, where the kernel has it.
    pub(crate) send_zc_threshold: Option<usize>,
    /// False: ask the kernel not to count waits as iowait, where it can (6.15+).
    pub(crate) iowait: bool,
    /// Bound of a batch wait (`Builder::batch_wait`), where the kernel has min-wait (6.12+).
    pub(crate) batch_wait: Option<Duration>,
    /// How long a wait spins before it sleeps (`Builder::spin_before_sleep`).
    pub(crate) spin: Option<Duration>,
    /// Try queued sends at submit where the kernel allows (see `Driver::trial_sends`).
    pub(crate) trial_sends: bool,
    /// Serve timers with one kernel timeout (see `Driver::arm_timer`); false: give every
    /// wait the next deadline.
    pub(crate) kernel_timer: bool,
    pub(crate) count: u16,
    pub(crate) size: usize,
    /// Wakes the loop from another thread (a buffer dropped there was queued for return).
    pub(crate) wake_loop: Arc<dyn Fn() + Send + Sync>,
    /// Called for each waker a CQE releases: it may wake the waker on the spot if doing so
    /// cannot reach the driver or run user code (the executor's own task wakers, which only
    /// push onto the run queue), or hand it back to be woken after the driver's borrow ends.
    pub(crate) wake_inline: fn(Waker) -> Result<(), Waker>,
    /// `wake_inline` for a waker that stays registered (a stream's): true if it was woken on
    /// the spot; false if a clone of it is to be woken after the borrow.
    pub(crate) wake_inline_ref: fn(&Waker) -> bool,
}

struct Inner {
    /// `None` once closed.
    ring: Option<IoUring>,
    /// What `io_uring_enter` is called with: the ring registered with this thread, if the
    /// kernel allows.
    enter_fd: EnterFd,
    ops: OpTable,
    /// Emptied stream states kept for the next `arm_stream` (see `Driver::recycle_stream`).
    /// Boxed, as in a slot: reusing the box is the point.
    #[allow(clippy::vec_box)]
    spare_streams: Vec<Box<slot::Stream>>,
    released: Released,
    /// Detached ops' CQEs, for their owners once the borrow ends. Their slots are freed.
    detached: Vec<(Arc<dyn Detached>, Completion)>,
    /// The doorbell read: its descriptor and whether a read of it is in the kernel.
    wake_fd: RawFd,
    wake_armed: bool,
    wake_buf: Option<Box<u64>>,
    /// Ops whose future is alive and waiting (what can still wake a task).
    owned: usize,
    /// CQEs whose `user_data` matched no slot; counted, never fatal.
    stray_cqes: u64,
    /// Waits pass `IORING_ENTER_NO_IOWAIT`.
    no_iowait: bool,
    /// Batch waits, if asked for and the kernel can bound them.
    batch: Option<Batch>,
    /// How long a wait spins before it sleeps (see `Inner::spin`).
    spin: Option<Duration>,
    /// CQEs reaped so far (wrapping): how many a wait brought in.
    reaped: u32,
    /// The receive-buffer pool, told after each reap how many buffers the kernel took from
    /// its ring (see `BufPool::after_reap`). The same pool as `DriverCell::pool`.
    pool: Option<BufPool>,
    /// CQEs other than detached ops' reaped since the last `park` began (see
    /// `Driver::woke_only_detached`).
    others_since_park: u32,
    /// Streams that reached their cap in a reap, cancelled once it released the completion
    /// queue (see `Inner::reap`).
    throttled: Vec<usize>,
    /// Blocking waits that brought in no completion (see `Driver::empty_waits`).
    empty_waits: u64,
    /// `close` has begun: no detached op is accepted any more.
    closing: bool,
    /// Tried sends in the SQ (see [`Driver::submit_detached_tried`]): the kernel posts each
    /// one's CQE while it submits it, so the next wait asks for that many more.
    trials: u32,
    /// Tried sends in the SQ, counted or not: their CQEs come from the loop's own
    /// submissions, not from the peer, so a batch wait's pace leaves them out.
    tries_queued: u32,
    /// Tried sends the last `enter` submitted (see `tries_queued`).
    tries_entered: u32,
    /// Closes in the SQ (see `close`): like tries, each posts its CQE while it is submitted.
    closes_queued: u32,
    /// Closes submitted or queued whose CQE is not reaped yet; `close` waits for them.
    closes_in_flight: u32,
    /// Descriptors the ring has closed (see `close`).
    ring_closes: u64,
    /// Wakes the loop when a watched socket has room again; a wait counts tries only while
    /// it is armed (see [`Driver::submit_detached_tried`]).
    room: Option<Arc<room::RoomWatch>>,
    /// The loop's timer: the same as `DriverCell::timer`.
    timer: Rc<TimerState>,
    /// What the timer's SQEs point at. The kernel copies it when it prepares them, in the
    /// `io_uring_enter` that submits them; it lives as long as the ring, in this cell.
    timer_ts: types::Timespec,
    /// Wakes a waker while the driver is borrowed if that is known to be harmless, else hands
    /// it back to be woken after the borrow (see [`PoolConfig::wake_inline`]).
    wake_inline: fn(Waker) -> Result<(), Waker>,
    /// The same for a waker left in place (see [`PoolConfig::wake_inline_ref`]).
    wake_inline_ref: fn(&Waker) -> bool,
}

/// Wake-ups and orphans collected while the driver was borrowed.
#[derive(Default)]
pub(crate) struct Released {
    pub(crate) wakers: Vec<Waker>,
    pub(crate) orphans: Vec<(Box<dyn Orphan>, Completion)>,
}

impl Released {
    pub(crate) fn is_empty(&self) -> bool {
        self.wakers.is_empty() && self.orphans.is_empty()
    }

    /// Wakes and drops everything. Call with no borrow of the driver held.
    pub(crate) fn run(&mut self) {
        if !self.wakers.is_empty() {
            for w in self.wakers.drain(..) {
                w.wake();
            }
        }
        if !self.orphans.is_empty() {
            for (mut o, c) in self.orphans.drain(..) {
                o.release(c);
                drop(o);
            }
        }
    }
}

/// The error an op gets when its loop was already closed.
pub(crate) fn closed_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the event loop this operation belongs to was closed",
    )
}

impl Driver {
    /// A driver for `ring`. The buffer pool is registered if the kernel supports it (5.19+);
    /// where it does not (`EINVAL`), receives fall back to buffers allocated per receive.
    pub(crate) fn new(
        id: u64,
        ring: IoUring,
        wake_fd: RawFd,
        pool: PoolConfig,
    ) -> io::Result<Driver> {
        let cap = ring.params().cq_entries() as usize;
        let recv_size = pool.size;
        let send_zc_threshold = pool.send_zc_threshold;
        let kernel = crate::sys::parse_kernel_version(&crate::sys::kernel_release());
        // Shared by the pool (buffers returned from other threads) and `ForeignDrops`.
        let wake_loop = pool.wake_loop;
        let wake_inline = pool.wake_inline;
        let wake_inline_ref = pool.wake_inline_ref;
        let kernel_timer = pool.kernel_timer;
        let spin = pool.spin;
        let no_iowait = !pool.iowait && ring.params().is_feature_no_iowait();
        // The room watcher needs multishot poll (5.13+); 6.1 (DEFER_TASKRUN's) is the oldest
        // kernel the tries are reasoned about on, rather than older completion paths.
        let room = (pool.trial_sends && kernel.is_some_and(|v| v >= (6, 1)))
            .then(room::RoomWatch::new)
            .flatten();
        let batch = pool
            .batch_wait
            .filter(|_| ring.params().is_feature_min_timeout())
            .map(|d| Batch::new(u32::try_from(d.as_micros()).unwrap_or(u32::MAX).max(1)));
        let multishot = pool.multishot && kernel.is_some_and(|v| v >= (6, 0));
        let multishot_accept = pool.multishot_accept && kernel.is_some_and(|v| v >= (5, 19));
        let registered = if pool.enabled {
            BufPool::new(&ring, pool.count, pool.size, wake_loop.clone()).map(Some)
        } else {
            Ok(None)
        };
        let pool = match registered {
            Ok(p) => p,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => None,
            Err(e) => {
                let why = if e.raw_os_error() == Some(libc::ENOMEM) {
                    crate::sys::memlock_advice()
                } else {
                    "Builder::recv_buffers sets its size".to_owned()
                };
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "registering the receive-buffer ring ({} x {} bytes) failed: {e}; {why}",
                        pool.count, recv_size
                    ),
                ));
            }
        };
        let multishot_recv = multishot && pool.is_some();
        let reaper_pool = pool.clone();
        let send_zc_threshold = send_zc_threshold.filter(|_| kernel.is_some_and(|v| v >= (6, 0)));
        let timer = Rc::new(TimerState {
            fired: Cell::new(false),
            armed: Cell::new(NOT_ARMED),
            per_wait: Cell::new(!kernel_timer || batch.is_some()),
            #[cfg(test)]
            refuse_updates: Cell::new(false),
        });
        let d = Driver(Rc::new(DriverCell {
            id,
            timer: timer.clone(),
            pool,
            foreign_drops: Arc::new(ForeignDrops::new(wake_loop)),
            recv_size,
            multishot_recv,
            multishot_accept,
            send_zc_threshold,
            closes: DeferredCloses::new(),
            inner: RefCell::new(Inner {
                enter_fd: EnterFd::register(ring.as_raw_fd()),
                ring: Some(ring),
                ops: OpTable::with_capacity(cap),
                spare_streams: Vec::new(),
                released: Released::default(),
                detached: Vec::new(),
                wake_fd,
                wake_armed: false,
                wake_buf: Some(Box::new(0)),
                owned: 0,
                stray_cqes: 0,
                no_iowait,
                batch,
                spin,
                reaped: 0,
                pool: reaper_pool,
                others_since_park: 0,
                throttled: Vec::new(),
                empty_waits: 0,
                closing: false,
                trials: 0,
                tries_queued: 0,
                tries_entered: 0,
                closes_queued: 0,
                closes_in_flight: 0,
                ring_closes: 0,
                room,
                timer,
                timer_ts: types::Timespec::new(),
                wake_inline,
                wake_inline_ref,
            }),
        }));
        registry::register(&d);
        Ok(d)
    }

    /// The receive-buffer pool, if the kernel supports provided-buffer rings.
    pub(crate) fn pool(&self) -> Option<&BufPool> {
        self.0.pool.as_ref()
    }

    /// Writes of at least this many bytes use SEND_ZC (`None`: never).
    pub(crate) fn send_zc_threshold(&self) -> Option<usize> {
        self.0.send_zc_threshold
    }

    /// Whether listeners keep a multishot ACCEPT armed.
    pub(crate) fn multishot_accept(&self) -> bool {
        self.0.multishot_accept
    }

    /// Whether waits count as iowait (see `Builder::iowait`).
    pub(crate) fn iowait(&self) -> bool {
        !self.0.inner.borrow().no_iowait
    }

    /// Whether receives use multishot RECV.
    pub(crate) fn multishot_recv(&self) -> bool {
        self.0.multishot_recv
    }

    /// Size of one receive buffer.
    pub(crate) fn recv_size(&self) -> usize {
        self.0.recv_size
    }

    /// Takes in what other threads handed back: receive buffers dropped there, and streams
    /// whose owner (a socket or listener) was dropped there.
    // Always: called once per turn from one place (`Core::turn`), where its fast path is two
    // loads; left to the inliner it was outlined once `park` grew (+27 instructions a turn).
    #[inline(always)]
    pub(crate) fn drain_foreign(&self) {
        if let Some(p) = &self.0.pool {
            p.drain_foreign();
        }
        if let Some(keys) = self.0.foreign_drops.take() {
            for key in keys {
                self.drop_stream(key);
            }
        }
    }

    /// Where an object that armed a stream on this loop posts the stream's key if it is
    /// dropped on another thread, which cannot reach the loop's op table.
    pub(crate) fn foreign_drops(&self) -> Arc<ForeignDrops> {
        self.0.foreign_drops.clone()
    }

    pub(crate) fn id(&self) -> u64 {
        self.0.id
    }

    /// Makes this driver the thread's current one until the guard drops.
    pub(crate) fn enter(&self) -> EnterGuard {
        registry::enter(&self.0)
    }

    /// Ops whose future is alive: what could still wake a task.
    pub(crate) fn owned_ops(&self) -> usize {
        self.0.inner.borrow().owned
    }

    /// Slots the kernel still owes a final CQE, internal ones included.
    pub(crate) fn awaiting_kernel(&self) -> usize {
        self.0.inner.borrow().awaiting_kernel_count()
    }

    /// Descriptors closed by the ring rather than with `close(2)` (see `close`).
    pub(crate) fn ring_closes(&self) -> u64 {
        self.0.inner.borrow().ring_closes
    }

    pub(crate) fn stray_cqes(&self) -> u64 {
        self.0.inner.borrow().stray_cqes
    }

    /// Moves what the last reap released into `out`, to be run after the borrow ends.
    pub(crate) fn take_released(&self, out: &mut Released) {
        let mut inner = self.0.inner.borrow_mut();
        if !inner.released.is_empty() {
            std::mem::swap(&mut inner.released, out);
        }
    }

    #[inline]
    pub(crate) fn has_released(&self) -> bool {
        !self.0.inner.borrow().released.is_empty()
    }

    /// Whether SQEs wait to be submitted, or completions may wait to be reaped: those of
    /// ops a future waits for, and the loop's timer's (without an enter a busy loop would
    /// never see it expire).
    pub(crate) fn needs_enter(&self) -> bool {
        let timer = self.0.timer.armed.get() != NOT_ARMED;
        let mut inner = self.0.inner.borrow_mut();
        let owned = inner.owned;
        match inner.ring.as_mut() {
            Some(ring) => {
                !ring.submission().is_empty() || owned > 0 || timer || !self.0.closes.is_empty()
            }
            None => false,
        }
    }

    /// Arms the doorbell read if it is not in the kernel already.
    #[inline]
    pub(crate) fn arm_wake(&self) -> io::Result<()> {
        let mut inner = self.0.inner.borrow_mut();
        if inner.wake_armed {
            return Ok(());
        }
        inner.arm_wake()
    }

    /// Makes the loop's timer expire no later than `deadline_ns` (`CLOCK_MONOTONIC`): armed
    /// if it is not in the kernel, moved earlier (`IORING_TIMEOUT_UPDATE`) if it is and is
    /// due later, left alone if it is due no later. It is never moved later: one that fires
    /// early for nothing costs a turn, one moved later could sleep through a deadline. Its
    /// expiry is an absolute `CLOCK_MONOTONIC` time, so it never drifts; see
    /// [`Driver::take_timer_fired`].
    #[inline]
    pub(crate) fn arm_timer(&self, deadline_ns: u64) -> io::Result<()> {
        let armed = self.0.timer.armed.get();
        if armed <= deadline_ns || self.0.timer.per_wait.get() {
            return Ok(()); // the common case: a later timeout than the one in the kernel
        }
        self.arm_timer_at(deadline_ns, armed != NOT_ARMED)
    }

    #[inline(never)]
    fn arm_timer_at(&self, deadline_ns: u64, update: bool) -> io::Result<()> {
        let mut inner = self.0.inner.borrow_mut();
        if inner.ring.is_none() || inner.closing {
            return Ok(());
        }
        inner.timer_ts = types::Timespec::new()
            .sec(deadline_ns / 1_000_000_000)
            .nsec((deadline_ns % 1_000_000_000) as u32);
        #[cfg(test)]
        if update && self.0.timer.refuse_updates.get() {
            // A negative `tv_sec`, which `io_timeout_remove_prep` answers with `EINVAL`.
            inner.timer_ts = types::Timespec::new().sec(u64::MAX);
        }
        // The SQEs point at `timer_ts`, which the kernel copies while it submits them (see
        // the field). Two in the SQ at once read the same, latest value: the earliest.
        let ts: *const types::Timespec = &inner.timer_ts;
        let sqe = if update {
            // Its CQE says whether the timer was still there (`ENOENT` if it has just expired,
            // whose own CQE then follows), or that the kernel refused the update.
            opcode::TimeoutUpdate::new(TIMER_USER_DATA, ts)
                .flags(types::TimeoutFlags::ABS)
                .build()
                .user_data(TIMER_UPDATE_USER_DATA)
        } else {
            opcode::Timeout::new(ts)
                .flags(types::TimeoutFlags::ABS)
                .build()
                .user_data(TIMER_USER_DATA)
        };
        inner.push(sqe)?;
        self.0.timer.armed.set(deadline_ns);
        Ok(())
    }

    /// Whether the loop's timer expired since the last call (its CQE was reaped): then the
    /// timer wheel has work, and the timer is no longer in the kernel. Always true once the
    /// timer is not used (see `TimerState::per_wait`).
    #[inline]
    pub(crate) fn take_timer_fired(&self) -> bool {
        // Without the timer the wheel is looked at on every turn, as each wait takes the
        // next deadline.
        self.0.timer.fired.replace(false) || self.0.timer.per_wait.get()
    }

    /// Tests: from now on the kernel refuses every update of the loop's timer.
    #[cfg(test)]
    pub(crate) fn refuse_timer_updates(&self) {
        self.0.timer.refuse_updates.set(true);
    }

    /// Whether each wait must be given the next timer's deadline: where the loop's timer is
    /// not used (see `TimerState::per_wait`).
    #[inline]
    pub(crate) fn waits_need_deadline(&self) -> bool {
        self.0.timer.per_wait.get()
    }

    /// Submits what is queued and reaps what completed, without blocking.
    pub(crate) fn submit(&self) -> io::Result<()> {
        let mut inner = self.0.inner.borrow_mut();
        self.queue_closes(&mut inner);
        inner.enter(0, None, 0)
    }

    /// Closes `fd` with the ring's next enter rather than with `close(2)` now (see `close`);
    /// at once if the driver is closing. For descriptors that have no `flush` (sockets),
    /// whose last user is gone: no op of ours may name it any more.
    pub(crate) fn defer_close(&self, fd: std::os::fd::OwnedFd) {
        self.0.closes.push(fd);
    }

    /// Submits the deferred closes now, if any: the loop stops running, and nothing says when
    /// it will enter the kernel again. A failure leaves them to the driver's close.
    pub(crate) fn flush_closes(&self) {
        if self.0.closes.is_empty() {
            return;
        }
        // Not borrowed when a loop stops being current; if it were, the next enter or the
        // driver's close would take them.
        if let Ok(mut inner) = self.0.inner.try_borrow_mut() {
            self.queue_closes(&mut inner);
            // An enter that fails (a signal, a transient error) leaves the closes in the SQ:
            // the next enter, or the driver's close, submits them, so nothing is lost by
            // ignoring the error here.
            let _ = inner.enter(0, None, 0);
        }
    }

    /// Puts the deferred closes into the SQ, for the enter that follows.
    #[inline]
    fn queue_closes(&self, inner: &mut Inner) {
        if !self.0.closes.is_empty() {
            self.queue_closes_slow(inner);
        }
    }

    #[cold]
    #[inline(never)]
    fn queue_closes_slow(&self, inner: &mut Inner) {
        use std::os::fd::{AsRawFd, IntoRawFd};
        let mut batch = self.0.closes.take();
        for fd in batch.drain(..) {
            let sqe = opcode::Close::new(types::Fd(fd.as_raw_fd()))
                .build()
                .user_data(CLOSE_USER_DATA);
            // Counted before the push: a full SQ submits (and may reap) inside it.
            inner.closes_in_flight += 1;
            inner.closes_queued += 1;
            if inner.push(sqe).is_ok() {
                // The kernel closes it now; the number stays taken until it does.
                let _ = fd.into_raw_fd();
            } else {
                // No ring: `fd` drops here, with `close(2)`.
                inner.closes_in_flight -= 1;
                inner.closes_queued = inner.closes_queued.saturating_sub(1);
            }
        }
        self.0.closes.recycle(batch);
    }

    /// Submits, then blocks until a completion arrives or `timeout` passes. With batching on
    /// (`Builder::batch_wait`), it first waits a bounded time for a batch (see `Batch`).
    // Always: one call site, once per turn (the turn's park); the plain wait is inlined there
    // and the batch wait kept out of line (`Inner::park_batch`). Outlined whole: 12
    // instructions a turn.
    #[inline(always)]
    pub(crate) fn park(&self, timeout: Option<Duration>) -> io::Result<()> {
        let mut inner = self.0.inner.borrow_mut();
        self.queue_closes(&mut inner);
        let before = inner.reaped;
        // Close CQEs are not what a wait waits for (it asks for them on top, see
        // `Inner::enter`): they count neither towards a batch nor against an empty wait.
        let closes_before = inner.closes_in_flight;
        inner.others_since_park = 0;
        if inner.timer.fired.get() {
            // Reaped since the turn looked (by a submit that made room in the SQ, say):
            // timers are due, and waiting could sleep past them.
            inner.others_since_park = 1;
            return Ok(());
        }
        if let Some(batch) = inner.batch {
            return inner.park_batch(batch, timeout, before, closes_before);
        }
        let mut timeout = timeout;
        if let Some(spin) = inner.spin {
            match inner.spin_first(spin, timeout)? {
                Spun::Arrived => return Ok(()),
                Spun::TimedOut => {
                    inner.empty_waits += 1;
                    return Ok(());
                }
                Spun::Sleep(rest) => timeout = rest,
            }
        }
        let r = inner.enter(1, timeout, 0);
        if inner.reaped_besides_closes(before, closes_before) == 0 {
            inner.empty_waits += 1;
        }
        r
    }

    /// Whether the last [`park`](Driver::park) brought in detached ops' CQEs and nothing else
    /// (the wake-up read still armed, nothing released): no task waits for what happened, so
    /// once their owners are told the loop may wait again without a turn.
    #[inline]
    pub(crate) fn woke_only_detached(&self) -> bool {
        let inner = self.0.inner.borrow();
        inner.others_since_park == 0
            && !inner.detached.is_empty()
            && inner.wake_armed
            && inner.released.is_empty()
    }

    /// Whether `io_uring_enter` is given this thread's registered index of the ring.
    pub(crate) fn ring_registered(&self) -> bool {
        self.0.inner.borrow().enter_fd.is_registered()
    }

    /// CQEs reaped so far, wrapping at 2^32.
    pub(crate) fn reaped(&self) -> u32 {
        self.0.inner.borrow().reaped
    }

    /// Blocking waits that brought in no completion: ended by a timer's deadline or a
    /// signal, never by the wait itself.
    pub(crate) fn empty_waits(&self) -> u64 {
        self.0.inner.borrow().empty_waits
    }

    /// The batch wait in effect (`None`: off, or the kernel cannot bound it).
    pub(crate) fn batch_wait(&self) -> Option<Duration> {
        self.0
            .inner
            .borrow()
            .batch
            .map(|b| Duration::from_micros(b.wait_us.into()))
    }

    /// How many completions a batch wait currently asks for (`None`: batching is off).
    pub(crate) fn batch_target(&self) -> Option<u32> {
        self.0.inner.borrow().batch.map(|b| b.target)
    }

    /// Cancels every op still in the kernel, reaps until none is left or `timeout` passes,
    /// then releases the ring. Past the timeout, memory the kernel may still write is leaked,
    /// never freed, and the error says how many ops were abandoned.
    pub(crate) fn close(&self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        self.0.inner.borrow_mut().closing = true;
        // Deferred closes not yet queued are made with `close(2)`, now and from here on.
        self.0.closes.shut();
        let result = loop {
            let mut inner = self.0.inner.borrow_mut();
            if inner.ring.is_none() {
                break Ok(());
            }
            let pending = inner.awaiting_kernel_keys();
            // Closes in the SQ or in flight are waited for too: unsubmitted, they would leak
            // their descriptors.
            if pending.is_empty() && inner.closes_in_flight == 0 {
                break Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                break Err(inner.abandon(pending.len(), timeout));
            }
            for key in pending {
                // A cancel that cannot be queued is retried on the next round.
                if inner.push_cancel(key).is_err() {
                    break;
                }
            }
            let wait = (deadline - now).min(Duration::from_millis(100));
            let r = inner.enter(1, Some(wait), 0);
            drop(inner);
            self.run_released();
            if let Err(e) = r {
                let mut inner = self.0.inner.borrow_mut();
                let n = inner.awaiting_kernel_count();
                if n == 0 {
                    break Ok(());
                }
                let abandoned = inner.abandon(n, timeout);
                break Err(io::Error::new(
                    e.kind(),
                    format!("{abandoned} (io_uring_enter failed: {e})"),
                ));
            }
        };
        self.run_released();
        let ring = {
            let mut inner = self.0.inner.borrow_mut();
            let ring = inner.ring.take();
            if let Some(r) = &ring {
                // On the loop's thread, which registered it (the driver never leaves it).
                inner.enter_fd.unregister(r.as_raw_fd());
            }
            ring
        };
        if let (Some(ring), Some(pool)) = (&ring, &self.0.pool) {
            if result.is_ok() {
                // Every op has completed: no recv can pick a buffer any more.
                pool.unregister(ring);
            } else {
                // Abandoned receives may still pick a pool buffer and write it: leak the pool
                // (one reference, never released) rather than free that memory.
                std::mem::forget(pool.clone());
            }
        }
        // Dropping the ring closes its descriptor and unmaps the queues.
        drop(ring);
        result
    }

    fn run_released(&self) {
        let mut released = Released::default();
        self.take_released(&mut released);
        released.run();
        self.run_detached();
    }

    /// Whether detached ops' owners have CQEs to be told of (see [`run_detached`]).
    ///
    /// [`run_detached`]: Driver::run_detached
    #[inline]
    pub(crate) fn has_detached(&self) -> bool {
        !self.0.inner.borrow().detached.is_empty()
    }

    /// Tells detached ops' owners of their reaped CQEs (see [`Detached`]); what they submit
    /// meanwhile and completes at once is told too. Call with no borrow of the driver held.
    /// Newest first: the order between owners does not matter, and an owner (a write queue)
    /// has one op in flight at a time.
    // Always: once or twice a turn in a server, whose replies are detached ops (outlined: 4
    // instructions a request at one connection).
    #[inline(always)]
    pub(crate) fn run_detached(&self) {
        loop {
            let next = self.0.inner.borrow_mut().detached.pop();
            let Some((owner, c)) = next else {
                return;
            };
            owner.complete(self, c);
        }
    }

    /// Queues `sqe` for an op no future waits on: `owner` keeps everything the kernel may
    /// touch for it and is told of each CQE (see [`Detached`]). Returns the op's key. Refused
    /// once the loop is closing, so an owner's follow-up ops cannot keep a close going.
    #[inline]
    pub(crate) fn submit_detached(
        &self,
        sqe: squeue::Entry,
        owner: Arc<dyn Detached>,
    ) -> io::Result<usize> {
        self.submit_detached_tried(sqe, owner, false)
    }

    /// [`submit_detached`](Self::submit_detached); with `tried`, for a send *tried at
    /// submit*: one with `MSG_DONTWAIT`, which the kernel never parks on the socket. It ends
    /// while the enter that submits it runs (sent, short, or `EAGAIN`), and its CQE is posted
    /// before that enter waits, so a wait that submits `k` of them asks for `k` more
    /// completions (see `Inner::enter`): a server's replies settle in the same call that then
    /// sleeps until the next request, one `io_uring_enter` per batch instead of two.
    ///
    /// A try that comes back short is resumed by its owner once the wait ends, which the
    /// room watcher (see `room`) brings about when the socket has room again: only for a
    /// descriptor given to [`watch_writable`](Self::watch_writable). While the watcher is not
    /// armed, waits count no tries.
    ///
    /// Inlined into each caller: a write queue's every reply goes through it.
    #[inline(always)]
    pub(crate) fn submit_detached_tried(
        &self,
        sqe: squeue::Entry,
        owner: Arc<dyn Detached>,
        tried: bool,
    ) -> io::Result<usize> {
        let mut inner = self.0.inner.borrow_mut();
        if inner.ring.is_none() || inner.closing {
            return Err(closed_error());
        }
        let key = inner.ops.insert(Lifecycle::Detached(owner));
        if let Err(e) = inner.push(sqe.user_data(key as u64)) {
            // Never reached the SQ: the kernel knows nothing of it. The slot's reference goes
            // once the borrow has ended, in case it was the owner's last (its drop is the
            // user's buffers').
            let gone = inner.ops.remove(key);
            drop(inner);
            drop(gone);
            return Err(e);
        }
        if tried {
            inner.trials += 1;
            inner.tries_queued += 1;
        }
        Ok(key)
    }

    /// Has the room watcher (see `room`) wake the loop when `fd` becomes writable after a
    /// send found its buffer full, arming the watcher if need be; false if it cannot (then
    /// `fd`'s sends must not be tried). Should the watcher end later (at close, or ended by
    /// the kernel), waits stop letting tries settle unseen until it is armed again.
    pub(crate) fn watch_writable(&self, fd: RawFd) -> bool {
        // Taken out of the borrow: arming the watcher submits an op.
        let room = self.0.inner.borrow().room.clone();
        room.is_some_and(|r| r.watch(self, fd))
    }

    /// A task now waits for a try's completion: the next wait must end at it, not count it
    /// among the tries that settle unseen. The count may already be 0 (the try went in an
    /// enter since) or belong to other tries: counting one too few only costs a wake-up,
    /// counting one too many could sleep through the completion that task waits for.
    #[inline]
    pub(crate) fn uncount_trial(&self) {
        let mut inner = self.0.inner.borrow_mut();
        inner.trials = inner.trials.saturating_sub(1);
    }

    /// Queues `sqe` (already carrying its `user_data`) for `data`'s op; returns its key.
    #[inline]
    fn submit_op(&self, sqe: squeue::Entry, waker: &Waker) -> io::Result<usize> {
        let mut inner = self.0.inner.borrow_mut();
        if inner.ring.is_none() {
            return Err(closed_error());
        }
        let key = inner.ops.insert(Lifecycle::Submitted {
            waker: Some(waker.clone()),
        });
        inner.owned += 1;
        if let Err(e) = inner.push(sqe.user_data(key as u64)) {
            inner.ops.remove(key);
            inner.owned -= 1;
            return Err(e);
        }
        Ok(key)
    }

    /// Takes the final completion of `key`, or registers `waker`.
    #[inline]
    fn poll_op(&self, key: usize, cx: &mut Context<'_>) -> Poll<Completion> {
        let mut inner = self.0.inner.borrow_mut();
        let Some(slot) = inner.ops.get_mut(key) else {
            // Only reachable if the table was cleared at close: the op was abandoned.
            return Poll::Pending;
        };
        match slot {
            Lifecycle::Completed(c) => {
                let c = *c;
                // A completed slot holds only the `Copy` completion: nothing to drop.
                std::mem::forget(inner.ops.remove(key));
                Poll::Ready(c)
            }
            Lifecycle::Submitted { waker } => {
                match waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            // An op with a result CQE then more (SEND_ZC: the notification that the buffer is
            // free): it resolves with the first CQE once the final one has arrived.
            Lifecycle::Streaming(st) if st.finished => {
                let first = st.queue.front();
                let freed = inner.ops.remove(key);
                drop(inner);
                drop(freed);
                match first {
                    Some(c) => Poll::Ready(c),
                    None => Poll::Pending,
                }
            }
            Lifecycle::Streaming(st) => {
                // Unlike a stream's, an op's future has one poller: a waker it replaces is
                // of a task the future has left, which has nothing to re-poll. Dropped, not
                // woken, once the borrow has ended.
                let old = st.wait(cx.waker());
                drop(inner);
                drop(old);
                Poll::Pending
            }
            // Abandoned at close; the kernel may still write this op's memory, so the future
            // must never complete and hand it back.
            _ => Poll::Pending,
        }
    }

    /// Called when an op's future is dropped while its slot is live. Returns `Ok(c)` with the
    /// final completion if it had arrived (the slot is then freed and the caller owns the data
    /// again), or `Err(orphan)`-style by taking `make_orphan` into the slot and cancelling.
    fn drop_op(&self, key: usize, orphan: impl FnOnce() -> Box<dyn Orphan>) -> DropOutcome {
        let mut inner = self.0.inner.borrow_mut();
        match inner.ops.get(key) {
            Some(Lifecycle::Completed(c)) => {
                let c = *c;
                inner.ops.remove(key);
                DropOutcome::Completed(c)
            }
            Some(Lifecycle::Streaming(st)) if st.finished => {
                // Every CQE is in: nothing to cancel, the caller owns the data again. The
                // slot's state (its waker, what it kept) is dropped once the borrow ends.
                let first = st.queue.front();
                let freed = inner.ops.remove(key);
                drop(inner);
                drop(freed);
                match first {
                    Some(c) => DropOutcome::Completed(c),
                    None => DropOutcome::Completed(Completion { res: 0, flags: 0 }),
                }
            }
            Some(Lifecycle::Submitted { .. }) | Some(Lifecycle::Streaming(_)) => {
                let was_owned = inner.ops[key].has_owner();
                let waker = match std::mem::replace(&mut inner.ops[key], Lifecycle::Abandoned) {
                    Lifecycle::Submitted { waker } => waker,
                    Lifecycle::Streaming(st) => st.waker,
                    _ => None,
                };
                inner.ops[key] = Lifecycle::Orphaned(orphan());
                if was_owned {
                    inner.owned -= 1;
                }
                // The cancel is queued like any SQE: if the SQ is full it is submitted and
                // retried. If even that fails the op still completes by itself; the slot
                // keeps the data until it does.
                let _ = inner.push_cancel(key);
                drop(inner);
                drop(waker);
                DropOutcome::Orphaned
            }
            // Abandoned at close, or already gone: the data must be leaked.
            _ => DropOutcome::Leak,
        }
    }
}

/// What became of an op whose future was dropped (see `Driver::drop_op`).
pub(crate) enum DropOutcome {
    Completed(Completion),
    Orphaned,
    Leak,
}
