//! Files on the ring: open, positioned reads and writes, sync, metadata, close, and path
//! operations — each an io_uring SQE.
//!
//! Reads and writes are positioned (`read_at`, `write_at`): there is no shared cursor, so
//! concurrent operations on one file never race over it. Paths are copied into the operation
//! (as a `CString`) and kept until the kernel is done with them. Errors keep their OS error
//! kind and name the path.
//!
//! ```
//! let mut lp = ringloop::EventLoop::new()?;
//! let path = std::env::temp_dir().join(format!("ringloop-doc-{}", std::process::id()));
//! lp.block_on(async {
//!     ringloop::fs::write(&path, b"on the ring").await?;
//!     let f = ringloop::fs::File::open(&path).await?;
//!     let (r, buf) = f.read_at(Vec::with_capacity(64), 3).await;
//!     assert_eq!(r?, 8);
//!     assert_eq!(buf, b"the ring");
//!     assert_eq!(f.metadata().await?.len(), 11);
//!     f.close().await?;
//!     ringloop::fs::remove_file(&path).await
//! })?;
//! # Ok::<(), std::io::Error>(())
//! ```

mod ops;

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::buf::{finish_read, write_all_with, BufResult, IoBuf, IoBufMut};
use crate::driver::Op;
use crate::fd::SharedFd;
use ops::{Close, Fsync, MkDirAt, OpenAt, ReadAt, RenameAt, Statx, UnlinkAt, WriteAt};

/// The path as a C string, or an `InvalidInput` error naming it.
fn c_path(what: &str, path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} {}: the path contains a NUL byte", path.display()),
        )
    })
}

/// Wraps `e` with what was attempted on which path, keeping its kind.
fn path_error(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// An open file.
///
/// Dropping it closes the descriptor (once no operation uses it); [`close`](File::close)
/// closes it on the ring and reports the result.
pub struct File {
    fd: SharedFd,
    path: PathBuf,
}

impl File {
    /// Opens `path` read-only.
    pub async fn open(path: impl AsRef<Path>) -> io::Result<File> {
        OpenOptions::new().read(true).open(path).await
    }

    /// Opens `path` for writing, creating it or truncating it.
    pub async fn create(path: impl AsRef<Path>) -> io::Result<File> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .await
    }

    /// Options to open a file with, as in `std::fs::OpenOptions`.
    pub fn options() -> OpenOptions {
        OpenOptions::new()
    }

    /// Reads into `buf` (from its start, up to its capacity) from byte `pos` of the file;
    /// sets its length to the bytes read. `Ok(0)` means `pos` is at or past the end.
    pub async fn read_at<B: IoBufMut>(&self, buf: B, pos: u64) -> BufResult<usize, B> {
        let out = Op::new(ReadAt {
            fd: self.fd.clone(),
            buf,
            pos,
        })
        .await;
        let (r, buf) = finish_read(out.result, out.data.buf);
        (r.map_err(|e| path_error(e, "read", &self.path)), buf)
    }

    /// Writes `buf[..len]` at byte `pos` once; returns how many bytes were written.
    pub async fn write_at<B: IoBuf>(&self, buf: B, pos: u64) -> BufResult<usize, B> {
        let out = Op::new(WriteAt {
            fd: self.fd.clone(),
            buf,
            pos,
        })
        .await;
        let r = out
            .result
            .map(|n| n as usize)
            .map_err(|e| path_error(e, "write", &self.path));
        (r, out.data.buf)
    }

    /// Writes all of `buf[..len]` at byte `pos`, handling short writes.
    pub async fn write_all_at<B: IoBuf>(&self, buf: B, pos: u64) -> BufResult<(), B> {
        let (r, buf) =
            write_all_with(buf, |rest, done| self.write_at(rest, pos + done as u64)).await;
        let r = r.map_err(|e| match e.kind() {
            io::ErrorKind::WriteZero => path_error(e, "write", &self.path),
            _ => e, // write_at already named the path
        });
        (r, buf)
    }

    /// Flushes data and metadata to the device (`fsync`).
    pub async fn sync_all(&self) -> io::Result<()> {
        self.fsync(false).await
    }

    /// Flushes data, and only the metadata needed to read it back (`fdatasync`).
    pub async fn sync_data(&self) -> io::Result<()> {
        self.fsync(true).await
    }

    async fn fsync(&self, data_only: bool) -> io::Result<()> {
        Op::new(Fsync {
            fd: self.fd.clone(),
            data_only,
        })
        .await
        .result
        .map(|_| ())
        .map_err(|e| path_error(e, "sync", &self.path))
    }

    /// The file's metadata (`statx`).
    pub async fn metadata(&self) -> io::Result<Metadata> {
        let out = Op::new(Statx::new(self.fd.clone())).await;
        out.result
            .map(|_| Metadata(*out.data.buf))
            .map_err(|e| path_error(e, "statx", &self.path))
    }

    /// Closes the file on the ring and reports the result (`Drop` closes too, silently).
    pub async fn close(self) -> io::Result<()> {
        let path = self.path;
        match self.fd.try_unwrap() {
            Ok(fd) => Op::new(Close::new(fd))
                .await
                .result
                .map(|_| ())
                .map_err(|e| path_error(e, "close", &path)),
            // An abandoned operation still holds the descriptor; it closes when that op ends.
            Err(_) => Ok(()),
        }
    }
}

impl AsRawFd for File {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.raw()
    }
}

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("File")
            .field("fd", &self.fd.raw())
            .field("path", &self.path)
            .finish()
    }
}

/// How to open a file: the `std::fs::OpenOptions` flags, opened on the ring.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    read: bool,
    write: bool,
    append: bool,
    truncate: bool,
    create: bool,
    create_new: bool,
    mode: Option<u32>,
}

impl OpenOptions {
    /// No access; set what you need.
    pub fn new() -> OpenOptions {
        OpenOptions::default()
    }

    /// Read access.
    pub fn read(&mut self, on: bool) -> &mut Self {
        self.read = on;
        self
    }

    /// Write access.
    pub fn write(&mut self, on: bool) -> &mut Self {
        self.write = on;
        self
    }

    /// Append mode (implies write access).
    pub fn append(&mut self, on: bool) -> &mut Self {
        self.append = on;
        self
    }

    /// Truncate to zero length on open.
    pub fn truncate(&mut self, on: bool) -> &mut Self {
        self.truncate = on;
        self
    }

    /// Create the file if it does not exist.
    pub fn create(&mut self, on: bool) -> &mut Self {
        self.create = on;
        self
    }

    /// Create the file, failing if it exists.
    pub fn create_new(&mut self, on: bool) -> &mut Self {
        self.create_new = on;
        self
    }

    /// Permission bits for a created file (default `0o666`, less the umask).
    pub fn mode(&mut self, mode: u32) -> &mut Self {
        self.mode = Some(mode);
        self
    }

    fn flags(&self) -> io::Result<i32> {
        let write = self.write || self.append;
        let mut flags = match (self.read, write) {
            (true, false) => libc::O_RDONLY,
            (false, true) => libc::O_WRONLY,
            (true, true) => libc::O_RDWR,
            (false, false) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "OpenOptions: set read, write or append access",
                ))
            }
        };
        if self.append {
            flags |= libc::O_APPEND;
        }
        if self.truncate {
            if !write {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "OpenOptions: truncate needs write access",
                ));
            }
            flags |= libc::O_TRUNC;
        }
        if self.create_new {
            flags |= libc::O_CREAT | libc::O_EXCL;
        } else if self.create {
            flags |= libc::O_CREAT;
        }
        Ok(flags)
    }

    /// Opens `path` with these options.
    ///
    /// # Errors
    ///
    /// The OS error, with its kind (`NotFound`, `PermissionDenied`, `AlreadyExists`, ...) and
    /// the path in its message.
    pub async fn open(&self, path: impl AsRef<Path>) -> io::Result<File> {
        let path = path.as_ref();
        let flags = self.flags().map_err(|e| path_error(e, "open", path))?;
        let out = Op::new(OpenAt {
            path: c_path("open", path)?,
            flags,
            mode: self.mode.unwrap_or(0o666),
        })
        .await;
        let fd = out.result.map_err(|e| path_error(e, "open", path))?;
        // SAFETY: a successful open returns a new descriptor that nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        Ok(File {
            fd: SharedFd::new(fd),
            path: path.to_owned(),
        })
    }
}

/// What `statx` says about a file.
#[derive(Clone, Copy)]
pub struct Metadata(libc::statx);

impl Metadata {
    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.0.stx_size
    }

    /// Whether the size is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn kind(&self) -> u32 {
        u32::from(self.0.stx_mode) & libc::S_IFMT
    }

    /// A regular file.
    pub fn is_file(&self) -> bool {
        self.kind() == libc::S_IFREG
    }

    /// A directory.
    pub fn is_dir(&self) -> bool {
        self.kind() == libc::S_IFDIR
    }

    /// A symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.kind() == libc::S_IFLNK
    }

    /// Permission bits (`st_mode & 0o7777`).
    pub fn mode(&self) -> u32 {
        u32::from(self.0.stx_mode) & 0o7777
    }

    /// Last modification time.
    pub fn modified(&self) -> io::Result<SystemTime> {
        let t = self.0.stx_mtime;
        let d = Duration::new(t.tv_sec.unsigned_abs(), t.tv_nsec);
        if t.tv_sec >= 0 {
            Ok(SystemTime::UNIX_EPOCH + d)
        } else {
            SystemTime::UNIX_EPOCH
                .checked_sub(d)
                .ok_or_else(|| io::Error::other("modification time out of range"))
        }
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metadata")
            .field("len", &self.len())
            .field("is_file", &self.is_file())
            .field("is_dir", &self.is_dir())
            .field("mode", &format_args!("{:o}", self.mode()))
            .finish()
    }
}

/// Reads the whole file at `path`.
pub async fn read(path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
    let f = File::open(path).await?;
    let size = f.metadata().await?.len() as usize;
    // One extra byte: a file that grew since statx shows up as a full buffer, not as EOF.
    let mut data: Vec<u8> = Vec::with_capacity(size + 1);
    loop {
        let len = data.len();
        if data.capacity() == len {
            data.reserve(len.max(4096));
        }
        let (r, slice) = f.read_at(data.slice(len..), len as u64).await;
        data = slice.into_inner();
        if r? == 0 {
            break;
        }
    }
    f.close().await?;
    Ok(data)
}

/// Writes `data` to `path`, creating or truncating it.
pub async fn write(path: impl AsRef<Path>, data: impl IoBuf) -> io::Result<()> {
    let f = File::create(path).await?;
    let (r, _) = f.write_all_at(data, 0).await;
    r?;
    f.close().await
}

/// Removes the file at `path`.
pub async fn remove_file(path: impl AsRef<Path>) -> io::Result<()> {
    let path = path.as_ref();
    Op::new(UnlinkAt {
        path: c_path("remove", path)?,
    })
    .await
    .result
    .map(|_| ())
    .map_err(|e| path_error(e, "remove", path))
}

/// Renames `from` to `to`, replacing `to` if it exists.
pub async fn rename(from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
    let (from, to) = (from.as_ref(), to.as_ref());
    Op::new(RenameAt {
        from: c_path("rename", from)?,
        to: c_path("rename to", to)?,
    })
    .await
    .result
    .map(|_| ())
    .map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("rename {} to {}: {e}", from.display(), to.display()),
        )
    })
}

/// Creates the directory `path` (its parent must exist).
///
/// `IORING_OP_MKDIRAT` needs Linux 5.15; on older kernels this falls back to a plain
/// `mkdir` call.
pub async fn create_dir(path: impl AsRef<Path>) -> io::Result<()> {
    let path = path.as_ref();
    let r = Op::new(MkDirAt {
        path: c_path("create directory", path)?,
    })
    .await
    .result;
    match r {
        Ok(_) => Ok(()),
        // EINVAL: the kernel does not know the opcode (before 5.15).
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => std::fs::create_dir(path),
        Err(e) => Err(e),
    }
    .map_err(|e| path_error(e, "create directory", path))
}
