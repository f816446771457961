//! Byte buffers for the copies the byte-stream traits' writes make, recycled through a cache
//! on each thread: a connection that writes a small reply per request would otherwise
//! allocate and free a buffer per reply.

use std::cell::RefCell;

use super::IoBuf;

/// Buffers of at most this capacity go back to the cache; larger ones are freed (a large
/// write's allocation is small beside its copy).
const KEEP_CAPACITY: usize = 16 * 1024;

/// The cache holds at most this many buffers per thread (at most 1 MiB).
const KEEP_COUNT: usize = 64;

thread_local! {
    static CACHE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A copy of a write's bytes, owned by the write queue until sent; dropped, its memory goes
/// back to the thread's cache.
pub(crate) struct CopyBuf(Vec<u8>);

impl CopyBuf {
    /// An empty buffer with room for at least `len` bytes: from the cache if it has one
    /// large enough (the last one put back is tried), else newly allocated.
    pub(crate) fn with_capacity(len: usize) -> CopyBuf {
        let reused = CACHE
            .try_with(|c| {
                let mut c = c.try_borrow_mut().ok()?;
                match c.last() {
                    Some(v) if v.capacity() >= len => c.pop(),
                    _ => None,
                }
            })
            .ok()
            .flatten();
        CopyBuf(reused.unwrap_or_else(|| Vec::with_capacity(len.max(512))))
    }

    /// Appends `bytes`.
    pub(crate) fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

impl Drop for CopyBuf {
    fn drop(&mut self) {
        if self.0.capacity() > KEEP_CAPACITY {
            return;
        }
        let mut v = std::mem::take(&mut self.0);
        v.clear();
        // A thread being torn down, or a drop reached from inside the cache's own borrow
        // (never: nothing here runs user code), frees the buffer instead.
        let _ = CACHE.try_with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                if c.len() < KEEP_COUNT {
                    c.push(v);
                }
            }
        });
    }
}

// SAFETY: the bytes are the Vec's heap block, which moving the CopyBuf does not move; the
// Vec is not touched while the CopyBuf is kept for the kernel (only `Drop` changes it).
unsafe impl IoBuf for CopyBuf {
    // Its drop moves memory into a cache: no task is woken.
    const DROP_WAKES_NOTHING: bool = true;
    fn stable_ptr(&self) -> *const u8 {
        self.0.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.0.len()
    }
    fn bytes_total(&self) -> usize {
        self.0.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_buffer_is_reused_empty_by_the_next_of_its_size() {
        let mut a = CopyBuf::with_capacity(100);
        a.extend_from_slice(b"hello");
        let ptr = a.stable_ptr();
        drop(a);
        let b = CopyBuf::with_capacity(100);
        assert_eq!(b.stable_ptr(), ptr, "the cached buffer is reused");
        assert_eq!(b.len(), 0);
    }

    #[test]
    fn large_buffers_are_not_kept() {
        let a = CopyBuf::with_capacity(KEEP_CAPACITY + 1);
        drop(a);
        CACHE.with(|c| assert!(c.borrow().iter().all(|v| v.capacity() <= KEEP_CAPACITY)));
    }
}
