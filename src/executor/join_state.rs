//! The part of a task that two threads run at once: the owner completing it, and its join
//! handle registering a waker or letting go, over the task's state bits and its join-waker
//! cell (the rules are in `task`'s module doc). Kept apart, on `util::sync`'s atomics and
//! cell, so that loom checks it in every interleaving (the models below, `--cfg loom`),
//! data races on the cell included.

use std::sync::atomic::Ordering;
use std::task::Waker;

use super::task::{COMPLETE, JOIN_INTEREST, JOIN_WAKER};
use crate::util::sync::{AtomicU32, UnsafeCell};

/// A task's join waker: written only by the join handle while `JOIN_WAKER` is unset.
pub(super) type WakerCell = UnsafeCell<Option<Waker>>;

/// What the owner must do once the task is marked complete.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Completed {
    /// No join handle is left: the owner drops the output.
    DropOutput,
    /// The handle reads the output (its waker, if it registered one, was woken).
    HandleReads,
}

/// The owner's side: marks the task complete, and wakes the join handle's waker if one is
/// registered. Wakes by reference and leaves the waker in the cell: the handle may be
/// reading the cell on another thread at this moment (to compare wakers), so nothing here
/// writes it.
#[inline]
pub(super) fn complete(state: &AtomicU32, cell: &WakerCell) -> Completed {
    let prev = state.fetch_or(COMPLETE, Ordering::AcqRel);
    if prev & JOIN_INTEREST == 0 {
        return Completed::DropOutput;
    }
    if prev & JOIN_WAKER != 0 {
        cell.with(|w| {
            // SAFETY: JOIN_WAKER was set before COMPLETE, so the handle has stopped writing
            // the cell, and with COMPLETE set it never writes it again; reads may overlap.
            if let Some(w) = unsafe { &*w } {
                w.wake_by_ref();
            }
        });
    }
    Completed::HandleReads
}

/// The join handle's side: stores `waker` for the owner to wake on completion. Returns false
/// if the task completed meanwhile (the handle then reads the output).
pub(super) fn register(state: &AtomicU32, cell: &WakerCell, waker: &Waker) -> bool {
    let mut st = state.load(Ordering::Acquire);
    if st & JOIN_WAKER != 0 {
        let same = cell.with(|w| {
            // SAFETY: with JOIN_WAKER set nobody writes the cell (the owner only wakes it by
            // reference); reading it to compare is fine.
            unsafe { &*w }.as_ref().is_some_and(|w| w.will_wake(waker))
        });
        if same {
            return true;
        }
        // Take back exclusive access to the cell.
        loop {
            if st & COMPLETE != 0 {
                return false;
            }
            match state.compare_exchange_weak(
                st,
                st & !JOIN_WAKER,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(s) => st = s,
            }
        }
    }
    cell.with_mut(|w| {
        // SAFETY: JOIN_WAKER is unset, so only this handle touches the cell: the owner reads
        // it only after seeing the bit set when it completes.
        unsafe { *w = Some(waker.clone()) }
    });
    let mut st = state.load(Ordering::Acquire);
    loop {
        if st & COMPLETE != 0 {
            return false;
        }
        match state.compare_exchange_weak(st, st | JOIN_WAKER, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return true,
            Err(s) => st = s,
        }
    }
}

/// The join handle lets go (its drop): true if the task had completed, and the handle must
/// drop the output; otherwise the owner drops it when it completes.
#[inline]
pub(super) fn release_interest(state: &AtomicU32) -> bool {
    state.fetch_and(!JOIN_INTEREST, Ordering::AcqRel) & COMPLETE != 0
}

/// The models: `RUSTFLAGS="--cfg loom" cargo test --lib --release -- loom_`. A waker counts
/// its wakes; loom reports any access to the cell that races another (the race an audit
/// found when the owner took the waker out of the cell while the handle compared it).
#[cfg(all(test, loom))]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering as StdOrdering};
    use std::task::{Wake, Waker};

    use loom::sync::Arc;
    use loom::thread;

    use super::*;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, StdOrdering::SeqCst);
        }
    }

    fn counting() -> (std::sync::Arc<Count>, Waker) {
        let c = std::sync::Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    fn task() -> Arc<(AtomicU32, WakerCell)> {
        Arc::new((AtomicU32::new(JOIN_INTEREST), UnsafeCell::new(None)))
    }

    #[test]
    fn loom_a_handle_that_waits_is_woken_with_the_waker_it_last_registered() {
        loom::model(|| {
            let t = task();
            let owner = {
                let t = t.clone();
                thread::spawn(move || complete(&t.0, &t.1))
            };
            // Two polls from two tasks: the second replaces the waker while the owner may
            // be completing.
            let (c1, w1) = counting();
            let (c2, w2) = counting();
            let waiting = register(&t.0, &t.1, &w1) && register(&t.0, &t.1, &w2);
            assert_eq!(owner.join().unwrap(), Completed::HandleReads);
            if waiting {
                assert_eq!(
                    c2.0.load(StdOrdering::SeqCst),
                    1,
                    "the last waker was not woken"
                );
            }
            // The first waker is woken only if it was still the one registered.
            assert!(c1.0.load(StdOrdering::SeqCst) <= 1);
        });
    }

    #[test]
    fn loom_the_same_waker_registered_again_while_completing() {
        loom::model(|| {
            let t = task();
            let owner = {
                let t = t.clone();
                thread::spawn(move || complete(&t.0, &t.1))
            };
            let (c, w) = counting();
            let waiting = register(&t.0, &t.1, &w) && register(&t.0, &t.1, &w);
            owner.join().unwrap();
            if waiting {
                assert_eq!(c.0.load(StdOrdering::SeqCst), 1, "the waker was not woken");
            }
        });
    }

    #[test]
    fn loom_exactly_one_side_drops_the_output() {
        loom::model(|| {
            let t = task();
            let owner = {
                let t = t.clone();
                thread::spawn(move || complete(&t.0, &t.1) == Completed::DropOutput)
            };
            let (_c, w) = counting();
            register(&t.0, &t.1, &w);
            let handle_drops = release_interest(&t.0);
            let owner_drops = owner.join().unwrap();
            assert!(
                handle_drops != owner_drops,
                "owner {owner_drops}, handle {handle_drops}"
            );
        });
    }
}
