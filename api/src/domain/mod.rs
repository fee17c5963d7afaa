//! Pure decisions: given the current state and a command, which events follow. No I/O here.

pub mod experiment;
pub mod job;
pub mod status;
