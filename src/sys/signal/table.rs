//! The table the signal handler works from: the eventfds of waiting futures, and how many
//! times each signal was delivered. A value, so that loom can check its protocol on tables
//! of its own; the process has one, in a static (see `super`).
//!
//! The protocol, all in `SeqCst`, with a `SeqCst` fence between each side's stores and its
//! loads (the store-buffer pattern: each side stores, then must see the other's store). The
//! fences add nothing the C11 model needs, but loom models `SeqCst` accesses as
//! acquire/release (tokio-rs/loom#180) and checks fences exactly, as `executor::handshake`
//! explains:
//! - The handler counts itself in (`in_handler`), bumps the signal's generation, writes to
//!   every eventfd it finds in a slot, and counts itself out.
//! - A waiter takes a free slot for its eventfd, then compares the generation with the one it
//!   saw when it began to watch: a delivery it missed shows there, and any later delivery
//!   writes its eventfd.
//! - A waiter that leaves clears its slot, then waits until no handler runs before its
//!   eventfd may close: a handler that read the slot before it was cleared counted itself in
//!   first, so the closer sees it.

use std::os::fd::RawFd;

use crate::util::sync::{fence, yield_now, AtomicI32, AtomicU64, AtomicUsize};

use std::sync::atomic::Ordering::SeqCst;

/// How many kinds of signal the table counts (see `super::Kind`).
pub(crate) const KINDS: usize = 5;

/// Eventfd slots for `N` waiters, and a generation per kind of signal.
pub(crate) struct Table<const N: usize> {
    /// Eventfds of waiting futures; -1 = free.
    waiters: [AtomicI32; N],
    /// Handlers running now (closers wait for zero).
    in_handler: AtomicUsize,
    /// Per kind: times delivered.
    generation: [AtomicU64; KINDS],
}

impl<const N: usize> Table<N> {
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Table<N> {
        Table {
            waiters: [const { AtomicI32::new(-1) }; N],
            in_handler: AtomicUsize::new(0),
            generation: [const { AtomicU64::new(0) }; KINDS],
        }
    }

    /// loom's atomics are made at run time, inside a model (the models are its only users).
    #[cfg(loom)]
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn new() -> Table<N> {
        Table {
            waiters: std::array::from_fn(|_| AtomicI32::new(-1)),
            in_handler: AtomicUsize::new(0),
            generation: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// A delivery of signal `kind` (`None`: one the table does not count): bumps its
    /// generation, then calls `write` with each registered eventfd. Async-signal-safe as long
    /// as `write` is. Returns the generation before the bump.
    pub(crate) fn deliver(&self, kind: Option<usize>, mut write: impl FnMut(RawFd)) -> u64 {
        self.in_handler.fetch_add(1, SeqCst);
        let before = match kind {
            Some(k) => self.generation[k].fetch_add(1, SeqCst),
            None => 0,
        };
        // Counted in and bumped, before any slot is read (see the module docs).
        fence(SeqCst);
        for slot in &self.waiters {
            let fd = slot.load(SeqCst);
            if fd >= 0 {
                // `fd` stays open until this handler counts itself out (see `unregister`).
                write(fd);
            }
        }
        self.in_handler.fetch_sub(1, SeqCst);
        before
    }

    /// Takes a free slot for `fd`; `None` if every slot is taken. The caller compares the
    /// generation after this.
    pub(crate) fn register(&self, fd: RawFd) -> Option<usize> {
        let slot = self
            .waiters
            .iter()
            .position(|w| w.compare_exchange(-1, fd, SeqCst, SeqCst).is_ok());
        // Registered, before the caller reads a generation (see the module docs).
        fence(SeqCst);
        slot
    }

    /// Frees `slot`, and returns once no handler can still write to its eventfd: the
    /// eventfd may close then.
    pub(crate) fn unregister(&self, slot: usize) {
        self.waiters[slot].store(-1, SeqCst);
        // Cleared, before the handlers are counted (see the module docs).
        fence(SeqCst);
        while self.in_handler.load(SeqCst) != 0 {
            yield_now();
        }
    }

    /// How many times `kind` was delivered.
    pub(crate) fn generation(&self, kind: usize) -> u64 {
        self.generation[kind].load(SeqCst)
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    use super::Table;
    use loom::cell::UnsafeCell;
    use loom::sync::atomic::AtomicBool;
    use loom::sync::Arc;
    use std::sync::atomic::Ordering::SeqCst;

    const FD: i32 = 7;

    /// A handler writing while the waiter leaves never writes an eventfd that was closed:
    /// the write reads the cell, the close writes it, and loom reports the two racing.
    #[test]
    fn loom_signal_handler_never_writes_a_closed_eventfd() {
        loom::model(|| {
            let table = Arc::new(Table::<2>::new());
            let open = Arc::new(UnsafeCell::new(true));
            let slot = table.register(FD).expect("a free slot");
            let handler = {
                let (table, open) = (table.clone(), open.clone());
                loom::thread::spawn(move || {
                    table.deliver(Some(0), |fd| {
                        assert_eq!(fd, FD);
                        open.with(|p| {
                            // SAFETY: loom checks this read against the close's write.
                            assert!(unsafe { *p }, "a handler wrote a closed eventfd");
                        });
                    });
                })
            };
            table.unregister(slot);
            // SAFETY: the protocol says no handler reads it any more; loom checks that.
            open.with_mut(|p| unsafe { *p = false });
            handler.join().expect("the handler");
        });
    }

    /// A waiter that begins to watch, registers and compares the generation either sees a
    /// delivery that came after it began, or has its eventfd written.
    #[test]
    fn loom_signal_no_delivery_after_watching_is_lost() {
        loom::model(|| {
            let table = Arc::new(Table::<2>::new());
            let wrote = Arc::new(AtomicBool::new(false));
            let handler = {
                let (table, wrote) = (table.clone(), wrote.clone());
                loom::thread::spawn(move || {
                    table.deliver(Some(0), |fd| {
                        assert_eq!(fd, FD);
                        wrote.store(true, SeqCst);
                    })
                })
            };
            // As `signal::wait`: the generation when watching began, then the registration,
            // then the comparison.
            let seen = table.generation(0);
            let slot = table.register(FD).expect("a free slot");
            let noticed = table.generation(0) != seen;
            let before = handler.join().expect("the handler");
            let after_watching = before >= seen;
            assert!(
                !after_watching || noticed || wrote.load(SeqCst),
                "a delivery after the watch began was neither seen nor written"
            );
            table.unregister(slot);
        });
    }

    /// Two waiters registering at once take different slots, and a handler writes both.
    #[test]
    fn loom_signal_concurrent_registrations_take_distinct_slots() {
        loom::model(|| {
            let table = Arc::new(Table::<2>::new());
            let other = {
                let table = table.clone();
                loom::thread::spawn(move || table.register(8))
            };
            let mine = table.register(FD);
            let theirs = other.join().expect("the other waiter");
            let (mine, theirs) = (mine.expect("a slot"), theirs.expect("a slot"));
            assert_ne!(mine, theirs);
            let mut written = Vec::new();
            table.deliver(Some(0), |fd| written.push(fd));
            written.sort_unstable();
            assert_eq!(written, [FD, 8]);
        });
    }
}
