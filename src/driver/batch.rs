//! Batch waits (`Builder::batch_wait`): how many completions a blocking wait asks for, and
//! how that target follows the load.

use std::time::Duration;

/// Batch waits: when completions come in bunches, a blocking wait asks for `target` of them
/// and gives them `wait_us` to arrive (the kernel's min-wait: past it, one is enough), so one
/// `io_uring_enter` takes in more of them. A wait with a min-wait arms a kernel timer, so a
/// target is either one (a plain wait for the first completion) or at least [`MIN_BATCH`],
/// and never more than a quarter of the ops that could complete: too few in flight to
/// gather [`MIN_BATCH`], and the loop waits for one, as without batching. The target adapts:
/// from one it rises to [`MIN_BATCH`] once `grow_after` waits in a row brought in two or
/// more, from there it doubles once as many brought in twice the target, and it halves (to
/// one, below [`MIN_BATCH`]) when a wait falls short. A wait that fell short ran out its
/// min-wait, which costs a timer interrupt, so each shortfall also doubles `grow_after` (up
/// to [`MAX_GROW_AFTER`]) and each wait for more than one that got them takes one off it
/// (down to [`GROW_AFTER`]): where bunches come and go, the target grows ever more warily.
///
/// Counts alone do not see latency: at a steady moderate rate, eight completions may well
/// arrive within the min-wait, each request having waited for the others. So the target is
/// also held to the *pace* of the last turn (completions per turn over the turn's length,
/// the wait included): no more than would arrive within half of `wait_us` at that pace
/// ([`PACE_SHARE`]). A wait for more than that counts as a shortfall, even when it got them.
#[derive(Clone, Copy)]
pub(super) struct Batch {
    pub(super) wait_us: u32,
    pub(super) target: u32,
    /// Waits in a row that brought in at least twice the target.
    pub(super) streak: u32,
    /// The streak that doubles the target: [`GROW_AFTER`], more after shortfalls.
    pub(super) grow_after: u32,
    /// When the last wait ended: the start of the turn whose pace the next wait measures.
    pub(super) last_wait_end: Option<std::time::Instant>,
}

impl Batch {
    pub(super) fn new(wait_us: u32) -> Batch {
        Batch {
            wait_us,
            target: 1,
            streak: 0,
            grow_after: GROW_AFTER,
            last_wait_end: None,
        }
    }
}

/// The overall timeout of a batch wait when no timer is due: long enough to stand for "none"
/// (the loop just waits again if it expires), short enough for any kernel's time arithmetic.
/// Its only role is to make the min-wait a wait for the first completion once it runs out
/// (see `Inner::enter`).
pub(super) const BATCH_IDLE_TIMEOUT_SECS: u64 = 3600;

/// Waits in a row that must bring in twice the target before it doubles. One bunch is not
/// a pattern: growing on each makes the target swing where completions trickle in (a wait
/// that took in a bunch, then a wait for more that falls short after sleeping), which at
/// large messages doubles the loop's sleeps per request. Four in a row grows it too late to
/// batch a busy closed loop; two does both (the runs: this constant's commit).
const GROW_AFTER: u32 = 2;

/// The fewest completions a batch wait asks for. Each wait with a min-wait arms a kernel
/// timer, which must save more than it costs: asking for two or four saves a wake-up or two
/// at best, and where a loop got them in most waits (a connection per request, 16 at a
/// time) the timers cost more CPU than the wake-ups they saved.
const MIN_BATCH: u32 = 8;

/// The most waits in a row that growing the target can take after shortfalls. With a
/// connection per request, 16 at a time, bunches come and go: growing after two, the
/// target rose and fell back over and over, each fall a min-wait run out.
const MAX_GROW_AFTER: u32 = 64;

/// The share of the batch wait (one in this many) that a target may take to gather at the
/// last turn's pace. Counted by completions alone, a steady moderate rate meets any target,
/// each request waiting for the others: an open loop's median latency rose several times
/// over. A quarter kept that latency but stopped batching in busy closed loops; half keeps
/// both. The runs behind it: `docs/tuning.md` and this constant's commit.
const PACE_SHARE: u64 = 2;

impl Batch {
    /// How many completions the next wait asks for, with `cap` (a quarter of the ops that
    /// could complete) bounding it: the target, or one where the cap leaves fewer than
    /// [`MIN_BATCH`].
    #[inline]
    pub(super) fn want(&self, cap: u32) -> u32 {
        let want = self.target.min(cap);
        if want >= MIN_BATCH {
            want
        } else {
            1
        }
    }

    /// How many completions would arrive within half the wait (see [`PACE_SHARE`])
    /// at the pace of a turn that took `turn` and brought in `got`.
    pub(super) fn pace(&self, got: u32, turn: Duration) -> u32 {
        let turn_us = (turn.as_micros() as u64).max(1);
        let n = u64::from(got) * u64::from(self.wait_us) / (PACE_SHARE * turn_us);
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Adapts the target after a wait that asked for `want(cap)` completions and brought in
    /// `got`, in a turn whose [`pace`](Batch::pace) was `pace`.
    pub(super) fn adjust(&mut self, got: u32, cap: u32, pace: u32) {
        let asked = self.want(cap);
        if asked > 1 && (got < asked || pace < asked) {
            // A wait for more than one that fell short (its min-wait ran out), or that the
            // pace says kept requests waiting for each other: back off.
            self.streak = 0;
            self.grow_after = self.grow_after.saturating_mul(2).min(MAX_GROW_AFTER);
            self.target = asked / 2;
            if self.target < MIN_BATCH {
                self.target = 1;
            }
            return;
        }
        if asked > 1 {
            // A wait for more than one that got them, quickly: the growth held.
            self.grow_after = (self.grow_after - 1).max(GROW_AFTER);
        }
        if got >= asked.saturating_mul(2) {
            self.streak += 1;
            if self.streak >= self.grow_after {
                self.streak = 0;
                let next = if asked == 1 {
                    MIN_BATCH
                } else {
                    asked.saturating_mul(2)
                }
                .min(cap)
                .min(pace);
                // Below `MIN_BATCH`, too few ops are in flight (or arrive too slowly) for a
                // batch to pay its timer.
                if next >= MIN_BATCH {
                    self.target = next;
                }
            }
        } else {
            self.streak = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Batch, GROW_AFTER, MIN_BATCH};

    /// A pace that bounds nothing: completions arrive as fast as anyone could ask.
    const FAST: u32 = u32::MAX;

    #[test]
    fn batch_target_jumps_to_min_batch_doubles_and_falls_back_to_one() {
        let mut b = Batch::new(20);
        // A quiet loop: one completion per wait never grows the target.
        for _ in 0..10 {
            b.adjust(1, 64, FAST);
        }
        assert_eq!(b.target, 1);
        // One bunch is not a pattern, and a wait that was not a bunch breaks the streak.
        for _ in 0..GROW_AFTER - 1 {
            b.adjust(64, 64, FAST);
        }
        b.adjust(1, 64, FAST);
        b.adjust(64, 64, FAST);
        assert_eq!(b.target, 1);
        b.adjust(1, 64, FAST);
        // GROW_AFTER bunches in a row: straight to MIN_BATCH, then doubling, up to the cap.
        for want in [MIN_BATCH, 2 * MIN_BATCH, 4 * MIN_BATCH, 32, 32] {
            for _ in 0..GROW_AFTER {
                b.adjust(100, 32, FAST);
            }
            assert_eq!(b.target, want);
            assert_eq!(b.want(32), want);
        }
        // Enough to meet the target but not twice it: unchanged.
        b.adjust(40, 32, FAST);
        assert_eq!(b.target, 32);
        // A wait that fell short halves it; below MIN_BATCH it is one.
        for want in [16, 8, 1, 1] {
            b.adjust(0, 32, FAST);
            assert_eq!(b.target, want);
        }
    }

    #[test]
    fn too_few_ops_in_flight_for_min_batch_mean_waits_for_one() {
        // Where a quarter of the ops in flight is under MIN_BATCH (16 connections at a time),
        // bunches of two or four never raise the target: a timer would cost more than the
        // wake-ups it saved.
        let cap = MIN_BATCH - 1;
        let mut b = Batch::new(20);
        for _ in 0..100 {
            b.adjust(4, cap, FAST);
        }
        assert_eq!(b.target, 1);
        assert_eq!(b.want(cap), 1);
        // A target set while more were in flight is not asked for once fewer are, and a
        // wait for one that brings one is no shortfall.
        b.target = 2 * MIN_BATCH;
        assert_eq!(b.want(cap), 1);
        b.adjust(1, cap, FAST);
        assert_eq!((b.target, b.grow_after), (2 * MIN_BATCH, GROW_AFTER));
        assert_eq!(b.want(64), 2 * MIN_BATCH);
    }

    #[test]
    fn each_shortfall_makes_the_next_growth_wait_for_a_longer_streak() {
        let mut b = Batch::new(20);
        let grow = |b: &mut Batch| {
            let mut waits = 0;
            while b.target == 1 {
                b.adjust(64, 16, FAST);
                waits += 1;
            }
            waits
        };
        assert_eq!(grow(&mut b), GROW_AFTER);
        // Each wait for MIN_BATCH that brings one ran out its min-wait: the streak doubles.
        let mut needed = Vec::new();
        for _ in 0..7 {
            b.adjust(1, 16, FAST);
            assert_eq!(b.target, 1);
            needed.push(grow(&mut b));
        }
        assert_eq!(needed, [4, 8, 16, 32, 64, 64, 64]);
        // Waits that meet a target above one take it back down, one each, to GROW_AFTER.
        for _ in 0..10 {
            b.adjust(MIN_BATCH, 16, FAST);
        }
        assert_eq!(b.target, MIN_BATCH);
        assert_eq!(b.grow_after, 64 - 10);
        for _ in 0..100 {
            b.adjust(MIN_BATCH, 16, FAST);
        }
        assert_eq!(b.grow_after, GROW_AFTER);
        // An empty wait for one (a signal, a deadline) ran no min-wait: nothing changes.
        let mut q = Batch::new(20);
        q.adjust(0, 16, FAST);
        assert_eq!(q.grow_after, GROW_AFTER);
    }

    #[test]
    fn a_pace_too_slow_to_gather_the_target_in_half_the_wait_keeps_it_at_one() {
        let mut b = Batch::new(100);
        // 64 connections at 50,000 requests a second, two completions each: a turn of 40 µs
        // brings in four, and eight would take 80 µs of a 100 µs wait; five arrive in half.
        let slow = b.pace(4, Duration::from_micros(40));
        assert_eq!(slow, 5);
        for _ in 0..100 {
            b.adjust(4, 64, slow);
        }
        assert_eq!(b.target, 1);
        // The same counts at a saturating pace (a turn of 10 µs): twenty in half the wait,
        // and the target grows.
        let fast = b.pace(4, Duration::from_micros(10));
        assert!(fast >= MIN_BATCH, "{fast}");
        for _ in 0..GROW_AFTER {
            b.adjust(4, 64, fast);
        }
        assert_eq!(b.target, MIN_BATCH);
        // Growth stops at what the pace supports, not at the cap.
        let mut g = Batch::new(100);
        for _ in 0..20 {
            g.adjust(64, 64, 2 * MIN_BATCH);
        }
        assert_eq!(g.target, 2 * MIN_BATCH);
        // Once the pace drops, a wait that got its target still counts as a shortfall: the
        // requests in it waited for each other.
        b.adjust(MIN_BATCH, 64, slow);
        assert_eq!((b.target, b.grow_after), (1, 2 * GROW_AFTER));
    }

    #[test]
    fn pace_is_bounded_for_an_instant_turn_and_for_huge_counts() {
        let b = Batch::new(u32::MAX);
        assert_eq!(b.pace(u32::MAX, Duration::ZERO), u32::MAX);
        assert_eq!(Batch::new(100).pace(0, Duration::from_micros(5)), 0);
    }
}
