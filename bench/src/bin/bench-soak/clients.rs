//! The soak's clients: each class a few tokio tasks on one thread, looping until the
//! deadline, each checking every byte echoed back (see the binary's doc).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use ringloop_bench::pattern;

/// What one class of clients did.
#[derive(Default, Debug, Clone)]
pub(crate) struct Class {
    /// Exchanges completed and checked.
    pub(crate) requests: u64,
    /// Bytes echoed back and checked.
    pub(crate) bytes: u64,
    /// Connection ends the class causes or expects (resets sent, idle timeouts met).
    pub(crate) injected: u64,
    /// Anything else that went wrong, counted; the first few kept as text.
    pub(crate) errors: u64,
    pub(crate) first_errors: Vec<String>,
}

pub(crate) type Counts = BTreeMap<&'static str, Class>;

#[derive(Clone)]
struct Shared {
    addr: SocketAddr,
    deadline: Instant,
    counts: Rc<RefCell<Counts>>,
    next_conn: Rc<std::cell::Cell<usize>>,
    seed: Rc<std::cell::Cell<u64>>,
}

impl Shared {
    fn live(&self) -> bool {
        Instant::now() < self.deadline
    }

    fn with(&self, class: &'static str, f: impl FnOnce(&mut Class)) {
        f(self.counts.borrow_mut().entry(class).or_default());
    }

    fn ok(&self, class: &'static str, bytes: usize) {
        self.with(class, |c| {
            c.requests += 1;
            c.bytes += bytes as u64;
        });
    }

    fn error(&self, class: &'static str, what: impl std::fmt::Display) {
        self.with(class, |c| {
            c.errors += 1;
            if c.first_errors.len() < 5 {
                c.first_errors.push(what.to_string());
            }
        });
    }

    /// A number in `0..n`, from a small xorshift shared by the tasks.
    fn rand(&self, n: u64) -> u64 {
        let mut x = self.seed.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed.set(x);
        x % n.max(1)
    }

    fn conn_id(&self) -> usize {
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        id
    }

    async fn connect(&self) -> io::Result<(TcpStream, usize)> {
        let s = TcpStream::connect(self.addr).await?;
        s.set_nodelay(true)?;
        Ok((s, self.conn_id()))
    }
}

fn message(conn: usize, offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| pattern(conn, offset + i)).collect()
}

fn check(conn: usize, offset: u64, got: &[u8]) -> Result<(), String> {
    match got
        .iter()
        .enumerate()
        .find(|(i, b)| **b != pattern(conn, offset + *i as u64))
    {
        None => Ok(()),
        Some((i, b)) => Err(format!(
            "connection {conn}: byte {} echoed as {b}, sent {}",
            offset + i as u64,
            pattern(conn, offset + i as u64)
        )),
    }
}

/// Whether `e` is the server closing the connection (end of stream, reset, broken pipe).
fn closed_by_peer(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

/// Closes with an RST, as `bench-load --churn` does: thousands of connections a second
/// must not leave as many `TIME_WAIT` sockets behind.
fn reset(s: TcpStream) {
    let _ = s.set_zero_linger();
    drop(s);
}

async fn echo(sh: Shared) {
    while sh.live() {
        let Ok((mut s, id)) = sh.connect().await.map_err(|e| sh.error("echo", e)) else {
            continue;
        };
        let mut off = 0u64;
        for _ in 0..200 {
            if !sh.live() {
                break;
            }
            let len = 1 + sh.rand(64 * 1024) as usize;
            let msg = message(id, off, len);
            let mut got = vec![0; len];
            let r = async {
                s.write_all(&msg).await?;
                s.read_exact(&mut got).await
            };
            if let Err(e) = r.await {
                sh.error("echo", e);
                break;
            }
            if let Err(e) = check(id, off, &got) {
                sh.error("echo", e);
                break;
            }
            off += len as u64;
            sh.ok("echo", len);
        }
        reset(s);
    }
}

async fn slow_reader(sh: Shared) {
    const TOTAL: usize = 1 << 20;
    while sh.live() {
        let Ok((s, id)) = sh.connect().await.map_err(|e| sh.error("slow reader", e)) else {
            continue;
        };
        let (mut rd, mut wr) = s.into_split();
        let writer = tokio::task::spawn_local(async move {
            for k in 0..TOTAL / 16384 {
                let off = (k * 16384) as u64;
                wr.write_all(&message(id, off, 16384)).await?;
            }
            Ok::<_, io::Error>(wr)
        });
        let mut got = 0usize;
        let mut buf = vec![0; 4096];
        let mut failed = false;
        while got < TOTAL {
            match rd.read(&mut buf).await {
                Ok(0) => {
                    sh.error(
                        "slow reader",
                        format!("connection {id}: end of stream at {got}"),
                    );
                    failed = true;
                    break;
                }
                Ok(n) => {
                    if let Err(e) = check(id, got as u64, &buf[..n]) {
                        sh.error("slow reader", e);
                        failed = true;
                        break;
                    }
                    got += n;
                }
                Err(e) => {
                    sh.error("slow reader", e);
                    failed = true;
                    break;
                }
            }
            if got % (64 * 1024) < 4096 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        match writer.await {
            Ok(Ok(wr)) if !failed => {
                sh.ok("slow reader", got);
                reset(rd.reunite(wr).expect("the two halves of one stream"));
            }
            Ok(Err(e)) if !failed => sh.error("slow reader", e),
            _ => {}
        }
    }
}

async fn resetter(sh: Shared) {
    while sh.live() {
        let Ok((mut s, id)) = sh.connect().await.map_err(|e| sh.error("reset", e)) else {
            continue;
        };
        let r = async {
            s.write_all(&message(id, 0, 32 * 1024)).await?;
            let mut got = vec![0; 8 * 1024];
            s.read_exact(&mut got).await?;
            Ok::<_, io::Error>(got)
        };
        match r.await {
            Ok(got) => match check(id, 0, &got) {
                Ok(()) => {
                    sh.ok("reset", got.len());
                    sh.with("reset", |c| c.injected += 1);
                }
                Err(e) => sh.error("reset", e),
            },
            Err(e) => sh.error("reset", e),
        }
        reset(s);
    }
}

async fn half_close(sh: Shared) {
    while sh.live() {
        let Ok((mut s, id)) = sh.connect().await.map_err(|e| sh.error("half-close", e)) else {
            continue;
        };
        let len = 1 + sh.rand(128 * 1024) as usize;
        let r = async {
            s.write_all(&message(id, 0, len)).await?;
            s.shutdown().await?;
            let mut got = Vec::with_capacity(len);
            s.read_to_end(&mut got).await?;
            Ok::<_, io::Error>(got)
        };
        match r.await {
            Ok(got) if got.len() != len => sh.error(
                "half-close",
                format!("connection {id}: {} bytes echoed of {len}", got.len()),
            ),
            Ok(got) => match check(id, 0, &got) {
                Ok(()) => sh.ok("half-close", len),
                Err(e) => sh.error("half-close", e),
            },
            Err(e) => sh.error("half-close", e),
        }
    }
}

/// Pauses around the server's idle timeout: some receives are dropped by it just as bytes
/// arrive. The server may close the connection (counted as injected); it must never echo a
/// wrong byte, nor a part of a message.
async fn racer(sh: Shared, idle: Duration) {
    while sh.live() {
        let Ok((mut s, id)) = sh
            .connect()
            .await
            .map_err(|e| sh.error("idle-timeout racer", e))
        else {
            continue;
        };
        let mut off = 0u64;
        while sh.live() {
            let msg = message(id, off, 100);
            let mut got = Vec::with_capacity(100);
            let r = async {
                s.write_all(&msg).await?;
                (&mut s).take(100).read_to_end(&mut got).await
            };
            match r.await {
                Ok(100) => match check(id, off, &got) {
                    Ok(()) => sh.ok("idle-timeout racer", 100),
                    Err(e) => {
                        sh.error("idle-timeout racer", e);
                        break;
                    }
                },
                // Closed by the server's idle timeout before it read this message.
                Ok(0) => {
                    sh.with("idle-timeout racer", |c| c.injected += 1);
                    break;
                }
                Ok(n) => {
                    sh.error(
                        "idle-timeout racer",
                        format!("connection {id}: {n} of 100 bytes echoed, then end of stream"),
                    );
                    break;
                }
                Err(e) if closed_by_peer(&e) => {
                    sh.with("idle-timeout racer", |c| c.injected += 1);
                    break;
                }
                Err(e) => {
                    sh.error("idle-timeout racer", e);
                    break;
                }
            }
            off += 100;
            // 80% to 120% of the idle timeout.
            let pause = idle.mul_f64(0.8 + sh.rand(400) as f64 / 1000.0);
            tokio::time::sleep(pause).await;
        }
        reset(s);
    }
}

async fn churn(sh: Shared) {
    while sh.live() {
        let Ok((mut s, id)) = sh.connect().await.map_err(|e| sh.error("churn", e)) else {
            continue;
        };
        let mut got = [0; 64];
        let r = async {
            s.write_all(&message(id, 0, 64)).await?;
            s.read_exact(&mut got).await
        };
        match r
            .await
            .map_err(|e| e.to_string())
            .and_then(|_| check(id, 0, &got))
        {
            Ok(()) => sh.ok("churn", 64),
            Err(e) => sh.error("churn", e),
        }
        reset(s);
    }
}

/// A connection that sends one byte every `every` (well inside the idle timeout) and
/// checks its echo.
async fn idle(sh: Shared, mut s: TcpStream, id: usize, every: Duration) {
    let mut off = 0u64;
    while sh.live() {
        let jitter = every.mul_f64(sh.rand(200) as f64 / 1000.0);
        tokio::time::sleep(every - jitter).await;
        let mut got = [0u8; 1];
        let r = async {
            s.write_all(&[pattern(id, off)]).await?;
            s.read_exact(&mut got).await
        };
        if let Err(e) = r
            .await
            .map_err(|e| e.to_string())
            .and_then(|_| check(id, off, &got))
        {
            sh.error("idle", e);
            return;
        }
        off += 1;
        sh.ok("idle", 1);
    }
    reset(s);
}

/// Runs every class against `addr` for `run`; returns what each did.
pub(crate) fn run(
    addr: SocketAddr,
    run: Duration,
    idle_conns: usize,
    idle_timeout: Duration,
) -> Counts {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let local = tokio::task::LocalSet::new();
    let counts = Rc::new(RefCell::new(Counts::new()));
    let sh = Shared {
        addr,
        deadline: Instant::now() + run,
        counts: counts.clone(),
        next_conn: Rc::new(std::cell::Cell::new(0)),
        seed: Rc::new(std::cell::Cell::new(0x9e37_79b9_7f4a_7c15)),
    };
    local.block_on(&rt, async {
        let mut tasks = Vec::new();
        // The idle connections first, so that they are open through the whole run.
        for _ in 0..idle_conns {
            match sh.connect().await {
                Ok((s, id)) => tasks.push(tokio::task::spawn_local(idle(
                    sh.clone(),
                    s,
                    id,
                    idle_timeout / 3,
                ))),
                Err(e) => sh.error("idle", e),
            }
        }
        for _ in 0..8 {
            tasks.push(tokio::task::spawn_local(echo(sh.clone())));
        }
        for _ in 0..2 {
            tasks.push(tokio::task::spawn_local(slow_reader(sh.clone())));
            tasks.push(tokio::task::spawn_local(resetter(sh.clone())));
            tasks.push(tokio::task::spawn_local(half_close(sh.clone())));
            tasks.push(tokio::task::spawn_local(racer(sh.clone(), idle_timeout)));
            tasks.push(tokio::task::spawn_local(churn(sh.clone())));
        }
        for t in tasks {
            // A client still stuck 30 s after the deadline is an error of its own.
            let left =
                (sh.deadline + Duration::from_secs(30)).saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, t).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => sh.error("client", e),
                Err(_) => sh.error("client", "a client was still waiting 30 s after the end"),
            }
        }
    });
    drop(sh);
    Rc::try_unwrap(counts)
        .map(RefCell::into_inner)
        .unwrap_or_else(|c| c.borrow().clone())
}
