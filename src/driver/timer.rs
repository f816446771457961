//! The loop's one kernel timer: a TIMEOUT kept armed at the earliest deadline of the loop's
//! timer wheel, moved earlier with `IORING_TIMEOUT_UPDATE`, never later.

use std::cell::Cell;
use std::io;

use io_uring::{opcode, types};

use super::{Driver, TIMER_UPDATE_USER_DATA, TIMER_USER_DATA};

/// The loop's timer (see [`Driver::arm_timer`]), shared by the reaper, which ends it, and
/// the turn, which checks it on every pass without borrowing the driver.
pub(crate) struct TimerState {
    /// It expired (its CQE was reaped) and the turn has not yet looked.
    pub(super) fired: Cell<bool>,
    /// Its deadline (`CLOCK_MONOTONIC` ns) while it is in the kernel; `NOT_ARMED` otherwise.
    pub(super) armed: Cell<u64>,
    /// Not used: each wait is given the next deadline instead, and the turn looks at the
    /// wheel every time. So with batch waits (whose min-wait must be bounded by that deadline
    /// anyway), with `Builder::kernel_timer(false)`, and once the kernel refused the timer or
    /// an update of it (a CQE with an error that does not mean "already ended").
    pub(super) per_wait: Cell<bool>,
    /// What the timer's SQEs point at. The kernel copies it when it prepares them, in the
    /// `io_uring_enter` that submits them. It lives here, in the `Rc` the driver shares,
    /// and not in the driver's `Inner`, whose every `&mut` borrow would claim it too: the
    /// kernel reads it while the driver is borrowed (an enter), through a pointer that must
    /// stay valid across those borrows. A `Cell`, so that the pointer may be written through.
    pub(super) ts: Cell<types::Timespec>,
    /// Tests: make the kernel refuse every update (an invalid deadline).
    #[cfg(test)]
    pub(super) refuse_updates: Cell<bool>,
}

pub(super) const NOT_ARMED: u64 = u64::MAX;

impl Driver {
    /// Makes the loop's timer expire no later than `deadline_ns` (`CLOCK_MONOTONIC`): armed
    /// if it is not in the kernel, moved earlier (`IORING_TIMEOUT_UPDATE`) if it is and is
    /// due later, left alone if it is due no later. It is never moved later: one that fires
    /// early for nothing costs a turn, one moved later could sleep through a deadline. Its
    /// expiry is an absolute `CLOCK_MONOTONIC` time, so it never drifts; see
    /// [`Driver::take_timer_fired`].
    #[inline]
    pub(crate) fn arm_timer(&self, deadline_ns: u64) -> io::Result<()> {
        let armed = self.0.timer.armed.get();
        if armed <= deadline_ns || self.0.timer.per_wait.get() {
            return Ok(()); // the common case: a later timeout than the one in the kernel
        }
        self.arm_timer_at(deadline_ns, armed != NOT_ARMED)
    }

    #[inline(never)]
    fn arm_timer_at(&self, deadline_ns: u64, update: bool) -> io::Result<()> {
        let mut inner = self.0.inner.borrow_mut();
        if inner.ring.is_none() || inner.closing {
            return Ok(());
        }
        let timer = &self.0.timer;
        timer.ts.set(
            types::Timespec::new()
                .sec(deadline_ns / 1_000_000_000)
                .nsec((deadline_ns % 1_000_000_000) as u32),
        );
        #[cfg(test)]
        if update && timer.refuse_updates.get() {
            // A negative `tv_sec`, which `io_timeout_remove_prep` answers with `EINVAL`.
            timer.ts.set(types::Timespec::new().sec(u64::MAX));
        }
        // The SQEs point at `ts`, which the kernel copies while it submits them (see the
        // field). Two in the SQ at once read the same, latest value: the earliest.
        let ts: *const types::Timespec = timer.ts.as_ptr();
        let sqe = if update {
            // Its CQE says whether the timer was still there (`ENOENT` if it has just expired,
            // whose own CQE then follows), or that the kernel refused the update.
            opcode::TimeoutUpdate::new(TIMER_USER_DATA, ts)
                .flags(types::TimeoutFlags::ABS)
                .build()
                .user_data(TIMER_UPDATE_USER_DATA)
        } else {
            opcode::Timeout::new(ts)
                .flags(types::TimeoutFlags::ABS)
                .build()
                .user_data(TIMER_USER_DATA)
        };
        inner.push(sqe)?;
        self.0.timer.armed.set(deadline_ns);
        Ok(())
    }

    /// Whether the loop's timer expired since the last call (its CQE was reaped): then the
    /// timer wheel has work, and the timer is no longer in the kernel. Always true once the
    /// timer is not used (see `TimerState::per_wait`).
    #[inline]
    pub(crate) fn take_timer_fired(&self) -> bool {
        // Without the timer the wheel is looked at on every turn, as each wait takes the
        // next deadline.
        self.0.timer.fired.replace(false) || self.0.timer.per_wait.get()
    }

    /// Tests: from now on the kernel refuses every update of the loop's timer.
    #[cfg(test)]
    pub(crate) fn refuse_timer_updates(&self) {
        self.0.timer.refuse_updates.set(true);
    }

    /// Whether each wait must be given the next timer's deadline: where the loop's timer is
    /// not used (see `TimerState::per_wait`).
    #[inline]
    pub(crate) fn waits_need_deadline(&self) -> bool {
        self.0.timer.per_wait.get()
    }
}
