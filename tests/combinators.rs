//! The ecosystem's runtime-agnostic combinators and channels run on ringloop as they are: the
//! `futures` crate's `select!`, `join!` and `FuturesUnordered`, tokio's `sync` channels, within
//! one loop and across loops on different threads.

use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use ringloop::net::{TcpListener, TcpStream};
use ringloop::{spawn, time, EventLoop};

#[test]
fn futures_select_between_a_receive_and_a_timer_loses_no_byte() {
    EventLoop::new().unwrap().block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let writer = spawn(async move {
            let c = TcpStream::connect(addr).await.unwrap();
            for i in 0..20u8 {
                time::sleep(Duration::from_millis(3)).await;
                let (r, _) = c.write_all(vec![i; 100]).await;
                r.unwrap();
            }
        });
        let (s, _) = l.accept().await.unwrap();
        let mut got = Vec::new();
        let mut timeouts = 0;
        while got.len() < 2000 {
            futures::select! {
                b = s.recv().fuse() => got.extend_from_slice(&b.unwrap()),
                () = time::sleep(Duration::from_millis(1)).fuse() => timeouts += 1,
            }
        }
        assert!(timeouts > 0, "no receive was dropped by the select");
        let want: Vec<u8> = (0..20u8).flat_map(|i| [i; 100]).collect();
        assert!(got == want, "bytes lost or moved across dropped receives");
        writer.await.unwrap();
    });
}

#[test]
fn futures_join_runs_both_at_once() {
    EventLoop::new().unwrap().block_on(async {
        let start = Instant::now();
        let (a, b) = futures::join!(
            async {
                time::sleep(Duration::from_millis(50)).await;
                1
            },
            async {
                time::sleep(Duration::from_millis(50)).await;
                2
            }
        );
        assert_eq!((a, b), (1, 2));
        assert!(
            start.elapsed() < Duration::from_millis(95),
            "not concurrent"
        );
    });
}

#[test]
fn futures_unordered_takes_results_as_they_come() {
    EventLoop::new().unwrap().block_on(async {
        let mut pending: FuturesUnordered<_> = [30u64, 10, 20]
            .into_iter()
            .map(|ms| async move {
                time::sleep(Duration::from_millis(ms)).await;
                ms
            })
            .collect();
        let mut order = Vec::new();
        while let Some(ms) = pending.next().await {
            order.push(ms);
        }
        assert_eq!(order, [10, 20, 30]);
    });
}

#[test]
fn tokio_channels_work_within_a_loop_and_across_loops() {
    // Within one loop: an mpsc between two tasks.
    EventLoop::new().unwrap().block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u32>(4);
        spawn(async move {
            for i in 0..100 {
                tx.send(i).await.unwrap();
            }
        });
        let mut sum = 0;
        while let Some(i) = rx.recv().await {
            sum += i;
        }
        assert_eq!(sum, (0..100).sum());
    });
    // Across loops on two threads: the receiver's loop is woken from the other thread.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<&'static str>();
    let other = std::thread::spawn(move || {
        EventLoop::new().unwrap().block_on(async move {
            for i in 0..1000 {
                tx.send(i).unwrap();
                if i % 100 == 0 {
                    time::sleep(Duration::from_millis(1)).await;
                }
            }
            done_tx.send("sent all").unwrap();
        });
    });
    EventLoop::new().unwrap().block_on(async move {
        let mut n = 0;
        while rx.recv().await.is_some() {
            n += 1;
        }
        assert_eq!(n, 1000);
        assert_eq!(done_rx.await.unwrap(), "sent all");
    });
    other.join().unwrap();
}
