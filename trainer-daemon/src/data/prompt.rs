//! The two prompt designs of the method: the parallel prompt, which explains the block format,
//! and the step-by-step baseline prompt.

/// Which prompt a problem is wrapped in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PromptStyle {
    Parallel,
    StepByStep,
}

/// The parallel prompt's instructions, kept short: with character tokens every letter costs
/// compute in every training step. They name the tags in words: a tag in the prompt would be
/// read as the start of a block.
const PARALLEL_INSTRUCTIONS: &str = "Think in parallel where it helps: a parallel block of two or more \
independent paths, then a summary. End with \"Final Answer: \".";

pub fn render(problem: &str, style: PromptStyle) -> String {
    match style {
        PromptStyle::Parallel => format!("{PARALLEL_INSTRUCTIONS}\nProblem: {problem}\n"),
        PromptStyle::StepByStep => format!(
            "{problem} Let's think step by step and output the final answer after \"Final Answer: \".\n"
        ),
    }
}
