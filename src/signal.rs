//! SIGINT and SIGTERM as futures: [`ctrl_c`], [`terminate`].
//!
//! The first time a signal is awaited, ringloop installs a handler for it (`sigaction`), so
//! the signal is caught whichever thread of the process the kernel delivers it to, including
//! threads ringloop did not create; its default action (ending the process) stays replaced
//! for the life of the process. A mask-based `signalfd` cannot promise that: a thread that
//! does not block the signal still receives it the default way.
//!
//! The handler only does async-signal-safe work: it bumps the signal's generation counter and
//! writes to the eventfd of every waiting future (a fixed table of atomics). Each waiting
//! future reads its own eventfd on the ring, then compares generations, so a signal that
//! arrives while no read is armed is still seen. An eventfd leaves the table before it is
//! closed, and closing waits until no handler is running, so the handler never writes to a
//! reused descriptor number.
//!
//! ```no_run
//! let mut lp = ringloop::EventLoop::new()?;
//! lp.block_on(async {
//!     ringloop::signal::ctrl_c().await?;
//!     println!("interrupted, shutting down");
//!     Ok::<(), std::io::Error>(())
//! })?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use io_uring::{opcode, squeue, types};

use crate::driver::{Op, OpCode};

/// How many signal futures may wait at once in the whole process.
const SLOTS: usize = 64;

/// Eventfds of waiting futures; -1 = free.
static WAITERS: [AtomicI32; SLOTS] = [const { AtomicI32::new(-1) }; SLOTS];
/// Handlers currently running (closers wait for zero).
static IN_HANDLER: AtomicUsize = AtomicUsize::new(0);
/// Per signal kind: times delivered.
static GENERATION: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
/// Per signal kind: handler installed.
static INSTALLED: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];
static INSTALL_LOCK: Mutex<()> = Mutex::new(());

/// A signal ringloop can wait for.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Interrupt = 0,
    Terminate = 1,
}

impl Kind {
    fn signo(self) -> libc::c_int {
        match self {
            Kind::Interrupt => libc::SIGINT,
            Kind::Terminate => libc::SIGTERM,
        }
    }
}

extern "C" fn on_signal(signo: libc::c_int) {
    IN_HANDLER.fetch_add(1, Ordering::SeqCst);
    // SAFETY: __errno_location returns this thread's errno; saving and restoring it keeps the
    // interrupted code's errno intact, as a handler must.
    let saved = unsafe { *libc::__errno_location() };
    let kind = if signo == libc::SIGINT { 0 } else { 1 };
    GENERATION[kind].fetch_add(1, Ordering::SeqCst);
    let one: u64 = 1;
    for slot in &WAITERS {
        let fd = slot.load(Ordering::SeqCst);
        if fd >= 0 {
            // SAFETY: write(2) is async-signal-safe; `fd` stays open while this handler runs
            // (closers clear the slot, then wait for IN_HANDLER to drop to zero).
            unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
        }
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
    IN_HANDLER.fetch_sub(1, Ordering::SeqCst);
}

fn install(kind: Kind) -> io::Result<()> {
    if INSTALLED[kind as usize].load(Ordering::Acquire) {
        return Ok(());
    }
    let _g = INSTALL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if INSTALLED[kind as usize].load(Ordering::Acquire) {
        return Ok(());
    }
    // SAFETY: sigaction is plain old data; all-zero is a valid starting value.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
    sa.sa_flags = libc::SA_RESTART;
    // SAFETY: `sa.sa_mask` is a valid sigset to initialise.
    unsafe { libc::sigemptyset(&mut sa.sa_mask) };
    // SAFETY: `sa` is a valid sigaction whose handler only does async-signal-safe work.
    if unsafe { libc::sigaction(kind.signo(), &sa, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    INSTALLED[kind as usize].store(true, Ordering::Release);
    Ok(())
}

/// One waiting future's eventfd, registered in `WAITERS`.
struct Registered {
    fd: OwnedFd,
    slot: usize,
}

impl Registered {
    fn new() -> io::Result<Arc<Registered>> {
        // SAFETY: eventfd takes no pointers.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor that nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        for (slot, w) in WAITERS.iter().enumerate() {
            if w.compare_exchange(-1, raw, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                return Ok(Arc::new(Registered { fd, slot }));
            }
        }
        Err(io::Error::other(format!(
            "ringloop::signal: more than {SLOTS} signal futures are waiting at once"
        )))
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        WAITERS[self.slot].store(-1, Ordering::SeqCst);
        // A handler that loaded our fd before the store may still be writing to it.
        while IN_HANDLER.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
        // `fd` closes after this, when the field drops.
    }
}

/// A read of a registered eventfd; the op keeps the registration (and so the fd) alive.
struct ReadEvent {
    reg: Arc<Registered>,
    /// Written by the kernel until the CQE; boxed so it stays put.
    buf: Box<u64>,
}

// SAFETY: the pointer is the boxed u64 owned by this op; the fd is kept open by `reg`.
unsafe impl OpCode for ReadEvent {
    fn sqe(&mut self) -> squeue::Entry {
        let fd: RawFd = self.reg.fd.as_raw_fd();
        opcode::Read::new(types::Fd(fd), (&mut *self.buf as *mut u64).cast(), 8).build()
    }
}

/// Installs the handler for `kind` now and returns its current generation, for
/// [`wait_after`]: a caller that must not miss a signal sent before it gets to wait.
pub(crate) fn watch(kind: Kind) -> io::Result<u64> {
    install(kind)?;
    Ok(GENERATION[kind as usize].load(Ordering::SeqCst))
}

async fn wait(kind: Kind) -> io::Result<()> {
    let seen = watch(kind)?;
    wait_after(kind, seen).await
}

/// Resolves once `kind` was delivered after generation `seen` (see [`watch`]).
pub(crate) async fn wait_after(kind: Kind, seen: u64) -> io::Result<()> {
    // Registered before comparing: any later delivery writes our eventfd.
    let reg = Registered::new()?;
    loop {
        if GENERATION[kind as usize].load(Ordering::SeqCst) != seen {
            return Ok(());
        }
        Op::new(ReadEvent {
            reg: reg.clone(),
            buf: Box::new(0),
        })
        .await
        .result?;
    }
}

/// A waiter for SIGINT and SIGTERM whose handlers and eventfd are set up when it is made, so
/// that a caller that must watch for signals for a long time (a `Cluster`) learns at once
/// if it cannot (more than 64 waiters, no descriptor for the eventfd).
pub(crate) struct Watch {
    reg: Arc<Registered>,
    /// Each kind's generation when the watch began: a later one is a delivery.
    seen: [u64; 2],
}

impl Watch {
    pub(crate) fn new() -> io::Result<Watch> {
        let seen = [watch(Kind::Interrupt)?, watch(Kind::Terminate)?];
        // Registered after the generations were read: a signal in between shows as a newer
        // generation at the first comparison.
        let reg = Registered::new()?;
        Ok(Watch { reg, seen })
    }

    /// Resolves once SIGINT or SIGTERM was delivered after the watch began.
    pub(crate) async fn signalled(&self) -> io::Result<()> {
        loop {
            if GENERATION
                .iter()
                .zip(self.seen)
                .any(|(g, seen)| g.load(Ordering::SeqCst) != seen)
            {
                return Ok(());
            }
            Op::new(ReadEvent {
                reg: self.reg.clone(),
                buf: Box::new(0),
            })
            .await
            .result?;
        }
    }
}

/// Resolves when the process receives SIGINT (Ctrl-C) after this future is first polled.
///
/// # Errors
///
/// If the handler cannot be installed, or more than 64 signal futures wait at once.
pub async fn ctrl_c() -> io::Result<()> {
    wait(Kind::Interrupt).await
}

/// Resolves when the process receives SIGTERM after this future is first polled.
///
/// # Errors
///
/// As for [`ctrl_c`].
pub async fn terminate() -> io::Result<()> {
    wait(Kind::Terminate).await
}
