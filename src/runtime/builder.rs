//! `Builder`: how a loop is set up.

use std::io;
use std::time::Duration;

use super::EventLoop;
use crate::driver::DriverConfig;
use crate::sys::SetupMode;

/// The kernel's limit on submission-queue entries (`IORING_MAX_ENTRIES`).
const MAX_ENTRIES: u32 = 32768;

/// Sets up an [`EventLoop`]. Made by [`EventLoop::builder`].
///
/// ```
/// let lp = ringloop::EventLoop::builder().entries(64).build()?;
/// assert_eq!(lp.features().sq_entries(), 64);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Builder {
    pub(crate) entries: u32,
    pub(crate) setup_mode: Option<SetupMode>,
    pub(crate) close_timeout: Duration,
    /// The settings the loop's driver reads as they are.
    pub(crate) driver: DriverConfig,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder {
            entries: 512,
            setup_mode: None,
            close_timeout: Duration::from_secs(5),
            driver: DriverConfig::default(),
        }
    }
}

impl Builder {
    /// Submission-queue size (rounded up to a power of two by the kernel; 1 to 32768, default
    /// 512). The completion queue gets four times as many entries. More operations than this
    /// may be in flight: a full queue is submitted and refilled, never dropped.
    ///
    /// A process without `CAP_IPC_LOCK` pays for its rings out of `RLIMIT_MEMLOCK`, shared by
    /// all of the user's processes: smaller rings fit more loops. What a loop costs, and why
    /// 512 is enough: `docs/tuning.md`.
    pub fn entries(mut self, n: u32) -> Self {
        self.entries = n;
        self
    }

    /// The pool of loop-owned receive buffers (`count` buffers of `size` bytes, default
    /// 1024 × 64 KiB) that multishot receives draw from. `count` must be a power of two up to
    /// 32768 (the kernel's rule for provided-buffer rings); otherwise [`build`](Self::build)
    /// fails with `InvalidInput`.
    ///
    /// An idle connection holds no buffer, so the pool's size bounds memory, not connections.
    /// The kernel is offered only a window of the free buffers at a time, refilled with the
    /// ones returned last, and the window follows how many receives complete at once (16 at
    /// first, doubling under bursts, halving after a quiet second). So the memory touched is
    /// what the load needs, not `count × size` (64 MiB of address space by default, touched
    /// a page at a time as receives fill it), and receives land in cache-warm buffers; the
    /// rest of the pool absorbs bursts and buffers held by the application. `size` is the
    /// most one receive returns; a larger message costs a receive (and, echoed or forwarded,
    /// a send) per buffer, so lower it only where memory is tight and messages small
    /// (`docs/tuning.md` has the measurements).
    pub fn recv_buffers(mut self, count: u16, size: usize) -> Self {
        self.driver.recv_buffers = (count, size);
        self
    }

    /// Forces a ring set-up mode instead of the best the kernel offers; `build` fails if the
    /// kernel rejects it. For testing fallbacks and for pinning behaviour in production.
    ///
    /// The best is also the cheapest: on a ring with no optional flags
    /// ([`SetupMode::Basic`]) the kernel interrupts the thread to post each completion, which
    /// costs more CPU per request than [`SetupMode::DeferTaskrun`] (`docs/tuning.md`).
    pub fn setup_mode(mut self, mode: SetupMode) -> Self {
        self.setup_mode = Some(mode);
        self
    }

    /// Whether receives draw from a provided-buffer ring when the kernel has them (default
    /// true). `false` gives the older kernels' path (a heap buffer allocated per receive), to
    /// test it or to compare.
    pub fn recv_buffer_ring(mut self, on: bool) -> Self {
        self.driver.recv_buffer_ring = on;
        self
    }

    /// Whether a stream's receives use one multishot RECV that stays armed (Linux 6.0+;
    /// default true) rather than one RECV per `recv()` call. `false` gives the older
    /// kernels' path, to test it or to compare.
    pub fn multishot(mut self, on: bool) -> Self {
        self.driver.multishot = on;
        self
    }

    /// Whether a listener keeps one multishot ACCEPT armed (Linux 5.19+; default true)
    /// rather than submitting one ACCEPT per `accept()` call. A multishot accept takes up to
    /// 128 connections ahead of the caller and then pauses until they are taken, so a server
    /// that stops accepting leaves the rest in the kernel's backlog. The kernel does not report
    /// a multishot accept's peer address, so each connection costs one `getpeername(2)`.
    /// `false` gives the older kernels' path, to test it or to compare.
    pub fn multishot_accept(mut self, on: bool) -> Self {
        self.driver.multishot_accept = on;
        self
    }

    /// Socket writes of at least `bytes` use `IORING_OP_SEND_ZC` (Linux 6.0+): the kernel
    /// sends straight from the buffer, which stays owned by the loop until the kernel's
    /// notification that it is done with it. `None` (the default) never does.
    ///
    /// Off by default because it only pays on a real NIC with large writes: over loopback the
    /// kernel copies anyway and the notification is pure overhead (`examples/loop_costs`
    /// measures both on this machine). Measure on your own network before turning it on.
    ///
    /// The kernel charges a zero-copy send's pages to `RLIMIT_MEMLOCK` unless the process has
    /// `CAP_IPC_LOCK` outside any user namespace (a container's root does not). A write the
    /// limit refuses is sent by copying instead, so it still succeeds, but pays for both
    /// attempts: raise `ulimit -l` where zero-copy should be used in a container.
    pub fn send_zerocopy_threshold(mut self, bytes: Option<usize>) -> Self {
        self.driver.send_zc_threshold = bytes;
        self
    }

    /// Whether the loop's waits for completions count as iowait, as the kernel counts them by
    /// default (`true`). With `false` (Linux 6.15+, `IORING_ENTER_NO_IOWAIT`; ignored before)
    /// an idle loop shows as idle in `top` and `/proc/stat` rather than as up to 100% iowait.
    ///
    /// On by default because the kernel uses iowait as a hint to wake the CPU faster (turning
    /// it off lowered one connection's requests per second in `bench/`; `docs/tuning.md`).
    /// Turn it off where dashboards or CPU-frequency policy read iowait as disk trouble.
    pub fn iowait(mut self, on: bool) -> Self {
        self.driver.iowait = on;
        self
    }

    /// Batch waits (Linux 6.12+; ignored before): when completions arrive in bunches, a loop
    /// with nothing to run waits up to `wait` for several of them before it runs tasks,
    /// rather than waking for the first. Fewer `io_uring_enter` calls and larger batches per
    /// call, for up to `wait` of added latency. `None` (the default) wakes for the first.
    ///
    /// How many to wait for adapts: it starts at one, rises to eight once two waits in a row
    /// bring in two or more, doubles once two bring in twice that, halves when one falls
    /// short (back to one below eight), and stays under a quarter of the operations in
    /// flight. A wait for more than one arms a kernel timer (its min-wait), which asking for
    /// two or four does not repay; so a quiet loop, or one with fewer than 32 operations in
    /// flight, keeps waiting for one. It also stays under what arrives in half of `wait` at
    /// the pace the loop last saw (completions that arrived per turn over the turn's
    /// length): at a moderate, steady rate a count alone would be met, every request in a
    /// batch having waited for the others. Completions the loop posts itself while a wait
    /// submits (replies tried at submit, closes) are not arrivals and count for neither.
    ///
    /// The price is latency: a wait that falls short adds up to `wait`, one that the pace
    /// allowed up to half of it, and each bounded wait arms a kernel timer, which costs more
    /// where a hypervisor traps the timer device. Off by default for that reason: measure on
    /// your own traffic (`docs/tuning.md` has what `bench/` measured).
    ///
    /// [`Features::batch_wait`](crate::Features::batch_wait) says whether it is in effect.
    pub fn batch_wait(mut self, wait: Option<Duration>) -> Self {
        self.driver.batch_wait = wait.filter(|d| !d.is_zero());
        self
    }

    /// Spin before sleeping: a loop with nothing to run watches its rings for up to `spin`
    /// before it sleeps in `io_uring_enter`, and goes on at once when a completion comes in.
    /// `None` (the default) sleeps at once.
    ///
    /// Waking a sleeping thread is what a request/response exchange pays most for once the
    /// system calls are gone: the completion's poster (the peer's CPU, over loopback; the
    /// NIC's interrupt) must wake the loop's thread, and that thread must be scheduled back
    /// in. While the loop spins, nobody waits in the kernel, so nothing has to be woken. The
    /// spin costs no system call: it reads the SQ ring's flags (the kernel sets
    /// `IORING_SQ_TASKRUN` when it has completions to post, with the ring's
    /// `IORING_SETUP_TASKRUN_FLAG`, which this turns on) and the CQ ring, and enters the
    /// kernel only once there is something to reap.
    ///
    /// The price is CPU: a spinning loop keeps its core busy for up to `spin` after every
    /// turn, traffic or not, and a loop whose requests come closer together than `spin`
    /// never sleeps at all. Use it where a core is the server's own and latency matters more
    /// than power, with `spin` sized to the gaps between requests you expect (10–50 µs),
    /// and measure the tail on your own traffic (below).
    ///
    /// What `bench/` measured, and where the tail latency rose: `docs/tuning.md`.
    ///
    /// Not with [`batch_wait`](Builder::batch_wait), which waits longer to gather completions
    /// where this waits less: [`build`](Builder::build) refuses the two together.
    pub fn spin_before_sleep(mut self, spin: Option<Duration>) -> Self {
        self.driver.spin = spin.filter(|d| !d.is_zero());
        self
    }

    /// Whether queued writes (`write_queued`) on TCP streams are tried at submit, with
    /// `MSG_DONTWAIT`, so that the wait that submits them sleeps until the next request rather
    /// than waking for their completions (Linux 6.1+; default true). For comparisons and
    /// tests.
    #[doc(hidden)]
    pub fn trial_sends(mut self, on: bool) -> Self {
        self.driver.trial_sends = on;
        self
    }

    /// Whether the loop's timers are served by one kernel timeout, kept armed at the earliest
    /// deadline (default true), rather than by giving every wait the next deadline. For
    /// comparisons and tests (the latter is also the loop's fallback should the kernel refuse
    /// that timeout).
    #[doc(hidden)]
    pub fn kernel_timer(mut self, on: bool) -> Self {
        self.driver.kernel_timer = on;
        self
    }

    /// How long [`EventLoop::close`] waits for the kernel to finish cancelled operations
    /// (default 5 s). Past it, close leaks their buffers rather than freeing memory the kernel
    /// may still write, and returns an error.
    pub fn close_timeout(mut self, d: Duration) -> Self {
        self.close_timeout = d;
        self
    }

    /// Builds the loop.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for settings out of range, or for
    /// [`spin_before_sleep`](Builder::spin_before_sleep) with
    /// [`batch_wait`](Builder::batch_wait); otherwise the ring set-up error, whose message
    /// names the cause (kernel too old, `kernel.io_uring_disabled`, a seccomp profile, the
    /// locked-memory limit) and what to do about it.
    pub fn build(self) -> io::Result<EventLoop> {
        self.check()?;
        EventLoop::from_builder(self)
    }

    /// The settings' own errors, before any ring is made (`build` and
    /// `ClusterBuilder::build` both ask).
    pub(crate) fn check(&self) -> io::Result<()> {
        if self.entries == 0 || self.entries > MAX_ENTRIES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "Builder::entries({}): must be between 1 and {MAX_ENTRIES}, the kernel's limit",
                    self.entries
                ),
            ));
        }
        let (count, size) = self.driver.recv_buffers;
        if count == 0 || !count.is_power_of_two() || count > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "Builder::recv_buffers({count}, {size}): the count must be a power of two \
                     from 1 to 32768 (the kernel's rule for provided-buffer rings)"
                ),
            ));
        }
        if size == 0 || size > u32::MAX as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "Builder::recv_buffers({count}, {size}): the size must be from 1 byte to 4 GiB"
                ),
            ));
        }
        if let (Some(spin), Some(wait)) = (self.driver.spin, self.driver.batch_wait) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "Builder::spin_before_sleep({spin:?}) with Builder::batch_wait({wait:?}): \
                     a spinning loop takes each completion as it comes, a batch wait holds \
                     back for several; set one of them"
                ),
            ));
        }
        Ok(())
    }
}
