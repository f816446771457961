//! A hierarchical timer wheel: O(1) insert and cancel, no SQE per timer.
//!
//! Six levels of 64 slots; a slot of level `l` spans `64^l` milliseconds, so the wheel covers
//! `64^6` ms (about 2.2 years; later deadlines are parked in the last level and re-filed until
//! due). An entry sits at the lowest level whose span holds both "now" and its deadline. When
//! time reaches a higher-level slot its entries move down ("cascade"); each entry moves at most
//! five times. Entries live in a table (`util::table`) and are linked per slot by index, so
//! there is no unsafe and no allocation per timer beyond the table's amortised growth.
//!
//! Why a wheel and not a heap: a heap costs O(log n) per insert and keeps cancelled timers
//! until their deadline (servers cancel most timeouts: 100k requests/s with 30 s timeouts
//! leave 3M dead heap entries); the wheel unlinks a cancelled timer at once.
//!
//! Resolution is 1 ms: a deadline is rounded up to the next millisecond tick, so a timer never
//! fires early.
//!
//! The wheel reads no clock of its own between firings. The loop keeps one kernel timeout
//! armed no later than every deadline [`Wheel::insert`] returned, and calls
//! [`Wheel::process`] only when it expires, then re-arms it at [`Wheel::next_expiry_ns`]: a
//! pending timer costs a loop turn nothing, and a wait no timer of its own. That is never
//! late: a slot of a higher level whose cascade is woken for late still has all its
//! deadlines ahead, and `process` handles every slot that is due, in order.

use std::task::Waker;
use std::time::{Duration, Instant};

use crate::util::table::Table;

const LEVELS: usize = 6;
const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
/// Ticks the wheel spans.
const SPAN: u64 = 1 << (SLOT_BITS as usize * LEVELS);
const NIL: u32 = u32::MAX;

struct Entry {
    /// Deadline in ticks since `start`.
    when: u64,
    waker: Option<Waker>,
    prev: u32,
    next: u32,
    level: u8,
    slot: u8,
    fired: bool,
}

#[derive(Clone, Copy)]
struct Level {
    occupied: u64,
    heads: [u32; SLOTS],
}

/// The timers of one loop.
pub(crate) struct Wheel {
    start: Instant,
    /// `start` on `CLOCK_MONOTONIC`, in ns, read just after it: never earlier than `start`,
    /// so a kernel timeout at `start_ns + tick` never ends before the tick.
    start_ns: u64,
    /// Ticks processed: every entry due at or before `elapsed` has fired.
    elapsed: u64,
    levels: [Level; LEVELS],
    entries: Table<Entry>,
    /// Entries queued in slots (not yet fired).
    pending: usize,
}

impl Wheel {
    pub(crate) fn new(start: Instant) -> Wheel {
        // Read after `start` (and after `Instant::now`, which is the same clock), so that
        // `start_ns` is no earlier than `start`.
        let since_start = Instant::now().saturating_duration_since(start);
        let now_ns = crate::sys::monotonic_ns();
        let start_ns = now_ns.saturating_sub(u64::try_from(since_start.as_nanos()).unwrap_or(0));
        Wheel {
            start,
            start_ns,
            elapsed: 0,
            levels: [Level {
                occupied: 0,
                heads: [NIL; SLOTS],
            }; LEVELS],
            entries: Table::default(),
            pending: 0,
        }
    }

    /// Timers registered and not yet fired.
    pub(crate) fn pending(&self) -> usize {
        self.pending
    }

    fn tick_ceil(&self, t: Instant) -> u64 {
        let d = t.saturating_duration_since(self.start);
        let ms = d.as_millis();
        let ms = if d.subsec_nanos() % 1_000_000 != 0 {
            ms + 1
        } else {
            ms
        };
        u64::try_from(ms).unwrap_or(u64::MAX)
    }

    fn tick_floor(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.start).as_millis()).unwrap_or(u64::MAX)
    }

    /// Registers a timer: its key, and its deadline rounded up to the wheel's tick as
    /// `CLOCK_MONOTONIC` ns (for the loop's kernel timer); `None` if the deadline has already
    /// passed for the wheel.
    ///
    /// `#[inline]`: a per-request timeout registers one, and without the hint whether it is
    /// inlined into `Sleep::poll` depends on how the crate is split into code-generation
    /// units, which any module's move can change.
    #[inline]
    pub(crate) fn insert(&mut self, deadline: Instant, waker: Waker) -> Option<(usize, u64)> {
        let when = self.tick_ceil(deadline);
        if when <= self.elapsed {
            return None;
        }
        // The slab index fits in u32: 2^32 entries would need over 150 GiB.
        let key = self.entries.insert(Entry {
            when,
            waker: Some(waker),
            prev: NIL,
            next: NIL,
            level: 0,
            slot: 0,
            fired: false,
        });
        self.link(key);
        self.pending += 1;
        Some((key, self.tick_ns(when)))
    }

    /// When [`Wheel::process`] next has work (a timer to fire or a slot to cascade), as
    /// `CLOCK_MONOTONIC` ns; `None` with no timer pending. Never later than any pending
    /// deadline.
    pub(crate) fn next_expiry_ns(&self) -> Option<u64> {
        self.next_tick().map(|tick| self.tick_ns(tick))
    }

    /// The tick at which [`Wheel::process`] next has work; `None` with no timer pending.
    fn next_tick(&self) -> Option<u64> {
        // Checked on every park where waits take the deadline: with no timer pending there is
        // nothing to scan.
        if self.pending == 0 {
            return None;
        }
        self.next_expiration().map(|(_, _, tick)| tick)
    }

    fn tick_ns(&self, tick: u64) -> u64 {
        self.start_ns.saturating_add(tick.saturating_mul(1_000_000))
    }

    /// Whether timer `key` fired; if not, records `waker` for it.
    pub(crate) fn poll(&mut self, key: usize, waker: &Waker) -> bool {
        let Some(e) = self.entries.get_mut(key) else {
            return true;
        };
        if e.fired {
            return true;
        }
        match &e.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => e.waker = Some(waker.clone()),
        }
        false
    }

    /// Forgets timer `key`, fired or not.
    pub(crate) fn remove(&mut self, key: usize) {
        let Some(e) = self.entries.get(key) else {
            return;
        };
        if !e.fired {
            self.unlink(key);
            self.pending -= 1;
        }
        self.entries.remove(key);
    }

    /// The earliest instant at which [`Wheel::process`] has work (a timer to fire or a slot to
    /// cascade); never later than the earliest deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.next_tick()
            .map(|tick| self.start + Duration::from_millis(tick))
    }

    /// Fires every timer due at `now`, pushing their wakers into `wakers`.
    pub(crate) fn process(&mut self, now: Instant, wakers: &mut Vec<Waker>) {
        let now = self.tick_floor(now);
        while let Some((level, slot, tick)) = self.next_expiration() {
            if tick > now {
                break;
            }
            self.elapsed = self.elapsed.max(tick);
            let mut key = self.levels[level].heads[slot];
            self.levels[level].heads[slot] = NIL;
            self.levels[level].occupied &= !(1 << slot);
            while key != NIL {
                let k = key as usize;
                let e = &mut self.entries[k];
                key = e.next;
                e.prev = NIL;
                e.next = NIL;
                if e.when <= now {
                    e.fired = true;
                    self.pending -= 1;
                    if let Some(w) = e.waker.take() {
                        wakers.push(w);
                    }
                } else {
                    self.link(k);
                }
            }
        }
        self.elapsed = self.elapsed.max(now);
    }

    /// (level, slot, tick at which it is due) of the next slot to process.
    fn next_expiration(&self) -> Option<(usize, usize, u64)> {
        let mut best: Option<(usize, usize, u64)> = None;
        for (level, lv) in self.levels.iter().enumerate() {
            if lv.occupied == 0 {
                continue;
            }
            let shift = SLOT_BITS * level as u32;
            let slot_range = 1u64 << shift;
            let level_range = slot_range << SLOT_BITS;
            let now_slot = ((self.elapsed >> shift) as usize) % SLOTS;
            let rotated = lv.occupied.rotate_right(now_slot as u32);
            let slot = (rotated.trailing_zeros() as usize + now_slot) % SLOTS;
            let level_start = self.elapsed & !(level_range - 1);
            let mut tick = level_start + slot as u64 * slot_range;
            if slot < now_slot {
                tick += level_range;
            }
            if best.is_none_or(|(_, _, t)| tick < t) {
                best = Some((level, slot, tick));
            }
        }
        best
    }

    fn link(&mut self, key: usize) {
        let when = self.entries[key].when;
        // Deadlines beyond the wheel's span are filed at its far end and re-filed until due.
        let filed = when.min(self.elapsed + SPAN - 1);
        let masked = (self.elapsed ^ filed) | (SLOTS as u64 - 1);
        let significant = 63 - masked.leading_zeros();
        let level = ((significant / SLOT_BITS) as usize).min(LEVELS - 1);
        let slot = ((filed >> (SLOT_BITS as usize * level)) as usize) % SLOTS;
        let head = self.levels[level].heads[slot];
        {
            let e = &mut self.entries[key];
            e.level = level as u8;
            e.slot = slot as u8;
            e.prev = NIL;
            e.next = head;
        }
        if head != NIL {
            self.entries[head as usize].prev = key as u32;
        }
        self.levels[level].heads[slot] = key as u32;
        self.levels[level].occupied |= 1 << slot;
    }

    fn unlink(&mut self, key: usize) {
        let (level, slot, prev, next) = {
            let e = &self.entries[key];
            (e.level as usize, e.slot as usize, e.prev, e.next)
        };
        if prev == NIL {
            self.levels[level].heads[slot] = next;
            if next == NIL {
                self.levels[level].occupied &= !(1 << slot);
            }
        } else {
            self.entries[prev as usize].next = next;
        }
        if next != NIL {
            self.entries[next as usize].prev = prev;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Fires everything due at `t` and returns how many fired.
    fn fire(w: &mut Wheel, t: Instant) -> usize {
        let mut v = Vec::new();
        w.process(t, &mut v);
        v.len()
    }

    #[test]
    fn fires_at_deadline_never_before() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        for d in [1u64, 5, 63, 64, 65, 100, 4095, 4096, 5000, 300_000] {
            let (key, _) = w.insert(t0 + ms(d), Waker::noop().clone()).unwrap();
            assert_eq!(fire(&mut w, t0 + ms(d - 1)), 0, "deadline {d} fired early");
            assert_eq!(fire(&mut w, t0 + ms(d)), 1, "deadline {d} did not fire");
            assert!(w.poll(key, Waker::noop()));
            w.remove(key);
        }
        assert_eq!(w.pending(), 0);
    }

    #[test]
    fn many_timers_fire_in_order_across_levels() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        let deadlines: Vec<u64> = (0..2000u64).map(|i| (i * 7919) % 20_000 + 1).collect();
        for &d in &deadlines {
            w.insert(t0 + ms(d), Waker::noop().clone()).unwrap();
        }
        let mut sorted = deadlines.clone();
        sorted.sort();
        let mut fired = 0;
        let mut t = 0;
        while fired < sorted.len() {
            t += 1;
            let due = sorted.iter().filter(|&&d| d <= t).count();
            fired += fire(&mut w, t0 + ms(t));
            assert_eq!(fired, due, "at {t} ms");
        }
        assert_eq!(w.pending(), 0);
    }

    #[test]
    fn sparse_processing_still_fires_everything_due() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        for d in [3u64, 70, 5000, 262_144, 262_200] {
            w.insert(t0 + ms(d), Waker::noop().clone()).unwrap();
        }
        assert_eq!(fire(&mut w, t0 + ms(262_143)), 3);
        assert_eq!(fire(&mut w, t0 + ms(262_200)), 2);
    }

    #[test]
    fn removed_timer_never_fires() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        let (a, _) = w.insert(t0 + ms(10), Waker::noop().clone()).unwrap();
        let _b = w.insert(t0 + ms(10), Waker::noop().clone()).unwrap();
        w.remove(a);
        assert_eq!(fire(&mut w, t0 + ms(10)), 1);
    }

    #[test]
    fn next_deadline_is_not_after_earliest_timer() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        w.insert(t0 + ms(5000), Waker::noop().clone()).unwrap();
        w.insert(t0 + ms(70), Waker::noop().clone()).unwrap();
        let nd = w.next_deadline().unwrap();
        assert!(nd <= t0 + ms(70));
    }

    #[test]
    fn far_future_deadline_is_refiled_not_fired_early() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        let far = SPAN + 10;
        w.insert(t0 + ms(far), Waker::noop().clone()).unwrap();
        assert_eq!(fire(&mut w, t0 + ms(SPAN - 1)), 0);
        assert_eq!(fire(&mut w, t0 + ms(far - 1)), 0);
        assert_eq!(fire(&mut w, t0 + ms(far)), 1);
    }

    #[test]
    fn past_deadline_is_not_registered() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        assert!(w.insert(t0, Waker::noop().clone()).is_none());
    }
}
