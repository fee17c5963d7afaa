//! The two prompt designs of the method: the parallel prompt, which explains the block format,
//! and the step-by-step baseline prompt.

/// Which prompt a problem is wrapped in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PromptStyle {
    Parallel,
    StepByStep,
}

const PARALLEL_INSTRUCTIONS: &str = "Solve the problem. Where several independent ways of working a step \
help, open a <Parallel> block with at least two <Path> sections that do not refer to each other, close it, \
then write a <Summary> of what the paths agree on. End with a line \"Final Answer: ...\".";

pub fn render(problem: &str, style: PromptStyle) -> String {
    match style {
        PromptStyle::Parallel => format!("{PARALLEL_INSTRUCTIONS}\nProblem: {problem}\n"),
        PromptStyle::StepByStep => format!(
            "{problem} Let's think step by step and output the final answer after \"Final Answer: \".\n"
        ),
    }
}
