//! The lifecycle rules of API.md, one test each, through the public API.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringloop::{spawn, time, yield_now, EventLoop, Handle};

#[test]
fn block_on_returns_the_future_output() {
    let mut lp = EventLoop::new().unwrap();
    assert_eq!(lp.block_on(async { 7 }), 7);
    lp.close().unwrap();
}

#[test]
#[should_panic(expected = "already running one")]
fn block_on_inside_a_running_loop_panics_saying_so() {
    let mut outer = EventLoop::new().unwrap();
    outer.block_on(async {
        let mut inner = EventLoop::new().unwrap();
        inner.block_on(async {});
    });
}

#[test]
fn run_forever_inside_a_task_panics_and_the_task_reports_it() {
    let mut lp = EventLoop::new().unwrap();
    let jh = lp.spawn(async {
        let mut inner = EventLoop::new().unwrap();
        let _ = inner.run_forever();
    });
    let err = lp.block_on(jh).unwrap_err();
    assert!(err.is_panic());
    assert!(err.to_string().contains("already running one"), "{err}");
}

#[test]
fn two_loops_on_two_threads_are_fine() {
    let t = std::thread::spawn(|| {
        let mut lp = EventLoop::new().unwrap();
        lp.block_on(async { time::sleep(Duration::from_millis(5)).await });
        1
    });
    let mut lp = EventLoop::new().unwrap();
    lp.block_on(async { time::sleep(Duration::from_millis(5)).await });
    assert_eq!(t.join().unwrap(), 1);
}

#[test]
fn several_loops_on_one_thread_may_exist_and_run_in_turn() {
    let mut a = EventLoop::new().unwrap();
    let mut b = EventLoop::new().unwrap();
    assert_eq!(a.block_on(async { 1 }), 1);
    assert_eq!(b.block_on(async { 2 }), 2);
    assert_eq!(a.block_on(async { 3 }), 3);
}

/// Closing a loop gives its ring's registration back to the thread: a thread registers at
/// most 16 rings, so without that every loop past the 16th on a thread would lose it (and the
/// kernel would keep the closed rings alive until the thread exits).
#[test]
fn closed_loops_give_their_ring_registration_back() {
    if !EventLoop::new().unwrap().features().ring_registered() {
        return; // before Linux 5.18: nothing is registered
    }
    for i in 0..40 {
        let mut lp = EventLoop::new().unwrap();
        assert!(
            lp.features().ring_registered(),
            "loop {i} on this thread entered by descriptor"
        );
        assert_eq!(lp.block_on(async { 7 }), 7);
        lp.close().unwrap();
    }
}

#[test]
fn panicking_task_yields_is_panic_and_others_keep_running() {
    let mut lp = EventLoop::new().unwrap();
    let bad = lp.spawn(async {
        panic!("boom");
    });
    let good = lp.spawn(async {
        yield_now().await;
        5
    });
    let (bad, good) = lp.block_on(async { (bad.await, good.await) });
    let e = bad.unwrap_err();
    assert!(e.is_panic());
    assert!(e.to_string().contains("boom"), "{e}");
    let payload = e.into_panic();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
    assert_eq!(good.unwrap(), 5);
}

#[test]
#[should_panic(expected = "main future failed")]
fn panic_in_block_on_future_propagates() {
    let mut lp = EventLoop::new().unwrap();
    lp.block_on(async { panic!("main future failed") });
}

#[test]
fn run_forever_with_nothing_to_stop_it_returns_an_error() {
    let mut lp = EventLoop::new().unwrap();
    let e = lp.run_forever().unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::Deadlock);
    assert!(e.to_string().contains("Handle"), "{e}");
}

#[test]
fn run_forever_errors_once_the_last_task_ends_without_stopping() {
    let mut lp = EventLoop::new().unwrap();
    lp.spawn(async { time::sleep(Duration::from_millis(5)).await });
    let e = lp.run_forever().unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::Deadlock);
}

#[test]
fn stop_from_a_task_ends_run_forever() {
    let mut lp = EventLoop::new().unwrap();
    lp.spawn(async {
        time::sleep(Duration::from_millis(5)).await;
        Handle::current().stop();
    });
    lp.run_forever().unwrap();
}

#[test]
fn stop_from_another_thread_ends_run_forever() {
    let mut lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        h.stop();
    });
    lp.run_forever().unwrap();
    t.join().unwrap();
}

#[test]
fn stop_before_run_forever_makes_it_return_at_once() {
    let mut lp = EventLoop::new().unwrap();
    let h = lp.handle();
    h.stop();
    h.stop(); // idempotent
    assert!(h.is_stopped());
    lp.run_forever().unwrap();
    assert!(!h.is_stopped(), "run_forever clears the stop request");
}

#[test]
fn loop_runs_again_after_run_forever_returned() {
    let mut lp = EventLoop::new().unwrap();
    let h = lp.handle();
    for _ in 0..3 {
        let h2 = h.clone();
        lp.spawn(async move {
            yield_now().await;
            h2.stop();
        });
        lp.run_forever().unwrap();
    }
    assert_eq!(lp.block_on(async { 9 }), 9);
}

#[test]
fn stopping_resolves_once_stop_is_called() {
    let mut lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let stopping = h.stopping();
    let h2 = h.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        h2.stop();
    });
    lp.block_on(stopping);
    t.join().unwrap();
    assert!(
        h.is_stopped(),
        "stop() does not end block_on; the flag stays set"
    );
}

#[test]
fn handle_current_inside_and_try_current_outside() {
    assert!(Handle::try_current().is_none());
    let mut lp = EventLoop::new().unwrap();
    assert!(lp.block_on(async { Handle::try_current().is_some() }));
}

#[test]
#[should_panic(expected = "outside a running event loop")]
fn handle_current_outside_a_loop_panics_saying_so() {
    let _ = Handle::current();
}

#[test]
fn handle_spawn_from_another_thread_runs_on_the_loop() {
    let mut lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let loop_thread = std::thread::current().id();
    let t = std::thread::spawn(move || {
        let jh = h.spawn(async move { std::thread::current().id() });
        let h2 = h.clone();
        h.spawn(async move {
            let ran_on = jh.await.unwrap();
            h2.stop();
            ran_on
        })
    });
    let jh = t.join().unwrap();
    lp.run_forever().unwrap();
    assert_eq!(lp.block_on(jh).unwrap(), loop_thread);
}

#[test]
fn spawn_free_function_uses_the_current_loop() {
    let mut lp = EventLoop::new().unwrap();
    let v = lp.block_on(async {
        let a = spawn(async { 20 });
        let b = spawn(async { 22 });
        a.await.unwrap() + b.await.unwrap()
    });
    assert_eq!(v, 42);
}

#[test]
fn abort_cancels_a_task_and_the_join_handle_says_so() {
    let mut lp = EventLoop::new().unwrap();
    let jh = lp.spawn(async {
        time::sleep(Duration::from_secs(60)).await;
    });
    let e = lp.block_on(async move {
        yield_now().await;
        jh.abort();
        jh.await.unwrap_err()
    });
    assert!(e.is_cancelled());
    assert_eq!(lp.stats().timers, 0, "the aborted task's timer was removed");
}

#[test]
fn dropping_a_join_handle_detaches_the_task() {
    let mut lp = EventLoop::new().unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    drop(lp.spawn(async move {
        yield_now().await;
        n2.fetch_add(1, Ordering::SeqCst);
    }));
    lp.block_on(async {
        for _ in 0..5 {
            yield_now().await;
        }
    });
    assert_eq!(n.load(Ordering::SeqCst), 1);
}

#[test]
fn close_drops_tasks_and_their_join_handles_see_cancellation() {
    let lp = EventLoop::new().unwrap();
    let jh = lp.spawn(std::future::pending::<()>());
    lp.close().unwrap();
    assert!(jh.is_finished());
    let mut other = EventLoop::new().unwrap();
    assert!(other.block_on(jh).unwrap_err().is_cancelled());
}

#[test]
fn handle_spawn_after_close_is_cancelled_at_once() {
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    lp.close().unwrap();
    let jh = h.spawn(async { 1 });
    assert!(jh.is_finished());
}

#[test]
fn sleep_waits_at_least_its_duration() {
    let mut lp = EventLoop::new().unwrap();
    let t0 = Instant::now();
    lp.block_on(time::sleep(Duration::from_millis(30)));
    assert!(t0.elapsed() >= Duration::from_millis(30));
}

#[test]
fn timeout_elapses_and_passes_through() {
    let mut lp = EventLoop::new().unwrap();
    let r = lp.block_on(time::timeout(
        Duration::from_millis(10),
        std::future::pending::<()>(),
    ));
    assert!(r.is_err());
    let r = lp.block_on(time::timeout(Duration::from_secs(10), async { 3 }));
    assert_eq!(r, Ok(3));
    assert_eq!(lp.stats().timers, 0);
}

#[test]
fn interval_first_tick_is_immediate_then_periodic() {
    let mut lp = EventLoop::new().unwrap();
    lp.block_on(async {
        // A period long enough that "at once" and "after a period" cannot be confused on a
        // busy machine: a first tick that waited would take 200 ms, not under 100.
        let mut iv = time::interval(Duration::from_millis(200));
        let t0 = Instant::now();
        let first = iv.tick().await;
        assert!(
            t0.elapsed() < Duration::from_millis(100),
            "{:?}",
            t0.elapsed()
        );
        let second = iv.tick().await;
        assert_eq!(second - first, Duration::from_millis(200));
        assert!(Instant::now() >= second);
    });
}

#[test]
fn sleep_created_outside_belongs_to_the_loop_that_polls_it() {
    let s = time::sleep(Duration::from_millis(2));
    let mut lp = EventLoop::new().unwrap();
    lp.block_on(s);
}

#[test]
fn builder_rejects_bad_settings_with_invalid_input() {
    let e = EventLoop::builder()
        .recv_buffers(1000, 4096)
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("power of two"), "{e}");
    let e = EventLoop::builder().entries(0).build().unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    let e = EventLoop::builder().entries(40000).build().unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn features_report_the_setup() {
    let lp = EventLoop::builder().entries(64).build().unwrap();
    let f = lp.features();
    assert_eq!(f.sq_entries(), 64);
    assert!(f.cq_entries() > f.sq_entries());
    assert!(!f.kernel_release().is_empty());
}

/// The default rings stay small enough for a loop per core under a shared
/// `RLIMIT_MEMLOCK` (see `Builder::entries`): growing them is a decision, not a drift.
#[test]
fn default_rings_are_512_submissions_and_2048_completions() {
    let lp = EventLoop::new().unwrap();
    assert_eq!(lp.features().sq_entries(), 512);
    assert_eq!(lp.features().cq_entries(), 2048);
}
