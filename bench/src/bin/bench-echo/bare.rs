//! The floor: an echo server written straight on the io-uring crate, with no executor, no
//! futures and no op table. One multishot accept, one multishot receive per connection
//! drawing from a provided-buffer ring, and sends straight from the received buffer, which
//! goes back to the ring when its send completes. Everything one thread, one ring.

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

const BGID: u16 = 7;
const BUFS: u16 = 4096;
const BUF_SIZE: usize = 4096;
const ACCEPT: u64 = 0;
const RECV: u64 = 1;
const SEND: u64 = 2;

fn ud(kind: u64, fd: RawFd) -> u64 {
    (kind << 32) | fd as u32 as u64
}

#[derive(Default)]
struct Conn {
    /// Received buffers to echo, in order: (buffer id, bytes sent so far, length).
    queue: VecDeque<(u16, usize, usize)>,
    sending: bool,
    /// The receive ended (EOF or error): close once the last send is done.
    closing: bool,
}

/// The provided-buffer ring: `BUFS` entries the kernel picks receive buffers from.
struct BufRing {
    entries: *mut u8,
    data: Vec<u8>,
    tail: u16,
}

impl BufRing {
    fn new(ring: &IoUring) -> BufRing {
        let bytes = BUFS as usize * 16;
        // SAFETY: an anonymous private mapping; checked below.
        let entries = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_ANONYMOUS | libc::MAP_PRIVATE,
                -1,
                0,
            )
        };
        assert_ne!(entries, libc::MAP_FAILED, "mmap of the buffer ring");
        let mut br = BufRing {
            entries: entries.cast(),
            data: vec![0; BUFS as usize * BUF_SIZE],
            tail: 0,
        };
        // SAFETY: the mapping is page-aligned, BUFS entries long, and lives for the process.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries as u64, BUFS, BGID, 0)
        }
        .expect("registering the buffer ring (Linux 5.19+)");
        for bid in 0..BUFS {
            br.push(bid);
        }
        br.publish();
        br
    }

    fn push(&mut self, bid: u16) {
        let slot = (self.tail & (BUFS - 1)) as usize;
        // SAFETY: `slot` < BUFS, inside the mapping; the kernel reads only entries before the
        // published tail, and this one is past it.
        unsafe {
            let e = self.entries.add(slot * 16);
            let addr = self.data.as_mut_ptr().add(bid as usize * BUF_SIZE) as u64;
            (e as *mut u64).write(addr);
            (e.add(8) as *mut u32).write(BUF_SIZE as u32);
            (e.add(12) as *mut u16).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail is the u16 at offset 14 of entry 0, written with release ordering
        // so the kernel sees the entries before it.
        unsafe {
            let tail = &*(self.entries.add(14) as *const std::sync::atomic::AtomicU16);
            tail.store(self.tail, std::sync::atomic::Ordering::Release);
        }
    }

    fn buf(&self, bid: u16, from: usize, to: usize) -> *const u8 {
        self.data[bid as usize * BUF_SIZE..][from..to].as_ptr()
    }
}

fn push(ring: &mut IoUring, e: squeue::Entry) {
    // SAFETY: every SQE points at memory that outlives it: the buffer ring's data (kept for
    // the process), or nothing.
    while unsafe { ring.submission().push(&e) }.is_err() {
        ring.submit().expect("io_uring_enter");
    }
}

fn send(ring: &mut IoUring, br: &BufRing, fd: RawFd, (bid, off, len): (u16, usize, usize)) {
    let p = br.buf(bid, off, len);
    push(
        ring,
        opcode::Send::new(types::Fd(fd), p, (len - off) as u32)
            .build()
            .user_data(ud(SEND, fd)),
    );
}

pub fn serve(addr: SocketAddr, announce: fn(SocketAddr)) {
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(16384)
        .build(4096)
        .expect("io_uring set-up");
    let mut br = BufRing::new(&ring);
    let l: TcpListener = super::nodelay_listener(addr);
    announce(l.local_addr().unwrap());
    let lfd = l.as_raw_fd();
    let accept = || {
        opcode::AcceptMulti::new(types::Fd(lfd))
            .build()
            .user_data(ud(ACCEPT, lfd))
    };
    push(&mut ring, accept());
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut cqes: Vec<(u64, i32, u32)> = Vec::with_capacity(16384);
    // Connections whose receive stopped for lack of buffers.
    let mut starved: Vec<RawFd> = Vec::new();
    loop {
        ring.submit_and_wait(1).expect("io_uring_enter");
        cqes.extend(
            ring.completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        let mut returned = false;
        for (ud_, res, flags) in cqes.drain(..) {
            let (kind, fd) = (ud_ >> 32, ud_ as u32 as RawFd);
            match kind {
                ACCEPT => {
                    if res >= 0 {
                        let one: libc::c_int = 1;
                        // SAFETY: a valid option value for TCP_NODELAY on a new socket.
                        unsafe {
                            libc::setsockopt(
                                res,
                                libc::IPPROTO_TCP,
                                libc::TCP_NODELAY,
                                (&one as *const libc::c_int).cast(),
                                4,
                            )
                        };
                        let i = res as usize;
                        if conns.len() <= i {
                            conns.resize_with(i + 1, || None);
                        }
                        conns[i] = Some(Conn::default());
                        push(&mut ring, recv(res));
                    }
                    if !cqueue::more(flags) {
                        push(&mut ring, accept());
                    }
                }
                RECV => {
                    let Some(c) = conns[fd as usize].as_mut() else {
                        continue;
                    };
                    if res > 0 {
                        let bid = cqueue::buffer_select(flags).expect("a selected buffer");
                        c.queue.push_back((bid, 0, res as usize));
                        if !c.sending {
                            c.sending = true;
                            send(&mut ring, &br, fd, c.queue[0]);
                        }
                        if !cqueue::more(flags) {
                            push(&mut ring, recv(fd));
                        }
                    } else if res == -libc::ENOBUFS {
                        starved.push(fd);
                    } else {
                        c.closing = true;
                        if !c.sending {
                            conns[fd as usize] = None;
                            // SAFETY: the connection's descriptor, closed once, with no op left.
                            unsafe { libc::close(fd) };
                            super::conn_closed();
                        }
                    }
                }
                SEND => {
                    let Some(c) = conns[fd as usize].as_mut() else {
                        continue;
                    };
                    if res < 0 {
                        c.closing = true;
                        for (bid, _, _) in c.queue.drain(..) {
                            br.push(bid);
                        }
                        returned = true;
                    } else {
                        let head = c.queue.front_mut().expect("a send in flight");
                        head.1 += res as usize;
                        if head.1 == head.2 {
                            br.push(head.0);
                            returned = true;
                            c.queue.pop_front();
                        }
                    }
                    match c.queue.front() {
                        Some(&next) if !c.closing => send(&mut ring, &br, fd, next),
                        _ => {
                            c.sending = false;
                            if c.closing {
                                for (bid, _, _) in c.queue.drain(..) {
                                    br.push(bid);
                                }
                                conns[fd as usize] = None;
                                // SAFETY: as above: no op is left on this descriptor.
                                unsafe { libc::close(fd) };
                                super::conn_closed();
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        if returned {
            br.publish();
            for fd in starved.drain(..) {
                if conns[fd as usize].is_some() {
                    push(&mut ring, recv(fd));
                }
            }
        }
    }
}

fn recv(fd: RawFd) -> squeue::Entry {
    opcode::RecvMulti::new(types::Fd(fd), BGID)
        .build()
        .user_data(ud(RECV, fd))
}
