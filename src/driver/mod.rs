//! The ring driver: one io_uring, its op table, submission and reaping.
//!
//! Contract with the layers above:
//! - An op's `user_data` is its slot index in the op table. A slot is freed only when its
//!   **final** CQE has been reaped (for multishot ops, the CQE without `IORING_CQE_F_MORE`), so
//!   a `user_data` is never reused while the kernel still knows it.
//! - Everything the kernel may read or write for an op is owned by its [`Op`] future while the
//!   future lives, and by the slot once the future is dropped ([`slot::Lifecycle::Orphaned`]),
//!   until the final CQE. Dropping, leaking or panicking never frees that memory early. An op
//!   no future waits on ([`Driver::submit_detached`]) is owned by its [`completion::Detached`] owner,
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
//! Here: the driver and its set-up. Beside it, one concept a file:
//! - `config`: what it is set up with;
//! - `op`: `Op<T>` and a single op's lifecycle (submit, poll, drop); `slot`: a slot's state
//!   machine, kept in the op table (`util::table`); `completion`: a CQE as handed on, and the owners it is
//!   handed to (`Orphan`, `Detached`); `held`: an op's data kept opaque to the aliasing
//!   rules while the kernel holds pointers into it;
//! - `ring`: the SQ/CQ mechanics (push, enter); `reap`: each CQE applied to its slot;
//!   `released`: the wake-ups and drops a reap leaves for after the borrow;
//!   `wait`: how an idle loop waits (`park`, spinning); `batch`: batch waits; `timer`: the
//!   loop's one kernel timer;
//! - `multishot`: the multishot ops that I/O objects arm, and `stream_keep`, what they keep
//!   for the kernel; `detached`: ops owned by no future,
//!   and sends tried at submit; `writable`: the writability watch that resumes them;
//!   `quiet`: tries whose success posts no CQE;
//! - `close`: descriptors closed by the ring; `shutdown`: the driver's own close;
//! - `counters`: what the driver counts, for `Stats`;
//! - `bufring`: the receive-buffer pool; `thread_drivers`: the thread's drivers and its
//!   current one;
//!   `loop_cell`: state touched only on its loop's thread.

mod batch;
pub(crate) mod bufring;
mod close;
pub(crate) mod completion;
mod config;
mod counters;
mod detached;
mod held;
pub(crate) mod loop_cell;
mod multishot;
pub(crate) mod op;
pub(crate) mod ops;
mod quiet;
mod reap;
mod released;
mod ring;
mod shutdown;
pub(crate) mod slot;
mod stream_keep;
mod thread_drivers;
mod timer;
mod wait;
mod writable;

pub(crate) use config::{DriverConfig, RuntimeHooks};
pub(crate) use multishot::ForeignDrops;
pub(crate) use op::{Op, OpCode};
pub(crate) use released::Released;
pub(crate) use stream_keep::StreamKeep;
pub(crate) use thread_drivers::{
    current, current_id, lookup, unregister, with_current, EnterGuard,
};

use batch::Batch;

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use io_uring::types;

use crate::sys::{EnterFd, Ring};

use bufring::BufPool;
use close::DeferredCloses;
use completion::{Completion, Detached};
/// The op table: every op's slot, found by the key its SQE carries as `user_data`.
type OpTable = crate::util::table::Table<slot::Lifecycle>;
use timer::{TimerState, NOT_ARMED};

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
    /// Bytes accepted by the loop's write queues and not yet sent (see `queued_bytes`).
    /// Outside `inner`: a queue updates it with or without the driver borrowed.
    queued_bytes: Cell<usize>,
}

struct Inner {
    /// `None` once closed.
    ring: Option<Ring>,
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
    /// The wake-up read's buffer, for the driver's life: allocated once and never moved, so
    /// the pointer its SQEs carry stays valid however the driver is borrowed (a `Box` that
    /// moves is claimed anew under Rust's aliasing rules). A `Cell`: the kernel writes it
    /// through a shared pointer.
    wake_buf: Box<Cell<u64>>,
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
    /// Under valgrind, waits poll the rings at this interval instead of blocking in the
    /// kernel (see `sys::valgrind_poll_interval`).
    poll_interval: Option<Duration>,
    /// CQEs reaped so far: how many a wait brought in.
    reaped: u64,
    /// `io_uring_enter` calls made.
    enters: u64,
    /// The CQ ring's size, and how many reaps found it full with completions held back in
    /// the kernel (see `Inner::reap`).
    cq_entries: usize,
    cq_full: u64,
    /// A push found the SQ full and entered to make room, reaping completions that no turn
    /// has looked at yet (see `Inner::push_full`): the next park must not block.
    reaped_in_push: bool,
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
    /// Sends tried at submit whose success posts no CQE, until confirmed (see `quiet`).
    quiet: quiet::Quiet,
    /// Closes in the SQ (see `close`): like tries, each posts its CQE while it is submitted.
    closes_queued: u32,
    /// Closes submitted or queued whose CQE is not reaped yet; `close` waits for them.
    closes_in_flight: u32,
    /// Descriptors the ring has closed (see `close`).
    ring_closes: u64,
    /// Wakes the loop when a watched socket has room again; a wait counts tries only while
    /// it is armed (see [`Driver::submit_detached_tried`]).
    room: Option<Arc<writable::RoomWatch>>,
    /// The loop's timer: the same as `DriverCell::timer`.
    timer: Rc<TimerState>,
    /// Wakes a waker while the driver is borrowed if that is known to be harmless, else hands
    /// it back to be woken after the borrow (see [`RuntimeHooks::wake_inline`]).
    wake_inline: fn(Waker) -> Result<(), Waker>,
    /// The same for a waker left in place (see [`RuntimeHooks::wake_inline_ref`]).
    wake_inline_ref: fn(&Waker) -> bool,
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
        ring: Ring,
        wake_fd: RawFd,
        cfg: &DriverConfig,
        hooks: RuntimeHooks,
    ) -> io::Result<Driver> {
        let cap = ring.params().cq_entries() as usize;
        let (count, recv_size) = cfg.recv_buffers;
        let send_zc_threshold = cfg.send_zc_threshold;
        let kernel = crate::sys::parse_kernel_version(&crate::sys::kernel_release());
        // Shared by the pool (buffers returned from other threads) and `ForeignDrops`.
        let wake_loop = hooks.wake_loop;
        let wake_inline = hooks.wake_inline;
        let wake_inline_ref = hooks.wake_inline_ref;
        let kernel_timer = cfg.kernel_timer;
        let spin = cfg.spin;
        let no_iowait = !cfg.iowait && ring.params().is_feature_no_iowait();
        // The room watcher needs multishot poll (5.13+); 6.1 (DEFER_TASKRUN's) is the oldest
        // kernel the tries are reasoned about on, rather than older completion paths.
        let room = (cfg.trial_sends && kernel.is_some_and(|v| v >= (6, 1)))
            .then(writable::RoomWatch::new)
            .flatten();
        let batch = cfg
            .batch_wait
            .filter(|_| ring.params().is_feature_min_timeout())
            .map(|d| Batch::new(u32::try_from(d.as_micros()).unwrap_or(u32::MAX).max(1)));
        let multishot = cfg.multishot && kernel.is_some_and(|v| v >= (6, 0));
        let multishot_accept = cfg.multishot_accept && kernel.is_some_and(|v| v >= (5, 19));
        let registered = if cfg.recv_buffer_ring {
            BufPool::new(&ring, count, recv_size, wake_loop.clone()).map(Some)
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
                        count, recv_size
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
            ts: Cell::new(types::Timespec::new()),
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
            queued_bytes: Cell::new(0),
            inner: RefCell::new(Inner {
                enter_fd: EnterFd::register(ring.as_raw_fd()),
                ring: Some(ring),
                ops: OpTable::with_capacity(cap),
                spare_streams: Vec::new(),
                released: Released::default(),
                detached: Vec::new(),
                wake_fd,
                wake_armed: false,
                wake_buf: Box::default(),
                owned: 0,
                stray_cqes: 0,
                no_iowait,
                batch,
                spin,
                poll_interval: crate::sys::valgrind_poll_interval(),
                reaped: 0,
                enters: 0,
                cq_entries: cap,
                cq_full: 0,
                reaped_in_push: false,
                pool: reaper_pool,
                others_since_park: 0,
                throttled: Vec::new(),
                empty_waits: 0,
                closing: false,
                trials: 0,
                tries_queued: 0,
                tries_entered: 0,
                quiet: quiet::Quiet::new(cfg.trial_sends && kernel.is_some_and(|v| v >= (6, 1))),
                closes_queued: 0,
                closes_in_flight: 0,
                ring_closes: 0,
                room,
                timer,
                wake_inline,
                wake_inline_ref,
            }),
        }));
        thread_drivers::register(&d);
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
    // loads; outlined, the call would cost more than they do.
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
        thread_drivers::enter(&self.0)
    }

    /// Ops whose future is alive: what could still wake a task.
    pub(crate) fn owned_ops(&self) -> usize {
        self.0.inner.borrow().owned
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

    /// Submits what is queued and reaps what completed, without blocking.
    pub(crate) fn submit(&self) -> io::Result<()> {
        let mut inner = self.0.inner.borrow_mut();
        self.queue_closes(&mut inner);
        inner.enter(0, None, 0)
    }

    /// Whether `io_uring_enter` is given this thread's registered index of the ring.
    pub(crate) fn ring_registered(&self) -> bool {
        self.0.inner.borrow().enter_fd.is_registered()
    }
}
