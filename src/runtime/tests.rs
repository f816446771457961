//! Unit tests of the loop.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{spawn, yield_now, EventLoop};
use crate::time::sleep;

#[test]
fn a_closed_connections_receive_state_is_reused_by_the_next() {
    use std::io::Write;
    let mut lp = EventLoop::new().expect("the default loop builds");
    let driver = lp.core.driver.clone();
    let spares = lp.block_on(async move {
        let l = crate::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            for i in 0..4u8 {
                let mut c = std::net::TcpStream::connect(addr).unwrap();
                c.write_all(&[i]).unwrap();
                // The server closes the odd ones itself, its receive still armed.
                if i % 2 == 0 {
                    drop(c);
                } else {
                    let mut b = [0u8; 1];
                    let _ = std::io::Read::read(&mut c, &mut b);
                }
            }
        });
        let mut spares = Vec::new();
        for i in 0..4 {
            let conn = l.accept_stream().await.unwrap();
            assert_eq!(&conn.recv().await.unwrap()[..], &[i as u8]);
            if i % 2 == 0 {
                // The peer's close: the multishot receive ends with its final CQE.
                assert!(conn.recv().await.unwrap().is_empty());
            }
            drop(conn);
            // Turns for the loop to submit a dropped receive's cancel and the close; the
            // state is kept for reuse at once, whichever way it was freed.
            for _ in 0..50 {
                yield_now().await;
            }
            spares.push(driver.spare_streams());
        }
        client.join().unwrap();
        spares
    });
    // One state, freed by either path (the final CQE taken, or the owner dropped), then
    // taken again by the next connection's receive: never a second one.
    assert_eq!(spares, [1, 1, 1, 1]);
}

#[test]
fn a_refused_timer_update_falls_back_to_per_wait_deadlines() {
    // On its own thread with a watchdog: without the fallback the earlier timer waits
    // for the 60 s one and the test would hang.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lp = EventLoop::new().expect("the default loop builds");
        let driver = lp.core.driver.clone();
        let waited = lp.block_on(async move {
            // Armed first: the kernel timer is set for 60 s from now.
            let far = spawn(sleep(Duration::from_secs(60)));
            yield_now().await;
            yield_now().await;
            // The update that would move it to the 30 ms timer is refused (`EINVAL`).
            driver.refuse_timer_updates();
            let t0 = Instant::now();
            sleep(Duration::from_millis(30)).await;
            far.abort();
            t0.elapsed()
        });
        let _ = tx.send((waited, lp.core.driver.waits_need_deadline()));
    });
    let (waited, per_wait) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the 30 ms timer did not fire within 10 s");
    assert!(
        per_wait,
        "the refused update did not switch to per-wait deadlines"
    );
    assert!(
        waited >= Duration::from_millis(30),
        "fired early: {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "fired late: {waited:?}");
}
