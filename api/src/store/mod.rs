//! The event store: appends with optimistic concurrency and idempotency, and the tailing read.

mod append;
pub mod copy;
mod read;

pub use append::{
    AppendError, Expected, Followers, LogTx, NewEvent, StreamAppend, existing_event_ids,
};
pub use read::{Visibility, read_after, read_recorded};

/// A stream or event id derived from content (the SHA-256 of `parts`, in a version 4 layout), so
/// that recording the same thing twice names the same stream and the second append writes nothing.
pub fn derived_id(parts: &[&[u8]]) -> uuid::Uuid {
    use sha2::Digest;
    let digest = parts
        .iter()
        .fold(sha2::Sha256::new(), |hash, part| hash.chain_update(part))
        .finalize();
    uuid::Builder::from_random_bytes(digest[..16].try_into().expect("16 bytes")).into_uuid()
}
