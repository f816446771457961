//! What the driver counts, for the loop's `Stats`: a few loads each, read by whoever asks,
//! and the running count of bytes the loop's write queues hold.

use super::Driver;

impl Driver {
    /// Slots the kernel still owes a final CQE, internal ones included.
    pub(crate) fn awaiting_kernel(&self) -> usize {
        self.0.inner.borrow().awaiting_kernel_count()
    }

    /// Descriptors closed by the ring rather than with `close(2)` (see `close`).
    pub(crate) fn ring_closes(&self) -> u64 {
        self.0.inner.borrow().ring_closes
    }

    /// CQEs whose `user_data` matched no slot.
    pub(crate) fn stray_cqes(&self) -> u64 {
        self.0.inner.borrow().stray_cqes
    }

    /// CQEs reaped so far.
    pub(crate) fn reaped(&self) -> u64 {
        self.0.inner.borrow().reaped
    }

    /// `io_uring_enter` calls made so far.
    pub(crate) fn enters(&self) -> u64 {
        self.0.inner.borrow().enters
    }

    /// Times the CQ ring overflowed: reaps that found it full with completions held back in
    /// the kernel (`IORING_SQ_CQ_OVERFLOW`), plus completions the kernel dropped (its
    /// `cq.koverflow`; only where it cannot hold them back, before Linux 5.5 or out of
    /// memory).
    pub(crate) fn cq_overflows(&self) -> u64 {
        let mut inner = self.0.inner.borrow_mut();
        let dropped = inner.ring.as_mut().map_or(0, |r| r.completion().overflow());
        inner.cq_full + u64::from(dropped)
    }

    /// Bytes the loop's write queues hold unsent.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.0.queued_bytes.get()
    }

    /// A write queue took `n` bytes more.
    #[inline]
    pub(crate) fn queued_add(&self, n: usize) {
        self.0.queued_bytes.set(self.0.queued_bytes.get() + n);
    }

    /// A write queue sent or dropped `n` of its bytes.
    #[inline]
    pub(crate) fn queued_sub(&self, n: usize) {
        self.0
            .queued_bytes
            .set(self.0.queued_bytes.get().saturating_sub(n));
    }
}
