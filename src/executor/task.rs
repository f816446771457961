//! Raw tasks: one allocation holding the header, the future (later its output) and the
//! join waker.
//!
//! # Who may touch what
//!
//! - `refs` (atomic): one per `RawTask`, `Waker`, `JoinHandle`. The last one frees the memory.
//! - `state` (atomic) bits:
//!   - `COMPLETE`: the stage holds the output (or `Consumed`). Set by the owner thread after
//!     writing the output, with `Release`.
//!   - `JOIN_INTEREST`: a `JoinHandle` exists. Cleared by the handle's drop. Whoever sees the
//!     other side's bit missing drops the output: the owner at completion if no handle is
//!     left, else the handle (after `COMPLETE`).
//!   - `JOIN_WAKER`: `join_waker` holds a waker the owner may wake. While unset, only the
//!     handle touches `join_waker`; while set, nobody writes it: the handle only reads it
//!     (to compare wakers) until it clears the bit, and the owner, on completing, wakes it
//!     by reference. Once `COMPLETE` is set with the bit still set, the cell is never
//!     written again; its waker is dropped with the allocation.
//!   - `CANCELLED`: `abort()` was called; the owner drops the future at its next turn.
//!
//!   The owner's completion and the handle's side of `JOIN_INTEREST` and `JOIN_WAKER` are
//!   `join_state`'s functions, which loom checks.
//! - `scheduled`, `next`, `slab_key`: the owner thread only (the thread running the loop).
//! - `stage`: the owner thread until `COMPLETE`; then the join handle (if `JOIN_INTEREST`).
//!
//! A future is only ever polled and dropped on the owner thread: completion, abort and loop
//! close all drop it there, so the memory's final release (possibly on another thread, by a
//! waker) finds no future left to drop.

use std::cell::{Cell, UnsafeCell};
use std::future::Future;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use super::join_error::JoinError;
use super::join_state::{self, Completed, WakerCell};
use super::Remote;
use crate::util::sync::AtomicU32;

pub(super) const COMPLETE: u32 = 1 << 0;
pub(super) const JOIN_INTEREST: u32 = 1 << 1;
pub(super) const JOIN_WAKER: u32 = 1 << 2;
pub(super) const CANCELLED: u32 = 1 << 3;

pub(super) struct Header {
    refs: AtomicUsize,
    pub(super) state: AtomicU32,
    pub(super) scheduled: Cell<bool>,
    /// The next task in the run queue while this one is queued (see `queue`).
    pub(super) next: Cell<Option<NonNull<Header>>>,
    pub(super) slab_key: Cell<usize>,
    pub(super) remote: Arc<Remote>,
    vtable: &'static Vtable,
}

struct Vtable {
    /// Polls the future (or drops it if `CANCELLED`); true once the stage holds an output.
    poll: unsafe fn(NonNull<Header>, &mut Context<'_>) -> bool,
    /// Drops the future, storing a cancelled output. Owner thread only.
    cancel: unsafe fn(NonNull<Header>),
    /// Moves the output into `*dst` (a `Poll<Result<T, JoinError>>`).
    read_output: unsafe fn(NonNull<Header>, *mut ()),
    /// Drops the output in place.
    drop_output: unsafe fn(NonNull<Header>),
    /// Frees the allocation.
    dealloc: unsafe fn(NonNull<Header>),
}

enum Stage<F: Future> {
    Running(F),
    Finished(Result<F::Output, JoinError>),
    Consumed,
}

#[repr(C)]
struct TaskCell<F: Future> {
    header: Header,
    join_waker: WakerCell,
    stage: UnsafeCell<Stage<F>>,
}

/// One reference to a task.
pub(crate) struct RawTask {
    ptr: NonNull<Header>,
}

// SAFETY: the header's cross-thread fields are atomics; the owner-only fields (`scheduled`,
// `slab_key`, `stage` before COMPLETE) are only touched on the owner thread, which the code
// checks by loop id before taking the local path. The future is never touched off that thread.
unsafe impl Send for RawTask {}

impl RawTask {
    /// Allocates a task for `fut` with two references: the returned one and a `JoinHandle`'s.
    pub(super) fn new<F: Future + 'static>(fut: F, remote: Arc<Remote>) -> RawTask {
        let cell = Box::new(TaskCell {
            header: Header {
                refs: AtomicUsize::new(2),
                state: AtomicU32::new(JOIN_INTEREST),
                scheduled: Cell::new(false),
                next: Cell::new(None),
                slab_key: Cell::new(usize::MAX),
                remote,
                vtable: &Vtable {
                    poll: poll::<F>,
                    cancel: cancel::<F>,
                    read_output: read_output::<F>,
                    drop_output: drop_output::<F>,
                    dealloc: dealloc::<F>,
                },
            },
            join_waker: WakerCell::new(None),
            stage: UnsafeCell::new(Stage::Running(fut)),
        });
        // `TaskCell` is repr(C) with the header first, so its address is the header's.
        let ptr = NonNull::from(Box::leak(cell)).cast::<Header>();
        RawTask { ptr }
    }

    pub(super) fn header(&self) -> &Header {
        // SAFETY: we hold a reference, so the allocation is alive.
        unsafe { self.ptr.as_ref() }
    }

    pub(super) fn as_ptr(&self) -> NonNull<Header> {
        self.ptr
    }

    /// Takes over one reference counted elsewhere (a run-queue entry's).
    ///
    /// # Safety
    /// `ptr` must carry a reference its previous holder gives up.
    pub(super) unsafe fn from_ptr(ptr: NonNull<Header>) -> RawTask {
        RawTask { ptr }
    }

    /// Gives up this handle without dropping the reference it stands for.
    pub(super) fn into_ptr(self) -> NonNull<Header> {
        ManuallyDrop::new(self).ptr
    }

    /// Another reference to the same task.
    pub(super) fn clone_ref(&self) -> RawTask {
        self.header().refs.fetch_add(1, Ordering::Relaxed);
        RawTask { ptr: self.ptr }
    }

    /// Polls the task once on the owner thread; returns true when it has completed.
    // Always: one call site, `Scheduler::run`, once a poll (outlined: 10 instructions a poll).
    #[inline(always)]
    pub(super) fn poll(&self) -> bool {
        let waker = ManuallyDrop::new(
            // SAFETY: the vtable's functions treat the data pointer as a task header with a
            // reference owned by the waker; ManuallyDrop means this borrowed waker never
            // releases the reference it does not own, while clones take their own.
            unsafe {
                Waker::from_raw(RawWaker::new(self.ptr.as_ptr() as *const (), &WAKER_VTABLE))
            },
        );
        let mut cx = Context::from_waker(&waker);
        // SAFETY: called on the owner thread, while the task is alive.
        unsafe { (self.header().vtable.poll)(self.ptr, &mut cx) }
    }

    /// Drops the future and records a cancellation, on the owner thread.
    pub(super) fn cancel(&self) {
        // SAFETY: owner thread, task alive, not yet complete (checked by the caller).
        unsafe { (self.header().vtable.cancel)(self.ptr) }
    }

    /// Marks the task complete and wakes its join handle, or drops the output if none is
    /// left. Owner thread, after `poll` returned true or after `cancel`.
    pub(super) fn complete(&self) {
        let h = self.header();
        if join_state::complete(&h.state, self.join_waker()) == Completed::DropOutput {
            // SAFETY: no join handle is left to read the output; the owner drops it here.
            unsafe { (h.vtable.drop_output)(self.ptr) }
        }
    }

    /// Moves the output into `dst`. Only for the join handle, after it saw `COMPLETE`.
    pub(super) unsafe fn read_output(&self, dst: *mut ()) {
        // SAFETY: forwarded from the caller.
        unsafe { (self.header().vtable.read_output)(self.ptr, dst) }
    }

    /// Drops the output. Only for the join handle, after it saw `COMPLETE`.
    pub(super) unsafe fn drop_output(&self) {
        // SAFETY: forwarded from the caller.
        unsafe { (self.header().vtable.drop_output)(self.ptr) }
    }

    /// The join waker's cell (see `join_state`).
    pub(super) fn join_waker(&self) -> &WakerCell {
        // The join waker follows the header at a fixed offset in every `TaskCell<F>`: it is
        // `repr(C)` and the field before it (`Header`) is the same type.
        let offset = std::mem::offset_of!(TaskCell<std::future::Ready<()>>, join_waker);
        // SAFETY: the allocation holds a `TaskCell<F>` whose `join_waker` is at `offset`, and
        // it lives as long as the reference `self` holds.
        unsafe {
            &*self
                .ptr
                .as_ptr()
                .cast::<u8>()
                .add(offset)
                .cast::<WakerCell>()
        }
    }
}

impl Drop for RawTask {
    fn drop(&mut self) {
        drop_ref(self.ptr);
    }
}

fn drop_ref(ptr: NonNull<Header>) {
    // SAFETY: the caller holds a reference, so the header is alive until we release it.
    let h = unsafe { ptr.as_ref() };
    if h.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
        // SAFETY: that was the last reference.
        unsafe { (h.vtable.dealloc)(ptr) }
    }
}

/// Releases a reference that is not the task's last: a plain decrement, with no check for
/// the deallocation that cannot be due.
///
/// # Safety
///
/// The caller gives up a reference it holds (and never uses it again), and another holder,
/// such as the scheduler's slab entry, outlives this call.
pub(super) unsafe fn release_ref_not_last(ptr: NonNull<Header>) {
    // SAFETY: the caller holds the reference it releases, so the header is alive.
    let h = unsafe { ptr.as_ref() };
    let prev = h.refs.fetch_sub(1, Ordering::Release);
    debug_assert!(prev > 1, "released the last reference of a live task");
}

unsafe fn poll<F: Future>(ptr: NonNull<Header>, cx: &mut Context<'_>) -> bool {
    let cell = ptr.cast::<TaskCell<F>>();
    // SAFETY: owner thread, not COMPLETE: the owner has exclusive access to the stage.
    let stage = unsafe { &mut *cell.as_ref().stage.get() };
    // SAFETY: as above, for the header.
    let h = unsafe { ptr.as_ref() };
    if h.state.load(Ordering::Acquire) & CANCELLED != 0 {
        // SAFETY: forwarded.
        unsafe { cancel::<F>(ptr) };
        return true;
    }
    let Stage::Running(fut) = stage else {
        return true;
    };
    // SAFETY: the future lives in a heap cell that never moves until it is dropped in place.
    let fut = unsafe { Pin::new_unchecked(fut) };
    let result = match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
        Ok(Poll::Pending) => return false,
        Ok(Poll::Ready(out)) => Ok(out),
        Err(panic) => Err(JoinError::panic(panic)),
    };
    set_finished(stage, result);
    true
}

/// Replaces the stage, dropping a still-running future in place under `catch_unwind`: not
/// moved out first, which would copy the whole future (hundreds of bytes for a connection's
/// task) to drop it.
fn set_finished<F: Future>(stage: &mut Stage<F>, result: Result<F::Output, JoinError>) {
    let Stage::Running(fut) = stage else {
        *stage = Stage::Finished(result);
        return;
    };
    let fut: *mut F = fut;
    // SAFETY: `fut` points at the running future in `stage`, which is dropped here once. A
    // drop that panics still counts as done (the drop glue unwinds through the remaining
    // fields), so the future is never touched again either way.
    let dropped = catch_unwind(AssertUnwindSafe(|| unsafe { std::ptr::drop_in_place(fut) }));
    // SAFETY: the future in `stage` was just dropped: overwritten without dropping it again.
    unsafe { std::ptr::write(stage, Stage::Finished(result)) };
    if let Err(panic) = dropped {
        // The future panicked while being dropped; report that instead.
        if let Stage::Finished(r) = stage {
            if r.as_ref().is_err_and(JoinError::is_cancelled) {
                *r = Err(JoinError::panic(panic));
            }
        }
    }
}

unsafe fn cancel<F: Future>(ptr: NonNull<Header>) {
    let cell = ptr.cast::<TaskCell<F>>();
    // SAFETY: owner thread, not COMPLETE: exclusive access to the stage.
    let stage = unsafe { &mut *cell.as_ref().stage.get() };
    if matches!(stage, Stage::Running(_)) {
        set_finished(stage, Err(JoinError::cancelled()));
    }
}

unsafe fn read_output<F: Future>(ptr: NonNull<Header>, dst: *mut ()) {
    let cell = ptr.cast::<TaskCell<F>>();
    // SAFETY: COMPLETE was observed with Acquire by the join handle, which now owns the stage.
    let stage = unsafe { &mut *cell.as_ref().stage.get() };
    let dst = dst.cast::<Poll<Result<F::Output, JoinError>>>();
    if let Stage::Finished(r) = std::mem::replace(stage, Stage::Consumed) {
        // SAFETY: the caller passes a valid, initialised `Poll<Result<T, JoinError>>`.
        unsafe { *dst = Poll::Ready(r) };
    }
}

unsafe fn drop_output<F: Future>(ptr: NonNull<Header>) {
    let cell = ptr.cast::<TaskCell<F>>();
    // SAFETY: the caller owns the stage (owner with no join handle, or the join handle after
    // COMPLETE).
    let stage = unsafe { &mut *cell.as_ref().stage.get() };
    if let Stage::Finished(_) = stage {
        let old = std::mem::replace(stage, Stage::Consumed);
        let _ = catch_unwind(AssertUnwindSafe(move || drop(old)));
    }
}

unsafe fn dealloc<F: Future>(ptr: NonNull<Header>) {
    let cell = ptr.cast::<TaskCell<F>>();
    // SAFETY: the last reference is gone, so nobody else can reach the cell.
    let mut cell = unsafe { Box::from_raw(cell.as_ptr()) };
    // Looked at in place: moving the stage out to look would copy the whole future.
    if let Stage::Running(_) = cell.stage.get_mut() {
        // Unreachable by the ownership rules (futures are dropped on the owner thread before
        // the last reference goes); if it ever happens, leaking beats dropping a `!Send`
        // future on the wrong thread.
        debug_assert!(false, "task freed with its future still alive");
        std::mem::forget(std::mem::replace(cell.stage.get_mut(), Stage::Consumed));
    }
}

// ---- wakers ----

/// Whether `w` is a waker made by this module (its data is then a task header).
pub(super) fn is_task_waker(w: &Waker) -> bool {
    std::ptr::eq(w.vtable(), &WAKER_VTABLE)
}

static WAKER_VTABLE: RawWakerVTable =
    RawWakerVTable::new(waker_clone, waker_wake, waker_wake_by_ref, waker_drop);

unsafe fn waker_clone(data: *const ()) -> RawWaker {
    // SAFETY: the waker holds (or borrows from a holder of) a reference: the task is alive.
    let h = unsafe { &*(data as *const Header) };
    h.refs.fetch_add(1, Ordering::Relaxed);
    RawWaker::new(data, &WAKER_VTABLE)
}

unsafe fn waker_wake(data: *const ()) {
    // SAFETY: the waker owns a reference, released after scheduling.
    unsafe { waker_wake_by_ref(data) };
    // SAFETY: non-null: wakers are only made from task pointers.
    drop_ref(unsafe { NonNull::new_unchecked(data as *mut Header) });
}

unsafe fn waker_wake_by_ref(data: *const ()) {
    // SAFETY: non-null task pointer, kept alive by the waker's reference.
    let ptr = unsafe { NonNull::new_unchecked(data as *mut Header) };
    super::schedule(ptr);
}

unsafe fn waker_drop(data: *const ()) {
    // SAFETY: non-null task pointer; the waker owns the reference it releases.
    drop_ref(unsafe { NonNull::new_unchecked(data as *mut Header) });
}
