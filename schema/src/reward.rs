//! Rewards: pure functions of a response's text, its ground truth and the training step, shared by
//! the trainer's RL and evaluation and by anyone who recomputes them from the log.
//!
//! The answer is the text after the last `Final Answer:` in the response's last 300 characters
//! (case-insensitive, as the reference extracts it), normalised before an exact comparison.

use crate::parallel::{self, ParsedResponse};
use crate::spec::RewardSchedule;
use serde::{Deserialize, Serialize};

/// How far from the end the reference looks for `Final Answer:`.
const ANSWER_WINDOW: usize = 300;
const MARKER: &str = "final answer";

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

/// The raw answer: the rest of the line after the last `Final Answer:` near the end.
pub fn extract_answer(response: &str) -> Option<&str> {
    let mut start = response.len().saturating_sub(ANSWER_WINDOW);
    while !response.is_char_boundary(start) {
        start += 1;
    }
    let window = &response[start..];
    // ASCII lowercasing keeps byte offsets.
    let lower = window.to_ascii_lowercase();
    let mut found = None;
    let mut from = 0;
    while let Some(i) = lower[from..].find(MARKER) {
        let after = from + i + MARKER.len();
        let rest = window[after..].trim_start_matches([' ', '\t']);
        if let Some(value) = rest.strip_prefix(':') {
            let line = value.split('\n').next().unwrap_or("").trim();
            if !line.is_empty() {
                found = Some(line);
            }
        }
        from = after;
    }
    found
}

/// The canonical form two answers are compared in: no spaces, `$`, `\text{}`/`\boxed{}`
/// wrappers, thousands separators, trailing full stop or trailing unit words; `5.0` is `5`.
pub fn normalize(answer: &str) -> String {
    let mut s = answer.trim().to_string();
    for wrapper in ["\\boxed{", "\\text{", "\\mathrm{", "\\textbf{"] {
        while let Some(at) = s.find(wrapper) {
            let inner_start = at + wrapper.len();
            let Some(len) = s[inner_start..].find('}') else {
                break;
            };
            let inner = s[inner_start..inner_start + len].to_string();
            s.replace_range(at..inner_start + len + 1, &inner);
        }
    }
    s = s.replace(['$', ' '], "").replace("\\!", "");
    while s.ends_with('.') {
        s.pop();
    }
    // A number followed by a unit ("18apples", "12cm"): keep the number.
    let numeric_head: String = s
        .char_indices()
        .take_while(|(i, c)| c.is_ascii_digit() || *c == ',' || *c == '.' || (*i == 0 && *c == '-'))
        .map(|(_, c)| c)
        .collect();
    let tail = &s[numeric_head.len()..];
    if numeric_head.chars().any(|c| c.is_ascii_digit()) && tail.chars().all(char::is_alphabetic) {
        s = numeric_head.replace(',', "");
        if let Some(int) = s.strip_suffix(".0").or_else(|| s.strip_suffix(".00")) {
            s = int.to_string();
        }
        while s.ends_with('.') {
            s.pop();
        }
    }
    s.to_lowercase()
}

/// Whether `response` answers `truth`, and the raw answer it gave.
pub fn check_answer<'a>(response: &'a str, truth: &str) -> (bool, Option<&'a str>) {
    let answer = extract_answer(response);
    let correct = answer.is_some_and(|a| normalize(a) == normalize(truth));
    (correct, answer)
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
        answer: answer.map(str::to_owned),
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
    fn the_answer_is_the_last_final_answer_line() {
        assert_eq!(
            extract_answer("Final Answer: 3\nno wait\nFinal Answer: 19\n"),
            Some("19")
        );
        assert_eq!(extract_answer("final answer : 42."), Some("42."));
        assert_eq!(extract_answer("FINAL ANSWER:7"), Some("7"));
        assert_eq!(extract_answer("the answer is 7"), None);
        assert_eq!(extract_answer("Final Answer:\n"), None);
        assert_eq!(extract_answer("Final Answer"), None);
    }

    #[test]
    fn only_the_last_300_characters_are_searched() {
        let early = format!("Final Answer: 5\n{}", "x".repeat(400));
        assert_eq!(extract_answer(&early), None);
        // A window that starts inside a multi-byte character must not panic.
        let text = format!("{}Final Answer: 9", "é".repeat(200));
        assert_eq!(extract_answer(&text), Some("9"));
    }

    #[test]
    fn answers_are_normalised_before_comparison() {
        for (given, canonical) in [
            ("$1,200$", "1200"),
            ("\\boxed{42}", "42"),
            ("18 apples", "18"),
            ("18 apples.", "18"),
            ("5.0", "5"),
            ("-3", "-3"),
            ("\\text{ Yes }", "yes"),
            ("3/4", "3/4"),
            ("x = 2", "x=2"),
        ] {
            assert_eq!(normalize(given), canonical, "{given}");
        }
        assert!(check_answer("so Final Answer: 1,000 coins", "1000").0);
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
