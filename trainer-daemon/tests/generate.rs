//! Cached, batched, left-padded decoding must pick exactly the tokens that re-running the whole
//! sequence through the model picks, for both attention variants.

use prl_schema::spec::Attention;
use prl_trainer::generate::{Controls, ParallelControl, Sampling, generate};
use prl_trainer::layout::{Layout, TagIds};
use prl_trainer::model::{LoadedModel, ModelConfig};
use tch::{Device, Kind, Tensor};

const TAGS: TagIds = TagIds {
    open_parallel: 3,
    close_parallel: 4,
    open_path: 5,
    close_path: 6,
};

fn model() -> LoadedModel {
    tch::manual_seed(11);
    let config: ModelConfig = serde_json::from_value(serde_json::json!({
        "model_type": "qwen3", "vocab_size": 12, "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": true
    }))
    .unwrap();
    LoadedModel::random(config, Device::Cpu)
}

/// Greedy decoding by re-running the full sequence every step.
fn reference(model: &LoadedModel, prompt: &[i64], attention: Attention, steps: usize) -> Vec<i64> {
    let mut seq = prompt.to_vec();
    let mut out = Vec::new();
    for _ in 0..steps {
        let layout = Layout::new(&seq, TAGS, attention);
        let n = seq.len() as i64;
        let mask = Tensor::from_slice(&layout.additive_mask(f32::NEG_INFINITY)).view([1, 1, n, n]);
        let logits = tch::no_grad(|| {
            model.model.forward(
                &Tensor::from_slice(&seq).view([1, n]),
                &Tensor::from_slice(&layout.positions).view([1, n]),
                Some(&mask),
            )
        });
        let next = logits.select(1, n - 1).argmax(-1, false).int64_value(&[0]);
        if next == 1 {
            break;
        }
        out.push(next);
        seq.push(next);
    }
    out
}

#[test]
fn cached_batched_decoding_matches_full_recomputation() {
    let model = model();
    // Prompts of different lengths, one of them inside an open parallel path.
    let prompts = vec![
        vec![7i64, 8, 9],
        vec![10, 3, 5, 8],
        vec![2, 11, 7, 8, 9, 10, 3, 5, 7, 6, 5],
    ];
    for attention in [Attention::Seen, Attention::Unseen] {
        let sampling = Sampling {
            temperature: 0.0,
            max_new_tokens: 12,
            parallel: None,
        };
        let got = generate(
            &model.model,
            &prompts,
            &controls(),
            attention,
            &sampling,
            Device::Cpu,
        );
        for (prompt, tokens) in prompts.iter().zip(&got) {
            assert_eq!(
                tokens,
                &reference(&model, prompt, attention, 12),
                "{attention:?} {prompt:?}"
            );
        }
    }
    let _ = Kind::Float;
}

fn controls() -> Controls {
    Controls {
        tags: TAGS,
        open_summary: 7,
        eos: 1,
        pad: 0,
        newline: vec![2],
    }
}

#[test]
fn the_controller_continues_a_block_the_prompt_opened() {
    let model = model();
    let sampling = Sampling {
        temperature: 0.0,
        max_new_tokens: 4,
        parallel: Some(ParallelControl {
            paths: 2,
            path_budget: 2,
        }),
    };
    let got = generate(
        &model.model,
        &[vec![9i64, 3]],
        &controls(),
        Attention::Unseen,
        &sampling,
        Device::Cpu,
    );
    assert_eq!(got[0][0], 5, "the first path is opened: {:?}", got[0]);
}
