//! What a stage needs of the daemon that runs it, and whether a daemon fits.

use super::values::{Label, Positive};
use crate::jobs::WorkerInfo;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The kind of device a stage runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Cpu,
    Cuda,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
        }
    }

    /// The kind of a daemon's device (`cpu`, `cuda:N`).
    pub fn of(device: &str) -> DeviceKind {
        match device.starts_with("cuda") {
            true => DeviceKind::Cuda,
            false => DeviceKind::Cpu,
        }
    }
}

/// Which daemons a job's subject reaches: any trainer, those with a kind of device, or the
/// bridges that hand stages to verl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobRoute {
    Any,
    Device(DeviceKind),
    Verl,
}

impl JobRoute {
    /// Every route a job can take.
    pub const ALL: [JobRoute; 4] = [
        JobRoute::Any,
        JobRoute::Device(DeviceKind::Cpu),
        JobRoute::Device(DeviceKind::Cuda),
        JobRoute::Verl,
    ];

    /// The subject token after the job kind; none for `Any`.
    pub fn token(self) -> Option<&'static str> {
        match self {
            JobRoute::Any => None,
            JobRoute::Device(d) => Some(d.as_str()),
            JobRoute::Verl => Some("verl"),
        }
    }
}

/// What a stage needs of its daemon. A job goes only to a daemon that fits; until one does it
/// waits, and its experiment says why.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// `cpu` or `cuda`; any device when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceKind>,
    /// The least GPU memory, in GB (10^9 bytes; an "80 GB" H100 has 85.5), the daemon's device
    /// must have; implies a `cuda` device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_gpu_memory_gb: Option<Positive>,
    /// Labels the daemon must carry (`prl-trainer --label KEY=VALUE`), each with this value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<Label, Label>,
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }

    /// The device kind the job must go to: set, or implied by asking for GPU memory.
    pub fn device_kind(&self) -> Option<DeviceKind> {
        self.device
            .or(self.min_gpu_memory_gb.map(|_| DeviceKind::Cuda))
    }

    /// Whether `worker` fits; if not, what it lacks.
    pub fn fits(&self, worker: &WorkerInfo) -> Result<(), String> {
        let kind = DeviceKind::of(&worker.device);
        if let Some(wanted) = self.device_kind()
            && wanted != kind
        {
            return Err(format!(
                "its device is {}, not {}",
                worker.device,
                wanted.as_str()
            ));
        }
        if let Some(min) = self.min_gpu_memory_gb {
            match worker.gpu_memory_gb {
                Some(has) if has >= min.get() => {}
                Some(has) => {
                    return Err(format!(
                        "its GPU has {has:.1} GB, less than {} GB",
                        min.get()
                    ));
                }
                None => return Err("its GPU memory is unknown (--gpu-memory-gb)".into()),
            }
        }
        for (key, value) in &self.labels {
            match worker.labels.get(key.as_str()) {
                Some(has) if has == value.as_str() => {}
                Some(has) => return Err(format!("its label {key} is {has}, not {value}")),
                None => return Err(format!("it has no label {key}")),
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(kind) = self.device_kind() {
            parts.push(format!("a {} device", kind.as_str()));
        }
        if let Some(min) = self.min_gpu_memory_gb {
            parts.push(format!("at least {} GB of GPU memory", min.get()));
        }
        for (key, value) in &self.labels {
            parts.push(format!("label {key}={value}"));
        }
        match parts.is_empty() {
            true => f.write_str("any daemon"),
            false => f.write_str(&parts.join(", ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(device: &str, memory: Option<f64>, labels: &[(&str, &str)]) -> WorkerInfo {
        WorkerInfo {
            backend: Default::default(),
            worker_id: "w".into(),
            host: "h".into(),
            device: device.into(),
            gpu_memory_gb: memory,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            kinds: crate::spec::StageKind::ALL.to_vec(),
            job: None,
            started_at: chrono::Utc::now(),
            seen_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn a_daemon_fits_when_it_has_the_device_the_memory_and_every_label() {
        let needs: Resources = serde_json::from_value(serde_json::json!({
            "min_gpu_memory_gb": 40, "labels": {"gpu": "h100"}
        }))
        .unwrap();
        assert_eq!(needs.device_kind(), Some(DeviceKind::Cuda));
        let h100 = worker("cuda:1", Some(80.0), &[("gpu", "h100"), ("zone", "a")]);
        assert_eq!(needs.fits(&h100), Ok(()));
        let cpu = worker("cpu", None, &[("gpu", "h100")]);
        assert!(needs.fits(&cpu).unwrap_err().contains("not cuda"));
        let small = worker("cuda:0", Some(24.0), &[("gpu", "h100")]);
        assert!(
            needs
                .fits(&small)
                .unwrap_err()
                .contains("24.0 GB, less than 40 GB")
        );
        let other = worker("cuda:0", Some(141.0), &[("gpu", "h200")]);
        assert!(needs.fits(&other).unwrap_err().contains("h200"));
        assert_eq!(Resources::default().fits(&cpu), Ok(()));
        assert_eq!(
            needs.to_string(),
            "a cuda device, at least 40 GB of GPU memory, label gpu=h100"
        );
        let bad = serde_json::from_value::<Resources>(serde_json::json!({"labels": {"a b": "c"}}));
        assert!(bad.is_err());
    }
}
