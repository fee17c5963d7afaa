//! Identifier newtypes, so that an experiment id cannot be passed where a job id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(transparent)]
        #[schema(value_type = String, format = Uuid)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// An experiment: one submitted spec and everything it caused.
    ExperimentId
);
id_type!(
    /// A job: the queued work of one stage, retried under new attempts.
    JobId
);
id_type!(
    /// A run: the results (metrics, checkpoints) of one job, across its attempts.
    RunId
);
id_type!(
    /// An event's client-supplied id, unique in the log, used for idempotency.
    EventId
);
