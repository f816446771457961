//! `io_uring_enter(2)`, called directly: the loop's one per-turn system call.
//!
//! The `io-uring` crate's `Submitter` is rebuilt for each call and forgets a registered ring
//! descriptor, and its enter goes through two wrapper layers. Here the loop registers its
//! ring with the kernel once (`IORING_REGISTER_RING_FDS`, Linux 5.18+), which spares the
//! kernel a descriptor lookup on every enter, and makes the call itself: about 30 fewer
//! user-space instructions per enter.
//!
//! A registered ring index belongs to the thread that registered it: the kernel keeps it in
//! that thread's io_uring context. The driver that owns an [`EnterFd`] never leaves its
//! thread (the event loop is `!Send`), so every enter and the unregistration run there.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// Values from the kernel's uapi header `linux/io_uring.h`.
pub(crate) const ENTER_GETEVENTS: u32 = 1 << 0;
const ENTER_EXT_ARG: u32 = 1 << 3;
const ENTER_REGISTERED_RING: u32 = 1 << 4;
/// Linux 6.15+: the wait does not count as iowait.
pub(crate) const ENTER_NO_IOWAIT: u32 = 1 << 7;
const REGISTER_RING_FDS: libc::c_uint = 20;
const UNREGISTER_RING_FDS: libc::c_uint = 21;

/// `struct io_uring_rsrc_update`.
#[repr(C)]
struct RsrcUpdate {
    offset: u32,
    resv: u32,
    data: u64,
}

/// `struct __kernel_timespec`.
#[repr(C)]
struct KernelTimespec {
    tv_sec: i64,
    tv_nsec: i64,
}

/// `struct io_uring_getevents_arg` (the extended argument, `IORING_ENTER_EXT_ARG`).
#[repr(C)]
struct GetEventsArg {
    sigmask: u64,
    sigmask_sz: u32,
    /// Linux 6.12+ (`IORING_FEAT_MIN_TIMEOUT`); a padding field before, left zero there.
    min_wait_usec: u32,
    /// Address of a `KernelTimespec`, or 0.
    ts: u64,
}

/// What a wait passes besides its counts: an overall timeout and a min-wait.
#[derive(Clone, Copy, Default)]
pub(crate) struct WaitArgs {
    pub(crate) timeout: Option<Duration>,
    pub(crate) min_wait_us: u32,
}

/// The descriptor `io_uring_enter` is given: the ring's own, or its registered index.
pub(crate) struct EnterFd {
    fd: RawFd,
    registered: bool,
}

impl EnterFd {
    /// Registers `ring_fd` with the calling thread's io_uring context, or keeps the plain
    /// descriptor where the kernel refuses (before 5.18, or with no free slot): the loop works
    /// either way, a registered ring just costs the kernel less per enter.
    pub(crate) fn register(ring_fd: RawFd) -> EnterFd {
        let mut up = RsrcUpdate {
            // Any free slot.
            offset: u32::MAX,
            resv: 0,
            data: ring_fd as u64,
        };
        // SAFETY: `up` is a valid `io_uring_rsrc_update` for the one entry announced, alive
        // for the call; the kernel writes the chosen slot into `offset`.
        let res = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                libc::c_long::from(ring_fd),
                libc::c_long::from(REGISTER_RING_FDS),
                &mut up as *mut RsrcUpdate,
                1 as libc::c_long,
            )
        };
        if res == 1 {
            EnterFd {
                fd: up.offset as RawFd,
                registered: true,
            }
        } else {
            EnterFd {
                fd: ring_fd,
                registered: false,
            }
        }
    }

    /// Undoes [`register`](EnterFd::register), on the same thread, before the ring is closed:
    /// a registered ring holds a reference to the ring's file until then (or until the thread
    /// exits). Later enters use `ring_fd`.
    pub(crate) fn unregister(&mut self, ring_fd: RawFd) {
        if !self.registered {
            return;
        }
        let up = RsrcUpdate {
            offset: self.fd as u32,
            resv: 0,
            data: 0,
        };
        // SAFETY: as in `register`; the kernel only reads `up`.
        unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                libc::c_long::from(ring_fd),
                libc::c_long::from(UNREGISTER_RING_FDS),
                &up as *const RsrcUpdate,
                1 as libc::c_long,
            );
        }
        *self = EnterFd {
            fd: ring_fd,
            registered: false,
        };
    }

    /// Whether the ring is registered (diagnostics and tests).
    pub(crate) fn is_registered(&self) -> bool {
        self.registered
    }

    /// `io_uring_enter(fd, to_submit, want, GETEVENTS)`: submits, and waits for `want`
    /// completions with no timeout. The common call, kept to the bare system call. Returns the
    /// number of SQEs submitted.
    #[inline]
    pub(crate) fn enter(&self, to_submit: u32, want: u32) -> io::Result<u32> {
        let flags = if self.registered {
            ENTER_GETEVENTS | ENTER_REGISTERED_RING
        } else {
            ENTER_GETEVENTS
        };
        // SAFETY: no argument pointer, so the kernel reads only the counts and flags. The SQ
        // entries it consumes were written by the driver, which keeps what they point to alive
        // (its contract).
        unsafe { self.syscall(to_submit, want, flags, std::ptr::null(), 0) }
    }

    /// [`enter`](EnterFd::enter) with the extended argument: an overall timeout and a
    /// min-wait from `args`, and `flags` (`ENTER_NO_IOWAIT`) on top of GETEVENTS.
    pub(crate) fn enter_with(
        &self,
        to_submit: u32,
        want: u32,
        flags: u32,
        args: WaitArgs,
    ) -> io::Result<u32> {
        let ts = args.timeout.map(|t| KernelTimespec {
            tv_sec: i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(t.subsec_nanos()),
        });
        let ext = GetEventsArg {
            sigmask: 0,
            sigmask_sz: 0,
            min_wait_usec: args.min_wait_us,
            ts: ts.as_ref().map_or(0, |t| t as *const KernelTimespec as u64),
        };
        let mut flags = flags | ENTER_GETEVENTS | ENTER_EXT_ARG;
        if self.registered {
            flags |= ENTER_REGISTERED_RING;
        }
        // SAFETY: `ext` is a valid `io_uring_getevents_arg` of the size given, whose `ts` is 0
        // or the address of `ts`; both live until the call returns. The SQ entries as above.
        unsafe {
            self.syscall(
                to_submit,
                want,
                flags,
                &ext as *const GetEventsArg as *const libc::c_void,
                std::mem::size_of::<GetEventsArg>(),
            )
        }
    }

    /// # Safety
    ///
    /// `arg` must be null with `argsz` 0, or point at a valid `io_uring_getevents_arg` of
    /// `argsz` bytes (with `ENTER_EXT_ARG` in `flags`) that lives until the call returns.
    #[inline]
    unsafe fn syscall(
        &self,
        to_submit: u32,
        want: u32,
        flags: u32,
        arg: *const libc::c_void,
        argsz: usize,
    ) -> io::Result<u32> {
        // SAFETY: the caller vouches for `arg`; the rest are plain integers.
        let res = unsafe {
            libc::syscall(
                libc::SYS_io_uring_enter,
                libc::c_long::from(self.fd),
                libc::c_long::from(to_submit),
                libc::c_long::from(want),
                libc::c_long::from(flags),
                arg,
                argsz,
            )
        };
        if res < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(res as u32)
        }
    }
}
