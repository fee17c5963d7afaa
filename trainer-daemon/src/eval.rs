//! Evaluating a model on held-out prompts: format validity, parallel use and accuracy of its
//! greedy or sampled responses.

use crate::data::BuiltinSet;
use crate::generate::{Sampling, generate};
use crate::model::LoadedModel;
use crate::tokenizer::PrlTokenizer;
use anyhow::Result;
use prl_schema::parallel;
use prl_schema::spec::Attention;
use tch::Device;

#[derive(Debug, Clone, PartialEq)]
pub struct FormatReport {
    pub responses: usize,
    /// Valid format and a `Final Answer:` line.
    pub valid: f64,
    /// At least one well-formed block.
    pub parallel: f64,
    pub accuracy: f64,
    /// The first few responses, for people to read.
    pub samples: Vec<String>,
}

/// The text after the last `Final Answer:`, trimmed.
pub fn final_answer(response: &str) -> Option<&str> {
    let at = response.rfind("Final Answer:")?;
    let answer = response[at + "Final Answer:".len()..]
        .lines()
        .next()?
        .trim();
    (!answer.is_empty()).then_some(answer)
}

pub fn format_report(
    model: &LoadedModel,
    tok: &PrlTokenizer,
    set: &BuiltinSet,
    prompts: usize,
    attention: Attention,
    sampling: &Sampling,
    device: Device,
) -> Result<FormatReport> {
    let problems: Vec<_> = set.problems().into_iter().take(prompts).collect();
    let encoded: Vec<Vec<i64>> = problems
        .iter()
        .map(|p| tok.encode(&crate::data::prompt::render(&p.question, set.style)))
        .collect::<Result<_>>()?;
    let controls = tok.controls()?;
    let (mut valid, mut blocks, mut correct) = (0, 0, 0);
    let mut samples = Vec::new();
    for (chunk, problems) in encoded.chunks(64).zip(problems.chunks(64)) {
        let outputs = generate(&model.model, chunk, &controls, attention, sampling, device);
        for (tokens, problem) in outputs.iter().zip(problems) {
            let text = tok.decode(tokens)?;
            if samples.len() < 3 {
                samples.push(text.clone());
            }
            let parsed = parallel::parse(&text);
            let answer = final_answer(&text);
            valid += usize::from(parsed.is_valid() && answer.is_some());
            blocks += usize::from(parsed.has_valid_block());
            correct += usize::from(answer == Some(problem.answer.to_string().as_str()));
        }
    }
    let n = problems.len().max(1) as f64;
    Ok(FormatReport {
        responses: problems.len(),
        valid: valid as f64 / n,
        parallel: blocks as f64 / n,
        accuracy: correct as f64 / n,
        samples,
    })
}
