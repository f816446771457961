//! The far end of each descriptor: what it sends the loop (a known byte sequence per
//! descriptor), and, for a writer whose output is checked, what it must receive.

use std::collections::HashMap;

use super::violation;

/// Byte `offset` of what the peer of `fd` sends: a function of both, so that a reader can
/// check each chunk is its own descriptor's and comes where the last one ended.
pub fn stream_byte(fd: i32, offset: u64) -> u8 {
    (offset.wrapping_mul(7).wrapping_add(fd as u64 * 13) % 251) as u8
}

/// Byte `offset` of what a writer sends on `fd`, when the simulation checks its order.
pub fn output_byte(fd: i32, offset: u64) -> u8 {
    (offset.wrapping_mul(11).wrapping_add(fd as u64 * 5) % 241) as u8
}

#[derive(Default)]
pub(super) struct Peers {
    /// Bytes delivered so far on each descriptor (see [`stream_byte`]).
    delivered: HashMap<i32, u64>,
    /// Bytes received so far from each descriptor whose output is checked (see
    /// [`output_byte`]).
    received: HashMap<i32, u64>,
}

impl Peers {
    /// A new stream on `fd` (a descriptor number may be reused): both directions start again.
    pub(super) fn new_stream(&mut self, fd: i32) {
        self.delivered.remove(&fd);
        self.received.remove(&fd);
    }

    /// The next `n` bytes the peer of `fd` sends.
    pub(super) fn next_bytes(&mut self, fd: i32, n: usize) -> Vec<u8> {
        let at = self.delivered.entry(fd).or_insert(0);
        let bytes = (0..n as u64).map(|i| stream_byte(fd, *at + i)).collect();
        *at += n as u64;
        bytes
    }

    /// The peer of `fd` took `bytes`: on a descriptor whose output is checked, they must
    /// continue exactly where the last send ended.
    pub(super) fn took(&mut self, fd: i32, bytes: &[u8]) {
        let Some(at) = self.received.get_mut(&fd) else {
            return;
        };
        for (i, &b) in bytes.iter().enumerate() {
            let off = *at + i as u64;
            if b != output_byte(fd, off) {
                violation(&format!(
                    "fd {fd}: byte {off} sent is not the one written there: the write path \
                     lost, repeated or reordered bytes"
                ));
                return;
            }
        }
        *at += bytes.len() as u64;
    }

    /// Checks from now on that what is sent on `fd` is [`output_byte`]`(fd, 0..)` in order.
    pub(super) fn check_output(&mut self, fd: i32) {
        self.received.insert(fd, 0);
    }

    /// Stops checking `fd`'s output (its writer gave up the order).
    pub(super) fn stop_output_check(&mut self, fd: i32) {
        self.received.remove(&fd);
    }
}
