//! A simulated kernel for the ring, built with `--cfg ringloop_sim` (never in a release or a
//! default build): the driver runs unchanged on top of it, while the simulation decides the
//! order and the shape of every completion from a seed, and checks the op lifecycle's rules
//! at each step.
//!
//! What it models (see `kernel`):
//! - the SQ and the CQ, with the CQ's size: completions beyond it are held back and flagged
//!   as an overflow, as the kernel does with `IORING_FEAT_NODROP`;
//! - each op's progress: delayed, reordered, several CQEs per multishot receive ending with
//!   or without `F_MORE`, short sends, resets, end of stream, `ENOBUFS` from an empty buffer
//!   ring, SEND_ZC's notification, cancels that find their op, race it or come too late;
//! - the provided-buffer ring as the kernel reads it: its tail, its entries, which ids are in
//!   it and which the kernel picked;
//! - timers against the real clock, and the loops' doorbells (eventfds) read for real.
//!
//! What it checks, failing the test at once (see `kernel::violation`):
//! - the kernel never reads or writes memory that its owner has released (the shadow model,
//!   fed by the test's buffers through [`note_freed`]); under Miri every access is a real
//!   one, so a pointer to other freed memory is reported where it is used, unless the
//!   address was reused;
//! - a `user_data` is never submitted again while the kernel holds an op with it;
//! - a buffer id is never given back twice, nor the ring overfilled, nor unregistered while
//!   a receive may still pick from it;
//! - a loop never waits with no timeout while nothing in flight can complete (a hang).
//!
//! One kernel per thread: the ring and the enter calls made on a thread reach that thread's.

mod bufring;
mod kernel;
mod memory;
mod peer;
mod sqe;
mod stats;

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use io_uring::squeue;

use kernel::{Cqe, Kernel};
pub use peer::{output_byte, stream_byte};
pub use stats::SimStats;

use super::{Features, RingConfig, SetupMode, WaitArgs};

thread_local! {
    static KERNEL: RefCell<Option<Kernel>> = const { RefCell::new(None) };
    static NEXT: RefCell<SimConfig> = RefCell::new(SimConfig::default());
}

/// How the next ring set up on this thread behaves.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    /// The kernel release the loop sees: it picks the receive paths (6.0 for multishot).
    pub release: &'static str,
    pub sq_entries: u32,
    pub cq_entries: u32,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            seed: 1,
            release: "6.8.0-sim",
            sq_entries: 64,
            cq_entries: 256,
        }
    }
}

/// Sets how the next ring set up on this thread behaves.
pub fn configure(cfg: SimConfig) {
    NEXT.with(|n| *n.borrow_mut() = cfg);
}

/// Runs `f` with this thread's simulated kernel. Panics if no ring was set up.
pub(crate) fn with_kernel<R>(f: impl FnOnce(&mut Kernel) -> R) -> R {
    KERNEL.with(|k| {
        let mut k = k.borrow_mut();
        f(k.as_mut()
            .expect("no simulated ring is set up on this thread"))
    })
}

/// What this thread's kernel did so far.
pub fn stats() -> SimStats {
    with_kernel(|k| k.stats)
}

/// Ops this thread's kernel still holds.
pub fn in_flight() -> usize {
    with_kernel(|k| k.in_flight())
}

/// Tells the shadow model that `addr..addr + len` was released by its owner: from now on,
/// the kernel touching it is a violation.
pub fn note_freed(addr: usize, len: usize) {
    with_kernel_if_set(|k| k.memory.note_freed(addr, len));
}

/// Runs `f` with this thread's simulated kernel if a ring was set up (and the thread is not
/// exiting): for the calls that may come from outside a simulated loop.
fn with_kernel_if_set(f: impl FnOnce(&mut Kernel)) {
    let _ = KERNEL.try_with(|k| {
        if let Some(k) = k.borrow_mut().as_mut() {
            f(k);
        }
    });
}

/// A new stream on `fd` (a descriptor number may be reused): its peer's bytes start again
/// from offset 0.
pub fn new_stream(fd: RawFd) {
    with_kernel(|k| k.peers.new_stream(fd));
}

/// Checks from now on that what is sent on `fd` is `output_byte(fd, 0..)`, in order.
pub fn check_output(fd: RawFd) {
    with_kernel(|k| k.peers.check_output(fd));
}

/// Stops checking what is sent on `fd`.
pub fn stop_output_check(fd: RawFd) {
    with_kernel(|k| k.peers.stop_output_check(fd));
}

/// A random number from this thread's kernel's seeded generator, for the test's own choices.
pub fn random(below: u64) -> u64 {
    with_kernel(|k| k.rng.below(below))
}

/// The kernel release the simulated loop sees.
pub(crate) fn kernel_release() -> String {
    NEXT.with(|n| n.borrow().release.to_owned())
}

/// A loop's doorbell was made: reads of it complete only once it is rung.
pub(crate) fn note_doorbell(fd: RawFd) {
    with_kernel_if_set(|k| k.add_doorbell(fd));
}

/// Sets up a simulated ring in place of `io_uring_setup`.
pub(crate) fn setup(cfg: &RingConfig) -> io::Result<(SimRing, Features)> {
    let next = NEXT.with(|n| n.borrow().clone());
    let sq = next.sq_entries.min(cfg.entries.max(1)).next_power_of_two();
    let cq = next.cq_entries.max(sq).next_power_of_two();
    KERNEL.with(|k| {
        *k.borrow_mut() = Some(Kernel::new(next.seed, sq as usize, cq as usize));
    });
    // Every opcode, as a recent kernel has.
    let features = Features::of_ring(
        SetupMode::DeferTaskrun,
        (sq, cq),
        next.release.to_owned(),
        vec![true; 256],
        false,
    );
    Ok((SimRing { cq_entries: cq }, features))
}

/// The ring, as the driver holds it: every call goes to the thread's kernel.
pub(crate) struct SimRing {
    cq_entries: u32,
}

impl SimRing {
    pub(crate) fn params(&self) -> Params {
        Params {
            cq_entries: self.cq_entries,
        }
    }

    pub(crate) fn submission(&mut self) -> Sq {
        Sq
    }

    pub(crate) fn completion(&mut self) -> Cq {
        Cq
    }

    pub(crate) fn submitter(&self) -> Submitter {
        Submitter
    }
}

impl Drop for SimRing {
    fn drop(&mut self) {
        // Not during a panic: the test is failing already, and a second panic would abort.
        if !std::thread::panicking() {
            with_kernel_if_set(Kernel::exit);
        }
    }
}

impl AsRawFd for SimRing {
    fn as_raw_fd(&self) -> RawFd {
        -1
    }
}

pub(crate) struct Params {
    cq_entries: u32,
}

impl Params {
    pub(crate) fn cq_entries(&self) -> u32 {
        self.cq_entries
    }

    pub(crate) fn is_feature_no_iowait(&self) -> bool {
        false
    }

    pub(crate) fn is_feature_min_timeout(&self) -> bool {
        false
    }
}

pub(crate) struct Sq;

impl Sq {
    /// # Safety
    ///
    /// As `io_uring::SubmissionQueue::push`: what the entry points at stays valid until its
    /// final CQE. The simulation checks it.
    pub(crate) unsafe fn push(&mut self, e: &squeue::Entry) -> Result<(), ()> {
        with_kernel(|k| k.push(e))
    }

    pub(crate) fn len(&self) -> usize {
        with_kernel(|k| k.sq_len())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn cq_overflow(&self) -> bool {
        with_kernel(|k| k.cq_overflow())
    }

    pub(crate) fn taskrun(&self) -> bool {
        false
    }
}

pub(crate) struct Cq;

impl Cq {
    pub(crate) fn overflow(&self) -> u32 {
        0
    }

    pub(crate) fn is_empty(&self) -> bool {
        with_kernel(|k| k.cq_is_empty())
    }
}

impl Iterator for Cq {
    type Item = Cqe;

    fn next(&mut self) -> Option<Cqe> {
        with_kernel(|k| k.pop_cqe())
    }
}

pub(crate) struct Submitter;

impl Submitter {
    /// # Safety
    ///
    /// As the real one: the ring memory stays allocated until it is unregistered.
    pub(crate) unsafe fn register_buf_ring_with_flags(
        &self,
        addr: u64,
        entries: u16,
        group: u16,
        _flags: u16,
    ) -> io::Result<()> {
        // Provided-buffer rings came with Linux 5.19: before, the kernel refuses them.
        let release = kernel_release();
        if super::parse_kernel_version(&release).is_some_and(|v| v < (5, 19)) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        with_kernel(|k| k.register_buf_ring(addr, entries, group));
        Ok(())
    }

    pub(crate) fn unregister_buf_ring(&self, group: u16) -> io::Result<()> {
        with_kernel(|k| k.unregister_buf_ring(group))
    }
}

/// `io_uring_enter`, to the thread's kernel.
pub(crate) struct EnterFd;

impl EnterFd {
    pub(crate) fn register(_ring_fd: RawFd) -> EnterFd {
        EnterFd
    }

    pub(crate) fn unregister(&mut self, _ring_fd: RawFd) {}

    pub(crate) fn is_registered(&self) -> bool {
        false
    }

    pub(crate) fn enter(&self, _to_submit: u32, want: u32) -> io::Result<u32> {
        with_kernel(|k| k.enter(want, None))
    }

    pub(crate) fn enter_with(
        &self,
        _to_submit: u32,
        want: u32,
        _flags: u32,
        args: WaitArgs,
    ) -> io::Result<u32> {
        with_kernel(|k| k.enter(want, args.timeout))
    }
}

/// A seeded xorshift generator: the same seed, the same run.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        // Never zero, and seeds close together start far apart.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`), near enough for a test.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability `p / 256`.
    pub(crate) fn chance(&mut self, p: u32) -> bool {
        (self.next() >> 56) < u64::from(p)
    }
}

/// A broken rule of the op lifecycle: the test fails here, with the seed printed by the
/// harness.
#[track_caller]
pub(crate) fn violation(what: &str) {
    // Once the test fails, the loop's clean-up meets more of the same: say so, do not abort.
    if std::thread::panicking() {
        eprintln!("simulated kernel (while failing): {what}");
        return;
    }
    panic!("simulated kernel: {what}")
}
