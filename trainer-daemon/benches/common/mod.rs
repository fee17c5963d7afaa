//! What the benchmarks share: running a peer's side in the Python reference environment.

use std::path::PathBuf;
use std::process::Command;

/// Runs `scripts/<script>` with the reference venv's Python (`PRL_REFERENCE_PYTHON`, default
/// `~/.cache/prl/hf-ref/bin/python`); returns the last line it printed, or why it failed.
pub fn run_reference(script: &str, args: &[&str]) -> Result<String, String> {
    let python = std::env::var("PRL_REFERENCE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/prl/hf-ref/bin/python")
        });
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(script);
    let out = Command::new(&python)
        .arg(script)
        .args(args)
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
