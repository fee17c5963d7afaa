//! The transformer against Hugging Face transformers (fixtures written once by
//! `scripts/make_parity_fixtures.py`), and its own save/load and KV-cache consistency.

use prl_trainer::model::{LoadedModel, ModelConfig};
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn expected(dir: &std::path::Path) -> std::collections::HashMap<String, Tensor> {
    Tensor::read_safetensors(dir.join("expected.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn check_parity(case: &str) {
    let dir = fixtures().join("parity").join(case);
    let loaded = LoadedModel::load(&dir, Device::Cpu).unwrap();
    let want = expected(&dir);
    let ids = &want["input_ids"];
    let (b, l) = ids.size2().unwrap();
    let positions = Tensor::arange(l, (Kind::Int64, Device::Cpu))
        .unsqueeze(0)
        .expand([b, l], false);
    let logits = tch::no_grad(|| loaded.model.forward(ids, &positions, None));
    let diff = max_diff(&logits, &want["logits"]);
    assert!(
        diff < 1e-4,
        "{case}: causal logits differ from transformers by {diff}"
    );

    let masked = tch::no_grad(|| {
        loaded
            .model
            .forward(ids, &want["position_ids"], Some(&want["attention_mask"]))
    });
    let diff = max_diff(&masked, &want["logits_masked"]);
    assert!(
        diff < 1e-4,
        "{case}: masked logits differ from transformers by {diff}"
    );
}

#[test]
fn qwen3_with_gqa_untied_embeddings_and_a_wide_head_matches_transformers() {
    check_parity("qwen3-gqa-untied");
}

#[test]
fn qwen3_with_tied_embeddings_matches_transformers() {
    check_parity("qwen3-tied");
}

#[test]
fn llama_with_gqa_and_untied_embeddings_matches_transformers() {
    check_parity("llama-gqa-untied");
}

fn small_config() -> ModelConfig {
    serde_json::from_value(serde_json::json!({
        "model_type": "qwen3", "vocab_size": 50, "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 12,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": false
    }))
    .unwrap()
}

#[test]
fn a_saved_model_loads_back_with_the_same_logits() {
    tch::manual_seed(3);
    let model = LoadedModel::random(small_config(), Device::Cpu);
    let dir = std::env::temp_dir().join(format!("prl-roundtrip-{}", std::process::id()));
    model.save(&dir).unwrap();
    let again = LoadedModel::load(&dir, Device::Cpu).unwrap();
    let ids = Tensor::from_slice(&[1i64, 5, 9, 2, 7, 3]).view([1, 6]);
    let pos = Tensor::arange(6, (Kind::Int64, Device::Cpu)).view([1, 6]);
    let a = tch::no_grad(|| model.model.forward(&ids, &pos, None));
    let b = tch::no_grad(|| again.model.forward(&ids, &pos, None));
    assert_eq!(max_diff(&a, &b), 0.0);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn decoding_with_the_kv_cache_gives_the_full_forward_logits() {
    tch::manual_seed(4);
    let model = LoadedModel::random(small_config(), Device::Cpu);
    let ids = Tensor::from_slice(&[1i64, 5, 9, 2, 7, 3, 11, 4]).view([1, 8]);
    let pos = Tensor::arange(8, (Kind::Int64, Device::Cpu)).view([1, 8]);
    let full = tch::no_grad(|| model.model.forward(&ids, &pos, None));
    let mut cache = model.model.new_cache();
    let mut steps = vec![tch::no_grad(|| {
        model
            .model
            .forward_cached(&ids.narrow(1, 0, 3), &pos.narrow(1, 0, 3), None, &mut cache)
    })];
    for t in 3..8 {
        steps.push(tch::no_grad(|| {
            model
                .model
                .forward_cached(&ids.narrow(1, t, 1), &pos.narrow(1, t, 1), None, &mut cache)
        }));
    }
    let incremental = Tensor::cat(&steps, 1);
    let diff = max_diff(&full, &incremental);
    assert!(diff < 1e-5, "cached decoding differs by {diff}");
    assert_eq!(cache.len(), 8);
}

/// The converted `smollm2-135m` preset, which `scripts/setup_smollm2.sh` writes (deploy/setup.sh runs it).
fn smollm2_dir() -> PathBuf {
    let cache = std::env::var("PRL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/prl"));
    cache.join("models/smollm2-135m")
}

#[test]
fn smollm2_135m_real_weights_match_transformers() {
    let dir = smollm2_dir();
    assert!(
        dir.join("model.safetensors").exists(),
        "{} is missing: run deploy/setup.sh",
        dir.display()
    );
    let loaded = LoadedModel::load(&dir, Device::Cpu).unwrap();
    let want = expected(&fixtures().join("smollm2"));
    let ids = &want["input_ids"];
    let l = ids.size()[1];
    let positions = Tensor::arange(l, (Kind::Int64, Device::Cpu)).unsqueeze(0);
    let logits = tch::no_grad(|| loaded.model.forward(ids, &positions, None));
    let diff = max_diff(&logits, &want["logits"]);
    println!("smollm2-135m: max |logit difference| = {diff:e}");
    assert!(
        diff < 1e-4,
        "smollm2-135m logits differ from transformers by {diff}"
    );
}
