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
    let signo = if which == "INT" {
        libc::SIGINT
    } else {
        libc::SIGTERM
    };
    let mut lp = EventLoop::new().unwrap();
    lp.block_on(async move {
        let waiter = ringloop::spawn(async move {
            if signo == libc::SIGINT {
                signal::ctrl_c().await
            } else {
                signal::terminate().await
            }
        });
        ringloop::yield_now().await; // let it register
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            // SAFETY: kill with our own pid and a valid signal number.
            unsafe { libc::kill(libc::getpid(), signo) };
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
