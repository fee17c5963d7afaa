//! The shared contract of prl: the experiment spec, events and job messages.
//! It knows nothing about HTTP, NATS or the database: subjects, routes and migrations live in
//! the crates that speak them.

pub mod analysis;
pub mod datasets;
pub mod dumps;
pub mod estimators;
pub mod events;
pub mod ids;
pub mod jobs;
pub mod parallel;
pub mod reward;
pub mod spec;
pub mod tracking;
pub mod trajectory;
pub mod trl;
pub mod verl;
pub mod word_filter;
