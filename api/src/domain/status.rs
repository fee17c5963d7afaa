//! The statuses of jobs and experiments: stored as text in the read models, typed everywhere else.

use serde::{Deserialize, Serialize};

/// Where a job's current attempt stands.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum JobStatus {
    /// Published, waiting for a daemon's claim.
    Queued,
    /// Claimed; its lease runs until `lease_until`.
    Running,
    /// Its worker stopped heartbeating; the next attempt, or the failure, follows at once.
    LeaseExpired,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::LeaseExpired => "lease_expired",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Whether nothing can happen to the job any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }

    /// The statuses a cancel stops.
    pub const ACTIVE: [JobStatus; 3] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::LeaseExpired,
    ];
}

/// Where an experiment stands.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum ExperimentStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
    /// Recorded by an import: it ran elsewhere.
    Imported,
}

impl ExperimentStatus {
    pub const ALL: [ExperimentStatus; 6] = [
        ExperimentStatus::Queued,
        ExperimentStatus::Running,
        ExperimentStatus::Completed,
        ExperimentStatus::Failed,
        ExperimentStatus::Cancelled,
        ExperimentStatus::Imported,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExperimentStatus::Queued => "queued",
            ExperimentStatus::Running => "running",
            ExperimentStatus::Completed => "completed",
            ExperimentStatus::Failed => "failed",
            ExperimentStatus::Cancelled => "cancelled",
            ExperimentStatus::Imported => "imported",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether its stages still run or wait to.
    pub fn is_active(self) -> bool {
        matches!(self, ExperimentStatus::Queued | ExperimentStatus::Running)
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::fmt::Display for ExperimentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_as_they_are_stored() {
        for status in ExperimentStatus::ALL {
            assert_eq!(ExperimentStatus::parse(status.as_str()), Some(status));
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::json!(status.as_str())
            );
        }
        assert_eq!(
            serde_json::to_value(JobStatus::LeaseExpired).unwrap(),
            "lease_expired"
        );
        // Listings pad them into columns.
        assert_eq!(format!("{:<9}|", ExperimentStatus::Failed), "failed   |");
    }
}
