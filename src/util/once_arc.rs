//! `OnceArc`: an `Arc` set at most once, then read with one atomic load.
//!
//! Per-stream state that is made on first use (a stream's write queue, its single-shot
//! receive, the hand-back of a receive dropped on another thread) is set once per
//! connection, so a server pays for setting it on every connection it accepts. `OnceLock`
//! goes through `std::sync::Once`'s state machine for that, about 80 instructions each time;
//! here it is one compare-and-swap, and reading it is the one load an `Option<Arc<T>>` would
//! cost. Made for values that are cheap to make twice: when two threads race to set one,
//! both make it, one is kept and the other dropped.

use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Arc;

/// One pointer: null until set, then what `Arc::into_raw` gave for the one reference this
/// holds, never changed again.
pub(crate) struct OnceArc<T> {
    ptr: AtomicPtr<T>,
    /// Owns an `Arc<T>`: `Send`, `Sync` and drop check follow it.
    _owns: PhantomData<Arc<T>>,
}

impl<T> Default for OnceArc<T> {
    fn default() -> OnceArc<T> {
        OnceArc::new()
    }
}

/// A borrowed `Arc<T>`: the one `OnceArc` holds, lent without touching its count.
pub(crate) struct ArcRef<'a, T> {
    arc: ManuallyDrop<Arc<T>>,
    _from: PhantomData<&'a OnceArc<T>>,
}

impl<T> Deref for ArcRef<'_, T> {
    type Target = Arc<T>;

    #[inline]
    fn deref(&self) -> &Arc<T> {
        &self.arc
    }
}

impl<'a, T> ArcRef<'a, T> {
    /// The value, borrowed for as long as the `OnceArc` is (not just this `ArcRef`).
    #[inline]
    pub(crate) fn into_ref(self) -> &'a T {
        let p = Arc::as_ptr(&self.arc);
        // SAFETY: the `OnceArc` this lends from holds its reference, never replaced, until it
        // is dropped, and its borrow for `'a` rules that out: the pointee outlives `'a`.
        unsafe { &*p }
    }
}

impl<T> OnceArc<T> {
    pub(crate) const fn new() -> OnceArc<T> {
        OnceArc {
            ptr: AtomicPtr::new(ptr::null_mut()),
            _owns: PhantomData,
        }
    }

    /// The value, if set: one load.
    #[inline]
    pub(crate) fn get(&self) -> Option<ArcRef<'_, T>> {
        let p = self.ptr.load(Ordering::Acquire);
        if p.is_null() {
            return None;
        }
        // A non-null `ptr` came from `Arc::into_raw` (Release store, Acquire load: the
        // pointee is seen initialised) and stands for the reference this `OnceArc` holds
        // until it is dropped, which the borrow of `self` rules out while the `ArcRef` lives.
        // SAFETY: as above; `ManuallyDrop`: lending it never gives that reference up.
        let arc = ManuallyDrop::new(unsafe { Arc::from_raw(p) });
        Some(ArcRef {
            arc,
            _from: PhantomData,
        })
    }

    /// The value, set to what `make` makes first if it is not yet. If another thread sets it
    /// meanwhile, theirs is kept and the one `make` made is dropped.
    #[inline]
    pub(crate) fn get_or_init(&self, make: impl FnOnce() -> Arc<T>) -> ArcRef<'_, T> {
        match self.get() {
            Some(v) => v,
            None => self.set(make()),
        }
    }

    #[cold]
    #[inline(never)]
    fn set(&self, v: Arc<T>) -> ArcRef<'_, T> {
        let new = Arc::into_raw(v).cast_mut();
        if let Err(_theirs) =
            self.ptr
                .compare_exchange(ptr::null_mut(), new, Ordering::AcqRel, Ordering::Acquire)
        {
            // SAFETY: `new` came from `Arc::into_raw` above and was not stored: this takes
            // its reference back, to drop it.
            drop(unsafe { Arc::from_raw(new) });
        }
        // Set now, by this thread or the other.
        match self.get() {
            Some(v) => v,
            None => unreachable!("OnceArc: null after a successful or lost exchange"),
        }
    }
}

impl<T> Drop for OnceArc<T> {
    fn drop(&mut self) {
        let p = *self.ptr.get_mut();
        if !p.is_null() {
            // SAFETY: a non-null `ptr` holds one reference from `Arc::into_raw`; `&mut self`
            // means no `ArcRef` borrows it any more, and this is its only release.
            drop(unsafe { Arc::from_raw(p) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_once_kept_and_dropped_with_it() {
        let v = Arc::new(7);
        let o = OnceArc::new();
        assert!(o.get().is_none());
        assert_eq!(**o.get_or_init(|| v.clone()), 7);
        // Set: a second value is never made.
        assert_eq!(**o.get_or_init(|| unreachable!()), 7);
        assert_eq!(Arc::strong_count(&v), 2);
        drop(o);
        assert_eq!(Arc::strong_count(&v), 1);
        // Never set: nothing to drop.
        drop(OnceArc::<u32>::new());
    }

    #[test]
    fn racing_threads_all_see_the_one_value_kept() {
        for _ in 0..200 {
            let o = Arc::new(OnceArc::new());
            let made = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let seen: Vec<usize> = (0..4usize)
                .map(|i| {
                    let (o, made) = (o.clone(), made.clone());
                    std::thread::spawn(move || {
                        let v = o.get_or_init(|| {
                            made.fetch_add(1, Ordering::Relaxed);
                            Arc::new(i)
                        });
                        **v
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| t.join().unwrap())
                .collect();
            let kept = **o.get().unwrap();
            assert!(seen.iter().all(|&s| s == kept), "{seen:?} vs {kept}");
            // Every value made but the kept one was dropped.
            assert_eq!(Arc::strong_count(&o.get().unwrap()), 1);
            assert!(made.load(Ordering::Relaxed) >= 1);
        }
    }
}
