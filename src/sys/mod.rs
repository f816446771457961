//! The only layer that talks to the kernel directly.
//!
//! Contract with the layers above:
//! - every raw call becomes an `io::Result` here; nothing above calls `libc` for a syscall;
//! - [`setup()`] builds a ring or returns an error that names the cause and the remedy;
//! - [`EventFd`] is the loop's cross-thread doorbell;
//! - [`EnterFd`] makes the loop's `io_uring_enter` calls;
//! - [`Epoll`] is a wake-up source for descriptors becoming writable;
//! - `signal` installs the process's SIGINT/SIGTERM handler and keeps the eventfds it
//!   writes to; [`pin_thread_to_cpu`] sets a thread's CPU affinity.
//!
//! Tests anywhere may call `libc` to check what the kernel holds (a descriptor's inode,
//! whether it is open): that is the test's business, not the library's.
//!
//! Nothing here knows about tasks, ops or sockets.

mod enter;
mod epoll;
mod eventfd;
mod setup;
pub(crate) mod signal;

pub(crate) use enter::{EnterFd, WaitArgs, ENTER_NO_IOWAIT};
pub(crate) use epoll::Epoll;
pub(crate) use eventfd::EventFd;
pub(crate) use setup::{memlock_advice, retry_enomem, setup, RingConfig, ENOMEM_WINDOW};
pub use setup::{Features, SetupMode};

use std::io;

/// Turns a `-1` return into the thread's `errno`.
pub(crate) fn cvt(res: libc::c_int) -> io::Result<libc::c_int> {
    if res == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(res)
    }
}

/// `CLOCK_MONOTONIC` (the clock of `std::time::Instant` and of io_uring's absolute
/// timeouts) in ns.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// The kernel's release string (`uname -r`), or `"unknown"`.
pub(crate) fn kernel_release() -> String {
    // SAFETY: utsname is plain old data; all-zero is a valid value.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname for the duration of the call.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return "unknown".to_owned();
    }
    let bytes: Vec<u8> = uts
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `(major, minor)` parsed from a release string such as `6.1.0-13-amd64`.
pub(crate) fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Pins the calling thread to CPU `cpu`.
pub(crate) fn pin_thread_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain old data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the caller's `cpu` is below the machine's CPU count, far below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the given size.
    cvt(unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_versions() {
        assert_eq!(parse_kernel_version("6.1.0-13-amd64"), Some((6, 1)));
        assert_eq!(parse_kernel_version("5.10.197"), Some((5, 10)));
        assert_eq!(parse_kernel_version("4.19"), Some((4, 19)));
        assert_eq!(parse_kernel_version("garbage"), None);
    }
}
