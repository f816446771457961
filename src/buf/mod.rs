//! Owned buffers: memory that is handed to the kernel for the length of an operation.
//!
//! An I/O call takes its buffer by value and gives it back with the result, as a
//! [`BufResult`]. While the operation is in flight the loop owns the buffer; if the future is
//! dropped early, the loop keeps the buffer until the kernel's completion arrives, so the kernel
//! never writes into freed memory.
//!
//! Reads write from the start of the buffer up to [`IoBuf::bytes_total`] and set its initialised
//! length to the number of bytes read (a `Vec::with_capacity(4096)` receives up to 4096 bytes
//! and comes back with `len()` = bytes read). To read into part of a buffer, pass
//! [`IoBuf::slice`]. Writes send the first [`IoBuf::bytes_init`] bytes.

pub(crate) mod kept;
#[cfg(any(feature = "tokio-io", feature = "futures-io", feature = "hyper"))]
pub(crate) mod recycled;
mod slice;

pub use crate::driver::bufring::RecvBuf;
pub use slice::Slice;

use std::io;
use std::ops::RangeBounds;

/// The result of an operation on an owned buffer: the outcome and the buffer, given back.
pub type BufResult<T, B> = (io::Result<T>, B);

/// Memory the kernel may read: a buffer with a stable address.
///
/// # Safety
///
/// While a value is alive and not mutated through `&mut`, [`stable_ptr`](IoBuf::stable_ptr)
/// must return the same pointer, valid for reads of [`bytes_total`](IoBuf::bytes_total) bytes,
/// of which the first [`bytes_init`](IoBuf::bytes_init) are initialised — and moving the value
/// must not move that memory (it lives on the heap or in `'static` storage). The loop relies on
/// this to hand the pointer to the kernel and then move the value into its op table.
pub unsafe trait IoBuf: 'static {
    /// Pointer to the first byte.
    fn stable_ptr(&self) -> *const u8;

    /// Number of initialised bytes: what a write sends.
    fn bytes_init(&self) -> usize;

    /// Total number of bytes: what a read may fill.
    fn bytes_total(&self) -> usize;

    /// Whether dropping this buffer frees memory and nothing more: it wakes no task on the
    /// loop, directly or through anything it signals. A queued write (`write_queued`) of such
    /// a buffer may be tried at submit and its completion seen only when the loop next
    /// wakes; one whose drop could wake a task (a pool that hands buffers on to waiters, say)
    /// is seen at once. `false` unless a type says otherwise; this crate's owned byte buffers
    /// and static bytes say `true`.
    #[doc(hidden)]
    const DROP_WAKES_NOTHING: bool = false;

    /// A view of `range` of this buffer, which owns the buffer and gives it back with
    /// [`Slice::into_inner`].
    ///
    /// # Panics
    ///
    /// If the range is out of order or ends past [`bytes_total`](IoBuf::bytes_total).
    #[track_caller]
    fn slice(self, range: impl RangeBounds<usize>) -> Slice<Self>
    where
        Self: Sized,
    {
        use std::ops::Bound;
        let begin = match range.start_bound() {
            Bound::Included(&n) => n,
            Bound::Excluded(&n) => n.checked_add(1).expect("slice start overflows usize"),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&n) => n.checked_add(1).expect("slice end overflows usize"),
            Bound::Excluded(&n) => n,
            Bound::Unbounded => self.bytes_total(),
        };
        assert!(begin <= end, "slice start {begin} is past its end {end}");
        assert!(
            end <= self.bytes_total(),
            "slice end {end} is past the buffer's {} bytes",
            self.bytes_total()
        );
        Slice::new(self, begin, end)
    }
}

/// Memory the kernel may write.
///
/// # Safety
///
/// As for [`IoBuf`], and [`stable_mut_ptr`](IoBufMut::stable_mut_ptr) must be valid for writes
/// of [`bytes_total`](IoBuf::bytes_total) bytes at the same address as `stable_ptr`.
pub unsafe trait IoBufMut: IoBuf {
    /// Pointer to the first byte, for writing.
    fn stable_mut_ptr(&mut self) -> *mut u8;

    /// Records that the kernel has initialised the first `init` bytes. Owned growable buffers
    /// (`Vec<u8>`) set their length to `init`.
    ///
    /// # Safety
    ///
    /// The first `init` bytes (`init <= bytes_total()`) must be initialised.
    unsafe fn set_init(&mut self, init: usize);
}

/// Finishes a read op: on success records that the kernel initialised the first `n` bytes.
///
/// The caller passes the result of an op that read into `buf` from its start; the kernel
/// reports `n` bytes written there, which is what makes `set_init(n)` sound.
pub(crate) fn finish_read<B: IoBufMut>(result: io::Result<u32>, mut buf: B) -> BufResult<usize, B> {
    match result {
        Ok(n) => {
            let n = (n as usize).min(buf.bytes_total());
            // SAFETY: the kernel wrote `n <= bytes_total()` bytes at the start of the buffer.
            unsafe { buf.set_init(n) };
            (Ok(n), buf)
        }
        Err(e) => (Err(e), buf),
    }
}

/// Writes all of `buf[..len]` through `write`, which gets the unwritten part and how many bytes
/// are already written, and returns how many more it wrote. Short writes are retried from where
/// they stopped, `Interrupted` is retried, and a write of zero bytes is a `WriteZero` error.
pub(crate) async fn write_all_with<B, F, Fut>(mut buf: B, mut write: F) -> BufResult<(), B>
where
    B: IoBuf,
    F: FnMut(Slice<B>, usize) -> Fut,
    Fut: std::future::Future<Output = BufResult<usize, Slice<B>>>,
{
    let len = buf.bytes_init();
    let mut done = 0;
    while done < len {
        let (r, rest) = write(buf.slice(done..len), done).await;
        buf = rest.into_inner();
        match r {
            Ok(0) => {
                let e = io::Error::new(io::ErrorKind::WriteZero, "no more bytes could be written");
                return (Err(e), buf);
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (Err(e), buf),
        }
    }
    (Ok(()), buf)
}

// SAFETY: a Vec's heap block does not move when the Vec moves and is only reallocated through
// `&mut`; `as_ptr` is valid for `capacity` bytes of which `len` are initialised.
unsafe impl IoBuf for Vec<u8> {
    const DROP_WAKES_NOTHING: bool = true;
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.capacity()
    }
}

// SAFETY: as for IoBuf; `as_mut_ptr` is the same block, writable for `capacity` bytes.
unsafe impl IoBufMut for Vec<u8> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, init: usize) {
        debug_assert!(init <= self.capacity());
        // SAFETY: the caller guarantees the first `init <= capacity` bytes are initialised.
        unsafe { self.set_len(init) }
    }
}

// SAFETY: a boxed slice's heap block does not move when the box moves; all of it is
// initialised.
unsafe impl IoBuf for Box<[u8]> {
    const DROP_WAKES_NOTHING: bool = true;
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.len()
    }
}

// SAFETY: the same block, writable through the unique box; its length is fixed.
unsafe impl IoBufMut for Box<[u8]> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, _init: usize) {}
}

// SAFETY: 'static data never moves and is never freed.
unsafe impl IoBuf for &'static [u8] {
    const DROP_WAKES_NOTHING: bool = true;
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.len()
    }
}

// SAFETY: 'static data never moves and is never freed. (Byte-string literals: `b"ping"`.)
unsafe impl<const N: usize> IoBuf for &'static [u8; N] {
    const DROP_WAKES_NOTHING: bool = true;
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        N
    }
    fn bytes_total(&self) -> usize {
        N
    }
}

// SAFETY: 'static data never moves and is never freed.
unsafe impl IoBuf for &'static str {
    const DROP_WAKES_NOTHING: bool = true;
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.len()
    }
}

// SAFETY: a String's heap block does not move when it moves and is only reallocated through
// `&mut`. Not IoBufMut: the kernel could write bytes that are not UTF-8.
unsafe impl IoBuf for String {
    const DROP_WAKES_NOTHING: bool = true;
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vec_reports_len_and_capacity() {
        let mut v = Vec::with_capacity(16);
        v.extend_from_slice(b"abc");
        assert_eq!(v.bytes_init(), 3);
        assert_eq!(v.bytes_total(), v.capacity());
    }

    #[test]
    fn set_init_sets_vec_len_to_bytes_read() {
        let mut v = vec![1u8; 10];
        // SAFETY: the first 4 bytes are initialised (all 10 are).
        unsafe { v.set_init(4) };
        assert_eq!(v.len(), 4);
    }

    #[test]
    #[should_panic(expected = "past the buffer")]
    fn slice_past_end_panics() {
        let _ = vec![0u8; 4].slice(2..9);
    }
}
