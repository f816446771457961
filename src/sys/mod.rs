//! The only layer that talks to the kernel directly.
//!
//! Contract with the layers above:
//! - every raw call becomes an `io::Result` here; nothing above calls `libc` for a syscall;
//! - [`setup()`] builds a ring or returns an error that names the cause and the remedy;
//! - [`EventFd`] is the loop's cross-thread doorbell;
//! - [`EnterFd`] makes the loop's `io_uring_enter` calls;
//! - [`Epoll`] is a wake-up source for descriptors becoming writable;
//! - `signal` installs the process's SIGINT/SIGTERM handler and keeps the eventfds it
//!   writes to; [`pin_thread_to_cpu`] sets a thread's CPU affinity;
//! - [`valgrind_poll_interval`] says how a wait sleeps under valgrind;
//! - [`Ring`] is the ring the driver holds: the kernel's, or, in a build with
//!   `--cfg ringloop_sim`, the simulated kernel of `sim` (tests only; see docs/testing.md).
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
#[cfg(ringloop_sim)]
pub mod sim;

#[cfg(not(ringloop_sim))]
pub(crate) use enter::EnterFd;
pub(crate) use enter::{WaitArgs, ENTER_NO_IOWAIT};
pub(crate) use epoll::Epoll;
pub(crate) use eventfd::EventFd;
#[cfg(not(ringloop_sim))]
pub(crate) use setup::setup;
pub(crate) use setup::{memlock_advice, retry_enomem, RingConfig, ENOMEM_WINDOW};
#[cfg(ringloop_sim)]
pub(crate) use sim::setup;
#[cfg(ringloop_sim)]
pub(crate) use sim::EnterFd;

/// The ring the driver holds: the kernel's, or under `--cfg ringloop_sim` the simulated one
/// (see [`sim`]), which offers the same calls.
#[cfg(not(ringloop_sim))]
pub(crate) type Ring = io_uring::IoUring;
#[cfg(ringloop_sim)]
pub(crate) type Ring = sim::SimRing;
pub use setup::{Features, SetupMode};

use std::io;

/// Under valgrind, how long a loop sleeps between two looks at its rings while it waits
/// (`None` natively). Valgrind runs one thread at a time and, up to at least 3.19, keeps that
/// right across `io_uring_enter`, a system call it does not know can block: a loop asleep in
/// the kernel stops every other thread, so a multi-threaded server (a `Cluster`, with its
/// signal thread) never answered. Under valgrind a wait therefore polls the rings and sleeps
/// in `nanosleep`, which valgrind does know blocks, 1 ms at a time:
/// `RINGLOOP_VALGRIND_POLL_MS` sets another interval, and 0 turns polling off (`bench/` does,
/// to count a single-threaded server's instructions on the path it runs natively). Valgrind
/// is recognised by its core library in `LD_PRELOAD`.
pub(crate) fn valgrind_poll_interval() -> Option<std::time::Duration> {
    static INTERVAL: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
    *INTERVAL.get_or_init(|| {
        let preload = std::env::var_os("LD_PRELOAD")?;
        if !preload.to_string_lossy().contains("vgpreload") {
            return None;
        }
        let ms = std::env::var("RINGLOOP_VALGRIND_POLL_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(1);
        (ms > 0).then(|| std::time::Duration::from_millis(ms))
    })
}

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
    #[cfg(ringloop_sim)]
    return sim::kernel_release();
    #[cfg(not(ringloop_sim))]
    uname_release()
}

#[cfg_attr(ringloop_sim, allow(dead_code))]
fn uname_release() -> String {
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
