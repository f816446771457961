//! Ring set-up: flag fallback, feature probe, and set-up errors that say what to do.

use std::fmt;
use std::io;
use std::time::Duration;

use io_uring::{opcode, IoUring, Probe};

/// The oldest kernel ringloop runs on: 5.11 brought `IORING_FEAT_EXT_ARG`, which lets the
/// loop bound its wait by the next timer deadline without spending an SQE on it.
pub(crate) const MIN_KERNEL: (u32, u32) = (5, 11);

/// How the ring was set up, best first. `EventLoop::features()` reports the one chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SetupMode {
    /// `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL`
    /// (Linux 6.1+): completions are produced only when the loop asks for them, on its own
    /// thread, so no interrupt disturbs a task that is running.
    DeferTaskrun,
    /// `IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL` (Linux 5.19+): the kernel does
    /// not interrupt the thread to post completions.
    CoopTaskrun,
    /// No optional set-up flags (Linux 5.11+).
    Basic,
}

impl SetupMode {
    const LADDER: [SetupMode; 3] = [
        SetupMode::DeferTaskrun,
        SetupMode::CoopTaskrun,
        SetupMode::Basic,
    ];
}

/// What the loop's set-up chose and what the running kernel supports.
#[derive(Clone)]
pub struct Features {
    mode: SetupMode,
    sq_entries: u32,
    cq_entries: u32,
    kernel: String,
    probe: Vec<bool>,
    recv_buffer_ring: bool,
    multishot_recv: bool,
    multishot_accept: bool,
    iowait: bool,
    batch_wait: Option<std::time::Duration>,
    ring_registered: bool,
    /// Set up with `IORING_SETUP_NO_SQARRAY`.
    no_sq_array: bool,
}

impl Features {
    /// The set-up flags in use.
    pub fn setup_mode(&self) -> SetupMode {
        self.mode
    }

    /// Size of the submission queue.
    pub fn sq_entries(&self) -> u32 {
        self.sq_entries
    }

    /// Size of the completion queue.
    pub fn cq_entries(&self) -> u32 {
        self.cq_entries
    }

    /// The kernel release (`uname -r`).
    pub fn kernel_release(&self) -> &str {
        &self.kernel
    }

    /// Whether receives draw from a provided-buffer ring (Linux 5.19+). Without it, each
    /// receive allocates its buffer when it starts.
    pub fn recv_buffer_ring(&self) -> bool {
        self.recv_buffer_ring
    }

    pub(crate) fn set_recv_buffer_ring(&mut self, on: bool) {
        self.recv_buffer_ring = on;
    }

    /// Whether a stream's receives use one multishot RECV that stays armed (Linux 6.0+, with
    /// a buffer ring), rather than one RECV per call.
    pub fn multishot_recv(&self) -> bool {
        self.multishot_recv
    }

    pub(crate) fn set_multishot_recv(&mut self, on: bool) {
        self.multishot_recv = on;
    }

    /// Whether a listener keeps one multishot ACCEPT armed (Linux 5.19+) rather than one
    /// ACCEPT per call.
    pub fn multishot_accept(&self) -> bool {
        self.multishot_accept
    }

    pub(crate) fn set_multishot_accept(&mut self, on: bool) {
        self.multishot_accept = on;
    }

    /// Whether the loop's waits count as iowait: true unless [`Builder::iowait`] turned that
    /// off and the kernel can (Linux 6.15+).
    ///
    /// [`Builder::iowait`]: crate::Builder::iowait
    pub fn iowait(&self) -> bool {
        self.iowait
    }

    pub(crate) fn set_iowait(&mut self, on: bool) {
        self.iowait = on;
    }

    /// The bound of a batch wait in effect: what [`Builder::batch_wait`] asked for, if the
    /// kernel can bound a wait that way (Linux 6.12+).
    ///
    /// [`Builder::batch_wait`]: crate::Builder::batch_wait
    pub fn batch_wait(&self) -> Option<std::time::Duration> {
        self.batch_wait
    }

    pub(crate) fn set_batch_wait(&mut self, wait: Option<std::time::Duration>) {
        self.batch_wait = wait;
    }

    /// Whether the ring is registered with the loop's thread (`IORING_REGISTER_RING_FDS`,
    /// Linux 5.18+), which spares the kernel a descriptor lookup per `io_uring_enter`. A
    /// thread holds at most 16 such rings; loops past that enter by descriptor.
    pub fn ring_registered(&self) -> bool {
        self.ring_registered
    }

    pub(crate) fn set_ring_registered(&mut self, on: bool) {
        self.ring_registered = on;
    }

    /// Whether the kernel supports the io_uring opcode `code` (for example
    /// `io_uring::opcode::RecvMulti::CODE`), as reported by `IORING_REGISTER_PROBE`.
    pub fn supports_opcode(&self, code: u8) -> bool {
        self.probe.get(code as usize).copied().unwrap_or(false)
    }
}

impl fmt::Debug for Features {
    /// Every field, with the opcode probe as the ranges of supported opcode numbers
    /// ("0-57, 59") rather than 256 booleans.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut opcodes: Vec<String> = Vec::new();
        let mut start = None;
        // A `false` past the end closes a range that runs to the last opcode.
        for (code, &on) in self.probe.iter().chain([&false]).enumerate() {
            match (on, start) {
                (true, None) => start = Some(code),
                (false, Some(first)) => {
                    opcodes.push(if first + 1 == code {
                        first.to_string()
                    } else {
                        format!("{first}-{}", code - 1)
                    });
                    start = None;
                }
                _ => {}
            }
        }
        f.debug_struct("Features")
            .field("mode", &self.mode)
            .field("sq_entries", &self.sq_entries)
            .field("cq_entries", &self.cq_entries)
            .field("kernel", &self.kernel)
            .field("opcodes", &opcodes.join(", "))
            .field("recv_buffer_ring", &self.recv_buffer_ring)
            .field("multishot_recv", &self.multishot_recv)
            .field("multishot_accept", &self.multishot_accept)
            .field("iowait", &self.iowait)
            .field("batch_wait", &self.batch_wait)
            .field("no_sq_array", &self.no_sq_array)
            .finish()
    }
}

/// What the builder asked for.
#[derive(Clone, Debug)]
pub(crate) struct RingConfig {
    pub(crate) entries: u32,
    pub(crate) cq_entries: u32,
    /// `None`: best available; `Some(m)`: exactly `m`, or an error.
    pub(crate) mode: Option<SetupMode>,
    /// `IORING_SETUP_TASKRUN_FLAG` with the modes that defer completions to the loop's
    /// thread: the kernel sets `IORING_SQ_TASKRUN` while it has some to post, which a
    /// spinning loop watches (`Builder::spin_before_sleep`).
    pub(crate) taskrun_flag: bool,
}

/// Builds the ring, falling back through [`SetupMode`]s the kernel rejects with `EINVAL`.
pub(crate) fn setup(cfg: &RingConfig) -> io::Result<(IoUring, Features)> {
    let ladder: &[SetupMode] = match &cfg.mode {
        Some(m) => std::slice::from_ref(m),
        None => &SetupMode::LADDER,
    };
    let mut last_err = None;
    // `IORING_SETUP_NO_SQARRAY` (6.6+) drops the SQ's index array: the kernel reads SQEs in
    // ring order, one load fewer per SQE. The loop's locked memory is a page smaller at 1024
    // entries. At the default 512 it is not: the array fits in the page that the ring's
    // header already pushes the completions into. Each rung is tried with it first. An older
    // kernel refuses it with EINVAL, as it does a rung's own flags, so a refusal proves
    // nothing for the next rung: at worst six quick refusals on a kernel that takes only
    // `Basic`.
    let attempts = ladder
        .iter()
        .flat_map(|&mode| [(mode, true), (mode, false)]);
    for (mode, no_sq_array) in attempts {
        let mut b = IoUring::builder();
        b.setup_cqsize(cfg.cq_entries);
        if no_sq_array {
            b.setup_no_sqarray();
        }
        match mode {
            SetupMode::DeferTaskrun => {
                b.setup_single_issuer()
                    .setup_defer_taskrun()
                    .setup_submit_all();
            }
            SetupMode::CoopTaskrun => {
                b.setup_coop_taskrun().setup_submit_all();
            }
            SetupMode::Basic => {}
        }
        // Both deferring modes know it (5.19+, as COOP_TASKRUN). Without them the kernel
        // posts completions at once, interrupting the thread, and the CQ ring shows them.
        if cfg.taskrun_flag && mode != SetupMode::Basic {
            b.setup_taskrun_flag();
        }
        // ENOMEM may be a closed ring's memory not yet given back: retried (`retry_enomem`).
        match retry_enomem(ENOMEM_WINDOW, || b.build(cfg.entries)) {
            Ok(ring) => return finish(ring, mode, no_sq_array),
            // EINVAL: this kernel does not know one of the flags; try the next attempt.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last_err = Some(e),
            Err(e) => return Err(explain(e, cfg.entries)),
        }
    }
    let e = last_err.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL));
    Err(explain(e, cfg.entries))
}

/// How long [`retry_enomem`] keeps trying. Long enough for a grace period on a busy machine
/// (this host's were ~16 ms, a loaded CI runner's several times that); short enough that a
/// limit truly used up by open rings is reported within a second.
pub(crate) const ENOMEM_WINDOW: Duration = Duration::from_millis(1000);

/// Runs `f` until it returns anything but `ENOMEM`, or until `window` has been spent sleeping
/// between tries (1 ms, doubling up to 32 ms); then its last error stands.
///
/// Why: for a process without `CAP_IPC_LOCK` in the initial user namespace, every ring's
/// memory and every registered buffer ring's entries count against `RLIMIT_MEMLOCK`, a budget
/// shared by all of the user's processes. The kernel gives a closed ring's share back only
/// once its teardown has run, after an RCU grace period, so a program that closes loops and
/// creates new ones at once can find the budget briefly used up by rings it no longer has.
pub(crate) fn retry_enomem<T>(
    window: Duration,
    mut f: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    let mut wait = Duration::from_millis(1);
    let mut waited = Duration::ZERO;
    loop {
        match f() {
            Err(e) if e.raw_os_error() == Some(libc::ENOMEM) && waited < window => {
                std::thread::sleep(wait);
                waited += wait;
                wait = (wait * 2).min(Duration::from_millis(32));
            }
            r => return r,
        }
    }
}

fn finish(ring: IoUring, mode: SetupMode, no_sq_array: bool) -> io::Result<(IoUring, Features)> {
    let kernel = super::kernel_release();
    let params = ring.params();
    if !params.is_feature_ext_arg() || !params.is_feature_nodrop() {
        return Err(SetupError::new(
            libc::ENOSYS,
            format!(
                "io_uring on this kernel ({kernel}) lacks IORING_FEAT_EXT_ARG or IORING_FEAT_NODROP: \
                 ringloop needs Linux {}.{} or later; upgrade the kernel",
                MIN_KERNEL.0, MIN_KERNEL.1
            ),
        )
        .into_io());
    }
    let mut probe = Probe::new();
    let mut supported = vec![false; 256];
    if ring.submitter().register_probe(&mut probe).is_ok() {
        for (code, slot) in supported.iter_mut().enumerate() {
            *slot = probe.is_supported(code as u8);
        }
    }
    // Everything the core loop itself issues must be there.
    for (code, name) in [
        (opcode::Read::CODE, "IORING_OP_READ"),
        (opcode::AsyncCancel::CODE, "IORING_OP_ASYNC_CANCEL"),
        (opcode::Nop::CODE, "IORING_OP_NOP"),
    ] {
        if !supported[code as usize] {
            return Err(SetupError::new(
                libc::ENOSYS,
                format!(
                    "io_uring on this kernel ({kernel}) does not support {name}: ringloop needs \
                     Linux {}.{} or later; upgrade the kernel",
                    MIN_KERNEL.0, MIN_KERNEL.1
                ),
            )
            .into_io());
        }
    }
    let features = Features::of_ring(
        mode,
        (params.sq_entries(), params.cq_entries()),
        kernel,
        supported,
        no_sq_array,
    );
    Ok((ring, features))
}

impl Features {
    /// What set-up knows of a ring; the driver's choices (buffer ring, multishot, ...) are
    /// filled in once it is built.
    pub(crate) fn of_ring(
        mode: SetupMode,
        (sq_entries, cq_entries): (u32, u32),
        kernel: String,
        probe: Vec<bool>,
        no_sq_array: bool,
    ) -> Features {
        Features {
            mode,
            sq_entries,
            cq_entries,
            kernel,
            probe,
            recv_buffer_ring: false,
            multishot_recv: false,
            multishot_accept: false,
            iowait: true,
            batch_wait: None,
            ring_registered: false,
            no_sq_array,
        }
    }
}

/// An `io_uring_setup` failure with its cause spelled out. The OS error is kept as `source()`.
#[derive(Debug)]
struct SetupError {
    errno: i32,
    message: String,
}

impl SetupError {
    fn new(errno: i32, message: String) -> SetupError {
        SetupError { errno, message }
    }

    fn into_io(self) -> io::Error {
        let kind = io::Error::from_raw_os_error(self.errno).kind();
        let kind = if self.errno == libc::ENOSYS {
            io::ErrorKind::Unsupported
        } else {
            kind
        };
        io::Error::new(kind, self)
    }
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        None
    }
}

/// Names the cause of a failed `io_uring_setup` and what to do about it.
fn explain(e: io::Error, entries: u32) -> io::Error {
    let Some(errno) = e.raw_os_error() else {
        return e;
    };
    let kernel = super::kernel_release();
    let new_enough = super::parse_kernel_version(&kernel).is_some_and(|v| v >= MIN_KERNEL);
    let message = match errno {
        libc::ENOSYS if new_enough => format!(
            "io_uring is unavailable: io_uring_setup returned ENOSYS although the kernel ({kernel}) \
             is new enough, so a seccomp filter or a sandbox (such as gVisor) is hiding it; allow \
             io_uring_setup, io_uring_enter and io_uring_register in that profile (see \
             docs/containers.md)"
        ),
        libc::ENOSYS => format!(
            "io_uring is unavailable: the kernel ({kernel}) does not implement io_uring_setup \
             (ENOSYS); ringloop needs Linux {}.{} or later: upgrade the kernel",
            MIN_KERNEL.0, MIN_KERNEL.1
        ),
        libc::EPERM => explain_eperm(),
        libc::ENOMEM => format!(
            "io_uring_setup failed with ENOMEM for a ring of {entries} entries: {}",
            memlock_advice()
        ),
        _ => format!("io_uring_setup failed: {e}"),
    };
    SetupError::new(errno, message).into_io()
}

fn explain_eperm() -> String {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    match disabled {
        Some(2) => "io_uring is disabled on this machine: /proc/sys/kernel/io_uring_disabled is 2 \
                    (no process may create rings); enable it with \
                    `sysctl -w kernel.io_uring_disabled=0` (as root)"
            .to_owned(),
        Some(1) => {
            let group = std::fs::read_to_string("/proc/sys/kernel/io_uring_group")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "?".to_owned());
            format!(
                "io_uring is restricted on this machine: /proc/sys/kernel/io_uring_disabled is 1, \
                 so only root and members of group {group} (kernel.io_uring_group) may create \
                 rings; add this user to that group or run `sysctl -w kernel.io_uring_disabled=0`"
            )
        }
        _ => {
            let seccomp = std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("Seccomp:").map(|v| v.trim().to_owned()))
                });
            let filtered = if seccomp.as_deref() == Some("2") {
                " (this process runs under a seccomp filter)"
            } else {
                ""
            };
            format!(
                "io_uring_setup was refused with EPERM, most likely by a seccomp profile{filtered}: \
                 Docker 25+ and many CI container runners block io_uring by default; run the \
                 container with a profile that allows io_uring_setup, io_uring_enter and \
                 io_uring_register (`docker run --security-opt seccomp=ci/seccomp-io_uring.json`, \
                 see docs/containers.md)"
            )
        }
    }
}

/// What an `ENOMEM` from ring set-up or from registering a buffer ring most likely means, and
/// what to do about it.
pub(crate) fn memlock_advice() -> String {
    let limit = memlock_limit()
        .map(|l| format!("currently {l}"))
        .unwrap_or_else(|| "unknown".to_owned());
    format!(
        "for a process without CAP_IPC_LOCK in the initial user namespace (a user other than \
         root, or root in a container's user namespace) the kernel charges ring memory and \
         buffer-ring entries to the locked-memory limit (RLIMIT_MEMLOCK, {limit}), a budget \
         shared by all of the user's processes, and gives a closed ring's share back only \
         after a grace period (ringloop retried for {} ms); raise the limit with \
         `ulimit -l unlimited` (systemd: LimitMEMLOCK=infinity, docker: --ulimit memlock=-1), \
         or open fewer loops, or give each fewer entries (Builder::entries) or receive \
         buffers (Builder::recv_buffers)",
        ENOMEM_WINDOW.as_millis()
    )
}

fn memlock_limit() -> Option<String> {
    // SAFETY: rlimit is plain old data; all-zero is a valid value.
    let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `rl` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rl) } != 0 {
        return None;
    }
    Some(if rl.rlim_cur == libc::RLIM_INFINITY {
        "unlimited".to_owned()
    } else {
        format!("{} KiB", rl.rlim_cur / 1024)
    })
}

#[cfg(test)]
mod tests;
