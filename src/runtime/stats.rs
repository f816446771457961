//! `Stats`: a loop's counters, read in a few loads, for a service's metrics.

use crate::driver::Driver;
use crate::executor::SchedCounts;

/// A snapshot of a loop's counters ([`EventLoop::stats`](crate::EventLoop::stats)). Taking
/// one reads a few counters the loop keeps anyway, so a service may export them every
/// second. Counts (`completions`, `empty_waits`, ...) run from the loop's creation; compare
/// two snapshots for a rate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Tasks spawned on the loop that have not finished.
    pub tasks: usize,
    /// Turns the loop has run: each runs the ready tasks, then makes at most one
    /// `io_uring_enter` (see `enters`).
    pub turns: u64,
    /// `io_uring_enter(2)` calls: submissions and waits. Per request served, the figure to
    /// watch: many requests share one call under load.
    pub enters: u64,
    /// Times the completion ring overflowed: the loop found it full with completions the
    /// kernel held back for want of room. Linux 5.5+ keeps them until there is room, so
    /// nothing is lost, but each costs the kernel an allocation and a copy; a count that
    /// grows means the ring is too small for the load: raise
    /// [`Builder::entries`](crate::Builder::entries).
    pub cq_overflows: u64,
    /// Bytes accepted by the loop's write queues (`write_queued`, and the byte-stream
    /// traits' writes) and not yet sent: what peers that read slowly hold in memory.
    pub queued_write_bytes: usize,
    /// Operations the kernel still owes a completion, the loop's own (its wake-up read, its
    /// timer, armed multishot receives and accepts) included.
    pub ops_in_kernel: usize,
    /// Completions reaped.
    pub completions: u64,
    /// Blocking waits that ended with no completion (a timer's deadline, a signal). A loop
    /// that waits on I/O alone has none.
    pub empty_waits: u64,
    /// Completions that matched no operation: a kernel or ringloop bug, counted, never fatal.
    pub stray_completions: u64,
    /// Descriptors of dropped streams that the ring closed (in the loop's next
    /// `io_uring_enter`, instead of a `close(2)` each).
    pub ring_closes: u64,
    /// Timers (sleeps, timeouts, intervals) registered and not fired.
    pub timers: usize,
    /// How many completions a batch wait currently asks for
    /// ([`Builder::batch_wait`](crate::Builder::batch_wait)); `None` with batching off.
    pub batch_target: Option<u32>,
    /// The receive-buffer pool's counters; `None` where the loop has no pool (kernels before
    /// 5.19, or [`Builder::recv_buffer_ring`](crate::Builder::recv_buffer_ring) off).
    pub recv_pool: Option<RecvPoolStats>,
}

/// The receive-buffer pool's counters, in [`Stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecvPoolStats {
    /// Buffers in the pool ([`Builder::recv_buffers`](crate::Builder::recv_buffers)).
    pub buffers: usize,
    /// Free buffers: in the ring offered to the kernel or waiting beside it. Not those held
    /// by `RecvBuf`s, nor those holding bytes a stream's task has not taken yet. An idle
    /// connection holds none.
    pub free: usize,
    /// How many free buffers the ring offers the kernel at a time (the rest wait, the ones
    /// returned last first); it follows how many receives complete at once.
    pub window: usize,
    /// Receives that found the ring empty (`ENOBUFS`) and waited for a buffer.
    pub ring_empty: u64,
    /// Receives that went through a heap buffer because the pool stayed empty (every buffer
    /// held by `RecvBuf`s or by bytes not yet taken).
    pub heap_fallbacks: u64,
}

impl Stats {
    /// The counters of the loop whose driver is `driver`, with its scheduler's counts and
    /// its timers.
    pub(crate) fn of(driver: &Driver, sched: SchedCounts, timers: usize) -> Stats {
        Stats {
            tasks: sched.tasks,
            turns: sched.turns,
            enters: driver.enters(),
            cq_overflows: driver.cq_overflows(),
            queued_write_bytes: driver.queued_bytes(),
            ops_in_kernel: driver.awaiting_kernel(),
            completions: driver.reaped(),
            empty_waits: driver.empty_waits(),
            stray_completions: driver.stray_cqes(),
            ring_closes: driver.ring_closes(),
            timers,
            batch_target: driver.batch_target(),
            recv_pool: driver.pool().map(|p| {
                let (window, ring_empty) = p.window_stats();
                RecvPoolStats {
                    buffers: p.count(),
                    free: p.available(),
                    window: window.into(),
                    ring_empty,
                    heap_fallbacks: p.heap_fallbacks(),
                }
            }),
        }
    }

    /// The counters of the loop current on this thread (from one of its tasks).
    pub(crate) fn current() -> Option<Stats> {
        let sched = crate::executor::current_counts()?;
        let timers = crate::time::current_pending()?;
        crate::driver::with_current(|d| Stats::of(d, sched, timers))
    }
}
