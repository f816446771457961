//! One entry of the op table and its state machine.
//!
//! ```text
//!  submit ─► Submitted{waker} ─ final CQE ─► Completed ─ poll ─► freed
//!               │ more CQEs (multishot)        ▲
//!               ▼                              │
//!            Streaming{queue} ─ final CQE ─────┘ (queue drained by the owner)
//!               │ future dropped
//!               ▼
//!            Orphaned{keep} ── final CQE ──► freed; `keep` released outside the borrow
//!
//!  submit_detached ─► Detached{owner} ─ each CQE ─► owner told outside the borrow
//!                                       (final CQE: slot freed first)
//!
//!  the driver's own read ─► Internal{buf} ─ final CQE ─► freed
//!
//!  the driver's close times out with the op still in the kernel:
//!            any state the kernel may still use ─► Abandoned (what the slot held is leaked;
//!            a live future stays pending and leaks its own data when dropped)
//! ```
//!
//! A slot is freed only after its final CQE (one without `IORING_CQE_F_MORE`) has been reaped,
//! so its index, which is the op's `user_data`, is never reused while the kernel knows it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Waker;

use super::completion::{Completion, Detached, Orphan};
use super::stream_keep::StreamKeep;

/// The state of one in-flight op.
pub(crate) enum Lifecycle {
    /// In the kernel; its future is alive and waiting.
    Submitted { waker: Option<Waker> },
    /// A multishot op whose CQEs queue here until the owner takes them. Boxed: multishot
    /// slots are few, and an inline queue would double every slot's size.
    Streaming(Box<Stream>),
    /// The final CQE arrived; the future has not yet taken it.
    Completed(Completion),
    /// The future was dropped; the slot owns everything the kernel may still touch.
    Orphaned(Box<dyn Orphan>),
    /// No future waits: `owner` holds the op's memory and is told of each CQE.
    Detached(Arc<dyn Detached>),
    /// An op the driver issued for itself (the wake-up read), whose buffer is the driver's.
    Internal,
    /// The loop closed before the kernel answered: the future must never get its data back,
    /// since the kernel may still write it. Only a future alive at close can see this.
    Abandoned,
}

/// The queue of a multishot op.
pub(crate) struct Stream {
    /// The owner's waker. It stays after a wake, so that the owner polling again (a busy
    /// connection's next receive) finds it in place and clones nothing: only `waiting` says
    /// whether it is still to be woken.
    pub(crate) waker: Option<Waker>,
    /// The owner polled, found nothing, and has not been woken since.
    pub(crate) waiting: bool,
    pub(crate) queue: CqeQueue,
    /// The final CQE (without `IORING_CQE_F_MORE`) is in the queue.
    pub(crate) finished: bool,
    /// What the kernel may use for this op's whole life (for an op armed by an I/O object
    /// rather than a future: its descriptor, say). Released with the slot.
    pub(crate) keep: StreamKeep,
    /// At most this many CQEs wait in `queue` before the op is cancelled (0: no limit). The
    /// owner re-arms once it has drained the queue. This is the back-pressure a multishot
    /// accept needs: without it a server that stops accepting would keep taking connections
    /// (and descriptors) out of the kernel's backlog into an unbounded queue.
    pub(crate) cap: usize,
    /// The cancel for reaching `cap` has been sent.
    pub(crate) throttled: bool,
}

impl Stream {
    /// A live stream with nothing queued and no waiter, keeping `keep` (see the field).
    pub(crate) fn new(keep: StreamKeep, cap: usize) -> Stream {
        Stream {
            waker: None,
            waiting: false,
            queue: CqeQueue::default(),
            finished: false,
            keep,
            cap,
            throttled: false,
        }
    }

    /// Queues a CQE of this (unfinished) stream and says whom to wake: a waiting owner's
    /// waker is woken where it lies ([`OnCqe::WakeStream`]), left for the owner's next wait.
    #[inline]
    fn push(&mut self, c: Completion) -> OnCqe {
        self.queue.push(c);
        self.finished = !c.more();
        let wake = std::mem::take(&mut self.waiting);
        if self.cap != 0 && !self.finished && !self.throttled && self.queue.len() >= self.cap {
            self.throttled = true;
            return OnCqe::Throttle(if wake { self.waker.clone() } else { None });
        }
        if wake {
            OnCqe::WakeStream
        } else {
            OnCqe::Nothing
        }
    }

    /// Registers `waker` as the owner's, now waiting. Returns the waker it replaces if that
    /// one was still waiting, to be woken (once the borrow ends) so that it can re-poll.
    #[inline]
    pub(crate) fn wait(&mut self, waker: &Waker) -> Option<Waker> {
        let was_waiting = std::mem::replace(&mut self.waiting, true);
        match &self.waker {
            Some(w) if w.will_wake(waker) => None,
            _ => self.waker.replace(waker.clone()).filter(|_| was_waiting),
        }
    }
}

/// The CQEs of a multishot op that its owner has not taken yet, oldest first.
///
/// A busy stream holds none or one between two polls of its owner, so the oldest lives
/// inline and only a backlog reaches the heap. Invariant: `rest` is empty while `head` is.
#[derive(Default)]
pub(crate) struct CqeQueue {
    head: Option<Completion>,
    rest: VecDeque<Completion>,
}

impl CqeQueue {
    #[inline]
    pub(crate) fn push(&mut self, c: Completion) {
        if self.head.is_none() {
            self.head = Some(c);
        } else {
            self.push_rest(c);
        }
    }

    #[cold]
    fn push_rest(&mut self, c: Completion) {
        self.rest.push_back(c);
    }

    #[inline]
    pub(crate) fn pop(&mut self) -> Option<Completion> {
        let c = self.head.take()?;
        if !self.rest.is_empty() {
            self.head = self.rest.pop_front();
        }
        Some(c)
    }

    /// The oldest CQE, left in place.
    pub(crate) fn front(&self) -> Option<Completion> {
        self.head
    }

    pub(crate) fn len(&self) -> usize {
        usize::from(self.head.is_some()) + self.rest.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    /// Takes every queued CQE, oldest first.
    pub(crate) fn take_all(&mut self) -> Vec<Completion> {
        let mut all = Vec::with_capacity(self.len());
        all.extend(self.head.take());
        all.extend(self.rest.drain(..));
        all
    }
}

/// What the reaper must do after a CQE was applied to a slot.
#[must_use]
pub(crate) enum OnCqe {
    /// Nothing (the CQE was queued with no waiter, or was stray).
    Nothing,
    /// Wake the owner.
    Wake(Waker),
    /// Wake the stream's owner, whose waker stays in the slot (`Stream::waker`).
    WakeStream,
    /// A stream's queue reached its cap: cancel the op (and wake the owner, if waiting).
    Throttle(Option<Waker>),
    /// An orphan got a non-final CQE: release what it carries, keep the slot.
    ReleaseInPlace,
    /// The slot is done with; free it and release this orphan's resources.
    FreeOrphan,
    /// The driver's own wake-up read completed; free the slot and keep the buffer.
    FreeInternal,
    /// A detached op's CQE: tell its owner (after freeing the slot, if the CQE is final).
    Detached,
}

impl Lifecycle {
    /// Applies one CQE. Never panics on what the kernel sends. The flag is true when the slot
    /// stopped having an owner ([`has_owner`](Lifecycle::has_owner) went from true to false).
    #[inline]
    pub(crate) fn on_cqe(&mut self, c: Completion) -> (OnCqe, bool) {
        match self {
            // The common cases first, without the generic path's drop glue or its two
            // ownership checks. A single-shot op's only CQE: the old value is moved out whole
            // and only its waker is kept.
            Lifecycle::Submitted { .. } if !c.more() => {
                let Lifecycle::Submitted { waker } =
                    std::mem::replace(self, Lifecycle::Completed(c))
                else {
                    unreachable!("matched just above");
                };
                (waker.map_or(OnCqe::Nothing, OnCqe::Wake), true)
            }
            // A queued write's completion: its owner is told once the borrow ends.
            Lifecycle::Detached(_) => (OnCqe::Detached, false),
            // A live stream's next CQE: it had an owner, and loses it with the final CQE.
            Lifecycle::Streaming(st) if !st.finished => {
                let action = st.push(c);
                (action, st.finished)
            }
            _ => {
                let was_owned = self.has_owner();
                let action = self.on_cqe_slow(c);
                (action, was_owned && !self.has_owner())
            }
        }
    }

    fn on_cqe_slow(&mut self, c: Completion) -> OnCqe {
        match self {
            Lifecycle::Submitted { waker } => {
                let waker = waker.take();
                if c.more() {
                    let mut st = Box::new(Stream::new(StreamKeep::Nothing, 0));
                    st.queue.push(c);
                    *self = Lifecycle::Streaming(st);
                } else {
                    *self = Lifecycle::Completed(c);
                }
                waker.map_or(OnCqe::Nothing, OnCqe::Wake)
            }
            // A CQE after the final one would be a kernel bug; ignore it, harmlessly.
            Lifecycle::Streaming(st) if st.finished => OnCqe::Nothing,
            Lifecycle::Streaming(st) => st.push(c),
            Lifecycle::Orphaned(_) if c.more() => OnCqe::ReleaseInPlace,
            Lifecycle::Orphaned(_) => OnCqe::FreeOrphan,
            Lifecycle::Detached(_) => OnCqe::Detached,
            Lifecycle::Internal => OnCqe::FreeInternal,
            Lifecycle::Completed(_) | Lifecycle::Abandoned => OnCqe::Nothing,
        }
    }

    /// Whether the kernel still owes this slot a final CQE.
    pub(crate) fn awaits_kernel(&self) -> bool {
        match self {
            Lifecycle::Submitted { .. }
            | Lifecycle::Orphaned(_)
            | Lifecycle::Detached(_)
            | Lifecycle::Internal => true,
            Lifecycle::Streaming(st) => !st.finished,
            Lifecycle::Completed(_) | Lifecycle::Abandoned => false,
        }
    }

    /// Whether a live future waits on this slot (what can still wake a task).
    pub(crate) fn has_owner(&self) -> bool {
        match self {
            Lifecycle::Submitted { .. } => true,
            Lifecycle::Streaming(st) => !st.finished,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::Driver;

    /// Whether two wakers wake the same thing, by their data pointer: `Waker::will_wake`
    /// also compares vtable addresses, which need not be equal for clones of one waker (Miri
    /// gives each use of a vtable its own address).
    fn same_task(a: &Waker, b: &Waker) -> bool {
        a.data() == b.data()
    }
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    const MORE: u32 = 1 << 1; // IORING_CQE_F_MORE

    #[test]
    fn a_slot_stays_small() {
        // Every in-flight op pays for this in the slab; multishot state is boxed.
        assert!(std::mem::size_of::<Lifecycle>() <= 24);
    }

    #[test]
    fn single_shot_completes_and_wakes() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let mut s = Lifecycle::Submitted {
            waker: Some(Waker::from(count.clone())),
        };
        let c = Completion { res: 5, flags: 0 };
        match s.on_cqe(c) {
            (OnCqe::Wake(w), true) => w.wake(),
            _ => panic!("expected a wake, and the owner gone"),
        }
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(matches!(s, Lifecycle::Completed(x) if x == c));
        assert!(!s.awaits_kernel());
    }

    #[test]
    fn multishot_queues_until_final() {
        let mut s = Lifecycle::Submitted { waker: None };
        let _ = s.on_cqe(Completion {
            res: 1,
            flags: MORE,
        });
        let _ = s.on_cqe(Completion {
            res: 2,
            flags: MORE,
        });
        assert!(s.awaits_kernel());
        let _ = s.on_cqe(Completion { res: 0, flags: 0 });
        match &s {
            Lifecycle::Streaming(st) => {
                assert_eq!(st.queue.len(), 3);
                assert!(st.finished);
            }
            _ => panic!("expected streaming"),
        }
        assert!(!s.awaits_kernel());
        // A stray CQE after the final one must not panic.
        let _ = s.on_cqe(Completion { res: 9, flags: 0 });
    }

    /// A live stream with no waiter yet.
    fn stream() -> Stream {
        Stream::new(StreamKeep::Nothing, 0)
    }

    #[test]
    fn a_stream_wakes_its_waiter_once_and_keeps_the_waker() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut st = stream();
        let more = Completion {
            res: 1,
            flags: MORE,
        };
        // Nobody waits yet: the CQE is only queued.
        assert!(matches!(st.push(more), OnCqe::Nothing));
        assert!(st.wait(&waker).is_none());
        assert!(matches!(st.push(more), OnCqe::WakeStream));
        // Woken once: a second CQE before the owner polls again wakes no one...
        assert!(matches!(st.push(more), OnCqe::Nothing));
        // ...and the waker stayed, so the owner's next wait clones nothing: the slot's waker
        // and the owner's are the only references.
        assert!(st.waker.as_ref().is_some_and(|w| same_task(w, &waker)));
        assert!(st.wait(&waker).is_none());
        assert_eq!(Arc::strong_count(&count), 3); // `count`, `waker`, the slot's
        assert!(matches!(st.push(more), OnCqe::WakeStream));
        assert_eq!(count.0.load(Ordering::SeqCst), 0); // the reaper wakes, not `push`
    }

    #[test]
    fn a_new_waiter_hands_back_the_old_one_only_while_it_still_waits() {
        let (a, b) = (
            Arc::new(Count(AtomicUsize::new(0))),
            Arc::new(Count(AtomicUsize::new(0))),
        );
        let (wa, wb) = (Waker::from(a.clone()), Waker::from(b.clone()));
        let mut st = stream();
        assert!(st.wait(&wa).is_none());
        // `a` still waits: it is handed back, to be woken so that it re-polls.
        assert!(st.wait(&wb).is_some_and(|old| same_task(&old, &wa)));
        let _ = st.push(Completion {
            res: 1,
            flags: MORE,
        });
        // `b` was woken already: replacing it hands nothing back.
        assert!(st.wait(&wa).is_none());
        assert!(st.waker.as_ref().is_some_and(|w| same_task(w, &wa)));
    }

    #[test]
    fn a_throttled_stream_hands_its_waiter_to_the_reaper() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut st = Stream { cap: 1, ..stream() };
        assert!(st.wait(&waker).is_none());
        match st.push(Completion {
            res: 1,
            flags: MORE,
        }) {
            OnCqe::Throttle(Some(w)) => assert!(same_task(&w, &waker)),
            _ => panic!("expected a throttle that wakes the waiter"),
        }
        assert!(st.throttled && !st.waiting);
    }

    #[test]
    fn cqe_queue_keeps_order_across_inline_and_backlog() {
        let c = |res| Completion { res, flags: MORE };
        let mut q = CqeQueue::default();
        assert!(q.is_empty() && q.pop().is_none());
        q.push(c(1));
        q.push(c(2));
        q.push(c(3));
        assert_eq!((q.len(), q.front()), (3, Some(c(1))));
        assert_eq!(q.pop(), Some(c(1)));
        // A push while a backlog remains goes behind it.
        q.push(c(4));
        let order: Vec<i32> = std::iter::from_fn(|| q.pop()).map(|c| c.res).collect();
        assert_eq!(order, [2, 3, 4]);
        assert!(q.is_empty());
        q.push(c(5));
        q.push(c(6));
        assert_eq!(
            q.take_all().iter().map(|c| c.res).collect::<Vec<_>>(),
            [5, 6]
        );
        assert_eq!((q.is_empty(), q.len()), (true, 0));
    }

    #[test]
    fn orphan_is_freed_only_on_final_cqe() {
        struct Keep;
        impl Orphan for Keep {
            fn release(&mut self, _: Completion) {}
        }
        let mut s = Lifecycle::Orphaned(Box::new(Keep));
        assert!(matches!(
            s.on_cqe(Completion {
                res: 1,
                flags: MORE
            }),
            (OnCqe::ReleaseInPlace, false)
        ));
        assert!(matches!(
            s.on_cqe(Completion { res: 0, flags: 0 }),
            (OnCqe::FreeOrphan, false)
        ));
    }

    #[test]
    fn a_detached_op_awaits_the_kernel_but_wakes_no_one() {
        struct Owner;
        impl Detached for Owner {
            fn complete(self: Arc<Self>, _: &Driver, _: Completion) {}
        }
        let mut s = Lifecycle::Detached(Arc::new(Owner));
        assert!(s.awaits_kernel() && !s.has_owner());
        for flags in [MORE, 0] {
            assert!(matches!(
                s.on_cqe(Completion { res: 3, flags }),
                (OnCqe::Detached, false)
            ));
        }
    }
}
