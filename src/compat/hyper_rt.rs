//! hyper's runtime traits on the loop (feature `hyper`): an executor that spawns on the
//! current loop, and a timer on the loop's timer wheel.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::time::{self, Sleep};

/// hyper's `Executor` on the current loop: each future hyper hands it (an HTTP/2 stream, a
/// connection's background work) becomes a task of the loop that runs the connection. The
/// futures need not be `Send`.
///
/// # Panics
///
/// `execute` panics if called outside a running loop, as [`spawn`](crate::spawn) does; hyper
/// calls it from the connection's own task, which runs on the loop.
///
/// # Example
///
/// HTTP/1.1 and HTTP/2 on one port, with hyper-util's `auto` builder:
///
/// ```
/// use std::convert::Infallible;
///
/// use http_body_util::Full;
/// use hyper::{body::Bytes, service::service_fn, Request, Response};
/// use hyper_util::server::conn::auto;
/// use ringloop::compat::{HyperExecutor, HyperTimer};
/// use ringloop::net::TcpListener;
///
/// async fn hello(_: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
///     Ok(Response::new(Full::new(Bytes::from_static(b"Hello, World!"))))
/// }
///
/// ringloop::EventLoop::new()?.block_on(async {
///     let listener = TcpListener::bind("127.0.0.1:0")?;
///     # let addr = listener.local_addr()?;
///     # ringloop::spawn(async move {
///     #     use std::io::{Read, Write};
///     #     let mut c = std::net::TcpStream::connect(addr).unwrap();
///     #     c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
///     # });
///     # for _ in 0..1 {
///     let (conn, _) = listener.accept().await?;
///     ringloop::spawn(async move {
///         let mut builder = auto::Builder::new(HyperExecutor);
///         builder.http1().timer(HyperTimer);
///         builder.http2().timer(HyperTimer);
///         builder.serve_connection(conn, service_fn(hello)).await
///     });
///     # }
///     Ok::<(), std::io::Error>(())
/// })?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct HyperExecutor;

impl<F> hyper::rt::Executor<F> for HyperExecutor
where
    F: Future + 'static,
    F::Output: 'static,
{
    fn execute(&self, fut: F) {
        // Detached: hyper keeps its own handle on the work (a stream's channels).
        drop(crate::spawn(fut));
    }
}

/// hyper's `Timer` on the loop's timer wheel: the header-read timeout of HTTP/1, HTTP/2's
/// keep-alive pings and every other timer hyper sets cost no SQE each, like
/// [`sleep`](crate::time::sleep).
///
/// Set it for HTTP/1 as well as HTTP/2 when using hyper-util's `auto::Builder`
/// (`builder.http1().timer(HyperTimer)`): without a timer hyper drops its header-read
/// timeout.
#[derive(Clone, Debug, Default)]
pub struct HyperTimer;

impl hyper::rt::Timer for HyperTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HyperSleep(time::sleep(duration)))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HyperSleep(time::sleep_until(deadline)))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<HyperSleep>() {
            // Moved in place: no new allocation per reset (hyper resets its keep-alive timer
            // on every request).
            Some(mut s) => s.0.reset(new_deadline),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// A [`Sleep`] as hyper's `Sleep`. hyper asks for `Send + Sync`, which `Sleep` is: it holds
/// its deadline and the key of its wheel entry, and touches the wheel only through the loop
/// thread's own registry (dropped on another thread, it leaves its entry to fire unseen).
struct HyperSleep(Sleep);

impl Future for HyperSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl hyper::rt::Sleep for HyperSleep {}
