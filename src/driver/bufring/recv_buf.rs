//! `RecvBuf`: a received chunk in a buffer of the loop's pool (or, without one, a heap
//! buffer), which goes back to the pool when dropped, on whichever thread.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::Arc;

use super::PoolInner;
use crate::buf::{IoBuf, IoBufMut};

/// A received chunk in a loop-owned buffer from the loop's pool. Dereferences to the bytes
/// received; goes back to the pool when dropped (on any thread). Empty means end of stream.
///
/// It is an [`IoBuf`], so it can be written back out without a copy (`write_all(buf)`), and
/// an [`IoBufMut`] whose capacity is the pool's buffer size.
///
/// On kernels without provided-buffer rings (before 5.19) it owns a heap buffer instead; the
/// API is the same.
pub struct RecvBuf {
    pub(super) store: Store,
    pub(super) len: usize,
}

pub(super) enum Store {
    Pooled { pool: Arc<PoolInner>, bid: u16 },
    Owned(Vec<u8>),
    Empty,
}

impl RecvBuf {
    /// The end-of-stream marker: empty, holding no buffer.
    pub(crate) fn eof() -> RecvBuf {
        RecvBuf {
            store: Store::Empty,
            len: 0,
        }
    }

    /// Wraps a heap buffer filled by a plain receive (the no-pool fallback).
    pub(crate) fn owned(v: Vec<u8>) -> RecvBuf {
        RecvBuf {
            len: v.len(),
            store: Store::Owned(v),
        }
    }

    /// Number of bytes received.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether this is empty (end of stream).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drops the first `n` bytes (all of them if `n` is larger), moving the rest to the
    /// buffer's start: a buffer partly read through the byte-stream traits goes back to a
    /// `recv()` caller holding only what is left.
    #[cfg_attr(
        not(any(feature = "tokio-io", feature = "futures-io", feature = "hyper")),
        allow(dead_code)
    )]
    pub(crate) fn drop_front(&mut self, n: usize) {
        let n = n.min(self.len);
        self.copy_within(n.., 0);
        let rest = self.len - n;
        if let Store::Owned(v) = &mut self.store {
            v.truncate(rest);
        }
        self.len = rest;
    }

    fn ptr(&self) -> *mut u8 {
        match &self.store {
            Store::Pooled { pool, bid } => pool.buf_ptr(*bid),
            Store::Owned(v) => v.as_ptr() as *mut u8,
            Store::Empty => NonNull::dangling().as_ptr(),
        }
    }

    fn capacity(&self) -> usize {
        match &self.store {
            Store::Pooled { pool, .. } => pool.size,
            Store::Owned(v) => v.capacity(),
            Store::Empty => 0,
        }
    }
}

impl Deref for RecvBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the first `len` bytes of the buffer are initialised (by the kernel, or the
        // Vec's own length) and belong to this RecvBuf until it drops; for the empty marker
        // the pointer is dangling and the length zero.
        unsafe { std::slice::from_raw_parts(self.ptr(), self.len) }
    }
}

impl DerefMut for RecvBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in Deref, through the unique `&mut`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr(), self.len) }
    }
}

// SAFETY: a pooled buffer is part of the pool's allocation, kept alive by the `Arc` and
// reserved for this RecvBuf until it drops; an owned one is a Vec's heap block. Neither moves
// when the RecvBuf moves.
unsafe impl IoBuf for RecvBuf {
    // Its return to the pool wakes the tasks that wait for a buffer, if any: the loop checks
    // for those before it lets a write's completion go unseen (`Inner::enter`).
    const DROP_WAKES_NOTHING: bool = true;
    fn stable_ptr(&self) -> *const u8 {
        self.ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len
    }
    fn bytes_total(&self) -> usize {
        self.capacity()
    }
}

// SAFETY: as above; the buffer is writable for its whole capacity.
unsafe impl IoBufMut for RecvBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.ptr()
    }
    unsafe fn set_init(&mut self, init: usize) {
        let init = init.min(self.capacity());
        if let Store::Owned(v) = &mut self.store {
            // SAFETY: the caller guarantees the first `init <= capacity` bytes are initialised.
            unsafe { v.set_len(init) };
        }
        self.len = init;
    }
}

thread_local! {
    static TAG: u8 = const { 0 };
}

/// A number unique to the calling thread among live threads: the address of a thread-local.
#[inline]
pub(super) fn thread_tag() -> usize {
    TAG.with(|t| t as *const u8 as usize)
}

impl Drop for RecvBuf {
    #[inline]
    fn drop(&mut self) {
        // The id goes back first; the pool's `Arc` is released after, by the field's own drop.
        if let Store::Pooled { pool, bid } = &self.store {
            if thread_tag() == pool.owner {
                pool.give_back(*bid);
            } else {
                pool.give_back_foreign(*bid);
            }
        }
    }
}

impl fmt::Debug for RecvBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvBuf").field("len", &self.len).finish()
    }
}
