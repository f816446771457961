//! The driver's close: every op still in the kernel cancelled, its completions reaped (so
//! that no memory the kernel may write is freed), then the ring released.

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::{Driver, Released};

impl Driver {
    /// Cancels every op still in the kernel, reaps until none is left or `timeout` passes,
    /// then releases the ring. Past the timeout, memory the kernel may still write is leaked,
    /// never freed, and the error says how many ops were abandoned.
    pub(crate) fn close(&self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        self.0.inner.borrow_mut().closing = true;
        // Deferred closes not yet queued are made with `close(2)`, now and from here on.
        self.0.closes.shut();
        let result = loop {
            let mut inner = self.0.inner.borrow_mut();
            if inner.ring.is_none() {
                break Ok(());
            }
            let pending = inner.awaiting_kernel_keys();
            // Closes in the SQ or in flight are waited for too: unsubmitted, they would leak
            // their descriptors.
            if pending.is_empty() && inner.closes_in_flight == 0 {
                break Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                break Err(inner.abandon(pending.len(), timeout));
            }
            for key in pending {
                // A cancel that cannot be queued is retried on the next round.
                if inner.push_cancel(key).is_err() {
                    break;
                }
            }
            let wait = (deadline - now).min(Duration::from_millis(100));
            let r = inner.enter(1, Some(wait), 0);
            drop(inner);
            self.run_released();
            if let Err(e) = r {
                let mut inner = self.0.inner.borrow_mut();
                let n = inner.awaiting_kernel_count();
                if n == 0 {
                    break Ok(());
                }
                let abandoned = inner.abandon(n, timeout);
                break Err(io::Error::new(
                    e.kind(),
                    format!("{abandoned} (io_uring_enter failed: {e})"),
                ));
            }
        };
        self.run_released();
        let ring = {
            let mut inner = self.0.inner.borrow_mut();
            let ring = inner.ring.take();
            if let Some(r) = &ring {
                // On the loop's thread, which registered it (the driver never leaves it).
                inner.enter_fd.unregister(r.as_raw_fd());
            }
            ring
        };
        if let (Some(ring), Some(pool)) = (&ring, &self.0.pool) {
            if result.is_ok() {
                // Every op has completed: no recv can pick a buffer any more.
                pool.unregister(ring);
            } else {
                // Abandoned receives may still pick a pool buffer and write it: leak the pool
                // (one reference, never released) rather than free that memory.
                std::mem::forget(pool.clone());
            }
        }
        // Dropping the ring closes its descriptor and unmaps the queues.
        drop(ring);
        result
    }

    fn run_released(&self) {
        let mut released = Released::default();
        self.take_released(&mut released);
        released.run();
        self.run_detached();
    }
}
