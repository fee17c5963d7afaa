//! The transformer against Hugging Face transformers (fixtures written once by
//! `scripts/make_parity_fixtures.py`), and its own save/load and KV-cache consistency.

use prl_trainer::model::{LoadedModel, ModelConfig};
use prl_trainer::presets::load_dir;
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

/// A random small model drawn under `seed`, and the directory it was saved to.
fn saved_small_model(seed: i64, name: &str) -> (LoadedModel, PathBuf) {
    tch::manual_seed(seed);
    let model = LoadedModel::random(small_config(), Device::Cpu);
    let dir = std::env::temp_dir().join(format!("prl-{name}-{}", std::process::id()));
    model.save(&dir).unwrap();
    (model, dir)
}

#[test]
fn a_saved_model_loads_back_with_the_same_logits() {
    let (model, dir) = saved_small_model(3, "roundtrip");
    let again = LoadedModel::load(&dir, Device::Cpu).unwrap();
    let ids = Tensor::from_slice(&[1i64, 5, 9, 2, 7, 3]).view([1, 6]);
    let pos = Tensor::arange(6, (Kind::Int64, Device::Cpu)).view([1, 6]);
    let a = tch::no_grad(|| model.model.forward(&ids, &pos, None));
    let b = tch::no_grad(|| again.model.forward(&ids, &pos, None));
    assert_eq!(max_diff(&a, &b), 0.0);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_model_loaded_with_a_larger_vocabulary_keeps_its_rows_and_starts_the_new_ones_at_their_mean() {
    let (model, dir) = saved_small_model(5, "grown");
    let rows = small_config().vocab_size;
    let grown = LoadedModel::load_with_vocab(&dir, Device::Cpu, rows + 3).unwrap();
    assert_eq!(grown.model.config.vocab_size, rows + 3);
    // Untied: the head's rows grow as the embeddings' do.
    for name in ["model.embed_tokens.weight", "lm_head.weight"] {
        let (old, new) = (&model.vs.variables()[name], &grown.vs.variables()[name]);
        assert_eq!(max_diff(&new.narrow(0, 0, rows), old), 0.0, "{name}");
        let mean = old.mean_dim(0, true, Kind::Float).expand([3, -1], false);
        assert_eq!(max_diff(&new.narrow(0, rows, 3), &mean), 0.0, "{name}");
    }
    // A vocabulary the files already hold is not cut.
    let same = LoadedModel::load_with_vocab(&dir, Device::Cpu, rows - 1).unwrap();
    assert_eq!(same.model.config.vocab_size, rows);
    // Files with fewer rows than their config.json says are refused, not grown.
    let config = dir.join("config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    json["vocab_size"] = (rows + 2).into();
    std::fs::write(&config, json.to_string()).unwrap();
    let err = format!(
        "{:#}",
        LoadedModel::load_with_vocab(&dir, Device::Cpu, rows + 3)
            .err()
            .unwrap()
    );
    assert!(err.contains("config.json makes it"), "{err}");
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
    // Each call gives the next token's logits: after position 2, then after each of 3..8.
    let incremental = Tensor::stack(&steps, 1);
    let diff = max_diff(&full.narrow(1, 2, 6), &incremental);
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

/// A scratch copy of the `smollm2-135m` preset's files other than its weights.
fn smollm2_copy(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("prl-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(smollm2_dir().join(file), dir.join(file)).unwrap();
    }
    dir
}

/// Writes `model.safetensors` split into `shards` files and their index, as transformers does.
fn write_shards(source: &std::path::Path, dir: &std::path::Path, shards: usize) {
    let mut tensors = Tensor::read_safetensors(source).unwrap();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let per_shard = tensors.len().div_ceil(shards);
    let mut weight_map = serde_json::Map::new();
    for (i, chunk) in tensors.chunks(per_shard).enumerate() {
        let file = format!("model-{:05}-of-{shards:05}.safetensors", i + 1);
        Tensor::write_safetensors(chunk, dir.join(&file)).unwrap();
        for (name, _) in chunk {
            weight_map.insert(name.clone(), file.clone().into());
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

fn logits(model: &LoadedModel) -> Tensor {
    let want = expected(&fixtures().join("smollm2"));
    let ids = &want["input_ids"];
    let positions = Tensor::arange(ids.size()[1], (Kind::Int64, Device::Cpu)).unsqueeze(0);
    tch::no_grad(|| model.model.forward(ids, &positions, None))
}

#[test]
fn a_sharded_copy_of_smollm2_gives_the_same_logits_and_ends_where_its_configs_say() {
    let (whole, whole_tok) = load_dir(&smollm2_dir(), Device::Cpu).unwrap();
    assert_eq!(
        whole_tok.eos_token, "<|im_end|>",
        "from generation_config.json's id 2"
    );

    let dir = smollm2_copy("sharded");
    write_shards(&smollm2_dir().join("model.safetensors"), &dir, 3);
    // Qwen's chat models list two end tokens; the first is the one generation stops on.
    std::fs::write(
        dir.join("generation_config.json"),
        r#"{"eos_token_id": [2, 0]}"#,
    )
    .unwrap();
    let (sharded, tok) = load_dir(&dir, Device::Cpu).unwrap();
    assert_eq!(max_diff(&logits(&whole), &logits(&sharded)), 0.0);
    assert_eq!(tok.eos_token, "<|im_end|>");
    assert_eq!(tok.eos, 2);

    // Without a generation config, tokenizer_config.json's token (here in its object form).
    std::fs::remove_file(dir.join("generation_config.json")).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"eos_token": {"content": "<|endoftext|>", "special": true}}"#,
    )
    .unwrap();
    let (_, tok) = load_dir(&dir, Device::Cpu).unwrap();
    assert_eq!((tok.eos_token.as_str(), tok.eos), ("<|endoftext|>", 0));

    // A shard the index names but that is gone is named in the error.
    std::fs::remove_file(dir.join("model-00002-of-00003.safetensors")).unwrap();
    let err = format!("{:#}", load_dir(&dir, Device::Cpu).err().unwrap());
    assert!(err.contains("model-00002-of-00003.safetensors"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn model_directories_prl_cannot_run_are_refused_naming_the_field() {
    let dir = smollm2_copy("refused");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let cases = [
        ("hidden_act", serde_json::json!("gelu")),
        ("mlp_bias", serde_json::json!(true)),
        ("use_sliding_window", serde_json::json!(true)),
        ("model_type", serde_json::json!("mistral")),
        (
            "rope_scaling",
            serde_json::json!({"rope_type": "yarn", "factor": 4.0}),
        ),
    ];
    for (field, value) in cases {
        let mut changed = config.clone();
        changed[field] = value;
        std::fs::write(dir.join("config.json"), changed.to_string()).unwrap();
        let err = format!("{:#}", load_dir(&dir, Device::Cpu).err().unwrap());
        assert!(err.contains(field), "{field}: {err}");
    }
    // Shards sit beside their index.
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        r#"{"weight_map": {"model.norm.weight": "../elsewhere.safetensors"}}"#,
    )
    .unwrap();
    let err = format!("{:#}", load_dir(&dir, Device::Cpu).err().unwrap());
    assert!(err.contains("not a file in the same directory"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}
