//! Signal delivery, process-wide: the handler that `sigaction` installs for the signals
//! ringloop waits for (SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2), and the table of eventfds
//! it writes to (see `crate::signal` for the model). The handler does only async-signal-safe
//! work: it bumps the signal's generation and writes to every registered eventfd. The
//! table's protocol, and its loom models, are in `table`.

mod table;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use table::{Table, KINDS};

/// How many signal futures may wait at once in the whole process.
const SLOTS: usize = 64;

/// The process's table: the handler's, so a static.
#[cfg(not(loom))]
static TABLE: Table<SLOTS> = Table::new();

#[cfg(not(loom))]
fn table() -> &'static Table<SLOTS> {
    &TABLE
}

/// A `--cfg loom` build runs only the loom models, which build tables of their own.
#[cfg(loom)]
fn table() -> &'static Table<SLOTS> {
    unreachable!("the process's signal table is not built under loom")
}

/// Per signal kind: handler installed.
static INSTALLED: [AtomicBool; KINDS] = [const { AtomicBool::new(false) }; KINDS];
static INSTALL_LOCK: Mutex<()> = Mutex::new(());

/// A signal ringloop can wait for.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Interrupt = 0,
    Terminate = 1,
    Hangup = 2,
    User1 = 3,
    User2 = 4,
}

impl Kind {
    fn signo(self) -> libc::c_int {
        match self {
            Kind::Interrupt => libc::SIGINT,
            Kind::Terminate => libc::SIGTERM,
            Kind::Hangup => libc::SIGHUP,
            Kind::User1 => libc::SIGUSR1,
            Kind::User2 => libc::SIGUSR2,
        }
    }

    /// The kind of `signo`, for the handler (which is installed only for these).
    fn of(signo: libc::c_int) -> Option<Kind> {
        match signo {
            libc::SIGINT => Some(Kind::Interrupt),
            libc::SIGTERM => Some(Kind::Terminate),
            libc::SIGHUP => Some(Kind::Hangup),
            libc::SIGUSR1 => Some(Kind::User1),
            libc::SIGUSR2 => Some(Kind::User2),
            _ => None,
        }
    }
}

extern "C" fn on_signal(signo: libc::c_int) {
    // SAFETY: __errno_location returns this thread's errno; saving and restoring it keeps the
    // interrupted code's errno intact, as a handler must.
    let saved = unsafe { *libc::__errno_location() };
    let one: u64 = 1;
    table().deliver(Kind::of(signo).map(|k| k as usize), |fd| {
        // SAFETY: write(2) is async-signal-safe; `fd` stays open while this handler runs
        // (see `Table::unregister`).
        unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
    });
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
}

/// Installs the handler for `kind` if it is not yet (once per process).
pub(crate) fn install(kind: Kind) -> io::Result<()> {
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
pub(crate) struct Registered {
    fd: OwnedFd,
    slot: usize,
}

impl Registered {
    /// A new eventfd, in a free slot of `WAITERS`.
    pub(crate) fn new() -> io::Result<Arc<Registered>> {
        // SAFETY: eventfd takes no pointers.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor that nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        match table().register(raw) {
            Some(slot) => Ok(Arc::new(Registered { fd, slot })),
            None => Err(io::Error::other(format!(
                "ringloop::signal: more than {SLOTS} signal futures are waiting at once"
            ))),
        }
    }

    /// The eventfd the handler writes to on every delivery.
    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// How many times `kind` was delivered since the process started.
pub(crate) fn generation(kind: Kind) -> u64 {
    table().generation(kind as usize)
}

impl Drop for Registered {
    fn drop(&mut self) {
        // Returns once no handler can still be writing to our eventfd.
        table().unregister(self.slot);
        // `fd` closes after this, when the field drops.
    }
}
