//! What the benchmarks share: the device they run on, and running a peer's side in the Python
//! reference environment on the same device.

use std::path::PathBuf;
use std::process::Command;
use tch::Device;

/// The device to measure on: `PRL_DEVICE` (`cpu`, `cuda`, `cuda:N`), the CPU when unset.
pub fn device() -> Device {
    std::env::var("PRL_DEVICE").map_or(Device::Cpu, |text| {
        prl_trainer::device::parse(&text).unwrap_or_else(|why| panic!("PRL_DEVICE: {why}"))
    })
}

/// Waits for the work queued on `device`, so that a clock read next counts it (a GPU runs
/// kernels after the calls that launch them return).
pub fn sync(device: Device) {
    if let Device::Cuda(n) = device {
        tch::Cuda::synchronize(n as i64);
    }
}

/// What the figures were measured on, for the benchmark's first line.
pub fn describe(device: Device) -> String {
    match device {
        Device::Cuda(_) => prl_trainer::device::name(device),
        _ => format!("CPU, {} threads", tch::get_num_threads()),
    }
}

/// Runs `scripts/<script>` with the reference venv's Python (`PRL_REFERENCE_PYTHON`, or
/// `scripts/python_venv.sh reference`, which makes the pinned venv on first use) on `device`;
/// returns the last line it printed, or why it failed.
pub fn run_reference(script: &str, args: &[&str], device: Device) -> Result<String, String> {
    let scripts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts");
    let python = match std::env::var("PRL_REFERENCE_PYTHON") {
        Ok(python) => PathBuf::from(python),
        Err(_) => reference_venv(&scripts)?.join("bin/python"),
    };
    let script = scripts.join(script);
    let out = Command::new(&python)
        .arg(script)
        .args(args)
        .args(["--device", &prl_trainer::device::name(device)])
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    let last = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .lines()
            .last()
            .unwrap_or("")
            .to_owned()
    };
    if out.status.success() {
        Ok(last(&out.stdout))
    } else {
        Err(last(&out.stderr))
    }
}

/// The pinned reference venv's directory (torch and transformers, about 5 GB with the CUDA
/// libraries PyPI's torch wheel depends on), made on first use.
fn reference_venv(scripts: &std::path::Path) -> Result<PathBuf, String> {
    let out = Command::new("bash")
        .arg(scripts.join("python_venv.sh"))
        .arg("reference")
        .output()
        .map_err(|e| format!("python_venv.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "making the reference venv: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}
