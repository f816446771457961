//! Helpers shared by the integration tests.

// Each test file uses some of them.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ringloop::{IoBuf, IoBufMut};

/// A `Vec` that counts its drops, so a test can see exactly when the loop frees it. `PAD`
/// words of padding make it too large for a write queue to keep inline (at 8).
pub struct Counted<const PAD: usize = 0> {
    bytes: Vec<u8>,
    drops: Arc<AtomicUsize>,
    _pad: [usize; PAD],
}

impl<const PAD: usize> Counted<PAD> {
    /// `bytes`, counting its drop in `drops`.
    pub fn new(bytes: Vec<u8>, drops: &Arc<AtomicUsize>) -> Self {
        Counted {
            bytes,
            drops: drops.clone(),
            _pad: [0; PAD],
        }
    }
}

impl<const PAD: usize> Drop for Counted<PAD> {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

// SAFETY: the bytes live in the Vec's heap block, which moving a `Counted` does not move.
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

// SAFETY: as above, for writes into the Vec's spare capacity.
unsafe impl<const PAD: usize> IoBufMut for Counted<PAD> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.bytes.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, init: usize) {
        // SAFETY: forwarded from the caller.
        unsafe { self.bytes.set_init(init) }
    }
}

/// The CPU time the calling thread has used.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to write.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(r, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A connected TCP pair on the running loop: (client, server side).
pub async fn tcp_pair() -> (ringloop::net::TcpStream, ringloop::net::TcpStream) {
    let l = ringloop::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let c = ringloop::spawn(async move { ringloop::net::TcpStream::connect(addr).await.unwrap() });
    let (s, _) = l.accept().await.unwrap();
    (c.await.unwrap(), s)
}

/// A std client connected to a ringloop server side: (client, server side).
pub async fn std_pair() -> (std::net::TcpStream, ringloop::net::TcpStream) {
    let l = ringloop::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().await.unwrap();
    (c, s)
}

/// Shrinks the kernel's buffers of a socket so that sends come up short and a peer that does
/// not read fills them quickly.
pub fn small_buffers(sock: &impl std::os::fd::AsFd, bytes: usize) {
    let sock = socket2::SockRef::from(sock);
    sock.set_send_buffer_size(bytes).unwrap();
    sock.set_recv_buffer_size(bytes).unwrap();
}

/// `len` bytes of a test's stream: a pattern whose period (251) matches no buffer size, so
/// a byte lost, doubled or moved shows.
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed.wrapping_mul(37))
        .collect()
}

/// Whether the loop's kernel is `major.minor` or later (from `Features::kernel_release`).
pub fn kernel_at_least(lp: &ringloop::EventLoop, major: u32, minor: u32) -> bool {
    let mut version = lp
        .features()
        .kernel_release()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    (version.next().unwrap_or(0), version.next().unwrap_or(0)) >= (major, minor)
}

/// A TCP peer on a thread of its own that reads slowly (16 KiB, then a 50 µs pause), so that
/// a sender's socket buffer fills many times over; its thread returns every byte it read,
/// once the sender has closed.
pub fn slow_reader() -> (std::net::SocketAddr, std::thread::JoinHandle<Vec<u8>>) {
    use std::io::Read;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut got = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            let n = c.read(&mut chunk).unwrap();
            if n == 0 {
                return got;
            }
            got.extend_from_slice(&chunk[..n]);
            std::thread::sleep(Duration::from_micros(50));
        }
    });
    (addr, reader)
}

/// Has `write` send `len` bytes to a slow reader (see [`slow_reader`]) through a 64 KiB send
/// buffer, and checks that every byte arrived, in order. Returns the completions the loop
/// reaped while `write` ran (it hands the stream back once done) and about how many parts the
/// socket's buffer took the bytes in. `None` on kernels before 5.19, which post a completion
/// per part of a send.
pub fn completions_for_a_slow_reader<F, Fut>(len: usize, write: F) -> Option<(u64, usize)>
where
    F: FnOnce(ringloop::net::TcpStream, Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = ringloop::net::TcpStream>,
{
    let mut lp = ringloop::EventLoop::new().unwrap();
    if !kernel_at_least(&lp, 5, 19) {
        return None;
    }
    let data = pattern(3, len);
    let expected = data.clone();
    let (addr, reader) = slow_reader();
    let (reaped, parts) = lp.block_on(async move {
        let s = ringloop::net::TcpStream::connect(addr).await.unwrap();
        let sock = socket2::SockRef::from(&s);
        sock.set_send_buffer_size(64 * 1024).unwrap();
        let parts = len / sock.send_buffer_size().unwrap();
        let before = ringloop::Handle::current().stats().completions;
        let s = write(s, data).await;
        let reaped = ringloop::Handle::current().stats().completions - before;
        drop(s);
        (reaped, parts)
    });
    let got = reader.join().unwrap();
    assert!(got == expected, "every byte arrives, in order");
    assert!(
        parts >= 8,
        "the send buffer holds 1/{parts} of the write: too few parts to tell"
    );
    Some((reaped, parts))
}
