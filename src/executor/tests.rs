//! Unit tests of the executor.

use super::*;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;

fn sched() -> Scheduler {
    Scheduler::new(Arc::new(Remote::new(u64::MAX - 7, EventFd::new().unwrap())))
}

#[test]
fn spawned_task_runs_and_joins() {
    let s = sched();
    let _g = s.enter();
    let mut jh = s.spawn(async { 40 + 2 });
    assert_eq!(s.run(16), 1);
    assert!(jh.is_finished());
    let w = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(w);
    assert!(matches!(
        std::pin::Pin::new(&mut jh).poll(&mut cx),
        Poll::Ready(Ok(42))
    ));
}

#[test]
fn tasks_run_in_the_order_they_were_woken() {
    let s = sched();
    let _g = s.enter();
    let log = Rc::new(RefCell::new(Vec::new()));
    let wakers: Rc<RefCell<Vec<Option<Waker>>>> = Rc::new(RefCell::new(vec![None; 4]));
    let _jhs: Vec<_> = (0..4)
        .map(|i| {
            let (log, wakers) = (log.clone(), wakers.clone());
            let mut polls = 0;
            s.spawn(poll_fn(move |cx| {
                log.borrow_mut().push(i);
                polls += 1;
                if polls == 2 {
                    return Poll::Ready(());
                }
                wakers.borrow_mut()[i] = Some(cx.waker().clone());
                Poll::Pending
            }))
        })
        .collect();
    assert_eq!(s.run(100), 4);
    // Wake them in another order, one twice (a queued task is not queued again).
    for i in [2, 0, 3, 2, 1] {
        if let Some(w) = wakers.borrow()[i].as_ref() {
            w.wake_by_ref();
        }
    }
    wakers.borrow_mut().clear();
    assert_eq!(s.run(100), 4);
    assert_eq!(*log.borrow(), [0, 1, 2, 3, 2, 0, 3, 1]);
    assert!(!s.has_ready());
    assert_eq!(s.live_tasks(), 0);
}

#[test]
fn self_wake_requeues_once() {
    let s = sched();
    let _g = s.enter();
    let polls = Rc::new(Cell::new(0));
    let p = polls.clone();
    let _jh = s.spawn(poll_fn(move |cx| {
        p.set(p.get() + 1);
        cx.waker().wake_by_ref();
        cx.waker().wake_by_ref();
        if p.get() == 3 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }));
    s.run(100);
    assert_eq!(polls.get(), 3);
    assert!(!s.has_ready());
    assert_eq!(s.live_tasks(), 0);
}

#[test]
fn shutdown_drops_futures_and_cancels() {
    struct Flag(Rc<Cell<bool>>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    let s = sched();
    let _g = s.enter();
    let dropped = Rc::new(Cell::new(false));
    let f = Flag(dropped.clone());
    let jh = s.spawn(async move {
        let _f = f;
        std::future::pending::<()>().await
    });
    s.run(16);
    s.shutdown();
    assert!(dropped.get());
    assert!(jh.is_finished());
}

#[test]
fn a_future_that_panics_while_dropped_is_dropped_once_and_reports_the_panic() {
    struct Counted(Rc<Cell<u32>>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }
    struct PanicsOnDrop;
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("dropped");
        }
    }
    let s = sched();
    let _g = s.enter();
    let drops = Rc::new(Cell::new(0));
    let (c, p) = (Counted(drops.clone()), PanicsOnDrop);
    let mut jh = s.spawn(async move {
        let _p = p;
        let _c = c;
        std::future::pending::<()>().await
    });
    s.run(16);
    jh.abort();
    s.run(16);
    // The panic stopped neither the rest of the future's drop nor the task's completion,
    // and nothing was dropped twice.
    assert_eq!(drops.get(), 1);
    assert!(jh.is_finished());
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::Pin::new(&mut jh).poll(&mut cx) {
        Poll::Ready(Err(e)) => assert!(e.is_panic(), "{e:?}"),
        other => panic!(
            "expected the drop's panic, got {:?}",
            other.map(|r| r.is_ok())
        ),
    }
    assert_eq!(s.live_tasks(), 0);
}

/// A join handle polled on another thread while its task completes: the handle reads the
/// join waker's cell to compare wakers while the owner wakes through it. Miri's race
/// detector checks that nothing writes the cell meanwhile (run by `.ci/run` under Miri).
#[test]
fn a_join_handle_polled_on_another_thread_as_its_task_completes() {
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;
    let s = sched();
    let _g = s.enter();
    let go = Arc::new(AtomicBool::new(false));
    let parked: Arc<Mutex<Option<Waker>>> = Arc::default();
    let (g, w) = (go.clone(), parked.clone());
    let mut jh = s.spawn(poll_fn(move |cx| {
        if g.load(Ordering::Acquire) {
            return Poll::Ready(7u32);
        }
        *w.lock().unwrap() = Some(cx.waker().clone());
        Poll::Pending
    }));
    s.run(16);
    let joiner = std::thread::spawn(move || {
        // A fresh waker each poll would take the cell back; the same one only compares.
        let waker = Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        loop {
            if let Poll::Ready(r) = std::pin::Pin::new(&mut jh).poll(&mut cx) {
                return r.unwrap();
            }
            std::thread::yield_now();
        }
    });
    go.store(true, Ordering::Release);
    let waker = parked.lock().unwrap().take().expect("the task waits");
    waker.wake();
    while s.live_tasks() != 0 {
        s.run(16);
        std::thread::yield_now();
    }
    assert_eq!(joiner.join().unwrap(), 7);
}
