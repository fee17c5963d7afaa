//! From an experiment's model reference (or a checkpoint) to a model and its tokenizer.

use crate::model::{LoadedModel, ModelConfig};
use crate::tokenizer::PrlTokenizer;
use anyhow::{Context, Result, bail};
use prl_schema::jobs::{CheckpointRef, JobMessage};
use prl_schema::spec::{ModelPreset, ModelRef, Precision};
use std::path::{Path, PathBuf};
use tch::Device;

/// Where converted models live (`scripts/setup_smollm2.sh` writes there).
pub fn model_cache() -> PathBuf {
    cache_root().join("models")
}

/// prl's cache on this machine: `PRL_CACHE`, else `~/.cache/prl`.
pub fn cache_root() -> PathBuf {
    std::env::var("PRL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| ".".into())).join(".cache/prl")
        })
}

/// The `tiny` preset: a small Qwen3-style model (calibrated to learn the built-in task on 2 CPU
/// cores within minutes), sized to `vocab` character tokens.
pub fn tiny_config(vocab: usize) -> ModelConfig {
    serde_json::from_value(serde_json::json!({
        "model_type": "qwen3",
        "architectures": ["Qwen3ForCausalLM"],
        "vocab_size": vocab,
        "hidden_size": 128,
        "intermediate_size": 512,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": true,
        "max_position_embeddings": 1024
    }))
    .expect("a valid config")
}

/// The `tiny-base` preset, built into the binary (about 4 MB; `scripts/pretrain_tiny_base.sh`
/// writes it, and its `prl.json` says how it was made and what it scored), so that any daemon has it.
const TINY_BASE: [(&str, &[u8]); 4] = [
    (
        "config.json",
        include_bytes!("../assets/tiny-base/config.json"),
    ),
    (
        "model.safetensors",
        include_bytes!("../assets/tiny-base/model.safetensors"),
    ),
    (
        "tokenizer.json",
        include_bytes!("../assets/tiny-base/tokenizer.json"),
    ),
    ("prl.json", include_bytes!("../assets/tiny-base/prl.json")),
];

/// The `tiny-base` directory in the model cache, written on first use under a name that changes
/// with its content.
pub fn tiny_base_dir() -> Result<PathBuf> {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    for (name, bytes) in TINY_BASE {
        hash.update(name.as_bytes());
        hash.update(bytes);
    }
    let dir = model_cache().join(format!("tiny-base-{}", &hex::encode(hash.finalize())[..12]));
    if dir.join("prl.json").exists() {
        return Ok(dir);
    }
    let tmp = dir.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    for (name, bytes) in TINY_BASE {
        std::fs::write(tmp.join(name), bytes)
            .with_context(|| format!("writing {}", tmp.join(name).display()))?;
    }
    // Another daemon may have won the race: its copy is the same.
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(dir)
}

/// prl's own notes in a model directory it wrote.
pub const PRL_META: &str = "prl.json";

/// The model a job starts from: its input checkpoint if it has one, else the spec's model, in
/// the stage's precision. `corpus` builds the `tiny` preset's character vocabulary.
pub fn load(
    job: &JobMessage,
    corpus: &[&str],
    device: Device,
) -> Result<(LoadedModel, PrlTokenizer)> {
    let (mut loaded, tok) = load_weights(job, corpus, device)?;
    // Loading keeps the file's dtype (a bf16 run's checkpoints are bf16): set the stage's.
    match job.stage.precision() {
        Precision::Fp32 => loaded.vs.float(),
        Precision::Bf16 => loaded.vs.bfloat16(),
    }
    Ok((loaded, tok))
}

fn load_weights(
    job: &JobMessage,
    corpus: &[&str],
    device: Device,
) -> Result<(LoadedModel, PrlTokenizer)> {
    if let Some(checkpoint) = job.input_checkpoint.as_ref() {
        let dir = crate::checkpoint::local_dir(checkpoint)?;
        return load_dir(&dir, device);
    }
    match &job.model {
        ModelRef::Preset(ModelPreset::Tiny) => {
            let tok = PrlTokenizer::characters(corpus.iter().copied())?;
            tch::manual_seed(job.seed as i64);
            Ok((
                LoadedModel::random(tiny_config(tok.vocab_size()), device),
                tok,
            ))
        }
        ModelRef::Preset(ModelPreset::TinyBase) => load_dir(&tiny_base_dir()?, device),
        ModelRef::Preset(ModelPreset::Smollm2_135m) => {
            let dir = model_cache().join("smollm2-135m");
            if !dir.join("model.safetensors").exists() {
                bail!("{} is missing: run scripts/setup_smollm2.sh", dir.display());
            }
            load_dir(&dir, device)
        }
        ModelRef::Path(dir) => load_dir(Path::new(dir), device),
        ModelRef::Checkpoint { run, step } => {
            bail!("checkpoint:{run}@{step} came without its checkpoint in the job")
        }
    }
}

/// The training step of the weights a job starts from: its input checkpoint's, or the one prl
/// noted in a `path:` directory it wrote; 0 for anything else.
pub fn starting_step(model: &ModelRef, checkpoint: Option<&CheckpointRef>) -> u64 {
    if let Some(checkpoint) = checkpoint {
        return checkpoint.step;
    }
    let ModelRef::Path(dir) = model else {
        return 0;
    };
    std::fs::read_to_string(Path::new(dir).join(PRL_META))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|meta| meta["step"].as_u64())
        .unwrap_or(0)
}

/// A model directory (HF layout, or a checkpoint prl wrote): weights, and a tokenizer with the tags
/// added (the vocabulary grows to fit) that ends sequences as the directory's files say.
pub fn load_dir(dir: &Path, device: Device) -> Result<(LoadedModel, PrlTokenizer)> {
    let (tok, _) = PrlTokenizer::load_model_dir(dir)
        .with_context(|| format!("loading the tokenizer of {}", dir.display()))?;
    let model = LoadedModel::load_with_vocab(dir, device, tok.vocab_size() as i64)
        .with_context(|| format!("loading the model in {}", dir.display()))?;
    Ok((model, tok))
}
