//! Ring-level operations, named after their opcodes. One op per file.

mod nop;
mod read;

pub(crate) use nop::Nop;
#[allow(unused_imports)]
pub(crate) use read::Read;
