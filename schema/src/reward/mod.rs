//! Rewards: pure functions of a response's text, its ground truth and the training step, shared by
//! the trainer's RL and evaluation and by anyone who recomputes them from the log.
//!
//! Correctness is the reference's own answer check (`minerva.rs`): the text after the last
//! `Final Answer:` in the response's last 300 characters, Minerva-normalised, equal to the
//! normalised truth.

mod minerva;

use crate::parallel::{self, ParsedResponse};
use crate::spec::RewardSchedule;
use serde::{Deserialize, Serialize};

pub use minerva::{check as check_answer, extract_answer, normalize};

/// Everything one response is scored on, and the reward it gets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub reward: f64,
    /// +1 correct, -1 wrong: the accuracy component whatever the schedule.
    pub accuracy: f64,
    pub correct: bool,
    /// The extracted answer before normalisation.
    pub answer: Option<String>,
    pub format_valid: bool,
    /// Blocks the parser found, valid or not.
    pub blocks: usize,
}

/// Whether the schedule uses its tiered parallel reward at `step` (S2: 2 steps of every 10).
pub fn s2_tiered_step(step: u64) -> bool {
    step.saturating_sub(1) % 10 >= 8
}

/// Scores a response at training step `step` (counted from 1) under `schedule`.
pub fn score(schedule: RewardSchedule, step: u64, response: &str, truth: &str) -> Scored {
    let parsed: ParsedResponse = parallel::parse(response);
    let (correct, answer) = check_answer(response, truth);
    let accuracy = if correct { 1.0 } else { -1.0 };
    let valid = parsed.is_valid();
    let with_block = parsed.has_valid_block();
    let reward = match schedule {
        RewardSchedule::Accuracy | RewardSchedule::S1 => accuracy,
        RewardSchedule::S2 if !s2_tiered_step(step) => accuracy,
        RewardSchedule::S2 => match (correct, valid, parsed.blocks.is_empty()) {
            (true, true, false) => 1.2,
            (true, true, true) => 1.0,
            _ => -1.0,
        },
        RewardSchedule::ParallelStrict => {
            if correct && with_block {
                1.0
            } else {
                0.0
            }
        }
    };
    Scored {
        reward,
        accuracy,
        correct,
        answer,
        format_valid: valid,
        blocks: parsed.blocks.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: &str =
        "Start.<Parallel><Path>3+4=7</Path><Path>4+3=7</Path></Parallel>\n<Summary>7</Summary>";

    #[test]
    fn the_answer_is_the_rest_of_the_last_final_answer_line() {
        let answer = |text: &str| extract_answer(text);
        assert_eq!(
            answer("Final Answer: 3\nno wait\nFinal Answer: 19\n").as_deref(),
            Some("19")
        );
        assert_eq!(answer("final answer : 42.").as_deref(), Some("42."));
        // The space after the colon may cross a line break.
        assert_eq!(answer("Final Answer:\n7").as_deref(), Some("7"));
        assert_eq!(answer("the answer is 7"), None);
        // Only the last 300 characters, tags not counted, are searched.
        let early = format!("Final Answer: 5\n{}", "x".repeat(400));
        assert_eq!(answer(&early), None);
        let tagged = format!("Final Answer: 5{}", "<Parallel>".repeat(40));
        assert_eq!(answer(&tagged).as_deref(), Some("5"));
        // A window that starts inside a multi-byte character must not panic.
        let text = format!("{}Final Answer: 9", "é".repeat(400));
        assert_eq!(answer(&text).as_deref(), Some("9"));
    }

    #[test]
    fn answers_are_normalised_as_minerva_does() {
        for (given, canonical) in [
            ("$1,200$", "1200"),
            ("\\boxed{42}", "42"),
            ("x = 5", "5"),
            ("\\frac12", "\\frac{1}{2}"),
            ("90^\\circ", "90"),
            ("10 dollars", "10"),
            ("\\text{ Yes }", "Yes"),
            ("5.0", "5.0"),
            ("18 apples", "18apples"),
        ] {
            assert_eq!(normalize(given), canonical, "{given}");
        }
        assert!(check_answer("so Final Answer: 1,000", "1000").0);
        assert!(!check_answer("Final Answer: 100", "1000").0);
        assert!(!check_answer("no answer", "1000").0);
    }

    #[test]
    fn accuracy_and_s1_give_plus_or_minus_one() {
        for schedule in [RewardSchedule::Accuracy, RewardSchedule::S1] {
            assert_eq!(score(schedule, 1, "Final Answer: 7", "7").reward, 1.0);
            assert_eq!(score(schedule, 1, "Final Answer: 8", "7").reward, -1.0);
            assert_eq!(score(schedule, 1, "", "7").reward, -1.0);
        }
    }

    #[test]
    fn s2_is_tiered_on_steps_9_and_10_of_every_10() {
        let tiered: Vec<u64> = (1..=20).filter(|s| s2_tiered_step(*s)).collect();
        assert_eq!(tiered, [9, 10, 19, 20]);
        let with_block = format!("{BLOCK} Final Answer: 7");
        let broken = "<Parallel><Path>7</Path></Parallel> Final Answer: 7";
        let s2 = |step, text: &str| score(RewardSchedule::S2, step, text, "7").reward;
        // Accuracy steps ignore the structure.
        assert_eq!(s2(1, &with_block), 1.0);
        assert_eq!(s2(8, broken), 1.0);
        // Tiered steps.
        assert_eq!(s2(9, &with_block), 1.2);
        assert_eq!(s2(10, "Final Answer: 7"), 1.0);
        assert_eq!(s2(9, broken), -1.0, "correct but malformed");
        assert_eq!(s2(19, &format!("{BLOCK} Final Answer: 8")), -1.0);
    }

    #[test]
    fn parallel_strict_needs_a_correct_answer_a_block_and_a_valid_format() {
        let strict = |text: &str| score(RewardSchedule::ParallelStrict, 1, text, "7");
        assert_eq!(strict(&format!("{BLOCK} Final Answer: 7")).reward, 1.0);
        assert_eq!(strict("Final Answer: 7").reward, 0.0);
        assert_eq!(strict(&format!("{BLOCK} Final Answer: 6")).reward, 0.0);
        let missing_summary = "<Parallel><Path>a</Path><Path>b</Path></Parallel> Final Answer: 7";
        let scored = strict(missing_summary);
        assert_eq!(scored.reward, 0.0);
        assert!(!scored.format_valid);
        assert_eq!(scored.blocks, 1);
        assert_eq!(scored.accuracy, 1.0);
    }
}
