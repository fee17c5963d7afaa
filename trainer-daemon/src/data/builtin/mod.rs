//! The built-in task: GSM8K-like multi-step arithmetic word problems with checkable answers,
//! whose parallel solutions use blocks both to explore (conditional steps, whose branches the
//! paths try) and to verify (hard steps, which the paths re-derive by easier routes); see
//! `solution.rs`. Generation is seeded; which split a problem belongs to is decided by a hash of
//! its text, so the held-out test splits never share a problem with the training splits.

mod problem;
mod solution;

use rand::SeedableRng;
use rand::rngs::StdRng;
use std::collections::HashSet;

use problem::Story;
pub use solution::Written;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Difficulty {
    /// Two steps, small numbers: for cold-start SFT.
    Easy,
    /// Three to five steps, larger numbers (products up to 300): for RL.
    Hard,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub id: String,
    pub question: String,
    pub answer: i64,
    /// The solution in the Parallel-R1 format, ending with `Final Answer: X`.
    pub parallel_solution: String,
    /// Byte ranges of `parallel_solution` holding slips a block corrects: context for SFT, not
    /// targets.
    pub slips: Vec<std::ops::Range<usize>>,
    /// The same steps worked one after another, without blocks or checks.
    pub sequential_solution: String,
}

impl Problem {
    /// The parallel solution's reasoning without its tags, slips marked: the base model's
    /// pretraining text (see `solution::untagged`).
    pub fn untagged_solution(&self) -> Written {
        solution::untagged(&Written {
            text: self.parallel_solution.clone(),
            slips: self.slips.clone(),
        })
    }
}

/// `count` problems of `difficulty` in `split`, the same for the same seed.
pub fn generate(difficulty: Difficulty, split: Split, count: usize, seed: u64) -> Vec<Problem> {
    let salt = match difficulty {
        Difficulty::Easy => 0x5eed_0001,
        Difficulty::Hard => 0x5eed_0002,
    };
    let mut rng = StdRng::seed_from_u64(seed ^ salt);
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let story = Story::random(&mut rng, difficulty);
        let question = story.question();
        // The parallel solution's choices come from the same stream, so they are seeded too.
        let parallel = solution::parallel(&story, &mut rng);
        if split_of(&question) == split && seen.insert(question.clone()) {
            out.push(Problem {
                id: format!("{}-{}", tag(difficulty, split), out.len()),
                answer: story.answer(),
                sequential_solution: solution::sequential(&story),
                parallel_solution: parallel.text,
                slips: parallel.slips,
                question,
            });
        }
    }
    out
}

fn tag(difficulty: Difficulty, split: Split) -> &'static str {
    match (difficulty, split) {
        (Difficulty::Easy, Split::Train) => "easy",
        (Difficulty::Easy, Split::Test) => "easy-test",
        (Difficulty::Hard, Split::Train) => "hard",
        (Difficulty::Hard, Split::Test) => "hard-test",
    }
}

/// One problem in ten is held out for testing, by a hash of its text that no Rust release
/// will change (unlike `DefaultHasher`'s).
fn split_of(question: &str) -> Split {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(question.as_bytes());
    let head = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
    if head.is_multiple_of(10) {
        Split::Test
    } else {
        Split::Train
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prl_schema::analysis::{Role, analyze};
    use prl_schema::parallel;

    #[test]
    fn generation_is_reproducible_and_splits_are_disjoint() {
        let a = generate(Difficulty::Easy, Split::Train, 200, 7);
        assert_eq!(a, generate(Difficulty::Easy, Split::Train, 200, 7));
        assert_ne!(a, generate(Difficulty::Easy, Split::Train, 200, 8));
        let test = generate(Difficulty::Easy, Split::Test, 100, 7);
        let train: HashSet<_> = a.iter().map(|p| &p.question).collect();
        assert!(test.iter().all(|p| !train.contains(&p.question)));
    }

    #[test]
    fn every_solution_is_well_formed_and_ends_with_the_answer() {
        let problems = generate(Difficulty::Hard, Split::Train, 300, 1);
        let mut with_blocks = 0;
        for p in &problems {
            let parsed = parallel::parse(&p.parallel_solution);
            assert!(
                parsed.is_valid(),
                "{}: {:?}",
                p.parallel_solution,
                parsed.issues
            );
            with_blocks += usize::from(!parsed.blocks.is_empty());
            let untagged = p.untagged_solution().text;
            for s in [&p.parallel_solution, &p.sequential_solution, &untagged] {
                assert!(s.ends_with(&format!("Final Answer: {}", p.answer)), "{s}");
            }
            for s in [&p.sequential_solution, &untagged] {
                assert!(
                    !parallel::TAGS.iter().any(|tag| s.contains(tag))
                        && parallel::parse(s).blocks.is_empty(),
                    "{s}"
                );
            }
        }
        // Blocks appear in most solutions, not all: RL has room to move the parallel ratio.
        assert!(
            (180..280).contains(&with_blocks),
            "{with_blocks} of 300 have blocks"
        );
    }

    #[test]
    fn blocks_take_both_roles_at_varied_places_and_the_role_rule_reads_them_right() {
        let problems = generate(Difficulty::Hard, Split::Train, 2000, 3);
        let (mut explore, mut verify) = (0, 0);
        let mut starts = HashSet::new();
        for p in &problems {
            let analysis = analyze(&p.parallel_solution);
            for (block, shape) in analysis.parsed.blocks.iter().zip(&analysis.blocks) {
                let paths: Vec<&str> = block
                    .paths
                    .iter()
                    .map(|r| &p.parallel_solution[r.clone()])
                    .collect();
                // The generator's own intent: branches are explored, computations verified.
                let intended = if paths
                    .iter()
                    .all(|t| t.contains("holds") || t.contains("fails"))
                {
                    Role::Exploration
                } else {
                    Role::Verification
                };
                assert_eq!(shape.role, intended, "{}", p.parallel_solution);
                match shape.role {
                    Role::Exploration => explore += 1,
                    Role::Verification => verify += 1,
                }
                starts.insert(10 * shape.chars.start / analysis.chars);
            }
        }
        assert!(
            explore > 300 && verify > 300,
            "{explore} exploring, {verify} verifying"
        );
        assert!(starts.len() >= 6, "blocks start in only {starts:?} tenths");
    }

    #[test]
    fn slips_are_marked_where_they_are_written() {
        let problems = generate(Difficulty::Hard, Split::Train, 1000, 5);
        let slips: Vec<&str> = problems
            .iter()
            .flat_map(|p| p.slips.iter().map(|r| &p.parallel_solution[r.clone()]))
            .collect();
        assert!(slips.len() > 30, "{}", slips.len());
        assert!(slips.iter().all(|s| s.parse::<i64>().is_ok()), "{slips:?}");
        for p in &problems {
            for r in &p.slips {
                // A slip is the result of an equation, and the block after it says so.
                assert!(p.parallel_solution[..r.start].ends_with('='));
                let rest = &p.parallel_solution[r.end..];
                let summary = &rest[..rest.find("</Summary>").unwrap()];
                let named = summary.contains(&p.parallel_solution[r.clone()]);
                assert!(
                    named || summary.contains("Two of three"),
                    "{}",
                    p.parallel_solution
                );
            }
        }
    }

    #[test]
    fn some_blocks_correct_the_main_thread() {
        let problems = generate(Difficulty::Hard, Split::Train, 1000, 5);
        let corrected = problems
            .iter()
            .filter(|p| {
                p.parallel_solution.contains("was a slip") || p.parallel_solution.contains(", not ")
            })
            .count();
        assert!(corrected > 20, "{corrected}");
    }
}
