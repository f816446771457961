//! A multishot op armed on a loop by an I/O object rather than by a future: a listener's
//! accept, a stream's receive. The object keeps the slot key; dropping it releases the slot,
//! from whichever thread the object is dropped on.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use crate::driver::completion::Completion;
use crate::driver::{Driver, ForeignDrops};
use crate::util::once_arc::OnceArc;

#[derive(Default)]
pub(crate) struct Armed {
    /// Key + 1 of the armed slot; 0 when none is armed.
    key: AtomicU64,
    /// The loop the slot belongs to.
    loop_id: AtomicU64,
    /// Where to hand the slot back if the owner is dropped on another thread.
    foreign: OnceArc<ForeignDrops>,
}

impl Armed {
    /// The armed slot, if any.
    #[inline]
    pub(crate) fn key(&self) -> Option<usize> {
        match self.key.load(Ordering::Relaxed) {
            0 => None,
            k => Some((k - 1) as usize),
        }
    }

    /// The armed slot; if none is, `arm` arms one on `driver` and returns its key.
    pub(crate) fn get_or_arm(
        &self,
        driver: &Driver,
        arm: impl FnOnce() -> io::Result<usize>,
    ) -> io::Result<usize> {
        if let Some(key) = self.key() {
            return Ok(key);
        }
        let key = arm()?;
        self.loop_id.store(driver.id(), Ordering::Relaxed);
        self.foreign.get_or_init(|| driver.foreign_drops());
        self.key.store(key as u64 + 1, Ordering::Relaxed);
        Ok(key)
    }

    /// Polls for the next CQE of slot `key` (from [`get_or_arm`](Armed::get_or_arm)); use
    /// it through `poll_fn`. Cancel-safe: a CQE not taken stays queued in the slot. After the
    /// final CQE the driver has freed the slot, and nothing is armed.
    #[inline]
    pub(crate) fn poll_next(&self, key: usize, cx: &mut Context<'_>) -> Poll<Completion> {
        crate::driver::with_current(|d| self.poll_next_on(d, key, cx))
            .expect("a multishot op is polled on the loop it was armed on")
    }

    /// [`poll_next`](Armed::poll_next) with the running loop's driver at hand. Always
    /// inlined: see `driver::thread_drivers::with_current`.
    #[inline(always)]
    pub(crate) fn poll_next_on(
        &self,
        driver: &Driver,
        key: usize,
        cx: &mut Context<'_>,
    ) -> Poll<Completion> {
        if driver.id() != self.loop_id.load(Ordering::Relaxed) {
            panic!(
                "ringloop: a socket's receive was polled on an event loop other than the one \
                 it was armed on; an I/O object belongs to the loop that first used it"
            );
        }
        let c = std::task::ready!(driver.poll_stream(key, cx));
        if !c.more() {
            self.key.store(0, Ordering::Relaxed);
        }
        Poll::Ready(c)
    }
}

impl Armed {
    /// Asks the kernel to end the armed op (see `Driver::cancel_stream`); its CQEs up to the
    /// final one are still taken with [`poll_next`](Armed::poll_next). Call on its loop.
    pub(crate) fn cancel(&self) -> io::Result<()> {
        let Some(key) = self.key() else {
            return Ok(());
        };
        crate::driver::with_current(|d| d.cancel_stream(key)).unwrap_or(Ok(()))
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        let Some(key) = self.key() else {
            return;
        };
        // Cancels the op; the slot keeps what the kernel uses (the descriptor) until the
        // final CQE and releases what was queued. From another thread the loop's op table
        // cannot be touched: the loop does this on its next turn.
        match crate::driver::lookup(*self.loop_id.get_mut()) {
            Some(d) => d.drop_stream(key),
            None => {
                if let Some(f) = self.foreign.get() {
                    f.push(key);
                }
            }
        }
    }
}
