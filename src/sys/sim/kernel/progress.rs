//! What each op does when the simulated kernel moves it on: the CQEs it posts and the
//! memory it touches.

use super::{Kernel, Kind, F_BUFFER, F_MORE, F_NOTIF};
use crate::sys::sim::sqe::Sqe;

impl Kernel {
    /// Moves op `i` on by one CQE or a few (a multishot receive). Returns whether it ended
    /// (posted its final CQE and left the kernel).
    pub(super) fn step(&mut self, i: usize) -> bool {
        let sqe = self.inflight[i].sqe;
        if self.inflight[i].zc_notif_due {
            // The kernel reads a zero-copy send's buffer until the notification.
            self.memory.read(sqe.addr as usize, sqe.len as usize, &sqe);
            self.inflight.remove(i);
            self.post(sqe.user_data, 0, F_NOTIF);
            return true;
        }
        if self.inflight[i].cancelled {
            self.inflight.remove(i);
            self.post(sqe.user_data, -libc::ECANCELED, 0);
            return true;
        }
        let ended = match sqe.kind {
            Kind::Nop => {
                self.post(sqe.user_data, 0, 0);
                true
            }
            Kind::Timeout => {
                self.post(sqe.user_data, -libc::ETIME, 0);
                true
            }
            Kind::Read if self.doorbells.contains(&sqe.fd) => {
                self.memory
                    .write(sqe.addr as usize, &1u64.to_ne_bytes(), &sqe);
                self.post(sqe.user_data, 8, 0);
                true
            }
            Kind::Read if sqe.buffer_select => self.receive_selected(sqe),
            Kind::Read => {
                let (res, _) = self.receive_outcome(sqe.len as usize);
                if res > 0 {
                    let bytes = self.peers.next_bytes(sqe.fd, res as usize);
                    self.memory.write(sqe.addr as usize, &bytes, &sqe);
                }
                self.post(sqe.user_data, res, 0);
                true
            }
            Kind::Write | Kind::SendMsg if sqe.tried && self.rng.below(4) == 0 => {
                // The socket's buffer is full: a try takes nothing.
                self.stats.tries_refused += 1;
                self.post(sqe.user_data, -libc::EAGAIN, 0);
                true
            }
            Kind::Write | Kind::SendMsg | Kind::SendZc => {
                let bytes = match sqe.kind {
                    Kind::SendMsg => self.read_msghdr(&sqe),
                    _ => self.memory.read(sqe.addr as usize, sqe.len as usize, &sqe),
                };
                let res = self.send_outcome(bytes.len());
                let took = usize::try_from(res).unwrap_or(0);
                self.peers.took(sqe.fd, &bytes[..took]);
                if sqe.kind == Kind::SendZc {
                    // The notification follows once the kernel is done with the buffer.
                    self.inflight[i].zc_notif_due = true;
                    self.post(sqe.user_data, res, F_MORE);
                    return false;
                }
                // With `MSG_WAITALL` a short send is a failure: its CQE is posted even where
                // a success would post none.
                let failed = res < 0 || (sqe.wait_all && took < bytes.len());
                if sqe.skip_success && !failed {
                    self.stats.skipped_cqes += 1;
                } else {
                    self.post(sqe.user_data, res, 0);
                }
                true
            }
            Kind::Accept => self.accept(&sqe),
            Kind::Poll => {
                // Ready (see `can_move`): one CQE, and a multishot watch stays armed.
                let flags = if sqe.multishot { F_MORE } else { 0 };
                self.stats.polls += 1;
                self.post(sqe.user_data, libc::POLLIN as i32, flags);
                !sqe.multishot
            }
            Kind::Cancel | Kind::TimeoutUpdate | Kind::Close | Kind::Other(_) => true,
        };
        if ended {
            if let Some(i) = self.find(sqe.user_data) {
                self.inflight.remove(i);
            }
        }
        ended
    }

    /// Accepts a connection or a few (a multishot accept): each a new descriptor, a real
    /// one (an eventfd) whose peer the simulation plays. Returns whether the op ended.
    fn accept(&mut self, sqe: &Sqe) -> bool {
        let burst = if sqe.multishot {
            1 + self.rng.below(3)
        } else {
            1
        };
        for _ in 0..burst {
            if self.rng.below(16) == 0 {
                // A peer that reset before it was taken.
                self.post(sqe.user_data, -libc::ECONNABORTED, 0);
                return true;
            }
            // SAFETY: eventfd takes no pointers.
            let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
            if fd < 0 {
                self.post(sqe.user_data, -libc::EMFILE, 0);
                return true;
            }
            self.peers.new_stream(fd);
            self.stats.accepted += 1;
            if !sqe.multishot && sqe.addr != 0 {
                // The peer's address, 127.0.0.1:4242, and its length.
                let mut sin = [0u8; 16];
                sin[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
                sin[2..4].copy_from_slice(&4242u16.to_be_bytes());
                sin[4..8].copy_from_slice(&[127, 0, 0, 1]);
                self.memory.write(sqe.addr as usize, &sin, sqe);
                self.memory
                    .write(sqe.off as usize, &16u32.to_ne_bytes(), sqe);
            }
            let flags = if sqe.multishot { F_MORE } else { 0 };
            self.post(sqe.user_data, fd, flags);
            if !sqe.multishot {
                return true;
            }
        }
        false
    }

    /// A receive's result: bytes, end of stream or a reset. The second value says whether a
    /// multishot receive ends with it.
    fn receive_outcome(&mut self, room: usize) -> (i32, bool) {
        match self.rng.below(16) {
            0 => (0, true),
            1 => (-libc::ECONNRESET, true),
            _ => {
                let room = room.clamp(1, 1 << 20);
                (1 + self.rng.below(room as u64) as i32, false)
            }
        }
    }

    fn send_outcome(&mut self, len: usize) -> i32 {
        match self.rng.below(16) {
            0 => -libc::EPIPE,
            1 | 2 if len > 1 => {
                self.stats.short_writes += 1;
                1 + self.rng.below(len as u64 - 1) as i32
            }
            _ => len.min(i32::MAX as usize) as i32,
        }
    }

    /// A receive that picks its buffer from the ring: one CQE, or a few for a multishot one.
    fn receive_selected(&mut self, sqe: Sqe) -> bool {
        let burst = if sqe.multishot {
            1 + self.rng.below(3)
        } else {
            1
        };
        for _ in 0..burst {
            let (res, end) = self.receive_outcome(usize::MAX);
            if res <= 0 {
                self.post(sqe.user_data, res, 0);
                return true;
            }
            let picked = self.bufring.as_mut().and_then(|r| r.pick(sqe.buf_group));
            let Some((bid, addr, len)) = picked else {
                self.stats.enobufs += 1;
                self.post(sqe.user_data, -libc::ENOBUFS, 0);
                return true;
            };
            let room = if sqe.len > 0 { sqe.len.min(len) } else { len };
            let n = (res as u32).min(room).max(1);
            let bytes = self.peers.next_bytes(sqe.fd, n as usize);
            self.memory.write(addr as usize, &bytes, &sqe);
            let more = sqe.multishot && !end;
            let flags = F_BUFFER | (u32::from(bid) << 16) | if more { F_MORE } else { 0 };
            self.post(sqe.user_data, n as i32, flags);
            if !more {
                return true;
            }
        }
        false
    }

    /// Reads a `msghdr` at `addr` and every buffer its iovecs name; returns their bytes.
    fn read_msghdr(&mut self, sqe: &Sqe) -> Vec<u8> {
        let hdr = self
            .memory
            .read(sqe.addr as usize, std::mem::size_of::<libc::msghdr>(), sqe);
        // SAFETY: `hdr` holds the bytes of a `msghdr`, a plain C struct valid for any bytes.
        let msg: libc::msghdr = unsafe { std::ptr::read_unaligned(hdr.as_ptr().cast()) };
        let iov_bytes = msg.msg_iovlen * std::mem::size_of::<libc::iovec>();
        let iovs = self.memory.read(msg.msg_iov as usize, iov_bytes, sqe);
        let mut all = Vec::new();
        for k in 0..msg.msg_iovlen {
            let at = k * std::mem::size_of::<libc::iovec>();
            // SAFETY: as above, for an `iovec`.
            let iov: libc::iovec = unsafe { std::ptr::read_unaligned(iovs[at..].as_ptr().cast()) };
            all.extend(self.memory.read(iov.iov_base as usize, iov.iov_len, sqe));
        }
        all
    }
}
