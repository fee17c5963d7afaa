//! The device this daemon trains on: one per process (`--device`), so one daemon per GPU.

use std::sync::{Once, OnceLock};
use tch::Device;

static DEVICE: OnceLock<Device> = OnceLock::new();

/// Loads libtorch's CUDA backend, where this libtorch has one and this machine CUDA's libraries.
/// No symbol of `libtorch_cuda.so` is called by name (it registers the backend when it loads),
/// so the linker drops it and tch would see no GPU. On a machine without CUDA's libraries (the
/// PyPI wheel installed without them, as deploy/libtorch.sh does) loading fails, and jobs train
/// on the CPU.
fn load_cuda_backend() {
    static LOADED: Once = Once::new();
    LOADED.call_once(|| {
        // SAFETY: a C string literal; the handle is kept for the process's life, never closed.
        let handle = unsafe {
            libc::dlopen(
                c"libtorch_cuda.so".as_ptr(),
                libc::RTLD_NOW | libc::RTLD_GLOBAL,
            )
        };
        tracing::debug!(loaded = !handle.is_null(), "libtorch's CUDA backend");
    });
}

/// Parses `cpu`, `cuda` (the first GPU) or `cuda:N`; `auto` takes the first GPU when CUDA is
/// available, else the CPU.
pub fn parse(text: &str) -> Result<Device, String> {
    load_cuda_backend();
    match text {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(Device::Cuda)
            .ok_or_else(|| format!("unknown device {other:?}; expected cpu, cuda, cuda:N or auto")),
    }
}

/// How the device is written in a daemon's presence and in a stage's resources.
pub fn name(device: Device) -> String {
    match device {
        Device::Cuda(n) => format!("cuda:{n}"),
        _ => "cpu".into(),
    }
}

/// Sets this process's device, once, before any job runs.
pub fn set(device: Device) {
    let _ = DEVICE.set(device);
}

/// The device jobs train on: the one set, else the first GPU if any.
pub fn current() -> Device {
    *DEVICE.get_or_init(|| {
        load_cuda_backend();
        Device::cuda_if_available()
    })
}

/// The memory of GPU `n` in GB (10^9 bytes) from `nvidia-smi`'s MiB, when it can.
pub fn gpu_memory_gb(n: usize) -> Option<f64> {
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=memory.total", "--format=csv,noheader,nounits"])
        .arg(format!("--id={n}"))
        .output()
        .ok()?;
    let mib: f64 = String::from_utf8(out.stdout).ok()?.trim().parse().ok()?;
    Some(mib * 1_048_576.0 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_print_back() {
        assert_eq!(parse("cpu"), Ok(Device::Cpu));
        assert_eq!(parse("cuda:1").map(name), Ok("cuda:1".into()));
        assert_eq!(parse("cuda").map(name), Ok("cuda:0".into()));
        assert!(parse("gpu").unwrap_err().contains("cuda:N"));
        assert!(parse("cuda:x").is_err());
    }
}
