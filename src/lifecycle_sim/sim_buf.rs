//! What the programs' tasks own: buffers whose release the shadow model hears of, and a
//! count of the tasks alive.

use std::cell::{Cell, RefCell};

use crate::buf::{IoBuf, IoBufMut};
use crate::sys::sim;

thread_local! {
    /// Test buffers alive, and tasks alive.
    static LIVE_BUFS: Cell<usize> = const { Cell::new(0) };
    static LIVE_TASKS: Cell<usize> = const { Cell::new(0) };
    /// Released test buffers, kept allocated until the case ends, so that no other
    /// allocation (a heap receive buffer, say) takes their addresses while the shadow model
    /// marks them released. Under Miri too: the kernel's accesses go through integer
    /// addresses (exposed provenance), with which Miri cannot tell a reused address from the
    /// freed allocation.
    static GRAVEYARD: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// Test buffers alive.
pub(super) fn live_bufs() -> usize {
    LIVE_BUFS.with(|n| n.get())
}

/// Tasks alive.
pub(super) fn live_tasks() -> usize {
    LIVE_TASKS.with(|n| n.get())
}

/// The case is over: released buffers may be freed.
pub(super) fn bury() {
    GRAVEYARD.with(|g| g.borrow_mut().clear());
}

/// A buffer whose release the shadow model hears of.
pub(super) struct SimBuf {
    mem: Option<Box<[u8]>>,
    init: usize,
}

impl SimBuf {
    pub(super) fn new(len: usize) -> SimBuf {
        let mem = vec![0u8; len].into_boxed_slice();
        LIVE_BUFS.with(|n| n.set(n.get() + 1));
        SimBuf {
            mem: Some(mem),
            init: 0,
        }
    }

    /// A buffer holding what a checked writer sends on `fd` from `offset` on.
    pub(super) fn output(fd: i32, offset: u64, len: usize) -> SimBuf {
        let mut b = SimBuf::new(len);
        for (i, byte) in b.mem.as_mut().expect("alive").iter_mut().enumerate() {
            *byte = sim::output_byte(fd, offset + i as u64);
        }
        b.init = len;
        b
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.mem.as_ref().expect("alive until dropped")[..self.init]
    }
}

impl Drop for SimBuf {
    fn drop(&mut self) {
        let Some(mem) = self.mem.take() else { return };
        sim::note_freed(mem.as_ptr() as usize, mem.len());
        LIVE_BUFS.with(|n| n.set(n.get() - 1));
        GRAVEYARD.with(|g| g.borrow_mut().push(mem));
    }
}

// SAFETY: the pointer is the boxed slice's, which does not move while `SimBuf` lives (moving
// the box moves only the pointer to it).
unsafe impl IoBuf for SimBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.mem.as_ref().expect("alive until dropped").as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.init
    }

    fn bytes_total(&self) -> usize {
        self.mem.as_ref().map_or(0, |m| m.len())
    }
}

// SAFETY: as for `IoBuf`; `set_init` is only given lengths the kernel reported written.
unsafe impl IoBufMut for SimBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.mem.as_mut().expect("alive until dropped").as_mut_ptr()
    }

    unsafe fn set_init(&mut self, init: usize) {
        self.init = self.init.max(init);
    }
}

/// Counts a task as alive while it is held.
pub(super) struct Alive;

impl Alive {
    pub(super) fn new() -> Alive {
        LIVE_TASKS.with(|n| n.set(n.get() + 1));
        Alive
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        LIVE_TASKS.with(|n| n.set(n.get() - 1));
    }
}
