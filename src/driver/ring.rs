//! The ring itself: pushing SQEs (never dropping one), `io_uring_enter` with its waits and
//! transient errors, and the reaper that applies each CQE to its slot. All of it runs with
//! the driver borrowed, so nothing here wakes a waker or drops a user value except through
//! [`Released`] (and the runtime's `wake_inline` hooks).

use std::io;
use std::time::Duration;

use io_uring::{opcode, squeue, types};

use crate::sys::{Ring, WaitArgs, ENTER_NO_IOWAIT};

use super::batch::BATCH_IDLE_TIMEOUT_SECS;
use super::bufring::BufPool;
use super::completion::Completion;
use super::slot::{Lifecycle, OnCqe};
use super::OpTable;
use super::{
    closed_error, Inner, Released, CANCEL_USER_DATA, CLOSE_USER_DATA, TIMER_UPDATE_USER_DATA,
    TIMER_USER_DATA,
};

/// Applies a CQE of an orphan (an op whose owner is gone): a non-final one releases what it
/// carries in place; the final one (`free`) frees the slot, and the orphan is dropped once the
/// driver's borrow ends. Out of line: a server's turns see few, and their code inlined into
/// `reap`'s loop cost every CQE there a few instructions of register shuffling.
#[cold]
#[inline(never)]
fn orphan_cqe(
    ops: &mut OpTable,
    key: usize,
    c: Completion,
    free: bool,
    released: &mut Released,
    pool: Option<&BufPool>,
) {
    if !free {
        if let Some(Lifecycle::Orphaned(o)) = ops.get_mut(key) {
            // A buffer it gives back may be what tasks wait for: they are woken once the
            // borrow ends, with the rest.
            match pool {
                Some(p) => p.release_with(|| o.release(c), &mut released.wakers),
                None => o.release(c),
            }
        }
    } else if let Lifecycle::Orphaned(o) = ops.remove(key) {
        released.orphans.push((o, c));
    }
}

/// Applies one of the loop's own CQEs, whose `user_data` is no slot: the timer's, a timer
/// update's, a cancel's, a close's.
#[cold]
#[inline(never)]
fn own_cqe(
    ud: u64,
    res: i32,
    timer: &super::TimerState,
    closes_in_flight: &mut u32,
    ring_closes: &mut u64,
) {
    if ud == CLOSE_USER_DATA {
        // Closed, or refused (`EBADF` cannot happen: the descriptor was ours until the SQE
        // took it); either way it is the kernel's business now.
        *closes_in_flight = closes_in_flight.saturating_sub(1);
        if res == 0 {
            *ring_closes += 1;
        }
    } else if ud == TIMER_USER_DATA {
        // The loop's timer: expired (`ETIME`) or ended otherwise; either way it is out of the
        // kernel, and the wheel is to be looked at. Refused (an error other than `ETIME`, or
        // `ECANCELED` from the ring's exit), it is not armed again: the waits take the
        // deadline instead.
        if res < 0 && res != -libc::ETIME && res != -libc::ECANCELED {
            timer.per_wait.set(true);
        }
        timer.armed.set(super::NOT_ARMED);
        timer.fired.set(true);
    } else if ud == TIMER_UPDATE_USER_DATA
        && res < 0
        && ![libc::ENOENT, libc::EALREADY, libc::ECANCELED].contains(&-res)
    {
        // An update refused (not one that found the timer ended or ending, whose own CQE
        // follows): the timer is still due at its later deadline, and an earlier timer would
        // wait for it. From now on every wait takes the next deadline, and the turn looks at
        // the wheel every time.
        timer.per_wait.set(true);
    }
    // CANCEL_USER_DATA: a cancel's own CQE, ignored.
}

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
        self.reap();
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

    /// Applies every available CQE to its slot. Returns how many were reaped.
    #[inline]
    pub(super) fn reap(&mut self) -> usize {
        let n = self.reap_cqes();
        if n >= self.cq_entries {
            self.note_full_cq();
        }
        if !self.throttled.is_empty() {
            self.cancel_throttled();
        }
        n
    }

    /// A reap emptied a full CQ ring: counts an overflow if the kernel holds completions
    /// back (it posts them at the next enter, which every wait makes).
    #[cold]
    fn note_full_cq(&mut self) {
        if self
            .ring
            .as_mut()
            .is_some_and(|r| r.submission().cq_overflow())
        {
            self.cq_full += 1;
        }
    }

    /// [`reap`](Inner::reap) less the cancels of streams that reached their cap: it leaves
    /// those in `throttled`, for once the completion queue is released. Out of line, and with
    /// no use of `self` after its loop: with `self` alive across the loop, the registers that
    /// takes cost every reap a dozen instructions of spills and reloads.
    #[inline(never)]
    fn reap_cqes(&mut self) -> usize {
        let Inner {
            ring,
            ops,
            released,
            detached,
            wake_inline,
            wake_inline_ref,
            wake_armed,
            owned,
            stray_cqes,
            pool,
            timer,
            closes_in_flight,
            ring_closes,
            reaped,
            others_since_park,
            throttled,
            ..
        } = self;
        let Some(ring) = ring.as_mut() else {
            return 0;
        };
        let mut n = 0;
        // Also derivable from the pool's own count (its rise over the reap), but reading that
        // at both ends of every reap, buffers or not, cost 13 instructions per request more.
        let mut picked: u16 = 0;
        let detached_before = detached.len();
        for cqe in ring.completion() {
            n += 1;
            let ud = cqe.user_data();
            if ud >= CLOSE_USER_DATA {
                // The loop's own CQEs (timer, cancels, closes), out of line: a server's turns
                // see few of them, and state kept for them in this loop costs every CQE.
                own_cqe(ud, cqe.result(), timer, closes_in_flight, ring_closes);
                continue;
            }
            let c = Completion {
                res: cqe.result(),
                flags: cqe.flags(),
            };
            // The kernel took this CQE's buffer from the ring. Counted at once, so that a
            // buffer returned later in this reap sees the ring as it is (see
            // `BufPool::picked_one`).
            if c.has_buffer() {
                if let Some(p) = pool {
                    p.picked_one();
                }
                picked = picked.wrapping_add(1);
            }
            let key = ud as usize;
            let Some(slot) = ops.get_mut(key) else {
                *stray_cqes += 1;
                continue;
            };
            let (action, owner_gone) = slot.on_cqe(c);
            if owner_gone {
                *owned -= 1;
            }
            match action {
                OnCqe::Nothing => {}
                OnCqe::Wake(w) => {
                    if let Err(w) = wake_inline(w) {
                        released.wakers.push(w);
                    }
                }
                OnCqe::WakeStream => {
                    if let Lifecycle::Streaming(st) = slot {
                        if let Some(w) = &st.waker {
                            if !wake_inline_ref(w) {
                                released.wakers.push(w.clone());
                            }
                        }
                    }
                }
                OnCqe::Throttle(w) => {
                    released.wakers.extend(w);
                    throttled.push(key);
                }
                OnCqe::ReleaseInPlace => orphan_cqe(ops, key, c, false, released, pool.as_ref()),
                OnCqe::FreeOrphan => orphan_cqe(ops, key, c, true, released, pool.as_ref()),
                OnCqe::Detached => {
                    // The final CQE frees the slot first: its owner may then reuse the key.
                    if !c.more() {
                        if let Lifecycle::Detached(owner) = ops.remove(key) {
                            detached.push((owner, c));
                        }
                    } else if let Lifecycle::Detached(owner) = slot {
                        detached.push((owner.clone(), c));
                    }
                }
                OnCqe::FreeInternal => {
                    ops.remove(key);
                    *wake_armed = false;
                }
            }
        }
        if picked != 0 {
            if let Some(p) = pool {
                p.after_reap(picked);
            }
        }
        // Closes' CQEs count as others: a wait asks for them on top of what it wants (see
        // `enter`), so they end no wait early; at most, a park that also took in queued
        // writes' CQEs returns to the turn rather than waiting again.
        let others = n - (detached.len() - detached_before);
        *reaped = reaped.wrapping_add(n as u64);
        *others_since_park = others_since_park.saturating_add(others as u32);
        n
    }

    #[cold]
    fn cancel_throttled(&mut self) {
        for key in std::mem::take(&mut self.throttled) {
            // If the cancel cannot be queued the op simply stays armed (the cap is a bound on
            // memory, not on correctness); the queue keeps every CQE either way.
            let _ = self.push_cancel(key);
        }
    }

    /// CQEs reaped since `reaped` read `before`, less the closes among them: those that
    /// took `closes_in_flight` down from `closes_before` (nothing else lowers it meanwhile).
    #[inline]
    pub(super) fn reaped_besides_closes(&self, before: u64, closes_before: u32) -> u32 {
        let closes = closes_before.saturating_sub(self.closes_in_flight);
        // Truncated: a wait reaps far fewer than 2^32 completions.
        (self.reaped.wrapping_sub(before) as u32).saturating_sub(closes)
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
