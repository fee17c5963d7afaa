pub mod checkpoint;
pub mod daemon;
pub mod dry_run;
pub mod lease;
pub mod reporter;
