//! A write's buffer kept by the loop for the kernel, its type erased: the I/O objects' write
//! queues hold buffers of any [`IoBuf`] type side by side.
//!
//! Values of up to [`INLINE_WORDS`] words with at most a word's alignment (a `Vec<u8>`, a
//! pool's `RecvBuf`, a `String`, a static slice, a `Slice` of a `Vec`) are stored inline, so queueing a write costs
//! no allocation; larger ones are boxed.

use std::mem::{align_of, size_of, MaybeUninit};

use super::IoBuf;

/// How many words a buffer may take to be stored inline.
const INLINE_WORDS: usize = 5;

type Storage = [MaybeUninit<usize>; INLINE_WORDS];

/// A buffer of some [`IoBuf`] type: where its bytes are, and the value itself, which is
/// dropped with this.
pub(crate) struct KeptBuf {
    ptr: *const u8,
    len: usize,
    /// The value inline, or (if it does not fit) a `Box` of it.
    storage: Storage,
    /// Drops what `storage` holds; called exactly once, by `Drop`.
    drop_fn: unsafe fn(*mut Storage),
}

// SAFETY: `KeptBuf::new` takes only `Send` values, and the pointer is into memory that value
// owns (or `'static` memory), so moving the whole to another thread moves the value with it.
unsafe impl Send for KeptBuf {}

/// Whether `B` is stored inline rather than boxed.
const fn fits_inline<B>() -> bool {
    size_of::<B>() <= size_of::<Storage>() && align_of::<B>() <= align_of::<Storage>()
}

/// # Safety
/// `s` holds an initialised `B`, stored inline, not dropped before.
unsafe fn drop_inline<B>(s: *mut Storage) {
    // SAFETY: per the contract; `Storage` is aligned enough for `B` (`fits_inline`).
    unsafe { std::ptr::drop_in_place(s.cast::<B>()) }
}

/// # Safety
/// `s` holds a pointer from `Box::<B>::into_raw`, not freed before.
unsafe fn drop_boxed<B>(s: *mut Storage) {
    // SAFETY: per the contract.
    unsafe { drop(Box::from_raw(s.cast::<*mut B>().read())) }
}

impl KeptBuf {
    /// Keeps `buf`; what it holds to be sent is `buf[..bytes_init]`.
    pub(crate) fn new<B: IoBuf + Send>(buf: B) -> KeptBuf {
        let len = buf.bytes_init();
        let mut storage: Storage = [MaybeUninit::uninit(); INLINE_WORDS];
        // The pointer is taken from the value where it rests, not before it moves there:
        // moving a value claims what its `Box`es point at anew (Rust's aliasing rules), which
        // would leave a pointer taken earlier invalid. Later moves of the `KeptBuf` move
        // `MaybeUninit` storage, which claims nothing.
        let (ptr, drop_fn): (*const u8, unsafe fn(*mut Storage)) = if fits_inline::<B>() {
            let at = storage.as_mut_ptr().cast::<B>();
            // SAFETY: `B` fits in `storage` and is aligned for it (checked just above); it is
            // read back where it was written.
            let ptr = unsafe {
                at.write(buf);
                (*at).stable_ptr()
            };
            (ptr, drop_inline::<B>)
        } else {
            let boxed = Box::into_raw(Box::new(buf));
            // SAFETY: a pointer fits in the first word of `storage`; `boxed` is live.
            let ptr = unsafe {
                storage.as_mut_ptr().cast::<*mut B>().write(boxed);
                (*boxed).stable_ptr()
            };
            (ptr, drop_boxed::<B>)
        };
        KeptBuf {
            ptr,
            len,
            storage,
            drop_fn,
        }
    }

    /// The first byte to send. Valid for reads of [`len`](KeptBuf::len) bytes while `self`
    /// lives: the buffer is owned here and never mutated (IoBuf's contract).
    pub(crate) fn ptr(&self) -> *const u8 {
        self.ptr
    }

    /// How many bytes the buffer holds to send.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for KeptBuf {
    fn drop(&mut self) {
        // SAFETY: `new` stored a value matching `drop_fn`, and this is its only drop.
        unsafe { (self.drop_fn)(&mut self.storage) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn the_common_buffers_are_stored_inline() {
        assert!(fits_inline::<Vec<u8>>());
        assert!(fits_inline::<String>());
        assert!(fits_inline::<&'static [u8]>());
        assert!(fits_inline::<crate::buf::RecvBuf>());
        assert!(fits_inline::<crate::buf::Slice<Vec<u8>>>());
        assert!(!fits_inline::<[u64; 6]>());
        // Every write queued pays for this: one cache line.
        assert!(size_of::<KeptBuf>() <= 64);
    }

    /// A buffer that counts its drops; `PAD` words make it inline or boxed.
    struct Counted<const PAD: usize> {
        bytes: Vec<u8>,
        drops: Arc<AtomicUsize>,
        _pad: [usize; PAD],
    }
    impl<const PAD: usize> Drop for Counted<PAD> {
        fn drop(&mut self) {
            self.drops.fetch_add(1, Ordering::SeqCst);
        }
    }
    // SAFETY: the bytes live in the Vec's heap block.
    unsafe impl<const PAD: usize> IoBuf for Counted<PAD> {
        fn stable_ptr(&self) -> *const u8 {
            self.bytes.as_ptr()
        }
        fn bytes_init(&self) -> usize {
            self.bytes.len()
        }
        fn bytes_total(&self) -> usize {
            self.bytes.capacity()
        }
    }

    fn keep_and_drop<const PAD: usize>() {
        let drops = Arc::new(AtomicUsize::new(0));
        let bytes = b"hello".to_vec();
        let at = bytes.as_ptr();
        let kept = KeptBuf::new(Counted::<PAD> {
            bytes,
            drops: drops.clone(),
            _pad: [0; PAD],
        });
        assert_eq!((kept.ptr(), kept.len()), (at, 5));
        // SAFETY: `kept` owns the buffer and is alive.
        let bytes = unsafe { std::slice::from_raw_parts(kept.ptr(), kept.len()) };
        assert_eq!(bytes, b"hello");
        let moved = std::thread::spawn(move || kept).join().unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        drop(moved);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn an_inline_buffer_is_dropped_once() {
        assert!(fits_inline::<Counted<0>>());
        keep_and_drop::<0>();
    }

    #[test]
    fn a_boxed_buffer_is_dropped_once() {
        assert!(!fits_inline::<Counted<4>>());
        keep_and_drop::<4>();
    }
}
