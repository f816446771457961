//! Handing a socket's descriptor back to its owner (`into_std`): once no operation of the
//! loop's uses it any more, and with the loop's own watch of it removed.

use std::io;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use crate::fd::SharedFd;
use crate::time;

/// How long `release` waits for operations of dropped futures to give the descriptor back.
/// Each had its cancel queued when its future was dropped, so this is a bound for the
/// pathological, not a pace.
const RELEASE_WAIT: Duration = Duration::from_secs(1);

/// The descriptor of `fd`, once every other holder is gone: operations of futures dropped
/// earlier (cancelled then, still owed their completion) hold it until their completion is
/// reaped. The caller has already ended the operations the socket object keeps (its receive,
/// its queued writes).
///
/// # Errors
///
/// An operation still held it after [`RELEASE_WAIT`]; the descriptor is then closed when the
/// last holder goes, as if the socket had been dropped.
pub(crate) async fn release(mut fd: SharedFd) -> io::Result<OwnedFd> {
    // The room watcher may have the socket in its epoll set (see `driver::writable`); that
    // entry would outlive the loop's use of the socket and wake the loop for someone else's
    // sends.
    if let Some(r) = crate::driver::with_current(|d| d.unwatch_writable(fd.raw())) {
        r?;
    }
    let deadline = Instant::now() + RELEASE_WAIT;
    loop {
        fd = match fd.try_unwrap() {
            Ok(owned) => return Ok(owned),
            Err(fd) => fd,
        };
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "into_std: an operation of this socket's was still in the kernel after 1 s \
                 (its future was dropped and its cancel has not completed); the socket is \
                 closed once it completes",
            ));
        }
        time::sleep(Duration::from_millis(1)).await;
    }
}
