//! Timers through the public API: the loop serves them with one kernel timeout kept armed at
//! the earliest deadline, moved earlier when an earlier timer comes, and falls back to giving
//! every wait the next deadline.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringloop::{spawn, time, yield_now, EventLoop, SetupMode};

/// Makes the builder of a loop to test.
type MakeLoop = fn() -> ringloop::Builder;

/// Runs `f` on a loop built by `builder` on its own thread; fails if it takes over 10 s (a
/// timer that never fires would otherwise hang the test). `None` if this kernel cannot build
/// that loop (a set-up mode it lacks).
fn within_10s<T: Send + 'static>(
    builder: MakeLoop,
    f: impl FnOnce(&mut EventLoop) -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let out = builder().build().ok().map(|mut lp| f(&mut lp));
        let _ = tx.send(out);
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the loop did not finish within 10 s: a timer did not fire")
}

#[test]
fn an_earlier_timer_fires_on_time_while_a_later_one_holds_the_kernel_timer() {
    let waited = within_10s(EventLoop::builder, |lp| {
        lp.block_on(async {
            // Armed first: the kernel timer is set for 60 s from now.
            let far = spawn(time::sleep(Duration::from_secs(60)));
            yield_now().await;
            yield_now().await;
            let t0 = Instant::now();
            time::sleep(Duration::from_millis(30)).await;
            far.abort();
            t0.elapsed()
        })
    })
    .expect("the default loop builds");
    assert!(
        waited >= Duration::from_millis(30),
        "fired early: {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "fired late: {waited:?}");
}

#[test]
fn timers_fire_in_a_loop_that_never_waits() {
    // A task that only yields keeps the loop busy: it never blocks in the kernel, yet the
    // timeout must end it.
    let r = within_10s(EventLoop::builder, |lp| {
        lp.block_on(time::timeout(Duration::from_millis(30), async {
            loop {
                yield_now().await;
            }
        }))
    })
    .expect("the default loop builds");
    assert!(r.is_err());
}

#[test]
fn timers_fire_in_order_and_never_early_with_the_kernel_timer_and_without() {
    // The kernel timer in each ring set-up (each posts completions its own way), and the
    // fallback that gives each wait the next deadline.
    let setups: [(&str, MakeLoop); 4] = [
        ("kernel timer, default set-up", || EventLoop::builder()),
        ("kernel timer, COOP_TASKRUN", || {
            EventLoop::builder().setup_mode(SetupMode::CoopTaskrun)
        }),
        ("kernel timer, basic set-up", || {
            EventLoop::builder().setup_mode(SetupMode::Basic)
        }),
        ("no kernel timer", || {
            EventLoop::builder().kernel_timer(false)
        }),
    ];
    for (setup, builder) in setups {
        let fired = within_10s(builder, |lp| {
            lp.block_on(async {
                let t0 = Instant::now();
                // Spawned latest first, so each new one moves the kernel timer earlier.
                let hs: Vec<_> = [80u64, 40, 10, 60, 20]
                    .into_iter()
                    .map(|ms| {
                        spawn(async move {
                            time::sleep(Duration::from_millis(ms)).await;
                            (ms, t0.elapsed())
                        })
                    })
                    .collect();
                let mut out = Vec::new();
                for h in hs {
                    out.push(h.await.unwrap());
                }
                out
            })
        });
        let Some(fired) = fired else {
            eprintln!("{setup}: this kernel cannot build that loop; skipped");
            continue;
        };
        for (ms, at) in fired {
            assert!(
                at >= Duration::from_millis(ms),
                "{setup}: the {ms} ms sleep fired at {at:?}"
            );
            assert!(
                at < Duration::from_millis(ms) + Duration::from_secs(2),
                "{setup}: the {ms} ms sleep fired at {at:?}"
            );
        }
    }
}
