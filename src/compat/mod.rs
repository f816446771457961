//! hyper, axum, rustls and tokio code on ringloop: the ecosystem's I/O traits on ringloop's
//! streams, and hyper's runtime traits on its loop. Each part is a cargo feature, off by
//! default:
//!
//! | feature | gives |
//! |---|---|
//! | `tokio-io` | `tokio::io::{AsyncRead, AsyncWrite}` for [`TcpStream`] and [`UnixStream`] |
//! | `futures-io` | `futures_io::{AsyncRead, AsyncWrite}` for both |
//! | `hyper` | `hyper::rt::{Read, Write}` for both, [`HyperExecutor`], [`HyperTimer`] |
//!
//! Both streams are `Unpin`, so `tokio-rustls`, `tokio::io::copy_bidirectional`, hyper's
//! `serve_connection` (and axum's `Router` through `hyper-util`) take them as they are. No
//! `unsafe` and no promise about buffers is asked of the caller.
//!
//! ## What is copied, and why
//!
//! The kernel writes received bytes into the loop's own buffers (its provided-buffer pool),
//! never into a caller's slice, whose future may be dropped while the kernel still writes.
//! A trait read copies out of the last received buffer and keeps what did not fit for the
//! next read; so a read dropped between polls (in a timeout, say) loses no byte, and a
//! stream's native [`recv`](crate::net::TcpStream::recv) called after it returns those bytes first.
//!
//! A trait write copies the caller's bytes into a buffer handed to the stream's write queue
//! (the one [`write_queued`](crate::net::TcpStream::write_queued) uses), which sends queued writes in
//! order, resuming short sends. `poll_write` takes at most what fits below the queue's bound
//! of 256 KiB of unsent bytes (or 64 unsent writes) and is `Pending` while the queue is full,
//! woken when there is room: a peer that does not read holds that much of the stream's
//! memory and no more.
//!
//! `poll_flush` is ready once every accepted byte is handed to the kernel: sent, or carried
//! by the stream's one send in flight, which the loop submits before it next waits. Nothing
//! is left behind it for a later call to push out. It does not wait for that send's
//! completion, so a reply costs its task no second wake-up (as with tokio, whose accepted
//! bytes are in the kernel at once); the native [`flush`](crate::net::TcpStream::flush) does wait. A send
//! still waiting for room when the loop closes (the peer stopped reading) is cancelled.
//! `poll_shutdown` (tokio, hyper) and `poll_close` (futures) wait until every byte was sent,
//! then shut down the write side only. A queued write's error is returned by the next call
//! and every write call after it.
//!
//! ## Mixing with the native calls
//!
//! The streams' own methods (`read`, `write`, `write_all`, `flush`, `shutdown`) take
//! precedence over the traits' extension methods of the same names, so trait code calls them
//! through the trait (`AsyncReadExt::read(&mut s, &mut buf)`) or through generic code. One
//! owner may mix the native calls and the traits on a stream, one after the other; within
//! each direction bytes are neither lost nor reordered, and the native
//! [`flush`](crate::net::TcpStream::flush) also waits for bytes written through the traits.
//!
//! Every poll must run on the loop serving the stream, inside a task: a poll outside a
//! running loop panics saying so.
//!
//! [`TcpStream`]: crate::net::TcpStream
//! [`UnixStream`]: crate::net::UnixStream
#![cfg_attr(
    feature = "tokio-io",
    doc = r#"
## Example

A proxy written on tokio's traits, running on ringloop:

```
use ringloop::net::{TcpListener, TcpStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

ringloop::EventLoop::new()?.block_on(async {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    ringloop::spawn(async move {
        let (mut conn, _) = listener.accept().await?;
        let (mut rd, mut wr) = tokio::io::split(&mut conn);
        tokio::io::copy(&mut rd, &mut wr).await?; // echo until end of stream
        wr.shutdown().await
    });
    let mut client = TcpStream::connect(addr).await?;
    AsyncWriteExt::write_all(&mut client, b"hello").await?;
    AsyncWriteExt::shutdown(&mut client).await?;
    let mut reply = String::new();
    client.read_to_string(&mut reply).await?;
    assert_eq!(reply, "hello");
    Ok::<(), std::io::Error>(())
})?;
# Ok::<(), std::io::Error>(())
```
"#
)]

#[cfg(feature = "futures-io")]
mod futures_traits;
#[cfg(feature = "hyper")]
mod hyper_rt;
#[cfg(feature = "hyper")]
mod hyper_traits;
#[cfg(feature = "tokio-io")]
mod tokio_traits;

#[cfg(feature = "hyper")]
pub use hyper_rt::{HyperExecutor, HyperTimer};
