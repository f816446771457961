//! `Builder::spin_before_sleep`: a loop with nothing to run watches its rings before it
//! sleeps. Whatever completes must end the spin at once, and a spin that runs out must end
//! in a sleep, not in more spinning. The spins here are long (10 s), so a completion the spin
//! missed shows as a test that takes seconds and fails its bound, not as a slower pass.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

mod common;

use common::thread_cpu;
use ringloop::net::TcpListener;
use ringloop::{time, EventLoop, SetupMode};

const LONG_SPIN: Duration = Duration::from_secs(10);

/// What ends a 10 s spin must do so well within this.
const PROMPT: Duration = Duration::from_secs(3);

/// Runs `test` on a loop spinning for `spin` in each set-up mode this kernel has: the
/// deferring ones, where the spin watches the SQ ring's flag, and the basic one, where
/// completions are posted at once and the spin watches the CQ ring. Each loop is closed
/// after, which must succeed.
fn on_spinning_loops(spin: Duration, mut test: impl FnMut(SetupMode, &mut EventLoop)) {
    for mode in [
        SetupMode::DeferTaskrun,
        SetupMode::CoopTaskrun,
        SetupMode::Basic,
    ] {
        let built = EventLoop::builder()
            .setup_mode(mode)
            .spin_before_sleep(Some(spin))
            .build();
        match built {
            Ok(mut lp) => {
                test(mode, &mut lp);
                lp.close().unwrap();
            }
            Err(e) => eprintln!("{mode:?} not available here ({e}): not tested"),
        }
    }
}

#[test]
fn a_timer_ends_the_spin() {
    on_spinning_loops(LONG_SPIN, |mode, lp| {
        let t0 = Instant::now();
        lp.block_on(time::sleep(Duration::from_millis(20)));
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(20),
            "{mode:?}: woke early, {took:?}"
        );
        assert!(
            took < PROMPT,
            "{mode:?}: the spin outlasted the timer: {took:?}"
        );
    });
}

/// Where waits carry the next deadline themselves (the loop's fallback when the kernel
/// refuses its timer), the spin is bounded by that deadline too: no completion comes to end
/// it.
#[test]
fn a_deadline_the_wait_carries_bounds_the_spin() {
    let mut lp = EventLoop::builder()
        .kernel_timer(false)
        .spin_before_sleep(Some(LONG_SPIN))
        .build()
        .unwrap();
    let t0 = Instant::now();
    lp.block_on(time::sleep(Duration::from_millis(20)));
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(20), "woke early, {took:?}");
    assert!(took < PROMPT, "the spin outlasted the deadline: {took:?}");
    lp.close().unwrap();
}

#[test]
fn a_stop_from_another_thread_ends_the_spin() {
    on_spinning_loops(LONG_SPIN, |mode, lp| {
        let handle = lp.handle();
        let t0 = Instant::now();
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            handle.stop();
        });
        lp.run_forever().unwrap();
        let took = t0.elapsed();
        stopper.join().unwrap();
        assert!(
            took < PROMPT,
            "{mode:?}: the spin outlasted the stop: {took:?}"
        );
    });
}

#[test]
fn an_accept_and_a_receive_end_the_spin() {
    on_spinning_loops(LONG_SPIN, |mode, lp| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // Both the accept and the receive complete while the loop spins.
        let peer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            c.write_all(b"ping").unwrap();
            c
        });
        let took = lp.block_on(async move {
            let t0 = Instant::now();
            let (s, _) = l.accept().await.unwrap();
            let got = s.recv().await.unwrap();
            assert_eq!(&got[..], b"ping");
            t0.elapsed()
        });
        drop(peer.join().unwrap());
        assert!(
            took < PROMPT,
            "{mode:?}: the spin outlasted the receive: {took:?}"
        );
    });
}

/// Request and reply, many times over: each reply is tried as it is submitted, so its
/// completion is reaped by the spin's own submit, and the spin must hand it to the loop.
#[test]
fn echo_is_intact_while_spinning() {
    const ROUNDS: usize = 300;
    on_spinning_loops(Duration::from_micros(50), |mode, lp| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.set_nodelay(true).unwrap();
            for i in 0..ROUNDS {
                let msg = format!("request {i:04}");
                c.write_all(msg.as_bytes()).unwrap();
                let mut back = vec![0; msg.len()];
                c.read_exact(&mut back).unwrap();
                assert_eq!(back, msg.as_bytes(), "round {i}");
            }
        });
        let echoed = lp.block_on(async move {
            let (s, _) = l.accept().await.unwrap();
            let mut bytes = 0;
            loop {
                let buf = s.recv().await.unwrap();
                if buf.is_empty() {
                    return bytes;
                }
                bytes += buf.len();
                s.write_queued(buf).await.unwrap();
            }
        });
        client.join().unwrap();
        assert_eq!(echoed, ROUNDS * "request 0000".len(), "{mode:?}");
    });
}

/// A spin that runs out sleeps: over a 300 ms timer with a 1 ms spin the thread uses a
/// sliver of its CPU, where a spin that never gave up would use all 300 ms.
#[test]
fn the_loop_sleeps_once_the_spin_runs_out() {
    on_spinning_loops(Duration::from_millis(1), |mode, lp| {
        let cpu0 = thread_cpu();
        lp.block_on(time::sleep(Duration::from_millis(300)));
        let used = thread_cpu() - cpu0;
        assert!(
            used < Duration::from_millis(150),
            "{mode:?}: {used:?} of CPU over a 300 ms sleep"
        );
    });
}

#[test]
fn spinning_and_batch_waits_are_refused_together() {
    let built = EventLoop::builder()
        .spin_before_sleep(Some(Duration::from_micros(20)))
        .batch_wait(Some(Duration::from_micros(100)))
        .build();
    let Err(e) = built else {
        panic!("built a loop that both spins and batches its waits");
    };
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    let text = e.to_string();
    assert!(
        text.contains("spin_before_sleep") && text.contains("batch_wait"),
        "{text}"
    );
}

#[test]
fn a_zero_spin_is_no_spin() {
    // Accepted with a batch wait, as no spin at all is.
    EventLoop::builder()
        .spin_before_sleep(Some(Duration::ZERO))
        .batch_wait(Some(Duration::from_micros(100)))
        .build()
        .unwrap();
}
