//! `JoinSet`: tasks on the current loop, taken in the order they finish.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ringloop::{time, EventLoop, JoinSet};

#[test]
fn outputs_come_in_the_order_tasks_finish_then_none() {
    EventLoop::new().unwrap().block_on(async {
        let mut set = JoinSet::new();
        for ms in [40u64, 0, 20, 10, 30] {
            set.spawn(async move {
                time::sleep(Duration::from_millis(ms)).await;
                ms
            });
        }
        assert_eq!(set.len(), 5);
        let mut order = Vec::new();
        while let Some(r) = set.join_next().await {
            order.push(r.unwrap());
        }
        assert_eq!(order, [0, 10, 20, 30, 40]);
        assert!(set.is_empty());
        assert!(
            set.join_next().await.is_none(),
            "an empty set says so at once"
        );
    });
}

#[test]
fn a_panicking_task_is_an_error_and_the_others_still_finish() {
    EventLoop::new().unwrap().block_on(async {
        let mut set = JoinSet::new();
        set.spawn(async { panic!("task 1 fails") });
        set.spawn(async {
            time::sleep(Duration::from_millis(5)).await;
            7
        });
        let first = set.join_next().await.unwrap().unwrap_err();
        assert!(first.is_panic(), "{first}");
        assert_eq!(set.join_next().await.unwrap().unwrap(), 7);
        assert!(set.join_next().await.is_none());
    });
}

#[test]
fn shutdown_aborts_every_task_and_waits_for_each() {
    EventLoop::new().unwrap().block_on(async {
        let ran = Rc::new(Cell::new(0));
        let mut set = JoinSet::new();
        for _ in 0..100 {
            let ran = ran.clone();
            set.spawn(async move {
                time::sleep(Duration::from_secs(60)).await;
                ran.set(ran.get() + 1);
            });
        }
        let start = Instant::now();
        set.shutdown().await;
        assert!(set.is_empty());
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(ran.get(), 0, "no aborted task ran to its end");
    });
}

#[test]
fn abort_all_ends_each_task_with_a_cancellation() {
    EventLoop::new().unwrap().block_on(async {
        let mut set = JoinSet::new();
        for _ in 0..10 {
            set.spawn(time::sleep(Duration::from_secs(60)));
        }
        set.abort_all();
        let mut cancelled = 0;
        while let Some(r) = set.join_next().await {
            assert!(r.unwrap_err().is_cancelled());
            cancelled += 1;
        }
        assert_eq!(cancelled, 10);
    });
}

#[test]
fn dropping_the_set_aborts_its_tasks() {
    let mut lp = EventLoop::new().unwrap();
    let finished = Rc::new(Cell::new(false));
    let f = finished.clone();
    lp.block_on(async move {
        let mut set = JoinSet::new();
        set.spawn(async move {
            time::sleep(Duration::from_millis(30)).await;
            f.set(true);
        });
        drop(set);
        time::sleep(Duration::from_millis(80)).await;
    });
    assert!(!finished.get(), "the dropped set's task ran on");
}

#[test]
fn a_join_next_dropped_in_a_timeout_loses_no_output() {
    EventLoop::new().unwrap().block_on(async {
        let mut set = JoinSet::new();
        for i in 0..20u32 {
            set.spawn(async move {
                time::sleep(Duration::from_millis(u64::from(i % 5) * 3)).await;
                i
            });
        }
        let mut got = Vec::new();
        while !set.is_empty() {
            if let Ok(Some(r)) = time::timeout(Duration::from_millis(1), set.join_next()).await {
                got.push(r.unwrap());
            }
        }
        got.sort_unstable();
        assert_eq!(got, (0..20).collect::<Vec<_>>());
    });
}

#[test]
fn ten_thousand_tasks_drain() {
    EventLoop::new().unwrap().block_on(async {
        let mut set = JoinSet::new();
        for i in 0..10_000u64 {
            set.spawn(async move {
                ringloop::yield_now().await;
                i
            });
        }
        let mut sum = 0;
        while let Some(r) = set.join_next().await {
            sum += r.unwrap();
        }
        assert_eq!(sum, (0..10_000u64).sum::<u64>());
    });
}

#[test]
fn try_join_next_takes_only_finished_tasks() {
    EventLoop::new().unwrap().block_on(async {
        let mut set = JoinSet::new();
        set.spawn(async { 1 });
        set.spawn(async {
            time::sleep(Duration::from_secs(60)).await;
            2
        });
        assert!(set.try_join_next().is_none(), "nothing ran yet");
        ringloop::yield_now().await;
        assert_eq!(set.try_join_next().unwrap().unwrap(), 1);
        assert!(
            set.try_join_next().is_none(),
            "the sleeper has not finished"
        );
        assert_eq!(set.len(), 1);
    });
}
