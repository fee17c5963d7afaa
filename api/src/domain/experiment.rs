//! An experiment's commands from users: submit and cancel.

use prl_schema::datasets::DatasetSplit;
use prl_schema::events::Event;
use prl_schema::spec::ExperimentSpec;
use std::collections::BTreeMap;

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum CancelError {
    #[error("the experiment already {0}; there is nothing to cancel")]
    AlreadyFinished(String),
}

/// `datasets`: the registered datasets the spec names, resolved now.
pub fn submit(
    spec: ExperimentSpec,
    max_attempts: u32,
    datasets: BTreeMap<String, DatasetSplit>,
) -> Event {
    Event::ExperimentSubmitted {
        spec,
        max_attempts,
        datasets,
    }
}

/// Cancelling twice is the same as once: a cancelled experiment yields no new event.
pub fn cancel(status: &str, reason: String) -> Result<Vec<Event>, CancelError> {
    match status {
        "cancelled" => Ok(vec![]),
        "completed" | "failed" | "imported" => Err(CancelError::AlreadyFinished(status.to_owned())),
        _ => Ok(vec![Event::ExperimentCancelled { reason }]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancelling_a_cancelled_experiment_changes_nothing() {
        assert_eq!(cancel("running", "x".into()).unwrap().len(), 1);
        assert!(cancel("cancelled", "x".into()).unwrap().is_empty());
        assert!(cancel("completed", "x".into()).is_err());
    }
}
