//! `spawn_blocking`: blocking work off the loop's thread, its result back as a task's output.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringloop::{spawn_blocking, time, EventLoop, JoinSet};

#[test]
fn the_result_comes_back_to_the_calling_loop() {
    let v = EventLoop::new()
        .unwrap()
        .block_on(async { spawn_blocking(|| (1..=1000u64).sum::<u64>()).await.unwrap() });
    assert_eq!(v, 500_500);
}

#[test]
fn blocking_work_does_not_stall_the_loops_timers() {
    EventLoop::new().unwrap().block_on(async {
        let job = spawn_blocking(|| std::thread::sleep(Duration::from_millis(300)));
        // Ten 10 ms ticks while the job sleeps: the loop's thread is free.
        let start = Instant::now();
        let mut interval = time::interval(Duration::from_millis(10));
        for _ in 0..10 {
            interval.tick().await;
        }
        let ticked = start.elapsed();
        assert!(
            ticked < Duration::from_millis(250),
            "ten ticks took {ticked:?}: the job blocked the loop"
        );
        assert!(!job.is_finished());
        job.await.unwrap();
    });
}

#[test]
fn a_panicking_job_is_the_tasks_panic() {
    EventLoop::new().unwrap().block_on(async {
        let err = spawn_blocking(|| -> () { panic!("the job fails") })
            .await
            .unwrap_err();
        assert!(err.is_panic(), "{err}");
        assert!(err.to_string().contains("the job fails"), "{err}");
    });
}

#[test]
fn more_jobs_than_threads_all_finish() {
    EventLoop::new().unwrap().block_on(async {
        let done = Arc::new(AtomicUsize::new(0));
        let mut set = JoinSet::new();
        for _ in 0..300 {
            let done = done.clone();
            let job = spawn_blocking(move || {
                std::thread::sleep(Duration::from_millis(2));
                done.fetch_add(1, Ordering::Relaxed)
            });
            set.spawn(job);
        }
        while let Some(r) = set.join_next().await {
            r.unwrap().unwrap();
        }
        assert_eq!(done.load(Ordering::Relaxed), 300);
    });
}

#[test]
fn closing_the_loop_does_not_wait_for_a_running_job_which_still_runs_to_its_end() {
    let finished = Arc::new(AtomicBool::new(false));
    let f = finished.clone();
    let mut lp = EventLoop::new().unwrap();
    // The handle is carried out of the block_on in a tuple: clippy would take a bare
    // awaitable as a forgotten `.await`.
    let (handle,) = lp.block_on(async move {
        let h = spawn_blocking(move || {
            std::thread::sleep(Duration::from_millis(300));
            f.store(true, Ordering::SeqCst);
        });
        time::sleep(Duration::from_millis(20)).await; // the job is running
        (h,)
    });
    let start = Instant::now();
    lp.close().unwrap();
    assert!(
        start.elapsed() < Duration::from_millis(200),
        "close waited for the job"
    );
    let mut lp2 = EventLoop::new().unwrap();
    let out = lp2.block_on(handle);
    assert!(
        out.unwrap_err().is_cancelled(),
        "the task was cancelled by the close"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !finished.load(Ordering::SeqCst) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(finished.load(Ordering::SeqCst), "the job ran to its end");
}
