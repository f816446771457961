//! The ring itself: pushing SQEs (never dropping one), `io_uring_enter` with its waits and
//! transient errors, and what close does with the ops still in the kernel. The reaper that
//! applies each CQE to its slot is in `reap`.

use std::io;
use std::time::Duration;

use io_uring::{opcode, squeue, types};

use crate::sys::{Ring, WaitArgs, ENTER_NO_IOWAIT};

use super::batch::BATCH_IDLE_TIMEOUT_SECS;
use super::slot::Lifecycle;
use super::{closed_error, Inner, CANCEL_USER_DATA};

/// Flags for a blocking wait. With `IORING_ENTER_NO_IOWAIT` (Linux 6.15+) the wait is not
/// accounted as iowait (see `Builder::iowait`). GETEVENTS is always passed: under
/// DEFER_TASKRUN nothing completes without it.
fn wait_flags(no_iowait: bool) -> u32 {
    if no_iowait {
        ENTER_NO_IOWAIT
    } else {
        0
    }
}

/// How many times a transient `io_uring_enter` failure (`EAGAIN`, `EBUSY`, `ENOMEM`) is
/// retried, after reaping, before it is returned.
const TRANSIENT_RETRIES: u32 = 1000;

impl Inner {
    pub(super) fn ring(&mut self) -> io::Result<&mut Ring> {
        self.ring.as_mut().ok_or_else(closed_error)
    }

    /// Pushes one SQE, submitting first if the SQ is full. Never drops it.
    #[inline]
    pub(super) fn push(&mut self, sqe: squeue::Entry) -> io::Result<()> {
        if let Some(ring) = self.ring.as_mut() {
            // SAFETY: every pointer in `sqe` refers to memory owned by the op's future or by
            // its slot, which stays alive until the op's final CQE (see the module contract);
            // cancel SQEs carry no pointers.
            if unsafe { ring.submission().push(&sqe) }.is_ok() {
                return Ok(());
            }
        }
        self.push_full(sqe)
    }

    /// [`push`](Inner::push) when the SQ is full (or the ring is gone).
    #[cold]
    #[inline(never)]
    fn push_full(&mut self, sqe: squeue::Entry) -> io::Result<()> {
        loop {
            let ring = self.ring()?;
            // SAFETY: every pointer in `sqe` refers to memory owned by the op's future or by
            // its slot, which stays alive until the op's final CQE (see the module contract);
            // cancel SQEs carry no pointers.
            if unsafe { ring.submission().push(&sqe) }.is_ok() {
                return Ok(());
            }
            // Full: hand the queued SQEs to the kernel to make room, reaping as we go. What
            // is reaped here may wake tasks after the turn decided it had nothing to run (the
            // wake-up read's push, a close's): the park that follows must not block.
            self.enter(0, None, 0)?;
            self.reaped_in_push = true;
        }
    }

    pub(super) fn push_cancel(&mut self, key: usize) -> io::Result<()> {
        let sqe = opcode::AsyncCancel::new(key as u64)
            .build()
            .user_data(CANCEL_USER_DATA);
        self.push(sqe)
    }

    pub(super) fn arm_wake(&mut self) -> io::Result<()> {
        if self.wake_armed || self.ring.is_none() {
            return Ok(());
        }
        let ptr: *mut u64 = self.wake_buf.as_ptr();
        let key = self.ops.insert(Lifecycle::Internal);
        let sqe = opcode::Read::new(types::Fd(self.wake_fd), ptr.cast(), 8)
            .build()
            .user_data(key as u64);
        match self.push(sqe) {
            Ok(()) => {
                self.wake_armed = true;
                Ok(())
            }
            Err(e) => {
                self.ops.remove(key);
                Err(e)
            }
        }
    }

    /// One `io_uring_enter`: submits every queued SQE and, with `want > 0`, waits for `want`
    /// completions or `timeout`; then reaps. With `min_wait_us > 0` (a batch wait) the kernel
    /// returns after that long if at least one completion is in, short of `want`. `EINTR` and
    /// an expired timeout are not errors; `EBUSY`/`EAGAIN`/`ENOMEM` (completions backed up,
    /// or the kernel short of memory) reap first and retry.
    ///
    /// A wait that submits tried sends (see `Driver::submit_detached_tried`) asks for one more
    /// completion per try: the kernel posts a try's CQE while it submits it, before it waits,
    /// so the wait still ends at the `want`th other completion.
    pub(super) fn enter(
        &mut self,
        want: u32,
        timeout: Option<Duration>,
        min_wait_us: u32,
    ) -> io::Result<()> {
        // Tries whose success posts no CQE are confirmed after the wait (see `quiet`): where
        // that is waited for, only submit.
        let want = if self.quiet.is_pending() {
            self.quiet_want(want)
        } else {
            want
        };
        // Every SQE in the SQ goes in this call, or the kernel does not wait (it returns
        // when it submits fewer): the tries count on the first attempt only. A retry after
        // `EBUSY` (say) may follow their reap, and asking for them again could outwait the
        // completion the caller wants.
        let mut trials = std::mem::take(&mut self.trials);
        self.tries_entered = std::mem::take(&mut self.tries_queued);
        // Closes of sockets complete while they are submitted, like tries (see `close`).
        let closes = std::mem::take(&mut self.closes_queued);
        // A try that comes back short is resumed only once the loop sees it, which the room
        // watcher guarantees: without it, every completion is seen at once. So too while
        // receives wait for a pool buffer, which a try's `RecvBuf` would hand on when dropped.
        if trials > 0
            && (!self.room.as_ref().is_some_and(|r| r.is_armed())
                || self.pool.as_ref().is_some_and(|p| p.has_waiters()))
        {
            trials = 0;
        }
        // A min-wait matters only to a wait for more than one: the first completion ends a
        // wait for one whatever the min-wait, which would only arm a timer in the kernel.
        let min_wait_us = if want > 1 { min_wait_us } else { 0 };
        let args = self.wait_args(want, timeout, min_wait_us);
        let flags = wait_flags(self.no_iowait);
        let mut ask = if want > 0 {
            // Both are bounded by the SQ's size: their sum cannot overflow.
            want.saturating_add(trials + closes)
        } else {
            0
        };
        let mut tries = 0;
        loop {
            let ring = self.ring()?;
            let to_submit = ring.submission().len() as u32;
            self.enters += 1;
            let res = match args {
                None => self.enter_fd.enter(to_submit, ask),
                Some(args) => self.enter_fd.enter_with(to_submit, ask, flags, args),
            };
            ask = want;
            match res {
                Ok(_) => break,
                Err(e) => match e.raw_os_error() {
                    Some(libc::ETIME) => break,
                    Some(libc::EINTR) if want > 0 => break,
                    Some(libc::EINTR) => continue,
                    Some(libc::EBUSY | libc::EAGAIN | libc::ENOMEM)
                        if tries < TRANSIENT_RETRIES =>
                    {
                        tries += 1;
                        if self.reap() == 0 {
                            std::thread::yield_now();
                        }
                    }
                    _ => return Err(e),
                },
            }
        }
        if self.quiet.is_pending() {
            self.reap_confirming();
        } else {
            self.reap();
        }
        Ok(())
    }

    /// What a wait for `want` completions needs beyond its count: `None` for a plain enter.
    #[inline]
    fn wait_args(
        &self,
        want: u32,
        timeout: Option<Duration>,
        min_wait_us: u32,
    ) -> Option<WaitArgs> {
        if want == 0 {
            return None;
        }
        match timeout {
            // The kernel's overall timeout starts only after the min-wait: a min-wait
            // longer than `t` would delay the timer due at `t`.
            Some(t) => Some(WaitArgs {
                timeout: Some(t),
                min_wait_us: min_wait_us.min(u32::try_from(t.as_micros()).unwrap_or(u32::MAX)),
            }),
            // A wait with a min-wait and no timer due still needs an overall timeout: without
            // one the kernel ends the wait when the min-wait runs out, with completions or
            // without, so the loop would wake empty every min-wait until the first one
            // came. Given one, the kernel waits on past the min-wait for the first
            // completion, as a plain wait does.
            None if min_wait_us > 0 => Some(WaitArgs {
                timeout: Some(Duration::from_secs(BATCH_IDLE_TIMEOUT_SECS)),
                min_wait_us,
            }),
            // A wait without a timeout still goes through the extended argument where the
            // kernel can be told not to count it as iowait (see `wait_flags`).
            None if self.no_iowait => Some(WaitArgs::default()),
            None => None,
        }
    }

    /// How many slots the kernel still owes a final CQE.
    pub(super) fn awaiting_kernel_count(&self) -> usize {
        self.ops.iter().filter(|(_, s)| s.awaits_kernel()).count()
    }

    /// The slots the kernel still owes a final CQE.
    pub(super) fn awaiting_kernel_keys(&self) -> Vec<usize> {
        self.ops
            .iter()
            .filter(|(_, s)| s.awaits_kernel())
            .map(|(k, _)| k)
            .collect()
    }

    /// Close ran out of time: leak (never free) everything the kernel may still write.
    pub(super) fn abandon(&mut self, pending: usize, timeout: Duration) -> io::Error {
        for key in self.awaiting_kernel_keys() {
            match std::mem::replace(&mut self.ops[key], Lifecycle::Abandoned) {
                Lifecycle::Orphaned(o) => std::mem::forget(o),
                // The owner's last reference would free what the kernel may still read.
                Lifecycle::Detached(o) => std::mem::forget(o),
                Lifecycle::Internal => self.leak_wake_buf(),
                Lifecycle::Streaming(st) => std::mem::forget(st),
                // A live future keeps its own data; it sees `Abandoned` and leaks it.
                _ => {}
            }
        }
        self.owned = 0;
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "closing the event loop: {pending} operation(s) were still in the kernel {timeout:?} \
                 after being cancelled; their buffers were leaked rather than freed, since the \
                 kernel may still write them"
            ),
        )
    }
}

impl Inner {
    /// The wake-up read may still write its buffer: leak it rather than free it.
    fn leak_wake_buf(&mut self) {
        std::mem::forget(std::mem::take(&mut self.wake_buf));
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Only reached once the ring is gone (close ran) or if it never ran: in the latter
        // case the kernel may still own memory in the slots, so leak them rather than free.
        if self.ring.is_some() {
            let ops = std::mem::take(&mut self.ops);
            std::mem::forget(ops);
            self.leak_wake_buf();
        }
    }
}
