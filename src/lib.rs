//! # ringloop: an io_uring event loop for Linux
//!
//! ringloop runs asynchronous Rust code on Linux's io_uring, one loop per thread.
//!
//! ## The model
//!
//! **An operation is an SQE; its future is resolved from its CQE.** Every I/O call (an
//! accept, a receive, a send, a file read) becomes a submission-queue entry. The loop gathers
//! the entries made by all tasks during a turn and hands them to the kernel with one
//! `io_uring_enter`, which also collects finished completions. There is no readiness step: when
//! a completion arrives, the operation is done and its future is ready.
//!
//! **The loop owns every buffer the kernel may touch.** I/O calls take buffers by value and give
//! them back with the result ([`BufResult`]). If a future is dropped while its operation is in
//! the kernel (a timeout fired, a task was aborted, the loop closed), the loop keeps the buffer
//! in its op table and asks the kernel to cancel; the buffer is freed only after the kernel's
//! final completion for that operation. Dropping, leaking or panicking can never let the kernel
//! write into freed memory.
//!
//! **One loop, one ring, one thread.** An [`EventLoop`] is `!Send`: it runs on the thread that
//! made it, with no locks on its hot path. Tasks need not be `Send`. Other threads reach a loop
//! through a [`Handle`] (stop it, spawn onto it), which rings the loop's eventfd only if the
//! loop is asleep.
//!
//! **Timers cost no SQE each.** Sleeps and timeouts live in a per-loop timer wheel; one
//! kernel timeout per loop, kept armed at the earliest deadline (moved only when an earlier
//! one comes), ends the loop's wait in `io_uring_enter` when a timer is due.
//!
//! ## The pieces
//!
//! - [`EventLoop`], [`Builder`], [`Handle`], [`spawn`], [`JoinHandle`]: the loop and its tasks.
//! - [`net`]: TCP, UDP and Unix sockets. [`net::TcpStream::recv`] receives into a
//!   [`RecvBuf`] from the loop's provided-buffer ring, so idle connections hold no buffer,
//!   and the kernel is offered only a window of the pool that follows the load, refilled
//!   with the buffers returned last (see [`Builder::recv_buffers`]); `accept` and `recv` are
//!   cancel-safe. [`net::TcpStream::write_queued`] hands a reply to
//!   the loop without waiting for its completion: the loop sends it (in order, resuming short
//!   sends) and drops it, and no task wakes for it. On TCP the reply is tried as it is
//!   submitted, so that the same `io_uring_enter` then sleeps until the next request.
//! - [`fs`]: files (open, positioned reads and writes, sync, statx, close, path operations).
//! - [`time`]: sleeps, timeouts and intervals on the loop's timer wheel.
//! - [`signal`]: SIGINT and SIGTERM as futures.
//! - [`Cluster`]: thread-per-core, one loop per core, graceful then forced shutdown.
//! - [`buf`]: the owned-buffer traits ([`IoBuf`], [`IoBufMut`]) and slices.
//! - Runtime-agnostic crates run as they are: the `futures` crate's `select!`, `join!` and
//!   `FuturesUnordered`, tokio's `sync` channels (within a loop and across loops).
//! - `compat` (cargo features `tokio-io`, `futures-io`, `hyper`, off by default): hyper,
//!   axum, rustls and tokio code on ringloop. The streams implement tokio's, futures' and
//!   hyper's I/O traits (reads copied out of loop-owned buffers, writes copied into the
//!   write queue, both cancel-safe), and `compat::HyperExecutor` and `compat::HyperTimer`
//!   give hyper the loop's tasks and timer wheel.
//!
//! ## Lifecycle
//!
//! | step | call |
//! |---|---|
//! | create | [`EventLoop::new`], [`EventLoop::builder`] |
//! | run a future to completion | [`EventLoop::block_on`] |
//! | run until stopped | [`EventLoop::run_forever`] |
//! | stop, from anywhere | [`Handle::stop`]; tasks can await [`Handle::stopping`] |
//! | close | [`EventLoop::close`] (or drop the loop) |
//!
//! The classic mistakes are errors, not hangs: running a loop inside a running loop on one
//! thread panics at once saying so; `run_forever` with nothing that could ever stop it returns
//! an error; a closed loop has cancelled every operation and waited for the kernel.
//!
//! ```
//! use std::time::Duration;
//! use ringloop::{EventLoop, time};
//!
//! let mut lp = EventLoop::new()?;
//! let handle = lp.handle();
//! lp.spawn(async move {
//!     time::sleep(Duration::from_millis(10)).await;
//!     handle.stop();
//! });
//! lp.run_forever()?; // returns once the task called stop()
//! lp.close()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! ## Guarantees
//!
//! - A turn polls at most 128 ready tasks before it reaps completions, so a busy task cannot
//!   starve I/O.
//! - A loop makes one `io_uring_enter` per turn; it blocks only when no task is ready, until a
//!   completion arrives (the loop's timer's, when a timer is due). A wait that brings in
//!   only queued writes' completions (which wake no task) is followed by another wait, not by
//!   a turn; one that submits replies tried at submit waits past their completions for the
//!   next event.
//! - Timers have 1 ms resolution and never fire early. Registering and cancelling one (a
//!   per-request timeout) touches only the wheel, unless it is earlier than every other.
//! - A wake from the loop's own thread costs no atomic operation for `wake_by_ref`.
//!
//! How a loop with nothing to run waits is the one trade-off left to you, on the
//! [`Builder`]: by default it sleeps in `io_uring_enter` until the first completion;
//! [`Builder::batch_wait`] has it wait a bounded time for several (fewer system calls, some
//! latency); [`Builder::spin_before_sleep`] has it watch its rings a while before it sleeps
//! (no wake-ups to pay for, a busy core). [`ClusterBuilder::event_loop`] sets them for every
//! core.
//!
//! ## Requirements
//!
//! Linux 5.11 or later (for `IORING_FEAT_EXT_ARG`). The loop prefers
//! `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN` (6.1+), then
//! `IORING_SETUP_COOP_TASKRUN` (5.19+), and reports what it chose in
//! [`EventLoop::features`]. Where io_uring cannot be used (an old kernel,
//! `kernel.io_uring_disabled`, a container's seccomp profile), [`EventLoop::new`] returns an
//! error that names the cause and the fix; there is no silent fallback.

#![warn(missing_docs)]
// The simulated-kernel build (`--cfg ringloop_sim`) runs only its own tests; the syscall
// paths it replaces are dead there.
#![cfg_attr(ringloop_sim, allow(dead_code, unused_imports))]

pub mod buf;
#[cfg(any(feature = "tokio-io", feature = "futures-io", feature = "hyper"))]
pub mod compat;
mod driver;
mod executor;
mod fd;
pub mod fs;
#[cfg(all(test, ringloop_sim))]
mod lifecycle_sim;
pub mod net;
mod runtime;
pub mod signal;
mod sys;
pub mod time;
mod util;

pub use buf::{BufResult, IoBuf, IoBufMut, RecvBuf};
pub use executor::{set_blocking_threads, spawn_blocking, JoinError, JoinHandle, JoinSet};
pub use runtime::{
    spawn, yield_now, Builder, Cluster, ClusterBuilder, ClusterHandle, CoreResult, EventLoop,
    Handle, RecvPoolStats, Stats, Stopping,
};
pub use sys::{Features, SetupMode};

/// The README's Rust examples, compiled and run as doc tests so that the front page stays
/// true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#[doc(hidden)]
pub mod __private {
    //! Hooks for this crate's own tests and benchmarks. Not part of the API.

    use std::io;

    /// Runs one `IORING_OP_NOP` through an op future.
    pub async fn nop() -> io::Result<()> {
        crate::driver::Op::new(crate::driver::ops::Nop)
            .await
            .result
            .map(|_| ())
    }

    /// Reads from `fd` into `buf` (pipes, eventfds: offset = current position).
    pub async fn read<B: crate::IoBufMut>(
        fd: std::os::fd::RawFd,
        buf: B,
    ) -> crate::BufResult<usize, B> {
        let out = crate::driver::Op::new(crate::driver::ops::Read {
            fd,
            buf,
            offset: u64::MAX,
        })
        .await;
        crate::buf::finish_read(out.result, out.data.buf)
    }
}
