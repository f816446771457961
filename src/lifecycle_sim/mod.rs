//! The op lifecycle's properties, checked on the simulated kernel (`sys::sim`, built with
//! `--cfg ringloop_sim`): random programs of tasks that submit ops, drop their futures
//! mid-op, cancel them, time them out, abort tasks, receive on streams and drop them, stop
//! the loop and close it, run against random completion orders.
//!
//! The simulated kernel checks its own rules at every step (memory released while the kernel
//! may touch it, `user_data` reused, buffer ids given back twice, a wait that would hang).
//! Each program checks what its tasks see: a read's bytes are its own descriptor's, a
//! stream's chunks come in order with nothing lost, no error but those the kernel sent. After
//! `close`: nothing left in the kernel, every task and every buffer freed.
//!
//! `RINGLOOP_SIM_CASES` sets how many seeds run (2,000 by default, 40 under Miri) and
//! `RINGLOOP_SIM_SEED` the first one: a failure prints its seed, and that seed alone
//! replays it.

mod actions;
mod sim_buf;
#[cfg(feature = "tokio-io")]
mod traits;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::sys::sim::{self, SimConfig, SimStats};
use actions::{listener_action, nop_action, read_action, short_time, stream_action};
use sim_buf::{live_bufs, live_tasks, Alive};

fn random(below: u64) -> u64 {
    sim::random(below)
}

/// A task's script: a few random actions, maybe with children of its own.
fn script(depth: u32) -> Pin<Box<dyn Future<Output = ()>>> {
    Box::pin(async move {
        let _alive = Alive::new();
        for _ in 0..1 + random(6) {
            match random(9) {
                0 | 1 => read_action().await,
                2 => nop_action().await,
                3 | 4 => stream_action().await,
                8 => listener_action().await,
                5 => crate::time::sleep(short_time()).await,
                6 => crate::yield_now().await,
                _ if depth < 2 => {
                    let child = crate::spawn(script(depth + 1));
                    match random(3) {
                        0 => {
                            crate::yield_now().await;
                            child.abort();
                        }
                        1 => {
                            let _ = child.await;
                        }
                        _ => drop(child),
                    }
                }
                _ => {}
            }
        }
    })
}

/// The whole program of one case, run to its end or stopped.
async fn program() {
    let tasks: Vec<_> = (0..1 + random(5))
        .map(|_| crate::spawn(script(0)))
        .collect();
    match random(4) {
        // Everything finishes; then every pool buffer must come back.
        0 | 1 => {
            for t in tasks {
                let _ = t.await;
            }
            settle().await;
        }
        // Tasks are aborted mid-way.
        2 => {
            crate::time::sleep(short_time()).await;
            for t in tasks {
                t.abort();
            }
        }
        // The loop closes with the tasks still running.
        _ => crate::time::sleep(short_time()).await,
    }
}

/// Waits until every task but this one has ended and the kernel has given every pool buffer
/// back, which it must within a bounded number of turns.
async fn settle() {
    let driver = crate::driver::current().expect("on the loop");
    for _ in 0..20_000 {
        let tasks_done = live_tasks() == 0;
        let pool_full = driver.pool().is_none_or(|p| p.available() == p.count());
        if tasks_done && pool_full {
            return;
        }
        crate::time::sleep(Duration::from_micros(20)).await;
    }
    let pool = driver.pool().map(|p| (p.available(), p.count()));
    panic!(
        "after every task ended, {} task(s) still live and pool buffers (free, total) {pool:?}",
        live_tasks()
    );
}

/// Descriptors this process has open (natively; Miri has no `/proc`).
fn open_fds() -> Option<usize> {
    if cfg!(miri) {
        return None;
    }
    std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count())
}

fn case(seed: u64) -> SimStats {
    let fds_before = open_fds();
    let sizes = [2u32, 4, 8, 64];
    // 5.15: no buffer ring (receives into heap buffers), single-shot accepts; 5.19:
    // single-shot receives from the ring, multishot accepts; 6.8: multishot receives.
    let release = ["5.15.0-sim", "5.19.0-sim", "6.8.0-sim", "6.8.0-sim"][(seed % 4) as usize];
    let mut r = sim_rng(seed);
    let sq = sizes[(r() % 4) as usize];
    let cq = sizes[(r() % 4) as usize].max(sq);
    sim::configure(SimConfig {
        seed,
        release,
        sq_entries: sq,
        cq_entries: cq,
    });
    let buffers = [2u16, 4, 16][(r() % 3) as usize];
    let zc = [None, Some(64)][(r() % 2) as usize];
    // Queued writes tried at submit (`MSG_DONTWAIT`), with the room watcher's epoll; the
    // streams' descriptors are real eventfds, which epoll can watch. Natively only: Miri has
    // no `poll(2)`.
    let tries = !cfg!(miri) && r() % 2 == 0;
    let mut lp = crate::EventLoop::builder()
        .entries(sq)
        .send_zerocopy_threshold(zc)
        .recv_buffers(buffers, 16 + (r() % 64) as usize)
        .trial_sends(tries)
        .close_timeout(Duration::from_secs(20))
        .build()
        .expect("a simulated loop");
    if r() % 4 == 0 {
        // Run until a task stops the loop, from a task or from another thread.
        let handle = lp.handle();
        lp.spawn(program());
        let stopper = handle.clone();
        if r() % 2 == 0 {
            lp.spawn(async move {
                crate::time::sleep(short_time()).await;
                stopper.stop();
            });
            lp.run_forever().expect("run_forever");
        } else {
            let t = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_micros(300));
                stopper.stop();
            });
            lp.run_forever().expect("run_forever");
            t.join().expect("the stopping thread");
        }
    } else {
        lp.block_on(program());
    }
    lp.close()
        .expect("close ends within its timeout, nothing abandoned");
    let stats = sim::stats();
    assert_eq!(sim::in_flight(), 0, "ops left in the kernel after close");
    assert_eq!(live_tasks(), 0, "tasks alive after close");
    assert_eq!(live_bufs(), 0, "op buffers alive after close");
    assert_eq!(open_fds(), fds_before, "descriptors left open after close");
    sim_buf::bury();
    stats
}

/// The case's own choices (ring sizes), apart from the kernel's generator.
fn sim_rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

#[test]
fn sim_op_lifecycle_holds_in_random_completion_orders() {
    let cases = env_u64("RINGLOOP_SIM_CASES", if cfg!(miri) { 40 } else { 2_000 });
    let first = env_u64("RINGLOOP_SIM_SEED", 1);
    let mut total = SimStats::default();
    for seed in first..first + cases {
        let stats = match std::panic::catch_unwind(|| case(seed)) {
            Ok(s) => s,
            Err(p) => {
                eprintln!(
                    "simulated case failed: seed {seed} (replay: RINGLOOP_SIM_SEED={seed} \
                     RINGLOOP_SIM_CASES=1)"
                );
                std::panic::resume_unwind(p);
            }
        };
        total.add(&stats);
    }
    eprintln!("{cases} simulated cases: {total:?}");
    // The interesting orders were reached, or the simulation is not testing much.
    if cases >= 500 {
        assert!(total.cancels > 0 && total.cancel_races > 0 && total.cancels_late > 0);
        assert!(total.enobufs > 0 && total.overflows > 0 && total.more > 0);
    }
}
