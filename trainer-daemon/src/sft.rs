//! The SFT job: cross-entropy on response tokens, Seen or Unseen attention, batches optionally
//! grouped by length, AdamW with warmup and cosine decay, gradient clipping and accumulation; a
//! metrics event every step, checkpoints that carry the optimiser state (all but the last), resume
//! after a restart, and a checkpoint on cancel.

use crate::adamw::{AdamW, learning_rate};
use crate::batch::{self, Example};
use crate::data::SftExample;
use crate::model::LoadedModel;
use crate::presets;
use crate::reporter::Reporter;
use crate::tokenizer::PrlTokenizer;
use crate::training::Outcome;
use crate::training::{self, BatchOrder, Events};
use anyhow::{Result, bail};
use prl_schema::jobs::{CheckpointRef, JobMessage, WorkerEvent};
use prl_schema::spec::StageSpec;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

pub async fn run(
    job: &JobMessage,
    reporter: &Reporter,
    data_dir: &Path,
    stop: &CancellationToken,
) -> Result<Outcome> {
    training::on_thread(train, job, reporter, data_dir, stop).await
}

/// The job's body, on the calling thread: events go to `events`.
pub fn train(
    job: &JobMessage,
    data_dir: &Path,
    stop: &CancellationToken,
    events: &Events,
) -> Result<Outcome> {
    let StageSpec::Sft(stage) = &job.stage else {
        bail!("not an SFT job")
    };
    let device = crate::device::current();
    let texts = crate::data::examples(stage.dataset.as_str(), &job.datasets)?;
    let corpus: Vec<&str> = texts
        .iter()
        .flat_map(|e| [e.prompt.as_str(), e.response.as_str()])
        .collect();
    let (mut model, tok) = presets::load(job, &corpus, device)?;
    let max_length = stage.max_length.get() as usize;
    let mut examples = encode(&texts, &tok, max_length)?;
    examples.retain(Example::has_targets);
    let cut = texts.len() - examples.len();
    if examples.is_empty() {
        bail!(
            "no example of {} has a response token within max_length {max_length}: raise max_length",
            stage.dataset.as_str()
        );
    }
    if cut > 0 {
        tracing::warn!(
            "{cut} of {} examples have no response token within max_length {max_length}; they are left out",
            texts.len()
        );
    }

    let batch_size = stage.batch_size.get() as usize;
    let accum = stage.grad_accum.get() as usize;
    let per_epoch = examples.len().div_ceil(batch_size * accum) as u64;
    let total = stage
        .max_steps
        .map(|s| s.get())
        .unwrap_or(stage.epochs.get() * per_epoch);
    let warmup = (stage.warmup_ratio.get() * total as f64).round() as i64;
    let mut optimizer = AdamW::new(&model.vs, stage.weight_decay.get());
    let mut done = training::resume(&mut model, &mut optimizer, job)?;
    let lengths = stage
        .group_by_length
        .then(|| examples.iter().map(|e| e.tokens.len()).collect());
    let mut order = BatchOrder::new(batch_size, job.stage_seed(), examples.len(), lengths);
    let save =
        |model: &LoadedModel, optimizer: Option<&AdamW>, step: u64| -> Result<CheckpointRef> {
            training::save(model, optimizer, &tok, data_dir, job, step, events)
        };
    while done < total {
        if stop.is_cancelled() {
            let saved = (done > 0)
                .then(|| save(&model, Some(&optimizer), done))
                .transpose()?;
            return Ok(Outcome::Stopped(saved));
        }
        if events.is_closed() {
            // The daemon that reads our events is gone: a later attempt resumes from a checkpoint.
            bail!("the daemon stopped listening at step {done}");
        }
        let started = Instant::now();
        let (mut loss_sum, mut tokens) = (0.0, 0usize);
        for micro in 0..accum {
            let rows: Vec<&Example> = order
                .batch(done as usize * accum + micro)
                .into_iter()
                .map(|i| &examples[i])
                .collect();
            let parts = batch::build_by_length(&rows, tok.tags, stage.attention, tok.pad, device);
            let loss = batch::token_mean_loss(&parts, &model.model) / accum as f64;
            loss.backward();
            loss_sum += loss.double_value(&[]);
            tokens += parts.iter().map(|part| part.tokens).sum::<usize>();
        }
        let grad_norm = optimizer.clip_grad_norm(stage.grad_clip.get());
        let lr = learning_rate(stage.learning_rate.get(), done as i64, warmup, total as i64);
        optimizer.step(lr);
        optimizer.zero_grad();
        done += 1;
        let values = BTreeMap::from([
            ("loss".to_owned(), loss_sum),
            ("lr".to_owned(), lr),
            ("grad_norm".to_owned(), grad_norm),
            (
                "tokens_per_s".to_owned(),
                tokens as f64 / started.elapsed().as_secs_f64(),
            ),
            ("total_steps".to_owned(), total as f64),
        ]);
        let _ = events.send(WorkerEvent::Metrics { step: done, values });
        if stage
            .checkpoint_every
            .is_some_and(|every| done.is_multiple_of(every.get()))
            && done < total
        {
            save(&model, Some(&optimizer), done)?;
        }
    }
    Ok(Outcome::Finished(Some(save(&model, None, total)?)))
}

/// Prompt + response + end-of-sequence, cut to `max_length`; the response's untrained parts are
/// inputs but not targets.
pub fn encode(
    examples: &[SftExample],
    tok: &PrlTokenizer,
    max_length: usize,
) -> Result<Vec<Example>> {
    examples
        .iter()
        .map(|e| {
            let mut tokens = tok.encode(&e.prompt)?;
            let prompt_len = tokens.len();
            let mut untrained = vec![false; prompt_len];
            // The response in pieces, so that an untrained range is whole tokens.
            let mut at = 0;
            for range in e
                .untrained
                .iter()
                .chain([&(e.response.len()..e.response.len())])
            {
                for (piece, skip) in [
                    (&e.response[at..range.start], false),
                    (&e.response[range.clone()], true),
                ] {
                    let ids = tok.encode(piece)?;
                    untrained.extend(std::iter::repeat_n(skip, ids.len()));
                    tokens.extend(ids);
                }
                at = range.end;
            }
            tokens.push(tok.eos);
            untrained.push(false);
            tokens.truncate(max_length);
            untrained.truncate(max_length);
            let any = untrained.iter().any(|u| *u);
            Ok(Example {
                tokens,
                prompt_len,
                forced: if any { untrained } else { Vec::new() },
                banned: Vec::new(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrained_ranges_are_inputs_but_not_targets() {
        let tok = PrlTokenizer::characters(["q?27*3=84. ok 81"]).unwrap();
        let slip = 5..7; // the wrong "84"
        let example = SftExample {
            prompt: "q?".into(),
            response: "27*3=84. ok 81".into(),
            untrained: vec![slip],
        };
        let encoded = &encode(&[example], &tok, 64).unwrap()[0];
        assert_eq!(tok.decode(&encoded.tokens).unwrap(), "q?27*3=84. ok 81");
        let batch = crate::batch::build(
            &[encoded],
            tok.tags,
            prl_schema::spec::Attention::Seen,
            tok.pad,
            tch::Device::Cpu,
        );
        let targets: Vec<i64> = Vec::try_from(batch.targets.view([-1])).unwrap();
        // The response's 14 tokens and end-of-sequence, less the slip's two digits.
        let trained = targets
            .iter()
            .filter(|&&t| t != crate::batch::IGNORE)
            .count();
        assert_eq!(trained, 15 - 2);
        let eight = tok.encode("8").unwrap()[0];
        // 8 is trained where it is the 81 at the end, never as the slip's first digit.
        assert_eq!(targets.iter().filter(|&&t| t == eight).count(), 1);
    }

    #[test]
    fn an_example_cut_inside_its_prompt_has_no_targets() {
        let tok = PrlTokenizer::characters(["long prompt?42"]).unwrap();
        let example = SftExample::plain("long prompt?".into(), "42".into());
        let whole = &encode(std::slice::from_ref(&example), &tok, 64).unwrap()[0];
        assert!(whole.has_targets());
        let cut = &encode(&[example], &tok, 12).unwrap()[0];
        assert!(!cut.has_targets());
    }
}
