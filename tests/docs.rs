//! The quick start runs as written: the `sh` blocks of docs/quickstart.md after its first (which
//! sets up the reader's shell), in order, as one bash script in a fresh directory, with this
//! build's `prl` and `prl-trainer` first on the PATH.

use std::path::PathBuf;
use std::process::Command;

fn sh_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = vec![];
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), line) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn the_quick_start_runs_command_by_command() {
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/quickstart.md");
    let blocks = sh_blocks(&std::fs::read_to_string(docs).unwrap());
    assert!(blocks.len() > 3, "the quick start has its blocks");
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    assert!(
        bin.join("prl").exists() && bin.join("prl-trainer").exists(),
        "build the binaries first: cargo build --bin prl --bin prl-trainer"
    );
    let dir = std::env::temp_dir().join(format!("prl-quickstart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Job control (`%1`) as in an interactive shell; the stack is killed whatever happens.
    let script = format!(
        "set -euo pipefail\nset -m\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{}",
        blocks[1..].join("")
    );
    let path = std::env::var("PATH").unwrap_or_default();
    let output = Command::new("timeout")
        .args(["600", "bash", "-c", &script])
        .current_dir(&dir)
        .env("PATH", format!("{}:{path}", bin.display()))
        .env_remove("DATABASE_URL")
        .env_remove("NATS_URL")
        .env_remove("PRL_API_URL")
        .env_remove("PRL_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let log = std::fs::read_to_string(dir.join("prl-up.log")).unwrap_or_default();
    assert!(
        output.status.success(),
        "the quick start failed ({}):\n{stdout}\n{}\nprl up:\n{log}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{stdout}");
    // What the reader is told to expect: the table row and the recorded trajectories.
    assert!(stdout.contains("first evaluation"), "{stdout}");
    let trajectories = stdout
        .lines()
        .skip_while(|l| !l.contains("trajectories"))
        .nth(2)
        .and_then(|l| l.trim().parse::<u64>().ok());
    assert_eq!(
        trajectories,
        Some(32),
        "16 prompts, 2 samples each:\n{stdout}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
