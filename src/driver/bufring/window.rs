//! The window: how many free buffers the ring offers the kernel at a time, following how
//! many it takes per enter (see the pool's module doc, "Hot buffers first").

use std::cell::Cell;
use std::time::{Duration, Instant};

/// The least the window offers the kernel (or the whole pool, if it is smaller).
const WINDOW_MIN: u16 = 16;

/// How long the ring must stay above three quarters of the window after every reap before
/// the window halves.
///
/// It is a time, not a count of reaps: a loop that is not saturated takes in a request or
/// two per enter, with the bursts that need the window far apart. Counted in reaps (4,096
/// of them, a few tens of ms there), the 64 × 4 KiB echo shrank the window between bursts
/// and ran it dry on the next one, several times a second. A window that stays too large
/// for a while costs only cache footprint, which is what the pool cost before it had one.
const SHRINK_AFTER: Duration = Duration::from_secs(1);

/// Reaps that took buffers between two looks at the clock.
const CLOCK_EVERY: u16 = 1024;

/// How many free buffers the ring offers the kernel: the pool's hot working set.
///
/// - It doubles when the kernel took more than half of it in one enter (the next burst
///   could drain it), and when receives found the ring empty (once for all that did between
///   two reaps that took buffers).
/// - After a reap that left the ring below half of it, the ring is filled back up from the
///   spares. Otherwise the buffers returned keep it full (see `PoolInner::give_back`): in a
///   server they come back before the next enter. Topping up from three quarters instead,
///   the 16-connection echo refilled the ring from the spares after each reap, before the
///   replies' buffers came back, and those then went to the spares: every buffer passed
///   through them, about 15 instructions per request.
/// - It halves when, for [`SHRINK_AFTER`], no reap left the ring below three quarters: the
///   kernel never took more than a quarter of it in one enter. After a halving, such an
///   enter takes half of the new window, which does not grow it back.
///
/// Its fields are `Cell`s, read and written in place: the pool lives on its loop's thread,
/// and this runs on each reap that took buffers (a copy of the whole struct in and out cost
/// about 25 instructions there).
#[derive(Debug)]
pub(crate) struct Window {
    /// How many free buffers the ring should hold.
    pub(super) target: Cell<u16>,
    /// A reap left the ring below three quarters since `since`.
    busy: Cell<bool>,
    /// Reaps that took buffers since the clock was last read.
    turns: Cell<u16>,
    since: Cell<Instant>,
    /// A receive found the ring empty since the kernel last took buffers (the window has
    /// grown for it).
    starved: Cell<bool>,
    /// The pool's size: the window never exceeds it.
    max: u16,
    min: u16,
}

impl Window {
    pub(super) fn new(max: u16, now: Instant) -> Window {
        let min = WINDOW_MIN.min(max);
        Window {
            target: Cell::new(min),
            busy: Cell::new(false),
            turns: Cell::new(0),
            since: Cell::new(now),
            starved: Cell::new(false),
            max,
            min,
        }
    }

    /// A reap saw the kernel take `taken` buffers (one or more), which left `level` in the
    /// ring. Returns whether the ring should be filled back up now (it is below half).
    /// `now` is called only when the window grows and every [`CLOCK_EVERY`] calls.
    #[inline]
    pub(super) fn on_reap(&self, taken: u16, level: u16, now: impl FnOnce() -> Instant) -> bool {
        self.starved.set(false);
        let target = self.target.get();
        if taken > target / 2 {
            self.grow(now());
            return true;
        }
        if level < target - target / 4 {
            self.busy.set(true);
        }
        let turns = self.turns.get() + 1;
        self.turns.set(turns);
        if turns >= CLOCK_EVERY {
            self.review(now());
        }
        level < target / 2
    }

    /// A receive found the ring empty. The first such since the kernel last took buffers
    /// doubles the window: one burst can run many receives dry at once.
    pub(super) fn on_starved(&self, now: impl FnOnce() -> Instant) {
        if !self.starved.replace(true) {
            self.grow(now());
        }
    }

    /// Doubles the window; the quiet period starts again.
    #[cold]
    pub(super) fn grow(&self, now: Instant) {
        self.target
            .set(self.target.get().saturating_mul(2).min(self.max));
        self.busy.set(false);
        self.turns.set(0);
        self.since.set(now);
    }

    /// A reap that left the ring below three quarters starts the quiet period again; a quiet
    /// period that has lasted [`SHRINK_AFTER`] halves the window.
    #[cold]
    pub(super) fn review(&self, now: Instant) {
        self.turns.set(0);
        if self.busy.replace(false) {
            self.since.set(now);
        } else if self.target.get() != 0 // 0: unregistered, for good
            && now.saturating_duration_since(self.since.get()) >= SHRINK_AFTER
        {
            self.target.set((self.target.get() / 2).max(self.min));
            self.since.set(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A window over a pool of 1024, set to `target`, and the instant it was made at.
    fn window(target: u16) -> (Window, Instant) {
        let t = Instant::now();
        let w = Window::new(1024, t);
        w.target.set(target);
        (w, t)
    }

    /// `n` reaps that each took `taken` buffers and left `level` in the ring, at `now`.
    fn reaps(w: &Window, n: usize, taken: u16, level: u16, now: Instant) {
        for _ in 0..n {
            w.on_reap(taken, level, || now);
        }
    }

    #[test]
    fn the_window_starts_small_and_never_exceeds_the_pool() {
        let t = Instant::now();
        assert_eq!(Window::new(1024, t).target.get(), WINDOW_MIN);
        let small = Window::new(4, t);
        assert_eq!(small.target.get(), 4);
        reaps(&small, 10, 4, 0, t);
        assert_eq!(small.target.get(), 4);
    }

    #[test]
    fn an_enter_that_takes_more_than_half_doubles_it() {
        let (w, t) = window(WINDOW_MIN);
        w.on_reap(WINDOW_MIN / 2, WINDOW_MIN / 2, || t);
        assert_eq!(w.target.get(), WINDOW_MIN, "half is not more than half");
        assert!(w.on_reap(WINDOW_MIN / 2 + 1, WINDOW_MIN / 2 - 1, || t));
        assert_eq!(w.target.get(), 2 * WINDOW_MIN);
    }

    #[test]
    fn the_ring_is_filled_up_only_once_it_is_down_by_half() {
        let (w, t) = window(128);
        assert!(!w.on_reap(1, 127, || t));
        assert!(!w.on_reap(40, 64, || t));
        assert!(w.on_reap(1, 63, || t));
    }

    #[test]
    fn running_dry_doubles_it_once_until_the_kernel_takes_buffers_again() {
        let (w, t) = window(WINDOW_MIN);
        // However many receives found the ring empty after one reap: one doubling.
        w.on_starved(|| t);
        w.on_starved(|| t);
        assert_eq!(w.target.get(), 2 * WINDOW_MIN);
        w.on_reap(1, 2 * WINDOW_MIN, || t);
        w.on_starved(|| t);
        assert_eq!(w.target.get(), 4 * WINDOW_MIN);
    }

    #[test]
    fn it_halves_only_after_a_quiet_second() {
        let (w, t) = window(128);
        // Down by a quarter at most is quiet, but not for long enough yet.
        reaps(&w, 4 * CLOCK_EVERY as usize, 32, 96, t + SHRINK_AFTER / 2);
        assert_eq!(w.target.get(), 128);
        reaps(&w, CLOCK_EVERY as usize, 32, 96, t + SHRINK_AFTER);
        assert_eq!(w.target.get(), 64);
        // The next halving needs a quiet period of its own, measured against 64.
        reaps(&w, CLOCK_EVERY as usize, 16, 48, t + SHRINK_AFTER * 3 / 2);
        assert_eq!(w.target.get(), 64);
        reaps(&w, CLOCK_EVERY as usize, 16, 48, t + SHRINK_AFTER * 2);
        assert_eq!(w.target.get(), 32);
    }

    #[test]
    fn one_reap_that_leaves_the_ring_low_restarts_the_quiet_period() {
        let (w, t) = window(128);
        reaps(&w, CLOCK_EVERY as usize - 1, 1, 127, t);
        // Down by more than a quarter, not by more than half: no growth, but not quiet.
        w.on_reap(40, 88, || t + SHRINK_AFTER / 2);
        assert_eq!(w.target.get(), 128);
        reaps(&w, CLOCK_EVERY as usize, 1, 127, t + SHRINK_AFTER);
        assert_eq!(w.target.get(), 128, "quiet for half a second only");
        reaps(&w, CLOCK_EVERY as usize, 1, 127, t + SHRINK_AFTER * 3 / 2);
        assert_eq!(w.target.get(), 64);
    }

    #[test]
    fn it_never_shrinks_below_the_minimum() {
        let (w, t) = window(WINDOW_MIN);
        for k in 1..10u32 {
            reaps(
                &w,
                CLOCK_EVERY as usize,
                1,
                WINDOW_MIN,
                t + SHRINK_AFTER * k,
            );
        }
        assert_eq!(w.target.get(), WINDOW_MIN);
    }
}
