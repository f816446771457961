//! File-system operations, named after their opcodes. Paths are kept as `CString`s inside
//! the op until its CQE, like every other buffer the kernel reads.

mod close;
mod fsync;
mod openat;
mod path;
mod rw;
mod statx;

pub(crate) use close::Close;
pub(crate) use fsync::Fsync;
pub(crate) use openat::OpenAt;
pub(crate) use path::{MkDirAt, RenameAt, UnlinkAt};
pub(crate) use rw::{ReadAt, WriteAt};
pub(crate) use statx::Statx;
