//! How a remote wake reaches a loop that may be going to sleep, without a system call when it
//! is awake: the handshake between the loop's park and a notifier on another thread.
//!
//! The loop stores `sleeping = true` then loads `pending`; a notifier stores `pending = true`
//! then swaps `sleeping` out. A `SeqCst` fence between the store and the load on each side
//! puts the two fences in one total order, so at least one side sees the other's store:
//! either the loop does not sleep, or the notifier rings the doorbell (Dekker's handshake).
//! Fences rather than `SeqCst` accesses: the guarantee is the same, and it is the form loom
//! can check (it models `SeqCst` accesses as `AcqRel`, which would allow both to miss), in
//! every interleaving: the models below, `--cfg loom`.

use std::sync::atomic::Ordering;

use crate::util::sync::{fence, AtomicBool};

pub(crate) struct Handshake {
    sleeping: AtomicBool,
    pending: AtomicBool,
}

impl Handshake {
    pub(crate) fn new() -> Handshake {
        Handshake {
            sleeping: AtomicBool::new(false),
            pending: AtomicBool::new(false),
        }
    }

    /// A notifier's side: records the notification; true if the loop is (about to be)
    /// asleep, and the caller must ring the doorbell.
    #[inline]
    pub(crate) fn notify(&self) -> bool {
        self.pending.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        self.sleeping.swap(false, Ordering::Relaxed)
    }

    /// The loop is about to sleep: false (and it stays awake) if a notification is already
    /// pending. After true, a notification from now on rings the doorbell.
    #[inline]
    pub(crate) fn prepare_park(&self) -> bool {
        self.sleeping.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if self.pending.load(Ordering::Relaxed) {
            self.sleeping.store(false, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// The loop is awake again. A plain store: nothing is ordered against it. A notifier
    /// that still reads `true` only rings the doorbell once more than needed, and the loop's
    /// next `prepare_park` is its side of the handshake again.
    #[inline]
    pub(crate) fn unparked(&self) {
        self.sleeping.store(false, Ordering::Release);
    }

    /// Consumes a pending notification.
    #[inline]
    pub(crate) fn take_pending(&self) -> bool {
        self.pending.load(Ordering::Relaxed) && self.pending.swap(false, Ordering::AcqRel)
    }
}

/// The models: `RUSTFLAGS="--cfg loom" cargo test --lib --release -- loom_` (as `.ci/run`
/// does). The doorbell (the loop's eventfd) is a counter the notifier adds to and a parked
/// loop waits on and drains, as a blocking `io_uring_enter` on its read does.
#[cfg(all(test, loom))]
mod tests {
    use super::Handshake;
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::sync::Arc;
    use loom::thread;

    struct Doorbell(AtomicUsize);

    impl Doorbell {
        fn ring(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }

        /// Blocks until rung, then drains it.
        fn wait(&self) {
            while self.0.swap(0, Ordering::SeqCst) == 0 {
                thread::yield_now();
            }
        }
    }

    fn notifier(hs: &Handshake, bell: &Doorbell) {
        if hs.notify() {
            bell.ring();
        }
    }

    /// The loop's turns until one takes a notification: take what is pending, else park
    /// until rung. A spurious ring (a notifier that saw the loop about to sleep when it did
    /// not) only costs a turn. Were a notification lost, the park would never end and loom
    /// reports the endless spin.
    fn wait_for_notification(hs: &Handshake, bell: &Doorbell) {
        loop {
            if hs.take_pending() {
                return;
            }
            if hs.prepare_park() {
                bell.wait();
                hs.unparked();
            }
        }
    }

    #[test]
    fn loom_a_notification_wakes_a_parking_loop() {
        loom::model(|| {
            let hs = Arc::new(Handshake::new());
            let bell = Arc::new(Doorbell(AtomicUsize::new(0)));
            let (h, b) = (hs.clone(), bell.clone());
            let t = thread::spawn(move || notifier(&h, &b));
            wait_for_notification(&hs, &bell);
            t.join().unwrap();
        });
    }

    #[test]
    fn loom_two_notifiers_wake_a_parking_loop() {
        loom::model(|| {
            let hs = Arc::new(Handshake::new());
            let bell = Arc::new(Doorbell(AtomicUsize::new(0)));
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let (h, b) = (hs.clone(), bell.clone());
                    thread::spawn(move || notifier(&h, &b))
                })
                .collect();
            wait_for_notification(&hs, &bell);
            for t in threads {
                t.join().unwrap();
            }
        });
    }

    #[test]
    fn loom_a_notification_after_a_wake_up_wakes_the_next_park() {
        loom::model(|| {
            let hs = Arc::new(Handshake::new());
            let bell = Arc::new(Doorbell(AtomicUsize::new(0)));
            // The second notification comes only once the loop has taken the first: the loop
            // has woken (`unparked` is a plain store), and may hold a spurious ring.
            for _ in 0..2 {
                let (h, b) = (hs.clone(), bell.clone());
                let t = thread::spawn(move || notifier(&h, &b));
                wait_for_notification(&hs, &bell);
                t.join().unwrap();
            }
        });
    }
}
