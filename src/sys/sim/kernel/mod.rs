//! The simulated kernel's state: the two queues, the ops in flight, the provided-buffer ring
//! as the kernel sees it, and the shadow model that every access is checked against.
//!
//! Each op moves forward at an enter with a probability the seed chooses, and the ops that
//! move are taken in a random order: completions arrive late, early, reordered, several at a
//! time for a multishot op, after or before a cancel. A wait that needs a completion forces
//! one. What the kernel may touch is touched for real (bytes written into a receive's
//! buffer, read from a send's), so that Miri checks each access; the shadow model
//! (`memory`) catches a released test buffer first, natively and under Miri.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use io_uring::squeue;

mod progress;

use super::bufring::BufRing;
use super::memory::Memory;
use super::peer::Peers;
use super::sqe::{Kind, Sqe};
use super::stats::SimStats;
use super::{violation, Rng};

/// `IORING_CQE_F_BUFFER`, `IORING_CQE_F_MORE`, `IORING_CQE_F_NOTIF`.
const F_BUFFER: u32 = 1 << 0;
const F_MORE: u32 = 1 << 1;
const F_NOTIF: u32 = 1 << 3;
/// `user_data` at or above this is the loop's own (cancels, timer, closes), never a slot.
const FIRST_RESERVED_USER_DATA: u64 = u64::MAX - 3;

/// A completion as the simulation posts it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cqe {
    pub(crate) user_data: u64,
    pub(crate) res: i32,
    pub(crate) flags: u32,
}

impl Cqe {
    pub(crate) fn user_data(&self) -> u64 {
        self.user_data
    }

    pub(crate) fn result(&self) -> i32 {
        self.res
    }

    pub(crate) fn flags(&self) -> u32 {
        self.flags
    }
}

/// One op the kernel holds.
struct InFlight {
    sqe: Sqe,
    /// A cancel found it: its next completion is its last, `ECANCELED`.
    cancelled: bool,
    /// SEND_ZC: the result is posted, the notification is not.
    zc_notif_due: bool,
    /// TIMEOUT: its expiry, `CLOCK_MONOTONIC` ns.
    deadline_ns: u64,
    /// A doorbell read whose eventfd was read: it completes at its next step.
    rung: bool,
}

pub(crate) struct Kernel {
    pub(crate) rng: Rng,
    sq: VecDeque<squeue::Entry>,
    sq_cap: usize,
    cq: VecDeque<Cqe>,
    cq_cap: usize,
    /// CQEs posted while the CQ was full, flushed at the next enter.
    backlog: VecDeque<Cqe>,
    inflight: Vec<InFlight>,
    bufring: Option<BufRing>,
    /// The kernel's accesses to the loop's memory, and the shadow model of what was freed.
    pub(super) memory: Memory,
    /// The loops' doorbells: reads of them complete only once another thread rang.
    doorbells: Vec<i32>,
    /// Chance, in 256ths, that an op in flight moves at an enter.
    progress: u32,
    /// What each descriptor's far end sends and receives.
    pub(super) peers: Peers,
    pub(crate) stats: SimStats,
    /// `RINGLOOP_SIM_TRACE` is set: every SQE and CQE is printed.
    trace: bool,
}

impl Kernel {
    pub(crate) fn new(seed: u64, sq_cap: usize, cq_cap: usize) -> Kernel {
        let mut rng = Rng::new(seed);
        let progress = 16 + rng.below(240) as u32;
        Kernel {
            rng,
            sq: VecDeque::new(),
            sq_cap,
            cq: VecDeque::new(),
            cq_cap,
            backlog: VecDeque::new(),
            inflight: Vec::new(),
            bufring: None,
            memory: Memory::default(),
            doorbells: Vec::new(),
            progress,
            peers: Peers::default(),
            trace: std::env::var_os("RINGLOOP_SIM_TRACE").is_some(),
            stats: SimStats::default(),
        }
    }

    pub(crate) fn push(&mut self, e: &squeue::Entry) -> Result<(), ()> {
        if self.sq.len() >= self.sq_cap {
            return Err(());
        }
        self.sq.push_back(e.clone());
        Ok(())
    }

    pub(crate) fn sq_len(&self) -> usize {
        self.sq.len()
    }

    pub(crate) fn cq_overflow(&self) -> bool {
        !self.backlog.is_empty()
    }

    pub(crate) fn cq_is_empty(&self) -> bool {
        self.cq.is_empty()
    }

    pub(crate) fn pop_cqe(&mut self) -> Option<Cqe> {
        self.cq.pop_front()
    }

    pub(crate) fn add_doorbell(&mut self, fd: i32) {
        self.doorbells.push(fd);
    }

    /// The ring is released (its descriptor closed): the kernel cancels what it still holds.
    /// A timer or a readiness watch holds no memory of the loop's by then; anything else
    /// might write memory the loop is about to free.
    pub(crate) fn exit(&mut self) {
        for o in std::mem::take(&mut self.inflight) {
            if !matches!(o.sqe.kind, Kind::Timeout | Kind::Poll) {
                violation(&format!(
                    "the ring was released while the kernel still held {:?} on fd {} \
                     (user_data {}), which may still touch the loop's memory",
                    o.sqe.kind, o.sqe.fd, o.sqe.user_data
                ));
            }
        }
        self.sq.clear();
        self.bufring = None;
    }

    /// Ops the kernel still holds.
    pub(crate) fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    pub(crate) fn register_buf_ring(&mut self, base: u64, entries: u16, group: u16) {
        self.bufring = Some(BufRing::new(base, entries, group));
    }

    pub(crate) fn unregister_buf_ring(&mut self, group: u16) -> io::Result<()> {
        if let Some(r) = &self.bufring {
            if r.group() == group {
                if self.inflight.iter().any(|o| o.sqe.buffer_select) {
                    violation(
                        "the buffer ring was unregistered while a receive may still pick from it",
                    );
                }
                self.bufring = None;
                return Ok(());
            }
        }
        Err(io::Error::from_raw_os_error(libc::ENOENT))
    }

    /// `io_uring_enter`: submits everything queued, moves ops on, and with `want > 0` waits
    /// until that many CQEs are posted (forcing completions), or `timeout` passes.
    pub(crate) fn enter(&mut self, want: u32, timeout: Option<Duration>) -> io::Result<u32> {
        // Now and then the kernel is short of something for a moment and submits nothing:
        // the loop must reap and try again, losing nothing.
        if self.rng.below(64) == 0 {
            self.stats.transient += 1;
            let errno = [libc::EAGAIN, libc::EBUSY][self.rng.below(2) as usize];
            return Err(io::Error::from_raw_os_error(errno));
        }
        self.flush_backlog();
        // Now and then it is short of requests after a few SQEs: it submits those, leaves the
        // rest in the SQ and returns without waiting, as the kernel does.
        let limit = if self.sq.len() > 1 && self.rng.below(64) == 0 {
            self.stats.partial_submits += 1;
            1 + self.rng.below(self.sq.len() as u64 - 1) as u32
        } else {
            u32::MAX
        };
        let mut submitted = 0;
        while submitted < limit {
            let Some(e) = self.sq.pop_front() else {
                break;
            };
            self.submit(Sqe::decode(&e));
            submitted += 1;
        }
        self.progress_all();
        if want == 0 || submitted == limit {
            return Ok(submitted);
        }
        let start = std::time::Instant::now();
        let mut forced = 0u32;
        // A full CQ ends a wait, as the kernel's does (the rest waits, flagged as an
        // overflow, for the loop to make room).
        while self.cq.len() < (want as usize).min(self.cq_cap) {
            if self.force_one() {
                self.stats.forced += 1;
                forced += 1;
                if forced > 100_000 {
                    // Not the loop's fault so far, but a run away: fail rather than fill memory.
                    violation("a wait forced 100,000 completions without filling its count");
                    return Ok(submitted);
                }
                continue;
            }
            // Nothing can complete now: only timers not yet due, watches and doorbells.
            if let Some(t) = timeout {
                if start.elapsed() >= t {
                    return if self.cq.is_empty() {
                        Err(io::Error::from_raw_os_error(libc::ETIME))
                    } else {
                        Ok(submitted)
                    };
                }
            } else if !self.cq.is_empty() {
                return Ok(submitted);
            } else if !self.may_complete_later() {
                violation(
                    "the loop waits for a completion with no timeout, and nothing in flight \
                     can complete: it would hang",
                );
            }
            std::thread::sleep(Duration::from_micros(200));
            if start.elapsed() > Duration::from_secs(30) {
                violation("the loop waited 30 s for a completion that never came");
            }
        }
        Ok(submitted)
    }

    /// Whether something in flight completes by itself in time: a timer, a readiness watch,
    /// or a doorbell another thread may ring.
    fn may_complete_later(&self) -> bool {
        self.inflight.iter().any(|o| {
            matches!(o.sqe.kind, Kind::Timeout | Kind::Poll) || self.doorbells.contains(&o.sqe.fd)
        })
    }

    fn flush_backlog(&mut self) {
        while self.cq.len() < self.cq_cap {
            match self.backlog.pop_front() {
                Some(c) => self.cq.push_back(c),
                None => break,
            }
        }
    }

    fn post(&mut self, user_data: u64, res: i32, flags: u32) {
        if self.trace {
            eprintln!("sim: cqe ud={user_data} res={res} flags={flags:#x}");
        }
        let c = Cqe {
            user_data,
            res,
            flags,
        };
        self.stats.cqes += 1;
        if flags & F_MORE != 0 {
            self.stats.more += 1;
        }
        if self.cq.len() < self.cq_cap && self.backlog.is_empty() {
            self.cq.push_back(c);
        } else {
            self.stats.overflows += 1;
            self.backlog.push_back(c);
        }
    }

    fn find(&self, user_data: u64) -> Option<usize> {
        self.inflight
            .iter()
            .position(|o| o.sqe.user_data == user_data)
    }

    fn submit(&mut self, sqe: Sqe) {
        self.stats.sqes += 1;
        if self.trace {
            eprintln!(
                "sim: sqe ud={} {:?} fd={} addr={:#x}",
                sqe.user_data, sqe.kind, sqe.fd, sqe.addr
            );
        }
        if sqe.user_data < FIRST_RESERVED_USER_DATA {
            if let Some(i) = self.find(sqe.user_data) {
                violation(&format!(
                    "user_data {} was submitted again ({:?} on fd {}) while the kernel still \
                     holds an op with it ({:?} on fd {})",
                    sqe.user_data,
                    sqe.kind,
                    sqe.fd,
                    self.inflight[i].sqe.kind,
                    self.inflight[i].sqe.fd
                ));
            }
        }
        match sqe.kind {
            Kind::Cancel => self.cancel(sqe),
            Kind::TimeoutUpdate => {
                self.memory.read(
                    sqe.off as usize,
                    std::mem::size_of::<libc::timespec>(),
                    &sqe,
                );
                let res = match self.find(sqe.addr) {
                    Some(_) => 0,
                    None => -libc::ENOENT,
                };
                self.post(sqe.user_data, res, 0);
            }
            // Closes complete while they are submitted, as the driver counts on; the
            // descriptor is a real one (the tests' streams stand on eventfds).
            Kind::Close => {
                // SAFETY: the SQE hands the descriptor to the kernel, which closes it; nothing
                // else of the process uses it any more.
                let res = unsafe { libc::close(sqe.fd) };
                let res = if res == 0 { 0 } else { -libc::EBADF };
                self.post(sqe.user_data, res, 0)
            }
            Kind::Other(_) => self.post(sqe.user_data, -libc::EOPNOTSUPP, 0),
            Kind::Timeout => {
                let ts = self.memory.read(sqe.addr as usize, 16, &sqe);
                let sec = u64::from_ne_bytes(ts[..8].try_into().expect("8 bytes"));
                let nsec = u64::from_ne_bytes(ts[8..16].try_into().expect("8 bytes"));
                let deadline_ns = sec.saturating_mul(1_000_000_000).saturating_add(nsec);
                self.inflight.push(InFlight {
                    sqe,
                    cancelled: false,
                    zc_notif_due: false,
                    deadline_ns,
                    rung: false,
                });
            }
            _ => {
                self.inflight.push(InFlight {
                    sqe,
                    cancelled: false,
                    zc_notif_due: false,
                    deadline_ns: 0,
                    rung: false,
                });
                // A tried send ends while it is submitted: sent, short, or `EAGAIN`.
                if sqe.tried {
                    let i = self.inflight.len() - 1;
                    self.step(i);
                }
            }
        }
    }

    fn cancel(&mut self, sqe: Sqe) {
        let Some(i) = self.find(sqe.addr) else {
            self.stats.cancels_late += 1;
            self.post(sqe.user_data, -libc::ENOENT, 0);
            return;
        };
        if self.inflight[i].cancelled {
            self.post(sqe.user_data, -libc::EALREADY, 0);
            return;
        }
        // The op may complete in the same enter, ahead of the cancel: then the cancel finds
        // nothing, or finds a multishot op that posted more first.
        if self.rng.chance(64) && self.can_move(i) {
            self.stats.cancel_races += 1;
            let ended = self.step(i);
            if ended {
                self.post(sqe.user_data, -libc::ENOENT, 0);
                return;
            }
        }
        self.stats.cancels += 1;
        self.inflight[i].cancelled = true;
        self.post(sqe.user_data, 0, 0);
    }

    fn progress_all(&mut self) {
        let n = self.inflight.len();
        if n == 0 {
            return;
        }
        // A random order: visit from a random start with a random stride coprime to n.
        let start = self.rng.below(n as u64) as usize;
        let stride = loop {
            let s = 1 + self.rng.below(n as u64) as usize;
            if gcd(s, n) == 1 {
                break s;
            }
        };
        let mut ids: Vec<u64> = (0..n)
            .map(|k| self.inflight[(start + k * stride) % n].sqe.user_data)
            .collect();
        // Timers and doorbells first-come are not special: the same random walk.
        for ud in ids.drain(..) {
            let Some(i) = self.find(ud) else { continue };
            // A rung doorbell always moves: its eventfd was read, and that wake must not be lost.
            if self.can_move(i) && (self.inflight[i].rung || self.rng.chance(self.progress)) {
                self.step(i);
            }
        }
    }

    /// Completes something if anything can complete now; returns whether it did.
    fn force_one(&mut self) -> bool {
        let mut movable = Vec::new();
        for i in 0..self.inflight.len() {
            if self.can_move(i) {
                movable.push(i);
            }
        }
        if movable.is_empty() {
            return false;
        }
        // A rung doorbell goes first: its eventfd was read.
        let i = match movable.iter().find(|&&i| self.inflight[i].rung) {
            Some(&i) => i,
            None => movable[self.rng.below(movable.len() as u64) as usize],
        };
        self.step(i);
        true
    }

    /// Whether op `i` can post a CQE now.
    fn can_move(&mut self, i: usize) -> bool {
        let o = &self.inflight[i];
        if o.cancelled || o.zc_notif_due || o.rung {
            return true;
        }
        match o.sqe.kind {
            Kind::Timeout => crate::sys::monotonic_ns() >= o.deadline_ns,
            Kind::Poll => poll_ready(o.sqe.fd),
            _ if self.doorbells.contains(&o.sqe.fd) => {
                let rung = doorbell_rung(o.sqe.fd);
                self.inflight[i].rung = rung;
                rung
            }
            _ => true,
        }
    }
}

/// Whether `fd` is readable now, as a POLL_ADD for `POLLIN` on it would see (the room
/// watcher's epoll descriptor: readable while a watched socket has room).
fn poll_ready(fd: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the call; a zero timeout never blocks.
    unsafe { libc::poll(&mut p, 1, 0) == 1 }
}

/// Whether the doorbell `fd` was rung; consumes the ring, as the kernel's read does.
fn doorbell_rung(fd: i32) -> bool {
    let mut v = 0u64;
    // SAFETY: reads 8 bytes into a live u64 from a descriptor the loop keeps open while its
    // read is in flight (the eventfd is non-blocking).
    let n = unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
    n == 8
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
