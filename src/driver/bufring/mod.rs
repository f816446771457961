//! The loop's pool of receive buffers: a provided-buffer ring (`IORING_REGISTER_PBUF_RING`,
//! Linux 5.19+).
//!
//! The kernel picks a buffer from the ring only when data arrives, so an idle connection
//! holds none. A picked buffer reaches the user as a [`RecvBuf`]; dropping it puts its id
//! back in the pool.
//!
//! # Hot buffers first
//!
//! A buffer ring is a FIFO: the kernel takes from the head, the loop writes returned ids at
//! the tail. Were every free buffer in the ring, each receive would land in the buffer freed
//! longest ago, and the kernel's copy would cycle through the whole pool (64 MiB by
//! default), long out of cache: at 64 × 4 KiB `bench/` saw the kernel's receive copy take a
//! larger share of the server's CPU than tokio's, which reads into a buffer it keeps, until
//! the pool was small enough to stay in cache.
//!
//! So the ring holds only a *window* of the free buffers; the rest wait on a LIFO stack (the
//! spares). A returned buffer goes straight back into the ring while the ring holds less
//! than the window, otherwise on top of the stack; a reap that leaves the ring below half
//! the window refills it from the top of the stack, the buffers returned last. The bottom of
//! the stack stays untouched. The window adapts to how many buffers the kernel takes per
//! enter (see [`Window`]), so a burst still finds buffers, and a receive that does find the
//! ring empty (`ENOBUFS`) doubles it. To know how full the ring is, the driver's reaper
//! counts the CQEs that carry a buffer (`picked`): the kernel has taken exactly those.
//!
//! # Who may touch what
//!
//! - `tail`, `picked`, the spares, the window, `waiters`, `has_waiters`: the loop's
//!   thread only (checked by thread id on the paths that may run elsewhere: `RecvBuf::drop`).
//! - `foreign`: any thread, under its mutex; a `RecvBuf` dropped on another thread queues its
//!   id there and wakes the loop, which writes it back on its next turn.
//! - The ring entries and the buffers' bytes: the kernel writes a buffer between picking it
//!   and posting the CQE; after that the buffer belongs to its `RecvBuf` until it is written
//!   back. The memory lives as long as any `RecvBuf` or the driver does (`Arc`).

use std::alloc::Layout;
use std::cell::{Cell, RefCell};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::Instant;

use io_uring::types::BufRingEntry;

mod recv_buf;
mod window;

pub use recv_buf::RecvBuf;
use recv_buf::{thread_tag, Store};
use window::Window;

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
    /// Free buffers not in the ring, a LIFO stack: `spare[..spare_len]`, the last returned
    /// on top. It has room for every buffer, so a push always fits.
    spare: Box<[Cell<u16>]>,
    spare_len: Cell<u16>,
    window: Window,
    /// Buffers the kernel took from the ring, as the reaper counted them (wrapping): with
    /// `tail`, how many the ring holds.
    picked: Cell<u16>,
    /// Receives that found the ring empty (`ENOBUFS`).
    starvations: Cell<u64>,
    /// Receives that went through a heap buffer because the pool stayed dry.
    heap_fallbacks: Cell<u64>,
    /// Tasks waiting for a buffer after `ENOBUFS`.
    waiters: RefCell<Vec<Waker>>,
    /// `waiters` is not empty: one flag to test on each write-back.
    has_waiters: Cell<bool>,
    /// Write-backs leave the waiters for the caller to wake (see `BufPool::release_with`),
    /// and `waiters_due` says a buffer came back for them.
    deferring: Cell<bool>,
    waiters_due: Cell<bool>,
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
        ring: &crate::sys::Ring,
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
            spare: (0..count).map(|_| Cell::new(0)).collect(),
            spare_len: Cell::new(0),
            window: Window::new(count, Instant::now()),
            picked: Cell::new(0),
            starvations: Cell::new(0),
            heap_fallbacks: Cell::new(0),
            waiters: RefCell::new(Vec::new()),
            has_waiters: Cell::new(false),
            deferring: Cell::new(false),
            waiters_due: Cell::new(false),
            registered: Cell::new(false),
            foreign: Mutex::new(Vec::new()),
            foreign_pending: AtomicBool::new(false),
            wake_loop,
        }));
        // ENOMEM is retried: the entries count against the locked-memory limit, which rings
        // closed moments ago may still hold (`retry_enomem` says why).
        crate::sys::retry_enomem(crate::sys::ENOMEM_WINDOW, || {
            // SAFETY: the ring memory is page-aligned, zeroed, `count` entries long, and owned
            // by the pool, which the driver keeps until after it unregisters the group (close).
            unsafe {
                ring.submitter().register_buf_ring_with_flags(
                    ring_ptr.as_ptr() as u64,
                    count,
                    POOL_GROUP,
                    0,
                )
            }
        })?;
        pool.0.registered.set(true);
        // The stack is popped from the top: the low ids go into the ring first.
        for bid in (0..count).rev() {
            pool.0.push_spare(bid);
        }
        pool.0.top_up();
        Ok(pool)
    }

    /// Wraps buffer `bid`, which the kernel filled with `len` bytes, for the user.
    #[inline]
    pub(crate) fn take(&self, bid: u16, len: u32) -> RecvBuf {
        let len = (len as usize).min(self.0.size);
        RecvBuf {
            store: Store::Pooled {
                pool: self.0.clone(),
                bid,
            },
            len,
        }
    }

    /// Free buffers: in the ring, ready for the kernel, or spare. A buffer the kernel picked
    /// is not free, whether a `RecvBuf` holds it or its CQE waits in a stream's queue.
    /// Buffers in the pool.
    pub(crate) fn count(&self) -> usize {
        self.0.count.into()
    }

    pub(crate) fn available(&self) -> usize {
        usize::from(self.0.level()) + usize::from(self.0.spare_len.get())
    }

    /// How many CQEs one stream's multishot receive may queue untaken before it is
    /// cancelled (see `Driver::arm_stream`): an eighth of the pool, so that a connection
    /// whose task stops reading while its peer keeps sending cannot take the whole pool.
    pub(crate) fn stream_cap(&self) -> usize {
        (usize::from(self.0.count) / 8).max(1)
    }

    /// A receive found the pool dry for longer than it waits, and goes through a heap
    /// buffer instead (see `net::recv`).
    #[cold]
    pub(crate) fn fell_back(&self) {
        let p = &*self.0;
        p.heap_fallbacks.set(p.heap_fallbacks.get() + 1);
    }

    /// Receives that went through a heap buffer because the pool stayed dry.
    pub(crate) fn heap_fallbacks(&self) -> u64 {
        self.0.heap_fallbacks.get()
    }

    /// The reaper saw a CQE that carried a buffer: the kernel took it from the ring. Counted
    /// as each CQE is reaped, so that a buffer returned during the same reap (a send that
    /// completed) goes straight back into the ring if it is below the window; counted at
    /// the end of the reap, the ring looked fuller than it was, and at 16 connections every
    /// buffer went through the spares (15 instructions more per request).
    #[inline]
    pub(crate) fn picked_one(&self) {
        let p = &*self.0;
        p.picked.set(p.picked.get().wrapping_add(1));
    }

    /// After a reap whose CQEs (`taken`, one or more) carried buffers: the kernel took that
    /// many from the ring. Adapts the window and, if the ring is below half of it, fills it
    /// back up from the top of the spares, ready for the next enter. Runs inside the
    /// driver's reap, so it touches only the pool.
    #[inline]
    pub(crate) fn after_reap(&self, taken: u16) {
        let p = &*self.0;
        // Buffers returned go straight into the ring while it is below the window (see
        // `give_back`), so only a ring down by half needs the spares: a burst, or users
        // holding their buffers. Topping up after every reap instead moved one buffer
        // ring → spares → ring per request, 25 instructions more.
        if p.window.on_reap(taken, p.level(), Instant::now) {
            p.top_up();
        }
    }

    /// A receive found the ring empty (`ENOBUFS`): offer the kernel more, now.
    #[cold]
    pub(crate) fn starved(&self) {
        let p = &*self.0;
        p.starvations.set(p.starvations.get() + 1);
        p.window.on_starved(Instant::now);
        p.top_up();
    }

    /// How many buffers the ring offers the kernel, and how many receives found it empty.
    pub(crate) fn window_stats(&self) -> (u16, u64) {
        (self.0.window.target.get(), self.0.starvations.get())
    }

    /// Whether tasks wait for a buffer to come back (see `wait_for_buffer`).
    #[inline]
    pub(crate) fn has_waiters(&self) -> bool {
        self.0.has_waiters.get()
    }

    /// Runs `release`, which may give buffers back, with the wake-ups that would wake tasks
    /// waiting for a buffer handed to `wakers` instead, for the caller to wake later: the
    /// driver's reaper, which must not wake a waker while the driver is borrowed.
    pub(crate) fn release_with(&self, release: impl FnOnce(), wakers: &mut Vec<Waker>) {
        let p = &*self.0;
        let was = p.deferring.replace(true);
        release();
        p.deferring.set(was);
        if !was && p.waiters_due.replace(false) {
            p.top_up();
            p.has_waiters.set(false);
            wakers.append(&mut p.waiters.borrow_mut());
        }
    }

    /// Registers `waker` to be woken when a buffer goes back into the ring.
    pub(crate) fn wait_for_buffer(&self, waker: &Waker) {
        let mut w = self.0.waiters.borrow_mut();
        if !w.iter().any(|x| x.will_wake(waker)) {
            w.push(waker.clone());
        }
        self.0.has_waiters.set(true);
    }

    /// Writes back buffers dropped on other threads. Called by the loop every turn: the check
    /// is inline, the rare write-back out of line.
    #[inline(always)]
    pub(crate) fn drain_foreign(&self) {
        if self.0.foreign_pending.load(Ordering::Acquire) {
            self.write_back_foreign();
        }
    }

    #[cold]
    #[inline(never)]
    fn write_back_foreign(&self) {
        self.0.foreign_pending.store(false, Ordering::Release);
        let ids = std::mem::take(&mut *self.0.lock_foreign());
        for bid in ids {
            self.0.give_back(bid);
        }
    }

    /// Unregisters the group; later write-backs are no-ops. Called at close, after every op
    /// has completed.
    pub(crate) fn unregister(&self, ring: &crate::sys::Ring) {
        if self.0.registered.replace(false) {
            self.0.window.target.set(0);
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

    /// Puts free buffer `bid` on top of the spares. Owner thread.
    #[inline]
    fn push_spare(&self, bid: u16) {
        let n = self.spare_len.get();
        // The stack has a cell per buffer and each id is in one place at a time, so `n` is
        // in bounds; `get` keeps a broken count from writing anywhere else.
        if let Some(cell) = self.spare.get(n as usize) {
            cell.set(bid);
            self.spare_len.set(n + 1);
        }
    }

    /// Buffers in the ring: pushed and not yet taken by the kernel (as far as the reaper has
    /// seen). Never more than `count`, as each id is in one place at a time, so the wrapping
    /// difference is exact.
    #[inline]
    fn level(&self) -> u16 {
        self.tail.get().wrapping_sub(self.picked.get())
    }

    /// Fills the ring up to the window from the top of the spares (the buffers returned
    /// last), as far as there are spares.
    #[inline]
    fn top_up(&self) {
        let want = self
            .window
            .target
            .get()
            .saturating_sub(self.level())
            .min(self.spare_len.get());
        if want != 0 {
            self.refill(want);
        }
    }

    /// Moves the `n` spares on top of the stack into the ring and publishes them; the
    /// caller has checked that `n <= spare_len`.
    fn refill(&self, n: u16) {
        if !self.registered.get() {
            return;
        }
        let mut len = self.spare_len.get();
        for _ in 0..n {
            len -= 1;
            self.push(self.spare[len as usize].get());
        }
        self.spare_len.set(len);
        self.publish();
    }

    /// Makes pushed entries visible to the kernel. Owner thread.
    #[inline]
    fn publish(&self) {
        // SAFETY: the tail field lives in the ring's first entry, which is initialised; the
        // kernel reads it concurrently, hence the atomic view and the release store.
        let tail = unsafe { &*(BufRingEntry::tail(self.ring.as_ptr()) as *const AtomicU16) };
        tail.store(self.tail.get(), Ordering::Release);
    }

    /// Returns buffer `bid`: into the ring if it is below the window, else on top of the
    /// spares; and wakes tasks waiting for one. Owner thread.
    #[inline]
    fn give_back(&self, bid: u16) {
        // Once unregistered the window is 0 (see `unregister`): everything goes to the
        // spares, and the ring is left alone.
        if self.level() < self.window.target.get() {
            self.push(bid);
            self.publish();
        } else {
            self.push_spare(bid);
        }
        if self.has_waiters.get() {
            if self.deferring.get() {
                self.waiters_due.set(true);
            } else {
                self.wake_waiters();
            }
        }
    }

    /// Receives wait because the ring ran dry and no buffer was free: there is one now, and
    /// it goes into the ring before they re-arm.
    #[cold]
    fn wake_waiters(&self) {
        self.top_up();
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
