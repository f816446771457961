//! Signals as futures: SIGINT ([`ctrl_c`]), SIGTERM ([`terminate`]), SIGHUP ([`hangup`]),
//! SIGUSR1 and SIGUSR2 ([`user_defined1`], [`user_defined2`]).
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
use std::sync::Arc;

use io_uring::{opcode, squeue, types};

use crate::driver::{Op, OpCode};
pub(crate) use crate::sys::signal::Kind;
use crate::sys::signal::{generation, install, Registered};

/// A read of a registered eventfd; the op keeps the registration (and so the fd) alive.
struct ReadEvent {
    reg: Arc<Registered>,
    /// Written by the kernel until the CQE; boxed so it stays put.
    buf: Box<u64>,
}

// SAFETY: the pointer is the boxed u64 owned by this op; the fd is kept open by `reg`.
unsafe impl OpCode for ReadEvent {
    fn sqe(&mut self) -> squeue::Entry {
        let fd = self.reg.fd();
        opcode::Read::new(types::Fd(fd), (&mut *self.buf as *mut u64).cast(), 8).build()
    }
}

/// Installs the handler for `kind` now and returns its current generation, for
/// [`wait_after`]: a caller that must not miss a signal sent before it gets to wait.
pub(crate) fn watch(kind: Kind) -> io::Result<u64> {
    install(kind)?;
    Ok(generation(kind))
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
        if generation(kind) != seen {
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

    /// Resolves once SIGINT or SIGTERM was delivered since the watch began or since this last
    /// resolved, with how many deliveries that was (two signals in quick succession may be
    /// seen at once).
    pub(crate) async fn signalled(&mut self) -> io::Result<u64> {
        loop {
            let now = [generation(Kind::Interrupt), generation(Kind::Terminate)];
            let new: u64 = now
                .iter()
                .zip(self.seen)
                .map(|(now, seen)| now.wrapping_sub(seen))
                .sum();
            if new > 0 {
                self.seen = now;
                return Ok(new);
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

/// Resolves when the process receives SIGHUP after this future is first polled: by
/// convention, "reload your configuration". Await it in a loop to serve each reload; a
/// SIGHUP delivered while the loop is between two awaits (reloading) is not seen.
///
/// # Errors
///
/// As for [`ctrl_c`].
pub async fn hangup() -> io::Result<()> {
    wait(Kind::Hangup).await
}

/// Resolves when the process receives SIGUSR1 after this future is first polled.
///
/// # Errors
///
/// As for [`ctrl_c`].
pub async fn user_defined1() -> io::Result<()> {
    wait(Kind::User1).await
}

/// Resolves when the process receives SIGUSR2 after this future is first polled.
///
/// # Errors
///
/// As for [`ctrl_c`].
pub async fn user_defined2() -> io::Result<()> {
    wait(Kind::User2).await
}
