//! The built-in task: GSM8K-like multi-step arithmetic word problems with checkable answers.
//!
//! Each problem is a chain of operations on a quantity. Its parallel solution works some steps
//! in a block whose paths reach the same intermediate value by different routes (a product as
//! repeated addition, a sum in the other order), then summarises; other steps, and some whole
//! solutions, stay sequential, so that parallel use has room to change under RL. Generation is
//! seeded; which split a problem belongs to is decided by a hash of its text, so the held-out
//! test splits never share a problem with the training splits.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Difficulty {
    /// Two steps, small numbers: for cold-start SFT.
    Easy,
    /// Three or four steps, larger numbers: for RL.
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
    /// The same steps worked one after another, for baselines.
    pub sequential_solution: String,
}

const NAMES: &[&str] = &[
    "Mia", "Leo", "Ava", "Noah", "Zoe", "Omar", "Lena", "Ivan", "Sara", "Tom",
];
const ITEMS: &[&str] = &[
    "apples", "marbles", "stickers", "books", "coins", "shells", "pencils", "cards",
];

/// One arithmetic step applied to the running total.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// Gets `n` groups of `k` more.
    AddGroups {
        n: i64,
        k: i64,
    },
    Add(i64),
    Sub(i64),
    /// Ends with `n` times as many.
    Times(i64),
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
        let problem = one(&mut rng, difficulty);
        if split_of(&problem.question) == split && seen.insert(problem.question.clone()) {
            out.push(Problem {
                id: format!("{}-{}", tag(difficulty, split), out.len()),
                ..problem
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

fn one(rng: &mut StdRng, difficulty: Difficulty) -> Problem {
    let (steps, max) = match difficulty {
        Difficulty::Easy => (2, 12),
        Difficulty::Hard => (rng.random_range(3..=4), 30),
    };
    let name = NAMES[rng.random_range(0..NAMES.len())];
    let item = ITEMS[rng.random_range(0..ITEMS.len())];
    let start = rng.random_range(2..=max);
    let mut total = start;
    let mut ops = Vec::new();
    for _ in 0..steps {
        let op = match rng.random_range(0..4) {
            0 => Op::AddGroups {
                n: rng.random_range(2..=5),
                k: rng.random_range(2..=max / 2 + 2),
            },
            1 => Op::Add(rng.random_range(2..=max)),
            2 if total > 3 => Op::Sub(rng.random_range(1..total)),
            3 if total <= 50 => Op::Times(rng.random_range(2..=3)),
            _ => Op::Add(rng.random_range(2..=max)),
        };
        total = apply(total, op);
        ops.push(op);
    }
    let mut question = format!("{name} has {start} {item}.");
    for op in &ops {
        question.push(' ');
        question.push_str(&match *op {
            Op::AddGroups { n, k } => format!("{name} gets {n} boxes with {k} {item} each."),
            Op::Add(a) => format!("{name} finds {a} more {item}."),
            Op::Sub(s) => format!("{name} gives away {s} {item}."),
            Op::Times(t) => format!("Then {name} ends up with {t} times as many {item}."),
        });
    }
    question.push_str(&format!(" How many {item} does {name} have now?"));

    // About a third of the solutions keep every step sequential.
    let use_blocks = rng.random_bool(0.7);
    let mut sequential = String::new();
    let mut parallel = String::new();
    let mut running = start;
    let mut blocks = 0;
    for op in &ops {
        let next = apply(running, *op);
        let line = step_line(running, *op, next);
        sequential.push_str(&line);
        match paths(running, *op, next) {
            Some(routes) if use_blocks && blocks < 2 && (blocks == 0 || rng.random_bool(0.5)) => {
                blocks += 1;
                parallel.push_str("<Parallel>");
                for route in routes {
                    parallel.push_str(&format!("<Path>{route}</Path>"));
                }
                parallel.push_str(&format!(
                    "</Parallel>\n<Summary>Both ways give {next}.</Summary>\n"
                ));
            }
            _ => parallel.push_str(&line),
        }
        running = next;
    }
    let end = format!("Final Answer: {running}");
    Problem {
        id: String::new(),
        question,
        answer: running,
        sequential_solution: format!("{sequential}{end}"),
        parallel_solution: format!("{parallel}{end}"),
    }
}

fn apply(total: i64, op: Op) -> i64 {
    match op {
        Op::AddGroups { n, k } => total + n * k,
        Op::Add(a) => total + a,
        Op::Sub(s) => total - s,
        Op::Times(t) => total * t,
    }
}

fn step_line(total: i64, op: Op, next: i64) -> String {
    match op {
        Op::AddGroups { n, k } => format!("{n}*{k}={}. {total}+{}={next}.\n", n * k, n * k),
        Op::Add(a) => format!("{total}+{a}={next}.\n"),
        Op::Sub(s) => format!("{total}-{s}={next}.\n"),
        Op::Times(t) => format!("{total}*{t}={next}.\n"),
    }
}

/// Two independent routes to the same result of `op`, where there are any.
fn paths(total: i64, op: Op, next: i64) -> Option<[String; 2]> {
    match op {
        Op::AddGroups { n, k } => {
            let repeated = vec![k.to_string(); n as usize].join("+");
            Some([
                format!("{n}*{k}={}. {total}+{}={next}.", n * k, n * k),
                format!("{repeated}={}. {}+{total}={next}.", n * k, n * k),
            ])
        }
        Op::Add(a) => Some([
            format!("{total}+{a}={next}."),
            format!("{a}+{total}={next}."),
        ]),
        Op::Times(t) => {
            let repeated = vec![total.to_string(); t as usize].join("+");
            Some([
                format!("{total}*{t}={next}."),
                format!("{repeated}={next}."),
            ])
        }
        Op::Sub(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
            for s in [&p.parallel_solution, &p.sequential_solution] {
                assert!(s.ends_with(&format!("Final Answer: {}", p.answer)), "{s}");
            }
            assert!(parallel::parse(&p.sequential_solution).blocks.is_empty());
        }
        // Blocks appear in most solutions, not all: RL has room to move the parallel ratio.
        assert!(
            (150..290).contains(&with_blocks),
            "{with_blocks} of 300 have blocks"
        );
    }

    #[test]
    fn the_paths_of_a_block_agree_with_the_arithmetic() {
        let [a, b] = paths(10, Op::AddGroups { n: 3, k: 4 }, 22).unwrap();
        assert_eq!(a, "3*4=12. 10+12=22.");
        assert_eq!(b, "4+4+4=12. 12+10=22.");
        assert_eq!(apply(10, Op::AddGroups { n: 3, k: 4 }), 22);
    }
}
