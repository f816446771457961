//! `Held<T>`: an op's data while the kernel may use pointers taken from it.

use std::mem::MaybeUninit;

use super::completion::{Completion, Orphan};
use super::op::OpCode;

/// An op's data, kept where moving it does not claim its memory anew.
///
/// The kernel reads and writes an op's buffers through pointers the op handed out when it was
/// submitted, and meanwhile the data moves: into the op table when its future is dropped,
/// out of it at the final CQE. Under Rust's aliasing rules (Stacked and Tree Borrows alike), a
/// `Box` inside a value passed or moved by value is claimed for unique use again, and the
/// kernel's later access then invalidates that claim: undefined behaviour at the owner's next
/// use. A `MaybeUninit` is opaque to those rules, so a `Held` moves as plain bytes, and what
/// it holds is claimed again only when the op takes it out through `get_mut`, after the
/// kernel is done.
/// `Vec`s, which hold a raw pointer, were never affected; a user's `Box<[u8]>` buffer is.
pub(crate) struct Held<T>(MaybeUninit<T>);

impl<T> Held<T> {
    #[inline]
    pub(crate) fn new(value: T) -> Held<T> {
        Held(MaybeUninit::new(value))
    }

    #[inline]
    pub(crate) fn get(&self) -> &T {
        // SAFETY: initialised by `new`; only `drop`, the last use, takes the value out.
        unsafe { self.0.assume_init_ref() }
    }

    #[inline]
    pub(crate) fn get_mut(&mut self) -> &mut T {
        // SAFETY: initialised by `new`; only `drop`, the last use, takes the value out.
        unsafe { self.0.assume_init_mut() }
    }
}

impl<T> Drop for Held<T> {
    fn drop(&mut self) {
        // SAFETY: initialised by `new`, and dropped only here.
        unsafe { self.0.assume_init_drop() }
    }
}

/// An op's data, orphaned with its slot (see `Op`'s drop): told of each CQE that reaches it.
impl<T: OpCode> Orphan for Held<Option<T>> {
    fn release(&mut self, c: Completion) {
        if let Some(d) = self.get_mut() {
            OpCode::release(d, c)
        }
    }
}
