//! The loop's pool of receive buffers: a provided-buffer ring (`IORING_REGISTER_PBUF_RING`,
//! Linux 5.19+).
//!
//! The kernel picks a buffer from the ring only when data arrives, so an idle connection
//! holds none. A picked buffer reaches the user as a [`RecvBuf`]; dropping it writes its id
//! back into the ring.
//!
//! # Who may touch what
//!
//! - `tail`, `out`, `waiters`, `has_waiters`: the loop's thread only (checked by thread id on
//!   the paths that may run elsewhere: `RecvBuf::drop`).
//! - `foreign`: any thread, under its mutex; a `RecvBuf` dropped on another thread queues its
//!   id there and wakes the loop, which writes it back on its next turn.
//! - The ring entries and the buffers' bytes: the kernel writes a buffer between picking it
//!   and posting the CQE; after that the buffer belongs to its `RecvBuf` until it is written
//!   back. The memory lives as long as any `RecvBuf` or the driver does (`Arc`).

use std::alloc::Layout;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

use crate::buf::{IoBuf, IoBufMut};

/// The buffer group id of a loop's pool.
pub(crate) const POOL_GROUP: u16 = 0;

/// A loop's receive-buffer pool.
#[derive(Clone)]
pub(crate) struct BufPool(Arc<PoolInner>);

struct PoolInner {
    /// The owning thread, as the address of a thread-local: cheaper to get than a `ThreadId`
    /// (no reference count), and unique among live threads. A later thread may reuse the
    /// address only after the owner exited, and with it the loop: that thread is then the
    /// only one touching the `Cell`s (others take the locked foreign path), which is all the
    /// single-thread rule needs.
    owner: usize,
    count: u16,
    size: usize,
    ring: NonNull<BufRingEntry>,
    ring_layout: Layout,
    mem: NonNull<u8>,
    mem_layout: Layout,
    tail: Cell<u16>,
    /// Buffers held by `RecvBuf`s (and the kernel between pick and CQE is not counted).
    out: Cell<usize>,
    /// Tasks waiting for a buffer after `ENOBUFS`.
    waiters: RefCell<Vec<Waker>>,
    /// `waiters` is not empty: one flag to test on each write-back.
    has_waiters: Cell<bool>,
    /// False once the ring that knew this pool is gone: write-backs become no-ops.
    registered: Cell<bool>,
    foreign: Mutex<Vec<u16>>,
    foreign_pending: AtomicBool,
    wake_loop: Arc<dyn Fn() + Send + Sync>,
}

// SAFETY: the `Cell`/`RefCell` fields are only touched on the `owner` thread (every path that
// can run elsewhere checks `owner` first and uses `foreign` instead); the raw pointers refer
// to allocations owned by this struct; `wake_loop` is `Send + Sync`.
unsafe impl Send for PoolInner {}
// SAFETY: as above.
unsafe impl Sync for PoolInner {}

impl BufPool {
    /// Allocates `count` buffers of `size` bytes and registers them with `ring`.
    pub(crate) fn new(
        ring: &IoUring,
        count: u16,
        size: usize,
        wake_loop: Arc<dyn Fn() + Send + Sync>,
    ) -> io::Result<BufPool> {
        debug_assert!(count.is_power_of_two());
        let ring_layout =
            Layout::from_size_align(count as usize * std::mem::size_of::<BufRingEntry>(), 4096)
                .map_err(io::Error::other)?;
        let mem_layout =
            Layout::from_size_align(count as usize * size, 64).map_err(io::Error::other)?;
        // SAFETY: both layouts have a non-zero size (count >= 1, size >= 1).
        let ring_ptr = NonNull::new(unsafe { std::alloc::alloc_zeroed(ring_layout) })
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?
            .cast::<BufRingEntry>();
        // SAFETY: as above.
        let mem = match NonNull::new(unsafe { std::alloc::alloc(mem_layout) }) {
            Some(m) => m,
            None => {
                // SAFETY: allocated just above with this layout.
                unsafe { std::alloc::dealloc(ring_ptr.as_ptr().cast(), ring_layout) };
                return Err(io::ErrorKind::OutOfMemory.into());
            }
        };
        let pool = BufPool(Arc::new(PoolInner {
            owner: thread_tag(),
            count,
            size,
            ring: ring_ptr,
            ring_layout,
            mem,
            mem_layout,
            tail: Cell::new(0),
            out: Cell::new(0),
            waiters: RefCell::new(Vec::new()),
            has_waiters: Cell::new(false),
            registered: Cell::new(false),
            foreign: Mutex::new(Vec::new()),
            foreign_pending: AtomicBool::new(false),
            wake_loop,
        }));
        // SAFETY: the ring memory is page-aligned, zeroed, `count` entries long, and owned by
        // the pool, which the driver keeps until after it unregisters the group (close).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                ring_ptr.as_ptr() as u64,
                count,
                POOL_GROUP,
                0,
            )?;
        }
        pool.0.registered.set(true);
        for bid in 0..count {
            pool.0.push(bid);
        }
        pool.0.publish();
        Ok(pool)
    }

    /// Wraps buffer `bid`, which the kernel filled with `len` bytes, for the user.
    #[inline]
    pub(crate) fn take(&self, bid: u16, len: u32) -> RecvBuf {
        let len = (len as usize).min(self.0.size);
        self.0.out.set(self.0.out.get() + 1);
        RecvBuf {
            store: Store::Pooled {
                pool: self.0.clone(),
                bid,
            },
            len,
        }
    }

    /// Buffers in the ring, ready for the kernel.
    pub(crate) fn available(&self) -> usize {
        self.0.count as usize - self.0.out.get()
    }

    /// Registers `waker` to be woken when a buffer goes back into the ring.
    pub(crate) fn wait_for_buffer(&self, waker: &Waker) {
        let mut w = self.0.waiters.borrow_mut();
        if !w.iter().any(|x| x.will_wake(waker)) {
            w.push(waker.clone());
        }
        self.0.has_waiters.set(true);
    }

    /// Writes back buffers dropped on other threads. Called by the loop every turn.
    #[inline]
    pub(crate) fn drain_foreign(&self) {
        if !self.0.foreign_pending.load(Ordering::Acquire) {
            return;
        }
        self.0.foreign_pending.store(false, Ordering::Release);
        let ids = std::mem::take(&mut *self.0.lock_foreign());
        for bid in ids {
            self.0.give_back(bid);
        }
    }

    /// Unregisters the group; later write-backs are no-ops. Called at close, after every op
    /// has completed.
    pub(crate) fn unregister(&self, ring: &IoUring) {
        if self.0.registered.replace(false) {
            let _ = ring.submitter().unregister_buf_ring(POOL_GROUP);
        }
    }
}

impl PoolInner {
    fn lock_foreign(&self) -> std::sync::MutexGuard<'_, Vec<u16>> {
        // Only ids are pushed and taken; a poisoned vector is still consistent.
        self.foreign.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn buf_ptr(&self, bid: u16) -> *mut u8 {
        // SAFETY: `bid < count`, so the offset is inside the `count * size` allocation.
        unsafe { self.mem.as_ptr().add(bid as usize * self.size) }
    }

    /// Writes entry `bid` at the tail (not yet visible to the kernel). Owner thread.
    #[inline]
    fn push(&self, bid: u16) {
        let mask = self.count - 1;
        let tail = self.tail.get();
        // SAFETY: `tail & mask < count`: inside the ring allocation. The kernel only reads
        // entries between its head and our published tail, and this slot is past the tail.
        let entry = unsafe { &mut *self.ring.as_ptr().add((tail & mask) as usize) };
        entry.set_addr(self.buf_ptr(bid) as u64);
        entry.set_len(self.size as u32);
        entry.set_bid(bid);
        self.tail.set(tail.wrapping_add(1));
    }

    /// Makes pushed entries visible to the kernel. Owner thread.
    #[inline]
    fn publish(&self) {
        // SAFETY: the tail field lives in the ring's first entry, which is initialised; the
        // kernel reads it concurrently, hence the atomic view and the release store.
        let tail = unsafe { &*(BufRingEntry::tail(self.ring.as_ptr()) as *const AtomicU16) };
        tail.store(self.tail.get(), Ordering::Release);
    }

    /// Returns buffer `bid` to the ring and wakes tasks waiting for one. Owner thread.
    #[inline]
    fn give_back(&self, bid: u16) {
        self.out.set(self.out.get().saturating_sub(1));
        if !self.registered.get() {
            return;
        }
        self.push(bid);
        self.publish();
        if self.has_waiters.get() {
            self.wake_waiters();
        }
    }

    #[cold]
    fn wake_waiters(&self) {
        self.has_waiters.set(false);
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }

    /// A `RecvBuf` dropped on another thread: queue its id for the owner's next turn.
    #[cold]
    fn give_back_foreign(&self, bid: u16) {
        self.lock_foreign().push(bid);
        self.foreign_pending.store(true, Ordering::Release);
        (self.wake_loop)();
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with these layouts. The last owner is gone, which means
        // the driver (and so the ring) is gone and no `RecvBuf` points into the memory.
        unsafe {
            std::alloc::dealloc(self.ring.as_ptr().cast(), self.ring_layout);
            std::alloc::dealloc(self.mem.as_ptr(), self.mem_layout);
        }
    }
}

/// A received chunk in a loop-owned buffer from the loop's pool. Dereferences to the bytes
/// received; goes back to the pool when dropped (on any thread). Empty means end of stream.
///
/// It is an [`IoBuf`], so it can be written back out without a copy (`write_all(buf)`), and
/// an [`IoBufMut`] whose capacity is the pool's buffer size.
///
/// On kernels without provided-buffer rings (before 5.19) it owns a heap buffer instead; the
/// API is the same.
pub struct RecvBuf {
    store: Store,
    len: usize,
}

enum Store {
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
fn thread_tag() -> usize {
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
