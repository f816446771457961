//! A write queue's state, touched only on the loop serving the stream: the write in flight
//! and those behind it, the SENDMSG's vectors, the try in flight, the first failure.

use std::collections::VecDeque;
use std::io;
use std::task::Waker;

use super::BACKLOG_BYTES;
use super::BACKLOG_WRITES;
use crate::buf::kept::KeptBuf;
use crate::driver::Driver;

#[derive(Default)]
pub(super) struct State {
    /// The oldest write not wholly sent, and how many of its bytes were sent by earlier
    /// ops; the op in the kernel starts with it.
    pub(super) inflight: Option<(KeptBuf, usize)>,
    /// Writes behind it, oldest first.
    pub(super) waiting: VecDeque<KeptBuf>,
    /// How many of `waiting`'s first writes the op in the kernel carries too (a SENDMSG);
    /// 0 with a plain SEND.
    pub(super) batched: usize,
    /// The SENDMSG's header and vectors, made the first time writes pile up behind one in
    /// flight. Boxed: the kernel is given its address.
    pub(super) vectors: Option<Box<Vectors>>,
    /// Bytes of `inflight` and `waiting` not yet sent.
    pub(super) backlog: usize,
    /// Whether the op in the kernel is a send tried at submit, and counted.
    pub(super) trial: Trial,
    /// The loop's room watcher watches the socket (see `Driver::watch_writable`): asked on
    /// the first try, which does not go if it cannot; `Some(false)` from the start on a Unix
    /// stream.
    pub(super) watched: Option<bool>,
    /// Fresh writes left to send plainly: the stream's first (quietly tried where the
    /// kernel can, see `fresh`), and the next 16 after a try came back short (where the peer
    /// is slow to read, tries would mostly cost an op more).
    pub(super) untried: u8,
    /// No write has been submitted yet: the first is a quiet try where the driver has them
    /// (see `driver::quiet`), which needs no room watcher.
    pub(super) fresh: bool,
    pub(super) failed: Option<Failure>,
    /// Tasks waiting for room in the queue or for it to drain.
    pub(super) wakers: Vec<Waker>,
}

/// The first failure of a queued write, kept so that every later call can report it.
pub(super) struct Failure {
    pub(super) kind: io::ErrorKind,
    pub(super) errno: Option<i32>,
    pub(super) text: String,
}

impl Failure {
    pub(super) fn of(e: &io::Error) -> Failure {
        Failure {
            kind: e.kind(),
            errno: e.raw_os_error(),
            text: e.to_string(),
        }
    }

    pub(super) fn error(&self) -> io::Error {
        match self.errno {
            Some(n) => io::Error::from_raw_os_error(n),
            None => io::Error::new(self.kind, self.text.clone()),
        }
    }
}

/// A SENDMSG's header and the vectors it points at: the writes of one batch.
pub(super) struct Vectors {
    pub(super) hdr: libc::msghdr,
    pub(super) iov: Vec<libc::iovec>,
}

// SAFETY: the pointers are into the buffers of the same queue's state (and into `iov`), which
// only the loop serving the stream touches (a `LoopCell`); moving this to another thread
// moves no memory they point at.
unsafe impl Send for Vectors {}

/// Larger writes are never tried. A try saves one `io_uring_enter` per batch of replies,
/// which only small replies notice, while one that comes back short costs the loop a round
/// trip for the rest; a large write is the likelier to find the socket's buffer full, and
/// trying 16 KiB writes lowered `bench/`'s requests per second at 16 × 64 KiB.
pub(super) const TRY_MAX: usize = 8 * 1024;

/// What the op in flight is, as to tries (see the module doc).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum Trial {
    /// A plain send (or SENDMSG): `EAGAIN` is a failure.
    #[default]
    No,
    /// A send tried at submit (`MSG_DONTWAIT`), whose `EAGAIN` means the socket's buffer was
    /// full; counted among those the next wait lets settle unseen.
    Counted,
    /// A try no longer counted: something waits for its completion (see
    /// [`uncount`](State::uncount)).
    Uncounted,
    /// A quiet try (`driver::quiet`): its success posts no CQE, and the driver tells the
    /// queue once the enter that submitted it has returned.
    Quiet,
}

/// Fresh writes sent plainly after a try came back short, before the next try.
pub(super) const UNTRIED_AFTER_SHORT: u8 = 16;

/// At most this many writes go in one SENDMSG (far below the kernel's `UIO_MAXIOV`).
pub(super) const MAX_BATCH: usize = BACKLOG_WRITES;

impl State {
    /// Something now waits for the op in flight to complete (a task, or a write queued
    /// behind it): if that op is a counted try, the next wait must end at its completion,
    /// not let it settle unseen (see `Driver::uncount_trial`).
    pub(super) fn uncount(&mut self, driver: &Driver) {
        match self.trial {
            Trial::Counted => {
                self.trial = Trial::Uncounted;
                driver.uncount_trial();
            }
            // The enter that submits it must not sleep past its confirmation.
            Trial::Quiet => driver.need_quiet(),
            Trial::No | Trial::Uncounted => {}
        }
    }

    /// Registers a task that waits for the op in flight to complete.
    pub(super) fn register(&mut self, waker: &Waker, driver: &Driver) {
        self.uncount(driver);
        if !self.wakers.iter().any(|w| w.will_wake(waker)) {
            self.wakers.push(waker.clone());
        }
    }

    /// Whether a new write must wait for room.
    pub(super) fn full(&self) -> bool {
        self.inflight.is_some()
            && (self.backlog >= BACKLOG_BYTES || self.waiting.len() >= BACKLOG_WRITES)
    }

    /// Records `e` as the queue's failure; returns the writes that will never be sent (or
    /// not wholly), to be dropped once the borrow has ended. Call with no op in flight.
    pub(super) fn fail(&mut self, e: &io::Error) -> (Option<(KeptBuf, usize)>, VecDeque<KeptBuf>) {
        if self.failed.is_none() {
            self.failed = Some(Failure::of(e));
        }
        self.backlog = 0;
        self.batched = 0;
        (self.inflight.take(), std::mem::take(&mut self.waiting))
    }

    /// Takes `n` bytes, which the op in the kernel reports sent, off the front of the queue.
    /// The writes wholly sent go to `done`, to be dropped once the borrow has ended.
    pub(super) fn consume(&mut self, mut n: usize, done: &mut Done) {
        let mut carried = 1 + std::mem::take(&mut self.batched);
        while carried > 0 {
            let Some((buf, sent)) = self.inflight.as_mut() else {
                return;
            };
            let rest = buf.len() - *sent;
            if n < rest {
                *sent += n;
                self.backlog -= n;
                return;
            }
            n -= rest;
            self.backlog -= rest;
            let next = self.waiting.pop_front().map(|b| (b, 0));
            if let Some((buf, _)) = std::mem::replace(&mut self.inflight, next) {
                done.push(buf);
            }
            carried -= 1;
        }
    }
}

/// The writes one completion finished with: the first inline, any more (a SENDMSG's) in a
/// vector allocated only then.
#[derive(Default)]
pub(super) struct Done {
    pub(super) first: Option<KeptBuf>,
    pub(super) rest: Vec<KeptBuf>,
}

impl Done {
    pub(super) fn push(&mut self, buf: KeptBuf) {
        if self.first.is_none() {
            self.first = Some(buf);
        } else {
            self.rest.push(buf);
        }
    }
}

/// Stores the write just submitted as the one in flight, where nothing is: the empty slot
/// is overwritten without the drop glue an assignment would run on it.
#[inline]
pub(super) fn set_inflight(st: &mut State, buf: KeptBuf, sent: usize) {
    debug_assert!(st.inflight.is_none());
    std::mem::forget(st.inflight.replace((buf, sent)));
}
