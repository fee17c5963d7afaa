//! An experiment's commands from users: submit and cancel.

use super::status::ExperimentStatus;
use prl_schema::datasets::DatasetSplit;
use prl_schema::events::Event;
use prl_schema::jobs::CheckpointRef;
use prl_schema::spec::ExperimentSpec;
use std::collections::BTreeMap;

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum CancelError {
    #[error("the experiment already {0}; there is nothing to cancel")]
    AlreadyFinished(ExperimentStatus),
}

/// `datasets`: the registered datasets the spec names, resolved now; `start_from`: the
/// checkpoint a `checkpoint:` model names, resolved now.
pub fn submit(
    spec: ExperimentSpec,
    max_attempts: u32,
    datasets: BTreeMap<String, DatasetSplit>,
    start_from: Option<CheckpointRef>,
) -> Event {
    Event::ExperimentSubmitted {
        spec,
        max_attempts,
        datasets,
        start_from,
    }
}

/// Cancelling twice is the same as once: a cancelled experiment yields no new event.
pub fn cancel(status: ExperimentStatus, reason: String) -> Result<Vec<Event>, CancelError> {
    match status {
        ExperimentStatus::Cancelled => Ok(vec![]),
        ExperimentStatus::Completed | ExperimentStatus::Failed | ExperimentStatus::Imported => {
            Err(CancelError::AlreadyFinished(status))
        }
        ExperimentStatus::Queued | ExperimentStatus::Running => {
            Ok(vec![Event::ExperimentCancelled { reason }])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancelling_a_cancelled_experiment_changes_nothing() {
        assert_eq!(
            cancel(ExperimentStatus::Running, "x".into()).unwrap().len(),
            1
        );
        assert!(
            cancel(ExperimentStatus::Cancelled, "x".into())
                .unwrap()
                .is_empty()
        );
        assert!(cancel(ExperimentStatus::Completed, "x".into()).is_err());
    }
}
