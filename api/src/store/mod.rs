//! The event store: appends with optimistic concurrency and idempotency, and the tailing read.

mod append;
mod read;

pub use append::{AppendError, Expected, LogTx, NewEvent, StreamAppend};
pub use read::{Visibility, read_after, read_recorded};
