//! `Cluster`: thread-per-core, one loop per core, graceful then forced shutdown.

use std::any::Any;
use std::future::Future;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::signal_watcher::SignalWatcher;
use super::{Builder, Handle};
use crate::util::race::race;

/// Sets up a [`Cluster`]. Made by [`Cluster::builder`].
#[derive(Clone, Debug)]
pub struct ClusterBuilder {
    threads: Option<usize>,
    pin: bool,
    shutdown_timeout: Duration,
    handle_signals: bool,
    event_loop: Builder,
}

/// N threads, each running its own [`EventLoop`](super::EventLoop) (own ring, op table,
/// buffer pool) and the future `f(core_index)`. Nothing is shared between cores on the hot
/// path; listeners made with
/// [`TcpListener::bind_reuseport`](crate::net::TcpListener::bind_reuseport) on every core let
/// the kernel spread connections across them.
///
/// Shutdown is graceful, then forced: [`ClusterHandle::stop`] (or SIGINT/SIGTERM, with
/// [`ClusterBuilder::handle_signals`]) makes every loop's [`Handle::stopping`] resolve; each
/// core's future then has the shutdown timeout to return; past it, the loop is closed anyway
/// (its tasks dropped, its operations cancelled). A panic on one core shuts the others down
/// and comes back from [`run`](Cluster::run) as an error naming the core.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
///
/// let cluster = ringloop::Cluster::builder().threads(2).handle_signals(false).build()?;
/// let handle = cluster.handle();
/// let started = Arc::new(AtomicUsize::new(0));
/// let s = started.clone();
/// cluster.run(move |core| {
///     let (s, handle) = (s.clone(), handle.clone());
///     async move {
///         if s.fetch_add(1, Ordering::SeqCst) + 1 == 2 {
///             handle.stop(); // the last core up stops everyone
///         }
///         ringloop::Handle::current().stopping().await;
///         let _ = core;
///     }
/// })?;
/// assert_eq!(started.load(Ordering::SeqCst), 2);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Cluster {
    threads: usize,
    pin: bool,
    shutdown_timeout: Duration,
    handle_signals: bool,
    event_loop: Builder,
    shared: Arc<ClusterShared>,
}

struct ClusterShared {
    stopped: AtomicBool,
    /// The grace period is over before its time (a second SIGINT/SIGTERM): cores still
    /// running are closed at once.
    cut_short: AtomicBool,
    loops: Mutex<Vec<Handle>>,
    /// Cores whose future had not returned when the grace period ended: closed by force.
    forced: Mutex<Vec<usize>>,
}

impl ClusterShared {
    fn loops(&self) -> std::sync::MutexGuard<'_, Vec<Handle>> {
        // Handles are only pushed and read; a poisoned vector is still consistent.
        self.loops.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        for h in self.loops().iter() {
            h.stop();
        }
    }

    /// Ends the grace period now: stops the cluster if it was not, and every core whose
    /// future is still running is closed within [`GRACE_CHECK`].
    fn cut_short(&self) {
        self.cut_short.store(true, Ordering::SeqCst);
        self.stop();
    }

    /// Adds a core's loop; stops it at once if the cluster is already stopping.
    fn register(&self, h: Handle) {
        self.loops().push(h.clone());
        if self.stopped.load(Ordering::SeqCst) {
            h.stop();
        }
    }
}

/// Stops a [`Cluster`] from anywhere: `Clone + Send + Sync`.
#[derive(Clone)]
pub struct ClusterHandle {
    shared: Arc<ClusterShared>,
}

impl ClusterHandle {
    /// Starts the shutdown: every core's [`Handle::stopping`] resolves. Idempotent.
    pub fn stop(&self) {
        self.shared.stop();
    }

    /// Ends the grace period now (the signal thread's second signal; see
    /// [`ClusterBuilder::handle_signals`]).
    pub(super) fn cut_short(&self) {
        self.shared.cut_short();
    }

    /// Whether [`stop`](ClusterHandle::stop) was called (or a signal or a panic stopped the
    /// cluster).
    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.load(Ordering::SeqCst)
    }

    /// Each running core's counters ([`Handle::stats`]), in the order the cores' loops were
    /// made (not always core order). Each is read by a task on that core, so this waits for
    /// every core's next turn.
    pub fn stats(&self) -> Vec<crate::Stats> {
        let loops: Vec<Handle> = self.shared.loops().clone();
        loops.iter().map(Handle::stats).collect()
    }

    /// The cores whose future had not returned when the shutdown's grace period
    /// ([`ClusterBuilder::shutdown_timeout`]) ended, and whose loops were therefore closed by
    /// force, in ascending order. `run` still returns `Ok` for them (a forced close is the
    /// documented end of a core that ignores `stopping()`); read this after `run` to know.
    pub fn forced_cores(&self) -> Vec<usize> {
        let mut v = self
            .shared
            .forced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        v.sort_unstable();
        v
    }
}

impl std::fmt::Debug for ClusterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterHandle")
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

impl Cluster {
    /// A [`ClusterBuilder`] with the defaults: one thread per available core, no pinning,
    /// a 5 s shutdown timeout, SIGINT/SIGTERM handled.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            threads: None,
            pin: false,
            shutdown_timeout: Duration::from_secs(5),
            handle_signals: true,
            event_loop: Builder::default(),
        }
    }

    /// A handle to stop the cluster from anywhere.
    pub fn handle(&self) -> ClusterHandle {
        ClusterHandle {
            shared: self.shared.clone(),
        }
    }

    /// Starts the threads, runs `f(i)` on core `i`'s loop for `i` in `0..threads`, and blocks
    /// until every core has ended. The future may return `()` or `Result<(), E>` (see
    /// [`CoreResult`]): a server whose listener cannot bind returns the error, and the
    /// process learns of it from `run`.
    ///
    /// A core whose future has not returned when the grace period after a stop ends is
    /// closed by force; `run` still returns `Ok` for it, and
    /// [`ClusterHandle::forced_cores`] names it.
    ///
    /// # Errors
    ///
    /// The first core that failed: a loop that could not be made, a core that could not be
    /// pinned, a core whose future panicked or returned an error, or a loop whose close timed
    /// out; each names the core. A failing core stops the others first.
    pub fn run<F, Fut>(self, f: F) -> io::Result<()>
    where
        F: Fn(usize) -> Fut + Send + Sync + 'static,
        Fut: Future + 'static,
        Fut::Output: CoreResult,
    {
        let signals = if self.handle_signals {
            Some(SignalWatcher::start(self.handle())?)
        } else {
            None
        };
        let f = Arc::new(f);
        let mut threads = Vec::with_capacity(self.threads);
        for core in 0..self.threads {
            let f = f.clone();
            let shared = self.shared.clone();
            let (pin, timeout) = (self.pin, self.shutdown_timeout);
            let settings = self.event_loop.clone();
            let spawned = thread::Builder::new()
                .name(format!("ringloop-core-{core}"))
                .spawn(move || {
                    let r = run_core(core, pin, timeout, settings, &shared, &*f);
                    if r.is_err() {
                        shared.stop();
                    }
                    r
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    self.shared.stop();
                    threads.into_iter().for_each(|t| drop(t.join()));
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot start the thread for core {core}: {e}"),
                    ));
                }
            }
        }
        let mut first_err = None;
        for (core, t) in threads.into_iter().enumerate() {
            let r = t.join().unwrap_or_else(|p| {
                Err(io::Error::other(format!(
                    "core {core} panicked: {}",
                    panic_message(&*p)
                )))
            });
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        if let Some(s) = signals {
            if let Err(e) = s.finish() {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

fn run_core<F, Fut>(
    core: usize,
    pin: bool,
    timeout: Duration,
    settings: Builder,
    shared: &ClusterShared,
    f: &F,
) -> io::Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: Future + 'static,
    Fut::Output: CoreResult,
{
    let named = |e: io::Error| io::Error::new(e.kind(), format!("core {core}: {e}"));
    if pin {
        pin_to_cpu(core).map_err(named)?;
    }
    let mut lp = settings.build().map_err(named)?;
    let handle = lp.handle();
    shared.register(handle.clone());
    let ran = catch_unwind(AssertUnwindSafe(|| {
        lp.block_on(race(
            async { Some(f(core).await.into_core_result()) },
            async move {
                // Graceful: the core's future sees `stopping()` and has `timeout` to return,
                // unless the grace period is cut short.
                handle.stopping().await;
                let end = std::time::Instant::now() + timeout;
                while !shared.cut_short.load(Ordering::SeqCst) {
                    let left = end.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    crate::time::sleep(left.min(GRACE_CHECK)).await;
                }
                None
            },
        ))
    }));
    let closed = lp.close();
    match ran {
        Ok(Some(Ok(()))) => closed.map_err(named),
        Ok(Some(Err(e))) => Err(io::Error::other(format!("core {core} failed: {e}"))),
        Ok(None) => {
            shared
                .forced
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(core);
            closed.map_err(named)
        }
        Err(p) => Err(io::Error::other(format!(
            "core {core} panicked: {}",
            panic_message(&*p)
        ))),
    }
}

fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_owned()
    }
}

fn pin_to_cpu(core: usize) -> io::Result<()> {
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    crate::sys::pin_thread_to_cpu(core % cpus)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot pin to CPU {}: {e}", core % cpus)))
}

/// How often a core in its grace period looks whether it was cut short (see
/// `ClusterShared::cut_short`): only while stopping.
const GRACE_CHECK: Duration = Duration::from_millis(50);

impl ClusterBuilder {
    /// Number of cores (threads); default: the available parallelism.
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = Some(n);
        self
    }

    /// Pins core `i` to CPU `i` (modulo the CPU count) with `sched_setaffinity`.
    pub fn pin_to_cores(mut self, on: bool) -> Self {
        self.pin = on;
        self
    }

    /// How long cores get to finish after a stop before their loops are closed (default 5 s).
    pub fn shutdown_timeout(mut self, d: Duration) -> Self {
        self.shutdown_timeout = d;
        self
    }

    /// Whether SIGINT and SIGTERM stop the cluster (default true). A second one during the
    /// grace period ends it: the cores still running are closed at once and named by
    /// [`ClusterHandle::forced_cores`] (so a second Ctrl-C never waits out
    /// [`shutdown_timeout`](Self::shutdown_timeout)). The handlers stay installed for the
    /// life of the process once the cluster has run.
    pub fn handle_signals(mut self, on: bool) -> Self {
        self.handle_signals = on;
        self
    }

    /// The settings every core's loop is built with (default: `EventLoop::builder()`'s):
    /// ring size, receive pool, [`spin_before_sleep`](Builder::spin_before_sleep),
    /// [`batch_wait`](Builder::batch_wait) and the rest. Each core builds its own loop from
    /// a copy, on its own thread.
    pub fn event_loop(mut self, settings: Builder) -> Self {
        self.event_loop = settings;
        self
    }

    /// Checks the settings, the loops' included (their rings are made by `run`, each on its
    /// core's thread).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for zero threads, or for loop settings that
    /// [`Builder::build`] refuses as such.
    pub fn build(self) -> io::Result<Cluster> {
        self.event_loop.check()?;
        let threads = match self.threads {
            Some(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "ClusterBuilder::threads(0): a cluster needs at least one thread",
                ))
            }
            Some(n) => n,
            None => thread::available_parallelism().map_or(1, |n| n.get()),
        };
        Ok(Cluster {
            threads,
            pin: self.pin,
            shutdown_timeout: self.shutdown_timeout,
            handle_signals: self.handle_signals,
            event_loop: self.event_loop,
            shared: Arc::new(ClusterShared {
                forced: Mutex::new(Vec::new()),
                stopped: AtomicBool::new(false),
                cut_short: AtomicBool::new(false),
                loops: Mutex::new(Vec::new()),
            }),
        })
    }
}

/// What a [`Cluster`] core's future may return: `()`, or `Result<(), E>` whose `Err` stops
/// the cluster as a panic does and is returned by [`Cluster::run`], naming the core. Sealed:
/// implemented for those two only.
pub trait CoreResult: sealed::Sealed + 'static {
    /// The core's outcome, its error boxed.
    fn into_core_result(self) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

impl CoreResult for () {
    fn into_core_result(self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(())
    }
}

impl<E> CoreResult for Result<(), E>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    fn into_core_result(self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.map_err(Into::into)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for () {}
    impl<E> Sealed for Result<(), E> {}
}
