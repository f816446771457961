//! Talks to the echo demo: N connections, each sending a message and checking the echo, in a
//! closed loop for a few seconds; prints round trips per second.
//!
//! ```sh
//! cargo run --release --example echo_client -- --addr 127.0.0.1:7878 --connections 64 --size 64 --seconds 5
//! ```

use std::cell::Cell;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ringloop::net::TcpStream;
use ringloop::{spawn, EventLoop};

fn main() -> ExitCode {
    let mut addr = "127.0.0.1:7878".to_owned();
    let (mut conns, mut size, mut secs) = (64usize, 64usize, 5u64);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let v = it.next();
        let ok = match (a.as_str(), v) {
            ("--addr", Some(v)) => {
                addr = v;
                true
            }
            ("--connections", Some(v)) => v.parse().map(|n| conns = n).is_ok(),
            ("--size", Some(v)) => v.parse().map(|n| size = n).is_ok(),
            ("--seconds", Some(v)) => v.parse().map(|n| secs = n).is_ok(),
            _ => false,
        };
        if !ok || conns == 0 || size == 0 {
            eprintln!("usage: echo_client [--addr HOST:PORT] [--connections N] [--size BYTES] [--seconds S]");
            return ExitCode::from(2);
        }
    }
    let mut lp = match EventLoop::new() {
        Ok(lp) => lp,
        Err(e) => {
            eprintln!("echo_client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = lp.block_on(async move {
        let done = Rc::new(Cell::new(0u64));
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for i in 0..conns {
            let stream = TcpStream::connect(addr.as_str()).await?;
            stream.set_nodelay(true)?;
            let done = done.clone();
            tasks.push(spawn(async move {
                let msg: Vec<u8> = (0..size).map(|k| (k + i) as u8).collect();
                let mut out = msg.clone();
                let mut back = Vec::with_capacity(size);
                while Instant::now() < deadline {
                    let (r, o) = stream.write_all(out).await;
                    out = o;
                    r?;
                    back.clear();
                    while back.len() < size {
                        let chunk = stream.recv().await?;
                        if chunk.is_empty() {
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                "the server closed the connection",
                            ));
                        }
                        back.extend_from_slice(&chunk);
                    }
                    if back != msg {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "echo differs",
                        ));
                    }
                    done.set(done.get() + 1);
                }
                Ok(())
            }));
        }
        let t0 = Instant::now();
        for t in tasks {
            t.await.map_err(std::io::Error::other)??;
        }
        Ok::<_, std::io::Error>((done.get(), t0.elapsed()))
    });
    match result {
        Ok((n, took)) => {
            println!(
                "echo_client: {n} round trips verified in {:.1} s: {:.0} round trips/s ({conns} connections x {size} B)",
                took.as_secs_f64(),
                n as f64 / took.as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("echo_client: {e}");
            ExitCode::FAILURE
        }
    }
}
