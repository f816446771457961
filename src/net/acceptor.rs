//! The accepting half shared by TCP and Unix listeners: a multishot accept kept armed (or one
//! accept per call on older kernels), cancel-safety, and EMFILE back-off.

use std::future::poll_fn;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use socket2::SockRef;

use super::ops::{accept_multi_sqe, Accept, AcceptKeep, Accepted, Stash};
use crate::driver::{Op, StreamKeep};
use crate::fd::SharedFd;
use crate::net::armed::Armed;
use crate::net::ops::accept_addr_buf;

/// How long `accept` waits before trying again after the process or system ran out of
/// descriptors (or memory): long enough that a server retrying at once does not spin, short
/// enough to recover promptly when descriptors free up.
const FD_EXHAUSTED_BACKOFF: Duration = Duration::from_millis(25);

/// Connections a multishot accept may take ahead of the caller before it is paused. Past
/// this, connections wait in the kernel's listen backlog, where they belong.
const ACCEPT_AHEAD: usize = 128;

pub(crate) struct Acceptor {
    pub(crate) fd: SharedFd,
    /// Connections accepted for dropped futures on the single-shot path.
    stash: Arc<Stash<Accepted>>,
    /// Nanoseconds since `epoch()` before which `accept` should not ask the kernel again.
    retry_at: AtomicU64,
    /// The armed multishot accept.
    armed: Armed,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos_since_epoch(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

fn fd_exhausted(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

impl Acceptor {
    pub(crate) fn new(fd: SharedFd) -> Acceptor {
        Acceptor {
            fd,
            stash: Arc::new(Stash::default()),
            retry_at: AtomicU64::new(0),
            armed: Armed::default(),
        }
    }

    /// The next connection; with `want_addr`, with its peer address, which a multishot
    /// accept must ask for (see `next_multishot`). After `EMFILE`/`ENFILE`/`ENOBUFS`/`ENOMEM`
    /// the error is returned and the next call first waits a short back-off.
    pub(crate) async fn accept(&self, want_addr: bool) -> io::Result<Accepted> {
        loop {
            if let Some(a) = self.stash.pop() {
                return Ok(a);
            }
            let retry_at = self.retry_at.load(Ordering::Relaxed);
            if retry_at != 0 {
                crate::time::sleep_until(epoch() + Duration::from_nanos(retry_at)).await;
                self.retry_at.store(0, Ordering::Relaxed);
                continue;
            }
            let result = match self.armed_key()? {
                Some(key) => self.next_multishot(key, want_addr).await,
                None => self.accept_once().await.map(Some),
            };
            match result {
                Ok(Some(a)) => return Ok(a),
                // The multishot accept was paused, or the peer left before we asked its
                // address: wait for the next connection.
                Ok(None) => continue,
                Err(e) => {
                    if fd_exhausted(&e) {
                        let at = Instant::now() + FD_EXHAUSTED_BACKOFF;
                        self.retry_at
                            .store(nanos_since_epoch(at), Ordering::Relaxed);
                    }
                    return Err(e);
                }
            }
        }
    }

    /// The multishot accept's slot, armed now if needed; `None` where the loop uses one
    /// accept per call. Synchronous, so the driver (`!Send`) is never held across an await.
    fn armed_key(&self) -> io::Result<Option<usize>> {
        crate::driver::with_current(|driver| {
            if !driver.multishot_accept() {
                return Ok(None);
            }
            self.armed
                .get_or_arm(driver, || {
                    self.fd.claim();
                    let keep = AcceptKeep {
                        fd: self.fd.clone(),
                    };
                    driver.arm_stream(
                        accept_multi_sqe(&self.fd),
                        StreamKeep::Other(Box::new(keep)),
                        ACCEPT_AHEAD,
                    )
                })
                .map(Some)
        })
        .unwrap_or_else(|| panic!("ringloop: accept() polled outside a running event loop"))
    }

    /// The next CQE of the armed multishot accept. Cancel-safe: an untaken CQE stays queued
    /// in the slot. `Ok(None)`: nothing to hand out this time (the accept was paused for
    /// back-pressure and must be re-armed, or the peer left before we asked its address).
    async fn next_multishot(&self, key: usize, want_addr: bool) -> io::Result<Option<Accepted>> {
        let c = poll_fn(|cx| self.armed.poll_next(key, cx)).await;
        match c.result() {
            Ok(res) => {
                // SAFETY: a successful accept returns a new descriptor that nobody else owns,
                // and this CQE is taken from the queue exactly once.
                let fd = unsafe { OwnedFd::from_raw_fd(res as i32) };
                if !want_addr {
                    return Ok(Some(Accepted { fd, addr: None }));
                }
                // The kernel reports no address for a multishot accept: ask for it. A peer
                // that already reset has none; its connection is dropped, not returned.
                match SockRef::from(&fd).peer_addr() {
                    Ok(addr) => Ok(Some(Accepted {
                        fd,
                        addr: Some(addr),
                    })),
                    Err(_) => Ok(None),
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ECANCELED) && !c.more() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Hands the listening socket back (`into_std`), with the connections the loop had
    /// accepted and not handed out: the multishot accept is cancelled and its completions up
    /// to the last taken, then the descriptor is released once no operation holds it (an
    /// accept of a dropped future puts its connection in the stash as it completes). An
    /// accept's error meanwhile loses nothing: the connection stays in the backlog.
    pub(crate) async fn into_fd(self) -> io::Result<(OwnedFd, Vec<OwnedFd>)> {
        let mut accepted = Vec::new();
        if let Some(key) = self.armed.key() {
            self.armed.cancel()?;
            loop {
                let c = poll_fn(|cx| self.armed.poll_next(key, cx)).await;
                if let Ok(res) = c.result() {
                    // SAFETY: a successful accept returns a new descriptor that nobody else
                    // owns, and this CQE is taken from the queue exactly once.
                    accepted.push(unsafe { OwnedFd::from_raw_fd(res as i32) });
                }
                if !c.more() {
                    break;
                }
            }
        }
        let Acceptor {
            fd, stash, armed, ..
        } = self;
        drop(armed);
        let fd = super::release::release(fd).await?;
        accepted.extend(std::iter::from_fn(|| stash.pop()).map(|a| a.fd));
        Ok((fd, accepted))
    }

    /// One `IORING_OP_ACCEPT`; a connection accepted for a dropped future waits in the stash.
    async fn accept_once(&self) -> io::Result<Accepted> {
        let out = Op::new(Accept {
            fd: self.fd.clone(),
            addr: accept_addr_buf(),
            stash: self.stash.clone(),
        })
        .await;
        out.result.map(|res| out.data.accepted(res))
    }
}
