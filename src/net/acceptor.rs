//! The accepting half shared by TCP and Unix listeners: cancel-safety and EMFILE back-off.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::ops::{Accept, Accepted, Stash};
use crate::driver::Op;
use crate::fd::SharedFd;
use crate::net::ops::accept_addr_buf;

/// How long `accept` waits before trying again after the process or system ran out of
/// descriptors (or memory): long enough that a server retrying at once does not spin, short
/// enough to recover promptly when descriptors free up.
const FD_EXHAUSTED_BACKOFF: Duration = Duration::from_millis(25);

pub(crate) struct Acceptor {
    pub(crate) fd: SharedFd,
    stash: Arc<Stash<Accepted>>,
    /// Nanoseconds since `epoch()` before which `accept` should not ask the kernel again.
    retry_at: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos_since_epoch(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

impl Acceptor {
    pub(crate) fn new(fd: SharedFd) -> Acceptor {
        Acceptor {
            fd,
            stash: Arc::new(Stash::default()),
            retry_at: AtomicU64::new(0),
        }
    }

    /// The next connection: a stashed one first (accepted for a dropped future), else one
    /// from the kernel. After `EMFILE`/`ENFILE`/`ENOBUFS`/`ENOMEM` the error is returned and
    /// the next call first waits a short back-off.
    pub(crate) async fn accept(&self) -> io::Result<Accepted> {
        if let Some(a) = self.stash.pop() {
            return Ok(a);
        }
        let retry_at = self.retry_at.load(Ordering::Relaxed);
        if retry_at != 0 {
            let at = epoch() + Duration::from_nanos(retry_at);
            crate::time::sleep_until(at).await;
            if let Some(a) = self.stash.pop() {
                return Ok(a);
            }
        }
        let out = Op::new(Accept {
            fd: self.fd.clone(),
            addr: accept_addr_buf(),
            stash: self.stash.clone(),
        })
        .await;
        match out.result {
            Ok(res) => {
                self.retry_at.store(0, Ordering::Relaxed);
                Ok(out.data.accepted(res))
            }
            Err(e) => {
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                ) {
                    let at = Instant::now() + FD_EXHAUSTED_BACKOFF;
                    self.retry_at
                        .store(nanos_since_epoch(at), Ordering::Relaxed);
                }
                Err(e)
            }
        }
    }
}
