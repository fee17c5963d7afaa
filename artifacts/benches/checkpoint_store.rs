//! What a checkpoint costs on its way into a `file://` store and out to another host's mirror:
//! the manifest's hashes, `put_dir`, `fetch_dir`, and `read` of its largest file as the API
//! streams an artifact to a client, for a directory shaped like a training
//! checkpoint (weights and a three-times-larger optimiser state), written just before as the
//! trainer writes it (page cache warm, not yet synced).
//!
//!     cargo bench -p prl-artifacts --bench checkpoint_store
//!
//! `PRL_BENCH_CHECKPOINT_MB` sets the size (2,048 MB: SmolLM2-135M's checkpoint with its AdamW
//! state is 1.9 GB); `PRL_BENCH_DIR` the directory to work in (the build's temporary directory),
//! which holds the two hosts' mirrors and, unless `PRL_BENCH_STORE_DIR` puts it elsewhere (on
//! another file system, say), the store; `PRL_BENCH_STORE_URL` names another store instead
//! (`s3://bucket`, with the `AWS_*` variables).

use futures::StreamExt;
use prl_artifacts::{ArtifactStore, S3Options, write_manifest};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

const REPEATS: usize = 3;

fn main() {
    let megabytes: u64 = std::env::var("PRL_BENCH_CHECKPOINT_MB")
        .map(|v| v.parse().expect("PRL_BENCH_CHECKPOINT_MB is a number"))
        .unwrap_or(2048);
    let base = std::env::var("PRL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&base).unwrap();
    let work = tempfile::tempdir_in(&base).unwrap();
    let store_dir = match std::env::var("PRL_BENCH_STORE_DIR") {
        Ok(dir) => tempfile::tempdir_in(dir).unwrap().keep(),
        Err(_) => work.path().join("store"),
    };
    let url = std::env::var("PRL_BENCH_STORE_URL")
        .unwrap_or_else(|_| format!("file://{}", store_dir.display()));
    let store = ArtifactStore::open(&url, &S3Options::default()).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    println!(
        "# A {megabytes} MB checkpoint from {} into the store {url} and out to another mirror",
        base.display()
    );
    println!("| run | manifest's hashes | put_dir | fetch_dir | read, largest file |");
    println!("|---|---|---|---|---|");
    for run in 0..REPEATS {
        let key = format!("checkpoints/run/attempt-1/step-{run:08}");
        let saved = work.path().join("host-a").join(&key);
        write_checkpoint(&saved, megabytes << 20, run as u64);

        let started = Instant::now();
        let (sha256, bytes) = write_manifest(&saved).unwrap();
        let hashed = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let stored = runtime.block_on(store.put_dir(&key, &saved)).unwrap();
        let put = started.elapsed().as_secs_f64();
        assert_eq!(stored.sha256, sha256);

        let started = Instant::now();
        let mirror = work.path().join("host-b");
        let fetched = runtime
            .block_on(store.fetch_dir(&stored.uri, &sha256, &mirror))
            .unwrap();
        assert_eq!(fetched, mirror.join(&key));
        let fetch = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let largest = format!("{}optimizer.safetensors", stored.uri);
        let read_bytes = runtime.block_on(async {
            let (_, mut chunks) = store.read(&largest).await.unwrap().unwrap();
            let mut n = 0;
            while let Some(chunk) = chunks.next().await {
                n += chunk.unwrap().len() as u64;
            }
            n
        });
        let read = started.elapsed().as_secs_f64();

        let gb = bytes as f64 / 1e9;
        println!(
            "| {} | {hashed:.2} s ({:.2} GB/s) | {put:.2} s ({:.2} GB/s) | {fetch:.2} s ({:.2} GB/s) | {read:.2} s ({:.2} GB/s) |",
            run + 1,
            gb / hashed,
            gb / put,
            gb / fetch,
            read_bytes as f64 / 1e9 / read,
        );
    }
    if std::env::var("PRL_BENCH_STORE_DIR").is_ok() {
        std::fs::remove_dir_all(&store_dir).unwrap();
    }
}

/// A checkpoint's two files, of bytes that do not repeat, written without a sync.
fn write_checkpoint(dir: &Path, bytes: u64, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for (name, share) in [("model.safetensors", 1), ("optimizer.safetensors", 3)] {
        let mut file = std::io::BufWriter::new(std::fs::File::create(dir.join(name)).unwrap());
        let mut left = bytes * share / 4;
        let mut block = vec![0u8; 1 << 20];
        while left > 0 {
            for word in block.chunks_exact_mut(8) {
                // xorshift64
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                word.copy_from_slice(&state.to_le_bytes());
            }
            let n = left.min(block.len() as u64) as usize;
            file.write_all(&block[..n]).unwrap();
            left -= n as u64;
        }
        file.flush().unwrap();
    }
}
