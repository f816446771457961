//! Signals in child processes: the child awaits a signal, then sends it to its own process
//! from a plain thread (the kernel may deliver it to any thread); the future must resolve and
//! the child exit 0 instead of being killed by the default action.

use std::process::Command;
use std::time::Duration;

use ringloop::{signal, EventLoop};

const CHILD_ENV: &str = "RINGLOOP_TEST_SIGNAL_CHILD";

#[test]
fn signal_child() {
    let Ok(which) = std::env::var(CHILD_ENV) else {
        return;
    };
    let signo = match which.as_str() {
        "INT" => libc::SIGINT,
        "TERM" => libc::SIGTERM,
        "HUP" => libc::SIGHUP,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        other => panic!("no signal {other}"),
    };
    let mut lp = EventLoop::new().unwrap();
    lp.block_on(async move {
        let waiter = ringloop::spawn(async move {
            match signo {
                libc::SIGINT => signal::ctrl_c().await,
                libc::SIGTERM => signal::terminate().await,
                libc::SIGHUP => {
                    // A reload loop: every SIGHUP is seen, not only the first.
                    signal::hangup().await?;
                    println!("FIRST-HUP");
                    signal::hangup().await
                }
                libc::SIGUSR1 => signal::user_defined1().await,
                _ => signal::user_defined2().await,
            }
        });
        ringloop::yield_now().await; // let it register
        let times = if signo == libc::SIGHUP { 2 } else { 1 };
        std::thread::spawn(move || {
            for _ in 0..times {
                std::thread::sleep(Duration::from_millis(20));
                // SAFETY: kill with our own pid and a valid signal number.
                unsafe { libc::kill(libc::getpid(), signo) };
            }
        });
        waiter.await.unwrap().unwrap();
    });
    println!("SIGNAL-SEEN");
    std::process::exit(0);
}

fn run_child(which: &str) -> std::process::Output {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "signal_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, which)
        .output()
        .unwrap()
}

#[test]
fn ctrl_c_resolves_on_sigint_and_the_process_survives() {
    let out = run_child("INT");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "status {:?}: {stdout}", out.status);
    assert!(stdout.contains("SIGNAL-SEEN"), "{stdout}");
}

#[test]
fn terminate_resolves_on_sigterm_and_the_process_survives() {
    let out = run_child("TERM");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "status {:?}: {stdout}", out.status);
    assert!(stdout.contains("SIGNAL-SEEN"), "{stdout}");
}

#[test]
fn hangup_resolves_on_each_sighup_and_the_process_survives() {
    let out = run_child("HUP");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "status {:?}: {stdout}", out.status);
    assert!(stdout.contains("FIRST-HUP"), "{stdout}");
    assert!(stdout.contains("SIGNAL-SEEN"), "{stdout}");
}

#[test]
fn user_defined_signals_resolve_and_the_process_survives() {
    for which in ["USR1", "USR2"] {
        let out = run_child(which);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{which}: status {:?}: {stdout}",
            out.status
        );
        assert!(stdout.contains("SIGNAL-SEEN"), "{which}: {stdout}");
    }
}
