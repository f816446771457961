//! `hyper::rt::{Read, Write}` for the stream sockets (feature `hyper`): hyper serves and
//! drives connections on them directly, with no wrapper.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};

use crate::net::{TcpStream, UnixStream};

macro_rules! hyper_io {
    ($ty:ty) => {
        impl Read for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                mut buf: ReadBufCursor<'_>,
            ) -> Poll<io::Result<()>> {
                let room = buf.remaining();
                self.get_mut()
                    .inner()
                    .poll_read_bytes(cx, room, |b| buf.put_slice(b))
                    .map_ok(drop)
            }
        }

        impl Write for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                self.get_mut()
                    .inner()
                    .poll_write_bytes(cx, &[IoSlice::new(buf)])
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                self.get_mut().inner().poll_write_bytes(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                true
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.get_mut().inner().poll_flush_bytes(cx)
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.get_mut().inner().poll_shutdown_write(cx)
            }
        }
    };
}

hyper_io!(TcpStream);
hyper_io!(UnixStream);
