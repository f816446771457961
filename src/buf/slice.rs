//! `Slice<B>`: an owned view of part of a buffer.

use std::ops::{Deref, DerefMut};

use super::{IoBuf, IoBufMut};

/// Bytes `begin..end` of an owned buffer. Made with [`IoBuf::slice`].
///
/// As an [`IoBuf`] it exposes the initialised bytes of the range; as an [`IoBufMut`] a read
/// fills the range from its start. A read extends the underlying buffer's initialised length
/// only when the range starts inside (or right at the end of) the initialised part, so no
/// uninitialised byte ever becomes visible.
#[derive(Debug)]
pub struct Slice<B> {
    buf: B,
    begin: usize,
    end: usize,
}

impl<B: IoBuf> Slice<B> {
    pub(crate) fn new(buf: B, begin: usize, end: usize) -> Slice<B> {
        Slice { buf, begin, end }
    }

    /// Offset of the view's start in the underlying buffer.
    pub fn begin(&self) -> usize {
        self.begin
    }

    /// Offset of the view's end in the underlying buffer.
    pub fn end(&self) -> usize {
        self.end
    }

    /// The underlying buffer.
    pub fn get_ref(&self) -> &B {
        &self.buf
    }

    /// Gives the underlying buffer back.
    pub fn into_inner(self) -> B {
        self.buf
    }
}

impl<B: IoBuf> Deref for Slice<B> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let len = self.bytes_init();
        // SAFETY: by IoBuf's contract `stable_ptr()` is valid for `bytes_total` bytes, the
        // first `bytes_init` of which are initialised; `begin + len <= min(end, bytes_init)`.
        unsafe { std::slice::from_raw_parts(self.buf.stable_ptr().add(self.begin), len) }
    }
}

impl<B: IoBufMut> DerefMut for Slice<B> {
    fn deref_mut(&mut self) -> &mut [u8] {
        let len = self.bytes_init();
        // SAFETY: as in Deref, through the unique `&mut` access to the buffer.
        unsafe { std::slice::from_raw_parts_mut(self.buf.stable_mut_ptr().add(self.begin), len) }
    }
}

// SAFETY: the pointer is the underlying buffer's stable pointer offset by `begin`, which
// `IoBuf::slice` checked is within `bytes_total`; it moves only if the buffer's does.
unsafe impl<B: IoBuf> IoBuf for Slice<B> {
    const DROP_WAKES_NOTHING: bool = B::DROP_WAKES_NOTHING;
    fn stable_ptr(&self) -> *const u8 {
        self.buf.stable_ptr().wrapping_add(self.begin)
    }
    fn bytes_init(&self) -> usize {
        self.buf
            .bytes_init()
            .min(self.end)
            .saturating_sub(self.begin)
    }
    fn bytes_total(&self) -> usize {
        self.end - self.begin
    }
}

// SAFETY: as above; writes land in `begin..end`, inside the buffer's writable bytes.
unsafe impl<B: IoBufMut> IoBufMut for Slice<B> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.buf.stable_mut_ptr().wrapping_add(self.begin)
    }
    unsafe fn set_init(&mut self, init: usize) {
        let inner_init = self.buf.bytes_init();
        let end = self.begin + init;
        // Extending is only sound when every byte up to `end` is now initialised, which needs
        // the range to start no later than the initialised prefix does.
        if self.begin <= inner_init && end > inner_init {
            // SAFETY: bytes `..inner_init` were initialised and the kernel initialised
            // `begin..end`, which covers `inner_init..end`.
            unsafe { self.buf.set_init(end) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_exposes_initialised_part_of_range() {
        let v = b"hello world".to_vec();
        let s = v.slice(6..);
        assert_eq!(&s[..], b"world");
        assert_eq!(s.into_inner(), b"hello world");
    }

    #[test]
    fn read_into_slice_at_end_extends_vec() {
        let mut v = Vec::with_capacity(8);
        v.extend_from_slice(b"ab");
        let mut s = v.slice(2..8);
        s.stable_mut_ptr();
        // SAFETY: we write 3 bytes at the slice start, then report them.
        unsafe {
            std::ptr::copy_nonoverlapping(b"cde".as_ptr(), s.stable_mut_ptr(), 3);
            s.set_init(3);
        }
        assert_eq!(s.into_inner(), b"abcde");
    }

    #[test]
    fn read_into_slice_past_init_does_not_expose_gap() {
        let v: Vec<u8> = Vec::with_capacity(8);
        let mut s = v.slice(4..8);
        // SAFETY: pretend the kernel wrote 2 bytes at the slice start.
        unsafe {
            std::ptr::write_bytes(s.stable_mut_ptr(), 7, 2);
            s.set_init(2);
        }
        assert_eq!(s.into_inner().len(), 0);
    }
}
