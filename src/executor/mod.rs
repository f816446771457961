//! Tasks, the run queue and wakers.
//!
//! Contract with the runtime:
//! - [`Scheduler::run`] polls ready tasks, at most a budget per call, on the owner thread.
//! - A wake on the owner thread while the loop runs pushes onto the local run queue: a flag
//!   check and an intrusive-list push, no atomic. A wake from anywhere else (another thread, or
//!   this thread while the loop is not the running one) hands a task reference to
//!   [`Remote`], which rings the loop's eventfd only if the loop is asleep.
//! - A task in the run queue is kept alive by the scheduler's own reference (its slab entry);
//!   if it completes while queued, that reference moves to the queue entry.
//! - [`Scheduler::shutdown`] drops every future on the owner thread.

mod blocking;
mod handshake;
mod join;
mod join_error;
mod join_set;
mod join_state;
mod queue;
mod task;

pub use blocking::{set_blocking_threads, spawn_blocking};
pub use join::JoinHandle;
pub use join_error::JoinError;
pub use join_set::JoinSet;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::Waker;

use slab::Slab;

use crate::sys::EventFd;
use handshake::Handshake;
use queue::RunQueue;
use task::{Header, RawTask, COMPLETE};

thread_local! {
    /// The scheduler of the loop running on this thread, set by `Scheduler::enter`.
    static CURRENT: Cell<*const SchedCore> = const { Cell::new(std::ptr::null()) };
}

/// The cross-thread side of a loop: remote wakes and spawns, and the doorbell.
pub(crate) struct Remote {
    loop_id: u64,
    queue: Mutex<RemoteQueue>,
    notifier: Notifier,
}

#[derive(Default)]
struct RemoteQueue {
    closed: bool,
    spawns: Vec<RawTask>,
    wakes: Vec<RawTask>,
}

/// Wakes a parked loop, writing the eventfd only when the loop is (about to be) asleep (see
/// [`handshake`]).
pub(crate) struct Notifier {
    eventfd: EventFd,
    handshake: Handshake,
}

impl Notifier {
    pub(crate) fn notify(&self) {
        if self.handshake.notify() {
            self.eventfd.ring();
        }
    }

    /// Returns false (and stays awake) if a notification is already pending.
    #[inline]
    pub(crate) fn prepare_park(&self) -> bool {
        self.handshake.prepare_park()
    }

    /// The loop is awake again.
    #[inline]
    pub(crate) fn unparked(&self) {
        self.handshake.unparked();
    }

    /// Consumes a pending notification.
    #[inline]
    pub(crate) fn take_pending(&self) -> bool {
        self.handshake.take_pending()
    }
}

impl Remote {
    pub(crate) fn new(loop_id: u64, eventfd: EventFd) -> Remote {
        Remote {
            loop_id,
            queue: Mutex::new(RemoteQueue::default()),
            notifier: Notifier {
                eventfd,
                handshake: Handshake::new(),
            },
        }
    }

    pub(crate) fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    pub(crate) fn loop_id(&self) -> u64 {
        self.loop_id
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RemoteQueue> {
        // A panic while holding this lock cannot leave the queue inconsistent (pushes and
        // swaps only), so a poisoned lock is still usable.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spawns from any thread. If the loop is closed the task is cancelled at once.
    pub(crate) fn spawn<F>(self: &Arc<Self>, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let raw = RawTask::new(fut, self.clone());
        // SAFETY: `RawTask::new` counted a second reference for the join handle.
        let handle = JoinHandle::new(unsafe { RawTask::from_ptr(raw.as_ptr()) });
        let mut q = self.lock();
        if q.closed {
            drop(q);
            // Never inserted, never polled, no waker exists: this thread holds the task
            // exclusively, and `F: Send` lets it drop the future here.
            raw.cancel();
            raw.complete();
            return handle;
        }
        q.spawns.push(raw);
        drop(q);
        self.notifier.notify();
        handle
    }

    fn push_wake(&self, raw: RawTask) {
        let mut q = self.lock();
        if q.closed {
            drop(q);
            return;
        }
        q.wakes.push(raw);
        drop(q);
        self.notifier.notify();
    }
}

/// The owner-thread side of a loop's executor.
#[derive(Clone)]
pub(crate) struct Scheduler {
    core: Rc<SchedCore>,
}

struct SchedCore {
    id: u64,
    run_queue: RunQueue,
    tasks: RefCell<Slab<RawTask>>,
    remote: Arc<Remote>,
    /// Turns run (calls of [`Scheduler::run`]), for [`crate::Stats`].
    turns: Cell<u64>,
}

/// The scheduler's counters, for [`crate::Stats`].
#[derive(Clone, Copy)]
pub(crate) struct SchedCounts {
    /// Tasks alive (spawned, not finished), remote spawns not yet taken in included.
    pub(crate) tasks: usize,
    pub(crate) turns: u64,
}

impl SchedCore {
    fn counts(&self) -> SchedCounts {
        SchedCounts {
            tasks: self.tasks.borrow().len() + self.remote.lock().spawns.len(),
            turns: self.turns.get(),
        }
    }
}

/// Restores the previous current scheduler on drop.
pub(crate) struct EnterGuard {
    prev: *const SchedCore,
    _keep: Rc<SchedCore>,
}

impl Drop for EnterGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.prev));
    }
}

impl Scheduler {
    pub(crate) fn new(remote: Arc<Remote>) -> Scheduler {
        Scheduler {
            core: Rc::new(SchedCore {
                id: remote.loop_id,
                run_queue: RunQueue::default(),
                tasks: RefCell::new(Slab::new()),
                remote,
                turns: Cell::new(0),
            }),
        }
    }

    /// Makes this the thread's running scheduler (local wakes) until the guard drops.
    pub(crate) fn enter(&self) -> EnterGuard {
        let prev = CURRENT.with(|c| c.replace(Rc::as_ptr(&self.core)));
        EnterGuard {
            prev,
            _keep: self.core.clone(),
        }
    }

    /// Spawns on this loop, from its own thread.
    pub(crate) fn spawn<F: Future + 'static>(&self, fut: F) -> JoinHandle<F::Output> {
        self.core.spawn(fut)
    }

    /// Tasks alive (spawned, not finished), including remote spawns not yet taken in.
    pub(crate) fn live_tasks(&self) -> usize {
        self.core.tasks.borrow().len() + self.core.remote.lock().spawns.len()
    }

    /// The counters [`crate::Stats`] reports.
    pub(crate) fn counts(&self) -> SchedCounts {
        self.core.counts()
    }

    pub(crate) fn has_ready(&self) -> bool {
        !self.core.run_queue.is_empty()
    }

    /// Takes in remote spawns and wakes, if any were signalled.
    #[inline]
    pub(crate) fn drain_remote(&self) {
        if self.core.remote.notifier.take_pending() {
            self.drain_remote_queue();
        }
    }

    #[cold]
    fn drain_remote_queue(&self) {
        let (spawns, wakes) = {
            let mut q = self.core.remote.lock();
            (std::mem::take(&mut q.spawns), std::mem::take(&mut q.wakes))
        };
        for raw in spawns {
            self.core.insert(raw);
        }
        for raw in wakes {
            self.core.schedule_local(raw.as_ptr());
            drop(raw);
        }
    }

    /// Polls up to `budget` ready tasks. Returns how many were polled.
    // Always: one call site, the loop's turn, once a turn (outlined: 12 instructions a turn).
    #[inline(always)]
    pub(crate) fn run(&self, budget: usize) -> usize {
        let core = &self.core;
        core.turns.set(core.turns.get() + 1);
        let mut n = 0;
        while n < budget {
            let Some(ptr) = self.core.run_queue.pop_front() else {
                break;
            };
            n += 1;
            // SAFETY: a queued pointer is kept alive by the slab's reference, or (once
            // complete) by the reference the queue entry took over; see the module contract.
            let task = ManuallyDrop::new(unsafe { RawTask::from_ptr(ptr) });
            let h = task.header();
            h.scheduled.set(false);
            if h.state.load(Ordering::Relaxed) & COMPLETE != 0 {
                // It completed while queued; this entry held the last scheduler reference.
                drop(ManuallyDrop::into_inner(task));
                continue;
            }
            if task.poll() {
                task.complete();
                self.core.release_owner(h.slab_key.get());
            }
        }
        n
    }

    /// Drops every task's future (on this thread), resolving join handles as cancelled.
    /// Tasks spawned meanwhile, locally or remotely, are cancelled too.
    pub(crate) fn shutdown(&self) {
        let (spawns, wakes) = {
            let mut q = self.core.remote.lock();
            q.closed = true;
            (std::mem::take(&mut q.spawns), std::mem::take(&mut q.wakes))
        };
        drop(wakes);
        for raw in spawns {
            self.core.insert(raw);
        }
        loop {
            let tasks: Vec<RawTask> = self.core.tasks.borrow_mut().drain().collect();
            if tasks.is_empty() {
                break;
            }
            for t in tasks {
                if t.header().state.load(Ordering::Acquire) & COMPLETE == 0 {
                    t.cancel();
                    t.complete();
                }
                t.header().slab_key.set(usize::MAX);
                if t.header().scheduled.get() {
                    // The run-queue entry takes this reference over; drained below.
                    let _ = t.into_ptr();
                }
            }
        }
        loop {
            let next = self.core.run_queue.pop_front();
            let Some(ptr) = next else { break };
            // SAFETY: every task is complete now, so each queued entry owns its reference.
            let t = unsafe { RawTask::from_ptr(ptr) };
            t.header().scheduled.set(false);
            drop(t);
        }
    }
}

impl SchedCore {
    fn spawn<F: Future + 'static>(&self, fut: F) -> JoinHandle<F::Output> {
        let raw = RawTask::new(fut, self.remote.clone());
        // SAFETY: `RawTask::new` counted a second reference for the join handle.
        let handle = JoinHandle::new(unsafe { RawTask::from_ptr(raw.as_ptr()) });
        self.insert(raw);
        handle
    }

    /// Takes in a task (its reference becomes the scheduler's) and queues it.
    fn insert(&self, raw: RawTask) {
        let ptr = raw.as_ptr();
        let key = self.tasks.borrow_mut().insert(raw);
        // SAFETY: the slab now holds a reference.
        let h = unsafe { ptr.as_ref() };
        h.slab_key.set(key);
        self.schedule_local(ptr);
    }

    fn schedule_local(&self, ptr: NonNull<Header>) {
        // SAFETY: the caller holds a reference or the slab does.
        let h = unsafe { ptr.as_ref() };
        if h.scheduled.get() || h.state.load(Ordering::Relaxed) & COMPLETE != 0 {
            return;
        }
        h.scheduled.set(true);
        // SAFETY: alive (above), kept alive while queued by the slab's or the caller's
        // reference (module contract), and not queued: its `scheduled` flag was clear.
        unsafe { self.run_queue.push_back(ptr) };
    }

    /// Drops the slab's reference of a completed task, or hands it to its queue entry.
    fn release_owner(&self, key: usize) {
        let owner = self.tasks.borrow_mut().try_remove(key);
        if let Some(owner) = owner {
            owner.header().slab_key.set(usize::MAX);
            if owner.header().scheduled.get() {
                let _ = owner.into_ptr();
            } else {
                drop(owner);
            }
        }
    }
}

/// Schedules a task from a waker or `abort`, on whichever thread that happens.
fn schedule(ptr: NonNull<Header>) {
    // SAFETY: the caller (a waker or join handle) holds a reference.
    let h = unsafe { ptr.as_ref() };
    let local = CURRENT.with(|c| c.get());
    // SAFETY: a non-null CURRENT points at a SchedCore kept alive by its EnterGuard.
    if !local.is_null() && unsafe { (*local).id } == h.remote.loop_id {
        if h.slab_key.get() != usize::MAX {
            // SAFETY: as above.
            unsafe { (*local).schedule_local(ptr) };
            return;
        }
        if h.state.load(Ordering::Relaxed) & COMPLETE != 0 {
            return;
        }
        // Not taken in yet (a remote spawn still queued): fall through to the remote path.
    }
    if h.state.load(Ordering::Acquire) & COMPLETE != 0 {
        return;
    }
    // SAFETY: the caller's reference keeps the task alive while we take another.
    let extra = ManuallyDrop::new(unsafe { RawTask::from_ptr(ptr) }).clone_ref();
    h.remote.push_wake(extra);
}

/// Wakes `w` on the spot if it is a task waker of the scheduler running on this thread and its
/// task is alive in that scheduler: the wake is then a push onto the local run queue, and the
/// drop of `w` releases a reference that is not the task's last (the scheduler holds one).
/// So it touches nothing but the run queue and may run while the driver is borrowed. Any
/// other waker is handed back, to be woken once the borrow ends.
#[inline]
pub(crate) fn wake_inline(w: Waker) -> Result<(), Waker> {
    let Some(task) = schedule_if_local(&w) else {
        return Err(w);
    };
    let _ = std::mem::ManuallyDrop::new(w);
    // SAFETY: `w`'s reference, which the line above keeps from being released twice, is the
    // one given up; the slab's (checked by `schedule_if_local`) outlives it.
    unsafe { task::release_ref_not_last(task) };
    Ok(())
}

/// [`wake_inline`] by reference, for a waker that stays where it is (a stream's, kept for its
/// next CQE): schedules its task on the spot and returns true, or returns false for a waker
/// to be woken once the borrow ends. No reference is taken or released.
#[inline]
pub(crate) fn wake_inline_ref(w: &Waker) -> bool {
    schedule_if_local(w).is_some()
}

/// Schedules `w`'s task if `w` is a task waker of the scheduler running on this thread and the
/// task is alive in it (its slab entry holds a reference); returns the task then.
#[inline]
fn schedule_if_local(w: &Waker) -> Option<NonNull<Header>> {
    if !task::is_task_waker(w) {
        return None;
    }
    let local = CURRENT.with(|c| c.get());
    if local.is_null() {
        return None;
    }
    let ptr = w.data() as *const Header;
    // SAFETY: a task waker's data is a task header, kept alive by the waker's reference.
    let h = unsafe { &*ptr };
    // SAFETY: a non-null CURRENT points at a SchedCore kept alive by its EnterGuard.
    let core = unsafe { &*local };
    if core.id != h.remote.loop_id || h.slab_key.get() == usize::MAX {
        return None;
    }
    // SAFETY: non-null (it came from a reference); the slab holds a reference to the task.
    let task = unsafe { NonNull::new_unchecked(ptr as *mut Header) };
    core.schedule_local(task);
    Some(task)
}

/// Spawns onto the loop running on this thread.
///
/// # Panics
///
/// Outside a running loop.
#[track_caller]
pub(crate) fn spawn_current<F: Future + 'static>(fut: F) -> JoinHandle<F::Output> {
    let core = CURRENT.with(|c| c.get());
    assert!(
        !core.is_null(),
        "ringloop::spawn called outside a running event loop; use EventLoop::spawn or \
         Handle::spawn, or call it from a task"
    );
    // SAFETY: non-null CURRENT points at a SchedCore kept alive by its EnterGuard.
    unsafe { (*core).spawn(fut) }
}

/// Tasks alive on the loop current on this thread (see [`Scheduler::live_tasks`]); `None`
/// outside a loop.
pub(crate) fn current_counts() -> Option<SchedCounts> {
    let core = CURRENT.with(|c| c.get());
    if core.is_null() {
        return None;
    }
    // SAFETY: non-null CURRENT points at a SchedCore kept alive by its EnterGuard.
    let core = unsafe { &*core };
    Some(core.counts())
}

#[cfg(test)]
mod tests;
