//! The reaper: each CQE applied to its slot, with the driver borrowed, so nothing here wakes
//! a waker or drops a user value except through [`Released`] (and the runtime's
//! `wake_inline` hooks).

use super::bufring::BufPool;
use super::completion::Completion;
use super::slot::{Lifecycle, OnCqe};
use super::OpTable;
use super::{Inner, Released, CLOSE_USER_DATA, TIMER_UPDATE_USER_DATA, TIMER_USER_DATA};

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

impl Inner {
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
}
