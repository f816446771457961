//! The provided-buffer ring as the simulated kernel sees it: the entries the loop publishes
//! at its tail, the head the kernel picks from, and what each buffer id is.

use std::sync::atomic::{AtomicU16, Ordering};

use super::violation;

/// What a buffer id is, as the kernel has seen it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Bid {
    /// Never published.
    Unseen,
    InRing,
    /// Picked by the kernel for a completion: the loop owns it until it publishes it again.
    Picked,
}

/// The registered provided-buffer ring.
pub(super) struct BufRing {
    base: usize,
    entries: u16,
    group: u16,
    head: u16,
    seen_tail: u16,
    bids: Vec<Bid>,
    /// Each buffer's address and length as first published, which later ones must repeat.
    spans: Vec<Option<(u64, u32)>>,
}

impl BufRing {
    pub(super) fn new(base: u64, entries: u16, group: u16) -> BufRing {
        BufRing {
            base: base as usize,
            entries,
            group,
            head: 0,
            seen_tail: 0,
            bids: vec![Bid::Unseen; entries as usize],
            spans: vec![None; entries as usize],
        }
    }

    pub(super) fn group(&self) -> u16 {
        self.group
    }

    /// The next buffer for a receive of group `group`: `(bid, addr, len)`, or `None` when the
    /// ring is empty (`ENOBUFS`) or of another group.
    pub(super) fn pick(&mut self, group: u16) -> Option<(u16, u64, u32)> {
        if self.group != group {
            return None;
        }
        self.sync();
        if self.head == self.seen_tail {
            return None;
        }
        let (addr, len, bid) = self.entry(self.head);
        self.head = self.head.wrapping_add(1);
        if self.bids[bid as usize] != Bid::InRing {
            violation(&format!("buffer {bid} was picked while not in the ring"));
        }
        self.bids[bid as usize] = Bid::Picked;
        Some((bid, addr, len))
    }

    /// Takes in the entries the loop published since the last look.
    fn sync(&mut self) {
        // SAFETY: the tail lives in the ring's first entry, which the loop keeps allocated
        // while the ring is registered; the loop stores it atomically.
        let tail = unsafe { &*((self.base + 14) as *const AtomicU16) }.load(Ordering::Acquire);
        if tail.wrapping_sub(self.head) > self.entries {
            violation("the loop published more buffers than the ring holds");
        }
        while self.seen_tail != tail {
            let (addr, len, bid) = self.entry(self.seen_tail);
            let Some(state) = self.bids.get_mut(bid as usize) else {
                violation(&format!("buffer id {bid} is out of the ring's range"));
                return;
            };
            if *state == Bid::InRing {
                violation(&format!("buffer {bid} was given back twice"));
            }
            *state = Bid::InRing;
            match self.spans[bid as usize] {
                Some(span) if span != (addr, len) => violation(&format!(
                    "buffer {bid} came back with another address or length"
                )),
                _ => self.spans[bid as usize] = Some((addr, len)),
            }
            self.seen_tail = self.seen_tail.wrapping_add(1);
        }
    }

    /// Entry at ring position `pos`: `(addr, len, bid)`.
    fn entry(&self, pos: u16) -> (u64, u32, u16) {
        let at = self.base + usize::from(pos & (self.entries - 1)) * 16;
        // SAFETY: `at` is one of the ring's `entries` 16-byte entries (`struct io_uring_buf`:
        // addr u64, len u32, bid u16, resv u16), inside the registered allocation.
        unsafe {
            (
                std::ptr::read(at as *const u64),
                std::ptr::read((at + 8) as *const u32),
                std::ptr::read((at + 12) as *const u16),
            )
        }
    }
}
