//! Small helpers shared by several layers.

pub(crate) mod loop_parts;
pub(crate) mod once_arc;
pub(crate) mod race;
pub(crate) mod sync;
pub(crate) mod table;
