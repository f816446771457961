//! The simulated kernel's accesses to the loop's memory, and the shadow model they are
//! checked against: the ranges whose owners released them.

use std::collections::BTreeMap;

use super::sqe::Sqe;
use super::violation;

/// Memory released by its owners (start → length), as the test's buffers report it. The
/// kernel touching any of it is the use-after-free the simulation hunts; under Miri the
/// access itself is checked as well.
#[derive(Default)]
pub(super) struct Memory {
    dead: BTreeMap<usize, usize>,
}

impl Memory {
    pub(super) fn note_freed(&mut self, addr: usize, len: usize) {
        if len > 0 {
            self.dead.insert(addr, len);
        }
    }

    /// Checks `addr..addr + len` against the shadow model, then reads it as the kernel would
    /// for `sqe`.
    pub(super) fn read(&self, addr: usize, len: usize, sqe: &Sqe) -> Vec<u8> {
        self.check_alive(addr, len, sqe, "read");
        if len == 0 {
            return Vec::new();
        }
        let mut out = vec![0u8; len];
        // SAFETY: the `OpCode` contract keeps `addr..addr + len` valid until the op's final
        // CQE (not posted yet), and the shadow model found no owner released it; under Miri a
        // broken promise is undefined behaviour reported here.
        unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, out.as_mut_ptr(), len) };
        out
    }

    /// Checks, then writes `bytes` at `addr` as the kernel would for `sqe`.
    pub(super) fn write(&self, addr: usize, bytes: &[u8], sqe: &Sqe) {
        self.check_alive(addr, bytes.len(), sqe, "write");
        // SAFETY: as in `read`, for memory the op gave the kernel to write.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, bytes.len()) };
    }

    fn check_alive(&self, addr: usize, len: usize, sqe: &Sqe, what: &str) {
        let end = addr + len;
        if let Some((&start, &n)) = self.dead.range(..end).next_back() {
            if start + n > addr && len > 0 {
                violation(&format!(
                    "the kernel would {what} {addr:#x}..{end:#x} for op {:?} (user_data {}), \
                     but that memory was released at {start:#x}..{:#x}",
                    sqe.kind,
                    sqe.user_data,
                    start + n
                ));
            }
        }
    }
}
