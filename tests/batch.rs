//! `Builder::batch_wait`: waits that gather completions in bunches, never past a deadline.

use std::time::{Duration, Instant};

use ringloop::net::{TcpListener, TcpStream};
use ringloop::{spawn, time, EventLoop, JoinHandle};

/// `n` connections through `l` whose receives stay in flight, so the batch target's cap (a
/// quarter of the ops in flight) allows waits for several completions.
async fn idle_receives(l: &TcpListener, n: usize) -> Vec<JoinHandle<()>> {
    let addr = l.local_addr().unwrap();
    let mut idle = Vec::new();
    for _ in 0..n {
        let c = TcpStream::connect(addr).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        idle.push(spawn(async move {
            let _keep = c;
            let _ = s.recv().await;
        }));
    }
    idle
}

/// A burst: 32 NOPs that complete at once, so the wait that takes them in brings more than
/// twice the target, and two in a row double it.
async fn burst() {
    let nops: Vec<_> = (0..32).map(|_| spawn(ringloop::__private::nop())).collect();
    for n in nops {
        n.await.unwrap().unwrap();
    }
}

fn batching_loop(wait: Duration) -> Option<EventLoop> {
    let lp = EventLoop::builder().batch_wait(Some(wait)).build().unwrap();
    if lp.features().batch_wait().is_none() {
        eprintln!("this kernel cannot bound a wait (needs 6.12+): nothing to test");
        return None;
    }
    assert_eq!(lp.features().batch_wait(), Some(wait));
    Some(lp)
}

#[test]
fn off_by_default() {
    assert_eq!(EventLoop::new().unwrap().features().batch_wait(), None);
    let lp = EventLoop::builder()
        .batch_wait(Some(Duration::ZERO))
        .build()
        .unwrap();
    assert_eq!(lp.features().batch_wait(), None);
}

/// A lone completion on a quiet loop is not held back by a long batch wait, and a timer
/// still fires at its deadline.
#[test]
fn quiet_loop_is_not_delayed() {
    let Some(mut lp) = batching_loop(Duration::from_millis(500)) else {
        return;
    };
    lp.block_on(async {
        for _ in 0..5 {
            let t = Instant::now();
            time::sleep(Duration::from_millis(10)).await;
            let took = t.elapsed();
            assert!(
                took < Duration::from_millis(250),
                "a 10 ms sleep took {took:?}"
            );
        }
    });
}

/// Once bursts of completions have grown the batch target past one, a wait carries the
/// min-wait; it must still end at the next timer's deadline. (The kernel starts a wait's
/// overall timeout only after its min-wait, so an unclamped 500 ms min-wait delayed a 10 ms
/// sleep to 500 ms.)
#[test]
fn batch_wait_never_passes_a_timer() {
    let Some(mut lp) = batching_loop(Duration::from_millis(500)) else {
        return;
    };
    lp.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let idle = idle_receives(&l, 32).await;
        for _ in 0..4 {
            time::sleep(Duration::from_millis(10)).await;
            let t = Instant::now();
            burst().await;
            time::sleep(Duration::from_millis(10)).await;
            let took = t.elapsed();
            assert!(
                took < Duration::from_millis(250),
                "a 10 ms sleep after a burst took {took:?}"
            );
        }
        drop(idle);
    });
}

/// Many connections echoing at once (the case batching is for): every byte comes back, and
/// nothing waits anywhere near the bound for long.
#[test]
fn busy_echo_loses_nothing() {
    const CONNS: usize = 32;
    const ROUNDS: usize = 200;
    let Some(mut lp) = batching_loop(Duration::from_millis(2)) else {
        return;
    };
    let t = Instant::now();
    lp.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        spawn(async move {
            loop {
                let (c, _) = l.accept().await.unwrap();
                spawn(async move {
                    loop {
                        let b = c.recv().await.unwrap();
                        if b.is_empty() {
                            return;
                        }
                        c.write_all(b).await.0.unwrap();
                    }
                });
            }
        });
        let mut clients = Vec::new();
        for i in 0..CONNS {
            clients.push(spawn(async move {
                let s = TcpStream::connect(addr).await.unwrap();
                for r in 0..ROUNDS {
                    let msg = format!("{i}:{r}");
                    let (res, _) = s.write_all(msg.clone().into_bytes()).await;
                    res.unwrap();
                    let mut got = Vec::new();
                    while got.len() < msg.len() {
                        let b = s.recv().await.unwrap();
                        assert!(!b.is_empty(), "early EOF");
                        got.extend_from_slice(&b);
                    }
                    assert_eq!(got, msg.as_bytes());
                }
            }));
        }
        for c in clients {
            c.await.unwrap();
        }
    });
    // 6400 round trips; even one 2 ms wait per round trip would take 12.8 s.
    let took = t.elapsed();
    assert!(took < Duration::from_secs(8), "took {took:?}");
}

/// A batch wait with no timer due waits for its first completion however long that takes:
/// the loop does not wake empty each time the min-wait runs out. (The kernel ends a min-wait
/// that has no overall timeout at the min-wait, completions or none; without one given, a
/// loop waiting for I/O woke every min-wait, which cost a third more CPU per request at
/// 64 connections × 4 KiB.)
#[test]
fn batch_wait_without_a_timer_does_not_wake_empty() {
    let Some(mut lp) = batching_loop(Duration::from_millis(1)) else {
        return;
    };
    // Receives in flight and bursts that grow the target past one, as in
    // `batch_wait_never_passes_a_timer`.
    let (idle, server, client) = lp.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let idle = idle_receives(&l, 32).await;
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().await.unwrap();
        for _ in 0..4 {
            burst().await;
        }
        (idle, server, client)
    });
    // The test means something only if the bursts did grow the target.
    let target = lp.stats().batch_target.unwrap();
    assert!(target > 1, "four bursts left the batch target at {target}");
    let before = lp.stats().empty_waits;
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        std::io::Write::write_all(&mut &client, b"late").unwrap();
        client
    });
    let got = lp.block_on(async { server.recv().await.unwrap() });
    assert_eq!(&got[..], b"late");
    let empty = lp.stats().empty_waits - before;
    assert_eq!(
        empty, 0,
        "the loop woke {empty} time(s) with nothing to do while waiting 200 ms for data"
    );
    drop(writer.join().unwrap());
    drop(idle);
}

/// Connections served one after another, each dropped before the next is taken: the wait
/// for a connection also reaps the last one's close, whose CQE is none of the completions
/// the batch target counts. Counted, a close and a connection in each wait looked like
/// bunches twice the target, and the target grew: a lone connection then waited out the
/// min-wait.
#[test]
fn closes_do_not_grow_the_batch_target() {
    const CONNS: usize = 20;
    let Some(mut lp) = batching_loop(Duration::from_millis(5)) else {
        return;
    };
    let (l, idle) = lp.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let idle = idle_receives(&l, 32).await;
        (l, idle)
    });
    let addr = l.local_addr().unwrap();
    let client = std::thread::spawn(move || {
        use std::io::{Read, Write};
        for _ in 0..CONNS {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.write_all(b"ping").unwrap();
            let mut b = [0u8; 4];
            c.read_exact(&mut b).unwrap();
        }
    });
    let mut targets = Vec::new();
    for _ in 0..CONNS {
        lp.block_on(async {
            let (s, _) = l.accept().await.unwrap();
            let got = s.recv().await.unwrap();
            s.write_all(got).await.0.unwrap();
        });
        targets.push(lp.stats().batch_target.unwrap());
    }
    client.join().unwrap();
    drop(idle);
    assert!(
        targets.iter().all(|&t| t == 1),
        "one connection at a time, yet the target went {targets:?}"
    );
}

/// Replies tried at submit (small queued writes) complete while the wait that submits them
/// runs: the loop's own echo, not completions that arrived. A loop that sends sixteen of
/// them each turn and then sleeps on a timer takes in one arrival per wait (the timer); the
/// target must stay at one. Counted in, sixteen tries and a timer looked like bunches twice
/// the target, the target grew, and waits then ran out their min-wait short of it (at an
/// open loop of 100,000 requests a second, the median latency rose from 30 to 490 µs).
#[test]
fn tried_sends_do_not_grow_the_batch_target() {
    const CONNS: usize = 16;
    const ROUNDS: usize = 20;
    let Some(mut lp) = batching_loop(Duration::from_millis(5)) else {
        return;
    };
    let (idle, pairs) = lp.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let idle = idle_receives(&l, 32).await;
        let addr = l.local_addr().unwrap();
        let mut pairs = Vec::new();
        for _ in 0..CONNS {
            let peer = std::net::TcpStream::connect(addr).unwrap();
            let (s, _) = l.accept().await.unwrap();
            pairs.push((s, peer));
        }
        (idle, pairs)
    });
    let mut targets = Vec::new();
    for _ in 0..ROUNDS {
        lp.block_on(async {
            for (s, _) in &pairs {
                s.write_queued(b"reply".to_vec()).await.unwrap();
            }
            time::sleep(Duration::from_millis(1)).await;
        });
        targets.push(lp.stats().batch_target.unwrap());
    }
    lp.block_on(async {
        for (s, _) in &pairs {
            s.flush().await.unwrap();
        }
    });
    drop(idle);
    assert!(
        targets.iter().all(|&t| t == 1),
        "one timer per wait, yet the target went {targets:?}"
    );
}
