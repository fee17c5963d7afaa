//! Training and evaluation data: the built-in task and the prompt formats.

pub mod builtin;
pub mod prompt;
