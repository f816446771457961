//! Out of descriptors: a server in a child process with a low RLIMIT_NOFILE, whose accept
//! loop retries at once on error (as a naive server does), must not spin while saturated,
//! and must serve again once descriptors free up.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use ringloop::net::TcpListener;
use ringloop::{spawn, EventLoop};

const CHILD_ENV: &str = "RINGLOOP_TEST_EMFILE_CHILD";

#[test]
fn emfile_server_child() {
    if std::env::var(CHILD_ENV).is_err() {
        return;
    }
    let lim = libc::rlimit {
        rlim_cur: 64,
        rlim_max: 64,
    };
    // SAFETY: a valid rlimit for the duration of the call.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    let mut lp = EventLoop::new().unwrap();
    lp.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        println!("PORT:{}", l.local_addr().unwrap().port());
        loop {
            match l.accept().await {
                Ok((c, _)) => {
                    spawn(async move {
                        let mut buf = Vec::with_capacity(64);
                        loop {
                            let (r, b) = c.read(buf).await;
                            match r {
                                Ok(0) | Err(_) => return,
                                Ok(_) => {}
                            }
                            let (r, b) = c.write_all(b).await;
                            if r.is_err() {
                                return;
                            }
                            buf = b;
                        }
                    });
                }
                Err(_) => continue, // retry at once: the loop must not spin on EMFILE
            }
        }
    });
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the full line: 11 and 12 after the name.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn emfile_does_not_spin_and_the_server_recovers() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "emfile_server_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let port = loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "child exited early");
        if let Some(p) = line.split_once("PORT:").map(|(_, p)| p.trim().to_owned()) {
            break p.parse::<u16>().unwrap();
        }
    };
    let addr = format!("127.0.0.1:{port}");
    // Saturate: more connections than the child has descriptors.
    let conns: Vec<std::net::TcpStream> = (0..120)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let ticks_per_sec = 100; // USER_HZ on Linux
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - before;
    let percent = used * 100 / (2 * ticks_per_sec);
    // Free the descriptors: the server's tasks see EOF and close their ends.
    drop(conns);
    std::thread::sleep(Duration::from_millis(300));
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"again").unwrap();
    let mut buf = [0u8; 5];
    let echoed = c.read_exact(&mut buf).map(|_| buf);
    let _ = child.kill();
    let _ = child.wait();
    assert!(percent <= 5, "saturated accept loop used {percent}% CPU");
    assert_eq!(echoed.unwrap(), *b"again", "the server serves again");
}
