//! What a driver is set up with: the loop's settings for it, which `Builder` holds and the
//! driver reads as they are, and the hooks through which it reaches the runtime.

use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

/// A loop's settings for its driver; each is a `Builder` method's, where it is documented.
#[derive(Clone, Debug)]
pub(crate) struct DriverConfig {
    /// The receive-buffer pool: `count` buffers of `size` bytes.
    pub(crate) recv_buffers: (u16, usize),
    /// False: do not register a pool (the older kernels' path).
    pub(crate) recv_buffer_ring: bool,
    /// Use multishot receives where the kernel has them.
    pub(crate) multishot: bool,
    /// Use multishot accepts where the kernel has them.
    pub(crate) multishot_accept: bool,
    /// Use SEND_ZC for writes of at least this many bytes, where the kernel has it.
    pub(crate) send_zc_threshold: Option<usize>,
    /// False: ask the kernel not to count waits as iowait, where it can (6.15+).
    pub(crate) iowait: bool,
    /// Bound of a batch wait, where the kernel has min-wait (6.12+).
    pub(crate) batch_wait: Option<Duration>,
    /// How long a wait spins before it sleeps.
    pub(crate) spin: Option<Duration>,
    /// Try queued sends at submit where the kernel allows (see `Driver::submit_detached_tried`).
    pub(crate) trial_sends: bool,
    /// Serve timers with one kernel timeout (see `Driver::arm_timer`); false: give every
    /// wait the next deadline.
    pub(crate) kernel_timer: bool,
}

impl Default for DriverConfig {
    fn default() -> DriverConfig {
        DriverConfig {
            recv_buffers: (1024, 64 * 1024),
            recv_buffer_ring: true,
            multishot: true,
            multishot_accept: true,
            send_zc_threshold: None,
            iowait: true,
            batch_wait: None,
            spin: None,
            trial_sends: true,
            kernel_timer: true,
        }
    }
}

/// How the driver reaches the runtime above it, which it knows nothing else of.
pub(crate) struct RuntimeHooks {
    /// Wakes the loop from another thread (a buffer dropped there was queued for return).
    pub(crate) wake_loop: Arc<dyn Fn() + Send + Sync>,
    /// Called for each waker a CQE releases: it may wake the waker on the spot if doing so
    /// cannot reach the driver or run user code (the executor's own task wakers, which only
    /// push onto the run queue), or hand it back to be woken after the driver's borrow ends.
    pub(crate) wake_inline: fn(Waker) -> Result<(), Waker>,
    /// `wake_inline` for a waker that stays registered (a stream's): true if it was woken on
    /// the spot; false if a clone of it is to be woken after the borrow.
    pub(crate) wake_inline_ref: fn(&Waker) -> bool,
}
