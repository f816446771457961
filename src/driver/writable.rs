//! The loop's room watcher: what wakes a sleeping loop when a socket whose send buffer
//! filled has room again. One multishot poll on an epoll descriptor (see [`Epoll`]) to which
//! sockets are added edge-triggered for POLLOUT: a TCP socket wakes its POLLOUT waiters only
//! once a send has found its buffer full and room has come back, so the poll completes once
//! per such episode, whichever socket had it. A send tried at submit that came back short
//! (see `Driver::submit_detached_tried`) is resumed once the loop sees its completion; this
//! is what makes the loop see it while nothing else happens.
//!
//! Per socket it costs the kernel's epoll entry and no memory here; the entry holds no
//! reference to the socket and goes when the socket is closed.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use io_uring::{opcode, types};

use crate::sys::Epoll;

use super::completion::{Completion, Detached};
use super::Driver;

pub(crate) struct RoomWatch {
    epoll: Epoll,
    /// The poll is in the kernel. Armed with the first socket to watch, so that a loop that
    /// never tries a send has none; cleared by its final CQE (cancelled at close, or ended by
    /// the kernel), after which the next [`watch`](RoomWatch::watch) arms it again.
    armed: AtomicBool,
}

impl RoomWatch {
    /// A watcher, not yet armed; `None` if the kernel refuses an epoll instance.
    pub(super) fn new() -> Option<Arc<RoomWatch>> {
        let epoll = Epoll::new().ok()?;
        Some(Arc::new(RoomWatch {
            epoll,
            armed: AtomicBool::new(false),
        }))
    }

    /// Whether the poll is in the kernel.
    #[inline]
    pub(super) fn is_armed(&self) -> bool {
        self.armed.load(Ordering::Relaxed)
    }

    /// Arms the poll on `driver`'s ring, as an op the watcher owns; false if it cannot be
    /// (the loop is closing, say).
    #[cold]
    fn arm(self: &Arc<Self>, driver: &Driver) -> bool {
        let sqe = opcode::PollAdd::new(types::Fd(self.epoll.as_raw_fd()), libc::POLLIN as u32)
            .multi(true)
            .build();
        let armed = driver.submit_detached(sqe, self.clone()).is_ok();
        self.armed.store(armed, Ordering::Relaxed);
        armed
    }

    /// Adds `fd` to what the watcher wakes the loop for, arming the watcher if it is not;
    /// false if it cannot.
    pub(super) fn watch(self: &Arc<Self>, driver: &Driver, fd: RawFd) -> bool {
        (self.is_armed() || self.arm(driver)) && self.epoll.watch_writable(fd).is_ok()
    }

    /// Stops watching `fd` (a socket handed back to its owner: its epoll entry would outlive
    /// the loop's use of it).
    pub(super) fn unwatch(&self, fd: RawFd) -> std::io::Result<()> {
        self.epoll.unwatch(fd)
    }
}

impl Detached for RoomWatch {
    /// Its CQEs only wake the loop; after the final one it must be armed again.
    fn complete(self: Arc<Self>, _driver: &Driver, c: Completion) {
        if !c.more() {
            self.armed.store(false, Ordering::Relaxed);
        }
    }
}
